//! The one place errors become status codes and `{"error": "..."}` bodies.

use std::fmt;

use bytes::Bytes;

use crate::http::{HttpError, Response};
use crate::models::{LookupError, ModelError, ModelErrorKind};
use crate::tensors::TensorError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub status: u16,
    pub message: String,
}

impl ProtocolError {
    pub fn bad_request(message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            status: 503,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            status: 500,
            message: message.into(),
        }
    }

    /// A tensor error about one named input or output.
    pub fn tensor(what: &str, name: &str, error: TensorError) -> ProtocolError {
        ProtocolError::bad_request(format!("{what} '{name}': {error}"))
    }

    pub fn into_response(self) -> Response {
        error_response(self.status, &self.message)
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
        ProtocolError {
            status,
            message: e.to_string(),
        }
    }
}

impl From<ModelError> for ProtocolError {
    fn from(e: ModelError) -> ProtocolError {
        let status = match e.kind {
            ModelErrorKind::InvalidInput => 400,
            ModelErrorKind::Internal => 500,
        };
        ProtocolError {
            status,
            message: e.message,
        }
    }
}

impl From<HttpError> for ProtocolError {
    fn from(e: HttpError) -> ProtocolError {
        ProtocolError {
            status: e.status,
            message: e.message,
        }
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
