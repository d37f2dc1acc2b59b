//! Server metadata, model metadata, model configuration and repository index documents.

use serde_json::{json, Value};

use crate::doors::describe::{config_data_type, config_dims, metadata_datatype, metadata_shape};
use crate::doors::EXTENSIONS;
use crate::engine::batching::{Counter, ModelStats};
use crate::engine::{IndexEntry, LoadedVersion, ServedModel};
use crate::models::{TensorSpec, VersionPolicy};

pub fn server_metadata() -> Value {
    json!({
        "name": "tensord",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    })
}

/// Model metadata of `loaded` (the version asked for, or the default one); a model that is not
/// ready says why in `state`/`reason`.
pub fn model_metadata(
    model: &ServedModel,
    asked: Option<&str>,
    loaded: Option<&LoadedVersion>,
) -> Value {
    let (inputs, outputs) = loaded.map_or((&[][..], &[][..]), |l| (&l.inputs[..], &l.outputs[..]));
    let mut doc = json!({
        "name": model.name,
        "versions": model.listed_versions(asked),
        "platform": model.config.triton_platform().0,
        "inputs": inputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        "outputs": outputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
    });
    if let Some(reason) = model.reason() {
        doc["state"] = json!("UNAVAILABLE");
        doc["reason"] = json!(reason);
    }
    doc
}

fn tensor_metadata(spec: &TensorSpec) -> Value {
    json!({
        "name": spec.name,
        "datatype": metadata_datatype(spec),
        "shape": metadata_shape(spec),
    })
}

/// The model configuration in Triton's JSON shape, so Triton tools can read it: dims without
/// the batch dimension when the model batches, `TYPE_` datatypes, instance groups.
pub fn model_config(model: &ServedModel, loaded: Option<&LoadedVersion>) -> Value {
    let config = &model.config;
    let batching = config.max_batch_size > 0;
    let tensors = |specs: &[TensorSpec]| -> Vec<Value> {
        specs
            .iter()
            .map(|spec| {
                let mut doc = json!({
                    "name": spec.name,
                    "data_type": config_data_type(spec),
                    "dims": config_dims(spec, batching),
                });
                if let Some(file) = &spec.label_filename {
                    doc["label_filename"] = json!(file);
                }
                if let Some(shape) = &spec.reshape {
                    doc["reshape"] = json!({ "shape": shape });
                }
                doc
            })
            .collect()
    };
    let (inputs, outputs) = loaded.map_or((vec![], vec![]), |l| {
        (tensors(&l.inputs), tensors(&l.outputs))
    });
    let instance_group = match config.device() {
        Ok(crate::models::DeviceChoice::Cuda(gpu)) => {
            json!([{ "count": config.instance_count, "kind": "KIND_GPU", "gpus": [gpu] }])
        }
        _ => json!([{ "count": config.instance_count, "kind": "KIND_CPU" }]),
    };
    let version_policy = match &config.version_policy {
        VersionPolicy::Latest(n) => json!({ "latest": { "num_versions": n } }),
        VersionPolicy::All(_) => json!({ "all": {} }),
        VersionPolicy::Specific(v) => json!({ "specific": { "versions": v } }),
    };
    let mut doc = json!({
        "name": model.name,
        "platform": config.triton_platform().0,
        "backend": config.triton_platform().1,
        "max_batch_size": config.max_batch_size,
        "input": inputs,
        "output": outputs,
        "instance_group": instance_group,
        "version_policy": version_policy,
    });
    if let Some(file) = &config.default_model_filename {
        doc["default_model_filename"] = json!(file);
    }
    if let Some(batching) = &config.dynamic_batching {
        // Triton's fields, with the values of what tensord implements: one FIFO queue whose
        // size may be capped, per-request timeouts, no priorities.
        doc["dynamic_batching"] = json!({
            "preferred_batch_size": batching.preferred_batch_size,
            "max_queue_delay_microseconds": batching.max_queue_delay_microseconds,
            "preserve_ordering": false,
            "priority_levels": 0,
            "default_priority_level": 0,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": 0,
                "allow_timeout_override": true,
                "max_queue_size": config.max_queue_size,
            },
        });
    }
    doc
}

/// The repository index in Triton's shape: name, version, state, reason.
pub fn repository_index(entries: &[IndexEntry], ready_only: bool) -> Value {
    let rows: Vec<Value> = entries
        .iter()
        .filter(|e| e.ready || !ready_only)
        .map(|e| {
            let mut row = json!({
                "name": e.name,
                "state": if e.ready { "READY" } else { "UNAVAILABLE" },
            });
            if let Some(v) = e.version {
                row["version"] = json!(v.to_string());
            }
            if let Some(reason) = &e.reason {
                row["reason"] = json!(reason);
            }
            row
        })
        .collect();
    Value::Array(rows)
}

fn duration(counter: &Counter) -> Value {
    let (count, ns) = counter.get();
    json!({ "count": count, "ns": ns })
}

fn phase(count: u64, d: std::time::Duration) -> Value {
    json!({ "count": count, "ns": d.as_nanos() as u64 })
}

/// `{"model_stats": [...]}` in the statistics extension's shape (Triton's), one entry per
/// (model, version).
pub fn model_statistics(entries: &[(&str, u64, &ModelStats)]) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let stats: Vec<Value> = entries
        .iter()
        .map(|&(name, version, s)| {
            let batches: Vec<Value> = s
                .batch_stats()
                .into_iter()
                .map(|(size, n, p)| {
                    json!({
                        "batch_size": size,
                        "compute_input": phase(n, p.input),
                        "compute_infer": phase(n, p.infer),
                        "compute_output": phase(n, p.output),
                    })
                })
                .collect();
            json!({
                "name": name,
                "version": version.to_string(),
                "last_inference": s.last_inference_ms.load(Relaxed),
                "inference_count": s.inference_count.load(Relaxed),
                "execution_count": s.execution_count.load(Relaxed),
                "inference_stats": {
                    "success": duration(&s.success),
                    "fail": duration(&s.fail),
                    "queue": duration(&s.queue),
                    "compute_input": duration(&s.compute_input),
                    "compute_infer": duration(&s.compute_infer),
                    "compute_output": duration(&s.compute_output),
                    "cache_hit": { "count": 0, "ns": 0 },
                    "cache_miss": { "count": 0, "ns": 0 },
                },
                "batch_stats": batches,
            })
        })
        .collect();
    json!({ "model_stats": stats })
}
