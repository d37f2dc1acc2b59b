//! One inference, whichever door it came through: images decoded, inputs arranged and checked,
//! the model's queue, outputs selected; and the statistics of the whole request.

use std::future::Future;
use std::time::Instant;

use super::batching;
use super::shared_memory;
use super::{
    classify, offthread, Engine, Error, InferRequest, InferResponse, Input, LoadedVersion, Output,
    ServedModel, WantedOutput,
};
use crate::images;
use crate::tensors::{fit_dims, DataType, Tensor};

impl Engine {
    /// Runs `request` on one version of `model`.
    pub(super) async fn infer<'m>(
        &self,
        model: &ServedModel,
        loaded: &'m LoadedVersion,
        mut request: InferRequest<'_>,
    ) -> Result<InferResponse<'m>, Error> {
        // As Triton: a request the model cannot answer as asked costs no model time.
        let wanted = wanted_outputs(model, loaded, &request.outputs)?;
        if loaded.executor.sequencer().is_none() {
            if let Some(parameter) = request.sequence.first_set() {
                return Err(Error::invalid(format!(
                    "request parameter '{parameter}': model '{}' has no sequence batching (only \
                     0, \"\" or false is accepted)",
                    model.name
                )));
            }
        }
        // Shared memory: inputs become views of their regions; outputs get their places.
        let mut used = Vec::new();
        for input in std::mem::take(&mut request.shared_inputs) {
            let max = self.limits.max_tensor_elements;
            let tensor = (self.shared_memory).input(&model.name, &input, max, &mut used)?;
            request.inputs.push(Input {
                name: input.name,
                tensor,
            });
        }
        let sinks = (request.outputs.iter())
            .map(|o| {
                o.shared_memory
                    .as_ref()
                    .map(|place| self.shared_memory.output(place))
            })
            .map(Option::transpose)
            .collect::<Result<Vec<_>, _>>()?;
        self.decode_images(&mut request.inputs, loaded).await?;
        let inputs = arrange_inputs(model, loaded, &request.inputs)?;
        let batching = model.config.max_batch_size > 0;
        let rows = match batching {
            false => 1,
            true => batching::rows(&inputs),
        };
        // Triton's reshape: the model sees its own shapes, clients theirs.
        let inputs = inputs
            .into_iter()
            .zip(&loaded.inputs)
            .map(|(tensor, spec)| match &spec.reshape {
                Some(shape) => reshaped(tensor, batching, shape).map_err(Error::invalid),
                None => Ok(tensor),
            })
            .collect::<Result<_, _>>()?;
        let ran = async {
            let (outputs, timeline) = match &loaded.ensemble {
                Some(ensemble) => {
                    let indices: Vec<usize> = wanted.iter().map(|&(i, _)| i).collect();
                    let started = Instant::now();
                    let outputs = (self
                        .run_ensemble(model, loaded, ensemble, inputs, &request, &indices))
                    .await?;
                    let ended = Instant::now();
                    // As for an inline model: counted as one execution that never queued.
                    let stats = loaded.executor.stats();
                    stats.record_queued(std::time::Duration::ZERO);
                    let phases = batching::Phases {
                        infer: ended - started,
                        ..Default::default()
                    };
                    stats.record_execution(rows, 1, phases);
                    let timeline = super::Timeline {
                        queue_start: started,
                        compute_start: started,
                        compute_input_end: started,
                        compute_output_start: ended,
                        compute_end: ended,
                    };
                    (outputs, timeline)
                }
                None => {
                    (loaded.executor)
                        .execute(inputs, request.timeout, &request.sequence)
                        .await?
                }
            };
            if outputs.len() != loaded.outputs.len() {
                return Err(Error::internal(format!(
                    "model '{}' returned {} outputs, declared {}",
                    model.name,
                    outputs.len(),
                    loaded.outputs.len()
                )));
            }
            let outputs = outputs
                .into_iter()
                .zip(&loaded.outputs)
                .map(|(tensor, spec)| match (&spec.reshape, &spec.dims) {
                    (Some(_), Some(dims)) => {
                        reshaped(tensor, batching, &dims[usize::from(batching)..])
                            .map_err(Error::internal)
                    }
                    _ => Ok(tensor),
                })
                .collect::<Result<_, _>>()?;
            let mut outputs = select_outputs(model, loaded, &wanted, outputs)?;
            shared_memory::place_outputs(&mut outputs, &sinks, &used)?;
            Ok(InferResponse {
                outputs,
                rows,
                timeline,
            })
        };
        ran.await.map_err(Error::of_queued)
    }

    /// Turns BYTES [N] inputs sent to image inputs (4 dims) into the model's tensors. Heavy
    /// work (several images, or large ones) runs on the compute pool, not the io thread.
    async fn decode_images(
        &self,
        inputs: &mut [Input<'_>],
        loaded: &LoadedVersion,
    ) -> Result<(), Error> {
        let budget = self.image_budget();
        for input in inputs.iter_mut() {
            let tensor = &input.tensor;
            if tensor.datatype != DataType::Bytes || tensor.shape.len() != 1 {
                continue;
            }
            let Some(spec) = loaded.inputs.iter().find(|s| s.name == input.name) else {
                continue;
            };
            let Some(target) = spec.image_target() else {
                continue;
            };
            let decoded = if images::is_heavy(tensor) {
                let tensor = tensor.clone();
                offthread::on_pool("image decoder", move || {
                    images::decode_images(&tensor, &target, &budget)
                })
                .await?
            } else {
                images::decode_images(tensor, &target, &budget)
            };
            input.tensor =
                decoded.map_err(|e| Error::invalid(format!("input '{}': {e}", input.name)))?;
        }
        Ok(())
    }
}

/// `tensor`, the same bytes, in the shape `dims` after its batch dimension (kept when
/// `batching`).
fn reshaped(mut tensor: Tensor, batching: bool, dims: &[i64]) -> Result<Tensor, String> {
    let lead = usize::from(batching).min(tensor.shape.len());
    let count = tensor.shape[lead..].iter().product();
    let rest = fit_dims(dims, count).ok_or_else(|| {
        format!(
            "shape {:?} cannot be reshaped to {dims:?} (after the batch dimension)",
            tensor.shape
        )
    })?;
    tensor.shape.truncate(lead);
    tensor.shape.extend(rest);
    Ok(tensor)
}

/// What one request's handling produced, for its statistics.
pub(super) struct Counted<T> {
    pub reply: T,
    /// Rows inferred (the request's batch size).
    pub rows: u64,
    /// Size of the reply as sent.
    pub bytes: usize,
}

/// Runs `work` (one request's whole handling: decode, infer, encode) and counts it in the
/// version's statistics: bytes in and out, rows, latency, and failures by kind.
pub(super) async fn counted<T>(
    loaded: &LoadedVersion,
    request_bytes: usize,
    work: impl Future<Output = Result<Counted<T>, Error>>,
) -> Result<T, Error> {
    let started = Instant::now();
    let result = work.await;
    let stats = loaded.executor.stats();
    stats.request_bytes.observe(request_bytes as f64);
    match &result {
        Ok(done) => {
            stats.record_success(done.rows, started.elapsed());
            stats.response_bytes.observe(done.bytes as f64);
        }
        Err(e) if e.queued => stats.record_failure(started.elapsed(), e.kind),
        Err(_) => {}
    }
    result.map(|done| done.reply)
}

/// The request's tensors in the model's input order, each checked against its spec.
fn arrange_inputs(
    model: &ServedModel,
    loaded: &LoadedVersion,
    given: &[Input],
) -> Result<Vec<Tensor>, Error> {
    if let Some(extra) = given
        .iter()
        .find(|i| !loaded.inputs.iter().any(|s| s.name == i.name))
    {
        return Err(Error::invalid(format!(
            "unknown input '{}' for model '{}'",
            extra.name, model.name
        )));
    }
    let max_batch = model.config.max_batch_size;
    loaded
        .inputs
        .iter()
        .map(|spec| {
            let mut named = given.iter().filter(|i| i.name == spec.name);
            let input = named.next().ok_or_else(|| {
                Error::invalid(format!(
                    "missing input '{}' for model '{}'",
                    spec.name, model.name
                ))
            })?;
            if named.next().is_some() {
                return Err(Error::invalid(format!(
                    "input '{}' given twice",
                    spec.name
                )));
            }
            spec.check(input.tensor.datatype, &input.tensor.shape)?;
            if max_batch > 0 && input.tensor.shape.is_empty() {
                return Err(Error::invalid(format!(
                    "input '{}' has no batch dimension, which model '{}' needs (max_batch_size {max_batch})",
                    spec.name, model.name
                )));
            }
            let batch = input.tensor.shape.first().copied().unwrap_or(0);
            if max_batch > 0 && batch > max_batch {
                return Err(Error::invalid(format!(
                    "input '{}' has batch size {batch}, over the model's max_batch_size {max_batch}",
                    spec.name
                )));
            }
            Ok(input.tensor.clone())
        })
        .collect()
}

/// The requested outputs as (index in the model's outputs, classes asked), checked before the
/// model runs: each names an output of the model, once, and classification asks a numeric one.
/// `classification: 0` is no classification, as in Triton (tritonclient's default class_count).
fn wanted_outputs(
    model: &ServedModel,
    loaded: &LoadedVersion,
    wanted: &[WantedOutput],
) -> Result<Vec<(usize, Option<u64>)>, Error> {
    let mut seen = vec![false; loaded.outputs.len()];
    wanted
        .iter()
        .map(
            |WantedOutput {
                 name,
                 classification,
                 shared_memory,
             }| {
                let index = (loaded.outputs.iter())
                    .position(|s| s.name == *name)
                    .ok_or_else(|| {
                        // Triton's words for a state's output the config does not declare.
                        let state = (loaded.executor.sequencer()).is_some_and(|s| {
                            s.sequencing().states.iter().any(|s| s.output == *name)
                        });
                        let unknown = if state {
                            "unexpected inference"
                        } else {
                            "unknown"
                        };
                        Error::invalid(format!(
                            "{unknown} output '{name}' for model '{}'",
                            model.name
                        ))
                    })?;
                if std::mem::replace(&mut seen[index], true) {
                    return Err(Error::invalid(format!("output '{name}' requested twice")));
                }
                let classes = classification.filter(|&k| k > 0);
                if classes.is_some() && shared_memory.is_some() {
                    return Err(Error::invalid(
                        "Output can't set both 'shared_memory_region' and 'classification'",
                    ));
                }
                // An untyped output (identity) is checked when it exists, by top_k.
                if let (Some(_), Some(datatype)) = (classes, loaded.outputs[index].datatype) {
                    classify::classifiable(datatype).map_err(|e| {
                        Error::new(e.kind, format!("output '{name}': {}", e.message))
                    })?;
                }
                Ok((index, classes))
            },
        )
        .collect()
}

/// The outputs wanted, in the order asked (all of them, in model order, when none are), each
/// replaced by its top classes when asked.
fn select_outputs<'m>(
    model: &ServedModel,
    loaded: &'m LoadedVersion,
    wanted: &[(usize, Option<u64>)],
    outputs: Vec<Tensor>,
) -> Result<Vec<Output<'m>>, Error> {
    if wanted.is_empty() {
        return Ok(loaded
            .outputs
            .iter()
            .zip(outputs)
            .map(|(spec, tensor)| Output {
                name: &spec.name,
                tensor,
                in_shared_memory: false,
            })
            .collect());
    }
    let mut outputs: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    wanted
        .iter()
        .map(|&(index, classification)| {
            let name = &loaded.outputs[index].name;
            let mut tensor = (outputs[index].take())
                .ok_or_else(|| Error::internal(format!("output '{name}' taken twice")))?;
            if let Some(k) = classification {
                let batching = model.config.max_batch_size > 0;
                tensor = classify::top_k(&tensor, k, batching, &loaded.labels[index])
                    .map_err(|e| Error::new(e.kind, format!("output '{name}': {}", e.message)))?;
            }
            Ok(Output {
                name,
                tensor,
                in_shared_memory: false,
            })
        })
        .collect()
}
