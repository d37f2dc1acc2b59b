//! The model interface every backend implements and the batcher drives.

use std::fmt;

use crate::images::{ImageOptions, ImageTarget};
use crate::tensors::{DataType, Tensor};

/// What a model says about one of its inputs or outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    /// `None`: any datatype is accepted (the identity model).
    pub datatype: Option<DataType>,
    /// Dimensions, -1 for a variable one; `None`: any rank.
    pub dims: Option<Vec<i64>>,
    /// Inclusive bounds of range dimensions (one entry per dim), or empty when there are none.
    pub ranges: Vec<Option<(u64, u64)>>,
    /// "NHWC" or "NCHW" for image inputs (default NHWC).
    pub layout: Option<String>,
    /// How JPEG/PNG images sent to this input are turned into its tensor.
    pub image: ImageOptions,
    /// The file (in the model folder) of this output's class labels, one per line.
    pub label_filename: Option<String>,
    /// The shape the model sees, without the batch dimension, where it is not `dims` (Triton's
    /// `reshape`): inputs are reshaped to it before the model runs, outputs from it after.
    pub reshape: Option<Vec<i64>>,
}

impl TensorSpec {
    /// The dimensions the model itself has: `dims`, or the reshape with the batch dimension
    /// (when `dims` has one, `batching`) in front.
    pub fn model_dims(&self, batching: bool) -> Option<Vec<i64>> {
        match &self.reshape {
            None => self.dims.clone(),
            Some(shape) => Some(
                batching
                    .then_some(-1)
                    .into_iter()
                    .chain(shape.iter().copied())
                    .collect(),
            ),
        }
    }

    pub fn new(name: &str, datatype: DataType, dims: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.to_string(),
            datatype: Some(datatype),
            dims: Some(dims.to_vec()),
            ..TensorSpec::default()
        }
    }

    /// Where JPEG/PNG images go when a client sends them to this input.
    pub fn image_target(&self) -> Option<ImageTarget> {
        ImageTarget::of(
            self.datatype?,
            self.dims.as_deref()?,
            &self.ranges,
            self.layout.as_deref(),
            &self.image,
        )
    }

    /// Whether a tensor of `datatype` and `shape` may be fed to this input.
    pub fn check(&self, datatype: DataType, shape: &[u64]) -> Result<(), ModelError> {
        if let Some(want) = self.datatype.filter(|&want| want != datatype) {
            return Err(ModelError::invalid(format!(
                "input '{}' has datatype {datatype}, the model expects {want}",
                self.name
            )));
        }
        let Some(dims) = &self.dims else {
            return Ok(());
        };
        let in_range = |d: usize, got: u64| {
            self.ranges
                .get(d)
                .copied()
                .flatten()
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&got))
        };
        let fits = dims.len() == shape.len()
            && dims
                .iter()
                .zip(shape)
                .enumerate()
                .all(|(d, (&want, &got))| (want < 0 || want as u64 == got) && in_range(d, got));
        if !fits {
            let expected: Vec<String> = dims
                .iter()
                .enumerate()
                .map(|(d, want)| match self.ranges.get(d).copied().flatten() {
                    Some((lo, hi)) => format!("{lo}:{hi}"),
                    None => want.to_string(),
                })
                .collect();
            return Err(ModelError::invalid(format!(
                "input '{}' has shape {shape:?}, the model expects [{}]",
                self.name,
                expected.join(", ")
            )));
        }
        Ok(())
    }
}

/// A loaded, runnable model. `execute` gets one tensor per declared input, in declaration
/// order and already checked against the specs, and returns one per declared output.
/// It is synchronous: callers decide on which thread it runs.
pub trait Model: Send + Sync {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError>;

    /// Runs several requests (each its inputs) taken from the queue together. `None` (the
    /// default): the batcher gathers them into one batch tensor per input, calls `execute` once
    /// and hands each request its rows. Models that gain nothing from a contiguous batch
    /// (identity, element-wise built-ins) answer here instead and skip the gather copy.
    fn execute_many(
        &self,
        _requests: &[&[Tensor]],
    ) -> Option<Result<Vec<Vec<Tensor>>, ModelError>> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelErrorKind {
    /// The inputs are wrong in a way the specs could not tell (400).
    InvalidInput,
    /// The model failed (500).
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelError {
    pub kind: ModelErrorKind,
    pub message: String,
}

impl ModelError {
    pub fn invalid(message: impl Into<String>) -> ModelError {
        ModelError {
            kind: ModelErrorKind::InvalidInput,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> ModelError {
        ModelError {
            kind: ModelErrorKind::Internal,
            message: message.into(),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_check_datatype_rank_and_fixed_dims() {
        let spec = TensorSpec::new("INPUT0", DataType::Int32, &[-1, 16]);
        assert!(spec.check(DataType::Int32, &[4, 16]).is_ok());
        assert!(spec.check(DataType::Int32, &[0, 16]).is_ok());
        for (dt, shape) in [
            (DataType::Fp32, &[1u64, 16][..]),
            (DataType::Int32, &[1, 15]),
            (DataType::Int32, &[16]),
            (DataType::Int32, &[1, 16, 1]),
        ] {
            let err = spec.check(dt, shape).unwrap_err();
            assert_eq!(err.kind, ModelErrorKind::InvalidInput);
            assert!(err.message.contains("INPUT0"), "{err}");
        }
        let any = TensorSpec {
            name: "x".into(),
            ..TensorSpec::default()
        };
        assert!(any.check(DataType::Bytes, &[2, 3, 4]).is_ok());
    }
}
