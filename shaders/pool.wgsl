// Pooling windows over NCHW tensors (n and c merged into `planes`): the sum of every
// window, the unfolded windows ([kh*kw, planes, oh, ow]) and their adjoint, the fold.

struct Params {
    win: Windows,
    first_index: u32,
    count: u32,
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride_y: u32,
    stride_x: u32,
    pad_y: u32,
    pad_x: u32,
    // The value of padding positions in `unfold`.
    pad_lo: u32,
    pad_hi: u32,
    reserved: u32,
}

// Position `i` of a [planes, h, w] tensor.
struct Pixel {
    plane: u32,
    y: u32,
    x: u32,
}

fn pixel(i: u32, h: u32, w: u32) -> Pixel {
    return Pixel(i / (w * h), (i / w) % h, i % w);
}

// The input coordinate of window element (ky, kx) of window (oy, ox), or -1 on padding.
fn input_y(oy: u32, ky: u32) -> i32 {
    let y = i32(oy * params.stride_y + ky) - i32(params.pad_y);
    return select(-1, y, y >= 0 && y < i32(params.h));
}

fn input_x(ox: u32, kx: u32) -> i32 {
    let x = i32(ox * params.stride_x + kx) - i32(params.pad_x);
    return select(-1, x, x >= 0 && x < i32(params.w));
}

@compute @workgroup_size(256)
fn window_sum(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let o = params.first_index + t;
    let out = pixel(o, params.oh, params.ow);
    var acc = r_zero();
    for (var ky = 0u; ky < params.kh; ky++) {
        let y = input_y(out.y, ky);
        if y < 0 {
            continue;
        }
        for (var kx = 0u; kx < params.kw; kx++) {
            let x = input_x(out.x, kx);
            if x >= 0 {
                acc = r_add(acc, load_a((out.plane * params.h + u32(y)) * params.w + u32(x)));
            }
        }
    }
    store_out(o, acc);
}

@compute @workgroup_size(256)
fn unfold(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let o = params.first_index + t;
    let per_elem = params.planes * params.oh * params.ow;
    let elem = o / per_elem;
    let out = pixel(o % per_elem, params.oh, params.ow);
    let y = input_y(out.y, elem / params.kw);
    let x = input_x(out.x, elem % params.kw);
    var value = r_zero();
    if y >= 0 && x >= 0 {
        value = load_a((out.plane * params.h + u32(y)) * params.w + u32(x));
    } else if params.win.first != 0u {
        value = r_from_parts(params.pad_lo, params.pad_hi);
    }
    store_out(o, value);
}

@compute @workgroup_size(256)
fn fold(inv: Invocation) {
    let t = thread_index(inv);
    if t >= params.count {
        return;
    }
    let i = params.first_index + t;
    let input = pixel(i, params.h, params.w);
    let per_elem = params.planes * params.oh * params.ow;
    var acc = r_zero();
    for (var ky = 0u; ky < params.kh; ky++) {
        let ty = i32(input.y + params.pad_y) - i32(ky);
        if ty < 0 || u32(ty) % params.stride_y != 0u || u32(ty) / params.stride_y >= params.oh {
            continue;
        }
        let oy = u32(ty) / params.stride_y;
        for (var kx = 0u; kx < params.kw; kx++) {
            let tx = i32(input.x + params.pad_x) - i32(kx);
            if tx < 0 || u32(tx) % params.stride_x != 0u || u32(tx) / params.stride_x >= params.ow {
                continue;
            }
            let ox = u32(tx) / params.stride_x;
            let elem = ky * params.kw + kx;
            acc = r_add(acc, load_a(elem * per_elem + (input.plane * params.oh + oy) * params.ow + ox));
        }
    }
    store_out(i, acc);
}
