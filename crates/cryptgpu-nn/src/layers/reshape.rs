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
/// importer). The batch axis must stay first and whole.
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
                    if i == 0 && d == im.batch() as i64 {
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
                    axes = (1..input.len()).filter(|&a| input[a] == 1).collect();
                }
                for &a in axes.iter().rev() {
                    if a == 0 || out.get(a) != Some(&1) {
                        return Err(bad(node, format!("cannot squeeze axis {a} of {input:?}")));
                    }
                    out.remove(a);
                }
            } else {
                for &a in &axes {
                    if a == 0 || a > out.len() {
                        return Err(bad(node, format!("cannot unsqueeze axis {a} of {input:?}")));
                    }
                    out.insert(a, 1);
                }
            }
            out
        }
    };
    if out.first() != input.first() {
        return Err(bad(
            node,
            format!("reshaping {input:?} to {out:?} changes the batch axis"),
        ));
    }
    if out == input {
        im.alias(node, x);
        return Ok(());
    }
    if out.len() == 2 {
        im.unary(node, Flatten)
    } else {
        let shape = out[1..].to_vec();
        im.unary(node, Reshape { shape })
    }
}
