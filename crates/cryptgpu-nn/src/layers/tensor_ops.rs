//! Tensor helpers the layers share, plaintext and private: NumPy broadcasting and its
//! gradient (the sum over the broadcast axes), batched matrix transposes.

use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::Transport;

use super::shape::{left_pad, strides};
use crate::error::Result;
use crate::tensor::Tensor;

/// The transpose of each `rows × cols` row-major matrix in `data` (one or a batch of them).
pub(crate) fn transpose_matrices(data: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; data.len()];
    for (src, dst) in data.chunks(rows * cols).zip(out.chunks_mut(rows * cols)) {
        for i in 0..rows {
            for j in 0..cols {
                dst[j * rows + i] = src[i * cols + j];
            }
        }
    }
    out
}

/// `t` broadcast (NumPy rules) to `shape`.
pub(crate) fn plain_broadcast(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if t.shape() == shape {
        return Ok(t.clone());
    }
    let src = left_pad(t.shape(), shape.len());
    let src_strides = strides(&src);
    let out_strides = strides(shape);
    let len: usize = shape.iter().product();
    let data = (0..len)
        .map(|flat| {
            let mut offset = 0;
            for axis in 0..shape.len() {
                let i = flat / out_strides[axis] % shape[axis];
                if src[axis] != 1 {
                    offset += i * src_strides[axis];
                }
            }
            t.data()[offset]
        })
        .collect();
    Tensor::new(shape, data)
}

/// The sum of `t` over the axes along which `shape` was broadcast to `t`'s shape: the
/// gradient of a broadcast.
pub(crate) fn plain_reduce_to(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if t.shape() == shape {
        return Ok(t.clone());
    }
    let full = t.shape();
    let padded = left_pad(shape, full.len());
    let dst_strides = strides(&padded);
    let src_strides = strides(full);
    let mut out = vec![0.0; padded.iter().product()];
    for (flat, v) in t.data().iter().enumerate() {
        let mut offset = 0;
        for axis in 0..full.len() {
            let i = flat / src_strides[axis] % full[axis];
            if padded[axis] != 1 {
                offset += i * dst_strides[axis];
            }
        }
        out[offset] += v;
    }
    Tensor::new(shape, out)
}

/// A sharing broadcast (NumPy rules) to `shape` (local).
pub(crate) fn private_broadcast<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    x: &Rss<B>,
    shape: &[usize],
) -> Result<Rss<B>> {
    let padded = left_pad(x.shape(), shape.len());
    local_unless_shaped(p, x, shape, |b, t| {
        b.broadcast_to(&b.reshape(t, &padded)?, shape)
    })
}

/// The sum of a sharing over the axes along which `shape` was broadcast to it (local).
pub(crate) fn private_reduce_to<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    x: &Rss<B>,
    shape: &[usize],
) -> Result<Rss<B>> {
    let full = x.shape().to_vec();
    let padded = left_pad(shape, full.len());
    local_unless_shaped(p, x, shape, |b, t| {
        use cryptgpu_backend::DeviceTensor;
        let mut t = t.clone();
        for axis in (0..full.len()).rev() {
            if padded[axis] == 1 && full[axis] != 1 {
                t = b.sum_axis(&t, axis)?;
                let mut kept = t.shape().to_vec();
                kept.insert(axis, 1);
                t = b.reshape(&t, &kept)?;
            }
        }
        b.reshape(&t, shape)
    })
}

/// The local op `f` on each share of `x`, or `x` itself where it already has `shape`.
fn local_unless_shaped<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    x: &Rss<B>,
    shape: &[usize],
    f: impl Fn(&B, &B::Tensor) -> cryptgpu_backend::Result<B::Tensor>,
) -> Result<Rss<B>> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    Ok(p.linear(x, f)?)
}
