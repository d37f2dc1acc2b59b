//! ModelInfer: protobuf messages to and from the engine's types.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use super::pb;
use super::status::Status;
use crate::doors::parameters::{FINAL_RESPONSE, V2_GRPC};
use crate::engine::{self, counted, Engine, Error};
use crate::tensors::{push_bytes_element, DataType, Tensor};
use pb::infer_parameter::ParameterChoice;

type Parameters = std::collections::HashMap<String, pb::InferParameter>;

/// Runs one ModelInfer; `deadline` (the call's `grpc-timeout`) bounds the queue wait as the
/// `timeout` parameter does, the shorter of the two winning. `waitread`: when the server began
/// waiting for the message and when it had it, for a trace.
pub async fn model_infer(
    engine: &Engine,
    request: pb::ModelInferRequest,
    deadline: Option<Duration>,
    waitread: [Instant; 2],
) -> Result<pb::ModelInferResponse, Status> {
    let model = engine.repository().get(&request.model_name)?;
    let (version, loaded) = model.version(super::version(&request.model_version))?;
    let received = [
        ("GRPC_WAITREAD_START", waitread[0]),
        ("GRPC_WAITREAD_END", waitread[1]),
    ];
    let mut trace = engine.tracer().start(&model.name, version, received);
    let reply = counted(loaded, request.encoded_len(), async {
        let mut run = decode(&request, engine.max_tensor_elements())?;
        run.timeout = run.timeout.into_iter().chain(deadline).min();
        let done = engine.infer(&model, loaded, run).await?;
        if let Some(trace) = trace.as_mut() {
            trace.executed(&done.timeline);
        }
        let outputs = done
            .outputs
            .iter()
            .map(|o| pb::model_infer_response::InferOutputTensor {
                name: o.name.to_string(),
                datatype: o.tensor.datatype.as_str().to_string(),
                shape: o.tensor.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect();
        let reply = pb::ModelInferResponse {
            model_name: model.name.clone(),
            model_version: version.to_string(),
            id: request.id.clone(),
            parameters: Default::default(),
            outputs,
            raw_output_contents: done.outputs.into_iter().map(|o| o.tensor.data).collect(),
        };
        Ok(super::counted_reply(reply, done.rows))
    })
    .await;
    engine.tracer().finish(trace, "GRPC_SEND_START");
    reply.map_err(Status::from)
}

/// A ModelInferResponse as it is written: prost encodes all but `raw_output_contents`, which
/// follow as field 6, each a key and a length and then the output's own bytes (protobuf allows
/// fields in any order).
pub fn encode_response(mut response: pb::ModelInferResponse) -> super::Encoded {
    const RAW_OUTPUT_CONTENTS_KEY: u8 = 6 << 3 | 2;
    let raw = std::mem::take(&mut response.raw_output_contents);
    let mut parts = Vec::with_capacity(1 + 2 * raw.len());
    let mut head = response.encode_to_vec();
    for data in raw {
        head.push(RAW_OUTPUT_CONTENTS_KEY);
        prost::encoding::encode_varint(data.len() as u64, &mut head);
        if data.len() < super::INLINE_BYTES {
            head.extend_from_slice(&data);
        } else {
            parts.push(Bytes::from(std::mem::take(&mut head)));
            parts.push(data);
        }
    }
    if !head.is_empty() {
        parts.push(Bytes::from(head));
    }
    parts
}

/// The engine request of a ModelInfer message: tensors from `raw_input_contents` (views of the
/// received message), the outputs wanted, the `timeout` parameter.
pub(super) fn decode(
    request: &pb::ModelInferRequest,
    max_elements: u64,
) -> Result<engine::InferRequest<'_>, Error> {
    let known = &V2_GRPC;
    check_parameters(&request.parameters, || "request".into(), known.request)?;
    for input in &request.inputs {
        let place = || format!("input '{}'", input.name);
        check_parameters(&input.parameters, place, known.input)?;
    }
    for output in &request.outputs {
        let place = || format!("output '{}'", output.name);
        check_parameters(&output.parameters, place, known.output)?;
    }
    // Its type is checked here; `stream_infer` acts on it.
    bool_parameter(&request.parameters, FINAL_RESPONSE)?;
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(Error::invalid(format!(
            "{} inputs but {} raw_input_contents",
            request.inputs.len(),
            raw.len()
        )));
    }
    let inputs = request
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let invalid = |what: String| Error::invalid(format!("input '{}': {what}", input.name));
            let datatype = DataType::parse(&input.datatype)
                .ok_or_else(|| invalid(format!("unknown datatype '{}'", input.datatype)))?;
            let shape = input
                .shape
                .iter()
                .map(|&d| u64::try_from(d).map_err(|_| invalid(format!("negative dimension {d}"))))
                .collect::<Result<Vec<u64>, _>>()?;
            let data = match (raw.get(i), &input.contents) {
                (Some(raw), None) => raw.clone(),
                (None, Some(contents)) => typed(datatype, contents).map_err(invalid)?,
                (Some(_), Some(_)) => {
                    return Err(invalid("has both contents and raw_input_contents".into()))
                }
                (None, None) => return Err(invalid("has no contents".into())),
            };
            // KServe's client sends binary_data_size with raw contents: it must be their size.
            match int_parameter(&input.parameters, "binary_data_size")? {
                Some(_) if input.contents.is_some() => {
                    return Err(invalid(
                        "binary_data_size describes raw_input_contents, not typed contents".into(),
                    ))
                }
                Some(n) if n != data.len() as u64 => {
                    return Err(invalid(format!(
                        "binary_data_size {n}, but its raw_input_contents hold {} bytes",
                        data.len()
                    )))
                }
                _ => {}
            }
            let tensor = Tensor::new(datatype, shape, data, max_elements)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(engine::Input {
                name: Cow::Borrowed(input.name.as_str()),
                tensor,
            })
        })
        .collect::<Result<_, Error>>()?;
    let outputs = request
        .outputs
        .iter()
        .map(|o| {
            if bool_parameter(&o.parameters, "binary_data")? == Some(false) {
                return Err(Error::invalid(format!(
                    "output '{}': binary_data may only be true over gRPC, where outputs are \
                     always raw_output_contents",
                    o.name
                )));
            }
            Ok(engine::WantedOutput {
                name: Cow::Borrowed(o.name.as_str()),
                classification: int_parameter(&o.parameters, "classification")?,
            })
        })
        .collect::<Result<_, Error>>()?;
    let timeout = int_parameter(&request.parameters, "timeout")?
        .filter(|&us| us > 0)
        .map(Duration::from_micros);
    Ok(engine::InferRequest {
        inputs,
        outputs,
        timeout,
    })
}

/// Typed `contents` as the wire bytes of `datatype`. Each datatype reads its own field, and a
/// value that does not fit it (300 for UINT8) is refused, never narrowed.
fn typed(datatype: DataType, c: &pb::InferTensorContents) -> Result<Bytes, String> {
    let bytes: Vec<u8> = match datatype {
        DataType::Bool => c.bool_contents.iter().map(|&b| u8::from(b)).collect(),
        DataType::Int8 => narrow(&c.int_contents, i8::to_le_bytes, "INT8")?,
        DataType::Int16 => narrow(&c.int_contents, i16::to_le_bytes, "INT16")?,
        DataType::Int32 => c
            .int_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Int64 => c
            .int64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Uint8 => narrow(&c.uint_contents, u8::to_le_bytes, "UINT8")?,
        DataType::Uint16 => narrow(&c.uint_contents, u16::to_le_bytes, "UINT16")?,
        DataType::Uint32 => c
            .uint_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Uint64 => c
            .uint64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Fp32 => c
            .fp32_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Fp64 => c
            .fp64_contents
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DataType::Bytes => {
            let mut out = Vec::new();
            for element in &c.bytes_contents {
                push_bytes_element(&mut out, element).map_err(|e| e.to_string())?;
            }
            out
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(format!(
                "{datatype} has no typed contents field: send raw_input_contents"
            ))
        }
    };
    Ok(Bytes::from(bytes))
}

/// Values of a wider field, each checked to fit `N` and written little-endian (typed contents
/// never narrow a value silently).
pub(super) fn narrow<W: Copy + std::fmt::Display, N: TryFrom<W>, const S: usize>(
    values: &[W],
    le: fn(N) -> [u8; S],
    name: &str,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(values.len() * S);
    for &v in values {
        let n = N::try_from(v).map_err(|_| format!("{v} is not a valid {name}"))?;
        out.extend(le(n));
    }
    Ok(out)
}

/// Refuses any parameter `place` does not take (see `doors::parameters`).
fn check_parameters(
    parameters: &Parameters,
    place: impl Fn() -> String,
    known: &[&str],
) -> Result<(), Error> {
    for (key, parameter) in parameters {
        let unset = match &parameter.parameter_choice {
            None => true,
            Some(ParameterChoice::BoolParam(b)) => !b,
            Some(ParameterChoice::Int64Param(v)) => *v == 0,
            Some(ParameterChoice::Uint64Param(v)) => *v == 0,
            Some(ParameterChoice::DoubleParam(v)) => *v == 0.0,
            Some(ParameterChoice::StringParam(s)) => s.is_empty(),
        };
        crate::doors::parameters::check(&place, key, unset, known)?;
    }
    Ok(())
}

/// Parameter `key` as `kind`, which `pick` reads from its value; present with another type is
/// an error.
fn parameter<T>(
    parameters: &Parameters,
    key: &str,
    kind: &str,
    pick: fn(&ParameterChoice) -> Option<T>,
) -> Result<Option<T>, Error> {
    let Some(choice) = parameters
        .get(key)
        .and_then(|p| p.parameter_choice.as_ref())
    else {
        return Ok(None);
    };
    pick(choice)
        .map(Some)
        .ok_or_else(|| Error::invalid(format!("parameter '{key}' must be {kind}, got {choice:?}")))
}

pub(super) fn bool_parameter(parameters: &Parameters, key: &str) -> Result<Option<bool>, Error> {
    parameter(parameters, key, "a boolean", |c| match c {
        ParameterChoice::BoolParam(b) => Some(*b),
        _ => None,
    })
}

fn int_parameter(parameters: &Parameters, key: &str) -> Result<Option<u64>, Error> {
    parameter(parameters, key, "a non-negative integer", |c| match c {
        ParameterChoice::Int64Param(v) => u64::try_from(*v).ok(),
        ParameterChoice::Uint64Param(v) => Some(*v),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_in_parts_are_protobufs_own_encoding() {
        let outputs = ["A", "B", "C"].map(|name| pb::model_infer_response::InferOutputTensor {
            name: name.into(),
            datatype: "UINT8".into(),
            ..Default::default()
        });
        let response = pb::ModelInferResponse {
            model_name: "m".into(),
            outputs: outputs.into(),
            raw_output_contents: vec![
                Bytes::from(vec![1u8; 10]),
                Bytes::from(vec![2u8; 100_000]),
                Bytes::from(vec![3u8; 300]),
            ],
            ..Default::default()
        };
        let parts = encode_response(response.clone());
        // The large output is its own part, the very bytes of the output; the rest is copied.
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[1], response.raw_output_contents[1]);
        assert_eq!(parts[1].as_ptr(), response.raw_output_contents[1].as_ptr());
        let joined: Vec<u8> = parts.concat();
        assert_eq!(
            pb::ModelInferResponse::decode(&joined[..]).unwrap(),
            response
        );
    }
}
