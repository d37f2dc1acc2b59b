//! Models: the `Model` interface, configs, the on-disk repository and the backends behind it.

mod backends;
pub use backends::onnxruntime;
mod candle_io;
mod config;
mod model;
mod pbtxt;
mod repository;

pub use backends::LoadedVersion;
pub use config::{
    Activation, Architecture, DeviceChoice, ModelConfig, TensorConfig, VersionPolicy,
};
pub use model::{Model, ModelError, ModelErrorKind, TensorSpec};
pub use repository::{IndexEntry, LookupError, ModelVersion, Repository, ServedModel};
