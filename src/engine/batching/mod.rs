//! The engine's scheduling, between the pipeline and the models: each model's queue, dynamic batching (gather inputs,
//! execute once, scatter outputs) on worker threads, and the statistics of it all.

mod executor;
mod gather;
mod scheduler;
mod sequence;
mod stats;

pub use executor::Executor;
pub use scheduler::BatchPolicy;
pub use sequence::{Plan, Sequencer};
pub use stats::{Counter, ModelStats, Phases};

use crate::tensors::Tensor;

/// A request's rows: its first input's first dimension (1 without one).
pub fn rows(inputs: &[Tensor]) -> u64 {
    inputs
        .first()
        .and_then(|t| t.shape.first().copied())
        .unwrap_or(1)
}
