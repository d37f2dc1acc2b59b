//! ONNX graphs on ONNX Runtime: one session per model instance, inputs and outputs read from the
//! graph (or declared in the config and checked against it).

mod runtime;
mod session;
mod values;

use std::path::Path;

use ort::session::Session;
use ort::value::{Outlet, ValueType};

pub use runtime::{default_library, init};

use crate::models::config::ModelConfig;
use crate::models::{Model, ModelError, TensorSpec};
use crate::tensors::Tensor;

pub struct OnnxRuntimeModel {
    /// Sessions not running now. `Session::run` needs the session to itself, so each run takes
    /// one and gives it back; there are as many as the model has workers.
    idle: (flume::Sender<Session>, flume::Receiver<Session>),
    inputs: Vec<String>,
    outputs: Vec<String>,
}

/// Loads the graph at `path` once per instance; returns the model with the specs it serves
/// (`inputs` and `outputs`, checked against the graph's, or else the graph's).
pub fn load(
    path: &Path,
    config: &ModelConfig,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
) -> Result<(OnnxRuntimeModel, Vec<TensorSpec>, Vec<TensorSpec>), String> {
    let (environment, default_threads) = runtime::environment()?;
    let idle = flume::bounded(config.instance_count);
    let mut graph = None;
    for _ in 0..config.instance_count {
        let session = session::build(environment, default_threads, config, path)?;
        if graph.is_none() {
            graph = Some((specs(session.inputs())?, specs(session.outputs())?));
        }
        idle.0
            .send(session)
            .map_err(|_| "the session pool closed".to_string())?;
    }
    let (graph_in, graph_out) = graph.ok_or("key 'instance_count': must be at least 1")?;
    let inputs = served("input", inputs, graph_in, config, true)?;
    let outputs = served("output", outputs, graph_out, config, false)?;
    let model = OnnxRuntimeModel {
        idle,
        inputs: inputs.iter().map(|s| s.name.clone()).collect(),
        outputs: outputs.iter().map(|s| s.name.clone()).collect(),
    };
    Ok((model, inputs, outputs))
}

/// The graph's tensors as specs (-1 for a dynamic dimension).
fn specs(outlets: &[Outlet]) -> Result<Vec<TensorSpec>, String> {
    outlets
        .iter()
        .map(|outlet| {
            let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
                return Err(format!(
                    "graph value '{}' is a {}, not a tensor",
                    outlet.name(),
                    outlet.dtype()
                ));
            };
            let datatype = values::datatype_of(*ty).ok_or_else(|| {
                format!(
                    "graph value '{}' has element type {ty}, which has no V2 datatype",
                    outlet.name()
                )
            })?;
            Ok(TensorSpec::new(outlet.name(), datatype, shape))
        })
        .collect()
}

/// The specs a model serves: the graph's, or the config's where it declares them, each checked
/// against the graph so that a wrong config fails at load, not on every request.
fn served(
    which: &str,
    declared: Vec<TensorSpec>,
    graph: Vec<TensorSpec>,
    config: &ModelConfig,
    all_needed: bool,
) -> Result<Vec<TensorSpec>, String> {
    let names = || {
        graph
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (i, spec) in declared.iter().enumerate() {
        let Some(real) = graph.iter().find(|g| g.name == spec.name) else {
            return Err(format!(
                "key '{which}[{i}].name': the graph has no {which} '{}' (it has: {})",
                spec.name,
                names()
            ));
        };
        if spec.datatype != real.datatype {
            return Err(format!(
                "key '{which}[{i}].datatype': '{}' is {} in the graph",
                spec.name,
                real.datatype.map_or("any", |d| d.as_str())
            ));
        }
        // The graph has the model's shape: the reshape where one is declared.
        let model_dims = spec.model_dims(config.max_batch_size > 0);
        let (want, have) = (model_dims.as_deref(), real.dims.as_deref());
        let fits = match (want, have) {
            (Some(want), Some(have)) => {
                want.len() == have.len()
                    && want
                        .iter()
                        .zip(have)
                        .all(|(&w, &h)| w < 0 || h < 0 || w == h)
            }
            _ => true,
        };
        if !fits {
            return Err(format!(
                "key '{which}[{i}].dims': '{}' has shape {:?} in the graph; the config's {:?} \
                 (the batch dimension included) does not fit it",
                spec.name,
                have.unwrap_or_default(),
                want.unwrap_or_default()
            ));
        }
    }
    if all_needed && !declared.is_empty() {
        if let Some(missing) = graph
            .iter()
            .find(|g| !declared.iter().any(|d| d.name == g.name))
        {
            return Err(format!(
                "key '{which}': the graph's {which} '{}' is not declared",
                missing.name
            ));
        }
    }
    let served = if declared.is_empty() { graph } else { declared };
    if config.max_batch_size > 0 {
        if let Some(fixed) = served.iter().find(|s| {
            s.dims
                .as_ref()
                .is_some_and(|d| d.first().is_none_or(|&n| n >= 0))
        }) {
            return Err(format!(
                "key 'max_batch_size': batching needs a dynamic first dimension, but the graph's \
                 {which} '{}' has shape {:?}",
                fixed.name,
                fixed.dims.as_deref().unwrap_or_default()
            ));
        }
    }
    Ok(served)
}

/// A session taken from the idle ones, given back when the run ends (even by a panic).
struct Lease<'a> {
    session: Option<Session>,
    home: &'a flume::Sender<Session>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // The receiver lives in the same model as the sender: this cannot fail.
            let _ = self.home.send(session);
        }
    }
}

impl Model for OnnxRuntimeModel {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let session = self
            .idle
            .1
            .recv()
            .map_err(|_| ModelError::internal("the model's sessions are gone"))?;
        let mut lease = Lease {
            session: Some(session),
            home: &self.idle.0,
        };
        let session = lease
            .session
            .as_mut()
            .ok_or_else(|| ModelError::internal("the lease lost its session"))?;
        values::with_inputs(&self.inputs, inputs, |feed| {
            let mut results = session.run(feed).map_err(|e| values::ort_error(&e))?;
            self.outputs
                .iter()
                .map(|name| {
                    let value = results.remove(name).ok_or_else(|| {
                        ModelError::internal(format!("the graph produced no '{name}'"))
                    })?;
                    values::output(name, value)
                })
                .collect()
        })
    }
}
