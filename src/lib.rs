//! tensord: an Open Inference Protocol server. Data flows one way through the layers:
//! server (sockets) → http (framing) → protocol (V2) → tensors → models, and back.

pub mod config;
pub mod http;
pub mod models;
pub mod protocol;
pub mod server;
pub mod tensors;
