//! The engine: what every front door shares once it has translated a request from its wire
//! format. It knows no HTTP. It owns the model repository (each version wired to its executor),
//! runs the pipeline (images, input checks, the model's queue, output selection), counts
//! statistics, and keeps blocking work off the io threads.

pub mod batching;
mod call;
mod classify;
mod ensemble;
mod error;
mod offthread;
mod parameters;
mod pipeline;
mod repository;
mod request;
mod served;
mod shared_memory;
mod trace;
mod trace_file;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use call::{Arrival, Call, Target, TracePoints};
pub use error::{Error, ErrorKind};
pub use parameters::{Known, ParamValue, Parameters, FINAL_RESPONSE, V2_GRPC, V2_REST};
pub use repository::{IndexEntry, ModelControl, Options, Overrides, Repository};
pub use request::{
    CorrelationId, InferRequest, InferResponse, Input, Output, SequenceFlags, WantedOutput,
};
pub use served::{LoadedVersion, ModelVersion, ServedModel};
pub use shared_memory::{
    RegionStatus, SharedInput, SharedMemory, SharedPlace, PARAMETERS as SHARED_MEMORY_PARAMETERS,
};
pub use trace::{Timeline, TraceFile, Tracer};

/// A model, and which of its loaded versions a statistics request covers.
pub type StatisticsOf = (Arc<ServedModel>, Vec<u64>);

/// What one request may claim.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_tensor_elements: u64,
    /// Pixels per image, and of all the images of one input, read from their headers.
    pub max_image_pixels: u64,
    pub max_request_pixels: u64,
}

pub struct Engine {
    repository: Arc<Repository>,
    limits: Limits,
    /// Triton's strict readiness: ready only while every model that should be loaded is.
    strict_readiness: bool,
    draining: AtomicBool,
    tracer: Tracer,
    shared_memory: SharedMemory,
}

/// Triton's words for a load or unload outside explicit mode (whatever the mode).
const NO_MODEL_CONTROL: &str = "explicit model load / unload is not allowed if polling is enabled";

impl Engine {
    pub fn new(
        repository: Repository,
        limits: Limits,
        strict_readiness: bool,
        tracer: Tracer,
        shared_memory: SharedMemory,
    ) -> Engine {
        Engine {
            repository: Arc::new(repository),
            limits,
            strict_readiness,
            draining: AtomicBool::new(false),
            tracer,
            shared_memory,
        }
    }

    /// The shared-memory regions clients registered.
    pub fn shared_memory(&self) -> &SharedMemory {
        &self.shared_memory
    }

    /// Poll mode: rescans the repository every `period` on a thread of its own.
    pub fn start_polling(&self, period: std::time::Duration) -> std::io::Result<()> {
        let repository = self.repository.clone();
        std::thread::Builder::new()
            .name("tensord-poll".into())
            .spawn(move || loop {
                std::thread::sleep(period);
                repository.poll();
            })
            .map(drop)
    }

    /// Trace settings and the traces of sampled requests.
    pub fn tracer(&self) -> &Tracer {
        &self.tracer
    }

    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// The model named (loaded or not: it says why not).
    pub fn model(&self, name: &str) -> Result<Arc<ServedModel>, Error> {
        self.repository.get(name)
    }

    /// Every model of the repository, and each version it serves.
    pub fn index(&self) -> Result<Vec<IndexEntry>, Error> {
        self.repository.index().map_err(Error::internal)
    }

    /// What one input's images may cost.
    fn image_budget(&self) -> crate::images::Budget {
        crate::images::Budget {
            max_elements: self.limits.max_tensor_elements,
            max_image_pixels: self.limits.max_image_pixels,
            max_request_pixels: self.limits.max_request_pixels,
        }
    }

    /// From now on the server reports not ready (it is shutting down).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// (ready models, all models), for status lines.
    pub fn models_ready(&self) -> (usize, usize) {
        let models = self.repository.models();
        (models.iter().filter(|m| m.is_ready()).count(), models.len())
    }

    pub fn is_ready(&self) -> bool {
        !self.is_draining() && (!self.strict_readiness || self.repository.all_ready())
    }

    /// The models whose statistics a request asks for: one model (`name`), or every one; each
    /// with its loaded versions, or only `version` when named.
    pub fn statistics(
        &self,
        name: Option<&str>,
        version: Option<&str>,
    ) -> Result<Vec<StatisticsOf>, Error> {
        let models = match name {
            Some(name) => vec![self.repository.get(name)?],
            None => self.repository.models(),
        };
        let wanted = match (version, models.first()) {
            (Some(v), Some(model)) => Some(model.version(Some(v))?.0),
            _ => None,
        };
        Ok(models
            .into_iter()
            .map(|model| {
                let versions = model
                    .loaded()
                    .map(|(v, _)| v)
                    .filter(|v| wanted.is_none_or(|w| w == *v))
                    .collect();
                (model, versions)
            })
            .collect())
    }

    /// (Re)loads a model from disk, or from what the request carries, on a thread of its own
    /// while the caller awaits it.
    /// Explicit mode only.
    pub async fn load(&self, name: &str, overrides: Overrides) -> Result<(), Error> {
        self.model_control()?;
        let (repository, name) = (self.repository.clone(), name.to_string());
        offthread::on_loader_thread("model loader", move || repository.load(&name, overrides))
            .await?
            .map_err(Error::invalid)
    }

    /// Stops serving a model (explicit mode only), and with `dependents` the models an
    /// ensemble composes; requests already running finish on them.
    pub fn unload(&self, name: &str, dependents: bool) -> Result<(), Error> {
        self.model_control()?;
        self.repository.unload(name, dependents)
    }

    fn model_control(&self) -> Result<(), Error> {
        match self.repository.control() {
            ModelControl::Explicit => Ok(()),
            ModelControl::None | ModelControl::Poll => Err(Error::not_ready(NO_MODEL_CONTROL)),
        }
    }
}
