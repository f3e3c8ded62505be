//! `MatMul`: the matrix product of two computed values `[.., m, k] · [.., k, n]`, batch
//! axes broadcast (NumPy's `matmul`; attention scores, bilinear layers); ONNX `MatMul` of two
//! values (a product by a weight is a [`super::linear::Linear`]). Privately one batched
//! fixed-point product (2 rounds); the backward pass is two more.

use super::common::*;

/// `a · b` over the last two axes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatMul;

/// The operands' shapes broadcast over their batch axes: `(a, b, out)`.
fn shapes(a: &[usize], b: &[usize]) -> std::result::Result<[Vec<usize>; 3], String> {
    if a.len() < 2 || b.len() < 2 {
        return Err(format!(
            "needs two operands of rank 2 or more, got {a:?} and {b:?}"
        ));
    }
    let (ab, am) = a.split_at(a.len() - 2);
    let (bb, bm) = b.split_at(b.len() - 2);
    if am[1] != bm[0] {
        return Err(format!("inner dimensions of {a:?} and {b:?} differ"));
    }
    let batch = broadcast_shapes(ab, bb)
        .ok_or_else(|| format!("batch axes of {a:?} and {b:?} do not broadcast"))?;
    let with = |m: &[usize]| batch.iter().chain(m).copied().collect::<Vec<_>>();
    Ok([with(am), with(bm), with(&[am[0], bm[1]])])
}

/// `[.., r, c] → [.., c, r]` of a plaintext tensor.
fn swap_last(t: &Tensor) -> Result<Tensor> {
    let s = t.shape();
    let (r, c) = (s[s.len() - 2], s[s.len() - 1]);
    let mut shape = s.to_vec();
    let rank = shape.len();
    shape.swap(rank - 2, rank - 1);
    Tensor::new(&shape, transpose_matrices(t.data(), r, c))
}

/// Batched product of equal-batch plaintext tensors.
fn product(a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor> {
    let (sa, sb) = (a.shape(), b.shape());
    let (m, k, n) = (sa[sa.len() - 2], sa[sa.len() - 1], sb[sb.len() - 1]);
    let mut out = vec![0.0; out_shape.iter().product()];
    for ((x, y), z) in a
        .data()
        .chunks(m * k)
        .zip(b.data().chunks(k * n))
        .zip(out.chunks_mut(m * n))
    {
        for i in 0..m {
            for p in 0..k {
                let v = x[i * k + p];
                for j in 0..n {
                    z[i * n + j] += v * y[p * n + j];
                }
            }
        }
    }
    Tensor::new(out_shape, out)
}

impl NoAttributes for MatMul {}

impl Layer for MatMul {
    const KIND: &'static str = "MatMul";

    fn arity(&self) -> Arity {
        Arity::Exactly(2)
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let [_, _, out] = shapes(inputs[0], inputs[1])?;
        Ok(out)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let [sa, sb, out] = shapes(x[0].shape(), x[1].shape()).map_err(NnError::InvalidArgument)?;
        product(
            &plain_broadcast(x[0], &sa)?,
            &plain_broadcast(x[1], &sb)?,
            &out,
        )
        .and_then(|t| cx.output(t.into_data()))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let (a0, b0) = (cx.inputs[0], cx.inputs[1]);
        let [sa, sb, _] = shapes(a0.shape(), b0.shape()).map_err(NnError::InvalidArgument)?;
        let a = plain_broadcast(a0, &sa)?;
        let b = plain_broadcast(b0, &sb)?;
        let da = product(dy, &swap_last(&b)?, &sa)?;
        let db = product(&swap_last(&a)?, dy, &sb)?;
        Ok(vec![
            plain_reduce_to(&da, a0.shape())?,
            plain_reduce_to(&db, b0.shape())?,
        ])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "MatMul";
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for MatMul {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let [sa, sb, _] = shapes(x[0].shape(), x[1].shape()).map_err(NnError::InvalidArgument)?;
        let a = private_broadcast(cx.p, x[0], &sa)?;
        let b = private_broadcast(cx.p, x[1], &sb)?;
        let y = cx.p.matmul_fixed(&a, &b)?;
        cx.save((a, b));
        Ok(y)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let (a, b): &(Rss<B>, Rss<B>) = cx.saved()?;
        let shapes = cx.input_shapes.clone();
        let last = |t: &Rss<B>| t.shape().len() - 1;
        let mut grads = vec![None, None];
        if cx.wants(0) {
            let bt =
                cx.p.linear(b, |be, t| be.transpose(t, last(b) - 1, last(b)))?;
            let da = cx.p.matmul_fixed(&dy, &bt)?;
            grads[0] = Some(private_reduce_to(cx.p, &da, &shapes[0])?);
        }
        if cx.wants(1) {
            let at =
                cx.p.linear(a, |be, t| be.transpose(t, last(a) - 1, last(a)))?;
            let db = cx.p.matmul_fixed(&at, &dy)?;
            grads[1] = Some(private_reduce_to(cx.p, &db, &shapes[1])?);
        }
        Ok(grads)
    }
}

/// ONNX `MatMul` of two computed values (called by [`super::linear::import`]).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let a = im.input_node(node, 0)?;
    let b = im.input_node(node, 1)?;
    let name = im.node_name(node, None);
    im.push(node, name, MatMul, &[a, b])?;
    Ok(())
}
