//! Response heads. Bodies are written by the server from the buffers the protocol hands over.

use std::io::Write;

/// Sent before reading a body that the client announced with `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A response as the protocol layer produces it: body parts are written in order,
/// each straight from its own buffer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<bytes::Bytes>,
}

impl Response {
    pub fn body_len(&self) -> u64 {
        self.body.iter().map(|part| part.len() as u64).sum()
    }
}

/// Appends the status line and headers of `response` to `out`.
pub fn write_head(out: &mut Vec<u8>, response: &Response, keep_alive: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(response.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(response.status).as_bytes());
    out.extend_from_slice(b"\r\nServer: tensord\r\n");
    if !response.content_type.is_empty() {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(response.content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in &response.headers {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{name}: {value}\r\n");
    }
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(response.body_len()).as_bytes());
    out.extend_from_slice(if keep_alive {
        b"\r\nConnection: keep-alive\r\n\r\n"
    } else {
        b"\r\nConnection: close\r\n\r\n"
    });
}

/// The standard reason phrase of every status (IANA's registry, as the `http` crate holds it).
fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_has_its_reason_phrase() {
        for (status, phrase) in [
            (403, "Forbidden"),
            (415, "Unsupported Media Type"),
            (503, "Service Unavailable"),
        ] {
            assert_eq!(reason(status), phrase);
        }
    }

    #[test]
    fn head_bytes() {
        let response = Response {
            status: 200,
            content_type: "application/json",
            headers: vec![("Inference-Header-Content-Length", "2".into())],
            body: vec![
                bytes::Bytes::from_static(b"{}"),
                bytes::Bytes::from_static(b"abc"),
            ],
        };
        let mut out = Vec::new();
        write_head(&mut out, &response, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nServer: tensord\r\nContent-Type: application/json\r\n\
             Inference-Header-Content-Length: 2\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"
        );
    }
}
