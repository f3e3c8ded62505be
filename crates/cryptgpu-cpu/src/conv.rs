//! Convolution and its two gradients as im2col + GEMM, per image and channel group.
//!
//! For one image and one group, `cols` is the `[cpg·kh·kw, oh·ow]` matrix whose column `p`
//! holds the input window of output position `p` (zeros on padding). Then
//! - forward: `out[n, group] = W_group [opg, cpg·kh·kw] · cols`;
//! - grad input: `col2im(W_groupᵀ · grad_out[n, group])`, the adjoint of im2col;
//! - grad weight: `Σ_n grad_out[n, group] · colsᵀ`.

use crate::gemm::gemm_u64;
use cryptgpu_backend::shape::Conv2dDims;
use rayon::prelude::*;

/// Rows of the im2col matrix of one group: `cpg · kh · kw`.
fn col_rows(d: &Conv2dDims) -> usize {
    d.c / d.params.groups * d.kh * d.kw
}

/// Calls `visit(col_index, input_index)` for every im2col entry of one image and group that
/// reads a real input element; `input` indices are relative to the image's first group channel.
fn for_each_col(d: &Conv2dDims, mut visit: impl FnMut(usize, usize)) {
    let cpg = d.c / d.params.groups;
    let [sy, sx] = d.params.stride;
    let [py, px] = d.params.padding;
    let positions = d.oh * d.ow;
    for ci in 0..cpg {
        for ky in 0..d.kh {
            for kx in 0..d.kw {
                let row = (ci * d.kh + ky) * d.kw + kx;
                for oy in 0..d.oh {
                    let iy = (oy * sy + ky) as isize - py as isize;
                    if iy < 0 || iy >= d.h as isize {
                        continue;
                    }
                    let in_row = (ci * d.h + iy as usize) * d.w;
                    for ox in 0..d.ow {
                        let ix = (ox * sx + kx) as isize - px as isize;
                        if ix >= 0 && ix < d.w as isize {
                            visit(row * positions + oy * d.ow + ox, in_row + ix as usize);
                        }
                    }
                }
            }
        }
    }
}

/// The im2col matrix of one image's group; `input` starts at that group's first channel.
fn im2col(d: &Conv2dDims, input: &[u64], cols: &mut [u64]) {
    cols.fill(0);
    for_each_col(d, |c, i| cols[c] = input[i]);
}

/// Adds the im2col matrix `cols` back onto one image's group of the input gradient.
fn col2im(d: &Conv2dDims, cols: &[u64], grad_input: &mut [u64]) {
    for_each_col(d, |c, i| {
        grad_input[i] = grad_input[i].wrapping_add(cols[c])
    });
}

/// Forward convolution; shapes already checked.
pub(crate) fn conv2d(d: &Conv2dDims, input: &[u64], weight: &[u64]) -> Vec<u64> {
    let g = d.params.groups;
    let (rows, positions, opg) = (col_rows(d), d.oh * d.ow, d.o / g);
    let image_in = d.c * d.h * d.w;
    let group_in = image_in / g;
    let mut out = crate::buffer::take_zeroed(d.n * d.o * positions);
    if out.is_empty() || rows == 0 {
        return out;
    }
    out.par_chunks_mut(d.o * positions)
        .enumerate()
        .for_each(|(n, out_image)| {
            let mut cols = vec![0u64; rows * positions];
            for group in 0..g {
                im2col(
                    d,
                    &input[n * image_in + group * group_in..][..group_in],
                    &mut cols,
                );
                let w = &weight[group * opg * rows..][..opg * rows];
                let c = &mut out_image[group * opg * positions..][..opg * positions];
                gemm_u64(
                    opg, rows, positions, w, rows, 1, &cols, positions, 1, c, positions, false,
                );
            }
        });
    out
}

/// Gradient with respect to the input; shapes already checked.
pub(crate) fn grad_input(d: &Conv2dDims, grad_out: &[u64], weight: &[u64]) -> Vec<u64> {
    let g = d.params.groups;
    let (rows, positions, opg) = (col_rows(d), d.oh * d.ow, d.o / g);
    let image_in = d.c * d.h * d.w;
    let group_in = image_in / g;
    let mut out = crate::buffer::take_zeroed(d.n * image_in);
    if out.is_empty() || opg == 0 {
        return out;
    }
    out.par_chunks_mut(image_in)
        .enumerate()
        .for_each(|(n, grad_image)| {
            let mut cols = vec![0u64; rows * positions];
            for group in 0..g {
                // Wᵀ is [rows, opg]: read W [opg, rows] with swapped strides.
                let w = &weight[group * opg * rows..][..opg * rows];
                let go = &grad_out[(n * d.o + group * opg) * positions..][..opg * positions];
                gemm_u64(
                    rows, opg, positions, w, 1, rows, go, positions, 1, &mut cols, positions, false,
                );
                col2im(d, &cols, &mut grad_image[group * group_in..][..group_in]);
            }
        });
    out
}

/// Gradient with respect to the weight; shapes already checked. Images are split among
/// threads, each summing its share into a partial gradient; the partials are then added.
pub(crate) fn grad_weight(d: &Conv2dDims, input: &[u64], grad_out: &[u64]) -> Vec<u64> {
    let g = d.params.groups;
    let (rows, positions, opg) = (col_rows(d), d.oh * d.ow, d.o / g);
    let image_in = d.c * d.h * d.w;
    let group_in = image_in / g;
    let weight_len = d.o * rows;
    let tasks = rayon::current_num_threads().clamp(1, d.n.max(1));
    let per_task = d.n.div_ceil(tasks).max(1);
    let partials: Vec<Vec<u64>> = (0..d.n)
        .step_by(per_task)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first| {
            let mut acc = vec![0u64; weight_len];
            let mut cols = vec![0u64; rows * positions];
            for n in first..(first + per_task).min(d.n) {
                for group in 0..g {
                    im2col(
                        d,
                        &input[n * image_in + group * group_in..][..group_in],
                        &mut cols,
                    );
                    let go = &grad_out[(n * d.o + group * opg) * positions..][..opg * positions];
                    let gw = &mut acc[group * opg * rows..][..opg * rows];
                    // grad_out [opg, positions] · colsᵀ [positions, rows].
                    gemm_u64(
                        opg, positions, rows, go, positions, 1, &cols, 1, positions, gw, rows, true,
                    );
                }
            }
            acc
        })
        .collect();
    let mut total = vec![0u64; weight_len];
    for partial in partials {
        for (t, p) in total.iter_mut().zip(partial) {
            *t = t.wrapping_add(p);
        }
    }
    total
}
