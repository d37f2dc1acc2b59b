//! The V2 service: a complete HTTP request in, a response out. No I/O happens here.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;

use super::infer_request::{decode_infer_request, decode_raw_request, header_length, InferRequest};
use super::infer_response::{encode_infer_response, ResponseOutput};
use super::metadata::{model_metadata, server_metadata};
use super::routes::{route, ModelRef, Route};
use super::ProtocolError;
use crate::http::{Method, Request, Response};
use crate::models::{Repository, ServedModel};
use crate::tensors::Tensor;

pub struct Service {
    repository: Repository,
    max_tensor_elements: u64,
    draining: AtomicBool,
}

impl Service {
    pub fn new(repository: Repository, max_tensor_elements: u64) -> Service {
        Service {
            repository,
            max_tensor_elements,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on the server reports not ready (it is shutting down).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.repository.all_ready()
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn handle(&self, request: &Request) -> Response {
        self.dispatch(request)
            .unwrap_or_else(ProtocolError::into_response)
    }

    fn dispatch(&self, request: &Request) -> Result<Response, ProtocolError> {
        let Some(route) = route(request.head.path())? else {
            return Err(ProtocolError {
                status: 404,
                message: format!("no such endpoint: {}", request.head.path()),
            });
        };
        let method = match request.head.method {
            Method::Head => Method::Get,
            other => other,
        };
        if method != route.method() {
            return Err(ProtocolError {
                status: 405,
                message: format!("{} needs {:?}", request.head.path(), route.method())
                    .to_uppercase(),
            });
        }
        match route {
            Route::ServerMetadata => Ok(json_response(server_metadata().to_string())),
            Route::Live => Ok(empty_ok()),
            Route::Ready if self.is_ready() => Ok(empty_ok()),
            Route::Ready => Err(ProtocolError::unavailable("server is not ready")),
            Route::ModelMetadata(m) => {
                let model = self.lookup(&m)?;
                Ok(json_response(model_metadata(model).to_string()))
            }
            Route::ModelReady(m) => {
                let model = self.lookup(&m)?;
                match &model.state {
                    Ok(_) => Ok(empty_ok()),
                    Err(reason) => Err(not_ready(model, reason)),
                }
            }
            Route::Infer(m) => {
                let model = self.lookup(&m)?;
                let version = match &m.version {
                    Some(v) => v.parse().unwrap_or(0),
                    None => model.latest_version(),
                };
                self.infer(model, version, request)
            }
        }
    }

    fn lookup(&self, m: &ModelRef) -> Result<&ServedModel, ProtocolError> {
        Ok(self.repository.get(&m.name, m.version.as_deref())?)
    }

    fn infer(
        &self,
        model: &ServedModel,
        version: u64,
        request: &Request,
    ) -> Result<Response, ProtocolError> {
        let runnable = model
            .state
            .as_ref()
            .map_err(|reason| not_ready(model, reason))?;
        let body = &request.body;
        let header_len = request
            .head
            .header("inference-header-content-length")
            .map(header_length)
            .transpose()?;
        let infer_request = match (header_len, model.inputs.as_slice()) {
            (Some(0), [only]) => decode_raw_request(body, only, self.max_tensor_elements)?,
            (Some(0), _) => {
                return Err(ProtocolError::bad_request(format!(
                    "a raw binary request (Inference-Header-Content-Length: 0) needs a model with \
                     one input; '{}' has {}",
                    model.name,
                    model.inputs.len()
                )))
            }
            (len, _) => decode_infer_request(body, len, self.max_tensor_elements)?,
        };
        let inputs = arrange_inputs(model, &infer_request)?;
        let outputs = runnable.execute(&inputs)?;
        if outputs.len() != model.outputs.len() {
            return Err(ProtocolError {
                status: 500,
                message: format!(
                    "model '{}' returned {} outputs, declared {}",
                    model.name,
                    outputs.len(),
                    model.outputs.len()
                ),
            });
        }
        let selected = select_outputs(model, &infer_request, outputs)?;
        encode_infer_response(&model.name, version, &infer_request, selected)
    }
}

/// The request's tensors in the model's input order, each checked against its spec.
fn arrange_inputs(
    model: &ServedModel,
    request: &InferRequest,
) -> Result<Vec<Tensor>, ProtocolError> {
    if let Some(extra) = request
        .inputs
        .iter()
        .find(|i| !model.inputs.iter().any(|s| s.name == i.name))
    {
        return Err(ProtocolError::bad_request(format!(
            "unknown input '{}' for model '{}'",
            extra.name, model.name
        )));
    }
    model
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
            Ok(input.tensor.clone())
        })
        .collect()
}

/// The outputs to send, in the order requested (all of them, in model order, when none are).
fn select_outputs<'m>(
    model: &'m ServedModel,
    request: &InferRequest,
    outputs: Vec<Tensor>,
) -> Result<Vec<ResponseOutput<'m>>, ProtocolError> {
    let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    if request.outputs.is_empty() {
        let binary = request.output_is_binary(None)?;
        return Ok(model
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
            let index = model
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
                name: &model.outputs[index].name,
                tensor,
                binary: request.output_is_binary(Some(wanted))?,
            })
        })
        .collect()
}

fn not_ready(model: &ServedModel, reason: &str) -> ProtocolError {
    ProtocolError::unavailable(format!("model '{}' is not ready: {reason}", model.name))
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
