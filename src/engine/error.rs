//! Why a request failed, in the engine's terms. Each front door maps the kind to its own
//! status once (HTTP in `doors::status`); statistics count failures by kind.

use std::fmt;

use crate::models::{ModelError, ModelErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: malformed, wrong shapes or datatypes, unknown names.
    Invalid,
    /// No such model, version or endpoint.
    NotFound,
    /// The model (or the server) is not ready to serve.
    NotReady,
    /// The model's queue is full; retrying later may succeed.
    Overloaded,
    /// The request waited in the queue past its timeout.
    TimedOut,
    /// The model or the server failed.
    Internal,
    /// The server does not do what was asked (Triton's UNSUPPORTED).
    Unsupported,
    /// What the request would create exists already (Triton's ALREADY_EXISTS).
    AlreadyExists,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Invalid,
        ErrorKind::NotFound,
        ErrorKind::NotReady,
        ErrorKind::Overloaded,
        ErrorKind::TimedOut,
        ErrorKind::Internal,
        ErrorKind::Unsupported,
        ErrorKind::AlreadyExists,
    ];
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The request had reached the model's queue: only then is it a failure in the model's
    /// statistics, as in Triton (a request refused before it is queued is counted nowhere).
    pub queued: bool,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            queued: false,
        }
    }

    /// This error, from a request that had reached the model's queue.
    pub fn of_queued(self) -> Error {
        Error {
            queued: true,
            ..self
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn not_ready(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotReady, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Unsupported, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<ModelError> for Error {
    fn from(e: ModelError) -> Error {
        let kind = match e.kind {
            ModelErrorKind::InvalidInput => ErrorKind::Invalid,
            ModelErrorKind::Internal => ErrorKind::Internal,
        };
        Error::new(kind, e.message)
    }
}
