//! Request heads: parsed with httparse, kept as offsets into the received bytes.

use std::ops::Range;

use bytes::Bytes;

use super::{HttpError, Limits};

/// The most header lines a request may carry.
const MAX_HEADERS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Head,
    Other,
}

/// How the body that follows a head is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
}

#[derive(Clone, Debug)]
pub struct RequestHead {
    raw: Bytes,
    pub method: Method,
    target: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: BodyFraming,
    pub expect_continue: bool,
    pub keep_alive: bool,
}

/// A complete request: its head and its whole body in one buffer.
#[derive(Clone, Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Bytes,
    /// When its first bytes were at hand, and when the last of its body was read (traces).
    pub arrived: std::time::Instant,
    pub read: std::time::Instant,
}

impl RequestHead {
    /// The request target as sent (path and query).
    pub fn target(&self) -> &str {
        if self.target.is_empty() {
            // An absolute-form target with no path (`http://host`) asks for "/".
            return "/";
        }
        // httparse only accepts visible ASCII in the target.
        std::str::from_utf8(&self.raw[self.target.clone()]).unwrap_or("")
    }

    /// The path without its query string.
    pub fn path(&self) -> &str {
        let target = self.target();
        target.split_once('?').map_or(target, |(path, _)| path)
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.raw[v.clone()])
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet. `Ok(Some((head, len)))`: the head took
/// the first `len` bytes, which the caller passes as `raw` (so the head owns its bytes).
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(ParsedHead, usize)>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return Err(HttpError::header_too_large(limits.max_header_bytes));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(
                431,
                format!("request has more than {MAX_HEADERS} header lines"),
            ))
        }
        Err(e) => {
            return Err(HttpError::bad_request(format!(
                "malformed request head: {e}"
            )))
        }
    };
    if len > limits.max_header_bytes {
        return Err(HttpError::header_too_large(limits.max_header_bytes));
    }
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let minor = req.version.unwrap_or(1);
    let mut framing = Framing::default();
    let mut header_ranges = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        framing.add(h.name, h.value)?;
        header_ranges.push((offset(h.name.as_bytes()), offset(h.value)));
    }
    let parsed = ParsedHead {
        method,
        target: offset(origin_form(req.path.unwrap_or("/")).as_bytes()),
        headers: header_ranges,
        framing: framing.body()?,
        expect_continue: framing.expect_continue,
        keep_alive: !framing.smuggling_risk()
            && match minor {
                0 => framing.connection_keep_alive,
                _ => !framing.connection_close,
            },
    };
    Ok(Some((parsed, len)))
}

/// A parsed head before it takes ownership of its bytes.
pub struct ParsedHead {
    method: Method,
    target: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    framing: BodyFraming,
    expect_continue: bool,
    keep_alive: bool,
}

impl ParsedHead {
    pub fn framing(&self) -> BodyFraming {
        self.framing
    }

    /// Binds the head to the bytes it was parsed from (the first `len` bytes of the buffer).
    pub fn into_head(self, raw: Bytes) -> RequestHead {
        RequestHead {
            raw,
            method: self.method,
            target: self.target,
            headers: self.headers,
            framing: self.framing,
            expect_continue: self.expect_continue,
            keep_alive: self.keep_alive,
        }
    }
}

/// The headers that decide framing and connection reuse.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    chunked: bool,
    expect_continue: bool,
    connection_close: bool,
    connection_keep_alive: bool,
}

impl Framing {
    fn add(&mut self, name: &str, value: &[u8]) -> Result<(), HttpError> {
        if name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| HttpError::bad_request("invalid Content-Length"))?;
            if self.content_length.is_some_and(|old| old != length) {
                return Err(HttpError::bad_request("conflicting Content-Length headers"));
            }
            self.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Another coding stacked under chunked (gzip, chunked) would have to be undone
            // before the body is read; Content-Encoding is the way to send compressed bodies.
            if !value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(HttpError::not_implemented(
                    "only the chunked transfer coding is supported (send compressed bodies with \
                     Content-Encoding)",
                ));
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("expect") {
            if !value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(HttpError::new(
                    417,
                    "only Expect: 100-continue is supported",
                ));
            }
            self.expect_continue = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                self.connection_close |= token.eq_ignore_ascii_case(b"close");
                self.connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }

    /// With both Content-Length and Transfer-Encoding (Python's `requests` sends both when a
    /// caller sets Transfer-Encoding), the chunked framing wins, as RFC 9112 §6.3 says; the
    /// connection is then closed after the answer (`smuggling_risk`), so no bytes a proxy
    /// framed otherwise can be read as a next request.
    fn body(&self) -> Result<BodyFraming, HttpError> {
        match (self.chunked, self.content_length) {
            (true, _) => Ok(BodyFraming::Chunked),
            (false, length) => Ok(BodyFraming::Length(length.unwrap_or(0))),
        }
    }

    fn smuggling_risk(&self) -> bool {
        self.chunked && self.content_length.is_some()
    }
}

/// The path and query of a request target. An absolute-form target
/// (`http://host:port/path?query`, which proxies send) is read as its path and query, as
/// RFC 9112 §3.2.2 requires servers to accept; its authority is not used.
fn origin_form(target: &str) -> &str {
    let is =
        |scheme: &str| (target.get(..scheme.len())).is_some_and(|t| t.eq_ignore_ascii_case(scheme));
    let rest = if is("http://") {
        &target[7..]
    } else if is("https://") {
        &target[8..]
    } else {
        return target;
    };
    let path_at = rest.find(['/', '?']).unwrap_or(rest.len());
    &rest[path_at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &[u8]) -> Result<Option<RequestHead>, HttpError> {
        let limits = Limits::default();
        Ok(parse_head(raw, &limits)?
            .map(|(head, len)| head.into_head(Bytes::copy_from_slice(&raw[..len]))))
    }

    #[test]
    fn absolute_form_targets_are_read_as_their_path() {
        let target = |raw: &[u8]| parse(raw).unwrap().unwrap().target().to_string();
        assert_eq!(
            target(b"POST http://127.0.0.1:8000/v2/models/m/infer?x=1 HTTP/1.1\r\n\r\n"),
            "/v2/models/m/infer?x=1"
        );
        assert_eq!(target(b"GET HTTPS://host HTTP/1.1\r\n\r\n"), "/");
        assert_eq!(target(b"GET /http://x HTTP/1.1\r\n\r\n"), "/http://x");
    }

    #[test]
    fn head_fields_and_headers_in_any_case() {
        let head = parse(
            b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 12\r\nInference-Header-Content-Length: 7\r\n\r\nbody",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.target(), "/v2/models/m/infer?x=1");
        assert_eq!(head.path(), "/v2/models/m/infer");
        assert_eq!(head.framing, BodyFraming::Length(12));
        assert_eq!(
            head.header("inference-header-content-length"),
            Some(&b"7"[..])
        );
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn partial_heads_wait_and_oversized_ones_fail() {
        assert!(parse(b"GET /v2 HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let limits = Limits {
            max_header_bytes: 32,
            max_body_bytes: 10,
            ..Limits::default()
        };
        let long = b"GET /v2 HTTP/1.1\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(parse_head(long, &limits).err().unwrap().status, 431);
    }

    #[test]
    fn framing_and_connection_rules() {
        let chunked =
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(chunked.framing, BodyFraming::Chunked);
        assert!(chunked.expect_continue);
        let old = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive);
        let old_ka = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(old_ka.keep_alive);
        let close = parse(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!close.keep_alive);
        let both =
            parse(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(matches!(both.framing, BodyFraming::Chunked) && !both.keep_alive);
        for bad in [
            &b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().status,
                400,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let gzip = parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(gzip.unwrap_err().status, 501);
    }
}
