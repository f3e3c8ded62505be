// Elementwise ring ops on u64 (arithmetic mod 2^64 is C's unsigned wrap-around), fills,
// shifts, bit extraction and bit packing. Twins: cryptgpu-cpu `lib.rs` (par::map and
// friends) and the scalar definitions `BinaryOp::apply`, `UnaryOp::apply`, `ShiftOp::apply`.
//
// Every kernel walks its range with a grid-stride loop, so any grid size is correct.

typedef unsigned long long u64;
typedef long long i64;
typedef unsigned int u32;

#define GRID_STRIDE_LOOP(i, n)                                                            \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (u64)gridDim.x * blockDim.x)

// Op codes: the order of `BinaryOp::ALL`, `UnaryOp::ALL` and `ShiftOp::ALL` (kernels.rs).
__device__ __forceinline__ u64 apply_binary(u32 op, u64 a, u64 b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a & b;
    case 4: return a | b;
    default: return a ^ b;
    }
}

extern "C" __global__ void fill_u64(u64* out, u64 n, u64 value) {
    GRID_STRIDE_LOOP(i, n) { out[i] = value; }
}

extern "C" __global__ void binary_u64(const u64* a, const u64* b, u64* out, u64 n, u32 op) {
    GRID_STRIDE_LOOP(i, n) { out[i] = apply_binary(op, a[i], b[i]); }
}

extern "C" __global__ void binary_scalar_u64(const u64* a, u64* out, u64 n, u64 scalar, u32 op) {
    GRID_STRIDE_LOOP(i, n) { out[i] = apply_binary(op, a[i], scalar); }
}

extern "C" __global__ void unary_u64(const u64* a, u64* out, u64 n, u32 op) {
    GRID_STRIDE_LOOP(i, n) { out[i] = op == 0 ? (u64)0 - a[i] : ~a[i]; }
}

// `bits` is below 64 (checked on the host), so every shift here is defined behaviour.
extern "C" __global__ void shift_u64(const u64* a, u64* out, u64 n, u32 bits, u32 op) {
    GRID_STRIDE_LOOP(i, n) {
        u64 x = a[i];
        out[i] = op == 0 ? x << bits : op == 1 ? x >> bits : (u64)((i64)x >> bits);
    }
}

extern "C" __global__ void extract_bit_u64(const u64* a, u64* out, u64 n, u32 bit) {
    GRID_STRIDE_LOOP(i, n) { out[i] = (a[i] >> bit) & 1ull; }
}

// One warp per output word: lane l reads elements 64w + l and 64w + 32 + l (coalesced),
// two ballots collect their low bits. Every lane of a warp runs the same number of loop
// iterations (the loop bound depends on the warp index only), so the full-mask ballots
// are legal. Launched with blockDim.x a multiple of 32.
extern "C" __global__ void pack_bits_u64(const u64* a, u64* out, u64 n, u64 words) {
    const u32 lane = threadIdx.x & 31u;
    const u64 warps_per_grid = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 w = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < words;
         w += warps_per_grid) {
        const u64 lo = 64 * w + lane, hi = lo + 32;
        const u32 lo_bits = __ballot_sync(0xffffffffu, lo < n && (a[lo] & 1ull));
        const u32 hi_bits = __ballot_sync(0xffffffffu, hi < n && (a[hi] & 1ull));
        if (lane == 0) out[w] = (u64)lo_bits | ((u64)hi_bits << 32);
    }
}

// Bit slicing: word w of plane j (out is [64, words], plane-major) holds bit j of elements
// 64w .. 64w + 63. One warp per word as in pack_bits_u64: each lane loads two elements,
// then two ballots per plane collect their bit j, and one lane writes the plane's word.
// Every lane runs the same iterations, so the full-mask ballots are legal. Launched with
// blockDim.x a multiple of 32.
extern "C" __global__ void bit_planes_u64(const u64* a, u64* out, u64 n, u64 words) {
    const u32 lane = threadIdx.x & 31u;
    const u64 warps_per_grid = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 w = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < words;
         w += warps_per_grid) {
        const u64 lo = 64 * w + lane, hi = lo + 32;
        const u64 x_lo = lo < n ? a[lo] : 0ull;
        const u64 x_hi = hi < n ? a[hi] : 0ull;
        for (u32 j = 0; j < 64; ++j) {
            const u32 lo_bits = __ballot_sync(0xffffffffu, ((x_lo >> j) & 1ull) != 0);
            const u32 hi_bits = __ballot_sync(0xffffffffu, ((x_hi >> j) & 1ull) != 0);
            if (lane == (j & 31u)) out[(u64)j * words + w] = (u64)lo_bits | ((u64)hi_bits << 32);
        }
    }
}

extern "C" __global__ void unpack_bits_u64(const u64* words, u64* out, u64 n) {
    GRID_STRIDE_LOOP(i, n) { out[i] = (words[i >> 6] >> (i & 63)) & 1ull; }
}
