//! What the engine serves: each model with its versions, and each loaded version wired to the
//! executor (queue, batcher, workers) that runs it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::batching::{BatchPolicy, Executor, Plan, Sequencer};
use super::ensemble::Ensemble;
use super::Error;
use crate::models::{inside, Loaded, Model, ModelConfig, TensorSpec};

/// A model as the server sees it: its config and each version it serves.
pub struct ServedModel {
    pub name: String,
    pub config: ModelConfig,
    /// Ascending by version.
    pub versions: Vec<ModelVersion>,
    /// Why the model as a whole could not load (bad config, no versions).
    pub error: Option<String>,
    /// Why an ensemble cannot run now: a model it composes is not served as its steps need.
    /// The repository sets it whenever the models served change.
    pub upstream: ArcSwapOption<String>,
}

pub struct ModelVersion {
    pub version: u64,
    pub state: Result<LoadedVersion, String>,
}

/// One loaded version of a model, behind its executor.
pub struct LoadedVersion {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Each output's class labels (empty without a `label_filename`).
    pub labels: Vec<Vec<String>>,
    pub executor: Executor,
    /// An ensemble's steps (its executor runs no model).
    pub ensemble: Option<Ensemble>,
}

impl LoadedVersion {
    /// Puts a loaded model behind its queue, or runs it inline when it is a cheap built-in
    /// that neither batches nor pretends to be slow. Label files are read from `model_dir`.
    pub fn new(
        loaded: Loaded,
        config: &ModelConfig,
        name: &str,
        model_dir: &Path,
    ) -> Result<LoadedVersion, String> {
        let (executor, inputs, outputs) = match loaded.sequencing {
            None => {
                let executor = executor(loaded.model, config, name, loaded.cheap)?;
                (executor, loaded.inputs, loaded.outputs)
            }
            Some(sequencing) => {
                // The client sees neither the controls nor undeclared state tensors.
                let declared: Vec<String> = config.output.iter().map(|o| o.name.clone()).collect();
                let (plan, inputs, outputs) =
                    Plan::new(&sequencing, loaded.inputs, loaded.outputs, &declared)?;
                let (rows, instances) = (config.max_batch_size, config.instance_count);
                let sequencer = Sequencer::new(sequencing, plan, name, rows, instances);
                let executor = Executor::sequenced(loaded.model, sequencer, instances, name)?;
                (executor, inputs, outputs)
            }
        };
        let labels = outputs
            .iter()
            .map(|spec| match &spec.label_filename {
                None => Ok(Vec::new()),
                Some(file) => {
                    let path = inside(model_dir, model_dir, "label_filename", file)
                        .map_err(|e| format!("output '{}': {e}", spec.name))?;
                    std::fs::read_to_string(path)
                        .map(|text| text.lines().map(str::to_string).collect())
                        .map_err(|e| {
                            let why = e.kind();
                            format!("output '{}': label_filename '{file}': {why}", spec.name)
                        })
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(LoadedVersion {
            executor,
            inputs,
            outputs,
            labels,
            ensemble: None,
        })
    }

    /// An ensemble named `name`: its declared tensors and its checked graph.
    pub fn ensemble(config: &ModelConfig, name: &str) -> Result<LoadedVersion, String> {
        let (inputs, outputs) = (config.specs("input")?, config.specs("output")?);
        let scheduling = (config.ensemble_scheduling.as_ref())
            .ok_or("key 'ensemble_scheduling': an ensemble needs its steps")?;
        let ensemble = Ensemble::new(name, &scheduling.0, &inputs, &outputs)?;
        Ok(LoadedVersion {
            labels: vec![Vec::new(); outputs.len()],
            inputs,
            outputs,
            executor: Executor::steps(),
            ensemble: Some(ensemble),
        })
    }
}

fn executor(
    model: Arc<dyn Model>,
    config: &ModelConfig,
    name: &str,
    cheap: bool,
) -> Result<Executor, String> {
    let batching = config.dynamic_batching.as_ref();
    if cheap && batching.is_none() && config.execution_delay_microseconds == 0 {
        return Ok(Executor::inline(model));
    }
    let policy = BatchPolicy {
        max_batch_size: batching.map_or(0, |_| config.max_batch_size),
        preferred: batching
            .map(|b| b.preferred_batch_size.clone())
            .unwrap_or_default(),
        max_delay: Duration::from_micros(batching.map_or(0, |b| b.max_queue_delay_microseconds)),
    };
    Executor::queued(
        model,
        policy,
        config.instance_count,
        config.max_queue_size,
        name,
    )
}

impl ServedModel {
    /// The threads its loaded versions started.
    pub fn threads(&self) -> usize {
        self.config.threads().saturating_mul(self.loaded().count())
    }

    /// Replaces `dir` with `label` in every error (a staged load's folder is no client's
    /// business).
    pub fn hide_path(&mut self, dir: &Path, label: &str) {
        let dir = dir.display().to_string();
        let errors = self
            .versions
            .iter_mut()
            .filter_map(|v| v.state.as_mut().err());
        for e in self.error.iter_mut().chain(errors) {
            *e = e.replace(&dir, label);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.error.is_none()
            && self.upstream.load().is_none()
            && !self.versions.is_empty()
            && self.versions.iter().all(|v| v.state.is_ok())
    }

    /// Why the model (or one of its versions) is not ready.
    pub fn reason(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        if let Some(e) = &*self.upstream.load() {
            return Some(e.to_string());
        }
        self.versions.iter().find_map(|v| {
            v.state
                .as_ref()
                .err()
                .map(|e| format!("version {}: {e}", v.version))
        })
    }

    /// The versions that loaded, ascending.
    pub fn loaded(&self) -> impl DoubleEndedIterator<Item = (u64, &LoadedVersion)> {
        self.versions
            .iter()
            .filter_map(|v| v.state.as_ref().ok().map(|loaded| (v.version, loaded)))
    }

    /// The version whose tensors metadata and config describe: the one named, else the default
    /// one (none when no version is ready: the document then says why).
    pub fn described_version(
        &self,
        version: Option<&str>,
    ) -> Result<Option<&LoadedVersion>, Error> {
        match version {
            Some(_) => Ok(Some(self.version(version)?.1)),
            None => Ok(self.version(None).ok().map(|(_, loaded)| loaded)),
        }
    }

    /// The versions model metadata lists: the one asked for (as Triton answers a per-version
    /// request), else all of them.
    pub fn listed_versions(&self, asked: Option<&str>) -> Vec<String> {
        let asked = asked.and_then(|v| v.parse::<u64>().ok());
        (self.versions.iter())
            .filter(|v| asked.is_none_or(|n| v.version == n))
            .map(|v| v.version.to_string())
            .collect()
    }

    /// The version a request names, or the newest ready one.
    pub fn version(&self, version: Option<&str>) -> Result<(u64, &LoadedVersion), Error> {
        let not_ready = |reason: String| {
            Error::not_ready(format!("model '{}' is not ready: {reason}", self.name))
        };
        if let Some(gap) = &*self.upstream.load() {
            return Err(not_ready(gap.to_string()));
        }
        let Some(wanted) = version else {
            return self.loaded().next_back().ok_or_else(|| {
                not_ready(self.reason().unwrap_or_else(|| "no version loaded".into()))
            });
        };
        let found = wanted
            .parse::<u64>()
            .ok()
            .and_then(|n| self.versions.iter().find(|v| v.version == n))
            .ok_or_else(|| {
                Error::not_found(format!(
                    "Request for unknown model: '{}' version {wanted} is not found",
                    self.name
                ))
            })?;
        match &found.state {
            Ok(loaded) => Ok((found.version, loaded)),
            Err(e) => Err(not_ready(format!("version {}: {e}", found.version))),
        }
    }
}
