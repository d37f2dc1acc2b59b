//! Models: the `Model` interface, the on-disk repository and the backends behind it.

mod builtin;
mod model;
mod repository;

pub use model::{Model, ModelError, ModelErrorKind, TensorSpec};
pub use repository::{LookupError, Repository, ServedModel};
