//! A request as every front door hands it to the engine, and what comes back.

use std::borrow::Cow;
use std::time::Duration;

use crate::tensors::Tensor;

#[derive(Debug, Default)]
pub struct InferRequest<'a> {
    pub inputs: Vec<Input<'a>>,
    /// The outputs to return, in this order; empty: every output, in the model's order.
    pub outputs: Vec<WantedOutput<'a>>,
    /// Longest wait in the model's queue (`None`: no limit).
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
pub struct WantedOutput<'a> {
    pub name: Cow<'a, str>,
    /// Instead of the tensor, its top K classes (Triton's classification extension).
    pub classification: Option<u64>,
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
    pub tensor: Tensor,
}
