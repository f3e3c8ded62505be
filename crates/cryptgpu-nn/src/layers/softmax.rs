//! `Softmax` over one axis (the last by default) of a value of any rank: as the model's
//! output (predictions and losses then take the logits, its input, and the private executor
//! skips it) or inside the graph (attention: softmax over the keys of `[N, heads, queries,
//! keys]`). Privately [`nl::softmax`]: a tournament max, exp and a reciprocal on [1, keys]
//! (error 2^-12 per probability for logits within 256 of their row's max). ONNX `Softmax`.

use cryptgpu_nonlinear as nl;

use super::common::*;
use super::log_softmax::LogSoftmax;
use crate::plain::ops;

/// Softmax over `axis`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Softmax {
    /// The axis (batch axis = 0); `None`: the last.
    pub axis: Option<usize>,
}

impl Attributes for Softmax {
    fn write_attrs(&self, a: &mut Attrs) {
        if let Some(axis) = self.axis {
            a.set("axis", axis);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let axis = if a.has("axis") {
            Some(a.dim("axis")?)
        } else {
            None
        };
        Ok(Self { axis })
    }
}

impl Softmax {
    /// The axis in a value of rank `rank`.
    fn axis_of(&self, rank: usize) -> usize {
        self.axis.unwrap_or(rank.saturating_sub(1))
    }

    /// `(outer, k, inner)` of `shape` around the axis.
    fn split(&self, shape: &[usize]) -> (usize, usize, usize) {
        let axis = self.axis_of(shape.len());
        let outer = shape[..axis].iter().product();
        let inner = shape[axis + 1..].iter().product();
        (outer, shape[axis], inner)
    }

    /// `f` on each line of values along the axis, in order, written back.
    fn along(&self, shape: &[usize], data: &mut [f64], mut f: impl FnMut(&mut [f64])) {
        let (outer, k, inner) = self.split(shape);
        let mut line = vec![0.0; k];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| (o * k + j) * inner + i;
                for (j, v) in line.iter_mut().enumerate() {
                    *v = data[at(j)];
                }
                f(&mut line);
                for (j, v) in line.iter().enumerate() {
                    data[at(j)] = *v;
                }
            }
        }
    }
}

impl Layer for Softmax {
    const KIND: &'static str = "Softmax";

    /// Over the last axis only: a softmax over another axis changes which class is largest,
    /// so it is computed even as the output.
    fn is_output_activation(&self) -> bool {
        self.axis.is_none()
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = inputs[0];
        match self.axis {
            None => last_axis_rows(x),
            Some(a) if x.len() >= 2 && a < x.len() && x[a] > 0 => Ok(x.to_vec()),
            Some(a) => Err(format!("needs a non-empty axis {a} in {x:?}")),
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let mut y = x[0].data().to_vec();
        self.along(x[0].shape(), &mut y, |line| {
            line.copy_from_slice(&ops::softmax(line, line.len()));
        });
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        // dx = y ⊙ (dy − Σ dy ⊙ y) along the axis: the lines of y and dy side by side.
        let shape = dy.shape().to_vec();
        let mut y = cx.output.data().to_vec();
        let mut lines = Vec::new();
        self.along(&shape, &mut y, |line| lines.push(line.to_vec()));
        let mut g = dy.data().to_vec();
        let mut outputs = lines.iter();
        self.along(&shape, &mut g, |line| {
            if let Some(s) = outputs.next() {
                line.copy_from_slice(&ops::softmax_backward(s, line, line.len()));
            }
        });
        Ok(vec![cx.like_input(0, g)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Softmax";
        n.int("axis", self.axis.map_or(-1, |a| a as i64));
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Softmax {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let axis = self.axis_of(x[0].shape().len());
        let y = nl::softmax(cx.p, x[0], axis, nl::SoftmaxOptions::default())?;
        cx.save(y.clone());
        Ok(y)
    }

    /// Inside the graph: dx = y ⊙ (dy − Σ_k dy ⊙ y), two products (4 rounds).
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let y: &Rss<B> = cx.saved()?;
        let shape = y.shape().to_vec();
        let axis = self.axis_of(shape.len());
        let mut kept = shape.clone();
        kept[axis] = 1;
        let weighted = cx.p.mul_fixed(&dy, y)?;
        let total = cx.p.sum_axis(&weighted, axis)?;
        let total =
            cx.p.linear(&total, |b, t| b.broadcast_to(&b.reshape(t, &kept)?, &shape))?;
        let centred = cx.p.sub(&dy, &total)?;
        Ok(vec![Some(cx.p.mul_fixed(y, &centred)?)])
    }
}

/// The input's shape, when it has a batch axis and a non-empty last axis.
pub(crate) fn last_axis_rows(input: &[usize]) -> std::result::Result<Vec<usize>, String> {
    match input {
        [_, .., k] if *k > 0 => Ok(input.to_vec()),
        other => Err(format!("needs [N, .., K] with K > 0, got {other:?}")),
    }
}

/// ONNX `Softmax` over any axis but the batch's (opset 13 and later; before, a softmax of
/// the input flattened from the axis on, which is the same for the last axis), and
/// `LogSoftmax` over the last axis of `[N, K]`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let rank = im.shape(x).len() as i64;
    let axis = attr_int(node, "axis", -1);
    let last = axis == -1 || axis == rank - 1;
    if node.op_type == "LogSoftmax" && !(rank == 2 && last) {
        return Err(bad(
            node,
            format!(
                "only over axis 1 of [N, K] is supported, got axis {axis} of {}",
                im.describe(x)
            ),
        ));
    }
    let index = if axis < 0 { axis + rank } else { axis };
    let opset_13 = im.opset() >= 13;
    if rank < 2
        || !(0..rank).contains(&index)
        || im.is_batch_axis(x, index as usize)
        || (!last && !opset_13)
    {
        return Err(bad(
            node,
            format!(
                "axis {axis} of {} is not supported (a non-batch axis; before opset 13 only \
                 the last)",
                im.describe(x)
            ),
        ));
    }
    if node.op_type == "LogSoftmax" {
        im.unary(node, LogSoftmax)
    } else {
        let axis = (!last).then_some(index as usize);
        im.unary(node, Softmax { axis })
    }
}
