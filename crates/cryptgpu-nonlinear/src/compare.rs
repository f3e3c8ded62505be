//! Comparisons (lt, gt, le, ge between shares and with public values), DReLU, ReLU and its
//! backward pass, absolute value and selection: all built on the MSB carry tree and bit
//! injection of `cryptgpu_share::binary`.
//!
//! A comparison of x and y reads the sign of x − y, so it is right while x − y lies in the
//! party's comparison domain [−2^ℓ, 2^ℓ) as ring integers (`Party::comparison_bits`; by
//! default ℓ = 63 − f, so for f = 20: |x − y| < 2^23 in real terms, more than any value a
//! product can make before exact truncation fails).

use crate::Result;
use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Party, Rss, SharedBits};
use cryptgpu_transport::Transport;

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

/// x < c for a public tensor c of ring elements (the same for every party). 7 rounds.
pub fn lt_public<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    c: &B::Tensor,
) -> Result<SharedBits<B>> {
    let minus_c = p.backend().neg(c)?;
    let d = p.add_public(x, &minus_c)?;
    Ok(p.msb(&d)?)
}

/// x > c for a public tensor c. 7 rounds.
pub fn gt_public<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    c: &B::Tensor,
) -> Result<SharedBits<B>> {
    let d = p.add_public(&p.neg(x)?, c)?;
    Ok(p.msb(&d)?)
}

/// x ≤ c for a public tensor c. 7 rounds.
pub fn le_public<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    c: &B::Tensor,
) -> Result<SharedBits<B>> {
    let greater = gt_public(p, x, c)?;
    Ok(p.bits_not(&greater)?)
}

/// x ≥ c for a public tensor c. 7 rounds.
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

/// |x| = x − 2·msb(x)·x, and the sign bits (1 where x < 0). At most 9 rounds.
pub fn abs<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
) -> Result<(Rss<B>, SharedBits<B>)> {
    let negative = p.msb(x)?;
    let neg_part = p.mul_bit(&negative, x)?;
    let abs = p.sub(x, &p.mul_scalar(&neg_part, 2)?)?;
    Ok((abs, negative))
}
