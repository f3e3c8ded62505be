//! `MulConst`: `x · c` for a constant of the graph `c` broadcast to x's shape
//! (normalisation inside the graph: `x / std` is imported as `x · (1/std)`). The constant
//! is the model owner's, a parameter (`{node}.constant`, not trained) shared like the
//! weights; privately one fixed-point product (2 rounds).

use super::common::*;

/// `x · constant`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulConst {
    /// The constant's shape (broadcast to the input's).
    pub shape: Vec<usize>,
}

impl Attributes for MulConst {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("shape", self.shape.clone());
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            shape: a.dims("shape")?,
        })
    }
}

impl Layer for MulConst {
    const KIND: &'static str = "MulConst";

    fn params(&self) -> Vec<ParamDecl> {
        vec![ParamDecl::constant(&self.shape, 1.0)]
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        constant_fits(inputs[0], &self.shape)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let c = plain_broadcast(cx.param("constant")?, cx.out_shape)?;
        cx.output(
            x[0].data()
                .iter()
                .zip(c.data())
                .map(|(v, c)| v * c)
                .collect(),
        )
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let c = plain_broadcast(cx.param("constant")?, dy.shape())?;
        Ok(vec![Tensor::new(
            dy.shape(),
            dy.data().iter().zip(c.data()).map(|(g, c)| g * c).collect(),
        )?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Mul";
        n.param_input("constant");
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for MulConst {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let c = private_broadcast(cx.p, cx.param("constant")?, cx.out_shape)?;
        Ok(cx.p.mul_fixed(x[0], &c)?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        if !cx.wants(0) {
            return Ok(vec![None]);
        }
        let c = private_broadcast(cx.p, cx.param("constant")?, dy.shape())?;
        Ok(vec![Some(cx.p.mul_fixed(&dy, &c)?)])
    }
}
