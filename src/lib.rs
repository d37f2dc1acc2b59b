//! tensord: an Open Inference Protocol server. Data flows one way through the layers:
//! server (sockets) → http (framing) → protocol (V2, tensors) → batching (queues, workers)
//! → models, and back. `loadgen` is the other side: tensord-bench, a client that loads any
//! such server.

// Request paths must not panic: errors are answered, never unwrapped.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod batching;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod images;
pub mod loadgen;
pub mod metrics;
pub mod models;
pub mod protocol;
pub mod server;
pub mod tensors;
