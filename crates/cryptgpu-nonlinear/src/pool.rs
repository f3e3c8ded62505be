//! Max and argmax over an axis by a tournament of comparisons, max-pooling (forward and the
//! one-hot backward), average pooling and global average pooling.
//!
//! # Tournament
//!
//! The k candidates along the axis meet in neighbouring pairs (0 with 1, 2 with 3, ...): one
//! comparison layer (8 rounds) and one bit injection that selects the winner's value and,
//! when asked, its one-hot index (2 rounds, both in one call), so ⌈log2 k⌉ levels of 10
//! rounds. An odd last candidate waits for the next level. The survivors keep the order of
//! the originals they stand for and the lower one wins a tie, so a tie goes to the lowest
//! index, as in PyTorch and the plaintext executor ([1, 5, 5, 5] → index 1; an all-zero
//! pooling window after a ReLU → its first position).
//!
//! One-hot indices are ring integers (0 or 1, not fixed point), so the backward pass of
//! max-pooling is a product without truncation: one round.

use crate::compare::ge;
use crate::{NonlinearError, Result};
use cryptgpu_backend::{DeviceTensor, GpuBackend, Pool2dParams, shape::Pool2dDims};
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::Transport;

/// The padding value of max-pooling windows: −2^62, below every value the comparisons
/// handle, and far enough from them that differences stay below 2^63.
const MAX_POOL_PAD: u64 = (1u64 << 62).wrapping_neg();

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
/// tournament of the module docs: 10·⌈log2 k⌉ rounds for an axis of length k.
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
        Some(hot) => {
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
/// winners [k, r].
fn tournament<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    track: bool,
) -> Result<(Rss<B>, Option<Rss<B>>)> {
    let (k, r) = (x.shape()[0], x.shape()[1]);
    let mut values = x.clone();
    // hot[j] is candidate j's one-hot index over the k originals: [m, r, k].
    let mut hot = if track {
        let mut eye = vec![0u64; k * r * k];
        for j in 0..k {
            for i in 0..r {
                eye[(j * r + i) * k + j] = 1;
            }
        }
        let eye = p.backend().upload(&eye, &[k, r, k])?;
        Some(p.constant(&eye)?)
    } else {
        None
    };
    let mut m = k;
    while m > 1 {
        let pairs = m / 2;
        let rows = |p: &Party<B, T>, t: &Rss<B>, range: std::ops::Range<usize>| {
            p.linear(t, |b, s| b.slice(s, 0, range.clone()))
        };
        // Candidates 2j and 2j + 1 meet: the survivors stay in the order of the originals
        // they stand for, so a tie always goes to the lowest original index.
        let of_pair = |p: &Party<B, T>, t: &Rss<B>, which: usize| {
            p.linear(t, |b, s| {
                let mut paired = vec![pairs, 2];
                paired.extend(&s.shape()[1..]);
                let mut out = paired.clone();
                out.remove(1);
                let s = b.reshape(&b.slice(s, 0, 0..2 * pairs)?, &paired)?;
                b.reshape(&b.slice(&s, 1, which..which + 1)?, &out)
            })
        };
        let first = of_pair(p, &values, 0)?;
        let second = of_pair(p, &values, 1)?;
        let first_wins = ge(p, &first, &second)?;
        // Select value and one-hot together: [pairs, r, 1 + k] (or [pairs, r]).
        let (lhs, rhs) = match &hot {
            None => (first, second),
            Some(h) => {
                let col =
                    |p: &Party<B, T>, t: &Rss<B>| p.linear(t, |b, s| b.reshape(s, &[pairs, r, 1]));
                let lhs = p.concat(&[&col(p, &first)?, &of_pair(p, h, 0)?], 2)?;
                let rhs = p.concat(&[&col(p, &second)?, &of_pair(p, h, 1)?], 2)?;
                (lhs, rhs)
            }
        };
        let diff = p.sub(&lhs, &rhs)?;
        let chosen = p.mul_bit(&first_wins, &diff)?;
        let winners = p.add(&rhs, &chosen)?;
        let (mut next_values, mut next_hot) = match &hot {
            None => (winners, None),
            Some(_) => (
                p.linear(&winners, |b, s| {
                    b.reshape(&b.slice(s, 2, 0..1)?, &[pairs, r])
                })?,
                Some(p.linear(&winners, |b, s| b.slice(s, 2, 1..k + 1))?),
            ),
        };
        if m % 2 == 1 {
            let last = m - 1..m;
            next_values = p.concat(&[&next_values, &rows(p, &values, last.clone())?], 0)?;
            if let (Some(nh), Some(h)) = (&next_hot, &hot) {
                next_hot = Some(p.concat(&[nh, &rows(p, h, last)?], 0)?);
            }
        }
        values = next_values;
        hot = next_hot;
        m = values.shape()[0];
    }
    let values = p.linear(&values, |b, t| b.reshape(t, &[r]))?;
    let hot = match hot {
        None => None,
        Some(h) => Some(p.linear(&h, |b, t| b.transpose(&b.reshape(t, &[r, k])?, 0, 1))?),
    };
    Ok((values, hot))
}

/// A max-pooling's output and what its backward pass needs.
#[derive(Clone, Debug)]
pub struct MaxPool<B: GpuBackend> {
    /// The pooled tensor `[n, c, oh, ow]`.
    pub output: Rss<B>,
    /// One-hot winners `[kh·kw, n, c, oh, ow]` (ring integers 0 and 1).
    pub winners: Rss<B>,
    /// The pooling's parameters.
    pub params: Pool2dParams,
    /// The input's shape `[n, c, h, w]`.
    pub input_shape: Vec<usize>,
}

/// Max-pooling of an NCHW sharing: the windows are unfolded (padding reads −2^62) and
/// meet in a tournament with one-hot tracking: 10·⌈log2(kh·kw)⌉ rounds (20 for 2×2).
pub fn max_pool2d<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    params: Pool2dParams,
) -> Result<MaxPool<B>> {
    let dims = Pool2dDims::new("max_pool2d", x.shape(), params)?;
    let windows = p.linear(x, |b, t| b.pool_unfold(t, params, 0))?;
    let windows = if params.padding != [0, 0] {
        // The padding enters as a public constant, added once (not once per share).
        let b = p.backend();
        let pad = b.pool_unfold(&b.zeros(x.shape())?, params, MAX_POOL_PAD)?;
        p.add_public(&windows, &pad)?
    } else {
        windows
    };
    let unfolded = windows.shape().to_vec();
    let k = unfolded[0];
    let r: usize = unfolded[1..].iter().product();
    let flat = p.linear(&windows, |b, t| b.reshape(t, &[k, r]))?;
    let (values, hot) = tournament(p, &flat, true)?;
    let out_shape = [dims.n, dims.c, dims.oh, dims.ow];
    let output = p.linear(&values, |b, t| b.reshape(t, &out_shape))?;
    let hot = hot.expect("tracked");
    let winners = p.linear(&hot, |b, t| b.reshape(t, &unfolded))?;
    Ok(MaxPool {
        output,
        winners,
        params,
        input_shape: x.shape().to_vec(),
    })
}

/// The gradient through a max-pooling: each window's output gradient goes to its winner.
/// One round (a product with the one-hot winners, no truncation).
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
    let routed = p.mul(&spread, &pool.winners)?;
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
