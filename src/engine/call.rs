//! One inference call from arrival to answer, the same whichever door it came through: the
//! model and version resolved, the trace started, the request decoded by its door, run, encoded
//! by its door, counted in the version's statistics, the trace finished. A door supplies only
//! its wire format, as a `Call`.

use std::time::Instant;

use super::pipeline::{counted, Counted};
use super::{Engine, Error, InferRequest, LoadedVersion, Output, ServedModel};

/// The model version a call runs on, resolved by the engine.
pub struct Target<'m> {
    pub model: &'m ServedModel,
    pub version: u64,
    pub loaded: &'m LoadedVersion,
}

/// A transport's names for its trace points: when the request began arriving and when it had
/// been read (with their times), and the point at which the answer starts to be written.
pub struct TracePoints {
    pub received: [(&'static str, Instant); 2],
    pub send_start: &'static str,
}

/// One call in a door's wire format.
pub trait Call {
    /// What decoding keeps for encoding (the wire request's own output choices, its id).
    type Kept<'a>
    where
        Self: 'a;
    type Reply;

    /// The model named and its version (`None`: the newest ready one).
    fn model(&self) -> Result<(&str, Option<&str>), Error>;
    /// The request's size as received, for statistics.
    fn request_bytes(&self) -> usize;
    fn trace_points(&self) -> TracePoints;
    /// The engine's request, once the model is known; `max_elements` bounds each tensor.
    fn decode<'a>(
        &'a self,
        target: &Target<'a>,
        max_elements: u64,
    ) -> Result<(InferRequest<'a>, Self::Kept<'a>), Error>;
    /// The answer in the wire format, and its size in bytes.
    fn encode<'a>(
        &'a self,
        target: &Target<'a>,
        kept: Self::Kept<'a>,
        outputs: Vec<Output<'a>>,
    ) -> Result<(Self::Reply, usize), Error>;
}

impl Engine {
    /// Serves one inference call.
    pub async fn serve<C: Call>(&self, call: &C) -> Result<C::Reply, Error> {
        let (name, version) = call.model()?;
        let model = self.repository.get(name)?;
        let (version, loaded) = model.version(version)?;
        let target = Target {
            model: &model,
            version,
            loaded,
        };
        let points = call.trace_points();
        let mut trace = self.tracer.start(&model.name, version, points.received);
        let reply = counted(loaded, call.request_bytes(), async {
            let (request, kept) = call.decode(&target, self.limits.max_tensor_elements)?;
            let done = self.infer(&model, loaded, request).await?;
            if let Some(trace) = trace.as_mut() {
                trace.executed(&done.timeline);
            }
            let (reply, bytes) = call.encode(&target, kept, done.outputs)?;
            Ok(Counted {
                reply,
                rows: done.rows,
                bytes,
            })
        })
        .await;
        self.tracer.finish(trace, points.send_start);
        reply
    }
}
