//! What the load sends: the model's inputs (from its metadata, with `--shape` overrides),
//! their data, and each request encoded once, ahead of the run, as JSON or binary tensors.

use std::path::Path;

use bytes::Bytes;
use serde_json::{json, Value};

use super::client::{format_request, Target};
use crate::tensors::{decode_json_data, push_bytes_element, write_json_data, DataType, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct InputPlan {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<u64>,
}

/// Inputs from the model's metadata (`None`: the server has none, e.g. a plain responder):
/// `--shape NAME:dims` replaces a shape, -1 dims become the batch size (first) or 1, and
/// `--datatype NAME:TYPE` names the datatype of inputs the metadata lacks (default FP32).
pub fn plan_inputs(
    metadata: Option<&Value>,
    shapes: &[String],
    datatypes: &[String],
    batch_size: u64,
) -> Result<Vec<InputPlan>, String> {
    let overrides = |list: &[String], flag: &str| -> Result<Vec<(String, String)>, String> {
        list.iter()
            .map(|s| {
                s.split_once(':')
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .ok_or_else(|| format!("--{flag} {s}: expected NAME:VALUE"))
            })
            .collect()
    };
    let shapes = overrides(shapes, "shape")?;
    let datatypes = overrides(datatypes, "datatype")?;
    // NAME: (no dims) is a scalar.
    let parse_dims = |name: &str, dims: &str| -> Result<Vec<i64>, String> {
        (dims.split(',').filter(|d| !d.trim().is_empty()))
            .map(|d| d.trim().parse::<i64>())
            .collect::<Result<_, _>>()
            .map_err(|_| format!("--shape {name}:{dims}: dims are comma-separated integers"))
    };
    let mut plans = Vec::new();
    let declared = metadata
        .and_then(|m| m.get("inputs"))
        .and_then(Value::as_array)
        // Servers that declare no inputs (KServe's custom models) get --shape's.
        .filter(|inputs| !inputs.is_empty());
    let names: Vec<(String, Option<&Value>)> = match declared {
        Some(inputs) => inputs
            .iter()
            .map(|i| (i["name"].as_str().unwrap_or_default().to_string(), Some(i)))
            .collect(),
        None => shapes.iter().map(|(n, _)| (n.clone(), None)).collect(),
    };
    if names.is_empty() {
        return Err(
            "no inputs: the server has no metadata for the model, so name every input \
                    with --shape NAME:dims"
                .into(),
        );
    }
    for (name, declared) in names {
        let datatype_name = datatypes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.as_str())
            .or_else(|| declared.and_then(|d| d["datatype"].as_str()))
            // A model that takes any datatype (tensord's identity says ANY) gets FP32.
            .filter(|t| *t != "ANY")
            .unwrap_or("FP32");
        let datatype = DataType::parse(datatype_name).ok_or_else(|| {
            format!("input {name}: datatype {datatype_name} is not a V2 datatype")
        })?;
        let dims: Vec<i64> = match shapes.iter().find(|(n, _)| *n == name) {
            Some((_, dims)) => parse_dims(&name, dims)?,
            None => declared
                .and_then(|d| d["shape"].as_array())
                .map(|s| s.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default(),
        };
        let shape = dims
            .iter()
            .enumerate()
            .map(|(i, &d)| match (d, i) {
                (-1, 0) => batch_size,
                (-1, _) => 1,
                (d, _) => d.max(0) as u64,
            })
            .collect();
        plans.push(InputPlan {
            name,
            datatype,
            shape,
        });
    }
    Ok(plans)
}

/// Where input values come from (`--input-data`).
#[derive(Clone, Debug)]
pub enum InputData {
    Random(u64),
    Zero,
    /// perf_analyzer's format: `{"data": [{"INPUT0": [..] or {"content": [..], "shape": [..]}}, ..]}`.
    File(std::path::PathBuf),
    /// Every file of a folder (JPEG/PNG), sent as a BYTES input: one request per image.
    Images(std::path::PathBuf),
}

impl InputData {
    pub fn parse(text: &str, seed: u64) -> InputData {
        match text {
            "random" => InputData::Random(seed),
            "zero" => InputData::Zero,
            path if Path::new(path).is_dir() => InputData::Images(path.into()),
            path => InputData::File(path.into()),
        }
    }
}

/// The tensors of one request.
pub type Inputs = Vec<(String, Tensor)>;

/// One or more sets of inputs; requests rotate through them.
pub fn make_inputs(plans: &[InputPlan], data: &InputData) -> Result<Vec<Inputs>, String> {
    match data {
        InputData::Random(seed) => {
            let mut rng = SplitMix(*seed);
            Ok(vec![plans
                .iter()
                .map(|p| (p.name.clone(), random_tensor(p, &mut rng)))
                .collect()])
        }
        InputData::Zero => Ok(vec![plans
            .iter()
            .map(|p| (p.name.clone(), zero_tensor(p)))
            .collect()]),
        InputData::File(path) => inputs_from_file(path, plans),
        InputData::Images(dir) => images_from_dir(dir, plans),
    }
}

fn elements(shape: &[u64]) -> usize {
    shape.iter().product::<u64>() as usize
}

fn zero_tensor(plan: &InputPlan) -> Tensor {
    let n = elements(&plan.shape);
    let data = match plan.datatype.element_size() {
        Some(size) => vec![0u8; n * size],
        None => {
            let mut out = Vec::with_capacity(n * 4);
            for _ in 0..n {
                let _ = push_bytes_element(&mut out, b"");
            }
            out
        }
    };
    tensor(plan, data)
}

fn tensor(plan: &InputPlan, data: Vec<u8>) -> Tensor {
    Tensor {
        datatype: plan.datatype,
        shape: plan.shape.clone(),
        data: Bytes::from(data),
    }
}

/// Values every datatype can hold exactly (and that JSON carries without loss): floats are
/// multiples of 1/8 in [-16, 16), integers small enough for the narrowest type.
fn random_tensor(plan: &InputPlan, rng: &mut SplitMix) -> Tensor {
    use half::{bf16, f16};
    let n = elements(&plan.shape);
    let mut out = Vec::with_capacity(n * plan.datatype.element_size().unwrap_or(12));
    for _ in 0..n {
        let r = rng.next();
        let small = (r % 200) as i64 - 100;
        let float = ((r % 256) as f64 - 128.0) / 8.0;
        match plan.datatype {
            DataType::Bool => out.push((r & 1) as u8),
            DataType::Int8 => out.extend_from_slice(&(small as i8).to_le_bytes()),
            DataType::Int16 => out.extend_from_slice(&(small as i16).to_le_bytes()),
            DataType::Int32 => out.extend_from_slice(&(small as i32).to_le_bytes()),
            DataType::Int64 => out.extend_from_slice(&small.to_le_bytes()),
            DataType::Uint8 => out.push(small.unsigned_abs() as u8),
            DataType::Uint16 => out.extend_from_slice(&(small.unsigned_abs() as u16).to_le_bytes()),
            DataType::Uint32 => out.extend_from_slice(&(small.unsigned_abs() as u32).to_le_bytes()),
            DataType::Uint64 => out.extend_from_slice(&small.unsigned_abs().to_le_bytes()),
            DataType::Fp16 => out.extend_from_slice(&f16::from_f64(float).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&bf16::from_f64(float).to_le_bytes()),
            DataType::Fp32 => out.extend_from_slice(&(float as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&float.to_le_bytes()),
            DataType::Bytes => {
                let text = format!("tensord-{r:x}");
                let _ = push_bytes_element(&mut out, text.as_bytes());
            }
        }
    }
    tensor(plan, out)
}

fn inputs_from_file(path: &Path, plans: &[InputPlan]) -> Result<Vec<Inputs>, String> {
    let fail = |e: String| format!("--input-data {}: {e}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let document: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let entries = document["data"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| fail("expected {\"data\": [{INPUT: values, ...}, ...]}".into()))?;
    entries
        .iter()
        .map(|entry| {
            plans
                .iter()
                .map(|plan| {
                    let value = &entry[plan.name.as_str()];
                    let (content, shape) = match value.get("content") {
                        Some(content) => {
                            let shape = value["shape"]
                                .as_array()
                                .map(|s| s.iter().filter_map(Value::as_u64).collect())
                                .unwrap_or_else(|| plan.shape.clone());
                            (content, shape)
                        }
                        None if value.is_null() => {
                            return Err(fail(format!("an entry has no input {}", plan.name)))
                        }
                        None => (value, plan.shape.clone()),
                    };
                    let data =
                        decode_json_data(&content.to_string(), plan.datatype, &shape, u64::MAX)
                            .map_err(|e| fail(format!("input {}: {e}", plan.name)))?;
                    let tensor = Tensor {
                        datatype: plan.datatype,
                        shape,
                        data,
                    };
                    Ok((plan.name.clone(), tensor))
                })
                .collect()
        })
        .collect()
}

/// One request per image file: the image goes to the model's only input as BYTES [1] (the
/// server decodes it, OVMS-style); a batch size of n sends n images per request.
fn images_from_dir(dir: &Path, plans: &[InputPlan]) -> Result<Vec<Inputs>, String> {
    let fail = |e: String| format!("--input-data {}: {e}", dir.display());
    let [plan] = plans else {
        return Err(fail(
            "image folders feed a model with exactly one input".into(),
        ));
    };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(fail("no files".into()));
    }
    let batch = plan.shape.first().copied().unwrap_or(1).max(1) as usize;
    let images: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| fail(format!("{}: {e}", f.display()))))
        .collect::<Result<_, _>>()?;
    Ok((0..images.len())
        .map(|start| {
            let mut data = Vec::new();
            for i in 0..batch {
                let _ = push_bytes_element(&mut data, &images[(start + i) % images.len()]);
            }
            let tensor = Tensor {
                datatype: DataType::Bytes,
                shape: vec![batch as u64],
                data: Bytes::from(data),
            };
            vec![(plan.name.clone(), tensor)]
        })
        .collect())
}

/// A request ready to send, with what its answer must hold.
#[derive(Clone, Debug)]
pub struct Variant {
    pub request: Bytes,
    pub inputs: Inputs,
}

/// A request's place in a sequence: (sequence_id, sequence_start).
pub type Step = Option<(u64, bool)>;

/// Encodes `inputs` as an infer request: JSON tensors, or binary tensors (inputs and outputs)
/// after a JSON header.
pub fn encode_request(
    target: &Target,
    path: &str,
    inputs: Inputs,
    binary: bool,
    step: Step,
) -> Variant {
    let mut tensors = Vec::with_capacity(inputs.len());
    let mut payload = Vec::new();
    for (name, tensor) in &inputs {
        let mut entry = json!({
            "name": name,
            "shape": tensor.shape,
            "datatype": tensor.datatype.as_str(),
        });
        // JSON strings cannot carry arbitrary bytes (images): such inputs go binary anyway.
        let opaque = tensor.datatype == DataType::Bytes
            && tensor
                .bytes_elements()
                .any(|e| std::str::from_utf8(e).is_err());
        if binary || opaque {
            entry["parameters"] = json!({ "binary_data_size": tensor.data.len() });
            payload.extend_from_slice(&tensor.data);
        } else {
            let mut data = Vec::with_capacity(tensor.data.len() * 3);
            write_json_data(&mut data, tensor);
            // write_json_data writes valid JSON.
            entry["data"] = serde_json::from_slice(&data).unwrap_or(Value::Null);
        }
        tensors.push(entry);
    }
    let mut parameters = serde_json::Map::new();
    if binary {
        parameters.insert("binary_data_output".into(), json!(true));
    }
    if let Some((id, start)) = step {
        parameters.insert("sequence_id".into(), json!(id));
        parameters.insert("sequence_start".into(), json!(start));
    }
    let mut header = json!({ "inputs": tensors });
    if !parameters.is_empty() {
        header["parameters"] = Value::Object(parameters);
    }
    let mut body = header.to_string().into_bytes();
    let header_length = (!payload.is_empty() || binary).then_some(body.len());
    body.extend_from_slice(&payload);
    Variant {
        request: Bytes::from(format_request(target, "POST", path, &body, header_length)),
        inputs,
    }
}

/// A small, fast, seedable generator (SplitMix64), for input values and Poisson arrivals.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> Value {
        json!({"inputs": [
            {"name": "IMAGE", "datatype": "FP32", "shape": [-1, 3, -1]},
            {"name": "ANY", "datatype": "ANY", "shape": [4]},
        ]})
    }

    #[test]
    fn inputs_take_metadata_batch_size_and_overrides() {
        let plans = plan_inputs(Some(&metadata()), &[], &[], 8).unwrap();
        assert_eq!(plans[0].shape, vec![8, 3, 1]);
        assert_eq!(plans[0].datatype, DataType::Fp32);
        assert_eq!(
            (plans[1].datatype, plans[1].shape.clone()),
            (DataType::Fp32, vec![4]),
            "ANY becomes FP32"
        );
        let shapes = ["IMAGE:2,3,5".to_string()];
        let types = ["ANY:INT8".to_string()];
        let plans = plan_inputs(Some(&metadata()), &shapes, &types, 1).unwrap();
        assert_eq!(plans[0].shape, vec![2, 3, 5]);
        assert_eq!(plans[1].datatype, DataType::Int8);
        // No metadata: --shape names the inputs.
        let plans = plan_inputs(None, &["X:1,16".to_string()], &[], 1).unwrap();
        assert_eq!(
            plans,
            vec![InputPlan {
                name: "X".into(),
                datatype: DataType::Fp32,
                shape: vec![1, 16]
            }]
        );
        assert!(plan_inputs(None, &[], &[], 1).is_err());
        assert!(plan_inputs(None, &["X:1,a".to_string()], &[], 1).is_err());
    }

    #[test]
    fn random_values_survive_json_exactly() {
        for name in [
            "BOOL", "INT8", "UINT16", "INT64", "FP16", "BF16", "FP32", "FP64", "BYTES",
        ] {
            let plan = InputPlan {
                name: "X".into(),
                datatype: DataType::parse(name).unwrap(),
                shape: vec![3, 5],
            };
            let tensor = random_tensor(&plan, &mut SplitMix(7));
            let mut text = Vec::new();
            write_json_data(&mut text, &tensor);
            let text = String::from_utf8(text).unwrap();
            let back = decode_json_data(&text, tensor.datatype, &tensor.shape, u64::MAX).unwrap();
            assert_eq!(back, tensor.data, "{name}: {text}");
        }
    }

    #[test]
    fn binary_requests_carry_the_header_length() {
        let target = Target::parse("http://127.0.0.1:8000").unwrap();
        let plan = InputPlan {
            name: "INPUT0".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 2],
        };
        let variant = encode_request(
            &target,
            "/v2/models/m/infer",
            vec![("INPUT0".into(), zero_tensor(&plan))],
            true,
            Some((7, true)),
        );
        let text = String::from_utf8_lossy(&variant.request).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let header_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Inference-Header-Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), header_len + 8);
        let header: Value = serde_json::from_str(&body[..header_len]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(header["parameters"]["binary_data_output"], true);
        assert_eq!(header["parameters"]["sequence_id"], 7);
        assert_eq!(header["parameters"]["sequence_start"], true);
    }
}
