//! gRPC messages to and from the engine: the Open Inference Protocol
//! (`inference.GRPCInferenceService`, Triton's superset of KServe's), TF Serving's
//! `PredictionService` and `ModelService` (`tfs.rs`), and `grpc.health.v1.Health`. The HTTP/2
//! connection is the server's (`server::grpc`); this door sees one call at a time: its path and
//! its one request message, and answers one response message or a status.

mod infer;
mod repository;
mod settings;
mod status;
mod tfs;

use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;

use crate::doors::{documents, Group, Service};
use crate::engine::{self, Engine, Error, FINAL_RESPONSE};
pub use status::Status;

use crate::proto;
use proto::inference as pb;

/// A method whose handler panics, in test builds only: the server's catch is tested with it.
#[cfg(test)]
pub const TEST_PANIC: &str = "/tensord.Test/Panic";

/// Answers one call: `path` is `/package.Service/Method`, `message` the request's encoded
/// message, `timeout` the call's `grpc-timeout`, `waitread` when the server began waiting for
/// the message and when it had it (for traces). Returns the encoded response message.
pub async fn call(
    service: &Service,
    path: &str,
    message: Bytes,
    timeout: Option<Duration>,
    waitread: [Instant; 2],
) -> Result<Encoded, Status> {
    let engine = service.engine();
    #[cfg(test)]
    if path == TEST_PANIC {
        panic!("a handler bug, for the test");
    }
    if let Some(method) = path.strip_prefix("/tensorflow.serving.") {
        return tfs::call(engine, method, message, timeout, waitread).await;
    }
    let Some(method) = path.strip_prefix("/inference.GRPCInferenceService/") else {
        return match path {
            "/grpc.health.v1.Health/Check" => {
                let serving = proto::health::health_check_response::ServingStatus::Serving;
                let status = match engine.is_ready() {
                    true => serving as i32,
                    false => proto::health::health_check_response::ServingStatus::NotServing as i32,
                };
                Ok(encode(&proto::health::HealthCheckResponse { status }))
            }
            _ => Err(Status::unimplemented(format!("unknown method {path}"))),
        };
    };
    match method {
        "ServerLive" => Ok(encode(&pb::ServerLiveResponse { live: true })),
        "ServerReady" => Ok(encode(&pb::ServerReadyResponse {
            ready: engine.is_ready(),
        })),
        "ModelReady" => {
            let request: pb::ModelReadyRequest = decode(message)?;
            let ready = engine
                .model(&request.name)
                .is_ok_and(|m| m.version(version(&request.version)).is_ok() && m.is_ready());
            Ok(encode(&pb::ModelReadyResponse { ready }))
        }
        "ServerMetadata" => Ok(encode(&documents::server_metadata())),
        "ModelMetadata" => {
            let request: pb::ModelMetadataRequest = decode(message)?;
            let version = version(&request.version);
            Ok(encode(&documents::model_metadata(
                engine,
                &request.name,
                version,
            )?))
        }
        "ModelConfig" => {
            let request: pb::ModelConfigRequest = decode(message)?;
            let version = version(&request.version);
            let config = documents::model_config(engine, &request.name, version)?;
            Ok(encode(&pb::ModelConfigResponse {
                config: Some(config),
            }))
        }
        "ModelStatistics" => {
            let request: pb::ModelStatisticsRequest = decode(message)?;
            let name = (!request.name.is_empty()).then_some(request.name.as_str());
            let version = version(&request.version);
            Ok(encode(&documents::model_statistics(engine, name, version)?))
        }
        "LogSettings" => {
            let request: pb::LogSettingsRequest = decode(message)?;
            Ok(encode(&settings::log_settings(
                service.logging(),
                &request,
            )?))
        }
        "TraceSetting" => {
            let request: pb::TraceSettingRequest = decode(message)?;
            Ok(encode(&settings::trace_setting(engine, &request)?))
        }
        "RepositoryIndex" => {
            let request: pb::RepositoryIndexRequest = decode(message)?;
            Ok(encode(&repository::index(engine, &request)?))
        }
        "RepositoryModelLoad" => {
            let request: pb::RepositoryModelLoadRequest = decode(message)?;
            Ok(encode(&repository::load(engine, request).await?))
        }
        "RepositoryModelUnload" => {
            let request: pb::RepositoryModelUnloadRequest = decode(message)?;
            Ok(encode(&repository::unload(engine, &request)?))
        }
        "ModelInfer" => {
            let call = infer::InferCall {
                request: decode(message)?,
                deadline: timeout,
                waitread,
            };
            Ok(infer::encode_response(engine.serve(&call).await?))
        }
        "SystemSharedMemoryStatus" => {
            let request: pb::SystemSharedMemoryStatusRequest = decode(message)?;
            let regions = (engine
                .shared_memory()
                .status(region(&request.name))?
                .into_iter())
            .map(|r| {
                let status = pb::system_shared_memory_status_response::RegionStatus {
                    name: r.name.clone(),
                    key: r.key,
                    offset: r.offset,
                    byte_size: r.byte_size,
                };
                (r.name, status)
            })
            .collect();
            Ok(encode(&pb::SystemSharedMemoryStatusResponse { regions }))
        }
        "SystemSharedMemoryRegister" => {
            let r: pb::SystemSharedMemoryRegisterRequest = decode(message)?;
            let shm = engine.shared_memory();
            shm.register(&r.name, &r.key, r.offset, r.byte_size)?;
            Ok(encode(&pb::SystemSharedMemoryRegisterResponse {}))
        }
        "SystemSharedMemoryUnregister" => {
            let request: pb::SystemSharedMemoryUnregisterRequest = decode(message)?;
            (engine.shared_memory()).unregister(region(&request.name))?;
            Ok(encode(&pb::SystemSharedMemoryUnregisterResponse {}))
        }
        "CudaSharedMemoryStatus" => {
            let request: pb::CudaSharedMemoryStatusRequest = decode(message)?;
            (engine.shared_memory()).cuda_status(region(&request.name))?;
            Ok(encode(&pb::CudaSharedMemoryStatusResponse::default()))
        }
        "CudaSharedMemoryRegister" => {
            let request: pb::CudaSharedMemoryRegisterRequest = decode(message)?;
            engine.shared_memory().cuda_register(&request.name)?;
            Ok(encode(&pb::CudaSharedMemoryRegisterResponse {}))
        }
        "CudaSharedMemoryUnregister" => {
            let _: pb::CudaSharedMemoryUnregisterRequest = decode(message)?;
            engine.shared_memory().cuda_unregister()?;
            Ok(encode(&pb::CudaSharedMemoryUnregisterResponse {}))
        }
        other => Err(Status::unimplemented(format!(
            "inference.GRPCInferenceService/{other} is not implemented yet"
        ))),
    }
}

/// Refuses a call to a restricted API group whose metadata lacks the key and value the group
/// demands (Triton's `--grpc-restricted-protocol`), with Triton's status and words. `header`
/// looks metadata up by its lowercase key.
pub fn check_restricted<'h>(
    service: &Service,
    path: &str,
    header: impl FnOnce(&str) -> Option<&'h [u8]>,
) -> Result<(), Status> {
    let Some(group) = group(path) else {
        return Ok(());
    };
    let restrictions = &service.restrictions.grpc;
    restrictions.check(group, header).map_err(|key| Status {
        code: 14, // UNAVAILABLE
        message: format!("This protocol is restricted, expecting header '{key}'"),
    })
}

/// The restricted-API group of a call's path (none for an unknown method, which is refused
/// as unimplemented whatever it carries).
fn group(path: &str) -> Option<Group> {
    let method = path.rsplit('/').next()?;
    Some(match method {
        "Check" | "ServerLive" | "ServerReady" | "ModelReady" | "GetModelStatus" => Group::Health,
        "ServerMetadata" | "ModelMetadata" | "GetModelMetadata" => Group::Metadata,
        "ModelInfer" | "ModelStreamInfer" | "Predict" => Group::Inference,
        "ModelConfig" => Group::ModelConfig,
        "ModelStatistics" => Group::Statistics,
        "RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload" => {
            Group::ModelRepository
        }
        "TraceSetting" => Group::Trace,
        "LogSettings" => Group::Logging,
        "SystemSharedMemoryStatus"
        | "SystemSharedMemoryRegister"
        | "SystemSharedMemoryUnregister"
        | "CudaSharedMemoryStatus"
        | "CudaSharedMemoryRegister"
        | "CudaSharedMemoryUnregister" => Group::SharedMemory,
        _ => return None,
    })
}

/// The bidirectional streaming infer call, which the connection serves message by message.
pub const STREAM_INFER: &str = "/inference.GRPCInferenceService/ModelStreamInfer";

/// One message of ModelStreamInfer: a ModelInferRequest in, a ModelStreamInferResponse out.
/// Errors travel in the response's `error_message`, as Triton sends them, and the stream goes
/// on. Each response is its request's final one, and says so (`triton_final_response`) when the
/// request asked for final responses to be marked, as Triton does.
pub async fn stream_infer(
    engine: &Engine,
    message: Result<Bytes, Status>,
    timeout: Option<Duration>,
    waitread: [Instant; 2],
) -> Encoded {
    let answer = match message.and_then(decode::<pb::ModelInferRequest>) {
        Ok(request) => {
            let flag = infer::parameters_of(&request.parameters).get_bool(FINAL_RESPONSE);
            let mark_final = matches!(flag, Ok(Some(true)));
            let call = infer::InferCall {
                request,
                deadline: timeout,
                waitread,
            };
            (engine.serve(&call).await)
                .map_err(Status::from)
                .map(|mut response| {
                    if mark_final {
                        let yes = pb::infer_parameter::ParameterChoice::BoolParam(true);
                        let final_response = pb::InferParameter {
                            parameter_choice: Some(yes),
                        };
                        (response.parameters)
                            .insert("triton_final_response".into(), final_response);
                    }
                    response
                })
        }
        Err(status) => Err(status),
    };
    match answer {
        Ok(response) => encode(&pb::ModelStreamInferResponse {
            error_message: String::new(),
            infer_response: Some(response),
        }),
        Err(status) => stream_error(status),
    }
}

/// A stream message that failed: the error travels in the response, and the stream goes on.
pub fn stream_error(status: Status) -> Encoded {
    encode(&pb::ModelStreamInferResponse {
        error_message: status.message,
        infer_response: None,
    })
}

/// Decodes `message` as far as a call does before it reaches a model: as a ModelInferRequest
/// and as TF Serving's PredictRequest, then their tensors. The fuzz target's entry; errors are
/// the expected outcome.
pub fn decode_requests(message: Bytes, max_elements: u64) {
    if let Ok(request) = pb::ModelInferRequest::decode(message.clone()) {
        let _ = infer::decode(&request, max_elements);
    }
    if let Ok(request) = proto::tensorflow::serving::PredictRequest::decode(message) {
        for tensor in request.inputs.values() {
            let _ = tfs::tensor_of(tensor, max_elements);
        }
    }
}

/// The trace points of a call: when the server began waiting for its message and when it had
/// it, and the start of the answer.
fn grpc_trace_points(waitread: [Instant; 2]) -> engine::TracePoints {
    engine::TracePoints {
        received: [
            ("GRPC_WAITREAD_START", waitread[0]),
            ("GRPC_WAITREAD_END", waitread[1]),
        ],
        send_start: "GRPC_SEND_START",
    }
}

/// An empty version field means the default version.
fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

/// An empty region name means every region.
fn region(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

fn decode<M: Message + Default>(message: Bytes) -> Result<M, Status> {
    M::decode(message).map_err(|e| Status::from(Error::invalid(format!("invalid message: {e}"))))
}

/// `decode`, refusing a message that sets a top-level field other than `known` (number, name).
/// prost skips unknown fields without a word; for messages written as a subset of another
/// project's (TF Serving's), a field tensord does not read is refused, never ignored.
fn decode_known<M: Message + Default>(
    message: Bytes,
    what: &str,
    known: &[(u32, &str)],
) -> Result<M, Status> {
    use prost::encoding::{decode_key, skip_field, DecodeContext};
    let mut rest = &message[..];
    while !rest.is_empty() {
        let Ok((tag, wire_type)) = decode_key(&mut rest) else {
            break; // `decode` reports the malformed message
        };
        if !known.iter().any(|(n, _)| *n == tag) {
            let names: Vec<&str> = known.iter().map(|(_, name)| *name).collect();
            return Err(Status::from(Error::invalid(format!(
                "{what} field {tag} is not supported (tensord reads {}); it is refused rather \
                 than ignored",
                names.join(", ")
            ))));
        }
        if skip_field(wire_type, tag, &mut rest, DecodeContext::default()).is_err() {
            break;
        }
    }
    decode(message)
}

/// Parts of a message this large travel on their own rather than being copied next to others:
/// ModelInfer's outputs, and the first part of a framed message.
pub const INLINE_BYTES: usize = 16 * 1024;

/// An encoded response message in parts, which concatenated are the protobuf bytes: large
/// tensor contents stay parts of their own (views of the outputs), written without a copy.
pub type Encoded = Vec<Bytes>;

fn encode<M: Message>(message: &M) -> Encoded {
    vec![Bytes::from(message.encode_to_vec())]
}
