// Runs every emulated kernel test; exits non-zero on the first failure.
#include <cstdio>
int test_gemm();
int test_elementwise();
int test_conv_pool();
int test_chacha();
int main() {
    int failed = test_elementwise() | test_conv_pool() | test_chacha() | test_gemm();
    std::printf(failed ? "FAILED\n" : "all emulated kernel tests passed\n");
    return failed;
}
