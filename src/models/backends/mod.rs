//! Backends: turn a model config and a version folder into a runnable model with its specs.

pub mod builtin;
pub mod onnxruntime;
mod safetensors;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::candle_io::candle_message;
use super::config::{DeviceChoice, ModelConfig};
use super::{Model, TensorSpec};

/// One version of a model, loaded and ready to run.
pub struct Loaded {
    pub model: Arc<dyn Model>,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Cheap enough to run on the io thread when nothing asks for a queue (the built-ins).
    pub cheap: bool,
}

fn device(config: &ModelConfig) -> Result<Device, String> {
    match config.device()? {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => {
            let device = Device::new_cuda(n)
                .map_err(|e| format!("key 'device': cuda:{n}: {}", candle_message(&e)))?;
            super::gpu::remember(&device);
            Ok(device)
        }
    }
}

/// The model file of version folder `dir`: the config's `default_model_filename`, else
/// `default`; never outside the model's folder.
fn model_file(config: &ModelConfig, dir: &Path, default: &str) -> Result<PathBuf, String> {
    let name = config.default_model_filename.as_deref().unwrap_or(default);
    let model_dir = dir.parent().unwrap_or(dir);
    super::confined::inside(model_dir, dir, "default_model_filename", name)
}

/// Loads the version in `dir` of model `name` as `config` describes it.
pub fn load_version(name: &str, config: &ModelConfig, dir: &Path) -> Result<Loaded, String> {
    match config.backend.as_str() {
        "builtin" => {
            let which = config.builtin.as_deref().unwrap_or(name);
            let b = builtin::builtin(which).ok_or_else(|| {
                format!(
                    "key 'builtin': unknown built-in model '{which}' (available: {})",
                    builtin::BUILTIN_NAMES.join(", ")
                )
            })?;
            // A built-in's tensors are its own; declared, they must be those (as a config read
            // back from /config declares them). identity may be given one declared input and
            // output: an identity of that datatype and shape (with image options, a probe of
            // any image input).
            let own = |declared: &[TensorSpec], own: &[TensorSpec]| {
                declared.len() == own.len()
                    && (declared.iter().zip(own)).all(|(d, o)| {
                        (&d.name, d.datatype, &d.dims) == (&o.name, o.datatype, &o.dims)
                    })
            };
            let (inputs, outputs) = match (config.specs("input")?, config.specs("output")?) {
                (i, o) if i.is_empty() && o.is_empty() => (b.inputs, b.outputs),
                (i, o) if which == "identity" && i.len() == 1 && o.len() == 1 => (i, o),
                (i, o) if own(&i, &b.inputs) && own(&o, &b.outputs) => (b.inputs, b.outputs),
                _ => {
                    return Err(format!(
                        "keys 'input'/'output': built-in '{which}' has tensors of its own, \
                         which may only be declared as they are (identity takes one of each)"
                    ))
                }
            };
            let model = builtin::with_delay(b.model, config.execution_delay_microseconds);
            Ok(Loaded {
                model,
                inputs,
                outputs,
                cheap: true,
            })
        }
        "onnx" => {
            let path = model_file(config, dir, "model.onnx")?;
            let (model, inputs, outputs) = onnxruntime::load(&path, config)?;
            Ok(Loaded {
                model: Arc::new(model),
                inputs,
                outputs,
                cheap: false,
            })
        }
        "safetensors" => {
            let architecture = config
                .architecture
                .as_ref()
                .ok_or("key 'architecture': required by the safetensors backend")?;
            let path = model_file(config, dir, "model.safetensors")?;
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
            Ok(Loaded {
                model: Arc::new(model),
                inputs: rename("input", input)?,
                outputs: rename("output", output)?,
                cheap: false,
            })
        }
        other => Err(format!("key 'backend': unknown backend '{other}'")),
    }
}
