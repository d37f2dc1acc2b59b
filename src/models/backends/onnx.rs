//! ONNX graphs evaluated by candle-onnx, with tensord's rewrites for the operators it lacks.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device};
use candle_onnx::onnx::tensor_shape_proto::dimension::Value as Dim;
use candle_onnx::onnx::type_proto::Value as TypeValue;
use candle_onnx::onnx::{ModelProto, ValueInfoProto};

use super::onnx_rewrite::rewrite;
use crate::models::candle_io::{candle_message, from_candle, to_candle};
use crate::models::{Model, ModelError, TensorSpec};
use crate::tensors::DataType;

pub struct OnnxModel {
    proto: ModelProto,
    /// Initializers converted once at load, not on every evaluation.
    weights: HashMap<String, candle_core::Tensor>,
    inputs: Vec<String>,
    outputs: Vec<(String, DataType)>,
    /// Inputs handed to candle-onnx in a wider dtype than the graph declares.
    widened: HashMap<String, DType>,
    device: Device,
}

/// The ONNX element type and candle dtype an input of `elem_type` is widened to, if it must be.
fn widening(elem_type: i32) -> Option<(i32, DType)> {
    match elem_type {
        5 | 6 => Some((7, DType::I64)),
        16 => Some((1, DType::F32)),
        _ => None,
    }
}

/// The graph's own description of a tensor.
fn spec_of(value: &ValueInfoProto) -> Result<TensorSpec, String> {
    let Some(TypeValue::TensorType(tensor)) = value.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("graph value '{}' is not a tensor", value.name));
    };
    let datatype = onnx_datatype(tensor.elem_type).ok_or_else(|| {
        format!(
            "graph value '{}' has unsupported element type {}",
            value.name, tensor.elem_type
        )
    })?;
    let dims = tensor.shape.as_ref().map(|shape| {
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Dim::DimValue(v)) if v >= 0 => v,
                _ => -1,
            })
            .collect()
    });
    Ok(TensorSpec {
        name: value.name.clone(),
        datatype: Some(datatype),
        dims,
        ..TensorSpec::default()
    })
}

/// ONNX TensorProto.DataType → V2 datatype.
fn onnx_datatype(elem_type: i32) -> Option<DataType> {
    Some(match elem_type {
        1 => DataType::Fp32,
        2 => DataType::Uint8,
        3 => DataType::Int8,
        4 => DataType::Uint16,
        5 => DataType::Int16,
        6 => DataType::Int32,
        7 => DataType::Int64,
        8 => DataType::Bytes,
        9 => DataType::Bool,
        10 => DataType::Fp16,
        11 => DataType::Fp64,
        12 => DataType::Uint32,
        13 => DataType::Uint64,
        16 => DataType::Bf16,
        _ => return None,
    })
}

/// Loads a graph; returns it with its input and output specs as the graph declares them.
pub fn load(
    path: &Path,
    device: &Device,
) -> Result<(OnnxModel, Vec<TensorSpec>, Vec<TensorSpec>), String> {
    if !device.is_cpu() {
        return Err(
            "the onnx backend runs on the CPU only (candle-onnx builds constants on the CPU)"
                .into(),
        );
    }
    let mut proto = candle_onnx::read_file(path)
        .map_err(|e| format!("{}: {}", path.display(), candle_message(&e)))?;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| format!("{}: no graph", path.display()))?;
    rewrite(graph).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut weights = HashMap::with_capacity(graph.initializer.len());
    for init in std::mem::take(&mut graph.initializer) {
        let tensor = candle_onnx::eval::get_tensor(&init, &init.name).map_err(|e| {
            format!(
                "{}: initializer '{}': {}",
                path.display(),
                init.name,
                candle_message(&e)
            )
        })?;
        weights.insert(init.name, tensor);
    }
    // Older IR versions list initializers among the inputs; those are not the caller's to give.
    let inputs: Vec<TensorSpec> = graph
        .input
        .iter()
        .filter(|i| !weights.contains_key(&i.name))
        .map(spec_of)
        .collect::<Result<_, _>>()?;
    let outputs: Vec<TensorSpec> = graph.output.iter().map(spec_of).collect::<Result<_, _>>()?;
    let widened = adapt_inputs(graph);
    let model = OnnxModel {
        proto,
        weights,
        inputs: inputs.iter().map(|s| s.name.clone()).collect(),
        outputs: outputs
            .iter()
            .map(|s| (s.name.clone(), s.datatype.unwrap_or(DataType::Fp32)))
            .collect(),
        widened,
        device: device.clone(),
    };
    Ok((model, inputs, outputs))
}

/// Adjusts the graph's inputs to what candle-onnx checks:
/// - exporters write -1 for a free dimension, which candle-onnx compares with the real size;
/// - candle-onnx takes no INT32/INT16/BF16 inputs (it computes int32 initializers as int64),
///   so such inputs are declared wider; returns them, to be widened on the way in.
fn adapt_inputs(graph: &mut candle_onnx::onnx::GraphProto) -> HashMap<String, DType> {
    let mut widened = HashMap::new();
    for input in &mut graph.input {
        let Some(TypeValue::TensorType(t)) = input.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            continue;
        };
        if let Some((elem_type, dtype)) = widening(t.elem_type) {
            t.elem_type = elem_type;
            widened.insert(input.name.clone(), dtype);
        }
        for d in t.shape.iter_mut().flat_map(|s| s.dim.iter_mut()) {
            if matches!(d.value, Some(Dim::DimValue(v)) if v < 0) {
                d.value = Some(Dim::DimParam("?".into()));
            }
        }
    }
    widened
}

impl OnnxModel {
    /// Uses the config's declared tensors instead of the graph's (names must match the graph).
    pub fn declare(&mut self, inputs: &[TensorSpec], outputs: &[TensorSpec]) -> Result<(), String> {
        for (which, declared, known) in [
            ("input", inputs, &self.inputs),
            ("output", outputs, &self.output_names()),
        ] {
            if let Some((i, bad)) = declared
                .iter()
                .enumerate()
                .find(|(_, s)| !known.contains(&s.name))
            {
                return Err(format!(
                    "key '{which}[{i}].name': the graph has no {which} '{}'",
                    bad.name
                ));
            }
        }
        if !inputs.is_empty() {
            self.inputs = inputs.iter().map(|s| s.name.clone()).collect();
        }
        if !outputs.is_empty() {
            self.outputs = outputs
                .iter()
                .map(|s| (s.name.clone(), s.datatype.unwrap_or(DataType::Fp32)))
                .collect();
        }
        Ok(())
    }

    fn output_names(&self) -> Vec<String> {
        self.outputs.iter().map(|(n, _)| n.clone()).collect()
    }
}

impl Model for OnnxModel {
    fn execute(
        &self,
        inputs: &[crate::tensors::Tensor],
    ) -> Result<Vec<crate::tensors::Tensor>, ModelError> {
        let mut values = self.weights.clone();
        for (name, tensor) in self.inputs.iter().zip(inputs) {
            let mut value = to_candle(tensor, &self.device)?;
            if let Some(&dtype) = self.widened.get(name) {
                value = value
                    .to_dtype(dtype)
                    .map_err(|e| ModelError::internal(candle_message(&e)))?;
            }
            values.insert(name.clone(), value);
        }
        let mut results = candle_onnx::simple_eval(&self.proto, values)
            .map_err(|e| ModelError::internal(candle_message(&e)))?;
        self.outputs
            .iter()
            .map(|(name, datatype)| {
                let value = results.remove(name).ok_or_else(|| {
                    ModelError::internal(format!("the graph produced no '{name}'"))
                })?;
                from_candle(&value, *datatype)
            })
            .collect()
    }
}
