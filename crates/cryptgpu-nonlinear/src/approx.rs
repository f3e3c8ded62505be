//! Functions by iteration on fixed-point shares: exp, reciprocal, division, softmax, log,
//! inverse square root and sigmoid. Each takes an options struct with the iteration counts;
//! the defaults, their domains and their measured errors are below (measured at f = 20 by
//! the tests of this crate, which assert these bounds).
//!
//! | function | method (default options) | domain | error bound (max measured) | rounds | bytes per element, P0 / P1 / P2 |
//! | --- | --- | --- | --- | --- | --- |
//! | [`exp`] | (1 + t + t²/2)^(2^8), t = x/2^8 | [−256, 4] | 2^-14 + 2^-10·e^x (2.4e-4 relative) | 19 (14) | 168 / 112 / 112 (88 / 72 / 72) |
//! | [`reciprocal`] | Newton–Raphson from 2/(lo + hi), k iterations from the range | [lo, hi], default [0.5, 256] (k = 13) | 2^-18 + 2^-12·(1/x) (1 unit) | 50 (37) | 416 / 296 / 296 (208 / 192 / 192) |
//! | [`div`] a/b | a · reciprocal(b) | b as reciprocal, \|a\| ≤ 4 | 2^-16 + 2^-12·\|a/b\| | 52 (38) | 432 / 308 / 308 (216 / 200 / 200) |
//! | [`softmax`] over 10 classes | max, exp(x − max), sum, reciprocal on [1, 10] (k = 7) | logits within 256 of the max | 2^-12 per probability (6.0e-5) | 79 (65) | per row of 10: 2325 / 1555.1 / 1555.1 (1333 / 1059.1 / 1059.1) |
//! | [`log`] | CrypTen's Householder: y0 = x/120 − 20·exp(−2x − 1) + 3, 2 iterations of order 8 | [0.01, 200] | 2^-9 (8.1e-4) | 76 (53) | 808 / 540 / 540 (416 / 344 / 344) |
//! | [`inv_sqrt`] | Newton from CrypTen's y0 = 2.2·exp(−(x/2 + 0.2)) + 0.2 − x/1024, 4 iterations | [0.1, 100] | 2^-16 + 2^-10·x^-½ (1.2e-4) | 46 (32) | 408 / 268 / 268 (208 / 168 / 168) |
//! | [`sigmoid`] | 1/(1 + exp(−\|x\|)), mirrored for x < 0 (reciprocal on [1, 2], k = 4) | [−256, 256] | 2^-12 (9.1e-5) | 42 (32) | 341 / 218.1 / 218.1 (197 / 146.1 / 146.1) |
//!
//! Rounds and bytes are for exact truncation (the default), with probabilistic truncation in
//! parentheses; they are measured on the counting transport from parties in step, and bytes
//! are for n a multiple of 64. With probabilistic truncation the rounds are fewer than the
//! sum of the parts, since a truncation's only message goes from P0 to P2 and P1 moves on
//! at once (see [`crate::cost`]); an exact truncation makes P1 and P2 wait, so its parts
//! follow one another. The errors are those of exact truncation, and of probabilistic
//! truncation when it does not fail.
//!
//! CryptGPU's exp is (1 + x/2^9)^(2^9); the second-order base here costs one more product
//! and is about 2^9 times more accurate at the same number of squarings (its error is
//! x³/(6·4^n) against x²/(2·2^n)). Outside its domain a function is not merely inexact: exp
//! of x below about −500 and reciprocal of x > 2/y0 give garbage, so keep inputs in range.
//!
//! softmax's max (a tournament of comparisons) and sigmoid's |x| compare: they are exact
//! for inputs in the party's comparison domain [−2^ℓ, 2^ℓ) (see [`crate::compare`]), far
//! wider than the domains above at the default ℓ.
//!
//! With probabilistic truncation (Π_trunc1), whose failure odds grow with the magnitude of
//! the product (see `cryptgpu_share::truncation`), the positive end of exp's domain is bounded
//! for that reason.

use crate::pool::max;
use crate::{NonlinearError, Result, compare};
use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::Transport;

/// Options of [`exp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpOptions {
    /// n: exp(x) = exp(x/2^n)^(2^n), with exp(t) ≈ 1 + t + t²/2. Between 1 and 16.
    pub squarings: u32,
}

impl ExpOptions {
    /// 8 squarings: the default, usable in constants.
    pub const DEFAULT: Self = Self { squarings: 8 };
}

impl Default for ExpOptions {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// exp(x) for x in [−2^n, 4] (n = squarings; see the module table). 3 + 2n rounds.
pub fn exp<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    options: ExpOptions,
) -> Result<Rss<B>> {
    let n = options.squarings;
    if !(1..=16).contains(&n) {
        return Err(NonlinearError::Argument {
            op: "exp",
            why: format!("{n} squarings: choose between 1 and 16"),
        });
    }
    let fixed = p.fixed();
    let t = p.truncate_by(x, n)?;
    // t²/2: the square at 2f fractional bits, truncated by f + 1.
    let half_square = p.square(&t)?;
    let half_square = p.truncate_by(&half_square, fixed.frac_bits() + 1)?;
    let mut y = p.add_scalar(&p.add(&t, &half_square)?, fixed.encode(1.0)?)?;
    for _ in 0..n {
        y = p.square_fixed(&y)?;
    }
    Ok(y)
}

/// Options of [`reciprocal`]: Newton–Raphson y ← y·(2 − x·y) from a constant y0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReciprocalOptions {
    /// The starting guess y0; the iteration converges for 0 < x < 2/y0.
    pub initial: f64,
    /// Iterations, at least 1.
    pub iterations: u32,
}

impl ReciprocalOptions {
    /// The options for inputs in `[lo, hi]` (0 < lo < hi): y0 = 2/(lo + hi), which makes the
    /// starting relative error at most ε = (hi − lo)/(hi + lo), and enough iterations k for
    /// ε^(2^k) ≤ 2^-24 (the error squares with every iteration).
    pub fn for_range(lo: f64, hi: f64) -> Result<Self> {
        if !(lo > 0.0 && lo < hi && hi.is_finite()) {
            return Err(NonlinearError::Argument {
                op: "reciprocal",
                why: format!("the range [{lo}, {hi}] must satisfy 0 < lo < hi < ∞"),
            });
        }
        let start_error = (hi - lo) / (hi + lo);
        let mut iterations = 1;
        while start_error.powi(1 << iterations) > 2f64.powi(-24) {
            iterations += 1;
        }
        Ok(Self {
            initial: 2.0 / (lo + hi),
            iterations,
        })
    }
}

impl Default for ReciprocalOptions {
    /// Inputs in [0.5, 256]: 13 iterations.
    fn default() -> Self {
        Self::for_range(0.5, 256.0).expect("a valid range")
    }
}

/// 1/x for x in the options' range. 2 + 4·(k − 1) rounds for k iterations.
pub fn reciprocal<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    options: ReciprocalOptions,
) -> Result<Rss<B>> {
    if options.iterations == 0 || !(options.initial.is_finite() && options.initial > 0.0) {
        return Err(NonlinearError::Argument {
            op: "reciprocal",
            why: format!(
                "needs a positive initial guess and at least one iteration, got {options:?}"
            ),
        });
    }
    let two = p.fixed().encode(2.0)?;
    // The first iteration has a public y0: both products are by a public factor.
    let xy = p.mul_public_fixed(x, options.initial)?;
    let correction = p.add_scalar(&p.neg(&xy)?, two)?;
    let mut y = p.mul_public_fixed(&correction, options.initial)?;
    for _ in 1..options.iterations {
        let xy = p.mul_fixed(x, &y)?;
        let correction = p.add_scalar(&p.neg(&xy)?, two)?;
        y = p.mul_fixed(&y, &correction)?;
    }
    Ok(y)
}

/// a / b for b in the reciprocal options' range (same shapes): a · reciprocal(b).
pub fn div<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    a: &Rss<B>,
    b: &Rss<B>,
    options: ReciprocalOptions,
) -> Result<Rss<B>> {
    let inverse = reciprocal(p, b, options)?;
    Ok(p.mul_fixed(a, &inverse)?)
}

/// Options of [`softmax`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SoftmaxOptions {
    /// The exp inside.
    pub exp: ExpOptions,
}

/// softmax along `axis`: exp(x − max) / Σ exp(x − max). The max comes from a tournament,
/// so every exp input is in [−256, 0] when the logits differ by less than 256, and the sum
/// is in [1, k], where the reciprocal starts from 2/(1 + k).
pub fn softmax<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    axis: usize,
    options: SoftmaxOptions,
) -> Result<Rss<B>> {
    let shape = x.shape().to_vec();
    let classes = *shape.get(axis).ok_or_else(|| NonlinearError::Argument {
        op: "softmax",
        why: format!("axis {axis} out of range for shape {shape:?}"),
    })?;
    let mut kept = shape.clone();
    kept[axis] = 1;
    let spread = |p: &Party<B, T>, t: &Rss<B>| {
        p.linear(t, |b, s| b.broadcast_to(&b.reshape(s, &kept)?, &shape))
    };
    let top = max(p, x, axis, false)?.values;
    let shifted = p.sub(x, &spread(p, &top)?)?;
    let e = exp(p, &shifted, options.exp)?;
    let total = p.linear(&e, |b, s| b.sum_axis(s, axis))?;
    let inverse = if classes > 1 {
        reciprocal(
            p,
            &total,
            ReciprocalOptions::for_range(1.0, classes as f64)?,
        )?
    } else {
        reciprocal(p, &total, ReciprocalOptions::for_range(0.5, 2.0)?)?
    };
    Ok(p.mul_fixed(&e, &spread(p, &inverse)?)?)
}

/// Options of [`log`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Householder iterations.
    pub iterations: u32,
    /// Order of each iteration's series for log(1 − h), at least 1.
    pub order: u32,
    /// The exp inside.
    pub exp: ExpOptions,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            iterations: 2,
            order: 8,
            exp: ExpOptions::default(),
        }
    }
}

/// ln(x) for x in [0.01, 200] (CrypTen's method): from y0 = x/120 − 20·exp(−2x − 1) + 3,
/// each iteration sets h = 1 − x·exp(−y) and y ← y − Σ_{i=1}^{order} h^i / i.
pub fn log<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    options: LogOptions,
) -> Result<Rss<B>> {
    if options.order == 0 {
        return Err(NonlinearError::Argument {
            op: "log",
            why: "the series needs an order of at least 1".into(),
        });
    }
    let fixed = p.fixed();
    let one = fixed.encode(1.0)?;
    let linear_part = p.mul_public_fixed(x, 1.0 / 120.0)?;
    // −2x − 1: an integer factor needs no truncation.
    let exponent = p.add_scalar(&p.mul_scalar(x, 2u64.wrapping_neg())?, one.wrapping_neg())?;
    let e = exp(p, &exponent, options.exp)?;
    let mut y = p.sub(&linear_part, &p.mul_scalar(&e, 20)?)?;
    y = p.add_scalar(&y, fixed.encode(3.0)?)?;
    for _ in 0..options.iterations {
        let e = exp(p, &p.neg(&y)?, options.exp)?;
        let xe = p.mul_fixed(x, &e)?;
        let h = p.add_scalar(&p.neg(&xe)?, one)?;
        let powers = powers(p, &h, options.order)?;
        // Σ h^i / i: public factors at 2f bits, one truncation for the whole sum.
        let mut series = p.mul_scalar(&powers[0], one)?;
        for (i, power) in powers.iter().enumerate().skip(1) {
            let c = fixed.encode(1.0 / (i + 1) as f64)?;
            series = p.add(&series, &p.mul_scalar(power, c)?)?;
        }
        let series = p.truncate(&series)?;
        y = p.sub(&y, &series)?;
    }
    Ok(y)
}

/// h, h², …, h^order in ⌈log2 order⌉ levels of fused products: each level multiplies
/// every power so far by the highest one in one batched product (2 rounds a level).
pub(crate) fn powers<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    h: &Rss<B>,
    order: u32,
) -> Result<Vec<Rss<B>>> {
    let shape = h.shape().to_vec();
    let n = h.len();
    let order = order as usize;
    let mut flat = vec![p.linear(h, |b, s| b.reshape(s, &[n]))?];
    while flat.len() < order {
        let have = flat.len();
        let take = have.min(order - have);
        let top = flat[have - 1].clone();
        let stacked = p.concat(&flat[..take].iter().collect::<Vec<_>>(), 0)?;
        let top_stacked = p.concat(&vec![&top; take], 0)?;
        let products = p.mul_fixed(&stacked, &top_stacked)?;
        for j in 0..take {
            flat.push(p.linear(&products, |b, s| b.slice(s, 0, j * n..(j + 1) * n))?);
        }
    }
    flat.iter()
        .map(|t| Ok(p.linear(t, |b, s| b.reshape(s, &shape))?))
        .collect()
}

/// Options of [`inv_sqrt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvSqrtOptions {
    /// Newton iterations y ← y·(3 − x·y²)/2.
    pub iterations: u32,
    /// The exp of the initial guess.
    pub exp: ExpOptions,
}

impl Default for InvSqrtOptions {
    fn default() -> Self {
        Self {
            iterations: 4,
            exp: ExpOptions::default(),
        }
    }
}

/// 1/√x for x in [0.1, 100] (normalisation layers: variance + ε), from CrypTen's initial
/// guess y0 = 2.2·exp(−(x/2 + 0.2)) + 0.2 − x/1024 and Newton iterations.
pub fn inv_sqrt<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    options: InvSqrtOptions,
) -> Result<Rss<B>> {
    let fixed = p.fixed();
    let half_x = p.truncate_by(x, 1)?;
    let exponent = p.add_scalar(&p.neg(&half_x)?, fixed.encode(-0.2)?)?;
    let e = exp(p, &exponent, options.exp)?;
    let scaled = p.mul_public_fixed(&e, 2.2)?;
    let tail = p.truncate_by(x, 10)?;
    let mut y = p.add_scalar(&p.sub(&scaled, &tail)?, fixed.encode(0.2)?)?;
    let three_halves = fixed.encode(1.5)?;
    for _ in 0..options.iterations {
        let y2 = p.square_fixed(&y)?;
        let hxy2 = p.mul_fixed(&half_x, &y2)?;
        let factor = p.add_scalar(&p.neg(&hxy2)?, three_halves)?;
        y = p.mul_fixed(&y, &factor)?;
    }
    Ok(y)
}

/// Options of [`sigmoid`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SigmoidOptions {
    /// The exp inside.
    pub exp: ExpOptions,
}

/// σ(x) = 1/(1 + e^−x), computed on |x| so exp only sees [−256, 0]: with e = exp(−|x|) and
/// s = 1/(1 + e) (a reciprocal on [1, 2]), σ(x) = s for x ≥ 0 and 1 − s for x < 0.
pub fn sigmoid<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    options: SigmoidOptions,
) -> Result<Rss<B>> {
    let fixed = p.fixed();
    let (magnitude, negative) = compare::abs(p, x)?;
    let e = exp(p, &p.neg(&magnitude)?, options.exp)?;
    let denominator = p.add_scalar(&e, fixed.encode(1.0)?)?;
    let s = reciprocal(p, &denominator, ReciprocalOptions::for_range(1.0, 2.0)?)?;
    // For negative x: 1 − s = s + (1 − 2s).
    let flipped = p.add_scalar(&p.mul_scalar(&s, 2u64.wrapping_neg())?, fixed.encode(1.0)?)?;
    let change = p.mul_bit(&negative, &flipped)?;
    Ok(p.add(&s, &change)?)
}
