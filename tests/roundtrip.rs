//! Property tests: any tensor of any datatype and shape survives binary → JSON → binary, and
//! any request survives request → wire (JSON header plus binary tensors) → request.

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{json, Value};
use tensord::doors::v2::decode_infer_request;
use tensord::tensors::{decode_json_data, push_bytes_element, write_json_data, DataType, Tensor};

/// Tensor bytes for `count` elements from raw material: every bit pattern for integers,
/// finite values for floats (JSON has no NaN or infinity; tensord writes them as Python
/// does, but they do not come back through strict JSON), UTF-8 strings for BYTES.
fn tensor_bytes(datatype: DataType, count: usize, seed: &[u8], words: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let byte = |i: usize| seed.get(i % seed.len().max(1)).copied().unwrap_or(0);
    for i in 0..count {
        match datatype {
            DataType::Bool => out.push(byte(i) & 1),
            DataType::Bytes => {
                push_bytes_element(&mut out, words[i % words.len()].as_bytes()).unwrap();
            }
            _ => {
                let size = datatype.element_size().unwrap();
                let mut element: Vec<u8> = (0..size).map(|j| byte(i * size + j)).collect();
                // Clear the top exponent bit of floats: always finite.
                match datatype {
                    DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => {
                        element[size - 1] &= 0b1011_1111;
                    }
                    _ => {}
                }
                out.extend_from_slice(&element);
            }
        }
    }
    out
}

fn arbitrary_tensor() -> impl Strategy<Value = Tensor> {
    (
        0..DataType::ALL.len(),
        proptest::collection::vec(0u64..4, 0..4),
        proptest::collection::vec(any::<u8>(), 1..256),
        proptest::collection::vec("\\PC{0,6}", 1..4),
    )
        .prop_map(|(d, shape, seed, words)| {
            let datatype = DataType::ALL[d];
            let count = shape.iter().product::<u64>() as usize;
            let data = tensor_bytes(datatype, count, &seed, &words);
            Tensor::new(datatype, shape, Bytes::from(data), u64::MAX).unwrap()
        })
}

proptest! {
    #[test]
    fn binary_json_binary(tensor in arbitrary_tensor()) {
        let mut text = Vec::new();
        write_json_data(&mut text, &tensor);
        let text = String::from_utf8(text).unwrap();
        let back = decode_json_data(&text, tensor.datatype, &tensor.shape, u64::MAX).unwrap();
        prop_assert_eq!(back, tensor.data, "{} {:?}: {}", tensor.datatype, tensor.shape, text);
    }

    #[test]
    fn request_wire_request(
        tensors in proptest::collection::vec(arbitrary_tensor(), 1..5),
        binary in proptest::collection::vec(any::<bool>(), 5),
        id in proptest::option::of("[a-z0-9-]{1,12}"),
    ) {
        let mut inputs = Vec::new();
        let mut payload = Vec::new();
        for (i, tensor) in tensors.iter().enumerate() {
            let mut entry = json!({
                "name": format!("INPUT{i}"),
                "shape": tensor.shape,
                "datatype": tensor.datatype.as_str(),
            });
            if binary[i] {
                entry["parameters"] = json!({"binary_data_size": tensor.data.len()});
                payload.extend_from_slice(&tensor.data);
            } else {
                let mut data = Vec::new();
                write_json_data(&mut data, tensor);
                entry["data"] = serde_json::from_slice::<Value>(&data).unwrap();
            }
            inputs.push(entry);
        }
        let mut header = json!({"inputs": inputs, "outputs": [{"name": "OUTPUT0"}]});
        if let Some(id) = &id {
            header["id"] = json!(id);
        }
        let mut body = header.to_string().into_bytes();
        let header_len = body.len() as u64;
        body.extend_from_slice(&payload);
        let body = Bytes::from(body);
        let request = decode_infer_request(&body, Some(header_len), u64::MAX).unwrap();
        prop_assert_eq!(request.id.as_deref(), id.as_deref());
        prop_assert_eq!(request.inputs.len(), tensors.len());
        prop_assert_eq!(request.outputs.len(), 1);
        for (i, (input, tensor)) in request.inputs.iter().zip(&tensors).enumerate() {
            prop_assert_eq!(input.name.as_ref(), format!("INPUT{i}"));
            prop_assert_eq!(&input.tensor, tensor);
        }
    }
}
