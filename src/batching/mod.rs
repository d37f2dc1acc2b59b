//! Between the protocol and the models: each model's queue, dynamic batching (gather inputs,
//! execute once, scatter outputs) on worker threads, and the statistics of it all.

mod executor;
mod gather;
mod scheduler;
mod stats;

pub use executor::Executor;
pub use scheduler::BatchPolicy;
pub use stats::{Counter, FailReason, ModelStats, Phases};
