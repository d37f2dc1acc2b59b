//! The front doors: each translates one wire protocol to and from the engine. `Service` takes a
//! complete HTTP request, finds its route in the one route table, and hands it to the door that
//! serves it (V2 REST, TF Serving REST, or `/metrics`). No I/O happens here.

mod describe;
mod documents;
pub mod grpc;
mod prometheus;
mod restricted;
mod routes;
mod status;
pub mod tfs;
pub mod v2;

use std::sync::Arc;

use bytes::Bytes;

use crate::engine::{Arrival, Engine, Error, TracePoints};
use crate::http::{compress, Coding, HttpError, Method, Request, Response};
use crate::logging::Logging;
use crate::metrics::ServerMetrics;
pub use restricted::{Group, Restrictions};
use routes::{route, Route, V2Route};

/// Extensions this server implements, as listed in server metadata.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "sequence",
    "logging",
    "trace",
    "binary_tensor_data",
    "parameters",
    "model_repository",
    "model_configuration",
    "statistics",
    "system_shared_memory",
];

pub struct Service {
    engine: Arc<Engine>,
    metrics: Arc<ServerMetrics>,
    /// Infer responses of at least this many bytes are compressed when the client asks
    /// (`None`: never).
    compress_min_bytes: Option<u64>,
    logging: Arc<Logging>,
    restrictions: Access,
}

/// The restricted API groups of each protocol (Triton's `--http-restricted-api` and
/// `--grpc-restricted-protocol`).
#[derive(Clone, Debug, Default)]
pub struct Access {
    pub http: Restrictions,
    pub grpc: Restrictions,
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
        engine: Arc<Engine>,
        metrics: Arc<ServerMetrics>,
        compress_min_bytes: Option<u64>,
        logging: Arc<Logging>,
        restrictions: Access,
    ) -> Service {
        Service {
            engine,
            metrics,
            compress_min_bytes,
            logging,
            restrictions,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn logging(&self) -> &Logging {
        &self.logging
    }

    pub async fn handle(&self, request: &Request, endpoints: Endpoints) -> Response {
        self.dispatch(request, endpoints).await.unwrap_or_else(|e| {
            tracing::debug!(
                status = e.status,
                path = request.head.path(),
                "{}",
                e.message
            );
            e.into_response()
        })
    }

    async fn dispatch(
        &self,
        request: &Request,
        endpoints: Endpoints,
    ) -> Result<Response, HttpError> {
        let route = route(request.head.method, request.head.path())?;
        if endpoints == Endpoints::MetricsOnly && route != Route::Metrics {
            return Err(HttpError::new(404, "this port serves /metrics only"));
        }
        if let Some(group) = route.group() {
            self.restrictions
                .http
                .check(group, |name| request.head.header(name))
                .map_err(|header| {
                    HttpError::new(
                        403,
                        format!("This API is restricted, expecting header '{header}'"),
                    )
                })?;
        }
        // As Triton does, only infer responses are compressed.
        let compressible = matches!(route, Route::V2(V2Route::Infer(_)));
        let engine = &self.engine;
        let response = match route {
            Route::Metrics => Ok(Response {
                status: 200,
                content_type: "text/plain; version=0.0.4",
                headers: Vec::new(),
                body: vec![Bytes::from(prometheus::render(
                    &engine.repository().models(),
                    engine.shared_memory(),
                    &self.metrics,
                ))],
            }),
            Route::Logging if request.head.method == Method::Post => self
                .logging
                .update(&request.body)
                .map_err(Error::invalid)
                .map(|settings| json_response(serde_json::json!(settings).to_string())),
            Route::Logging => Ok(json_response(
                serde_json::json!(self.logging.settings()).to_string(),
            )),
            Route::V2(route) => v2::serve(engine, route, request).await,
            Route::Tfs(route) => tfs::serve(engine, route, request).await,
        }?;
        Ok(match self.compress_min_bytes {
            Some(min) if compressible && response.body_len() >= min => {
                compressed(response, request.head.header("accept-encoding"))
            }
            _ => response,
        })
    }
}

/// The response compressed in the coding `accept` (the request's `Accept-Encoding`) prefers.
fn compressed(mut response: Response, accept: Option<&[u8]>) -> Response {
    let Some(coding) = accept.and_then(Coding::preferred) else {
        return response;
    };
    response.body = vec![compress(&response.body, coding)];
    response
        .headers
        .push(("Content-Encoding", coding.name().to_string()));
    response
}

/// A 200 with a JSON body.
fn json_response(body: String) -> Response {
    Response {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: vec![Bytes::from(body)],
    }
}

/// An infer request over HTTP (V2 and TF Serving alike) for the model its route names.
fn http_arrival<'a>(model: &'a routes::ModelRef, request: &Request) -> Arrival<'a> {
    Arrival {
        model: &model.name,
        version: model.version.as_deref(),
        bytes: request.body.len(),
        trace: TracePoints {
            received: [
                ("HTTP_RECV_START", request.arrived),
                ("HTTP_RECV_END", request.read),
            ],
            send_start: "HTTP_SEND_START",
        },
    }
}
