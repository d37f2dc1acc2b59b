//! The one place an engine error becomes a gRPC status.

use crate::engine::{Error, ErrorKind};

/// A gRPC status code and message (`grpc-status`, `grpc-message`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

impl Status {
    pub const OK: u32 = 0;

    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status {
            code: 12,
            message: message.into(),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match e.kind {
            ErrorKind::Invalid => 3,       // INVALID_ARGUMENT
            ErrorKind::NotFound => 5,      // NOT_FOUND
            ErrorKind::NotReady => 14,     // UNAVAILABLE
            ErrorKind::Overloaded => 8,    // RESOURCE_EXHAUSTED
            ErrorKind::TimedOut => 4,      // DEADLINE_EXCEEDED
            ErrorKind::Internal => 13,     // INTERNAL
            ErrorKind::Unsupported => 12,  // UNIMPLEMENTED
            ErrorKind::AlreadyExists => 6, // ALREADY_EXISTS
        };
        Status {
            code,
            message: e.message,
        }
    }
}
