//! Reading a model's config: Triton's `config.pbtxt` (protobuf text format, through
//! prost-reflect into Triton's `ModelConfig` message) and the load API's JSON, against the TOML
//! of the same config. A config is read once per model load.
//!
//! Run: cargo bench --bench model_config

use divan::Bencher;

use tensord::models::{config_from_json, ModelConfig};

fn main() {
    divan::main();
}

const PBTXT: &str = r#"
name: "classifier"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 3, 48, 192 ] } ]
output [ { name: "softmax" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "labels.txt" } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"#;

const JSON: &str = r#"{"name": "classifier", "platform": "onnxruntime_onnx", "max_batch_size": 8,
"input": [{"name": "x", "data_type": "TYPE_FP32", "format": "FORMAT_NCHW", "dims": [3, 48, 192]}],
"output": [{"name": "softmax", "data_type": "TYPE_FP32", "dims": [2], "label_filename": "labels.txt"}],
"instance_group": [{"count": 2, "kind": "KIND_CPU"}],
"dynamic_batching": {"preferred_batch_size": [4, 8], "max_queue_delay_microseconds": 100},
"parameters": {"intra_op_thread_count": {"string_value": "1"}}}"#;

const TOML: &str = r#"
backend = "onnx"
max_batch_size = 8
instance_count = 2
[dynamic_batching]
preferred_batch_size = [4, 8]
max_queue_delay_microseconds = 100
[onnxruntime]
intra_op_threads = 1
[[input]]
name = "x"
datatype = "FP32"
layout = "NCHW"
dims = [3, 48, 192]
[[output]]
name = "softmax"
datatype = "FP32"
dims = [2]
label_filename = "labels.txt"
"#;

/// A model folder holding `file` with `text`, read as a load reads it.
fn load(bencher: Bencher, file: &str, text: &str) {
    let dir = std::env::temp_dir().join(format!("tensord-bench-config-{file}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(file), text).unwrap();
    bencher.bench(|| ModelConfig::load(&dir).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[divan::bench]
fn pbtxt(bencher: Bencher) {
    load(bencher, "config.pbtxt", PBTXT);
}

#[divan::bench]
fn toml(bencher: Bencher) {
    load(bencher, "config.toml", TOML);
}

#[divan::bench]
fn load_api_json(bencher: Bencher) {
    bencher.bench(|| config_from_json(JSON).unwrap());
}
