//! `Erf`: the error function elementwise (exact GELU as torch exports it: x·0.5·(1 +
//! erf(x/√2))). Privately [`nl::erf`]: a degree-11 polynomial between two comparisons,
//! within 3·10^-5 over the whole comparison domain, 26 rounds. ONNX `Erf`.

use cryptgpu_nonlinear as nl;

use super::common::*;

/// erf elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Erf;

impl NoAttributes for Erf {}

impl Layer for Erf {
    const KIND: &'static str = "Erf";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.map(x[0], nl::erf_f64)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let slope = 2.0 / std::f64::consts::PI.sqrt();
        cx.elementwise_grad(x, dy, |v, g| g * slope * (-v * v).exp())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Erf {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let (y, inside) = nl::erf_parts(cx.p, x[0])?;
        if cx.keep() {
            cx.save((x[0].clone(), inside));
        }
        Ok(y)
    }

    /// dy·(2/√π)·e^(−x²) where |x| < 3, 0 beyond ([`nl::erf_slope`]).
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let (x, inside): &(Rss<B>, cryptgpu_share::SharedBits<B>) = cx.saved()?;
        let slope = nl::erf_slope(cx.p, x, inside)?;
        Ok(vec![Some(cx.p.mul_fixed(&dy, &slope)?)])
    }
}

/// ONNX `Erf`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    im.unary(node, Erf)
}
