// Dimensions and parameters of a 2-d convolution (NCHW input, OIHW weight) for the
// implicit-GEMM kernels, which read the im2col matrix straight from the input instead of
// building it.

struct ConvDims {
    c: u32,
    h: u32,
    w: u32,
    o: u32,
    kh: u32,
    kw: u32,
    oh: u32,
    ow: u32,
    stride_y: u32,
    stride_x: u32,
    pad_y: u32,
    pad_x: u32,
    groups: u32,
    // Input and output channels per group.
    cpg: u32,
    opg: u32,
    reserved: u32,
}

// The parameters of all three convolution kernels.
struct Params {
    win: Windows,
    gemm: Gemm,
    conv: ConvDims,
}

// Element (r, p) of the im2col matrix of image n, group g: r = (ci, ky, kx) over the
// group's input channels and the kernel, p = (oy, ox) over output positions. Zero on
// padding.
fn im2col_load(n: u32, g: u32, r: u32, p: u32) -> Ring {
    let d = params.conv;
    let kernel = d.kh * d.kw;
    let ci = r / kernel;
    let ky = (r % kernel) / d.kw;
    let kx = r % d.kw;
    let y = i32((p / d.ow) * d.stride_y + ky) - i32(d.pad_y);
    let x = i32((p % d.ow) * d.stride_x + kx) - i32(d.pad_x);
    if y < 0 || x < 0 || y >= i32(d.h) || x >= i32(d.w) {
        return r_zero();
    }
    return load_a(((n * d.c + g * d.cpg + ci) * d.h + u32(y)) * d.w + u32(x));
}
