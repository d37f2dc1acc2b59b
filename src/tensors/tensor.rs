//! A tensor as the wire carries it: datatype, shape and little-endian row-major bytes.

use bytes::Bytes;

use super::{DataType, TensorError};

/// Tensor bytes are a `Bytes` view, usually a slice of the request buffer, so
/// handing a tensor from socket to model and back copies nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub datatype: DataType,
    pub shape: Vec<u64>,
    pub data: Bytes,
}

impl Tensor {
    /// Builds a tensor after checking that `data` holds exactly the elements `shape` names.
    pub fn new(
        datatype: DataType,
        shape: Vec<u64>,
        data: Bytes,
        max_elements: u64,
    ) -> Result<Tensor, TensorError> {
        let count = element_count(&shape, max_elements)?;
        check_data_len(datatype, count, &data)?;
        Ok(Tensor {
            datatype,
            shape,
            data,
        })
    }

    /// Iterates the elements of a BYTES tensor (without their length prefixes).
    pub fn bytes_elements(&self) -> BytesElements<'_> {
        BytesElements { rest: &self.data }
    }
}

/// The number of elements of `shape`, refusing overflow and counts past `max_elements`.
/// The shape `dims` takes for `count` elements: one variable dimension (-1) takes what the
/// fixed ones leave; `None` when they cannot hold exactly `count`.
pub fn fit_dims(dims: &[i64], count: u64) -> Option<Vec<u64>> {
    let fixed: u64 = dims
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as u64)
        .product();
    let inferred = match dims.iter().filter(|&&d| d < 0).count() {
        0 if fixed == count => 0,
        1 if fixed != 0 && count.is_multiple_of(fixed) => count / fixed,
        _ => return None,
    };
    Some(
        dims.iter()
            .map(|&d| if d < 0 { inferred } else { d as u64 })
            .collect(),
    )
}

pub fn element_count(shape: &[u64], max_elements: u64) -> Result<u64, TensorError> {
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &dim| acc.checked_mul(dim))
        .ok_or_else(|| TensorError::ShapeOverflow(shape.to_vec()))?;
    if count > max_elements {
        return Err(TensorError::TooManyElements {
            count,
            limit: max_elements,
        });
    }
    Ok(count)
}

/// The byte size of `count` fixed-size elements, or `None` for BYTES.
pub fn fixed_byte_size(datatype: DataType, count: u64) -> Option<u64> {
    datatype
        .element_size()
        .map(|size| count.saturating_mul(size as u64))
}

fn check_data_len(datatype: DataType, count: u64, data: &[u8]) -> Result<(), TensorError> {
    match fixed_byte_size(datatype, count) {
        Some(expected) if expected == data.len() as u64 => Ok(()),
        Some(expected) => Err(TensorError::SizeMismatch {
            expected,
            actual: data.len() as u64,
        }),
        None => check_bytes_elements(count, data),
    }
}

/// Walks the length prefixes of a BYTES tensor: exactly `count` elements, no byte left over.
fn check_bytes_elements(count: u64, data: &[u8]) -> Result<(), TensorError> {
    let mut elements = BytesElements { rest: data };
    let mut seen = 0u64;
    while !elements.rest.is_empty() {
        elements
            .next_checked()
            .map_err(|at| TensorError::BytesPrefixPastEnd {
                element: seen,
                offset: (data.len() - at) as u64,
            })?;
        seen += 1;
    }
    if seen != count {
        return Err(TensorError::BytesCountMismatch {
            expected: count,
            actual: seen,
        });
    }
    Ok(())
}

/// Iterator over BYTES elements; stops at the first malformed prefix (validated tensors have none).
pub struct BytesElements<'a> {
    rest: &'a [u8],
}

impl<'a> BytesElements<'a> {
    /// Next element, or `Err(remaining_len)` when the prefix or its bytes run past the end.
    fn next_checked(&mut self) -> Result<&'a [u8], usize> {
        let remaining = self.rest.len();
        let (prefix, tail) = self.rest.split_first_chunk::<4>().ok_or(remaining)?;
        let len = u32::from_le_bytes(*prefix) as usize;
        if len > tail.len() {
            return Err(remaining);
        }
        let (element, rest) = tail.split_at(len);
        self.rest = rest;
        Ok(element)
    }
}

impl<'a> Iterator for BytesElements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        self.next_checked().ok()
    }
}

/// Appends one BYTES element (length prefix and bytes) to `out`.
pub fn push_bytes_element(out: &mut Vec<u8>, element: &[u8]) -> Result<(), TensorError> {
    let len = u32::try_from(element.len()).map_err(|_| TensorError::BytesElementTooLong)?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(element);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_size_tensors_must_match_shape() {
        let ok = Tensor::new(DataType::Fp32, vec![2, 2], Bytes::from(vec![0u8; 16]), 100);
        assert_eq!(ok.unwrap().shape, vec![2, 2]);
        let err = Tensor::new(DataType::Fp32, vec![2, 2], Bytes::from(vec![0u8; 12]), 100);
        assert_eq!(
            err.unwrap_err(),
            TensorError::SizeMismatch {
                expected: 16,
                actual: 12
            }
        );
    }

    #[test]
    fn overflowing_and_oversized_shapes_are_refused() {
        let shape = vec![u64::MAX, 2];
        assert_eq!(
            element_count(&shape, u64::MAX),
            Err(TensorError::ShapeOverflow(shape))
        );
        assert_eq!(
            element_count(&[10, 10], 99),
            Err(TensorError::TooManyElements {
                count: 100,
                limit: 99
            })
        );
        assert_eq!(element_count(&[], 1), Ok(1));
        assert_eq!(element_count(&[3, 0], 1), Ok(0));
    }

    #[test]
    fn bytes_elements_are_walked_exactly() {
        let mut data = Vec::new();
        push_bytes_element(&mut data, b"ab").unwrap();
        push_bytes_element(&mut data, b"").unwrap();
        push_bytes_element(&mut data, b"xyz").unwrap();
        let tensor = Tensor::new(DataType::Bytes, vec![3], Bytes::from(data.clone()), 10).unwrap();
        let elements: Vec<&[u8]> = tensor.bytes_elements().collect();
        assert_eq!(elements, vec![&b"ab"[..], b"", b"xyz"]);

        let err = Tensor::new(DataType::Bytes, vec![2], Bytes::from(data.clone()), 10);
        assert_eq!(
            err.unwrap_err(),
            TensorError::BytesCountMismatch {
                expected: 2,
                actual: 3
            }
        );
        let mut lying = data.clone();
        lying.extend_from_slice(&100u32.to_le_bytes());
        lying.push(1);
        let err = Tensor::new(DataType::Bytes, vec![4], Bytes::from(lying), 10);
        assert_eq!(
            err.unwrap_err(),
            TensorError::BytesPrefixPastEnd {
                element: 3,
                offset: 17
            }
        );
        let err = Tensor::new(DataType::Bytes, vec![1], Bytes::from_static(&[1, 0]), 10);
        assert!(matches!(
            err,
            Err(TensorError::BytesPrefixPastEnd { element: 0, .. })
        ));
    }
}
