//! `AddConst`: `x + c` (or `c − x`) for a constant of the graph `c` broadcast to x's shape
//! (normalisation inside the graph: `x - mean`). The constant is the model owner's: it is
//! a parameter (`{node}.constant`, not trained) and is shared like the weights. Local.

use super::common::*;

/// `x + constant`, or `constant − x` with `negate_input`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddConst {
    /// The constant's shape (broadcast to the input's).
    pub shape: Vec<usize>,
    /// Whether the input is subtracted from the constant.
    pub negate_input: bool,
}

impl Attributes for AddConst {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("shape", self.shape.clone());
        if self.negate_input {
            a.set("negate_input", true);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            shape: a.dims("shape")?,
            negate_input: a.boolean_or("negate_input", false)?,
        })
    }
}

impl Layer for AddConst {
    const KIND: &'static str = "AddConst";

    fn params(&self) -> Vec<ParamDecl> {
        vec![ParamDecl::constant(&self.shape, 0.0)]
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        constant_fits(inputs[0], &self.shape)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let c = plain_broadcast(cx.param("constant")?, cx.out_shape)?;
        let sign = if self.negate_input { -1.0 } else { 1.0 };
        cx.output(
            x[0].data()
                .iter()
                .zip(c.data())
                .map(|(v, c)| sign * v + c)
                .collect(),
        )
    }

    fn plain_backward(&self, _: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let mut dx = dy.clone();
        if self.negate_input {
            dx.data_mut().iter_mut().for_each(|v| *v = -*v);
        }
        Ok(vec![dx])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        if self.negate_input {
            n.op_type = "Sub";
            let input = n.inputs.remove(0);
            n.param_input("constant");
            n.inputs.push(input);
        } else {
            n.op_type = "Add";
            n.param_input("constant");
        }
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for AddConst {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let c = private_broadcast(cx.p, cx.param("constant")?, cx.out_shape)?;
        Ok(if self.negate_input {
            cx.p.sub(&c, x[0])?
        } else {
            cx.p.add(x[0], &c)?
        })
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        Ok(vec![Some(if self.negate_input {
            cx.p.neg(&dy)?
        } else {
            dy
        })])
    }
}

/// Adds a helper node `x + value` named after `base` (made unique), with its constant.
pub(crate) fn push_offset(
    im: &mut dyn ImportGraph,
    base: &str,
    value: Tensor,
    x: NodeId,
) -> Result<NodeId> {
    let layer = AddConst {
        shape: value.shape().to_vec(),
        negate_input: false,
    };
    let id = im.push_internal(base.to_owned(), layer, &[x])?;
    let name = im.name_of(id).to_owned();
    im.insert_param(&name, "constant", value);
    Ok(id)
}
