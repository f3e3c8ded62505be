//! `Softmax` over the last axis, of any rank: as the model's output (predictions and losses
//! then take the logits, its input, and the private executor skips it) or inside the graph
//! (attention: softmax over the keys of `[N, heads, queries, keys]`). Privately
//! [`nl::softmax`]: a tournament max, exp and a reciprocal on [1, keys] (error 2^-12 per
//! probability for logits within 256 of their row's max). ONNX `Softmax`.

use cryptgpu_nonlinear as nl;

use super::common::*;
use super::log_softmax::LogSoftmax;
use crate::plain::ops;

/// Softmax over the last axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Softmax;

impl NoAttributes for Softmax {}

impl Layer for Softmax {
    const KIND: &'static str = "Softmax";

    fn is_output_activation(&self) -> bool {
        true
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        last_axis_rows(inputs[0])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.output(ops::softmax(x[0].data(), last_len(x[0].shape())))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let k = last_len(dy.shape());
        let dx = ops::softmax_backward(cx.output.data(), dy.data(), k);
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Softmax";
        n.int("axis", -1);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Softmax {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let last = x[0].shape().len() - 1;
        let y = nl::softmax(cx.p, x[0], last, nl::SoftmaxOptions::default())?;
        cx.save(y.clone());
        Ok(y)
    }

    /// Inside the graph: dx = y ⊙ (dy − Σ_k dy ⊙ y), two products (4 rounds).
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let y: &Rss<B> = cx.saved()?;
        let shape = y.shape().to_vec();
        let last = shape.len() - 1;
        let mut kept = shape.clone();
        kept[last] = 1;
        let weighted = cx.p.mul_fixed(&dy, y)?;
        let total = cx.p.sum_axis(&weighted, last)?;
        let total =
            cx.p.linear(&total, |b, t| b.broadcast_to(&b.reshape(t, &kept)?, &shape))?;
        let centred = cx.p.sub(&dy, &total)?;
        Ok(vec![Some(cx.p.mul_fixed(y, &centred)?)])
    }
}

/// The length of the last axis.
fn last_len(shape: &[usize]) -> usize {
    shape.last().copied().unwrap_or(1)
}

/// The input's shape, when it has a batch axis and a non-empty last axis.
pub(crate) fn last_axis_rows(input: &[usize]) -> std::result::Result<Vec<usize>, String> {
    match input {
        [_, .., k] if *k > 0 => Ok(input.to_vec()),
        other => Err(format!("needs [N, .., K] with K > 0, got {other:?}")),
    }
}

/// ONNX `Softmax` over the last axis of any rank, and `LogSoftmax` over the last axis of
/// `[N, K]`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let rank = im.shape(x).len() as i64;
    let axis = attr_int(node, "axis", -1);
    let last = axis == -1 || axis == rank - 1;
    if node.op_type == "LogSoftmax" && !(rank == 2 && last) {
        return Err(bad(
            node,
            format!(
                "only over axis 1 of [N, K] is supported, got axis {axis} of {}",
                im.describe(x)
            ),
        ));
    }
    if !last || rank < 2 {
        return Err(bad(
            node,
            format!(
                "only over the last axis is supported, got axis {axis} of {}",
                im.describe(x)
            ),
        ));
    }
    if node.op_type == "LogSoftmax" {
        im.unary(node, LogSoftmax)
    } else {
        im.unary(node, Softmax)
    }
}
