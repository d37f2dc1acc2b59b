//! TensorFlow Serving's REST API (OVMS's second front door): model status, metadata and
//! predict in the row (`instances`) and columnar (`inputs`) formats, `{"b64": ...}` for bytes.
//! Requests become the same `InferRequest` the V2 path produces; only parsing, routes and the
//! response shape differ.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::infer_request::{InferInput, InferRequest};
use super::infer_response::ResponseOutput;
use super::parameters::Parameters;
use super::routes::ModelRef;
use super::ProtocolError;
use crate::http::Response;
use crate::models::{LoadedVersion, ServedModel, TensorSpec};
use crate::tensors::{decode_json_data, push_bytes_element, write_json_data, DataType, Tensor};

#[derive(Debug, PartialEq, Eq)]
pub enum TfsRoute<'a> {
    Status(ModelRef<'a>),
    Metadata(ModelRef<'a>),
    Predict(ModelRef<'a>),
}

/// `/v1/models/{m}[/versions/{v}][/metadata | :predict]`; version 0 means the default one.
pub fn route(path: &str) -> Option<TfsRoute<'_>> {
    let rest = path.strip_prefix("/v1/models/")?;
    let (rest, predict) = match rest.strip_suffix(":predict") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let (name, version, metadata) = match parts.as_slice() {
        [m] => (*m, None, false),
        [m, "metadata"] => (*m, None, true),
        [m, "versions", v] => (*m, Some(*v), false),
        [m, "versions", v, "metadata"] => (*m, Some(*v), true),
        _ => return None,
    };
    if name.is_empty() || (predict && metadata) {
        return None;
    }
    let model = ModelRef {
        name: Cow::Borrowed(name),
        version: version.filter(|v| *v != "0").map(Cow::Borrowed),
    };
    Some(match (predict, metadata) {
        (true, _) => TfsRoute::Predict(model),
        (false, true) => TfsRoute::Metadata(model),
        (false, false) => TfsRoute::Status(model),
    })
}

/// TensorFlow's name for a datatype.
fn tf_dtype(datatype: Option<DataType>) -> &'static str {
    match datatype {
        Some(DataType::Bool) => "DT_BOOL",
        Some(DataType::Uint8) => "DT_UINT8",
        Some(DataType::Uint16) => "DT_UINT16",
        Some(DataType::Uint32) => "DT_UINT32",
        Some(DataType::Uint64) => "DT_UINT64",
        Some(DataType::Int8) => "DT_INT8",
        Some(DataType::Int16) => "DT_INT16",
        Some(DataType::Int32) => "DT_INT32",
        Some(DataType::Int64) => "DT_INT64",
        Some(DataType::Fp16) => "DT_HALF",
        Some(DataType::Bf16) => "DT_BFLOAT16",
        Some(DataType::Fp32) => "DT_FLOAT",
        Some(DataType::Fp64) => "DT_DOUBLE",
        Some(DataType::Bytes) => "DT_STRING",
        None => "DT_INVALID",
    }
}

/// `model_version_status` for the named version, or every version.
pub fn status(model: &ServedModel, version: Option<&str>) -> Result<Value, ProtocolError> {
    if version.is_some() {
        model.version(version)?;
    }
    let statuses: Vec<Value> = model
        .versions
        .iter()
        .filter(|v| version.is_none_or(|want| want == v.version.to_string()))
        .map(|v| {
            let (state, code, message) = match &v.state {
                Ok(_) => ("AVAILABLE", "OK", String::new()),
                Err(e) => ("END", "UNKNOWN", e.clone()),
            };
            json!({
                "version": v.version.to_string(),
                "state": state,
                "status": { "error_code": code, "error_message": message },
            })
        })
        .collect();
    if statuses.is_empty() {
        let reason = model.reason().unwrap_or_else(|| "no version loaded".into());
        return Err(ProtocolError::new(
            404,
            format!("model '{}' has no version: {reason}", model.name),
        ));
    }
    Ok(json!({ "model_version_status": statuses }))
}

/// Model metadata with a `serving_default` signature. Keys are written in both spellings TF
/// Serving clients read: TF Serving's own (snake_case) and OVMS's (camelCase, which
/// `ovmsclient` parses).
pub fn metadata(model: &ServedModel, version: u64, loaded: &LoadedVersion) -> Value {
    let tensors = |specs: &[TensorSpec]| -> Map<String, Value> {
        specs
            .iter()
            .map(|spec| {
                let dims: Vec<Value> = spec
                    .dims
                    .clone()
                    .unwrap_or_else(|| vec![-1])
                    .iter()
                    .map(|d| json!({ "size": d.to_string(), "name": "" }))
                    .collect();
                let unknown = spec.dims.is_none();
                let info = json!({
                    "dtype": tf_dtype(spec.datatype),
                    "tensor_shape": { "dim": dims.clone(), "unknown_rank": unknown },
                    "tensorShape": { "dim": dims, "unknownRank": unknown },
                    "name": spec.name,
                });
                (spec.name.clone(), info)
            })
            .collect()
    };
    let signature = json!({
        "inputs": tensors(&loaded.inputs),
        "outputs": tensors(&loaded.outputs),
        "method_name": "tensorflow/serving/predict",
        "methodName": "tensorflow/serving/predict",
    });
    let signatures = json!({ "serving_default": signature });
    let spec = json!({ "name": model.name, "signature_name": "", "signatureName": "", "version": version.to_string() });
    json!({
        "model_spec": spec.clone(),
        "modelSpec": spec,
        "metadata": {
            "signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signature_def": signatures.clone(),
                "signatureDef": signatures,
            }
        }
    })
}

/// Which format a predict request used; the response answers in the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Row,
    Columnar,
}

#[derive(Deserialize)]
struct PredictJson<'a> {
    #[serde(default, borrow)]
    signature_name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    instances: Option<&'a RawValue>,
    #[serde(default, borrow)]
    inputs: Option<&'a RawValue>,
}

/// Decodes a predict body into the request the model path runs.
pub fn decode_predict<'b>(
    body: &'b [u8],
    loaded: &LoadedVersion,
    max_elements: u64,
) -> Result<(InferRequest<'b>, Format), ProtocolError> {
    let predict: PredictJson = serde_json::from_slice(body)
        .map_err(|e| ProtocolError::bad_request(format!("invalid predict request JSON: {e}")))?;
    if let Some(name) = predict
        .signature_name
        .as_deref()
        .filter(|n| !n.is_empty() && *n != "serving_default")
    {
        return Err(ProtocolError::bad_request(format!(
            "unknown signature_name '{name}' (serving_default is the only one)"
        )));
    }
    let (values, format) = match (predict.instances, predict.inputs) {
        (Some(instances), None) => (row_values(instances, loaded)?, Format::Row),
        (None, Some(inputs)) => (columnar_values(inputs, loaded)?, Format::Columnar),
        _ => {
            return Err(ProtocolError::bad_request(
                "a predict request needs exactly one of 'instances' (row format) and 'inputs' (columnar format)",
            ))
        }
    };
    let inputs = values
        .into_iter()
        .map(|(name, text)| {
            let spec = loaded.inputs.iter().find(|s| s.name == name);
            let tensor = tensor_of(&text, spec, max_elements)
                .map_err(|e| ProtocolError::bad_request(format!("input '{name}': {e}")))?;
            Ok(InferInput {
                name: Cow::Owned(name),
                tensor,
                parameters: Parameters::default(),
            })
        })
        .collect::<Result<_, ProtocolError>>()?;
    let request = InferRequest {
        id: None,
        parameters: Parameters::default(),
        inputs,
        outputs: Vec::new(),
        all_binary: false,
    };
    Ok((request, format))
}

/// The only input's name, for values sent without one.
fn only_input(loaded: &LoadedVersion) -> Result<String, ProtocolError> {
    match loaded.inputs.as_slice() {
        [only] => Ok(only.name.clone()),
        inputs => Err(ProtocolError::bad_request(format!(
            "values without input names need a model with one input; this one has {}",
            inputs.len()
        ))),
    }
}

/// Whether a JSON value is a map of named inputs (not a `{"b64": ...}` value).
fn named(raw: &RawValue) -> Option<BTreeMap<String, &RawValue>> {
    let map: BTreeMap<String, &RawValue> = serde_json::from_str(raw.get()).ok()?;
    (!(map.len() == 1 && map.contains_key("b64"))).then_some(map)
}

/// Row format: each instance is one row of every input (the batch dimension is the list).
fn row_values(
    instances: &RawValue,
    loaded: &LoadedVersion,
) -> Result<Vec<(String, String)>, ProtocolError> {
    let rows: Vec<&RawValue> = serde_json::from_str(instances.get())
        .map_err(|_| ProtocolError::bad_request("'instances' must be a list"))?;
    let Some(first) = rows.first() else {
        return Err(ProtocolError::bad_request("'instances' is empty"));
    };
    if named(first).is_none() {
        return Ok(vec![(only_input(loaded)?, instances.get().to_string())]);
    }
    let mut columns: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let map = named(row).ok_or_else(|| {
            ProtocolError::bad_request(format!(
                "instance {i} is not a map of inputs like instance 0"
            ))
        })?;
        if i > 0 && (map.len() != columns.len() || !map.keys().all(|k| columns.contains_key(k))) {
            return Err(ProtocolError::bad_request(format!(
                "instance {i} names other inputs than instance 0"
            )));
        }
        for (name, value) in map {
            columns.entry(name).or_default().push(value.get());
        }
    }
    Ok(columns
        .into_iter()
        .map(|(name, values)| (name, format!("[{}]", values.join(","))))
        .collect())
}

/// Columnar format: one value per input (the whole tensor), or a single unnamed value.
fn columnar_values(
    inputs: &RawValue,
    loaded: &LoadedVersion,
) -> Result<Vec<(String, String)>, ProtocolError> {
    match named(inputs) {
        Some(map) => Ok(map
            .into_iter()
            .map(|(name, v)| (name, v.get().to_string()))
            .collect()),
        None => Ok(vec![(only_input(loaded)?, inputs.get().to_string())]),
    }
}

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

/// One input's JSON text as a tensor of the spec's datatype (strings and `{"b64"}` as BYTES).
/// Numbers take one scan for the shape (TF Serving sends none) and the V2 path's streaming
/// decoder for the values; only strings and b64 values are parsed into a tree.
pub fn tensor_of(
    text: &str,
    spec: Option<&TensorSpec>,
    max_elements: u64,
) -> Result<Tensor, String> {
    let scanned = scan(text);
    let declared = spec.and_then(|s| s.datatype);
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

/// A tensor as the nested JSON lists TF Serving answers with (BYTES as strings, or b64 objects
/// when they are not UTF-8).
fn nested(tensor: &Tensor) -> Value {
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

/// `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar); one output is unwrapped.
pub fn encode_predict(
    format: Format,
    outputs: Vec<ResponseOutput>,
) -> Result<Response, ProtocolError> {
    let body = match (format, outputs.as_slice()) {
        (Format::Row, [only]) => json!({ "predictions": nested(&only.tensor) }),
        (Format::Columnar, [only]) => json!({ "outputs": nested(&only.tensor) }),
        (Format::Columnar, many) => {
            let map: Map<String, Value> = many
                .iter()
                .map(|o| (o.name.to_string(), nested(&o.tensor)))
                .collect();
            json!({ "outputs": map })
        }
        (Format::Row, many) => {
            let rows: Vec<Vec<Value>> = many
                .iter()
                .map(|o| match nested(&o.tensor) {
                    Value::Array(items) => items,
                    scalar => vec![scalar],
                })
                .collect();
            let batch = rows.first().map_or(0, Vec::len);
            if rows.iter().any(|r| r.len() != batch) {
                return Err(ProtocolError::internal(
                    "outputs differ in batch size: use the columnar format",
                ));
            }
            let predictions: Vec<Value> = (0..batch)
                .map(|i| {
                    Value::Object(
                        many.iter()
                            .zip(&rows)
                            .map(|(o, r)| (o.name.to_string(), r[i].clone()))
                            .collect(),
                    )
                })
                .collect();
            json!({ "predictions": predictions })
        }
    };
    Ok(Response {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: vec![Bytes::from(body.to_string())],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = |name: &'static str, version: Option<&'static str>| ModelRef {
            name: Cow::Borrowed(name),
            version: version.map(Cow::Borrowed),
        };
        assert_eq!(route("/v1/models/a"), Some(TfsRoute::Status(m("a", None))));
        assert_eq!(
            route("/v1/models/a/versions/0"),
            Some(TfsRoute::Status(m("a", None)))
        );
        assert_eq!(
            route("/v1/models/a/versions/2/metadata"),
            Some(TfsRoute::Metadata(m("a", Some("2"))))
        );
        assert_eq!(
            route("/v1/models/a:predict"),
            Some(TfsRoute::Predict(m("a", None)))
        );
        assert_eq!(
            route("/v1/models/a/versions/3:predict"),
            Some(TfsRoute::Predict(m("a", Some("3"))))
        );
        assert_eq!(route("/v1/models/a/metadata:predict"), None);
        assert_eq!(route("/v2/models/a"), None);
    }

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
        assert!(tensor_of("[[1,2],[3]]", None, 100)
            .unwrap_err()
            .contains("does not match the shape"));
        let t = tensor_of("[[1,2,3],[4,5,6]]", None, 100).unwrap();
        assert_eq!((t.datatype, t.shape.clone()), (DataType::Int64, vec![2, 3]));
        assert_eq!(nested(&t), v);
        let s = tensor_of(r#"[{"b64": "aGk="}, "yo"]"#, None, 100).unwrap();
        assert_eq!(
            s.bytes_elements().collect::<Vec<_>>(),
            vec![&b"hi"[..], b"yo"]
        );
        assert!(tensor_of(r#"[{"b64": "!!"}]"#, None, 100)
            .unwrap_err()
            .contains("base64"));
        let scalar = tensor_of("2.5", None, 100).unwrap();
        assert_eq!(
            (scalar.datatype, scalar.shape.clone()),
            (DataType::Fp32, vec![])
        );
        assert_eq!(nested(&scalar), json!(2.5));
    }
}
