//! Triton's ensembles: a model whose steps are other models, joined by named tensors. The
//! graph is checked when the ensemble loads (Triton's rules and words), against the composing
//! models then served; a request runs as dataflow: each step once its inputs exist, steps
//! that are ready together side by side, each through its own model's queue and batcher (so
//! steps of different requests batch together), and steps whose outputs no one needs not at
//! all. Tensors pass from step to step as the same buffers, never copied.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Engine, Error, InferRequest, Input, LoadedVersion, ServedModel, WantedOutput};
use crate::models::TensorSpec;
use crate::proto::inference as pb;
use crate::tensors::{DataType, Tensor};

/// One step: a model, and which ensemble tensors its inputs and outputs are.
#[derive(Debug)]
pub struct Step {
    pub model: String,
    /// `None`: the newest ready version (Triton's -1).
    pub version: Option<String>,
    /// (model input, ensemble tensor), in the config's order.
    pub inputs: Vec<(String, String)>,
    /// (model output, ensemble tensor).
    pub outputs: Vec<(String, String)>,
}

#[derive(Debug)]
pub struct Ensemble {
    pub steps: Vec<Step>,
}

impl Ensemble {
    /// The steps of ensemble `name`, whose own tensors are `inputs` and `outputs`, checked as
    /// Triton checks the graph (`ValidateEnsembleSchedulingConfig`), in Triton's words.
    pub fn new(
        name: &str,
        scheduling: &pb::ModelEnsembling,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
    ) -> Result<Ensemble, String> {
        if scheduling.step.is_empty() {
            return Err(format!("must specify 'step' for ensemble '{name}'"));
        }
        let mut steps = Vec::new();
        let mut written = BTreeSet::new();
        for (i, step) in scheduling.step.iter().enumerate() {
            let missing =
                |what: &str| format!("must specify '{what}' in step {i} of ensemble '{name}'");
            if step.model_name.is_empty() {
                return Err(missing("model_name"));
            }
            if step.input_map.is_empty() {
                return Err(missing("input_map"));
            }
            if step.output_map.is_empty() {
                return Err(missing("output_map"));
            }
            for tensor in step.output_map.values() {
                if !written.insert(tensor.clone()) {
                    return Err(format!(
                        "ensemble tensor '{tensor}' can appear in an output map only once for \
                         ensemble '{name}' step {i}"
                    ));
                }
            }
            let version = match step.model_version {
                -1 => None,
                v if v >= 0 => Some(v.to_string()),
                v => {
                    return Err(format!(
                    "step {i} of ensemble '{name}': model_version {v} is neither -1 nor a version"
                ))
                }
            };
            let sorted =
                |map: &std::collections::HashMap<String, String>| -> Vec<(String, String)> {
                    let ordered: BTreeMap<_, _> =
                        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    ordered.into_iter().collect()
                };
            steps.push(Step {
                model: step.model_name.clone(),
                version,
                inputs: sorted(&step.input_map),
                outputs: sorted(&step.output_map),
            });
        }
        let ensemble = Ensemble { steps };
        ensemble.check_flow(name, inputs, outputs)?;
        Ok(ensemble)
    }

    /// Every output is written from the ensemble's inputs, and every tensor is used.
    fn check_flow(
        &self,
        name: &str,
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
    ) -> Result<(), String> {
        let used: BTreeSet<&str> = (self.steps.iter())
            .flat_map(|s| s.inputs.iter().map(|(_, t)| t.as_str()))
            .collect();
        let produced: BTreeSet<&str> = (self.steps.iter())
            .flat_map(|s| s.outputs.iter().map(|(_, t)| t.as_str()))
            .collect();
        for input in inputs {
            if !used.contains(input.name.as_str()) && !produced.contains(input.name.as_str()) {
                return Err(format!(
                    "ensemble input '{}' for ensemble {name}' is not used",
                    input.name
                ));
            }
        }
        // Which tensors the inputs can reach, step by step.
        let mut ready: BTreeSet<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        loop {
            let before = ready.len();
            for step in &self.steps {
                if step.inputs.iter().all(|(_, t)| ready.contains(t.as_str())) {
                    ready.extend(step.outputs.iter().map(|(_, t)| t.as_str()));
                }
            }
            if ready.len() == before {
                break;
            }
        }
        for output in outputs {
            let name_ = output.name.as_str();
            if !used.contains(name_) && !produced.contains(name_) {
                return Err(format!(
                    "ensemble output '{name_}' for ensemble {name}' is not used"
                ));
            }
            if !ready.contains(name_) {
                let mut message = format!("output '{name_}' for ensemble '{name}' is not written");
                if let Some(cut) = self.first_unconnected(name_, &ready) {
                    message += &format!(
                        ": at least one of its depending tensors, '{cut}', is not connected"
                    );
                }
                return Err(message);
            }
        }
        let outputs: BTreeSet<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        for tensor in used.iter().chain(&produced) {
            if outputs.contains(tensor) {
                continue;
            }
            if !ready.contains(tensor) || !used.contains(tensor) {
                return Err(format!(
                    "ensemble tensor '{tensor}' is unused in ensemble '{name}'"
                ));
            }
        }
        Ok(())
    }

    /// Walking back from `tensor` through tensors not written, the furthest one.
    fn first_unconnected<'a>(&'a self, tensor: &'a str, ready: &BTreeSet<&str>) -> Option<&'a str> {
        let mut at = tensor;
        let mut seen = BTreeSet::new();
        loop {
            let step = self
                .steps
                .iter()
                .find(|s| s.outputs.iter().any(|(_, t)| t == at))?;
            let next = step
                .inputs
                .iter()
                .map(|(_, t)| t.as_str())
                .find(|t| !ready.contains(t) && seen.insert(*t));
            match next {
                Some(t) => at = t,
                None => return (at != tensor).then_some(at),
            }
            if self
                .steps
                .iter()
                .all(|s| s.outputs.iter().all(|(_, t)| t != at))
            {
                return Some(at);
            }
        }
    }

    /// Checks each step against the model it names, as served now: its inputs all mapped, its
    /// outputs its own, datatypes agreeing along every tensor, and the batch size rule.
    pub fn check_models<'a>(
        &self,
        name: &str,
        max_batch_size: u64,
        own: (&[TensorSpec], &[TensorSpec]),
        model: impl Fn(&Step) -> Result<(u64, &'a [TensorSpec], &'a [TensorSpec]), String>,
    ) -> Result<(), String> {
        // Each tensor's datatype, and where it was inferred from.
        let mut types: HashMap<String, (DataType, String)> = HashMap::new();
        let mut note = |tensor: &str, spec: &TensorSpec, from: String, input: bool| {
            let Some(datatype) = spec.datatype else {
                return Ok(());
            };
            match types.get(tensor) {
                // BYTES images sent to an image input are decoded there, as for the model alone.
                Some((DataType::Bytes, _)) if input && spec.image_target().is_some() => Ok(()),
                Some((known, other)) if *known != datatype => Err(format!(
                    "in ensemble {name}, ensemble tensor {tensor}: inconsistent data type: {} is \
                     inferred from model {other} while {} is inferred from model {from}",
                    config_type(*known),
                    config_type(datatype)
                )),
                _ => {
                    types.insert(tensor.to_string(), (datatype, from));
                    Ok(())
                }
            }
        };
        for spec in own.0.iter().chain(own.1) {
            note(&spec.name, spec, name.to_string(), false)?;
        }
        for step in &self.steps {
            let (batch, inputs, outputs) = model(step)?;
            let id = &step.model;
            for (input, tensor) in &step.inputs {
                let Some(spec) = inputs.iter().find(|s| s.name == *input) else {
                    return Err(format!(
                        "in ensemble {name}, ensemble tensor {tensor} is mapping to non-existing \
                         input {input} in model {id}"
                    ));
                };
                note(tensor, spec, id.clone(), true)?;
            }
            if let Some(spec) = inputs
                .iter()
                .find(|s| !step.inputs.iter().any(|(i, _)| *i == s.name))
            {
                return Err(format!(
                    "in ensemble {name}, input {} in model {id} is not mapped to any ensemble tensors",
                    spec.name
                ));
            }
            for (output, tensor) in &step.outputs {
                let Some(spec) = outputs.iter().find(|s| s.name == *output) else {
                    return Err(format!(
                        "in ensemble {name}, ensemble tensor {tensor} is mapped from non-existing \
                         output {output} in model {id}"
                    ));
                };
                note(tensor, spec, id.clone(), false)?;
            }
            if max_batch_size > batch {
                return Err(format!(
                    "ensemble {name} allows maximum batch size {max_batch_size}, but it contains \
                     model {id} which only allows maximum batch size to be {batch}"
                ));
            }
        }
        Ok(())
    }

    /// The steps a request needs for `wanted` tensors: those that write them, and what those
    /// read, back to the ensemble's inputs. The rest are skipped.
    fn needed(&self, wanted: &[&str]) -> Vec<usize> {
        let mut tensors: BTreeSet<&str> = wanted.iter().copied().collect();
        let mut needed = BTreeSet::new();
        loop {
            let before = needed.len();
            for (i, step) in self.steps.iter().enumerate() {
                if step
                    .outputs
                    .iter()
                    .any(|(_, t)| tensors.contains(t.as_str()))
                    && needed.insert(i)
                {
                    tensors.extend(step.inputs.iter().map(|(_, t)| t.as_str()));
                }
            }
            if needed.len() == before {
                return needed.into_iter().collect();
            }
        }
    }
}

/// A datatype in Triton's config words (`TYPE_FP32`, `TYPE_STRING`).
fn config_type(datatype: DataType) -> String {
    match datatype {
        DataType::Bytes => "TYPE_STRING".into(),
        other => format!("TYPE_{}", other.as_str()),
    }
}

impl Engine {
    /// Runs ensemble `model` on `inputs` (in its input order): the tensors its outputs
    /// (`wanted`, indices into its outputs; empty: all) need. Outputs not wanted come back empty.
    pub(super) async fn run_ensemble(
        &self,
        model: &ServedModel,
        loaded: &LoadedVersion,
        ensemble: &Ensemble,
        inputs: Vec<Tensor>,
        request: &InferRequest<'_>,
        wanted: &[usize],
    ) -> Result<Vec<Tensor>, Error> {
        let names: Vec<&str> = match wanted {
            [] => loaded.outputs.iter().map(|o| o.name.as_str()).collect(),
            some => some
                .iter()
                .map(|&i| loaded.outputs[i].name.as_str())
                .collect(),
        };
        let mut tensors: HashMap<String, Tensor> = (loaded.inputs.iter())
            .map(|s| s.name.clone())
            .zip(inputs)
            .collect();
        let mut pending = ensemble.needed(&names);
        while !pending.is_empty() {
            let (ready, waiting): (Vec<usize>, Vec<usize>) = pending.into_iter().partition(|&i| {
                ensemble.steps[i]
                    .inputs
                    .iter()
                    .all(|(_, t)| tensors.contains_key(t))
            });
            if ready.is_empty() {
                return Err(Error::internal(format!(
                    "ensemble '{}' cannot go on: its load checks missed a cycle",
                    model.name
                )));
            }
            let runs = ready
                .iter()
                .map(|&i| self.run_step(&ensemble.steps[i], &tensors, request));
            for result in futures_util::future::join_all(runs).await {
                let written = result.map_err(|e| Error {
                    message: format!("in ensemble '{}', {}", model.name, e.message),
                    ..e
                })?;
                tensors.extend(written);
            }
            pending = waiting;
        }
        Ok(loaded
            .outputs
            .iter()
            .map(|spec| {
                tensors.remove(&spec.name).unwrap_or_else(|| Tensor {
                    datatype: spec.datatype.unwrap_or(DataType::Uint8),
                    shape: Vec::new(),
                    data: bytes::Bytes::new(),
                })
            })
            .collect())
    }

    /// One step: its model's request from the ensemble's tensors (the same buffers), run and
    /// counted as that model's own request; its outputs as ensemble tensors.
    async fn run_step(
        &self,
        step: &Step,
        tensors: &HashMap<String, Tensor>,
        request: &InferRequest<'_>,
    ) -> Result<Vec<(String, Tensor)>, Error> {
        let model = self.repository.get(&step.model)?;
        let (_, loaded) = model.version(step.version.as_deref())?;
        let inputs = (step.inputs.iter())
            .filter_map(|(input, tensor)| {
                let tensor = tensors.get(tensor)?.clone();
                Some(Input {
                    name: input.as_str().into(),
                    tensor,
                })
            })
            .collect();
        let outputs = (step.outputs.iter())
            .map(|(output, _)| WantedOutput {
                name: output.as_str().into(),
                classification: None,
                shared_memory: None,
            })
            .collect();
        let run = InferRequest {
            inputs,
            shared_inputs: Vec::new(),
            outputs,
            timeout: request.timeout,
            sequence: request.sequence.clone(),
        };
        let done = super::pipeline::counted(loaded, 0, async {
            let done = Box::pin(self.infer(&model, loaded, run)).await?;
            Ok(super::pipeline::Counted {
                rows: done.rows,
                bytes: 0,
                reply: done
                    .outputs
                    .into_iter()
                    .map(|o| o.tensor)
                    .collect::<Vec<_>>(),
            })
        })
        .await?;
        Ok(step
            .outputs
            .iter()
            .map(|(_, t)| t.clone())
            .zip(done)
            .collect())
    }
}
