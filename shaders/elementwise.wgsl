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

@group(0) @binding(3) var<uniform> params: Params;

const OP_ADD: u32 = 0u;
const OP_SUB: u32 = 1u;
const OP_MUL: u32 = 2u;
const OP_AND: u32 = 3u;
const OP_OR: u32 = 4u;
const OP_XOR: u32 = 5u;
const OP_NEG: u32 = 6u;
const OP_NOT: u32 = 7u;
const OP_SHL: u32 = 8u;
const OP_SHR: u32 = 9u;
const OP_SAR: u32 = 10u;
const OP_BIT: u32 = 11u;
const OP_FILL: u32 = 12u;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = thread_index(group, groups, local);
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
        case OP_ADD: { r = r_add(x, y); }
        case OP_SUB: { r = r_sub(x, y); }
        case OP_MUL: { r = r_mul(x, y); }
        case OP_AND: { r = r_and(x, y); }
        case OP_OR: { r = r_or(x, y); }
        case OP_XOR: { r = r_xor(x, y); }
        case OP_NEG: { r = r_neg(x); }
        case OP_NOT: { r = r_not(x); }
        case OP_SHL: { r = r_shl(x, params.bits); }
        case OP_SHR: { r = r_shr(x, params.bits); }
        case OP_SAR: { r = r_sar(x, params.bits); }
        case OP_BIT: { r = r_from_parts(r_bit(x, params.bits), 0u); }
        default: { r = y; }
    }
    store_out(i, r);
}
