//! Arithmetic sharing protocols: input, reveal, local linear ops, products with a fresh
//! zero sharing and one resharing round, and truncation.
//!
//! # Communication (n = elements of the result; bytes are sent by one party)
//!
//! | op | rounds | bytes sent per party |
//! | --- | --- | --- |
//! | [`Party::share`] (a tensor of rank r) | 1 | owner: 16·n + 16·(1 + r) (to each neighbour 8·n, and its shape in 1 + r words); others: 0 |
//! | [`Party::reveal`] | 1 | 8·n each |
//! | [`Party::reveal_to`] | 1 | the target's next party: 8·n; others: 0 |
//! | local ops (add, sub, neg, public add/mul) | 0 | 0 |
//! | [`Party::product`] (mul, square, matmul, conv2d and its gradients) | 1 | 8·n each |
//! | [`Party::truncate`], [`Party::truncate_by`], [`Party::mul_public_fixed`]: exact (f ≤ 32) | 1 | P0: 16·n; P1, P2: 4·n |
//! | the same: probabilistic | 1 | P0: 8·n; P1, P2: 0 |
//! | [`Party::product_truncated`] (fused: mul, square, matmul, conv2d): exact (f ≤ 32) | 2 | P0: 16·n; P1, P2: 12·n |
//! | the same: probabilistic | 2 | 8·n each |
//! | product, then truncate | 2 | a product's 8·n each, plus the truncation's |
//! | [`Party::div_public`] by d, not a power of two (a power of two: one truncation) | exact: 2; probabilistic: 1 | two truncations |
//! | [`Party::constant`], [`Party::linear`] (layout ops, sums, public factors) | 0 | 0 |
//!
//! Rounds are the length of the longest chain of messages (see
//! `cryptgpu_transport::Counting`); the tests check the counters against this table.
//!
//! # Truncation
//!
//! After a fixed-point product the value carries 2f fractional bits; every truncation goes
//! through [`crate::truncation`], in the party's [`Truncation`](crate::Truncation) mode:
//! exact by default (never off by more than one unit in the last place for |z| < 2^62), or
//! ABY3's probabilistic Π_trunc1 (fewer bytes; fails, by about 2^(64−f), with probability
//! 2^(ℓ+1−64) for |z| < 2^ℓ). The module has the derivation, the proof and the costs.

use crate::party::same_shape;
use crate::{Party, Result, Rss, ShareError};
use cryptgpu_backend::{Conv2dParams, DeviceTensor, GpuBackend};
use cryptgpu_transport::{PartyId, Peer, Transport};

/// A bilinear op ⊗ of two tensors: the products the resharing protocol computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bilinear {
    /// Elementwise product.
    Mul,
    /// Batched matrix product (see `cryptgpu_backend::shape::MatmulDims`).
    Matmul,
    /// 2-d convolution of an NCHW input (left) with OIHW weights (right).
    Conv2d(Conv2dParams),
    /// Gradient of a convolution with respect to its input: output gradient (left) ⊗ weight
    /// (right), for an input of height and width `input_hw`.
    Conv2dGradInput {
        /// The input's height and width.
        input_hw: [usize; 2],
        /// The convolution's parameters.
        params: Conv2dParams,
    },
    /// Gradient of a convolution with respect to its weight: input (left) ⊗ output gradient
    /// (right), for a kernel of `kernel_hw`.
    Conv2dGradWeight {
        /// The kernel's height and width.
        kernel_hw: [usize; 2],
        /// The convolution's parameters.
        params: Conv2dParams,
    },
}

impl Bilinear {
    /// The op on two plain tensors on the device.
    pub fn apply<B: GpuBackend>(
        self,
        backend: &B,
        x: &B::Tensor,
        y: &B::Tensor,
    ) -> Result<B::Tensor> {
        Ok(match self {
            Self::Mul => backend.mul(x, y)?,
            Self::Matmul => backend.matmul(x, y)?,
            Self::Conv2d(p) => backend.conv2d(x, y, p)?,
            Self::Conv2dGradInput { input_hw, params } => {
                backend.conv2d_grad_input(x, y, input_hw, params)?
            }
            Self::Conv2dGradWeight { kernel_hw, params } => {
                backend.conv2d_grad_weight(x, y, kernel_hw, params)?
            }
        })
    }
}

impl<B: GpuBackend, T: Transport> Party<B, T> {
    // ---- input and output -----------------------------------------------------------------

    /// Secret-shares a tensor of ring elements held by `owner`, which passes `Some(values)`;
    /// the others pass `None`. `shape` is public and the same for all: the owner's message
    /// carries its shape (1 + rank words), and a party that passed another shape, even one of
    /// as many elements, gets [`ShareError::ShapeDisagreement`].
    ///
    /// x_owner and x_{owner+1} come from the keys the owner shares with each neighbour, so
    /// only x_{owner+2} = x − x_owner − x_{owner+1} travels, to both neighbours: one round.
    pub fn share(
        &mut self,
        owner: PartyId,
        values: Option<&B::Tensor>,
        shape: &[usize],
    ) -> Result<Rss<B>> {
        let (own, next) = self.input_shares("share", owner, values, shape, |b, x, r0, r1| {
            b.sub(&b.sub(x, r0)?, r1)
        })?;
        Rss::from_shares(own, next)
    }

    /// The input protocol of [`Party::share`] and [`Party::share_binary`], for the sharing
    /// whose third share `last(x, x_owner, x_{owner+1})` completes the other two: this
    /// party's (own, next) shares.
    pub(crate) fn input_shares(
        &mut self,
        op: &'static str,
        owner: PartyId,
        values: Option<&B::Tensor>,
        shape: &[usize],
        last: impl Fn(&B, &B::Tensor, &B::Tensor, &B::Tensor) -> cryptgpu_backend::Result<B::Tensor>,
    ) -> Result<(B::Tensor, B::Tensor)> {
        let stream = self.next_stream();
        let me = self.id();
        if (me == owner) != values.is_some() {
            let why = if me == owner {
                "owns the input but passed none"
            } else {
                "passed an input it does not own"
            };
            return Err(ShareError::Input { op, party: me, why });
        }
        if me == owner {
            let x = values.expect("checked above");
            same_shape(op, x.shape(), shape)?;
            let own = self.random_with_prev(shape, stream)?;
            let next = self.random_with_next(shape, stream)?;
            let third = last(self.backend(), x, &own, &next)?;
            self.send_shaped(Peer::Next, &third)?;
            self.send_shaped(Peer::Prev, &third)?;
            Ok((own, next))
        } else if owner == me.prev() {
            // I am owner + 1: I hold (x_{owner+1}, x_{owner+2}).
            let own = self.random_with_prev(shape, stream)?;
            let next = self.recv_shaped(op, Peer::Prev, shape)?;
            Ok((own, next))
        } else {
            // I am owner + 2: I hold (x_{owner+2}, x_owner).
            let next = self.random_with_next(shape, stream)?;
            let own = self.recv_shaped(op, Peer::Next, shape)?;
            Ok((own, next))
        }
    }

    /// Secret-shares real values held by `owner` (encoded in the party's fixed-point format;
    /// a value out of range is an error at the owner, which then sends nothing; the others
    /// then fail with a transport error such as a timeout or disconnect).
    pub fn share_f64(
        &mut self,
        owner: PartyId,
        values: Option<&[f64]>,
        shape: &[usize],
    ) -> Result<Rss<B>> {
        self.encode_and_share(owner, None, values, shape)
    }

    /// [`Party::share_f64`] for a tensor named `what` ("input", a parameter's name) whose
    /// values will be compared: the owner first checks its encodings against the comparison
    /// domain ([`Party::check_comparable`]), a pass over its plaintext, and on an error
    /// sends nothing (the others then fail with a transport error).
    ///
    /// # Errors
    /// At the owner: [`ShareError::Ring`] (`RingError::NotFiniteAt`, `RingError::OutOfRangeAt`)
    /// for a value that is not finite or beyond the fixed-point range, and
    /// [`ShareError::OutOfComparisonRange`] for one outside the comparison domain.
    pub fn share_f64_checked(
        &mut self,
        owner: PartyId,
        what: &str,
        values: Option<&[f64]>,
        shape: &[usize],
    ) -> Result<Rss<B>> {
        self.encode_and_share(owner, Some(what), values, shape)
    }

    /// The owner encodes its values (and, given the tensor's name, checks them against the
    /// comparison domain), then all three share them.
    fn encode_and_share(
        &mut self,
        owner: PartyId,
        checked_as: Option<&str>,
        values: Option<&[f64]>,
        shape: &[usize],
    ) -> Result<Rss<B>> {
        let tensor = match values {
            Some(v) => {
                let encoded = self.fixed().encode_slice(v)?;
                if let Some(what) = checked_as {
                    self.check_comparable(what, &encoded)?;
                }
                Some(self.backend().upload_vec(encoded, shape)?)
            }
            None => None,
        };
        self.share(owner, tensor.as_ref(), shape)
    }

    /// Reveals a shared tensor to all three parties: each sends its copy of x_{i+1} to its
    /// previous party, which lacks it. One round.
    pub fn reveal(&mut self, x: &Rss<B>) -> Result<Vec<u64>> {
        self.send_tensor(Peer::Prev, &x.next)?;
        let missing = self.recv_tensor("reveal", Peer::Next, x.shape())?;
        self.sum_of_three(x, &missing)
    }

    /// Reveals a shared tensor to `target` only, which gets `Some(values)`; the others get
    /// `None`. The target's next party sends it the one share it lacks. One round.
    pub fn reveal_to(&mut self, target: PartyId, x: &Rss<B>) -> Result<Option<Vec<u64>>> {
        let me = self.id();
        if me == target {
            let missing = self.recv_tensor("reveal_to", Peer::Next, x.shape())?;
            Ok(Some(self.sum_of_three(x, &missing)?))
        } else {
            if me == target.next() {
                self.send_tensor(Peer::Prev, &x.next)?;
            }
            Ok(None)
        }
    }

    /// Reveals to all and decodes from fixed point.
    pub fn reveal_f64(&mut self, x: &Rss<B>) -> Result<Vec<f64>> {
        let values = self.reveal(x)?;
        Ok(self.fixed().decode_slice(&values))
    }

    fn sum_of_three(&self, x: &Rss<B>, missing: &B::Tensor) -> Result<Vec<u64>> {
        let b = self.backend();
        Ok(b.download(&b.add(&b.add(&x.own, &x.next)?, missing)?)?)
    }

    // ---- local linear ops (no messages) ---------------------------------------------------

    /// x + y.
    pub fn add(&self, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        same_shape("add", x.shape(), y.shape())?;
        let b = self.backend();
        Rss::from_shares(b.add(&x.own, &y.own)?, b.add(&x.next, &y.next)?)
    }

    /// x − y.
    pub fn sub(&self, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        same_shape("sub", x.shape(), y.shape())?;
        let b = self.backend();
        Rss::from_shares(b.sub(&x.own, &y.own)?, b.sub(&x.next, &y.next)?)
    }

    /// −x.
    pub fn neg(&self, x: &Rss<B>) -> Result<Rss<B>> {
        let b = self.backend();
        Rss::from_shares(b.neg(&x.own)?, b.neg(&x.next)?)
    }

    /// x + c for a public tensor c (same shape): added to x0, i.e. by P0 to its own share
    /// and by P2 to its copy.
    pub fn add_public(&self, x: &Rss<B>, c: &B::Tensor) -> Result<Rss<B>> {
        same_shape("add_public", x.shape(), c.shape())?;
        self.update_x0(x, |share| Ok(self.backend().add(share, c)?))
    }

    /// x + c for a public scalar c.
    pub fn add_scalar(&self, x: &Rss<B>, c: u64) -> Result<Rss<B>> {
        self.update_x0(x, |share| Ok(self.backend().add_scalar(share, c)?))
    }

    /// Applies `update` to the share x0 wherever it is held: P0's own share and P2's copy.
    fn update_x0(
        &self,
        x: &Rss<B>,
        update: impl Fn(&B::Tensor) -> Result<B::Tensor>,
    ) -> Result<Rss<B>> {
        match self.id().index() {
            0 => Rss::from_shares(update(&x.own)?, x.next.clone()),
            2 => Rss::from_shares(x.own.clone(), update(&x.next)?),
            _ => Ok(x.clone()),
        }
    }

    /// x · c for a public integer scalar c (no truncation: for a fixed-point c, follow with
    /// [`Party::truncate`]).
    pub fn mul_scalar(&self, x: &Rss<B>, c: u64) -> Result<Rss<B>> {
        let b = self.backend();
        Rss::from_shares(b.mul_scalar(&x.own, c)?, b.mul_scalar(&x.next, c)?)
    }

    /// x ⊗ c for a public tensor c: local, since ⊗ is linear in each argument.
    pub fn apply_public(&self, op: Bilinear, x: &Rss<B>, c: &B::Tensor) -> Result<Rss<B>> {
        let b = self.backend();
        Rss::from_shares(op.apply(b, &x.own, c)?, op.apply(b, &x.next, c)?)
    }

    /// A sharing of a public tensor, with no message: x0 = c, x1 = x2 = 0.
    pub fn constant(&self, c: &B::Tensor) -> Result<Rss<B>> {
        let zero = self.backend().zeros(c.shape())?;
        match self.id().index() {
            0 => Rss::from_shares(c.clone(), zero),
            1 => Rss::from_shares(zero.clone(), zero),
            _ => Rss::from_shares(zero, c.clone()),
        }
    }

    /// A sharing of public reals (encoded in fixed point), with no message.
    pub fn constant_f64(&self, values: &[f64], shape: &[usize]) -> Result<Rss<B>> {
        let encoded = self.fixed().encode_slice(values)?;
        let c = self.backend().upload(&encoded, shape)?;
        self.constant(&c)
    }

    /// Applies a map that is linear over Z_2^64 (a layout op such as reshape, slice, permute
    /// or broadcast; a sum over an axis; a product with public values) to both shares: local,
    /// since (x0 + x1 + x2) ↦ f(x0) + f(x1) + f(x2). A map that is not additive gives a
    /// wrong result, so use it only with such ops.
    pub fn linear(
        &self,
        x: &Rss<B>,
        f: impl Fn(&B, &B::Tensor) -> cryptgpu_backend::Result<B::Tensor>,
    ) -> Result<Rss<B>> {
        let b = self.backend();
        Rss::from_shares(f(b, &x.own)?, f(b, &x.next)?)
    }

    /// Joins sharings along `axis` (local).
    pub fn concat(&self, xs: &[&Rss<B>], axis: usize) -> Result<Rss<B>> {
        let b = self.backend();
        let own: Vec<&B::Tensor> = xs.iter().map(|x| &x.own).collect();
        let next: Vec<&B::Tensor> = xs.iter().map(|x| &x.next).collect();
        Rss::from_shares(b.concat(&own, axis)?, b.concat(&next, axis)?)
    }

    // ---- products -------------------------------------------------------------------------

    /// This party's term z_i = x_i ⊗ (y_i + y_{i+1}) + x_{i+1} ⊗ y_i + α_i of a 3-out-of-3
    /// sharing of x ⊗ y (two local products and a fresh zero sharing).
    ///
    /// An elementwise product is one fused pass over x_i, x_{i+1}, y_i, y_{i+1} and the two
    /// PRG tensors of α_i; the other products add their two bilinear terms and α_i in one.
    fn product_term(&mut self, op: Bilinear, x: &Rss<B>, y: &Rss<B>) -> Result<B::Tensor> {
        use cryptgpu_backend::{BinaryOp::*, Fused, Operand::Input};
        if op == Bilinear::Mul {
            same_shape("product", x.shape(), y.shape())?;
            let mut term = Fused::new();
            let y_both = term.binary(Add, Input(2), Input(3));
            let left = term.binary(Mul, Input(0), y_both);
            let right = term.binary(Mul, Input(1), Input(2));
            let z = term.binary(Add, left, right);
            return self.fused_with_zero_share(term, z, &[&x.own, &x.next, &y.own, &y.next]);
        }
        let b = self.backend();
        let y_both = b.add(&y.own, &y.next)?;
        let left = op.apply(b, &x.own, &y_both)?;
        let right = op.apply(b, &x.next, &y.own)?;
        let mut term = Fused::new();
        let z = term.binary(Add, Input(0), Input(1));
        self.fused_with_zero_share(term, z, &[&left, &right])
    }

    /// Runs `program` (whose value `z` is this party's term, over `inputs`) with α_i =
    /// F(k_i) − F(k_{i+1}) added, in one fused pass (the PRG tensors are the program's last
    /// two inputs): α_i is the fresh zero sharing without which z_i would leak (CrypTen
    /// issue #518).
    fn fused_with_zero_share(
        &mut self,
        mut program: cryptgpu_backend::Fused,
        z: cryptgpu_backend::Operand,
        inputs: &[&B::Tensor],
    ) -> Result<B::Tensor> {
        use cryptgpu_backend::{BinaryOp::*, Operand::Input};
        let shape = inputs[0].shape().to_vec();
        let (mine, theirs) = self.zero_share_parts(&shape)?;
        let n = inputs.len() as u8;
        let plus = program.binary(Add, z, Input(n));
        program.binary(Sub, plus, Input(n + 1));
        let mut all = inputs.to_vec();
        all.extend([&mine, &theirs]);
        Ok(self.backend().fused(&program, &all)?)
    }

    /// Restores 2-out-of-3 from a 3-out-of-3 sharing: each party sends z_i to its previous
    /// party and receives z_{i+1} from its next. One round, 8·n bytes each.
    fn reshare(&mut self, z: B::Tensor) -> Result<Rss<B>> {
        self.send_tensor(Peer::Prev, &z)?;
        let next = self.recv_tensor("reshare", Peer::Next, z.shape())?;
        Rss::from_shares(z, next)
    }

    /// x ⊗ y of two shared tensors, without truncation (for integers, or a fixed-point
    /// product still at 2f fractional bits). One round, 8·n bytes each.
    pub fn product(&mut self, op: Bilinear, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        let z = self.product_term(op, x, y)?;
        self.reshare(z)
    }

    /// Elementwise x · y (no truncation).
    pub fn mul(&mut self, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        same_shape("mul", x.shape(), y.shape())?;
        self.product(Bilinear::Mul, x, y)
    }

    /// x · x with one local product: z_i = x_i · (x_i + 2·x_{i+1}) + α_i.
    pub fn square(&mut self, x: &Rss<B>) -> Result<Rss<B>> {
        let z = self.square_term(x)?;
        self.reshare(z)
    }

    /// This party's masked term of x · x: x_i · (x_i + 2·x_{i+1}) + α_i.
    fn square_term(&mut self, x: &Rss<B>) -> Result<B::Tensor> {
        use cryptgpu_backend::{BinaryOp::*, Fused, FusedStep, Operand::Input};
        let mut term = Fused::new();
        let twice = term.push(FusedStep::Scalar(Mul, Input(1), 2));
        let sum = term.binary(Add, Input(0), twice);
        let z = term.binary(Mul, Input(0), sum);
        self.fused_with_zero_share(term, z, &[&x.own, &x.next])
    }

    /// Fixed-point truncation by f bits of a value at 2f fractional bits, in the party's
    /// [`Truncation`](crate::Truncation) mode (see [`crate::truncation`] for both protocols,
    /// their error and their cost). One round: P0 sends 8·n bytes (probabilistic) or P0 16·n
    /// and P1, P2 4·n (exact, f ≤ 32).
    pub fn truncate(&mut self, z: &Rss<B>) -> Result<Rss<B>> {
        self.truncate_by(z, self.fixed().frac_bits())
    }

    /// Divides a shared value by 2^`bits` with the protocol of [`Party::truncate`]: the
    /// result is ⌊z / 2^bits⌋ or one more. Exact mode takes 1 to 62 bits and z in
    /// [−2^62, 2^62); probabilistic mode takes up to 63 bits and fails with odds
    /// 2^(ℓ+1−64) for |z| < 2^ℓ. Zero bits is the identity, with no message.
    pub fn truncate_by(&mut self, z: &Rss<B>, bits: u32) -> Result<Rss<B>> {
        if bits >= 64 {
            return Err(ShareError::Argument {
                op: "truncate_by",
                why: format!("cannot shift by {bits} bits (at most 63)"),
            });
        }
        if bits == 0 {
            return Ok(z.clone());
        }
        let part = self.split_for_truncation(z)?;
        self.truncate_split(part, bits)
    }

    /// x · c for a public real c, truncated back to f fractional bits: the local product by
    /// c's encoding, then [`Party::truncate`]: one round, a truncation's bytes.
    pub fn mul_public_fixed(&mut self, x: &Rss<B>, c: f64) -> Result<Rss<B>> {
        let c = self.fixed().encode(c)?;
        let scaled = self.mul_scalar(x, c)?;
        self.truncate(&scaled)
    }

    /// x / d for a public integer d ≥ 1 (means over d elements), to within 3 units in the
    /// last place plus a relative 2^-(f+1), for any d. [`Party::mul_public_fixed`] by 1/d would round 1/d to f
    /// bits, a relative error up to d/2^(f+1) (3 % for a mean over 2^16 elements at f = 20).
    /// Here x is first divided by 2^t with t = ⌈log2 d⌉ ([`Party::truncate_by`]), then
    /// multiplied by c = round(2^(f+t)/d) ∈ [2^f, 2^(f+1)] and truncated by f: the product
    /// has the magnitude of an ordinary fixed-point product, so the failure odds are those
    /// of [`Party::truncate`]. A power of two takes the first step only (one truncation);
    /// otherwise two truncations: one round in probabilistic mode (both are messages from P0
    /// to P2, which P0 sends without waiting), two in exact mode. d = 1 costs nothing.
    pub fn div_public(&mut self, x: &Rss<B>, d: u64) -> Result<Rss<B>> {
        if d == 0 {
            return Err(ShareError::Argument {
                op: "div_public",
                why: "division by zero".into(),
            });
        }
        let t = 64 - (d - 1).leading_zeros();
        let shifted = if t == 0 {
            x.clone()
        } else {
            self.truncate_by(x, t)?
        };
        if d.is_power_of_two() {
            return Ok(shifted);
        }
        let f = self.fixed().frac_bits();
        let c = ((1u128 << (f + t)) + u128::from(d / 2)) / u128::from(d);
        let scaled = self.mul_scalar(&shifted, c as u64)?;
        self.truncate(&scaled)
    }

    /// x ⊗ y followed by truncation, fused: P1 sends z1 to P0 and P2 sends z2 to P1, so that
    /// P0 knows A = z0 + z1 and P1, P2 know B = z2; then the truncation. Two rounds in
    /// either mode: 8·n bytes for every party (probabilistic), or P0 16·n and P1, P2 12·n
    /// (exact, f ≤ 32; see [`crate::truncation`]).
    pub fn product_truncated(&mut self, op: Bilinear, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        let z = self.product_term(op, x, y)?;
        self.reshare_truncated(z)
    }

    /// x · x truncated by f bits, fused like [`Party::product_truncated`] but with the one
    /// local product of [`Party::square`]. Two rounds, the bytes of a fused product.
    pub fn square_fixed(&mut self, x: &Rss<B>) -> Result<Rss<B>> {
        let z = self.square_term(x)?;
        self.reshare_truncated(z)
    }

    /// Fixed-point elementwise product: x · y truncated by f bits (fused, two rounds).
    pub fn mul_fixed(&mut self, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        same_shape("mul_fixed", x.shape(), y.shape())?;
        self.product_truncated(Bilinear::Mul, x, y)
    }

    /// Fixed-point matrix product (fused, two rounds).
    pub fn matmul_fixed(&mut self, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        self.product_truncated(Bilinear::Matmul, x, y)
    }

    /// The sum over `axis` of a shared tensor, which the axis leaves (local, no message).
    pub fn sum_axis(&self, x: &Rss<B>, axis: usize) -> Result<Rss<B>> {
        self.linear(x, |b, t| b.sum_axis(t, axis))
    }

    /// The sum of all elements of a shared tensor, as a shared scalar (shape `[]`; local,
    /// no message).
    pub fn sum(&self, x: &Rss<B>) -> Result<Rss<B>> {
        let n = x.len();
        let flat = self.linear(x, |b, t| b.reshape(t, &[n]))?;
        self.sum_axis(&flat, 0)
    }

    /// The fixed-point dot product Σ x_i · y_i of two shared tensors of one shape, as a
    /// shared scalar: one product of a row by a column with one truncation, two rounds and
    /// the bytes of one element whatever the length (in exact mode P0 sends 24 bytes and
    /// P1 and P2 16: the halves a truncation packs two to a word take a whole word alone).
    ///
    /// # Errors
    /// [`ShareError::Shape`] when the shapes differ.
    pub fn dot(&mut self, x: &Rss<B>, y: &Rss<B>) -> Result<Rss<B>> {
        same_shape("dot", x.shape(), y.shape())?;
        let n = x.len();
        let row = self.linear(x, |b, t| b.reshape(t, &[1, n]))?;
        let column = self.linear(y, |b, t| b.reshape(t, &[n, 1]))?;
        let product = self.matmul_fixed(&row, &column)?;
        self.linear(&product, |b, t| b.reshape(t, &[]))
    }

    /// Fixed-point convolution (fused, two rounds).
    pub fn conv2d_fixed(
        &mut self,
        input: &Rss<B>,
        weight: &Rss<B>,
        params: Conv2dParams,
    ) -> Result<Rss<B>> {
        self.product_truncated(Bilinear::Conv2d(params), input, weight)
    }
}
