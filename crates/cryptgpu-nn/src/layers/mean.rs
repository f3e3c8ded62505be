//! `Mean`: the mean over non-batch axes, kept as size 1 or dropped (`x.mean(-1,
//! keepdim=True)` of a hand-written LayerNorm; token pooling). Privately a local sum and one
//! product by the public 1/count (1 round). ONNX `ReduceMean` over axes other than the
//! spatial axes of NCHW (those are [`super::global_avg_pool::GlobalAvgPool`]).

use super::common::*;

/// The mean over `axes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mean {
    /// The reduced axes (batch axis = 0, not among them), increasing.
    pub axes: Vec<usize>,
    /// Whether the reduced axes stay, with size 1.
    pub keep_dims: bool,
}

impl Mean {
    /// The input's shape with the reduced axes set to 1.
    fn kept(&self, input: &[usize]) -> Vec<usize> {
        let mut kept = input.to_vec();
        for &a in &self.axes {
            kept[a] = 1;
        }
        kept
    }

    /// The number of values each mean takes.
    fn count(&self, input: &[usize]) -> usize {
        self.axes.iter().map(|&a| input[a]).product()
    }
}

impl Attributes for Mean {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("axes", self.axes.clone());
        a.set("keep_dims", self.keep_dims);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let axes = a.dims("axes")?;
        if axes.is_empty() || axes.contains(&0) || axes.windows(2).any(|w| w[0] >= w[1]) {
            return Err(a.err(format!("`axes` {axes:?} must be increasing non-batch axes")));
        }
        Ok(Self {
            axes,
            keep_dims: a.boolean("keep_dims")?,
        })
    }
}

impl Layer for Mean {
    const KIND: &'static str = "Mean";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = inputs[0];
        if self.axes.iter().any(|&a| a >= x.len()) {
            return Err(format!("axes {:?} are not all in {x:?}", self.axes));
        }
        if self.count(x) == 0 {
            return Err(format!("a mean over empty axes {:?} of {x:?}", self.axes));
        }
        if self.keep_dims {
            Ok(self.kept(x))
        } else {
            Ok(x.iter()
                .enumerate()
                .filter(|(i, _)| !self.axes.contains(i))
                .map(|(_, &d)| d)
                .collect())
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let scale = 1.0 / self.count(x[0].shape()) as f64;
        let sum = plain_reduce_to(x[0], &self.kept(x[0].shape()))?;
        cx.output(sum.data().iter().map(|v| v * scale).collect())
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let input = cx.inputs[0].shape().to_vec();
        let scale = 1.0 / self.count(&input) as f64;
        let dy = dy.clone().reshape(&self.kept(&input))?;
        let spread = plain_broadcast(&dy, &input)?;
        Ok(vec![cx.like_input(
            0,
            spread.data().iter().map(|v| v * scale).collect(),
        )?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "ReduceMean";
        let axes: Vec<i64> = self.axes.iter().map(|&a| a as i64).collect();
        n.ints("axes", &axes);
        n.int("keepdims", i64::from(self.keep_dims));
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Mean {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let input = x[0].shape().to_vec();
        let sum = private_reduce_to(cx.p, x[0], &self.kept(&input))?;
        let mean =
            cx.p.mul_public_fixed(&sum, 1.0 / self.count(&input) as f64)?;
        cx.reshape_to_output(&mean)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let input = cx.input_shapes[0].clone();
        let kept = self.kept(&input);
        let dy = cx.p.linear(&dy, |b, t| b.reshape(t, &kept))?;
        let spread = private_broadcast(cx.p, &dy, &input)?;
        let scale = 1.0 / self.count(&input) as f64;
        Ok(vec![Some(cx.p.mul_public_fixed(&spread, scale)?)])
    }
}

/// ONNX `ReduceMean` over non-batch axes (called by the global average pool's importer
/// for the axes that are not NCHW's spatial ones).
pub(crate) fn import(
    im: &mut dyn ImportGraph,
    node: &NodeProto,
    x: NodeId,
    axes: Vec<usize>,
) -> Result<()> {
    let keep_dims = attr_int(node, "keepdims", 1) != 0;
    if axes.is_empty() || axes.contains(&0) {
        return Err(bad(
            node,
            format!(
                "only a mean over non-batch axes is supported, got axes {axes:?} of {}",
                im.describe(x)
            ),
        ));
    }
    im.unary(node, Mean { axes, keep_dims })
}
