//! Thread-per-core serving: one monoio runtime and one SO_REUSEPORT listener per thread.

mod connection;
mod driver;
pub(crate) mod grpc;
mod shutdown;
pub mod systemd;
mod vectored;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener};

pub use connection::{read_more, Timeouts};
pub use driver::IoDriver;
pub use shutdown::ShutdownSignal;
pub use vectored::{write_all_vectored, IoParts};

use crate::doors::Endpoints;
use crate::doors::Service;
use crate::http::Limits;
use crate::metrics::ServerMetrics;
use connection::ConnectionContext;

pub struct ServerConfig {
    pub addr: SocketAddr,
    /// Where to serve `/metrics` alone as well, besides the main port.
    pub metrics_addr: Option<SocketAddr>,
    /// Where to serve gRPC (the Open Inference Protocol), on the same runtimes.
    pub grpc_addr: Option<SocketAddr>,
    /// Sockets systemd passed (socket activation), used instead of binding the addresses:
    /// sorted by port (`Inherited::sort`).
    pub inherited: Vec<std::net::TcpListener>,
    pub threads: usize,
    pub io_driver: IoDriver,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// How long shutdown waits for requests in progress.
    pub shutdown_timeout: Duration,
    /// Whether a queued HTTP request is dropped when its client's side ends (EOF).
    pub cancel_on_disconnect: bool,
    /// systemd's watchdog period, when it asked for one: each runtime then beats at a quarter of it.
    pub watchdog: Option<Duration>,
}

/// A started server: runtimes serving until `shutdown` fires.
pub struct Server {
    threads: Vec<std::thread::JoinHandle<()>>,
    shutdown: Arc<ShutdownSignal>,
}

impl Server {
    /// Starts the runtimes; returns once every listener is bound (or the first bind error).
    pub fn start(
        config: ServerConfig,
        service: Arc<Service>,
        metrics: Arc<ServerMetrics>,
    ) -> Result<Server, String> {
        let driver = config.io_driver.resolve()?;
        let sockets = Inherited::sort(config.inherited, config.grpc_addr, config.metrics_addr);
        let main = match sockets.http {
            Some(socket) => Listen::Shared(socket),
            None => Listen::Bind(refuse_taken(config.addr, "")?),
        };
        let mut metrics_listener = match (sockets.metrics, config.metrics_addr) {
            (Some(socket), _) => Some(socket),
            (None, Some(addr)) => Some(
                std::net::TcpListener::bind(addr)
                    .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?,
            ),
            (None, None) => None,
        };
        let grpc = match (sockets.grpc, config.grpc_addr) {
            (Some(socket), _) => Some(Listen::Shared(socket)),
            (None, Some(addr)) => Some(Listen::Bind(refuse_taken(addr, " for gRPC")?)),
            (None, None) => None,
        };
        let described = main.describe()?;
        let grpc_described = grpc.as_ref().map(Listen::describe).transpose()?;
        // One shutdown slot per runtime for each of its two accept loops (HTTP, gRPC), and one
        // for the metrics listener's.
        let shutdown = Arc::new(ShutdownSignal::new(2 * config.threads + 1));
        let beats: systemd::Heartbeats =
            Arc::new((0..config.threads).map(|_| Default::default()).collect());
        let (bound_tx, bound_rx) = mpsc::channel();
        let mut threads = Vec::with_capacity(config.threads);
        for index in 0..config.threads {
            let ctx = ConnectionContext {
                service: service.clone(),
                endpoints: Endpoints::All,
                limits: config.limits,
                timeouts: config.timeouts,
                cancel_on_disconnect: config.cancel_on_disconnect,
                shutdown: shutdown.clone(),
                busy: Cell::new(0),
                closing: Default::default(),
                metrics: metrics.clone(),
                core: index,
            };
            let listen = main.for_runtime()?;
            let grpc_listen = grpc.as_ref().map(Listen::for_runtime).transpose()?;
            let metrics_socket = metrics_listener.take();
            let drain = config.shutdown_timeout;
            let bound_tx = bound_tx.clone();
            let heartbeat = config.watchdog.map(|period| (beats.clone(), period / 4));
            let thread = std::thread::Builder::new()
                .name(format!("tensord-io-{index}"))
                .spawn(move || {
                    let serve = serve_runtime(
                        index,
                        listen,
                        grpc_listen,
                        metrics_socket,
                        drain,
                        ctx,
                        bound_tx.clone(),
                        heartbeat,
                    );
                    let result = match driver {
                        IoDriver::Uring => monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                            .with_entries(1024)
                            .enable_timer()
                            .build()
                            .map(|mut rt| rt.block_on(serve)),
                        _ => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                            .enable_timer()
                            .build()
                            .map(|mut rt| rt.block_on(serve)),
                    };
                    if let Err(e) = result {
                        let _ =
                            bound_tx.send(Err(format!("cannot start the {driver} runtime: {e}")));
                    }
                })
                .map_err(|e| format!("cannot spawn an io thread: {e}"))?;
            threads.push(thread);
        }
        drop(bound_tx);
        let server = Server { threads, shutdown };
        for _ in 0..config.threads {
            match bound_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    server.stop();
                    return Err(e);
                }
                Err(_) => return Err("an io thread exited during start-up".into()),
            }
        }
        let grpc = grpc_described.unwrap_or_else(|| "off".into());
        tracing::info!(addr = %described, grpc = %grpc, threads = config.threads, driver = %driver, "listening");
        if let Some(period) = config.watchdog {
            systemd::start_watchdog(period, beats);
        }
        Ok(server)
    }

    /// Stops accepting, lets requests in progress finish, and waits for the runtimes.
    pub fn stop(self) {
        self.shutdown.fire();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Every runtime's listener sets SO_REUSEPORT, which would also let it share the port silently
/// with another process already there: a port that is taken is refused.
fn refuse_taken(addr: SocketAddr, what: &str) -> Result<SocketAddr, String> {
    std::net::TcpListener::bind(addr)
        .map(|_| addr)
        .map_err(|e| format!("cannot listen on {addr}{what}: {e}"))
}

/// The sockets systemd passed, by what they serve: the one on `--grpc-addr`'s port serves
/// gRPC, the one on `--metrics-addr`'s port `/metrics`; of the others, the first serves HTTP
/// and a second `/metrics`.
#[derive(Default)]
struct Inherited {
    http: Option<std::net::TcpListener>,
    grpc: Option<std::net::TcpListener>,
    metrics: Option<std::net::TcpListener>,
}

impl Inherited {
    fn sort(
        sockets: Vec<std::net::TcpListener>,
        grpc: Option<SocketAddr>,
        metrics: Option<SocketAddr>,
    ) -> Inherited {
        let mut sorted = Inherited::default();
        for socket in sockets {
            let port = socket.local_addr().map(|a| a.port()).ok();
            let slot = match port {
                Some(p) if grpc.is_some_and(|a| a.port() == p) => &mut sorted.grpc,
                Some(p) if metrics.is_some_and(|a| a.port() == p) => &mut sorted.metrics,
                _ if sorted.http.is_none() => &mut sorted.http,
                _ => &mut sorted.metrics,
            };
            if slot.is_some() {
                tracing::warn!(
                    ?port,
                    "a further socket from systemd serves nothing: ignored"
                );
                continue;
            }
            *slot = Some(socket);
        }
        sorted
    }
}

/// How a runtime gets its listener.
enum Listen {
    /// Its own SO_REUSEPORT socket on this address: the kernel spreads connections.
    Bind(SocketAddr),
    /// A descriptor of one socket shared by all runtimes (systemd's).
    Shared(std::net::TcpListener),
}

impl Listen {
    fn describe(&self) -> Result<String, String> {
        Ok(match self {
            Listen::Bind(addr) => addr.to_string(),
            Listen::Shared(socket) => match socket.local_addr() {
                Ok(addr) => format!("{addr} (socket activation)"),
                Err(e) => return Err(format!("the socket systemd passed is not usable: {e}")),
            },
        })
    }

    fn for_runtime(&self) -> Result<Listen, String> {
        Ok(match self {
            Listen::Bind(addr) => Listen::Bind(*addr),
            Listen::Shared(socket) => Listen::Shared(
                socket
                    .try_clone()
                    .map_err(|e| format!("cannot share the listening socket: {e}"))?,
            ),
        })
    }

    fn open(self) -> Result<TcpListener, String> {
        match self {
            Listen::Bind(addr) => {
                let opts = ListenerOpts::new()
                    .reuse_port(true)
                    .reuse_addr(true)
                    .backlog(4096);
                TcpListener::bind_with_config(addr, &opts)
                    .map_err(|e| format!("cannot listen on {addr}: {e}"))
            }
            Listen::Shared(socket) => adopt(socket),
        }
    }
}

fn adopt(socket: std::net::TcpListener) -> Result<TcpListener, String> {
    socket
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(socket))
        .map_err(|e| format!("cannot serve on an inherited socket: {e}"))
}

#[allow(clippy::too_many_arguments)]
async fn serve_runtime(
    index: usize,
    listen: Listen,
    grpc_listen: Option<Listen>,
    metrics_socket: Option<std::net::TcpListener>,
    drain: Duration,
    ctx: ConnectionContext,
    bound: mpsc::Sender<Result<(), String>>,
    heartbeat: Option<(systemd::Heartbeats, Duration)>,
) {
    let opened = listen.open().and_then(|listener| {
        let metrics = metrics_socket.map(adopt).transpose()?;
        let grpc = grpc_listen.map(Listen::open).transpose()?;
        Ok((listener, metrics, grpc))
    });
    let (listener, metrics_listener, grpc_listener) = match opened {
        Ok(listeners) => listeners,
        Err(e) => {
            let _ = bound.send(Err(e));
            return;
        }
    };
    let _ = bound.send(Ok(()));
    if let Some((beats, every)) = heartbeat {
        // The watchdog pings only while this loop keeps running.
        monoio::spawn(async move {
            loop {
                beats[index].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                monoio::time::sleep(every).await;
            }
        });
    }
    let slots = ctx.shutdown.slots();
    let ctx = Rc::new(ctx);
    let metrics_ctx = Rc::new(ctx.metrics_only());
    if let Some(listener) = metrics_listener {
        monoio::spawn(accept_until_shutdown(
            listener,
            metrics_ctx.clone(),
            slots - 1,
            connection::serve,
        ));
    }
    if let Some(listener) = grpc_listener {
        let slot = (slots - 1) / 2 + index;
        monoio::spawn(accept_until_shutdown(
            listener,
            ctx.clone(),
            slot,
            grpc::serve,
        ));
    }
    accept_until_shutdown(listener, ctx.clone(), index, connection::serve).await;
    // Every listener of this runtime is closed now (they close on the same signal).
    ctx.closing.close();
    metrics_ctx.closing.close();
    // The connections just woken run first: a gRPC connection marks itself busy until its
    // graceful shutdown is done.
    let deadline = Instant::now() + drain;
    loop {
        monoio::time::sleep(Duration::from_millis(2)).await;
        if ctx.busy.get() == 0 || Instant::now() >= deadline {
            break;
        }
    }
}

/// Accepts connections and serves each on its own task until shutdown fires (`slot` is this
/// loop's waker slot in the shutdown signal); then closes the listener.
async fn accept_until_shutdown<F: std::future::Future<Output = ()> + 'static>(
    listener: TcpListener,
    ctx: Rc<ConnectionContext>,
    slot: usize,
    serve: fn(monoio::net::TcpStream, Rc<ConnectionContext>) -> F,
) {
    let shutdown = ctx.shutdown.clone();
    let mut fired = std::pin::pin!(shutdown.fired(slot));
    let mut last_warning: Option<Instant> = None;
    loop {
        monoio::select! {
            _ = &mut fired => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let counters = &ctx.metrics.cores[ctx.core];
                    counters.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    monoio::spawn(serve(stream, ctx.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning, and say
                    // so once a second, not on every try.
                    if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!("accept failed: {e}; new connections wait in the backlog");
                        last_warning = Some(Instant::now());
                    }
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}
