// Ring GEMM mod 2^64, three ways (src/gemm.rs drives them, src/limbs.rs holds the maths and
// the proofs that every step is exact; cryptgpu-cpu `gemm.rs` is the twin):
//  - gemm_tiled_u64: a plain shared-memory tiled u64 kernel (wrapping multiply-add);
//  - split_i8 / recombine_i32: signed 8-bit limbs for int8 tensor-core GEMMs (cuBLAS);
//  - split_f64 / recombine_f64: 16-bit blocks in float64 for DGEMMs (CryptGPU's method).
// Matrices are addressed by (row stride, column stride) so transposes cost nothing.

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;

// ---- tiled u64 GEMM -------------------------------------------------------------------

// Mirrors `GemmDims` in src/kernels.rs (#[repr(C)], 15 * 8 = 120 bytes). Matrix t of the
// batch (blockIdx.z) is A at a_off + t * a_bs, element (r, k) at r * a_rs + k * a_cs; the
// same for B; C is dense rows of stride c_rs. accumulate != 0 adds into C.
struct GemmDims {
    u64 m, n, k;
    u64 a_off, a_rs, a_cs, a_bs;
    u64 b_off, b_rs, b_cs, b_bs;
    u64 c_off, c_rs, c_bs;
    u64 accumulate;
};

#define TILE 64
#define TILE_K 16
#define PER_THREAD 4  // a 16 x 16 block of threads covers TILE x TILE outputs

// Launched with 256 threads a block and grid (ceil(n / 64), ceil(m / 64), batch).
extern "C" __global__ void __launch_bounds__(256) gemm_tiled_u64(const u64* a, const u64* b,
                                                                 u64* c, GemmDims d) {
    __shared__ u64 a_tile[TILE_K][TILE + 1];  // [k][row]
    __shared__ u64 b_tile[TILE_K][TILE + 1];  // [k][col]
    const u64 t = blockIdx.z;
    const u64* A = a + d.a_off + t * d.a_bs;
    const u64* B = b + d.b_off + t * d.b_bs;
    u64* C = c + d.c_off + t * d.c_bs;
    const u64 row0 = (u64)blockIdx.y * TILE, col0 = (u64)blockIdx.x * TILE;
    const u32 tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    u64 acc[PER_THREAD][PER_THREAD];
    for (int i = 0; i < PER_THREAD; ++i)
        for (int j = 0; j < PER_THREAD; ++j) acc[i][j] = 0;
    for (u64 k0 = 0; k0 < d.k; k0 += TILE_K) {
        for (u32 l = threadIdx.x; l < TILE * TILE_K; l += blockDim.x) {
            const u32 r = l / TILE_K, ka = l % TILE_K;  // consecutive threads: consecutive k
            const u64 gr = row0 + r, gka = k0 + ka;
            a_tile[ka][r] = (gr < d.m && gka < d.k) ? A[gr * d.a_rs + gka * d.a_cs] : 0ull;
            const u32 kb = l / TILE, col = l % TILE;  // consecutive threads: consecutive cols
            const u64 gkb = k0 + kb, gc = col0 + col;
            b_tile[kb][col] = (gkb < d.k && gc < d.n) ? B[gkb * d.b_rs + gc * d.b_cs] : 0ull;
        }
        __syncthreads();
        for (int kk = 0; kk < TILE_K; ++kk) {
            u64 ar[PER_THREAD], br[PER_THREAD];
            for (int i = 0; i < PER_THREAD; ++i) ar[i] = a_tile[kk][ty + 16 * i];
            for (int j = 0; j < PER_THREAD; ++j) br[j] = b_tile[kk][tx + 16 * j];
            for (int i = 0; i < PER_THREAD; ++i)
                for (int j = 0; j < PER_THREAD; ++j) acc[i][j] += ar[i] * br[j];
        }
        __syncthreads();
    }
    for (int i = 0; i < PER_THREAD; ++i) {
        const u64 gr = row0 + ty + 16 * i;
        if (gr >= d.m) continue;
        for (int j = 0; j < PER_THREAD; ++j) {
            const u64 gc = col0 + tx + 16 * j;
            if (gc >= d.n) continue;
            u64* out = C + gr * d.c_rs + gc;
            *out = d.accumulate ? *out + acc[i][j] : acc[i][j];
        }
    }
}

// ---- limb splitting -------------------------------------------------------------------

// Mirrors `SplitDims` in src/kernels.rs (#[repr(C)], 9 * 8 = 72 bytes). Source element
// (r, kk) of the chunk, r < rows and kk < cols, is src[off + r * rs + (k0 + kk) * cs].
// The destination is [rows_pad][LIMBS][kcp]: row r, limb slot s, chunk column kk; slot s
// holds limb s, or limb LIMBS - 1 - s when `reversed`. Everything past rows or cols is 0.
// rows_pad and kcp are multiples of 32 (SPLIT_TILE).
struct SplitDims {
    u64 rows, cols, k0, off, rs, cs, rows_pad, kcp, reversed;
};

#define SPLIT_TILE 32

// The balanced base-256 digits of x, as `limbs::split_i8` (src/limbs.rs): t = byte + carry
// lies in [0, 256]; digit t - 256 with carry 1 when t >= 128, else t with carry 0; digits
// lie in [-128, 127] and sum_l digit_l * 256^l = x - carry_out * 2^64.
__device__ __forceinline__ void digits_i8(u64 x, signed char out[8]) {
    int carry = 0;
    for (int l = 0; l < 8; ++l) {
        const int t = (int)((x >> (8 * l)) & 0xffull) + carry;
        carry = t >= 128 ? 1 : 0;
        out[l] = (signed char)(t - 256 * carry);
    }
}

// The 16-bit blocks of x as doubles (exact), as `limbs::split_f64`.
__device__ __forceinline__ void digits_f64(u64 x, double out[4]) {
    for (int l = 0; l < 4; ++l) out[l] = (double)((x >> (16 * l)) & 0xffffull);
}

// Loads a SPLIT_TILE x SPLIT_TILE tile of the source through shared memory (reading along
// whichever index is contiguous), then each thread writes the limbs of one element (writes
// are contiguous along kk). Block (32, 8); grid (kcp / 32, any): tile rows grid-stride.
template <typename Limb, int LIMBS>
__device__ void split_tile(const u64* src, Limb* dst, const SplitDims& d) {
    __shared__ u64 tile[SPLIT_TILE][SPLIT_TILE + 1];  // [r][kk]
    const u32 tx = threadIdx.x, ty = threadIdx.y;
    const bool kk_fast = d.cs == 1;
    const u64 kk0 = (u64)blockIdx.x * SPLIT_TILE;
    for (u64 r0 = (u64)blockIdx.y * SPLIT_TILE; r0 < d.rows_pad;
         r0 += (u64)gridDim.y * SPLIT_TILE) {
        for (u32 j = 0; j < SPLIT_TILE; j += 8) {
            const u32 r_l = kk_fast ? ty + j : tx, kk_l = kk_fast ? tx : ty + j;
            const u64 r = r0 + r_l, kk = kk0 + kk_l;
            tile[r_l][kk_l] = (r < d.rows && kk < d.cols)
                ? src[d.off + r * d.rs + (d.k0 + kk) * d.cs]
                : 0ull;
        }
        __syncthreads();
        for (u32 j = 0; j < SPLIT_TILE; j += 8) {
            const u32 r_l = ty + j;
            const u64 r = r0 + r_l, kk = kk0 + tx;
            if (r < d.rows_pad && kk < d.kcp) {
                Limb limbs[LIMBS];
                if constexpr (LIMBS == 8) digits_i8(tile[r_l][tx], (signed char*)limbs);
                else digits_f64(tile[r_l][tx], (double*)limbs);
                for (int l = 0; l < LIMBS; ++l) {
                    const u64 slot = d.reversed ? (u64)(LIMBS - 1 - l) : (u64)l;
                    dst[(r * LIMBS + slot) * d.kcp + kk] = limbs[l];
                }
            }
        }
        __syncthreads();
    }
}

extern "C" __global__ void split_i8(const u64* src, signed char* dst, SplitDims d) {
    split_tile<signed char, 8>(src, dst, d);
}

extern "C" __global__ void split_f64(const u64* src, double* dst, SplitDims d) {
    split_tile<double, 4>(src, dst, d);
}

// ---- recombination --------------------------------------------------------------------

// Mirrors `RecombineDims` in src/kernels.rs (#[repr(C)], 7 * 8 = 56 bytes). The products are
// LIMBS planes [m_pad][ld] (plane elements apart); plane s holds C_s = sum over i + j = s of
// A_i B_j. Output element (r, c) is out[out_off + r * out_rs + c] = sum_s C_s << (bits * s),
// added to what is there when accumulate != 0.
struct RecombineDims {
    u64 m, n, ld, plane, out_off, out_rs, accumulate;
};

#define GRID_STRIDE_LOOP(i, n)                                                            \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (u64)gridDim.x * blockDim.x)

// The recombination of L planes of products of type T, BITS bits apart (RecombineDims).
// Every C_s is an exact integer in T (limbs.rs bounds it), so its conversion to 64 bits
// is exact and wrapping gives C_s mod 2^64.
template <typename T, int L, int BITS>
__device__ void recombine(const T* prod, u64* out, const RecombineDims& d) {
    const u64 total = d.m * d.n;
    GRID_STRIDE_LOOP(i, total) {
        const u64 r = i / d.n, c = i % d.n;
        u64 acc = 0;
        for (int s = 0; s < L; ++s)
            acc += (u64)(i64)prod[s * d.plane + r * d.ld + c] << (BITS * s);
        u64* o = out + d.out_off + r * d.out_rs + c;
        *o = d.accumulate ? *o + acc : acc;
    }
}

// C_s is an int32 below 2^31 in magnitude; sign-extending it to 64 bits and wrapping
// gives C_s mod 2^64.
extern "C" __global__ void recombine_i32(const int* prod, u64* out, RecombineDims d) {
    recombine<int, 8, 8>(prod, out, d);
}

// C_s is a non-negative integer below 2^53 held exactly in a double.
extern "C" __global__ void recombine_f64(const double* prod, u64* out, RecombineDims d) {
    recombine<double, 4, 16>(prod, out, d);
}
