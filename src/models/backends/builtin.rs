//! Models written in Rust that need no weights: identity, add_sub, add_sub_string, image_probe
//! and (in
//! `sequence_models`) the stateful models of Triton's sequence examples.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::models::{Model, ModelError, TensorSpec};
use crate::tensors::{push_bytes_element, DataType, Tensor};

/// A built-in model with its declared inputs and outputs.
pub struct Builtin {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub model: Box<dyn Model>,
}

/// The built-in models by the name a config uses.
pub fn builtin(name: &str) -> Option<Builtin> {
    match name {
        "identity" => {
            let any = |name: &str| TensorSpec {
                name: name.to_string(),
                ..TensorSpec::default()
            };
            Some(Builtin {
                inputs: vec![any("INPUT0")],
                outputs: vec![any("OUTPUT0")],
                model: Box::new(Identity),
            })
        }
        "add_sub" => Some(add_sub_like(DataType::Int32, Box::new(AddSub))),
        "add_sub_string" => Some(add_sub_like(DataType::Bytes, Box::new(AddSubString))),
        "image_probe" => {
            // Clients send JPEG/PNG bytes to IMAGE; the decoded tensor comes back as OUTPUT0,
            // showing exactly what a model would receive.
            let spec = |name: &str| TensorSpec {
                layout: Some("NHWC".into()),
                ..TensorSpec::new(name, DataType::Uint8, &[-1, -1, -1, 3])
            };
            Some(Builtin {
                inputs: vec![spec("IMAGE")],
                outputs: vec![spec("OUTPUT0")],
                model: Box::new(Identity),
            })
        }
        other => super::sequence_models::builtin(other),
    }
}

/// Triton's "simple" models: INPUT0, INPUT1 → OUTPUT0, OUTPUT1, all `datatype` [-1, 16].
fn add_sub_like(datatype: DataType, model: Box<dyn Model>) -> Builtin {
    let spec = |name| TensorSpec::new(name, datatype, &[-1, 16]);
    Builtin {
        inputs: vec![spec("INPUT0"), spec("INPUT1")],
        outputs: vec![spec("OUTPUT0"), spec("OUTPUT1")],
        model,
    }
}

pub const BUILTIN_NAMES: &[&str] = &[
    "identity",
    "add_sub",
    "add_sub_string",
    "image_probe",
    "simple_sequence",
    "simple_dyna_sequence",
    "simple_string_dyna_sequence",
];

/// The model, made to take at least `micros` per execution when `micros` > 0 (a test model
/// whose execution time is controlled, for batching tests and benchmarks).
pub fn with_delay(model: Arc<dyn Model>, micros: u64) -> Arc<dyn Model> {
    if micros == 0 {
        return model;
    }
    Arc::new(Delayed {
        inner: model,
        delay: Duration::from_micros(micros),
    })
}

struct Delayed {
    inner: Arc<dyn Model>,
    delay: Duration,
}

impl Model for Delayed {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        std::thread::sleep(self.delay);
        self.inner.execute(inputs)
    }

    /// The delay is paid only when the inner model answers here: otherwise the batcher goes on
    /// to `execute`, which pays it.
    fn execute_many(&self, requests: &[&[Tensor]]) -> Option<Result<Vec<Vec<Tensor>>, ModelError>> {
        let outputs = self.inner.execute_many(requests)?;
        std::thread::sleep(self.delay);
        Some(outputs)
    }
}

/// OUTPUT0 is INPUT0: the same bytes, not a copy of them.
struct Identity;

impl Model for Identity {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        Ok(inputs.to_vec())
    }

    /// Each request's output is its own input buffer: a batch needs no gathering.
    fn execute_many(&self, requests: &[&[Tensor]]) -> Option<Result<Vec<Vec<Tensor>>, ModelError>> {
        Some(Ok(requests.iter().map(|inputs| inputs.to_vec()).collect()))
    }
}

/// Triton's "simple" model: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1 (INT32, wrapping).
struct AddSub;

impl Model for AddSub {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let (a, b) = operands(inputs)?;
        let mut sum = Vec::with_capacity(a.data.len());
        let mut diff = Vec::with_capacity(a.data.len());
        for (x, y) in a.data.chunks_exact(4).zip(b.data.chunks_exact(4)) {
            let x = i32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            let y = i32::from_le_bytes([y[0], y[1], y[2], y[3]]);
            sum.extend_from_slice(&x.wrapping_add(y).to_le_bytes());
            diff.extend_from_slice(&x.wrapping_sub(y).to_le_bytes());
        }
        Ok(results(a, sum, diff))
    }

    /// Element-wise: each request is computed where it lies, without gathering.
    fn execute_many(&self, requests: &[&[Tensor]]) -> Option<Result<Vec<Vec<Tensor>>, ModelError>> {
        Some(requests.iter().map(|inputs| self.execute(inputs)).collect())
    }
}

/// The two inputs of an add/sub model, which must share a shape.
fn operands(inputs: &[Tensor]) -> Result<(&Tensor, &Tensor), ModelError> {
    let [a, b] = inputs else {
        return Err(ModelError::internal("add/sub models take two inputs"));
    };
    if a.shape != b.shape {
        return Err(ModelError::invalid(format!(
            "INPUT0 shape {:?} and INPUT1 shape {:?} differ",
            a.shape, b.shape
        )));
    }
    Ok((a, b))
}

/// OUTPUT0 (the sum) and OUTPUT1 (the difference), of the inputs' datatype and shape.
fn results(like: &Tensor, sum: Vec<u8>, diff: Vec<u8>) -> Vec<Tensor> {
    let output = |data: Vec<u8>| Tensor {
        datatype: like.datatype,
        shape: like.shape.clone(),
        data: Bytes::from(data),
    };
    vec![output(sum), output(diff)]
}

/// Triton's "simple_string" model: add_sub on INT32 values written as decimal strings (BYTES),
/// answering decimal strings.
struct AddSubString;

impl Model for AddSubString {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let (a, b) = operands(inputs)?;
        let number = |element: &[u8]| {
            std::str::from_utf8(element)
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .ok_or_else(|| {
                    let shown = String::from_utf8_lossy(element);
                    ModelError::invalid(format!("'{shown}' is not a decimal INT32"))
                })
        };
        let (mut sum, mut diff) = (Vec::new(), Vec::new());
        for (x, y) in a.bytes_elements().zip(b.bytes_elements()) {
            let (x, y) = (number(x)?, number(y)?);
            let mut text = itoa::Buffer::new();
            push_bytes_element(&mut sum, text.format(x.wrapping_add(y)).as_bytes())
                .map_err(|e| ModelError::internal(e.to_string()))?;
            push_bytes_element(&mut diff, text.format(x.wrapping_sub(y)).as_bytes())
                .map_err(|e| ModelError::internal(e.to_string()))?;
        }
        Ok(results(a, sum, diff))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row of `count` elements.
    fn row(datatype: DataType, count: usize, data: Vec<u8>) -> Tensor {
        Tensor::new(datatype, vec![1, count as u64], Bytes::from(data), 100).unwrap()
    }

    fn int32(values: &[i32]) -> Tensor {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        row(DataType::Int32, values.len(), data)
    }

    #[test]
    fn add_sub_computes_both_outputs() {
        let model = builtin("add_sub").unwrap();
        let out = model
            .model
            .execute(&[int32(&[1, 2, i32::MAX]), int32(&[10, -20, 1])])
            .unwrap();
        assert_eq!(
            out,
            vec![int32(&[11, -18, i32::MIN]), int32(&[-9, 22, i32::MAX - 1])]
        );
    }

    #[test]
    fn add_sub_string_computes_on_decimal_strings() {
        let strings = |values: &[&str]| {
            let mut data = Vec::new();
            for v in values {
                push_bytes_element(&mut data, v.as_bytes()).unwrap();
            }
            row(DataType::Bytes, values.len(), data)
        };
        let model = builtin("add_sub_string").unwrap().model;
        let out = model
            .execute(&[strings(&["1", "-2"]), strings(&["10", "3"])])
            .unwrap();
        assert_eq!(out, vec![strings(&["11", "1"]), strings(&["-9", "-5"])]);
        let err = model
            .execute(&[strings(&["x"]), strings(&["1"])])
            .unwrap_err();
        assert!(err.message.contains("'x' is not a decimal INT32"));
    }

    #[test]
    fn a_delayed_model_pays_its_delay_once_per_execution() {
        /// A model without `execute_many`: the batcher gathers and calls `execute`.
        struct Plain;
        impl Model for Plain {
            fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
                Ok(inputs.to_vec())
            }
        }
        let delay = Duration::from_millis(200);
        let plain = with_delay(Arc::new(Plain), delay.as_micros() as u64);
        let started = std::time::Instant::now();
        assert!(plain.execute_many(&[]).is_none());
        assert!(started.elapsed() < delay, "no delay without an answer");
        let identity = with_delay(
            Arc::from(builtin("identity").unwrap().model),
            delay.as_micros() as u64,
        );
        let started = std::time::Instant::now();
        assert!(identity.execute_many(&[]).is_some());
        assert!(started.elapsed() >= delay);
    }

    #[test]
    fn identity_returns_the_same_buffer() {
        let model = builtin("identity").unwrap();
        let input = int32(&[7, 8]);
        let out = model.model.execute(std::slice::from_ref(&input)).unwrap();
        assert_eq!(out[0].data.as_ptr(), input.data.as_ptr());
    }
}
