//! HTTP/1.1 without I/O: request heads, bodies (one decoder for every framing), response heads,
//! limits and errors.
//! Knows nothing of inference; the server drives it, the protocol layer reads its requests.

mod body;
mod chunked;
mod coding;
mod error;
mod limits;
mod request;
mod response;

pub use body::{BodyReader, BodyStep, READ_CHUNK};
pub use chunked::ChunkedDecoder;
pub use coding::{compress, Coding, Inflater};
pub use error::HttpError;
pub use limits::Limits;
pub use request::{parse_head, BodyFraming, Method, ParsedHead, Request, RequestHead};
pub use response::{write_head, Response, CONTINUE};
