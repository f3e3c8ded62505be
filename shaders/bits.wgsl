// Bit packing: `pack` puts the lowest bit of 64 consecutive elements into one word (bit
// j of word w is element 64w + j), `unpack` inverts it, and `planes` slices 64 elements
// into their 64 bit planes (word 64w + j holds bit j of elements 64w .. 64w + 63; the
// backend transposes that to `[64, words]`). Each is linear over input windows because
// the windows hold disjoint bits.

struct Params {
    win: Windows,
    first_index: u32,
    count: u32,
    // Elements of the unpacked tensor.
    bit_count: u32,
    reserved: u32,
}

@compute @workgroup_size(256)
fn pack(inv: Invocation) {
    let t = thread_index(inv);
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
fn unpack(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let i = params.first_index + t;
    let word = load_a(i / 64u);
    store_out(i, r_from_parts(r_bit(word, i % 64u), 0u));
}

@compute @workgroup_size(256)
fn planes(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let out = params.first_index + t;
    let plane = out % 64u;
    let first_bit = out - plane;
    var lo = 0u;
    var hi = 0u;
    for (var j = 0u; j < 32u; j++) {
        let i = first_bit + j;
        if i < params.bit_count {
            lo |= r_bit(load_a(i), plane) << j;
        }
        let k = i + 32u;
        if k < params.bit_count {
            hi |= r_bit(load_a(k), plane) << j;
        }
    }
    store_out(out, r_from_parts(lo, hi));
}
