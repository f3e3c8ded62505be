// Gradient of the convolution with respect to its input (a transposed convolution) as
// implicit GEMM: product z = (image n, group g) is W_g^T [cpg, opg*kh*kw] times the
// matrix whose entry ((o, ky, kx), (iy, ix)) is the output gradient at the output
// position that reads input (iy, ix) through kernel element (ky, kx), or zero if none
// does. Input a is the output gradient, input b the weight.

fn gemm_load_a(z: u32, row: u32, k: u32) -> Ring {
    let d = params.conv;
    let g = z % d.groups;
    let kernel = d.kh * d.kw;
    let o = k / kernel;
    return load_b(((g * d.opg + o) * d.cpg + row) * kernel + k % kernel);
}

fn gemm_load_b(z: u32, k: u32, col: u32) -> Ring {
    let d = params.conv;
    let n = z / d.groups;
    let g = z % d.groups;
    let kernel = d.kh * d.kw;
    let o = k / kernel;
    let ky = (k % kernel) / d.kw;
    let kx = k % d.kw;
    let ty = i32(col / d.w + d.pad_y) - i32(ky);
    let tx = i32(col % d.w + d.pad_x) - i32(kx);
    if ty < 0 || tx < 0 || u32(ty) % d.stride_y != 0u || u32(tx) % d.stride_x != 0u {
        return r_zero();
    }
    let oy = u32(ty) / d.stride_y;
    let ox = u32(tx) / d.stride_x;
    if oy >= d.oh || ox >= d.ow {
        return r_zero();
    }
    return load_a(((n * d.o + g * d.opg + o) * d.oh + oy) * d.ow + ox);
}
