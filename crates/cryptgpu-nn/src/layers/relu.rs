//! `Relu`: `max(x, 0)`; privately the MSB-and-bit-injection protocol, keeping its DReLU
//! bits (x > 0) for the backward pass.

use cryptgpu_nonlinear as nl;
use cryptgpu_share::SharedBits;

use super::common::*;

/// `max(x, 0)` elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relu;

impl NoAttributes for Relu {}

impl Layer for Relu {
    const KIND: &'static str = "ReLU";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.map(x[0], |v| v.max(0.0))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        cx.elementwise_grad(x, dy, |v, g| if v > 0.0 { g } else { 0.0 })
    }

    /// relu(max S) = max relu(S), and relu(0) = 0: monotone.
    fn commutes_with_max(&self) -> bool {
        true
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Relu {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let r = nl::relu(cx.p, x[0])?;
        cx.save(r.drelu);
        Ok(r.output)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let bits: &SharedBits<B> = cx.saved()?;
        Ok(vec![Some(nl::relu_backward(cx.p, &dy, bits)?)])
    }
}

/// ONNX `Relu`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    im.unary(node, Relu)
}
