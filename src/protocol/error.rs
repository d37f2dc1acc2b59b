//! The one place errors become status codes and `{"error": "..."}` bodies.

use std::fmt;

use bytes::Bytes;

use crate::http::{HttpError, Method, Response};
use crate::models::{LookupError, ModelError, ModelErrorKind};
use crate::tensors::TensorError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub status: u16,
    pub message: String,
    /// Seconds a client should wait before retrying (503 on overload).
    pub retry_after: Option<u32>,
    /// The methods the path takes (405).
    pub allow: Option<&'static str>,
}

impl ProtocolError {
    pub fn new(status: u16, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            status,
            message: message.into(),
            retry_after: None,
            allow: None,
        }
    }

    /// 405: `path` (as the client wrote it) takes only `want` (and HEAD where `want` is GET).
    pub fn wrong_method(path: &str, want: Method) -> ProtocolError {
        let (name, allow) = match want {
            Method::Post => ("POST", "POST"),
            _ => ("GET", "GET, HEAD"),
        };
        ProtocolError {
            allow: Some(allow),
            ..ProtocolError::new(405, format!("{path} takes only {name}"))
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ProtocolError {
        ProtocolError::new(400, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ProtocolError {
        ProtocolError::new(503, message)
    }

    pub fn internal(message: impl Into<String>) -> ProtocolError {
        ProtocolError::new(500, message)
    }

    /// A tensor error about one named input or output.
    pub fn tensor(what: &str, name: &str, error: TensorError) -> ProtocolError {
        ProtocolError::bad_request(format!("{what} '{name}': {error}"))
    }

    pub fn into_response(self) -> Response {
        let mut response = error_response(self.status, &self.message);
        if let Some(seconds) = self.retry_after {
            response.headers.push(("Retry-After", seconds.to_string()));
        }
        if let Some(methods) = self.allow {
            response.headers.push(("Allow", methods.to_string()));
        }
        response
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl From<LookupError> for ProtocolError {
    fn from(e: LookupError) -> ProtocolError {
        let status = match e {
            LookupError::NotReady { .. } => 503,
            LookupError::UnknownModel(_) | LookupError::UnknownVersion { .. } => 404,
        };
        ProtocolError::new(status, e.to_string())
    }
}

impl From<ModelError> for ProtocolError {
    fn from(e: ModelError) -> ProtocolError {
        match e.kind {
            ModelErrorKind::InvalidInput => ProtocolError::bad_request(e.message),
            ModelErrorKind::Internal => ProtocolError::internal(e.message),
            ModelErrorKind::TimedOut => ProtocolError::unavailable(e.message),
            ModelErrorKind::Overloaded => ProtocolError {
                retry_after: Some(1),
                ..ProtocolError::unavailable(e.message)
            },
        }
    }
}

impl From<HttpError> for ProtocolError {
    fn from(e: HttpError) -> ProtocolError {
        ProtocolError::new(e.status, e.message)
    }
}

/// A JSON response with `{"error": message}`.
pub fn error_response(status: u16, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    Response {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: vec![Bytes::from(body)],
    }
}
