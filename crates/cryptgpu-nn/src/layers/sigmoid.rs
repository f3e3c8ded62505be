//! `Sigmoid`: 1/(1 + e^−x); privately [`nl::sigmoid`] (domain [−256, 256], absolute error
//! below 2^-12 at f = 20, 42 rounds, 32 with probabilistic truncation; see the table in
//! `cryptgpu_nonlinear::approx`). The backward pass is dy·s·(1 − s) from the saved output s.

use cryptgpu_nonlinear as nl;

use super::common::*;

/// The logistic function elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sigmoid;

impl NoAttributes for Sigmoid {}

impl Layer for Sigmoid {
    const KIND: &'static str = "Sigmoid";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.map(x[0], |v| 1.0 / (1.0 + (-v).exp()))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let y = cx.output;
        cx.elementwise_grad(y, dy, |s, g| g * s * (1.0 - s))
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Sigmoid {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let s = nl::sigmoid(cx.p, x[0], nl::SigmoidOptions::default())?;
        cx.save(s.clone());
        Ok(s)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let s: &Rss<B> = cx.saved()?;
        let s = s.clone();
        let square = cx.p.square_fixed(&s)?;
        let slope = cx.p.sub(&s, &square)?;
        Ok(vec![Some(cx.p.mul_fixed(&dy, &slope)?)])
    }
}

/// ONNX `Sigmoid`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    im.unary(node, Sigmoid)
}
