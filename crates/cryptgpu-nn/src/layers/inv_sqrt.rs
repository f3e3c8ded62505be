//! `InvSqrt`: 1/√v elementwise, privately [`nl::inv_sqrt_wide`] (v in [3.8·10^-6,
//! 4.2·10^6), relative error 2^-12, 38 rounds). The importer makes it from `Div(a,
//! Sqrt(v))` (then a product a · InvSqrt(v)) and `Reciprocal(Sqrt(v))`; ONNX has no such op,
//! so it is written as `Sqrt` then `Reciprocal`.

use cryptgpu_nonlinear as nl;

use super::common::*;

/// 1/√v elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InvSqrt;

impl NoAttributes for InvSqrt {}

impl Layer for InvSqrt {
    const KIND: &'static str = "InvSqrt";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.map(x[0], |v| 1.0 / v.sqrt())
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let y = cx.output;
        cx.elementwise_grad(y, dy, |s, g| -0.5 * g * s * s * s)
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Sqrt";
        n.then = Some(("Reciprocal", Vec::new()));
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for InvSqrt {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let y = nl::inv_sqrt_wide(cx.p, x[0], nl::InvSqrtWideOptions::default())?;
        cx.save(y.clone());
        Ok(y)
    }

    /// −dy · y³ / 2 for y = 1/√v.
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let y: &Rss<B> = cx.saved()?;
        let y = y.clone();
        let square = cx.p.square_fixed(&y)?;
        let cube = cx.p.mul_fixed(&square, &y)?;
        let dx = cx.p.mul_fixed(&dy, &cube)?;
        Ok(vec![Some(cx.p.mul_public_fixed(&dx, -0.5)?)])
    }
}

/// ONNX `Reciprocal` of a computed `Sqrt` (of constants it is folded).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    match super::sqrt::sqrt_operand(im, x) {
        Some(v) => {
            let name = im.node_name(node, None);
            im.push(node, name, InvSqrt, &[v])?;
            Ok(())
        }
        None => Err(bad(
            node,
            "only the reciprocal of a square root (1/sqrt(v)) of a computed value is supported",
        )),
    }
}
