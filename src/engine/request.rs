//! A request as every front door hands it to the engine, and what comes back.

use std::borrow::Cow;
use std::time::Duration;

use super::shared_memory::{SharedInput, SharedPlace};
use crate::tensors::Tensor;

#[derive(Debug, Default)]
pub struct InferRequest<'a> {
    pub inputs: Vec<Input<'a>>,
    /// Inputs whose bytes lie in a registered shared-memory region.
    pub shared_inputs: Vec<SharedInput<'a>>,
    /// The outputs to return, in this order; empty: every output, in the model's order.
    pub outputs: Vec<WantedOutput<'a>>,
    /// Longest wait in the model's queue (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Its place in a sequence (Triton's sequence extension).
    pub sequence: SequenceFlags,
}

/// A sequence's id: Triton's correlation id, a number or a string (42 and "42" differ).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CorrelationId {
    Number(u64),
    Text(String),
}

impl std::fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CorrelationId::Number(n) => write!(f, "{n}"),
            CorrelationId::Text(s) => f.write_str(s),
        }
    }
}

/// The request parameters `sequence_id`, `sequence_start` and `sequence_end`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequenceFlags {
    /// `None`: 0 or "" (not in a sequence).
    pub id: Option<CorrelationId>,
    pub start: bool,
    pub end: bool,
}

impl SequenceFlags {
    /// The first of the parameters set, for an error about a model without sequences.
    pub fn first_set(&self) -> Option<&'static str> {
        (self.id.as_ref().map(|_| "sequence_id"))
            .or(self.start.then_some("sequence_start"))
            .or(self.end.then_some("sequence_end"))
    }
}

#[derive(Debug)]
pub struct WantedOutput<'a> {
    pub name: Cow<'a, str>,
    /// Instead of the tensor, its top K classes (Triton's classification extension).
    pub classification: Option<u64>,
    /// Written into this place of a shared-memory region instead of the response.
    pub shared_memory: Option<SharedPlace<'a>>,
}

#[derive(Debug)]
pub struct Input<'a> {
    pub name: Cow<'a, str>,
    pub tensor: Tensor,
}

#[derive(Debug)]
pub struct InferResponse<'m> {
    pub outputs: Vec<Output<'m>>,
    /// The request's rows (its batch size; 1 for a model that does not batch).
    pub rows: u64,
    /// When each stage ran (for traces).
    pub timeline: super::Timeline,
}

#[derive(Debug)]
pub struct Output<'m> {
    /// The model's name for it.
    pub name: &'m str,
    /// Its bytes are empty when it was written to shared memory.
    pub tensor: Tensor,
    /// It was written to the shared-memory place the request named.
    pub in_shared_memory: bool,
}
