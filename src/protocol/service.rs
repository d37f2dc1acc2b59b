//! The V2 service: a complete HTTP request in, a response out. No I/O happens here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::infer_request::{decode_infer_request, decode_raw_request, header_length, InferRequest};
use super::infer_response::{encode_infer_response, ResponseOutput};
use super::metadata::{
    model_config, model_metadata, model_statistics, repository_index, server_metadata,
};
use super::prometheus;
use super::routes::{route, ModelRef, Route};
use super::tfs::{self, TfsRoute};
use super::ProtocolError;
use crate::batching::{self, FailReason};
use crate::http::{Method, Request, Response};
use crate::images;
use crate::metrics::ServerMetrics;
use crate::models::{LoadedVersion, Repository, ServedModel};
use crate::tensors::{DataType, Tensor};

pub struct Service {
    repository: Arc<Repository>,
    max_tensor_elements: u64,
    draining: AtomicBool,
    metrics: Arc<ServerMetrics>,
}

/// Which endpoints a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    All,
    /// A separate metrics port: `/metrics` and nothing else.
    MetricsOnly,
}

impl Service {
    pub fn new(
        repository: Repository,
        max_tensor_elements: u64,
        metrics: Arc<ServerMetrics>,
    ) -> Service {
        Service {
            repository: Arc::new(repository),
            max_tensor_elements,
            draining: AtomicBool::new(false),
            metrics,
        }
    }

    /// From now on the server reports not ready (it is shutting down).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// (ready models, all models), for status lines.
    pub fn models_ready(&self) -> (usize, usize) {
        let models = self.repository.models();
        (models.iter().filter(|m| m.is_ready()).count(), models.len())
    }

    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.repository.all_ready()
    }

    pub async fn handle(&self, request: &Request, endpoints: Endpoints) -> Response {
        self.dispatch(request, endpoints)
            .await
            .unwrap_or_else(ProtocolError::into_response)
    }

    async fn dispatch(
        &self,
        request: &Request,
        endpoints: Endpoints,
    ) -> Result<Response, ProtocolError> {
        if request.head.path() == "/metrics" {
            check_method(request, Method::Get)?;
            let text = prometheus::render(&self.repository.models(), &self.metrics);
            return Ok(Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                headers: Vec::new(),
                body: vec![Bytes::from(text)],
            });
        }
        if endpoints == Endpoints::MetricsOnly {
            return Err(ProtocolError::new(404, "this port serves /metrics only"));
        }
        if let Some(route) = tfs::route(request.head.path()) {
            return self.tfs(route, request).await;
        }
        let Some(route) = route(request.head.path())? else {
            return Err(ProtocolError::new(
                404,
                format!("no such endpoint: {}", request.head.path()),
            ));
        };
        check_method(request, route.method())?;
        match route {
            Route::ServerMetadata => Ok(json_response(server_metadata().to_string())),
            Route::Live => Ok(empty_ok()),
            Route::Ready if self.is_ready() => Ok(empty_ok()),
            Route::Ready => Err(ProtocolError::unavailable("server is not ready")),
            Route::ModelMetadata(m) => {
                let model = self.repository.get(&m.name)?;
                let loaded = version_for_description(&model, &m)?;
                Ok(json_response(model_metadata(&model, loaded).to_string()))
            }
            Route::ModelConfig(m) => {
                let model = self.repository.get(&m.name)?;
                let loaded = version_for_description(&model, &m)?;
                Ok(json_response(model_config(&model, loaded).to_string()))
            }
            Route::ModelReady(m) => {
                let model = self.repository.get(&m.name)?;
                model.version(m.version.as_deref())?;
                match model.reason() {
                    None => Ok(empty_ok()),
                    Some(reason) => Err(ProtocolError::unavailable(format!(
                        "model '{}' is not ready: {reason}",
                        model.name
                    ))),
                }
            }
            Route::Infer(m) => {
                let model = self.repository.get(&m.name)?;
                let (version, loaded) = model.version(m.version.as_deref())?;
                self.infer(&model, version, loaded, request).await
            }
            Route::ModelStats(m) => Ok(json_response(self.statistics(m.as_ref())?.to_string())),
            Route::RepositoryIndex => {
                let ready_only = index_ready_filter(&request.body)?;
                let entries = self.repository.index().map_err(ProtocolError::internal)?;
                Ok(json_response(
                    repository_index(&entries, ready_only).to_string(),
                ))
            }
            Route::Load(name) => {
                let (repository, name) = (self.repository.clone(), name.into_owned());
                elsewhere("model loader", on_loader_thread, move || {
                    repository.load(&name)
                })
                .await?
                .map_err(ProtocolError::bad_request)?;
                Ok(empty_ok())
            }
            Route::Unload(name) => {
                self.repository.unload(&name)?;
                Ok(empty_ok())
            }
        }
    }

    /// Statistics of one model's versions (one version when named), or of every model.
    fn statistics(&self, m: Option<&ModelRef>) -> Result<serde_json::Value, ProtocolError> {
        let models = match m {
            Some(m) => vec![self.repository.get(&m.name)?],
            None => self.repository.models(),
        };
        let wanted = match m.and_then(|m| m.version.as_deref()) {
            Some(v) => Some(models[0].version(Some(v))?.0),
            None => None,
        };
        let entries: Vec<(&str, u64, &crate::batching::ModelStats)> = models
            .iter()
            .flat_map(|model| {
                model.loaded().map(move |(version, loaded)| {
                    (model.name.as_str(), version, loaded.executor.stats())
                })
            })
            .filter(|(_, v, _)| wanted.is_none_or(|w| w == *v))
            .collect();
        Ok(model_statistics(&entries))
    }

    /// Runs one V2 infer request and counts it in the model's statistics.
    async fn infer(
        &self,
        model: &ServedModel,
        version: u64,
        loaded: &LoadedVersion,
        request: &Request,
    ) -> Result<Response, ProtocolError> {
        counted(loaded, request, async {
            let mut infer_request = self.decode_v2(model, loaded, request)?;
            let (outputs, rows) = self.run(model, loaded, &mut infer_request).await?;
            let response = encode_infer_response(&model.name, version, &infer_request, outputs)?;
            Ok((response, rows))
        })
        .await
    }

    fn decode_v2<'r>(
        &self,
        model: &ServedModel,
        loaded: &'r LoadedVersion,
        request: &'r Request,
    ) -> Result<InferRequest<'r>, ProtocolError> {
        let body = &request.body;
        let header_len = request
            .head
            .header("inference-header-content-length")
            .map(header_length)
            .transpose()?;
        match (header_len, loaded.inputs.as_slice()) {
            (Some(0), [only]) => decode_raw_request(body, only, self.max_tensor_elements),
            (Some(0), _) => Err(ProtocolError::bad_request(format!(
                "a raw binary request (Inference-Header-Content-Length: 0) needs a model with \
                 one input; '{}' has {}",
                model.name,
                loaded.inputs.len()
            ))),
            (len, _) => decode_infer_request(body, len, self.max_tensor_elements),
        }
    }

    /// What every front door shares once a request is decoded: images, input checks, the
    /// model's queue, output selection. Returns the outputs and the request's rows (its batch
    /// size, 1 for a model that does not batch).
    async fn run<'l>(
        &self,
        model: &ServedModel,
        loaded: &'l LoadedVersion,
        infer_request: &mut InferRequest<'_>,
    ) -> Result<(Vec<ResponseOutput<'l>>, u64), ProtocolError> {
        self.decode_images(infer_request, loaded).await?;
        let inputs = arrange_inputs(model, loaded, infer_request)?;
        let rows = match model.config.max_batch_size {
            0 => 1,
            _ => batching::rows(&inputs),
        };
        let timeout = infer_request
            .parameters
            .get_u64("timeout")?
            .map(Duration::from_micros);
        let outputs = loaded.executor.execute(inputs, timeout).await?;
        if outputs.len() != loaded.outputs.len() {
            return Err(ProtocolError::internal(format!(
                "model '{}' returned {} outputs, declared {}",
                model.name,
                outputs.len(),
                loaded.outputs.len()
            )));
        }
        Ok((select_outputs(model, loaded, infer_request, outputs)?, rows))
    }

    /// TensorFlow Serving's REST API.
    async fn tfs(&self, route: TfsRoute<'_>, request: &Request) -> Result<Response, ProtocolError> {
        check_method(
            request,
            match route {
                TfsRoute::Predict(_) => Method::Post,
                _ => Method::Get,
            },
        )?;
        match route {
            TfsRoute::Status(m) => {
                let model = self.repository.get(&m.name)?;
                Ok(json_response(
                    tfs::status(&model, m.version.as_deref())?.to_string(),
                ))
            }
            TfsRoute::Metadata(m) => {
                let model = self.repository.get(&m.name)?;
                let (version, loaded) = model.version(m.version.as_deref())?;
                Ok(json_response(
                    tfs::metadata(&model, version, loaded).to_string(),
                ))
            }
            TfsRoute::Predict(m) => {
                let model = self.repository.get(&m.name)?;
                let (_, loaded) = model.version(m.version.as_deref())?;
                counted(loaded, request, async {
                    let (mut infer_request, format) =
                        tfs::decode_predict(&request.body, loaded, self.max_tensor_elements)?;
                    let (outputs, rows) = self.run(&model, loaded, &mut infer_request).await?;
                    Ok((tfs::encode_predict(format, outputs)?, rows))
                })
                .await
            }
        }
    }
}

/// Runs `work` (a response and its rows) and counts it in the model's statistics.
async fn counted(
    loaded: &LoadedVersion,
    request: &Request,
    work: impl std::future::Future<Output = Result<(Response, u64), ProtocolError>>,
) -> Result<Response, ProtocolError> {
    let started = Instant::now();
    let result = work.await;
    let stats = loaded.executor.stats();
    stats.request_bytes.observe(request.body.len() as f64);
    match &result {
        Ok((response, rows)) => {
            stats.record_success(*rows, started.elapsed());
            stats.response_bytes.observe(response.body_len() as f64);
        }
        Err(e) => {
            let reason = match e.status {
                503 => FailReason::Rejected,
                500 => FailReason::Backend,
                _ => FailReason::Other,
            };
            stats.record_failure(started.elapsed(), reason);
        }
    }
    result.map(|(response, _)| response)
}

impl Service {
    /// Turns BYTES [N] inputs sent to image inputs (4 dims) into the model's tensors. Heavy
    /// work (several images, or large ones) runs on the compute pool, not the io thread.
    async fn decode_images(
        &self,
        request: &mut InferRequest<'_>,
        loaded: &LoadedVersion,
    ) -> Result<(), ProtocolError> {
        let max = self.max_tensor_elements;
        for input in request.inputs.iter_mut() {
            let tensor = &input.tensor;
            if tensor.datatype != DataType::Bytes || tensor.shape.len() != 1 {
                continue;
            }
            let Some(spec) = loaded.inputs.iter().find(|s| s.name == input.name) else {
                continue;
            };
            let Some(target) = spec.image_target() else {
                continue;
            };
            let decoded = if images::is_heavy(tensor) {
                let tensor = tensor.clone();
                elsewhere("image decoder", on_pool, move || {
                    images::decode_images(&tensor, &target, max)
                })
                .await?
            } else {
                images::decode_images(tensor, &target, max)
            };
            input.tensor = decoded
                .map_err(|e| ProtocolError::bad_request(format!("input '{}': {e}", input.name)))?;
        }
        Ok(())
    }
}

/// Whether `request` uses the method its path takes (HEAD counting as GET); else 405 with Allow.
fn check_method(request: &Request, want: Method) -> Result<(), ProtocolError> {
    let got = match request.head.method {
        Method::Head => Method::Get,
        other => other,
    };
    if got == want {
        Ok(())
    } else {
        Err(ProtocolError::wrong_method(request.head.path(), want))
    }
}

/// The version whose tensors metadata describes: the one asked for, else the default one
/// (none when no version is ready: the document then says why).
fn version_for_description<'m>(
    model: &'m ServedModel,
    m: &ModelRef,
) -> Result<Option<&'m LoadedVersion>, ProtocolError> {
    match m.version.as_deref() {
        Some(_) => Ok(Some(model.version(m.version.as_deref())?.1)),
        None => Ok(model.version(None).ok().map(|(_, loaded)| loaded)),
    }
}

/// `POST /v2/repository/index` may carry `{"ready": true}`.
fn index_ready_filter(body: &Bytes) -> Result<bool, ProtocolError> {
    #[derive(serde::Deserialize)]
    struct IndexRequest {
        #[serde(default)]
        ready: bool,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    serde_json::from_slice::<IndexRequest>(body)
        .map(|r| r.ready)
        .map_err(|e| ProtocolError::bad_request(format!("invalid index request: {e}")))
}

/// Work handed to another thread.
type Errand = Box<dyn FnOnce() + Send>;

/// Runs blocking `work` on another thread (`spawn` decides which) while the io thread awaits
/// its result. A panic fails the request (on rayon's pool it would abort the process).
async fn elsewhere<T: Send + 'static>(
    what: &str,
    spawn: impl FnOnce(Errand) -> std::io::Result<()>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProtocolError> {
    let (done, result) = flume::bounded(1);
    spawn(Box::new(move || {
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok());
    }))
    .map_err(|e| ProtocolError::internal(format!("cannot start the {what}: {e}")))?;
    result
        .recv_async()
        .await
        .ok()
        .flatten()
        .ok_or_else(|| ProtocolError::internal(format!("the {what} failed")))
}

/// CPU-heavy work (image decoding) goes to rayon's pool.
fn on_pool(errand: Errand) -> std::io::Result<()> {
    rayon::spawn(errand);
    Ok(())
}

/// Long blocking work (loading a model) gets a thread of its own.
fn on_loader_thread(errand: Errand) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tensord-loader".into())
        .spawn(errand)
        .map(drop)
}

/// The request's tensors in the model's input order, each checked against its spec.
fn arrange_inputs(
    model: &ServedModel,
    loaded: &LoadedVersion,
    request: &InferRequest,
) -> Result<Vec<Tensor>, ProtocolError> {
    if let Some(extra) = request
        .inputs
        .iter()
        .find(|i| !loaded.inputs.iter().any(|s| s.name == i.name))
    {
        return Err(ProtocolError::bad_request(format!(
            "unknown input '{}' for model '{}'",
            extra.name, model.name
        )));
    }
    let max_batch = model.config.max_batch_size;
    loaded
        .inputs
        .iter()
        .map(|spec| {
            let mut given = request.inputs.iter().filter(|i| i.name == spec.name);
            let input = given.next().ok_or_else(|| {
                ProtocolError::bad_request(format!(
                    "missing input '{}' for model '{}'",
                    spec.name, model.name
                ))
            })?;
            if given.next().is_some() {
                return Err(ProtocolError::bad_request(format!(
                    "input '{}' given twice",
                    spec.name
                )));
            }
            spec.check(input.tensor.datatype, &input.tensor.shape)?;
            if max_batch > 0 && input.tensor.shape.is_empty() {
                return Err(ProtocolError::bad_request(format!(
                    "input '{}' has no batch dimension, which model '{}' needs (max_batch_size {max_batch})",
                    spec.name, model.name
                )));
            }
            let batch = input.tensor.shape.first().copied().unwrap_or(0);
            if max_batch > 0 && batch > max_batch {
                return Err(ProtocolError::bad_request(format!(
                    "input '{}' has batch size {batch}, over the model's max_batch_size {max_batch}",
                    spec.name
                )));
            }
            Ok(input.tensor.clone())
        })
        .collect()
}

/// The outputs to send, in the order requested (all of them, in model order, when none are).
fn select_outputs<'m>(
    model: &ServedModel,
    loaded: &'m LoadedVersion,
    request: &InferRequest,
    outputs: Vec<Tensor>,
) -> Result<Vec<ResponseOutput<'m>>, ProtocolError> {
    let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    if request.outputs.is_empty() {
        let binary = request.output_is_binary(None)?;
        return Ok(loaded
            .outputs
            .iter()
            .zip(outputs)
            .filter_map(|(spec, tensor)| {
                Some(ResponseOutput {
                    name: &spec.name,
                    tensor: tensor?,
                    binary,
                })
            })
            .collect());
    }
    request
        .outputs
        .iter()
        .map(|wanted| {
            let index = loaded
                .outputs
                .iter()
                .position(|s| s.name == wanted.name)
                .ok_or_else(|| {
                    ProtocolError::bad_request(format!(
                        "unknown output '{}' for model '{}'",
                        wanted.name, model.name
                    ))
                })?;
            let tensor = outputs[index].take().ok_or_else(|| {
                ProtocolError::bad_request(format!("output '{}' requested twice", wanted.name))
            })?;
            Ok(ResponseOutput {
                name: &loaded.outputs[index].name,
                tensor,
                binary: request.output_is_binary(Some(wanted))?,
            })
        })
        .collect()
}

fn empty_ok() -> Response {
    Response {
        status: 200,
        content_type: "",
        headers: Vec::new(),
        body: Vec::new(),
    }
}

fn json_response(body: String) -> Response {
    Response {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: vec![Bytes::from(body)],
    }
}
