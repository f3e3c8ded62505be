//! Fixed-point truncation in two modes: [`Truncation::Exact`] (the default: never wrong by
//! more than one unit for inputs in its range) and [`Truncation::Probabilistic`] (ABY3's
//! Π_trunc1, which fails with a small probability). Every truncation of the crate goes
//! through here: [`Party::truncate`], [`Party::truncate_by`], [`Party::mul_public_fixed`],
//! [`Party::div_public`] and the fused products ([`Party::product_truncated`] and the
//! `*_fixed` ops).
//!
//! # The 2-out-of-2 view
//!
//! A sharing z = z0 + z1 + z2 is seen as A + B with A = z0 + z1 (known to P0) and B = z2
//! (known to P1 and P2). A fused product gets there in one round: P1 sends its term z1 to
//! P0, and P2 sends z2 to P1. A value that is already 2-out-of-3 shared needs no message,
//! but it is first re-randomised with a value s that all three parties draw from their
//! common key: (A − s, B + s). Without that, B is not uniform when z is a constant sharing
//! (B = 0) or the output of an earlier truncation (B = y2 is small or correlated with z),
//! and the probabilistic mode fails far more often than its bound (for example
//! `constant(−1024)` then `mul_public_fixed(0.5)` failed on every element). It costs no
//! message.
//!
//! # Probabilistic (ABY3 Π_trunc1)
//!
//! Shares read as unsigned, A' = ⌊A / 2^f⌋ and B' = −⌊−B / 2^f⌋; then y2 = B' (P1, P2),
//! y1 = r from k1 (P0, P1) and y0 = A' − r, which P0 sends to P2. For |z| < 2^ℓ (as a ring
//! integer, i.e. at 2f fractional bits for a product) the result is ⌊z/2^f⌋ or ⌊z/2^f⌋ + 1,
//! except with probability at most 2^(ℓ+1−64), when it is off by about 2^(64−f): A + B
//! wraps around 2^64 only when the uniform A lands in a window of width |z|.
//!
//! # Exact (the wrap from the top bits)
//!
//! **Range:** z ∈ [−2^62, 2^62) as a signed ring integer (a product at 2f fractional bits
//! of real magnitude below 2^(62−2f): 2^30 at f = 16, 2^22 at f = 20, 2^14 at f = 24). For
//! every such z, whatever the shares, the result is ⌊z/2^f⌋ or ⌊z/2^f⌋ + 1, never anything
//! else.
//!
//! **Derivation.** P0 adds the public offset 2^62: A* = A + 2^62, so that
//! z* = z + 2^62 ∈ [0, 2^63). Read A*, B ∈ [0, 2^64) as integers and write
//! A* = a·2^63 + A_lo, B = b·2^63 + B_lo with bits a, b and A_lo, B_lo < 2^63. Then
//! A_lo + B_lo = c·2^63 + L for a bit c and L < 2^63, and
//!
//! A* + B = 2^63·(a + b + c) + L = z* + 2^64·w
//!
//! for the wrap w ∈ {0, 1}. Both L and z* are below 2^63, so reducing mod 2^63 gives L = z*,
//! and then a + b + c = 2w. So a + b + c is 0 or 2: if w = 0 then a = b = 0, and if w = 1
//! then a or b is 1 (c alone cannot make 2). Hence **w = a ∨ b = a + b − a·b**: the wrap is
//! known from the two top bits, which sit at different parties, with no carry chain.
//!
//! Dividing, with 2^f | 2^64:
//!
//! ⌊z*/2^f⌋ = ⌊A*/2^f⌋ + ⌊B/2^f⌋ + c_f − 2^(64−f)·(a + b − a·b),
//!
//! where c_f ∈ {0, 1} is the carry out of the low f bits of A* + B. Since
//! ⌊A*/2^f⌋ − 2^(64−f)·a is the arithmetic (signed) shift sar(A*, f), and likewise for B,
//! and ⌊z/2^f⌋ = ⌊z*/2^f⌋ − 2^(62−f) for f ≤ 62, the protocol computes
//!
//! R = sar(A*, f) + sar(B, f) + 2^(64−f)·a·b − 2^(62−f) + 1 = ⌊z/2^f⌋ + (1 − c_f).
//!
//! So R ∈ {⌊z/2^f⌋, ⌊z/2^f⌋ + 1}. The "+ 1" makes the rounding unbiased: with A uniform
//! (which the re-randomisation ensures), c_f = 0 with probability (z mod 2^f + 1)/2^f, so
//! the mean of R is z/2^f + 2^-f, the same stochastic rounding as the probabilistic mode.
//!
//! **The product a·b.** a is known to P0, b to P1 and P2. With K = 2^(64−f), P1 and P2
//! each obtain K·a·b minus a mask the other one knows, by a one-message correlated choice
//! (P0 sends a masked a, the holder of the other mask sends b times that mask):
//! - from k0 (P0, P2): x1, σ1; from k1 (P0, P1): x2, σ2, u;
//! - P0 sends e1 = a + x1 to P1 and e2 = a + x2 to P2;
//! - P2 sends h1 = K·b·x1 + σ1 to P1, and P1 sends h2 = K·b·x2 + σ2 to P2;
//! - P1 computes v1 = K·b·e1 − h1 = K·a·b − σ1; P2 computes v2 = K·b·e2 − h2 = K·a·b − σ2.
//!
//! The result's shares: y2 = sar(B, f) + K·a·b − σ1 − σ2, which P1 computes as
//! sar(B, f) + v1 − σ2 and P2 as sar(B, f) + v2 − σ1; y1 = u (P0, P1);
//! y0 = sar(A*, f) − 2^(62−f) + 1 + σ1 + σ2 − u, which P0 sends to P2 with e2.
//!
//! **Privacy.** Every message is masked by a uniform value its receiver lacks: P1 gets
//! e1 (mask x1 from k0) and h1 (mask σ1 from k0); P2 gets e2 (x2), h2 (σ2) and y0 (u; σ2
//! and x2 are used once each, so the three masks are independent). P0 receives nothing.
//! P1 and P2 know b anyway; a reaches them only under masks.
//!
//! # Cost (n elements; bytes sent per party)
//!
//! (For a shift f ≤ 32; a wider one sends e1, e2, h1 and h2 as whole words: 24·n, 8·n,
//! 8·n and 24·n, 16·n, 16·n.)
//!
//! | protocol | rounds | P0 | P1 | P2 |
//! | --- | --- | --- | --- | --- |
//! | probabilistic truncation | 1 | 8·n | 0 | 0 |
//! | exact truncation | 1 | 16·n | 4·n | 4·n |
//! | probabilistic fused product | 2 | 8·n | 8·n | 8·n |
//! | exact fused product | 2 | 16·n | 12·n | 12·n |
//!
//! One truncation or fused product takes the same rounds in both modes: in the fused
//! product, P2 sends h1 with its product term in the first round (b is the top bit of its
//! own term), and P1 sends h2 in the second, beside P0's messages. In a chain of protocols
//! the probabilistic mode overlaps more (its only message goes from P0 to P2, so P1 moves on
//! at once), so composites such as softmax take more rounds in exact mode (79 against 65
//! over 10 classes; see `cryptgpu_nonlinear::cost`).
//!
//! **Packing.** Everything e1 and e2 touch is multiplied by K, so only e mod 2^f matters;
//! and with σ1, σ2 drawn as multiples of K (K·σ' for a uniform σ'), h1 and h2 are multiples
//! of K too, so only their top f bits carry anything (and σ' keeps those uniform). For
//! f ≤ 32 all four travel as 32-bit halves, two to a word.

use crate::{Party, Result, Rss, ShareError};
use cryptgpu_backend::Operand::Input;
use cryptgpu_backend::{BinaryOp, DeviceTensor, Fused, FusedStep, GpuBackend, Operand, ShiftOp};
use cryptgpu_transport::{PartyId, Peer, Transport};
use std::fmt;
use std::str::FromStr;

/// How fixed-point values are truncated (see the module docs for both protocols, their
/// guarantees and their costs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Truncation {
    /// Off by at most one unit in the last place for every input in [−2^62, 2^62) (at 2f
    /// fractional bits for a product); no failure probability. Same rounds as
    /// probabilistic, about three times the bytes of the truncation step.
    #[default]
    Exact,
    /// ABY3's Π_trunc1: off by at most one unit, except with probability 2^(ℓ+1−64) for
    /// |z| < 2^ℓ, when the result is off by about 2^(64−f).
    Probabilistic,
}

impl Truncation {
    /// Both modes.
    pub const ALL: [Truncation; 2] = [Truncation::Exact, Truncation::Probabilistic];

    /// The mode's name on the command line and in job manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::Probabilistic => "probabilistic",
        }
    }
}

impl fmt::Display for Truncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Truncation {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown truncation `{s}`: choose `exact` or `probabilistic`"))
    }
}

/// Exact truncation handles |z| < 2^62 (the offset 2^62 must keep z + 2^62 below 2^63).
pub const EXACT_RANGE_BITS: u32 = 62;

/// Up to this shift, the exact truncation's masked bits e and mask messages h travel as
/// 32-bit halves, two to a word: only e mod 2^32 and the top 32 bits of h matter.
pub const PACKED_SHIFT_BITS: u32 = 32;

/// Elements on the wire of a message of `n` values packed two to a word.
fn packed_len(n: usize) -> usize {
    n.div_ceil(2)
}

/// The low 32 bits of each element of `t`, two to a word (`[⌈n/2⌉]`): element j in the low
/// half of word j, element ⌈n/2⌉ + j in the high half.
fn pack_halves<B: GpuBackend>(b: &B, t: &B::Tensor) -> cryptgpu_backend::Result<B::Tensor> {
    let n = t.len();
    let half = packed_len(n);
    let flat = b.reshape(t, &[n])?;
    if n == 0 {
        return Ok(flat);
    }
    let flat = if n % 2 == 1 {
        b.concat(&[&flat, &b.zeros(&[1])?], 0)?
    } else {
        flat
    };
    // (low & (2^32 − 1)) | (high << 32) in one pass.
    let mut pack = Fused::new();
    let low = pack.push(FusedStep::Scalar(BinaryOp::And, Input(0), 0xFFFF_FFFF));
    let high = pack.push(FusedStep::Shift(ShiftOp::Left, Input(1), 32));
    pack.binary(BinaryOp::Or, low, high);
    b.fused(
        &pack,
        &[
            &b.slice(&flat, 0, 0..half)?,
            &b.slice(&flat, 0, half..2 * half)?,
        ],
    )
}

/// The inverse of [`pack_halves`] for a tensor of `shape`, each element multiplied by
/// 2^`scale` (32 to 63): each element's low 32 bits times 2^`scale`, which needs no mask,
/// since the shift drops the high half. Two passes and the concatenation.
fn unpack_halves_scaled<B: GpuBackend>(
    b: &B,
    packed: &B::Tensor,
    shape: &[usize],
    scale: u32,
) -> cryptgpu_backend::Result<B::Tensor> {
    debug_assert!((32..64).contains(&scale));
    let n: usize = shape.iter().product();
    if n == 0 {
        return b.reshape(packed, shape);
    }
    let low = b.shift(ShiftOp::Left, packed, scale)?;
    let mut high = Fused::new();
    let top = high.push(FusedStep::Shift(ShiftOp::RightLogical, Input(0), 32));
    high.push(FusedStep::Shift(ShiftOp::Left, top, scale));
    let high = b.fused(&high, &[packed])?;
    join_halves(b, &low, &high, shape)
}

/// The halves of [`pack_halves`] for a tensor of `shape`, low bits only: element j's low 32
/// bits, high bits unspecified (for a value only ever multiplied by a multiple of 2^32).
fn unpack_low_halves<B: GpuBackend>(
    b: &B,
    packed: &B::Tensor,
    shape: &[usize],
) -> cryptgpu_backend::Result<B::Tensor> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return b.reshape(packed, shape);
    }
    let high = b.shift(ShiftOp::RightLogical, packed, 32)?;
    join_halves(b, packed, &high, shape)
}

/// The elements of the low halves, then of the high halves (the last high half of an odd
/// count is padding, dropped), as a tensor of `shape`.
fn join_halves<B: GpuBackend>(
    b: &B,
    low: &B::Tensor,
    high: &B::Tensor,
    shape: &[usize],
) -> cryptgpu_backend::Result<B::Tensor> {
    let n: usize = shape.iter().product();
    let both = b.concat(&[low, high], 0)?;
    let both = if both.len() != n {
        b.slice(&both, 0, 0..n)?
    } else {
        both
    };
    b.reshape(&both, shape)
}

/// K·b as a step of `program`: the top bit b of `value` moved to bit 64 − bits (K =
/// 2^(64−bits)).
fn scaled_top_bit(program: &mut Fused, value: Operand, bits: u32) -> Operand {
    let top = program.push(FusedStep::Shift(ShiftOp::RightLogical, value, 63));
    program.push(FusedStep::Shift(ShiftOp::Left, top, 64 - bits))
}

/// σ' as the protocol uses it, as a step of `program`: when e and h are packed, a multiple
/// of K = 2^(64−bits) (K·σ for the drawn σ), so that every term h carries is a multiple
/// of K; else σ itself.
fn scaled_sigma(program: &mut Fused, sigma: Operand, bits: u32) -> Operand {
    if packs(bits) {
        program.push(FusedStep::Shift(ShiftOp::Left, sigma, 64 - bits))
    } else {
        sigma
    }
}

/// What a party already has when the exact truncation's last step starts: P1 the h1 that
/// came with the fused product's message, P2 the h1 it sent.
struct Early<B: GpuBackend> {
    h1: Option<B::Tensor>,
    sent: Option<MaskMessage<B>>,
}

/// The message K·b·x + σ' that P1 (h2) or P2 (h1) sends (as it goes on the wire), with
/// what the sender needs again for its share: σ as drawn (σ' follows from it).
struct MaskMessage<B: GpuBackend> {
    message: B::Tensor,
    sigma: B::Tensor,
}

/// Whether an exact truncation by `bits` packs e and h two to a word.
fn packs(bits: u32) -> bool {
    bits <= PACKED_SHIFT_BITS
}

/// Test hook: the one mask of the exact truncation that [`Party`]'s
/// `insecure_skip_truncation_mask` replaces by zero at every party, to show that the
/// privacy test detects each message sent unmasked.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TruncationMask {
    /// x1, which masks e1 (P0 → P1).
    X1,
    /// x2, which masks e2 (P0 → P2).
    X2,
    /// σ1, which masks h1 (P2 → P1).
    Sigma1,
    /// σ2, which masks h2 (P1 → P2).
    Sigma2,
    /// u, which masks y0 (P0 → P2).
    U,
}

#[cfg(test)]
impl TruncationMask {
    /// Every mask.
    pub(crate) const ALL: [Self; 5] = [Self::X1, Self::X2, Self::Sigma1, Self::Sigma2, Self::U];
}

/// The PRG streams of one exact truncation: the masked bits x, the masks σ, and u.
#[derive(Clone, Copy)]
struct ExactStreams {
    x: u64,
    sigma: u64,
    u: u64,
}

impl<B: GpuBackend, T: Transport> Party<B, T> {
    /// The 2-out-of-2 view (A at P0, B at P1 and P2) of a 2-out-of-3 sharing, re-randomised
    /// by a common random s: A − s at P0, B + s at P1 and P2. No message.
    pub(crate) fn split_for_truncation(&mut self, z: &Rss<B>) -> Result<B::Tensor> {
        let s = self.random_common(z.shape())?;
        let b = self.backend();
        Ok(match self.id().index() {
            0 => b.sub(&b.add(&z.own, &z.next)?, &s)?,
            1 => b.add(&z.next, &s)?,
            _ => b.add(&z.own, &s)?,
        })
    }

    /// Truncates the 2-out-of-2 view `part` by `bits` in this party's mode. One round.
    pub(crate) fn truncate_split(&mut self, part: B::Tensor, bits: u32) -> Result<Rss<B>> {
        match self.truncation() {
            Truncation::Probabilistic => self.finish_probabilistic(part, bits),
            Truncation::Exact => {
                let streams = self.exact_streams(bits)?;
                let sent = if self.id() == PartyId::P2 {
                    let h1 = self.exact_mask_message(&part, streams, bits)?;
                    self.send_tensor(Peer::Prev, &h1.message)?;
                    Some(h1)
                } else {
                    None
                };
                self.finish_exact(part, bits, streams, Early { h1: None, sent })
            }
        }
    }

    /// The fused end of a truncated product from this party's 3-out-of-3 term `z`: P1 sends
    /// z1 to P0 and P2 sends z2 to P1 (with h1 in exact mode), then the truncation. Two
    /// rounds in either mode.
    pub(crate) fn reshare_truncated(&mut self, z: B::Tensor) -> Result<Rss<B>> {
        const OP: &str = "product_truncated";
        let f = self.fixed().frac_bits();
        let exact = match self.truncation() {
            Truncation::Exact => Some(self.exact_streams(f)?),
            Truncation::Probabilistic => None,
        };
        let shape = z.shape().to_vec();
        let none = Early {
            h1: None,
            sent: None,
        };
        let (part, early) = match self.id().index() {
            0 => {
                let z1 = self.recv_tensor(OP, Peer::Next, &shape)?;
                (self.backend().add(&z, &z1)?, none)
            }
            1 => {
                self.send_tensor(Peer::Prev, &z)?;
                match exact {
                    None => (self.recv_tensor(OP, Peer::Next, &shape)?, none),
                    Some(_) => {
                        let wire = Self::exact_wire_shape(&shape, f);
                        let mut got = self.recv_tensors(OP, Peer::Next, &[&shape, &wire])?;
                        let h1 = got.pop().expect("two tensors");
                        let early = Early {
                            h1: Some(h1),
                            sent: None,
                        };
                        (got.pop().expect("two tensors"), early)
                    }
                }
            }
            _ => match exact {
                None => {
                    self.send_tensor(Peer::Prev, &z)?;
                    (z, none)
                }
                Some(streams) => {
                    let h1 = self.exact_mask_message(&z, streams, f)?;
                    self.send_tensors(Peer::Prev, &[&z, &h1.message])?;
                    let early = Early {
                        h1: None,
                        sent: Some(h1),
                    };
                    (z, early)
                }
            },
        };
        match exact {
            None => self.finish_probabilistic(part, f),
            Some(streams) => self.finish_exact(part, f, streams, early),
        }
    }

    /// Π_trunc1's last step. `part` is A at P0 and B at P1 and P2. With A' = ⌊A / 2^f⌋ and
    /// B' = −⌊−B / 2^f⌋ (shares read as unsigned), the result is y2 = B' (P1, P2), y1 = r
    /// from k1 (P0, P1), y0 = A' − r, sent by P0 to P2.
    fn finish_probabilistic(&mut self, part: B::Tensor, f: u32) -> Result<Rss<B>> {
        let stream = self.next_stream();
        let shape = part.shape().to_vec();
        let b = self.backend();
        if self.id() == PartyId::P0 {
            let r = self.random_with_next(&shape, stream)?;
            let y0 = b.sub(&b.shift(ShiftOp::RightLogical, &part, f)?, &r)?;
            self.send_tensor(Peer::Prev, &y0)?;
            return Rss::from_shares(y0, r);
        }
        let y2 = b.neg(&b.shift(ShiftOp::RightLogical, &b.neg(&part)?, f)?)?;
        if self.id() == PartyId::P1 {
            let r = self.random_with_prev(&shape, stream)?;
            Rss::from_shares(r, y2)
        } else {
            let y0 = self.recv_tensor("truncate", Peer::Next, &shape)?;
            Rss::from_shares(y2, y0)
        }
    }

    /// The streams of one exact truncation by `bits`, after checking that the shift is one
    /// exact truncation supports (1 to 62 bits).
    fn exact_streams(&mut self, bits: u32) -> Result<ExactStreams> {
        if !(1..=EXACT_RANGE_BITS).contains(&bits) {
            return Err(ShareError::Argument {
                op: "truncate (exact)",
                why: format!(
                    "cannot shift by {bits} bits exactly (1 to {EXACT_RANGE_BITS}); use \
                     probabilistic truncation"
                ),
            });
        }
        Ok(ExactStreams {
            x: self.next_stream(),
            sigma: self.next_stream(),
            u: self.next_stream(),
        })
    }

    /// K·b·x + σ for this party's B (b its top bit, K = 2^(64−bits)) and the masks it shares
    /// with the party that receives it: h1 (P2 → P1, masks from k0) or h2 (P1 → P2, k1).
    fn exact_mask_message(
        &self,
        part: &B::Tensor,
        streams: ExactStreams,
        bits: u32,
    ) -> Result<MaskMessage<B>> {
        let shape = part.shape();
        let (x, sigma) = if self.id() == PartyId::P2 {
            (
                self.random_with_next(shape, streams.x)?,
                self.random_with_next(shape, streams.sigma)?,
            )
        } else {
            (
                self.random_with_prev(shape, streams.x)?,
                self.random_with_prev(shape, streams.sigma)?,
            )
        };
        #[cfg(test)]
        let (x, sigma) = {
            let p2 = self.id() == PartyId::P2;
            let (xm, sm) = if p2 {
                (TruncationMask::X1, TruncationMask::Sigma1)
            } else {
                (TruncationMask::X2, TruncationMask::Sigma2)
            };
            (self.test_mask(xm, x)?, self.test_mask(sm, sigma)?)
        };
        let b = self.backend();
        // K·b·x + σ' in one pass, K·b the top bit moved to bit 64 − bits; when packed, a
        // multiple of K whose top `bits` bits are all of it.
        let mut h = Fused::new();
        let scaled_bit = scaled_top_bit(&mut h, Input(0), bits);
        let masked = h.binary(BinaryOp::Mul, scaled_bit, Input(1));
        let sigma_scaled = scaled_sigma(&mut h, Input(2), bits);
        let full = h.binary(BinaryOp::Add, masked, sigma_scaled);
        if packs(bits) {
            h.push(FusedStep::Shift(ShiftOp::RightLogical, full, 64 - bits));
        }
        let value = b.fused(&h, &[part, &x, &sigma])?;
        let message = if packs(bits) {
            pack_halves(b, &value)?
        } else {
            value
        };
        Ok(MaskMessage { message, sigma })
    }

    /// Test hook: `mask`, or zeros when the party was told to skip it.
    #[cfg(test)]
    fn test_mask(&self, which: TruncationMask, mask: B::Tensor) -> Result<B::Tensor> {
        Ok(if self.insecure_skip_truncation_mask == Some(which) {
            self.backend().zeros(mask.shape())?
        } else {
            mask
        })
    }

    /// The shape of a masked bit e or mask message h of values of `shape` on the wire.
    fn exact_wire_shape(shape: &[usize], bits: u32) -> Vec<usize> {
        if packs(bits) {
            vec![packed_len(shape.iter().product())]
        } else {
            shape.to_vec()
        }
    }

    /// A received mask message h as the protocol uses it.
    fn read_mask_message(&self, h: &B::Tensor, shape: &[usize], bits: u32) -> Result<B::Tensor> {
        Ok(if packs(bits) {
            unpack_halves_scaled(self.backend(), h, shape, 64 - bits)?
        } else {
            h.clone()
        })
    }

    /// A received masked bit e as the protocol uses it (only e mod 2^32 matters when
    /// packed: it is multiplied by K).
    fn read_masked_bit(&self, e: &B::Tensor, shape: &[usize], bits: u32) -> Result<B::Tensor> {
        Ok(if packs(bits) {
            unpack_low_halves(self.backend(), e, shape)?
        } else {
            e.clone()
        })
    }

    /// P1's and P2's share y2 = sar(B, bits) + (K·b·e − h) − σ', from the masked bit e and
    /// the mask message h it received and the σ' of the message it sent.
    fn exact_shared_part(
        &self,
        part: &B::Tensor,
        bits: u32,
        sent: &MaskMessage<B>,
        e: &B::Tensor,
        h: &B::Tensor,
    ) -> Result<B::Tensor> {
        // One pass over (B, e, h, σ).
        let mut y2 = Fused::new();
        let scaled_bit = scaled_top_bit(&mut y2, Input(0), bits);
        let cross = y2.binary(BinaryOp::Mul, scaled_bit, Input(1));
        let cross = y2.binary(BinaryOp::Sub, cross, Input(2));
        let shifted = y2.push(FusedStep::Shift(ShiftOp::RightArithmetic, Input(0), bits));
        let sum = y2.binary(BinaryOp::Add, shifted, cross);
        let sigma = scaled_sigma(&mut y2, Input(3), bits);
        y2.binary(BinaryOp::Sub, sum, sigma);
        Ok(self.backend().fused(&y2, &[part, e, h, &sent.sigma])?)
    }

    /// The exact truncation of the module docs, from `part` (A at P0, B at P1 and P2). P2
    /// has already sent h1 and passes its σ1; P1 passes h1 when it came with the fused
    /// product's message (else h1 comes alone).
    fn finish_exact(
        &mut self,
        part: B::Tensor,
        bits: u32,
        streams: ExactStreams,
        early: Early<B>,
    ) -> Result<Rss<B>> {
        const OP: &str = "truncate (exact)";
        let shape = part.shape().to_vec();
        let wire = Self::exact_wire_shape(&shape, bits);
        let b = self.backend().clone();
        match self.id().index() {
            0 => {
                let x1 = self.random_with_prev(&shape, streams.x)?;
                let sigma1 = self.random_with_prev(&shape, streams.sigma)?;
                let x2 = self.random_with_next(&shape, streams.x)?;
                let sigma2 = self.random_with_next(&shape, streams.sigma)?;
                let u = self.random_with_next(&shape, streams.u)?;
                #[cfg(test)]
                let (x1, sigma1, x2, sigma2, u) = (
                    self.test_mask(TruncationMask::X1, x1)?,
                    self.test_mask(TruncationMask::Sigma1, sigma1)?,
                    self.test_mask(TruncationMask::X2, x2)?,
                    self.test_mask(TruncationMask::Sigma2, sigma2)?,
                    self.test_mask(TruncationMask::U, u)?,
                );
                // With A' = A + 2^62: e = top bit of A' + x, one pass each.
                let offset = 1u64 << EXACT_RANGE_BITS;
                let mut masked_bit = Fused::new();
                let shifted = masked_bit.push(FusedStep::Scalar(BinaryOp::Add, Input(0), offset));
                let top = masked_bit.push(FusedStep::Shift(ShiftOp::RightLogical, shifted, 63));
                masked_bit.binary(BinaryOp::Add, top, Input(1));
                let e1 = b.fused(&masked_bit, &[&part, &x1])?;
                let e2 = b.fused(&masked_bit, &[&part, &x2])?;
                // y0 = sar(A', bits) + correction + σ1' + σ2' − u, one pass.
                let correction = 1u64.wrapping_sub(1 << (EXACT_RANGE_BITS - bits));
                let mut own = Fused::new();
                let shifted = own.push(FusedStep::Scalar(BinaryOp::Add, Input(0), offset));
                let own_part = own.push(FusedStep::Shift(ShiftOp::RightArithmetic, shifted, bits));
                let own_part = own.push(FusedStep::Scalar(BinaryOp::Add, own_part, correction));
                let s1 = scaled_sigma(&mut own, Input(1), bits);
                let s2 = scaled_sigma(&mut own, Input(2), bits);
                let sigmas = own.binary(BinaryOp::Add, s1, s2);
                let sum = own.binary(BinaryOp::Add, own_part, sigmas);
                own.binary(BinaryOp::Sub, sum, Input(3));
                let y0 = b.fused(&own, &[&part, &sigma1, &sigma2, &u])?;
                let (e1, e2) = if packs(bits) {
                    (pack_halves(&b, &e1)?, pack_halves(&b, &e2)?)
                } else {
                    (e1, e2)
                };
                self.send_tensor(Peer::Next, &e1)?;
                self.send_tensors(Peer::Prev, &[&e2, &y0])?;
                Rss::from_shares(y0, u)
            }
            1 => {
                let h2 = self.exact_mask_message(&part, streams, bits)?;
                self.send_tensor(Peer::Next, &h2.message)?;
                let u = self.random_with_prev(&shape, streams.u)?;
                #[cfg(test)]
                let u = self.test_mask(TruncationMask::U, u)?;
                let e1 = self.recv_tensor(OP, Peer::Prev, &wire)?;
                let e1 = self.read_masked_bit(&e1, &shape, bits)?;
                let h1 = match early.h1 {
                    Some(h1) => h1,
                    None => self.recv_tensor(OP, Peer::Next, &wire)?,
                };
                let h1 = self.read_mask_message(&h1, &shape, bits)?;
                let y2 = self.exact_shared_part(&part, bits, &h2, &e1, &h1)?;
                Rss::from_shares(u, y2)
            }
            _ => {
                let h1 = early.sent.expect("P2 sent h1 first");
                let mut got = self.recv_tensors(OP, Peer::Next, &[&wire, &shape])?;
                let y0 = got.pop().expect("two tensors");
                let e2 = got.pop().expect("two tensors");
                let e2 = self.read_masked_bit(&e2, &shape, bits)?;
                let h2 = self.recv_tensor(OP, Peer::Prev, &wire)?;
                let h2 = self.read_mask_message(&h2, &shape, bits)?;
                let y2 = self.exact_shared_part(&part, bits, &h1, &e2, &h2)?;
                Rss::from_shares(y2, y0)
            }
        }
    }
}
