//! Max and argmax over an axis by a tournament of comparisons, max-pooling (forward and the
//! one-hot backward), average pooling and global average pooling.
//!
//! Max, argmax and max-pooling are exact for values in the party's comparison domain
//! [−2^ℓ, 2^ℓ) (see [`crate::compare`]); a max-pool's padding is the domain's floor −2^ℓ
//! (`Party::comparison_floor`), which never changes a window's max (a window whose values
//! all sit at −2^ℓ gives −2^ℓ either way), and whose difference with any value of the
//! domain stays where the MSB is exact.
//!
//! # Tournament
//!
//! The k candidates along the axis meet in neighbouring pairs (0 with 1, 2 with 3, ...): one
//! comparison layer (7 rounds) and one bit injection that selects the winner's value (2
//! rounds, the first overlapping the comparison's last), so ⌈log2 k⌉ levels of 8 rounds.
//! An odd last candidate waits for the next level. The survivors keep the order of the
//! originals they stand for and the lower one wins a tie, so a tie goes to the lowest
//! index, as in PyTorch and the plaintext executor ([1, 5, 5, 5] → index 1; an all-zero
//! pooling window after a ReLU → its first position).
//!
//! When the winners are asked for (argmax, and max-pooling in training), they come from the
//! levels' comparison bits at the end, as shared one-hot bits (see `tournament`): one AND
//! round per level below the top, instead of carrying k one-hot values through every
//! selection. Max-pooling's backward pass injects them into the gradient (2 rounds, no
//! truncation); argmax turns them into ring integers 0 and 1 (2 rounds).

use crate::compare::ge;
use crate::{NonlinearError, Result};
use cryptgpu_backend::{GpuBackend, Pool2dParams, shape::Pool2dDims};
use cryptgpu_share::{BinaryRss, Party, Rss, SharedBits};
use cryptgpu_transport::Transport;

/// The maximum along an axis and, when asked, the one-hot position of the winner.
#[derive(Clone, Debug)]
pub struct Max<B: GpuBackend> {
    /// The maxima: the input's shape without `axis`.
    pub values: Rss<B>,
    /// One-hot (ring integers 0 and 1) of the winner, of the input's shape: `Some` when
    /// asked for.
    pub argmax: Option<Rss<B>>,
}

/// The maximum of `x` along `axis` (and the one-hot argmax if `with_argmax`), by the
/// tournament of the module docs: 8·⌈log2 k⌉ rounds for an axis of length k, and with the
/// argmax one more per level below the top and 2 for the conversion.
pub fn max<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    axis: usize,
    with_argmax: bool,
) -> Result<Max<B>> {
    let shape = x.shape().to_vec();
    if axis >= shape.len() || shape[axis] == 0 {
        return Err(NonlinearError::Argument {
            op: "max",
            why: format!("axis {axis} of shape {shape:?} is missing or empty"),
        });
    }
    // Move the axis to the front: [k, rest].
    let k = shape[axis];
    let rest: Vec<usize> = shape
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != axis)
        .map(|(_, &e)| e)
        .collect();
    let r: usize = rest.iter().product();
    let mut to_front: Vec<usize> = vec![axis];
    to_front.extend((0..shape.len()).filter(|&i| i != axis));
    let front = p.linear(x, |b, t| b.reshape(&b.permute(t, &to_front)?, &[k, r]))?;
    let (values, hot) = tournament(p, &front, with_argmax)?;
    let values = p.linear(&values, |b, t| b.reshape(t, &rest))?;
    let argmax = match hot {
        None => None,
        Some(bits) => {
            let hot = p.bit_to_arith(&bits)?;
            // hot is [k, r]: back to the input's layout.
            let mut front_shape = vec![k];
            front_shape.extend(&rest);
            let mut back = vec![0; shape.len()];
            for (i, &a) in to_front.iter().enumerate() {
                back[a] = i;
            }
            Some(p.linear(&hot, |b, t| b.permute(&b.reshape(t, &front_shape)?, &back))?)
        }
    };
    Ok(Max { values, argmax })
}

/// The one-hot argmax of `x` along `axis` (ring integers 0 and 1).
pub fn argmax<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    axis: usize,
) -> Result<Rss<B>> {
    let m = max(p, x, axis, true)?;
    Ok(m.argmax.expect("asked for the argmax"))
}

/// The tournament over axis 0 of `x` ([k, r]): the maxima [r] and, if `track`, the one-hot
/// winners [k, r] as shared bits.
///
/// Each level keeps only its comparison bits. The one-hot winners come from them at the
/// end, top down: the final survivor's bit is 1, and a survivor's bit h splits into its
/// first candidate's h ∧ w and its second's h ⊕ (h ∧ w), where w is the level's "first
/// wins" bit. That is one binary AND per pair below the top level (one round per level),
/// instead of carrying k one-hot values through every selection.
fn tournament<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    track: bool,
) -> Result<(Rss<B>, Option<SharedBits<B>>)> {
    let (k, r) = (x.shape()[0], x.shape()[1]);
    let mut values = x.clone();
    // Per level: its candidates and the bits "the first of pair j wins", [pairs, r].
    let mut levels: Vec<(usize, SharedBits<B>)> = Vec::new();
    let mut m = k;
    while m > 1 {
        let pairs = m / 2;
        // Candidates 2j and 2j + 1 meet: the survivors stay in the order of the originals
        // they stand for, so a tie always goes to the lowest original index.
        let of_pair = |p: &Party<B, T>, t: &Rss<B>, which: usize| {
            p.linear(t, |b, s| {
                let s = b.reshape(&b.slice(s, 0, 0..2 * pairs)?, &[pairs, 2, r])?;
                b.reshape(&b.slice(&s, 1, which..which + 1)?, &[pairs, r])
            })
        };
        let first = of_pair(p, &values, 0)?;
        let second = of_pair(p, &values, 1)?;
        let first_wins = ge(p, &first, &second)?;
        let diff = p.sub(&first, &second)?;
        let chosen = p.mul_bit(&first_wins, &diff)?;
        let mut next_values = p.add(&second, &chosen)?;
        if m % 2 == 1 {
            let last = p.linear(&values, |b, s| b.slice(s, 0, m - 1..m))?;
            next_values = p.concat(&[&next_values, &last], 0)?;
        }
        if track {
            levels.push((m, first_wins));
        }
        values = next_values;
        m = values.shape()[0];
    }
    let values = p.linear(&values, |b, t| b.reshape(t, &[r]))?;
    if !track {
        return Ok((values, None));
    }
    // Top down, with bits unpacked one to a word (bit 0 matters) so that rows can be
    // sliced; every AND packs them first, so that it costs one bit per bit.
    let mut hot: Option<BinaryRss<B>> = None;
    for (m, first_wins) in levels.into_iter().rev() {
        let pairs = m / 2;
        let w = p.binary_linear(first_wins.packed(), |b, t| b.unpack_bits(t, &[pairs, r]))?;
        let (first, second, odd) = match &hot {
            // The top level (two candidates): the final survivor's bit is the public 1.
            None => (w.clone(), p.binary_not(&w)?, None),
            Some(h) => {
                let parent = p.binary_linear(h, |b, t| b.slice(t, 0, 0..pairs))?;
                let first = and_unpacked(p, &parent, &w)?;
                let second = p.binary_xor(&parent, &first)?;
                let odd = (m % 2 == 1)
                    .then(|| p.binary_linear(h, |b, t| b.slice(t, 0, pairs..pairs + 1)))
                    .transpose()?;
                (first, second, odd)
            }
        };
        let column = |t: &BinaryRss<B>| p.binary_linear(t, |b, s| b.reshape(s, &[pairs, 1, r]));
        let (first, second) = (column(&first)?, column(&second)?);
        let children = p.binary_concat(&[&first, &second], 1)?;
        let mut children = p.binary_linear(&children, |b, t| b.reshape(t, &[2 * pairs, r]))?;
        // An odd level's last candidate waited: its bit is its survivor's (the top level,
        // of two candidates, is never odd).
        if let Some(last) = &odd {
            children = p.binary_concat(&[&children, last], 0)?;
        }
        hot = Some(children);
    }
    let hot = match hot {
        Some(hot) => hot,
        // One candidate: it wins.
        None => {
            let zeros = p.backend().zeros(&[k, r])?;
            p.binary_not(&BinaryRss::from_shares(zeros.clone(), zeros)?)?
        }
    };
    let packed = p.binary_linear(&hot, |b, t| b.pack_bits(&b.reshape(t, &[k * r])?))?;
    Ok((values, Some(SharedBits::from_packed(packed, &[k, r])?)))
}

/// x ∧ y for binary sharings of bits held one to a word: packed for the AND (one bit on
/// the wire per bit), unpacked again.
fn and_unpacked<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &BinaryRss<B>,
    y: &BinaryRss<B>,
) -> Result<BinaryRss<B>> {
    let shape = x.shape().to_vec();
    let n: usize = shape.iter().product();
    let pack = |t: &BinaryRss<B>| p.binary_linear(t, |b, s| b.pack_bits(&b.reshape(s, &[n])?));
    let (xp, yp) = (pack(x)?, pack(y)?);
    let bits = SharedBits::from_packed(xp, &shape)?;
    let other = SharedBits::from_packed(yp, &shape)?;
    let both = p.bits_and(&bits, &other)?;
    Ok(p.binary_linear(both.packed(), |b, t| b.unpack_bits(t, &shape))?)
}

/// A max-pooling's output and what its backward pass needs.
#[derive(Clone, Debug)]
pub struct MaxPool<B: GpuBackend> {
    /// The pooled tensor `[n, c, oh, ow]`.
    pub output: Rss<B>,
    /// One-hot winners `[kh·kw, n, c, oh, ow]`, as shared bits.
    pub winners: SharedBits<B>,
    /// The pooling's parameters.
    pub params: Pool2dParams,
    /// The input's shape `[n, c, h, w]`.
    pub input_shape: Vec<usize>,
}

/// The windows of an NCHW sharing as `[kh·kw, r]` (padding reads the comparison floor
/// −2^ℓ), with the unfolded shape `[kh·kw, n, c, oh, ow]` and the output shape
/// `[n, c, oh, ow]`.
fn pool_windows<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    op: &'static str,
    x: &Rss<B>,
    params: Pool2dParams,
) -> Result<(Rss<B>, Vec<usize>, [usize; 4])> {
    let dims = Pool2dDims::new(op, x.shape(), params)?;
    let windows = p.linear(x, |b, t| b.pool_unfold(t, params, 0))?;
    let windows = if params.padding != [0, 0] {
        // The padding enters as a public constant, added once (not once per share): the
        // comparison floor −2^ℓ, the least value of the domain, so that it never changes a
        // window's max and every comparison stays exact.
        let floor = p.comparison_floor();
        let b = p.backend();
        let pad = b.pool_unfold(&b.zeros(x.shape())?, params, floor)?;
        p.add_public(&windows, &pad)?
    } else {
        windows
    };
    let unfolded = windows.shape().to_vec();
    let k = unfolded[0];
    let r: usize = unfolded[1..].iter().product();
    let flat = p.linear(&windows, |b, t| b.reshape(t, &[k, r]))?;
    Ok((flat, unfolded, [dims.n, dims.c, dims.oh, dims.ow]))
}

/// Max-pooling of an NCHW sharing, keeping the one-hot winners for
/// [`max_pool2d_backward`]: the windows are unfolded (padding reads the comparison floor
/// −2^ℓ, exact for inputs in the whole domain [−2^ℓ, 2^ℓ)) and meet in a tournament, 8·⌈log2(kh·kw)⌉ rounds, and the winners come from
/// its comparison bits (one more round per level below the top: 17 measured for 2×2).
pub fn max_pool2d<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    params: Pool2dParams,
) -> Result<MaxPool<B>> {
    let (flat, unfolded, out_shape) = pool_windows(p, "max_pool2d", x, params)?;
    let (values, hot) = tournament(p, &flat, true)?;
    let output = p.linear(&values, |b, t| b.reshape(t, &out_shape))?;
    let winners = hot.expect("tracked").reshape(&unfolded)?;
    Ok(MaxPool {
        output,
        winners,
        params,
        input_shape: x.shape().to_vec(),
    })
}

/// Max-pooling at inference: the maxima only, nothing kept for a backward pass. The same
/// tournament as [`max_pool2d`] without the winners.
pub fn max_pool2d_values<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    params: Pool2dParams,
) -> Result<Rss<B>> {
    let (flat, _, out_shape) = pool_windows(p, "max_pool2d", x, params)?;
    let (values, _) = tournament(p, &flat, false)?;
    Ok(p.linear(&values, |b, t| b.reshape(t, &out_shape))?)
}

/// The winners of a max-pooling whose output then goes through a ReLU (relu(max(x)) =
/// max(relu(x)), so the ReLU may run after the pool on a quarter of the elements): each
/// window keeps its winner only where the ReLU passed the max (`drelu`, of the output's
/// shape). [`max_pool2d_backward`] with the result is then the gradient of the pool and the
/// ReLU together, exactly the gradient through a ReLU followed by the pool: where the max
/// is positive both route to the same winner, and elsewhere both give 0. One AND round,
/// one bit per window element.
pub fn gate_winners<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    pool: &MaxPool<B>,
    drelu: &SharedBits<B>,
) -> Result<MaxPool<B>> {
    if drelu.shape() != pool.output.shape() {
        return Err(NonlinearError::Argument {
            op: "gate_winners",
            why: format!(
                "ReLU bits of shape {:?} for a pool output of shape {:?}",
                drelu.shape(),
                pool.output.shape()
            ),
        });
    }
    let unfolded = pool.winners.shape().to_vec();
    let (k, outs) = (unfolded[0], drelu.len());
    let spread = p.binary_linear(drelu.packed(), |b, t| {
        let bits = b.unpack_bits(t, &[1, outs])?;
        let bits = b.broadcast_to(&bits, &[k, outs])?;
        b.pack_bits(&b.reshape(&bits, &[k * outs])?)
    })?;
    let gate = SharedBits::from_packed(spread, &unfolded)?;
    let winners = p.bits_and(&pool.winners, &gate)?;
    Ok(MaxPool {
        winners,
        ..pool.clone()
    })
}

/// The gradient through a max-pooling: each window's output gradient goes to its winner,
/// by bit injection of the one-hot winners (two rounds, no truncation).
pub fn max_pool2d_backward<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    grad_output: &Rss<B>,
    pool: &MaxPool<B>,
) -> Result<Rss<B>> {
    let unfolded = pool.winners.shape().to_vec();
    if grad_output.shape() != pool.output.shape() {
        return Err(NonlinearError::Argument {
            op: "max_pool2d_backward",
            why: format!(
                "gradient of shape {:?} for an output of shape {:?}",
                grad_output.shape(),
                pool.output.shape()
            ),
        });
    }
    let mut one = vec![1];
    one.extend(grad_output.shape());
    let spread = p.linear(grad_output, |b, t| {
        b.broadcast_to(&b.reshape(t, &one)?, &unfolded)
    })?;
    let routed = p.mul_bit(&pool.winners, &spread)?;
    Ok(p.linear(&routed, |b, t| {
        b.pool_fold(t, pool.params, &pool.input_shape)
    })?)
}

/// Average pooling of an NCHW sharing (padding counts as zero and in the divisor, as
/// PyTorch's default `count_include_pad`): local window sums, then one public fixed-point
/// factor 1/(kh·kw). One round (P0 sends).
pub fn avg_pool2d<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    params: Pool2dParams,
) -> Result<Rss<B>> {
    Pool2dDims::new("avg_pool2d", x.shape(), params)?;
    let sums = p.linear(x, |b, t| b.pool_window_sum(t, params))?;
    let area = (params.kernel[0] * params.kernel[1]) as f64;
    Ok(p.mul_public_fixed(&sums, 1.0 / area)?)
}

/// The gradient through [`avg_pool2d`]: each window's gradient, divided by its area, spread
/// over the window. One round.
pub fn avg_pool2d_backward<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    grad_output: &Rss<B>,
    params: Pool2dParams,
    input_shape: &[usize],
) -> Result<Rss<B>> {
    let dims = Pool2dDims::new("avg_pool2d_backward", input_shape, params)?;
    let expected = [dims.n, dims.c, dims.oh, dims.ow];
    if grad_output.shape() != expected {
        return Err(NonlinearError::Argument {
            op: "avg_pool2d_backward",
            why: format!(
                "gradient of shape {:?} for an output of shape {expected:?}",
                grad_output.shape()
            ),
        });
    }
    let area = params.kernel[0] * params.kernel[1];
    let scaled = p.mul_public_fixed(grad_output, 1.0 / area as f64)?;
    let unfolded = [area, dims.n, dims.c, dims.oh, dims.ow];
    let mut one = vec![1];
    one.extend(expected);
    Ok(p.linear(&scaled, |b, t| {
        let spread = b.broadcast_to(&b.reshape(t, &one)?, &unfolded)?;
        b.pool_fold(&spread, params, input_shape)
    })?)
}

/// Global average pooling `[n, c, h, w]` → `[n, c]`: local sums, one public factor. One
/// round.
pub fn global_avg_pool<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
) -> Result<Rss<B>> {
    let shape = x.shape().to_vec();
    if shape.len() != 4 || shape[2] * shape[3] == 0 {
        return Err(NonlinearError::Argument {
            op: "global_avg_pool",
            why: format!("needs a non-empty NCHW tensor, got shape {shape:?}"),
        });
    }
    let sums = p.linear(x, |b, t| b.sum_axis(&b.sum_axis(t, 3)?, 2))?;
    Ok(p.mul_public_fixed(&sums, 1.0 / (shape[2] * shape[3]) as f64)?)
}

/// The gradient through [`global_avg_pool`]: `[n, c]` spread over `[n, c, h, w]`. One
/// round.
pub fn global_avg_pool_backward<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    grad_output: &Rss<B>,
    input_shape: &[usize],
) -> Result<Rss<B>> {
    if input_shape.len() != 4 || grad_output.shape() != &input_shape[..2] {
        return Err(NonlinearError::Argument {
            op: "global_avg_pool_backward",
            why: format!(
                "gradient of shape {:?} for an input of shape {input_shape:?}",
                grad_output.shape()
            ),
        });
    }
    let area = input_shape[2] * input_shape[3];
    let scaled = p.mul_public_fixed(grad_output, 1.0 / area as f64)?;
    let keep = [input_shape[0], input_shape[1], 1, 1];
    Ok(p.linear(&scaled, |b, t| {
        b.broadcast_to(&b.reshape(t, &keep)?, input_shape)
    })?)
}
