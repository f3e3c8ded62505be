//! Data movement: strided gathers (permute, slice, broadcast) and concatenation.

use crate::par::fill_chunks;

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
