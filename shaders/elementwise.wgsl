// Elementwise ops: one thread per element, the op chosen by a uniform code (one pipeline
// for every binary, scalar, unary, shift, bit and fill op keeps the number of pipelines,
// and so of driver compilations, small).

struct Params {
    win: Windows,
    // Global index of the chunk's first element, and the chunk's element count.
    first_index: u32,
    count: u32,
    op: u32,
    // 1: the second operand is the scalar below, 0: it is the second input.
    use_scalar: u32,
    scalar_lo: u32,
    scalar_hi: u32,
    // Shift amount or bit index.
    bits: u32,
    reserved: u32,
}

// OP_ADD to OP_SAR and `apply_op` are in common.wgsl.
const OP_BIT: u32 = 11u;
const OP_FILL: u32 = 12u;

@compute @workgroup_size(256)
fn main(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let i = params.first_index + t;
    let x = load_a(i);
    var y = r_from_parts(params.scalar_lo, params.scalar_hi);
    if params.use_scalar == 0u {
        y = load_b(i);
    }
    var r = y;
    switch params.op {
        case OP_BIT: { r = r_from_parts(r_bit(x, params.bits), 0u); }
        case OP_FILL: { r = y; }
        default: { r = apply_op(params.op, x, y, params.bits); }
    }
    store_out(i, r);
}
