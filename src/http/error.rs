//! HTTP failures: a status, a message, and any headers the answer needs. Answered as
//! `{"error": message}`.

use std::fmt;

use bytes::Bytes;

use super::{Method, Response};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
    /// Extra headers of the answer (`Allow` on a 405, `Retry-After` on overload).
    pub headers: Vec<(&'static str, String)>,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(400, message)
    }

    pub fn header_too_large(limit: usize) -> HttpError {
        HttpError::new(
            431,
            format!("request header is larger than the limit of {limit} bytes"),
        )
    }

    pub fn body_too_large(length: u64, limit: u64) -> HttpError {
        HttpError::new(
            413,
            format!("request body of {length} bytes is larger than the limit of {limit} bytes"),
        )
    }

    pub fn not_implemented(message: impl Into<String>) -> HttpError {
        HttpError::new(501, message)
    }

    pub fn timeout(what: &str) -> HttpError {
        HttpError::new(408, format!("timed out waiting for the request {what}"))
    }

    /// 405: `path` (as the client wrote it) takes only the methods `allowed` (and HEAD where
    /// they include GET).
    pub fn wrong_method(path: &str, allowed: &[Method]) -> HttpError {
        let name = |m: &Method| if *m == Method::Post { "POST" } else { "GET" };
        let names: Vec<&str> = allowed.iter().map(name).collect();
        let mut allow = names.clone();
        if allowed.contains(&Method::Get) {
            allow.insert(
                allow.iter().position(|&n| n == "GET").map_or(0, |i| i + 1),
                "HEAD",
            );
        }
        HttpError {
            headers: vec![("Allow", allow.join(", "))],
            ..HttpError::new(405, format!("{path} takes only {}", names.join(" or ")))
        }
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message }).to_string();
        Response {
            status: self.status,
            content_type: "application/json",
            headers: self.headers,
            body: vec![Bytes::from(body)],
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status, self.message)
    }
}

impl std::error::Error for HttpError {}
