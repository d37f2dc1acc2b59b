//! Tensors: datatypes, shapes and bytes, and their JSON spelling. Knows nothing of HTTP or models.

mod datatype;
mod error;
mod json_data;
mod nested_json;
mod tensor;

pub use datatype::DataType;
pub use error::TensorError;
pub use json_data::{decode_json_data, write_json_data};
pub use nested_json::{tensor_of_nested, to_nested};
pub use tensor::{
    element_count, fit_dims, fixed_byte_size, push_bytes_element, BytesElements, Tensor,
};
