//! Backends: turn a model config and a version folder into a runnable model with its specs.

pub mod builtin;
pub mod onnxruntime;
mod safetensors;
mod sequence_models;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use super::candle_io::candle_message;
use super::config::{DeviceChoice, ModelConfig};
use super::{Model, Sequencing, TensorSpec};

/// One version of a model, loaded and ready to run.
pub struct Loaded {
    pub model: Arc<dyn Model>,
    /// Every input the model takes, in the order `execute` takes them: with sequence batching,
    /// its controls and state inputs too.
    pub inputs: Vec<TensorSpec>,
    /// Every output the model returns, in order: with sequence batching, its states' too.
    pub outputs: Vec<TensorSpec>,
    /// Cheap enough to run on the io thread when nothing asks for a queue (the built-ins).
    pub cheap: bool,
    pub sequencing: Option<Sequencing>,
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
    let sequencing = (config.sequence_batching.as_ref())
        .map(|s| Sequencing::new(&s.0, dir.parent().unwrap_or(dir)))
        .transpose()?;
    // The tensors the model has beyond those declared for clients: the sequence batcher's.
    let batching = config.max_batch_size > 0;
    let (fed, states) = match &sequencing {
        Some(s) => (s.inputs(batching), s.outputs(batching)),
        None => Default::default(),
    };
    let declared = |which: &str, extra: &[TensorSpec]| -> Result<Vec<TensorSpec>, String> {
        let mut specs = config.specs(which)?;
        if specs.is_empty() {
            return Ok(specs); // the model's own, the batcher's among them
        }
        let missing: Vec<_> = (extra.iter())
            .filter(|e| !specs.iter().any(|s| s.name == e.name))
            .cloned()
            .collect();
        specs.extend(missing);
        Ok(specs)
    };
    let (inputs, outputs) = (declared("input", &fed)?, declared("output", &states)?);
    let (model, inputs, outputs, cheap) = match config.backend.as_str() {
        "builtin" => {
            let which = config.builtin.as_deref().unwrap_or(name);
            let b = builtin::builtin(which).ok_or_else(|| {
                format!(
                    "key 'builtin': unknown built-in model '{which}' (available: {})",
                    builtin::BUILTIN_NAMES.join(", ")
                )
            })?;
            // A built-in's tensors are its own; declared, they must be those (as a config read
            // back from /config declares them), in any order. identity may be given one
            // declared input and output: an identity of that datatype and shape (with image
            // options, a probe of any image input).
            let own = |declared: &[TensorSpec], own: &[TensorSpec]| {
                declared.len() == own.len()
                    && (declared.iter()).all(|d| {
                        (own.iter()).any(|o| {
                            (&d.name, d.datatype, &d.dims) == (&o.name, o.datatype, &o.dims)
                        })
                    })
            };
            let (inputs, outputs) = match (inputs, outputs) {
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
            (Arc::from(b.model), inputs, outputs, true)
        }
        "onnx" => {
            let path = model_file(config, dir, "model.onnx")?;
            let (model, inputs, outputs) = onnxruntime::load(&path, config, inputs, outputs)?;
            (Arc::new(model) as Arc<dyn Model>, inputs, outputs, false)
        }
        "safetensors" => {
            let architecture = config
                .architecture
                .as_ref()
                .ok_or("key 'architecture': required by the safetensors backend")?;
            if sequencing.is_some() {
                return Err(
                    "key 'sequence_batching': safetensors architectures keep no state".into(),
                );
            }
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
            let (inputs, outputs) = (rename("input", input)?, rename("output", output)?);
            (Arc::new(model) as Arc<dyn Model>, inputs, outputs, false)
        }
        other => return Err(format!("key 'backend': unknown backend '{other}'")),
    };
    Ok(Loaded {
        model: builtin::with_delay(model, config.execution_delay_microseconds),
        inputs,
        outputs,
        cheap,
        sequencing,
    })
}
