// im2col and its adjoint col2im over the whole batch, so that a convolution and both of its
// gradients are one ring GEMM per channel group. Twin: cryptgpu-cpu `conv.rs` (which works
// per image; the matrices here are the same with the images side by side).
//
// cols is [groups][R][N * P] with R = cpg * kh * kw rows (row (ci * kh + ky) * kw + kx)
// and N * P columns (column img * P + oy * ow + ox, P = oh * ow); padding reads zero.

typedef unsigned long long u64;
typedef long long i64;

#define GRID_STRIDE_LOOP(i, n)                                                            \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (u64)gridDim.x * blockDim.x)

// Mirrors `ConvDims` in src/kernels.rs (#[repr(C)], 14 * 8 = 112 bytes).
struct ConvDims {
    u64 n, c, h, w, groups, cpg, kh, kw, oh, ow, sy, sx, py, px;
};

extern "C" __global__ void im2col_u64(const u64* in, u64* cols, ConvDims d) {
    const u64 p = d.oh * d.ow, q_len = d.n * p, r_len = d.cpg * d.kh * d.kw;
    const u64 total = d.groups * r_len * q_len;
    GRID_STRIDE_LOOP(i, total) {
        const u64 q = i % q_len, gr = i / q_len;
        const u64 r = gr % r_len, g = gr / r_len;
        const u64 kx = r % d.kw, ky = (r / d.kw) % d.kh, ci = r / (d.kw * d.kh);
        const u64 img = q / p, ox = q % d.ow, oy = (q % p) / d.ow;
        const i64 iy = (i64)(oy * d.sy + ky) - (i64)d.py;
        const i64 ix = (i64)(ox * d.sx + kx) - (i64)d.px;
        const bool inside = iy >= 0 && ix >= 0 && iy < (i64)d.h && ix < (i64)d.w;
        cols[i] = inside
            ? in[((img * d.c + g * d.cpg + ci) * d.h + (u64)iy) * d.w + (u64)ix]
            : 0ull;
    }
}

// grad_in[img][ch][iy][ix] = sum of the cols entries that im2col read from that position.
extern "C" __global__ void col2im_u64(const u64* cols, u64* grad_in, ConvDims d) {
    const u64 p = d.oh * d.ow, q_len = d.n * p, r_len = d.cpg * d.kh * d.kw;
    const u64 total = d.n * d.c * d.h * d.w;
    GRID_STRIDE_LOOP(i, total) {
        const u64 ix = i % d.w, iy = (i / d.w) % d.h;
        const u64 ch = (i / (d.w * d.h)) % d.c, img = i / (d.w * d.h * d.c);
        const u64 g = ch / d.cpg, ci = ch % d.cpg;
        const u64* group_cols = cols + g * r_len * q_len;
        u64 acc = 0;
        for (u64 ky = 0; ky < d.kh; ++ky) {
            const i64 ty = (i64)(iy + d.py) - (i64)ky;
            if (ty < 0 || (u64)ty % d.sy != 0) continue;
            const u64 oy = (u64)ty / d.sy;
            if (oy >= d.oh) continue;
            for (u64 kx = 0; kx < d.kw; ++kx) {
                const i64 tx = (i64)(ix + d.px) - (i64)kx;
                if (tx < 0 || (u64)tx % d.sx != 0) continue;
                const u64 ox = (u64)tx / d.sx;
                if (ox >= d.ow) continue;
                const u64 r = (ci * d.kh + ky) * d.kw + kx;
                acc += group_cols[r * q_len + img * p + oy * d.ow + ox];
            }
        }
        grad_in[i] = acc;
    }
}
