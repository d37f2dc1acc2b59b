//! What can be wrong with tensor data, in words a client can act on.

use std::fmt;

use super::DataType;

#[derive(Clone, Debug, PartialEq)]
pub enum TensorError {
    ShapeOverflow(Vec<u64>),
    TooManyElements { count: u64, limit: u64 },
    SizeMismatch { expected: u64, actual: u64 },
    BytesPrefixPastEnd { element: u64, offset: u64 },
    BytesCountMismatch { expected: u64, actual: u64 },
    BytesElementTooLong,
    JsonCountMismatch { expected: u64, actual: u64 },
    JsonNesting(String),
    JsonValue { datatype: DataType, value: String },
    Json(String),
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorError::ShapeOverflow(shape) => {
                write!(f, "shape {shape:?} has more elements than fit in 64 bits")
            }
            TensorError::TooManyElements { count, limit } => {
                write!(f, "shape has {count} elements, over the limit of {limit}")
            }
            TensorError::SizeMismatch { expected, actual } => write!(
                f,
                "data has {actual} bytes but datatype and shape need {expected}"
            ),
            TensorError::BytesPrefixPastEnd { element, offset } => write!(
                f,
                "BYTES element {element} at byte {offset}: length prefix runs past the end of the data"
            ),
            TensorError::BytesCountMismatch { expected, actual } => write!(
                f,
                "BYTES data holds {actual} elements but the shape needs {expected}"
            ),
            TensorError::BytesElementTooLong => {
                f.write_str("BYTES element longer than 4 GiB cannot be length-prefixed")
            }
            TensorError::JsonCountMismatch { expected, actual } => write!(
                f,
                "JSON data has {actual} elements but the shape needs {expected}"
            ),
            TensorError::JsonNesting(why) => write!(f, "JSON data does not match the shape: {why}"),
            TensorError::JsonValue { datatype, value } => {
                write!(f, "JSON value {value} is not a valid {datatype}")
            }
            TensorError::Json(why) => write!(f, "invalid JSON data: {why}"),
        }
    }
}

impl std::error::Error for TensorError {}
