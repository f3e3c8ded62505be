// Data movement: strided gathers (permute, slice, broadcast, and the layout changes around
// convolution), concatenation as copies of runs, rows picked by index, and sums over an
// axis. Twins: cryptgpu-cpu `layout.rs`, `CpuBackend::select_rows` and
// `CpuBackend::sum_axis`.

typedef unsigned long long u64;
typedef unsigned int u32;

#define GRID_STRIDE_LOOP(i, n)                                                            \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (u64)gridDim.x * blockDim.x)

// Mirrors `GatherParams` in src/kernels.rs (#[repr(C)], 8 + 8 + 2 * 12 * 8 = 208 bytes).
#define GATHER_MAX_RANK 12
struct GatherParams {
    u64 rank;
    u64 offset;
    u64 shape[GATHER_MAX_RANK];
    u64 strides[GATHER_MAX_RANK];
};

// out[i] = src[offset + sum_k index_k(i) * strides[k]] for the row-major multi-index of i
// in `shape`; a stride of 0 repeats (broadcast).
extern "C" __global__ void strided_gather_u64(const u64* src, u64* out, u64 n, GatherParams p) {
    GRID_STRIDE_LOOP(i, n) {
        u64 rest = i, pos = p.offset;
        for (int axis = (int)p.rank - 1; axis >= 0; --axis) {
            const u64 extent = p.shape[axis];
            pos += (rest % extent) * p.strides[axis];
            rest /= extent;
        }
        out[i] = src[pos];
    }
}

// Concatenation, one part at a time: the part is `outer` runs of `run` elements; run o
// lands at out[o * out_run + out_offset ..].
extern "C" __global__ void copy_runs_u64(const u64* src, u64* out, u64 outer, u64 run,
                                         u64 out_run, u64 out_offset) {
    const u64 total = outer * run;
    GRID_STRIDE_LOOP(i, total) {
        const u64 o = i / run, j = i % run;
        out[o * out_run + out_offset + j] = src[i];
    }
}

// Mirrors `SelectRowsParams` in src/kernels.rs (#[repr(C)], 3 * 8 + 128 * 8 = 1048 bytes):
// one launch's share of a select_rows, output rows first_row .. first_row + count.
#define SELECT_ROWS_MAX 128
#define SELECT_ROWS_NONE 0xffffffffffffffffull
struct SelectRowsParams {
    u64 row_len;    // elements per row (of the source and of the output)
    u64 first_row;  // the output row that rows[0] fills
    u64 count;      // rows filled by this launch, at most SELECT_ROWS_MAX
    u64 rows[SELECT_ROWS_MAX];  // the source row of each, or SELECT_ROWS_NONE for zeros
};

// Rows picked by index (CPU twin: `select_rows` in crates/cryptgpu-cpu/src/lib.rs): for
// r < count and j < row_len,
//   out[(first_row + r) * row_len + j] = rows[r] == NONE ? 0 : src[rows[r] * row_len + j].
extern "C" __global__ void select_rows_u64(const u64* src, u64* out, SelectRowsParams p) {
    const u64 total = p.count * p.row_len;
    u64* dst = out + p.first_row * p.row_len;
    GRID_STRIDE_LOOP(i, total) {
        const u64 row = p.rows[i / p.row_len];
        dst[i] = row == SELECT_ROWS_NONE ? 0 : src[row * p.row_len + i % p.row_len];
    }
}

// out[o][j] = sum_a src[o][a][j] (wrapping), one thread per output element.
extern "C" __global__ void sum_axis_u64(const u64* src, u64* out, u64 outer, u64 extent,
                                        u64 inner) {
    const u64 total = outer * inner;
    GRID_STRIDE_LOOP(i, total) {
        const u64 o = i / inner, j = i % inner;
        const u64* base = src + o * extent * inner + j;
        u64 acc = 0;
        for (u64 a = 0; a < extent; ++a) acc += base[a * inner];
        out[i] = acc;
    }
}
