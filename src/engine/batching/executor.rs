//! Where a model runs: inline for the trivial built-ins, otherwise through its queue to worker
//! threads of its own, so that a model's compute never stalls an io thread's event loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::scheduler::{run_model, run_worker, timed_out, BatchPolicy, Job, Queue};
use super::sequence::{run_sequence_worker, Sequencer};
use super::stats::{ModelStats, Phases};
use crate::engine::{Error, ErrorKind, SequenceFlags, Timeline};
use crate::models::Model;
use crate::tensors::Tensor;

pub struct Executor {
    stats: Arc<ModelStats>,
    placement: Placement,
}

enum Placement {
    /// Runs on the caller's thread: only for models that cost less than a hand-off.
    Inline(Arc<dyn Model>),
    Queued {
        queue: Arc<Queue>,
        batching: bool,
    },
    /// Through the sequence batcher (stateful models).
    Sequenced(Arc<Sequencer>),
    /// An ensemble: the engine runs its steps on their models; only its statistics are here.
    Steps,
}

impl Executor {
    pub fn inline(model: Arc<dyn Model>) -> Executor {
        Executor {
            stats: Arc::default(),
            placement: Placement::Inline(model),
        }
    }

    /// An ensemble's: statistics, no model.
    pub fn steps() -> Executor {
        Executor {
            stats: Arc::default(),
            placement: Placement::Steps,
        }
    }

    /// Starts `instances` workers on the model's queue; they stop when the executor drops.
    pub fn queued(
        model: Arc<dyn Model>,
        policy: BatchPolicy,
        instances: usize,
        max_queue_size: usize,
        name: &str,
    ) -> Result<Executor, String> {
        let stats = Arc::new(ModelStats::default());
        let batching = policy.max_batch_size > 0;
        let queue = Arc::new(Queue::new(policy, max_queue_size));
        let workers = (queue.clone(), stats.clone());
        start_workers(instances, name, move |_| {
            let (model, queue, stats) = (model.clone(), workers.0.clone(), workers.1.clone());
            move || run_worker(model, queue, stats)
        })
        .inspect_err(|_| queue.close())?;
        Ok(Executor {
            stats,
            placement: Placement::Queued { queue, batching },
        })
    }

    /// Starts `instances` workers on the model's sequence batcher.
    pub fn sequenced(
        model: Arc<dyn Model>,
        sequencer: Sequencer,
        instances: usize,
        name: &str,
    ) -> Result<Executor, String> {
        let stats = Arc::new(ModelStats::default());
        let sequencer = Arc::new(sequencer);
        let workers = (sequencer.clone(), stats.clone());
        start_workers(instances, name, move |instance| {
            let (model, sequencer, stats) = (model.clone(), workers.0.clone(), workers.1.clone());
            move || run_sequence_worker(model, sequencer, stats, instance)
        })
        .inspect_err(|_| sequencer.close())?;
        Ok(Executor {
            stats,
            placement: Placement::Sequenced(sequencer),
        })
    }

    /// The sequence batcher, for a stateful model.
    pub fn sequencer(&self) -> Option<&Sequencer> {
        match &self.placement {
            Placement::Sequenced(sequencer) => Some(sequencer),
            _ => None,
        }
    }

    pub fn stats(&self) -> &ModelStats {
        &self.stats
    }

    /// Requests waiting in the queue (for metrics; takes the queue's lock).
    pub fn pending(&self) -> usize {
        match &self.placement {
            Placement::Inline(_) | Placement::Steps => 0,
            Placement::Queued { queue, .. } => queue.len(),
            Placement::Sequenced(sequencer) => sequencer.pending(),
        }
    }

    /// Runs the model on `inputs`; an io thread awaits the answer without blocking. A request
    /// whose future is dropped before it runs (its client went away) is dropped from the queue.
    pub async fn execute(
        &self,
        inputs: Vec<Tensor>,
        timeout: Option<Duration>,
        sequence: &SequenceFlags,
    ) -> Result<(Vec<Tensor>, Timeline), Error> {
        let stopped = |_| Error::internal("the model's worker stopped");
        match &self.placement {
            Placement::Sequenced(sequencer) => {
                let (reply, answer) = flume::bounded(1);
                sequencer.push(
                    Job::new(inputs, sequencer.batching(), timeout, reply),
                    sequence,
                )?;
                answer.recv_async().await.map_err(stopped)?
            }
            Placement::Steps => Err(Error::internal("an ensemble runs its steps, not a model")),
            Placement::Inline(model) => {
                let started = Instant::now();
                let rows = super::rows(&inputs);
                let outputs = run_model(&**model, &inputs);
                let ended = Instant::now();
                let phases = Phases {
                    infer: ended - started,
                    ..Phases::default()
                };
                // It never waits, but it was queued for zero time: perf_analyzer and Triton's
                // statistics readers expect every model to count its queue.
                self.stats.record_queued(Duration::ZERO);
                self.stats.record_execution(rows, 1, phases);
                let timeline = Timeline {
                    queue_start: started,
                    compute_start: started,
                    compute_input_end: started,
                    compute_output_start: ended,
                    compute_end: ended,
                };
                outputs.map(|outputs| (outputs, timeline))
            }
            Placement::Queued { queue, batching } => {
                let (reply, answer) = flume::bounded(1);
                let job = Job::new(inputs, *batching, timeout, reply);
                let (id, deadline) = (job.id, job.deadline);
                queue
                    .push(job)
                    .map_err(|_| Error::new(ErrorKind::Overloaded, "the model's queue is full"))?;
                let Some(deadline) = deadline else {
                    return answer.recv_async().await.map_err(stopped)?;
                };
                // The timeout bounds the time in the queue: at the deadline, a request no worker
                // has taken yet leaves the queue and times out; one already taken runs to its end.
                let mut answered = std::pin::pin!(answer.recv_async());
                let wait = deadline.saturating_duration_since(Instant::now());
                monoio::select! {
                    result = &mut answered => return result.map_err(stopped)?,
                    () = monoio::time::sleep(wait) => {}
                }
                if let Some(waited) = queue.expire(id, Instant::now().max(deadline)) {
                    return Err(timed_out(waited));
                }
                answered.await.map_err(stopped)?
            }
        }
    }
}

/// Starts `count` threads named after the model, each running the work `worker(i)` makes.
fn start_workers<W: FnOnce() + Send + 'static>(
    count: usize,
    name: &str,
    worker: impl Fn(usize) -> W,
) -> Result<(), String> {
    for i in 0..count {
        let work = worker(i);
        std::thread::Builder::new()
            .name(format!("model-{name}-{i}"))
            .spawn(move || {
                precise_timers();
                work()
            })
            .map_err(|e| format!("cannot start a worker thread for model '{name}': {e}"))?;
    }
    Ok(())
}

/// Linux lets a sleeping thread's timer fire up to its timer slack (50 µs by default) late, so
/// that wake-ups can be grouped. A lone request under a batch delay of 100 µs then waited
/// 165 µs in the queue (mean of 300); with a slack of 1 ns, 117 µs (the rest is the wake-up).
fn precise_timers() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        match &self.placement {
            Placement::Queued { queue, .. } => queue.close(),
            Placement::Sequenced(sequencer) => sequencer.close(),
            Placement::Inline(_) | Placement::Steps => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    use crate::tensors::DataType;

    impl Executor {
        async fn execute_plain(
            &self,
            inputs: Vec<Tensor>,
            timeout: Option<Duration>,
        ) -> Result<(Vec<Tensor>, Timeline), Error> {
            self.execute(inputs, timeout, &SequenceFlags::default())
                .await
        }
    }

    /// Returns its input; panics on an empty batch; records the batch sizes it saw.
    struct Echo(std::sync::Mutex<Vec<u64>>);

    impl Model for Echo {
        fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, crate::models::ModelError> {
            let rows = inputs[0].shape[0];
            if rows == 0 {
                panic!("empty");
            }
            self.0.lock().unwrap().push(rows);
            std::thread::sleep(Duration::from_millis(20));
            Ok(inputs.to_vec())
        }
    }

    fn block_on(work: impl std::future::Future<Output = ()>) {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(work);
    }

    fn rows(n: u64, value: u8) -> Tensor {
        Tensor::new(
            DataType::Uint8,
            vec![n, 2],
            vec![value; 2 * n as usize].into(),
            100,
        )
        .unwrap()
    }

    #[test]
    fn concurrent_requests_share_a_batch_and_get_their_own_rows() {
        let model = Arc::new(Echo(Default::default()));
        let policy = BatchPolicy {
            max_batch_size: 8,
            preferred: vec![],
            max_delay: Duration::ZERO,
        };
        let exec = Executor::queued(model.clone(), policy, 1, 0, "t").unwrap();
        block_on(async {
            // The first request occupies the worker; the next three queue and run as one batch.
            let first = exec.execute_plain(vec![rows(1, 1)], None);
            let rest = async {
                monoio::time::sleep(Duration::from_millis(5)).await;
                monoio::join!(
                    exec.execute_plain(vec![rows(2, 2)], None),
                    exec.execute_plain(vec![rows(1, 3)], None),
                    exec.execute_plain(vec![rows(3, 4)], None),
                )
            };
            let (a, (b, c, d)) = monoio::join!(first, rest);
            assert_eq!(a.unwrap().0, vec![rows(1, 1)]);
            assert_eq!(b.unwrap().0, vec![rows(2, 2)]);
            assert_eq!(c.unwrap().0, vec![rows(1, 3)]);
            assert_eq!(d.unwrap().0, vec![rows(3, 4)]);
            let err = exec
                .execute_plain(vec![rows(0, 0)], None)
                .await
                .unwrap_err();
            assert_eq!(err.message, "the model panicked");
        });
        assert_eq!(*model.0.lock().unwrap(), vec![1, 6]);
        assert_eq!(exec.stats().execution_count.load(Ordering::Relaxed), 2);
        let batches = exec.stats().batch_stats();
        assert_eq!(
            batches.iter().map(|b| (b.0, b.1)).collect::<Vec<_>>(),
            vec![(1, 1), (6, 1)]
        );
        assert_eq!(exec.stats().queue.get().0, 5);
    }

    #[test]
    fn a_full_queue_refuses_and_timeouts_expire() {
        let model = Arc::new(Echo(Default::default()));
        let policy = BatchPolicy {
            max_batch_size: 0,
            preferred: vec![],
            max_delay: Duration::ZERO,
        };
        let exec = Executor::queued(model, policy, 1, 1, "t").unwrap();
        block_on(async {
            // The first request runs; the second waits (and expires); the third finds the queue full.
            let first = exec.execute_plain(vec![rows(1, 1)], None);
            let rest = async {
                monoio::time::sleep(Duration::from_millis(5)).await;
                monoio::join!(
                    exec.execute_plain(vec![rows(1, 2)], Some(Duration::from_millis(1))),
                    exec.execute_plain(vec![rows(1, 3)], None),
                )
            };
            let (a, (b, c)) = monoio::join!(first, rest);
            assert!(a.is_ok());
            assert_eq!(b.unwrap_err().kind, ErrorKind::TimedOut);
            assert_eq!(c.unwrap_err().kind, ErrorKind::Overloaded);
        });
    }
}
