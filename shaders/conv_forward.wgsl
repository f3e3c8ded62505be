// Forward convolution as implicit GEMM: product z = (image n, group g) is
// W_g [opg, cpg*kh*kw] times im2col(x_n, g) [cpg*kh*kw, oh*ow]. Input a is the input,
// input b the weight.

fn gemm_load_a(z: u32, row: u32, k: u32) -> Ring {
    let g = z % params.conv.groups;
    return load_b((g * params.conv.opg + row) * params.gemm.depth + k);
}

fn gemm_load_b(z: u32, k: u32, col: u32) -> Ring {
    return im2col_load(z / params.conv.groups, z % params.conv.groups, k, col);
}
