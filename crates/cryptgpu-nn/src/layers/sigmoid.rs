//! `Sigmoid`: 1/(1 + e^−x); privately [`nl::sigmoid`] (domain [−256, 256], absolute error
//! below 2^-12 at f = 20, 45 rounds; see the table in `cryptgpu_nonlinear::approx`). The
//! backward pass is dy·s·(1 − s) from the saved output s.

use cryptgpu_nonlinear as nl;

use super::*;

/// The logistic function elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sigmoid;

impl Layer for Sigmoid {
    const KIND: &'static str = "Sigmoid";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        Ok(inputs[0].to_vec())
    }

    fn write_attrs(&self, _: &mut Attrs) {}

    fn read_attrs(_: &Attrs) -> Result<Self> {
        Ok(Sigmoid)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.output(elementwise(x[0].data(), |v| 1.0 / (1.0 + (-v).exp())))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let dx = cx
            .output
            .data()
            .iter()
            .zip(dy.data())
            .map(|(&s, &g)| g * s * (1.0 - s))
            .collect();
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn private_forward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateCx<'_, B, T>,
        x: &[&Rss<B>],
    ) -> Result<Rss<B>> {
        let s = nl::sigmoid(cx.p, x[0], nl::SigmoidOptions::default())?;
        cx.save(s.clone());
        Ok(s)
    }

    fn private_backward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateBackCx<'_, B, T>,
        dy: Rss<B>,
    ) -> Result<Vec<Option<Rss<B>>>> {
        let s: &Rss<B> = cx.saved()?;
        let s = s.clone();
        let square = cx.p.square_fixed(&s)?;
        let slope = cx.p.sub(&s, &square)?;
        Ok(vec![Some(cx.p.mul_fixed(&dy, &slope)?)])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Sigmoid";
        Ok(())
    }
}

/// ONNX `Sigmoid`.
pub(crate) fn import(im: &mut Importer, node: &NodeProto) -> Result<()> {
    im.unary(node, Sigmoid.into())
}
