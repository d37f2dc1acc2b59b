//! TF Serving over gRPC, as OVMS serves it and `ovmsclient` calls it: PredictionService's
//! Predict and GetModelMetadata, ModelService's GetModelStatus. Tensors arrive as TensorProto:
//! `tensor_content` (a view of the received message) or typed values; images arrive in
//! `string_val` and take the engine's image path, as on REST.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use super::infer::narrow;
use super::proto::tensorflow as tf;
use super::status::Status;
use super::{decode_known, encode};
use crate::doors::describe::{datatype_of_tf, metadata_shape, tf_dtype};
use crate::doors::tfs::version_statuses;
use crate::engine::{
    Arrival, Call, Engine, Error, InferRequest, Input, Output, Target, WantedOutput,
};
use crate::models::TensorSpec;
use crate::tensors::{element_count, push_bytes_element, DataType, Tensor};
use tf::serving as tfs;

/// Answers `method` (`Service/Method` under `tensorflow.serving.`).
pub async fn call(
    engine: &Engine,
    method: &str,
    message: Bytes,
    timeout: Option<Duration>,
    waitread: [Instant; 2],
) -> Result<super::Encoded, Status> {
    match method {
        "PredictionService/Predict" => {
            let known = [(1, "model_spec"), (2, "inputs"), (3, "output_filter")];
            let request: tfs::PredictRequest = decode_known(message, "PredictRequest", &known)?;
            let (_, version) = model_spec(request.model_spec.as_ref())?;
            let call = PredictCall {
                version,
                request,
                deadline: timeout,
                waitread,
            };
            Ok(encode(&engine.serve(&call).await?))
        }
        "PredictionService/GetModelMetadata" => {
            let known = [(1, "model_spec"), (2, "metadata_field")];
            let request = decode_known(message, "GetModelMetadataRequest", &known)?;
            Ok(encode(&metadata(engine, request)?))
        }
        "ModelService/GetModelStatus" => {
            let request = decode_known(message, "GetModelStatusRequest", &[(1, "model_spec")])?;
            Ok(encode(&status(engine, request)?))
        }
        other => Err(Status::unimplemented(format!(
            "tensorflow.serving.{other} is not implemented (Predict, GetModelMetadata and GetModelStatus are)"
        ))),
    }
}

/// One Predict call: the message, the version its ModelSpec names, the call's `grpc-timeout`,
/// and when the server began waiting for the message and when it had it (for a trace).
struct PredictCall {
    request: tfs::PredictRequest,
    version: Option<String>,
    deadline: Option<Duration>,
    waitread: [Instant; 2],
}

impl Call for PredictCall {
    type Kept<'a> = ();
    type Reply = tfs::PredictResponse;

    fn arrival(&self) -> Arrival<'_> {
        Arrival {
            model: self.request.model_spec.as_ref().map_or("", |s| &s.name),
            version: self.version.as_deref(),
            bytes: self.request.encoded_len(),
            trace: super::grpc_trace_points(self.waitread),
        }
    }

    fn decode<'a>(
        &'a self,
        _: &Target<'a>,
        max_elements: u64,
    ) -> Result<(InferRequest<'a>, ()), Error> {
        let inputs = (self.request.inputs.iter())
            .map(|(name, proto)| {
                let tensor = tensor_of(proto, max_elements)
                    .map_err(|e| Error::invalid(format!("input '{name}': {e}")))?;
                Ok(Input {
                    name: Cow::Borrowed(name.as_str()),
                    tensor,
                })
            })
            .collect::<Result<_, Error>>()?;
        let outputs = (self.request.output_filter.iter())
            .map(|name| WantedOutput {
                name: Cow::Borrowed(name.as_str()),
                classification: None,
                shared_memory: None,
            })
            .collect();
        let run = InferRequest {
            inputs,
            outputs,
            timeout: self.deadline,
            ..InferRequest::default()
        };
        Ok((run, ()))
    }

    fn encode<'a>(
        &'a self,
        target: &Target<'a>,
        _: (),
        outputs: Vec<Output<'a>>,
    ) -> Result<(tfs::PredictResponse, usize), Error> {
        let reply = tfs::PredictResponse {
            model_spec: Some(spec_of(&target.model.name, target.version)),
            outputs: (outputs.into_iter())
                .map(|o| (o.name.to_string(), tensor_proto(o.tensor)))
                .collect(),
        };
        let bytes = reply.encoded_len();
        Ok((reply, bytes))
    }
}

/// The `serving_default` signature, in a SignatureDefMap packed in `Any` as TF Serving sends it.
fn metadata(
    engine: &Engine,
    request: tfs::GetModelMetadataRequest,
) -> Result<tfs::GetModelMetadataResponse, Status> {
    if let Some(field) = request
        .metadata_field
        .iter()
        .find(|f| *f != "signature_def")
    {
        return Err(invalid(format!(
            "metadata_field '{field}' is not supported (signature_def is)"
        )));
    }
    let (name, version) = model_spec(request.model_spec.as_ref())?;
    let model = engine.model(name)?;
    let (number, loaded) = model.version(version.as_deref())?;
    let infos = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|spec| {
                let info = tf::TensorInfo {
                    name: spec.name.clone(),
                    dtype: tf_dtype(spec.datatype).number,
                    tensor_shape: Some(shape_proto(&metadata_shape(spec), spec.dims.is_none())),
                };
                (spec.name.clone(), info)
            })
            .collect()
    };
    let signature = tf::SignatureDef {
        inputs: infos(&loaded.inputs),
        outputs: infos(&loaded.outputs),
        method_name: "tensorflow/serving/predict".into(),
    };
    let signatures = tfs::SignatureDefMap {
        signature_def: [("serving_default".to_string(), signature)].into(),
    };
    let any = prost_types::Any {
        type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
        value: signatures.encode_to_vec(),
    };
    Ok(tfs::GetModelMetadataResponse {
        model_spec: Some(spec_of(&model.name, number)),
        metadata: [("signature_def".to_string(), any)].into(),
    })
}

fn status(
    engine: &Engine,
    request: tfs::GetModelStatusRequest,
) -> Result<tfs::GetModelStatusResponse, Status> {
    use tfs::model_version_status::State;
    let (name, version) = model_spec(request.model_spec.as_ref())?;
    let model = engine.model(name)?;
    let model_version_status = version_statuses(&model, version.as_deref())?
        .into_iter()
        .map(|v| tfs::ModelVersionStatus {
            version: v.version as i64,
            state: match v.error {
                None => State::Available,
                Some(_) => State::End,
            } as i32,
            status: Some(tfs::StatusProto {
                error_code: if v.error.is_some() { 2 } else { 0 }, // UNKNOWN, OK
                error_message: v.error.unwrap_or_default().to_string(),
            }),
        })
        .collect();
    Ok(tfs::GetModelStatusResponse {
        model_version_status,
    })
}

/// The model name and version a ModelSpec names; version 0 or none is the default version.
fn model_spec(spec: Option<&tfs::ModelSpec>) -> Result<(&str, Option<String>), Status> {
    use tfs::model_spec::VersionChoice;
    let spec = spec.ok_or_else(|| invalid("model_spec is missing".into()))?;
    if !matches!(spec.signature_name.as_str(), "" | "serving_default") {
        return Err(invalid(format!(
            "unknown signature_name '{}' (serving_default is the only one)",
            spec.signature_name
        )));
    }
    let version = match &spec.version_choice {
        None | Some(VersionChoice::Version(0)) => None,
        Some(VersionChoice::Version(v)) => Some(v.to_string()),
        Some(VersionChoice::VersionLabel(label)) => {
            return Err(invalid(format!(
                "version labels are not supported ('{label}'): name a version number"
            )))
        }
    };
    Ok((&spec.name, version))
}

fn spec_of(name: &str, version: u64) -> tfs::ModelSpec {
    tfs::ModelSpec {
        name: name.to_string(),
        version_choice: Some(tfs::model_spec::VersionChoice::Version(version as i64)),
        signature_name: "serving_default".into(),
    }
}

fn shape_proto(dims: &[i64], unknown_rank: bool) -> tf::TensorShapeProto {
    tf::TensorShapeProto {
        dim: dims
            .iter()
            .map(|&size| tf::tensor_shape_proto::Dim {
                size,
                name: String::new(),
            })
            .collect(),
        unknown_rank,
    }
}

/// A TensorProto as a tensor. `tensor_content` is taken as it is (a view); typed values are
/// written out, and fewer values than elements repeat the last one, as TensorFlow defines it.
pub(super) fn tensor_of(proto: &tf::TensorProto, max_elements: u64) -> Result<Tensor, String> {
    let datatype = datatype_of_tf(proto.dtype).ok_or_else(|| {
        let name = tf::DataType::try_from(proto.dtype).map_or("unknown", |d| d.as_str_name());
        format!("dtype {} ({name}) is not supported", proto.dtype)
    })?;
    let shape_proto = proto.tensor_shape.clone().unwrap_or_default();
    if shape_proto.unknown_rank {
        return Err("tensor_shape has unknown rank".into());
    }
    let shape = shape_proto
        .dim
        .iter()
        .map(|d| u64::try_from(d.size).map_err(|_| format!("dimension {} is negative", d.size)))
        .collect::<Result<Vec<u64>, _>>()?;
    let count = element_count(&shape, max_elements).map_err(|e| e.to_string())?;
    let data = match (proto.tensor_content.is_empty(), datatype) {
        (false, DataType::Bytes) => return Err("DT_STRING values go in string_val".into()),
        (false, _) => proto.tensor_content.clone(),
        (true, _) => Bytes::from(typed(datatype, proto, count)?),
    };
    Tensor::new(datatype, shape, data, max_elements).map_err(|e| e.to_string())
}

/// Typed values as wire bytes: each datatype reads TensorFlow's field for it, and a value that
/// does not fit the datatype is refused, never narrowed.
fn typed(datatype: DataType, p: &tf::TensorProto, count: u64) -> Result<Vec<u8>, String> {
    fn le<T: Copy, const S: usize>(values: &[T], f: fn(T) -> [u8; S]) -> Vec<u8> {
        values.iter().flat_map(|&v| f(v)).collect()
    }
    let (bytes, values) = match datatype {
        DataType::Fp32 => (le(&p.float_val, f32::to_le_bytes), p.float_val.len()),
        DataType::Fp64 => (le(&p.double_val, f64::to_le_bytes), p.double_val.len()),
        DataType::Int32 => (le(&p.int_val, i32::to_le_bytes), p.int_val.len()),
        DataType::Int16 => (
            narrow(&p.int_val, i16::to_le_bytes, "INT16")?,
            p.int_val.len(),
        ),
        DataType::Int8 => (
            narrow(&p.int_val, i8::to_le_bytes, "INT8")?,
            p.int_val.len(),
        ),
        DataType::Uint8 => (
            narrow(&p.int_val, u8::to_le_bytes, "UINT8")?,
            p.int_val.len(),
        ),
        DataType::Uint16 => (
            narrow(&p.int_val, u16::to_le_bytes, "UINT16")?,
            p.int_val.len(),
        ),
        DataType::Int64 => (le(&p.int64_val, i64::to_le_bytes), p.int64_val.len()),
        DataType::Uint32 => (le(&p.uint32_val, u32::to_le_bytes), p.uint32_val.len()),
        DataType::Uint64 => (le(&p.uint64_val, u64::to_le_bytes), p.uint64_val.len()),
        DataType::Bool => (
            p.bool_val.iter().map(|&b| u8::from(b)).collect(),
            p.bool_val.len(),
        ),
        DataType::Fp16 | DataType::Bf16 => {
            let name = if datatype == DataType::Fp16 {
                "DT_HALF"
            } else {
                "DT_BFLOAT16"
            };
            (
                narrow(&p.half_val, u16::to_le_bytes, name)?,
                p.half_val.len(),
            )
        }
        DataType::Bytes => {
            let mut out = Vec::new();
            for element in &p.string_val {
                push_bytes_element(&mut out, element).map_err(|e| e.to_string())?;
            }
            let last = p.string_val.last().map(|e| e.len() + 4).unwrap_or(0);
            return fill(out, p.string_val.len(), last, count);
        }
    };
    let size = datatype.element_size().unwrap_or(1);
    fill(bytes, values, size, count)
}

/// `values` elements in `bytes`, the last `last` bytes long: repeats the last to make `count`.
fn fill(mut bytes: Vec<u8>, values: usize, last: usize, count: u64) -> Result<Vec<u8>, String> {
    let count = usize::try_from(count).map_err(|_| "too many elements".to_string())?;
    if values == 0 && count > 0 {
        return Err(format!("has no values for its {count} elements"));
    }
    if values > count {
        return Err(format!("has {values} values for {count} elements"));
    }
    if values == count {
        return Ok(bytes); // nothing to repeat (an empty tensor has no last value)
    }
    let tail = bytes.len() - last..bytes.len();
    for _ in values..count {
        bytes.extend_from_within(tail.clone());
    }
    Ok(bytes)
}

/// A tensor as TF Serving answers it: `tensor_content` (a view of the output), or `string_val`
/// for DT_STRING.
fn tensor_proto(tensor: Tensor) -> tf::TensorProto {
    let dims: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    let mut proto = tf::TensorProto {
        dtype: tf_dtype(Some(tensor.datatype)).number,
        tensor_shape: Some(shape_proto(&dims, false)),
        ..Default::default()
    };
    match tensor.datatype {
        DataType::Bytes => {
            proto.string_val = tensor
                .bytes_elements()
                .map(|e| tensor.data.slice_ref(e))
                .collect()
        }
        _ => proto.tensor_content = tensor.data,
    }
    proto
}

fn invalid(message: String) -> Status {
    Status::from(Error::invalid(message))
}
