//! Per-model statistics in the shape of Triton's statistics extension. Request-level numbers are
//! counted by the io threads with relaxed atomics (no lock); batch-level ones by the workers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

#[derive(Default, Debug)]
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
    /// Per executed batch size: executions and their summed phases.
    batches: Mutex<BTreeMap<u64, (u64, Phases)>>,
}

impl ModelStats {
    /// One execution of `requests` requests with `rows` rows in all; each request is charged the
    /// whole execution's phases, as Triton does.
    pub fn record_execution(&self, rows: u64, requests: u64, phases: Phases) {
        self.execution_count.fetch_add(1, Ordering::Relaxed);
        self.compute_input.add(requests, phases.input);
        self.compute_infer.add(requests, phases.infer);
        self.compute_output.add(requests, phases.output);
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let entry = batches.entry(rows).or_default();
        entry.0 += 1;
        entry.1.input += phases.input;
        entry.1.infer += phases.infer;
        entry.1.output += phases.output;
    }

    pub fn record_success(&self, rows: u64, took: Duration) {
        self.success.add(1, took);
        self.inference_count.fetch_add(rows, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_inference_ms
            .store(now.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn record_failure(&self, took: Duration) {
        self.fail.add(1, took);
    }

    /// Executions per batch size: (batch size, executions, summed phases), ascending.
    pub fn batch_stats(&self) -> Vec<(u64, u64, Phases)> {
        let batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        batches
            .iter()
            .map(|(&size, &(n, phases))| (size, n, phases))
            .collect()
    }
}
