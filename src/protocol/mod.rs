//! The Open Inference Protocol (KServe V2): routes, infer request decoding, response encoding,
//! and the mapping of every error to a status and `{"error": "..."}`.

mod error;
mod infer_request;
mod infer_response;
mod json_walk;
mod metadata;
mod parameters;
mod prometheus;
mod routes;
mod service;
mod tfs;

pub use error::{error_response, ProtocolError};
pub use infer_request::{decode_infer_request, header_length, InferRequest};
pub use infer_response::{encode_infer_response, ResponseOutput};
pub use parameters::{ParamValue, Parameters};
pub use service::{Endpoints, Service};
pub use tfs::tensor_of as tfs_tensor_of;
