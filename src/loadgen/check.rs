//! Every response is checked: status and framing always; with `--check full` also the V2
//! structure (outputs, sizes matching shapes) and, for identity and add_sub, the values.

use bytes::Bytes;
use serde_json::Value;

use super::client::Reply;
use super::workload::Variant;
use crate::proto::inference::ModelInferResponse;
use crate::tensors::{decode_json_data, fixed_byte_size, DataType};

/// JSON responses larger than this are checked for framing only after the first: parsing a
/// large JSON body costs more than the server's answer, and would make the generator the
/// bottleneck.
const PARSE_JSON_UP_TO: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckLevel {
    /// Status 200 and a complete body: for servers that are not V2 (a plain responder).
    Framing,
    /// Also the V2 response: outputs whose sizes match their shapes; values where known.
    Full,
}

/// What a response's values must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Values {
    /// By model name: identity* and add_sub*/simple are checked, others not.
    Auto,
    /// OUTPUT0 is INPUT0.
    Identity,
    /// OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32, wrapping).
    AddSub,
    Off,
}

impl Values {
    pub fn resolve(self, model: &str) -> Values {
        match self {
            Values::Auto if model.starts_with("identity") => Values::Identity,
            Values::Auto if model.starts_with("add_sub") || model == "simple" => Values::AddSub,
            Values::Auto => Values::Off,
            other => other,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Checker {
    pub level: CheckLevel,
    pub values: Values,
}

struct Output {
    name: String,
    datatype: DataType,
    shape: Vec<u64>,
    data: Bytes,
}

impl Checker {
    /// `first`: the first answer to this variant on this connection, always parsed in full.
    pub fn check(&self, reply: &Reply, variant: &Variant, first: bool) -> Result<(), String> {
        if reply.status != 200 {
            let text = String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]);
            return Err(format!("status {}: {text}", reply.status));
        }
        if self.level == CheckLevel::Framing {
            return Ok(());
        }
        let outputs = match (&reply.grpc, reply.header_length) {
            (Some(response), _) => grpc_outputs(response)?,
            (None, Some(len)) => binary_outputs(&reply.body, len)?,
            (None, None) if first || reply.body.len() <= PARSE_JSON_UP_TO => {
                json_outputs(&reply.body)?
            }
            (None, None) => {
                let body = &reply.body;
                if body.first() != Some(&b'{') || body.last() != Some(&b'}') {
                    return Err("the response body is not a JSON object".into());
                }
                return Ok(());
            }
        };
        if outputs.is_empty() {
            return Err("the response has no outputs".into());
        }
        match self.values {
            Values::Identity => check_identity(&outputs, variant),
            Values::AddSub => check_add_sub(&outputs, variant),
            Values::Auto | Values::Off => Ok(()),
        }
    }
}

fn parse_output(entry: &Value) -> Result<(String, DataType, Vec<u64>), String> {
    let name = entry["name"].as_str().ok_or("an output without a name")?;
    let datatype = entry["datatype"]
        .as_str()
        .and_then(DataType::parse)
        .ok_or_else(|| format!("output {name}: bad datatype"))?;
    let shape = entry["shape"]
        .as_array()
        .ok_or_else(|| format!("output {name}: no shape"))?
        .iter()
        .map(|d| {
            d.as_u64()
                .ok_or_else(|| format!("output {name}: bad shape"))
        })
        .collect::<Result<_, _>>()?;
    Ok((name.to_string(), datatype, shape))
}

fn binary_outputs(body: &Bytes, header_len: usize) -> Result<Vec<Output>, String> {
    if header_len > body.len() {
        return Err(format!(
            "Inference-Header-Content-Length {header_len} exceeds the body ({} bytes)",
            body.len()
        ));
    }
    let header: Value = serde_json::from_slice(&body[..header_len])
        .map_err(|e| format!("response header is not JSON: {e}"))?;
    let mut offset = header_len;
    let mut outputs = Vec::new();
    for entry in header["outputs"].as_array().ok_or("no outputs array")? {
        let (name, datatype, shape) = parse_output(entry)?;
        let data = match entry["parameters"]["binary_data_size"].as_u64() {
            Some(size) => {
                let end = offset + size as usize;
                if end > body.len() {
                    return Err(format!("output {name}: binary data past the body's end"));
                }
                let count = shape.iter().product::<u64>();
                if fixed_byte_size(datatype, count).is_some_and(|n| n != size) {
                    return Err(format!(
                        "output {name}: {size} bytes for {datatype} {shape:?}"
                    ));
                }
                let data = body.slice(offset..end);
                offset = end;
                data
            }
            None => json_data(entry, &name, datatype, &shape)?,
        };
        outputs.push(Output {
            name,
            datatype,
            shape,
            data,
        });
    }
    if offset != body.len() {
        return Err(format!(
            "{} bytes after the last output",
            body.len() - offset
        ));
    }
    Ok(outputs)
}

fn grpc_outputs(response: &ModelInferResponse) -> Result<Vec<Output>, String> {
    response
        .outputs
        .iter()
        .zip(&response.raw_output_contents)
        .map(|(output, data)| {
            let name = output.name.clone();
            let datatype = DataType::parse(&output.datatype)
                .ok_or_else(|| format!("output {name}: bad datatype {}", output.datatype))?;
            let shape = output
                .shape
                .iter()
                .map(|&d| u64::try_from(d).map_err(|_| format!("output {name}: bad shape")))
                .collect::<Result<Vec<u64>, _>>()?;
            Ok(Output {
                name,
                datatype,
                shape,
                data: data.clone(),
            })
        })
        .collect()
}

fn json_outputs(body: &[u8]) -> Result<Vec<Output>, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("response is not JSON: {e}"))?;
    document["outputs"]
        .as_array()
        .ok_or("no outputs array")?
        .iter()
        .map(|entry| {
            let (name, datatype, shape) = parse_output(entry)?;
            let data = json_data(entry, &name, datatype, &shape)?;
            Ok(Output {
                name,
                datatype,
                shape,
                data,
            })
        })
        .collect()
}

fn json_data(
    entry: &Value,
    name: &str,
    datatype: DataType,
    shape: &[u64],
) -> Result<Bytes, String> {
    let data = entry
        .get("data")
        .ok_or_else(|| format!("output {name}: no data"))?;
    decode_json_data(&data.to_string(), datatype, shape, u64::MAX)
        .map_err(|e| format!("output {name}: {e}"))
}

fn input<'v>(variant: &'v Variant, name: &str) -> Result<&'v crate::tensors::Tensor, String> {
    variant
        .inputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| format!("value checks need an input named {name}"))
}

fn output<'o>(outputs: &'o [Output], name: &str) -> Result<&'o Output, String> {
    outputs
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| format!("no output {name}"))
}

fn check_identity(outputs: &[Output], variant: &Variant) -> Result<(), String> {
    let sent = input(variant, "INPUT0")?;
    let got = output(outputs, "OUTPUT0")?;
    if got.datatype != sent.datatype || got.shape != sent.shape {
        return Err(format!(
            "OUTPUT0 is {} {:?}, INPUT0 was {} {:?}",
            got.datatype, got.shape, sent.datatype, sent.shape
        ));
    }
    if got.data != sent.data {
        return Err("OUTPUT0's values differ from INPUT0's".into());
    }
    Ok(())
}

fn check_add_sub(outputs: &[Output], variant: &Variant) -> Result<(), String> {
    let ints = |b: &[u8]| -> Vec<i32> {
        b.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let (a, b) = (input(variant, "INPUT0")?, input(variant, "INPUT1")?);
    if a.datatype != DataType::Int32 || b.datatype != DataType::Int32 {
        return Err("add_sub value checks need INT32 inputs".into());
    }
    let (a, b) = (ints(&a.data), ints(&b.data));
    for (name, op) in [
        ("OUTPUT0", i32::wrapping_add as fn(i32, i32) -> i32),
        ("OUTPUT1", i32::wrapping_sub),
    ] {
        let got = output(outputs, name)?;
        let want: Vec<i32> = a.iter().zip(&b).map(|(&x, &y)| op(x, y)).collect();
        if got.datatype != DataType::Int32 || ints(&got.data) != want {
            return Err(format!("{name}'s values are wrong"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensors::Tensor;

    fn variant(values: &[f32]) -> Variant {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = Tensor {
            datatype: DataType::Fp32,
            shape: vec![1, values.len() as u64],
            data: Bytes::from(data),
        };
        Variant {
            request: Bytes::new(),
            inputs: vec![("INPUT0".into(), tensor)],
        }
    }

    fn binary_reply(values: &[f32], size: usize) -> Reply {
        let header = format!(
            r#"{{"outputs":[{{"name":"OUTPUT0","datatype":"FP32","shape":[1,{}],"parameters":{{"binary_data_size":{size}}}}}]}}"#,
            values.len()
        );
        let mut body = header.clone().into_bytes();
        body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        Reply {
            status: 200,
            header_length: Some(header.len()),
            body: Bytes::from(body),
            grpc: None,
            size: 0,
        }
    }

    #[test]
    fn identity_answers_are_checked_to_the_byte() {
        let checker = Checker {
            level: CheckLevel::Full,
            values: Values::Identity,
        };
        let sent = variant(&[1.0, 2.5]);
        checker
            .check(&binary_reply(&[1.0, 2.5], 8), &sent, true)
            .unwrap();
        let wrong = checker.check(&binary_reply(&[1.0, 2.0], 8), &sent, true);
        assert!(wrong.unwrap_err().contains("differ"));
        let lying = checker.check(&binary_reply(&[1.0, 2.5], 12), &sent, true);
        assert!(lying.unwrap_err().contains("past the body"));
        let json = Reply {
            status: 200,
            header_length: None,
            body: Bytes::from_static(
                br#"{"outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[1,2],"data":[1.0,2.5]}]}"#,
            ),
            grpc: None,
            size: 0,
        };
        checker.check(&json, &sent, true).unwrap();
        let failed = Reply {
            status: 503,
            header_length: None,
            body: Bytes::from_static(b"{}"),
            grpc: None,
            size: 0,
        };
        assert!(checker
            .check(&failed, &sent, true)
            .unwrap_err()
            .starts_with("status 503"));
        let framing = Checker {
            level: CheckLevel::Framing,
            values: Values::Identity,
        };
        framing
            .check(&binary_reply(&[9.0, 9.0], 8), &sent, true)
            .unwrap();
    }
}
