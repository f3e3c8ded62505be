//! `Clip`: `min(max(x, lo), hi)` (ReLU6 is `Clip(0, 6)`); ONNX `Clip` (bounds as inputs
//! from opset 11, attributes before). With lo > hi the output is hi everywhere, as in ONNX.
//!
//! Privately, `out = x + [x ≤ lo]·(lo − x) + [x > hi]·(hi − x)` (for lo ≤ hi the two bits
//! are never both 1): both bits in one MSB call on the stacked differences, both
//! injections in one `mul_bit`, so a clip costs the rounds of one ReLU (8) and the bytes
//! of a ReLU over one copy of x per bound. The bits compare x with the bounds clamped into the
//! comparison domain (`cryptgpu_nonlinear::lt_threshold_bounds`, `gt_threshold_bounds`),
//! so they are exact for every x in the domain whatever the bounds (a bound beyond the
//! domain never binds there), and the injected differences use the true bounds, so a
//! binding bound comes out exactly. A bound that is absent, infinite, or beyond the
//! fixed-point range on its side clamps nothing. The gradient passes where lo < x ≤ hi
//! (ties go to the lower side, as in ReLU); the plaintext executor uses the same.

use cryptgpu_nonlinear as nl;
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::SharedBits;

use super::common::*;

/// Clamps to `[min, max]`; either bound may be absent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clip {
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
}

impl Clip {
    /// ReLU6.
    pub fn relu6() -> Self {
        Self {
            min: Some(0.0),
            max: Some(6.0),
        }
    }

    /// The bounds that can bind for values of `fixed`: a lower bound at or below the
    /// fixed-point range, or an upper one at or above it, clamps nothing (NaN neither).
    fn binding(&self, fixed: FixedPoint) -> (Option<f64>, Option<f64>) {
        let max = fixed.max_abs();
        (
            self.min.filter(|&lo| lo > -max),
            self.max.filter(|&hi| hi < max),
        )
    }
}

/// Stacks tensors of one shape `s` along a new leading axis: `[k, ..s]` (local).
fn stack<B: GpuBackend, T: Transport>(p: &Party<B, T>, xs: &[Rss<B>]) -> Result<Rss<B>> {
    let one = |x: &Rss<B>| {
        let mut shape = vec![1];
        shape.extend(x.shape());
        p.linear(x, |b, t| b.reshape(t, &shape))
    };
    let rows = xs
        .iter()
        .map(one)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(p.concat(&rows.iter().collect::<Vec<_>>(), 0)?)
}

impl Attributes for Clip {
    fn write_attrs(&self, a: &mut Attrs) {
        if let Some(lo) = self.min {
            a.set("min", lo);
        }
        if let Some(hi) = self.max {
            a.set("max", hi);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let get = |k| a.has(k).then(|| a.number(k)).transpose();
        Ok(Self {
            min: get("min")?,
            max: get("max")?,
        })
    }
}

impl Layer for Clip {
    const KIND: &'static str = "Clip";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let (lo, hi) = (self.min.unwrap_or(f64::MIN), self.max.unwrap_or(f64::MAX));
        cx.map(x[0], |v| v.max(lo).min(hi))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let (lo, hi) = (self.min.unwrap_or(f64::MIN), self.max.unwrap_or(f64::MAX));
        let x = cx.inputs[0];
        cx.elementwise_grad(x, dy, |v, g| if v > lo && v <= hi { g } else { 0.0 })
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Clip";
        match self.min {
            Some(lo) => n.constant_input("min", Tensor::new(&[], vec![lo])?),
            None => n.inputs.push(String::new()),
        }
        if let Some(hi) = self.max {
            n.constant_input("max", Tensor::new(&[], vec![hi])?);
        }
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Clip {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let x = x[0];
        let fixed = cx.p.fixed();
        let (lo, hi) = self.binding(fixed);
        if let (Some(lo), Some(hi)) = (lo, hi)
            && lo > hi
        {
            // min(max(x, lo), hi) = hi everywhere: a public constant.
            cx.save(None::<SharedBits<B>>);
            return Ok(cx.p.constant_f64(&vec![hi; x.len()], x.shape())?);
        }
        let l = cx.p.comparison_bits();
        let minus_x = cx.p.neg(x)?;
        // Per bound: the difference whose MSB is the bit, and the bound's true encoding.
        let mut diffs = Vec::new();
        let mut moves = Vec::new();
        if let Some(lo) = lo {
            // [x ≤ lo] = [x < lo + 1] = msb(x − c) with c clamped as `lt_public` does.
            let exact = fixed.encode(lo)?;
            let (a, b) = nl::lt_threshold_bounds(l);
            let c = (exact as i64).saturating_add(1).clamp(a, b);
            diffs.push(cx.p.add_scalar(x, (c as u64).wrapping_neg())?);
            moves.push(cx.p.add_scalar(&minus_x, exact)?);
        }
        if let Some(hi) = hi {
            // [x > hi] = msb(c − x) with c clamped as `gt_public` does.
            let exact = fixed.encode(hi)?;
            let (a, b) = nl::gt_threshold_bounds(l);
            let c = (exact as i64).clamp(a, b);
            diffs.push(cx.p.add_scalar(&minus_x, c as u64)?);
            moves.push(cx.p.add_scalar(&minus_x, exact)?);
        }
        if diffs.is_empty() {
            return Ok(x.clone());
        }
        let bits = cx.p.msb(&stack(cx.p, &diffs)?)?;
        let moved = cx.p.mul_bit(&bits, &stack(cx.p, &moves)?)?;
        let total = cx.p.linear(&moved, |b, t| b.sum_axis(t, 0))?;
        cx.save(Some(bits));
        Ok(cx.p.add(x, &total)?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        if self.binding(cx.p.fixed()) == (None, None) {
            return Ok(vec![Some(dy)]);
        }
        let Some(bits) = cx.saved::<Option<SharedBits<B>>>()? else {
            // A constant output (lo > hi): no gradient.
            return Ok(vec![Some(cx.p.sub(&dy, &dy)?)]);
        };
        // dy where neither bit is set: dy − Σ_k bit_k·dy (the bits are disjoint).
        let copies = vec![dy.clone(); bits.shape()[0]];
        let stacked = stack(cx.p, &copies)?;
        let routed = cx.p.mul_bit(bits, &stacked)?;
        let blocked = cx.p.linear(&routed, |b, t| b.sum_axis(t, 0))?;
        Ok(vec![Some(cx.p.sub(&dy, &blocked)?)])
    }
}

/// ONNX `Clip`: bounds from inputs 1 and 2 (opset 11+) or the `min`/`max` attributes.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    if node.op_type != "Clip" {
        return import_hard(im, node);
    }
    // Exporters write an absent bound as ±FLT_MAX (or ±inf): no bound.
    let bound = |im: &dyn ImportGraph, i: usize, attr: &str| -> Result<Option<f64>> {
        let value = match im.constant(node, i)? {
            Some(t) => match t.values[..] {
                [v] => Some(v),
                _ => return Err(bad(node, format!("bound {i} is not a scalar"))),
            },
            None => node
                .attribute(attr)
                .map(|_| f64::from(attr_float(node, attr, 0.0))),
        };
        Ok(value.filter(|v| v.abs() < 1e30))
    };
    let clip = Clip {
        min: bound(im, 1, "min")?,
        max: bound(im, 2, "max")?,
    };
    im.unary(node, clip)
}

/// ONNX `HardSigmoid` (max(0, min(1, αx + β))) and `HardSwish` (x · HardSigmoid(x) with α
/// = 1/6, β = 1/2; MobileNetV3): the clip moved before the affine map, α·Clip(x, −β/α,
/// (1 − β)/α) + β, so a clip (8 rounds), a product by α (2) and for HardSwish one product
/// by x (2).
fn import_hard(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let swish = node.op_type == "HardSwish";
    let (alpha, beta) = if swish {
        (1.0 / 6.0, 0.5)
    } else {
        (
            f64::from(attr_float(node, "alpha", 0.2)),
            f64::from(attr_float(node, "beta", 0.5)),
        )
    };
    if !(alpha.is_finite() && beta.is_finite() && alpha != 0.0) {
        return Err(bad(
            node,
            format!("alpha {alpha} and beta {beta}: need α ≠ 0"),
        ));
    }
    let x = im.input_node(node, 0)?;
    let name = im.node_name(node, None);
    let (lo, hi) = (-beta / alpha, (1.0 - beta) / alpha);
    let clip = Clip {
        min: Some(lo.min(hi)),
        max: Some(lo.max(hi)),
    };
    let clipped = im.push_internal(format!("{name}.clip"), clip, &[x])?;
    let scaled = super::mul_const::push_scale(
        im,
        &format!("{name}.scale"),
        Tensor::new(&[], vec![alpha])?,
        clipped,
    )?;
    let gate = super::add_const::push_offset(
        im,
        &format!("{name}.shift"),
        Tensor::new(&[], vec![beta])?,
        scaled,
    )?;
    if swish {
        im.push(node, name, super::mul::Mul, &[x, gate])?;
    } else {
        im.alias(node, gate);
    }
    Ok(())
}
