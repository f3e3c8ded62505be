#!/usr/bin/env bash
# Runs the CUDA backend's GPU checks on a machine with an NVIDIA GPU, from binaries built
# elsewhere (the GPU machine may have no Rust toolchain and no network).
#
#   1. On the build machine, from the repository root:
#        crates/cryptgpu-cuda/device-run.sh build
#      builds the test and bench binaries in release mode, strips them, and copies them
#      into device-bin/ (git ignores it; pass it as `carry` to the device runner).
#   2. On the GPU machine, from the repository root:
#        crates/cryptgpu-cuda/device-run.sh run [tests|sanitizer|bench|all]   (default all)
#      finds libcuda, NVRTC and cuBLAS (ldconfig, /usr/local/cuda*, pip wheels), sets
#      LD_LIBRARY_PATH, and runs: the limb tests, the device tests, the conformance suite
#      for all three GEMM methods and the protocol suites (non-linear suite, and products
#      share for share against the CPU) with CRYPTGPU_REQUIRE_CUDA=1 (a skip fails there);
#      compute-sanitizer memcheck on the conformance suite; the criterion benches, whose
#      results go to $OUT/criterion (or ./criterion-out when $OUT is unset).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=device-bin

build() {
    rm -rf "$bin" && mkdir -p "$bin"
    local tests
    tests=$(cargo test --release -p cryptgpu-cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
    while read -r name path; do
        cp "$path" "$bin/$name"
    done <<<"$tests"
    local bench
    bench=$(cargo bench -p cryptgpu-benches --bench cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
    cp "$bench" "$bin/bench-cuda"
    strip --strip-debug "$bin"/* 2>/dev/null || true
    ls -la "$bin"
    du -sh "$bin"
}

find_libs() {
    local dirs=()
    while read -r path; do
        dirs+=("$(dirname "$path")")
    done < <(ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc\.so|libcublas\.so' | awk '{print $NF}')
    for d in /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/lib/x86_64-linux-gnu; do
        [ -d "$d" ] && dirs+=("$d")
    done
    while read -r path; do
        dirs+=("$(dirname "$path")")
    done < <(find / -xdev \( -name 'libnvrtc.so.1*' -o -name 'libcublas.so.1*' \) -path '*nvidia*' 2>/dev/null | head -n 20)
    local joined
    joined=$(printf '%s\n' "${dirs[@]}" | awk '!seen[$0]++' | paste -sd:)
    export LD_LIBRARY_PATH="${joined}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvrtc|libcublas' || true
    nvidia-smi || true
}

run_tests() {
    export CRYPTGPU_REQUIRE_CUDA=1
    "$bin/limbs"
    "$bin/device" --test-threads=1
    "$bin/conformance"
    "$bin/protocols"
}

run_sanitizer() {
    local sanitizer
    sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1 || true)
    if [ -z "$sanitizer" ]; then
        echo "compute-sanitizer not found: the memcheck run is still to do" >&2
        return 1
    fi
    CRYPTGPU_REQUIRE_CUDA=1 "$sanitizer" --tool memcheck --error-exitcode 1 \
        "$bin/conformance" --test-threads=1
}

run_bench() {
    export CRITERION_HOME="${OUT:-$PWD/criterion-out}/criterion"
    "$bin/bench-cuda" --bench 2>&1 | tee "${OUT:-.}/bench-cuda.txt"
}

case "${1:-}" in
    build) build ;;
    run)
        find_libs
        case "${2:-all}" in
            tests) run_tests ;;
            sanitizer) run_sanitizer ;;
            bench) run_bench ;;
            all) run_tests && run_sanitizer && run_bench ;;
            *) echo "usage: $0 run [tests|sanitizer|bench|all]" >&2; exit 2 ;;
        esac
        ;;
    *) echo "usage: $0 build | run [tests|sanitizer|bench|all]" >&2; exit 2 ;;
esac
