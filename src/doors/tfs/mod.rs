//! TensorFlow Serving's REST API (OVMS's second front door): model status, metadata and
//! predict in the row (`instances`) and columnar (`inputs`) formats, `{"b64": ...}` for bytes.
//! Predict requests become the same engine request the V2 door produces; only parsing, routes
//! and the response shape differ.

mod predict;

use serde_json::{json, Map, Value};

use super::describe::metadata_shape;
use super::json_response;
use super::routes::TfsRoute;
use crate::engine::{counted, Counted, Engine, Error, LoadedVersion, ServedModel};
use crate::http::{Request, Response};
use crate::models::TensorSpec;
use crate::tensors::DataType;

/// Answers one TF Serving route.
pub async fn serve(
    engine: &Engine,
    route: TfsRoute<'_>,
    request: &Request,
) -> Result<Response, Error> {
    let repository = engine.repository();
    match route {
        TfsRoute::Status(m) => {
            let model = repository.get(&m.name)?;
            Ok(json_response(
                status(&model, m.version.as_deref())?.to_string(),
            ))
        }
        TfsRoute::Metadata(m) => {
            let model = repository.get(&m.name)?;
            let (version, loaded) = model.version(m.version.as_deref())?;
            Ok(json_response(metadata(&model, version, loaded).to_string()))
        }
        TfsRoute::Predict(m) => {
            let model = repository.get(&m.name)?;
            let (_, loaded) = model.version(m.version.as_deref())?;
            counted(loaded, request.body.len(), async {
                let max = engine.max_tensor_elements();
                let (run, format) = predict::decode_predict(&request.body, loaded, max)?;
                let done = engine.infer(&model, loaded, run).await?;
                let reply = predict::encode_predict(format, done.outputs)?;
                Ok(Counted {
                    bytes: reply.body_len() as usize,
                    rows: done.rows,
                    reply,
                })
            })
            .await
        }
    }
}

/// TensorFlow's name for a datatype.
fn tf_dtype(datatype: Option<DataType>) -> &'static str {
    match datatype {
        Some(DataType::Bool) => "DT_BOOL",
        Some(DataType::Uint8) => "DT_UINT8",
        Some(DataType::Uint16) => "DT_UINT16",
        Some(DataType::Uint32) => "DT_UINT32",
        Some(DataType::Uint64) => "DT_UINT64",
        Some(DataType::Int8) => "DT_INT8",
        Some(DataType::Int16) => "DT_INT16",
        Some(DataType::Int32) => "DT_INT32",
        Some(DataType::Int64) => "DT_INT64",
        Some(DataType::Fp16) => "DT_HALF",
        Some(DataType::Bf16) => "DT_BFLOAT16",
        Some(DataType::Fp32) => "DT_FLOAT",
        Some(DataType::Fp64) => "DT_DOUBLE",
        Some(DataType::Bytes) => "DT_STRING",
        None => "DT_INVALID",
    }
}

/// `model_version_status` for the named version, or every version.
pub fn status(model: &ServedModel, version: Option<&str>) -> Result<Value, Error> {
    if version.is_some() {
        model.version(version)?;
    }
    let statuses: Vec<Value> = model
        .versions
        .iter()
        .filter(|v| version.is_none_or(|want| want == v.version.to_string()))
        .map(|v| {
            let (state, code, message) = match &v.state {
                Ok(_) => ("AVAILABLE", "OK", String::new()),
                Err(e) => ("END", "UNKNOWN", e.clone()),
            };
            json!({
                "version": v.version.to_string(),
                "state": state,
                "status": { "error_code": code, "error_message": message },
            })
        })
        .collect();
    if statuses.is_empty() {
        let reason = model.reason().unwrap_or_else(|| "no version loaded".into());
        return Err(Error::not_found(format!(
            "model '{}' has no version: {reason}",
            model.name
        )));
    }
    Ok(json!({ "model_version_status": statuses }))
}

/// Model metadata with a `serving_default` signature. Keys are written in both spellings TF
/// Serving clients read: TF Serving's own (snake_case) and OVMS's (camelCase, which
/// `ovmsclient` parses).
pub fn metadata(model: &ServedModel, version: u64, loaded: &LoadedVersion) -> Value {
    let tensors = |specs: &[TensorSpec]| -> Map<String, Value> {
        specs
            .iter()
            .map(|spec| {
                let dims: Vec<Value> = metadata_shape(spec)
                    .iter()
                    .map(|d| json!({ "size": d.to_string(), "name": "" }))
                    .collect();
                let unknown = spec.dims.is_none();
                let info = json!({
                    "dtype": tf_dtype(spec.datatype),
                    "tensor_shape": { "dim": dims.clone(), "unknown_rank": unknown },
                    "tensorShape": { "dim": dims, "unknownRank": unknown },
                    "name": spec.name,
                });
                (spec.name.clone(), info)
            })
            .collect()
    };
    let signature = json!({
        "inputs": tensors(&loaded.inputs),
        "outputs": tensors(&loaded.outputs),
        "method_name": "tensorflow/serving/predict",
        "methodName": "tensorflow/serving/predict",
    });
    let signatures = json!({ "serving_default": signature });
    let spec = json!({ "name": model.name, "signature_name": "", "signatureName": "", "version": version.to_string() });
    json!({
        "model_spec": spec.clone(),
        "modelSpec": spec,
        "metadata": {
            "signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signature_def": signatures.clone(),
                "signatureDef": signatures,
            }
        }
    })
}
