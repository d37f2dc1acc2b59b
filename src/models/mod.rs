//! Models: the `Model` interface, configs, and the backends that load a version folder into a
//! runnable model. Imports nothing from the layers above (engine, front doors).

mod backends;
pub use backends::onnxruntime;
mod candle_io;
mod config;
mod confined;
pub mod gpu;
mod model;
pub mod ovms_config;
mod proto_json;
pub use proto_json::Proto;
mod sequence;
mod triton_config;

pub use backends::{load_version, Loaded};
pub use config::{
    Activation, Architecture, DeviceChoice, ExecutionMode, Extensions, ModelConfig,
    OnnxRuntimeSettings, OptimizationLevel, TensorConfig, VersionPolicy,
};
pub use confined::inside;
pub use model::{Model, ModelError, ModelErrorKind, TensorSpec};
pub use sequence::{Control, ControlKind, SequenceBatching, Sequencing, State, Strategy};
pub use triton_config::{config_from_json, EXTENSIONS};
