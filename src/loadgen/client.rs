//! The load generator's HTTP/1.1 client: a blocking one for setup requests (metadata,
//! statistics) and a keep-alive one on monoio for the load itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use monoio::io::AsyncWriteRentExt;

use crate::server::read_more;

/// Where requests go: `http://host:port`.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    /// The Host header.
    pub host: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {url}: only http:// URLs are supported"))?;
        let host = rest.trim_end_matches('/');
        if host.contains('/') {
            return Err(format!(
                "--url {url}: give the server's root, without a path"
            ));
        }
        let with_port = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("--url {url}: {e}"))?
            .next()
            .ok_or_else(|| format!("--url {url}: no address"))?;
        Ok(Target {
            addr,
            host: host.to_string(),
        })
    }
}

/// A response as the load generator sees it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// The Inference-Header-Content-Length header, if any.
    pub header_length: Option<usize>,
    pub body: Bytes,
    /// A gRPC answer's message (then `body` is empty).
    pub grpc: Option<crate::proto::inference::ModelInferResponse>,
    /// Bytes received for the answer's body or message.
    pub size: usize,
}

/// Parses a response head at the start of `buf`: the reply without its body, the head's
/// length and the body's length. `None` while the head is incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<(Reply, usize, usize)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let number = |name: &str| -> Result<Option<usize>, String> {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| {
                std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| format!("bad {name} header"))
            })
            .transpose()
    };
    let body_len = number("content-length")?
        .ok_or("a response without Content-Length (chunked responses are not supported)")?;
    let reply = Reply {
        status: response.code.unwrap_or(0),
        header_length: number("inference-header-content-length")?,
        body: Bytes::new(),
        grpc: None,
        size: body_len,
    };
    Ok(Some((reply, head_len, body_len)))
}

/// Formats a request; `header_length` adds Inference-Header-Content-Length.
pub fn format_request(
    target: &Target,
    method: &str,
    path: &str,
    body: &[u8],
    header_length: Option<usize>,
) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/{}\r\n",
        target.host,
        if header_length.is_some() {
            "octet-stream"
        } else {
            "json"
        }
    );
    if let Some(n) = header_length {
        out.push_str(&format!("Inference-Header-Content-Length: {n}\r\n"));
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One blocking request on its own connection (setup and statistics, not the load).
pub fn fetch(target: &Target, method: &str, path: &str) -> Result<Reply, String> {
    let fail = |e: std::io::Error| format!("{method} {path}: {e}");
    let mut stream =
        TcpStream::connect_timeout(&target.addr, Duration::from_secs(5)).map_err(fail)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(fail)?;
    stream
        .write_all(&format_request(target, method, path, b"", None))
        .map_err(fail)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((mut reply, head, body)) = parse_head(&buf)? {
            if buf.len() >= head + body {
                reply.body = Bytes::copy_from_slice(&buf[head..head + body]);
                return Ok(reply);
            }
        }
        match stream.read(&mut chunk).map_err(fail)? {
            0 => return Err(format!("{method} {path}: connection closed mid-response")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A keep-alive connection for the load.
pub struct Connection {
    stream: monoio::net::TcpStream,
    buf: BytesMut,
}

impl Connection {
    pub async fn open(target: &Target) -> Result<Connection, String> {
        let stream = monoio::net::TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", target.addr))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        })
    }

    /// Sends one request (already formatted) and reads its response.
    pub async fn exchange(&mut self, request: Bytes) -> Result<Reply, String> {
        let (written, _) = self.stream.write_all(request).await;
        written.map_err(|e| format!("write: {e}"))?;
        let (mut reply, head, body) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            self.read(16 * 1024).await?;
        };
        while self.buf.len() < head + body {
            let missing = head + body - self.buf.len();
            self.read(missing).await?;
        }
        let mut message = self.buf.split_to(head + body);
        reply.body = message.split_off(head).freeze();
        Ok(reply)
    }

    async fn read(&mut self, want: usize) -> Result<(), String> {
        match read_more(&mut self.stream, &mut self.buf, want).await {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read: {e}")),
        }
    }
}
