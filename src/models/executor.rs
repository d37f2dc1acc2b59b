//! Where a model runs: inline for the trivial built-ins, otherwise on worker threads of its own,
//! so that a model's compute never stalls an io thread's event loop.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::{Model, ModelError};
use crate::tensors::Tensor;

type Reply = flume::Sender<Result<Vec<Tensor>, ModelError>>;

pub enum Executor {
    /// Runs on the caller's thread: only for models that cost less than a hand-off.
    Inline(Arc<dyn Model>),
    /// Jobs go to `instances` worker threads; they exit when the executor is dropped.
    Workers(flume::Sender<(Vec<Tensor>, Reply)>),
}

impl Executor {
    pub fn workers(
        model: Arc<dyn Model>,
        instances: usize,
        name: &str,
    ) -> Result<Executor, String> {
        let (jobs, queue) = flume::unbounded::<(Vec<Tensor>, Reply)>();
        for i in 0..instances {
            let (model, queue) = (model.clone(), queue.clone());
            std::thread::Builder::new()
                .name(format!("model-{name}-{i}"))
                .spawn(move || {
                    while let Ok((inputs, reply)) = queue.recv() {
                        let _ = reply.send(run(&*model, &inputs));
                    }
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
        }
        Ok(Executor::Workers(jobs))
    }

    /// Runs the model; an io thread awaits the answer without blocking.
    pub async fn execute(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, ModelError> {
        match self {
            Executor::Inline(model) => run(&**model, &inputs),
            Executor::Workers(jobs) => {
                let (reply, answer) = flume::bounded(1);
                jobs.send((inputs, reply))
                    .map_err(|_| ModelError::internal("the model's workers have stopped"))?;
                answer
                    .recv_async()
                    .await
                    .map_err(|_| ModelError::internal("the model's worker stopped"))?
            }
        }
    }
}

/// A panicking model fails its request, not the thread it runs on.
fn run(model: &dyn Model, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
    catch_unwind(AssertUnwindSafe(|| model.execute(inputs)))
        .unwrap_or_else(|_| Err(ModelError::internal("the model panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Doubler;

    impl Model for Doubler {
        fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
            if inputs.is_empty() {
                panic!("no inputs");
            }
            Ok(vec![inputs[0].clone(), inputs[0].clone()])
        }
    }

    #[test]
    fn workers_answer_and_survive_panics() {
        let exec = Executor::workers(Arc::new(Doubler), 2, "t").unwrap();
        let input = Tensor::new(
            crate::tensors::DataType::Uint8,
            vec![1],
            bytes::Bytes::from_static(&[9]),
            1,
        )
        .unwrap();
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        rt.block_on(async {
            assert_eq!(exec.execute(vec![input.clone()]).await.unwrap().len(), 2);
            let err = exec.execute(vec![]).await.unwrap_err();
            assert_eq!(err.message, "the model panicked");
            assert_eq!(exec.execute(vec![input]).await.unwrap().len(), 2);
        });
    }
}
