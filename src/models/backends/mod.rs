//! Backends: turn a model config and a version folder into a runnable model with its specs.

pub mod builtin;
pub mod onnxruntime;
mod safetensors;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;

use super::config::{DeviceChoice, ModelConfig};
use super::{Model, TensorSpec};
use crate::batching::{BatchPolicy, Executor};

/// One loaded version of a model.
pub struct LoadedVersion {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub executor: Executor,
}

fn device(config: &ModelConfig) -> Result<Device, String> {
    match config.device()? {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            Device::new_cuda(n).map_err(|e| format!("key 'device': cuda:{n}: {e}"))
        }
    }
}

/// The model behind its queue, or inline when it is a cheap built-in that neither batches nor
/// pretends to be slow.
fn executor(
    model: Arc<dyn Model>,
    config: &ModelConfig,
    name: &str,
    cheap: bool,
) -> Result<Executor, String> {
    let batching = config.dynamic_batching.as_ref();
    if cheap && batching.is_none() && config.execution_delay_microseconds == 0 {
        return Ok(Executor::inline(model));
    }
    let policy = BatchPolicy {
        max_batch_size: batching.map_or(0, |_| config.max_batch_size),
        preferred: batching
            .map(|b| b.preferred_batch_size.clone())
            .unwrap_or_default(),
        max_delay: std::time::Duration::from_micros(
            batching.map_or(0, |b| b.max_queue_delay_microseconds),
        ),
    };
    Executor::queued(
        model,
        policy,
        config.instance_count,
        config.max_queue_size,
        name,
    )
}

fn model_file(config: &ModelConfig, dir: &Path, default: &str) -> std::path::PathBuf {
    dir.join(config.default_model_filename.as_deref().unwrap_or(default))
}

/// Loads the version in `dir` of model `name` as `config` describes it.
pub fn load_version(name: &str, config: &ModelConfig, dir: &Path) -> Result<LoadedVersion, String> {
    match config.backend.as_str() {
        "builtin" => {
            let which = config.builtin.as_deref().unwrap_or(name);
            let b = builtin::builtin(which).ok_or_else(|| {
                format!(
                    "key 'builtin': unknown built-in model '{which}' (available: {})",
                    builtin::BUILTIN_NAMES.join(", ")
                )
            })?;
            // identity may be given one declared input and output: an identity of that
            // datatype and shape (with image options, a probe of any image input).
            let (inputs, outputs) = match (config.specs("input")?, config.specs("output")?) {
                (i, o) if i.is_empty() && o.is_empty() => (b.inputs, b.outputs),
                (i, o) if which == "identity" && i.len() == 1 && o.len() == 1 => (i, o),
                _ => return Err("keys 'input'/'output': only identity takes one of each".into()),
            };
            let model = builtin::with_delay(b.model, config.execution_delay_microseconds);
            Ok(LoadedVersion {
                inputs,
                outputs,
                executor: executor(model, config, name, true)?,
            })
        }
        "onnx" => {
            let path = model_file(config, dir, "model.onnx");
            let (model, inputs, outputs) = onnxruntime::load(&path, config)?;
            Ok(LoadedVersion {
                inputs,
                outputs,
                executor: executor(Arc::new(model), config, name, false)?,
            })
        }
        "safetensors" => {
            let architecture = config
                .architecture
                .as_ref()
                .ok_or("key 'architecture': required by the safetensors backend")?;
            let path = model_file(config, dir, "model.safetensors");
            let (model, input, output) = safetensors::load(&path, architecture, &device(config)?)?;
            let rename = |which: &str, spec: TensorSpec| -> Result<Vec<TensorSpec>, String> {
                match config.specs(which)?.as_slice() {
                    [] => Ok(vec![spec]),
                    [declared] => Ok(vec![TensorSpec {
                        name: declared.name.clone(),
                        layout: declared.layout.clone().or(spec.layout),
                        image: declared.image.clone(),
                        ..spec
                    }]),
                    _ => Err(format!(
                        "key '{which}': this architecture has exactly one {which}"
                    )),
                }
            };
            Ok(LoadedVersion {
                inputs: rename("input", input)?,
                outputs: rename("output", output)?,
                executor: executor(Arc::new(model), config, name, false)?,
            })
        }
        other => Err(format!("key 'backend': unknown backend '{other}'")),
    }
}
