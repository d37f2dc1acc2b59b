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

/// What a call says before it is decoded: the model it names and the version (`None`: the
/// newest ready one), its size as received (for statistics), and its trace points.
pub struct Arrival<'a> {
    pub model: &'a str,
    pub version: Option<&'a str>,
    pub bytes: usize,
    pub trace: TracePoints,
}

/// One call in a door's wire format.
pub trait Call {
    /// What decoding keeps for encoding (the wire request's own output choices, its id).
    type Kept<'a>
    where
        Self: 'a;
    type Reply;

    fn arrival(&self) -> Arrival<'_>;
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
        let arrival = call.arrival();
        let model = self.repository.get(arrival.model)?;
        let (version, loaded) = model.version(arrival.version)?;
        let target = Target {
            model: &model,
            version,
            loaded,
        };
        let points = arrival.trace;
        let mut trace = self.tracer.start(&model.name, version, points.received);
        let reply = counted(loaded, arrival.bytes, async {
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
