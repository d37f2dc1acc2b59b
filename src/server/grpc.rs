//! gRPC connections: HTTP/2 by the `h2` crate, run inside the runtime through monoio's
//! tokio-style I/O (`poll-io`). Each call gets a task of its own: read its one length-prefixed
//! message, let the gRPC door answer, write the response message and the status trailers.

use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use monoio::io::IntoPollIo;
use monoio::net::TcpStream;

use super::connection::ConnectionContext;
use crate::doors::grpc::{self, Status};

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
            let answer = match read_message(request.into_body(), ctx.limits.max_body_bytes).await {
                Ok(message) => grpc::call(ctx.service.engine(), &path, message).await,
                Err(status) => Err(status),
            };
            respond_with(respond, answer);
        });
    }
}

/// The call's one message: the body's 5-byte prefix (compressed flag, big-endian length), then
/// the message itself.
async fn read_message(mut body: RecvStream, limit: u64) -> Result<Bytes, Status> {
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
    if buf[0] != 0 {
        return Err(Status::unimplemented(
            "compressed messages are not supported yet",
        ));
    }
    let length = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    buf.advance(5);
    if buf.len() != length {
        return Err(invalid("the message length does not match the body"));
    }
    Ok(buf.freeze())
}

/// Sends headers, the response message (when there is one) and the status trailers.
fn respond_with(mut respond: SendResponse<Bytes>, answer: Result<Bytes, Status>) {
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(());
    let Ok(response) = response else {
        return;
    };
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    let status = match answer {
        Ok(message) => {
            let mut framed = BytesMut::with_capacity(5 + message.len());
            framed.extend_from_slice(&[0]);
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
