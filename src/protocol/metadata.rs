//! Server and model metadata documents.

use serde_json::{json, Value};

use crate::models::{ServedModel, TensorSpec};

/// Extensions this server implements, as listed in server metadata.
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "parameters"];

pub fn server_metadata() -> Value {
    json!({
        "name": "tensord",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    })
}

/// Model metadata; a model that failed to load says why in `state`/`reason`.
pub fn model_metadata(model: &ServedModel) -> Value {
    let versions: Vec<String> = model.versions.iter().map(u64::to_string).collect();
    let mut doc = json!({
        "name": model.name,
        "versions": versions,
        "platform": model.platform,
        "inputs": model.inputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        "outputs": model.outputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
    });
    if let Err(reason) = &model.state {
        doc["state"] = json!("UNAVAILABLE");
        doc["reason"] = json!(reason);
    }
    doc
}

/// A spec that accepts any datatype says "ANY"; one that accepts any rank has shape [-1].
fn tensor_metadata(spec: &TensorSpec) -> Value {
    json!({
        "name": spec.name,
        "datatype": spec.datatype.map_or("ANY", |dt| dt.as_str()),
        "shape": spec.dims.clone().unwrap_or_else(|| vec![-1]),
    })
}
