//! Triton's classification extension: instead of an output, its K largest values per batch row,
//! each as the BYTES element "value:index", or "value:index:label" when the output has labels.

use half::{bf16, f16};

use super::Error;
use crate::tensors::{push_bytes_element, DataType, Tensor};

/// The element size of a datatype classification can rank; BOOL and BYTES it cannot.
pub fn classifiable(datatype: DataType) -> Result<usize, Error> {
    match datatype {
        DataType::Bool | DataType::Bytes => None,
        numeric => numeric.element_size(),
    }
    .ok_or_else(|| {
        Error::invalid(format!(
            "classification needs a numeric output, not {datatype}"
        ))
    })
}

/// The top `k` classes of `output` (per row when the model batches: shape [rows, k]; else [k]).
/// Values are written as Triton writes them (`std::to_string`: integers plain, floats with six
/// decimals); equal values keep their index order.
pub fn top_k(output: &Tensor, k: u64, batching: bool, labels: &[String]) -> Result<Tensor, Error> {
    let size = classifiable(output.datatype)?;
    let count = output.data.len() / size;
    let rows = match (batching, output.shape.first()) {
        (true, Some(&rows)) => rows as usize,
        _ => 1,
    };
    let per_row = count.checked_div(rows).unwrap_or(0);
    let k = (k as usize).min(per_row);
    let mut data = Vec::new();
    for row in 0..rows {
        let first = row * per_row;
        let keys: Vec<f64> = (first..first + per_row)
            .map(|i| value(output, size, i).0)
            .collect();
        let mut order: Vec<usize> = (0..per_row).collect();
        order.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]));
        for &class in &order[..k] {
            let mut text = format!("{}:{class}", value(output, size, first + class).1);
            if let Some(label) = labels.get(class) {
                text.push(':');
                text.push_str(label);
            }
            push_bytes_element(&mut data, text.as_bytes())
                .map_err(|e| Error::internal(e.to_string()))?;
        }
    }
    let shape = match batching {
        true => vec![rows as u64, k as u64],
        false => vec![k as u64],
    };
    Tensor::new(DataType::Bytes, shape, data.into(), u64::MAX)
        .map_err(|e| Error::internal(e.to_string()))
}

/// Element `i` of a numeric tensor: its value for ordering, and its text.
fn value(tensor: &Tensor, size: usize, i: usize) -> (f64, String) {
    let bytes = &tensor.data[i * size..(i + 1) * size];
    macro_rules! read {
        ($t:ty) => {
            <$t>::from_le_bytes(bytes.try_into().unwrap_or_default())
        };
    }
    let float = |v: f64| (v, format!("{v:.6}"));
    match tensor.datatype {
        DataType::Uint8 => (read!(u8).into(), read!(u8).to_string()),
        DataType::Uint16 => (read!(u16).into(), read!(u16).to_string()),
        DataType::Uint32 => (read!(u32).into(), read!(u32).to_string()),
        DataType::Uint64 => (read!(u64) as f64, read!(u64).to_string()),
        DataType::Int8 => (read!(i8).into(), read!(i8).to_string()),
        DataType::Int16 => (read!(i16).into(), read!(i16).to_string()),
        DataType::Int32 => (read!(i32).into(), read!(i32).to_string()),
        DataType::Int64 => (read!(i64) as f64, read!(i64).to_string()),
        DataType::Fp16 => float(f16::from_bits(read!(u16)).into()),
        DataType::Bf16 => float(bf16::from_bits(read!(u16)).into()),
        DataType::Fp32 => float(read!(f32).into()),
        DataType::Fp64 | DataType::Bool | DataType::Bytes => float(read!(f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp32(shape: Vec<u64>, values: &[f32]) -> Tensor {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::new(DataType::Fp32, shape, data.into(), 100).unwrap()
    }

    fn texts(t: &Tensor) -> Vec<String> {
        t.bytes_elements()
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn top_k_per_row_with_labels_as_triton_writes_them() {
        let t = fp32(vec![2, 3], &[0.1, 0.7, 0.2, 5.0, -1.0, 5.0]);
        let labels = ["cat".to_string(), "dog".to_string()];
        let top = top_k(&t, 2, true, &labels).unwrap();
        assert_eq!(top.shape, vec![2, 2]);
        assert_eq!(
            texts(&top),
            [
                "0.700000:1:dog",
                "0.200000:2",
                "5.000000:0:cat",
                "5.000000:2"
            ]
        );
        // Unbatched: the whole output is one row; K is capped at the number of classes.
        let top = top_k(&fp32(vec![3], &[1.0, 3.0, 2.0]), 9, false, &[]).unwrap();
        assert_eq!(top.shape, vec![3]);
        assert_eq!(texts(&top), ["3.000000:1", "2.000000:2", "1.000000:0"]);
        let ints = Tensor::new(
            DataType::Int32,
            vec![3],
            vec![7, 0, 0, 0, 255, 255, 255, 255, 9, 0, 0, 0].into(),
            100,
        )
        .unwrap();
        assert_eq!(texts(&top_k(&ints, 2, false, &[]).unwrap()), ["9:2", "7:0"]);
        let bytes = Tensor::new(DataType::Bytes, vec![0], Vec::new().into(), 100).unwrap();
        assert!(top_k(&bytes, 1, false, &[])
            .unwrap_err()
            .message
            .contains("numeric"));
    }
}
