//! gRPC connections: HTTP/2 by the `h2` crate, run inside the runtime through monoio's
//! tokio-style I/O (`poll-io`). Each call gets a task of its own: it reads the call's
//! length-prefixed messages (one for a unary call, a stream for ModelStreamInfer), lets the gRPC
//! door answer each, and writes the response messages and the status trailers. When the
//! runtime's listeners close, each connection sends GOAWAY and lets its calls finish.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use monoio::io::IntoPollIo;
use monoio::net::TcpStream;

use super::connection::{BusyGuard, CatchUnwind, ConnectionContext, OpenGuard};
use crate::doors::grpc::{self, Encoded, Status};
use crate::http::{compress, Coding, Inflater};

/// HTTP/2 settings: windows large enough that a 600 KB tensor does not wait on window updates.
const WINDOW: u32 = 4 << 20;
const MAX_FRAME: u32 = 1 << 20;
const MAX_STREAMS: u32 = 256;

pub async fn serve(stream: TcpStream, ctx: Rc<ConnectionContext>) {
    let counters = &ctx.metrics.cores[ctx.core];
    let _open = OpenGuard::new(&counters.open);
    let Ok(io) = stream.into_poll_io() else {
        return;
    };
    let handshake = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_frame_size(MAX_FRAME)
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(ctx.limits.max_header_bytes as u32)
        // A whole large response may wait for the peer's window, not only h2's default 400 KB.
        .max_send_buffer_size(WINDOW as usize)
        .handshake::<_, Bytes>(io);
    // The preface and SETTINGS within the header timeout, as an HTTP/1 head.
    let Ok(Ok(mut connection)) = monoio::time::timeout(ctx.timeouts.header, handshake).await else {
        return;
    };
    let mut closing = std::pin::pin!(ctx.closing.closed());
    let calls = Rc::new(Calls::new(ctx.limits.grpc_max_pending_bytes));
    let _closed = Closed(calls.clone());
    // Once the listeners close: GOAWAY, then the calls in progress finish, and the runtime
    // waits for this connection (busy) until they have. A connection with no call for the
    // idle timeout gets GOAWAY too.
    let mut draining: Option<BusyGuard> = None;
    let mut going_away = false;
    let timeouts = ctx.timeouts;
    // Keepalive: a PING every `keepalive`; a connection whose answer takes longer than
    // `keepalive_timeout` is dropped (a peer that vanished without a FIN).
    let mut pings = connection.ping_pong();
    let (mut last_ping, mut awaiting_pong) = (Instant::now(), None::<Instant>);
    let tick = timeouts
        .idle
        .min(timeouts.keepalive)
        .min(timeouts.keepalive_timeout);
    loop {
        let accepted = match (&draining, going_away) {
            (Some(_), _) | (None, true) => connection.accept().await,
            (None, false) => monoio::select! {
                () = &mut closing => {
                    calls.close();
                    connection.graceful_shutdown();
                    draining = Some(BusyGuard::new(&ctx.busy));
                    continue;
                }
                () = monoio::time::sleep(tick) => {
                    if calls.idle_for(timeouts.idle) {
                        connection.graceful_shutdown();
                        going_away = true;
                        continue;
                    }
                    let ping_due = last_ping.elapsed() >= timeouts.keepalive;
                    match awaiting_pong {
                        Some(sent) if sent.elapsed() >= timeouts.keepalive_timeout => {
                            tracing::debug!("gRPC connection dropped: no answer to a PING");
                            return;
                        }
                        None if ping_due => {
                            let sent = pings.as_mut().map(|p| p.send_ping(h2::Ping::opaque()));
                            awaiting_pong = matches!(sent, Some(Ok(()))).then(Instant::now);
                        }
                        _ => {}
                    }
                    continue;
                }
                _ = std::future::poll_fn(|cx| match pings.as_mut() {
                    Some(p) => p.poll_pong(cx),
                    None => std::task::Poll::Pending,
                }), if awaiting_pong.is_some() => {
                    (awaiting_pong, last_ping) = (None, Instant::now());
                    continue;
                }
                accepted = connection.accept() => accepted,
            },
        };
        let Some(Ok((request, respond))) = accepted else {
            return;
        };
        let (ctx, calls) = (ctx.clone(), calls.clone());
        monoio::spawn(async move {
            let _open = BusyGuard::new(&calls.open);
            call(request, respond, ctx, &calls).await;
            calls.last.set(Instant::now());
        });
    }
}

/// The calls of one connection in progress, when the last one ended, and the bytes of their
/// answers still waiting for the peer's window.
struct Calls {
    open: std::cell::Cell<usize>,
    last: std::cell::Cell<Instant>,
    pending: std::cell::Cell<usize>,
    /// The connection is draining or gone: calls waiting for room are refused.
    closing: std::cell::Cell<bool>,
    /// Calls waiting for room, woken when answers leave or the connection closes.
    waiting: std::cell::RefCell<Vec<std::task::Waker>>,
    /// --grpc-max-pending-bytes.
    max_pending: usize,
}

/// Marks a connection's calls as closing when the connection ends, however it ends.
struct Closed(Rc<Calls>);

impl Drop for Closed {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// How one call's answers are sent: through its connection's pending-bytes count, within
/// its cap, each taken by the peer within `write`.
struct Answers<'c> {
    calls: &'c Calls,
    write: Duration,
}

impl<'c> Answers<'c> {
    /// A framed answer counted as pending, or RESOURCE_EXHAUSTED when it would take the
    /// connection past its cap (an answer alone is always admitted: its size is bounded by the
    /// message limits, and a large output must stay servable).
    fn admit(&self, framed: Encoded) -> Result<(Encoded, Pending<'c>), Status> {
        let bytes: usize = framed.iter().map(Bytes::len).sum();
        let total = self.calls.pending.get().saturating_add(bytes);
        let max = self.calls.max_pending;
        if total > max && self.calls.pending.get() > 0 {
            return Err(Status {
                code: 8,
                message: format!(
                    "the answer ({bytes} bytes) would take this connection's unread answers past \
                     {max} bytes (--grpc-max-pending-bytes); the client is not reading"
                ),
            });
        }
        self.calls.pending.set(total);
        Ok((
            framed,
            Pending {
                calls: self.calls,
                left: bytes,
            },
        ))
    }

    /// Back-pressure across the connection's streams: while half of the cap of answers
    /// wait for the peer, a call waits before it runs, woken when answer bytes leave or the
    /// connection closes (never polled on a timer: many waiting calls cost no io time).
    async fn room(&self) -> Result<(), Status> {
        std::future::poll_fn(|cx| {
            if self.calls.has_room() {
                return std::task::Poll::Ready(Ok(()));
            }
            if self.calls.closing.get() {
                return std::task::Poll::Ready(Err(Status {
                    code: 14,
                    message: "the connection is closing".into(),
                }));
            }
            self.calls.waiting.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
        .await
    }

    /// A (small) framed answer sent without counting.
    fn unpending(&self, framed: Encoded) -> (Encoded, Pending<'c>) {
        (
            framed,
            Pending {
                calls: self.calls,
                left: 0,
            },
        )
    }
}

/// An answer's bytes counted in its connection's pending bytes until they are sent (or the
/// stream ends).
struct Pending<'c> {
    calls: &'c Calls,
    left: usize,
}

impl Pending<'_> {
    fn sent(&mut self, bytes: usize) {
        let bytes = bytes.min(self.left);
        if bytes == 0 {
            return;
        }
        self.left -= bytes;
        self.calls.pending.set(self.calls.pending.get() - bytes);
        if self.calls.has_room() {
            self.calls.wake_waiting();
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.sent(self.left);
    }
}

impl Calls {
    fn new(max_pending: usize) -> Calls {
        Calls {
            open: std::cell::Cell::new(0),
            last: std::cell::Cell::new(Instant::now()),
            pending: std::cell::Cell::new(0),
            closing: std::cell::Cell::new(false),
            waiting: std::cell::RefCell::default(),
            max_pending,
        }
    }

    /// Whether a call may run: under half of the cap of answers waits for the peer.
    fn has_room(&self) -> bool {
        self.pending.get() < self.max_pending / 2
    }

    /// Refuses the calls waiting for room from now on (draining, or the connection is gone).
    fn close(&self) {
        self.closing.set(true);
        self.wake_waiting();
    }

    fn wake_waiting(&self) {
        for waker in self.waiting.take() {
            waker.wake();
        }
    }

    /// No call in progress, and none ended within `period`.
    fn idle_for(&self, period: Duration) -> bool {
        self.open.get() == 0 && self.last.get().elapsed() >= period
    }
}

/// One call, on a task of its own; the runtime counts it busy until it is answered.
async fn call(
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
    ctx: Rc<ConnectionContext>,
    calls: &Calls,
) {
    let started = Instant::now();
    let answers = Answers {
        calls,
        write: ctx.timeouts.write,
    };
    let _busy = BusyGuard::new(&ctx.busy);
    let path = request.uri().path().to_string();
    let headers = request.headers();
    let coding = headers.get("grpc-encoding").map(|v| v.as_bytes().to_vec());
    let timeout = headers
        .get("grpc-timeout")
        .map(|v| parse_timeout(v.as_bytes()));
    let coding = coding.as_deref().map(message_coding).transpose();
    let (coding, timeout) = match (coding, timeout.transpose()) {
        (Ok(coding), Ok(timeout)) => (coding.flatten(), timeout),
        (Err(status), _) | (_, Err(status)) => {
            return respond_with(respond, Err(status), &answers).await
        }
    };
    let restricted = grpc::check_restricted(&ctx.service, &path, |key| {
        headers.get(key).map(|v| v.as_bytes())
    });
    if let Err(status) = restricted {
        return respond_with(respond, Err(status), &answers).await;
    }
    let messages = Messages {
        body: request.into_body(),
        buf: BytesMut::new(),
        coding,
        limit: ctx.limits.max_body_bytes,
        waits: (ctx.timeouts.idle, ctx.timeouts.body),
    };
    let answered = &ctx.metrics.cores[ctx.core].grpc_requests;
    if path == grpc::STREAM_INFER {
        let engine = ctx.service.engine();
        return stream_calls(engine, messages, respond, timeout, answered, &answers).await;
    }
    let answer = async {
        let message = messages.only().await?;
        answers.room().await?;
        let waitread = [started, Instant::now()];
        let reply = grpc::call(&ctx.service, &path, message, timeout, waitread);
        let reply = caught(&path, reply).await?;
        Ok((reply, coding))
    };
    let answer = answer.await;
    answered.fetch_add(1, Relaxed);
    respond_with(respond, answer, &answers).await;
}

/// ModelStreamInfer: one response message per request message, in order, then the trailers.
async fn stream_calls(
    engine: &crate::engine::Engine,
    mut messages: Messages,
    mut respond: SendResponse<Bytes>,
    timeout: Option<Duration>,
    answered: &AtomicU64,
    answers: &Answers<'_>,
) {
    let coding = messages.coding;
    let Ok(mut send) = respond.send_response(response_head(coding), false) else {
        return;
    };
    loop {
        let waiting = Instant::now();
        let Some(message) = messages.next().await else {
            break;
        };
        if let Err(status) = answers.room().await {
            let _ = send.send_trailers(trailers(&status));
            return;
        }
        let waitread = [waiting, Instant::now()];
        let reply = caught(grpc::STREAM_INFER, async {
            Ok(grpc::stream_infer(engine, message, timeout, waitread).await)
        });
        let reply = match reply.await {
            Ok(reply) => reply,
            Err(status) => grpc::stream_error(status),
        };
        answered.fetch_add(1, Relaxed);
        let (framed, pending) = match answers.admit(frame(reply, coding)) {
            Ok(admitted) => admitted,
            Err(status) => answers.unpending(frame(grpc::stream_error(status), coding)),
        };
        // Back-pressure: the next request message is not read until this answer has gone
        // into the peer's window (or the write timeout ends the stream).
        if send_message(&mut send, framed, pending, answers.write)
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = send.send_trailers(trailers(&Status {
        code: Status::OK,
        message: String::new(),
    }));
}

/// A call's answer, or INTERNAL if answering it panicked (the connection and its other calls
/// go on).
async fn caught<T>(
    path: &str,
    answer: impl std::future::Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    CatchUnwind(answer).await.unwrap_or_else(|()| {
        tracing::error!(path, "gRPC handler panicked");
        Err(Status {
            code: 13,
            message: "internal error while handling the call".into(),
        })
    })
}

/// The length-prefixed messages of a call's body.
struct Messages {
    body: RecvStream,
    buf: BytesMut,
    coding: Option<Coding>,
    limit: u64,
    /// How long to wait for bytes: between messages (the idle timeout) and inside one (the
    /// body timeout).
    waits: (Duration, Duration),
}

impl Messages {
    /// The next message, inflated when its flag says so; `None` at the end of the body.
    async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        loop {
            if let Some(message) = next_message(&mut self.buf, self.coding, self.limit).transpose()
            {
                return Some(message);
            }
            let wait = match self.buf.is_empty() {
                true => self.waits.0,
                false => self.waits.1,
            };
            let Ok(data) = monoio::time::timeout(wait, self.body.data()).await else {
                return Some(Err(Status {
                    code: 4, // DEADLINE_EXCEEDED
                    message: format!("no bytes of the request for {} s", wait.as_secs()),
                }));
            };
            match data {
                Some(Ok(mut chunk)) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    // A message whole in one chunk is a view of it, not a copy.
                    if self.buf.is_empty() {
                        let whole = next_message(&mut chunk, self.coding, self.limit).transpose();
                        if let Some(message) = whole {
                            self.buf.extend_from_slice(&chunk);
                            return Some(message);
                        }
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => {
                    return Some(Err(Status {
                        code: 13,
                        message: format!("reading the request: {e}"),
                    }))
                }
                None if self.buf.is_empty() => return None,
                None => return Some(Err(invalid("the request ends inside a message"))),
            }
        }
    }

    /// The one message of a unary call.
    async fn only(mut self) -> Result<Bytes, Status> {
        let message = self
            .next()
            .await
            .unwrap_or_else(|| Err(invalid("the request has no message")))?;
        match self.next().await {
            None => Ok(message),
            Some(_) => Err(invalid("a unary call carries one message")),
        }
    }
}

/// What messages are taken from: the bytes gathered so far, or a chunk as h2 delivered it.
pub(crate) trait MessageBuf: Buf {
    fn take(&mut self, n: usize) -> Bytes;
}

impl MessageBuf for BytesMut {
    fn take(&mut self, n: usize) -> Bytes {
        self.split_to(n).freeze()
    }
}

impl MessageBuf for Bytes {
    fn take(&mut self, n: usize) -> Bytes {
        self.split_to(n)
    }
}

/// Takes the first whole length-prefixed message out of `buf` (`None`: not all there yet; then
/// `buf` is untouched), inflated when its flag says so. A length over `limit` is refused before
/// its bytes arrive.
pub(crate) fn next_message<B: MessageBuf>(
    buf: &mut B,
    coding: Option<Coding>,
    limit: u64,
) -> Result<Option<Bytes>, Status> {
    let Some(prefix) = buf.chunk().first_chunk::<5>() else {
        return Ok(None);
    };
    let compressed = prefix[0] == 1;
    let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]);
    if u64::from(length) > limit {
        return Err(Status {
            code: 8,
            message: format!(
                "a request message of {length} bytes is larger than the limit of {limit} bytes"
            ),
        });
    }
    if buf.remaining() < 5 + length as usize {
        return Ok(None);
    }
    buf.advance(5);
    let message = buf.take(length as usize);
    match (compressed, coding) {
        (false, _) => Ok(Some(message)),
        (true, None) => Err(invalid("a compressed message without grpc-encoding")),
        (true, Some(coding)) => {
            let mut inflater = Inflater::new(coding, limit);
            inflater
                .push(&message)
                .and_then(|()| inflater.finish())
                .map(Some)
                .map_err(|e| Status {
                    code: if e.status == 413 { 8 } else { 3 },
                    message: e.message,
                })
        }
    }
}

fn invalid(message: &str) -> Status {
    Status {
        code: 3,
        message: message.to_string(),
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

/// Answers a unary call: headers, the response message (when there is one, compressed as the
/// request was) and the status trailers.
async fn respond_with(
    mut respond: SendResponse<Bytes>,
    answer: Result<(Encoded, Option<Coding>), Status>,
    answers: &Answers<'_>,
) {
    let coding = answer.as_ref().ok().and_then(|(_, coding)| *coding);
    let Ok(mut send) = respond.send_response(response_head(coding), false) else {
        return;
    };
    let status = match answer.and_then(|(message, coding)| answers.admit(frame(message, coding))) {
        Ok((framed, pending)) => {
            if send_message(&mut send, framed, pending, answers.write)
                .await
                .is_err()
            {
                return;
            }
            Status {
                code: Status::OK,
                message: String::new(),
            }
        }
        Err(status) => status,
    };
    let _ = send.send_trailers(trailers(&status));
}

fn response_head(coding: Option<Coding>) -> http::Response<()> {
    let mut response = http::Response::new(());
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    if let Some(coding) = coding {
        headers.insert(
            "grpc-encoding",
            http::HeaderValue::from_static(coding.name()),
        );
    }
    response
}

/// A message with its 5-byte prefix, compressed in `coding` when there is one, as the chunks to
/// send: uncompressed, the prefix joins the first part and the other parts go as they are.
fn frame(mut parts: Encoded, coding: Option<Coding>) -> Encoded {
    if let Some(coding) = coding {
        parts = vec![compress(&parts, coding)];
    }
    let length: usize = parts.iter().map(Bytes::len).sum();
    let first = parts.first().map_or(0, Bytes::len);
    let mut head = BytesMut::with_capacity(5 + first);
    head.extend_from_slice(&[u8::from(coding.is_some())]);
    head.extend_from_slice(&(length as u32).to_be_bytes());
    let mut parts = parts.into_iter();
    if first <= grpc::INLINE_BYTES {
        head.extend_from_slice(&parts.next().unwrap_or_default());
    }
    std::iter::once(head.freeze()).chain(parts).collect()
}

/// Sends every chunk of a framed message.
/// Sends a message's parts as the peer's flow-control window takes them, so a peer that does
/// not read holds at most its window of buffered bytes (h2 would buffer everything). A peer
/// that takes nothing for `write` gets the stream reset with ENHANCE_YOUR_CALM (gRPC clients
/// read it as RESOURCE_EXHAUSTED). Parts are split, never copied.
async fn send_message(
    send: &mut SendStream<Bytes>,
    chunks: Encoded,
    mut pending: Pending<'_>,
    write: Duration,
) -> Result<(), ()> {
    for mut chunk in chunks {
        while !chunk.is_empty() {
            send.reserve_capacity(chunk.len());
            let granted = monoio::time::timeout(write, granted_capacity(send)).await;
            let Ok(Some(room)) = granted else {
                send.send_reset(h2::Reason::ENHANCE_YOUR_CALM);
                return Err(());
            };
            let part = chunk.split_to(room.min(chunk.len()));
            pending.sent(part.len());
            send.send_data(part, false).map_err(drop)?;
        }
    }
    Ok(())
}

/// Waits until the stream may send at least one byte: how many (`None`: the stream is gone).
async fn granted_capacity(send: &mut SendStream<Bytes>) -> Option<usize> {
    loop {
        let room = send.capacity();
        if room > 0 {
            return Some(room);
        }
        match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(_)) => continue,
            _ => return None,
        }
    }
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", status.code.into());
    if let Ok(message) = http::HeaderValue::from_str(&percent_encode(&status.message)) {
        trailers.insert("grpc-message", message);
    }
    trailers
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
    fn a_panicking_call_answers_internal() {
        use std::future::Future;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let panicking = caught::<()>("/x/Y", async { panic!("handler bug") });
        let status = std::pin::pin!(panicking).poll(&mut cx);
        assert_eq!(
            status.map(|r| r.map_err(|s| s.code)),
            std::task::Poll::Ready(Err(13))
        );
        let fine = std::pin::pin!(caught("/x/Y", async { Ok(7) })).poll(&mut cx);
        assert_eq!(fine.map(|r| r.ok()), std::task::Poll::Ready(Some(7)));
    }

    /// A handler that panics answers INTERNAL, and its connection and the daemon go on: a
    /// second call on the same connection is answered.
    #[test]
    fn a_panicking_handler_leaves_the_connection_serving() {
        use crate::config::Args;
        use clap::Parser;
        use std::sync::Arc;

        let repo = std::env::temp_dir().join(format!("tensord-grpc-panic-{}", std::process::id()));
        std::fs::create_dir_all(repo.join("add_sub")).unwrap();
        std::fs::write(repo.join("add_sub/config.toml"), "backend = \"builtin\"\n").unwrap();
        let port = |l: std::net::TcpListener| l.local_addr().unwrap().port();
        let free = || port(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let grpc_addr = format!("127.0.0.1:{}", free());
        let http_addr = format!("127.0.0.1:{}", free());
        let repo_arg = repo.to_string_lossy().into_owned();
        let argv = [
            "tensord",
            "--model-repository",
            &repo_arg,
            "--http-addr",
            &http_addr,
        ];
        let args =
            Args::try_parse_from(
                argv.iter()
                    .chain(&["--grpc-addr", &grpc_addr, "--threads", "1"]),
            )
            .unwrap();
        let repository = crate::engine::Repository::open(
            &args.model_repository,
            args.repository_options().unwrap(),
        )
        .unwrap();
        let engine = Arc::new(crate::engine::Engine::new(
            repository,
            args.limits(),
            false,
            args.tracer().unwrap(),
            args.shared_memory().unwrap(),
        ));
        let (_, handle) =
            tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("info"));
        let metrics = Arc::new(crate::metrics::ServerMetrics::new(1));
        let service = Arc::new(crate::doors::Service::new(
            engine,
            metrics.clone(),
            None,
            Arc::new(crate::logging::Logging::new(handle, "info")),
            args.access().unwrap(),
        ));
        let server =
            super::super::Server::start(args.server_config().unwrap(), service, metrics).unwrap();

        let statuses = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(async move {
                let stream = monoio::net::TcpStream::connect(&grpc_addr).await.unwrap();
                let (mut client, connection) =
                    h2::client::handshake(stream.into_poll_io().unwrap())
                        .await
                        .unwrap();
                monoio::spawn(connection);
                let mut statuses = Vec::new();
                for path in [
                    grpc::TEST_PANIC,
                    "/inference.GRPCInferenceService/ServerLive",
                ] {
                    let request = http::Request::post(format!("http://{grpc_addr}{path}"))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(())
                        .unwrap();
                    let (response, mut send) = client.send_request(request, false).unwrap();
                    send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
                        .unwrap();
                    let wait = monoio::time::timeout(Duration::from_secs(10), response);
                    let response = wait.await.expect("no answer in 10 s").unwrap();
                    let (head, mut body) = response.into_parts();
                    let mut message = Vec::new();
                    while let Some(chunk) = body.data().await {
                        message.extend_from_slice(&chunk.unwrap());
                    }
                    let trailers = body.trailers().await.unwrap().unwrap_or_default();
                    let status = (trailers.get("grpc-status"))
                        .or(head.headers.get("grpc-status"))
                        .map(|v| v.to_str().unwrap().to_string());
                    statuses.push((status, message));
                }
                statuses
            });
        server.stop();
        std::fs::remove_dir_all(&repo).unwrap();
        assert_eq!(statuses[0].0.as_deref(), Some("13"));
        // ServerLiveResponse { live: true }, length-prefixed.
        assert_eq!(statuses[1], (Some("0".into()), vec![0, 0, 0, 0, 2, 8, 1]));
    }

    #[test]
    fn answers_are_admitted_within_the_connection_cap() {
        let calls = Calls::new(100);
        let answers = Answers {
            calls: &calls,
            write: Duration::from_secs(1),
        };
        let answer = |n: usize| vec![Bytes::from(vec![0; n])];
        let (_, big) = answers.admit(answer(150)).unwrap();
        assert_eq!(calls.pending.get(), 150, "an answer alone always goes");
        let Err(refused) = answers.admit(answer(1)) else {
            panic!("admitted past the cap");
        };
        assert_eq!(refused.code, 8);
        assert!(refused.message.contains("--grpc-max-pending-bytes"));
        drop(big);
        let (_, mut first) = answers.admit(answer(60)).unwrap();
        assert!(answers.admit(answer(60)).is_err());
        first.sent(30);
        let (_, second) = answers.admit(answer(60)).unwrap();
        assert_eq!(calls.pending.get(), 90);
        drop((first, second));
        assert_eq!(calls.pending.get(), 0);
    }

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
