//! Operators candle-onnx 0.11 lacks, rewritten into ones it has before the graph is evaluated:
//! - GlobalAveragePool(X) becomes ReduceMean(X, axes=[2, 3], keepdims=1) (4-D NCHW input).
//! - HardSigmoid(X; alpha, beta) becomes Clip(Add(Mul(X, alpha), beta), 0, 1).
//! - LayerNormalization(X, S, B; axis<0, epsilon) becomes
//!   (X - mean) / sqrt(var + epsilon) * S + B over the last -axis dims.
//! - Conv with unequal strides (sh, sw) becomes Conv with stride 1, then Slice with steps
//!   (sh, sw): candle's conv2d takes one stride for both axes; PP-OCR's classifier uses [2, 1].

use candle_onnx::onnx::attribute_proto::AttributeType;
use candle_onnx::onnx::{AttributeProto, GraphProto, NodeProto, TensorProto};

pub fn rewrite(graph: &mut GraphProto) -> Result<(), String> {
    let nodes = std::mem::take(&mut graph.node);
    let mut out = Rewriter {
        graph,
        nodes: Vec::with_capacity(nodes.len()),
        fresh: 0,
    };
    for node in nodes {
        match node.op_type.as_str() {
            "GlobalAveragePool" => out.global_average_pool(node),
            "HardSigmoid" => out.hard_sigmoid(node),
            "LayerNormalization" => out.layer_norm(node)?,
            "Conv" if unequal_strides(&node).is_some() => out.strided_conv(node),
            _ => out.nodes.push(node),
        }
    }
    let nodes = out.nodes;
    graph.node = nodes;
    Ok(())
}

struct Rewriter<'g> {
    graph: &'g mut GraphProto,
    nodes: Vec<NodeProto>,
    fresh: usize,
}

fn float_attr(node: &NodeProto, name: &str, default: f32) -> f32 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.f)
}

fn int_attr(node: &NodeProto, name: &str, default: i64) -> i64 {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map_or(default, |a| a.i)
}

/// The strides of a 2-D Conv whose two strides differ.
fn unequal_strides(node: &NodeProto) -> Option<(i64, i64)> {
    let strides = &node.attribute.iter().find(|a| a.name == "strides")?.ints;
    match strides[..] {
        [h, w] if h != w => Some((h, w)),
        _ => None,
    }
}

fn ints(name: &str, values: Vec<i64>) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values,
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

impl Rewriter<'_> {
    fn name(&mut self, base: &str) -> String {
        self.fresh += 1;
        format!("tensord_rewrite_{}_{base}", self.fresh)
    }

    /// A scalar FP32 initializer.
    fn constant(&mut self, value: f32) -> String {
        let name = self.name("const");
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            data_type: 1,
            float_data: vec![value],
            ..Default::default()
        });
        name
    }

    /// An INT64 vector initializer.
    fn constant_i64(&mut self, values: Vec<i64>) -> String {
        let name = self.name("const");
        self.graph.initializer.push(TensorProto {
            name: name.clone(),
            data_type: 7,
            dims: vec![values.len() as i64],
            int64_data: values,
            ..Default::default()
        });
        name
    }

    /// Appends `op(inputs) -> output` (a fresh name unless given).
    fn op(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        output: Option<String>,
        attribute: Vec<AttributeProto>,
    ) -> String {
        let output = output.unwrap_or_else(|| self.name(op));
        let name = self.name(op);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![output.clone()],
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        output
    }

    fn strided_conv(&mut self, mut node: NodeProto) {
        let Some((h, w)) = unequal_strides(&node) else {
            return self.nodes.push(node);
        };
        for a in node.attribute.iter_mut().filter(|a| a.name == "strides") {
            a.ints = vec![1, 1];
        }
        let output = node.output.first().cloned();
        let full = self.name("conv_full");
        node.output = vec![full.clone()];
        self.nodes.push(node);
        let starts = self.constant_i64(vec![0, 0]);
        let ends = self.constant_i64(vec![i64::MAX, i64::MAX]);
        let axes = self.constant_i64(vec![2, 3]);
        let steps = self.constant_i64(vec![h, w]);
        self.op(
            "Slice",
            vec![full, starts, ends, axes, steps],
            output,
            vec![],
        );
    }

    fn global_average_pool(&mut self, node: NodeProto) {
        let attrs = vec![ints("axes", vec![2, 3]), int("keepdims", 1)];
        self.op(
            "ReduceMean",
            node.input,
            node.output.into_iter().next(),
            attrs,
        );
    }

    fn hard_sigmoid(&mut self, node: NodeProto) {
        let (alpha, beta) = (
            float_attr(&node, "alpha", 0.2),
            float_attr(&node, "beta", 0.5),
        );
        let (a, b, zero, one) = (
            self.constant(alpha),
            self.constant(beta),
            self.constant(0.0),
            self.constant(1.0),
        );
        let x = node.input[0].clone();
        let scaled = self.op("Mul", vec![x, a], None, vec![]);
        let shifted = self.op("Add", vec![scaled, b], None, vec![]);
        self.op(
            "Clip",
            vec![shifted, zero, one],
            node.output.into_iter().next(),
            vec![],
        );
    }

    fn layer_norm(&mut self, node: NodeProto) -> Result<(), String> {
        let axis = int_attr(&node, "axis", -1);
        if axis >= 0 {
            return Err(format!(
                "LayerNormalization '{}': only a negative axis is supported (got {axis})",
                node.name
            ));
        }
        let axes: Vec<i64> = (axis..0).collect();
        let epsilon = float_attr(&node, "epsilon", 1e-5);
        let x = node.input[0].clone();
        let reduce = |axes: &Vec<i64>| vec![ints("axes", axes.clone()), int("keepdims", 1)];
        let mean = self.op("ReduceMean", vec![x.clone()], None, reduce(&axes));
        let centered = self.op("Sub", vec![x, mean], None, vec![]);
        let squared = self.op(
            "Mul",
            vec![centered.clone(), centered.clone()],
            None,
            vec![],
        );
        let variance = self.op("ReduceMean", vec![squared], None, reduce(&axes));
        let eps = self.constant(epsilon);
        let shifted = self.op("Add", vec![variance, eps], None, vec![]);
        let deviation = self.op("Sqrt", vec![shifted], None, vec![]);
        let normed = self.op("Div", vec![centered, deviation], None, vec![]);
        let output = node.output.first().cloned();
        match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(bias) => {
                let scaled = self.op("Mul", vec![normed, node.input[1].clone()], None, vec![]);
                self.op("Add", vec![scaled, bias.clone()], output, vec![]);
            }
            None => {
                self.op("Mul", vec![normed, node.input[1].clone()], output, vec![]);
            }
        }
        Ok(())
    }
}
