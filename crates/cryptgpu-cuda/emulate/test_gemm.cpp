// gemm.cu on the CPU: the tiled kernel, and the int8 and fp64 limb pipelines exactly as
// src/gemm.rs drives them (split, cuBLAS TN GEMMs emulated with loops, recombine), with
// small chunks so that several chunks and accumulation are exercised.
#include "cuda_shim.h"
#include "common.h"
#include "../../../kernels/gemm.cu"
#include <cmath>

static std::vector<u64> naive(u64 m, u64 k, u64 n, const u64* a, u64 a_rs, u64 a_cs,
                              const u64* b, u64 b_rs, u64 b_cs) {
    std::vector<u64> c(m * n, 0);
    for (u64 r = 0; r < m; ++r)
        for (u64 col = 0; col < n; ++col) {
            u64 acc = 0;
            for (u64 l = 0; l < k; ++l) acc += a[r * a_rs + l * a_cs] * b[l * b_rs + col * b_cs];
            c[r * n + col] = acc;
        }
    return c;
}

static void test_tiled() {
    const u64 batch = 2, m = 70, k = 37, n = 67;
    // A stored transposed ([k][m], so rs = 1, cs = m); B dense; C dense.
    auto a = random_values(batch * m * k), b = random_values(batch * k * n);
    std::vector<u64> c(batch * m * n, 0);
    GemmDims d{m, n, k, 0, 1, m, m * k, 0, n, 1, k * n, 0, n, m * n, 0};
    launch({(unsigned)((n + 63) / 64), (unsigned)((m + 63) / 64), (unsigned)batch}, {256, 1, 1},
           gemm_tiled_u64, (const u64*)a.data(), (const u64*)b.data(), c.data(), d);
    for (u64 t = 0; t < batch; ++t) {
        auto want = naive(m, k, n, a.data() + t * m * k, 1, m, b.data() + t * k * n, n, 1);
        for (u64 i = 0; i < m * n; ++i)
            CHECK(c[t * m * n + i] == want[i], "tiled batch %llu element %llu", t, i);
    }
    std::printf("ok: gemm_tiled_u64 (batch 2, 70x37x67, transposed A)\n");
}

template <typename Limb, typename Sum, int L>
static void pipeline(const char* name, void (*split)(const u64*, Limb*, SplitDims),
                     void (*recombine)(const Sum*, u64*, RecombineDims), u64 max_chunk, u64 m,
                     u64 k, u64 n) {
    const u64 PAD = 32;
    auto a = random_values(m * k), b = random_values(k * n);
    u64 chunks = (k + max_chunk - 1) / max_chunk;
    u64 chunk_len = (k + chunks - 1) / chunks;
    u64 kcp = (chunk_len + PAD - 1) / PAD * PAD;
    u64 m_pad = (m + PAD - 1) / PAD * PAD, n_pad = (n + PAD - 1) / PAD * PAD;
    u64 ld = L * kcp, plane = m_pad * n_pad;
    // Poison the buffers: every element must be written before it is read.
    std::vector<Limb> a_split(m_pad * ld, (Limb)77), b_split(n_pad * ld, (Limb)77);
    std::vector<Sum> sums(L * plane, (Sum)12345);
    std::vector<u64> out(m * n, 0xdeadbeefull);
    for (u64 index = 0; index < chunks; ++index) {
        u64 k0 = index * chunk_len, cols = std::min(chunk_len, k - k0);
        SplitDims da{m, cols, k0, 0, k, 1, m_pad, kcp, 0};
        launch({(unsigned)(kcp / 32), (unsigned)std::min<u64>(m_pad / 32, 2), 1}, {32, 8, 1}, split,
               (const u64*)a.data(), a_split.data(), da);
        SplitDims db{n, cols, k0, 0, 1, n, n_pad, kcp, 1};
        launch({(unsigned)(kcp / 32), (unsigned)std::min<u64>(n_pad / 32, 2), 1}, {32, 8, 1}, split,
               (const u64*)b.data(), b_split.data(), db);
        for (u64 r = 0; r < m_pad; ++r)
            for (u64 slot = 0; slot < (u64)L; ++slot)
                for (u64 kk = 0; kk < kcp; ++kk) {
                    if (r >= m || kk >= cols)
                        CHECK(a_split[(r * L + slot) * kcp + kk] == 0, "A padding not zero");
                    if (r >= n || kk >= cols)
                        CHECK(b_split[(r * L + slot) * kcp + kk] == 0, "B padding not zero");
                }
        for (int s = 0; s < L; ++s) {
            // cuBLAS TN, column-major: C[y * ldc + x] = sum_kk A[x * lda + kk] * B[y * ldb + kk]
            // with A = b_split from slot L-1-s, B = a_split, M = n_pad, N = m_pad.
            const Limb* A = b_split.data() + (L - 1 - s) * kcp;
            const Limb* B = a_split.data();
            u64 K = (s + 1) * kcp;
            for (u64 y = 0; y < m_pad; ++y)
                for (u64 x = 0; x < n_pad; ++x) {
                    long double acc = 0;
                    int64_t iacc = 0;
                    for (u64 kk = 0; kk < K; ++kk) {
                        iacc += (int64_t)A[x * ld + kk] * (int64_t)B[y * ld + kk];
                        acc += (long double)A[x * ld + kk] * (long double)B[y * ld + kk];
                    }
                    if constexpr (sizeof(Limb) == 1) {
                        CHECK(iacc >= INT32_MIN && iacc <= INT32_MAX, "int32 overflow");
                        sums[s * plane + y * n_pad + x] = (Sum)iacc;
                    } else {
                        CHECK(acc <= 9007199254740992.0L, "beyond 2^53");
                        sums[s * plane + y * n_pad + x] = (Sum)acc;
                    }
                }
        }
        RecombineDims dr{m, n, n_pad, plane, 0, n, index > 0 ? 1ull : 0ull};
        launch({blocks_for(m * n), 1, 1}, {256, 1, 1}, recombine, (const Sum*)sums.data(),
               out.data(), dr);
    }
    auto want = naive(m, k, n, a.data(), k, 1, b.data(), n, 1);
    for (u64 i = 0; i < m * n; ++i)
        CHECK(out[i] == want[i], "%s %llux%llux%llu element %llu: %llx vs %llx", name, m, k, n,
              i, out[i], want[i]);
    std::printf("ok: %s pipeline %llux%llux%llu in %llu chunks of %llu (padded %llu)\n", name, m,
                k, n, chunks, chunk_len, kcp);
}

int test_gemm() {
    test_tiled();
    pipeline<signed char, int, 8>("int8", split_i8, recombine_i32, 16352, 5, 40, 3);
    pipeline<signed char, int, 8>("int8", split_i8, recombine_i32, 64, 33, 150, 40);
    pipeline<double, double, 4>("fp64", split_f64, recombine_f64, 1 << 19, 7, 33, 9);
    pipeline<double, double, 4>("fp64", split_f64, recombine_f64, 32, 35, 100, 34);
    return 0;
}
