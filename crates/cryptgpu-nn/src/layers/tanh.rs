//! `Tanh`: privately 2·σ(2x) − 1 with [`nl::sigmoid`] (domain [−128, 128], absolute error
//! below 2^-11 at f = 20: twice the sigmoid's). The backward pass is dy·(1 − y²).

use cryptgpu_nonlinear as nl;

use super::common::*;

/// The hyperbolic tangent elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tanh;

impl NoAttributes for Tanh {}

impl Layer for Tanh {
    const KIND: &'static str = "Tanh";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.map(x[0], f64::tanh)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let y = cx.output;
        cx.elementwise_grad(y, dy, |y, g| g * (1.0 - y * y))
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Tanh {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let fixed = cx.p.fixed();
        let doubled = cx.p.mul_scalar(x[0], 2)?;
        let s = nl::sigmoid(cx.p, &doubled, nl::SigmoidOptions::default())?;
        let y =
            cx.p.add_scalar(&cx.p.mul_scalar(&s, 2)?, fixed.encode(-1.0)?)?;
        cx.save(y.clone());
        Ok(y)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let y: &Rss<B> = cx.saved()?;
        let square = cx.p.square_fixed(&y.clone())?;
        let fixed = cx.p.fixed();
        let slope = cx.p.add_scalar(&cx.p.neg(&square)?, fixed.encode(1.0)?)?;
        Ok(vec![Some(cx.p.mul_fixed(&dy, &slope)?)])
    }
}

/// ONNX `Tanh`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    im.unary(node, Tanh)
}
