//! Command-line flags (and a TOML file of the same settings), validated into the settings each
//! layer takes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::doors::{Access, Restrictions};
use crate::engine::{
    Limits as EngineLimits, ModelControl, Options, SharedMemory, TraceFile, Tracer,
};
use crate::http::Limits;
use crate::server::{IoDriver, ServerConfig, Timeouts};

/// tensord: an Open Inference Protocol (KServe V2) server with the binary tensor extension.
#[derive(Parser, Debug, serde::Serialize)]
// A flag given twice takes its last value, so wrappers can append overrides.
#[command(version, about, args_override_self = true)]
pub struct Args {
    /// A TOML file of settings: the flags' names with underscores (`http_addr = "..."`).
    /// Flags on the command line override it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (as TOML) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,

    /// Address and port to serve HTTP on.
    #[arg(long, default_value = "0.0.0.0:8000")]
    pub http_addr: SocketAddr,

    /// Also serve `/metrics` (alone) on this address, e.g. 0.0.0.0:8002 as Triton does.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,

    /// Address and port to serve gRPC on (the Open Inference Protocol and TF Serving's API),
    /// or `off`.
    #[arg(long, default_value = "0.0.0.0:8001")]
    pub grpc_addr: AddrOrOff,

    /// Model repository: one folder per model, each with a config.toml.
    #[arg(long, default_value = "./models")]
    pub model_repository: PathBuf,

    /// Serve what OpenVINO Model Server's config.json lists instead of a repository folder:
    /// its ONNX models (`model_config_list`) and DAG pipelines (`pipeline_config_list`).
    #[arg(long, value_name = "FILE", conflicts_with = "model_repository")]
    pub ovms_config: Option<PathBuf>,

    /// Who changes the served models: none (the repository at start, fixed), explicit (the
    /// repository API over REST and gRPC), poll (rescans of the repository folder).
    #[arg(long, value_enum, ignore_case = true, default_value_t = ModelControl::None)]
    pub model_control_mode: ModelControl,

    /// Explicit mode: a model to load at start (repeat the flag for more; `*` for all). Without
    /// it, explicit mode starts with no model loaded, as Triton does.
    #[arg(long)]
    pub load_model: Vec<String>,

    /// Poll mode: seconds between rescans of the repository [default: 15].
    #[arg(long)]
    pub repository_poll_secs: Option<u64>,

    /// Ready (`/v2/health/ready`) only while every model that should be loaded is ready; false:
    /// ready whenever the server runs and is not draining.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_readiness: bool,

    /// Where a load request's `file:` contents are staged, each load in a private folder of its
    /// own that is removed when the load ends [default: the system temp dir].
    #[arg(long)]
    pub load_staging_dir: Option<PathBuf>,

    /// Restricts REST API groups to requests with a header: `<api>[,<api>...]:<header>=<value>`
    /// (repeatable; groups: health, metadata, inference, shared-memory, model-config,
    /// model-repository, statistics, trace, logging).
    #[arg(long)]
    pub http_restricted_api: Vec<String>,

    /// Restricts gRPC API groups to calls whose metadata carries
    /// `triton-grpc-protocol-<key>: <value>`: `<api>[,<api>...]:<key>=<value>` (repeatable).
    #[arg(long)]
    pub grpc_restricted_protocol: Vec<String>,

    /// Let clients register system shared-memory regions and use them for inputs and outputs
    /// (Triton's flag, off by default as there). Status answers either way.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub allow_client_shm: bool,

    /// The most shared-memory regions registered at once.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_shm_regions: u64,

    /// The most bytes all registered shared-memory regions may map together.
    #[arg(long, default_value_t = 64 << 30)]
    pub max_shm_bytes: u64,

    /// The file traces are written to (mode 0600, never through a link); without it, tracing
    /// cannot be turned on. Clients can change the trace settings but never the file.
    #[arg(long)]
    pub trace_file: Option<PathBuf>,

    /// A trace setting at start, as Triton's `[triton,]<setting>=<value>`: level, rate, count,
    /// log-frequency (repeatable).
    #[arg(long)]
    pub trace_config: Vec<String>,

    /// The most threads one model version may start: its instances' workers, and their ONNX
    /// Runtime intra-op threads when the config sets them; more fails the load, naming the keys
    /// [default: 4 × cores, at least 16].
    #[arg(long)]
    pub max_model_threads: Option<usize>,

    /// The most threads all served model versions may start together; a load past it fails
    /// [default: 16 × cores, at least 64].
    #[arg(long)]
    pub max_total_model_threads: Option<usize>,

    /// With log-frequency N, the most `<trace-file>.<k>` files kept (the oldest is removed).
    #[arg(long, default_value_t = 100)]
    pub trace_file_max: u64,

    /// Io threads, each with its own runtime and listener [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,

    /// Threads one model execution may use: candle's CPU pool, and ONNX Runtime's intra-op
    /// threads for models that set none [default: available cores].
    #[arg(long)]
    pub compute_threads: Option<usize>,

    /// The ONNX Runtime library (libonnxruntime.so from the onnxruntime wheel) that runs ONNX
    /// graphs [default: $ORT_DYLIB_PATH, else libonnxruntime.so beside the binary].
    #[arg(long)]
    pub onnxruntime_lib: Option<PathBuf>,

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

    /// Compress infer responses when the client's Accept-Encoding asks for gzip or deflate.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub compress_responses: bool,

    /// Infer responses smaller than this many bytes are sent plain (compressing them costs
    /// more than it saves).
    #[arg(long, default_value_t = 1024)]
    pub compress_min_bytes: u64,

    /// Most elements one tensor may have; more is a 400.
    #[arg(long, default_value_t = 1 << 28)]
    pub max_tensor_elements: u64,

    /// Most pixels one JPEG/PNG image may have (its header's width × height, checked before
    /// decoding); more is a 400 (default 64 Mpx, Pillow's guard).
    #[arg(long, default_value_t = 1 << 26)]
    pub max_image_pixels: u64,

    /// Most pixels of all the images of one input together; more is a 400.
    #[arg(long, default_value_t = 1 << 27)]
    pub max_request_pixels: u64,

    /// Seconds a keep-alive connection may idle between requests (set it above the load balancer's).
    #[arg(long, default_value_t = 75)]
    pub idle_timeout: u64,

    /// Seconds from a request's first byte to the end of its head; then 408.
    #[arg(long, default_value_t = 10)]
    pub header_timeout: u64,

    /// Seconds to wait for more bytes of a request body; then 408.
    #[arg(long, default_value_t = 30)]
    pub body_timeout: u64,

    /// Seconds a client may take no bytes of a response (it stopped reading); then the
    /// connection closes, releasing the response.
    #[arg(long, default_value_t = 30)]
    pub write_timeout: u64,

    /// gRPC: bytes of answers one connection may hold while its peer does not read them. Past
    /// half of it, the connection's next calls wait before they run; an answer that would pass
    /// it is refused with RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64 << 20)]
    pub grpc_max_pending_bytes: usize,

    /// gRPC: milliseconds between HTTP/2 PINGs on a connection (Triton's default, 2 hours).
    #[arg(long, default_value_t = 7_200_000)]
    pub grpc_keepalive_time: u64,

    /// gRPC: milliseconds a PING's answer may take; then the connection is dropped.
    #[arg(long, default_value_t = 20_000)]
    pub grpc_keepalive_timeout: u64,

    /// Seconds between SIGTERM (readiness turns 503) and closing the listeners, so the load
    /// balancer sees the server leave before it stops taking requests.
    #[arg(long, default_value_t = 5)]
    pub drain_delay: u64,

    /// Seconds shutdown then waits for requests in progress.
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Drop a queued HTTP request when its client's side of the connection ends (EOF): a
    /// client that left costs no model time. A client that only half-closes (`shutdown(SHUT_WR)`,
    /// `nc -q`) then gets no answer either; set false to answer such clients (a request whose
    /// client fully left then runs to its end).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub cancel_on_disconnect: bool,
}

impl Args {
    /// Parses the command line, reading `--config FILE` first: its settings become flags placed
    /// before the command line's own, so the command line wins.
    pub fn load() -> Result<Args, LoadError> {
        let argv: Vec<String> = std::env::args().collect();
        let config = argv
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| argv.get(i + 1).cloned())
            .or_else(|| {
                argv.iter()
                    .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
            });
        let mut args = vec![argv[0].clone()];
        if let Some(path) = config {
            args.extend(file_flags(&PathBuf::from(path)).map_err(LoadError::Config)?);
        }
        args.extend(argv.into_iter().skip(1));
        Args::try_parse_from(args).map_err(LoadError::Clap)
    }

    /// The effective settings as TOML (what `--print-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// Threads one model execution may use: `--compute-threads`, else every core.
    pub fn compute_threads(&self) -> usize {
        self.compute_threads.unwrap_or_else(cores).max(1)
    }

    /// What one request may claim of the engine.
    pub fn limits(&self) -> EngineLimits {
        EngineLimits {
            max_tensor_elements: self.max_tensor_elements,
            max_image_pixels: self.max_image_pixels,
            max_request_pixels: self.max_request_pixels,
        }
    }

    /// The shared-memory registry: off, or allowed with its bound.
    pub fn shared_memory(&self) -> Result<SharedMemory, String> {
        match self.allow_client_shm {
            false => Ok(SharedMemory::off()),
            true => SharedMemory::allowed(self.max_shm_regions as usize, self.max_shm_bytes)
                .map_err(|e| format!("cannot guard shared memory: {e}")),
        }
    }

    /// How the repository opens: the control mode, the models to load at start, the staging dir.
    pub fn repository_options(&self) -> Result<Options, String> {
        if self.repository_poll_secs.is_some() && self.model_control_mode != ModelControl::Poll {
            return Err("--repository-poll-secs needs --model-control-mode poll".into());
        }
        if self.repository_poll_secs == Some(0) {
            return Err("--repository-poll-secs must be at least 1".into());
        }
        Ok(Options {
            control: self.model_control_mode,
            load_at_start: self.load_model.clone(),
            staging_dir: (self.load_staging_dir.clone()).unwrap_or_else(std::env::temp_dir),
            max_model_threads: (self.max_model_threads).unwrap_or_else(|| (4 * cores()).max(16)),
            max_total_threads: (self.max_total_model_threads)
                .unwrap_or_else(|| (16 * cores()).max(64)),
        })
    }

    /// Poll mode's period.
    pub fn poll_period(&self) -> Option<Duration> {
        (self.model_control_mode == ModelControl::Poll)
            .then(|| Duration::from_secs(self.repository_poll_secs.unwrap_or(15)))
    }

    /// The restricted API groups of REST and gRPC.
    pub fn access(&self) -> Result<Access, String> {
        Ok(Access {
            http: Restrictions::parse(&self.http_restricted_api, "", "http-restricted-api")?,
            grpc: Restrictions::parse(
                &self.grpc_restricted_protocol,
                "triton-grpc-protocol-",
                "grpc-restricted-protocol",
            )?,
        })
    }

    /// The tracer, its file and start-up settings applied.
    pub fn tracer(&self) -> Result<Tracer, String> {
        let file = self.trace_file.clone().map(|path| TraceFile {
            path,
            max_files: self.trace_file_max.max(1),
        });
        let tracer =
            Tracer::new(file).map_err(|e| format!("cannot start the trace writer: {e}"))?;
        for spec in &self.trace_config {
            tracer.configure(spec)?;
        }
        Ok(tracer)
    }

    pub fn server_config(&self) -> Result<ServerConfig, String> {
        let threads = match self.threads {
            Some(0) => return Err("--threads must be at least 1".into()),
            Some(n) => n,
            None => cores(),
        };
        Ok(ServerConfig {
            addr: self.http_addr,
            metrics_addr: self.metrics_addr,
            grpc_addr: self.grpc_addr.0,
            inherited: Vec::new(),
            threads,
            io_driver: self.io_driver,
            limits: Limits {
                max_header_bytes: self.max_header_bytes,
                max_body_bytes: self.max_body_bytes,
                grpc_max_pending_bytes: self.grpc_max_pending_bytes,
            },
            timeouts: Timeouts {
                idle: Duration::from_secs(self.idle_timeout),
                header: Duration::from_secs(self.header_timeout),
                body: Duration::from_secs(self.body_timeout),
                write: Duration::from_secs(self.write_timeout),
                keepalive: Duration::from_millis(self.grpc_keepalive_time.max(1)),
                keepalive_timeout: Duration::from_millis(self.grpc_keepalive_timeout.max(1)),
            },
            shutdown_timeout: Duration::from_secs(self.shutdown_timeout),
            cancel_on_disconnect: self.cancel_on_disconnect,
            watchdog: crate::server::systemd::watchdog_period(),
        })
    }
}

#[derive(Debug)]
pub enum LoadError {
    /// clap's answer (an error, or --help / --version): `exit()` prints it with the right code.
    Clap(clap::Error),
    Config(String),
}

/// A config file's settings as command-line flags; unknown keys and non-scalar values are errors
/// naming the file and the key.
fn file_flags(path: &std::path::Path) -> Result<Vec<String>, String> {
    use clap::CommandFactory;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim()))?;
    let command = Args::command();
    // Each flag a file may set, and whether it repeats (takes a list).
    let known: Vec<(String, bool)> = command
        .get_arguments()
        .filter_map(|a| Some((a.get_long()?, a)))
        .filter(|(l, _)| !["config", "print-config", "help", "version"].contains(l))
        .map(|(l, a)| {
            (
                l.to_string(),
                matches!(a.get_action(), clap::ArgAction::Append),
            )
        })
        .collect();
    let mut flags = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let Some(&(_, repeats)) = known.iter().find(|(l, _)| *l == flag) else {
            return Err(format!("{}: unknown key '{key}'", path.display()));
        };
        // A list is the flag repeated (the repeatable flags: load_model, the restrictions).
        let values = match value {
            toml::Value::Array(items) if repeats => items,
            scalar => vec![scalar],
        };
        for value in values {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "{}: key '{key}': expected a string, number or boolean, or a list of them",
                        path.display()
                    ))
                }
            };
            // Each value is checked alone, so that a bad one is reported by file and key rather
            // than as a command-line flag.
            let flag = format!("--{flag}={value}");
            if let Err(e) = Args::try_parse_from(["tensord", flag.as_str()]) {
                let reason = std::error::Error::source(&e)
                    .map_or_else(|| e.kind().to_string(), |source| source.to_string());
                return Err(format!(
                    "{}: key '{key}': invalid value '{value}': {reason}",
                    path.display()
                ));
            }
            flags.push(flag);
        }
    }
    Ok(flags)
}

/// An address to listen on, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrOrOff(pub Option<SocketAddr>);

impl std::str::FromStr for AddrOrOff {
    type Err = String;

    fn from_str(text: &str) -> Result<AddrOrOff, String> {
        match text {
            "off" => Ok(AddrOrOff(None)),
            _ => text
                .parse()
                .map(|addr| AddrOrOff(Some(addr)))
                .map_err(|e| format!("{e} (an address and port, or off)")),
        }
    }
}

impl serde::Serialize for AddrOrOff {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(addr) => serializer.collect_str(&addr),
            None => serializer.serialize_str("off"),
        }
    }
}

/// The cores this process may use (1 where the system cannot tell).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_become_flags_and_unknown_keys_fail() {
        let dir = std::env::temp_dir().join(format!("tensord-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(
            &good,
            "http_addr = \"127.0.0.1:9000\"\nmax_header_bytes = 512\n",
        )
        .unwrap();
        let mut flags = file_flags(&good).unwrap();
        flags.sort();
        assert_eq!(
            flags,
            vec!["--http-addr=127.0.0.1:9000", "--max-header-bytes=512"]
        );
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "max_headers = 3\n").unwrap();
        let err = file_flags(&bad).unwrap_err();
        assert!(
            err.contains("bad.toml") && err.contains("unknown key 'max_headers'"),
            "{err}"
        );
        std::fs::write(&bad, "threads = [1]\n").unwrap();
        assert!(file_flags(&bad).unwrap_err().contains("key 'threads'"));
        // A bad value names the file and the key, not the flag.
        std::fs::write(&bad, "max_body_bytes = \"lots\"\n").unwrap();
        let err = file_flags(&bad).unwrap_err();
        assert!(
            err.contains("bad.toml: key 'max_body_bytes': invalid value 'lots'")
                && err.contains("invalid digit")
                && !err.contains("--max-body-bytes"),
            "{err}"
        );
        // The command line wins over the file.
        let args = Args::try_parse_from(["tensord", "--threads=1", "--threads", "3"]).unwrap();
        assert_eq!(args.threads, Some(3));
        assert!(args.to_toml().contains("max_header_bytes = 16384"));
        // gRPC is on at Triton's port unless turned off.
        assert_eq!(args.grpc_addr.0, Some("0.0.0.0:8001".parse().unwrap()));
        let off = Args::try_parse_from(["tensord", "--grpc-addr", "off"]).unwrap();
        assert_eq!(off.grpc_addr, AddrOrOff(None));
        assert!(off.to_toml().contains("grpc_addr = \"off\""));
        assert!(Args::try_parse_from(["tensord", "--grpc-addr", "8001"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
