//! `Linear`: `y = x Wᵀ + b` over the last axis of `[N, ..., in]`; ONNX `Gemm` (any
//! `transB`, `alpha` and `beta`) and `MatMul` by a constant (with an `Add` of a bias folded
//! in by [`super::add`]); a `MatMul` of two computed values is a [`super::matmul::MatMul`].

use super::common::*;
use crate::plain::ops;

/// A fully connected layer; weight `[out, in]`, optional bias `[out]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether the node has a `bias` parameter.
    pub bias: bool,
}

impl Linear {
    /// A linear layer.
    pub fn new(in_features: usize, out_features: usize, bias: bool) -> Self {
        Self {
            in_features,
            out_features,
            bias,
        }
    }

    fn rows(&self, shape: &[usize]) -> usize {
        shape[..shape.len() - 1].iter().product()
    }
}

impl Attributes for Linear {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("in_features", self.in_features);
        a.set("out_features", self.out_features);
        a.set("bias", self.bias);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            in_features: a.dim("in_features")?,
            out_features: a.dim("out_features")?,
            bias: a.boolean("bias")?,
        })
    }
}

impl Layer for Linear {
    const KIND: &'static str = "Linear";

    fn params(&self) -> Vec<ParamDecl> {
        let shape = vec![self.out_features, self.in_features];
        ParamDecl::weight_and_bias(shape, self.bias, self.in_features)
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        match inputs[0] {
            [rest @ .., f] if !rest.is_empty() && *f == self.in_features => {
                let mut out = rest.to_vec();
                out.push(self.out_features);
                Ok(out)
            }
            other => Err(format!(
                "expects [N, ..., {}], got {other:?} (flatten first?)",
                self.in_features
            )),
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let weight = cx.param("weight")?.data();
        let bias = if self.bias {
            Some(cx.param("bias")?.data())
        } else {
            None
        };
        let rows = self.rows(x.shape());
        cx.output(ops::linear(
            x.data(),
            weight,
            bias,
            rows,
            self.in_features,
            self.out_features,
        ))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let weight = cx.param("weight")?;
        let shape = weight.shape().to_vec();
        let rows = self.rows(x.shape());
        let (dx, dw, db) = ops::linear_backward(
            x.data(),
            weight.data(),
            dy.data(),
            rows,
            self.in_features,
            self.out_features,
        );
        cx.grad("weight", Tensor::new(&shape, dw)?);
        if self.bias {
            cx.grad("bias", Tensor::new(&[self.out_features], db)?);
        }
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        if n.input_shapes[0].len() > 2 {
            // Gemm takes matrices only: MatMul by the transposed weight, then the bias, as
            // PyTorch writes a Linear on [N, ..., in].
            n.op_type = "MatMul";
            let w = n.model.param_by_name(&format!("{}.weight", n.name))?;
            let (o, i) = (self.out_features, self.in_features);
            let t = transpose_matrices(w.data(), o, i);
            n.constant_input("weight_t", Tensor::new(&[i, o], t)?);
            n.replaced.push(format!("{}.weight", n.name));
            if self.bias {
                n.then = Some(("Add", vec![format!("{}.bias", n.name)]));
            }
            return Ok(());
        }
        n.op_type = "Gemm";
        n.param_input("weight");
        if self.bias {
            n.param_input("bias");
        }
        n.float("alpha", 1.0);
        n.float("beta", 1.0);
        n.int("transB", 1);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Linear {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let rows = self.rows(x[0].shape());
        let x =
            cx.p.linear(x[0], |b, t| b.reshape(t, &[rows, self.in_features]))?;
        let w_t =
            cx.p.linear(cx.param("weight")?, |b, t| b.transpose(t, 0, 1))?;
        let y = cx.p.matmul_fixed(&x, &w_t)?;
        cx.save(x);
        let y = if self.bias {
            let spread = private_broadcast(cx.p, cx.param("bias")?, y.shape())?;
            cx.p.add(&y, &spread)?
        } else {
            y
        };
        cx.reshape_to_output(&y)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let x: &Rss<B> = cx.saved()?;
        let rows = x.shape()[0];
        let dy =
            cx.p.linear(&dy, |b, t| b.reshape(t, &[rows, self.out_features]))?;
        let dy_t = cx.p.linear(&dy, |b, t| b.transpose(t, 0, 1))?;
        let dw = cx.p.matmul_fixed(&dy_t, x)?;
        cx.grad("weight", dw);
        if self.bias {
            let db = cx.p.linear(&dy, |b, t| b.sum_axis(t, 0))?;
            cx.grad("bias", db);
        }
        if !cx.wants(0) {
            return Ok(vec![None]);
        }
        let dx = cx.p.matmul_fixed(&dy, cx.param("weight")?)?;
        Ok(vec![Some(cx.reshape_to_input(0, &dx)?)])
    }
}

/// ONNX `Gemm` (`alpha·A·op(B) + beta·C`, A the activations) and `MatMul` by a constant.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let gemm = node.op_type == "Gemm";
    if gemm && attr_int(node, "transA", 0) != 0 {
        return Err(bad(
            node,
            "transA = 1 (the activations transposed) is not supported",
        ));
    }
    let x = im.input_node(node, 0)?;
    let w = match im.constant(node, 1) {
        Ok(Some(w)) => w,
        _ if !gemm => return super::matmul::import(im, node),
        _ => {
            return Err(bad(
                node,
                "the second operand must be a constant (Gemm of two computed values is not \
                 supported; MatMul is)",
            ));
        }
    };
    let &[r, k] = &w.dims[..] else {
        return Err(bad(node, format!("weight dims {:?} are not 2-d", w.dims)));
    };
    // PyTorch's layout is [out, in]: Gemm with transB = 1 stores it so; MatMul and
    // transB = 0 store [in, out].
    let trans_b = gemm && attr_int(node, "transB", 0) != 0;
    let (out_features, in_features) = if trans_b {
        (r as usize, k as usize)
    } else {
        (k as usize, r as usize)
    };
    let mut weight = if trans_b {
        Tensor::new(&[out_features, in_features], w.values.clone())?
    } else {
        Tensor::new(
            &[out_features, in_features],
            transpose_matrices(&w.values, in_features, out_features),
        )?
    };
    let alpha = if gemm {
        f64::from(attr_float(node, "alpha", 1.0))
    } else {
        1.0
    };
    if alpha != 1.0 {
        weight.data_mut().iter_mut().for_each(|v| *v *= alpha);
    }
    let c = if gemm { im.constant(node, 2)? } else { None };
    let beta = f64::from(attr_float(node, "beta", 1.0));
    let bias = match &c {
        None => None,
        Some(c) if c.values.len() == out_features => {
            Some(c.values.iter().map(|v| v * beta).collect::<Vec<_>>())
        }
        Some(c) if c.values.len() == 1 => Some(vec![c.values[0] * beta; out_features]),
        Some(c) => {
            return Err(bad(
                node,
                format!("bias dims {:?} do not fit {out_features} outputs", c.dims),
            ));
        }
    };
    if !gemm && im.shape(x).len() < 2 {
        return Err(bad(node, "needs an input with a batch axis"));
    }
    let name = im.node_name(node, Some(&w.name));
    im.insert_param(&name, "weight", weight);
    if let Some(bias) = &bias {
        im.insert_param(&name, "bias", Tensor::new(&[out_features], bias.clone())?);
    }
    let layer = Linear::new(in_features, out_features, bias.is_some());
    im.push(node, name, layer, &[x])?;
    Ok(())
}

/// `Add(x, bias)` right after a bias-less [`Linear`] with no other consumer becomes that
/// layer's bias (how exporters write a `Linear` on `[N, ..., in]`: `MatMul` then `Add`);
/// returns whether it did.
pub(crate) fn fold_bias(
    im: &mut dyn ImportGraph,
    node: &NodeProto,
    x: NodeId,
    bias: &[f64],
) -> Result<bool> {
    let consumers = im.consumers(x);
    let Some(l) = im.layer_mut(x).downcast_mut::<Linear>() else {
        return Ok(false);
    };
    if l.bias || consumers != 0 || bias.len() != l.out_features {
        return Ok(false);
    }
    l.bias = true;
    let name = im.name_of(x).to_owned();
    im.insert_param(&name, "bias", Tensor::new(&[bias.len()], bias.to_vec())?);
    im.alias(node, x);
    Ok(true)
}
