// ChaCha12 keystream fill, laid out as `rand_chacha::ChaCha12Rng` produces it: element p of
// stream `stream` under `key` is words 2p (low) and 2p + 1 (high) of the keystream, and
// block b is the ChaCha12 block with 64-bit counter b. Twin: cryptgpu-backend `prg.rs`.
//
// One thread per 8-element block. Positions wrap mod 2^64 like the host definition:
// thread t computes block (position / 8 + t) mod 2^61 and writes the elements i of the
// output with (position + i) mod 2^64 inside that block.

typedef unsigned long long u64;
typedef unsigned int u32;

// Mirrors `ChachaKey` in src/kernels.rs: the key as eight little-endian words (32 bytes).
struct ChachaKey {
    u32 words[8];
};

#define ROTL32(x, r) (((x) << (r)) | ((x) >> (32 - (r))))
#define QUARTER_ROUND(a, b, c, d)                                                         \
    a += b; d ^= a; d = ROTL32(d, 16);                                                    \
    c += d; b ^= c; b = ROTL32(b, 12);                                                    \
    a += b; d ^= a; d = ROTL32(d, 8);                                                     \
    c += d; b ^= c; b = ROTL32(b, 7);

extern "C" __global__ void chacha12_fill_u64(u64* out, u64 n, u64 position, u64 stream,
                                             ChachaKey key) {
    // Blocks touched: from the one holding `position` to the one holding position + n - 1.
    const u64 blocks = ((position & 7ull) + n + 7ull) >> 3;
    for (u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x; t < blocks;
         t += (u64)gridDim.x * blockDim.x) {
        const u64 counter = ((position >> 3) + t) & ((1ull << 61) - 1ull);
        u32 input[16];
        input[0] = 0x61707865u; input[1] = 0x3320646eu;
        input[2] = 0x79622d32u; input[3] = 0x6b206574u;
        for (int k = 0; k < 8; ++k) input[4 + k] = key.words[k];
        input[12] = (u32)counter; input[13] = (u32)(counter >> 32);
        input[14] = (u32)stream; input[15] = (u32)(stream >> 32);
        u32 x0 = input[0], x1 = input[1], x2 = input[2], x3 = input[3];
        u32 x4 = input[4], x5 = input[5], x6 = input[6], x7 = input[7];
        u32 x8 = input[8], x9 = input[9], x10 = input[10], x11 = input[11];
        u32 x12 = input[12], x13 = input[13], x14 = input[14], x15 = input[15];
        for (int r = 0; r < 6; ++r) {
            QUARTER_ROUND(x0, x4, x8, x12);
            QUARTER_ROUND(x1, x5, x9, x13);
            QUARTER_ROUND(x2, x6, x10, x14);
            QUARTER_ROUND(x3, x7, x11, x15);
            QUARTER_ROUND(x0, x5, x10, x15);
            QUARTER_ROUND(x1, x6, x11, x12);
            QUARTER_ROUND(x2, x7, x8, x13);
            QUARTER_ROUND(x3, x4, x9, x14);
        }
        const u32 s[16] = {x0 + input[0],   x1 + input[1],   x2 + input[2],   x3 + input[3],
                           x4 + input[4],   x5 + input[5],   x6 + input[6],   x7 + input[7],
                           x8 + input[8],   x9 + input[9],   x10 + input[10], x11 + input[11],
                           x12 + input[12], x13 + input[13], x14 + input[14], x15 + input[15]};
        for (u32 e = 0; e < 8; ++e) {
            // Output index of element e of this block: (counter * 8 + e) - position, mod 2^64.
            const u64 i = (counter * 8ull + e) - position;
            if (i < n) out[i] = (u64)s[2 * e] | ((u64)s[2 * e + 1] << 32);
        }
    }
}
