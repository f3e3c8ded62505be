//! `Sqrt` of a computed value: √v = v · 1/√v, privately with [`nl::inv_sqrt_wide`] (v in
//! [3.8·10^-6, 4.2·10^6), relative error 2^-12) and one product. A `Div` by a `Sqrt` (a
//! hand-written LayerNorm's `(x - mean) / sqrt(var + eps)`) becomes a product by
//! [`super::inv_sqrt::InvSqrt`] of the same value at import, which saves the product and
//! the loss of precision of a division. ONNX `Sqrt`.

use cryptgpu_nonlinear as nl;

use super::common::*;

/// √v elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sqrt;

impl NoAttributes for Sqrt {}

impl Layer for Sqrt {
    const KIND: &'static str = "Sqrt";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.map(x[0], f64::sqrt)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let y = cx.output;
        cx.elementwise_grad(y, dy, |s, g| g * 0.5 / s)
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Sqrt {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let inverse = nl::inv_sqrt_wide(cx.p, x[0], nl::InvSqrtWideOptions::default())?;
        let y = cx.p.mul_fixed(x[0], &inverse)?;
        cx.save(inverse);
        Ok(y)
    }

    /// dy / (2√v) = dy · (1/√v) / 2.
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let inverse: &Rss<B> = cx.saved()?;
        let inverse = inverse.clone();
        let dx = cx.p.mul_fixed(&dy, &inverse)?;
        Ok(vec![Some(cx.p.mul_public_fixed(&dx, 0.5)?)])
    }
}

/// ONNX `Sqrt` of a computed value (of constants it is folded).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    im.unary(node, Sqrt)
}

/// The value under node `id` when it is a [`Sqrt`] (the importer's way to turn a division
/// by a square root into a product by an inverse square root).
pub(crate) fn sqrt_operand(im: &mut dyn ImportGraph, id: NodeId) -> Option<NodeId> {
    let is_sqrt = im.layer_mut(id).downcast_ref::<Sqrt>().is_some();
    is_sqrt.then(|| im.inputs_of(id)[0])
}
