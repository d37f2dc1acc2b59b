//! Results: one record per level, printed as a table, JSON or CSV, and read back for plots.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::runner::{Level, Measured};

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    /// The series name in plots.
    pub label: String,
    pub url: String,
    pub model: String,
    pub binary: bool,
    pub batch_size: u64,
    pub results: Vec<LevelResult>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct LevelResult {
    pub concurrency: usize,
    /// Open loop: the offered rate; `null` for closed loop.
    pub request_rate: Option<f64>,
    pub requests: u64,
    pub errors: u64,
    pub duration_s: f64,
    pub throughput_rps: f64,
    pub sent_bytes_per_s: f64,
    pub received_bytes_per_s: f64,
    pub latency_us: Latency,
    /// The server's own account (its statistics extension), when it has one.
    pub server: Option<ServerSide>,
    pub first_errors: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

/// Average microseconds per request, from `/v2/models/{m}/stats` before and after the level.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ServerSide {
    pub requests: u64,
    pub queue_us: f64,
    pub compute_input_us: f64,
    pub compute_infer_us: f64,
    pub compute_output_us: f64,
}

impl LevelResult {
    pub fn new(level: Level, m: &Measured, server: Option<ServerSide>) -> LevelResult {
        let seconds = m.elapsed.as_secs_f64().max(1e-9);
        let q = |p: f64| m.latency.value_at_quantile(p);
        LevelResult {
            concurrency: level.concurrency,
            request_rate: level.rate,
            requests: m.ok,
            errors: m.errors,
            duration_s: seconds,
            throughput_rps: m.ok as f64 / seconds,
            sent_bytes_per_s: m.sent_bytes as f64 / seconds,
            received_bytes_per_s: m.received_bytes as f64 / seconds,
            latency_us: Latency {
                p50: q(0.50),
                p90: q(0.90),
                p95: q(0.95),
                p99: q(0.99),
                max: m.latency.max(),
                mean: m.latency.mean(),
            },
            server,
            first_errors: m.first_errors.clone(),
        }
    }
}

/// The statistics extension's cumulative counters for one model: (name, count, ns) of
/// success, queue and the compute phases.
pub fn server_counters(stats: &Value) -> Option<[(u64, u64); 5]> {
    let inference = &stats["model_stats"].as_array()?.first()?["inference_stats"];
    let pair = |key: &str| {
        let s = &inference[key];
        Some((s["count"].as_u64()?, s["ns"].as_u64()?))
    };
    Some([
        pair("success")?,
        pair("queue")?,
        pair("compute_input")?,
        pair("compute_infer")?,
        pair("compute_output")?,
    ])
}

pub fn server_side(before: [(u64, u64); 5], after: [(u64, u64); 5]) -> ServerSide {
    let requests = after[0].0.saturating_sub(before[0].0);
    let per = |i: usize| {
        let (count, ns) = (
            after[i].0.saturating_sub(before[i].0),
            after[i].1.saturating_sub(before[i].1),
        );
        if count == 0 {
            0.0
        } else {
            ns as f64 / count as f64 / 1000.0
        }
    };
    ServerSide {
        requests,
        queue_us: per(1),
        compute_input_us: per(2),
        compute_infer_us: per(3),
        compute_output_us: per(4),
    }
}

fn rate(r: &LevelResult) -> String {
    r.request_rate.map_or("closed".into(), |r| format!("{r}/s"))
}

/// A human-readable table.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "{} — model {} at {} ({} tensors, batch {})\n",
        report.label,
        report.model,
        report.url,
        if report.binary { "binary" } else { "JSON" },
        report.batch_size
    );
    out.push_str(
        "concurrency  arrivals   requests  errors      req/s     MB/s  p50 µs  p90 µs  p95 µs  \
         p99 µs  max µs  server queue/compute µs\n",
    );
    for r in &report.results {
        let l = &r.latency_us;
        let server = r.server.as_ref().map_or("-".into(), |s| {
            format!("{:.0}/{:.0}", s.queue_us, s.compute_infer_us)
        });
        out.push_str(&format!(
            "{:>11}  {:>8}  {:>9}  {:>6}  {:>9.0}  {:>7.1}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}  {}\n",
            r.concurrency,
            rate(r),
            r.requests,
            r.errors,
            r.throughput_rps,
            (r.sent_bytes_per_s + r.received_bytes_per_s) / 1e6,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.max,
            server
        ));
    }
    out
}

pub fn csv(report: &Report) -> String {
    let mut out = String::from(
        "label,model,binary,batch_size,concurrency,request_rate,requests,errors,duration_s,\
         throughput_rps,sent_bytes_per_s,received_bytes_per_s,p50_us,p90_us,p95_us,p99_us,\
         max_us,mean_us,server_queue_us,server_compute_infer_us\n",
    );
    for r in &report.results {
        let l = &r.latency_us;
        let (queue, compute) = r
            .server
            .as_ref()
            .map_or((String::new(), String::new()), |s| {
                (
                    format!("{:.1}", s.queue_us),
                    format!("{:.1}", s.compute_infer_us),
                )
            });
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.3},{:.1},{:.0},{:.0},{},{},{},{},{},{:.1},{},{}\n",
            report.label.replace(',', ";"),
            report.model,
            report.binary,
            report.batch_size,
            r.concurrency,
            r.request_rate.map_or(String::new(), |r| r.to_string()),
            r.requests,
            r.errors,
            r.duration_s,
            r.throughput_rps,
            r.sent_bytes_per_s,
            r.received_bytes_per_s,
            l.p50,
            l.p90,
            l.p95,
            l.p99,
            l.max,
            l.mean,
            queue,
            compute
        ));
    }
    out
}
