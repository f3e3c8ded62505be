//! `Concat`: inputs joined along a non-batch axis (SqueezeNet's fire modules, DenseNet);
//! ONNX `Concat`. Local on shares; the backward pass slices the gradient.

use super::common::*;

/// Joins its inputs along `axis` (≥ 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Concat {
    /// The axis, batch axis = 0.
    pub axis: usize,
}

impl Attributes for Concat {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("axis", self.axis);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            axis: a.dim("axis")?,
        })
    }
}

impl Layer for Concat {
    const KIND: &'static str = "Concat";

    fn arity(&self) -> Arity {
        Arity::AtLeast(1)
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let first = inputs[0];
        if self.axis == 0 || self.axis >= first.len() {
            return Err(format!(
                "axis {} is not a non-batch axis of {first:?}",
                self.axis
            ));
        }
        let mut out = first.to_vec();
        out[self.axis] = 0;
        for s in inputs {
            let same =
                s.len() == first.len() && (0..s.len()).all(|a| a == self.axis || s[a] == first[a]);
            if !same {
                return Err(format!(
                    "inputs {inputs:?} differ outside axis {}",
                    self.axis
                ));
            }
            out[self.axis] += s[self.axis];
        }
        Ok(out)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let outer: usize = x[0].shape()[..self.axis].iter().product();
        let mut data = Vec::with_capacity(cx.out_shape.iter().product());
        for o in 0..outer {
            for t in x {
                let inner = t.len() / outer;
                data.extend_from_slice(&t.data()[o * inner..(o + 1) * inner]);
            }
        }
        cx.output(data)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let outer: usize = dy.shape()[..self.axis].iter().product();
        let mut parts: Vec<Vec<f64>> = cx
            .inputs
            .iter()
            .map(|t| Vec::with_capacity(t.len()))
            .collect();
        let mut pos = 0;
        for _ in 0..outer {
            for (part, t) in parts.iter_mut().zip(&cx.inputs) {
                let inner = t.len() / outer;
                part.extend_from_slice(&dy.data()[pos..pos + inner]);
                pos += inner;
            }
        }
        parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| cx.like_input(i, p))
            .collect()
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Concat";
        n.int("axis", self.axis as i64);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Concat {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        Ok(cx.p.concat(x, self.axis)?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let mut start = 0;
        let mut grads = Vec::new();
        for (i, shape) in cx.input_shapes.clone().iter().enumerate() {
            let end = start + shape[self.axis];
            grads.push(if cx.wants(i) {
                Some(cx.p.linear(&dy, |b, t| b.slice(t, self.axis, start..end))?)
            } else {
                None
            });
            start = end;
        }
        Ok(grads)
    }
}

/// ONNX `Concat` of graph values (constants are folded by the importer).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let inputs: Vec<NodeId> = (0..node.inputs.len())
        .map(|i| im.input_node(node, i))
        .collect::<Result<_>>()?;
    let Some(&first) = inputs.first() else {
        return Err(bad(node, "has no inputs"));
    };
    let rank = im.shape(first).len() as i64;
    let axis = attr_int(node, "axis", 1);
    let axis = if axis < 0 { axis + rank } else { axis };
    if inputs.len() == 1 {
        im.alias(node, inputs[0]);
        return Ok(());
    }
    let name = im.node_name(node, None);
    let axis = axis.max(0) as usize;
    im.push(node, name, Concat { axis }, &inputs)?;
    Ok(())
}
