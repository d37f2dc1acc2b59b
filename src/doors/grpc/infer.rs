//! ModelInfer: protobuf messages to and from the engine's types.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use super::pb;
use crate::engine::{
    self, Arrival, Error, ParamValue, Parameters, Target, FINAL_RESPONSE, V2_GRPC,
};
use crate::tensors::{push_bytes_element, DataType, Tensor};
use pb::infer_parameter::ParameterChoice;

/// One ModelInfer call: the message, the call's `grpc-timeout`, and when the server began
/// waiting for the message and when it had it (for a trace).
pub struct InferCall {
    pub request: pb::ModelInferRequest,
    pub deadline: Option<Duration>,
    pub waitread: [Instant; 2],
}

impl engine::Call for InferCall {
    type Kept<'a> = ();
    type Reply = pb::ModelInferResponse;

    fn arrival(&self) -> Arrival<'_> {
        Arrival {
            model: &self.request.model_name,
            version: super::version(&self.request.model_version),
            bytes: self.request.encoded_len(),
            trace: super::grpc_trace_points(self.waitread),
        }
    }

    /// The `grpc-timeout` bounds the queue wait as the `timeout` parameter does, the shorter
    /// of the two winning.
    fn decode<'a>(
        &'a self,
        _: &Target<'a>,
        max_elements: u64,
    ) -> Result<(engine::InferRequest<'a>, ()), Error> {
        let mut run = decode(&self.request, max_elements)?;
        run.timeout = run.timeout.into_iter().chain(self.deadline).min();
        Ok((run, ()))
    }

    fn encode<'a>(
        &'a self,
        target: &Target<'a>,
        _: (),
        outputs: Vec<engine::Output<'a>>,
    ) -> Result<(pb::ModelInferResponse, usize), Error> {
        let described = outputs
            .iter()
            .map(|o| pb::model_infer_response::InferOutputTensor {
                name: o.name.to_string(),
                datatype: o.tensor.datatype.as_str().to_string(),
                shape: o.tensor.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect();
        let reply = pb::ModelInferResponse {
            model_name: target.model.name.clone(),
            model_version: target.version.to_string(),
            id: self.request.id.clone(),
            parameters: Default::default(),
            outputs: described,
            raw_output_contents: outputs.into_iter().map(|o| o.tensor.data).collect(),
        };
        let bytes = reply.encoded_len();
        Ok((reply, bytes))
    }
}

/// The engine's parameter model of a gRPC parameter map. A parameter without a value reads as
/// "", which only the reserved parameters accept.
pub(super) fn parameters_of(map: &HashMap<String, pb::InferParameter>) -> Parameters<'_> {
    Parameters(
        map.iter()
            .map(|(key, parameter)| {
                let value = match &parameter.parameter_choice {
                    None => ParamValue::Str(Cow::Borrowed("")),
                    Some(ParameterChoice::BoolParam(b)) => ParamValue::Bool(*b),
                    Some(ParameterChoice::Int64Param(v)) => ParamValue::Int(*v),
                    Some(ParameterChoice::Uint64Param(v)) => ParamValue::Uint(*v),
                    Some(ParameterChoice::DoubleParam(v)) => ParamValue::Float(*v),
                    Some(ParameterChoice::StringParam(s)) => ParamValue::Str(Cow::Borrowed(s)),
                };
                (Cow::Borrowed(key.as_str()), value)
            })
            .collect(),
    )
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
    let parameters = parameters_of(&request.parameters);
    parameters.check(|| "request".into(), known.request)?;
    // Triton's gRPC door takes a sequence id only as int64_param or string_param.
    if let Some(ParamValue::Uint(_) | ParamValue::Bool(_) | ParamValue::Float(_)) =
        parameters.get("sequence_id")
    {
        return Err(Error::invalid(
            "invalid value type for 'sequence_id' parameter, expected int64_param or \
             string_param.",
        ));
    }
    let input_parameters: Vec<Parameters> = (request.inputs.iter())
        .map(|input| {
            let converted = parameters_of(&input.parameters);
            converted.check(|| format!("input '{}'", input.name), known.input)?;
            Ok(converted)
        })
        .collect::<Result<_, Error>>()?;
    let output_parameters: Vec<Parameters> = (request.outputs.iter())
        .map(|output| {
            let converted = parameters_of(&output.parameters);
            converted.check(|| format!("output '{}'", output.name), known.output)?;
            Ok(converted)
        })
        .collect::<Result<_, Error>>()?;
    // Its type is checked here; `stream_infer` acts on it.
    parameters.get_bool(FINAL_RESPONSE)?;
    let places = (request.inputs.iter())
        .zip(&input_parameters)
        .map(|(input, parameters)| shared_place(&input.parameters, parameters, &input.name))
        .collect::<Result<Vec<_>, Error>>()?;
    // Raw contents are those of the inputs not in shared memory, in order.
    let raw = &request.raw_input_contents;
    let in_message = places.iter().filter(|p| p.is_none()).count();
    if !raw.is_empty() && raw.len() != in_message {
        return Err(Error::invalid(format!(
            "{in_message} inputs outside shared memory but {} raw_input_contents",
            raw.len()
        )));
    }
    let mut raw = raw.iter();
    let mut inputs = Vec::with_capacity(in_message);
    let mut shared_inputs = Vec::new();
    for ((input, parameters), place) in request.inputs.iter().zip(&input_parameters).zip(places) {
        let invalid = |what: String| Error::invalid(format!("input '{}': {what}", input.name));
        let datatype = DataType::parse(&input.datatype)
            .ok_or_else(|| invalid(format!("unknown datatype '{}'", input.datatype)))?;
        let shape = input
            .shape
            .iter()
            .map(|&d| u64::try_from(d).map_err(|_| invalid(format!("negative dimension {d}"))))
            .collect::<Result<Vec<u64>, _>>()?;
        if let Some(place) = place {
            if input.contents.is_some() {
                return Err(Error::invalid(format!(
                    "unexpected 'content' provided when using shared memory for input tensor \
                     '{}' for model '{}'",
                    input.name, request.model_name
                )));
            }
            shared_inputs.push(engine::SharedInput {
                name: Cow::Borrowed(input.name.as_str()),
                datatype,
                shape,
                place,
            });
            continue;
        }
        let data = match (raw.next(), &input.contents) {
            (Some(raw), None) => raw.clone(),
            (None, Some(contents)) => typed(datatype, contents).map_err(invalid)?,
            (Some(_), Some(_)) => {
                return Err(invalid("has both contents and raw_input_contents".into()))
            }
            (None, None) => return Err(invalid("has no contents".into())),
        };
        // KServe's client sends binary_data_size with raw contents: it must be their size.
        match parameters.get_u64("binary_data_size")? {
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
        let tensor =
            Tensor::new(datatype, shape, data, max_elements).map_err(|e| invalid(e.to_string()))?;
        inputs.push(engine::Input {
            name: Cow::Borrowed(input.name.as_str()),
            tensor,
        });
    }
    let outputs = (request.outputs.iter())
        .zip(&output_parameters)
        .map(|(o, parameters)| {
            if parameters.get_bool("binary_data")? == Some(false) {
                return Err(Error::invalid(format!(
                    "output '{}': binary_data may only be true over gRPC, where outputs are \
                     always raw_output_contents",
                    o.name
                )));
            }
            Ok(engine::WantedOutput {
                name: Cow::Borrowed(o.name.as_str()),
                classification: parameters.get_u64("classification")?,
                shared_memory: shared_place(&o.parameters, parameters, &o.name)?,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(engine::InferRequest {
        inputs,
        shared_inputs,
        outputs,
        timeout: parameters.timeout()?,
        sequence: parameters.sequence()?,
    })
}

/// A tensor's place in shared memory, with the parameter types Triton's gRPC door demands
/// (a string region, int64 offset and size) and the size required.
fn shared_place<'a>(
    wire: &HashMap<String, pb::InferParameter>,
    parameters: &Parameters<'a>,
    tensor: &str,
) -> Result<Option<engine::SharedPlace<'a>>, Error> {
    let [region, offset, size] = engine::SHARED_MEMORY_PARAMETERS;
    for (key, expected) in [
        (region, "string_param"),
        (offset, "int64_param"),
        (size, "int64_param"),
    ] {
        let choice = wire.get(key).map(|p| &p.parameter_choice);
        let typed = match choice {
            None => true,
            Some(Some(ParameterChoice::StringParam(_))) => expected == "string_param",
            Some(Some(ParameterChoice::Int64Param(_))) => expected == "int64_param",
            Some(_) => false,
        };
        if !typed {
            return Err(Error::invalid(format!(
                "invalid value type for '{key}' parameter for tensor '{tensor}', expected \
                 {expected}."
            )));
        }
    }
    if wire.contains_key(region) && !wire.contains_key(size) {
        return Err(Error::invalid(format!(
            "'shared_memory_byte_size' must be specified along with 'shared_memory_region' \
             parameter for tensor '{tensor}'"
        )));
    }
    engine::SharedPlace::of(parameters, tensor)
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
