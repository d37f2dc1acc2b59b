//! Triton's model configuration, as `config.pbtxt` (protobuf text format) or as the JSON a
//! load request carries, read for the fields that map onto tensord's config: name, platform/backend, max_batch_size, input/output, instance_group, version_policy,
//! default_model_filename, dynamic_batching, and for ONNX Runtime the session `parameters` and
//! `optimization` (graph level, execution accelerators). Any other field is refused
//! (`pbtxt_fields.rs`).

use super::config::{
    Dim, DynamicBatching, ExecutionMode, ModelConfig, OnnxRuntimeSettings, OptimizationLevel,
    TensorConfig, VersionPolicy,
};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
    Scalar(String),
    Message(Vec<(String, Value)>),
}

pub(super) type Fields = Vec<(String, Value)>;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn skip_space(&mut self) {
        loop {
            let rest = &self.text[self.pos..];
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with('#') {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else {
                return;
            }
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.text[self.pos..].chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn error(&self, what: &str) -> String {
        let line = self.text[..self.pos].matches('\n').count() + 1;
        format!("line {line}: {what}")
    }

    /// An identifier, number or quoted string.
    fn token(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                let start = self.pos + 1;
                let len = self.text[start..]
                    .find(q)
                    .ok_or_else(|| self.error("unterminated string"))?;
                self.pos = start + len + 1;
                Ok(self.text[start..start + len].to_string())
            }
            Some(c) if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '+' => {
                let start = self.pos;
                let len = self.text[start..]
                    .find(|c: char| !(c.is_alphanumeric() || "-_.+".contains(c)))
                    .unwrap_or(self.text.len() - start);
                self.pos += len;
                Ok(self.text[start..start + len].to_string())
            }
            other => Err(self.error(&format!("unexpected {other:?}"))),
        }
    }

    /// Fields until `}` (nested) or the end of the text.
    fn message(&mut self, nested: bool) -> Result<Fields, String> {
        let mut fields = Vec::new();
        loop {
            match self.peek() {
                None if nested => return Err(self.error("missing '}'")),
                None => return Ok(fields),
                Some('}') if nested => {
                    self.pos += 1;
                    return Ok(fields);
                }
                _ => {}
            }
            let name = self.token()?;
            self.eat(':');
            if self.eat('[') {
                while !self.eat(']') {
                    fields.push((name.clone(), self.value()?));
                    self.eat(',');
                }
            } else {
                fields.push((name, self.value()?));
            }
            if !self.eat(',') {
                self.eat(';');
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        if self.eat('{') {
            Ok(Value::Message(self.message(true)?))
        } else {
            Ok(Value::Scalar(self.token()?))
        }
    }
}

fn scalar<'f>(fields: &'f Fields, key: &str) -> Option<&'f str> {
    fields.iter().find_map(|(k, v)| match v {
        Value::Scalar(s) if k == key => Some(s.as_str()),
        _ => None,
    })
}

fn scalars<'f>(fields: &'f Fields, key: &'f str) -> impl Iterator<Item = &'f str> + 'f {
    fields.iter().filter_map(move |(k, v)| match v {
        Value::Scalar(s) if k == key => Some(s.as_str()),
        _ => None,
    })
}

fn messages<'f>(fields: &'f Fields, key: &'f str) -> impl Iterator<Item = &'f Fields> + 'f {
    fields.iter().filter_map(move |(k, v)| match v {
        Value::Message(m) if k == key => Some(m),
        _ => None,
    })
}

fn number<T: std::str::FromStr>(text: &str, key: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("key '{key}': '{text}' is not a valid number"))
}

/// Maps a Triton config in protobuf text onto tensord's.
pub fn config_from_pbtxt(text: &str) -> Result<ModelConfig, String> {
    config_from_fields(Parser { text, pos: 0 }.message(false)?)
}

/// Maps a Triton config in JSON (protobuf's JSON mapping, as Triton's load API takes it) onto
/// tensord's. Repeated fields are arrays, maps (`parameters`) are objects.
pub fn config_from_json(text: &str) -> Result<ModelConfig, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    config_from_fields(json_fields(&value)?)
}

fn json_fields(value: &serde_json::Value) -> Result<Fields, String> {
    let serde_json::Value::Object(map) = value else {
        return Err(format!("expected an object, got {value}"));
    };
    let mut fields = Vec::new();
    for (key, value) in map {
        push_json(&mut fields, key, value)?;
    }
    Ok(fields)
}

fn push_json(fields: &mut Fields, key: &str, value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value as Json;
    let value = match value {
        Json::Null => return Ok(()),
        Json::Array(items) => {
            return items
                .iter()
                .try_for_each(|item| push_json(fields, key, item));
        }
        // A protobuf map: each entry is a message of `key` and `value`.
        Json::Object(map) if key == "parameters" => {
            for (name, entry) in map {
                let entry = vec![
                    ("key".to_string(), Value::Scalar(name.clone())),
                    ("value".to_string(), Value::Message(json_fields(entry)?)),
                ];
                fields.push((key.to_string(), Value::Message(entry)));
            }
            return Ok(());
        }
        Json::Object(_) => Value::Message(json_fields(value)?),
        Json::String(text) => Value::Scalar(text.clone()),
        Json::Number(n) => Value::Scalar(n.to_string()),
        Json::Bool(b) => Value::Scalar(b.to_string()),
    };
    fields.push((key.to_string(), value));
    Ok(())
}

fn config_from_fields(fields: Fields) -> Result<ModelConfig, String> {
    super::pbtxt_fields::check(&fields, "")?;
    let backend = match (scalar(&fields, "platform"), scalar(&fields, "backend")) {
        (Some("onnxruntime_onnx"), _) | (_, Some("onnxruntime")) => "onnx".to_string(),
        (_, Some("identity")) => "builtin".to_string(),
        (_, Some(b)) => b.to_string(),
        (Some(p), None) => p.to_string(),
        (None, None) => return Err("key 'platform'/'backend': neither is set".into()),
    };
    let mut config = ModelConfig {
        backend,
        max_batch_size: scalar(&fields, "max_batch_size")
            .map(|v| number(v, "max_batch_size"))
            .transpose()?
            .unwrap_or(0),
        default_model_filename: scalar(&fields, "default_model_filename").map(str::to_string),
        builtin: (scalar(&fields, "backend") == Some("identity")).then(|| "identity".to_string()),
        ..ModelConfig::default()
    };
    config.input = tensors(&fields, "input")?;
    config.output = tensors(&fields, "output")?;
    let groups: Vec<&Fields> = messages(&fields, "instance_group").collect();
    if !groups.is_empty() {
        config.instance_count = groups
            .iter()
            .map(|g| scalar(g, "count").map_or(Ok(1), |c| number(c, "instance_group.count")))
            .sum::<Result<usize, String>>()?;
        if let Some(gpu) = groups
            .iter()
            .find(|g| scalar(g, "kind") == Some("KIND_GPU"))
        {
            let index = scalars(gpu, "gpus")
                .next()
                .map_or(Ok(0), |g| number(g, "instance_group.gpus"))?;
            config.device = format!("cuda:{index}");
        }
    }
    if let Some(batching) = messages(&fields, "dynamic_batching").next() {
        config.dynamic_batching = Some(DynamicBatching {
            preferred_batch_size: scalars(batching, "preferred_batch_size")
                .map(|p| number(p, "dynamic_batching.preferred_batch_size"))
                .collect::<Result<_, _>>()?,
            max_queue_delay_microseconds: scalar(batching, "max_queue_delay_microseconds")
                .map_or(Ok(0), |d| {
                    number(d, "dynamic_batching.max_queue_delay_microseconds")
                })?,
        });
        if let Some(policy) = messages(batching, "default_queue_policy").next() {
            config.max_queue_size = scalar(policy, "max_queue_size").map_or(Ok(0), |n| {
                number(n, "dynamic_batching.default_queue_policy.max_queue_size")
            })?;
        }
    }
    config.onnxruntime = onnxruntime_settings(&fields)?;
    if let Some(policy) = messages(&fields, "version_policy").next() {
        config.version_policy = if let Some(latest) = messages(policy, "latest").next() {
            VersionPolicy::Latest(
                scalar(latest, "num_versions")
                    .map_or(Ok(1), |n| number(n, "version_policy.latest.num_versions"))?,
            )
        } else if messages(policy, "all").next().is_some() {
            VersionPolicy::All(true)
        } else if let Some(specific) = messages(policy, "specific").next() {
            VersionPolicy::Specific(
                scalars(specific, "versions")
                    .map(|v| number(v, "version_policy.specific.versions"))
                    .collect::<Result<_, _>>()?,
            )
        } else {
            return Err("key 'version_policy': expected latest, all or specific".into());
        };
    }
    Ok(config)
}

/// Triton's onnxruntime backend settings: `parameters` (string values) and `optimization`.
fn onnxruntime_settings(fields: &Fields) -> Result<Option<OnnxRuntimeSettings>, String> {
    let mut settings = OnnxRuntimeSettings::default();
    let mut any = false;
    for parameter in messages(fields, "parameters") {
        let key = scalar(parameter, "key").ok_or("key 'parameters.key': missing")?;
        let value = messages(parameter, "value")
            .next()
            .and_then(|v| scalar(v, "string_value"))
            .ok_or_else(|| format!("key 'parameters.{key}': missing value.string_value"))?;
        let name = format!("parameters.{key}");
        match key {
            "intra_op_thread_count" => settings.intra_op_threads = Some(number(value, &name)?),
            // Triton takes 0 as ONNX Runtime's default, which is what leaving it out means here.
            "inter_op_thread_count" => {
                settings.inter_op_threads = Some(number::<usize>(value, &name)?).filter(|&n| n > 0)
            }
            "execution_mode" => {
                settings.execution_mode = match value {
                    "0" => ExecutionMode::Sequential,
                    "1" => ExecutionMode::Parallel,
                    _ => return Err(format!("key '{name}': '{value}' is neither 0 nor 1")),
                }
            }
            _ => {
                return Err(format!(
                    "key '{name}': not a parameter tensord knows (it takes \
                     intra_op_thread_count, inter_op_thread_count and execution_mode)"
                ))
            }
        }
        any = true;
    }
    if let Some(optimization) = messages(fields, "optimization").next() {
        if let Some(graph) = messages(optimization, "graph").next() {
            // Triton's levels: -1 basic, 1 extended, 2 none; anything else (0, unset) all.
            settings.graph_optimization_level = match scalar(graph, "level") {
                Some("-1") => OptimizationLevel::Basic,
                Some("1") => OptimizationLevel::Extended,
                Some("2") => OptimizationLevel::Disable,
                Some("0") | None => OptimizationLevel::All,
                Some(other) => {
                    return Err(format!(
                        "key 'optimization.graph.level': '{other}' is not -1, 0, 1 or 2"
                    ))
                }
            };
            any = true;
        }
        for accelerators in messages(optimization, "execution_accelerators") {
            for kind in ["gpu_execution_accelerator", "cpu_execution_accelerator"] {
                for accelerator in messages(accelerators, kind) {
                    let key = format!("optimization.execution_accelerators.{kind}");
                    let name = scalar(accelerator, "name")
                        .ok_or_else(|| format!("key '{key}.name': missing"))?;
                    if messages(accelerator, "parameters").next().is_some() {
                        return Err(format!(
                            "key '{key}.parameters': accelerator parameters are not supported"
                        ));
                    }
                    settings.execution_accelerators.push(name.to_string());
                    any = true;
                }
            }
        }
    }
    Ok(any.then_some(settings))
}

fn tensors(fields: &Fields, key: &str) -> Result<Vec<TensorConfig>, String> {
    messages(fields, key)
        .enumerate()
        .map(|(i, t)| {
            let name =
                scalar(t, "name").ok_or_else(|| format!("key '{key}[{i}].name': missing"))?;
            let data_type = scalar(t, "data_type")
                .ok_or_else(|| format!("key '{key}[{i}].data_type': missing"))?;
            let datatype = match data_type.strip_prefix("TYPE_") {
                Some("STRING") => "BYTES".to_string(),
                Some(t) => t.to_string(),
                None => {
                    return Err(format!(
                        "key '{key}[{i}].data_type': unknown type '{data_type}'"
                    ))
                }
            };
            let dims = scalars(t, "dims")
                .map(|d| number(d, &format!("{key}[{i}].dims")).map(Dim::Fixed))
                .collect::<Result<_, _>>()?;
            let layout = scalar(t, "format")
                .and_then(|f| f.strip_prefix("FORMAT_"))
                .map(str::to_string);
            Ok(TensorConfig {
                name: name.to_string(),
                datatype,
                dims,
                layout,
                image: None,
                label_filename: scalar(t, "label_filename").map(str::to_string),
                reshape: messages(t, "reshape")
                    .next()
                    .map(|r| {
                        scalars(r, "shape")
                            .map(|d| number(d, &format!("{key}[{i}].reshape.shape")))
                            .collect::<Result<Vec<i64>, _>>()
                    })
                    .transpose()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_configs_map_like_pbtxt() {
        let json = r#"{"name": "simple", "backend": "onnxruntime", "max_batch_size": 8,
            "input": [{"name": "INPUT0", "data_type": "TYPE_INT32", "dims": ["16"]}],
            "output": [{"name": "OUTPUT0", "data_type": "TYPE_FP32", "dims": [16],
                        "label_filename": "labels.txt"}],
            "dynamic_batching": {"preferred_batch_size": [2, 4], "max_queue_delay_microseconds": 100},
            "parameters": {"intra_op_thread_count": {"string_value": "2"}},
            "instance_group": [{"count": 2, "kind": "KIND_CPU"}]}"#;
        let from_json = config_from_json(json).unwrap();
        let pbtxt = r#"
            name: "simple" backend: "onnxruntime" max_batch_size: 8
            input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] } ]
            output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 16 ] label_filename: "labels.txt" } ]
            dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100 }
            parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
            instance_group [ { count: 2 kind: KIND_CPU } ]
        "#;
        assert_eq!(from_json, config_from_pbtxt(pbtxt).unwrap());
        assert_eq!(
            from_json.output[0].label_filename.as_deref(),
            Some("labels.txt")
        );
        assert!(config_from_json("[1]")
            .unwrap_err()
            .contains("expected an object"));
        assert!(config_from_json("{").unwrap_err().contains("invalid JSON"));
        assert!(
            config_from_json(r#"{"backend": "onnxruntime", "max_batch_size": "x"}"#)
                .unwrap_err()
                .contains("max_batch_size")
        );
    }

    #[test]
    fn reshape_is_read_and_must_hold_the_same_elements() {
        let config = |reshape: &str| {
            config_from_pbtxt(&format!(
                "backend: \"onnxruntime\" max_batch_size: 4\n\
                 input [ {{ name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] {reshape} }} ]"
            ))
            .unwrap()
        };
        let specs = config("reshape: { shape: [ 2, 2 ] }")
            .specs("input")
            .unwrap();
        assert_eq!(specs[0].dims, Some(vec![-1, 4]));
        assert_eq!(specs[0].reshape, Some(vec![2, 2]));
        assert_eq!(specs[0].model_dims(true), Some(vec![-1, 2, 2]));
        assert_eq!(config("").specs("input").unwrap()[0].reshape, None);
        for bad in [
            "reshape: { shape: [ 3 ] }",
            "reshape: { shape: [ -1, -1 ] }",
        ] {
            let err = config(bad).specs("input").unwrap_err();
            assert!(err.contains("input[0].reshape"), "{err}");
        }
    }

    #[test]
    fn triton_simple_model_config() {
        let text = r#"
            name: "simple"   # the classic
            platform: "onnxruntime_onnx"
            max_batch_size: 8
            input [
              {
                name: "INPUT0"
                data_type: TYPE_INT32
                dims: [ 16 ]
              },
              {
                name: "INPUT1"
                data_type: TYPE_STRING
                dims: [ -1, 3 ]
                format: FORMAT_NHWC
              }
            ]
            output { name: "OUTPUT0" data_type: TYPE_FP32 dims: 16 }
            instance_group [ { count: 2 kind: KIND_GPU gpus: [ 1 ] } ]
            version_policy: { latest: { num_versions: 2 } }
            dynamic_batching {
              preferred_batch_size: [ 4, 8 ]
              max_queue_delay_microseconds: 100
              default_queue_policy { max_queue_size: 12 }
            }
        "#;
        let c = config_from_pbtxt(text).unwrap();
        assert_eq!(c.backend, "onnx");
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(c.input.len(), 2);
        assert_eq!(c.input[0].datatype, "INT32");
        assert_eq!(c.input[0].dims, vec![Dim::Fixed(16)]);
        assert_eq!(c.input[1].datatype, "BYTES");
        assert_eq!(c.input[1].dims, vec![Dim::Fixed(-1), Dim::Fixed(3)]);
        assert_eq!(c.input[1].layout.as_deref(), Some("NHWC"));
        assert_eq!(c.output[0].dims, vec![Dim::Fixed(16)]);
        assert_eq!(c.instance_count, 2);
        assert_eq!(c.device, "cuda:1");
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(
            c.dynamic_batching,
            Some(DynamicBatching {
                preferred_batch_size: vec![4, 8],
                max_queue_delay_microseconds: 100
            })
        );
        assert_eq!(c.max_queue_size, 12);
        assert_eq!(c.onnxruntime, None);
        assert_eq!(
            config_from_pbtxt(
                "backend: \"onnxruntime\"\nversion_policy { specific { versions: [1, 3] } }"
            )
            .unwrap()
            .version_policy,
            VersionPolicy::Specific(vec![1, 3])
        );
    }

    #[test]
    fn onnxruntime_parameters_and_optimization() {
        let c = config_from_pbtxt(
            r#"
            backend: "onnxruntime"
            parameters { key: "intra_op_thread_count" value: { string_value: "3" } }
            parameters { key: "execution_mode" value: { string_value: "1" } }
            parameters { key: "inter_op_thread_count" value: { string_value: "2" } }
            optimization {
              graph: { level: -1 }
              execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] }
            }
            "#,
        )
        .unwrap();
        assert_eq!(
            c.onnxruntime,
            Some(OnnxRuntimeSettings {
                intra_op_threads: Some(3),
                inter_op_threads: Some(2),
                execution_mode: ExecutionMode::Parallel,
                graph_optimization_level: OptimizationLevel::Basic,
                execution_accelerators: vec!["openvino".into()],
            })
        );
        c.validate().unwrap();
        // Triton's README example: 0 threads in sequential mode means the defaults.
        let c = config_from_pbtxt(
            "backend: \"onnxruntime\"\nparameters { key: \"inter_op_thread_count\" value: { string_value: \"0\" } }",
        )
        .unwrap();
        assert_eq!(c.onnxruntime.as_ref().unwrap().inter_op_threads, None);
        c.validate().unwrap();
        for (text, key) in [
            ("parameters { key: \"enable_mem_arena\" value: { string_value: \"1\" } }", "parameters.enable_mem_arena"),
            ("parameters { key: \"execution_mode\" value: { string_value: \"2\" } }", "parameters.execution_mode"),
            ("optimization { graph { level: 5 } }", "optimization.graph.level"),
            (
                "optimization { execution_accelerators { gpu_execution_accelerator [ { name: \"tensorrt\" parameters { key: \"precision_mode\" value: \"FP16\" } } ] } }",
                "parameters",
            ),
        ] {
            let err = config_from_pbtxt(&format!("backend: \"onnxruntime\"\n{text}")).unwrap_err();
            assert!(err.contains(key), "{err}");
        }
        let sequential_inter = config_from_pbtxt(
            "backend: \"onnxruntime\"\nparameters { key: \"inter_op_thread_count\" value: { string_value: \"2\" } }",
        )
        .unwrap();
        assert!(sequential_inter
            .validate()
            .unwrap_err()
            .contains("inter_op_threads"));
    }

    #[test]
    fn errors_name_the_line_or_key() {
        assert!(config_from_pbtxt("platform: \"x\"\ninput [ { name: \"a\"")
            .unwrap_err()
            .contains("missing '}'"));
        assert!(config_from_pbtxt("platform: \"x\"\nmax_batch_size: many")
            .unwrap_err()
            .contains("max_batch_size"));
        assert!(
            config_from_pbtxt("platform: \"x\"\ninput { name: \"a\" data_type: INT }")
                .unwrap_err()
                .contains("input[0].data_type")
        );
        assert!(config_from_pbtxt("name: \"x\"")
            .unwrap_err()
            .contains("platform"));
    }
}
