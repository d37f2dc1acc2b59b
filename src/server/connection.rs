//! One connection: read a request, hand it to the service, write the answer, repeat.
//!
//! Requests are answered strictly in order, so pipelined requests need nothing special:
//! bytes of the next request simply wait in the read buffer.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::os::fd::AsRawFd;

use super::shutdown::{Closing, ShutdownSignal};
use super::vectored::{write_all_vectored, IoParts};
use crate::doors::{Endpoints, Service};
use crate::http::{
    parse_head, write_head, BodyReader, BodyStep, HttpError, Limits, Method, Request, Response,
    CONTINUE, READ_CHUNK,
};
use crate::metrics::ServerMetrics;

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Keep-alive: how long a connection may sit between requests.
    pub idle: Duration,
    /// From a request's first byte to the end of its head (slow-client protection).
    pub header: Duration,
    /// Longest wait for the next bytes of a body.
    pub body: Duration,
    /// Longest wait for a client to take more bytes of a response; then the connection closes.
    pub write: Duration,
    /// gRPC: how often an HTTP/2 connection is PINGed, and how long the answer may take before
    /// the connection is dropped (Triton's keepalive time and timeout).
    pub keepalive: Duration,
    pub keepalive_timeout: Duration,
}

/// What every connection of one runtime shares.
pub struct ConnectionContext {
    pub service: Arc<Service>,
    pub endpoints: Endpoints,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Drop a queued request when its client's side of the connection ends.
    pub cancel_on_disconnect: bool,
    pub shutdown: Arc<ShutdownSignal>,
    /// Connections of this runtime in the middle of a request; shutdown waits for them.
    pub busy: Cell<usize>,
    /// Fired when this runtime's listeners have closed.
    pub closing: Closing,
    pub metrics: Arc<ServerMetrics>,
    /// This runtime's slot in `metrics.cores` (written by this thread only).
    pub core: usize,
}

impl ConnectionContext {
    /// The same settings for a listener that serves `/metrics` alone.
    pub fn metrics_only(&self) -> ConnectionContext {
        ConnectionContext {
            service: self.service.clone(),
            endpoints: Endpoints::MetricsOnly,
            limits: self.limits,
            timeouts: self.timeouts,
            cancel_on_disconnect: self.cancel_on_disconnect,
            shutdown: self.shutdown.clone(),
            busy: Cell::new(0),
            closing: Closing::default(),
            metrics: self.metrics.clone(),
            core: self.core,
        }
    }
}

/// Counts a connection as open for as long as it lives.
pub struct OpenGuard<'a>(&'a AtomicI64);

impl<'a> OpenGuard<'a> {
    pub fn new(open: &'a AtomicI64) -> OpenGuard<'a> {
        open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum ReadError {
    /// Answer with this error, then close.
    Http(HttpError),
    /// Close without answering (peer gone, idle timeout, shutdown).
    Close,
}

impl From<HttpError> for ReadError {
    fn from(e: HttpError) -> ReadError {
        ReadError::Http(e)
    }
}

/// Marks the runtime busy while a request is being read, run or answered.
pub struct BusyGuard<'a>(&'a Cell<usize>);

impl<'a> BusyGuard<'a> {
    pub fn new(busy: &'a Cell<usize>) -> BusyGuard<'a> {
        busy.set(busy.get() + 1);
        BusyGuard(busy)
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// How long one connection may keep its io thread before it lets every other ready connection
/// go first. On the epoll driver a read or write whose readiness is still cached completes within
/// the same task poll, and epoll_wait runs only between polls: a client that sends its next
/// request as soon as it has an answer would otherwise keep the thread for hundreds of
/// milliseconds while requests that arrived earlier wait in their sockets.
const TURN: Duration = Duration::from_micros(500);

/// Serves one connection, timing each poll of it so that it can give its turn away.
pub fn serve(stream: TcpStream, ctx: Rc<ConnectionContext>) -> impl Future<Output = ()> {
    let started = Rc::new(Cell::new(Instant::now()));
    Turns {
        started: started.clone(),
        inner: Box::pin(serve_requests(stream, ctx, started)),
    }
}

/// A future that notes when each of its polls starts.
struct Turns<F> {
    started: Rc<Cell<Instant>>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Future for Turns<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.started.set(Instant::now());
        self.inner.as_mut().poll(cx)
    }
}

/// Ends the current poll and comes back after every task that is ready now. Waking oneself
/// would not do: monoio runs a task woken during its own poll first. A task spawned now runs
/// after those already queued, and its wake puts this one behind them.
struct GiveTurn {
    given: bool,
}

impl Future for GiveTurn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.given {
            return Poll::Ready(());
        }
        self.given = true;
        let waker = cx.waker().clone();
        monoio::spawn(async move { waker.wake() });
        Poll::Pending
    }
}

async fn serve_requests(
    mut stream: TcpStream,
    ctx: Rc<ConnectionContext>,
    turn: Rc<Cell<Instant>>,
) {
    let counters = &ctx.metrics.cores[ctx.core];
    let _open = OpenGuard::new(&counters.open);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if buf.is_empty() && !wait_for_request(&mut stream, &mut buf, &ctx).await {
            return;
        }
        let _busy = BusyGuard::new(&ctx.busy);
        let request = match read_request(&mut stream, &mut buf, &ctx).await {
            Ok(request) => request,
            Err(ReadError::Close) => return,
            Err(ReadError::Http(e)) => {
                tracing::debug!(status = e.status, "bad request: {}", e.message);
                let _ = write_response(
                    &mut stream,
                    e.into_response(),
                    false,
                    false,
                    ctx.timeouts.write,
                )
                .await;
                return;
            }
        };
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let head_only = request.head.method == Method::Head;
        let work = ctx.service.handle(&request, ctx.endpoints);
        let handled = match ctx.cancel_on_disconnect {
            true => CatchUnwind(unless_peer_closes(&stream, work)).await,
            false => CatchUnwind(async { Some(work.await) }).await,
        };
        let response = match handled {
            Ok(Some(response)) => response,
            // The client left while its request waited: dropping the request took it out of
            // its model's queue. Nobody is left to answer.
            Ok(None) => return,
            Err(()) => {
                tracing::error!(path = request.head.path(), "request handler panicked");
                HttpError::new(500, "internal error while handling the request").into_response()
            }
        };
        // Decided when answering: a request answered after the listeners closed says
        // Connection: close, however long ago it was read.
        let keep_alive = request.head.keep_alive && !ctx.shutdown.is_fired();
        drop(request);
        if write_response(
            &mut stream,
            response,
            keep_alive,
            head_only,
            ctx.timeouts.write,
        )
        .await
        .is_err()
            || !keep_alive
        {
            return;
        }
        if turn.get().elapsed() >= TURN {
            GiveTurn { given: false }.await;
        }
    }
}

/// Waits, up to the idle timeout, for the first bytes of the next request; an idle connection
/// gives up at once when the runtime's listeners close.
async fn wait_for_request<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut BytesMut,
    ctx: &ConnectionContext,
) -> bool {
    let read = monoio::time::timeout(ctx.timeouts.idle, read_more(stream, buf, READ_CHUNK));
    monoio::select! {
        read = read => matches!(read, Ok(Ok(n)) if n > 0),
        () = ctx.closing.closed() => false,
    }
}

async fn read_request<S: AsyncReadRent + AsyncWriteRent>(
    stream: &mut S,
    buf: &mut BytesMut,
    ctx: &ConnectionContext,
) -> Result<Request, ReadError> {
    let arrived = Instant::now();
    let deadline = arrived + ctx.timeouts.header;
    let (parsed, head_len) = loop {
        if let Some(parsed) = parse_head(buf, &ctx.limits)? {
            break parsed;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, read_more(stream, buf, READ_CHUNK)).await {
            Ok(Ok(n)) if n > 0 => {}
            Ok(_) => return Err(ReadError::Close),
            Err(_) => return Err(HttpError::timeout("header").into()),
        }
    };
    // The head is copied out (it is small) so that `buf` stays the sole owner of its allocation:
    // a shared buffer cannot grow in place, and reserving room for the body would copy all that
    // was read so far into a fresh allocation.
    let head = parsed.into_head(Bytes::copy_from_slice(&buf[..head_len]));
    buf.advance(head_len);
    let mut reader = BodyReader::new(&head, &ctx.limits)?;
    let body = loop {
        match reader.step(buf)? {
            BodyStep::Done(body) => break body,
            BodyStep::Read {
                want,
                send_continue,
            } => {
                if send_continue {
                    write_bytes(stream, Bytes::from_static(CONTINUE)).await?;
                }
                read_body_bytes(stream, buf, want, ctx).await?;
            }
        }
    };
    Ok(Request {
        head,
        body,
        arrived,
        read: Instant::now(),
    })
}

async fn read_body_bytes<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut BytesMut,
    want: usize,
    ctx: &ConnectionContext,
) -> Result<(), ReadError> {
    match monoio::time::timeout(ctx.timeouts.body, read_more(stream, buf, want)).await {
        Ok(Ok(n)) if n > 0 => Ok(()),
        Ok(_) => Err(ReadError::Close),
        Err(_) => Err(HttpError::timeout("body").into()),
    }
}

/// Reads once, appending to `buf` (growing it by at least `want` bytes of room).
pub async fn read_more<S: AsyncReadRent>(
    stream: &mut S,
    buf: &mut BytesMut,
    want: usize,
) -> io::Result<usize> {
    buf.reserve(want);
    let owned = std::mem::take(buf);
    let len = owned.len();
    let (result, slice) = stream.read(owned.slice_mut(len..)).await;
    *buf = slice.into_inner();
    result
}

async fn write_bytes<S: AsyncWriteRent>(stream: &mut S, bytes: Bytes) -> Result<(), ReadError> {
    let (result, _) = stream.write_all(bytes).await;
    result.map(|_| ()).map_err(|_| ReadError::Close)
}

/// Writes head and body parts with one vectored write (more if the socket takes less).
async fn write_response<S: AsyncWriteRent>(
    stream: &mut S,
    response: Response,
    keep_alive: bool,
    head_only: bool,
    stall: Duration,
) -> io::Result<()> {
    let mut head = Vec::with_capacity(192);
    write_head(&mut head, &response, keep_alive);
    let mut parts = Vec::with_capacity(1 + response.body.len());
    parts.push(Bytes::from(head));
    if !head_only {
        parts.extend(response.body);
    }
    write_all_vectored(stream, IoParts::new(parts), Some(stall)).await
}

/// Awaits `work`; while it waits (queued behind a model), also watches the socket, and gives up
/// (`None`, dropping `work`) when the peer closes. Work done on its first poll costs no watch.
async fn unless_peer_closes<F: Future>(stream: &TcpStream, work: F) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(match work.as_mut().poll(cx) {
            Poll::Ready(done) => Some(done),
            Poll::Pending => None,
        })
    })
    .await;
    if first.is_some() {
        return first;
    }
    monoio::select! {
        done = work.as_mut() => Some(done),
        () = peer_closed(stream) => None,
    }
}

/// Resolves when the peer has closed the connection (EOF or error). Bytes waiting to be read
/// (a pipelined request) mean the peer is still there: then it never resolves.
async fn peer_closed(stream: &TcpStream) {
    loop {
        if stream.readable(false).await.is_err() {
            return;
        }
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local; the descriptor is the stream's own.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return,
            1.. => std::future::pending::<()>().await,
            _ => {
                let e = io::Error::last_os_error().kind();
                if e != io::ErrorKind::WouldBlock && e != io::ErrorKind::Interrupted {
                    return;
                }
            }
        }
    }
}

/// A panic while handling one request fails that request (HTTP 500, gRPC INTERNAL), not the io
/// thread: monoio 0.2.4 does not catch a task's panic.
pub(super) struct CatchUnwind<F>(pub(super) F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, ()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // SAFETY: the inner future is never moved out of the pinned wrapper.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_handler_becomes_an_error_not_a_dead_thread() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut panicking = std::pin::pin!(CatchUnwind(async { panic!("handler bug") }));
        assert_eq!(panicking.as_mut().poll(&mut cx), Poll::Ready(Err(())));
        let mut fine = std::pin::pin!(CatchUnwind(async { 7 }));
        assert_eq!(fine.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
    }
}
