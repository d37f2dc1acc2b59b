//! Wire tensors ⇄ ONNX Runtime values.
//! - Numbers go in as views of the request's own bytes when those are aligned for their type,
//!   else after one copy into the worker's aligned scratch buffer (a binary request places
//!   tensors at any offset; a gathered batch is always aligned).
//! - BYTES go in as ONNX Runtime strings, each element copied once into its own buffer.
//! - Numeric outputs go to the response as they are: its `Bytes` owns ONNX Runtime's value.
//!   String outputs are copied once, into the V2 BYTES layout.

use std::cell::RefCell;
use std::ffi::c_void;
use std::ptr::NonNull;

use bytes::Bytes;
use half::{bf16, f16};
use ort::memory::{Allocator, MemoryInfo};
use ort::session::SessionInputValue;
use ort::value::{DynTensor, DynTensorValueType, DynValue, Shape, TensorElementType, TensorRefMut};
use ort::AsPointer;

use crate::models::ModelError;
use crate::tensors::{DataType, Tensor};

/// ONNX Runtime's element type → the V2 datatype (`None`: no V2 equivalent).
pub fn datatype_of(element: TensorElementType) -> Option<DataType> {
    use TensorElementType as E;
    Some(match element {
        E::Bool => DataType::Bool,
        E::Uint8 => DataType::Uint8,
        E::Uint16 => DataType::Uint16,
        E::Uint32 => DataType::Uint32,
        E::Uint64 => DataType::Uint64,
        E::Int8 => DataType::Int8,
        E::Int16 => DataType::Int16,
        E::Int32 => DataType::Int32,
        E::Int64 => DataType::Int64,
        E::Float16 => DataType::Fp16,
        E::Bfloat16 => DataType::Bf16,
        E::Float32 => DataType::Fp32,
        E::Float64 => DataType::Fp64,
        E::String => DataType::Bytes,
        _ => return None,
    })
}

thread_local! {
    /// Aligned copies of the inputs that need one. Each worker thread keeps its buffer between
    /// runs, so an unaligned input costs a memcpy rather than a fresh mapping's page faults.
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer larger than this (in 8-byte words: 64 MiB) is freed after its run.
const KEEP_SCRATCH_WORDS: usize = 8 << 20;

/// Runs `run` on the session inputs for `tensors` (named `names`): each a view of its own bytes
/// when they are aligned for its datatype, else of an aligned copy in the thread's scratch.
pub fn with_inputs<R>(
    names: &[String],
    tensors: &[Tensor],
    run: impl FnOnce(Vec<(&str, SessionInputValue<'_>)>) -> Result<R, ModelError>,
) -> Result<R, ModelError> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            let result = feed(&mut scratch, names, tensors, run);
            if scratch.len() > KEEP_SCRATCH_WORDS {
                *scratch = Vec::new();
            }
            result
        }
        // Not reached (a run does not start another on its thread); a private buffer is correct.
        Err(_) => feed(&mut Vec::new(), names, tensors, run),
    })
}

fn feed<R>(
    scratch: &mut Vec<u64>,
    names: &[String],
    tensors: &[Tensor],
    run: impl FnOnce(Vec<(&str, SessionInputValue<'_>)>) -> Result<R, ModelError>,
) -> Result<R, ModelError> {
    let starts = stage(scratch, tensors);
    let scratch = as_bytes(scratch);
    let values = names
        .iter()
        .zip(tensors)
        .zip(&starts)
        .map(|((name, tensor), start)| {
            let data = match start {
                Some(at) => &scratch[at * 8..at * 8 + tensor.data.len()],
                None => &tensor.data[..],
            };
            Ok((name.as_str(), input(name, tensor, data)?))
        })
        .collect::<Result<Vec<_>, ModelError>>()?;
    run(values)
}

/// Copies every tensor that is not aligned for its datatype into `scratch` (grown as needed);
/// returns where each copy starts, in words (`None`: read in place).
fn stage(scratch: &mut Vec<u64>, tensors: &[Tensor]) -> Vec<Option<usize>> {
    let mut words = 0;
    let starts: Vec<Option<usize>> = tensors
        .iter()
        .map(|t| {
            let size = t.datatype.element_size()?;
            if (t.data.as_ptr() as usize).is_multiple_of(size) {
                return None;
            }
            let at = words;
            words += t.data.len().div_ceil(8);
            Some(at)
        })
        .collect();
    if scratch.len() < words {
        scratch.resize(words, 0);
    }
    for (tensor, at) in tensors.iter().zip(&starts) {
        if let Some(at) = at {
            let bytes = as_bytes_mut(scratch);
            bytes[at * 8..at * 8 + tensor.data.len()].copy_from_slice(&tensor.data);
        }
    }
    starts
}

fn as_bytes(words: &[u64]) -> &[u8] {
    // SAFETY: u64s are readable as bytes, for the same lifetime.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), words.len() * 8) }
}

fn as_bytes_mut(words: &mut [u64]) -> &mut [u8] {
    // SAFETY: any bytes are a valid u64; the borrow is exclusive for the same lifetime.
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 8) }
}

/// `tensor` (named `name`) as a session input over `data`: its bytes, or their aligned copy.
fn input<'a>(
    name: &str,
    tensor: &Tensor,
    data: &'a [u8],
) -> Result<SessionInputValue<'a>, ModelError> {
    let shape = Shape::new(tensor.shape.iter().map(|&d| d as i64));
    let data = data.as_ptr();
    macro_rules! view {
        ($t:ty) => {{
            // SAFETY: `data` holds exactly the elements `shape` names (checked when the tensor was
            // built), aligned for $t, and stays borrowed for 'a. ONNX Runtime only reads inputs.
            let view = unsafe {
                TensorRefMut::<'a, $t>::from_raw(
                    MemoryInfo::default(),
                    data.cast_mut().cast::<c_void>(),
                    shape,
                )
            };
            SessionInputValue::from(view.map_err(|e| ort_error(&e))?)
        }};
    }
    Ok(match tensor.datatype {
        DataType::Bool => {
            // A C++ bool must be 0 or 1; any other byte would be read as neither.
            if let Some(i) = tensor.data.iter().position(|&b| b > 1) {
                return Err(ModelError::invalid(format!(
                    "input '{name}': BOOL element {i} is the byte {}, not 0 or 1",
                    tensor.data[i]
                )));
            }
            view!(bool)
        }
        DataType::Uint8 => view!(u8),
        DataType::Uint16 => view!(u16),
        DataType::Uint32 => view!(u32),
        DataType::Uint64 => view!(u64),
        DataType::Int8 => view!(i8),
        DataType::Int16 => view!(i16),
        DataType::Int32 => view!(i32),
        DataType::Int64 => view!(i64),
        DataType::Fp16 => view!(f16),
        DataType::Bf16 => view!(bf16),
        DataType::Fp32 => view!(f32),
        DataType::Fp64 => view!(f64),
        DataType::Bytes => SessionInputValue::from(strings(tensor, shape)?),
    })
}

/// A BYTES tensor as an ONNX Runtime string tensor, byte for byte (NULs and non-UTF-8 included).
fn strings(tensor: &Tensor, shape: Shape) -> Result<DynTensor, ModelError> {
    let mut value = DynTensor::new(&Allocator::default(), TensorElementType::String, shape)
        .map_err(|e| ort_error(&e))?;
    for (index, element) in tensor.bytes_elements().enumerate() {
        let mut buffer: *mut std::ffi::c_char = std::ptr::null_mut();
        // SAFETY: `value` is a string tensor with an element at `index`; ONNX Runtime resizes
        // that element to `element.len()` bytes and hands back its buffer, which is written once.
        unsafe {
            check((ort::api().GetResizedStringTensorElementBuffer)(
                value.ptr_mut(),
                index,
                element.len(),
                &mut buffer,
            ))?;
            std::ptr::copy_nonoverlapping(element.as_ptr(), buffer.cast::<u8>(), element.len());
        }
    }
    Ok(value)
}

/// An output value as a wire tensor of the datatype its element type maps to.
pub fn output(name: &str, value: DynValue) -> Result<Tensor, ModelError> {
    let tensor = value
        .downcast::<DynTensorValueType>()
        .map_err(|_| ModelError::internal(format!("output '{name}' is not a tensor")))?;
    let element = *tensor.data_type();
    let datatype = datatype_of(element).ok_or_else(|| {
        ModelError::internal(format!(
            "output '{name}' has element type {element}, which V2 lacks"
        ))
    })?;
    let shape: Vec<u64> = tensor.shape().iter().map(|&d| d.max(0) as u64).collect();
    let count = tensor.shape().num_elements();
    let data = if datatype == DataType::Bytes {
        string_bytes(&tensor, count)?
    } else {
        let len = element.byte_size(count).unwrap_or(0);
        if len == 0 || tensor.data_ptr().is_null() {
            Bytes::new()
        } else {
            Bytes::from_owner(OutputBytes { tensor, len })
        }
    };
    Ok(Tensor {
        datatype,
        shape,
        data,
    })
}

/// A numeric output's bytes, read in place: ONNX Runtime's value stays alive (its memory out of
/// the session's arena) until the response that carries it has been written.
struct OutputBytes {
    tensor: DynTensor,
    len: usize,
}

impl AsRef<[u8]> for OutputBytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a CPU tensor's data (non-null, checked before) holds `len` bytes, unmoved while
        // the value lives, and nothing writes to an output after its run.
        unsafe { std::slice::from_raw_parts(self.tensor.data_ptr().cast::<u8>(), self.len) }
    }
}

/// A string tensor in the V2 BYTES layout: each element as a u32 length and its bytes, written
/// straight into the response buffer.
fn string_bytes(tensor: &DynTensor, count: usize) -> Result<Bytes, ModelError> {
    let api = ort::api();
    let mut lengths = Vec::with_capacity(count);
    for index in 0..count {
        let mut len = 0usize;
        // SAFETY: `index` is within the tensor's elements.
        check(unsafe { (api.GetStringTensorElementLength)(tensor.ptr(), index, &mut len) })?;
        lengths.push(len);
    }
    let total = lengths.iter().map(|l| l + 4).sum();
    let mut out = Vec::<u8>::with_capacity(total);
    for (index, &len) in lengths.iter().enumerate() {
        let prefix = u32::try_from(len)
            .map_err(|_| ModelError::internal(format!("string element {index} is over 4 GiB")))?;
        out.extend_from_slice(&prefix.to_le_bytes());
        let at = out.len();
        // SAFETY: `out` has capacity for `len` more bytes (reserved above); ONNX Runtime writes
        // exactly `len` bytes of element `index` there, and only then is the length extended.
        unsafe {
            check((api.GetStringTensorElement)(
                tensor.ptr(),
                len,
                index,
                out.as_mut_ptr().add(at).cast::<c_void>(),
            ))?;
            out.set_len(at + len);
        }
    }
    Ok(Bytes::from(out))
}

/// An ONNX Runtime status from a raw API call as a result (releasing the status).
fn check(status: ort::sys::OrtStatusPtr) -> Result<(), ModelError> {
    let Some(status) = NonNull::new(status.0) else {
        return Ok(());
    };
    let api = ort::api();
    // SAFETY: a non-null status carries a NUL-terminated message until it is released.
    let message = unsafe {
        let text = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.as_ptr()))
            .to_string_lossy()
            .into_owned();
        (api.ReleaseStatus)(status.as_ptr());
        text
    };
    Err(ModelError::internal(message))
}

/// ONNX Runtime's refusal of the request's data is the request's fault (400); anything else is a
/// model failure (500). Both carry ONNX Runtime's message.
pub fn ort_error<R>(e: &ort::Error<R>) -> ModelError {
    match e.code() {
        ort::ErrorCode::InvalidArgument => ModelError::invalid(e.message()),
        _ => ModelError::internal(e.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_misaligned_numbers_are_copied_and_the_scratch_is_reused() {
        let values: Vec<u8> = [1.5f32, -2.0, 3.25]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut buf = vec![0u8; 4];
        buf.extend_from_slice(&values);
        let body = Bytes::from(buf);
        let base = body.as_ptr() as usize;
        let tensors: Vec<Tensor> = (0..4)
            .map(|offset| {
                let data = body.slice(offset..offset + values.len());
                Tensor::new(DataType::Fp32, vec![3], data, 100).unwrap()
            })
            .chain([Tensor::new(
                DataType::Bytes,
                vec![1],
                Bytes::from_static(b"\x01\0\0\0a"),
                9,
            )
            .unwrap()])
            .collect();
        let mut scratch = Vec::new();
        let starts = stage(&mut scratch, &tensors);
        let copied: Vec<usize> = (0..4).filter(|&o| starts[o].is_some()).collect();
        assert_eq!(
            copied.len(),
            3,
            "three offsets in four are misaligned: {starts:?}"
        );
        for (offset, start) in starts.iter().take(4).enumerate() {
            assert_eq!(start.is_none(), (base + offset).is_multiple_of(4));
            if let Some(at) = start {
                assert_eq!(
                    &as_bytes(&scratch)[at * 8..at * 8 + 12],
                    &tensors[offset].data[..]
                );
            }
        }
        assert_eq!(starts[4], None, "BYTES are never realigned");
        let grown = scratch.as_ptr();
        stage(&mut scratch, &tensors);
        assert_eq!(scratch.as_ptr(), grown, "the second run reuses the buffer");
    }
}
