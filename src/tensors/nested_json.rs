//! Tensors as nested JSON lists (TF Serving's spelling): the shape is the nesting, BYTES are
//! strings or `{"b64": ...}` objects.

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{decode_json_data, push_bytes_element, write_json_data, DataType, Tensor};

/// The shape of a rectangular nested list (a scalar has shape []).
fn shape_of(value: &Value) -> Result<Vec<u64>, String> {
    let Value::Array(items) = value else {
        return Ok(Vec::new());
    };
    let inner = match items.first() {
        Some(first) => shape_of(first)?,
        None => Vec::new(),
    };
    for item in items {
        if shape_of(item)? != inner {
            return Err("the nested lists are not rectangular".into());
        }
    }
    let mut shape = vec![items.len() as u64];
    shape.extend(inner);
    Ok(shape)
}

/// What one pass over an input's JSON text tells: its shape (from the first array at each
/// depth; the decoder then checks every array against it) and what its leaves look like.
#[derive(Debug, Default, PartialEq)]
struct Scan {
    shape: Vec<u64>,
    /// The first leaf is a string or an object (`{"b64": ...}`).
    textual: bool,
    /// Some number has a fraction or an exponent.
    fractional: bool,
    /// The first leaf is true or false.
    boolean: bool,
}

fn scan(text: &str) -> Scan {
    let mut result = Scan::default();
    let mut depth = 0usize;
    // Per depth: whether the array open there is the first at its depth, and has elements.
    let mut first_at: Vec<(bool, bool)> = Vec::new();
    let mut seen_leaf = false;
    let mut bytes = text.bytes().peekable();
    while let Some(b) = bytes.next() {
        match b {
            b'[' => {
                if let Some(parent) = first_at.last_mut() {
                    parent.1 = true;
                }
                depth += 1;
                let first = result.shape.len() < depth;
                if first {
                    result.shape.push(0);
                }
                first_at.truncate(depth - 1);
                first_at.push((first, false));
            }
            b']' => {
                if let Some((true, true)) = first_at.last() {
                    result.shape[depth - 1] += 1;
                }
                first_at.pop();
                depth = depth.saturating_sub(1);
            }
            b',' => {
                if let Some((true, _)) = first_at.last() {
                    result.shape[depth - 1] += 1;
                }
            }
            b if b.is_ascii_whitespace() => {}
            _ => {
                if let Some(open) = first_at.last_mut() {
                    open.1 = true;
                }
                if !seen_leaf {
                    seen_leaf = true;
                    result.textual = b == b'"' || b == b'{';
                    result.boolean = b == b't' || b == b'f';
                }
                match b {
                    // Skip strings and objects whole: their commas and brackets are not ours.
                    b'"' => skip_string(&mut bytes),
                    b'{' => {
                        let mut nesting = 1;
                        while let Some(c) = bytes.next() {
                            match c {
                                b'"' => skip_string(&mut bytes),
                                b'{' => nesting += 1,
                                b'}' => {
                                    nesting -= 1;
                                    if nesting == 0 {
                                        break;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    b'.' | b'e' | b'E' => result.fractional = true,
                    _ => {}
                }
            }
        }
    }
    result
}

fn skip_string(bytes: &mut std::iter::Peekable<std::str::Bytes>) {
    while let Some(c) = bytes.next() {
        match c {
            b'\\' => {
                bytes.next();
            }
            b'"' => return,
            _ => {}
        }
    }
}

/// Nested JSON lists as a tensor of the declared datatype (strings and `{"b64"}` as BYTES;
/// with none declared, what the values look like). Numbers take one scan for the shape (the
/// lists carry none) and the streaming decoder of `json_data` for the values; only strings and
/// b64 values are parsed into a tree.
pub fn tensor_of_nested(
    text: &str,
    declared: Option<DataType>,
    max_elements: u64,
) -> Result<Tensor, String> {
    let scanned = scan(text);
    if scanned.textual || declared == Some(DataType::Bytes) {
        let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let shape = shape_of(&value)?;
        let mut leaves = Vec::new();
        collect_leaves(&value, &mut leaves);
        let mut data = Vec::new();
        for leaf in leaves {
            push_bytes_element(&mut data, &leaf_bytes(leaf)?).map_err(|e| e.to_string())?;
        }
        return Tensor::new(DataType::Bytes, shape, Bytes::from(data), max_elements)
            .map_err(|e| e.to_string());
    }
    // An input that takes any datatype (identity) gets what the values look like.
    let datatype = declared.unwrap_or(match (scanned.fractional, scanned.boolean) {
        (true, _) => DataType::Fp32,
        (false, true) => DataType::Bool,
        (false, false) => DataType::Int64,
    });
    let data = if scanned.shape.is_empty() {
        // A scalar: the decoder reads arrays, so give it a one-element one.
        decode_json_data(&format!("[{text}]"), datatype, &[1], max_elements)
    } else {
        decode_json_data(text, datatype, &scanned.shape, max_elements)
    }
    .map_err(|e| e.to_string())?;
    Tensor::new(datatype, scanned.shape, data, max_elements).map_err(|e| e.to_string())
}

fn collect_leaves<'v>(value: &'v Value, out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|i| collect_leaves(i, out)),
        leaf => out.push(leaf),
    }
}

fn leaf_bytes(leaf: &Value) -> Result<Vec<u8>, String> {
    match leaf {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(map) => match map.get("b64") {
            Some(Value::String(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("invalid base64: {e}")),
            _ => Err("an object value must be {\"b64\": \"...\"}".into()),
        },
        other => Err(format!("{other} is not a string or {{\"b64\": ...}}")),
    }
}

/// A tensor as nested JSON lists, as TF Serving answers (BYTES as strings, or b64 objects
/// when they are not UTF-8).
pub fn to_nested(tensor: &Tensor) -> Value {
    let flat: Vec<Value> = if tensor.datatype == DataType::Bytes {
        tensor
            .bytes_elements()
            .map(|e| match std::str::from_utf8(e) {
                Ok(s) => Value::String(s.into()),
                Err(_) => json!({ "b64": base64::engine::general_purpose::STANDARD.encode(e) }),
            })
            .collect()
    } else {
        let mut text = Vec::new();
        write_json_data(&mut text, tensor);
        // Non-finite floats have no JSON spelling serde_json accepts: they become null.
        serde_json::from_slice::<Vec<Value>>(&text).unwrap_or_default()
    };
    let mut value = Value::Array(flat);
    for &dim in tensor.shape.iter().skip(1).rev() {
        let Value::Array(items) = value else { break };
        let chunk = (dim as usize).max(1);
        value = Value::Array(
            items
                .chunks(chunk)
                .map(|c| Value::Array(c.to_vec()))
                .collect(),
        );
    }
    if tensor.shape.is_empty() {
        if let Value::Array(mut items) = value {
            return items.pop().unwrap_or(Value::Null);
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_nesting() {
        let v: Value = serde_json::from_str("[[1,2,3],[4,5,6]]").unwrap();
        assert_eq!(shape_of(&v).unwrap(), vec![2, 3]);
        assert!(shape_of(&serde_json::from_str("[[1,2],[3]]").unwrap()).is_err());
        assert_eq!(scan(r#" [[1, 2.5], [3, 4]] "#).shape, vec![2, 2]);
        assert!(scan("[[1, 2.5]]").fractional);
        assert_eq!(
            scan(r#"[{"b64": "a,b]["}, "x,]"]"#),
            Scan {
                shape: vec![2],
                textual: true,
                ..Scan::default()
            }
        );
        assert_eq!(scan("[[], []]").shape, vec![2, 0]);
        assert_eq!(scan("7").shape, Vec::<u64>::new());
        assert!(tensor_of_nested("[[1,2],[3]]", None, 100)
            .unwrap_err()
            .contains("does not match the shape"));
        let t = tensor_of_nested("[[1,2,3],[4,5,6]]", None, 100).unwrap();
        assert_eq!((t.datatype, t.shape.clone()), (DataType::Int64, vec![2, 3]));
        assert_eq!(to_nested(&t), v);
        let s = tensor_of_nested(r#"[{"b64": "aGk="}, "yo"]"#, None, 100).unwrap();
        assert_eq!(
            s.bytes_elements().collect::<Vec<_>>(),
            vec![&b"hi"[..], b"yo"]
        );
        assert!(tensor_of_nested(r#"[{"b64": "!!"}]"#, None, 100)
            .unwrap_err()
            .contains("base64"));
        let scalar = tensor_of_nested("2.5", None, 100).unwrap();
        assert_eq!(
            (scalar.datatype, scalar.shape.clone()),
            (DataType::Fp32, vec![])
        );
        assert_eq!(to_nested(&scalar), json!(2.5));
    }
}
