// Bindings, windowed element access and the bitwise ring ops shared by every kernel
// (after a ring prelude).
//
// Every dispatch binds a window of each tensor's buffer: elements [base, base + len) of
// the tensor, so that no binding exceeds the adapter's max_storage_buffer_binding_size.
// Kernels address tensors by global element index; a read outside the bound window
// yields zero, because another pass of the same op binds the window that holds it.
// Every kernel's contribution is linear in each input window, so the passes of one
// output chunk add up: the first pass writes the output, later passes add to it.
//
// Each kernel declares `struct Params { win: Windows, .. }`, bound here at binding 3.

struct Windows {
    out_base: u32,
    out_len: u32,
    a_base: u32,
    a_len: u32,
    b_base: u32,
    b_len: u32,
    // 1 on the first pass of an output chunk (write), 0 on later passes (accumulate).
    first: u32,
    reserved: u32,
}

@group(0) @binding(0) var<storage, read> src_a: array<Ring>;
@group(0) @binding(1) var<storage, read> src_b: array<Ring>;
@group(0) @binding(2) var<storage, read_write> dst: array<Ring>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP_THREADS: u32 = 256u;

// The bitwise ring ops, the same WGSL on both ring paths (a `u64`, or the two words of a
// `vec2<u32>`: the bits of the u64 either way).
fn r_and(a: Ring, b: Ring) -> Ring {
    return a & b;
}

fn r_or(a: Ring, b: Ring) -> Ring {
    return a | b;
}

fn r_xor(a: Ring, b: Ring) -> Ring {
    return a ^ b;
}

fn r_not(a: Ring) -> Ring {
    return ~a;
}

// Element `i` of the first input, or zero when it lies outside the bound window.
fn load_a(i: u32) -> Ring {
    let j = i - params.win.a_base;
    if i >= params.win.a_base && j < params.win.a_len {
        return src_a[j];
    }
    return r_zero();
}

// Element `i` of the second input, or zero when it lies outside the bound window.
fn load_b(i: u32) -> Ring {
    let j = i - params.win.b_base;
    if i >= params.win.b_base && j < params.win.b_len {
        return src_b[j];
    }
    return r_zero();
}

// Writes (first pass) or adds (later passes) `value` to output element `i`.
fn store_out(i: u32, value: Ring) {
    let j = i - params.win.out_base;
    if i < params.win.out_base || j >= params.win.out_len {
        return;
    }
    if params.win.first != 0u {
        dst[j] = value;
    } else {
        dst[j] = r_add(dst[j], value);
    }
}

// The builtins a 1-d kernel's entry point takes.
struct Invocation {
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
}

// The flat thread index of a 1-d kernel dispatched on a 2-d grid of 256-thread groups
// (the grid is 2-d because one dimension holds at most 65535 groups).
fn thread_index(inv: Invocation) -> u32 {
    return (inv.group.y * inv.groups.x + inv.group.x) * WORKGROUP_THREADS + inv.local;
}

// The elementwise op codes (the kernels' `binary`, `unary` and `shift` codes in
// crates/cryptgpu-wgpu/src/kernels.rs), shared by elementwise.wgsl and fused.wgsl.
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

// `op` on x and y (binary ops), on x (unary ops), or x shifted by `bits` (shifts; any
// other code is the arithmetic right shift).
fn apply_op(op: u32, x: Ring, y: Ring, bits: u32) -> Ring {
    switch op {
        case OP_ADD: { return r_add(x, y); }
        case OP_SUB: { return r_sub(x, y); }
        case OP_MUL: { return r_mul(x, y); }
        case OP_AND: { return r_and(x, y); }
        case OP_OR: { return r_or(x, y); }
        case OP_XOR: { return r_xor(x, y); }
        case OP_NEG: { return r_neg(x); }
        case OP_NOT: { return r_not(x); }
        case OP_SHL: { return r_shl(x, bits); }
        case OP_SHR: { return r_shr(x, bits); }
        default: { return r_sar(x, bits); }
    }
}
