//! Native architectures (an MLP and a small ResNet-style CNN) built with candle-nn from
//! safetensors weights that are memory-mapped (memmap2, through candle's mmap loader).
//!
//! candle's CPU tensors own their storage, so each weight is copied out of the mapping when the
//! model loads (fully connected weights once more, into their transposed layout); requests never
//! copy weights.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor as CandleTensor};
use candle_nn::{conv2d, Conv2d, Conv2dConfig, VarBuilder};

use crate::models::candle_io::{candle_message, from_candle, to_candle};
use crate::models::config::{Activation, Architecture};
use crate::models::{Model, ModelError, TensorSpec};
use crate::tensors::{DataType, Tensor};

enum Net {
    Mlp {
        layers: Vec<Dense>,
        activation: Activation,
    },
    Cnn(Cnn),
}

/// A fully connected layer holding its weight transposed and contiguous ([in, out]): candle's
/// matmul against the transposed view of an [out, in] weight repacks it on every call, which
/// made batches of 2 to 32 rows 1.5-3x slower than this (measured on 1024x1024 layers).
struct Dense {
    weight_t: CandleTensor,
    bias: CandleTensor,
}

impl Dense {
    fn load(inputs: usize, outputs: usize, vb: VarBuilder) -> candle_core::Result<Dense> {
        let weight = vb.get((outputs, inputs), "weight")?;
        Ok(Dense {
            weight_t: weight.t()?.contiguous()?,
            bias: vb.get(outputs, "bias")?,
        })
    }

    fn forward(&self, x: &CandleTensor) -> candle_core::Result<CandleTensor> {
        x.matmul(&self.weight_t)?.broadcast_add(&self.bias)
    }
}

pub struct SafetensorsModel {
    net: Net,
    device: Device,
}

struct Block {
    conv1: Conv2d,
    conv2: Conv2d,
    projection: Option<Conv2d>,
}

struct Cnn {
    stem: Conv2d,
    blocks: Vec<Block>,
    fc: Dense,
}

fn err(e: candle_core::Error) -> String {
    candle_message(&e)
}

/// Loads `path` for `architecture`; returns the model and its input/output specs
/// (named INPUT0/OUTPUT0; a config may rename them).
pub fn load(
    path: &Path,
    architecture: &Architecture,
    device: &Device,
) -> Result<(SafetensorsModel, TensorSpec, TensorSpec), String> {
    // SAFETY: the weights file must not change while mapped; model folders are read-only inputs.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, device) }
        .map_err(|e| format!("{}: {}", path.display(), candle_message(&e)))?;
    let spec = |name: &str, dims: Vec<i64>| TensorSpec::new(name, DataType::Fp32, &dims);
    let (net, input, output) = match architecture {
        Architecture::Mlp { layers, activation } => {
            if layers.len() < 2 {
                return Err(
                    "key 'architecture.layers': needs at least an input and an output size".into(),
                );
            }
            let linears = layers
                .windows(2)
                .enumerate()
                .map(|(i, io)| Dense::load(io[0], io[1], vb.pp(format!("layers.{i}"))))
                .collect::<Result<Vec<_>, _>>()
                .map_err(err)?;
            let input = spec("INPUT0", vec![-1, layers[0] as i64]);
            let output = spec("OUTPUT0", vec![-1, layers[layers.len() - 1] as i64]);
            (
                Net::Mlp {
                    layers: linears,
                    activation: *activation,
                },
                input,
                output,
            )
        }
        Architecture::Cnn {
            in_channels,
            stages,
            num_classes,
        } => {
            let first = *stages
                .first()
                .ok_or("key 'architecture.stages': needs at least one stage")?;
            let same = Conv2dConfig {
                padding: 1,
                ..Default::default()
            };
            let stem = conv2d(*in_channels, first, 3, same, vb.pp("stem")).map_err(err)?;
            let mut blocks = Vec::with_capacity(stages.len());
            let mut previous = first;
            for (i, &channels) in stages.iter().enumerate() {
                let stride = if i == 0 { 1 } else { 2 };
                let vb = vb.pp(format!("stages.{i}"));
                let down = Conv2dConfig {
                    padding: 1,
                    stride,
                    ..Default::default()
                };
                let projection = (stride != 1 || channels != previous)
                    .then(|| {
                        conv2d(
                            previous,
                            channels,
                            1,
                            Conv2dConfig {
                                stride,
                                ..Default::default()
                            },
                            vb.pp("proj"),
                        )
                    })
                    .transpose()
                    .map_err(err)?;
                blocks.push(Block {
                    conv1: conv2d(previous, channels, 3, down, vb.pp("conv1")).map_err(err)?,
                    conv2: conv2d(channels, channels, 3, same, vb.pp("conv2")).map_err(err)?,
                    projection,
                });
                previous = channels;
            }
            let fc = Dense::load(previous, *num_classes, vb.pp("fc")).map_err(err)?;
            let input = TensorSpec {
                layout: Some("NCHW".into()),
                ..spec("INPUT0", vec![-1, *in_channels as i64, -1, -1])
            };
            let output = spec("OUTPUT0", vec![-1, *num_classes as i64]);
            (Net::Cnn(Cnn { stem, blocks, fc }), input, output)
        }
    };
    let model = SafetensorsModel {
        net,
        device: device.clone(),
    };
    Ok((model, input, output))
}

fn activate(x: &CandleTensor, activation: Activation) -> candle_core::Result<CandleTensor> {
    match activation {
        Activation::Relu => x.relu(),
        Activation::Gelu => x.gelu_erf(),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => candle_nn::ops::sigmoid(x),
    }
}

impl Cnn {
    fn forward(&self, x: &CandleTensor) -> candle_core::Result<CandleTensor> {
        let mut x = self.stem.forward(x)?.relu()?;
        for block in &self.blocks {
            let shortcut = match &block.projection {
                Some(p) => p.forward(&x)?,
                None => x.clone(),
            };
            let y = block.conv1.forward(&x)?.relu()?;
            x = (block.conv2.forward(&y)? + shortcut)?.relu()?;
        }
        let pooled = x.mean(3)?.mean(2)?;
        self.fc.forward(&pooled)
    }
}

impl Model for SafetensorsModel {
    fn execute(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, ModelError> {
        let [input] = inputs else {
            return Err(ModelError::internal("safetensors models take one input"));
        };
        let x = to_candle(input, &self.device)?;
        let y = match &self.net {
            Net::Mlp { layers, activation } => {
                layers.iter().enumerate().try_fold(x, |x, (i, layer)| {
                    let y = layer.forward(&x)?;
                    if i + 1 < layers.len() {
                        activate(&y, *activation)
                    } else {
                        Ok(y)
                    }
                })
            }
            Net::Cnn(cnn) => cnn.forward(&x),
        }
        .map_err(|e| ModelError::internal(candle_message(&e)))?;
        Ok(vec![from_candle(&y, DataType::Fp32)?])
    }
}
