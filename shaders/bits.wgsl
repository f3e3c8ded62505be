// Bit packing: `pack` puts the lowest bit of 64 consecutive elements into one word (bit
// j of word w is element 64w + j), `unpack` inverts it. Packing is linear over input
// windows because the windows hold disjoint bits.

struct Params {
    win: Windows,
    first_index: u32,
    count: u32,
    // Elements of the unpacked tensor.
    bit_count: u32,
    reserved: u32,
}

@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(256)
fn pack(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = thread_index(group, groups, local);
    if t >= params.count {
        return;
    }
    let word = params.first_index + t;
    let first_bit = word * 64u;
    var lo = 0u;
    var hi = 0u;
    for (var j = 0u; j < 32u; j++) {
        let i = first_bit + j;
        if i < params.bit_count {
            lo |= (r_lo(load_a(i)) & 1u) << j;
        }
        let k = i + 32u;
        if k < params.bit_count {
            hi |= (r_lo(load_a(k)) & 1u) << j;
        }
    }
    store_out(word, r_from_parts(lo, hi));
}

@compute @workgroup_size(256)
fn unpack(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = thread_index(group, groups, local);
    if t >= params.count {
        return;
    }
    let i = params.first_index + t;
    let word = load_a(i / 64u);
    store_out(i, r_from_parts(r_bit(word, i % 64u), 0u));
}
