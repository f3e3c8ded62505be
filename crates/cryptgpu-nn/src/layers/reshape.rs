//! `Reshape`: each example to a new shape, the batch axis kept; ONNX `Reshape` (with 0
//! copying a dimension unless `allowzero`, and −1 inferred), `Squeeze` and `Unsqueeze`
//! of non-batch axes. Shape tensors computed in the graph are folded at import, so the
//! target is a constant by then.

use super::*;
use crate::onnx::{attr_int, attr_ints};

/// Reshape of every example; `[N, ...] → [N, ..shape]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reshape {
    /// The shape of one example.
    pub shape: Vec<usize>,
}

impl Layer for Reshape {
    const KIND: &'static str = "Reshape";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = inputs[0];
        let [n, rest @ ..] = x else {
            return Err("needs a batch axis".into());
        };
        if element_count(rest).is_none() || element_count(rest) != element_count(&self.shape) {
            return Err(format!("cannot reshape {x:?} to [N, {:?}]", self.shape));
        }
        let mut out = vec![*n];
        out.extend(&self.shape);
        Ok(out)
    }

    fn write_attrs(&self, a: &mut Attrs) {
        a.set("shape", self.shape.clone());
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            shape: a.dims("shape")?,
        })
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.output(x[0].data().to_vec())
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![cx.like_input(0, dy.data().to_vec())?])
    }

    fn private_forward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateCx<'_, B, T>,
        x: &[&Rss<B>],
    ) -> Result<Rss<B>> {
        let out = cx.out_shape.to_vec();
        Ok(cx.p.linear(x[0], |b, t| b.reshape(t, &out))?)
    }

    fn private_backward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateBackCx<'_, B, T>,
        dy: Rss<B>,
    ) -> Result<Vec<Option<Rss<B>>>> {
        let shape = cx.input_shapes[0].clone();
        Ok(vec![Some(cx.p.linear(&dy, |b, t| b.reshape(t, &shape))?)])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Reshape";
        let mut target = vec![0.0];
        target.extend(self.shape.iter().map(|&d| d as f64));
        let len = target.len();
        n.constant_input("shape", Tensor::new(&[len], target)?);
        Ok(())
    }
}

/// The full target shape `[N, ...]` of an ONNX `Reshape` of `input` to `target` (0 copies
/// the input's dimension unless `allowzero`, −1 takes what is left), or why it cannot be.
pub(crate) fn resolve_reshape(
    input: &[usize],
    target: &[i64],
    allowzero: bool,
) -> std::result::Result<Vec<usize>, String> {
    let product = |dims: &[usize]| {
        element_count(dims).ok_or_else(|| format!("the shape {dims:?} is too large"))
    };
    let total = product(input)?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or_else(|| format!("0 at axis {i} copies no input axis"))?,
            ),
            d if d >= 0 => out.push(usize::try_from(d).map_err(|_| format!("dimension {d}"))?),
            _ => return Err(format!("invalid target shape {target:?}")),
        }
    }
    if let Some(i) = infer {
        let known = product(&out)?;
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot infer -1 in {target:?} for {input:?}"));
        }
        out[i] = total / known;
    }
    if product(&out)? != total {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(out)
}

/// ONNX `Reshape`, `Squeeze`, `Unsqueeze` of a graph value (constants are folded by the
/// importer). The batch axis must stay first and whole.
pub(crate) fn import(im: &mut Importer, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let input = im.shape(x).to_vec();
    let out = match node.op_type.as_str() {
        "Reshape" => {
            let target: Vec<i64> = match im.constant(node, 1)? {
                Some(t) => t.values.iter().map(|&v| v as i64).collect(),
                None => attr_ints(node, "shape")
                    .ok_or_else(|| Importer::bad(node, "has no target shape"))?,
            };
            // A batch dimension computed from the symbolic batch is the batch itself.
            let target: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if i == 0 && d == im.batch() as i64 {
                        0
                    } else {
                        d
                    }
                })
                .collect();
            resolve_reshape(&input, &target, attr_int(node, "allowzero", 0) != 0)
                .map_err(|e| Importer::bad(node, e))?
        }
        op => {
            let axes: Vec<i64> = match im.constant(node, 1)? {
                Some(t) => t.values.iter().map(|&v| v as i64).collect(),
                None => attr_ints(node, "axes").unwrap_or_default(),
            };
            let squeeze = op == "Squeeze";
            let rank = (input.len() + if squeeze { 0 } else { axes.len() }) as i64;
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&a| (if a < 0 { a + rank } else { a }) as usize)
                .collect();
            axes.sort_unstable();
            let mut out = input.clone();
            if squeeze {
                if axes.is_empty() {
                    axes = (1..input.len()).filter(|&a| input[a] == 1).collect();
                }
                for &a in axes.iter().rev() {
                    if a == 0 || out.get(a) != Some(&1) {
                        return Err(Importer::bad(
                            node,
                            format!("cannot squeeze axis {a} of {input:?}"),
                        ));
                    }
                    out.remove(a);
                }
            } else {
                for &a in &axes {
                    if a == 0 || a > out.len() {
                        return Err(Importer::bad(
                            node,
                            format!("cannot unsqueeze axis {a} of {input:?}"),
                        ));
                    }
                    out.insert(a, 1);
                }
            }
            out
        }
    };
    if out.first() != input.first() {
        return Err(Importer::bad(
            node,
            format!("reshaping {input:?} to {out:?} changes the batch axis"),
        ));
    }
    if out == input {
        im.alias(node, x);
        return Ok(());
    }
    let layer = if out.len() == 2 {
        Op::Flatten(super::flatten::Flatten)
    } else {
        Op::Reshape(Reshape {
            shape: out[1..].to_vec(),
        })
    };
    im.unary(node, layer)
}
