//! Server-wide metrics that are not a model's: per-core connection and request counters (each
//! io thread writes only its own, cache-line-padded slot) and latency histograms. Rendered in
//! Prometheus text format with the models' statistics by the protocol layer.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// One io thread's counters, alone on its cache line.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct CoreCounters {
    pub accepted: AtomicU64,
    pub open: AtomicI64,
    /// HTTP requests answered.
    pub requests: AtomicU64,
    /// gRPC request messages answered (a unary call is one; a stream, one per message).
    pub grpc_requests: AtomicU64,
}

#[derive(Debug)]
pub struct ServerMetrics {
    pub cores: Vec<CoreCounters>,
}

impl ServerMetrics {
    pub fn new(cores: usize) -> ServerMetrics {
        ServerMetrics {
            cores: (0..cores).map(|_| CoreCounters::default()).collect(),
        }
    }

    /// HTTP and gRPC requests answered by all cores.
    pub fn requests(&self) -> u64 {
        self.cores
            .iter()
            .map(|c| c.requests.load(Ordering::Relaxed) + c.grpc_requests.load(Ordering::Relaxed))
            .sum()
    }
}

/// A cumulative histogram with fixed upper bounds; lock-free (relaxed atomics).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
    count: AtomicU64,
    /// The unit `sum` is kept in, per 1.0 of an observed value (1e6: microseconds of seconds).
    scale: f64,
}

/// Latency bounds in seconds, 100 µs to 10 s.
pub const LATENCY_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Message size bounds in bytes: 64 B to 1 GiB by fours.
pub const BYTE_SIZES: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
];

/// Batch size bounds.
pub const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

impl Histogram {
    pub fn latency() -> Histogram {
        Histogram::new(LATENCY_SECONDS, 1e6)
    }

    pub fn byte_sizes() -> Histogram {
        Histogram::new(BYTE_SIZES, 1.0)
    }

    pub fn batch_sizes() -> Histogram {
        Histogram::new(BATCH_SIZES, 1.0)
    }

    fn new(bounds: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
            scale,
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum
            .fetch_add((value * self.scale) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Appends `name_bucket{labels,le=...}`, `name_sum` and `name_count` lines.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write;
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::latency();
        h.observe_duration(Duration::from_micros(50));
        h.observe_duration(Duration::from_millis(3));
        h.observe_duration(Duration::from_secs(20));
        let mut out = String::new();
        h.render(&mut out, "x", "m=\"a\"");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{m=\"a\",le=\"0.005\"} 2\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"10\"} 2\n"));
        assert!(out.contains("x_bucket{m=\"a\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count{m=\"a\"} 3\n"));
    }
}
