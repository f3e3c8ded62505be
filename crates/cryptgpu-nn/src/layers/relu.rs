//! `Relu`: `max(x, 0)`; privately the MSB-and-bit-injection protocol, keeping its DReLU
//! bits (x > 0) for the backward pass.

use cryptgpu_nonlinear as nl;
use cryptgpu_share::SharedBits;

use super::*;

/// `max(x, 0)` elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Relu;

impl Layer for Relu {
    const KIND: &'static str = "ReLU";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        Ok(inputs[0].to_vec())
    }

    fn write_attrs(&self, _: &mut Attrs) {}

    fn read_attrs(_: &Attrs) -> Result<Self> {
        Ok(Relu)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.output(elementwise(x[0].data(), |v| v.max(0.0)))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let dx = cx.inputs[0]
            .data()
            .iter()
            .zip(dy.data())
            .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
            .collect();
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn private_forward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateCx<'_, B, T>,
        x: &[&Rss<B>],
    ) -> Result<Rss<B>> {
        let r = nl::relu(cx.p, x[0])?;
        cx.save(r.drelu);
        Ok(r.output)
    }

    fn private_backward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateBackCx<'_, B, T>,
        dy: Rss<B>,
    ) -> Result<Vec<Option<Rss<B>>>> {
        let bits: &SharedBits<B> = cx.saved()?;
        Ok(vec![Some(nl::relu_backward(cx.p, &dy, bits)?)])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Relu";
        Ok(())
    }
}

/// ONNX `Relu`.
pub(crate) fn import(im: &mut Importer, node: &NodeProto) -> Result<()> {
    im.unary(node, Relu.into())
}
