//! gRPC connections: HTTP/2 by the `h2` crate, run inside the runtime through monoio's
//! tokio-style I/O (`poll-io`). Each call gets a task of its own: read its one length-prefixed
//! message, let the gRPC door answer, write the response message and the status trailers.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use monoio::io::IntoPollIo;
use monoio::net::TcpStream;

use super::connection::ConnectionContext;
use crate::doors::grpc::{self, Status};
use crate::http::{compress, Coding, Inflater};

/// HTTP/2 settings: windows large enough that a 600 KB tensor does not wait on window updates.
const WINDOW: u32 = 4 << 20;
const MAX_FRAME: u32 = 1 << 20;
const MAX_STREAMS: u32 = 256;

pub async fn serve(stream: TcpStream, ctx: Rc<ConnectionContext>) {
    let Ok(io) = stream.into_poll_io() else {
        return;
    };
    let handshake = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(ctx.limits.max_header_bytes as u32)
        .handshake::<_, Bytes>(io)
        .await;
    let Ok(mut connection) = handshake else {
        return;
    };
    while let Some(Ok((request, respond))) = connection.accept().await {
        let ctx = ctx.clone();
        monoio::spawn(async move {
            let path = request.uri().path().to_string();
            let headers = request.headers();
            let coding = headers.get("grpc-encoding").map(|v| v.as_bytes().to_vec());
            let timeout = headers
                .get("grpc-timeout")
                .map(|v| parse_timeout(v.as_bytes()));
            let limit = ctx.limits.max_body_bytes;
            let answer = async {
                let coding = coding.as_deref().map(message_coding).transpose()?.flatten();
                let timeout = timeout.transpose()?;
                let message = read_message(request.into_body(), coding, limit).await?;
                let reply = grpc::call(ctx.service.engine(), &path, message, timeout).await?;
                Ok((reply, coding))
            };
            respond_with(respond, answer.await);
        });
    }
}

/// `grpc-encoding`: gzip or deflate (`None` for identity); anything else is UNIMPLEMENTED, as
/// gRPC specifies.
fn message_coding(value: &[u8]) -> Result<Option<Coding>, Status> {
    Coding::of_request(value).map_err(|_| Status {
        code: 12,
        message: format!(
            "grpc-encoding '{}' is not supported (gzip, deflate, identity are)",
            String::from_utf8_lossy(value)
        ),
    })
}

/// `grpc-timeout`: digits and a unit (H, M, S, m, u, n).
fn parse_timeout(value: &[u8]) -> Result<Duration, Status> {
    let bad = || Status {
        code: 3,
        message: format!("invalid grpc-timeout '{}'", String::from_utf8_lossy(value)),
    };
    let (digits, unit) = value.split_at(value.len().saturating_sub(1));
    let n: u64 = std::str::from_utf8(digits)
        .ok()
        .filter(|d| !d.is_empty() && d.len() <= 8)
        .and_then(|d| d.parse().ok())
        .ok_or_else(bad)?;
    Ok(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

/// The call's one message: the body's 5-byte prefix (compressed flag, big-endian length), then
/// the message itself, inflated when the flag says so.
async fn read_message(
    mut body: RecvStream,
    coding: Option<Coding>,
    limit: u64,
) -> Result<Bytes, Status> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Status {
            code: 13,
            message: format!("reading the request: {e}"),
        })?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if (buf.len() + chunk.len()) as u64 > limit.saturating_add(5) {
            return Err(Status {
                code: 8,
                message: format!("the request message is larger than the limit of {limit} bytes"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
    let invalid = |message: &str| Status {
        code: 3,
        message: message.to_string(),
    };
    if buf.len() < 5 {
        return Err(invalid("the request has no complete message"));
    }
    let compressed = buf[0] == 1;
    let length = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    buf.advance(5);
    if buf.len() != length {
        return Err(invalid("the message length does not match the body"));
    }
    match (compressed, coding) {
        (false, _) => Ok(buf.freeze()),
        (true, None) => Err(invalid("a compressed message without grpc-encoding")),
        (true, Some(coding)) => {
            let mut inflater = Inflater::new(coding, limit);
            inflater
                .push(&buf)
                .and_then(|()| inflater.finish())
                .map_err(|e| Status {
                    code: if e.status == 413 { 8 } else { 3 },
                    message: e.message,
                })
        }
    }
}

/// Sends headers, the response message (when there is one, compressed as the request was) and
/// the status trailers.
fn respond_with(mut respond: SendResponse<Bytes>, answer: Result<(Bytes, Option<Coding>), Status>) {
    let coding = answer.as_ref().ok().and_then(|(_, coding)| *coding);
    let mut response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if let Some(coding) = coding {
        response = response.header("grpc-encoding", coding.name());
    }
    let response = response.body(());
    let Ok(response) = response else {
        return;
    };
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    let status = match answer {
        Ok((message, coding)) => {
            let message = match coding {
                Some(coding) => compress(&[message], coding),
                None => message,
            };
            let mut framed = BytesMut::with_capacity(5 + message.len());
            framed.extend_from_slice(&[u8::from(coding.is_some())]);
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            let _ = send.send_data(framed.freeze(), false);
            Status {
                code: Status::OK,
                message: String::new(),
            }
        }
        Err(status) => status,
    };
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", status.code.into());
    if let Ok(message) = http::HeaderValue::from_str(&percent_encode(&status.message)) {
        trailers.insert("grpc-message", message);
    }
    let _ = send.send_trailers(trailers);
}

/// gRPC's `grpc-message` is percent-encoded (RFC 3986 unreserved characters and spaces kept).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && b != b'%' || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_in_every_unit() {
        let ok = |text: &str| parse_timeout(text.as_bytes()).unwrap();
        assert_eq!(ok("2H"), Duration::from_secs(7200));
        assert_eq!(ok("3M"), Duration::from_secs(180));
        assert_eq!(ok("100m"), Duration::from_millis(100));
        assert_eq!(ok("250u"), Duration::from_micros(250));
        assert_eq!(ok("99999999n"), Duration::from_nanos(99_999_999));
        for bad in ["", "m", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(parse_timeout(bad.as_bytes()).unwrap_err().code, 3, "{bad}");
        }
    }
}
