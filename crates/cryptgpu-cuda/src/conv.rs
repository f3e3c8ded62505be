//! Convolution and both of its gradients as im2col + ring GEMM, one GEMM batch entry per
//! channel group, with the images of the batch side by side (twin: cryptgpu-cpu `conv.rs`).
//!
//! With `R = cpg·kh·kw` rows and `Q = n·oh·ow` columns, `cols` is `[groups][R][Q]`
//! (`kernels/conv.cu`), and per group `g`:
//! - forward: `Y_g [opg × Q] = W_g [opg × R] · cols_g`, then `[o][n][p] → [n][o][p]`;
//! - grad input: `cols_g = W_gᵀ [R × opg] · G_g [opg × Q]`, then col2im, where `G` is the
//!   output gradient permuted to `[o][n][p]`;
//! - grad weight: `dW_g [opg × R] = G_g · cols_gᵀ [Q × R]`.

use crate::device::Arg::{In, Out, Val};
use crate::gemm::{self, GemmShape, MatRef};
use crate::kernels::ConvDims;
use crate::{CudaBackend, CudaError, CudaTensor, DeviceBuf};
use cryptgpu_backend::shape::Conv2dDims;
use cudarc::driver::CudaSlice;

/// The kernel parameters of a convolution.
fn conv_dims(d: &Conv2dDims) -> ConvDims {
    let g = d.params.groups;
    ConvDims {
        n: d.n as u64,
        c: d.c as u64,
        h: d.h as u64,
        w: d.w as u64,
        groups: g as u64,
        cpg: (d.c / g) as u64,
        kh: d.kh as u64,
        kw: d.kw as u64,
        oh: d.oh as u64,
        ow: d.ow as u64,
        sy: d.params.stride[0] as u64,
        sx: d.params.stride[1] as u64,
        py: d.params.padding[0] as u64,
        px: d.params.padding[1] as u64,
    }
}

/// `(groups, cpg, opg, R, P, Q)`.
fn sizes(d: &Conv2dDims) -> (usize, usize, usize, usize, usize, usize) {
    let g = d.params.groups;
    let cpg = d.c / g;
    let p = d.oh * d.ow;
    (g, cpg, d.o / g, cpg * d.kh * d.kw, p, d.n * p)
}

/// The im2col matrix `[groups][R][Q]` of `input`.
fn im2col(
    backend: &CudaBackend,
    d: &Conv2dDims,
    input: &CudaTensor,
) -> Result<DeviceBuf, CudaError> {
    let (g, _, _, r, _, q) = sizes(d);
    let total = (g * r * q) as u64;
    let mut cols = backend.alloc(total as usize)?;
    if total > 0 {
        let dims = conv_dims(d);
        let args = [In(input.buffer()), Out(&mut cols), Val(&dims)];
        // SAFETY: the kernel writes cols[i] for i < groups·R·Q (the allocation) and reads
        // input only at in-range (img, channel, iy, ix) of the n·c·h·w input.
        unsafe { backend.launch_1d("im2col_u64", total, args) }?;
    }
    Ok(cols)
}

/// `[n][o][p]` permuted to `[o][n][p]` (and back with the roles of n and o swapped).
fn swap_outer(
    backend: &CudaBackend,
    x: &CudaTensor,
    a: usize,
    b: usize,
    p: usize,
) -> Result<CudaTensor, CudaError> {
    // Output [b][a][p] reads source [a][b][p]: strides (p, b·p, 1).
    backend.gather(x, &[b, a, p], &[p, b * p, 1], 0)
}

/// `groups` products of `m × k` by `k × n`, one GEMM batch entry per group, by the
/// backend's method.
fn group_gemm(
    backend: &CudaBackend,
    groups: usize,
    [m, k, n]: [usize; 3],
    a: MatRef<'_>,
    b: MatRef<'_>,
    out: &mut CudaSlice<u64>,
) -> Result<(), CudaError> {
    let shape = GemmShape {
        batch: groups,
        m,
        k,
        n,
    };
    gemm::gemm(backend, backend.gemm_method(), shape, a, b, out)
}

/// Forward convolution; shapes already checked.
pub(crate) fn forward(
    backend: &CudaBackend,
    d: &Conv2dDims,
    input: &CudaTensor,
    weight: &CudaTensor,
) -> Result<CudaTensor, CudaError> {
    let (g, _, opg, r, p, q) = sizes(d);
    let cols = im2col(backend, d, input)?;
    let mut y = backend.alloc(d.o * q)?;
    group_gemm(
        backend,
        g,
        [opg, r, q],
        MatRef::strided(weight.buffer(), r, 1, opg * r),
        MatRef::strided(&cols, q, 1, r * q),
        &mut y,
    )?;
    let y = CudaTensor::new(y, vec![d.o, d.n, p]);
    let out = swap_outer(backend, &y, d.o, d.n, p)?;
    Ok(out.with_shape(d.output_shape()))
}

/// Gradient with respect to the input; shapes already checked.
pub(crate) fn grad_input(
    backend: &CudaBackend,
    d: &Conv2dDims,
    grad_out: &CudaTensor,
    weight: &CudaTensor,
) -> Result<CudaTensor, CudaError> {
    let (g, _, opg, r, p, q) = sizes(d);
    let go = swap_outer(backend, grad_out, d.n, d.o, p)?;
    let mut cols = backend.alloc(g * r * q)?;
    group_gemm(
        backend,
        g,
        [r, opg, q],
        // W_gᵀ: element (row, o) is W[g·opg + o][row].
        MatRef::strided(weight.buffer(), 1, r, opg * r),
        MatRef::strided(go.buffer(), q, 1, opg * q),
        &mut cols,
    )?;
    let total = (d.n * d.c * d.h * d.w) as u64;
    let mut out = backend.alloc(total as usize)?;
    if total > 0 {
        let dims = conv_dims(d);
        let args = [In(&cols), Out(&mut out), Val(&dims)];
        // SAFETY: the kernel writes out[i] for i < n·c·h·w (the allocation) and reads cols
        // at (g, row < R, column < Q) only, inside its groups·R·Q elements.
        unsafe { backend.launch_1d("col2im_u64", total, args) }?;
    }
    Ok(CudaTensor::new(out, d.input_shape()))
}

/// Gradient with respect to the weight; shapes already checked.
pub(crate) fn grad_weight(
    backend: &CudaBackend,
    d: &Conv2dDims,
    input: &CudaTensor,
    grad_out: &CudaTensor,
) -> Result<CudaTensor, CudaError> {
    let (g, _, opg, r, p, q) = sizes(d);
    let cols = im2col(backend, d, input)?;
    let go = swap_outer(backend, grad_out, d.n, d.o, p)?;
    let mut out = backend.alloc(d.o * r)?;
    group_gemm(
        backend,
        g,
        [opg, q, r],
        MatRef::strided(go.buffer(), q, 1, opg * q),
        // cols_gᵀ: element (column q, row) is cols[g][row][q].
        MatRef::strided(&cols, 1, q, r * q),
        &mut out,
    )?;
    Ok(CudaTensor::new(out, d.weight_shape()))
}
