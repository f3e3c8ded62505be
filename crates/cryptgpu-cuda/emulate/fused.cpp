// Runs fused_u64 of kernels/elementwise.cu on the CPU for tests/kernel_emulation.rs, which
// checks the result against `Fused::apply` in Rust. Reads little-endian u64 words from
// stdin:
//   n, inputs, then each input's n words, then the FusedParams bytes exactly as the Rust
//   struct of src/kernels.rs lays them out;
// writes the n output words to stdout. Output elements start as 0xdead.. so that an
// element the kernel does not write shows up. Input slots past `inputs` hold the first
// input again, as the backend passes them.
#include "cuda_shim.h"
#include "../../../kernels/elementwise.cu"

#include <cstdio>
#include <vector>

static_assert(sizeof(FusedCode) == 24, "FusedCode must match the Rust struct: no padding");
static_assert(sizeof(FusedParams) == 8 * 2 + 24 * FUSED_MAX_STEPS,
              "FusedParams must match the Rust struct: no padding");

static u64 read_word() {
    u64 w;
    if (std::fread(&w, sizeof w, 1, stdin) != 1) {
        std::fprintf(stderr, "fused: short input\n");
        std::exit(2);
    }
    return w;
}

int main() {
    const u64 n = read_word();
    const u64 inputs = read_word();
    if (inputs < 1 || inputs > FUSED_MAX_INPUTS) {
        std::fprintf(stderr, "fused: %llu inputs\n", inputs);
        return 2;
    }
    std::vector<std::vector<u64>> in(inputs, std::vector<u64>(n));
    for (auto& tensor : in)
        for (auto& w : tensor) w = read_word();
    FusedParams p;
    if (std::fread(&p, sizeof p, 1, stdin) != 1) {
        std::fprintf(stderr, "fused: short parameter block\n");
        return 2;
    }
    const u64* slot[FUSED_MAX_INPUTS];
    for (u64 k = 0; k < FUSED_MAX_INPUTS; ++k) slot[k] = in[k < inputs ? k : 0].data();
    std::vector<u64> out(n, 0xdeaddeaddeaddeadull);
    // Three blocks of 64 threads: few enough OS threads, and the grid-stride loop still
    // takes several turns on the larger inputs.
    launch({3, 1, 1}, {64, 1, 1}, fused_u64, slot[0], slot[1], slot[2], slot[3], slot[4],
           slot[5], out.data(), n, p);
    if (!out.empty() && std::fwrite(out.data(), sizeof(u64), out.size(), stdout) != out.size())
        return 3;
    return 0;
}
