// Pooling windows over NCHW planes: window sums, unfolding into [kh*kw, n, c, oh, ow] and
// folding back (the adjoint, written as a gather so no two threads write one element).
// Twin: cryptgpu-cpu `pool.rs`.

typedef unsigned long long u64;
typedef long long i64;

#define GRID_STRIDE_LOOP(i, n)                                                            \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (u64)gridDim.x * blockDim.x)

// Mirrors `PoolDims` in src/kernels.rs (#[repr(C)], 11 * 8 = 88 bytes). planes = n * c.
struct PoolDims {
    u64 planes, h, w, oh, ow, kh, kw, sy, sx, py, px;
};

extern "C" __global__ void pool_window_sum_u64(const u64* in, u64* out, PoolDims d) {
    const u64 total = d.planes * d.oh * d.ow;
    GRID_STRIDE_LOOP(i, total) {
        const u64 ox = i % d.ow, oy = (i / d.ow) % d.oh, plane = i / (d.ow * d.oh);
        const u64* x = in + plane * d.h * d.w;
        u64 acc = 0;
        for (u64 ky = 0; ky < d.kh; ++ky) {
            const i64 iy = (i64)(oy * d.sy + ky) - (i64)d.py;
            if (iy < 0 || iy >= (i64)d.h) continue;
            for (u64 kx = 0; kx < d.kw; ++kx) {
                const i64 ix = (i64)(ox * d.sx + kx) - (i64)d.px;
                if (ix >= 0 && ix < (i64)d.w) acc += x[(u64)iy * d.w + (u64)ix];
            }
        }
        out[i] = acc;
    }
}

// out[e][plane][oy][ox] = window element e of window (oy, ox) of the plane, or pad_value.
extern "C" __global__ void pool_unfold_u64(const u64* in, u64* out, PoolDims d, u64 pad_value) {
    const u64 per_elem = d.planes * d.oh * d.ow;
    const u64 total = d.kh * d.kw * per_elem;
    GRID_STRIDE_LOOP(i, total) {
        const u64 e = i / per_elem, rest = i % per_elem;
        const u64 ox = rest % d.ow, oy = (rest / d.ow) % d.oh, plane = rest / (d.ow * d.oh);
        const u64 ky = e / d.kw, kx = e % d.kw;
        const i64 iy = (i64)(oy * d.sy + ky) - (i64)d.py;
        const i64 ix = (i64)(ox * d.sx + kx) - (i64)d.px;
        const bool inside = iy >= 0 && ix >= 0 && iy < (i64)d.h && ix < (i64)d.w;
        out[i] = inside ? in[plane * d.h * d.w + (u64)iy * d.w + (u64)ix] : pad_value;
    }
}

// out[plane][iy][ix] = sum of windows[e][plane][oy][ox] over every (e, oy, ox) that reads
// input position (iy, ix): oy * sy + ky = iy + py for the window row ky of element e.
extern "C" __global__ void pool_fold_u64(const u64* windows, u64* out, PoolDims d) {
    const u64 total = d.planes * d.h * d.w;
    const u64 per_elem = d.planes * d.oh * d.ow;
    GRID_STRIDE_LOOP(i, total) {
        const u64 ix = i % d.w, iy = (i / d.w) % d.h, plane = i / (d.w * d.h);
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
                acc += windows[(ky * d.kw + kx) * per_elem + (plane * d.oh + oy) * d.ow + ox];
            }
        }
        out[i] = acc;
    }
}
