//! The per-model queue: io threads push requests and await replies; each of the model's
//! `instance_count` workers, when free, takes the next batch from it and executes it.
//!
//! Batching follows the release rules of Triton's dynamic batcher (its `qa/L0_batcher` tests):
//! requests join the batch in arrival order; the batch goes at once when it reaches a preferred
//! size, when it cannot grow past the largest preferred size (the next request would pass it,
//! or it already has), when the next request would pass `max_batch_size`, or when the next request
//! has other datatypes or non-batch dimensions (only equal shapes share a batch). Otherwise it
//! waits for more until the oldest request has waited the configured delay (no delay: never).
//! Requests are never split, padded or reordered.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::gather::{gather, scatter};
use super::stats::{ModelStats, Phases};
use crate::engine::{Error, ErrorKind, Timeline};
use crate::models::Model;
use crate::tensors::{DataType, Tensor};

/// How a model's queue forms batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    /// 0: the model does not batch; every request runs alone.
    pub max_batch_size: u64,
    pub preferred: Vec<u64>,
    pub max_delay: Duration,
}

/// A request's outputs and when each stage of it ran.
pub type Answer = Result<(Vec<Tensor>, Timeline), Error>;

pub type Reply = flume::Sender<Answer>;

/// One request waiting for execution.
pub struct Job {
    /// Which request it is, for `Queue::expire`.
    pub id: u64,
    pub inputs: Vec<Tensor>,
    /// Its rows (batch dimension; 1 when the model does not batch).
    pub rows: u64,
    /// What must match for requests to share a batch: datatypes and non-batch dimensions.
    pub key: Vec<(DataType, Vec<u64>)>,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
    pub reply: Reply,
}

impl Job {
    /// Answers the request. Its inputs (views of the request's read buffer) are released first,
    /// so that the connection, woken by the answer, finds that buffer unshared and reads the next
    /// request into it instead of a fresh allocation.
    pub(super) fn answer(self, result: Answer) {
        let Job { inputs, reply, .. } = self;
        drop(inputs);
        let _ = reply.send(result);
    }

    pub fn new(
        inputs: Vec<Tensor>,
        batching: bool,
        timeout: Option<Duration>,
        reply: Reply,
    ) -> Job {
        // A model that does not batch runs every request alone: no rows or key to compare.
        let (rows, key) = if batching {
            let rows = super::rows(&inputs);
            let key = inputs
                .iter()
                .map(|t| (t.datatype, t.shape.get(1..).unwrap_or(&[]).to_vec()))
                .collect();
            (rows, key)
        } else {
            (1, Vec::new())
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let enqueued = Instant::now();
        Job {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            inputs,
            rows,
            key,
            enqueued,
            deadline: timeout.map(|t| enqueued + t),
            reply,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Run the first this many requests of the queue as one batch.
    Release(usize),
    /// Nothing to release before this instant (unless more requests arrive).
    WaitUntil(Instant),
    Empty,
}

/// What the queue should do now.
fn decide(queue: &VecDeque<Job>, policy: &BatchPolicy, now: Instant) -> Decision {
    let Some(head) = queue.front() else {
        return Decision::Empty;
    };
    if policy.max_batch_size == 0 {
        return Decision::Release(1);
    }
    // Without preferred sizes, the batch grows towards max_batch_size.
    let max_preferred = policy
        .preferred
        .iter()
        .copied()
        .max()
        .unwrap_or(policy.max_batch_size);
    let (mut taken, mut rows, mut send_now) = (0, 0, false);
    // Requests in the best batch found: of a preferred size, or the largest below the largest
    // preferred size.
    let mut best = None;
    for job in queue {
        if taken > 0 {
            if rows + job.rows > max_preferred && best.is_none() {
                best = Some(taken);
            }
            if rows + job.rows > policy.max_batch_size || job.key != head.key {
                send_now = true;
                break;
            }
        }
        taken += 1;
        rows += job.rows;
        if policy.preferred.contains(&rows) {
            best = Some(taken);
        }
    }
    let release_at = head.enqueued + policy.max_delay;
    match best {
        Some(n) if now < release_at => Decision::Release(n),
        _ if send_now || rows >= max_preferred || now >= release_at => Decision::Release(taken),
        _ => Decision::WaitUntil(release_at),
    }
}

/// Drops requests whose client has gone, and answers those past their timeout.
fn purge(queue: &mut VecDeque<Job>, now: Instant) {
    queue.retain(|job| {
        if job.deadline.is_some_and(|d| now >= d) {
            let _ = job.reply.send(Err(timed_out(now - job.enqueued)));
            return false;
        }
        !job.reply.is_disconnected()
    });
}

pub fn timed_out(waited: Duration) -> Error {
    Error::new(
        ErrorKind::TimedOut,
        format!(
            "request timed out after {} µs in the queue",
            waited.as_micros()
        ),
    )
}

/// A model's queue, shared by the io threads (which push) and the model's workers (which form
/// batches when they are free). There is no scheduler thread: the free worker decides.
pub struct Queue {
    state: Mutex<QueueState>,
    arrived: Condvar,
    policy: BatchPolicy,
    max_queue_size: usize,
}

struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
    /// Workers waiting for a request to arrive (an empty queue).
    idle: usize,
    /// Workers waiting out a batch delay: a new request wakes one only if it completes a batch.
    delaying: usize,
}

impl Queue {
    pub fn new(policy: BatchPolicy, max_queue_size: usize) -> Queue {
        Queue {
            state: Mutex::new(QueueState {
                jobs: VecDeque::new(),
                closed: false,
                idle: 0,
                delaying: 0,
            }),
            arrived: Condvar::new(),
            policy,
            max_queue_size,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a request, unless the queue is full (then the job comes back).
    pub fn push(&self, job: Job) -> Result<(), Job> {
        let mut state = self.lock();
        if self.max_queue_size > 0 && state.jobs.len() >= self.max_queue_size {
            return Err(job);
        }
        state.jobs.push_back(job);
        // Wake a worker only when it has something to do: waking costs a context switch per
        // request, which is most of the hand-off's cost.
        let wake = state.idle > 0
            || (state.delaying > 0
                && matches!(
                    decide(&state.jobs, &self.policy, Instant::now()),
                    Decision::Release(_)
                ));
        drop(state);
        if wake {
            self.arrived.notify_one();
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    /// Takes request `id` out of the queue if it is still there (no worker has taken it) and
    /// its deadline has passed; returns how long it waited. Its client's timer calls this, so
    /// a request times out on time even while every worker is busy.
    pub fn expire(&self, id: u64, now: Instant) -> Option<Duration> {
        let mut state = self.lock();
        let at = state
            .jobs
            .iter()
            .position(|j| j.id == id && j.deadline.is_some_and(|d| now >= d))?;
        let job = state.jobs.remove(at)?;
        Some(now - job.enqueued)
    }

    /// Workers stop once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.arrived.notify_all();
    }

    /// Blocks until a batch should run; `None` once closed and drained.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            purge(&mut state.jobs, now);
            let wake = match decide(&state.jobs, &self.policy, now) {
                Decision::Release(n) => {
                    let batch: Vec<Job> = state.jobs.drain(..n).collect();
                    let more = !state.jobs.is_empty();
                    drop(state);
                    if more {
                        self.arrived.notify_one();
                    }
                    return Some(batch);
                }
                Decision::Empty if state.closed => return None,
                // Closed: nothing more will come, so do not wait for a fuller batch.
                Decision::WaitUntil(_) if state.closed => now,
                Decision::WaitUntil(at) => at,
                Decision::Empty => now + Duration::from_secs(3600),
            };
            let wake = state
                .jobs
                .iter()
                .filter_map(|j| j.deadline)
                .fold(wake, Instant::min);
            if wake > now {
                let empty = state.jobs.is_empty();
                if empty {
                    state.idle += 1;
                } else {
                    state.delaying += 1;
                }
                state = self
                    .arrived
                    .wait_timeout(state, wake - now)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0);
                if empty {
                    state.idle -= 1;
                } else {
                    state.delaying -= 1;
                }
            } else if state.closed {
                let batch: Vec<Job> = state.jobs.drain(..).collect();
                return Some(batch).filter(|b| !b.is_empty());
            }
        }
    }
}

/// A worker thread: takes the next batch, runs it, answers each request.
pub fn run_worker(model: Arc<dyn Model>, queue: Arc<Queue>, stats: Arc<ModelStats>) {
    while let Some(batch) = queue.next_batch() {
        let started = Instant::now();
        for job in &batch {
            stats.record_queued(started - job.enqueued);
        }
        let result = execute_batch(&*model, &batch, &stats);
        answer_batch(batch, started, result);
    }
}

/// Answers each request of a batch that started at `started`: its outputs and timeline, or the
/// batch's error.
pub(super) fn answer_batch(
    batch: Vec<Job>,
    started: Instant,
    result: Result<(Vec<Vec<Tensor>>, Phases), Error>,
) {
    match result {
        Ok((outputs, phases)) => {
            let ended = Instant::now();
            for (job, outputs) in batch.into_iter().zip(outputs) {
                let timeline = Timeline {
                    queue_start: job.enqueued,
                    compute_start: started,
                    compute_input_end: started + phases.input,
                    compute_output_start: started + phases.input + phases.infer,
                    compute_end: ended,
                };
                job.answer(Ok((outputs, timeline)));
            }
        }
        Err(e) => {
            for job in batch {
                job.answer(Err(e.clone()));
            }
        }
    }
}

/// Executes one batch: through the model's own `execute_many` when it has one, else gathered
/// into batch tensors, executed once and scattered; a lone request skips gather and scatter.
pub(super) fn execute_batch(
    model: &dyn Model,
    batch: &[Job],
    stats: &ModelStats,
) -> Result<(Vec<Vec<Tensor>>, Phases), Error> {
    let t0 = Instant::now();
    let requests: Vec<&[Tensor]> = batch.iter().map(|job| &job.inputs[..]).collect();
    let (per_request, phases) = match guarded(|| model.execute_many(&requests))? {
        Some(outputs) => {
            let outputs = outputs?;
            let phases = Phases {
                infer: t0.elapsed(),
                ..Phases::default()
            };
            (outputs, phases)
        }
        None => gather_execute_scatter(model, batch, t0)?,
    };
    if per_request.len() != batch.len() {
        return Err(Error::internal(
            "the model answered a different number of requests",
        ));
    }
    let rows = batch.iter().map(|job| job.rows).sum();
    stats.record_execution(rows, batch.len() as u64, phases);
    Ok((per_request, phases))
}

fn gather_execute_scatter(
    model: &dyn Model,
    batch: &[Job],
    t0: Instant,
) -> Result<(Vec<Vec<Tensor>>, Phases), Error> {
    let gathered;
    let inputs = match batch {
        [only] => &only.inputs,
        _ => {
            gathered = (0..batch[0].inputs.len())
                .map(|i| gather(&batch.iter().map(|job| &job.inputs[i]).collect::<Vec<_>>()))
                .collect::<Result<Vec<_>, _>>()?;
            &gathered
        }
    };
    let t1 = Instant::now();
    let outputs = run_model(model, inputs)?;
    let t2 = Instant::now();
    let per_request = match batch {
        [_] => vec![outputs],
        _ => {
            let rows: Vec<u64> = batch.iter().map(|job| job.rows).collect();
            let mut per_request = vec![Vec::with_capacity(outputs.len()); batch.len()];
            for output in &outputs {
                for (mine, part) in per_request.iter_mut().zip(scatter(output, &rows)?) {
                    mine.push(part);
                }
            }
            per_request
        }
    };
    let phases = Phases {
        input: t1 - t0,
        infer: t2 - t1,
        output: t2.elapsed(),
    };
    Ok((per_request, phases))
}

/// Runs model code, turning a panic into an error for its requests.
fn guarded<T>(work: impl FnOnce() -> T) -> Result<T, Error> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|_| Error::internal("the model panicked"))
}

/// A panicking model fails its requests, not the thread it runs on.
pub fn run_model(model: &dyn Model, inputs: &[Tensor]) -> Result<Vec<Tensor>, Error> {
    guarded(|| model.execute(inputs))?.map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(rows: u64, width: u64, age: Duration, now: Instant) -> Job {
        let t = Tensor {
            datatype: DataType::Fp32,
            shape: vec![rows, width],
            data: vec![0u8; (rows * width * 4) as usize].into(),
        };
        let mut job = Job::new(vec![t], true, None, flume::unbounded().0);
        job.enqueued = now - age;
        job
    }

    fn policy(max: u64, preferred: &[u64], delay_us: u64) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            preferred: preferred.to_vec(),
            max_delay: Duration::from_micros(delay_us),
        }
    }

    fn queue(jobs: &[(u64, u64)], now: Instant) -> VecDeque<Job> {
        jobs.iter()
            .map(|&(rows, width)| job(rows, width, Duration::ZERO, now))
            .collect()
    }

    #[test]
    fn no_delay_releases_what_is_queued() {
        let now = Instant::now();
        let q = queue(&[(1, 4)], now);
        assert_eq!(decide(&q, &policy(8, &[], 0), now), Decision::Release(1));
        assert_eq!(
            decide(&VecDeque::new(), &policy(8, &[], 0), now),
            Decision::Empty
        );
        // Not batching: one request at a time.
        let q = queue(&[(1, 4), (1, 4)], now);
        assert_eq!(decide(&q, &policy(0, &[], 1000), now), Decision::Release(1));
    }

    #[test]
    fn delay_waits_only_until_the_oldest_has_waited_it() {
        let now = Instant::now();
        let q: VecDeque<Job> = [job(1, 4, Duration::from_micros(30), now)].into();
        let p = policy(8, &[], 100);
        assert_eq!(
            decide(&q, &p, now),
            Decision::WaitUntil(now + Duration::from_micros(70))
        );
        assert_eq!(
            decide(&q, &p, now + Duration::from_micros(70)),
            Decision::Release(1)
        );
    }

    /// Triton's L0_batcher setup: preferred sizes 2 and 6, max_batch_size 8, a long delay.
    fn triton() -> BatchPolicy {
        policy(8, &[2, 6], 10_000_000)
    }

    #[test]
    fn preferred_sizes_go_at_once_and_the_largest_wins() {
        let now = Instant::now();
        assert_eq!(
            decide(&queue(&[(2, 16)], now), &triton(), now),
            Decision::Release(1)
        );
        assert_eq!(
            decide(&queue(&[(6, 16)], now), &triton(), now),
            Decision::Release(1)
        );
        // 1 + 1 is preferred, 1 + 1 + 4 = 6 is too: the larger goes.
        let q = queue(&[(1, 16), (1, 16), (4, 16)], now);
        assert_eq!(decide(&q, &triton(), now), Decision::Release(3));
        // Between preferred sizes, or below them: wait for the delay.
        for rows in [1, 3] {
            let q = queue(&[(rows, 16)], now);
            assert!(matches!(decide(&q, &triton(), now), Decision::WaitUntil(_)));
        }
    }

    #[test]
    fn a_batch_past_the_largest_preferred_size_goes_at_once() {
        // test_static_batch_gt_max_preferred: 7 rows alone, no waiting.
        let now = Instant::now();
        assert_eq!(
            decide(&queue(&[(7, 16)], now), &triton(), now),
            Decision::Release(1)
        );
        // Without preferred sizes, max_batch_size is the one to reach.
        let q = queue(&[(3, 16), (5, 16)], now);
        assert_eq!(decide(&q, &policy(8, &[], 1000), now), Decision::Release(2));
    }

    #[test]
    fn a_pending_batch_goes_when_the_next_request_would_pass_the_largest_preferred_size() {
        // 3 pending, then 4 more would make 7 > 6: the 3 go now, the 4 wait for a batch of
        // their own.
        let now = Instant::now();
        let q = queue(&[(3, 16), (4, 16)], now);
        assert_eq!(decide(&q, &triton(), now), Decision::Release(1));
        // Past max_batch_size as well.
        let q = queue(&[(1, 16), (8, 16)], now);
        assert_eq!(decide(&q, &policy(8, &[], 1000), now), Decision::Release(1));
    }

    #[test]
    fn a_request_of_another_shape_sends_the_pending_batch() {
        // test_multi_batch_different_shape: 1 row of width 16, then 1 of width 8.
        let now = Instant::now();
        let q = queue(&[(1, 16), (1, 8)], now);
        assert_eq!(decide(&q, &triton(), now), Decision::Release(1));
        // Requests are never reordered: a later match does not jump the other shape.
        let q = queue(&[(1, 16), (1, 8), (1, 16)], now);
        assert_eq!(decide(&q, &triton(), now), Decision::Release(1));
    }

    #[test]
    fn purge_drops_the_disconnected_and_answers_the_expired() {
        let now = Instant::now();
        let (tx, rx) = flume::unbounded();
        let mut expired = job(1, 4, Duration::from_millis(5), now);
        expired.deadline = Some(now - Duration::from_millis(1));
        expired.reply = tx;
        let gone = job(1, 4, Duration::ZERO, now); // its receiver was dropped in job()
        let (alive_tx, _alive_rx) = flume::unbounded();
        let mut alive = job(1, 4, Duration::ZERO, now);
        alive.reply = alive_tx;
        let mut q: VecDeque<Job> = [expired, gone, alive].into();
        purge(&mut q, now);
        assert_eq!(q.len(), 1);
        let answer = rx.try_recv().unwrap().unwrap_err();
        assert_eq!(answer.kind, ErrorKind::TimedOut);
        assert!(answer.message.contains("timed out"));
    }
}
