// elementwise.cu and layout.cu on the CPU.
#include "cuda_shim.h"
#include "common.h"
#include "../../../kernels/elementwise.cu"
#undef GRID_STRIDE_LOOP
namespace layout {
#include "../../../kernels/layout.cu"
}

int test_elementwise() {
    for (u64 n : {1ull, 63ull, 64ull, 65ull, 200ull, 1000ull}) {
        auto a = random_values(n), b = random_values(n);
        std::vector<u64> out(n);
        u64 words = (n + 63) / 64;
        std::vector<u64> packed(words, 0xdead);
        for (u32 op = 0; op < 6; ++op) {
            launch({blocks_for(n), 1, 1}, {256, 1, 1}, binary_u64, (const u64*)a.data(),
                   (const u64*)b.data(), out.data(), n, op);
            for (u64 i = 0; i < n; ++i) {
                u64 x = a[i], y = b[i];
                u64 want = op == 0 ? x + y : op == 1 ? x - y : op == 2 ? x * y : op == 3 ? (x & y) : op == 4 ? (x | y) : (x ^ y);
                CHECK(out[i] == want, "binary op %u", op);
            }
        }
        for (u32 bits : {0u, 1u, 20u, 63u}) {
            launch({blocks_for(n), 1, 1}, {256, 1, 1}, shift_u64, (const u64*)a.data(), out.data(),
                   n, bits, 2u);
            for (u64 i = 0; i < n; ++i) CHECK(out[i] == (u64)((i64)a[i] >> bits), "sra");
        }
        // pack_bits: one warp per word, as the backend launches it (grid for words * 32).
        launch({blocks_for(words * 32, 1), 1, 1}, {256, 1, 1}, pack_bits_u64,
               (const u64*)a.data(), packed.data(), n, words);
        for (u64 w = 0; w < words; ++w) {
            u64 want = 0;
            for (u64 j = 0; j < 64 && 64 * w + j < n; ++j) want |= (a[64 * w + j] & 1) << j;
            CHECK(packed[w] == want, "pack_bits n=%llu word %llu", n, w);
        }
        // bit_planes: one warp per word too, 64 pairs of ballots per warp.
        std::vector<u64> planes(64 * words, 0xdead);
        launch({blocks_for(words * 32, 1), 1, 1}, {256, 1, 1}, bit_planes_u64,
               (const u64*)a.data(), planes.data(), n, words);
        for (u64 j = 0; j < 64; ++j)
            for (u64 w = 0; w < words; ++w) {
                u64 want = 0;
                for (u64 e = 0; e < 64 && 64 * w + e < n; ++e)
                    want |= ((a[64 * w + e] >> j) & 1) << e;
                CHECK(planes[j * words + w] == want, "bit_planes n=%llu plane %llu word %llu", n,
                      j, w);
            }
        launch({blocks_for(n), 1, 1}, {256, 1, 1}, unpack_bits_u64, (const u64*)packed.data(),
               out.data(), n);
        for (u64 i = 0; i < n; ++i) CHECK(out[i] == (a[i] & 1), "unpack_bits");
    }
    std::printf("ok: binary, shift, pack_bits and bit_planes (warp ballots), unpack_bits\n");

    // Permute [3,5,7] by (2,0,1): out shape [7,3,5], source strides (1, 35, 7).
    auto x = random_values(105);
    std::vector<u64> y(105);
    layout::GatherParams p{};
    p.rank = 3;
    p.offset = 0;
    u64 shape[3] = {7, 3, 5}, strides[3] = {1, 35, 7};
    for (int i = 0; i < 3; ++i) p.shape[i] = shape[i], p.strides[i] = strides[i];
    launch({1, 1, 1}, {256, 1, 1}, layout::strided_gather_u64, (const u64*)x.data(), y.data(),
           (u64)105, p);
    for (u64 c = 0; c < 7; ++c)
        for (u64 a0 = 0; a0 < 3; ++a0)
            for (u64 b0 = 0; b0 < 5; ++b0)
                CHECK(y[(c * 3 + a0) * 5 + b0] == x[(a0 * 5 + b0) * 7 + c], "permute");
    // Sum over axis 1 of [3,5,7].
    std::vector<u64> s(21);
    launch({1, 1, 1}, {256, 1, 1}, layout::sum_axis_u64, (const u64*)x.data(), s.data(), (u64)3,
           (u64)5, (u64)7);
    for (u64 o = 0; o < 3; ++o)
        for (u64 j = 0; j < 7; ++j) {
            u64 acc = 0;
            for (u64 a0 = 0; a0 < 5; ++a0) acc += x[(o * 5 + a0) * 7 + j];
            CHECK(s[o * 7 + j] == acc, "sum_axis");
        }
    // Concat [2,3] and [2,4] along axis 1 into [2,7].
    std::vector<u64> cat(14, 0);
    launch({1, 1, 1}, {256, 1, 1}, layout::copy_runs_u64, (const u64*)x.data(), cat.data(), (u64)2,
           (u64)3, (u64)7, (u64)0);
    launch({1, 1, 1}, {256, 1, 1}, layout::copy_runs_u64, (const u64*)x.data() + 6, cat.data(),
           (u64)2, (u64)4, (u64)7, (u64)3);
    for (u64 o = 0; o < 2; ++o)
        for (u64 j = 0; j < 7; ++j)
            CHECK(cat[o * 7 + j] == (j < 3 ? x[o * 3 + j] : x[6 + o * 4 + j - 3]), "concat");
    std::printf("ok: strided_gather (permute), sum_axis, copy_runs (concat)\n");
    return 0;
}
