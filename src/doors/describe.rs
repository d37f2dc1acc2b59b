//! How a tensor is described to clients, the same through every door: in metadata (protocol
//! datatypes and shapes) and in Triton's model configuration (`TYPE_` datatypes, dims without
//! the batch dimension).

use crate::models::TensorSpec;
use crate::tensors::DataType;

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

/// A TensorFlow datatype: its name (`DT_FLOAT`) and its number in TensorFlow's `DataType` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TfDtype {
    pub name: &'static str,
    pub number: i32,
}

/// TensorFlow's datatypes that match a tensord one.
const TF_DTYPES: [(DataType, TfDtype); 14] = [
    (
        DataType::Fp32,
        TfDtype {
            name: "DT_FLOAT",
            number: 1,
        },
    ),
    (
        DataType::Fp64,
        TfDtype {
            name: "DT_DOUBLE",
            number: 2,
        },
    ),
    (
        DataType::Int32,
        TfDtype {
            name: "DT_INT32",
            number: 3,
        },
    ),
    (
        DataType::Uint8,
        TfDtype {
            name: "DT_UINT8",
            number: 4,
        },
    ),
    (
        DataType::Int16,
        TfDtype {
            name: "DT_INT16",
            number: 5,
        },
    ),
    (
        DataType::Int8,
        TfDtype {
            name: "DT_INT8",
            number: 6,
        },
    ),
    (
        DataType::Bytes,
        TfDtype {
            name: "DT_STRING",
            number: 7,
        },
    ),
    (
        DataType::Int64,
        TfDtype {
            name: "DT_INT64",
            number: 9,
        },
    ),
    (
        DataType::Bool,
        TfDtype {
            name: "DT_BOOL",
            number: 10,
        },
    ),
    (
        DataType::Bf16,
        TfDtype {
            name: "DT_BFLOAT16",
            number: 14,
        },
    ),
    (
        DataType::Uint16,
        TfDtype {
            name: "DT_UINT16",
            number: 17,
        },
    ),
    (
        DataType::Fp16,
        TfDtype {
            name: "DT_HALF",
            number: 19,
        },
    ),
    (
        DataType::Uint32,
        TfDtype {
            name: "DT_UINT32",
            number: 22,
        },
    ),
    (
        DataType::Uint64,
        TfDtype {
            name: "DT_UINT64",
            number: 23,
        },
    ),
];

/// TensorFlow's datatype for a spec's; `DT_INVALID` for a spec that accepts any.
pub fn tf_dtype(datatype: Option<DataType>) -> TfDtype {
    TF_DTYPES.iter().find(|(d, _)| Some(*d) == datatype).map_or(
        TfDtype {
            name: "DT_INVALID",
            number: 0,
        },
        |(_, tf)| *tf,
    )
}

/// The tensord datatype of a TensorFlow datatype number, if there is one.
pub fn datatype_of_tf(number: i32) -> Option<DataType> {
    TF_DTYPES
        .iter()
        .find(|(_, tf)| tf.number == number)
        .map(|(d, _)| *d)
}
