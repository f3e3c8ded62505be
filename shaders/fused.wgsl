// Fused elementwise programs (fused; CPU twin: `fused` in crates/cryptgpu-cpu/src/par.rs,
// the definition: `Fused::apply` in crates/cryptgpu-backend/src/fused.rs): one thread per
// element runs every step of a checked program and writes the last step's value.
//
// Inputs 0 and 1 are src_a and src_b of common.wgsl (bindings 0 and 1); inputs 2 to 5 are
// bound at 4 to 7, in a bind group layout of their own (device.rs). An elementwise op
// always gets one window, and every input's window is the output chunk's elements, so
// inputs 2 to 5 are read through the window of input 0 (the host binds them so).
//
// Step s is code[s] = (op, a | b << 16, lo, hi): op is an `elementwise.wgsl` op code
// (binary, unary or shift); a and b are operands, input i as i and step s as 6 + s, with
// b = FUSED_SCALAR where the second operand is the scalar (lo, hi); a shift's amount is
// lo (below 64: the host checked the program).

const FUSED_MAX_INPUTS: u32 = 6u;
const FUSED_MAX_STEPS: u32 = 12u;
const FUSED_SCALAR: u32 = 0xffffu;

// The op codes of elementwise.wgsl, as kernels.rs encodes them.
// OP_ADD to OP_SAR and `apply_op` are in common.wgsl.

struct Params {
    win: Windows,
    // Global index of the chunk's first element, and the chunk's element count.
    first_index: u32,
    count: u32,
    // Inputs bound (1 to 6) and steps (1 to 12).
    inputs: u32,
    steps: u32,
    code: array<vec4<u32>, FUSED_MAX_STEPS>,
}

@group(0) @binding(4) var<storage, read> src_c: array<Ring>;
@group(0) @binding(5) var<storage, read> src_d: array<Ring>;
@group(0) @binding(6) var<storage, read> src_e: array<Ring>;
@group(0) @binding(7) var<storage, read> src_f: array<Ring>;

// Element `i` of input `k`, or zero outside the bound window (inputs 2 to 5 share input
// 0's window).
fn load_input(k: u32, i: u32) -> Ring {
    switch k {
        case 0u: { return load_a(i); }
        case 1u: { return load_b(i); }
        default: {}
    }
    let j = i - params.win.a_base;
    if i < params.win.a_base || j >= params.win.a_len {
        return r_zero();
    }
    switch k {
        case 2u: { return src_c[j]; }
        case 3u: { return src_d[j]; }
        case 4u: { return src_e[j]; }
        default: { return src_f[j]; }
    }
}

@compute @workgroup_size(256)
fn main(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let i = params.first_index + t;
    // The inputs, then each step's value.
    var value: array<Ring, 18>;
    for (var k = 0u; k < params.inputs; k++) {
        value[k] = load_input(k, i);
    }
    var r = r_zero();
    for (var s = 0u; s < params.steps; s++) {
        let code = params.code[s];
        let x = value[code.y & 0xffffu];
        var y = r_from_parts(code.z, code.w);
        if (code.y >> 16u) != FUSED_SCALAR {
            y = value[code.y >> 16u];
        }
        r = apply_op(code.x, x, y, code.z);
        value[FUSED_MAX_INPUTS + s] = r;
    }
    store_out(i, r);
}
