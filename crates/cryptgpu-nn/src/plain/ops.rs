//! The f64 kernels the plaintext forward and backward passes of several layers share, on raw
//! row-major slices: convolution (im2col + GEMM with faer, parallel over the batch), linear
//! and softmax. Each layer's own loops live in its file under [`crate::layers`].
//!
//! Reductions over the batch (weight gradients) add fixed-size chunks in a fixed order, so
//! results do not depend on the number of threads.

use cryptgpu_backend::Conv2dParams;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

/// Samples per chunk when weight gradients are summed over the batch.
const GRAD_CHUNK: usize = 4;

/// Work (multiply-adds) above which a single GEMM uses all threads.
const PARALLEL_GEMM_WORK: usize = 1 << 20;

/// The shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Stride, padding, groups.
    pub params: Conv2dParams,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeometry {
    /// Geometry of input `[n, c, h, w]`, `o` outputs, `kernel`, `params` (shapes already
    /// checked by the model's shape inference).
    pub fn new(input: &[usize], o: usize, kernel: [usize; 2], params: Conv2dParams) -> Self {
        let (n, c, h, w) = (input[0], input[1], input[2], input[3]);
        let oh = (h + 2 * params.padding[0] - kernel[0]) / params.stride[0] + 1;
        let ow = (w + 2 * params.padding[1] - kernel[1]) / params.stride[1] + 1;
        Self {
            n,
            c,
            h,
            w,
            o,
            kernel,
            params,
            oh,
            ow,
        }
    }

    fn groups(&self) -> usize {
        self.params.groups
    }

    /// Input channels per group.
    fn cg(&self) -> usize {
        self.c / self.groups()
    }

    /// Output channels per group.
    fn og(&self) -> usize {
        self.o / self.groups()
    }

    /// Rows of a group's im2col matrix.
    fn k(&self) -> usize {
        self.cg() * self.kernel[0] * self.kernel[1]
    }

    /// Output positions.
    fn p(&self) -> usize {
        self.oh * self.ow
    }
}

fn gemm(dst: MatMut<'_, f64>, accum: Accum, lhs: MatRef<'_, f64>, rhs: MatRef<'_, f64>) {
    let work = lhs.nrows() * lhs.ncols() * rhs.ncols();
    let par = if work >= PARALLEL_GEMM_WORK && rayon::current_thread_index().is_none() {
        Par::rayon(0)
    } else {
        Par::Seq
    };
    matmul(dst, accum, lhs, rhs, 1.0, par);
}

fn rm(data: &[f64], rows: usize, cols: usize) -> MatRef<'_, f64> {
    MatRef::from_row_major_slice(data, rows, cols)
}

fn rm_mut(data: &mut [f64], rows: usize, cols: usize) -> MatMut<'_, f64> {
    MatMut::from_row_major_slice_mut(data, rows, cols)
}

/// im2col of group `g` of one sample `x` (`[c, h, w]`): `[cg * kh * kw, oh * ow]`.
fn im2col(x: &[f64], geo: &ConvGeometry, g: usize, cols: &mut [f64]) {
    let [kh, kw] = geo.kernel;
    let [sh, sw] = geo.params.stride;
    let [ph, pw] = geo.params.padding;
    let p = geo.p();
    for cc in 0..geo.cg() {
        let plane = &x[(g * geo.cg() + cc) * geo.h * geo.w..][..geo.h * geo.w];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &mut cols[((cc * kh + ki) * kw + kj) * p..][..p];
                for oi in 0..geo.oh {
                    let ii = (oi * sh + ki) as isize - ph as isize;
                    let out = &mut row[oi * geo.ow..][..geo.ow];
                    if ii < 0 || ii >= geo.h as isize {
                        out.fill(0.0);
                        continue;
                    }
                    let src = &plane[ii as usize * geo.w..][..geo.w];
                    for (oj, v) in out.iter_mut().enumerate() {
                        let jj = (oj * sw + kj) as isize - pw as isize;
                        *v = if jj < 0 || jj >= geo.w as isize {
                            0.0
                        } else {
                            src[jj as usize]
                        };
                    }
                }
            }
        }
    }
}

/// col2im of group `g`: adds `cols` (`[cg * kh * kw, oh * ow]`) into sample `dx`.
fn col2im(cols: &[f64], geo: &ConvGeometry, g: usize, dx: &mut [f64]) {
    let [kh, kw] = geo.kernel;
    let [sh, sw] = geo.params.stride;
    let [ph, pw] = geo.params.padding;
    let p = geo.p();
    for cc in 0..geo.cg() {
        let plane = &mut dx[(g * geo.cg() + cc) * geo.h * geo.w..][..geo.h * geo.w];
        for ki in 0..kh {
            for kj in 0..kw {
                let row = &cols[((cc * kh + ki) * kw + kj) * p..][..p];
                for oi in 0..geo.oh {
                    let ii = (oi * sh + ki) as isize - ph as isize;
                    if ii < 0 || ii >= geo.h as isize {
                        continue;
                    }
                    let dst = &mut plane[ii as usize * geo.w..][..geo.w];
                    for (oj, &v) in row[oi * geo.ow..][..geo.ow].iter().enumerate() {
                        let jj = (oj * sw + kj) as isize - pw as isize;
                        if jj >= 0 && jj < geo.w as isize {
                            dst[jj as usize] += v;
                        }
                    }
                }
            }
        }
    }
}

/// Convolution forward: `x` `[n, c, h, w]`, `weight` `[o, c / groups, kh, kw]`, optional
/// `bias` `[o]`; returns `[n, o, oh, ow]`.
pub fn conv2d(x: &[f64], weight: &[f64], bias: Option<&[f64]>, geo: &ConvGeometry) -> Vec<f64> {
    let (p, k, og) = (geo.p(), geo.k(), geo.og());
    let mut out = vec![0.0; geo.n * geo.o * p];
    out.par_chunks_mut(geo.o * p)
        .zip(x.par_chunks(geo.c * geo.h * geo.w))
        .for_each_init(
            || vec![0.0; k * p],
            |cols, (out_s, x_s)| {
                for g in 0..geo.groups() {
                    im2col(x_s, geo, g, cols);
                    gemm(
                        rm_mut(&mut out_s[g * og * p..(g + 1) * og * p], og, p),
                        Accum::Replace,
                        rm(&weight[g * og * k..(g + 1) * og * k], og, k),
                        rm(cols, k, p),
                    );
                }
                if let Some(bias) = bias {
                    for (row, b) in out_s.chunks_mut(p).zip(bias) {
                        row.iter_mut().for_each(|v| *v += b);
                    }
                }
            },
        );
    out
}

/// Convolution backward: from `dy` `[n, o, oh, ow]`, returns `(dx, dweight, dbias)`.
pub fn conv2d_backward(
    x: &[f64],
    weight: &[f64],
    dy: &[f64],
    geo: &ConvGeometry,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (p, k, og) = (geo.p(), geo.k(), geo.og());
    let in_len = geo.c * geo.h * geo.w;
    let out_len = geo.o * p;
    let mut dx = vec![0.0; geo.n * in_len];
    dx.par_chunks_mut(in_len)
        .zip(dy.par_chunks(out_len))
        .for_each_init(
            || vec![0.0; k * p],
            |dcols, (dx_s, dy_s)| {
                for g in 0..geo.groups() {
                    gemm(
                        rm_mut(dcols, k, p),
                        Accum::Replace,
                        rm(&weight[g * og * k..(g + 1) * og * k], og, k).transpose(),
                        rm(&dy_s[g * og * p..(g + 1) * og * p], og, p),
                    );
                    col2im(dcols, geo, g, dx_s);
                }
            },
        );
    let partials: Vec<Vec<f64>> = x
        .par_chunks(in_len * GRAD_CHUNK)
        .zip(dy.par_chunks(out_len * GRAD_CHUNK))
        .map(|(x_chunk, dy_chunk)| {
            let mut dw = vec![0.0; weight.len()];
            let mut cols = vec![0.0; k * p];
            for (x_s, dy_s) in x_chunk.chunks(in_len).zip(dy_chunk.chunks(out_len)) {
                for g in 0..geo.groups() {
                    im2col(x_s, geo, g, &mut cols);
                    gemm(
                        rm_mut(&mut dw[g * og * k..(g + 1) * og * k], og, k),
                        Accum::Add,
                        rm(&dy_s[g * og * p..(g + 1) * og * p], og, p),
                        rm(&cols, k, p).transpose(),
                    );
                }
            }
            dw
        })
        .collect();
    let dweight = sum_in_order(partials, weight.len());
    let mut dbias = vec![0.0; geo.o];
    for dy_s in dy.chunks(out_len) {
        for (b, row) in dbias.iter_mut().zip(dy_s.chunks(p)) {
            *b += row.iter().sum::<f64>();
        }
    }
    (dx, dweight, dbias)
}

fn sum_in_order(partials: Vec<Vec<f64>>, len: usize) -> Vec<f64> {
    let mut total = vec![0.0; len];
    for part in partials {
        total.iter_mut().zip(part).for_each(|(t, v)| *t += v);
    }
    total
}

/// Linear forward: `x` `[n, in]`, `weight` `[out, in]`, optional `bias`; returns `[n, out]`.
pub fn linear(
    x: &[f64],
    weight: &[f64],
    bias: Option<&[f64]>,
    n: usize,
    in_features: usize,
    out_features: usize,
) -> Vec<f64> {
    let mut y = vec![0.0; n * out_features];
    if let Some(bias) = bias {
        y.chunks_mut(out_features)
            .for_each(|row| row.copy_from_slice(bias));
    }
    gemm(
        rm_mut(&mut y, n, out_features),
        if bias.is_some() {
            Accum::Add
        } else {
            Accum::Replace
        },
        rm(x, n, in_features),
        rm(weight, out_features, in_features).transpose(),
    );
    y
}

/// Linear backward: returns `(dx, dweight, dbias)`.
pub fn linear_backward(
    x: &[f64],
    weight: &[f64],
    dy: &[f64],
    n: usize,
    in_features: usize,
    out_features: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; n * in_features];
    gemm(
        rm_mut(&mut dx, n, in_features),
        Accum::Replace,
        rm(dy, n, out_features),
        rm(weight, out_features, in_features),
    );
    let mut dw = vec![0.0; out_features * in_features];
    gemm(
        rm_mut(&mut dw, out_features, in_features),
        Accum::Replace,
        rm(dy, n, out_features).transpose(),
        rm(x, n, in_features),
    );
    let mut db = vec![0.0; out_features];
    for row in dy.chunks(out_features) {
        db.iter_mut().zip(row).for_each(|(b, v)| *b += v);
    }
    (dx, dw, db)
}

/// Row-wise softmax of `[n, k]` (max subtracted first).
pub fn softmax(x: &[f64], k: usize) -> Vec<f64> {
    let mut y = x.to_vec();
    for row in y.chunks_mut(k) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        row.iter_mut().for_each(|v| *v /= sum);
    }
    y
}

/// Softmax backward from its output `s`: `dx = s * (dy - sum(dy * s))` per row.
pub fn softmax_backward(s: &[f64], dy: &[f64], k: usize) -> Vec<f64> {
    let mut dx = vec![0.0; s.len()];
    for ((dx_r, s_r), dy_r) in dx.chunks_mut(k).zip(s.chunks(k)).zip(dy.chunks(k)) {
        let dot: f64 = s_r.iter().zip(dy_r).map(|(a, b)| a * b).sum();
        for ((d, &sv), &g) in dx_r.iter_mut().zip(s_r).zip(dy_r) {
            *d = sv * (g - dot);
        }
    }
    dx
}
