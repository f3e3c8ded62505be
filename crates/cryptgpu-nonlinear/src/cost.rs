//! The communication of every protocol of this crate as formulas: rounds, and bytes sent by
//! each of P0, P1, P2. The tests compare the counting transport with these, and the bench
//! prints them beside its timings.
//!
//! Bytes are exact for every protocol. Rounds are exact for the building blocks (products,
//! truncation, MSB, bit injection: measured from a state where all parties are in step). For
//! a composite protocol, [`Cost::rounds`] adds up its parts, which is an upper bound: the
//! counting transport measures the longest chain of messages, and one part's first message
//! often does not wait for the previous part's last (a truncation's only message goes from
//! P0 to P2, so P1 moves on at once; P0's input message of an MSB leaves as soon as P0 has
//! its shares). The measured rounds of the composites the docs quote are the constants
//! below, which the tests check exactly.

use cryptgpu_backend::shape::packed_words;
use cryptgpu_share::Truncation;
use std::ops::Add;

/// Rounds and bytes sent per party of one protocol run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// The longest chain of messages.
    pub rounds: u64,
    /// Bytes sent by P0, P1 and P2.
    pub bytes: [u64; 3],
}

impl Cost {
    /// A cost of `rounds` rounds in which the parties send `bytes`.
    pub const fn new(rounds: u64, bytes: [u64; 3]) -> Self {
        Self { rounds, bytes }
    }

    /// The same cost repeated `times` in sequence.
    pub fn times(self, times: u64) -> Self {
        Self {
            rounds: self.rounds * times,
            bytes: self.bytes.map(|b| b * times),
        }
    }
}

impl Add for Cost {
    type Output = Cost;

    /// Two protocols one after the other.
    fn add(self, rhs: Cost) -> Cost {
        Cost {
            rounds: self.rounds + rhs.rounds,
            bytes: [0, 1, 2].map(|i| self.bytes[i] + rhs.bytes[i]),
        }
    }
}

/// Measured rounds of DReLU (and every comparison) in the default domain: the input and
/// conversion rounds and 5 carry-tree levels.
pub const DRELU_ROUNDS: u64 = 7;
/// Measured rounds of ReLU: DReLU and a bit injection, whose first message (P1's) leaves
/// with the DReLU's last round.
pub const RELU_ROUNDS: u64 = 8;
/// Measured rounds of 2×2 max-pooling at inference: two tournament levels of a comparison
/// and a bit injection (8 rounds each, as a ReLU).
pub const MAX_POOL_2X2_VALUES_ROUNDS: u64 = 16;
/// Measured rounds of 2×2 max-pooling that keeps its winners: the tournament and one AND
/// round for the winners' bits.
pub const MAX_POOL_2X2_ROUNDS: u64 = 17;
/// Measured rounds of softmax over 10 classes with the default options. Probabilistic
/// truncation overlaps: its only message goes from P0 to P2, so P1 moves on at once. An
/// exact truncation makes P1 and P2 wait for P0, so the parts mostly follow one another:
/// 79 measured, 83 for the sum of the parts.
pub const fn softmax_10_rounds(mode: Truncation) -> u64 {
    match mode {
        Truncation::Probabilistic => 65,
        Truncation::Exact => 79,
    }
}

fn u(n: usize) -> u64 {
    n as u64
}

/// The comparison domain ℓ of the cost formulas: the default of a party with the default
/// fixed-point format (43 at f = 20; the MSB then runs over 44 bits).
pub fn default_comparison_bits() -> u32 {
    cryptgpu_share::default_comparison_bits(cryptgpu_ring::FixedPoint::default())
}

/// A shared product (mul, matmul, conv) of n output elements, without truncation.
pub fn product(n: usize) -> Cost {
    Cost::new(1, [8 * u(n); 3])
}

/// Words on the wire of n values packed two to a word (the exact truncation's masked bits
/// and mask messages at f ≤ 32).
fn halves(n: usize) -> u64 {
    u(n.div_ceil(2))
}

/// A fused product with truncation (mul_fixed, square_fixed, ...): the product's terms
/// (P1 and P2 send 8·n) and the truncation's messages (at the default f ≤ 32, exact mode's
/// masked bits and mask messages travel two to a word).
pub fn product_truncated(n: usize, mode: Truncation) -> Cost {
    let e = 8 * u(n);
    let h = 8 * halves(n);
    match mode {
        Truncation::Probabilistic => Cost::new(2, [e; 3]),
        Truncation::Exact => Cost::new(2, [e + 2 * h, e + h, e + h]),
    }
}

/// A truncation alone, or a product by a public fixed-point factor: in probabilistic mode
/// only P0 sends; in exact mode P0 sends y0 and two packed masked bits, P1 and P2 one
/// packed mask message each.
pub fn truncation(n: usize, mode: Truncation) -> Cost {
    let e = 8 * u(n);
    let h = 8 * halves(n);
    match mode {
        Truncation::Probabilistic => Cost::new(1, [e, 0, 0]),
        Truncation::Exact => Cost::new(1, [e + 2 * h, h, h]),
    }
}

/// The MSB of n elements (and so DReLU and every comparison) in the default comparison
/// domain ℓ: [`msb_in`] over ℓ + 1 bits.
pub fn msb(n: usize) -> Cost {
    msb_in(n, default_comparison_bits() + 1)
}

/// `Party::msb_in` of n elements over k bits (exact on [−2^k, 2^k); `Party::msb` is k =
/// ℓ + 1): P0 inputs the k + 1 low bits of its addend and one product per pair of bits;
/// P1 and P2 turn the ⌈k/2⌉ groups' (G, P) into sharings (one word per row each); then the
/// carry tree's ANDs.
pub fn msb_in(n: usize, k: u32) -> Cost {
    let words = u(packed_words(n));
    let l = u64::from(k);
    let (pairs, mut groups) = (l / 2, l.div_ceil(2));
    let (mut rounds, mut and_rows) = (2, 0);
    while groups > 1 {
        let level_pairs = groups / 2;
        and_rows += 2 * level_pairs - 1;
        groups -= level_pairs;
        rounds += 1;
    }
    let ands = 8 * and_rows * words;
    let convert = 8 * 2 * l.div_ceil(2) * words;
    Cost::new(
        rounds,
        [
            8 * (l + 1 + pairs) * words + ands,
            convert + ands,
            convert + ands,
        ],
    )
}

/// Bit injection of `bits` bits into a value of `values` elements.
pub fn mul_bit(bits: usize, values: usize) -> Cost {
    let v = 8 * u(values);
    Cost::new(2, [8 * u(bits) + v, v, v])
}

/// ReLU of n elements.
pub fn relu(n: usize) -> Cost {
    msb(n) + mul_bit(n, n)
}

/// Shared binary AND of n bits (packed 64 to a word).
pub fn and_bits(n: usize) -> Cost {
    Cost::new(1, [8 * u(packed_words(n)); 3])
}

/// Shared bits to arithmetic 0/1 values, n bits.
pub fn bit_to_arith(n: usize) -> Cost {
    let e = 8 * u(n);
    Cost::new(2, [2 * e, e, e])
}

/// The tournament over `k` candidates for each of `r` positions; `track` adds the one-hot
/// winners as shared bits (one AND per pair of every level below the top).
pub fn tournament(k: usize, r: usize, track: bool) -> Cost {
    let mut total = Cost::default();
    let mut m = k;
    while m > 1 {
        let pairs = m / 2;
        total = total + msb(pairs * r) + mul_bit(pairs * r, pairs * r);
        if track && m > 2 {
            total = total + and_bits(pairs * r);
        }
        m -= pairs;
    }
    total
}

/// Max and the one-hot argmax (as arithmetic 0/1 values) over `k` candidates for each of
/// `r` positions.
pub fn argmax(k: usize, r: usize) -> Cost {
    tournament(k, r, true) + bit_to_arith(k * r)
}

/// Max-pooling with windows of `window` elements and `outputs` output elements, keeping
/// the winners for the backward pass.
pub fn max_pool2d(window: usize, outputs: usize) -> Cost {
    tournament(window, outputs, true)
}

/// Max-pooling at inference ([`crate::max_pool2d_values`]).
pub fn max_pool2d_values(window: usize, outputs: usize) -> Cost {
    tournament(window, outputs, false)
}

/// [`crate::gate_winners`]: one AND per window element.
pub fn gate_winners(window: usize, outputs: usize) -> Cost {
    and_bits(window * outputs)
}

/// Max-pooling's backward pass: bit injection of the winners into the spread gradient.
pub fn max_pool2d_backward(window: usize, outputs: usize) -> Cost {
    mul_bit(window * outputs, window * outputs)
}

/// exp of n elements with `squarings` squarings.
pub fn exp(n: usize, squarings: u32, mode: Truncation) -> Cost {
    truncation(n, mode)
        + product(n)
        + truncation(n, mode)
        + product_truncated(n, mode).times(u64::from(squarings))
}

/// reciprocal of n elements with `iterations` Newton iterations.
pub fn reciprocal(n: usize, iterations: u32, mode: Truncation) -> Cost {
    truncation(n, mode).times(2) + product_truncated(n, mode).times(2 * u64::from(iterations - 1))
}

/// softmax over `classes` for `rows` rows, with `squarings` in exp and `iterations` in the
/// reciprocal (see `ReciprocalOptions::for_range(1, classes)`).
pub fn softmax(
    rows: usize,
    classes: usize,
    squarings: u32,
    iterations: u32,
    mode: Truncation,
) -> Cost {
    tournament(classes, rows, false)
        + exp(rows * classes, squarings, mode)
        + reciprocal(rows, iterations, mode)
        + product_truncated(rows * classes, mode)
}

/// h, h², …, h^order by the levels of fused products of `approx::powers`.
pub fn powers(n: usize, order: u32, mode: Truncation) -> Cost {
    let order = order as usize;
    let (mut have, mut total) = (1, Cost::default());
    while have < order {
        let take = have.min(order - have);
        total = total + product_truncated(take * n, mode);
        have += take;
    }
    total
}

/// A polynomial of `degree` ≥ 1 in n elements ([`crate::polynomial`]).
pub fn polynomial(n: usize, degree: u32, mode: Truncation) -> Cost {
    powers(n, degree, mode) + truncation(n, mode)
}

/// [`crate::erf`] of n elements: the sign, |z|, the range bit, the polynomial and two bit
/// injections.
pub fn erf(n: usize, mode: Truncation) -> Cost {
    msb(n)
        + mul_bit(n, n)
        + msb(n)
        + truncation(n, mode)
        + polynomial(n, 11, mode)
        + mul_bit(n, n).times(2)
}

/// [`crate::gelu`] of n elements: erf of x/√2 and one product.
pub fn gelu(n: usize, mode: Truncation) -> Cost {
    truncation(n, mode) + erf(n, mode) + product(n) + truncation(n, mode)
}

/// [`crate::inv_sqrt_wide`] of n elements with `thresholds` comparisons and `iterations`
/// Newton steps.
pub fn inv_sqrt_wide(n: usize, thresholds: usize, iterations: u32, mode: Truncation) -> Cost {
    let step =
        product_truncated(n, mode) + product(n) + truncation(n, mode) + product_truncated(n, mode);
    msb(thresholds * n) + bit_to_arith(thresholds * n) + step.times(u64::from(iterations))
}

/// [`crate::layer_norm`] of `rows` rows of `d` values with the default inverse square root.
pub fn layer_norm(rows: usize, d: usize, mode: Truncation) -> Cost {
    truncation(rows, mode)
        + product(rows * d)
        + truncation(rows, mode)
        + inv_sqrt_wide(rows, 20, 5, mode)
        + truncation(rows, mode)
        + product_truncated(rows * d, mode)
}
