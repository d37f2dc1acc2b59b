//! Batch tensors: requests' inputs gathered along the batch dimension (the one copy batching
//! costs), and a batch's outputs scattered back as slices of the batch's buffers (no copy).

use crate::engine::Error;
use crate::tensors::{element_count, DataType, Tensor};

/// Concatenates the same input of several requests along dimension 0.
pub fn gather(parts: &[&Tensor]) -> Result<Tensor, Error> {
    let first = parts
        .first()
        .ok_or_else(|| Error::internal("an empty batch"))?;
    let rows: u64 = parts
        .iter()
        .map(|t| t.shape.first().copied().unwrap_or(1))
        .sum();
    let mut data = Vec::with_capacity(parts.iter().map(|t| t.data.len()).sum());
    for part in parts {
        data.extend_from_slice(&part.data);
    }
    let mut shape = first.shape.clone();
    if let Some(batch) = shape.first_mut() {
        *batch = rows;
    }
    Ok(Tensor {
        datatype: first.datatype,
        shape,
        data: data.into(),
    })
}

/// Splits a batch output into consecutive row ranges of the given sizes.
pub fn scatter(output: &Tensor, rows: &[u64]) -> Result<Vec<Tensor>, Error> {
    let total: u64 = rows.iter().sum();
    if output.shape.first() != Some(&total) {
        return Err(Error::internal(format!(
            "the model returned an output of shape {:?} for a batch of {total}",
            output.shape
        )));
    }
    let row_elements =
        element_count(&output.shape[1..], u64::MAX).map_err(|e| Error::internal(e.to_string()))?;
    let offsets = row_offsets(output, row_elements, total)?;
    let mut parts = Vec::with_capacity(rows.len());
    let mut row = 0usize;
    for &n in rows {
        let end = row + n as usize;
        let mut shape = output.shape.clone();
        shape[0] = n;
        parts.push(Tensor {
            datatype: output.datatype,
            shape,
            data: output.data.slice(offsets[row]..offsets[end]),
        });
        row = end;
    }
    Ok(parts)
}

/// Byte offset of the start of each row, and of the end (`total + 1` entries).
fn row_offsets(output: &Tensor, row_elements: u64, total: u64) -> Result<Vec<usize>, Error> {
    if let Some(size) = output.datatype.element_size() {
        let row_bytes = row_elements as usize * size;
        return Ok((0..=total as usize).map(|r| r * row_bytes).collect());
    }
    debug_assert_eq!(output.datatype, DataType::Bytes);
    // BYTES: walk the length prefixes, noting where each row starts.
    let mut offsets = Vec::with_capacity(total as usize + 1);
    let mut offset = 0usize;
    for (i, element) in output.bytes_elements().enumerate() {
        if (i as u64).is_multiple_of(row_elements.max(1)) {
            offsets.push(offset);
        }
        offset += 4 + element.len();
    }
    while offsets.len() <= total as usize {
        offsets.push(offset);
    }
    if offset != output.data.len() {
        return Err(Error::internal("the model returned malformed BYTES data"));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::push_bytes_element;

    fn int32(shape: &[u64], values: &[i32]) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DataType::Int32, shape.to_vec(), data.into(), 1000).unwrap()
    }

    #[test]
    fn gather_then_scatter_gives_each_request_its_rows() {
        let a = int32(&[1, 2], &[1, 2]);
        let b = int32(&[2, 2], &[3, 4, 5, 6]);
        let c = int32(&[0, 2], &[]);
        let batch = gather(&[&a, &b, &c]).unwrap();
        assert_eq!(batch, int32(&[3, 2], &[1, 2, 3, 4, 5, 6]));
        let parts = scatter(&batch, &[1, 2, 0]).unwrap();
        assert_eq!(parts, vec![a, b, c]);
        assert_eq!(
            parts[1].data.as_ptr(),
            batch.data[8..].as_ptr(),
            "a slice, not a copy"
        );
        assert!(scatter(&batch, &[1, 1]).is_err());
    }

    #[test]
    fn bytes_rows_are_found_by_walking() {
        let mut data = Vec::new();
        for e in [&b"a"[..], b"bb", b"", b"dddd"] {
            push_bytes_element(&mut data, e).unwrap();
        }
        let batch = Tensor::new(DataType::Bytes, vec![2, 2], data.into(), 100).unwrap();
        let parts = scatter(&batch, &[1, 1]).unwrap();
        assert_eq!(
            parts[0].bytes_elements().collect::<Vec<_>>(),
            vec![&b"a"[..], b"bb"]
        );
        assert_eq!(
            parts[1].bytes_elements().collect::<Vec<_>>(),
            vec![&b""[..], b"dddd"]
        );
        assert_eq!(parts[1].shape, vec![1, 2]);
    }
}
