//! Comparisons (lt, gt, le, ge between shares and with public values), DReLU, ReLU and its
//! backward pass, absolute value and selection: all built on the MSB carry tree and bit
//! injection of `cryptgpu_share::binary`.
//!
//! # Domain
//!
//! Every comparison here is exact when the values it compares lie in the party's
//! comparison domain [−2^ℓ, 2^ℓ) as signed ring integers, both edges included
//! (`Party::comparison_bits`; by default ℓ = 63 − f, so for f = 20 real values in
//! [−2^23, 2^23)). They read the sign of x − y, y − x or −x, which then lies in
//! [−2^(ℓ+1), 2^(ℓ+1)), where `Party::msb` is exact. A public threshold may be anything:
//! it is clamped into the domain first (for `lt_public` and `ge_public` into
//! [−2^ℓ, 2^ℓ], for `gt_public` and `le_public` into [−2^ℓ − 1, 2^ℓ − 1]), which changes no
//! result for a value of the domain, since a threshold beyond it never binds.
//!
//! Outside the domain the result is silently wrong for some values (the sign read is that
//! of the difference reduced modulo 2^(ℓ+2)), with no error: the owners check their inputs
//! and weights before sharing (`Party::check_comparable`), but values computed inside a
//! network (sums, products) can still leave the domain.

use crate::Result;
use cryptgpu_backend::{GpuBackend, ShiftOp, UnaryOp};
use cryptgpu_share::{Party, Rss, SharedBits};
use cryptgpu_transport::Transport;

/// The interval [lo, hi] a threshold of [`lt_public`] and [`ge_public`] is clamped into
/// for comparison domain ℓ (2 ≤ ℓ ≤ 62): [−2^ℓ, 2^ℓ]. Then x − c ∈ [−2^(ℓ+1), 2^(ℓ+1)) for
/// every x in the domain, and x < c is unchanged.
pub fn lt_threshold_bounds(l: u32) -> (i64, i64) {
    let half = 1i64 << l;
    (-half, half)
}

/// The interval [lo, hi] a threshold of [`gt_public`] and [`le_public`] is clamped into
/// for comparison domain ℓ (2 ≤ ℓ ≤ 62): [−2^ℓ − 1, 2^ℓ − 1]. Then c − x ∈
/// [−2^(ℓ+1), 2^(ℓ+1)) for every x in the domain, and x > c is unchanged.
pub fn gt_threshold_bounds(l: u32) -> (i64, i64) {
    let half = 1i64 << l;
    (-half - 1, half - 1)
}

/// A public tensor of ring elements (read as signed) clamped into [lo, hi] (lo < 0 < hi),
/// with the backend's elementwise ops only (no branch, so bit-exact on every backend):
/// above = c ≥ 0 ∧ c − hi − 1 ≥ 0 and below = c < 0 ∧ c − lo < 0, each as an all-ones
/// mask from an arithmetic shift (neither difference overflows on its side of 0), then
/// c + above·(hi − c) + below·(lo − c).
fn clamp_public<B: GpuBackend>(
    b: &B,
    c: &B::Tensor,
    (lo, hi): (i64, i64),
) -> cryptgpu_backend::Result<B::Tensor> {
    let sign = |t: &B::Tensor| b.shift(ShiftOp::RightArithmetic, t, 63);
    let negative = sign(c)?;
    let at_most_hi = sign(&b.add_scalar(c, (hi as u64).wrapping_add(1).wrapping_neg())?)?;
    let above = b.and(
        &b.unary(UnaryOp::Not, &negative)?,
        &b.unary(UnaryOp::Not, &at_most_hi)?,
    )?;
    let below_lo = sign(&b.add_scalar(c, (lo as u64).wrapping_neg())?)?;
    let below = b.and(&negative, &below_lo)?;
    let minus_c = b.neg(c)?;
    let up = b.and(&b.add_scalar(&minus_c, hi as u64)?, &above)?;
    let down = b.and(&b.add_scalar(&minus_c, lo as u64)?, &below)?;
    b.add(&b.add(c, &up)?, &down)
}

/// x < y for every element. 7 rounds.
pub fn lt<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    y: &Rss<B>,
) -> Result<SharedBits<B>> {
    let d = p.sub(x, y)?;
    Ok(p.msb(&d)?)
}

/// x > y for every element. 7 rounds.
pub fn gt<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    y: &Rss<B>,
) -> Result<SharedBits<B>> {
    lt(p, y, x)
}

/// x ≤ y for every element. 7 rounds.
pub fn le<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    y: &Rss<B>,
) -> Result<SharedBits<B>> {
    let greater = gt(p, x, y)?;
    Ok(p.bits_not(&greater)?)
}

/// x ≥ y for every element. 7 rounds.
pub fn ge<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    y: &Rss<B>,
) -> Result<SharedBits<B>> {
    let less = lt(p, x, y)?;
    Ok(p.bits_not(&less)?)
}

/// x < c for a public tensor c of ring elements (the same for every party), any values:
/// c is clamped into [`lt_threshold_bounds`] first (local). 7 rounds.
pub fn lt_public<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    c: &B::Tensor,
) -> Result<SharedBits<B>> {
    let b = p.backend();
    let c = clamp_public(b, c, lt_threshold_bounds(p.comparison_bits()))?;
    let minus_c = b.neg(&c)?;
    let d = p.add_public(x, &minus_c)?;
    Ok(p.msb(&d)?)
}

/// x > c for a public tensor c, any values: c is clamped into [`gt_threshold_bounds`]
/// first (local). 7 rounds.
pub fn gt_public<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    c: &B::Tensor,
) -> Result<SharedBits<B>> {
    let c = clamp_public(p.backend(), c, gt_threshold_bounds(p.comparison_bits()))?;
    let d = p.add_public(&p.neg(x)?, &c)?;
    Ok(p.msb(&d)?)
}

/// x ≤ c for a public tensor c (any values, as [`gt_public`]). 7 rounds.
pub fn le_public<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    c: &B::Tensor,
) -> Result<SharedBits<B>> {
    let greater = gt_public(p, x, c)?;
    Ok(p.bits_not(&greater)?)
}

/// x ≥ c for a public tensor c (any values, as [`lt_public`]). 7 rounds.
pub fn ge_public<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    c: &B::Tensor,
) -> Result<SharedBits<B>> {
    let less = lt_public(p, x, c)?;
    Ok(p.bits_not(&less)?)
}

/// DReLU(x) = 1 where x > 0, else 0: the MSB of −x. At 0 it is 0, the convention of
/// PyTorch and the plaintext executor (ReLU's gradient at 0 is 0; ReLU's output is the same
/// either way). 7 rounds.
pub fn drelu<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
) -> Result<SharedBits<B>> {
    Ok(p.msb(&p.neg(x)?)?)
}

/// A ReLU's output and the DReLU bits its backward pass needs.
#[derive(Clone, Debug)]
pub struct Relu<B: GpuBackend> {
    /// max(x, 0).
    pub output: Rss<B>,
    /// 1 where x > 0: the gradient mask.
    pub drelu: SharedBits<B>,
}

/// ReLU(x) = DReLU(x) · x: the MSB carry tree (7 rounds) and bit injection (2 rounds),
/// 8 rounds in all (the injection's first message leaves with the carry tree's last).
/// Keeps the DReLU bits for [`relu_backward`].
pub fn relu<B: GpuBackend, T: Transport>(p: &mut Party<B, T>, x: &Rss<B>) -> Result<Relu<B>> {
    let drelu = drelu(p, x)?;
    let output = p.mul_bit(&drelu, x)?;
    Ok(Relu { output, drelu })
}

/// max(x, 0) for inference: [`relu`]'s value alone, the DReLU bits dropped (the same 8
/// rounds and bytes).
pub fn relu_value<B: GpuBackend, T: Transport>(p: &mut Party<B, T>, x: &Rss<B>) -> Result<Rss<B>> {
    Ok(relu(p, x)?.output)
}

/// The gradient through a ReLU: DReLU · grad_output. 2 rounds.
pub fn relu_backward<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    grad_output: &Rss<B>,
    drelu: &SharedBits<B>,
) -> Result<Rss<B>> {
    Ok(p.mul_bit(drelu, grad_output)?)
}

/// `if_one` where the bit is 1, else `if_zero`: if_zero + β · (if_one − if_zero). The
/// values may have trailing axes beyond the bits' shape (each bit selects a block). 2
/// rounds.
pub fn select<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    bits: &SharedBits<B>,
    if_one: &Rss<B>,
    if_zero: &Rss<B>,
) -> Result<Rss<B>> {
    let diff = p.sub(if_one, if_zero)?;
    let chosen = p.mul_bit(bits, &diff)?;
    Ok(p.add(if_zero, &chosen)?)
}

/// |x| = x − 2·msb(x)·x, and the sign bits (1 where x < 0), exact for x in
/// [−2^(ℓ+1), 2^(ℓ+1)) (the domain of `Party::msb`). At most 9 rounds.
pub fn abs<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
) -> Result<(Rss<B>, SharedBits<B>)> {
    let negative = p.msb(x)?;
    let neg_part = p.mul_bit(&negative, x)?;
    let abs = p.sub(x, &p.mul_scalar(&neg_part, 2)?)?;
    Ok((abs, negative))
}
