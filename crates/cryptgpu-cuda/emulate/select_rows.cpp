// Runs select_rows_u64 of kernels/layout.cu on the CPU for tests/kernel_emulation.rs, which
// checks the result against a plain Rust loop. Reads little-endian u64 words from stdin:
//   src_len, src[src_len], out_len, launches, then per launch the SelectRowsParams bytes
//   exactly as the Rust struct of src/kernels.rs lays them out;
// writes the out_len output words to stdout. Output elements start as 0xdead.. so that an
// element no launch writes shows up.
#include "cuda_shim.h"
#include "../../../kernels/layout.cu"

#include <cstdio>
#include <vector>

static_assert(sizeof(SelectRowsParams) == 8 * (3 + SELECT_ROWS_MAX),
              "SelectRowsParams must match the Rust struct: no padding");

static u64 read_word() {
    u64 w;
    if (std::fread(&w, sizeof w, 1, stdin) != 1) {
        std::fprintf(stderr, "select_rows: short input\n");
        std::exit(2);
    }
    return w;
}

int main() {
    std::vector<u64> src(read_word());
    for (auto& w : src) w = read_word();
    std::vector<u64> out(read_word(), 0xdeaddeaddeaddeadull);
    const u64 launches = read_word();
    for (u64 l = 0; l < launches; ++l) {
        SelectRowsParams p;
        if (std::fread(&p, sizeof p, 1, stdin) != 1) {
            std::fprintf(stderr, "select_rows: short parameter block\n");
            return 2;
        }
        // Three blocks of 64 threads: few enough OS threads, and the grid-stride loop
        // still takes several turns on the larger launches.
        launch({3, 1, 1}, {64, 1, 1}, select_rows_u64, (const u64*)src.data(), out.data(), p);
    }
    if (!out.empty() && std::fwrite(out.data(), sizeof(u64), out.size(), stdout) != out.size())
        return 3;
    return 0;
}
