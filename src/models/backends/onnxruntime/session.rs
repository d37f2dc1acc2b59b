//! ONNX Runtime sessions as a model's config asks for them: threads, execution mode, graph
//! optimisation and execution providers. A provider the library lacks is an error, never a
//! quiet fall back to the CPU.

use std::path::Path;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider, ExecutionProviderDispatch};
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::models::config::{DeviceChoice, ExecutionMode, ModelConfig, OptimizationLevel};

/// One session of the graph at `path`, built with the settings of `config`.
pub fn build(
    environment: &Environment,
    default_threads: usize,
    config: &ModelConfig,
    path: &Path,
) -> Result<Session, String> {
    let settings = config.onnxruntime.clone().unwrap_or_default();
    // Builder errors carry the builder back, which cannot cross threads: keep only the text.
    let text = |e: ort::Error<SessionBuilder>| e.to_string();
    let level = match settings.graph_optimization_level {
        OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
        OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
        OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
        OptimizationLevel::All => GraphOptimizationLevel::All,
    };
    let mut builder = Session::builder(environment)
        .map_err(|e| e.to_string())?
        .with_optimization_level(level)
        .map_err(text)?
        .with_intra_threads(settings.intra_op_threads.unwrap_or(default_threads))
        .map_err(text)?
        .with_parallel_execution(settings.execution_mode == ExecutionMode::Parallel)
        .map_err(text)?;
    if let Some(threads) = settings.inter_op_threads {
        builder = builder.with_inter_threads(threads).map_err(text)?;
    }
    // The device's provider (CUDA for cuda:N) is one of the accelerators, named or not.
    let device = config.device()?;
    let mut accelerators = settings.execution_accelerators.clone();
    if matches!(device, DeviceChoice::Cuda(_)) && !accelerators.iter().any(|a| a == "cuda") {
        accelerators.push("cuda".into());
    }
    let id = match device {
        DeviceChoice::Cpu => 0,
        DeviceChoice::Cuda(n) => {
            i32::try_from(n).map_err(|_| format!("key 'device': cuda:{n} is out of range"))?
        }
    };
    let providers = accelerators
        .iter()
        .map(|name| provider(name, id))
        .collect::<Result<Vec<_>, _>>()?;
    if !providers.is_empty() {
        builder = builder.with_execution_providers(providers).map_err(text)?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The execution provider `name` on device `id`, if the loaded library has it.
fn provider(name: &str, id: i32) -> Result<ExecutionProviderDispatch, String> {
    fn checked<E: ExecutionProvider>(
        ep: ExecutionProviderDispatch,
    ) -> Result<ExecutionProviderDispatch, String> {
        match E::is_available() {
            Ok(true) => Ok(ep.error_on_failure()),
            _ => Err(format!(
                "the loaded ONNX Runtime library has no {} (the onnxruntime wheel is CPU-only; \
                 onnxruntime-gpu's library has CUDA and TensorRT)",
                E::NAME
            )),
        }
    }
    match name {
        "cuda" => checked::<ep::CUDA>(ep::CUDA::default().with_device_id(id).build()),
        "tensorrt" => checked::<ep::TensorRT>(ep::TensorRT::default().with_device_id(id).build()),
        "openvino" => checked::<ep::OpenVINO>(ep::OpenVINO::default().build()),
        other => Err(format!("unknown execution accelerator '{other}'")),
    }
}
