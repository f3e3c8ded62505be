// Rows picked by index (select_rows; CPU twin: `select_rows` in crates/cryptgpu-cpu/src/lib.rs).
//
// The output is [rows, row_len] flattened; a chunk covers output elements
// first_index .. first_index + count, all in output rows first_row .. first_row + 128, and
// output row first_row + r is source row rows[r] (NONE: a row of zeros). Thread g writes
//   dst[g] = rows[r] == NONE ? 0 : src[rows[r] * row_len + g % row_len],  r = g / row_len - first_row.
// The row indices are packed four to a vec4 (a uniform array's elements are 16-byte aligned).

const SELECT_ROWS_NONE: u32 = 0xffffffffu;

struct Params {
    win: Windows,
    first_index: u32,
    count: u32,
    row_len: u32,
    first_row: u32,
    rows: array<vec4<u32>, 32>,
}

@compute @workgroup_size(256)
fn main(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let g = params.first_index + t;
    let r = g / params.row_len - params.first_row;
    let row = params.rows[r / 4u][r % 4u];
    var value = r_zero();
    if row != SELECT_ROWS_NONE {
        value = load_a(row * params.row_len + g % params.row_len);
    }
    store_out(g, value);
}
