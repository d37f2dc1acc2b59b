//! tensord: an Open Inference Protocol server. Data flows one way through the layers:
//! server (sockets) → http (framing) → doors (V2, TF Serving: wire formats) → engine
//! (pipeline, repository, batching) → models (backends), and back. `tensors` and `images` are
//! libraries every layer may use; `shm` maps clients' shared-memory objects for the engine.
//! `loadgen` is the other side: tensord-bench, a client that loads any such server.

// Request paths must not panic: errors are answered, never unwrapped.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod config;
pub mod doors;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod images;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod models;
pub mod proto;
pub mod server;
pub mod shm;
pub mod tensors;
