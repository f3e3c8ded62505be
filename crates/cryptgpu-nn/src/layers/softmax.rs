//! `Softmax` over axis 1 of `[N, K]`; only as the model's output node (losses take the
//! logits, its input). Privately [`nl::softmax`]. ONNX `Softmax`.

use cryptgpu_nonlinear as nl;

use super::common::*;
use super::log_softmax::LogSoftmax;
use crate::plain::ops;

/// Row-wise softmax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Softmax;

impl NoAttributes for Softmax {}

impl Layer for Softmax {
    const KIND: &'static str = "Softmax";

    fn is_output_activation(&self) -> bool {
        true
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        rows_shape(inputs[0])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.output(ops::softmax(x[0].data(), x[0].shape()[1]))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let k = dy.shape()[1];
        let dx = ops::softmax_backward(cx.output.data(), dy.data(), k);
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Softmax";
        n.int("axis", 1);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Softmax {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        Ok(nl::softmax(cx.p, x[0], 1, nl::SoftmaxOptions::default())?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, _: Rss<B>) -> Grads<B> {
        Err(cx.before_output_activation("softmax"))
    }
}

/// ONNX `Softmax` and `LogSoftmax` over the last axis of `[N, K]`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let axis = attr_int(node, "axis", -1);
    if im.shape(x).len() != 2 || !(axis == 1 || axis == -1) {
        return Err(bad(
            node,
            format!(
                "only over axis 1 of [N, K] is supported, got axis {axis} of {:?}",
                im.shape(x)
            ),
        ));
    }
    if node.op_type == "LogSoftmax" {
        im.unary(node, LogSoftmax)
    } else {
        im.unary(node, Softmax)
    }
}
