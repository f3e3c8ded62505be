//! The non-linear functions of transformer layers: erf and GELU (a polynomial between two
//! comparisons), an inverse square root over a wide range, and layer normalisation over
//! the last axis. Measured at f = 20 with exact truncation by this crate's suite, which
//! asserts these bounds, the bytes against [`crate::cost`] and the rounds (the constants
//! below). Bytes are for n a multiple of 64.
//!
//! | function | method | domain | error bound (max measured) | rounds | bytes sent, P0 / P1 / P2 |
//! | --- | --- | --- | --- | --- | --- |
//! | [`erf`] | sign s = msb(z), a = \|z\|; erfc(a) by a degree-11 polynomial in t = 2a/3 − 1 where a < 3, 0 beyond (a second msb); erf = (1 − 2s)(1 − erfc) | the whole comparison domain | 3·10^-5 (2.2·10^-5; erfc(3) is the cut-off) | 26 | 266 / 172.25 / 172.25 per element |
//! | [`gelu`] | x·(1 + erf(x/√2))/2 | the whole comparison domain | 10^-4 (4.4·10^-5) | 29 | 306 / 188.25 / 188.25 per element |
//! | [`inv_sqrt_wide`] | a start 2^-j·2/3 for v in [4^j, 4^(j+1)) from 20 comparisons with 4^-9 … 4^10 in one batch, then 5 Newton steps | [4^-9, 4^11) = [3.8·10^-6, 4.2·10^6) | 2^-12 relative + 2^-18 | 38 | 860 / 542.5 / 542.5 per element |
//! | [`layer_norm`] | mean, S = Σ (x − mean)², √d·[`inv_sqrt_wide`](S + d·ε) | S + d·ε in that domain | 2·10^-3 on outputs (of unit scale by construction; 1.5·10^-3 on rows of scale 0.01 to 150) | 44 | per row of 64: 2444 / 1834.5 / 1834.5 |
//!
//! The polynomial's coefficients come from a Chebyshev fit of erfc on [0, 3] (numpy's
//! `Chebyshev.fit(t, erfc(3(t + 1)/2), 11).convert(kind=Polynomial)` at 4000 Chebyshev
//! points), in the monomial basis of t ∈ [−1, 1], where their absolute values sum to 1.9:
//! a fixed-point error of the powers is not amplified. Outside [0, 3) the polynomial's
//! value is garbage, which the range bit multiplies by 0 exactly.
//!
//! These are the same method as SIGMA's and BOLT's GELU (a low-degree polynomial inside an
//! interval found by comparisons, the identity or zero outside), here on erf, so that the
//! exact GELU and `Erf` nodes of an exported graph share one protocol.

use crate::approx::powers;
use crate::{NonlinearError, Result};
use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Bilinear, Party, Rss, SharedBits};
use cryptgpu_transport::Transport;

/// Beyond |z| = 3, erf(z) is taken as ±1 (erfc(3) = 2.2·10^-5).
pub const ERF_CUTOFF: f64 = 3.0;

/// erfc(3(t + 1)/2) ≈ Σ c_k t^k on t ∈ [−1, 1] (max error 2.4·10^-6; see the module docs).
const ERFC_COEFFICIENTS: [f64; 12] = [
    0.033895752570009624,
    -0.17838599406246358,
    0.4013198330299552,
    -0.46855508531357015,
    0.2266860406833893,
    0.11505716715129566,
    -0.22460552938960804,
    0.0734684404480915,
    0.07132591761341532,
    -0.05275594696483658,
    -0.00861040623048166,
    0.011183141702829356,
];

/// Measured rounds of [`erf`] with exact truncation.
pub const ERF_ROUNDS: u64 = 26;
/// Measured rounds of [`gelu`] with exact truncation.
pub const GELU_ROUNDS: u64 = 29;
/// Measured rounds of [`inv_sqrt_wide`] with the default options and exact truncation.
pub const INV_SQRT_WIDE_ROUNDS: u64 = 38;
/// Measured rounds of [`layer_norm`] with exact truncation.
pub const LAYER_NORM_ROUNDS: u64 = 44;

/// erf(x) in plaintext (Abramowitz and Stegun 7.1.26, error below 1.5·10^-7): the reference
/// the plaintext executor and the tests use.
pub fn erf_f64(x: f64) -> f64 {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [
        0.254_829_592,
        -0.284_496_736,
        1.421_413_741,
        -1.453_152_027,
        1.061_405_429,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = A.iter().rev().fold(0.0, |acc, &c| acc * t + c) * t;
    let y = 1.0 - poly * (-a * a).exp();
    y.copysign(x)
}

/// GELU(x) = x·(1 + erf(x/√2))/2 in plaintext.
pub fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf_f64(x * std::f64::consts::FRAC_1_SQRT_2))
}

/// Σ c_k t^k for public coefficients (c_0 first): the powers of t in ⌈log2 degree⌉ levels
/// of products, then one truncation for the whole sum.
pub fn polynomial<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    t: &Rss<B>,
    coefficients: &[f64],
) -> Result<Rss<B>> {
    let fixed = p.fixed();
    let Some((&c0, rest)) = coefficients.split_first() else {
        return Err(NonlinearError::Argument {
            op: "polynomial",
            why: "needs at least one coefficient".into(),
        });
    };
    if rest.is_empty() {
        return Ok(p.add_scalar(&p.mul_scalar(t, 0)?, fixed.encode(c0)?)?);
    }
    let powers = powers(p, t, rest.len() as u32)?;
    let mut sum = p.mul_scalar(&powers[0], fixed.encode(rest[0])?)?;
    for (power, &c) in powers.iter().zip(rest).skip(1) {
        sum = p.add(&sum, &p.mul_scalar(power, fixed.encode(c)?)?)?;
    }
    let sum = p.truncate(&sum)?;
    Ok(p.add_scalar(&sum, fixed.encode(c0)?)?)
}

/// erf(z), by the method of the module docs: within 3·10^-5 everywhere in the comparison
/// domain.
pub fn erf<B: GpuBackend, T: Transport>(p: &mut Party<B, T>, z: &Rss<B>) -> Result<Rss<B>> {
    Ok(erf_parts(p, z)?.0)
}

/// [`erf`] and its range bits [|z| < 3], which the backward pass reuses (outside, erf is
/// taken as flat).
pub fn erf_parts<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    z: &Rss<B>,
) -> Result<(Rss<B>, SharedBits<B>)> {
    let fixed = p.fixed();
    let negative = p.msb(z)?;
    let negative_part = p.mul_bit(&negative, z)?;
    let magnitude = p.sub(z, &p.mul_scalar(&negative_part, 2)?)?;
    let shifted = p.add_scalar(&magnitude, fixed.encode(-ERF_CUTOFF)?)?;
    let inside = p.msb(&shifted)?;
    let scaled = p.mul_public_fixed(&magnitude, 2.0 / ERF_CUTOFF)?;
    let t = p.add_scalar(&scaled, fixed.encode(-1.0)?)?;
    let tail = polynomial(p, &t, &ERFC_COEFFICIENTS)?;
    let tail = p.mul_bit(&inside, &tail)?;
    let of_magnitude = p.add_scalar(&p.neg(&tail)?, fixed.encode(1.0)?)?;
    // erf(z) = erf(|z|) for z ≥ 0, −erf(|z|) below.
    let flip = p.mul_bit(&negative, &of_magnitude)?;
    let value = p.sub(&of_magnitude, &p.mul_scalar(&flip, 2)?)?;
    Ok((value, inside))
}

/// erf's derivative (2/√π)·e^(−z²) where the range bits `inside` are 1, 0 elsewhere (below
/// 1.4·10^-4 there): a square, exp (whose garbage for large |z| the bit multiplies by 0),
/// a public factor and a bit injection.
pub fn erf_slope<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    z: &Rss<B>,
    inside: &SharedBits<B>,
) -> Result<Rss<B>> {
    let square = p.square_fixed(z)?;
    masked_gaussian(p, &square, std::f64::consts::FRAC_2_SQRT_PI, inside)
}

/// c·e^(−s) where the bits `inside` are 1, exactly 0 elsewhere (where s may be too large
/// for exp's domain, whose garbage the bit multiplies by 0): the Gaussian factor of erf's
/// and GELU's slopes.
fn masked_gaussian<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    s: &Rss<B>,
    c: f64,
    inside: &SharedBits<B>,
) -> Result<Rss<B>> {
    let e = crate::approx::exp(p, &p.neg(s)?, crate::approx::ExpOptions::default())?;
    let scaled = p.mul_public_fixed(&e, c)?;
    Ok(p.mul_bit(inside, &scaled)?)
}

/// GELU(x) = x·Φ(x) = x·(1 + erf(x/√2))/2 (PyTorch's exact `nn.GELU()`); also used for its
/// tanh form, which differs from it by at most 4.8·10^-4.
pub fn gelu<B: GpuBackend, T: Transport>(p: &mut Party<B, T>, x: &Rss<B>) -> Result<Rss<B>> {
    Ok(gelu_parts(p, x)?.output)
}

/// [`gelu`]'s output with what its backward pass needs.
pub struct Gelu<B: GpuBackend> {
    /// GELU(x).
    pub output: Rss<B>,
    /// erf(x/√2).
    pub erf: Rss<B>,
    /// [|x/√2| < 3].
    pub inside: SharedBits<B>,
}

/// [`gelu`], keeping erf(x/√2) and its range bits.
pub fn gelu_parts<B: GpuBackend, T: Transport>(p: &mut Party<B, T>, x: &Rss<B>) -> Result<Gelu<B>> {
    let fixed = p.fixed();
    let z = p.mul_public_fixed(x, std::f64::consts::FRAC_1_SQRT_2)?;
    let (e, inside) = erf_parts(p, &z)?;
    let one_plus = p.add_scalar(&e, fixed.encode(1.0)?)?;
    // x·(1 + erf): one product at 2f bits, truncated by f + 1 for the half.
    let product = p.mul(x, &one_plus)?;
    let output = p.truncate_by(&product, fixed.frac_bits() + 1)?;
    Ok(Gelu {
        output,
        erf: e,
        inside,
    })
}

/// GELU's derivative Φ(x) + x·φ(x) from [`gelu_parts`]: (1 + erf)/2 plus x·e^(−x²/2)/√(2π)
/// where |x| < 3√2 (outside, that term is below 2·10^-4).
pub fn gelu_slope<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    parts: &Gelu<B>,
) -> Result<Rss<B>> {
    let fixed = p.fixed();
    let half_square = p.square(x)?;
    let half_square = p.truncate_by(&half_square, fixed.frac_bits() + 1)?;
    let scale = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    let density = masked_gaussian(p, &half_square, scale, &parts.inside)?;
    let x_density = p.mul_fixed(x, &density)?;
    let one_plus = p.add_scalar(&parts.erf, fixed.encode(1.0)?)?;
    let cdf = p.truncate_by(&one_plus, 1)?;
    Ok(p.add(&cdf, &x_density)?)
}

/// Options of [`inv_sqrt_wide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvSqrtWideOptions {
    /// The lowest threshold is 4^lowest_power.
    pub lowest_power: i32,
    /// The highest threshold is 4^highest_power (the domain ends at 4^(highest + 1)).
    pub highest_power: i32,
    /// Newton steps y ← y·(3 − v·y²)/2 after the start.
    pub iterations: u32,
}

impl Default for InvSqrtWideOptions {
    /// Thresholds 4^-9 … 4^10 and 5 steps: v in [3.8·10^-6, 4.2·10^6) (2^23, the top of
    /// the comparison domain at f = 20, is 8.4·10^6).
    fn default() -> Self {
        Self {
            lowest_power: -9,
            highest_power: 10,
            iterations: 5,
        }
    }
}

/// 1/√v for v in [4^lowest, 4^(highest + 1)): the comparisons v ≥ 4^i for every threshold
/// (one batched MSB, converted to 0/1) pick the interval [4^j, 4^(j+1)) v lies in, and the
/// start 2^-j·2/3, within a third of 1/√v; Newton's steps then square the relative error
/// (1/3, 0.19, 0.055, 4.5·10^-3, 3·10^-5, 10^-9). Each step forms v·y before multiplying
/// by y again, so a small y (a large v) keeps its precision.
pub fn inv_sqrt_wide<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    v: &Rss<B>,
    options: InvSqrtWideOptions,
) -> Result<Rss<B>> {
    let InvSqrtWideOptions {
        lowest_power: lo,
        highest_power: hi,
        iterations,
    } = options;
    if lo > hi || lo < -15 || hi > 15 || iterations == 0 {
        return Err(NonlinearError::Argument {
            op: "inv_sqrt_wide",
            why: format!("options {options:?}: need −15 ≤ lowest ≤ highest ≤ 15 and a step"),
        });
    }
    let fixed = p.fixed();
    let shape = v.shape().to_vec();
    let n = v.len();
    let row = p.linear(v, |b, t| b.reshape(t, &[1, n]))?;
    let mut below = Vec::new();
    for i in lo..=hi {
        below.push(p.add_scalar(&row, fixed.encode(-(4f64.powi(i)))?)?);
    }
    let below = p.concat(&below.iter().collect::<Vec<_>>(), 0)?;
    // at_least[i] = 1 where v ≥ 4^i.
    let below = p.msb(&below)?;
    let at_least = p.bit_to_arith(&p.bits_not(&below)?)?;
    // y0 = start(lo − 1) + Σ_i at_least[i]·(start(i) − start(i − 1)): the bits are ring
    // integers, so one product by the public steps and a sum, no truncation.
    let start = |j: i32| 2.0 / 3.0 * 2f64.powi(-j);
    let steps = (lo..=hi)
        .map(|i| fixed.encode(start(i) - start(i - 1)))
        .collect::<std::result::Result<Vec<u64>, _>>()?;
    let steps = p.backend().upload(&steps, &[steps.len(), 1])?;
    let m = (hi - lo + 1) as usize;
    let steps = p.backend().broadcast_to(&steps, &[m, n])?;
    let weighted = p.apply_public(Bilinear::Mul, &at_least, &steps)?;
    let y = p.linear(&weighted, |b, t| b.reshape(&b.sum_axis(t, 0)?, &[1, n]))?;
    let mut y = p.add_scalar(&y, fixed.encode(start(lo - 1))?)?;
    let frac = fixed.frac_bits();
    for _ in 0..iterations {
        let vy = p.mul_fixed(&row, &y)?;
        let vyy = p.mul(&vy, &y)?;
        let half_vyy = p.truncate_by(&vyy, frac + 1)?;
        let factor = p.add_scalar(&p.neg(&half_vyy)?, fixed.encode(1.5)?)?;
        y = p.mul_fixed(&y, &factor)?;
    }
    Ok(p.linear(&y, |b, t| b.reshape(t, &shape))?)
}

/// (x − mean) / √(variance + ε) over the last axis of x (LayerNorm without its scale and
/// shift), for rows of d values with Σ (x − mean)² + d·ε in [`inv_sqrt_wide`]'s domain:
/// the mean by a sum and a public factor 1/d, S = Σ (x − mean)² by one product and one
/// truncation, then √d / √(S + d·ε).
pub fn layer_norm<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    epsilon: f64,
) -> Result<Rss<B>> {
    Ok(layer_norm_parts(p, x, epsilon)?.0)
}

/// [`layer_norm`] and each row's 1/√(variance + ε) (shape: x's without the last axis),
/// which the backward pass reuses.
pub fn layer_norm_parts<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    epsilon: f64,
) -> Result<(Rss<B>, Rss<B>)> {
    let shape = x.shape().to_vec();
    let Some((&d, outer)) = shape.split_last() else {
        return Err(NonlinearError::Argument {
            op: "layer_norm",
            why: "needs a tensor of rank 1 or more".into(),
        });
    };
    if d == 0 || !(epsilon.is_finite() && epsilon >= 0.0) {
        return Err(NonlinearError::Argument {
            op: "layer_norm",
            why: format!("rows of {d} values with ε = {epsilon}"),
        });
    }
    let axis = shape.len() - 1;
    let sum = p.sum_axis(x, axis)?;
    let mean = p.mul_public_fixed(&sum, 1.0 / d as f64)?;
    let centred = p.sub(x, &spread_rows(p, &mean, outer, &shape)?)?;
    // S = Σ (x − mean)², summed at 2f bits and truncated once: d times the variance, so a
    // small variance keeps d times the resolution it would have alone.
    let squares = p.square(&centred)?;
    let sum = p.sum_axis(&squares, axis)?;
    let total = p.truncate(&sum)?;
    let v = p.add_scalar(&total, p.fixed().encode(epsilon * d as f64)?)?;
    // 1/√(variance + ε) = √d / √(S + d·ε).
    let inverse = inv_sqrt_wide(p, &v, InvSqrtWideOptions::default())?;
    let inverse = p.mul_public_fixed(&inverse, (d as f64).sqrt())?;
    let normalised = p.mul_fixed(&centred, &spread_rows(p, &inverse, outer, &shape)?)?;
    Ok((normalised, inverse))
}

/// The gradient of [`layer_norm`] (before its scale): from g (the output's gradient times
/// the scale), the normalised x̂ and the rows' 1/σ, dx = (g − mean(g) − x̂·mean(g·x̂))/σ,
/// by three products and two public factors.
pub fn layer_norm_backward<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    g: &Rss<B>,
    normalised: &Rss<B>,
    inverse: &Rss<B>,
) -> Result<Rss<B>> {
    let shape = g.shape().to_vec();
    let Some((&d, outer)) = shape.split_last() else {
        return Err(NonlinearError::Argument {
            op: "layer_norm_backward",
            why: "needs a tensor of rank 1 or more".into(),
        });
    };
    let axis = shape.len() - 1;
    let gx = p.mul_fixed(g, normalised)?;
    let means = |p: &mut Party<B, T>, t: &Rss<B>| -> Result<Rss<B>> {
        let sum = p.sum_axis(t, axis)?;
        Ok(p.mul_public_fixed(&sum, 1.0 / d as f64)?)
    };
    let mean_g = means(p, g)?;
    let mean_gx = means(p, &gx)?;
    let along = p.mul_fixed(normalised, &spread_rows(p, &mean_gx, outer, &shape)?)?;
    let centred = p.sub(&p.sub(g, &spread_rows(p, &mean_g, outer, &shape)?)?, &along)?;
    Ok(p.mul_fixed(&centred, &spread_rows(p, inverse, outer, &shape)?)?)
}

/// `t`, a value per row (shape `outer`), spread over the rows' last axis (to `shape`):
/// local.
fn spread_rows<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    t: &Rss<B>,
    outer: &[usize],
    shape: &[usize],
) -> Result<Rss<B>> {
    let mut kept = outer.to_vec();
    kept.push(1);
    Ok(p.linear(t, |b, s| b.broadcast_to(&b.reshape(s, &kept)?, shape))?)
}
