#!/usr/bin/env bash
# Builds the kernels of kernels/*.cu as host C++ with cuda_shim.h and runs them on the CPU
# against loops written from the definitions: a check of the kernels' indexing, padding,
# chunk accumulation, warp ballots and position wrapping for machines without a GPU. It does
# not replace the GPU run (no real memory model, no cuBLAS). Needs g++ with C++20.
set -euo pipefail
cd "$(dirname "$0")"
out="$(mktemp "${TMPDIR:-/tmp}/cryptgpu-kernel-emulation.XXXXXX")"
trap 'rm -f "$out"' EXIT
g++ -std=c++20 -O1 -pthread -Wall -Wno-unused-function -o "$out" \
    main.cpp test_gemm.cpp test_elementwise.cpp test_conv_pool.cpp test_chacha.cpp
"$out"
