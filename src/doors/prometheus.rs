//! `GET /metrics`: Triton's nv_* counters per model version, tensord's histograms, and the
//! per-core connection counters, in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::engine::batching::Counter;
use crate::engine::{ErrorKind, ServedModel, SharedMemory};
use crate::metrics::ServerMetrics;
use crate::models::gpu::GpuMemory;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn micros(counter: &Counter) -> u64 {
    counter.get().1 / 1000
}

pub fn render(
    models: &[std::sync::Arc<ServedModel>],
    shared_memory: &SharedMemory,
    server: &ServerMetrics,
) -> String {
    let mut out = String::with_capacity(4096);
    // (labels, stats, pending) for every loaded version.
    let versions: Vec<_> = models
        .iter()
        .flat_map(|m| {
            m.loaded().map(move |(version, loaded)| {
                let name = label_value(&m.name);
                let labels = format!("model=\"{name}\",version=\"{version}\"");
                (labels, loaded.executor.stats(), loaded.executor.pending())
            })
        })
        .collect();
    type Value = fn(&crate::engine::batching::ModelStats) -> u64;
    let counters: [(&str, &str, Value); 8] = [
        (
            "nv_inference_request_success",
            "Successful inference requests",
            |s| s.success.get().0,
        ),
        (
            "nv_inference_count",
            "Inferences performed (a batch of n counts n)",
            |s| s.inference_count.load(Relaxed),
        ),
        (
            "nv_inference_exec_count",
            "Model executions (batches)",
            |s| s.execution_count.load(Relaxed),
        ),
        (
            "nv_inference_request_duration_us",
            "Cumulative request duration, microseconds",
            |s| micros(&s.success) + micros(&s.fail),
        ),
        (
            "nv_inference_queue_duration_us",
            "Cumulative time requests waited in the queue, microseconds",
            |s| micros(&s.queue),
        ),
        (
            "nv_inference_compute_input_duration_us",
            "Cumulative input gathering time, microseconds",
            |s| micros(&s.compute_input),
        ),
        (
            "nv_inference_compute_infer_duration_us",
            "Cumulative model execution time, microseconds",
            |s| micros(&s.compute_infer),
        ),
        (
            "nv_inference_compute_output_duration_us",
            "Cumulative output scattering time, microseconds",
            |s| micros(&s.compute_output),
        ),
    ];
    for (name, help, value) in counters {
        family(&mut out, name, "counter", help);
        for (labels, stats, _) in &versions {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(stats));
        }
    }
    family(
        &mut out,
        "nv_inference_request_failure",
        "counter",
        "Failed inference requests by reason",
    );
    for (labels, stats, _) in &versions {
        for label in ["REJECTED", "BACKEND", "OTHER"] {
            let n: u64 = ErrorKind::ALL
                .iter()
                .filter(|&&kind| triton_reason(kind) == label)
                .map(|&kind| stats.failures[kind as usize].load(Relaxed))
                .sum();
            let _ = writeln!(
                out,
                "nv_inference_request_failure{{{labels},reason=\"{label}\"}} {n}"
            );
        }
    }
    family(
        &mut out,
        "nv_inference_pending_request_count",
        "gauge",
        "Requests waiting in the model's queue",
    );
    for (labels, _, pending) in &versions {
        let _ = writeln!(
            out,
            "nv_inference_pending_request_count{{{labels}}} {pending}"
        );
    }
    type Hist = fn(&crate::engine::batching::ModelStats) -> &crate::metrics::Histogram;
    let histograms: [(&str, &str, Hist); 6] = [
        (
            "tensord_request_duration_seconds",
            "Request latency, from decoded request to response",
            |s| &s.request_latency,
        ),
        (
            "tensord_queue_duration_seconds",
            "Time requests waited in the model's queue",
            |s| &s.queue_latency,
        ),
        (
            "tensord_compute_duration_seconds",
            "Model execution time per batch",
            |s| &s.compute_latency,
        ),
        ("tensord_batch_size", "Rows per model execution", |s| {
            &s.batch_size
        }),
        (
            "tensord_request_bytes",
            "Inference request body sizes, bytes",
            |s| &s.request_bytes,
        ),
        (
            "tensord_response_bytes",
            "Successful inference response body sizes, bytes",
            |s| &s.response_bytes,
        ),
    ];
    for (name, help, histogram) in histograms {
        family(&mut out, name, "histogram", help);
        for (labels, stats, _) in &versions {
            histogram(stats).render(&mut out, name, labels);
        }
    }
    type Core = fn(&crate::metrics::CoreCounters) -> i64;
    let cores: [(&str, &str, &str, Core); 2] = [
        (
            "tensord_connections_accepted",
            "counter",
            "Connections accepted by each io thread (HTTP and gRPC)",
            |c| c.accepted.load(Relaxed) as i64,
        ),
        (
            "tensord_connections_open",
            "gauge",
            "Connections open on each io thread (HTTP and gRPC)",
            |c| c.open.load(Relaxed),
        ),
    ];
    for (name, kind, help, value) in cores {
        family(&mut out, name, kind, help);
        for (i, core) in server.cores.iter().enumerate() {
            let _ = writeln!(out, "{name}{{core=\"{i}\"}} {}", value(core));
        }
    }
    family(
        &mut out,
        "tensord_requests",
        "counter",
        "Requests answered by each io thread, by protocol (a gRPC stream counts each message)",
    );
    for (i, core) in server.cores.iter().enumerate() {
        for (protocol, count) in [("http", &core.requests), ("grpc", &core.grpc_requests)] {
            let n = count.load(Relaxed);
            let _ = writeln!(
                out,
                "tensord_requests{{core=\"{i}\",protocol=\"{protocol}\"}} {n}"
            );
        }
    }
    let (regions, bytes) = shared_memory.usage();
    for (name, help, value) in [
        (
            "tensord_shm_regions",
            "System shared-memory regions registered",
            regions as u64,
        ),
        (
            "tensord_shm_mapped_bytes",
            "Bytes of clients' shared-memory objects mapped",
            bytes,
        ),
    ] {
        family(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    gpu_memory(&mut out, &crate::models::gpu::memory());
    out
}

/// Triton's GPU memory gauges, for the devices models opened (none: no families).
fn gpu_memory(out: &mut String, gpus: &[GpuMemory]) {
    if gpus.is_empty() {
        return;
    }
    type Bytes = fn(&GpuMemory) -> u64;
    let gauges: [(&str, &str, Bytes); 2] = [
        (
            "nv_gpu_memory_total_bytes",
            "GPU total memory, in bytes",
            |g| g.total_bytes,
        ),
        (
            "nv_gpu_memory_used_bytes",
            "GPU used memory (by every process on the device), in bytes",
            |g| g.used_bytes,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        for gpu in gpus {
            let _ = writeln!(out, "{name}{{gpu_uuid=\"{}\"}} {}", gpu.uuid, value(gpu));
        }
    }
}

/// A label value as the text format requires: backslash, double quote and newline escaped
/// (a model name is a client's or a folder's, and must not inject samples or break the scrape).
fn label_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Triton's failure reason for an error kind: refused or expired before running, the model
/// failed, or anything else (a bad request).
fn triton_reason(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotReady | ErrorKind::Overloaded | ErrorKind::TimedOut => "REJECTED",
        ErrorKind::Internal => "BACKEND",
        ErrorKind::Invalid
        | ErrorKind::NotFound
        | ErrorKind::Unsupported
        | ErrorKind::AlreadyExists => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_as_the_text_format_says() {
        assert_eq!(label_value("plain"), "plain");
        assert_eq!(label_value("a\\b\"c\nd\\"), "a\\\\b\\\"c\\nd\\\\");
    }

    #[test]
    fn gpu_memory_is_written_as_triton_writes_it() {
        let mut out = String::new();
        gpu_memory(&mut out, &[]);
        assert_eq!(out, "", "no GPU opened: no families");
        let gpu = GpuMemory {
            uuid: "GPU-c06bbf33-c250-ca45-579b-19134b518844".into(),
            total_bytes: 42949672960,
            used_bytes: 33763098624,
        };
        gpu_memory(&mut out, &[gpu]);
        let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "nv_gpu_memory_total_bytes{gpu_uuid=\"GPU-c06bbf33-c250-ca45-579b-19134b518844\"} 42949672960",
                "nv_gpu_memory_used_bytes{gpu_uuid=\"GPU-c06bbf33-c250-ca45-579b-19134b518844\"} 33763098624",
            ]
        );
        assert!(out.contains("# TYPE nv_gpu_memory_used_bytes gauge"));
    }
}
