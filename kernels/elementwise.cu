// Elementwise ring ops on u64 (arithmetic mod 2^64 is C's unsigned wrap-around), fills,
// shifts, bit extraction and bit packing, and fused elementwise programs. Twins:
// cryptgpu-cpu `lib.rs` (par::map and friends), `fused` in crates/cryptgpu-cpu/src/par.rs,
// and the scalar definitions `BinaryOp::apply`, `UnaryOp::apply`, `ShiftOp::apply`,
// `Fused::apply`.
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

__device__ __forceinline__ u64 apply_unary(u32 op, u64 a) { return op == 0 ? (u64)0 - a : ~a; }

// `bits` is below 64 (checked on the host), so every shift here is defined behaviour.
__device__ __forceinline__ u64 apply_shift(u32 op, u64 x, u32 bits) {
    return op == 0 ? x << bits : op == 1 ? x >> bits : (u64)((i64)x >> bits);
}

extern "C" __global__ void unary_u64(const u64* a, u64* out, u64 n, u32 op) {
    GRID_STRIDE_LOOP(i, n) { out[i] = apply_unary(op, a[i]); }
}

extern "C" __global__ void shift_u64(const u64* a, u64* out, u64 n, u32 bits, u32 op) {
    GRID_STRIDE_LOOP(i, n) { out[i] = apply_shift(op, a[i], bits); }
}

// Mirrors `FusedParams` and `FusedCode` in src/kernels.rs (#[repr(C)], no padding:
// 8 + 8 + 12 * 24 = 304 bytes): a checked `Fused` program (crates/cryptgpu-backend/src/fused.rs).
#define FUSED_MAX_INPUTS 6
#define FUSED_MAX_STEPS 12
// Step kinds: the variants of `FusedStep`.
#define FUSED_BINARY 0u  // apply_binary(op, value[a], value[b])
#define FUSED_SCALAR 1u  // apply_binary(op, value[a], arg)
#define FUSED_UNARY 2u   // apply_unary(op, value[a])
#define FUSED_SHIFT 3u   // apply_shift(op, value[a], arg), arg below 64
struct FusedCode {
    u32 kind;  // FUSED_BINARY .. FUSED_SHIFT
    u32 op;    // the op's code for apply_binary, apply_unary or apply_shift
    u32 a;     // operands: input i is i, step s is FUSED_MAX_INPUTS + s
    u32 b;     // (b is read by FUSED_BINARY only)
    u64 arg;   // the scalar, or the shift amount
};
struct FusedParams {
    u64 inputs;  // inputs the program reads, 1 to FUSED_MAX_INPUTS
    u64 steps;   // 1 to FUSED_MAX_STEPS; the last step's value is the result
    FusedCode code[FUSED_MAX_STEPS];
};

// A fused elementwise program (CPU twin: `fused` in crates/cryptgpu-cpu/src/par.rs; the
// definition: `Fused::apply`): out[i] = the program's last step on element i of the
// inputs. Unused input pointers hold the first input again and are never read. The
// host checked the program, so every operand names an input below `inputs` or an
// earlier step, and every shift is below 64 (masked again here, so that no operand code
// can make a shift undefined).
extern "C" __global__ void fused_u64(const u64* in0, const u64* in1, const u64* in2,
                                     const u64* in3, const u64* in4, const u64* in5,
                                     u64* out, u64 n, FusedParams p) {
    const u64* in[FUSED_MAX_INPUTS] = {in0, in1, in2, in3, in4, in5};
    GRID_STRIDE_LOOP(i, n) {
        u64 value[FUSED_MAX_INPUTS + FUSED_MAX_STEPS];
        for (u32 k = 0; k < FUSED_MAX_INPUTS; ++k)
            if (k < p.inputs) value[k] = in[k][i];
        u64 result = 0;
        for (u32 s = 0; s < FUSED_MAX_STEPS && s < p.steps; ++s) {
            const FusedCode c = p.code[s];
            const u64 x = value[c.a];
            switch (c.kind) {
            case FUSED_BINARY: result = apply_binary(c.op, x, value[c.b]); break;
            case FUSED_SCALAR: result = apply_binary(c.op, x, c.arg); break;
            case FUSED_UNARY: result = apply_unary(c.op, x); break;
            default: result = apply_shift(c.op, x, (u32)(c.arg & 63)); break;
            }
            value[FUSED_MAX_INPUTS + s] = result;
        }
        out[i] = result;
    }
}

extern "C" __global__ void extract_bit_u64(const u64* a, u64* out, u64 n, u32 bit) {
    GRID_STRIDE_LOOP(i, n) { out[i] = (a[i] >> bit) & 1ull; }
}

// A grid-stride loop over warps: warp w of the grid (32 consecutive threads) takes items
// w, w + (warps in the grid), ...; with blockDim.x a multiple of 32, the lanes of a warp
// run the same iterations.
#define WARP_STRIDE_LOOP(w, n)                                                            \
    for (u64 w = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < (n);               \
         w += ((u64)gridDim.x * blockDim.x) >> 5)

// One warp per output word: lane l reads elements 64w + l and 64w + 32 + l (coalesced),
// two ballots collect their low bits. Every lane of a warp runs the same number of loop
// iterations (the loop bound depends on the warp index only), so the full-mask ballots
// are legal. Launched with blockDim.x a multiple of 32.
extern "C" __global__ void pack_bits_u64(const u64* a, u64* out, u64 n, u64 words) {
    const u32 lane = threadIdx.x & 31u;
    WARP_STRIDE_LOOP(w, words) {
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
    WARP_STRIDE_LOOP(w, words) {
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
