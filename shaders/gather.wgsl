// Strided copy: permute, slice, broadcast and each part of a concatenation.
//
// Thread g of the thread space (a row-major index space of up to 8 axes) reads
//   src = src_offset + sum_d ((g / div[d]) % extent[d]) * stride[d]
// and writes
//   dst = dst_offset + (g / row_len) * row_stride + g % row_len,
// which is the identity for a dense output (row_len = everything) and places the rows of
// one concatenated part between those of the others.

struct Params {
    win: Windows,
    first_index: u32,
    count: u32,
    row_len: u32,
    row_stride: u32,
    dst_offset: u32,
    src_offset: u32,
    rank: u32,
    reserved: u32,
    extent: array<vec4<u32>, 2>,
    div: array<vec4<u32>, 2>,
    stride: array<vec4<u32>, 2>,
}

@compute @workgroup_size(256)
fn main(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let g = params.first_index + t;
    var src = params.src_offset;
    for (var d = 0u; d < params.rank; d++) {
        let q = d / 4u;
        let r = d % 4u;
        src += ((g / params.div[q][r]) % params.extent[q][r]) * params.stride[q][r];
    }
    let dst_index = params.dst_offset + (g / params.row_len) * params.row_stride + g % params.row_len;
    store_out(dst_index, load_a(src));
}
