//! Binary (XOR) sharing and the bridges to and from arithmetic sharing: local XOR and NOT,
//! AND in one round, secret bits packed 64 to a word ([`SharedBits`]), the most significant
//! bit of an arithmetic sharing by a carry tree (A2B), and bit injection (a shared bit times
//! a shared value).
//!
//! # Communication (n = elements; w = ⌈n / 64⌉ packed words; bytes sent per party)
//!
//! | op | rounds | P0 | P1 | P2 |
//! | --- | --- | --- | --- | --- |
//! | [`Party::share_binary`] by P0 (n words, rank r) | 1 | 16·n + 16·(1 + r) | 0 | 0 |
//! | [`Party::binary_and`] on `m` words | 1 | 8·m | 8·m | 8·m |
//! | [`Party::msb_in`] over k bits, exact on [−2^k, 2^k) | 2 + ⌈log2 ⌈k/2⌉⌉ | 8·(k + 1 + ⌊k/2⌋ + t)·w | 8·(2·⌈k/2⌉ + t)·w | 8·(2·⌈k/2⌉ + t)·w |
//! | [`Party::msb`]: `msb_in` with k = ℓ + 1 | 7 (ℓ from 32 to 62) | 13·n at ℓ = 43 | 10.125·n | 10.125·n |
//! | [`Party::mul_bit`] (bits of n elements, value of N ≥ n elements) | 2 | 8·n + 8·N | 8·N | 8·N |
//! | [`Party::bit_to_arith`] | 2 | 16·n | 8·n | 8·n |
//! | [`Party::reveal_bits`] | 1 | 8·w | 8·w | 8·w |
//!
//! where t is the number of ANDs of the carry tree over ⌈k/2⌉ groups (37 for k = 44, 57
//! for k = 63). So one bit of a shared AND costs one bit on the wire: for n a multiple of
//! 64 and the default ℓ = 43 (f = 20; k = 44), the MSB costs P0 13 bytes per element and
//! P1, P2 10.125, in 7 rounds (a domain one bit narrower, k = 43, cost P0 12.75); over the
//! whole ring (k = 63, ℓ = 62) 19 and 15.125.
//!
//! # MSB by a carry tree
//!
//! The comparisons read the sign of a value of the comparison domain [−2^ℓ, 2^ℓ)
//! ([`Party::comparison_bits`]), of its negation, or of the difference of two such values,
//! all in [−2^(ℓ+1), 2^(ℓ+1)): so [`Party::msb`] is exact on that range, k = ℓ + 1 bits
//! (at most 63, the whole ring, since ℓ ≤ 62). Outside it the result is the sign of x
//! reduced into [−2^k, 2^k): wrong with period 2^(k+1), and no error.
//!
//! x = (x0 + x1) + x2 = a + b, with a = x0 + x1 known to P0 and b = x2 known to P1 and P2.
//! For x in [−2^k, 2^k), P0 adds 2^k to a: then x + 2^k lies in [0, 2^(k+1)), and its bit
//! k is 1 exactly when x ≥ 0. That bit is a_k ⊕ b_k ⊕ c_k, where the carry c_k into bit k
//! is the generate signal G of the low k bits of a + b, so only bits 0..=k take part
//! (k = 63 is the whole ring's MSB).
//!
//! The low bits are sliced into rows of packed words, so that a row op handles bit j of
//! every element, and grouped in pairs (an odd top bit alone). Since P0 knows a, it inputs
//! the rows of a and, for each pair, q = a_hi ∧ a_lo, as the XOR sharing (· ⊕ r, r) with r
//! from the key it shares with P1: one message, to P2. P1 and P2 both know b, so each
//! pair's signals are linear in the shared bits:
//!
//! G = a_hi·b_hi ⊕ q·b_lo ⊕ a_lo·(b_hi·b_lo),   P = q ⊕ a_hi·b_lo ⊕ a_lo·b_hi ⊕ b_hi·b_lo,
//!
//! and P1 and P2 compute XOR shares of every group's (G, P) without a message. They turn
//! them into a 2-out-of-3 sharing (ρ from P0's key with P1, σ from P0's key with P2, and
//! the third share their sum): P1 sends its share ⊕ ρ to P2 and P2 its share ⊕ σ to P1
//! (each masked by a key the receiver lacks); P1's message leaves at once, so the input and
//! this exchange take 2 rounds. Then a balanced tree of (G, P)_hi ∘ (G, P)_lo =
//! (G_hi ⊕ (P_hi ∧ G_lo), P_hi ∧ P_lo) over the ⌈k/2⌉ groups (2·pairs − 1 ANDs per level:
//! the lowest group never needs its P) takes one round per level: 22 → 11 → 6 → 3 → 2 → 1
//! for k = 44, 5 rounds. In all 7 rounds, against 8 for the plain 63-bit tree (which
//! also spends a round and 63 ANDs on the generate bits).

//! # Bit injection
//!
//! For a shared bit β = β0 ⊕ β1 ⊕ β2 and a shared value x, P0 knows d = β0 ⊕ β1 and P1, P2
//! know β2, so β = d ⊕ β2 and β·x = β2·x + (1 − 2·β2)·d·x. With a = x0 + x1 (P0's), the
//! product d·x = d·a + d·x2 splits into terms P1 and P2 can each compute, once P0 has sent
//! P2 the masked d − r and d·a − t (r and t from k1, which P0 shares with P1):
//!
//! - P1: β2·(x1 + x2) + (1 − 2·β2)·(r·x2 + t),
//! - P2: β2·x0 + (1 − 2·β2)·((d − r)·x2 + (d·a − t)).
//!
//! They add up to β·x. A 2-out-of-3 sharing follows as for the MSB's groups: ρ from k1
//! and σ from k0 (P0's key with P2) are two shares, P1 sends its term − ρ to P2 and P2 its
//! term − σ to P1, and both add them into the third. Every message is masked by a key its
//! receiver lacks; P1's leaves at once, so the injection takes 2 rounds and 8·n + 8·N
//! bytes from P0, 8·N from P1 and P2 (32 bytes an element in all, against 48 for an
//! arithmetic input of d and a product).

use crate::party::same_shape;
use crate::{BinaryRss, Party, Result, Rss, ShareError};
use cryptgpu_backend::{DeviceTensor, GpuBackend, UnaryOp, shape::packed_words};
use cryptgpu_transport::{Peer, Transport};

/// Bits per ring element, the rows of a bit-sliced tensor.
const RING_BITS: usize = 64;

/// One secret bit per element of a tensor of `shape`, XOR-shared and packed 64 to a word
/// (`packed` has shape `[⌈n / 64⌉]`; its unused high bits carry no meaning). Comparisons
/// return it; [`Party::mul_bit`] and [`Party::bit_to_arith`] bring it back to arithmetic.
pub struct SharedBits<B: GpuBackend> {
    packed: BinaryRss<B>,
    shape: Vec<usize>,
}

impl<B: GpuBackend> SharedBits<B> {
    /// Wraps packed binary shares of the bits of a tensor of `shape`.
    pub fn from_packed(packed: BinaryRss<B>, shape: &[usize]) -> Result<Self> {
        let words = packed_words(shape.iter().product());
        if packed.shape() != [words] {
            return Err(ShareError::Shape {
                op: "SharedBits::from_packed",
                lhs: packed.shape().to_vec(),
                rhs: vec![words],
            });
        }
        Ok(Self {
            packed,
            shape: shape.to_vec(),
        })
    }

    /// The shape of the tensor the bits belong to.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packed binary shares.
    pub fn packed(&self) -> &BinaryRss<B> {
        &self.packed
    }

    /// The same bits seen as a tensor of another shape with as many elements (local).
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(ShareError::Shape {
                op: "SharedBits::reshape",
                lhs: self.shape.clone(),
                rhs: shape.to_vec(),
            });
        }
        Ok(Self {
            packed: self.packed.clone(),
            shape: shape.to_vec(),
        })
    }
}

impl<B: GpuBackend> Clone for SharedBits<B> {
    fn clone(&self) -> Self {
        Self {
            packed: self.packed.clone(),
            shape: self.shape.clone(),
        }
    }
}

impl<B: GpuBackend> std::fmt::Debug for SharedBits<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBits")
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl<B: GpuBackend, T: Transport> Party<B, T> {
    // ---- binary sharing: local ops ------------------------------------------------------

    /// x ⊕ y (local).
    pub fn binary_xor(&self, x: &BinaryRss<B>, y: &BinaryRss<B>) -> Result<BinaryRss<B>> {
        same_shape("binary_xor", x.shape(), y.shape())?;
        let b = self.backend();
        BinaryRss::from_shares(b.xor(&x.own, &y.own)?, b.xor(&x.next, &y.next)?)
    }

    /// ¬x, every bit flipped (local: the holders of x0, P0 and P2, flip their copy).
    pub fn binary_not(&self, x: &BinaryRss<B>) -> Result<BinaryRss<B>> {
        let b = self.backend();
        match self.id().index() {
            0 => BinaryRss::from_shares(b.unary(UnaryOp::Not, &x.own)?, x.next.clone()),
            2 => BinaryRss::from_shares(x.own.clone(), b.unary(UnaryOp::Not, &x.next)?),
            _ => Ok(x.clone()),
        }
    }

    /// Applies a map that is linear over XOR (a layout op: reshape, slice, permute, concat of
    /// one tensor, broadcast) to both shares: local.
    pub fn binary_linear(
        &self,
        x: &BinaryRss<B>,
        f: impl Fn(&B, &B::Tensor) -> cryptgpu_backend::Result<B::Tensor>,
    ) -> Result<BinaryRss<B>> {
        let b = self.backend();
        BinaryRss::from_shares(f(b, &x.own)?, f(b, &x.next)?)
    }

    /// Concatenates binary sharings along `axis` (local).
    pub fn binary_concat(&self, xs: &[&BinaryRss<B>], axis: usize) -> Result<BinaryRss<B>> {
        let b = self.backend();
        let own: Vec<&B::Tensor> = xs.iter().map(|x| &x.own).collect();
        let next: Vec<&B::Tensor> = xs.iter().map(|x| &x.next).collect();
        BinaryRss::from_shares(b.concat(&own, axis)?, b.concat(&next, axis)?)
    }

    /// XOR-shares a tensor of words held by `owner` (who passes `Some`; the others `None`),
    /// like [`Party::share`]: x_owner and x_{owner+1} come from keys, and the third share
    /// goes to both neighbours. One round; the owner sends 16·n bytes, and its shape.
    pub fn share_binary(
        &mut self,
        owner: cryptgpu_transport::PartyId,
        values: Option<&B::Tensor>,
        shape: &[usize],
    ) -> Result<BinaryRss<B>> {
        let (own, next) =
            self.input_shares("share_binary", owner, values, shape, |b, x, r0, r1| {
                b.xor(&b.xor(x, r0)?, r1)
            })?;
        BinaryRss::from_shares(own, next)
    }

    // ---- binary sharing: AND and reveal -------------------------------------------------

    /// x ∧ y, bitwise: z_i = x_i ∧ (y_i ⊕ y_{i+1}) ⊕ x_{i+1} ∧ y_i ⊕ β_i with a fresh XOR
    /// sharing of zero β, then resharing. One round; each party sends one word per word.
    pub fn binary_and(&mut self, x: &BinaryRss<B>, y: &BinaryRss<B>) -> Result<BinaryRss<B>> {
        use cryptgpu_backend::Fused;
        same_shape("binary_and", x.shape(), y.shape())?;
        let (mine, theirs) = self.zero_share_parts(x.shape())?;
        // One pass: x_i ∧ (y_i ⊕ y_{i+1}) ⊕ x_{i+1} ∧ y_i ⊕ F(k_i) ⊕ F(k_{i+1}).
        let z = self.backend().fused(
            &Fused::and_term(),
            &[&x.own, &x.next, &y.own, &y.next, &mine, &theirs],
        )?;
        self.send_tensor(Peer::Prev, &z)?;
        let next = self.recv_tensor("binary_and", Peer::Next, z.shape())?;
        BinaryRss::from_shares(z, next)
    }

    /// Reveals an XOR-shared tensor of words to all three parties. One round.
    pub fn binary_reveal(&mut self, x: &BinaryRss<B>) -> Result<Vec<u64>> {
        self.send_tensor(Peer::Prev, &x.next)?;
        let missing = self.recv_tensor("binary_reveal", Peer::Next, x.shape())?;
        let b = self.backend();
        Ok(b.download(&b.xor(&b.xor(&x.own, &x.next)?, &missing)?)?)
    }

    // ---- shared bits --------------------------------------------------------------------

    /// ¬β for every bit (local).
    pub fn bits_not(&self, bits: &SharedBits<B>) -> Result<SharedBits<B>> {
        SharedBits::from_packed(self.binary_not(&bits.packed)?, &bits.shape)
    }

    /// β ⊕ γ (local).
    pub fn bits_xor(&self, x: &SharedBits<B>, y: &SharedBits<B>) -> Result<SharedBits<B>> {
        same_shape("bits_xor", &x.shape, &y.shape)?;
        SharedBits::from_packed(self.binary_xor(&x.packed, &y.packed)?, &x.shape)
    }

    /// β ∧ γ. One round, one bit per bit.
    pub fn bits_and(&mut self, x: &SharedBits<B>, y: &SharedBits<B>) -> Result<SharedBits<B>> {
        same_shape("bits_and", &x.shape, &y.shape)?;
        SharedBits::from_packed(self.binary_and(&x.packed, &y.packed)?, &x.shape)
    }

    /// Reveals shared bits to all three parties. One round, one bit per bit.
    pub fn reveal_bits(&mut self, bits: &SharedBits<B>) -> Result<Vec<bool>> {
        let words = self.binary_reveal(&bits.packed)?;
        Ok((0..bits.len())
            .map(|i| (words[i / 64] >> (i % 64)) & 1 == 1)
            .collect())
    }

    // ---- arithmetic to binary -----------------------------------------------------------

    /// The most significant bit of every element of an arithmetic sharing (1 for the
    /// negative values of the two's complement view), exact for x ∈ [−2^(ℓ+1), 2^(ℓ+1))
    /// with ℓ the comparison domain ([`Party::comparison_bits`]): every value of the domain
    /// [−2^ℓ, 2^ℓ), its negation, and the difference of any two, so the comparisons built
    /// on it are exact for values in the domain. [`Party::msb_in`] with ℓ + 1 bits (the
    /// carry tree of the module docs over ℓ + 2 low bits): 7 rounds for ℓ from 32 to 62.
    pub fn msb(&mut self, x: &Rss<B>) -> Result<SharedBits<B>> {
        let bits = self.comparison_bits() + 1;
        self.msb_in(x, bits)
    }

    /// The most significant bit of every element of an arithmetic sharing, exact for
    /// x ∈ [−2^bits, 2^bits) (2 ≤ bits ≤ 63; 63: every ring element), by the carry tree of
    /// the module docs over the `bits` + 1 low bits. Outside that range the result is the
    /// sign of x reduced into it (periodic in 2^(bits+1)), with no error.
    ///
    /// # Errors
    /// [`ShareError::Argument`] unless 2 ≤ bits ≤ 63.
    pub fn msb_in(&mut self, x: &Rss<B>, bits: u32) -> Result<SharedBits<B>> {
        const OP: &str = "msb";
        if !(2..=63).contains(&bits) {
            return Err(ShareError::Argument {
                op: OP,
                why: format!("the MSB covers 2 to 63 bits, not {bits}"),
            });
        }
        let l = bits as usize;
        let words = packed_words(x.len());
        let (pairs, groups, planes) = (l / 2, l.div_ceil(2), l + 1);
        let message_rows = [planes + pairs, words];
        let group_rows = [2 * groups, words];
        let input_stream = self.next_stream();
        let rho_stream = self.next_stream();
        let sigma_stream = self.next_stream();
        let b = self.backend().clone();
        let planes_of = |t: &B::Tensor| -> Result<B::Tensor> {
            let all = b.bit_planes(t)?;
            Ok(if planes < RING_BITS {
                b.slice(&all, 0, 0..planes)?
            } else {
                all
            })
        };
        // This party's XOR share of every group's (G, P) (P1 and P2; P0 has none) and of bit
        // k of a ⊕ b.
        let (terms, top_p) = match self.id().index() {
            0 => {
                // a = x0 + x1 + 2^k, with a_hi ∧ a_lo of each pair: input to P1 and P2 as
                // (a ⊕ r, r) with r from k1, one message to P2.
                let offset = b.add_scalar(&b.add(&x.own, &x.next)?, 1u64 << l)?;
                let a = planes_of(&offset)?;
                let (low, high) = pair_halves(&b, &a, pairs)?;
                let products = b.and(&high, &low)?;
                let plain = b.concat(&[&a, &products], 0)?;
                let r = self.random_with_next(&message_rows, input_stream)?;
                let masked = b.xor(&plain, &r)?;
                self.send_tensor(Peer::Prev, &masked)?;
                let top = BinaryRss::from_shares(
                    b.slice(&masked, 0, l..planes)?,
                    b.slice(&r, 0, l..planes)?,
                )?;
                (None, top)
            }
            1 => {
                let r = self.random_with_prev(&message_rows, input_stream)?;
                let addend = planes_of(&x.next)?;
                let top = BinaryRss::from_shares(
                    b.slice(&r, 0, l..planes)?,
                    b.slice(&addend, 0, l..planes)?,
                )?;
                (Some(group_terms(&b, &r, &addend, pairs, false)?), top)
            }
            _ => {
                let addend = planes_of(&x.own)?;
                let masked = self.recv_tensor(OP, Peer::Next, &message_rows)?;
                let top = BinaryRss::from_shares(
                    b.slice(&addend, 0, l..planes)?,
                    b.slice(&masked, 0, l..planes)?,
                )?;
                (Some(group_terms(&b, &masked, &addend, pairs, true)?), top)
            }
        };
        let (own, next) = self.reshare_between_helpers(
            OP,
            &group_rows,
            terms.as_ref(),
            [rho_stream, sigma_stream],
            |b, x, y| b.xor(x, y),
            |b, x, y| b.xor(x, y),
        )?;
        let mut gp = BinaryRss::from_shares(own, next)?;
        let mut remaining = groups;
        while remaining > 1 {
            (gp, remaining) = self.carry_tree_level(&gp, remaining)?;
        }
        // The one group left: its G is the carry into bit k.
        let generate = self.binary_linear(&gp, |b, t| b.slice(t, 0, 0..1))?;
        // Bit k of x + 2^k is 1 exactly when x ≥ 0.
        let top = self.binary_xor(&top_p, &generate)?;
        let sign = self.binary_not(&top)?;
        let packed = self.binary_linear(&sign, |b, t| b.reshape(t, &[words]))?;
        SharedBits::from_packed(packed, x.shape())
    }

    /// One level of the carry tree over `gp`, the XOR sharing of `[G; P]` of `groups`
    /// groups (`[2·groups, words]`: G rows, then P rows): groups 2k (low) and 2k + 1
    /// (high) combine into group k, G' = G_hi ⊕ P_hi·G_lo and P' = P_hi·P_lo, and an odd
    /// last group passes through. Returns `[G'; P']` and its number of groups.
    ///
    /// Row 0 of P (the lowest group's) is never read, so it is not computed either (it
    /// holds zeros after the first level): the level costs 2·pairs − 1 ANDs per element,
    /// in one round. Its operands and its result are each picked from whole tensors by
    /// [`GpuBackend::select_rows`], one pass a share each.
    fn carry_tree_level(
        &mut self,
        gp: &BinaryRss<B>,
        groups: usize,
    ) -> Result<(BinaryRss<B>, usize)> {
        let pairs = groups / 2;
        let odd = groups % 2 == 1;
        let (g, p) = (|i: usize| Some(i), |i: usize| Some(groups + i));
        // left = P_hi of every pair, then of the pairs above the lowest;
        // right = G_lo of every pair, then P_lo of the pairs above the lowest.
        let left: Vec<Option<usize>> = (0..pairs).chain(1..pairs).map(|k| p(2 * k + 1)).collect();
        let right: Vec<Option<usize>> = (0..pairs)
            .map(|k| g(2 * k))
            .chain((1..pairs).map(|k| p(2 * k)))
            .collect();
        let products =
            self.binary_and(&self.pick_rows(gp, &left)?, &self.pick_rows(gp, &right)?)?;
        // [G'; P'] = rows of gp ⊕ rows of the products, a missing row reading zero.
        let pass = odd.then_some(());
        let from_gp: Vec<Option<usize>> = (0..pairs)
            .map(|k| g(2 * k + 1))
            .chain(pass.map(|()| g(2 * pairs)))
            .chain((0..pairs).map(|_| None))
            .chain(pass.map(|()| p(2 * pairs)))
            .collect();
        let from_products: Vec<Option<usize>> = (0..pairs)
            .map(Some)
            .chain(pass.map(|()| None))
            .chain([None])
            .chain((1..pairs).map(|k| Some(pairs - 1 + k)))
            .chain(pass.map(|()| None))
            .collect();
        let next = self.binary_xor(
            &self.pick_rows(gp, &from_gp)?,
            &self.pick_rows(&products, &from_products)?,
        )?;
        Ok((next, pairs + usize::from(odd)))
    }

    /// [`GpuBackend::select_rows`] of both shares (local).
    fn pick_rows(&self, x: &BinaryRss<B>, rows: &[Option<usize>]) -> Result<BinaryRss<B>> {
        self.binary_linear(x, |b, t| b.select_rows(t, rows))
    }

    // ---- binary to arithmetic -----------------------------------------------------------

    /// β · x for shared bits β of shape S and a shared value x of shape S ++ T (each bit
    /// scales the trailing block of elements it indexes), by the bit injection of the module
    /// docs. No truncation: β is an integer. Two rounds.
    pub fn mul_bit(&mut self, bits: &SharedBits<B>, x: &Rss<B>) -> Result<Rss<B>> {
        const OP: &str = "mul_bit";
        let full = x.shape().to_vec();
        if full.len() < bits.shape.len() || full[..bits.shape.len()] != bits.shape[..] {
            return Err(ShareError::Shape {
                op: OP,
                lhs: bits.shape.clone(),
                rhs: full,
            });
        }
        let d_stream = self.next_stream();
        let t_stream = self.next_stream();
        let rho_stream = self.next_stream();
        let sigma_stream = self.next_stream();
        let b = self.backend().clone();
        // P1's and P2's term β2 · v + (1 − 2·β2) · u = β2 · (v − 2u) + u, from their own u
        // and v, in one fused pass: inputs β2, m, w, c with u = m·w + c, then v or the two
        // addends of v.
        let term = |inputs: &[&B::Tensor]| -> Result<B::Tensor> {
            use cryptgpu_backend::{BinaryOp::*, Fused, FusedStep, Operand::Input};
            let mut p = Fused::new();
            let mw = p.binary(Mul, Input(1), Input(2));
            let u = p.binary(Add, mw, Input(3));
            let v = match inputs.len() {
                6 => p.binary(Add, Input(4), Input(5)),
                _ => Input(4),
            };
            let two_u = p.push(FusedStep::Scalar(Mul, u, 2));
            let diff = p.binary(Sub, v, two_u);
            let scaled = p.binary(Mul, Input(0), diff);
            p.binary(Add, scaled, u);
            Ok(b.fused(&p, inputs)?)
        };
        let mine = match self.id().index() {
            0 => {
                // d = β0 ⊕ β1 and d·a for a = x0 + x1, masked by r and t from k1.
                use cryptgpu_backend::{BinaryOp::*, Fused, Operand::Input};
                let d = b.unpack_bits(&b.xor(&bits.packed.own, &bits.packed.next)?, &bits.shape)?;
                let r = self.random_with_next(&bits.shape, d_stream)?;
                let t = self.random_with_next(&full, t_stream)?;
                // d·(x0 + x1) − t in one pass.
                let mut masked = Fused::new();
                let a = masked.binary(Add, Input(1), Input(2));
                let da = masked.binary(Mul, Input(0), a);
                masked.binary(Sub, da, Input(3));
                let d_full = self.expand_bits(&d, &full)?;
                let masked_da = b.fused(&masked, &[&d_full, &x.own, &x.next, &t])?;
                self.send_tensors(Peer::Prev, &[&b.sub(&d, &r)?, &masked_da])?;
                None
            }
            1 => {
                let beta2 =
                    self.expand_bits(&b.unpack_bits(&bits.packed.next, &bits.shape)?, &full)?;
                let r = self.expand_bits(&self.random_with_prev(&bits.shape, d_stream)?, &full)?;
                let t = self.random_with_prev(&full, t_stream)?;
                // u = r·x2 + t; v = x1 + x2.
                Some(term(&[&beta2, &r, &x.next, &t, &x.own, &x.next])?)
            }
            _ => {
                let beta2 =
                    self.expand_bits(&b.unpack_bits(&bits.packed.own, &bits.shape)?, &full)?;
                let mut got = self.recv_tensors(OP, Peer::Next, &[&bits.shape, &full])?;
                let masked_da = got.pop().expect("two tensors");
                let masked_d = self.expand_bits(&got.pop().expect("two tensors"), &full)?;
                // u = (d − r)·x2 + (d·a − t); v = x0.
                Some(term(&[&beta2, &masked_d, &x.own, &masked_da, &x.next])?)
            }
        };
        let (own, next) = self.reshare_between_helpers(
            OP,
            &full,
            mine.as_ref(),
            [rho_stream, sigma_stream],
            |b, x, y| b.sub(x, y),
            |b, x, y| b.add(x, y),
        )?;
        Rss::from_shares(own, next)
    }

    /// Turns a 2-out-of-2 sharing between P1 and P2 of a tensor of `shape` (each passes its
    /// `term`; P0 passes `None`) into this party's two shares of a 2-out-of-3 sharing, for
    /// the group whose difference and sum are `sub` and `add` (XOR for bits, − and + for
    /// ring elements). x0 = σ (P0's key with P2, stream `streams[1]`) and x1 = ρ (P0's key
    /// with P1, `streams[0]`); P1 sends its term − ρ to P2 and P2 its term − σ to P1, and
    /// both add the two into x2. Each message is masked by a key its receiver lacks, and
    /// P1's leaves at once: one exchange, 8 bytes an element from P1 and from P2.
    fn reshare_between_helpers(
        &mut self,
        op: &'static str,
        shape: &[usize],
        term: Option<&B::Tensor>,
        [rho_stream, sigma_stream]: [u64; 2],
        sub: impl Fn(&B, &B::Tensor, &B::Tensor) -> cryptgpu_backend::Result<B::Tensor>,
        add: impl Fn(&B, &B::Tensor, &B::Tensor) -> cryptgpu_backend::Result<B::Tensor>,
    ) -> Result<(B::Tensor, B::Tensor)> {
        if self.id().index() == 0 {
            return Ok((
                self.random_with_prev(shape, sigma_stream)?,
                self.random_with_next(shape, rho_stream)?,
            ));
        }
        let term = term.ok_or_else(|| ShareError::Argument {
            op,
            why: "P1 and P2 each bring their term".into(),
        })?;
        // P1 holds x1 = ρ and learns x2 from P2; P2 holds x0 = σ and learns x2 from P1.
        let p1 = self.id().index() == 1;
        let (key, peer) = if p1 {
            (self.random_with_prev(shape, rho_stream)?, Peer::Next)
        } else {
            (self.random_with_next(shape, sigma_stream)?, Peer::Prev)
        };
        let b = self.backend().clone();
        let sent = sub(&b, term, &key)?;
        self.send_tensor(peer, &sent)?;
        let theirs = self.recv_tensor(op, peer, shape)?;
        let third = add(&b, &sent, &theirs)?;
        Ok(if p1 { (key, third) } else { (third, key) })
    }

    /// The bits as arithmetic 0/1 values, β = d + β2 − 2·d·β2 with d input by P0 and β2
    /// shared for free. Two rounds.
    pub fn bit_to_arith(&mut self, bits: &SharedBits<B>) -> Result<Rss<B>> {
        let d = self.input_low_xor(bits)?;
        let b = self.backend().clone();
        let zeros = b.zeros(&bits.shape)?;
        let beta2 = match self.id().index() {
            0 => Rss::from_shares(zeros.clone(), zeros)?,
            1 => Rss::from_shares(zeros, b.unpack_bits(&bits.packed.next, &bits.shape)?)?,
            _ => Rss::from_shares(b.unpack_bits(&bits.packed.own, &bits.shape)?, zeros)?,
        };
        let factor = self.add_scalar(&self.mul_scalar(&beta2, 2u64.wrapping_neg())?, 1)?;
        let product = self.mul(&d, &factor)?;
        self.add(&product, &beta2)
    }

    /// P0's d = β0 ⊕ β1 (as 0/1 ring elements) input as the arithmetic sharing (d − r, r, 0),
    /// r from k1: one message from P0 to P2.
    fn input_low_xor(&mut self, bits: &SharedBits<B>) -> Result<Rss<B>> {
        let stream = self.next_stream();
        match self.id().index() {
            0 => self.send_low_xor(bits, stream),
            1 => Rss::from_shares(
                self.random_with_prev(&bits.shape, stream)?,
                self.backend().zeros(&bits.shape)?,
            ),
            _ => {
                let d0 = self.recv_tensor("bit injection", Peer::Next, &bits.shape)?;
                Rss::from_shares(self.backend().zeros(&bits.shape)?, d0)
            }
        }
    }

    /// P0's side of [`Party::input_low_xor`]: sends d − r to P2 and returns (d − r, r).
    fn send_low_xor(&mut self, bits: &SharedBits<B>, stream: u64) -> Result<Rss<B>> {
        let b = self.backend().clone();
        let d = b.unpack_bits(&b.xor(&bits.packed.own, &bits.packed.next)?, &bits.shape)?;
        let r = self.random_with_next(&bits.shape, stream)?;
        let d0 = b.sub(&d, &r)?;
        self.send_tensor(Peer::Prev, &d0)?;
        Rss::from_shares(d0, r)
    }

    /// A tensor over the bits' shape S broadcast to S ++ T.
    fn expand_bits(&self, t: &B::Tensor, full: &[usize]) -> cryptgpu_backend::Result<B::Tensor> {
        let b = self.backend();
        if t.shape() == full {
            return Ok(t.clone());
        }
        let mut shape = t.shape().to_vec();
        shape.resize(full.len(), 1);
        b.broadcast_to(&b.reshape(t, &shape)?, full)
    }
}

/// Rows 2k (the low bit of each pair) and 2k + 1 (the high bit), k < `pairs`, of a
/// bit-sliced tensor `[rows, words]`: the first 2·pairs rows seen as `[pairs, 2·words]`,
/// each half of a row one slice (one gather each, and one more where rows > 2·pairs).
fn pair_halves<B: GpuBackend>(
    b: &B,
    t: &B::Tensor,
    pairs: usize,
) -> cryptgpu_backend::Result<(B::Tensor, B::Tensor)> {
    let words = t.shape()[1];
    let t = b.slice(t, 0, 0..2 * pairs)?;
    let t = b.reshape(&t, &[pairs, 2 * words])?;
    Ok((b.slice(&t, 1, 0..words)?, b.slice(&t, 1, words..2 * words)?))
}

/// One of P1's and P2's XOR shares of the (G, P) signals of every group of the low k bits
/// of a + b, `[2·groups, words]` (G rows, then P rows), computed locally.
///
/// `share` is this party's share of P0's message: rows 0..=k of a, then the products
/// q = a_hi ∧ a_lo of each pair; `addend` holds rows 0..=k of b, which P1 and P2 both
/// know. A pair's signals are then linear in the shared bits:
///
/// G = a_hi·b_hi ⊕ q·b_lo ⊕ a_lo·(b_hi·b_lo),   P = q ⊕ a_hi·b_lo ⊕ a_lo·b_hi ⊕ b_hi·b_lo,
///
/// and an odd top bit is its own group, G = a·b and P = a ⊕ b. The constant terms (those
/// of b alone) belong to one share only (`constant`, P2's).
fn group_terms<B: GpuBackend>(
    b: &B,
    share: &B::Tensor,
    addend: &B::Tensor,
    pairs: usize,
    constant: bool,
) -> cryptgpu_backend::Result<B::Tensor> {
    let l = addend.shape()[0] - 1;
    let (a_lo, a_hi) = pair_halves(b, share, pairs)?;
    let (b_lo, b_hi) = pair_halves(b, addend, pairs)?;
    let q = b.slice(share, 0, l + 1..l + 1 + pairs)?;
    // G and P each in one fused pass over (a_lo, a_hi, b_lo, b_hi, q).
    use cryptgpu_backend::{BinaryOp::*, Fused, Operand::Input};
    let (a_lo_, a_hi_, b_lo_, b_hi_, q_) = (Input(0), Input(1), Input(2), Input(3), Input(4));
    let inputs = [&a_lo, &a_hi, &b_lo, &b_hi, &q];
    let mut generate = Fused::new();
    let both = generate.binary(And, b_hi_, b_lo_);
    let hi = generate.binary(And, a_hi_, b_hi_);
    let carried = generate.binary(And, q_, b_lo_);
    let lo = generate.binary(And, a_lo_, both);
    let sum = generate.binary(Xor, hi, carried);
    generate.binary(Xor, sum, lo);
    let g = b.fused(&generate, &inputs)?;
    let mut propagate = Fused::new();
    let cross_hi = propagate.binary(And, a_hi_, b_lo_);
    let cross_lo = propagate.binary(And, a_lo_, b_hi_);
    let sum = propagate.binary(Xor, q_, cross_hi);
    let sum = propagate.binary(Xor, sum, cross_lo);
    if constant {
        let both = propagate.binary(And, b_hi_, b_lo_);
        propagate.binary(Xor, sum, both);
    }
    let p = b.fused(&propagate, &inputs)?;
    let (g, p) = if l % 2 == 1 {
        let a_top = b.slice(share, 0, l - 1..l)?;
        let b_top = b.slice(addend, 0, l - 1..l)?;
        let g_top = b.and(&a_top, &b_top)?;
        let p_top = if constant {
            b.xor(&a_top, &b_top)?
        } else {
            a_top
        };
        (b.concat(&[&g, &g_top], 0)?, b.concat(&[&p, &p_top], 0)?)
    } else {
        (g, p)
    };
    b.concat(&[&g, &p], 0)
}
