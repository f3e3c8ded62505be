//! Convolution and its two gradients as im2col + GEMM, over batches of images per channel
//! group.
//!
//! For a batch of images and one group, `cols` is the `[cpg·kh·kw, imgs·oh·ow]` matrix whose
//! column `img·oh·ow + p` holds the input window of output position `p` of image `img`
//! (zeros on padding). Then
//! - forward: `out[img, group] = W_group [opg, cpg·kh·kw] · cols` (column block `img`);
//! - grad input: `col2im(W_groupᵀ · grad_out[batch, group])`, the adjoint of im2col;
//! - grad weight: `Σ_img grad_out[img, group] · colsᵀ`, one GEMM per batch.
//!
//! One GEMM covers enough images for about [`TARGET_COLS`] columns (at most
//! [`COLS_BUDGET`] words of `cols`): deep layers of CIFAR-sized networks have a handful of
//! output positions per image, and a GEMM per image would pack the whole weight matrix
//! again for every image (a matrix-vector product at 1×1). Layers with many positions keep
//! small batches, whose `cols` stay in cache, and the batches run in parallel.

use crate::buffer;
use crate::gemm::gemm_u64;
use cryptgpu_backend::shape::Conv2dDims;
use rayon::prelude::*;

/// Columns (images × output positions) one GEMM aims for.
const TARGET_COLS: usize = 1024;
/// Most words of im2col matrix per batch (32 MiB).
const COLS_BUDGET: usize = 1 << 22;
/// Below this many words an im2col fill runs on the calling thread.
const SERIAL_FILL: usize = 1 << 15;

/// Rows of the im2col matrix of one group: `cpg · kh · kw`.
fn col_rows(d: &Conv2dDims) -> usize {
    d.c / d.params.groups * d.kh * d.kw
}

/// Images per batch for a group's im2col matrix of `rows` rows.
fn batch_images(d: &Conv2dDims, rows: usize) -> usize {
    let positions = (d.oh * d.ow).max(1);
    let per_image = (rows * positions).max(1);
    TARGET_COLS
        .div_ceil(positions)
        .min(COLS_BUDGET / per_image)
        .clamp(1, d.n.max(1))
}

/// Calls `visit(position, input_index)` for every output position whose window reads a
/// real input element at im2col row `row` (channel, ky, kx); `input` indices are relative
/// to the image's first group channel.
fn for_each_in_row(d: &Conv2dDims, row: usize, mut visit: impl FnMut(usize, usize)) {
    let (ci, k) = (row / (d.kh * d.kw), row % (d.kh * d.kw));
    let (ky, kx) = (k / d.kw, k % d.kw);
    let [sy, sx] = d.params.stride;
    let [py, px] = d.params.padding;
    for oy in 0..d.oh {
        let iy = (oy * sy + ky) as isize - py as isize;
        if iy < 0 || iy >= d.h as isize {
            continue;
        }
        let in_row = (ci * d.h + iy as usize) * d.w;
        for ox in 0..d.ow {
            let ix = (ox * sx + kx) as isize - px as isize;
            if ix >= 0 && ix < d.w as isize {
                visit(oy * d.ow + ox, in_row + ix as usize);
            }
        }
    }
}

/// Fills `cols` (`[rows, imgs·positions]`) with the im2col matrix of group `group` of
/// images `first..first + imgs`, rows in parallel.
fn im2col_batch(
    d: &Conv2dDims,
    input: &[u64],
    first: usize,
    imgs: usize,
    group: usize,
    cols: &mut [u64],
) {
    let positions = d.oh * d.ow;
    let ld = imgs * positions;
    let image_in = d.c * d.h * d.w;
    let group_in = image_in / d.params.groups;
    let fill_row = |(row, out): (usize, &mut [u64])| {
        out.fill(0);
        for img in 0..imgs {
            let x = &input[(first + img) * image_in + group * group_in..][..group_in];
            let o = &mut out[img * positions..][..positions];
            for_each_in_row(d, row, |p, i| o[p] = x[i]);
        }
    };
    if cols.len() < SERIAL_FILL {
        cols.chunks_mut(ld.max(1)).enumerate().for_each(fill_row);
    } else {
        cols.par_chunks_mut(ld.max(1))
            .enumerate()
            .for_each(fill_row);
    }
}

/// Copies the output-gradient block of group `group` of images `first..first + imgs` into
/// `dst` as `[opg, imgs·positions]`.
fn gather_grad_out(
    d: &Conv2dDims,
    grad_out: &[u64],
    first: usize,
    imgs: usize,
    group: usize,
    dst: &mut [u64],
) {
    let (positions, opg) = (d.oh * d.ow, d.o / d.params.groups);
    let ld = imgs * positions;
    dst.par_chunks_mut(ld.max(1))
        .enumerate()
        .for_each(|(oc, row)| {
            for img in 0..imgs {
                let src = ((first + img) * d.o + group * opg + oc) * positions;
                row[img * positions..][..positions].copy_from_slice(&grad_out[src..][..positions]);
            }
        });
}

/// Forward convolution; shapes already checked.
pub(crate) fn conv2d(d: &Conv2dDims, input: &[u64], weight: &[u64]) -> Vec<u64> {
    let g = d.params.groups;
    let (rows, positions, opg) = (col_rows(d), d.oh * d.ow, d.o / g);
    let mut out = buffer::take_zeroed(d.n * d.o * positions);
    if out.is_empty() || rows == 0 {
        return out;
    }
    let batch = batch_images(d, rows);
    let image_out = d.o * positions;
    out.par_chunks_mut(batch * image_out)
        .enumerate()
        .for_each(|(b, out_batch)| {
            let (first, imgs) = (b * batch, out_batch.len() / image_out);
            let ld = imgs * positions;
            let mut cols = buffer::take(rows * ld);
            let mut product = buffer::take(opg * ld);
            for group in 0..g {
                im2col_batch(d, input, first, imgs, group, &mut cols);
                let w = &weight[group * opg * rows..][..opg * rows];
                gemm_u64(
                    opg,
                    rows,
                    ld,
                    w,
                    rows,
                    1,
                    &cols,
                    ld,
                    1,
                    &mut product,
                    ld,
                    false,
                );
                for (img, out_image) in out_batch.chunks_mut(image_out).enumerate() {
                    for oc in 0..opg {
                        out_image[(group * opg + oc) * positions..][..positions]
                            .copy_from_slice(&product[oc * ld + img * positions..][..positions]);
                    }
                }
            }
            buffer::give(cols);
            buffer::give(product);
        });
    out
}

/// Gradient with respect to the input; shapes already checked.
pub(crate) fn grad_input(d: &Conv2dDims, grad_out: &[u64], weight: &[u64]) -> Vec<u64> {
    let g = d.params.groups;
    let (rows, positions, opg) = (col_rows(d), d.oh * d.ow, d.o / g);
    let image_in = d.c * d.h * d.w;
    let group_in = image_in / g;
    let mut out = buffer::take_zeroed(d.n * image_in);
    if out.is_empty() || opg == 0 || positions == 0 {
        return out;
    }
    let batch = batch_images(d, rows);
    out.par_chunks_mut(batch * image_in)
        .enumerate()
        .for_each(|(b, out_batch)| {
            let (first, imgs) = (b * batch, out_batch.len() / image_in);
            let ld = imgs * positions;
            let mut cols = buffer::take(rows * ld);
            let mut go = buffer::take(opg * ld);
            for group in 0..g {
                gather_grad_out(d, grad_out, first, imgs, group, &mut go);
                // Wᵀ is [rows, opg]: read W [opg, rows] with swapped strides.
                let w = &weight[group * opg * rows..][..opg * rows];
                gemm_u64(rows, opg, ld, w, 1, rows, &go, ld, 1, &mut cols, ld, false);
                for (img, grad_image) in out_batch.chunks_mut(image_in).enumerate() {
                    let gi = &mut grad_image[group * group_in..][..group_in];
                    for row in 0..rows {
                        let c = &cols[row * ld + img * positions..][..positions];
                        for_each_in_row(d, row, |p, i| gi[i] = gi[i].wrapping_add(c[p]));
                    }
                }
            }
            buffer::give(cols);
            buffer::give(go);
        });
    out
}

/// Gradient with respect to the weight; shapes already checked. The batches are split
/// among threads, each adding `grad_out · colsᵀ` of its batches onto a partial gradient
/// (one GEMM per batch); the partials are then added.
pub(crate) fn grad_weight(d: &Conv2dDims, input: &[u64], grad_out: &[u64]) -> Vec<u64> {
    let g = d.params.groups;
    let (rows, positions, opg) = (col_rows(d), d.oh * d.ow, d.o / g);
    let weight_len = d.o * rows;
    if weight_len == 0 || positions == 0 || d.n == 0 {
        return buffer::take_zeroed(weight_len);
    }
    let batch = batch_images(d, rows);
    let batches = d.n.div_ceil(batch);
    let tasks = rayon::current_num_threads().clamp(1, batches);
    let per_task = batches.div_ceil(tasks);
    let partials: Vec<Vec<u64>> = (0..batches)
        .step_by(per_task)
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|first_batch| {
            let mut acc = buffer::take_zeroed(weight_len);
            let mut cols = buffer::take(rows * batch * positions);
            let mut gathered = buffer::take(opg * batch * positions);
            for b in first_batch..(first_batch + per_task).min(batches) {
                let first = b * batch;
                let imgs = batch.min(d.n - first);
                let ld = imgs * positions;
                for group in 0..g {
                    let cols = &mut cols[..rows * ld];
                    im2col_batch(d, input, first, imgs, group, cols);
                    let go = &mut gathered[..opg * ld];
                    gather_grad_out(d, grad_out, first, imgs, group, go);
                    let gw = &mut acc[group * opg * rows..][..opg * rows];
                    // grad_out [opg, ld] · colsᵀ [ld, rows].
                    gemm_u64(opg, ld, rows, go, ld, 1, cols, 1, ld, gw, rows, true);
                }
            }
            buffer::give(cols);
            buffer::give(gathered);
            acc
        })
        .collect();
    let mut partials = partials.into_iter();
    let mut total = partials.next().expect("at least one task");
    for partial in partials {
        for (t, p) in total.iter_mut().zip(&partial) {
            *t = t.wrapping_add(*p);
        }
        buffer::give(partial);
    }
    total
}
