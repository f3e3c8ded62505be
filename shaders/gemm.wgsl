// Tiled GEMM skeleton with workgroup memory, shared by matmul and the three implicit-GEMM
// convolutions. The including kernel defines
//   fn gemm_load_a(z: u32, row: u32, k: u32) -> Ring   // left operand of product z
//   fn gemm_load_b(z: u32, k: u32, col: u32) -> Ring   // right operand of product z
// and a `params.gemm: Gemm`; product z is written to rows [z * rows, (z + 1) * rows) of
// the output (`gemm_out_index`). A 16x16 workgroup computes a 64x64 output tile, each thread
// a 4x4 block of it (rows ly + 16i, columns lx + 16j), stepping through the inner
// dimension 16 at a time. The two tiles take 2 x 1024 ring elements = 16 KiB, WebGPU's
// default workgroup storage limit.

struct Gemm {
    // Rows of one product (the output's row count).
    rows: u32,
    // Columns of the output, and the inner dimension.
    cols: u32,
    depth: u32,
    // The block of this dispatch: products from z0, rows [row0, row_end), columns
    // [col0, col_end).
    z0: u32,
    row0: u32,
    row_end: u32,
    col0: u32,
    col_end: u32,
    // The part of the inner dimension whose terms this pass can see (the rows of the
    // right operand inside its bound window); the other passes add the rest.
    k_begin: u32,
    k_end: u32,
    reserved0: u32,
    reserved1: u32,
}

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;

// Where output element (row, col) of product z goes: the products stacked row-major.
fn gemm_out_index(z: u32, row: u32, col: u32) -> u32 {
    return (z * params.gemm.rows + row) * params.gemm.cols + col;
}

var<workgroup> tile_a: array<Ring, 1024>;
var<workgroup> tile_b: array<Ring, 1024>;

@compute @workgroup_size(16, 16)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let z = params.gemm.z0 + group.z;
    let row_tile = params.gemm.row0 + group.y * TILE;
    let col_tile = params.gemm.col0 + group.x * TILE;
    var acc: array<Ring, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = r_zero();
    }
    for (var k0 = params.gemm.k_begin; k0 < params.gemm.k_end; k0 += TILE_K) {
        for (var q = 0u; q < 4u; q++) {
            let e = local + q * 256u;
            // A tile: consecutive threads walk the inner dimension of one row.
            let ar = e / TILE_K;
            let ak = e % TILE_K;
            let row = row_tile + ar;
            var va = r_zero();
            if row < params.gemm.row_end && k0 + ak < params.gemm.k_end {
                va = gemm_load_a(z, row, k0 + ak);
            }
            tile_a[ak * TILE + ar] = va;
            // B tile: consecutive threads walk the columns of one inner row.
            let bk = e / TILE;
            let bc = e % TILE;
            let col = col_tile + bc;
            var vb = r_zero();
            if col < params.gemm.col_end && k0 + bk < params.gemm.k_end {
                vb = gemm_load_b(z, k0 + bk, col);
            }
            tile_b[bk * TILE + bc] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var a: array<Ring, 4>;
            var b: array<Ring, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = tile_a[kk * TILE + local_id.y + 16u * i];
                b[i] = tile_b[kk * TILE + local_id.x + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = r_add(acc[i * 4u + j], r_mul(a[i], b[j]));
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let row = row_tile + local_id.y + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let col = col_tile + local_id.x + 16u * j;
            if row < params.gemm.row_end && col < params.gemm.col_end {
                store_out(gemm_out_index(z, row, col), acc[i * 4u + j]);
            }
        }
    }
}
