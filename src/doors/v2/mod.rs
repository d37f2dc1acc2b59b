//! The Open Inference Protocol (KServe V2) over REST, with Triton's extensions: the binary
//! tensor data extension, model configuration, statistics and the repository API.

mod json_walk;
mod parameters;
mod request;
mod response;

use base64::Engine as _;
use bytes::Bytes;

pub use request::{decode_infer_request, decode_raw_request, header_length, InferRequest};
pub use response::encode_infer_response;

use super::routes::{ModelRef, ShmAction, V2Route as Route};
use super::{documents, json_response};
use crate::engine::{self, Arrival, Engine, Error, Overrides, SharedMemory, SharedPlace, Target};
use crate::http::{Method, Request, Response};
use crate::proto::{self, Defaults};

/// Answers one V2 route.
pub async fn serve(
    engine: &Engine,
    route: Route<'_>,
    request: &Request,
) -> Result<Response, Error> {
    match route {
        Route::ServerMetadata => document(
            &documents::server_metadata(),
            "inference.ServerMetadataResponse",
        ),
        Route::Live => Ok(json_response(r#"{"live":true}"#.into())),
        Route::Ready if engine.is_ready() => Ok(json_response(r#"{"ready":true}"#.into())),
        Route::Ready => Err(Error::not_ready("server is not ready")),
        Route::ModelMetadata(m) => document(
            &documents::model_metadata(engine, &m.name, m.version.as_deref())?,
            "inference.ModelMetadataResponse",
        ),
        Route::ModelConfig(m) => document(
            &documents::model_config(engine, &m.name, m.version.as_deref())?,
            "inference.ModelConfig",
        ),
        Route::ModelReady(m) => {
            let model = engine.model(&m.name)?;
            model.version(m.version.as_deref())?;
            match model.reason() {
                None => Ok(json_response(
                    serde_json::json!({ "name": model.name, "ready": true }).to_string(),
                )),
                Some(reason) => Err(Error::not_ready(format!(
                    "model '{}' is not ready: {reason}",
                    model.name
                ))),
            }
        }
        Route::Infer(model) => engine.serve(&V2Call { model, request }).await,
        Route::ModelStats(m) => {
            let (name, version) = m.as_ref().map_or((None, None), |m| {
                (Some(m.name.as_ref()), m.version.as_deref())
            });
            document(
                &documents::model_statistics(engine, name, version)?,
                "inference.ModelStatisticsResponse",
            )
        }
        Route::RepositoryIndex => {
            let ready_only = index_ready_filter(&request.body)?;
            let index = documents::repository_index(engine, ready_only)?;
            // Triton's REST index is the list itself, each entry with the fields it has.
            let entries: Vec<serde_json::Value> = (index.models.iter())
                .map(|m| {
                    proto::to_json(
                        m,
                        "inference.RepositoryIndexResponse.ModelIndex",
                        Defaults::Left,
                    )
                    .map_err(Error::internal)
                })
                .collect::<Result<_, _>>()?;
            Ok(json_response(serde_json::Value::from(entries).to_string()))
        }
        Route::Load(name) => {
            engine.load(&name, load_overrides(&request.body)?).await?;
            Ok(empty_ok())
        }
        Route::TraceSetting(m) => {
            let model = m.as_ref().map(|m| engine.model(&m.name)).transpose()?;
            let name = model.as_ref().map(|m| m.name.as_str());
            let settings = match request.head.method {
                Method::Post => engine
                    .tracer()
                    .update(name, &trace_update(&request.body)?)?,
                _ => engine.tracer().settings(name),
            };
            Ok(json_response(settings.to_string()))
        }
        Route::Unload(name) => {
            engine.unload(&name, unload_dependents(&request.body)?)?;
            Ok(empty_ok())
        }
        Route::SharedMemory {
            cuda,
            region,
            action,
        } => shared_memory(
            engine.shared_memory(),
            cuda,
            region.as_deref(),
            action,
            &request.body,
        ),
    }
}

/// Triton's shared-memory routes. CUDA regions are answered as Triton answers on a host without
/// GPUs.
fn shared_memory(
    shm: &SharedMemory,
    cuda: bool,
    region: Option<&str>,
    action: ShmAction,
    body: &Bytes,
) -> Result<Response, Error> {
    match (cuda, action) {
        (false, ShmAction::Status) => {
            let regions: Vec<serde_json::Value> = (shm.status(region)?.into_iter())
                .map(|r| {
                    serde_json::json!({
                        "name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size
                    })
                })
                .collect();
            return Ok(json_response(serde_json::Value::from(regions).to_string()));
        }
        (true, ShmAction::Status) => {
            shm.cuda_status(region)?;
            return Ok(json_response("[]".into()));
        }
        (false, ShmAction::Register) => {
            shm.check_allowed()?;
            let name = region.unwrap_or_default();
            let (key, offset, byte_size) = register_request(body)?;
            shm.register(name, &key, offset, byte_size)?;
        }
        (true, ShmAction::Register) => shm.cuda_register(region.unwrap_or_default())?,
        (false, ShmAction::Unregister) => shm.unregister(region)?,
        (true, ShmAction::Unregister) => shm.cuda_unregister()?,
    }
    Ok(empty_ok())
}

/// A register request's body: `{"key", "offset", "byte_size"}`, in Triton's words when a
/// field is missing; a field it does not define is refused.
fn register_request(body: &Bytes) -> Result<(String, u64, u64), Error> {
    #[derive(Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Register {
        key: Option<String>,
        #[serde(default)]
        offset: u64,
        byte_size: Option<u64>,
    }
    let request: Register = optional_json(body, "shared memory register request")?;
    let key = request
        .key
        .ok_or_else(|| Error::invalid("Shared memory register request has no 'key' field"))?;
    let byte_size = request
        .byte_size
        .ok_or_else(|| Error::invalid("Shared memory register request has no 'byte_size' field"))?;
    Ok((key, request.offset, byte_size))
}

/// One infer request over REST.
struct V2Call<'r> {
    model: ModelRef<'r>,
    request: &'r Request,
}

impl engine::Call for V2Call<'_> {
    /// The decoded request (its inputs taken), and which outputs go back binary.
    type Kept<'a>
        = (InferRequest<'a>, Vec<bool>)
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
    ) -> Result<(engine::InferRequest<'a>, Self::Kept<'a>), Error> {
        let mut request = decode(target, self.request, max_elements)?;
        let binary: Vec<bool> = match request.outputs.as_slice() {
            [] => vec![request.output_is_binary(None)?; target.loaded.outputs.len()],
            wanted => wanted
                .iter()
                .map(|o| request.output_is_binary(Some(o)))
                .collect::<Result<_, _>>()?,
        };
        let run = engine::InferRequest {
            inputs: std::mem::take(&mut request.inputs),
            shared_inputs: std::mem::take(&mut request.shared_inputs),
            outputs: request
                .outputs
                .iter()
                .map(|o| {
                    let shared_memory = SharedPlace::of(&o.parameters, &o.name)?;
                    // tritonclient sends `"binary_data": false` beside a region.
                    if shared_memory.is_some()
                        && o.parameters.get_bool("binary_data")? == Some(true)
                    {
                        return Err(Error::invalid(
                            "Output can't set both 'shared_memory_region' and 'binary_data'",
                        ));
                    }
                    Ok(engine::WantedOutput {
                        name: o.name.clone(),
                        classification: o.parameters.get_u64("classification")?,
                        shared_memory,
                    })
                })
                .collect::<Result<_, Error>>()?,
            timeout: request.parameters.timeout()?,
            sequence: request.parameters.sequence()?,
        };
        Ok((run, (request, binary)))
    }

    fn encode<'a>(
        &'a self,
        target: &Target<'a>,
        (request, binary): Self::Kept<'a>,
        outputs: Vec<engine::Output<'a>>,
    ) -> Result<(Response, usize), Error> {
        let outputs = outputs.into_iter().zip(binary).collect();
        let reply = encode_infer_response(&target.model.name, target.version, &request, outputs)?;
        let bytes = reply.body_len() as usize;
        Ok((reply, bytes))
    }
}

/// The request in the body: JSON (with binary tensors after it), or Triton's raw binary body
/// (`Inference-Header-Content-Length: 0`) for a single-input model.
fn decode<'r>(
    target: &Target<'r>,
    request: &'r Request,
    max: u64,
) -> Result<InferRequest<'r>, Error> {
    let (model, loaded) = (target.model, target.loaded);
    let body = &request.body;
    let header_len = request
        .head
        .header("inference-header-content-length")
        .map(header_length)
        .transpose()?;
    match (header_len, loaded.inputs.as_slice()) {
        (Some(0), [only]) => decode_raw_request(body, only, model.config.max_batch_size > 0, max),
        (Some(0), _) => Err(Error::invalid(format!(
            "a raw binary request (Inference-Header-Content-Length: 0) needs a model with \
             one input; '{}' has {}",
            model.name,
            loaded.inputs.len()
        ))),
        (len, _) => {
            let decoded = decode_infer_request(body, len, max)?;
            match decoded.model_name.as_deref() {
                Some(named) if named != model.name => Err(Error::invalid(format!(
                    "the body's model_name '{named}' is not the URL's model '{}'",
                    model.name
                ))),
                _ => Ok(decoded),
            }
        }
    }
}

/// A 200 with `message` (of type `name`) in Triton's JSON: every field written.
fn document(message: &impl prost::Message, name: &str) -> Result<Response, Error> {
    let json = proto::to_json(message, name, Defaults::Written).map_err(Error::internal)?;
    Ok(json_response(json.to_string()))
}

/// A body of JSON that may be left out (empty or blank): `T`'s default then. `what` names it in
/// the error.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: &Bytes,
    what: &str,
) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| Error::invalid(format!("invalid {what}: {e}")))
}

/// A trace settings update: each setting's new value, `null` to restore the global one.
fn trace_update(body: &Bytes) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    optional_json(body, "trace settings")
}

/// An unload request's `parameters` may hold `unload_dependents` (Triton's: an ensemble's
/// composing models go too). Any other parameter is refused, not ignored.
fn unload_dependents(body: &Bytes) -> Result<bool, Error> {
    #[derive(Default, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct UnloadParameters {
        #[serde(default)]
        unload_dependents: bool,
    }
    #[derive(Default, serde::Deserialize)]
    struct UnloadRequest {
        #[serde(default)]
        parameters: UnloadParameters,
    }
    optional_json::<UnloadRequest>(body, "unload request").map(|r| r.parameters.unload_dependents)
}

/// `POST /v2/repository/index` may carry `{"ready": true}`.
fn index_ready_filter(body: &Bytes) -> Result<bool, Error> {
    #[derive(Default, serde::Deserialize)]
    struct IndexRequest {
        #[serde(default)]
        ready: bool,
    }
    optional_json::<IndexRequest>(body, "index request").map(|r| r.ready)
}

/// A load request's `parameters`: `config` (a model config in Triton's JSON) and
/// `file:<version>/<file>` (base64 contents). Any other parameter is refused, not ignored.
fn load_overrides(body: &Bytes) -> Result<Overrides, Error> {
    #[derive(Default, serde::Deserialize)]
    struct LoadRequest {
        #[serde(default)]
        parameters: std::collections::BTreeMap<String, serde_json::Value>,
    }
    let mut overrides = Overrides::default();
    let request: LoadRequest = optional_json(body, "load request")?;
    for (key, value) in request.parameters {
        let text = value
            .as_str()
            .ok_or_else(|| Error::invalid(format!("load parameter '{key}' must be a string")))?;
        if key == "config" {
            overrides.set_config(text)?;
        } else if let Some(path) = key.strip_prefix("file:") {
            let contents = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    Error::invalid(format!("load parameter '{key}': invalid base64: {e}"))
                })?;
            overrides.files.push((path.to_string(), contents));
        } else {
            return Err(Error::invalid(format!(
                "unknown load parameter '{key}' (known: config, file:<version>/<file>)"
            )));
        }
    }
    Ok(overrides)
}

fn empty_ok() -> Response {
    Response {
        status: 200,
        content_type: "",
        headers: Vec::new(),
        body: Vec::new(),
    }
}
