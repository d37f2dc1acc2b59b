//! Per-model statistics in the shape of Triton's statistics extension, plus histograms for
//! /metrics. Everything is relaxed atomics: recording takes no lock (except for batch sizes
//! over 256, which only workers see).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::engine::ErrorKind;
use crate::metrics::Histogram;

/// A count of events and their cumulative duration.
#[derive(Default, Debug)]
pub struct Counter {
    count: AtomicU64,
    ns: AtomicU64,
}

impl Counter {
    pub fn add(&self, times: u64, each: Duration) {
        self.count.fetch_add(times, Ordering::Relaxed);
        self.ns.fetch_add(
            times.saturating_mul(each.as_nanos() as u64),
            Ordering::Relaxed,
        );
    }

    /// (count, ns)
    pub fn get(&self) -> (u64, u64) {
        (
            self.count.load(Ordering::Relaxed),
            self.ns.load(Ordering::Relaxed),
        )
    }
}

/// The three compute phases of one execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    pub input: Duration,
    pub infer: Duration,
    pub output: Duration,
}

#[derive(Debug)]
pub struct ModelStats {
    pub success: Counter,
    pub fail: Counter,
    pub queue: Counter,
    pub compute_input: Counter,
    pub compute_infer: Counter,
    pub compute_output: Counter,
    /// Rows (batch dimension) of successful requests.
    pub inference_count: AtomicU64,
    /// Model executions (batches).
    pub execution_count: AtomicU64,
    /// Milliseconds since the epoch of the last successful request.
    pub last_inference_ms: AtomicU64,
    /// Failed requests by the engine's error kind (indexed by `ErrorKind as usize`).
    pub failures: [AtomicU64; ErrorKind::ALL.len()],
    /// Latency histograms: whole requests, time queued, model execution; and batch sizes.
    pub request_latency: Histogram,
    pub queue_latency: Histogram,
    pub compute_latency: Histogram,
    pub batch_size: Histogram,
    /// Request bodies and (successful) response bodies, in bytes.
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
    /// Per executed batch size up to 256, lock-free: executions and summed phases in ns.
    small_batches: Vec<[AtomicU64; 4]>,
    /// Larger batch sizes (rare), under a lock.
    large_batches: Mutex<BTreeMap<u64, (u64, Phases)>>,
}

const SMALL_BATCH_LIMIT: u64 = 256;

impl Default for ModelStats {
    fn default() -> ModelStats {
        ModelStats {
            success: Counter::default(),
            fail: Counter::default(),
            queue: Counter::default(),
            compute_input: Counter::default(),
            compute_infer: Counter::default(),
            compute_output: Counter::default(),
            inference_count: AtomicU64::new(0),
            execution_count: AtomicU64::new(0),
            last_inference_ms: AtomicU64::new(0),
            failures: Default::default(),
            request_latency: Histogram::latency(),
            queue_latency: Histogram::latency(),
            compute_latency: Histogram::latency(),
            batch_size: Histogram::batch_sizes(),
            request_bytes: Histogram::byte_sizes(),
            response_bytes: Histogram::byte_sizes(),
            small_batches: (0..=SMALL_BATCH_LIMIT)
                .map(|_| Default::default())
                .collect(),
            large_batches: Mutex::default(),
        }
    }
}

impl ModelStats {
    /// One execution of `requests` requests with `rows` rows in all; each request is charged the
    /// whole execution's phases, as Triton does.
    pub fn record_execution(&self, rows: u64, requests: u64, phases: Phases) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.compute_input.add(requests, phases.input);
        self.compute_infer.add(requests, phases.infer);
        self.compute_output.add(requests, phases.output);
        self.compute_latency.observe_duration(phases.infer);
        self.batch_size.observe(rows as f64);
        if let Some(slot) = self.small_batches.get(rows as usize) {
            let ns = |d: Duration| d.as_nanos() as u64;
            for (counter, add) in
                slot.iter()
                    .zip([1, ns(phases.input), ns(phases.infer), ns(phases.output)])
            {
                counter.fetch_add(add, Ordering::Relaxed);
            }
            return;
        }
        let mut batches = self.large_batches.lock().unwrap_or_else(|e| e.into_inner());
        let entry = batches.entry(rows).or_default();
        entry.0 += 1;
        entry.1.input += phases.input;
        entry.1.infer += phases.infer;
        entry.1.output += phases.output;
    }

    pub fn record_queued(&self, waited: Duration) {
        self.queue.add(1, waited);
        self.queue_latency.observe_duration(waited);
    }

    pub fn record_success(&self, rows: u64, took: Duration) {
        self.success.add(1, took);
        self.request_latency.observe_duration(took);
        self.inference_count.fetch_add(rows, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_inference_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn record_failure(&self, took: Duration, kind: ErrorKind) {
        self.fail.add(1, took);
        self.request_latency.observe_duration(took);
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Executions per batch size: (batch size, executions, summed phases), ascending.
    pub fn batch_stats(&self) -> Vec<(u64, u64, Phases)> {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut stats: Vec<(u64, u64, Phases)> = self
            .small_batches
            .iter()
            .enumerate()
            .filter(|(_, slot)| load(&slot[0]) > 0)
            .map(|(size, slot)| {
                let phases = Phases {
                    input: Duration::from_nanos(load(&slot[1])),
                    infer: Duration::from_nanos(load(&slot[2])),
                    output: Duration::from_nanos(load(&slot[3])),
                };
                (size as u64, load(&slot[0]), phases)
            })
            .collect();
        let large = self.large_batches.lock().unwrap_or_else(|e| e.into_inner());
        stats.extend(large.iter().map(|(&size, &(n, phases))| (size, n, phases)));
        stats
    }
}
