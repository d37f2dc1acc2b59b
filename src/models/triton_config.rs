//! Triton's model configuration: `config.pbtxt` in protobuf's text format, or the JSON a load
//! request carries in protobuf's JSON mapping, both parsed into Triton's own `ModelConfig`
//! message (`proto/model_config.proto`), then mapped onto tensord's config. A field the message
//! does not have is a parse error naming it; a field tensord does not read is refused with its
//! path (`refuse_unread`), so that an operator relying on it never meets silence.

use prost_reflect::{DynamicMessage, Value};

use super::config::{
    Dim, DynamicBatching, ExecutionMode, ModelConfig, OnnxRuntimeSettings, OptimizationLevel,
    TensorConfig, VersionPolicy,
};
use super::proto_json::Proto;
use crate::proto::inference as pb;

const MODEL_CONFIG: &str = "inference.ModelConfig";

/// The `parameters` key of tensord's own settings (`Extensions`, as TOML).
pub const EXTENSIONS: &str = "tensord";

/// Maps a Triton config in protobuf text onto tensord's. Syntax errors give line and column.
pub fn config_from_pbtxt(text: &str) -> Result<ModelConfig, String> {
    let text = colon_before_lists(text);
    let message = DynamicMessage::parse_text_format(crate::proto::descriptor(MODEL_CONFIG)?, &text)
        .map_err(|e| located(&text, &e))?;
    config_from_message(&message)
}

/// `text` with the ':' written between a field name and a '[' that opens its list. Protobuf's
/// text format lets a list of messages go without it (`input [ { ... } ]`, the form of every
/// Triton config), but prost-reflect's parser wants it. It takes the place of the space before
/// the '[' where there is one, so that error positions stay those of the file.
fn colon_before_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    // The last character that was not a space or in a comment.
    let mut last = ' ';
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                out.push(c);
                while let Some(c) = chars.next_if(|&c| c != '\n') {
                    out.push(c);
                }
            }
            '"' | '\'' => {
                out.push(c);
                while let Some(inner) = chars.next() {
                    out.push(inner);
                    if inner == '\\' {
                        out.extend(chars.next());
                    } else if inner == c || inner == '\n' {
                        break;
                    }
                }
                last = c;
            }
            '[' if last.is_alphanumeric() || last == '_' => {
                match out.pop() {
                    Some(' ' | '\t') => {}
                    other => out.extend(other),
                }
                out.push(':');
                out.push(c);
                last = c;
            }
            c if c.is_whitespace() => out.push(c),
            c => {
                out.push(c);
                last = c;
            }
        }
    }
    out
}

/// Maps a Triton config in JSON (protobuf's JSON mapping, as Triton's load API takes it) onto
/// tensord's.
pub fn config_from_json(text: &str) -> Result<ModelConfig, String> {
    let mut json = serde_json::Deserializer::from_str(text);
    let message = DynamicMessage::deserialize(crate::proto::descriptor(MODEL_CONFIG)?, &mut json)
        .and_then(|m| json.end().map(|()| m))
        .map_err(|e| format!("invalid model config JSON: {e}"))?;
    config_from_message(&message)
}

/// A text-format error with the line and column where it was found.
fn located(text: &str, error: &prost_reflect::text_format::ParseError) -> String {
    use miette::Diagnostic;
    // Only an error at the end of the input has no place of its own.
    let offset = (error.labels())
        .and_then(|mut labels| labels.next())
        .map_or(text.len(), |label| label.offset().min(text.len()));
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {error}")
}

fn config_from_message(message: &DynamicMessage) -> Result<ModelConfig, String> {
    refuse_unread(message, "")?;
    let mut c: pb::ModelConfig = message
        .transcode_to()
        .map_err(|e| format!("invalid model config: {e}"))?;
    // Triton's test models' execution delay (its examples' `simple_dyna_sequence` sets it).
    let delay_ms = (c.parameters.remove("execute_delay_ms"))
        .map(|p| {
            let ms = p.string_value.parse::<u64>().ok();
            ms.and_then(|ms| ms.checked_mul(1000)).ok_or_else(|| {
                let value = &p.string_value;
                format!(
                    "key 'parameters.execute_delay_ms': '{value}' is not a number of milliseconds"
                )
            })
        })
        .transpose()?;
    let backend = match (c.platform.as_str(), c.backend.as_str()) {
        ("onnxruntime_onnx", _) | (_, "onnxruntime") => "onnx".to_string(),
        (_, "identity") => "builtin".to_string(),
        ("", "") => return Err("key 'platform'/'backend': neither is set".into()),
        (platform, "") => platform.to_string(),
        (_, backend) => backend.to_string(),
    };
    let mut config = ModelConfig {
        builtin: (c.backend == "identity").then(|| "identity".to_string()),
        backend,
        max_batch_size: u64::try_from(c.max_batch_size)
            .map_err(|_| format!("key 'max_batch_size': {} is negative", c.max_batch_size))?,
        default_model_filename: Some(c.default_model_filename.clone()).filter(|f| !f.is_empty()),
        input: tensors("input", &c.input)?,
        output: tensors("output", &c.output)?,
        onnxruntime: onnxruntime_settings(&c)?,
        execution_delay_microseconds: delay_ms.unwrap_or(0),
        ..ModelConfig::default()
    };
    if !c.instance_group.is_empty() {
        // Triton counts an instance group without a count as one instance.
        config.instance_count = (c.instance_group.iter())
            .map(|g| usize::try_from(g.count.max(1)).unwrap_or(1))
            .sum();
        let gpu = pb::model_instance_group::Kind::Gpu as i32;
        if let Some(group) = c.instance_group.iter().find(|g| g.kind == gpu) {
            config.device = format!("cuda:{}", group.gpus.first().copied().unwrap_or(0));
        }
    }
    if let Some(pb::model_config::SchedulingChoice::DynamicBatching(b)) = &c.scheduling_choice {
        config.dynamic_batching = Some(DynamicBatching {
            preferred_batch_size: (b.preferred_batch_size.iter())
                .map(|&p| {
                    u64::try_from(p).map_err(|_| {
                        format!("key 'dynamic_batching.preferred_batch_size': {p} is negative")
                    })
                })
                .collect::<Result<_, _>>()?,
            max_queue_delay_microseconds: b.max_queue_delay_microseconds,
        });
        if let Some(policy) = &b.default_queue_policy {
            config.max_queue_size = policy.max_queue_size as usize;
        }
    }
    if let Some(pb::model_config::SchedulingChoice::SequenceBatching(s)) = &c.scheduling_choice {
        config.sequence_batching = Some(Proto(s.clone()));
    }
    if let Some(pb::model_config::SchedulingChoice::EnsembleScheduling(e)) = &c.scheduling_choice {
        config.ensemble_scheduling = Some(Proto(e.clone()));
    }
    if let Some(policy) = c.version_policy.and_then(|p| p.policy_choice) {
        use pb::model_version_policy::PolicyChoice;
        config.version_policy = match policy {
            PolicyChoice::Latest(latest) => VersionPolicy::Latest(latest.num_versions as usize),
            PolicyChoice::All(_) => VersionPolicy::All(true),
            PolicyChoice::Specific(specific) => VersionPolicy::Specific(
                (specific.versions.iter())
                    .map(|&v| {
                        u64::try_from(v).map_err(|_| {
                            format!("key 'version_policy.specific.versions': {v} is negative")
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
    }
    if let Some(extensions) = c.parameters.get(EXTENSIONS) {
        let extensions = toml::from_str(&extensions.string_value).map_err(|e| {
            format!(
                "key 'parameters.{EXTENSIONS}': {}",
                e.to_string().trim_end()
            )
        })?;
        config.extend(extensions)?;
    }
    Ok(config)
}

/// What Triton's input and output messages declare of a tensor.
struct Declared<'c> {
    name: &'c str,
    data_type: i32,
    dims: &'c [i64],
    reshape: Option<&'c pb::ModelTensorReshape>,
    /// An input's `format` (NHWC or NCHW; none for FORMAT_NONE).
    layout: Option<&'static str>,
    label_filename: &'c str,
}

impl<'c> From<&'c pb::ModelInput> for Declared<'c> {
    fn from(t: &'c pb::ModelInput) -> Declared<'c> {
        let format = pb::model_input::Format::try_from(t.format).ok();
        Declared {
            name: &t.name,
            data_type: t.data_type,
            dims: &t.dims,
            reshape: t.reshape.as_ref(),
            layout: format
                .and_then(|f| f.as_str_name().strip_prefix("FORMAT_"))
                .filter(|f| *f != "NONE"),
            label_filename: "",
        }
    }
}

impl<'c> From<&'c pb::ModelOutput> for Declared<'c> {
    fn from(t: &'c pb::ModelOutput) -> Declared<'c> {
        let (name, data_type, dims) = (&t.name, t.data_type, &t.dims);
        let (reshape, label_filename) = (t.reshape.as_ref(), &t.label_filename);
        Declared {
            name,
            data_type,
            dims,
            reshape,
            layout: None,
            label_filename,
        }
    }
}

/// The declared inputs or outputs (`which`).
fn tensors<'c, T: 'c>(which: &str, declared: &'c [T]) -> Result<Vec<TensorConfig>, String>
where
    Declared<'c>: From<&'c T>,
{
    (declared.iter().map(Declared::from).enumerate())
        .map(|(i, t)| {
            if t.name.is_empty() {
                return Err(format!("key '{which}[{i}].name': missing"));
            }
            let datatype = match pb::DataType::try_from(t.data_type).map(|d| d.as_str_name()) {
                Ok("TYPE_STRING") => "BYTES".to_string(),
                Ok(named) if named != "TYPE_INVALID" => named["TYPE_".len()..].to_string(),
                _ => return Err(format!("key '{which}[{i}].data_type': missing")),
            };
            Ok(TensorConfig {
                name: t.name.to_string(),
                datatype,
                dims: t.dims.iter().map(|&d| Dim::Fixed(d)).collect(),
                layout: t.layout.map(str::to_string),
                image: None,
                label_filename: Some(t.label_filename.to_string()).filter(|f| !f.is_empty()),
                reshape: t.reshape.map(|r| r.shape.clone()),
            })
        })
        .collect()
}

/// Triton's onnxruntime backend settings: `parameters` (string values) and `optimization`.
fn onnxruntime_settings(c: &pb::ModelConfig) -> Result<Option<OnnxRuntimeSettings>, String> {
    let mut settings = OnnxRuntimeSettings::default();
    let mut any = false;
    // In key order, so that the first bad one reported is always the same.
    let parameters: std::collections::BTreeMap<_, _> = c.parameters.iter().collect();
    for (key, parameter) in parameters.into_iter().filter(|(k, _)| *k != EXTENSIONS) {
        let value = parameter.string_value.as_str();
        let name = format!("parameters.{key}");
        let number = |text: &str| {
            text.parse::<usize>()
                .map_err(|_| format!("key '{name}': '{text}' is not a valid number"))
        };
        match key.as_str() {
            "intra_op_thread_count" => settings.intra_op_threads = Some(number(value)?),
            // Triton takes 0 as ONNX Runtime's default, which is what leaving it out means here.
            "inter_op_thread_count" => {
                settings.inter_op_threads = Some(number(value)?).filter(|&n| n > 0)
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
    let Some(optimization) = &c.optimization else {
        return Ok(any.then_some(settings));
    };
    if let Some(graph) = &optimization.graph {
        // Triton's levels: -1 basic, 1 extended, 2 none; 0 (or unset) all.
        settings.graph_optimization_level = match graph.level {
            -1 => OptimizationLevel::Basic,
            0 => OptimizationLevel::All,
            1 => OptimizationLevel::Extended,
            2 => OptimizationLevel::Disable,
            other => {
                return Err(format!(
                    "key 'optimization.graph.level': '{other}' is not -1, 0, 1 or 2"
                ))
            }
        };
        any = true;
    }
    if let Some(accelerators) = &optimization.execution_accelerators {
        for (kind, list) in [
            ("gpu", &accelerators.gpu_execution_accelerator),
            ("cpu", &accelerators.cpu_execution_accelerator),
        ] {
            for accelerator in list {
                if accelerator.name.is_empty() {
                    return Err(format!(
                        "key 'optimization.execution_accelerators.{kind}_execution_accelerator.name': missing"
                    ));
                }
                settings
                    .execution_accelerators
                    .push(accelerator.name.clone());
                any = true;
            }
        }
    }
    Ok(any.then_some(settings))
}

/// (the fields tensord reads, the flags accepted at one value only, with that value)
type Schema = (&'static [&'static str], &'static [(&'static str, bool)]);

/// Which fields of the message at `path` tensord reads; `None`: every field below a read one.
fn schema(path: &str) -> Option<Schema> {
    Some(match path {
        "" => (
            &[
                "name",
                "platform",
                "backend",
                "max_batch_size",
                "input",
                "output",
                "instance_group",
                "version_policy",
                "default_model_filename",
                "dynamic_batching",
                "sequence_batching",
                "ensemble_scheduling",
                "parameters",
                "optimization",
            ],
            &[],
        ),
        "ensemble_scheduling" => (&["step"], &[]),
        "ensemble_scheduling.step" => (
            &["model_name", "model_version", "input_map", "output_map"],
            &[],
        ),
        "input" => (&["name", "data_type", "format", "dims", "reshape"], &[]),
        "output" => (
            &["name", "data_type", "dims", "reshape", "label_filename"],
            &[],
        ),
        "instance_group" => (&["name", "kind", "count", "gpus"], &[]),
        "dynamic_batching" => (
            &[
                "preferred_batch_size",
                "max_queue_delay_microseconds",
                "default_queue_policy",
            ],
            &[],
        ),
        // tensord's queue honours each request's own timeout.
        "dynamic_batching.default_queue_policy" => {
            (&["max_queue_size"], &[("allow_timeout_override", true)])
        }
        "parameters" => (&["string_value"], &[]),
        "optimization" => (&["graph", "execution_accelerators"], &[]),
        "optimization.execution_accelerators.gpu_execution_accelerator"
        | "optimization.execution_accelerators.cpu_execution_accelerator" => (&["name"], &[]),
        _ => return None,
    })
}

/// Refuses the first field set in `message` (at `path`, "" for the config itself) that tensord
/// does not read. Fields at their default value are not set, so a config read back from
/// `/config`, which writes every field, loads again.
fn refuse_unread(message: &DynamicMessage, path: &str) -> Result<(), String> {
    let schema = schema(path);
    for (field, value) in message.fields() {
        let name = field.name();
        let here = match path {
            "" => name.to_string(),
            _ => format!("{path}.{name}"),
        };
        if let Some((known, fixed)) = schema {
            if let Some((_, only)) = fixed.iter().find(|(k, _)| *k == name) {
                if value.as_bool() == Some(*only) {
                    continue;
                }
                return Err(format!(
                    "key '{here}': tensord implements only {only} (this Triton setting is \
                     refused rather than ignored)"
                ));
            }
            if !known.contains(&name) {
                return Err(format!(
                    "key '{here}': a Triton setting tensord does not implement (refused rather \
                     than ignored)"
                ));
            }
        }
        match value {
            Value::Message(inner) => refuse_unread(inner, &here)?,
            Value::List(items) => (items.iter())
                .filter_map(Value::as_message)
                .try_for_each(|inner| refuse_unread(inner, &here))?,
            Value::Map(entries) => (entries.values())
                .filter_map(Value::as_message)
                .try_for_each(|inner| refuse_unread(inner, &here))?,
            _ => {}
        }
    }
    Ok(())
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
        for bad in ["[1]", "{", r#"{"backend": "identity"} x"#] {
            let e = config_from_json(bad).unwrap_err();
            assert!(e.starts_with("invalid model config JSON"), "{e}");
        }
        let e = config_from_json(r#"{"backend": "onnxruntime", "max_batch_size": "x"}"#);
        assert_eq!(
            e.unwrap_err(),
            "invalid model config JSON: invalid digit found in string at line 1 column 48"
        );
        let e = config_from_json(r#"{"backend": "onnxruntime", "max_batch_sise": 8}"#);
        assert!(e.unwrap_err().contains("max_batch_sise"));
    }

    #[test]
    fn tensord_settings_travel_in_parameters() {
        let with = |toml: &str| {
            let json = serde_json::json!({
                "backend": "builtin",
                "input": [{"name": "IMAGE", "data_type": "TYPE_UINT8", "dims": [-1, -1, 3]}],
                "parameters": {"tensord": {"string_value": toml}},
            });
            config_from_json(&json.to_string())
        };
        let c = with("execution_delay_microseconds = 5\n[[input]]\nname = \"IMAGE\"\ndims = [\"8:64\", -1, 3]\n")
            .unwrap();
        assert_eq!(c.execution_delay_microseconds, 5);
        assert_eq!(c.input[0].dims[0], Dim::Range(8, 64));
        assert_eq!(c.onnxruntime, None, "not an onnxruntime parameter");
        let back = c.extensions().unwrap();
        assert_eq!(
            (back.execution_delay_microseconds, back.input.len()),
            (5, 1)
        );
        let e = with("[[input]]\nname = \"NOPE\"\n").unwrap_err();
        assert_eq!(e, "key 'parameters.tensord': no input 'NOPE'");
        assert!(with("bogus = 1")
            .unwrap_err()
            .starts_with("key 'parameters.tensord': "));
    }

    #[test]
    fn lists_of_messages_need_no_colon() {
        assert_eq!(
            colon_before_lists("input [ { dims: [ 1 ] } ]\noutput\t[{}] s: \"a [\" # b [\nx[]"),
            "input:[ { dims: [ 1 ] } ]\noutput:[{}] s: \"a [\" # b [\nx:[]"
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
    fn errors_name_the_line_and_column_or_key() {
        let err = |text: &str| config_from_pbtxt(text).unwrap_err();
        let e = err("platform: \"x\"\ninput [ { name: \"a\"");
        assert!(e.starts_with("line 2, column "), "{e}");
        assert_eq!(
            err("platform: \"x\"\nmax_batch_size: many"),
            "line 2, column 17: expected an integer, but found 'many'"
        );
        assert_eq!(
            err("platform: \"x\"\ninput { name: \"a\" data_type: INT }"),
            "line 2, column 30: value 'INT' was not found for enum 'inference.DataType'"
        );
        // Past a list whose ':' was written in, positions are still the file's.
        assert_eq!(
            err("platform: \"x\" input [ { name: \"a\" } ] # [\nmax_batch_size: x"),
            "line 2, column 17: expected an integer, but found 'x'"
        );
        let e = err("platform: \"x\"\ninput { name: \"a\" dims: [ 1 ] }");
        assert_eq!(e, "key 'input[0].data_type': missing");
        assert!(config_from_pbtxt("name: \"x\"")
            .unwrap_err()
            .contains("platform"));
    }

    #[test]
    fn fields_tensord_does_not_read_are_refused_with_their_path() {
        let err = |text: &str| config_from_pbtxt(text).unwrap_err();
        let base = "backend: \"identity\"\n";
        assert_eq!(
            err(&format!("{base}max_batch_sise: 8")),
            "line 2, column 1: field 'max_batch_sise' not found for message 'inference.ModelConfig'"
        );
        for triton in [
            "platform: \"ensemble\" ensemble_scheduling { step [ { model_namespace: \"n\" } ] }",
            "model_repository_agents { }",
            "model_warmup [ { name: \"w\" } ]",
            "dynamic_batching { priority_queue_policy { key: 1 value: { } } }",
            "dynamic_batching { preserve_ordering: true }",
        ] {
            let e = err(&format!("{base}{triton}"));
            assert!(
                e.contains("a Triton setting tensord does not implement"),
                "{triton}: {e}"
            );
        }
        let policy =
            "max_batch_size: 2 dynamic_batching { default_queue_policy { max_queue_size: 3 } }";
        let config = config_from_pbtxt(&format!("{base}{policy}")).unwrap();
        assert_eq!(config.max_queue_size, 3);
        let e = err(&format!(
            "{base}input [ {{ name: \"a\" data_type: TYPE_FP32 dims: [ 1 ] dim: [ 2 ] }} ]"
        ));
        assert!(
            e.contains("field 'dim' not found for message 'inference.ModelInput'"),
            "{e}"
        );
        // The values tensord's own /config writes load again.
        let written = r#"{"backend": "identity", "max_batch_size": 4, "dynamic_batching": {
            "preferred_batch_size": [], "max_queue_delay_microseconds": 0, "preserve_ordering": false,
            "priority_levels": 0, "default_priority_level": 0, "default_queue_policy": {
            "timeout_action": "REJECT", "default_timeout_microseconds": 0,
            "allow_timeout_override": true, "max_queue_size": 0}}}"#;
        assert_eq!(config_from_json(written).unwrap().max_batch_size, 4);
    }
}
