// Sum over one axis: the input is viewed as [outer, reduce_len, inner] and the output as
// [outer, inner]; one thread per output element.

struct Params {
    win: Windows,
    first_index: u32,
    count: u32,
    reduce_len: u32,
    inner: u32,
}

@compute @workgroup_size(256)
fn main(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let o = params.first_index + t;
    let outer = o / params.inner;
    let inner = o % params.inner;
    var acc = r_zero();
    var i = outer * params.reduce_len * params.inner + inner;
    for (var l = 0u; l < params.reduce_len; l++) {
        acc = r_add(acc, load_a(i));
        i += params.inner;
    }
    store_out(o, acc);
}
