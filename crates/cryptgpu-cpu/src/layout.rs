//! Data movement: strided gathers (permute, slice, broadcast) and concatenation.

use crate::par::{PARALLEL_MIN, fill_chunks};
use rayon::prelude::*;

/// Innermost runs at least this long (with stride 1 in the source) are copied run by run.
const CONTIGUOUS_RUN: usize = 16;

/// [`strided_gather`] when the innermost axis is contiguous in the source: one copy per
/// run of `inner` elements, each run's source found from its row index.
fn gather_runs(
    src: &[u64],
    out: &mut [u64],
    out_shape: &[usize],
    src_strides: &[usize],
    offset: usize,
    inner: usize,
) {
    let outer = &out_shape[..out_shape.len() - 1];
    let copy_row = |(row, dst): (usize, &mut [u64])| {
        let mut rest = row;
        let mut at = offset;
        for (&extent, &stride) in outer.iter().zip(src_strides).rev() {
            at += (rest % extent) * stride;
            rest /= extent;
        }
        dst.copy_from_slice(&src[at..at + inner]);
    };
    if out.len() < PARALLEL_MIN {
        out.chunks_mut(inner).enumerate().for_each(copy_row);
    } else {
        out.par_chunks_mut(inner).enumerate().for_each(copy_row);
    }
}

/// Gathers a dense row-major tensor of `out_shape` from `src`, where output index `(i_0, ..)`
/// reads `src[offset + Σ i_k · src_strides[k]]`. A stride of 0 repeats (broadcast), permuted
/// strides transpose, an offset and the source's strides slice.
pub(crate) fn strided_gather(
    src: &[u64],
    out_shape: &[usize],
    src_strides: &[usize],
    offset: usize,
) -> Vec<u64> {
    let n: usize = out_shape.iter().product();
    let mut out = crate::buffer::take(n);
    if n == 0 {
        return out;
    }
    let rank = out_shape.len();
    if let Some(&inner) = out_shape.last()
        && src_strides[rank - 1] == 1
        && inner >= CONTIGUOUS_RUN
    {
        gather_runs(src, &mut out, out_shape, src_strides, offset, inner);
        return out;
    }
    fill_chunks(&mut out, |start, chunk| {
        // The multi-index of the chunk's first element, then an odometer over the rest.
        let mut index = vec![0usize; rank];
        let mut rest = start;
        for axis in (0..rank).rev() {
            index[axis] = rest % out_shape[axis];
            rest /= out_shape[axis];
        }
        let mut pos = offset
            + index
                .iter()
                .zip(src_strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let inner = rank.checked_sub(1);
        for o in chunk.iter_mut() {
            *o = src[pos];
            let Some(mut axis) = inner else { continue };
            loop {
                index[axis] += 1;
                pos += src_strides[axis];
                if index[axis] < out_shape[axis] || axis == 0 {
                    break;
                }
                pos -= src_strides[axis] * out_shape[axis];
                index[axis] = 0;
                axis -= 1;
            }
        }
    });
    out
}

/// Concatenates row-major tensors along `axis`: each is `outer` runs of `shape[axis] · inner`
/// elements, interleaved run by run.
pub(crate) fn concat(parts: &[(&[u64], &[usize])], axis: usize, total: usize) -> Vec<u64> {
    let outer: usize = parts[0].1[..axis].iter().product();
    let runs: Vec<usize> = parts
        .iter()
        .map(|(_, shape)| shape[axis..].iter().product())
        .collect();
    let mut out = crate::buffer::take(total);
    let mut at = 0;
    for o in 0..outer {
        for ((data, _), &run) in parts.iter().zip(&runs) {
            out[at..at + run].copy_from_slice(&data[o * run..(o + 1) * run]);
            at += run;
        }
    }
    debug_assert_eq!(at, total);
    out
}

#[cfg(test)]
mod tests {
    use super::strided_gather;

    /// The gather by its definition, one element at a time.
    fn naive(src: &[u64], shape: &[usize], strides: &[usize], offset: usize) -> Vec<u64> {
        let n: usize = shape.iter().product();
        (0..n)
            .map(|mut i| {
                let mut at = offset;
                for (&extent, &stride) in shape.iter().zip(strides).rev() {
                    at += (i % extent) * stride;
                    i /= extent;
                }
                src[at]
            })
            .collect()
    }

    #[test]
    fn contiguous_runs_and_the_odometer_agree_with_the_definition() {
        let src: Vec<u64> = (0..200_000u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9))
            .collect();
        // (shape, strides, offset): slices of rows, a broadcast, a transpose, long runs
        // split over threads, and short inner runs (the odometer).
        let cases: [(&[usize], &[usize], usize); 6] = [
            (&[5, 2, 40], &[160, 40, 1], 3),
            (&[7, 3, 64], &[0, 64, 1], 11),
            (&[40, 30], &[1, 40], 0),
            (&[300, 2, 100], &[400, 200, 1], 7),
            (&[9, 4, 3], &[20, 5, 1], 2),
            (&[64], &[1], 100),
        ];
        for (shape, strides, offset) in cases {
            assert_eq!(
                strided_gather(&src, shape, strides, offset),
                naive(&src, shape, strides, offset),
                "shape {shape:?}, strides {strides:?}, offset {offset}"
            );
        }
    }
}
