//! Model configuration: `config.toml` (or a Triton `config.pbtxt`), validated into typed settings
//! with errors that name the file and the key.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::sequence::{self, SequenceBatching};
use super::TensorSpec;
use crate::images::ImageOptions;
use crate::tensors::DataType;

/// The longest fixed cost a built-in test model may take per execution: each execution holds
/// one of the model's workers for that long, and a load request may set it.
pub const MAX_EXECUTION_DELAY_MICROSECONDS: u64 = 10_000_000;

/// The backends this build can serve.
pub const BACKENDS: &[&str] = &["onnx", "safetensors", "builtin", "ensemble"];

/// A model's `config.toml`, as written.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `onnx`, `safetensors` or `builtin`.
    pub backend: String,
    /// 0: the model does not batch and `dims` are full shapes; > 0: `dims` exclude the
    /// leading batch dimension, which may be 1..=max_batch_size.
    #[serde(default)]
    pub max_batch_size: u64,
    /// `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Execution workers (model instances) per version.
    #[serde(default = "default_instance_count")]
    pub instance_count: usize,
    #[serde(default)]
    pub version_policy: VersionPolicy,
    /// Declared inputs; for onnx they default to the graph's.
    #[serde(default)]
    pub input: Vec<TensorConfig>,
    #[serde(default)]
    pub output: Vec<TensorConfig>,
    /// The model file inside a version folder (default: `model.onnx` / `model.safetensors`).
    #[serde(default)]
    pub default_model_filename: Option<String>,
    /// For `backend = "builtin"`: which built-in model (default: the folder name).
    #[serde(default)]
    pub builtin: Option<String>,
    /// For `backend = "safetensors"`: the architecture and its hyper-parameters.
    #[serde(default)]
    pub architecture: Option<Architecture>,
    /// A fixed cost added to each execution (test models with controlled timing; Triton's
    /// `execute_delay_ms` parameter).
    #[serde(default)]
    pub execution_delay_microseconds: u64,
    /// Present: requests are batched (needs `max_batch_size` > 0).
    #[serde(default)]
    pub dynamic_batching: Option<DynamicBatching>,
    /// Requests waiting beyond this many for a model are refused (503 with Retry-After); 0: no limit.
    #[serde(default)]
    pub max_queue_size: usize,
    /// For `backend = "onnx"`: ONNX Runtime's session settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<OnnxRuntimeSettings>,
    /// Triton's sequence batcher, for stateful models (instead of `dynamic_batching`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_batching: Option<SequenceBatching>,
    /// For `backend = "ensemble"`: Triton's steps (`ensemble_scheduling`), the message in
    /// protobuf's JSON mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensemble_scheduling: Option<EnsembleScheduling>,
}

/// Triton's `ensemble_scheduling`, as written.
pub type EnsembleScheduling = super::proto_json::Proto<crate::proto::inference::ModelEnsembling>;

/// ONNX Runtime session settings (`[onnxruntime]`; from Triton's `parameters` and `optimization`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OnnxRuntimeSettings {
    /// Threads inside one operator [default: --compute-threads]; 0: ONNX Runtime's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intra_op_threads: Option<usize>,
    /// Threads running operators side by side; only with `execution_mode = "parallel"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inter_op_threads: Option<usize>,
    #[serde(default)]
    pub execution_mode: ExecutionMode,
    #[serde(default)]
    pub graph_optimization_level: OptimizationLevel,
    /// Execution providers tried before the CPU: `cuda`, `tensorrt`, `openvino`. Each must be in
    /// the loaded library, or the model is unavailable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub execution_accelerators: Vec<String>,
}

/// The execution providers `execution_accelerators` may name.
pub const ACCELERATORS: &[&str] = &["cuda", "tensorrt", "openvino"];

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionMode {
    #[default]
    Sequential,
    Parallel,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OptimizationLevel {
    Disable,
    Basic,
    Extended,
    #[default]
    All,
}

/// Triton's dynamic batcher settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DynamicBatching {
    /// Batch sizes released at once when they can be formed exactly.
    #[serde(default)]
    pub preferred_batch_size: Vec<u64>,
    /// How long the oldest request may wait for a fuller batch; 0: never waits.
    #[serde(default)]
    pub max_queue_delay_microseconds: u64,
}

impl Default for ModelConfig {
    fn default() -> ModelConfig {
        ModelConfig {
            backend: String::new(),
            max_batch_size: 0,
            device: default_device(),
            instance_count: default_instance_count(),
            version_policy: VersionPolicy::default(),
            input: Vec::new(),
            output: Vec::new(),
            default_model_filename: None,
            builtin: None,
            architecture: None,
            execution_delay_microseconds: 0,
            dynamic_batching: None,
            max_queue_size: 0,
            onnxruntime: None,
            sequence_batching: None,
            ensemble_scheduling: None,
        }
    }
}

fn default_device() -> String {
    "cpu".into()
}

fn default_instance_count() -> usize {
    1
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum VersionPolicy {
    /// The newest N versions.
    Latest(usize),
    /// Every version folder.
    All(bool),
    /// Exactly these versions.
    Specific(Vec<u64>),
}

impl Default for VersionPolicy {
    fn default() -> VersionPolicy {
        VersionPolicy::Latest(1)
    }
}

impl VersionPolicy {
    /// The versions to serve out of those on disk (ascending).
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::Latest(n) => available[available.len().saturating_sub(*n)..].to_vec(),
            VersionPolicy::All(_) => available.to_vec(),
            VersionPolicy::Specific(wanted) => {
                let mut v: Vec<u64> = available
                    .iter()
                    .copied()
                    .filter(|v| wanted.contains(v))
                    .collect();
                v.dedup();
                v
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TensorConfig {
    pub name: String,
    pub datatype: String,
    /// Sizes, -1 for any, or "lo:hi" for a range (OVMS's range dimensions).
    pub dims: Vec<Dim>,
    /// "NHWC" (default) or "NCHW": where image inputs put their channels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// How JPEG/PNG images sent to this input are decoded (`[input.image]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageOptions>,
    /// An output's class labels, one per line, in a file in the model folder (Triton's
    /// classification extension answers with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_filename: Option<String>,
    /// The shape the model sees (without the batch dimension) where it differs from `dims`,
    /// the shape clients send and receive (Triton's `reshape`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshape: Option<Vec<i64>>,
}

impl TensorConfig {
    /// The declaration of a served tensor, as a model that does not batch declares it (full
    /// shapes). `None` when the spec leaves datatype or rank open.
    pub fn describing(spec: &TensorSpec) -> Option<TensorConfig> {
        let dims = (spec.dims.as_ref()?.iter().enumerate())
            .map(|(i, &d)| match spec.ranges.get(i).copied().flatten() {
                Some((lo, hi)) => Dim::Range(lo, hi),
                None => Dim::Fixed(d),
            })
            .collect();
        Some(TensorConfig {
            name: spec.name.clone(),
            datatype: spec.datatype?.as_str().to_string(),
            dims,
            layout: spec.layout.clone(),
            image: Some(spec.image.clone()).filter(|i| *i != ImageOptions::default()),
            label_filename: None,
            reshape: None,
        })
    }
}

/// tensord's settings that Triton's `ModelConfig` has no field for: carried in its `parameters`
/// under the key `tensord`, as TOML in the `string_value`, so that a config read back from
/// `/config` keeps them when it is loaded again.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Extensions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<Architecture>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub execution_delay_microseconds: u64,
    /// Inputs' image options and range dims, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub input: Vec<InputExtensions>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InputExtensions {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageOptions>,
    /// The dims with their "lo:hi" ranges (Triton's dims say -1 there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dims: Vec<Dim>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ModelConfig {
    /// The settings of this config that Triton's message cannot hold (`None`: there are none).
    pub fn extensions(&self) -> Option<Extensions> {
        let input: Vec<InputExtensions> = (self.input.iter())
            .filter_map(|t| {
                let ranged = t.dims.iter().any(|d| matches!(d, Dim::Range(..)));
                (t.image.is_some() || ranged).then(|| InputExtensions {
                    name: t.name.clone(),
                    image: t.image.clone(),
                    dims: if ranged { t.dims.clone() } else { Vec::new() },
                })
            })
            .collect();
        let extensions = Extensions {
            // identity's is in Triton's own `backend`.
            builtin: self.builtin.clone().filter(|b| b != "identity"),
            architecture: self.architecture.clone(),
            execution_delay_microseconds: self.execution_delay_microseconds,
            input,
        };
        (extensions != Extensions::default()).then_some(extensions)
    }

    /// Takes back the settings `extensions` carries.
    pub fn extend(&mut self, extensions: Extensions) -> Result<(), String> {
        self.builtin = extensions.builtin.or(self.builtin.take());
        self.architecture = extensions.architecture;
        self.execution_delay_microseconds = extensions.execution_delay_microseconds;
        for extra in extensions.input {
            let input = (self.input.iter_mut())
                .find(|t| t.name == extra.name)
                .ok_or_else(|| format!("key 'parameters.tensord': no input '{}'", extra.name))?;
            input.image = extra.image;
            if !extra.dims.is_empty() {
                input.dims = extra.dims;
            }
        }
        Ok(())
    }
}

/// One declared dimension: a size (-1: any) or an inclusive range written "lo:hi".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Range(u64, u64),
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Size(i64),
            Range(String),
        }
        match Raw::deserialize(d)? {
            Raw::Size(n) => Ok(Dim::Fixed(n)),
            Raw::Range(text) => text
                .split_once(':')
                .and_then(|(lo, hi)| Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?)))
                .filter(|(lo, hi)| lo <= hi)
                .map(|(lo, hi)| Dim::Range(lo, hi))
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("'{text}' is not a range \"lo:hi\""))
                }),
        }
    }
}

impl Serialize for Dim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dim::Fixed(n) => s.serialize_i64(*n),
            Dim::Range(lo, hi) => s.serialize_str(&format!("{lo}:{hi}")),
        }
    }
}

/// Native architectures served from safetensors weights.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Architecture {
    /// Fully connected layers `layers[0] → layers[1] → ...`, the activation between them.
    /// Weights: `layers.{i}.weight` [out, in] and `layers.{i}.bias` [out].
    Mlp {
        layers: Vec<usize>,
        #[serde(default = "default_activation")]
        activation: Activation,
    },
    /// A small ResNet-style image classifier on NCHW input (see `backends::safetensors`).
    Cnn {
        in_channels: usize,
        /// Channels of each stage; each stage after the first halves the resolution.
        stages: Vec<usize>,
        num_classes: usize,
    },
}

fn default_activation() -> Activation {
    Activation::Relu
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
}

/// Where a model runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

impl ModelConfig {
    /// Reads `config.toml` or, failing that, a Triton `config.pbtxt` from a model folder.
    pub fn load(dir: &Path) -> Result<ModelConfig, String> {
        let toml_path = dir.join("config.toml");
        let pbtxt_path = dir.join("config.pbtxt");
        if toml_path.exists() {
            let text = std::fs::read_to_string(&toml_path)
                .map_err(|e| format!("{}: {e}", toml_path.display()))?;
            toml::from_str(&text)
                .map_err(|e| format!("{}: {}", toml_path.display(), e.to_string().trim_end()))
        } else if pbtxt_path.exists() {
            let text = std::fs::read_to_string(&pbtxt_path)
                .map_err(|e| format!("{}: {e}", pbtxt_path.display()))?;
            super::triton_config::config_from_pbtxt(&text)
                .map_err(|e| format!("{}: {e}", pbtxt_path.display()))
        } else {
            Err(format!("{}: no config.toml or config.pbtxt", dir.display()))
        }
    }

    /// The model's `platform` and `backend` as Triton names them (ONNX graphs: `onnxruntime_onnx`
    /// on `onnxruntime`; the built-in identity, Triton's `identity` backend, as `identity`);
    /// tensord's own backends keep their names.
    pub fn triton_platform(&self) -> (&str, &str) {
        match (self.backend.as_str(), self.builtin.as_deref()) {
            ("onnx", _) => ("onnxruntime_onnx", "onnxruntime"),
            ("builtin", Some("identity")) => ("identity", "identity"),
            ("ensemble", _) => ("ensemble", ""),
            (other, _) => (other, other),
        }
    }

    pub fn device(&self) -> Result<DeviceChoice, String> {
        match self.device.as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("key 'device': '{other}' is neither 'cpu' nor 'cuda:N'")),
        }
    }

    /// The declared tensors as specs with full shapes (the batch dimension prepended when batching).
    pub fn specs(&self, which: &str) -> Result<Vec<TensorSpec>, String> {
        let tensors = if which == "input" {
            &self.input
        } else {
            &self.output
        };
        tensors
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let datatype = DataType::parse(&t.datatype).ok_or_else(|| {
                    format!(
                        "key '{which}[{i}].datatype': unknown datatype '{}'",
                        t.datatype
                    )
                })?;
                if let Some(bad) = t
                    .dims
                    .iter()
                    .find(|d| matches!(d, Dim::Fixed(n) if *n < -1))
                {
                    return Err(format!(
                        "key '{which}[{i}].dims': invalid dimension {bad:?}"
                    ));
                }
                if let Some(layout) = t
                    .layout
                    .as_deref()
                    .filter(|l| !["NHWC", "NCHW"].contains(l))
                {
                    return Err(format!(
                        "key '{which}[{i}].layout': '{layout}' is neither NHWC nor NCHW"
                    ));
                }
                let batch = (self.max_batch_size > 0).then_some(Dim::Fixed(-1));
                let batch_dims = usize::from(batch.is_some());
                let all: Vec<Dim> = batch.into_iter().chain(t.dims.iter().copied()).collect();
                let dims = all
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Range(..) => -1,
                    })
                    .collect();
                let ranges = all
                    .iter()
                    .map(|d| match d {
                        Dim::Range(lo, hi) => Some((*lo, *hi)),
                        Dim::Fixed(_) => None,
                    })
                    .collect::<Vec<_>>();
                let spec = TensorSpec {
                    name: t.name.clone(),
                    datatype: Some(datatype),
                    dims: Some(dims),
                    ranges: if ranges.iter().any(Option::is_some) {
                        ranges
                    } else {
                        Vec::new()
                    },
                    layout: t.layout.clone(),
                    image: t.image.clone().unwrap_or_default(),
                    label_filename: t.label_filename.clone(),
                    reshape: t.reshape.clone(),
                };
                let variable = |dims: &[i64]| dims.iter().filter(|&&d| d < 0).count();
                if let Some(reshape) = &t.reshape {
                    let fixed = |dims: &[i64]| dims.iter().filter(|&&d| d > 0).product::<i64>();
                    let declared = &spec.dims.as_deref().unwrap_or_default()[batch_dims..];
                    let fits = variable(reshape) <= 1
                        && reshape.iter().all(|&d| d >= -1)
                        && (variable(declared) > 0
                            || variable(reshape) > 0
                            || fixed(declared) == fixed(reshape));
                    if !fits {
                        return Err(format!(
                            "key '{which}[{i}].reshape': {reshape:?} does not hold the \
                             elements of dims {declared:?}"
                        ));
                    }
                }
                if let Some(target) = spec.image_target() {
                    target
                        .options
                        .validate(target.channels)
                        .map_err(|(field, e)| format!("key '{which}[{i}].image.{field}': {e}"))?;
                }
                Ok(spec)
            })
            .collect()
    }

    /// Checks the settings every backend shares.
    /// The threads one version starts: each instance's worker, and its ONNX Runtime intra-op
    /// threads when the config sets them.
    pub fn threads(&self) -> usize {
        if self.backend == "ensemble" {
            return 0; // its steps run on their own models' threads
        }
        let intra = (self.onnxruntime.as_ref()).and_then(|o| o.intra_op_threads);
        self.instance_count.saturating_mul(1 + intra.unwrap_or(0))
    }

    /// Refuses a config whose threads (each instance's worker, and its ONNX Runtime intra-op
    /// threads when set) would be more than `max` for one version.
    pub fn threads_within(&self, max: usize) -> Result<(), String> {
        let intra = (self.onnxruntime.as_ref()).and_then(|o| o.intra_op_threads);
        let threads = self.threads();
        if threads <= max {
            return Ok(());
        }
        let keys = match intra {
            Some(n) => format!(
                "keys 'instance_count' ({}) and intra-op threads ({n})",
                self.instance_count
            ),
            None => format!("key 'instance_count' ({})", self.instance_count),
        };
        Err(format!(
            "{keys}: {threads} threads, over the limit of {max} per model version \
             (--max-model-threads)"
        ))
    }

    pub fn validate(&self) -> Result<(), String> {
        if !BACKENDS.contains(&self.backend.as_str()) {
            return Err(format!(
                "key 'backend': unknown backend '{}' (available: {})",
                self.backend,
                BACKENDS.join(", ")
            ));
        }
        self.device()?;
        if self.instance_count == 0 {
            return Err("key 'instance_count': must be at least 1".into());
        }
        if let VersionPolicy::Latest(0) = self.version_policy {
            return Err("key 'version_policy.latest': must be at least 1".into());
        }
        self.specs("input")?;
        self.specs("output")?;
        self.validate_ensemble()?;
        if let Some(batching) = &self.dynamic_batching {
            if self.max_batch_size == 0 {
                return Err("key 'dynamic_batching': needs max_batch_size > 0".into());
            }
            if let Some(bad) = batching
                .preferred_batch_size
                .iter()
                .find(|&&p| p == 0 || p > self.max_batch_size)
            {
                return Err(format!(
                    "key 'dynamic_batching.preferred_batch_size': {bad} is not in 1..=max_batch_size ({})",
                    self.max_batch_size
                ));
            }
        }
        if let Some(settings) = &self.sequence_batching {
            if self.dynamic_batching.is_some() {
                return Err(
                    "keys 'dynamic_batching' and 'sequence_batching': a model has one \
                            scheduler"
                        .into(),
                );
            }
            sequence::refuse_unimplemented(&settings.0)?;
        }
        if self.execution_delay_microseconds > MAX_EXECUTION_DELAY_MICROSECONDS {
            return Err(format!(
                "key 'execution_delay_microseconds': {} is over the limit of {MAX_EXECUTION_DELAY_MICROSECONDS} (10 s)",
                self.execution_delay_microseconds
            ));
        }
        if let Some(ort) = &self.onnxruntime {
            if self.backend != "onnx" {
                return Err("key 'onnxruntime': only the onnx backend takes it".into());
            }
            if ort.inter_op_threads.is_some() && ort.execution_mode != ExecutionMode::Parallel {
                return Err(
                    "key 'onnxruntime.inter_op_threads': takes effect only with execution_mode = \"parallel\""
                        .into(),
                );
            }
            if let Some(bad) = ort
                .execution_accelerators
                .iter()
                .find(|a| !ACCELERATORS.contains(&a.as_str()))
            {
                return Err(format!(
                    "key 'onnxruntime.execution_accelerators': unknown accelerator '{bad}' (known: {})",
                    ACCELERATORS.join(", ")
                ));
            }
        }
        Ok(())
    }
}

impl ModelConfig {
    /// Triton's rules for an ensemble's own config (the steps are checked when it loads).
    fn validate_ensemble(&self) -> Result<(), String> {
        let ensemble = self.backend == "ensemble";
        match (ensemble, &self.ensemble_scheduling) {
            (false, Some(_)) => Err("key 'ensemble_scheduling': only an ensemble (platform \
                                     \"ensemble\") takes it"
                .into()),
            (true, None) => Err("key 'ensemble_scheduling': an ensemble needs its steps".into()),
            (true, Some(_)) => {
                let other = [
                    ("dynamic_batching", self.dynamic_batching.is_some()),
                    ("sequence_batching", self.sequence_batching.is_some()),
                    ("instance_count", self.instance_count != 1),
                    ("onnxruntime", self.onnxruntime.is_some()),
                    (
                        "execution_delay_microseconds",
                        self.execution_delay_microseconds > 0,
                    ),
                ];
                if let Some((key, _)) = other.iter().find(|(_, set)| *set) {
                    return Err(format!(
                        "key '{key}': an ensemble runs on its steps' models and takes no {key}"
                    ));
                }
                if self.input.is_empty() || self.output.is_empty() {
                    return Err("keys 'input' and 'output': an ensemble declares both".into());
                }
                Ok(())
            }
            (false, None) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_policies_pick_from_disk() {
        let disk = [1, 2, 5, 9];
        assert_eq!(VersionPolicy::default().select(&disk), vec![9]);
        assert_eq!(VersionPolicy::Latest(2).select(&disk), vec![5, 9]);
        assert_eq!(VersionPolicy::Latest(10).select(&disk), vec![1, 2, 5, 9]);
        assert_eq!(VersionPolicy::All(true).select(&disk), vec![1, 2, 5, 9]);
        assert_eq!(
            VersionPolicy::Specific(vec![2, 3, 9]).select(&disk),
            vec![2, 9]
        );
    }

    #[test]
    fn toml_configs_and_their_errors() {
        let c: ModelConfig = toml::from_str(
            r#"
            backend = "onnx"
            max_batch_size = 8
            version_policy = { specific = [1, 3] }
            [[input]]
            name = "x"
            datatype = "FP32"
            dims = [3, "10:20"]
            [[output]]
            name = "y"
            datatype = "INT64"
            dims = [1]
            "#,
        )
        .unwrap();
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![1, 3]));
        let specs = c.specs("input").unwrap();
        assert_eq!(specs[0].dims, Some(vec![-1, 3, -1]));
        assert_eq!(specs[0].ranges, vec![None, None, Some((10, 20))]);
        assert!(toml::from_str::<TensorConfig>(
            "name = \"x\"\ndatatype = \"FP32\"\ndims = [\"9:1\"]"
        )
        .is_err());
        assert_eq!(c.device().unwrap(), DeviceChoice::Cpu);

        let bad_type = ModelConfig {
            input: vec![TensorConfig {
                name: "x".into(),
                datatype: "FP33".into(),
                dims: vec![Dim::Fixed(1)],
                layout: None,
                image: None,
                label_filename: None,
                reshape: None,
            }],
            ..c.clone()
        };
        assert!(bad_type
            .validate()
            .unwrap_err()
            .contains("input[0].datatype"));
        let bad_device = ModelConfig {
            device: "tpu".into(),
            ..c.clone()
        };
        assert!(bad_device.validate().unwrap_err().contains("key 'device'"));
        let builtin = |micros| ModelConfig {
            backend: "builtin".into(),
            execution_delay_microseconds: micros,
            ..ModelConfig::default()
        };
        assert_eq!(builtin(MAX_EXECUTION_DELAY_MICROSECONDS).validate(), Ok(()));
        let endless = builtin(MAX_EXECUTION_DELAY_MICROSECONDS + 1).validate();
        assert!(endless.unwrap_err().contains("over the limit"));
        let unknown =
            toml::from_str::<ModelConfig>("backend = \"onnx\"\nmax_batch = 3\n").unwrap_err();
        assert!(unknown.to_string().contains("max_batch"), "{unknown}");
        let mlp: ModelConfig = toml::from_str(
            "backend = \"safetensors\"\narchitecture = { kind = \"mlp\", layers = [4, 8, 2], activation = \"gelu\" }\n",
        )
        .unwrap();
        assert_eq!(
            mlp.architecture,
            Some(Architecture::Mlp {
                layers: vec![4, 8, 2],
                activation: Activation::Gelu
            })
        );
    }
}
