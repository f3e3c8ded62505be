// Batched matrix product on the GEMM skeleton: input a is [batch?, rows, depth], input b
// is [batch?, depth, cols]; an operand without batch axes has batch stride 0.

struct Params {
    win: Windows,
    gemm: Gemm,
    a_batch_stride: u32,
    b_batch_stride: u32,
    reserved0: u32,
    reserved1: u32,
}

fn gemm_load_a(z: u32, row: u32, k: u32) -> Ring {
    return load_a(z * params.a_batch_stride + row * params.gemm.depth + k);
}

fn gemm_load_b(z: u32, k: u32, col: u32) -> Ring {
    return load_b(z * params.b_batch_stride + k * params.gemm.cols + col);
}
