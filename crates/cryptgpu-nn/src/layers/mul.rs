//! `Mul`: the elementwise product of two values with NumPy broadcasting (`x *
//! torch.sigmoid(y)`, squeeze-and-excitation); ONNX `Mul` and `Div`. A product or quotient
//! by a constant becomes a [`MulConst`]. Privately one fixed-point product (2 rounds).

use super::common::*;
use super::mul_const::MulConst;

/// `a · b`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mul;

impl NoAttributes for Mul {}

impl Layer for Mul {
    const KIND: &'static str = "Mul";

    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        broadcast_inputs(inputs)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.zip_broadcast(x[0], x[1], |u, v| u * v)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let shape = dy.shape();
        let a = plain_broadcast(cx.inputs[0], shape)?;
        let b = plain_broadcast(cx.inputs[1], shape)?;
        let times = |t: &Tensor| -> Result<Tensor> {
            Tensor::new(
                shape,
                dy.data().iter().zip(t.data()).map(|(g, v)| g * v).collect(),
            )
        };
        Ok(vec![
            plain_reduce_to(&times(&b)?, cx.inputs[0].shape())?,
            plain_reduce_to(&times(&a)?, cx.inputs[1].shape())?,
        ])
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Mul {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let a = private_broadcast(cx.p, x[0], cx.out_shape)?;
        let b = private_broadcast(cx.p, x[1], cx.out_shape)?;
        let y = cx.p.mul_fixed(&a, &b)?;
        cx.save((a, b));
        Ok(y)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let (a, b): &(Rss<B>, Rss<B>) = cx.saved()?;
        let (a, b) = (a.clone(), b.clone());
        let shapes = cx.input_shapes.clone();
        let mut grads = Vec::new();
        for (i, other) in [(0, &b), (1, &a)] {
            grads.push(if cx.wants(i) {
                let g = cx.p.mul_fixed(&dy, other)?;
                Some(private_reduce_to(cx.p, &g, &shapes[i])?)
            } else {
                None
            });
        }
        Ok(grads)
    }
}

/// ONNX `Mul` and `Div`: of two graph values (a quotient of two is not supported); by a
/// constant ([`MulConst`], a quotient by its reciprocal).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let div = node.op_type == "Div";
    let consts = [
        im.constant(node, 0).ok().flatten(),
        im.constant(node, 1).ok().flatten(),
    ];
    match &consts {
        [None, None] if div => {
            // a / sqrt(v): a product by 1/sqrt(v).
            let a = im.input_node(node, 0)?;
            let b = im.input_node(node, 1)?;
            let Some(v) = super::sqrt::sqrt_operand(im, b) else {
                return Err(bad(
                    node,
                    "a quotient of two computed values is supported only by a square root \
                     (a / sqrt(v)); otherwise divide by a constant",
                ));
            };
            let name = im.node_name(node, None);
            let inverse =
                im.push_internal(format!("{name}.inv_sqrt"), super::inv_sqrt::InvSqrt, &[v])?;
            im.push(node, name, Mul, &[a, inverse])?;
            Ok(())
        }
        [None, None] => {
            let a = im.input_node(node, 0)?;
            let b = im.input_node(node, 1)?;
            let name = im.node_name(node, None);
            im.push(node, name, Mul, &[a, b])?;
            Ok(())
        }
        [Some(_), None] if div => Err(bad(
            node,
            "dividing a constant by a computed value is not supported",
        )),
        [Some(c), None] | [None, Some(c)] => {
            let c = c.clone();
            let x = im.input_node(node, usize::from(consts[0].is_some()))?;
            let mut values = c.values.clone();
            if div {
                if values.contains(&0.0) {
                    return Err(bad(node, "divides by zero"));
                }
                values.iter_mut().for_each(|v| *v = 1.0 / *v);
            }
            let shape: Vec<usize> = c.dims.iter().map(|&d| d as usize).collect();
            let name = im.node_name(node, None);
            im.insert_param(&name, "constant", Tensor::new(&shape, values)?);
            im.push(node, name, MulConst { shape }, &[x])?;
            Ok(())
        }
        [Some(_), Some(_)] => Err(bad(node, "multiplies two constants")),
    }
}
