//! When to split elementwise work across threads, and the split itself.

use rayon::prelude::*;

/// Below this many elements an op runs on the calling thread: splitting costs more than it saves.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;
/// Elements per task when an op is split.
pub(crate) const CHUNK: usize = 1 << 14;

/// `out[i] = f(i_start + j)`-style fill: calls `fill(first_index, chunk)` on chunks of `out`,
/// in parallel when `out` is large.
pub(crate) fn fill_chunks(out: &mut [u64], fill: impl Fn(usize, &mut [u64]) + Sync) {
    if out.len() < PARALLEL_MIN {
        fill(0, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, chunk)| fill(i * CHUNK, chunk));
    }
}

/// `f` on every element.
pub(crate) fn map(x: &[u64], f: impl Fn(u64) -> u64 + Sync) -> Vec<u64> {
    let mut out = crate::buffer::take(x.len());
    fill_chunks(&mut out, |start, chunk| {
        for (o, &v) in chunk.iter_mut().zip(&x[start..]) {
            *o = f(v);
        }
    });
    out
}

/// `f` on every pair of elements.
pub(crate) fn zip_map(a: &[u64], b: &[u64], f: impl Fn(u64, u64) -> u64 + Sync) -> Vec<u64> {
    let mut out = crate::buffer::take(a.len());
    fill_chunks(&mut out, |start, chunk| {
        for ((o, &x), &y) in chunk.iter_mut().zip(&a[start..]).zip(&b[start..]) {
            *o = f(x, y);
        }
    });
    out
}
