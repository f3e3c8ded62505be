//! `Add`: the sum (or difference) of two values with NumPy broadcasting (residual
//! connections); ONNX `Add` and `Sub`. An `Add` of a constant becomes the bias of the
//! bias-less `MatMul` before it, or an [`AddConst`]. Local on shares.

use super::add_const::AddConst;
use super::common::*;
use super::linear::fold_bias;

/// `a + b`, or `a − b` with `subtract`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Add {
    /// Whether the second input is subtracted.
    pub subtract: bool,
}

impl Attributes for Add {
    fn write_attrs(&self, a: &mut Attrs) {
        if self.subtract {
            a.set("subtract", true);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            subtract: a.boolean_or("subtract", false)?,
        })
    }
}

impl Layer for Add {
    const KIND: &'static str = "Add";

    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        broadcast_inputs(inputs)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let sign = if self.subtract { -1.0 } else { 1.0 };
        cx.zip_broadcast(x[0], x[1], |u, v| u + sign * v)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let da = plain_reduce_to(dy, cx.inputs[0].shape())?;
        let mut db = plain_reduce_to(dy, cx.inputs[1].shape())?;
        if self.subtract {
            db.data_mut().iter_mut().for_each(|v| *v = -*v);
        }
        Ok(vec![da, db])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = if self.subtract { "Sub" } else { "Add" };
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Add {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let a = private_broadcast(cx.p, x[0], cx.out_shape)?;
        let b = private_broadcast(cx.p, x[1], cx.out_shape)?;
        Ok(if self.subtract {
            cx.p.sub(&a, &b)?
        } else {
            cx.p.add(&a, &b)?
        })
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let shapes = cx.input_shapes.clone();
        let da = private_reduce_to(cx.p, &dy, &shapes[0])?;
        let db = private_reduce_to(cx.p, &dy, &shapes[1])?;
        let db = if self.subtract { cx.p.neg(&db)? } else { db };
        Ok(vec![Some(da), Some(db)])
    }
}

/// ONNX `Add` and `Sub`: of two graph values; of a value and a constant (a bias folded
/// into the `MatMul` before it where it fits, else [`AddConst`]).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let subtract = node.op_type == "Sub";
    let consts = [
        im.constant(node, 0).ok().flatten(),
        im.constant(node, 1).ok().flatten(),
    ];
    match &consts {
        [None, None] => {
            let a = im.input_node(node, 0)?;
            let b = im.input_node(node, 1)?;
            let name = im.node_name(node, None);
            im.push(node, name, Add { subtract }, &[a, b])?;
        }
        [Some(c), None] | [None, Some(c)] => {
            let c = c.clone();
            let const_first = consts[0].is_some();
            let x = im.input_node(node, usize::from(const_first))?;
            let mut values = c.values.clone();
            if subtract && !const_first {
                values.iter_mut().for_each(|v| *v = -*v);
            }
            if !subtract && fold_bias(im, node, x, &values)? {
                return Ok(());
            }
            let shape: Vec<usize> = c.dims.iter().map(|&d| d as usize).collect();
            let layer = AddConst {
                shape: shape.clone(),
                negate_input: subtract && const_first,
            };
            let name = im.node_name(node, None);
            im.insert_param(&name, "constant", Tensor::new(&shape, values)?);
            im.push(node, name, layer, &[x])?;
        }
        [Some(_), Some(_)] => return Err(bad(node, "adds two constants")),
    }
    Ok(())
}
