//! `CausalMask`: attention scores `[.., L, L]` with the entries above the diagonal (a key
//! after its query) replaced by `fill`, a public structure of the network (GPT-2's
//! causal attention). Local on shares: a product by the public 0/1 mask (integers, no
//! truncation) and the public fill added. The fill's default, −128, takes softmax's exp
//! to exactly 0 while keeping its inputs in exp's domain. An ONNX `Where` on a constant
//! mask is imported as the model owner's constants instead
//! ([`super::mul_const::MulConst`]).

use cryptgpu_share::Bilinear;

use super::common::*;

/// Scores above the diagonal of the last two axes set to `fill`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CausalMask {
    /// What a masked score becomes.
    pub fill: f64,
}

impl Default for CausalMask {
    fn default() -> Self {
        Self { fill: -128.0 }
    }
}

impl Attributes for CausalMask {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("fill", self.fill);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let fill = a.number("fill")?;
        if !fill.is_finite() {
            return Err(a.err(format!("`fill` {fill} must be finite")));
        }
        Ok(Self { fill })
    }
}

/// Whether entry `i` of a row-major `[.., l, l]` value is kept (key at or before query).
fn kept(i: usize, l: usize) -> bool {
    i % l <= i / l % l
}

impl Layer for CausalMask {
    const KIND: &'static str = "CausalMask";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        match inputs[0] {
            [_, .., q, k] if q == k => Ok(inputs[0].to_vec()),
            other => Err(format!("needs square scores [N, .., L, L], got {other:?}")),
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let l = x[0].shape()[x[0].shape().len() - 1];
        let y = x[0]
            .data()
            .iter()
            .enumerate()
            .map(|(i, &v)| if kept(i, l) { v } else { self.fill })
            .collect();
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let l = dy.shape()[dy.shape().len() - 1];
        let dx = dy
            .data()
            .iter()
            .enumerate()
            .map(|(i, &g)| if kept(i, l) { g } else { 0.0 })
            .collect();
        Ok(vec![cx.like_input(0, dx)?])
    }
}

impl CausalMask {
    /// The public 0/1 mask and the public fill of shape `shape`, on the party's backend.
    fn public<B: GpuBackend, T: Transport>(
        &self,
        p: &Party<B, T>,
        shape: &[usize],
    ) -> Result<(B::Tensor, B::Tensor)> {
        let l = shape[shape.len() - 1];
        let n: usize = shape.iter().product();
        let fill = p.fixed().encode(self.fill)?;
        let (mut keep, mut add) = (vec![0u64; n], vec![0u64; n]);
        for i in 0..n {
            if kept(i, l) {
                keep[i] = 1;
            } else {
                add[i] = fill;
            }
        }
        let b = p.backend();
        Ok((b.upload(&keep, shape)?, b.upload(&add, shape)?))
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for CausalMask {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let (keep, fill) = self.public(cx.p, x[0].shape())?;
        let kept = cx.p.apply_public(Bilinear::Mul, x[0], &keep)?;
        Ok(cx.p.add_public(&kept, &fill)?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let (keep, _) = self.public(cx.p, dy.shape())?;
        Ok(vec![Some(cx.p.apply_public(Bilinear::Mul, &dy, &keep)?)])
    }
}
