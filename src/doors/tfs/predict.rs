//! Predict: the row and columnar request formats into an engine request, and the outputs
//! back in the format the request used.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::engine::{Error, InferRequest, Input, LoadedVersion, Output};
use crate::http::Response;
use crate::tensors::{tensor_of_nested, to_nested};

/// Which format a predict request used; the response answers in the same one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Row,
    Columnar,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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
) -> Result<(InferRequest<'b>, Format), Error> {
    let predict: PredictJson = serde_json::from_slice(body)
        .map_err(|e| Error::invalid(format!("invalid predict request JSON: {e}")))?;
    if let Some(name) = predict
        .signature_name
        .as_deref()
        .filter(|n| !n.is_empty() && *n != "serving_default")
    {
        return Err(Error::invalid(format!(
            "unknown signature_name '{name}' (serving_default is the only one)"
        )));
    }
    let (values, format) = match (predict.instances, predict.inputs) {
        (Some(instances), None) => (row_values(instances, loaded)?, Format::Row),
        (None, Some(inputs)) => (columnar_values(inputs, loaded)?, Format::Columnar),
        _ => {
            return Err(Error::invalid(
                "a predict request needs exactly one of 'instances' (row format) and 'inputs' (columnar format)",
            ))
        }
    };
    let inputs = values
        .into_iter()
        .map(|(name, text)| {
            let declared = loaded
                .inputs
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.datatype);
            let tensor = tensor_of_nested(&text, declared, max_elements)
                .map_err(|e| Error::invalid(format!("input '{name}': {e}")))?;
            Ok(Input {
                name: Cow::Owned(name),
                tensor,
            })
        })
        .collect::<Result<_, Error>>()?;
    let request = InferRequest {
        inputs,
        ..InferRequest::default()
    };
    Ok((request, format))
}

/// The only input's name, for values sent without one.
fn only_input(loaded: &LoadedVersion) -> Result<String, Error> {
    match loaded.inputs.as_slice() {
        [only] => Ok(only.name.clone()),
        inputs => Err(Error::invalid(format!(
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
) -> Result<Vec<(String, String)>, Error> {
    let rows: Vec<&RawValue> = serde_json::from_str(instances.get())
        .map_err(|_| Error::invalid("'instances' must be a list"))?;
    let Some(first) = rows.first() else {
        return Err(Error::invalid("'instances' is empty"));
    };
    if named(first).is_none() {
        return Ok(vec![(only_input(loaded)?, instances.get().to_string())]);
    }
    let mut columns: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let map = named(row).ok_or_else(|| {
            Error::invalid(format!(
                "instance {i} is not a map of inputs like instance 0"
            ))
        })?;
        if i > 0 && (map.len() != columns.len() || !map.keys().all(|k| columns.contains_key(k))) {
            return Err(Error::invalid(format!(
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
) -> Result<Vec<(String, String)>, Error> {
    match named(inputs) {
        Some(map) => Ok(map
            .into_iter()
            .map(|(name, v)| (name, v.get().to_string()))
            .collect()),
        None => Ok(vec![(only_input(loaded)?, inputs.get().to_string())]),
    }
}

/// `{"predictions": ...}` (row) or `{"outputs": ...}` (columnar); one output is unwrapped.
pub fn encode_predict(format: Format, outputs: Vec<Output>) -> Result<Response, Error> {
    let body = match (format, outputs.as_slice()) {
        (Format::Row, [only]) => json!({ "predictions": to_nested(&only.tensor) }),
        (Format::Columnar, [only]) => json!({ "outputs": to_nested(&only.tensor) }),
        (Format::Columnar, many) => {
            let map: Map<String, Value> = many
                .iter()
                .map(|o| (o.name.to_string(), to_nested(&o.tensor)))
                .collect();
            json!({ "outputs": map })
        }
        (Format::Row, many) => {
            let rows: Vec<Vec<Value>> = many
                .iter()
                .map(|o| match to_nested(&o.tensor) {
                    Value::Array(items) => items,
                    scalar => vec![scalar],
                })
                .collect();
            let batch = rows.first().map_or(0, Vec::len);
            if rows.iter().any(|r| r.len() != batch) {
                return Err(Error::internal(
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
