//! Runs one load level: connections spread over monoio threads, each a keep-alive stream
//! that sends as soon as its last answer came (closed loop) or when the next arrival of a
//! shared schedule is due (open loop). Latency counts from the moment a request was due, so
//! an open-loop run that falls behind shows it (no coordinated omission).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::check::Checker;
use super::client::{Connection, Reply, Target};
use super::grpc::GrpcConnection;
use super::workload::{Inputs, SplitMix, Step, Variant};

/// How arrivals are spaced in an open-loop run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrival {
    Poisson,
    Constant,
}

/// Encodes a variant's inputs as a request, in a sequence or not.
pub type Encoder = Box<dyn Fn(&Inputs, Step) -> bytes::Bytes + Send + Sync>;

/// What every level of a run shares.
pub struct Plan {
    pub target: Target,
    /// Calls ModelInfer over gRPC instead of POSTing to HTTP.
    pub grpc: bool,
    pub variants: Vec<Variant>,
    /// Encodes a variant's inputs as one request of a sequence.
    pub encode: Encoder,
    /// Each stream sends sequences of this many requests.
    pub sequence_length: Option<u64>,
    pub checker: Checker,
    pub warmup: Duration,
    pub duration: Duration,
    /// Measured requests per level instead of a duration.
    pub requests: Option<u64>,
    pub threads: usize,
    pub arrival: Arrival,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Level {
    pub concurrency: usize,
    /// Requests per second (open loop); `None`: closed loop.
    pub rate: Option<f64>,
}

/// What one level measured.
pub struct Measured {
    /// Latencies of successful requests, microseconds.
    pub latency: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    /// The first few error messages.
    pub first_errors: Vec<String>,
    pub sent_bytes: u64,
    pub received_bytes: u64,
    /// The measured window: from the end of the warm-up to the last measured answer.
    pub elapsed: Duration,
}

const KEPT_ERRORS: usize = 5;

impl Measured {
    fn new() -> Measured {
        Measured {
            // 1 µs to an hour at 3 significant digits: fixed bounds, so merging never fails.
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
            ok: 0,
            errors: 0,
            first_errors: Vec::new(),
            sent_bytes: 0,
            received_bytes: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_errors.len() < KEPT_ERRORS {
            self.first_errors.push(message);
        }
    }

    fn merge(&mut self, other: Measured) {
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.errors += other.errors;
        for e in other.first_errors {
            if self.first_errors.len() < KEPT_ERRORS {
                self.first_errors.push(e);
            }
        }
        self.sent_bytes += other.sent_bytes;
        self.received_bytes += other.received_bytes;
        self.elapsed = self.elapsed.max(other.elapsed);
    }
}

/// State the streams of one level share across threads.
pub struct Shared {
    start: Instant,
    /// When the warm-up is planned to end.
    measure_from: Instant,
    /// When measuring started: after the warm-up's last answer, once the server's counters were
    /// read (the gate). Measured requests wait for it.
    measuring: OnceLock<Instant>,
    planned: Option<Duration>,
    /// Open loop: arrival offsets from `start`, and the next one to take.
    schedule: Vec<Duration>,
    next_arrival: AtomicU64,
    /// Measured requests issued (for `--requests`).
    issued: AtomicU64,
    /// Requests sent and not yet answered.
    in_flight: AtomicU64,
    /// Answers so far (progress display).
    pub done: AtomicU64,
    pub failed: AtomicU64,
    stopped: AtomicBool,
}

impl Shared {
    fn new(plan: &Plan, level: Level) -> Shared {
        // Streams connect during the first few milliseconds; the schedule starts after.
        let start = Instant::now() + Duration::from_millis(20);
        let schedule = match level.rate {
            Some(rate) => arrivals(plan, rate),
            None => Vec::new(),
        };
        Shared {
            start,
            measure_from: start + plan.warmup,
            measuring: OnceLock::new(),
            planned: plan.requests.is_none().then_some(plan.duration),
            schedule,
            next_arrival: AtomicU64::new(0),
            issued: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// When the measured window started (or is planned to start); progress uses it.
    pub fn measure_from(&self) -> Instant {
        self.measuring.get().copied().unwrap_or(self.measure_from)
    }

    /// The measured window's planned length (`None` with `--requests`).
    pub fn planned(&self) -> Option<Duration> {
        self.planned
    }

    /// When the next request of a stream is due, or `None` when the level is over; the request
    /// then counts as in flight until the stream answers `answered`. Nothing is sent before the
    /// start, and no measured request before the gate opens.
    async fn next_due(&self, plan: &Plan, open_loop: bool) -> Option<Instant> {
        loop {
            let mut due = if open_loop {
                let slot = self.next_arrival.fetch_add(1, Ordering::Relaxed) as usize;
                self.start + *self.schedule.get(slot)?
            } else {
                Instant::now().max(self.start)
            };
            let wait = due.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                monoio::time::sleep(wait).await;
            }
            if due < self.measure_from {
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                if self.measuring.get().is_none() {
                    return Some(due);
                }
                // The gate opened meanwhile: a warm-up request now would be counted by the
                // server but not here. Skip it.
                self.answered();
                continue;
            }
            let measuring = loop {
                match self.measuring.get() {
                    Some(at) => break *at,
                    None => monoio::time::sleep(Duration::from_millis(1)).await,
                }
            };
            if !open_loop {
                due = Instant::now();
            }
            let ended = self.planned.is_some_and(|d| due >= measuring + d);
            if ended || self.stopped.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(limit) = plan.requests {
                if self.issued.fetch_add(1, Ordering::Relaxed) >= limit {
                    self.stopped.store(true, Ordering::Relaxed);
                    return None;
                }
            }
            self.in_flight.fetch_add(1, Ordering::SeqCst);
            return Some(due);
        }
    }

    fn answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether request `due` is measured.
    fn counts(&self, due: Instant) -> bool {
        self.measuring.get().is_some_and(|at| due >= *at)
    }
}

/// Arrival offsets for the whole level (warm-up included).
fn arrivals(plan: &Plan, rate: f64) -> Vec<Duration> {
    let seconds = match plan.requests {
        Some(n) => plan.warmup.as_secs_f64() + n as f64 / rate * 1.5 + 1.0,
        None => (plan.warmup + plan.duration).as_secs_f64(),
    };
    let count = (seconds * rate).ceil() as usize + 1;
    let mut rng = SplitMix(plan.seed);
    let mut at = 0.0f64;
    (0..count)
        .map(|_| {
            at += match plan.arrival {
                Arrival::Constant => 1.0 / rate,
                Arrival::Poisson => -rng.unit().ln() / rate,
            };
            Duration::from_secs_f64(at)
        })
        .collect()
}

/// Runs one level; `watch` is called on this thread while the load runs (progress, server
/// statistics) with the shared counters.
pub fn run_level(
    plan: &Arc<Plan>,
    level: Level,
    at_measure_start: impl FnOnce(),
    watch: impl FnMut(&Shared),
) -> Measured {
    let shared = Arc::new(Shared::new(plan, level));
    let threads = plan.threads.clamp(1, level.concurrency.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let streams: Vec<usize> = (t..level.concurrency).step_by(threads).collect();
            let (plan, shared) = (plan.clone(), shared.clone());
            std::thread::spawn(move || {
                let runtime = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build();
                let mut measured = Measured::new();
                match runtime {
                    Ok(mut rt) => rt.block_on(async {
                        let tasks: Vec<_> = streams
                            .into_iter()
                            .map(|s| monoio::spawn(stream(plan.clone(), shared.clone(), level, s)))
                            .collect();
                        for task in tasks {
                            measured.merge(task.await);
                        }
                    }),
                    Err(e) => measured.error(format!("cannot start a runtime: {e}")),
                }
                measured
            })
        })
        .collect();
    let mut watch = watch;
    let mut at_measure_start = Some(at_measure_start);
    while !handles.iter().all(|h| h.is_finished()) {
        watch(&shared);
        // The gate: once the warm-up is over and its last answer is in, the server's counters
        // are read and measured requests may go.
        let now = Instant::now();
        if now >= shared.measure_from && shared.in_flight.load(Ordering::SeqCst) == 0 {
            if let Some(read_counters) = at_measure_start.take() {
                read_counters();
                let _ = shared.measuring.set(Instant::now());
            }
        }
        let tick = match shared.measuring.get() {
            Some(_) => Duration::from_millis(100),
            None => shared
                .measure_from
                .saturating_duration_since(now)
                .clamp(Duration::from_micros(200), Duration::from_millis(100)),
        };
        std::thread::sleep(tick);
    }
    let mut total = Measured::new();
    for handle in handles {
        match handle.join() {
            Ok(measured) => total.merge(measured),
            Err(_) => total.error("a load thread panicked".into()),
        }
    }
    total
}

/// One keep-alive stream: send, check, record, repeat; reconnects after an error.
async fn stream(plan: Arc<Plan>, shared: Arc<Shared>, level: Level, index: usize) -> Measured {
    let mut measured = Measured::new();
    let mut connection: Option<Link> = None;
    let mut checked = vec![false; plan.variants.len()];
    let mut turn = index;
    let mut last_answer = shared.measure_from;
    // In a sequence: each variant as its sequence's first request, and as a later one.
    let sequenced: Option<Vec<[bytes::Bytes; 2]>> = plan.sequence_length.map(|_| {
        let id = index as u64 + 1;
        (plan.variants.iter())
            .map(|v| [true, false].map(|start| (plan.encode)(&v.inputs, Some((id, start)))))
            .collect()
    });
    let mut sent = 0u64;
    while let Some(due) = shared.next_due(&plan, level.rate.is_some()).await {
        let slot = turn % plan.variants.len();
        let variant = &plan.variants[slot];
        turn += 1;
        let request = match (&sequenced, plan.sequence_length) {
            (Some(pairs), Some(length)) => {
                pairs[slot][usize::from(!sent.is_multiple_of(length.max(1)))].clone()
            }
            _ => variant.request.clone(),
        };
        sent += 1;
        let result = match connection.as_mut() {
            Some(c) => c.exchange(request).await,
            None => match Link::open(&plan.target, plan.grpc).await {
                Ok(c) => connection.insert(c).exchange(request).await,
                Err(e) => Err(e),
            },
        };
        let result = result.and_then(|reply| {
            plan.checker.check(&reply, variant, !checked[slot])?;
            checked[slot] = true;
            Ok(reply.size)
        });
        shared.answered();
        let now = Instant::now();
        let counted = shared.counts(due);
        match result {
            Ok(body) => {
                shared.done.fetch_add(1, Ordering::Relaxed);
                if counted {
                    measured.ok += 1;
                    let micros = now.duration_since(due).as_micros() as u64;
                    measured.latency.saturating_record(micros.max(1));
                    measured.sent_bytes += variant.request.len() as u64;
                    measured.received_bytes += body as u64;
                }
            }
            Err(e) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                if counted {
                    measured.error(e);
                }
                connection = None;
                // A server that refuses connections must not turn this into a busy loop.
                monoio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if counted {
            last_answer = now;
        }
    }
    measured.elapsed = last_answer.saturating_duration_since(shared.measure_from());
    measured
}

/// A stream's connection: HTTP/1.1 keep-alive, or HTTP/2 for gRPC.
enum Link {
    Http(Connection),
    Grpc(GrpcConnection),
}

impl Link {
    async fn open(target: &Target, grpc: bool) -> Result<Link, String> {
        Ok(match grpc {
            true => Link::Grpc(GrpcConnection::open(target).await?),
            false => Link::Http(Connection::open(target).await?),
        })
    }

    async fn exchange(&mut self, request: bytes::Bytes) -> Result<Reply, String> {
        match self {
            Link::Http(c) => c.exchange(request).await,
            Link::Grpc(c) => c.exchange(request).await,
        }
    }
}
