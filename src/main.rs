use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use tensord::config::{Args, LoadError};
use tensord::doors::Service;
use tensord::engine::{Engine, Repository};
use tensord::logging::Logging;
use tensord::metrics::ServerMetrics;
use tensord::models::onnxruntime;
use tensord::server::{systemd, Server};

fn main() {
    let args = match Args::load() {
        Ok(args) => args,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(LoadError::Config(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    if args.print_config {
        print!("{}", args.to_toml());
        return;
    }
    if let Some(n) = args.compute_threads {
        // candle sizes its CPU thread pool from this variable (as rayon does); set before any
        // thread starts.
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
    let mut filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // ONNX Runtime logs every graph transformer at info; keep it to warnings and errors unless
    // the filter names it.
    let text = filter.to_string();
    if !text.split(',').any(|d| d.starts_with("ort")) {
        if let Ok(directive) = "ort=warn".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let logging = Arc::new(Logging::new(handle, &args.log_level));
    if let Err(e) = run(&args, logging) {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

fn run(args: &Args, logging: Arc<Logging>) -> Result<(), String> {
    raise_file_limit();
    return_large_buffers();
    let mut config = args.server_config()?;
    config.inherited = systemd::listen_fds();
    // Signals are taken before any thread starts, so every thread inherits them blocked-free
    // and delivery goes to the signal iterator.
    let mut signals =
        Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("cannot handle signals: {e}"))?;
    let access = args.access()?;
    let tracer = args.tracer()?;
    let options = args.repository_options()?;
    load_onnxruntime(args);
    let repository = match &args.ovms_config {
        Some(file) => Repository::open_ovms(file, options)?,
        None => Repository::open(&args.model_repository, options)?,
    };
    let metrics = Arc::new(ServerMetrics::new(config.threads));
    let engine = Arc::new(Engine::new(
        repository,
        args.limits(),
        args.strict_readiness,
        tracer,
        args.shared_memory()?,
    ));
    if let Some(period) = args.poll_period() {
        engine
            .start_polling(period)
            .map_err(|e| format!("cannot start the repository poller: {e}"))?;
    }
    let compression = args.compress_responses.then_some(args.compress_min_bytes);
    let service = Arc::new(Service::new(
        engine.clone(),
        metrics.clone(),
        compression,
        logging,
        access,
    ));
    let server = Server::start(config, service, metrics.clone())?;
    systemd::notify(&format!("READY=1\nSTATUS={}", status_line(&engine, 0.0)));
    systemd::report_status(Duration::from_secs(STATUS_EVERY_S), {
        let (engine, metrics) = (engine.clone(), metrics.clone());
        let mut last = (Instant::now(), 0);
        move || {
            let requests = metrics.requests();
            let rate = (requests - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), requests);
            (!engine.is_draining()).then(|| status_line(&engine, rate))
        }
    });
    if let Some(signal) = signals.forever().next() {
        tracing::info!(
            signal,
            drain_delay = args.drain_delay,
            "draining: readiness is now 503"
        );
        engine.start_draining();
        systemd::notify("STOPPING=1\nSTATUS=draining");
        // A second signal ends it at once. Draining needs no new thread: if none can be had
        // (the process is out of them), it drains without that shortcut.
        let second = std::thread::Builder::new().spawn(move || {
            if signals.forever().next().is_some() {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        });
        if let Err(e) = second {
            tracing::warn!("no thread for a second signal ({e}); draining all the same");
        }
        // Keep serving while the load balancer notices the failing readiness check.
        std::thread::sleep(std::time::Duration::from_secs(args.drain_delay));
        tracing::info!("shutting down: finishing requests in progress");
    }
    server.stop();
    // Traces still queued are written once the last request is done; a load still running
    // leaves no staged files behind.
    engine.tracer().flush_all();
    engine.repository().remove_staged();
    tracing::info!("stopped");
    Ok(())
}

/// Loads ONNX Runtime before the models. Without it the daemon still serves: each ONNX model is
/// unavailable, and its reason names the flag.
fn load_onnxruntime(args: &Args) {
    let library = args
        .onnxruntime_lib
        .clone()
        .unwrap_or_else(onnxruntime::default_library);
    match onnxruntime::init(&library, args.compute_threads()) {
        Ok(()) => tracing::info!(library = %library.display(), "ONNX Runtime loaded"),
        Err(e) => tracing::warn!(
            "ONNX Runtime not loaded, ONNX models will be unavailable: {e} (see --onnxruntime-lib)"
        ),
    }
}

/// Every connection is a descriptor: take the whole hard limit (systemd's LimitNOFILE, or the
/// shell's), not the soft 1024 many systems start processes with.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Request bodies and large responses are allocated per request. Buffers up to 4 MiB come
/// from glibc's heap, which reuses freed memory: mapping each one on its own costs a page fault
/// per 4 KiB on every request (HTTP/2's read buffer is a new allocation per frame: a 600 KB
/// gRPC tensor went 1.4× faster with this). At most 16 MiB of free memory stays at the top of
/// a heap after a burst; larger buffers are mapped on their own and go back to the system when
/// the request ends.
fn return_large_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's tuning; called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// How often STATUS= is refreshed under systemd.
const STATUS_EVERY_S: u64 = 5;

fn status_line(engine: &Engine, requests_per_s: f64) -> String {
    let (ready, all) = engine.models_ready();
    format!("serving {ready} of {all} models, {requests_per_s:.0} requests/s")
}
