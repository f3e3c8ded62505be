// ChaCha12 keystream fill, word for word equal to rand_chacha::ChaCha12Rng (see
// cryptgpu_backend::prg): one thread per 64-byte block, which yields eight ring elements
// (low word first). Ring element p of the stream is block p / 8, element p % 8.

struct Params {
    win: Windows,
    key: array<vec4<u32>, 2>,
    stream_lo: u32,
    stream_hi: u32,
    // The 64-bit counter of the chunk's first block.
    block_lo: u32,
    block_hi: u32,
    // Elements of the first block that precede the chunk's first element.
    skip: u32,
    // Elements in the chunk, and the output index of its first one.
    count: u32,
    first_index: u32,
    reserved: u32,
}

fn rotl(x: u32, n: u32) -> u32 {
    return (x << n) | (x >> (32u - n));
}

fn quarter_round(s: ptr<function, array<u32, 16>>, a: u32, b: u32, c: u32, d: u32) {
    (*s)[a] += (*s)[b];
    (*s)[d] = rotl((*s)[d] ^ (*s)[a], 16u);
    (*s)[c] += (*s)[d];
    (*s)[b] = rotl((*s)[b] ^ (*s)[c], 12u);
    (*s)[a] += (*s)[b];
    (*s)[d] = rotl((*s)[d] ^ (*s)[a], 8u);
    (*s)[c] += (*s)[d];
    (*s)[b] = rotl((*s)[b] ^ (*s)[c], 7u);
}

@compute @workgroup_size(256)
fn main(inv: Invocation) {
    let t = thread_index(inv);
    if t * 8u >= params.skip + params.count {
        return;
    }
    let counter_lo = params.block_lo + t;
    let counter_hi = params.block_hi + select(0u, 1u, counter_lo < t);
    var input: array<u32, 16>;
    input[0] = 0x61707865u;
    input[1] = 0x3320646eu;
    input[2] = 0x79622d32u;
    input[3] = 0x6b206574u;
    for (var i = 0u; i < 8u; i++) {
        input[4u + i] = params.key[i / 4u][i % 4u];
    }
    input[12] = counter_lo;
    input[13] = counter_hi;
    input[14] = params.stream_lo;
    input[15] = params.stream_hi;
    var s = input;
    for (var round = 0u; round < 6u; round++) {
        quarter_round(&s, 0u, 4u, 8u, 12u);
        quarter_round(&s, 1u, 5u, 9u, 13u);
        quarter_round(&s, 2u, 6u, 10u, 14u);
        quarter_round(&s, 3u, 7u, 11u, 15u);
        quarter_round(&s, 0u, 5u, 10u, 15u);
        quarter_round(&s, 1u, 6u, 11u, 12u);
        quarter_round(&s, 2u, 7u, 8u, 13u);
        quarter_round(&s, 3u, 4u, 9u, 14u);
    }
    for (var e = 0u; e < 8u; e++) {
        let position = t * 8u + e;
        if position >= params.skip && position - params.skip < params.count {
            let word = r_from_parts(s[2u * e] + input[2u * e], s[2u * e + 1u] + input[2u * e + 1u]);
            store_out(params.first_index + position - params.skip, word);
        }
    }
}
