// chacha.cu on the CPU against a scalar ChaCha12 written from prg.rs, positions wrapping.
#include "cuda_shim.h"
#include "common.h"
#include "../../../kernels/chacha.cu"

static void block(const u32 key[8], u64 stream, u64 counter, u32 out[16]) {
    u32 in[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u};
    for (int i = 0; i < 8; ++i) in[4 + i] = key[i];
    in[12] = (u32)counter, in[13] = (u32)(counter >> 32);
    in[14] = (u32)stream, in[15] = (u32)(stream >> 32);
    u32 s[16];
    for (int i = 0; i < 16; ++i) s[i] = in[i];
    auto qr = [&](int a, int b, int c, int d) { QUARTER_ROUND(s[a], s[b], s[c], s[d]); };
    for (int r = 0; r < 6; ++r) {
        qr(0, 4, 8, 12), qr(1, 5, 9, 13), qr(2, 6, 10, 14), qr(3, 7, 11, 15);
        qr(0, 5, 10, 15), qr(1, 6, 11, 12), qr(2, 7, 8, 13), qr(3, 4, 9, 14);
    }
    for (int i = 0; i < 16; ++i) out[i] = s[i] + in[i];
}

int test_chacha() {
    ChachaKey key;
    for (int i = 0; i < 8; ++i) key.words[i] = (u32)rng_next();
    for (u64 position : {0ull, 3ull, 8ull, ~0ull - 3, ~0ull - 20, (1ull << 63) - 5}) {
        const u64 n = 37;
        std::vector<u64> out(n, 0);
        u64 blocks = ((position & 7) + n + 7) / 8;
        launch({1, 1, 1}, {(unsigned)std::min<u64>(blocks, 4), 1, 1}, chacha12_fill_u64,
               out.data(), n, position, (u64)0x1234, key);
        for (u64 i = 0; i < n; ++i) {
            u64 p = position + i;
            u32 w[16];
            block(key.words, 0x1234, p / 8, w);
            u64 want = (u64)w[2 * (p % 8)] | ((u64)w[2 * (p % 8) + 1] << 32);
            CHECK(out[i] == want, "chacha position %llx element %llu", position, i);
        }
    }
    std::printf("ok: chacha12_fill_u64 (positions wrapping mod 2^64)\n");
    return 0;
}
