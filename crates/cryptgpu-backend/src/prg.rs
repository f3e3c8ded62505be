//! The ChaCha12 keystream in counter mode: the scalar definition every backend's PRG fill
//! kernel implements, laid out exactly as `rand_chacha::ChaCha12Rng` produces it.
//!
//! A stream is fixed by a 256-bit key and a 64-bit stream id (ChaCha's nonce). Block `b`
//! of the stream is the ChaCha12 block with the 64-bit block counter `b`; its sixteen
//! 32-bit words follow one another in the stream. The 64-bit ring element at position
//! `p` is made of the 32-bit words `2p` (low half) and `2p + 1` (high half), which is
//! what `ChaCha12Rng::next_u64` returns after `set_word_pos(2p)`. Any element can be
//! computed on its own, so a device fills a tensor with one thread per block.

/// 32-bit words in one ChaCha block.
pub const BLOCK_WORDS: usize = 16;
/// 64-bit ring elements in one ChaCha block.
pub const BLOCK_ELEMS: usize = BLOCK_WORDS / 2;
/// Double rounds of ChaCha12 (12 rounds).
pub const DOUBLE_ROUNDS: usize = 6;
/// "expand 32-byte k", the ChaCha constant for 256-bit keys.
pub const SIGMA: [u32; 4] = [0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574];

/// One double round on a state `s` of any layout, given its quarter round on words
/// (a, b, c, d): four on the columns, then four on the diagonals.
#[inline(always)]
pub fn double_round<S>(s: &mut S, quarter_round: impl Fn(&mut S, usize, usize, usize, usize)) {
    quarter_round(s, 0, 4, 8, 12);
    quarter_round(s, 1, 5, 9, 13);
    quarter_round(s, 2, 6, 10, 14);
    quarter_round(s, 3, 7, 11, 15);
    quarter_round(s, 0, 5, 10, 15);
    quarter_round(s, 1, 6, 11, 12);
    quarter_round(s, 2, 7, 8, 13);
    quarter_round(s, 3, 4, 9, 14);
}

/// The key as eight little-endian 32-bit words, as ChaCha reads it.
pub fn key_words(key: &[u8; 32]) -> [u32; 8] {
    std::array::from_fn(|i| {
        u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]])
    })
}

#[inline(always)]
fn quarter_round(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// Block `counter` of the ChaCha12 stream `stream` under `key` (as [`key_words`]).
#[inline]
pub fn chacha12_block(key: &[u32; 8], stream: u64, counter: u64) -> [u32; BLOCK_WORDS] {
    let mut input = [0u32; 16];
    input[..4].copy_from_slice(&SIGMA);
    input[4..12].copy_from_slice(key);
    input[12] = counter as u32;
    input[13] = (counter >> 32) as u32;
    input[14] = stream as u32;
    input[15] = (stream >> 32) as u32;
    let mut s = input;
    for _ in 0..DOUBLE_ROUNDS {
        double_round(&mut s, quarter_round);
    }
    std::array::from_fn(|i| s[i].wrapping_add(input[i]))
}

/// The block's sixteen words as eight 64-bit ring elements (low word first).
#[inline]
pub fn block_elems(block: &[u32; BLOCK_WORDS]) -> [u64; BLOCK_ELEMS] {
    std::array::from_fn(|i| u64::from(block[2 * i]) | (u64::from(block[2 * i + 1]) << 32))
}

/// Fills `out` with the ring elements at positions `first, first + 1, ..` of the stream.
pub fn fill_chacha12(key: &[u8; 32], stream: u64, first: u64, out: &mut [u64]) {
    let key = key_words(key);
    let mut pos = first;
    let mut rest = out;
    while !rest.is_empty() {
        let elems = block_elems(&chacha12_block(&key, stream, pos / BLOCK_ELEMS as u64));
        let skip = (pos % BLOCK_ELEMS as u64) as usize;
        let take = (BLOCK_ELEMS - skip).min(rest.len());
        let (head, tail) = rest.split_at_mut(take);
        head.copy_from_slice(&elems[skip..skip + take]);
        rest = tail;
        pos = pos.wrapping_add(take as u64);
    }
}
