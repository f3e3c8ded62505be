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

/// What a `Where` fills with: −∞ (a mask before a softmax) and anything below −128
/// become −128, which keeps softmax's exp in its domain (logits within 128 of each other)
/// and still takes it to exactly 0.
const MASK_FLOOR: f64 = -128.0;

/// ONNX `Where` with a constant condition, one branch a computed value and the other a
/// constant (`scores.masked_fill(mask == 0, -inf)`, a causal mask): x·keep + fill, as a
/// [`MulConst`] by the 0/1 mask and an [`super::add_const::AddConst`] of the fill where
/// the mask is off.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let condition = im
        .constant(node, 0)
        .ok()
        .flatten()
        .ok_or_else(|| bad(node, "only a constant condition (a mask) is supported"))?;
    let branches = [
        im.constant(node, 1).ok().flatten(),
        im.constant(node, 2).ok().flatten(),
    ];
    let (x, fill, fill_where_true) = match branches {
        [Some(fill), None] => (im.input_node(node, 2)?, fill, true),
        [None, Some(fill)] => (im.input_node(node, 1)?, fill, false),
        _ => {
            return Err(bad(
                node,
                "one branch must be computed and the other a constant",
            ));
        }
    };
    let dims = |t: &super::super::onnx::proto::TensorProto| -> Vec<usize> {
        t.dims.iter().map(|&d| d as usize).collect()
    };
    let (cond_shape, fill_shape) = (dims(&condition), dims(&fill));
    let shape = broadcast_shapes(&cond_shape, &fill_shape)
        .ok_or_else(|| bad(node, "the condition and the fill do not broadcast"))?;
    let cond = plain_broadcast(&Tensor::new(&cond_shape, condition.values.clone())?, &shape)?;
    let fill = plain_broadcast(&Tensor::new(&fill_shape, fill.values.clone())?, &shape)?;
    let (mut keep, mut add) = (Vec::new(), Vec::new());
    for (&c, &f) in cond.data().iter().zip(fill.data()) {
        let filled = (c != 0.0) == fill_where_true;
        keep.push(if filled { 0.0 } else { 1.0 });
        add.push(if filled { f.max(MASK_FLOOR) } else { 0.0 });
    }
    let name = im.node_name(node, None);
    let kept = push_scale(im, &format!("{name}.keep"), Tensor::new(&shape, keep)?, x)?;
    let filled = super::add_const::push_offset(im, &name, Tensor::new(&shape, add)?, kept)?;
    im.alias(node, filled);
    Ok(())
}

/// Adds a helper node `x · value` named after `base` (made unique), with its constant.
pub(crate) fn push_scale(
    im: &mut dyn ImportGraph,
    base: &str,
    value: Tensor,
    x: NodeId,
) -> Result<NodeId> {
    let shape = value.shape().to_vec();
    let id = im.push_internal(base.to_owned(), MulConst { shape }, &[x])?;
    let name = im.name_of(id).to_owned();
    im.insert_param(&name, "constant", value);
    Ok(id)
}
