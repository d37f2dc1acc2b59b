//! TensorFlow Serving's REST API (OVMS's second front door): model status, metadata and
//! predict in the row (`instances`) and columnar (`inputs`) formats, `{"b64": ...}` for bytes.
//! Predict requests become the same engine request the V2 door produces; only parsing, routes
//! and the response shape differ.

mod predict;

use serde_json::{json, Map, Value};

use super::describe::{metadata_shape, tf_dtype};
use super::json_response;
use super::routes::ModelRef;
use super::routes::TfsRoute;
use crate::engine::{self, Arrival, Engine, Error, LoadedVersion, ServedModel, Target};
use crate::http::{Request, Response};
use crate::models::TensorSpec;

/// Answers one TF Serving route.
pub async fn serve(
    engine: &Engine,
    route: TfsRoute<'_>,
    request: &Request,
) -> Result<Response, Error> {
    match route {
        TfsRoute::Status(m) => {
            let model = engine.model(&m.name)?;
            Ok(json_response(
                status(&model, m.version.as_deref())?.to_string(),
            ))
        }
        TfsRoute::Metadata(m) => {
            let model = engine.model(&m.name)?;
            let (version, loaded) = model.version(m.version.as_deref())?;
            Ok(json_response(metadata(&model, version, loaded).to_string()))
        }
        TfsRoute::Predict(model) => engine.serve(&PredictCall { model, request }).await,
    }
}

/// One predict request over REST.
struct PredictCall<'r> {
    model: ModelRef<'r>,
    request: &'r Request,
}

impl engine::Call for PredictCall<'_> {
    /// The layout the request used, which its answer takes.
    type Kept<'a>
        = predict::Format
    where
        Self: 'a;
    type Reply = Response;

    fn arrival(&self) -> Arrival<'_> {
        super::http_arrival(&self.model, self.request)
    }

    fn decode<'a>(
        &'a self,
        target: &Target<'a>,
        max_elements: u64,
    ) -> Result<(engine::InferRequest<'a>, predict::Format), Error> {
        predict::decode_predict(&self.request.body, target.loaded, max_elements)
    }

    fn encode<'a>(
        &'a self,
        _: &Target<'a>,
        format: predict::Format,
        outputs: Vec<engine::Output<'a>>,
    ) -> Result<(Response, usize), Error> {
        let reply = predict::encode_predict(format, outputs)?;
        let bytes = reply.body_len() as usize;
        Ok((reply, bytes))
    }
}

/// One version's state as TF Serving reports it: available, or ended with the load error.
pub struct VersionStatus<'m> {
    pub version: u64,
    pub error: Option<&'m str>,
}

/// The statuses of the named version, or of every version; a model with none is not found.
pub fn version_statuses<'m>(
    model: &'m ServedModel,
    version: Option<&str>,
) -> Result<Vec<VersionStatus<'m>>, Error> {
    if version.is_some() {
        model.version(version)?;
    }
    let statuses: Vec<VersionStatus> = model
        .versions
        .iter()
        .filter(|v| version.is_none_or(|want| want == v.version.to_string()))
        .map(|v| VersionStatus {
            version: v.version,
            error: v.state.as_ref().err().map(String::as_str),
        })
        .collect();
    if statuses.is_empty() {
        let reason = model.reason().unwrap_or_else(|| "no version loaded".into());
        return Err(Error::not_found(format!(
            "model '{}' has no version: {reason}",
            model.name
        )));
    }
    Ok(statuses)
}

/// `model_version_status` for the named version, or every version.
fn status(model: &ServedModel, version: Option<&str>) -> Result<Value, Error> {
    let statuses: Vec<Value> = version_statuses(model, version)?
        .iter()
        .map(|v| {
            let (state, code, message) = match v.error {
                None => ("AVAILABLE", "OK", ""),
                Some(e) => ("END", "UNKNOWN", e),
            };
            json!({
                "version": v.version.to_string(),
                "state": state,
                "status": { "error_code": code, "error_message": message },
            })
        })
        .collect();
    Ok(json!({ "model_version_status": statuses }))
}

/// Model metadata with a `serving_default` signature. Keys are written in both spellings TF
/// Serving clients read: TF Serving's own (snake_case) and OVMS's (camelCase, which
/// `ovmsclient` parses).
fn metadata(model: &ServedModel, version: u64, loaded: &LoadedVersion) -> Value {
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
                    "dtype": tf_dtype(spec.datatype).name,
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
