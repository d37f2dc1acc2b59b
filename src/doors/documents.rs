//! The documents that describe the server and its models (metadata, configuration,
//! statistics, repository index), built once as the protocol's protobuf messages. The gRPC door
//! sends them as they are; the REST door writes them in protobuf's JSON mapping, as Triton does.

use std::sync::atomic::Ordering::Relaxed;

use super::describe::{config_data_type, config_dims, metadata_datatype, metadata_shape};
use super::EXTENSIONS;
use crate::engine::batching::{Counter, ModelStats};
use crate::engine::{Engine, Error};
use crate::models::{
    DeviceChoice, ExecutionMode, ModelConfig, OnnxRuntimeSettings, OptimizationLevel, TensorSpec,
    VersionPolicy,
};
use crate::proto::inference as pb;

pub fn server_metadata() -> pb::ServerMetadataResponse {
    pb::ServerMetadataResponse {
        name: "tensord".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
    }
}

/// The repository index: each model (and each version it serves) with its state, and why it
/// is not ready; only ready ones when `ready_only`.
pub fn repository_index(
    engine: &Engine,
    ready_only: bool,
) -> Result<pb::RepositoryIndexResponse, Error> {
    let entries = engine.index()?;
    let models = entries
        .into_iter()
        .filter(|e| e.ready || !ready_only)
        .map(|e| pb::repository_index_response::ModelIndex {
            name: e.name,
            version: e.version.map(|v| v.to_string()).unwrap_or_default(),
            state: if e.ready { "READY" } else { "UNAVAILABLE" }.into(),
            reason: e.reason.unwrap_or_default(),
        })
        .collect();
    Ok(pb::RepositoryIndexResponse { models })
}

/// Model metadata of the version named, or of the default one. A model without a ready
/// version is an error that says why, through every door.
pub fn model_metadata(
    engine: &Engine,
    name: &str,
    version: Option<&str>,
) -> Result<pb::ModelMetadataResponse, Error> {
    let model = engine.model(name)?;
    let (_, loaded) = model.version(version)?;
    let tensors = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|spec| pb::model_metadata_response::TensorMetadata {
                name: spec.name.clone(),
                datatype: metadata_datatype(spec).to_string(),
                shape: metadata_shape(spec),
            })
            .collect()
    };
    Ok(pb::ModelMetadataResponse {
        name: model.name.clone(),
        versions: model.listed_versions(version),
        platform: model.config.triton_platform().0.to_string(),
        inputs: tensors(&loaded.inputs),
        outputs: tensors(&loaded.outputs),
    })
}

/// The model configuration as Triton's message, with the fields tensord implements: dims
/// without the batch dimension when the model batches, `TYPE_` datatypes, instance groups.
/// The tensors are those of the version named, or of the default one (none when no version is
/// ready).
pub fn model_config(
    engine: &Engine,
    name: &str,
    version: Option<&str>,
) -> Result<pb::ModelConfig, Error> {
    let model = engine.model(name)?;
    let loaded = model.described_version(version)?;
    let config = &model.config;
    let batching = config.max_batch_size > 0;
    let dims = |spec: &TensorSpec| config_dims(spec, batching);
    let data_type = |spec: &TensorSpec| {
        pb::DataType::from_str_name(&config_data_type(spec)).unwrap_or(pb::DataType::TypeInvalid)
            as i32
    };
    let reshape = |spec: &TensorSpec| {
        spec.reshape
            .clone()
            .map(|shape| pb::ModelTensorReshape { shape })
    };
    let (inputs, outputs) = loaded.map_or((&[][..], &[][..]), |l| (&l.inputs[..], &l.outputs[..]));
    // A tensor of any datatype (the undeclared identity's) has no config entry: none is how a
    // config says "any", and how it loads back.
    let declared = |specs: &[TensorSpec]| -> Vec<TensorSpec> {
        specs
            .iter()
            .filter(|s| s.datatype.is_some())
            .cloned()
            .collect()
    };
    let (inputs, outputs) = (declared(inputs), declared(outputs));
    let (kind, gpus) = match config.device() {
        Ok(DeviceChoice::Cuda(gpu)) => (pb::model_instance_group::Kind::Gpu, vec![gpu as i32]),
        _ => (pb::model_instance_group::Kind::Cpu, Vec::new()),
    };
    use pb::model_version_policy::{All, Latest, PolicyChoice, Specific};
    let policy = match &config.version_policy {
        VersionPolicy::Latest(n) => PolicyChoice::Latest(Latest {
            num_versions: *n as u32,
        }),
        VersionPolicy::All(_) => PolicyChoice::All(All {}),
        VersionPolicy::Specific(v) => PolicyChoice::Specific(Specific {
            versions: v.iter().map(|&v| v as i64).collect(),
        }),
    };
    let scheduling = config.dynamic_batching.as_ref().map(|b| {
        pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
            preferred_batch_size: b.preferred_batch_size.iter().map(|&s| s as i32).collect(),
            max_queue_delay_microseconds: b.max_queue_delay_microseconds,
            default_queue_policy: Some(pb::ModelQueuePolicy {
                allow_timeout_override: true,
                max_queue_size: config.max_queue_size as u32,
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    // Triton writes the idle time it applies when the config leaves it out.
    let scheduling = scheduling.or_else(|| {
        let mut sequence = config.sequence_batching.as_ref()?.0.clone();
        if sequence.max_sequence_idle_microseconds == 0 {
            sequence.max_sequence_idle_microseconds = 1_000_000;
        }
        Some(pb::model_config::SchedulingChoice::SequenceBatching(
            sequence,
        ))
    });
    let scheduling = scheduling.or_else(|| {
        let steps = config.ensemble_scheduling.as_ref()?.0.clone();
        Some(pb::model_config::SchedulingChoice::EnsembleScheduling(
            steps,
        ))
    });
    let (platform, backend) = config.triton_platform();
    Ok(pb::ModelConfig {
        name: model.name.clone(),
        platform: platform.to_string(),
        backend: backend.to_string(),
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(policy),
        }),
        max_batch_size: config.max_batch_size as i32,
        input: inputs
            .iter()
            .map(|spec| pb::ModelInput {
                name: spec.name.clone(),
                data_type: data_type(spec),
                format: format(spec) as i32,
                dims: dims(spec),
                reshape: reshape(spec),
                ..Default::default()
            })
            .collect(),
        output: outputs
            .iter()
            .map(|spec| pb::ModelOutput {
                name: spec.name.clone(),
                data_type: data_type(spec),
                dims: dims(spec),
                reshape: reshape(spec),
                label_filename: spec.label_filename.clone().unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        // An ensemble has no instances of its own (Triton refuses a group on one).
        instance_group: (config.backend != "ensemble")
            .then(|| pb::ModelInstanceGroup {
                kind: kind as i32,
                count: config.instance_count as i32,
                gpus,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        default_model_filename: config.default_model_filename.clone().unwrap_or_default(),
        scheduling_choice: scheduling,
        parameters: parameters(config),
        optimization: config.onnxruntime.as_ref().and_then(optimization),
        ..Default::default()
    })
}

/// An input's layout as Triton's `format`.
fn format(spec: &TensorSpec) -> pb::model_input::Format {
    match spec.layout.as_deref() {
        Some("NHWC") => pb::model_input::Format::Nhwc,
        Some("NCHW") => pb::model_input::Format::Nchw,
        _ => pb::model_input::Format::None,
    }
}

/// The config's `parameters`: ONNX Runtime's session settings, and tensord's own settings that
/// Triton's message has no field for (as TOML under `tensord`).
fn parameters(config: &ModelConfig) -> std::collections::HashMap<String, pb::ModelParameter> {
    let mut parameters = (config.onnxruntime.as_ref())
        .map(onnxruntime_parameters)
        .unwrap_or_default();
    if let Some(string_value) = config.extensions().and_then(|e| toml::to_string(&e).ok()) {
        let key = crate::models::EXTENSIONS.to_string();
        parameters.insert(key, pb::ModelParameter { string_value });
    }
    parameters
}

/// ONNX Runtime's session settings as the onnxruntime backend's `parameters` in Triton.
fn onnxruntime_parameters(
    settings: &OnnxRuntimeSettings,
) -> std::collections::HashMap<String, pb::ModelParameter> {
    let mode = match settings.execution_mode {
        ExecutionMode::Sequential => None,
        ExecutionMode::Parallel => Some(1),
    };
    [
        ("intra_op_thread_count", settings.intra_op_threads),
        ("inter_op_thread_count", settings.inter_op_threads),
        ("execution_mode", mode),
    ]
    .into_iter()
    .filter_map(|(key, value)| {
        let string_value = value?.to_string();
        Some((key.to_string(), pb::ModelParameter { string_value }))
    })
    .collect()
}

/// ONNX Runtime's graph level and execution providers as Triton's `optimization`: levels -1
/// basic, 1 extended, 2 none (0, all, is the default); GPU providers and OpenVINO in their lists.
fn optimization(settings: &OnnxRuntimeSettings) -> Option<pb::ModelOptimizationPolicy> {
    use pb::model_optimization_policy::{execution_accelerators::Accelerator, *};
    let level = match settings.graph_optimization_level {
        OptimizationLevel::All => None,
        OptimizationLevel::Basic => Some(-1),
        OptimizationLevel::Extended => Some(1),
        OptimizationLevel::Disable => Some(2),
    };
    let accelerator = |name: &String| Accelerator {
        name: name.clone(),
        ..Default::default()
    };
    let (cpu, gpu): (Vec<&String>, Vec<&String>) =
        (settings.execution_accelerators.iter()).partition(|name| name.as_str() == "openvino");
    let accelerators =
        (!settings.execution_accelerators.is_empty()).then(|| ExecutionAccelerators {
            gpu_execution_accelerator: gpu.into_iter().map(accelerator).collect(),
            cpu_execution_accelerator: cpu.into_iter().map(accelerator).collect(),
        });
    (level.is_some() || accelerators.is_some()).then(|| pb::ModelOptimizationPolicy {
        graph: level.map(|level| Graph { level }),
        execution_accelerators: accelerators,
        ..Default::default()
    })
}

/// Statistics of one model's versions (one version when named), or of every model.
pub fn model_statistics(
    engine: &Engine,
    name: Option<&str>,
    version: Option<&str>,
) -> Result<pb::ModelStatisticsResponse, Error> {
    let models = engine.statistics(name, version)?;
    let model_stats = models
        .iter()
        .flat_map(|(model, versions)| {
            model
                .loaded()
                .filter(|(v, _)| versions.contains(v))
                .map(|(v, loaded)| statistics(&model.name, v, loaded.executor.stats()))
        })
        .collect();
    Ok(pb::ModelStatisticsResponse { model_stats })
}

fn statistics(name: &str, version: u64, s: &ModelStats) -> pb::ModelStatistics {
    let duration = |c: &Counter| {
        let (count, ns) = c.get();
        Some(pb::StatisticDuration { count, ns })
    };
    let phase = |count: u64, d: std::time::Duration| {
        Some(pb::StatisticDuration {
            count,
            ns: d.as_nanos() as u64,
        })
    };
    pb::ModelStatistics {
        name: name.to_string(),
        version: version.to_string(),
        last_inference: s.last_inference_ms.load(Relaxed),
        inference_count: s.inference_count.load(Relaxed),
        execution_count: s.execution_count.load(Relaxed),
        inference_stats: Some(pb::InferStatistics {
            success: duration(&s.success),
            fail: duration(&s.fail),
            queue: duration(&s.queue),
            compute_input: duration(&s.compute_input),
            compute_infer: duration(&s.compute_infer),
            compute_output: duration(&s.compute_output),
            cache_hit: Some(pb::StatisticDuration::default()),
            cache_miss: Some(pb::StatisticDuration::default()),
        }),
        batch_stats: s
            .batch_stats()
            .into_iter()
            .map(|(batch_size, n, p)| pb::InferBatchStatistics {
                batch_size,
                compute_input: phase(n, p.input),
                compute_infer: phase(n, p.infer),
                compute_output: phase(n, p.output),
            })
            .collect(),
        ..Default::default()
    }
}
