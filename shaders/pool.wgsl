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

@group(0) @binding(3) var<uniform> params: Params;

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
fn window_sum(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = thread_index(group, groups, local);
    if t >= params.count {
        return;
    }
    let o = params.first_index + t;
    let ox = o % params.ow;
    let oy = (o / params.ow) % params.oh;
    let plane = o / (params.ow * params.oh);
    var acc = r_zero();
    for (var ky = 0u; ky < params.kh; ky++) {
        let y = input_y(oy, ky);
        if y < 0 {
            continue;
        }
        for (var kx = 0u; kx < params.kw; kx++) {
            let x = input_x(ox, kx);
            if x >= 0 {
                acc = r_add(acc, load_a((plane * params.h + u32(y)) * params.w + u32(x)));
            }
        }
    }
    store_out(o, acc);
}

@compute @workgroup_size(256)
fn unfold(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = thread_index(group, groups, local);
    if t >= params.count {
        return;
    }
    let o = params.first_index + t;
    let per_elem = params.planes * params.oh * params.ow;
    let elem = o / per_elem;
    let rest = o % per_elem;
    let ox = rest % params.ow;
    let oy = (rest / params.ow) % params.oh;
    let plane = rest / (params.ow * params.oh);
    let y = input_y(oy, elem / params.kw);
    let x = input_x(ox, elem % params.kw);
    var value = r_zero();
    if y >= 0 && x >= 0 {
        value = load_a((plane * params.h + u32(y)) * params.w + u32(x));
    } else if params.win.first != 0u {
        value = r_from_parts(params.pad_lo, params.pad_hi);
    }
    store_out(o, value);
}

@compute @workgroup_size(256)
fn fold(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let t = thread_index(group, groups, local);
    if t >= params.count {
        return;
    }
    let i = params.first_index + t;
    let ix = i % params.w;
    let iy = (i / params.w) % params.h;
    let plane = i / (params.w * params.h);
    let per_elem = params.planes * params.oh * params.ow;
    var acc = r_zero();
    for (var ky = 0u; ky < params.kh; ky++) {
        let ty = i32(iy + params.pad_y) - i32(ky);
        if ty < 0 || u32(ty) % params.stride_y != 0u || u32(ty) / params.stride_y >= params.oh {
            continue;
        }
        let oy = u32(ty) / params.stride_y;
        for (var kx = 0u; kx < params.kw; kx++) {
            let tx = i32(ix + params.pad_x) - i32(kx);
            if tx < 0 || u32(tx) % params.stride_x != 0u || u32(tx) / params.stride_x >= params.ow {
                continue;
            }
            let ox = u32(tx) / params.stride_x;
            let elem = ky * params.kw + kx;
            acc = r_add(acc, load_a(elem * per_elem + (plane * params.oh + oy) * params.ow + ox));
        }
    }
    store_out(i, acc);
}
