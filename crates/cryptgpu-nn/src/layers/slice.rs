//! `Slice`: the entries `start..end` of one non-batch axis (step 1); ONNX `Slice` of a
//! computed value with constant bounds, and `Split` (each output a slice: ShuffleNet's
//! channel split). Local on shares; the backward pass pads the gradient with zeros.

use super::common::*;

/// Entries `start..end` along `axis` (not the batch's: axis 0 where the batch is first; the
/// importer checks where it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slice {
    /// The axis, batch axis = 0.
    pub axis: usize,
    /// First entry kept.
    pub start: usize,
    /// One past the last entry kept.
    pub end: usize,
}

impl Slice {
    /// (outer, extent, inner) of `shape` around the axis.
    fn split(&self, shape: &[usize]) -> (usize, usize, usize) {
        let outer = shape[..self.axis].iter().product();
        let inner = shape[self.axis + 1..].iter().product();
        (outer, shape[self.axis], inner)
    }
}

impl Attributes for Slice {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("axis", self.axis);
        a.set("start", self.start);
        a.set("end", self.end);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            axis: a.dim("axis")?,
            start: a.dim("start")?,
            end: a.dim("end")?,
        })
    }
}

impl Layer for Slice {
    const KIND: &'static str = "Slice";

    /// Split's parts.
    const ONNX_EXTRA_OUTPUTS: bool = true;

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = inputs[0];
        if self.axis >= x.len() {
            return Err(format!("axis {} is not an axis of {x:?}", self.axis));
        }
        if self.start >= self.end || self.end > x[self.axis] {
            return Err(format!(
                "range {}..{} is empty or outside axis {} of {x:?}",
                self.start, self.end, self.axis
            ));
        }
        let mut out = x.to_vec();
        out[self.axis] = self.end - self.start;
        Ok(out)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let (outer, extent, inner) = self.split(x[0].shape());
        let mut y = Vec::with_capacity(cx.out_shape.iter().product());
        for o in 0..outer {
            let base = o * extent * inner;
            y.extend_from_slice(&x[0].data()[base + self.start * inner..base + self.end * inner]);
        }
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let (outer, extent, inner) = self.split(cx.inputs[0].shape());
        let kept = (self.end - self.start) * inner;
        let mut dx = vec![0.0; cx.inputs[0].len()];
        for o in 0..outer {
            let base = o * extent * inner + self.start * inner;
            dx[base..base + kept].copy_from_slice(&dy.data()[o * kept..(o + 1) * kept]);
        }
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Slice";
        let t = |v: usize| Tensor::new(&[1], vec![v as f64]);
        n.constant_input("starts", t(self.start)?);
        n.constant_input("ends", t(self.end)?);
        n.constant_input("axes", t(self.axis)?);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Slice {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        Ok(cx
            .p
            .linear(x[0], |b, t| b.slice(t, self.axis, self.start..self.end))?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let full = cx.input_shapes[0].clone();
        let (axis, start, end) = (self.axis, self.start, self.end);
        let dx = cx.p.linear(&dy, |b, t| {
            let zeros = |k: usize| {
                let mut s = full.clone();
                s[axis] = k;
                b.zeros(&s)
            };
            let before = (start > 0).then(|| zeros(start)).transpose()?;
            let after = (end < full[axis])
                .then(|| zeros(full[axis] - end))
                .transpose()?;
            let parts: Vec<&B::Tensor> = before.iter().chain([t]).chain(after.iter()).collect();
            b.concat(&parts, axis)
        })?;
        Ok(vec![Some(dx)])
    }
}

/// The axis of a node attribute or input, made non-negative for rank `rank`.
/// `axis` of node `x` (negative from the end), when it is an axis and not the batch's.
fn axis_in(im: &dyn ImportGraph, node: &NodeProto, x: NodeId, axis: i64) -> Result<usize> {
    let rank = im.shape(x).len();
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank || im.is_batch_axis(x, a as usize) {
        return Err(bad(
            node,
            format!("axis {axis} is not a non-batch axis of {}", im.describe(x)),
        ));
    }
    Ok(a as usize)
}

/// ONNX `Slice` of a computed value (constant starts, ends, axes; steps of 1; one or more
/// axes, each a node) and `Split` (sizes from input 1 or the `split` attribute, else equal
/// parts; one slice per output).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    if node.op_type == "Gather" {
        return import_gather(im, node);
    }
    let x = im.input_node(node, 0)?;
    let shape = im.shape(x).to_vec();
    if node.op_type == "Split" {
        let axis = axis_in(im, node, x, attr_int(node, "axis", 0))?;
        let outputs: Vec<usize> = (0..node.outputs.len()).collect();
        let sizes: Vec<usize> = match im.constant(node, 1)? {
            Some(t) => t.values.iter().map(|&v| v.max(0.0) as usize).collect(),
            None => match attr_ints(node, "split") {
                Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
                None => {
                    let k = outputs.len().max(1);
                    let part = shape[axis].div_ceil(k);
                    (0..k)
                        .map(|i| part.min(shape[axis].saturating_sub(i * part)))
                        .collect()
                }
            },
        };
        if sizes.len() != outputs.len() || sizes.iter().sum::<usize>() != shape[axis] {
            return Err(bad(
                node,
                format!(
                    "split {sizes:?} does not cover axis {axis} of {shape:?} in {} parts",
                    outputs.len()
                ),
            ));
        }
        let mut start = 0;
        for (i, size) in sizes.into_iter().enumerate() {
            let name = im.node_name(node, None);
            let layer = Slice {
                axis,
                start,
                end: start + size,
            };
            let id = im.push_internal(name, layer, &[x])?;
            im.set_output(node, i, Value::Node(id));
            start += size;
        }
        return Ok(());
    }
    let ints = |i: usize, attr: &str| -> Result<Option<Vec<i64>>> {
        Ok(match im.constant(node, i)? {
            Some(t) => Some(t.values.iter().map(|&v| v as i64).collect()),
            None => attr_ints(node, attr),
        })
    };
    let starts = ints(1, "starts")?.ok_or_else(|| bad(node, "has no starts"))?;
    let ends = ints(2, "ends")?.ok_or_else(|| bad(node, "has no ends"))?;
    let axes = ints(3, "axes")?.unwrap_or_else(|| (0..starts.len() as i64).collect());
    if let Some(steps) = ints(4, "")?
        && steps.iter().any(|&s| s != 1)
    {
        return Err(bad(
            node,
            format!("steps {steps:?} are not supported (1 is)"),
        ));
    }
    let mut current = x;
    let mut layers = Vec::new();
    for ((&s, &e), &a) in starts.iter().zip(&ends).zip(&axes) {
        let axis = axis_in(im, node, x, a)?;
        let n = shape[axis] as i64;
        let fix = |v: i64| (if v < 0 { v + n } else { v }).clamp(0, n) as usize;
        let (start, end) = (fix(s), fix(e));
        if (start, end) != (0, shape[axis]) {
            layers.push(Slice { axis, start, end });
        }
    }
    if layers.is_empty() {
        im.alias(node, x);
        return Ok(());
    }
    let last = layers.len() - 1;
    for (i, layer) in layers.into_iter().enumerate() {
        let name = im.node_name(node, None);
        current = if i == last {
            im.push(node, name, layer, &[current])?
        } else {
            im.push_internal(name, layer, &[current])?
        };
    }
    Ok(())
}

/// ONNX `Gather` of a computed value by constant indices along a non-batch axis: one index
/// (`x[:, 0]`, a class token's row) is a slice with the axis dropped, a run of consecutive
/// indices a slice. (A lookup in a constant table by the model's input is an embedding:
/// [`super::embedding`].)
fn import_gather(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    if let (Ok(Some(_)), Some(Value::Node(_))) = (
        im.constant(node, 0),
        node.inputs.get(1).and_then(|n| im.value(n)),
    ) {
        return super::embedding::import(im, node);
    }
    let x = im.input_node(node, 0)?;
    let shape = im.shape(x).to_vec();
    let axis = axis_in(im, node, x, attr_int(node, "axis", 0))?;
    let indices = im
        .constant(node, 1)?
        .ok_or_else(|| bad(node, "needs constant indices"))?;
    let n = shape[axis] as i64;
    let idx: Vec<usize> = indices
        .values
        .iter()
        .map(|&v| {
            let i = v as i64;
            let j = if i < 0 { i + n } else { i };
            if (0..n).contains(&j) {
                Ok(j as usize)
            } else {
                Err(bad(
                    node,
                    format!("index {i} is out of range for axis {axis}"),
                ))
            }
        })
        .collect::<Result<_>>()?;
    let Some(&start) = idx.first() else {
        return Err(bad(node, "has no indices"));
    };
    if indices.dims.len() > 1 || idx.iter().enumerate().any(|(k, &i)| i != start + k) {
        return Err(bad(
            node,
            "only a single index or a run of consecutive indices is supported",
        ));
    }
    let layer = Slice {
        axis,
        start,
        end: start + idx.len(),
    };
    let name = im.node_name(node, None);
    if !indices.dims.is_empty() {
        im.push(node, name, layer, &[x])?;
        return Ok(());
    }
    let sliced = im.push_internal(format!("{name}.slice"), layer, &[x])?;
    let mut out = im.shape(sliced).to_vec();
    out.remove(axis);
    let id = super::reshape::reshape_to(im, name, false, sliced, &out).map_err(|e| bad(node, e))?;
    im.alias(node, id);
    Ok(())
}
