// Gradient of the convolution with respect to its weight as implicit GEMM: product z =
// group g is grad_out_g [opg, n*oh*ow] times the stacked im2col matrices transposed
// [n*oh*ow, cpg*kh*kw], which sums over the batch. Input a is the input, input b the
// output gradient.

fn gemm_load_a(z: u32, row: u32, k: u32) -> Ring {
    let d = params.conv;
    let positions = d.oh * d.ow;
    let n = k / positions;
    return load_b(((n * d.o + z * d.opg + row) * positions) + k % positions);
}

fn gemm_load_b(z: u32, k: u32, col: u32) -> Ring {
    let positions = params.conv.oh * params.conv.ow;
    return im2col_load(k / positions, z, col, k % positions);
}
