//! `Reshape`: each example to a new shape, the batch axis kept; ONNX `Reshape` (with 0
//! copying a dimension unless `allowzero`, and −1 inferred), `Squeeze` and `Unsqueeze`
//! of non-batch axes. Shape tensors computed in the graph are folded at import, so the
//! target is a constant by then.

use super::common::*;
use super::flatten::Flatten;
use super::shape::resolve_reshape;

/// Reshape of every example; `[N, ...] → [N, ..shape]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reshape {
    /// The shape of one example.
    pub shape: Vec<usize>,
}

impl Attributes for Reshape {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("shape", self.shape.clone());
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            shape: a.dims("shape")?,
        })
    }
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

    relayout_plain_passes!();

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Reshape";
        let mut target = vec![0.0];
        target.extend(self.shape.iter().map(|&d| d as f64));
        let len = target.len();
        n.constant_input("shape", Tensor::new(&[len], target)?);
        Ok(())
    }
}

relayout_private_passes!(Reshape);

/// ONNX `Reshape`, `Squeeze`, `Unsqueeze` of a graph value (constants are folded by the
/// importer). With the batch first and whole in both shapes, a [`Reshape`] (or a
/// [`Flatten`]); otherwise, with a symbolic batch, a [`super::batch_reshape::BatchReshape`].
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let input = im.shape(x).to_vec();
    let out = match node.op_type.as_str() {
        "Reshape" => {
            let target: Vec<i64> = match im.constant(node, 1)? {
                Some(t) => t.values.iter().map(|&v| v as i64).collect(),
                None => attr_ints(node, "shape").ok_or_else(|| bad(node, "has no target shape"))?,
            };
            // A batch dimension computed from the symbolic batch is the batch itself.
            let target: Vec<i64> = target
                .iter()
                .enumerate()
                .map(|(i, &d)| {
                    if i == 0 && d == im.batch() as i64 && input.first() == Some(&im.batch()) {
                        0
                    } else {
                        d
                    }
                })
                .collect();
            resolve_reshape(&input, &target, attr_int(node, "allowzero", 0) != 0)
                .map_err(|e| bad(node, e))?
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
                    axes = (0..input.len())
                        .filter(|&a| input[a] == 1 && !im.is_batch_axis(x, a))
                        .collect();
                }
                for &a in axes.iter().rev() {
                    if out.get(a) != Some(&1) || im.is_batch_axis(x, a) {
                        return Err(bad(
                            node,
                            format!("cannot squeeze axis {a} of {}", im.describe(x)),
                        ));
                    }
                    out.remove(a);
                }
            } else {
                for &a in &axes {
                    if a > out.len() {
                        return Err(bad(
                            node,
                            format!("cannot unsqueeze axis {a} of {}", im.describe(x)),
                        ));
                    }
                    out.insert(a, 1);
                }
            }
            out
        }
    };
    let name = im.node_name(node, None);
    let id = reshape_to(im, name, false, x, &out).map_err(|e| bad(node, e))?;
    im.alias(node, id);
    Ok(())
}

/// Node `x` reshaped to `out` (its shape at the importer's batch): `x` itself, a
/// [`Flatten`], a [`Reshape`] when the batch stays first and whole, else a
/// [`super::batch_reshape::BatchReshape`] (a symbolic batch only: with a fixed one, where the
/// batch went cannot be told). The node is `name`, made unique first when `unique`.
pub(crate) fn reshape_to(
    im: &mut dyn ImportGraph,
    name: String,
    unique: bool,
    x: NodeId,
    out: &[usize],
) -> Result<NodeId> {
    let input = im.shape(x).to_vec();
    if out == input {
        return Ok(x);
    }
    let batch_first = |shape: &[usize]| shape.first() == Some(&im.batch());
    if batch_first(&input) && batch_first(out) && im.is_batch_axis(x, 0) {
        let probe_elsewhere =
            im.batch() == PROBE_BATCH && out[1..].iter().any(|d| d % PROBE_BATCH == 0);
        if !probe_elsewhere {
            return if out.len() == 2 {
                im.add_layer(name, unique, &Flatten, &[x])
            } else {
                let shape = out[1..].to_vec();
                im.add_layer(name, unique, &Reshape { shape }, &[x])
            };
        }
    }
    if im.batch() != PROBE_BATCH {
        return Err(NnError::Graph(format!(
            "reshaping {input:?} to {out:?} moves the batch axis, which needs a model exported \
             with a dynamic batch axis"
        )));
    }
    let target: Vec<i64> = out
        .iter()
        .map(|&d| {
            if d % PROBE_BATCH == 0 {
                -((d / PROBE_BATCH) as i64)
            } else {
                d as i64
            }
        })
        .collect();
    if target.iter().filter(|&&d| d < 0).count() != 1 {
        return Err(NnError::Graph(format!(
            "reshaping to {out:?} splits or drops the batch axis"
        )));
    }
    let layer = super::batch_reshape::BatchReshape { target };
    im.add_layer(name, unique, &layer, &[x])
}
