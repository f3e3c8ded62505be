//! ChaCha12 at the machine's vector width: the keystream of `cryptgpu_backend::prg`, element
//! for element, computed for 16 (AVX-512), 8 (AVX2) or 4 (baseline SSE2) blocks at once.
//!
//! Each of the sixteen state words is an array with one lane per block, so every step of a
//! quarter round is one vector instruction over all lanes; the compiler vectorises the lane
//! loops at the width the function is compiled for, and the widest one the CPU has is
//! picked at run time. Partial blocks at either end take the scalar reference.

use cryptgpu_backend::prg::{self, BLOCK_ELEMS, DOUBLE_ROUNDS, SIGMA, double_round, key_words};

/// Fills `out` with the ring elements at positions `first, first + 1, ..` of the stream
/// `stream` under `key`: the same values as [`prg::fill_chacha12`].
pub(crate) fn fill_chacha12(key: &[u8; 32], stream: u64, first: u64, out: &mut [u64]) {
    let elems = BLOCK_ELEMS as u64;
    // The scalar reference up to the first block boundary.
    let head = (((elems - first % elems) % elems) as usize).min(out.len());
    let (start, rest) = out.split_at_mut(head);
    prg::fill_chacha12(key, stream, first, start);
    let position = first.wrapping_add(head as u64);
    // Positions wrap at 2^64 (and block counters with them, at 2^61): whole groups only up
    // to the wrap, then the rest from position 0.
    let before_wrap = match position {
        0 => rest.len(),
        p => usize::try_from(p.wrapping_neg()).map_or(rest.len(), |n| n.min(rest.len())),
    };
    let words = key_words(key);
    let done = fill_blocks(&words, stream, position / elems, &mut rest[..before_wrap]);
    let position = position.wrapping_add(done as u64);
    let rest = &mut rest[done..];
    if done == 0 || rest.len() < 2 * BLOCK_ELEMS * 16 {
        prg::fill_chacha12(key, stream, position, rest);
    } else {
        fill_chacha12(key, stream, position, rest);
    }
}

/// Fills whole groups of blocks from block `counter` on, at the widest width the CPU has;
/// returns how many elements it wrote (a multiple of the group's).
fn fill_blocks(key: &[u32; 8], stream: u64, counter: u64, out: &mut [u64]) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return unsafe { fill_avx512(key, stream, counter, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { fill_avx2(key, stream, counter, out) };
        }
    }
    fill_lanes::<4>(key, stream, counter, out)
}

/// [`fill_lanes`] with 16 lanes, compiled for AVX-512.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fill_avx512(key: &[u32; 8], stream: u64, counter: u64, out: &mut [u64]) -> usize {
    fill_lanes::<16>(key, stream, counter, out)
}

/// [`fill_lanes`] with 8 lanes, compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_avx2(key: &[u32; 8], stream: u64, counter: u64, out: &mut [u64]) -> usize {
    fill_lanes::<8>(key, stream, counter, out)
}

/// Fills groups of `L` whole blocks; returns the elements written.
#[inline(always)]
fn fill_lanes<const L: usize>(key: &[u32; 8], stream: u64, counter: u64, out: &mut [u64]) -> usize {
    let group = L * BLOCK_ELEMS;
    let mut written = 0;
    for (g, chunk) in out.chunks_exact_mut(group).enumerate() {
        blocks::<L>(key, stream, counter.wrapping_add((g * L) as u64), chunk);
        written += group;
    }
    written
}

/// `L` consecutive blocks from block `counter`, as ring elements, into `out` (`8·L`).
#[inline(always)]
fn blocks<const L: usize>(key: &[u32; 8], stream: u64, counter: u64, out: &mut [u64]) {
    let mut input = [[0u32; L]; 16];
    for (word, &c) in input.iter_mut().zip(&SIGMA) {
        *word = [c; L];
    }
    for (word, &k) in input[4..12].iter_mut().zip(key) {
        *word = [k; L];
    }
    input[12] = std::array::from_fn(|lane| counter.wrapping_add(lane as u64) as u32);
    input[13] = std::array::from_fn(|lane| (counter.wrapping_add(lane as u64) >> 32) as u32);
    input[14] = [stream as u32; L];
    input[15] = [(stream >> 32) as u32; L];
    let mut s = input;
    for _ in 0..DOUBLE_ROUNDS {
        double_round(&mut s, quarter_round::<L>);
    }
    for (word, init) in s.iter_mut().zip(&input) {
        for (w, i) in word.iter_mut().zip(init) {
            *w = w.wrapping_add(*i);
        }
    }
    for (lane, block) in out.chunks_exact_mut(BLOCK_ELEMS).enumerate() {
        for (i, elem) in block.iter_mut().enumerate() {
            *elem = u64::from(s[2 * i][lane]) | (u64::from(s[2 * i + 1][lane]) << 32);
        }
    }
}

/// One quarter round on every lane.
// Each step reads and writes lane `lane` of several state words: an index is the clearest.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn quarter_round<const L: usize>(s: &mut [[u32; L]; 16], a: usize, b: usize, c: usize, d: usize) {
    for lane in 0..L {
        s[a][lane] = s[a][lane].wrapping_add(s[b][lane]);
        s[d][lane] = (s[d][lane] ^ s[a][lane]).rotate_left(16);
        s[c][lane] = s[c][lane].wrapping_add(s[d][lane]);
        s[b][lane] = (s[b][lane] ^ s[c][lane]).rotate_left(12);
        s[a][lane] = s[a][lane].wrapping_add(s[b][lane]);
        s[d][lane] = (s[d][lane] ^ s[a][lane]).rotate_left(8);
        s[c][lane] = s[c][lane].wrapping_add(s[d][lane]);
        s[b][lane] = (s[b][lane] ^ s[c][lane]).rotate_left(7);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_width_gives_the_reference_stream_at_any_offset_and_length() {
        let key: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
        for (first, len) in [
            (0u64, 0usize),
            (0, 1),
            (3, 5),
            (5, 300),
            (8, 128),
            (1001, 777),
        ] {
            let mut want = vec![0u64; len];
            prg::fill_chacha12(&key, 9, first, &mut want);
            let mut got = vec![0u64; len];
            fill_chacha12(&key, 9, first, &mut got);
            assert_eq!(got, want, "dispatched, first {first}, len {len}");
            // Each width on its own (the portable ones run anywhere).
            let counter = first.div_ceil(8);
            let head = (counter * 8 - first) as usize;
            if len > head {
                let words = key_words(&key);
                for width in [1usize, 4, 8, 16] {
                    let mut lanes = vec![0u64; len - head];
                    let done = match width {
                        1 => fill_lanes::<1>(&words, 9, counter, &mut lanes),
                        4 => fill_lanes::<4>(&words, 9, counter, &mut lanes),
                        8 => fill_lanes::<8>(&words, 9, counter, &mut lanes),
                        _ => fill_lanes::<16>(&words, 9, counter, &mut lanes),
                    };
                    let group = 8 * width;
                    assert_eq!(
                        done,
                        (len - head) / group * group,
                        "{width} lanes: whole groups"
                    );
                    assert_eq!(
                        lanes[..done],
                        want[head..head + done],
                        "{width} lanes, first {first}, len {len}"
                    );
                }
            }
        }
        // Positions that wrap around 2^64 (block counters wrap at 2^61).
        for first in [u64::MAX - 300, u64::MAX - 7, u64::MAX] {
            let mut want = vec![0u64; 1000];
            prg::fill_chacha12(&key, 4, first, &mut want);
            let mut got = vec![0u64; 1000];
            fill_chacha12(&key, 4, first, &mut got);
            assert_eq!(got, want, "wrap from {first}");
        }
        // A block counter that carries into its high word.
        let mut want = vec![0u64; 256];
        let first = (u64::from(u32::MAX) - 3) * 8;
        prg::fill_chacha12(&key, 1, first, &mut want);
        let mut got = vec![0u64; 256];
        fill_chacha12(&key, 1, first, &mut got);
        assert_eq!(got, want, "counter carry");
    }
}
