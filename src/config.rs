//! Command-line flags, validated into the settings each layer takes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::http::Limits;
use crate::server::{IoDriver, ServerConfig, Timeouts};

/// tensord: an Open Inference Protocol (KServe V2) server with the binary tensor extension.
#[derive(Parser, Debug)]
// A flag given twice takes its last value, so wrappers can append overrides.
#[command(version, about, args_override_self = true)]
pub struct Args {
    /// Address and port to serve HTTP on.
    #[arg(long, default_value = "0.0.0.0:8000")]
    pub http_addr: SocketAddr,

    /// Model repository: one folder per model, each with a config.toml.
    #[arg(long, default_value = "./models")]
    pub model_repository: PathBuf,

    /// Io threads, each with its own runtime and listener [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Threads candle's CPU kernels may use per model execution [default: available cores].
    #[arg(long)]
    pub compute_threads: Option<usize>,

    /// I/O driver of the runtimes: auto picks the one measured faster (epoll, see README).
    #[arg(long, value_enum, default_value_t = IoDriver::Auto)]
    pub io_driver: IoDriver,

    /// Log level (error, warn, info, debug, trace) or a tracing filter; RUST_LOG wins if set.
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Largest request head (request line and headers) in bytes; larger ones get 431.
    #[arg(long, default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub max_body_bytes: u64,

    /// Most elements one tensor may have; more is a 400.
    #[arg(long, default_value_t = 1 << 28)]
    pub max_tensor_elements: u64,

    /// Seconds a keep-alive connection may idle between requests (set it above the load balancer's).
    #[arg(long, default_value_t = 75)]
    pub idle_timeout: u64,

    /// Seconds from a request's first byte to the end of its head; then 408.
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,

    /// Seconds to wait for more bytes of a request body; then 408.
    #[arg(long, default_value_t = 30)]
    pub body_timeout: u64,

    /// Seconds between SIGTERM (readiness turns 503) and closing the listeners, so the load
    /// balancer sees the server leave before it stops taking requests.
    #[arg(long, default_value_t = 5)]
    pub drain_delay: u64,

    /// Seconds shutdown then waits for requests in progress.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
}

impl Args {
    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let threads = match self.threads {
            Some(0) => return Err("--threads must be at least 1".into()),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        Ok(ServerConfig {
            addr: self.http_addr,
            threads,
            io_driver: self.io_driver,
            limits: Limits {
                max_header_bytes: self.max_header_bytes,
                max_body_bytes: self.max_body_bytes,
            },
            timeouts: Timeouts {
                idle: Duration::from_secs(self.idle_timeout),
                header: Duration::from_secs(self.header_timeout),
                body: Duration::from_secs(self.body_timeout),
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            watchdog: crate::server::systemd::watchdog_period(),
        })
    }
}
