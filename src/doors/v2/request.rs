//! Infer requests: the JSON header parsed in place, tensors as views of the body.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use super::json_walk::JsonWalk;
use crate::engine::Parameters;
use crate::engine::{Error, Input, SharedInput, SharedPlace};
use crate::models::TensorSpec;
use crate::tensors::{decode_json_data, fit_dims, DataType, Tensor};

#[derive(Debug)]
pub struct InferRequest<'a> {
    pub id: Option<Cow<'a, str>>,
    /// KServe's client names the model in the body too; it must be the URL's.
    pub model_name: Option<Cow<'a, str>>,
    pub parameters: Parameters<'a>,
    pub inputs: Vec<Input<'a>>,
    /// Inputs in shared memory.
    pub shared_inputs: Vec<SharedInput<'a>>,
    pub outputs: Vec<RequestedOutput<'a>>,
    /// Every output is binary (Triton's raw binary request).
    pub all_binary: bool,
}

#[derive(Debug)]
pub struct RequestedOutput<'a> {
    pub name: Cow<'a, str>,
    pub parameters: Parameters<'a>,
}

impl InferRequest<'_> {
    /// Whether `output` goes back as binary: its own `binary_data`, else the request's
    /// `binary_data_output`, else JSON.
    pub fn output_is_binary(&self, output: Option<&RequestedOutput>) -> Result<bool, Error> {
        if self.all_binary {
            return Ok(true);
        }
        if let Some(own) = output
            .map(|o| o.parameters.get_bool("binary_data"))
            .transpose()?
            .flatten()
        {
            return Ok(own);
        }
        Ok(self
            .parameters
            .get_bool("binary_data_output")?
            .unwrap_or(false))
    }
}

/// The JSON header, walked (see `json_walk`) rather than derived: tensor data stays text
/// until its datatype decodes it.
struct RequestJson<'a> {
    id: Option<Cow<'a, str>>,
    model_name: Option<Cow<'a, str>>,
    parameters: Parameters<'a>,
    inputs: Vec<InputJson<'a>>,
    outputs: Vec<OutputJson<'a>>,
}

/// Most inputs (and outputs) one request may name. More is refused while parsing, before a
/// header of a million tiny inputs is allocated entry by entry.
const MAX_TENSORS: usize = 4096;

struct InputJson<'a> {
    name: Cow<'a, str>,
    shape: Vec<u64>,
    datatype: Cow<'a, str>,
    parameters: Parameters<'a>,
    data: Option<&'a str>,
}

fn parse_header(text: &str) -> Result<RequestJson<'_>, String> {
    let mut walk = JsonWalk::new(text);
    let (mut id, mut model_name, mut parameters, mut inputs, mut outputs) =
        (None, None, None, None, None);
    walk.object(|w, key| {
        let value = match &*key {
            "id" => w.nullable_string().and_then(|v| set_once(&mut id, &key, v)),
            "model_name" => w
                .nullable_string()
                .and_then(|v| set_once(&mut model_name, &key, v)),
            "parameters" => w.decode().and_then(|v| set_once(&mut parameters, &key, v)),
            "inputs" => capped(w, parse_input).and_then(|v| set_once(&mut inputs, &key, v)),
            "outputs" => capped(w, |w, i| {
                w.decode().map_err(|e| format!("outputs[{i}]: {e}"))
            })
            .and_then(|v| set_once(&mut outputs, &key, v)),
            _ => Err(unknown(
                "an inference request",
                "id, model_name, parameters, inputs, outputs",
            )),
        };
        // "inputs" + "[0].shape: ..."
        value.map_err(|e| match e.starts_with('[') {
            true => format!("{key}{e}"),
            false => format!("{key}: {e}"),
        })
    })?;
    walk.finish()?;
    Ok(RequestJson {
        id: id.flatten(),
        model_name: model_name.flatten(),
        parameters: parameters.unwrap_or_default(),
        inputs: inputs.ok_or("missing field `inputs`")?,
        outputs: outputs.unwrap_or_default(),
    })
}

fn parse_input<'a>(w: &mut JsonWalk<'a>, index: usize) -> Result<InputJson<'a>, String> {
    let (mut name, mut shape, mut datatype, mut parameters, mut data) =
        (None, None, None, None, None);
    w.object(|w, key| {
        let value = match &*key {
            "name" => w.string().and_then(|v| set_once(&mut name, &key, v)),
            "shape" => {
                let mut dims = Vec::with_capacity(4);
                w.array(|w| w.u64().map(|d| dims.push(d)))
                    .and_then(|()| set_once(&mut shape, &key, dims))
            }
            "datatype" => w.string().and_then(|v| set_once(&mut datatype, &key, v)),
            "parameters" => w.decode().and_then(|v| set_once(&mut parameters, &key, v)),
            "data" => w
                .raw()
                .and_then(|raw| set_once(&mut data, &key, (raw != "null").then_some(raw))),
            _ => Err(unknown(
                "an input",
                "name, shape, datatype, parameters, data",
            )),
        };
        value.map_err(|e| format!("[{index}].{key}: {e}"))
    })?;
    let missing = |field: &str| format!("[{index}]: missing field `{field}`");
    Ok(InputJson {
        name: name.ok_or_else(|| missing("name"))?,
        shape: shape.ok_or_else(|| missing("shape"))?,
        datatype: datatype.ok_or_else(|| missing("datatype"))?,
        parameters: parameters.unwrap_or_default(),
        data: data.flatten(),
    })
}

/// A key the protocol does not define is refused, never skipped: a misspelt `output` would
/// otherwise silently return every output.
fn unknown(object: &str, fields: &str) -> String {
    format!("not a field of {object} (its fields: {fields})")
}

/// Fills `slot` from the first occurrence of `key`; a second one is refused, as serde does.
fn set_once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), String> {
    if slot.is_some() {
        return Err(format!("duplicate field `{key}`"));
    }
    *slot = Some(value);
    Ok(())
}

/// An array of at most `MAX_TENSORS` elements, each parsed by `element` (given its index).
fn capped<'a, T>(
    w: &mut JsonWalk<'a>,
    mut element: impl FnMut(&mut JsonWalk<'a>, usize) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    w.array(|w| {
        if out.len() == MAX_TENSORS {
            return Err(format!("more than {MAX_TENSORS} tensors in one request"));
        }
        out.push(element(w, out.len())?);
        Ok(())
    })?;
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default, borrow)]
    parameters: Parameters<'a>,
}

/// Parses the value of `Inference-Header-Content-Length`.
pub fn header_length(value: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(value)
        .ok()
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Error::invalid("invalid Inference-Header-Content-Length"))
}

/// Decodes a request body. `header_len`: the JSON header's length when the body also carries
/// binary tensor data; `None` when the whole body is JSON.
pub fn decode_infer_request(
    body: &Bytes,
    header_len: Option<u64>,
    max_elements: u64,
) -> Result<InferRequest<'_>, Error> {
    let json_len = match header_len {
        None => body.len(),
        Some(n) if n <= body.len() as u64 => n as usize,
        Some(n) => {
            return Err(Error::invalid(format!(
                "Inference-Header-Content-Length {n} is larger than the body ({} bytes)",
                body.len()
            )))
        }
    };
    let header = std::str::from_utf8(&body[..json_len])
        .map_err(|e| e.to_string())
        .and_then(parse_header)
        .map_err(|e| Error::invalid(format!("invalid inference request JSON: {e}")))?;
    let known = &crate::engine::V2_REST;
    header
        .parameters
        .check(|| "request".into(), known.request)?;
    for input in &header.inputs {
        let place = || format!("input '{}'", input.name);
        input.parameters.check(place, known.input)?;
    }
    for output in &header.outputs {
        let place = || format!("output '{}'", output.name);
        output.parameters.check(place, known.output)?;
    }
    let binary = body.slice(json_len..);
    let mut offset = 0u64;
    let mut inputs = Vec::with_capacity(header.inputs.len());
    let mut shared_inputs = Vec::new();
    for input in header.inputs {
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            Error::invalid(format!(
                "input '{}': unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        let binary_size = input.parameters.get_u64("binary_data_size")?;
        let place = SharedPlace::of(&input.parameters, &input.name)?;
        let data = match (input.data, binary_size, place) {
            (Some(raw), None, None) => decode_json_data(raw, datatype, &input.shape, max_elements)
                .map_err(|e| Error::invalid(format!("input '{}': {e}", input.name)))?,
            (None, Some(size), None) => {
                let end = offset
                    .checked_add(size)
                    .filter(|&end| end <= binary.len() as u64)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "input '{}': binary_data_size {size} at offset {offset} runs past the \
                             {} bytes of binary data",
                            input.name,
                            binary.len()
                        ))
                    })?;
                let slice = binary.slice(offset as usize..end as usize);
                offset = end;
                slice
            }
            (None, None, Some(place)) => {
                shared_inputs.push(SharedInput {
                    name: input.name,
                    datatype,
                    shape: input.shape,
                    place,
                });
                continue;
            }
            (data, size, place) => {
                // Triton's words.
                let set: Vec<&str> = [
                    (data.is_some(), " 'data'"),
                    (size.is_some(), " 'binary_data_size'"),
                    (place.is_some(), " 'shared_memory_region'"),
                ]
                .into_iter()
                .filter_map(|(set, name)| set.then_some(name))
                .collect();
                let set = match set.is_empty() {
                    true => " no field is set".to_string(),
                    false => format!(" set{}", set.concat()),
                };
                return Err(Error::invalid(format!(
                    "Input must set only one of the following fields: 'data', 'binary_data_size' \
                     in 'parameters', 'shared_memory_region' in 'parameters'. But{set}"
                )));
            }
        };
        let tensor = Tensor::new(datatype, input.shape, data, max_elements)
            .map_err(|e| Error::invalid(format!("input '{}': {e}", input.name)))?;
        inputs.push(Input {
            name: input.name,
            tensor,
        });
    }
    if offset != binary.len() as u64 {
        return Err(Error::invalid(format!(
            "binary_data_size values add up to {offset} bytes but the body carries {} bytes after \
             the JSON header",
            binary.len()
        )));
    }
    Ok(InferRequest {
        id: header.id,
        model_name: header.model_name,
        parameters: header.parameters,
        inputs,
        shared_inputs,
        outputs: header
            .outputs
            .into_iter()
            .map(|o| RequestedOutput {
                name: o.name,
                parameters: o.parameters,
            })
            .collect(),
        all_binary: false,
    })
}

/// Triton's raw binary request (`Inference-Header-Content-Length: 0`): the whole body is the
/// one input of a single-input model. Datatype and shape come from the model, the batch
/// dimension (when `batching`) fixed at 1, as Triton does; one other variable dimension is
/// inferred from the size; BYTES is one element; an untyped input is UINT8.
pub fn decode_raw_request<'a>(
    body: &Bytes,
    spec: &'a TensorSpec,
    batching: bool,
    max_elements: u64,
) -> Result<InferRequest<'a>, Error> {
    let datatype = spec.datatype.unwrap_or(DataType::Uint8);
    let (shape, data) = match datatype.element_size() {
        None => {
            // As Triton: the element count of a raw BYTES body cannot be known, so the input
            // must hold exactly one (model shape [1]).
            let lead = usize::from(batching);
            if spec.dims.as_deref().and_then(|d| d.get(lead..)) != Some(&[1][..]) {
                return Err(Error::invalid(format!(
                    "For BYTE datatype raw input '{}', the model must have input shape [1]",
                    spec.name
                )));
            }
            let mut data = Vec::with_capacity(body.len() + 4);
            crate::tensors::push_bytes_element(&mut data, body)
                .map_err(|e| Error::invalid(format!("input '{}': {e}", spec.name)))?;
            (raw_shape(spec, batching, 1)?, Bytes::from(data))
        }
        Some(size) => {
            if !body.len().is_multiple_of(size) {
                return Err(Error::invalid(format!(
                    "raw binary body of {} bytes is not a whole number of {datatype} elements",
                    body.len()
                )));
            }
            (
                raw_shape(spec, batching, (body.len() / size) as u64)?,
                body.clone(),
            )
        }
    };
    let tensor = Tensor::new(datatype, shape, data, max_elements)
        .map_err(|e| Error::invalid(format!("input '{}': {e}", spec.name)))?;
    Ok(InferRequest {
        id: None,
        model_name: None,
        parameters: Parameters::default(),
        inputs: vec![Input {
            name: Cow::Borrowed(&spec.name),
            tensor,
        }],
        shared_inputs: Vec::new(),
        outputs: Vec::new(),
        all_binary: true,
    })
}

/// The shape a raw body of `count` elements has under `spec`'s dims (batch dimension 1).
fn raw_shape(spec: &TensorSpec, batching: bool, count: u64) -> Result<Vec<u64>, Error> {
    let Some(dims) = &spec.dims else {
        return Ok(if batching {
            vec![1, count]
        } else {
            vec![count]
        });
    };
    let mut dims = dims.clone();
    if let (true, Some(batch)) = (batching, dims.first_mut()) {
        *batch = 1;
    }
    fit_dims(&dims, count).ok_or_else(|| {
        Error::invalid(format!(
            "raw binary body of {count} elements does not fit input '{}' of shape {dims:?}",
            spec.name
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str, binary: &[u8]) -> (Bytes, Option<u64>) {
        let mut b = json.as_bytes().to_vec();
        b.extend_from_slice(binary);
        (Bytes::from(b), Some(json.len() as u64))
    }

    #[test]
    fn binary_inputs_are_slices_of_the_body() {
        let json = r#"{"id":"7","inputs":[{"name":"A","shape":[2],"datatype":"INT16","parameters":{"binary_data_size":4}},{"name":"B","shape":[1],"datatype":"BOOL","data":[true]},{"name":"C","shape":[1],"datatype":"BYTES","parameters":{"binary_data_size":6}}]}"#;
        let (b, len) = body(json, &[1, 0, 2, 0, 2, 0, 0, 0, b'h', b'i']);
        let req = decode_infer_request(&b, len, 100).unwrap();
        assert_eq!(req.id.as_deref(), Some("7"));
        let a = &req.inputs[0].tensor;
        assert_eq!(&a.data[..], &[1, 0, 2, 0]);
        assert_eq!(
            a.data.as_ptr(),
            b[json.len()..].as_ptr(),
            "a view, not a copy"
        );
        assert_eq!(&req.inputs[1].tensor.data[..], &[1]);
        assert_eq!(
            req.inputs[2].tensor.bytes_elements().collect::<Vec<_>>(),
            vec![&b"hi"[..]]
        );
    }

    #[test]
    fn sizes_must_add_up() {
        let json = r#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT16","parameters":{"binary_data_size":4}}]}"#;
        let cases: [(&[u8], &str); 3] = [
            (&[1, 0, 2], "runs past"),
            (&[1, 0, 2, 0, 9], "add up to 4"),
            (&[], "runs past"),
        ];
        for (binary, message) in cases {
            let (b, len) = body(json, binary);
            let err = decode_infer_request(&b, len, 100).unwrap_err();
            assert_eq!(err.kind, crate::engine::ErrorKind::Invalid);
            assert!(err.message.contains(message), "{}", err.message);
        }
        let (b, _) = body(json, &[1, 0, 2, 0]);
        let err = decode_infer_request(&b, Some(10_000), 100).unwrap_err();
        assert!(
            err.message.contains("larger than the body"),
            "{}",
            err.message
        );
        let huge = r#"{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","parameters":{"binary_data_size":18446744073709551615}}]}"#;
        let (b, len) = body(huge, &[1]);
        assert!(decode_infer_request(&b, len, 100)
            .unwrap_err()
            .message
            .contains("runs past"));
    }

    #[test]
    fn shape_mismatch_and_bad_headers() {
        let cases = [
            (
                r#"{"inputs":[{"name":"A","shape":[3],"datatype":"INT16","parameters":{"binary_data_size":4}}]}"#,
                "need 6",
            ),
            (
                r#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT17","data":[1,2]}]}"#,
                "unknown datatype",
            ),
            (
                r#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT16"}]}"#,
                "Input must set only one of the following fields: 'data', 'binary_data_size' in \
                 'parameters', 'shared_memory_region' in 'parameters'. But no field is set",
            ),
            (
                r#"{"inputs":[{"name":"A","shape":[-2],"datatype":"INT16","data":[]}]}"#,
                "invalid inference request JSON",
            ),
            (
                r#"{"inputs":[{"name":"A","shape":[4294967296,4294967296],"datatype":"INT8","data":[]}]}"#,
                "more elements than fit",
            ),
            (r#"{"inputs":"#, "invalid inference request JSON"),
            (
                r#"{"inputs":[],"output":[{"name":"A"}]}"#,
                "output: not a field of an inference request (its fields: id, model_name, parameters, inputs, outputs)",
            ),
            (
                r#"{"inputs":[{"name":"A","shape":[1],"datatype":"INT8","dims":[1],"data":[1]}]}"#,
                "inputs[0].dims: not a field of an input",
            ),
            (
                r#"{"inputs":[],"outputs":[{"name":"A","binary":true}]}"#,
                "unknown field `binary`, expected `name` or `parameters`",
            ),
        ];
        for (json, message) in cases {
            let binary = json.contains("binary_data_size");
            let (b, len) = body(json, if binary { &[1, 0, 2, 0] } else { &[] });
            let len = len.filter(|_| binary);
            let err = decode_infer_request(&b, len, u64::MAX).unwrap_err();
            assert!(err.message.contains(message), "{json}: {}", err.message);
        }
    }

    /// The serde-derived header the walk replaced: the reference it must agree with.
    mod reference {
        use super::super::{Cow, Parameters};
        use serde::Deserialize;
        use serde_json::value::RawValue;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Request<'a> {
            #[serde(default, borrow)]
            pub id: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            pub model_name: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            pub parameters: Parameters<'a>,
            #[serde(borrow)]
            pub inputs: Vec<Input<'a>>,
            #[serde(default, borrow)]
            pub outputs: Vec<Output<'a>>,
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Input<'a> {
            #[serde(borrow)]
            pub name: Cow<'a, str>,
            pub shape: Vec<u64>,
            #[serde(borrow)]
            pub datatype: Cow<'a, str>,
            #[serde(default, borrow)]
            pub parameters: Parameters<'a>,
            #[serde(default, borrow)]
            pub data: Option<&'a RawValue>,
        }

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Output<'a> {
            #[serde(borrow)]
            pub name: Cow<'a, str>,
            #[serde(default, borrow)]
            pub parameters: Parameters<'a>,
        }
    }

    /// Both parsers' view of a header, as comparable text; `None` when refused. The walk
    /// leaves tensor data to its decoder, so here the data is checked as JSON too.
    fn both_ways(text: &str) -> (Option<String>, Option<String>) {
        let walked = parse_header(text).ok().filter(|h| {
            h.inputs.iter().all(|i| {
                i.data
                    .is_none_or(|d| serde_json::from_str::<serde::de::IgnoredAny>(d).is_ok())
            })
        });
        let walked = walked.map(|h| {
            let inputs: Vec<_> = h
                .inputs
                .iter()
                .map(|i| (&i.name, &i.shape, &i.datatype, &i.parameters, i.data))
                .collect();
            let outputs: Vec<_> = h.outputs.iter().map(|o| (&o.name, &o.parameters)).collect();
            format!(
                "{:?} {:?} {:?} {inputs:?} {outputs:?}",
                h.id, h.model_name, h.parameters
            )
        });
        let derived = serde_json::from_str::<reference::Request>(text)
            .ok()
            .map(|h| {
                let inputs: Vec<_> = h
                    .inputs
                    .iter()
                    .map(|i| {
                        (
                            &i.name,
                            &i.shape,
                            &i.datatype,
                            &i.parameters,
                            i.data.map(|d| d.get()),
                        )
                    })
                    .collect();
                let outputs: Vec<_> = h.outputs.iter().map(|o| (&o.name, &o.parameters)).collect();
                format!(
                    "{:?} {:?} {:?} {inputs:?} {outputs:?}",
                    h.id, h.model_name, h.parameters
                )
            });
        (walked, derived)
    }

    /// Valid requests and every one-character deletion or insertion in them (most break the
    /// JSON) are read the same by the walk and by serde.
    #[test]
    fn the_walk_agrees_with_serde_on_every_edit() {
        let seeds = [
            r#"{"id":"7","model_name":"m","parameters":{"binary_data_output":true},"inputs":[{"name":"A","shape":[1,2],"datatype":"FP32","data":[1.5,-2e3]},{"name":"B\"q","shape":[0],"datatype":"BYTES","parameters":{"binary_data_size":4,"s":"x"}}],"outputs":[{"name":"C","parameters":{"binary_data":false}}]}"#,
            r#" { "inputs" : [ { "data" : [ [ "a]" , "\u0062" ] ] , "datatype" : "BYTES" , "shape" : [ 1 , 2 ] , "name" : "x" , "parameters" : { "k" : "]" } } ] , "id" : null , "outputs" : [ ] } "#,
            r#"{"inputs":[{"name":"na\u006de","shape":[],"datatype":"BOOL","data":true,"parameters":{"}":"{"}}],"parameters":{"a":"]"}}"#,
        ];
        let mut edits = 0;
        for seed in seeds {
            assert!(both_ways(seed).0.is_some(), "{seed}");
            for at in 0..=seed.len() {
                let mut texts = Vec::new();
                if at < seed.len() {
                    texts.push(format!("{}{}", &seed[..at], &seed[at + 1..]));
                }
                for c in ["{", "}", "[", "]", "\"", ",", ":", "\\", "1", "-", " ", "n"] {
                    texts.push(format!("{}{c}{}", &seed[..at], &seed[at..]));
                }
                for text in texts {
                    let (walked, derived) = both_ways(&text);
                    assert_eq!(walked, derived, "{text}");
                    edits += 1;
                }
            }
        }
        assert!(edits > 5000);
    }

    #[test]
    fn the_walk_reads_the_seeds_like_serde() {
        for text in [
            r#"{"inputs":[]}"#,
            r#"{"id":"é\n","inputs":[{"name":"A","shape":[3],"datatype":"INT8","data":[1,2,3]}]}"#,
        ] {
            let (walked, derived) = both_ways(text);
            assert!(walked.is_some());
            assert_eq!(walked, derived);
        }
        for refused in [
            r#"{"inputs":[],"inputs":[]}"#,
            r#"{"inputs":[{"name":"A","name":"B","shape":[],"datatype":"INT8"}]}"#,
            r#"{"inputs":[{"shape":[],"datatype":"INT8"}]}"#,
            r#"{"id":"x"}"#,
        ] {
            assert_eq!(both_ways(refused), (None, None), "{refused}");
        }
    }

    #[test]
    fn raw_requests_take_shape_from_the_model() {
        let spec = TensorSpec::new("INPUT0", DataType::Int32, &[-1, 2]);
        let req = decode_raw_request(&Bytes::from(vec![0u8; 16]), &spec, false, 100).unwrap();
        assert_eq!(req.inputs[0].tensor.shape, vec![2, 2]);
        assert!(req.output_is_binary(None).unwrap());
        assert!(decode_raw_request(&Bytes::from(vec![0u8; 12]), &spec, false, 100).is_err());
        assert!(decode_raw_request(&Bytes::from(vec![0u8; 7]), &spec, false, 100).is_err());
        // Batching: the batch dimension is 1, the other variable one takes the rest.
        let spec = TensorSpec::new("INPUT0", DataType::Int32, &[-1, -1]);
        let req = decode_raw_request(&Bytes::from(vec![0u8; 24]), &spec, true, 100).unwrap();
        assert_eq!(req.inputs[0].tensor.shape, vec![1, 6]);
        let any = TensorSpec {
            name: "x".into(),
            ..TensorSpec::default()
        };
        let req = decode_raw_request(&Bytes::from(vec![0u8; 5]), &any, true, 100).unwrap();
        assert_eq!(req.inputs[0].tensor.shape, vec![1, 5]);
    }

    #[test]
    fn binary_choice_inherits_the_request_flag() {
        let json = r#"{"parameters":{"binary_data_output":true},"inputs":[],"outputs":[{"name":"A"},{"name":"B","parameters":{"binary_data":false}}]}"#;
        let b = Bytes::from(json);
        let req = decode_infer_request(&b, None, 100).unwrap();
        assert!(req.output_is_binary(Some(&req.outputs[0])).unwrap());
        assert!(!req.output_is_binary(Some(&req.outputs[1])).unwrap());
        assert!(req.output_is_binary(None).unwrap());
    }
}
