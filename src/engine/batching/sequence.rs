//! Triton's sequence batcher: requests that carry a correlation id belong to a sequence, and
//! each live sequence holds one slot. A slot runs its sequence's requests one at a time, in
//! order, and keeps the sequence's implicit state between them. The model gets, besides the
//! client's inputs, the control tensors (START, END, READY, CORRID) and the state.
//!
//! Slots: `direct` has the model's batch rows per instance, `oldest` its candidate sequences.
//! Each slot belongs to one instance, whose worker alone runs it: a sequence stays on one
//! session (and core), as in Triton.
//! A sequence that finds every slot taken waits in the backlog, in arrival order; a backlog
//! sequence whose request times out there is refused whole, as Triton does. A slot frees after
//! its END request, or once its sequence has been idle for `max_sequence_idle_microseconds`.
//!
//! A batch is the oldest waiting request of each ready slot, up to the model's batch rows,
//! among those of the same shapes. Every row of a batch is ready: a slot with nothing to run is
//! left out rather than padded, so READY is always true in what the model sees.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::scheduler::{answer_batch, execute_batch, Job};
use super::stats::ModelStats;
use crate::engine::{CorrelationId, Error, SequenceFlags};
use crate::models::{ControlKind, Model, Sequencing, Strategy, TensorSpec};
use crate::tensors::{push_bytes_element, DataType, Tensor};

/// Where each of the model's inputs comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Feed {
    /// The client's input of this index.
    Client(usize),
    Control(usize),
    State(usize),
}

/// How the model's tensors map onto the client's and the batcher's.
#[derive(Debug)]
pub struct Plan {
    feeds: Vec<Feed>,
    /// The model output of each client output.
    client_outputs: Vec<usize>,
    /// The model output of each state.
    state_outputs: Vec<usize>,
}

impl Plan {
    /// Splits the model's tensors (every input and output it has) into the client's and the
    /// batcher's; returns the plan with the client's inputs and outputs. A state's output is the
    /// client's only where the config declares it.
    pub fn new(
        sequencing: &Sequencing,
        inputs: Vec<TensorSpec>,
        outputs: Vec<TensorSpec>,
        declared_outputs: &[String],
    ) -> Result<(Plan, Vec<TensorSpec>, Vec<TensorSpec>), String> {
        let mut client_inputs = Vec::new();
        let mut feeds = Vec::with_capacity(inputs.len());
        for spec in inputs {
            let control = sequencing.controls.iter().position(|c| c.name == spec.name);
            let state = sequencing.states.iter().position(|s| s.input == spec.name);
            feeds.push(match (control, state) {
                (Some(c), _) => Feed::Control(c),
                (_, Some(s)) => Feed::State(s),
                _ => {
                    client_inputs.push(spec);
                    Feed::Client(client_inputs.len() - 1)
                }
            });
        }
        let at = |name: &str, what: &str| {
            (outputs.iter().position(|o| o.name == name))
                .ok_or_else(|| format!("the model has no output '{name}' ({what})"))
        };
        let state_outputs = (sequencing.states.iter())
            .map(|s| at(&s.output, "a state's output_name"))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, c) in sequencing.controls.iter().enumerate() {
            if !feeds.contains(&Feed::Control(i)) {
                return Err(format!("the model has no input '{}' (a control)", c.name));
            }
        }
        for (i, s) in sequencing.states.iter().enumerate() {
            if !feeds.contains(&Feed::State(i)) {
                return Err(format!(
                    "the model has no input '{}' (a state's input_name)",
                    s.input
                ));
            }
        }
        let (mut client_outputs, mut specs) = (Vec::new(), Vec::new());
        for (i, spec) in outputs.into_iter().enumerate() {
            if !state_outputs.contains(&i) || declared_outputs.contains(&spec.name) {
                client_outputs.push(i);
                specs.push(spec);
            }
        }
        let plan = Plan {
            feeds,
            client_outputs,
            state_outputs,
        };
        Ok((plan, client_inputs, specs))
    }
}

/// One request of a sequence.
struct Step {
    job: Job,
    id: CorrelationId,
    start: bool,
    end: bool,
}

/// One row of a batch: a slot's next request, and the state it runs with (`None`: the initial).
struct Row {
    slot: usize,
    step: Step,
    kept: Option<Vec<Tensor>>,
}

#[derive(Default)]
struct Slot {
    /// The sequence holding it.
    sequence: Option<CorrelationId>,
    steps: VecDeque<Step>,
    /// The state after the sequence's last request (`None`: the initial state).
    state: Option<Vec<Tensor>>,
    running: bool,
    /// Its END request is queued: no request joins it any more.
    ending: bool,
    last: Option<Instant>,
}

/// A sequence waiting for a slot.
struct Backlogged {
    id: CorrelationId,
    steps: VecDeque<Step>,
    /// No END request yet: later requests of the sequence join it.
    open: bool,
}

impl Backlogged {
    /// Answers each of its requests with `error`.
    fn refuse(self, error: &Error) {
        for step in self.steps {
            step.job.answer(Err(error.clone()));
        }
    }
}

#[derive(Default)]
struct Slots {
    /// Made as sequences need them, up to `limit`: `max_candidate_sequences` may be large.
    slots: Vec<Slot>,
    limit: usize,
    free: Vec<usize>,
    live: HashMap<CorrelationId, usize>,
    backlog: VecDeque<Backlogged>,
    closed: bool,
}

impl Slots {
    /// Whether a slot is free, making one if the limit allows.
    fn grow(&mut self) -> bool {
        if self.free.is_empty() && self.slots.len() < self.limit {
            self.free.push(self.slots.len());
            self.slots.push(Slot::default());
        }
        !self.free.is_empty()
    }
}

pub struct Sequencer {
    state: Mutex<Slots>,
    /// One per instance: slot i belongs to instance i % instances, as Triton gives each
    /// instance its own slots, and only that instance's worker runs it.
    wake: Vec<Condvar>,
    sequencing: Sequencing,
    plan: Plan,
    model_name: String,
    /// Rows per batch: the model's max_batch_size (1 when it does not batch).
    rows: usize,
    batching: bool,
}

impl Sequencer {
    pub fn new(
        sequencing: Sequencing,
        plan: Plan,
        model_name: &str,
        max_batch_size: u64,
        instances: usize,
    ) -> Sequencer {
        let rows = max_batch_size.max(1) as usize;
        let count = match &sequencing.strategy {
            Strategy::Direct { .. } => rows.saturating_mul(instances),
            Strategy::Oldest { max_candidates, .. } => *max_candidates,
        };
        let slots = Slots {
            limit: count,
            ..Slots::default()
        };
        Sequencer {
            state: Mutex::new(slots),
            wake: (0..instances.max(1)).map(|_| Condvar::new()).collect(),
            sequencing,
            plan,
            model_name: model_name.to_string(),
            rows,
            batching: max_batch_size > 0,
        }
    }

    pub fn sequencing(&self) -> &Sequencing {
        &self.sequencing
    }

    /// Whether the model's tensors have a batch dimension.
    pub fn batching(&self) -> bool {
        self.batching
    }

    fn lock(&self) -> MutexGuard<'_, Slots> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Requests waiting (in slots and in the backlog).
    pub fn pending(&self) -> usize {
        let state = self.lock();
        let queued: usize = state.slots.iter().map(|s| s.steps.len()).sum();
        queued + state.backlog.iter().map(|b| b.steps.len()).sum::<usize>()
    }

    /// Queues one request of a sequence, or says why it cannot be one.
    pub fn push(&self, job: Job, flags: &SequenceFlags) -> Result<(), Error> {
        let model = &self.model_name;
        if job.rows > 1 {
            return Err(Error::invalid(format!(
                "inference request to model '{model}' must specify batch-size 1 due to \
                 requirements of sequence batcher"
            )));
        }
        let Some(id) = flags.id.clone() else {
            return Err(Error::invalid(format!(
                "inference request to model '{model}' must specify a non-zero or non-empty \
                 correlation ID"
            )));
        };
        if let Some(c) = (self.sequencing.controls.iter()).find(|c| c.kind == ControlKind::CorrId) {
            let fits = match &id {
                CorrelationId::Text(_) => c.datatype == DataType::Bytes,
                CorrelationId::Number(_) => c.datatype != DataType::Bytes,
            };
            if !fits {
                let sent = match id {
                    CorrelationId::Text(_) => "BYTES",
                    CorrelationId::Number(_) => "UINT64",
                };
                return Err(Error::invalid(format!(
                    "sequence batching control '{}' data-type is '{sent}', but model '{model}' \
                     expects '{}'",
                    c.name, c.datatype
                )));
            }
        }
        let deadline = job.deadline;
        let step = Step {
            job,
            id: id.clone(),
            start: flags.start,
            end: flags.end,
        };
        let mut guard = self.lock();
        guard.grow();
        let Slots {
            slots,
            free,
            live,
            backlog,
            closed,
            ..
        } = &mut *guard;
        if *closed {
            return Err(Error::not_ready(format!("model '{model}' is unloading")));
        }
        let now = Instant::now();
        let mut placed = None;
        if let Some(&i) = live.get(&id) {
            placed = Some(i);
            // A START on a live sequence ends it: its queued requests run, then the state
            // starts afresh.
            let slot = &mut slots[i];
            slot.steps.push_back(step);
            slot.last = Some(now);
            if flags.end {
                slot.ending = true;
                live.remove(&id);
            }
        } else if let Some(b) = (backlog.iter_mut()).find(|b| b.open && b.id == id) {
            b.steps.push_back(step);
            b.open = !flags.end;
        } else if !flags.start {
            return Err(Error::invalid(format!(
                "inference request for sequence {id} to model '{model}' must specify the START \
                 flag on the first request of the sequence"
            )));
        } else if let Some(i) = free.pop() {
            placed = Some(i);
            slots[i] = Slot {
                sequence: Some(id.clone()),
                steps: VecDeque::from([step]),
                ending: flags.end,
                last: Some(now),
                ..Slot::default()
            };
            if !flags.end {
                live.insert(id, i);
            }
        } else {
            backlog.push_back(Backlogged {
                id,
                steps: VecDeque::from([step]),
                open: !flags.end,
            });
        }
        drop(guard);
        match placed {
            Some(i) => self.wake[i % self.wake.len()].notify_one(),
            // Backlogged with a timeout: the workers' next wake-up may now be due sooner.
            None if deadline.is_some() => self.wake_all(),
            None => {}
        }
        Ok(())
    }

    fn wake_all(&self) {
        self.wake.iter().for_each(Condvar::notify_all);
    }

    /// Workers finish what is queued, then stop; the backlog is refused.
    pub fn close(&self) {
        let backlog: Vec<Backlogged> = {
            let mut state = self.lock();
            state.closed = true;
            state.backlog.drain(..).collect()
        };
        let unloading = Error::not_ready(format!("model '{}' is unloading", self.model_name));
        backlog.into_iter().for_each(|b| b.refuse(&unloading));
        self.wake_all();
    }

    /// Blocks until a batch of `instance`'s slots should run; `None` once closed and drained.
    fn next_batch(&self, instance: usize) -> Option<Vec<Row>> {
        let instances = self.wake.len();
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            let mut wake_at = self.tidy(&mut state, now);
            // The oldest waiting request of each of its slots free to run.
            let mut ready: Vec<usize> = (instance..state.slots.len())
                .step_by(instances)
                .filter(|&i| !state.slots[i].running && !state.slots[i].steps.is_empty())
                .collect();
            ready.sort_by_key(|&i| state.slots[i].steps[0].job.enqueued);
            if let Some(&first) = ready.first() {
                let key = &state.slots[first].steps[0].job.key;
                ready.retain(|&i| state.slots[i].steps[0].job.key == *key);
                ready.truncate(self.rows);
                let oldest = state.slots[first].steps[0].job.enqueued;
                let due = oldest + self.sequencing.max_queue_delay;
                if state.closed || now >= due || self.full(ready.len()) {
                    let batch = ready
                        .into_iter()
                        .filter_map(|i| {
                            let slot = &mut state.slots[i];
                            let step = slot.steps.pop_front()?;
                            slot.running = true;
                            let kept = if step.start { None } else { slot.state.take() };
                            Some(Row {
                                slot: i,
                                step,
                                kept,
                            })
                        })
                        .collect();
                    return Some(batch);
                }
                wake_at = wake_at.min(due);
            } else if state.closed && state.slots.iter().all(|s| !s.running) {
                return None;
            }
            let wait = wake_at.saturating_duration_since(now);
            state = self.wake[instance]
                .wait_timeout(state, wait)
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }

    /// Whether `ready` rows make a batch that goes at once.
    fn full(&self, ready: usize) -> bool {
        ready >= self.rows
            || match &self.sequencing.strategy {
                Strategy::Direct {
                    minimum_slot_utilization,
                } => ready as f32 >= minimum_slot_utilization * self.rows as f32,
                Strategy::Oldest { preferred, .. } => preferred.contains(&(ready as u64)),
            }
    }

    /// Frees idle slots, gives free slots to the backlog and refuses backlogged sequences
    /// whose requests timed out; returns when it next has something to do.
    fn tidy(&self, state: &mut Slots, now: Instant) -> Instant {
        let idle = self.sequencing.idle;
        let mut next = now + Duration::from_secs(3600);
        for (i, slot) in state.slots.iter_mut().enumerate() {
            let Some(last) = slot.last.filter(|_| !slot.running && slot.steps.is_empty()) else {
                continue;
            };
            if slot.ending || now >= last + idle {
                if let Some(id) = slot.sequence.take() {
                    if state.live.get(&id) == Some(&i) {
                        state.live.remove(&id);
                    }
                }
                *slot = Slot::default();
                state.free.push(i);
            } else {
                next = next.min(last + idle);
            }
        }
        if !state.backlog.is_empty() {
            let (expired, waiting) = (state.backlog.drain(..)).partition(|b: &Backlogged| {
                b.steps
                    .iter()
                    .any(|s| s.job.deadline.is_some_and(|d| now >= d))
            });
            state.backlog = waiting;
            let timed_out =
                Error::not_ready("timeout of the corresponding sequence has been expired");
            expired
                .into_iter()
                .for_each(|b: Backlogged| b.refuse(&timed_out));
        }
        for b in state.backlog.iter() {
            if let Some(d) = b.steps.iter().filter_map(|s| s.job.deadline).min() {
                next = next.min(d);
            }
        }
        while !state.backlog.is_empty() && state.grow() {
            let (Some(b), Some(i)) = (state.backlog.pop_front(), state.free.pop()) else {
                break;
            };
            if b.open {
                state.live.insert(b.id.clone(), i);
            }
            self.wake[i % self.wake.len()].notify_one();
            state.slots[i] = Slot {
                sequence: Some(b.id),
                steps: b.steps,
                ending: !b.open,
                last: Some(now),
                ..Slot::default()
            };
        }
        next
    }

    /// The model's inputs for one request: the client's, the controls, the state.
    fn model_inputs(&self, step: &Step, kept: Option<Vec<Tensor>>) -> Vec<Tensor> {
        let lead: &[u64] = if self.batching { &[1] } else { &[] };
        let shape = |dims: &[i64]| -> Vec<u64> {
            lead.iter()
                .copied()
                .chain(dims.iter().map(|&d| d as u64))
                .collect()
        };
        (self.plan.feeds.iter())
            .map(|feed| match *feed {
                Feed::Client(i) => step.job.inputs[i].clone(),
                Feed::Control(c) => {
                    let control = &self.sequencing.controls[c];
                    let data = match (control.kind, &control.values) {
                        (ControlKind::Start, Some(v)) => v[usize::from(step.start)].clone(),
                        (ControlKind::End, Some(v)) => v[usize::from(step.end)].clone(),
                        (ControlKind::Ready, Some(v)) => v[1].clone(),
                        _ => corrid_bytes(&step.id, control.datatype),
                    };
                    Tensor {
                        datatype: control.datatype,
                        shape: shape(&[1]),
                        data: data.into(),
                    }
                }
                Feed::State(s) => match &kept {
                    Some(kept) => kept[s].clone(),
                    None => {
                        let spec = &self.sequencing.states[s];
                        Tensor {
                            datatype: spec.datatype,
                            shape: shape(&spec.dims),
                            data: spec.initial.clone().into(),
                        }
                    }
                },
            })
            .collect()
    }
}

/// A correlation id as the CORRID control's datatype (its type was checked on arrival).
fn corrid_bytes(id: &CorrelationId, datatype: DataType) -> Vec<u8> {
    match id {
        CorrelationId::Number(n) => match datatype {
            DataType::Uint32 | DataType::Int32 => (*n as u32).to_le_bytes().to_vec(),
            _ => n.to_le_bytes().to_vec(),
        },
        CorrelationId::Text(s) => {
            let mut out = Vec::with_capacity(4 + s.len());
            // An id longer than 4 GiB cannot have arrived.
            let _ = push_bytes_element(&mut out, s.as_bytes());
            out
        }
    }
}

/// A worker: runs the batches the sequencer forms, keeps each slot's new state, answers each
/// request with the client's outputs.
pub fn run_sequence_worker(
    model: Arc<dyn Model>,
    sequencer: Arc<Sequencer>,
    stats: Arc<ModelStats>,
    instance: usize,
) {
    while let Some(batch) = sequencer.next_batch(instance) {
        let started = Instant::now();
        let mut slots = Vec::with_capacity(batch.len());
        let mut jobs = Vec::with_capacity(batch.len());
        for Row { slot, step, kept } in batch {
            stats.record_queued(started - step.job.enqueued);
            let inputs = sequencer.model_inputs(&step, kept);
            let Step { mut job, end, .. } = step;
            job.inputs = inputs;
            slots.push((slot, end));
            jobs.push(job);
        }
        let result = execute_batch(&*model, &jobs, &stats);
        {
            let plan = &sequencer.plan;
            let mut state = sequencer.lock();
            let now = Instant::now();
            for (k, &(i, end)) in slots.iter().enumerate() {
                let slot = &mut state.slots[i];
                // The new state; after a failure, the state the request ran with.
                slot.state = Some(match &result {
                    Ok((outputs, _)) => (plan.state_outputs.iter())
                        .map(|&o| outputs[k][o].clone())
                        .collect(),
                    Err(_) => (0..sequencer.sequencing.states.len())
                        .filter_map(|s| plan.feeds.iter().position(|f| *f == Feed::State(s)))
                        .map(|at| jobs[k].inputs[at].clone())
                        .collect(),
                });
                slot.running = false;
                slot.last = Some(now);
                slot.ending |= end;
            }
        }
        let result = result.map(|(outputs, phases)| {
            let client = |outputs: Vec<Tensor>| {
                (sequencer.plan.client_outputs.iter())
                    .map(|&o| outputs[o].clone())
                    .collect()
            };
            (outputs.into_iter().map(client).collect(), phases)
        });
        // Freed slots may take backlogged sequences, which other instances run.
        sequencer.wake_all();
        answer_batch(jobs, started, result);
    }
}
