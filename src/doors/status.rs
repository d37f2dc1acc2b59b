//! The one place an engine error becomes an HTTP status.

use crate::engine::{Error, ErrorKind};
use crate::http::HttpError;

impl From<Error> for HttpError {
    fn from(e: Error) -> HttpError {
        let status = match e.kind {
            ErrorKind::Invalid | ErrorKind::AlreadyExists => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::NotReady | ErrorKind::Overloaded | ErrorKind::TimedOut => 503,
            ErrorKind::Internal => 500,
            ErrorKind::Unsupported => 501,
        };
        let mut error = HttpError::new(status, e.message);
        if e.kind == ErrorKind::Overloaded {
            // A full queue drains quickly: worth retrying soon.
            error.headers.push(("Retry-After", "1".into()));
        }
        error
    }
}
