//! OpenVINO Model Server's `config.json`: its `model_config_list` (ONNX models in numbered version
//! folders) and its `pipeline_config_list` (DAGs of `DL model` nodes), read into tensord's
//! configs. Pipelines become ensembles: each node a step, each data item an ensemble tensor.
//! OVMS keys tensord cannot honour are refused by name, never skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::config::{ModelConfig, VersionPolicy};
use super::model::TensorSpec;
use crate::proto::inference::{model_ensembling, ModelEnsembling};

/// What a `config.json` serves.
#[derive(Debug)]
pub struct OvmsConfig {
    pub models: Vec<OvmsModel>,
    pub pipelines: Vec<OvmsPipeline>,
}

/// One entry of `model_config_list`.
#[derive(Debug)]
pub struct OvmsModel {
    pub name: String,
    /// The folder of numbered version folders.
    pub dir: PathBuf,
    pub config: ModelConfig,
    /// `shape`: dims by input name (`None`: the model's only input).
    shapes: BTreeMap<Option<String>, Vec<Dim>>,
    /// `layout`: the image layout by input name (`None`: every input).
    layouts: BTreeMap<Option<String>, String>,
}

/// One entry of `pipeline_config_list`, as an ensemble.
#[derive(Debug)]
pub struct OvmsPipeline {
    pub name: String,
    pub scheduling: ModelEnsembling,
    /// Each pipeline input, and a (step, model input) it feeds: its spec is that input's.
    pub inputs: Vec<(String, usize, String)>,
    /// Each pipeline output, and the (step, model output) that writes it.
    pub outputs: Vec<(String, usize, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dim {
    Any,
    Fixed(i64),
    Range(u64, u64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    model_config_list: Vec<Entry>,
    #[serde(default)]
    pipeline_config_list: Vec<PipelineJson>,
    custom_node_library_config_list: Option<Value>,
    mediapipe_config_list: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    config: ModelJson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelJson {
    name: String,
    base_path: String,
    batch_size: Option<Value>,
    shape: Option<PerInput>,
    layout: Option<PerInput>,
    nireq: Option<usize>,
    target_device: Option<String>,
    model_version_policy: Option<PolicyJson>,
    #[serde(default)]
    plugin_config: serde_json::Map<String, Value>,
}

/// A setting for the model's only input (a string), or by input name.
#[derive(Deserialize)]
#[serde(untagged)]
enum PerInput {
    One(String),
    Named(BTreeMap<String, String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
enum PolicyJson {
    All {},
    Latest { num_versions: usize },
    Specific { versions: Vec<u64> },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineJson {
    name: String,
    inputs: Vec<String>,
    nodes: Vec<NodeJson>,
    outputs: Vec<BTreeMap<String, SourceJson>>,
    demultiply_count: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeJson {
    name: String,
    model_name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    version: Option<i64>,
    inputs: Vec<BTreeMap<String, SourceJson>>,
    outputs: Vec<OutputJson>,
    demultiply_count: Option<Value>,
    gather_from_node: Option<Value>,
    library_name: Option<Value>,
    params: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceJson {
    node_name: String,
    data_item: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    data_item: String,
    alias: String,
}

/// Reads `file`; relative `base_path`s are taken from the file's folder, as OVMS does.
pub fn read(file: &Path) -> Result<OvmsConfig, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("--ovms-config {}: {e}", file.display()))?;
    let parsed: File = serde_json::from_str(&text)
        .map_err(|e| format!("--ovms-config {}: {e}", file.display()))?;
    let at = |e: String| format!("--ovms-config {}: {e}", file.display());
    if parsed.custom_node_library_config_list.is_some() {
        return Err(at(
            "custom node libraries (custom_node_library_config_list) are not \
                       supported by tensord"
                .into(),
        ));
    }
    if parsed.mediapipe_config_list.is_some() {
        return Err(at(
            "MediaPipe graphs (mediapipe_config_list) are not supported by tensord".into(),
        ));
    }
    let folder = file.parent().unwrap_or(Path::new("."));
    let models = (parsed.model_config_list.into_iter())
        .map(|entry| model(entry.config, folder).map_err(at))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for name in models.iter().map(|m| m.name.as_str()) {
        if !names.insert(name) {
            return Err(at(format!("model name '{name}' appears twice")));
        }
    }
    let pipelines = (parsed.pipeline_config_list.into_iter())
        .map(|p| pipeline(p, &models).map_err(at))
        .collect::<Result<Vec<_>, _>>()?;
    for name in pipelines.iter().map(|p| p.name.as_str()) {
        if !names.insert(name) {
            return Err(at(format!(
                "pipeline name '{name}' is already a model's or another pipeline's"
            )));
        }
    }
    Ok(OvmsConfig { models, pipelines })
}

fn model(json: ModelJson, folder: &Path) -> Result<OvmsModel, String> {
    let name = json.name;
    let at = |e: String| format!("model '{name}': {e}");
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(format!("'{name}' is not a model name"));
    }
    if json.base_path.contains("://") {
        return Err(at(format!(
            "base_path '{}': cloud storage is not supported by tensord; copy the model to a folder",
            json.base_path
        )));
    }
    let dir = folder.join(&json.base_path);
    let mut config = ModelConfig {
        backend: "onnx".into(),
        default_model_filename: Some(onnx_file(&dir).map_err(at)?),
        ..ModelConfig::default()
    };
    match json.batch_size {
        None => {}
        Some(Value::String(text)) if text == "auto" => {}
        Some(value) => {
            let size = match &value {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            config.max_batch_size = size.filter(|&n| n > 0).ok_or_else(|| {
                at(format!(
                    "batch_size {value} is neither a positive size nor \"auto\""
                ))
            })?;
        }
    }
    if let Some(n) = json.nireq {
        config.instance_count = n.max(1);
    }
    match json.target_device.as_deref() {
        None | Some("CPU") => {}
        Some(other) => {
            return Err(at(format!(
                "target_device '{other}': tensord runs ONNX models on the CPU here"
            )))
        }
    }
    if let Some(key) = json.plugin_config.keys().next() {
        return Err(at(format!(
            "plugin_config '{key}' is an OpenVINO plugin setting; tensord runs ONNX Runtime"
        )));
    }
    config.version_policy = match json.model_version_policy {
        None => VersionPolicy::default(),
        Some(PolicyJson::All {}) => VersionPolicy::All(true),
        Some(PolicyJson::Latest { num_versions }) => VersionPolicy::Latest(num_versions),
        Some(PolicyJson::Specific { versions }) => VersionPolicy::Specific(versions),
    };
    let shapes = per_input(json.shape, |text| shape(text).map_err(&at))?;
    let layouts = per_input(json.layout, |text| layout(text).map_err(&at))?;
    let shapes: BTreeMap<_, _> = (shapes.into_iter())
        .filter_map(|(input, dims)| Some((input, dims?)))
        .collect();
    let batch_fixed = |dims: &Vec<Dim>| matches!(dims.first(), Some(Dim::Fixed(_)));
    if config.max_batch_size > 0 && shapes.values().any(batch_fixed) {
        return Err(at(
            "set batch_size or a fixed first dimension in shape, not both".into(),
        ));
    }
    Ok(OvmsModel {
        name,
        dir,
        config,
        shapes,
        layouts,
    })
}

fn per_input<T>(
    setting: Option<PerInput>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<BTreeMap<Option<String>, T>, String> {
    match setting {
        None => Ok(BTreeMap::new()),
        Some(PerInput::One(text)) => Ok(BTreeMap::from([(None, parse(&text)?)])),
        Some(PerInput::Named(map)) => (map.into_iter())
            .map(|(input, text)| Ok((Some(input), parse(&text)?)))
            .collect(),
    }
}

/// The `.onnx` file the version folders hold: OVMS takes any name, one file per folder.
fn onnx_file(dir: &Path) -> Result<String, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("base_path '{}': {}", dir.display(), e.kind()))?;
    let mut names = BTreeSet::new();
    for version in entries.flatten() {
        let numbered = version
            .file_name()
            .to_str()
            .is_some_and(|n| n.parse::<u64>().is_ok());
        if !numbered {
            continue;
        }
        let files = std::fs::read_dir(version.path())
            .into_iter()
            .flatten()
            .flatten();
        let onnx: Vec<String> = files
            .filter_map(|f| f.file_name().into_string().ok())
            .filter(|f| f.ends_with(".onnx"))
            .collect();
        if onnx.len() > 1 {
            return Err(format!(
                "version folder {} holds {} .onnx files; OVMS takes one",
                version.file_name().to_string_lossy(),
                onnx.len()
            ));
        }
        names.extend(onnx);
    }
    let mut names = names.into_iter();
    match (names.next(), names.next()) {
        (Some(name), None) => Ok(name),
        (None, _) => Ok("model.onnx".into()),
        (Some(a), Some(b)) => Err(format!(
            "its version folders name their .onnx files differently ('{a}', '{b}'); tensord \
             needs one name"
        )),
    }
}

/// `(1,3,224,224)` or `[1,3,-1,200:500]`; `auto` (`None`): the graph's own shape.
fn shape(text: &str) -> Result<Option<Vec<Dim>>, String> {
    if text == "auto" {
        return Ok(None);
    }
    let bad = || format!("shape '{text}' is not \"auto\" nor (d0,d1,...) with sizes, -1 or lo:hi");
    let inner = (text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')')))
    .or_else(|| text.trim().strip_prefix('[')?.strip_suffix(']'))
    .ok_or_else(bad)?;
    let dim = |d: &str| -> Option<Dim> {
        let d = d.trim();
        if let Some((lo, hi)) = d.split_once(':') {
            let (lo, hi) = (lo.parse().ok()?, hi.parse().ok()?);
            return (lo <= hi).then_some(Dim::Range(lo, hi));
        }
        match d.parse::<i64>().ok()? {
            -1 => Some(Dim::Any),
            n if n > 0 => Some(Dim::Fixed(n)),
            _ => None,
        }
    };
    inner
        .split(',')
        .map(dim)
        .collect::<Option<Vec<_>>>()
        .map(Some)
        .ok_or_else(bad)
}

/// The layout images are decoded into: OVMS's `NHWC`, `NCHW`, or `NHWC:NCHW` (the client's
/// NHWC images laid out as the model's NCHW).
fn layout(text: &str) -> Result<String, String> {
    match text {
        "NHWC" | "NHWC:NHWC" => Ok("NHWC".into()),
        "NCHW" | "NCHW:NCHW" | "NHWC:NCHW" => Ok("NCHW".into()),
        other => Err(format!(
            "layout '{other}': tensord takes NHWC, NCHW or NHWC:NCHW (images decoded into the \
             model's layout; other tensors are sent in it)"
        )),
    }
}

impl OvmsModel {
    /// Applies `shape` and `layout` to the inputs a version loaded with, each shape checked
    /// against the graph's.
    pub fn fit(&self, inputs: &mut [TensorSpec]) -> Result<(), String> {
        let only = |inputs: &[TensorSpec]| match inputs {
            [_] => Ok(0),
            _ => Err(format!(
                "model '{}': a shape without an input name needs a model with one input; this one \
                 has {}",
                self.name,
                inputs.len()
            )),
        };
        let find = |inputs: &[TensorSpec], name: &str| {
            inputs
                .iter()
                .position(|s| s.name == name)
                .ok_or_else(|| format!("model '{}': the graph has no input '{name}'", self.name))
        };
        for (input, dims) in &self.shapes {
            let i = match input {
                None => only(inputs)?,
                Some(name) => find(inputs, name)?,
            };
            narrow(&mut inputs[i], dims).map_err(|e| format!("model '{}': {e}", self.name))?;
        }
        for (input, layout) in &self.layouts {
            let chosen: Vec<usize> = match input {
                None => (0..inputs.len()).collect(),
                Some(name) => vec![find(inputs, name)?],
            };
            for i in chosen {
                inputs[i].layout = Some(layout.clone());
            }
        }
        Ok(())
    }
}

/// Narrows `spec`'s dims to `dims` where the graph leaves them open.
fn narrow(spec: &mut TensorSpec, dims: &[Dim]) -> Result<(), String> {
    let graph = spec.dims.clone().unwrap_or_else(|| vec![-1; dims.len()]);
    let written: Vec<String> = (dims.iter())
        .map(|d| match d {
            Dim::Any => "-1".to_string(),
            Dim::Fixed(n) => n.to_string(),
            Dim::Range(lo, hi) => format!("{lo}:{hi}"),
        })
        .collect();
    let mismatch = || {
        format!(
            "input '{}': shape ({}) does not fit the graph's {graph:?}",
            spec.name,
            written.join(",")
        )
    };
    if graph.len() != dims.len() {
        return Err(mismatch());
    }
    let mut narrowed = Vec::new();
    let mut ranges = Vec::new();
    for (&have, &want) in graph.iter().zip(dims) {
        let (size, range) = match want {
            Dim::Any => (have, None),
            Dim::Fixed(n) if have < 0 || have == n => (n, None),
            Dim::Range(lo, hi) if have < 0 => (-1, Some((lo, hi))),
            Dim::Range(lo, hi) if (lo..=hi).contains(&(have as u64)) => (have, None),
            _ => return Err(mismatch()),
        };
        narrowed.push(size);
        ranges.push(range);
    }
    spec.dims = Some(narrowed);
    spec.ranges = if ranges.iter().any(Option::is_some) {
        ranges
    } else {
        Vec::new()
    };
    Ok(())
}

fn pipeline(json: PipelineJson, models: &[OvmsModel]) -> Result<OvmsPipeline, String> {
    let name = json.name;
    let at = |e: String| format!("pipeline '{name}': {e}");
    if json.demultiply_count.is_some() {
        return Err(at("demultiply_count is not supported by tensord".into()));
    }
    if let Some(input) = json.inputs.iter().find(|i| i.contains('[')) {
        return Err(at(format!(
            "input '{input}': demultiplexing is not supported by tensord"
        )));
    }
    // Each node output's ensemble tensor: the pipeline output it is, else "node/alias".
    let mut tensor_of: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut outputs = Vec::new();
    for (output, source) in json.outputs.iter().flat_map(|m| m.iter()) {
        if source.node_name == "request" {
            return Err(at(format!(
                "output '{output}' reads the request directly; tensord \
                                   needs a node between"
            )));
        }
        let key = (source.node_name.clone(), source.data_item.clone());
        if tensor_of.insert(key, output.clone()).is_some() {
            return Err(at(format!(
                "output '{output}' repeats another output's node and data item; tensord \
                 needs one output per data item"
            )));
        }
    }
    let mut steps = Vec::new();
    let mut inputs: Vec<(String, usize, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    for node in &json.nodes {
        let at = |e: String| at(format!("node '{}': {e}", node.name));
        if node.kind == "custom" || node.library_name.is_some() || node.params.is_some() {
            return Err(at("custom nodes are not supported by tensord".into()));
        }
        if node.kind != "DL model" {
            return Err(at(format!("type '{}' is not \"DL model\"", node.kind)));
        }
        for (key, set) in [
            ("demultiply_count", node.demultiply_count.is_some()),
            ("gather_from_node", node.gather_from_node.is_some()),
        ] {
            if set {
                return Err(at(format!("{key} is not supported by tensord")));
            }
        }
        if node.name == "request" || !seen.insert(node.name.as_str()) {
            return Err(at("the name is 'request' or another node's".into()));
        }
        let model = node
            .model_name
            .clone()
            .ok_or_else(|| at("needs model_name".into()))?;
        if !models.iter().any(|m| m.name == model) {
            return Err(at(format!("model '{model}' is not in model_config_list")));
        }
        let mut step = model_ensembling::Step {
            model_name: model,
            model_version: node.version.unwrap_or(-1),
            ..Default::default()
        };
        for (input, source) in node.inputs.iter().flat_map(|m| m.iter()) {
            let tensor = if source.node_name == "request" {
                if !json.inputs.contains(&source.data_item) {
                    return Err(at(format!(
                        "input '{input}' reads request item '{}', which is not among the \
                         pipeline's inputs",
                        source.data_item
                    )));
                }
                if !inputs.iter().any(|(i, _, _)| *i == source.data_item) {
                    inputs.push((source.data_item.clone(), steps.len(), input.clone()));
                }
                source.data_item.clone()
            } else {
                let writer = json.nodes.iter().find(|n| n.name == source.node_name);
                let written =
                    writer.is_some_and(|n| n.outputs.iter().any(|o| o.alias == source.data_item));
                if !written {
                    return Err(at(format!(
                        "input '{input}' reads '{}' of node '{}', which no node's outputs name",
                        source.data_item, source.node_name
                    )));
                }
                internal(&tensor_of, &source.node_name, &source.data_item)
            };
            step.input_map.insert(input.clone(), tensor);
        }
        for output in &node.outputs {
            let tensor = internal(&tensor_of, &node.name, &output.alias);
            step.output_map.insert(output.data_item.clone(), tensor);
        }
        steps.push(step);
    }
    for ((node, alias), output) in &tensor_of {
        let Some(i) = json.nodes.iter().position(|n| n.name == *node) else {
            return Err(at(format!(
                "output '{output}' reads node '{node}', which is not defined"
            )));
        };
        let Some(written) = json.nodes[i].outputs.iter().find(|o| o.alias == *alias) else {
            return Err(at(format!(
                "output '{output}' reads '{alias}', which node '{node}' does not name"
            )));
        };
        outputs.push((output.clone(), i, written.data_item.clone()));
    }
    // In the order the pipeline lists them.
    let order: Vec<&String> = json.outputs.iter().flat_map(|m| m.keys()).collect();
    outputs.sort_by_key(|(o, _, _)| order.iter().position(|x| *x == o));
    if let Some(unused) = json
        .inputs
        .iter()
        .find(|i| !inputs.iter().any(|(x, _, _)| x == *i))
    {
        return Err(at(format!("input '{unused}' feeds no node")));
    }
    inputs.sort_by_key(|(i, _, _)| json.inputs.iter().position(|x| x == i));
    Ok(OvmsPipeline {
        name,
        scheduling: ModelEnsembling {
            step: steps,
            ..Default::default()
        },
        inputs,
        outputs,
    })
}

/// The ensemble tensor of `node`'s output `alias`.
fn internal(tensor_of: &BTreeMap<(String, String), String>, node: &str, alias: &str) -> String {
    (tensor_of
        .get(&(node.to_string(), alias.to_string()))
        .cloned())
    .unwrap_or_else(|| format!("{node}/{alias}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            dims: Some(dims.to_vec()),
            ..TensorSpec::default()
        }
    }

    #[test]
    fn shapes_parse_in_both_brackets_with_ranges() {
        assert_eq!(shape("auto"), Ok(None));
        let want = vec![Dim::Fixed(1), Dim::Any, Dim::Range(200, 500)];
        assert_eq!(shape("(1,-1,200:500)"), Ok(Some(want.clone())));
        assert_eq!(shape("[1, -1, 200:500]"), Ok(Some(want)));
        for bad in ["1,2", "(0,3)", "(-2)", "(5:4)", "(a)", "()"] {
            assert!(shape(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layouts_name_the_decoded_layout() {
        assert_eq!(layout("NHWC:NCHW").as_deref(), Ok("NCHW"));
        assert_eq!(layout("NHWC").as_deref(), Ok("NHWC"));
        assert!(layout("NCHW:NHWC").is_err());
    }

    #[test]
    fn a_shape_narrows_open_dims_and_refuses_fixed_ones() {
        let mut x = spec(&[-1, 3, -1, -1]);
        narrow(
            &mut x,
            &[
                Dim::Any,
                Dim::Fixed(3),
                Dim::Fixed(48),
                Dim::Range(100, 200),
            ],
        )
        .unwrap();
        assert_eq!(x.dims, Some(vec![-1, 3, 48, -1]));
        assert_eq!(x.ranges, vec![None, None, None, Some((100, 200))]);
        let mut x = spec(&[1, 3]);
        assert!(narrow(&mut x, &[Dim::Fixed(1), Dim::Fixed(4)]).is_err());
        assert!(narrow(&mut x, &[Dim::Fixed(1)]).is_err());
        narrow(&mut x, &[Dim::Fixed(1), Dim::Range(2, 5)]).unwrap();
        assert_eq!((x.dims, x.ranges), (Some(vec![1, 3]), vec![]));
    }

    fn pipeline_of(json: &str) -> Result<OvmsPipeline, String> {
        let models = ["a", "b"].map(|name| OvmsModel {
            name: name.into(),
            dir: PathBuf::new(),
            config: ModelConfig::default(),
            shapes: BTreeMap::new(),
            layouts: BTreeMap::new(),
        });
        pipeline(serde_json::from_str(json).unwrap(), &models)
    }

    #[test]
    fn a_pipeline_becomes_ensemble_steps() {
        let p = pipeline_of(
            r#"{"name": "p", "inputs": ["in"],
                "nodes": [
                  {"name": "n1", "model_name": "a", "type": "DL model",
                   "inputs": [{"x": {"node_name": "request", "data_item": "in"}}],
                   "outputs": [{"data_item": "y", "alias": "mid"}]},
                  {"name": "n2", "model_name": "b", "type": "DL model",
                   "inputs": [{"x": {"node_name": "n1", "data_item": "mid"}}],
                   "outputs": [{"data_item": "y", "alias": "last"}]}],
                "outputs": [{"out": {"node_name": "n2", "data_item": "last"}}]}"#,
        )
        .unwrap();
        let steps = &p.scheduling.step;
        assert_eq!(steps[0].input_map["x"], "in");
        assert_eq!(steps[0].output_map["y"], "n1/mid");
        assert_eq!(steps[1].input_map["x"], "n1/mid");
        assert_eq!(steps[1].output_map["y"], "out");
        assert_eq!(p.inputs, vec![("in".into(), 0, "x".into())]);
        assert_eq!(p.outputs, vec![("out".into(), 1, "y".into())]);
    }

    #[test]
    fn unsupported_pipeline_keys_are_named() {
        let node = |extra: &str| {
            format!(
                r#"{{"name": "p", "inputs": ["in"], "nodes": [{{"name": "n1", "model_name": "a",
                    "type": "DL model", {extra}
                    "inputs": [{{"x": {{"node_name": "request", "data_item": "in"}}}}],
                    "outputs": [{{"data_item": "y", "alias": "o"}}]}}],
                    "outputs": [{{"out": {{"node_name": "n1", "data_item": "o"}}}}]}}"#
            )
        };
        for (extra, named) in [
            (r#""demultiply_count": 2,"#, "demultiply_count"),
            (r#""gather_from_node": "n0","#, "gather_from_node"),
            (r#""library_name": "lib","#, "custom nodes"),
        ] {
            let error = pipeline_of(&node(extra)).err().unwrap();
            assert!(error.contains(named), "{error}");
        }
    }
}
