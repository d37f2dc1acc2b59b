//! ModelMetadata, ModelConfig and ModelStatistics as protobuf messages.

use std::sync::atomic::Ordering::Relaxed;

use super::pb;
use super::status::Status;
use crate::doors::describe::{config_data_type, config_dims, metadata_datatype, metadata_shape};
use crate::engine::batching::{Counter, ModelStats};
use crate::engine::Engine;
use crate::models::{DeviceChoice, TensorSpec, VersionPolicy};

pub fn model_metadata(
    engine: &Engine,
    request: &pb::ModelMetadataRequest,
) -> Result<pb::ModelMetadataResponse, Status> {
    let model = engine.repository().get(&request.name)?;
    let (_, loaded) = model.version(super::version(&request.version))?;
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
        versions: model.listed_versions(super::version(&request.version)),
        platform: model.config.triton_platform().0.to_string(),
        inputs: tensors(&loaded.inputs),
        outputs: tensors(&loaded.outputs),
    })
}

/// The model configuration with the fields tensord implements, as the REST door reports it.
pub fn model_config(
    engine: &Engine,
    request: &pb::ModelConfigRequest,
) -> Result<pb::ModelConfigResponse, Status> {
    let model = engine.repository().get(&request.name)?;
    let loaded = model.described_version(super::version(&request.version))?;
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
    let (platform, backend) = config.triton_platform();
    Ok(pb::ModelConfigResponse {
        config: Some(pb::ModelConfig {
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
            instance_group: vec![pb::ModelInstanceGroup {
                kind: kind as i32,
                count: config.instance_count as i32,
                gpus,
                ..Default::default()
            }],
            default_model_filename: config.default_model_filename.clone().unwrap_or_default(),
            scheduling_choice: scheduling,
            ..Default::default()
        }),
    })
}

pub fn model_statistics(
    engine: &Engine,
    request: &pb::ModelStatisticsRequest,
) -> Result<pb::ModelStatisticsResponse, Status> {
    let name = (!request.name.is_empty()).then_some(request.name.as_str());
    let models = engine.statistics(name, super::version(&request.version))?;
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
