//! How a tensor is described to clients, the same through every door: in metadata (protocol
//! datatypes and shapes) and in Triton's model configuration (`TYPE_` datatypes, dims without
//! the batch dimension).

use crate::models::TensorSpec;

/// A spec that accepts any datatype says "ANY".
pub fn metadata_datatype(spec: &TensorSpec) -> &'static str {
    spec.datatype.map_or("ANY", |d| d.as_str())
}

/// A spec that accepts any rank has shape [-1].
pub fn metadata_shape(spec: &TensorSpec) -> Vec<i64> {
    spec.dims.clone().unwrap_or_else(|| vec![-1])
}

/// Triton's name for the datatype: `TYPE_FP32`, `TYPE_STRING` for BYTES, `TYPE_INVALID` for any.
pub fn config_data_type(spec: &TensorSpec) -> String {
    match spec.datatype.map(|d| d.as_str()) {
        Some("BYTES") => "TYPE_STRING".to_string(),
        Some(other) => format!("TYPE_{other}"),
        None => "TYPE_INVALID".to_string(),
    }
}

/// The dims a config declares: without the batch dimension when the model batches.
pub fn config_dims(spec: &TensorSpec, batching: bool) -> Vec<i64> {
    let dims = metadata_shape(spec);
    match batching {
        true => dims.get(1..).unwrap_or_default().to_vec(),
        false => dims,
    }
}
