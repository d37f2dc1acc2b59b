//! Wire tensors ⇄ candle tensors: one copy in (bytes → typed Vec, handed to candle without
//! another), one copy out (candle → Vec, handed to the response as `Bytes` without another).

use bytes::Bytes;
use candle_core::{DType, Device};
use half::{bf16, f16};

use super::ModelError;
use crate::tensors::{DataType, Tensor};

#[cfg(not(target_endian = "little"))]
compile_error!("tensord's tensor bytes are little-endian and reinterpreted in place");

/// Plain numbers: every bit pattern is a valid value, so bytes can be reinterpreted.
trait Pod: Copy + candle_core::WithDType {}
impl Pod for u8 {}
impl Pod for u32 {}
impl Pod for i16 {}
impl Pod for i32 {}
impl Pod for i64 {}
impl Pod for f16 {}
impl Pod for bf16 {}
impl Pod for f32 {}
impl Pod for f64 {}

/// The candle dtype a wire datatype travels as (BOOL as U8).
pub fn candle_dtype(datatype: DataType) -> Result<DType, ModelError> {
    Ok(match datatype {
        DataType::Bool | DataType::Uint8 => DType::U8,
        DataType::Uint32 => DType::U32,
        DataType::Int16 => DType::I16,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Fp16 => DType::F16,
        DataType::Bf16 => DType::BF16,
        DataType::Fp32 => DType::F32,
        DataType::Fp64 => DType::F64,
        other => {
            return Err(ModelError::invalid(format!(
                "datatype {other} has no candle equivalent"
            )))
        }
    })
}

fn pod_vec<T: Pod>(data: &[u8]) -> Vec<T> {
    let n = data.len() / std::mem::size_of::<T>();
    let mut v = Vec::<T>::with_capacity(n);
    // SAFETY: T is Pod (any bytes are a valid T), the destination has room for n elements,
    // and the source is read as bytes, so its alignment does not matter.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            v.as_mut_ptr().cast::<u8>(),
            n * std::mem::size_of::<T>(),
        );
        v.set_len(n);
    }
    v
}

/// candle's message without the backtrace it appends when RUST_BACKTRACE is set.
pub fn candle_message(e: &candle_core::Error) -> String {
    let text = e.to_string();
    text.lines().next().unwrap_or_default().to_string()
}

fn candle_err(e: candle_core::Error) -> ModelError {
    ModelError::internal(candle_message(&e))
}

/// A wire tensor as a candle tensor on `device`.
pub fn to_candle(tensor: &Tensor, device: &Device) -> Result<candle_core::Tensor, ModelError> {
    let shape: Vec<usize> = tensor.shape.iter().map(|&d| d as usize).collect();
    macro_rules! build {
        ($t:ty) => {
            candle_core::Tensor::from_vec(pod_vec::<$t>(&tensor.data), shape, device)
        };
    }
    match candle_dtype(tensor.datatype)? {
        DType::U8 => build!(u8),
        DType::U32 => build!(u32),
        DType::I16 => build!(i16),
        DType::I32 => build!(i32),
        DType::I64 => build!(i64),
        DType::F16 => build!(f16),
        DType::BF16 => build!(bf16),
        DType::F32 => build!(f32),
        DType::F64 => build!(f64),
        other => {
            return Err(ModelError::internal(format!(
                "unexpected candle dtype {other:?}"
            )))
        }
    }
    .map_err(candle_err)
}

/// A Vec of numbers viewed as its bytes, so `Bytes` can own it without a copy.
struct PodBytes<T: Pod>(Vec<T>);

impl<T: Pod> AsRef<[u8]> for PodBytes<T> {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a slice of Pod numbers is readable as bytes, with the same lifetime.
        unsafe {
            std::slice::from_raw_parts(
                self.0.as_ptr().cast::<u8>(),
                std::mem::size_of_val(&self.0[..]),
            )
        }
    }
}

/// A candle tensor as a wire tensor of `datatype` (converted when candle computed another dtype).
pub fn from_candle(tensor: &candle_core::Tensor, datatype: DataType) -> Result<Tensor, ModelError> {
    let dtype = candle_dtype(datatype)?;
    let shape: Vec<u64> = tensor.dims().iter().map(|&d| d as u64).collect();
    let flat = tensor
        .to_dtype(dtype)
        .and_then(|t| t.flatten_all())
        .map_err(candle_err)?;
    macro_rules! read {
        ($t:ty) => {
            Bytes::from_owner(PodBytes(flat.to_vec1::<$t>().map_err(candle_err)?))
        };
    }
    let data = match dtype {
        DType::U8 => read!(u8),
        DType::U32 => read!(u32),
        DType::I16 => read!(i16),
        DType::I32 => read!(i32),
        DType::I64 => read!(i64),
        DType::F16 => read!(f16),
        DType::BF16 => read!(bf16),
        DType::F32 => read!(f32),
        DType::F64 => read!(f64),
        other => {
            return Err(ModelError::internal(format!(
                "unexpected candle dtype {other:?}"
            )))
        }
    };
    Ok(Tensor {
        datatype,
        shape,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_candle() {
        let values = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.5];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        // An odd offset: request slices are not aligned.
        let mut buf = vec![0u8];
        buf.extend_from_slice(&data);
        let wire =
            Tensor::new(DataType::Fp32, vec![2, 3], Bytes::from(buf).slice(1..), 100).unwrap();
        let t = to_candle(&wire, &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 3]);
        assert_eq!(t.to_vec2::<f32>().unwrap()[1], vec![0.0, 7.0, 8.5]);
        let back = from_candle(&t, DataType::Fp32).unwrap();
        assert_eq!(back, wire);
        let as_f64 = from_candle(&t, DataType::Fp64).unwrap();
        assert_eq!(&as_f64.data[8..16], &(-2.0f64).to_le_bytes());
        let err = to_candle(
            &Tensor::new(DataType::Int8, vec![1], Bytes::from_static(&[1]), 1).unwrap(),
            &Device::Cpu,
        );
        assert!(err.unwrap_err().message.contains("INT8"));
    }
}
