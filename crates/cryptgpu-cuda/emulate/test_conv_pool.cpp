// conv.cu and pool.cu on the CPU, against loops written from the definitions.
#include "cuda_shim.h"
#include "common.h"
#include "../../../kernels/conv.cu"
#undef GRID_STRIDE_LOOP
namespace pool {
#include "../../../kernels/pool.cu"
}

int test_conv_pool() {
    // Input [2, 4, 7, 6], 2 groups, kernel 3x2, stride (2, 1), padding (1, 1).
    ConvDims d{2, 4, 7, 6, 2, 2, 3, 2, 0, 0, 2, 1, 1, 1};
    d.oh = (d.h + 2 * d.py - d.kh) / d.sy + 1;
    d.ow = (d.w + 2 * d.px - d.kw) / d.sx + 1;
    u64 p = d.oh * d.ow, q = d.n * p, r = d.cpg * d.kh * d.kw;
    auto in = random_values(d.n * d.c * d.h * d.w);
    std::vector<u64> cols(d.groups * r * q, 0xdead);
    launch({3, 1, 1}, {256, 1, 1}, im2col_u64, (const u64*)in.data(), cols.data(), d);
    auto input_at = [&](u64 img, u64 ch, i64 iy, i64 ix) -> u64 {
        if (iy < 0 || ix < 0 || iy >= (i64)d.h || ix >= (i64)d.w) return 0;
        return in[((img * d.c + ch) * d.h + iy) * d.w + ix];
    };
    // Reference col2im: scatter-add every cols entry back to the position it came from.
    auto g_cols = random_values(cols.size());
    std::vector<u64> want_grad(in.size(), 0);
    for (u64 g = 0; g < d.groups; ++g)
        for (u64 ci = 0; ci < d.cpg; ++ci)
            for (u64 ky = 0; ky < d.kh; ++ky)
                for (u64 kx = 0; kx < d.kw; ++kx)
                    for (u64 img = 0; img < d.n; ++img)
                        for (u64 oy = 0; oy < d.oh; ++oy)
                            for (u64 ox = 0; ox < d.ow; ++ox) {
                                u64 row = (ci * d.kh + ky) * d.kw + kx;
                                u64 col = img * p + oy * d.ow + ox;
                                i64 iy = (i64)(oy * d.sy + ky) - (i64)d.py;
                                i64 ix = (i64)(ox * d.sx + kx) - (i64)d.px;
                                u64 idx = (g * r + row) * q + col;
                                CHECK(cols[idx] == input_at(img, g * d.cpg + ci, iy, ix), "im2col");
                                if (iy >= 0 && ix >= 0 && iy < (i64)d.h && ix < (i64)d.w)
                                    want_grad[((img * d.c + g * d.cpg + ci) * d.h + iy) * d.w + ix] += g_cols[idx];
                            }
    std::vector<u64> grad(in.size(), 0xdead);
    launch({3, 1, 1}, {256, 1, 1}, col2im_u64, (const u64*)g_cols.data(), grad.data(), d);
    for (size_t i = 0; i < grad.size(); ++i) CHECK(grad[i] == want_grad[i], "col2im %zu", i);
    std::printf("ok: im2col, col2im (groups, stride, padding)\n");

    // Pooling: [2, 3, 7, 8], window 3x2, stride (2, 3), padding (1, 1).
    pool::PoolDims pd{6, 7, 8, 0, 0, 3, 2, 2, 3, 1, 1};
    pd.oh = (pd.h + 2 * pd.py - pd.kh) / pd.sy + 1;
    pd.ow = (pd.w + 2 * pd.px - pd.kw) / pd.sx + 1;
    auto x = random_values(pd.planes * pd.h * pd.w);
    u64 outs = pd.planes * pd.oh * pd.ow, win = pd.kh * pd.kw;
    std::vector<u64> sums(outs), windows(win * outs), folded(x.size());
    launch({2, 1, 1}, {256, 1, 1}, pool::pool_window_sum_u64, (const u64*)x.data(), sums.data(), pd);
    launch({2, 1, 1}, {256, 1, 1}, pool::pool_unfold_u64, (const u64*)x.data(), windows.data(), pd,
           (u64)0x5555);
    auto gw = random_values(windows.size());
    launch({2, 1, 1}, {256, 1, 1}, pool::pool_fold_u64, (const u64*)gw.data(), folded.data(), pd);
    std::vector<u64> want_fold(x.size(), 0);
    for (u64 pl = 0; pl < pd.planes; ++pl)
        for (u64 oy = 0; oy < pd.oh; ++oy)
            for (u64 ox = 0; ox < pd.ow; ++ox) {
                u64 acc = 0;
                for (u64 ky = 0; ky < pd.kh; ++ky)
                    for (u64 kx = 0; kx < pd.kw; ++kx) {
                        i64 iy = (i64)(oy * pd.sy + ky) - (i64)pd.py;
                        i64 ix = (i64)(ox * pd.sx + kx) - (i64)pd.px;
                        bool inside = iy >= 0 && ix >= 0 && iy < (i64)pd.h && ix < (i64)pd.w;
                        u64 v = inside ? x[(pl * pd.h + iy) * pd.w + ix] : 0;
                        acc += v;
                        u64 widx = (ky * pd.kw + kx) * outs + (pl * pd.oh + oy) * pd.ow + ox;
                        CHECK(windows[widx] == (inside ? v : 0x5555), "unfold");
                        if (inside) want_fold[(pl * pd.h + iy) * pd.w + ix] += gw[widx];
                    }
                CHECK(sums[(pl * pd.oh + oy) * pd.ow + ox] == acc, "window sum");
            }
    for (size_t i = 0; i < x.size(); ++i) CHECK(folded[i] == want_fold[i], "fold %zu", i);
    std::printf("ok: pool window sum, unfold, fold\n");
    return 0;
}
