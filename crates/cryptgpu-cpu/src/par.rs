//! When to split elementwise work across threads, and the split itself.

use cryptgpu_backend::fused::{FUSED_MAX_STEPS, Fused, FusedStep, Operand};
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

/// Elements a fused program evaluates together: each step runs over a block at a time.
const FUSED_BLOCK: usize = 256;

/// `program` on every element of `inputs` (equal lengths), each step a tight loop over a
/// block of elements.
pub(crate) fn fused(program: &Fused, inputs: &[&[u64]]) -> Vec<u64> {
    let len = inputs.first().map_or(0, |x| x.len());
    let mut out = crate::buffer::take(len);
    fill_chunks(&mut out, |start, chunk| {
        let mut values = [[0u64; FUSED_BLOCK]; FUSED_MAX_STEPS];
        for (b, block) in chunk.chunks_mut(FUSED_BLOCK).enumerate() {
            let first = start + b * FUSED_BLOCK;
            let n = block.len();
            for (index, step) in program.steps().iter().enumerate() {
                let (done, rest) = values.split_at_mut(index);
                let dst = &mut rest[0][..n];
                let read = |operand: Operand| -> &[u64] {
                    match operand {
                        Operand::Input(i) => &inputs[usize::from(i)][first..first + n],
                        Operand::Step(s) => &done[usize::from(s)][..n],
                    }
                };
                match *step {
                    FusedStep::Binary(op, a, c) => {
                        let (a, c) = (read(a), read(c));
                        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(c) {
                            *d = op.apply(x, y);
                        }
                    }
                    FusedStep::Scalar(op, a, scalar) => {
                        for (d, &x) in dst.iter_mut().zip(read(a)) {
                            *d = op.apply(x, scalar);
                        }
                    }
                    FusedStep::Unary(op, a) => {
                        for (d, &x) in dst.iter_mut().zip(read(a)) {
                            *d = op.apply(x);
                        }
                    }
                    FusedStep::Shift(op, a, bits) => {
                        for (d, &x) in dst.iter_mut().zip(read(a)) {
                            *d = op.apply(x, bits);
                        }
                    }
                }
            }
            block.copy_from_slice(&values[program.steps().len() - 1][..n]);
        }
    });
    out
}
