//! HTTP-level failures: each knows the status it is answered with.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError {
            status: 400,
            message: message.into(),
        }
    }

    pub fn header_too_large(limit: usize) -> HttpError {
        HttpError {
            status: 431,
            message: format!("request header is larger than the limit of {limit} bytes"),
        }
    }

    pub fn body_too_large(length: u64, limit: u64) -> HttpError {
        HttpError {
            status: 413,
            message: format!(
                "request body of {length} bytes is larger than the limit of {limit} bytes"
            ),
        }
    }

    pub fn not_implemented(message: impl Into<String>) -> HttpError {
        HttpError {
            status: 501,
            message: message.into(),
        }
    }

    pub fn timeout(what: &str) -> HttpError {
        HttpError {
            status: 408,
            message: format!("timed out waiting for the request {what}"),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for HttpError {}
