//! [`Party`]: one party's context (backend, counted transport, PRG keys, fixed-point
//! format), its setup, the correlated randomness drawn from its keys, and tensor messaging.

use crate::{OutOfComparisonRange, Result, ShareError, Truncation};
use cryptgpu_backend::{DeviceTensor, GpuBackend};
use cryptgpu_ring::FixedPoint;
use cryptgpu_transport::{CommStats, Counting, Handle, PartyId, Peer, Transport};
use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};

/// Where the parties' PRG keys come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The operating system's randomness: the only secure choice.
    Os,
    /// **Insecure, for tests and reproducible benchmarks only:** keys derived from a public
    /// seed and the party index, so runs are bit-for-bit repeatable (e.g. to compare two
    /// transports). Anyone who knows the seed knows every share.
    InsecureSeeded(u64),
}

/// The PRG keys of party P_i: k_i (also held by P_{i-1}), k_{i+1} (also held by P_{i+1}),
/// and a key common to all three.
struct Keys {
    /// k_i, shared with the previous party.
    with_prev: [u8; 32],
    /// k_{i+1}, shared with the next party.
    with_next: [u8; 32],
    /// Known to all three parties.
    common: [u8; 32],
}

/// One party of a three-party computation: its device, its counted link to its two
/// neighbours, its PRG keys and the fixed-point format.
///
/// Every protocol method must be called by all three parties in the same order with the same
/// public arguments (shapes, owners, ops): the parties' PRG streams advance in step with
/// the protocol, never with time or thread order.
pub struct Party<B: GpuBackend, T: Transport> {
    backend: B,
    id: PartyId,
    net: Counting<T>,
    keys: Keys,
    /// Streams of ChaCha12 used so far; every protocol step takes the next one.
    stream: u64,
    fixed: FixedPoint,
    /// How truncations are done (see [`crate::truncation`]).
    truncation: Truncation,
    /// ℓ: comparisons are exact for values in [−2^ℓ, 2^ℓ) (see [`Party::msb`]).
    comparison_bits: u32,
    /// Test hook: zero sharings of zeros (products and ANDs without their masks), to show
    /// that the privacy test detects the leak.
    #[cfg(test)]
    pub(crate) insecure_skip_zero_sharing: bool,
    /// Test hook: exact truncation without one of its masks, to show that the privacy test
    /// detects the leak.
    #[cfg(test)]
    pub(crate) insecure_skip_truncation_mask: Option<crate::truncation::TruncationMask>,
    /// Test hook: every message received, in order, when `Some`.
    #[cfg(test)]
    pub(crate) received: Option<Vec<Vec<u64>>>,
}

impl<B: GpuBackend, T: Transport> Party<B, T> {
    /// Sets up a party with keys from the operating system: one round in which each party
    /// sends 64 bytes to its previous and 32 bytes to its next neighbour.
    pub fn setup(backend: B, transport: T, fixed: FixedPoint) -> Result<Self> {
        Self::setup_with(backend, transport, fixed, KeySource::Os)
    }

    /// Sets up a party with keys from `source`.
    ///
    /// P_i draws k_i and sends it to P_{i-1}, so that each key is held by two parties; and
    /// each party draws a contribution c_i sent to both others, the common key being
    /// c_0 ⊕ c_1 ⊕ c_2.
    pub fn setup_with(
        backend: B,
        transport: T,
        fixed: FixedPoint,
        source: KeySource,
    ) -> Result<Self> {
        let mut net = Counting::new(transport);
        let id = net.party();
        let draw = |label: u64| -> Result<[u8; 32]> {
            let mut key = [0u8; 32];
            match source {
                KeySource::Os => {
                    getrandom::fill(&mut key).map_err(|e| ShareError::Entropy(e.to_string()))?
                }
                KeySource::InsecureSeeded(seed) => {
                    let mut rng = ChaCha12Rng::seed_from_u64(seed);
                    rng.set_stream(3 * label + id.index() as u64);
                    rng.fill_bytes(&mut key);
                }
            }
            Ok(key)
        };
        let own_key = draw(0)?;
        let contribution = draw(1)?;
        let to_prev = [own_key.as_slice(), contribution.as_slice()].concat();
        let (from_next, from_prev) = net.exchange_both(&contribution, &to_prev)?;
        let next_part: [u8; 64] = key_message(&from_next, id.next())?;
        let prev_part: [u8; 32] = key_message(&from_prev, id.prev())?;
        let mut with_next = [0u8; 32];
        with_next.copy_from_slice(&next_part[..32]);
        let mut common = contribution;
        for (c, (a, b)) in common
            .iter_mut()
            .zip(next_part[32..].iter().zip(prev_part.iter()))
        {
            *c ^= a ^ b;
        }
        Ok(Self {
            backend,
            id,
            net,
            keys: Keys {
                with_prev: own_key,
                with_next,
                common,
            },
            stream: 0,
            fixed,
            truncation: Truncation::default(),
            comparison_bits: default_comparison_bits(fixed),
            #[cfg(test)]
            insecure_skip_zero_sharing: false,
            #[cfg(test)]
            insecure_skip_truncation_mask: None,
            #[cfg(test)]
            received: None,
        })
    }

    /// This party's index.
    pub fn id(&self) -> PartyId {
        self.id
    }

    /// The device backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The fixed-point format of real-valued inputs and outputs.
    pub fn fixed(&self) -> FixedPoint {
        self.fixed
    }

    /// How this party truncates: [`Truncation::Exact`] unless set otherwise. All three
    /// parties must use the same mode for the same call.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }

    /// Sets how every later truncation is done (the job's mode).
    pub fn set_truncation(&mut self, mode: Truncation) {
        self.truncation = mode;
    }

    /// ℓ, the comparison domain: every value that enters a comparison (the comparisons of
    /// `cryptgpu_nonlinear`, ReLU, max and max-pooling, and their public thresholds after
    /// clamping) must lie in [−2^ℓ, 2^ℓ) as a signed ring integer, both edges included, and
    /// then every comparison is exact: [`Party::msb`] covers [−2^(ℓ+1), 2^(ℓ+1)), which
    /// holds every such value, its negation and the difference of any two. Outside the
    /// domain a comparison is silently wrong (a sign that repeats with period 2^(ℓ+2)), with
    /// no error. Costs about 6 bits per bit of ℓ (sent by the three parties together). The default, [`default_comparison_bits`],
    /// is 63 − f: 43 at f = 20, real values in [−2^23, 2^23).
    pub fn comparison_bits(&self) -> u32 {
        self.comparison_bits
    }

    /// Sets the comparison domain ℓ (see [`Party::comparison_bits`]); 62 is the widest.
    /// Every party must set the same.
    ///
    /// # Errors
    /// [`ShareError::Argument`] unless ℓ is in [`COMPARISON_BITS`] (2 to 62).
    pub fn set_comparison_bits(&mut self, bits: u32) -> Result<()> {
        if !COMPARISON_BITS.contains(&bits) {
            return Err(ShareError::Argument {
                op: "set_comparison_bits",
                why: format!(
                    "the comparison domain must be {} to {} bits, not {bits}",
                    COMPARISON_BITS.start(),
                    COMPARISON_BITS.end()
                ),
            });
        }
        self.comparison_bits = bits;
        Ok(())
    }

    /// −2^ℓ, the floor of the comparison domain, as a ring element: no value of the domain
    /// is below it, and its difference with any of them, in [0, 2^(ℓ+1)), stays inside the
    /// MSB's domain. What max-pooling pads with: padding never changes a window's max.
    pub fn comparison_floor(&self) -> u64 {
        (1u64 << self.comparison_bits).wrapping_neg()
    }

    /// [`ShareError::OutOfComparisonRange`] for the first of `values` (ring elements, the
    /// encodings of the tensor `what` that this party is about to share) outside the
    /// comparison domain [−2^ℓ, 2^ℓ), or `Ok`. The owner of an input or a weight calls it
    /// on its plaintext before sharing: a pass over plaintext, no message. The error's text
    /// names the tensor, the value and its index, so it must stay with the owner.
    pub fn check_comparable(&self, what: &str, values: &[u64]) -> Result<()> {
        Ok(check_comparable(
            self.fixed,
            self.comparison_bits,
            what,
            values,
        )?)
    }

    /// Runs `f` with truncations in `mode`, then restores the job's mode: a per-call choice,
    /// e.g. `p.with_truncation(Truncation::Probabilistic, |p| p.mul_fixed(&x, &y))`.
    pub fn with_truncation<R>(&mut self, mode: Truncation, f: impl FnOnce(&mut Self) -> R) -> R {
        let job_mode = std::mem::replace(&mut self.truncation, mode);
        let result = f(self);
        self.truncation = job_mode;
        result
    }

    /// This party's counted link to its neighbours, for messages of a caller's own between
    /// protocol steps (a service's control messages, say). Like every protocol message,
    /// such a message must be sent and received by the parties in the same order; it is
    /// counted in [`Party::stats`].
    pub fn transport_mut(&mut self) -> &mut Counting<T> {
        &mut self.net
    }

    /// This party's communication so far (setup included).
    pub fn stats(&self) -> CommStats {
        self.net.stats()
    }

    // ---- correlated randomness (no messages) ------------------------------------------------

    /// The next protocol step's PRG stream id, for [`Party::random_with_next`] and
    /// [`Party::random_with_prev`]: every party must call this the same number of times in
    /// the same order (the protocols of this workspace and any written outside it alike),
    /// so that the two parties holding a key draw the same tensor from it.
    pub fn next_stream(&mut self) -> u64 {
        self.stream += 1;
        self.stream
    }

    /// F(k_{i+1}, stream): a random tensor known to this party and the next one (the
    /// previous party cannot compute it). With [`Party::random_with_prev`] of the same
    /// stream at the next party, the two hold the same tensor: a mask for a message the
    /// third party must not read, or one share of a new sharing, with no message.
    pub fn random_with_next(&self, shape: &[usize], stream: u64) -> Result<B::Tensor> {
        Ok(self
            .backend
            .fill_chacha12(shape, &self.keys.with_next, stream, 0)?)
    }

    /// F(k_i, stream): a random tensor known to this party and the previous one (the next
    /// party cannot compute it); see [`Party::random_with_next`].
    pub fn random_with_prev(&self, shape: &[usize], stream: u64) -> Result<B::Tensor> {
        Ok(self
            .backend
            .fill_chacha12(shape, &self.keys.with_prev, stream, 0)?)
    }

    /// A random tensor known to all three parties (public randomness, e.g. for shuffles).
    pub fn random_common(&mut self, shape: &[usize]) -> Result<B::Tensor> {
        let stream = self.next_stream();
        Ok(self
            .backend
            .fill_chacha12(shape, &self.keys.common, stream, 0)?)
    }

    /// This party's part α_i = F(k_i) − F(k_{i+1}) of a fresh sharing of zero
    /// (α_0 + α_1 + α_2 = 0), with no message. Every product adds it before resharing.
    pub fn zero_share(&mut self, shape: &[usize]) -> Result<B::Tensor> {
        let (mine, theirs) = self.zero_share_parts(shape)?;
        Ok(self.backend.sub(&mine, &theirs)?)
    }

    /// This party's part β_i = F(k_i) ⊕ F(k_{i+1}) of a fresh XOR sharing of zero.
    pub fn zero_share_binary(&mut self, shape: &[usize]) -> Result<B::Tensor> {
        let (mine, theirs) = self.zero_share_parts(shape)?;
        Ok(self.backend.xor(&mine, &theirs)?)
    }

    /// F(k_i) and F(k_{i+1}) of the next stream: the two PRG tensors of a fresh zero
    /// sharing ([`Party::zero_share`] is their difference, [`Party::zero_share_binary`]
    /// their XOR), for a step that folds them into its own fused pass
    /// ([`GpuBackend::fused`]).
    pub fn zero_share_parts(&mut self, shape: &[usize]) -> Result<(B::Tensor, B::Tensor)> {
        let stream = self.next_stream();
        let mine = self.random_with_prev(shape, stream)?;
        let theirs = self.random_with_next(shape, stream)?;
        #[cfg(test)]
        if self.insecure_skip_zero_sharing {
            let zeros = self.backend.zeros(shape)?;
            return Ok((zeros.clone(), zeros));
        }
        Ok((mine, theirs))
    }

    // ---- messaging ------------------------------------------------------------------------

    /// Sends a tensor to a neighbour (with [`Party::send_tensors`], the one place tensors
    /// leave a party): for protocols written on top of `Party`, in this workspace or
    /// outside it. Counted in [`Party::stats`] (bytes, and rounds as a Lamport clock).
    ///
    /// **The caller keeps the secret:** whatever goes out must be masked by randomness the
    /// receiver lacks (a zero sharing, [`Party::random_with_prev`] or
    /// [`Party::random_with_next`] of a key the receiver does not hold), as every protocol
    /// here does; nothing checks it.
    pub fn send_tensor(&mut self, peer: Peer, tensor: &B::Tensor) -> Result<()> {
        self.send_tensors(peer, &[tensor])
    }

    /// Sends several tensors to a neighbour as one message (their elements one after the
    /// other), so that a round costs one message per link.
    ///
    /// Between parties in one process (a transport that
    /// [carries handles](Transport::carries_handles)) the tensors themselves go, as handles
    /// that never leave the device, counted as the bytes they hold; between processes their
    /// elements are downloaded and sent. The same obligation as [`Party::send_tensor`].
    pub fn send_tensors(&mut self, peer: Peer, tensors: &[&B::Tensor]) -> Result<()> {
        if self.net.carries_handles() {
            let words: usize = tensors.iter().map(|t| t.len()).sum();
            let owned: Vec<B::Tensor> = tensors.iter().map(|&t| t.clone()).collect();
            self.net
                .send_handle(peer, Handle::new(owned, 8 * words as u64))?;
            return Ok(());
        }
        let b = &self.backend;
        let words = match tensors {
            [tensor] => b.download_vec((*tensor).clone())?,
            _ => {
                let flat = tensors
                    .iter()
                    .map(|t| b.reshape(t, &[t.len()]))
                    .collect::<cryptgpu_backend::Result<Vec<_>>>()?;
                b.download_vec(b.concat(&flat.iter().collect::<Vec<_>>(), 0)?)?
            }
        };
        self.net.send_u64_vec(peer, words)?;
        Ok(())
    }

    /// Receives what [`Party::send_tensors`] sent: one tensor per shape, in order. `op`
    /// names the protocol in the error of a message of the wrong size or shape.
    ///
    /// # Errors
    /// [`ShareError::UnexpectedMessage`] when the elements differ from the shapes', and the
    /// transport's errors.
    pub fn recv_tensors(
        &mut self,
        op: &'static str,
        peer: Peer,
        shapes: &[&[usize]],
    ) -> Result<Vec<B::Tensor>> {
        let expected: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        let unexpected = |got: usize| ShareError::UnexpectedMessage {
            op,
            peer: self.id.neighbour(peer),
            expected,
            got,
        };
        if self.net.carries_handles() {
            let handle = self.net.recv_handle(peer)?;
            let got = (handle.wire_len() / 8) as usize;
            let tensors = handle
                .downcast::<Vec<B::Tensor>>()
                .map_err(|_| unexpected(got))?;
            let lengths_agree = tensors.len() == shapes.len()
                && tensors
                    .iter()
                    .zip(shapes)
                    .all(|(t, s)| t.len() == s.iter().product::<usize>());
            if !lengths_agree {
                return Err(unexpected(tensors.iter().map(|t| t.len()).sum()));
            }
            let tensors = tensors
                .iter()
                .zip(shapes)
                .map(|(t, shape)| match t.shape() == *shape {
                    true => Ok(t.clone()),
                    false => self.backend.reshape(t, shape),
                })
                .collect::<cryptgpu_backend::Result<Vec<_>>>()?;
            #[cfg(test)]
            if let Some(mut log) = self.received.take() {
                let mut words = Vec::with_capacity(expected);
                for t in &tensors {
                    words.extend(self.backend.download(t)?);
                }
                log.push(words);
                self.received = Some(log);
            }
            return Ok(tensors);
        }
        let words = self.net.recv_u64s(peer)?;
        #[cfg(test)]
        if let Some(log) = &mut self.received {
            log.push(words.clone());
        }
        if words.len() != expected {
            return Err(unexpected(words.len()));
        }
        if let [shape] = shapes {
            return Ok(vec![self.backend.upload_vec(words, shape)?]);
        }
        let mut start = 0;
        let mut tensors = Vec::with_capacity(shapes.len());
        for shape in shapes {
            let n: usize = shape.iter().product();
            tensors.push(self.backend.upload(&words[start..start + n], shape)?);
            start += n;
        }
        Ok(tensors)
    }

    /// Receives a tensor of a known shape from a neighbour ([`Party::recv_tensors`] of one).
    ///
    /// # Errors
    /// As [`Party::recv_tensors`].
    pub fn recv_tensor(
        &mut self,
        op: &'static str,
        peer: Peer,
        shape: &[usize],
    ) -> Result<B::Tensor> {
        let mut tensors = self.recv_tensors(op, peer, &[shape])?;
        Ok(tensors.pop().expect("one shape, one tensor"))
    }

    /// Sends a tensor with its shape in front (rank, then the dimensions, one word each):
    /// the input owner's message of [`Party::share`], so that the receiver checks the shape it
    /// was given against the owner's and not only the element count.
    pub(crate) fn send_shaped(&mut self, peer: Peer, tensor: &B::Tensor) -> Result<()> {
        let header = shape_header(tensor.shape());
        if self.net.carries_handles() {
            // The tensor carries its shape; the handle is counted as the words it stands for.
            let wire = 8 * (header.len() + tensor.len()) as u64;
            self.net
                .send_handle(peer, Handle::new(tensor.clone(), wire))?;
            return Ok(());
        }
        let mut words = header;
        words.extend(self.backend.download_vec(tensor.clone())?);
        self.net.send_u64_vec(peer, words)?;
        Ok(())
    }

    /// Receives what [`Party::send_shaped`] sent, checking the sender's shape against
    /// `shape`.
    ///
    /// # Errors
    /// [`ShareError::ShapeDisagreement`] when the shapes differ,
    /// [`ShareError::UnexpectedMessage`] when the message does not hold a shape and its
    /// elements, and the transport's errors.
    pub(crate) fn recv_shaped(
        &mut self,
        op: &'static str,
        peer: Peer,
        shape: &[usize],
    ) -> Result<B::Tensor> {
        let owner = self.id.neighbour(peer);
        let elements: usize = shape.iter().product();
        let expected = 1 + shape.len() + elements;
        let unexpected = |got: usize| ShareError::UnexpectedMessage {
            op,
            peer: owner,
            expected,
            got,
        };
        let disagree = |theirs: Vec<usize>| ShareError::ShapeDisagreement {
            op,
            owner,
            ours: shape.to_vec(),
            theirs,
        };
        if self.net.carries_handles() {
            let handle = self.net.recv_handle(peer)?;
            let got = (handle.wire_len() / 8) as usize;
            let tensor = handle
                .downcast::<B::Tensor>()
                .map_err(|_| unexpected(got))?;
            if tensor.shape() != shape {
                return Err(disagree(tensor.shape().to_vec()));
            }
            #[cfg(test)]
            if let Some(mut log) = self.received.take() {
                log.push(self.backend.download(&tensor)?);
                self.received = Some(log);
            }
            return Ok(tensor);
        }
        let words = self.net.recv_u64s(peer)?;
        let theirs = read_shape_header(&words).ok_or_else(|| unexpected(words.len()))?;
        if theirs != shape {
            return Err(disagree(theirs));
        }
        let data = &words[1 + shape.len()..];
        if data.len() != elements {
            return Err(unexpected(words.len()));
        }
        #[cfg(test)]
        if let Some(log) = &mut self.received {
            log.push(data.to_vec());
        }
        Ok(self.backend.upload(data, shape)?)
    }
}

impl<B: GpuBackend, T: Transport> std::fmt::Debug for Party<B, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Party")
            .field("id", &self.id)
            .field("backend", &self.backend.name())
            .field("fixed", &self.fixed)
            .finish_non_exhaustive()
    }
}

/// The comparison domains ℓ a party takes: 2 to 62. The MSB runs over ℓ + 2 bits (bit
/// ℓ + 1 read), so ℓ = 62 uses the whole ring and reads its top bit.
pub const COMPARISON_BITS: std::ops::RangeInclusive<u32> = 2..=62;

/// The default comparison domain ℓ for a fixed-point format with f fractional bits:
/// 63 − f, clamped into [`COMPARISON_BITS`]. Exact truncation takes products below 2^62 in
/// magnitude, so every truncated product is below 2^(62 − f) in magnitude, inside the
/// domain [−2^(63−f), 2^(63−f)); fixed-point inputs may reach 2^(63−f) in real terms, and
/// the owners' checks ([`Party::check_comparable`]) refuse those at the edge or beyond.
pub fn default_comparison_bits(fixed: FixedPoint) -> u32 {
    63u32
        .saturating_sub(fixed.frac_bits())
        .clamp(*COMPARISON_BITS.start(), *COMPARISON_BITS.end())
}

/// Checks fixed-point `values` (in format `fixed`) against the comparison domain
/// [−2^ℓ, 2^ℓ) of ℓ = `comparison_bits`: [`Party::check_comparable`] for one who shares
/// values without being a party (a client of a service uploading a model, say). The error
/// names the tensor `what`, the value and its index: it stays with the one who holds them.
pub fn check_comparable(
    fixed: FixedPoint,
    comparison_bits: u32,
    what: &str,
    values: &[u64],
) -> std::result::Result<(), OutOfComparisonRange> {
    let l = comparison_bits;
    let half = 1u64 << l;
    // v + 2^ℓ < 2^(ℓ+1) exactly for v in [−2^ℓ, 2^ℓ).
    let Some(index) = values
        .iter()
        .position(|&v| v.wrapping_add(half) >= half << 1)
    else {
        return Ok(());
    };
    Err(OutOfComparisonRange {
        tensor: what.to_owned(),
        index,
        value: fixed.decode(values[index]),
        limit: half as f64 / (1u64 << fixed.frac_bits()) as f64,
        comparison_bits: l,
        frac_bits: fixed.frac_bits(),
    })
}

/// Checks that two shared operands have the same shape.
pub(crate) fn same_shape(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<()> {
    if lhs != rhs {
        return Err(ShareError::Shape {
            op,
            lhs: lhs.to_vec(),
            rhs: rhs.to_vec(),
        });
    }
    Ok(())
}

/// A setup message of exactly `N` bytes from `peer`.
fn key_message<const N: usize>(msg: &[u8], peer: PartyId) -> Result<[u8; N]> {
    <[u8; N]>::try_from(msg).map_err(|_| ShareError::UnexpectedMessage {
        op: "setup (bytes)",
        peer,
        expected: N,
        got: msg.len(),
    })
}

/// A shape as words: its rank, then its dimensions.
fn shape_header(shape: &[usize]) -> Vec<u64> {
    std::iter::once(shape.len() as u64)
        .chain(shape.iter().map(|&d| d as u64))
        .collect()
}

/// The shape at the front of `words` ([`shape_header`]'s), or `None` if they do not start
/// with one.
fn read_shape_header(words: &[u64]) -> Option<Vec<usize>> {
    let (&rank, rest) = words.split_first()?;
    let rank = usize::try_from(rank).ok().filter(|&r| r <= rest.len())?;
    rest[..rank]
        .iter()
        .map(|&d| usize::try_from(d).ok())
        .collect()
}
