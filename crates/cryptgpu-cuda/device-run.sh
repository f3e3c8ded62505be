#!/usr/bin/env bash
# Runs the CUDA backend's GPU checks on a machine with an NVIDIA GPU, from binaries built
# elsewhere (the GPU machine may have no Rust toolchain and no network).
#
#   1. On the build machine, from the repository root:
#        crates/cryptgpu-cuda/device-run.sh build
#      builds the test and bench binaries in release mode, strips them, and copies them
#      into device-bin/ (git ignores it; pass it as `carry` to the device runner).
#   2. On the GPU machine, from the repository root:
#        crates/cryptgpu-cuda/device-run.sh run [tests|sanitizer|profile|targets|big|serve|bench|all]
#      finds libcuda, NVRTC and cuBLAS (ldconfig, /usr/local/cuda*, pip wheels), sets
#      LD_LIBRARY_PATH, and runs:
#      - tests: the limb tests, the device tests, the conformance suite for all three GEMM
#        methods and the protocol suites (non-linear suite, and products share for share
#        against the CPU) with CRYPTGPU_REQUIRE_CUDA=1 (a skip fails there);
#      - sanitizer: compute-sanitizer memcheck on the conformance suite;
#      - profile: nsys profiles of LeNet inference at batch 1 (emulated LAN) and of
#        cuda/private/relu/10000, summarised (launches, syncs, memcpys, allocations) into
#        $OUT/profile-*.txt;
#      - targets: issue 24's rows: `cryptgpu bench --json` of LeNet, AlexNet-CIFAR10,
#        VGG16-CIFAR10 and ResNet-18 at batch 1 on LAN, on cuda and wgpu, with messages on
#        the device and through the host, and with every party on one CUDA stream
#        (CRYPTGPU_CUDA_STREAMS=shared) ($OUT/targets.jsonl, device counts included), and
#        the criterion rows relu/10000, relu/1000000 and matmul_fixed/4096 in both stream
#        modes;
#      - big: issue 27's rows ($OUT/big.jsonl, peak device memory per party included):
#        ResNet-50 and VGG16 on ImageNet at batch 1 and 64, AlexNet and VGG16 on Tiny
#        ImageNet at batch 64 (inference, LAN); training iterations of LeNet (128), AlexNet-CIFAR10
#        (128) and VGG16-CIFAR10 (32 and 128); the ring GEMM at n = 512, 1024, 4096, 8192;
#        and nsys profiles of ResNet-50 at batch 1 and of a VGG16-CIFAR10 training step;
#      - serve: the inference service's load test on the GPU (AlexNet-CIFAR10, ResNet-18);
#      - bench: every criterion bench of the CUDA backend;
#      - all (the default): tests, sanitizer, profile, targets, big: under 8 minutes on an
#        H100 (BIG_QUICK=1 keeps big to its batch-1 rows and the GEMMs).
#      Results go under $OUT (or ./device-out when $OUT is unset).
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
    cargo build --release -p cryptgpu
    cp target/release/cryptgpu "$bin/cryptgpu"
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
    # The protocol suites again with every party on one stream and cudarc's events off.
    CRYPTGPU_CUDA_STREAMS=shared "$bin/protocols"
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

out="${OUT:-$PWD/device-out}"

run_bench() {
    mkdir -p "$out"
    export CRITERION_HOME="$out/criterion"
    "$bin/bench-cuda" --bench 2>&1 | tee "$out/bench-cuda.txt"
}

# nsys's summaries of one profiled command: CUDA API calls (launches, syncs, allocations,
# copies), kernels, and memory operations.
profile_one() {
    local name=$1
    shift
    local nsys
    nsys=$(command -v nsys || ls /usr/local/cuda*/bin/nsys /opt/nvidia/nsight-systems*/bin/nsys 2>/dev/null | head -n 1 || true)
    if [ -z "$nsys" ]; then
        echo "nsys not found: the profile of $name is still to do" | tee "$out/profile-$name.txt" >&2
        return 0
    fi
    "$nsys" profile --force-overwrite true --trace cuda,osrt --output "$out/profile-$name" "$@" \
        >"$out/profile-$name.log" 2>&1 || true
    "$nsys" stats --force-export true --report cuda_api_sum,cuda_gpu_kern_sum,cuda_gpu_mem_time_sum,cuda_gpu_mem_size_sum \
        "$out/profile-$name.nsys-rep" >"$out/profile-$name.txt" 2>&1 || true
    head -n 60 "$out/profile-$name.txt"
}

run_profile() {
    mkdir -p "$out"
    profile_one lenet "$bin/cryptgpu" bench --network lenet --batch 1 --backend cuda \
        --link lan --runs 5 --warmup 1 --json
    CRITERION_HOME="$out/criterion-profile" profile_one relu10000 "$bin/bench-cuda" --bench \
        --profile-time 3 'cuda/private/relu/10000$'
}

run_targets() {
    mkdir -p "$out"
    local rows="$out/targets.jsonl"
    : >"$rows"
    # backend, messages, CUDA streams: the default, messages through the host as between
    # three machines, one stream for all parties, and wgpu.
    local configs=("cuda device per-thread" "cuda host per-thread" "cuda device shared"
        "wgpu device per-thread")
    # TARGET_NETWORKS overrides the networks (e.g. `lenet` for a quick check of the script).
    for network in ${TARGET_NETWORKS:-lenet alexnet-cifar10 vgg16-cifar10 resnet18}; do
        for config in "${configs[@]}"; do
            read -r backend messages streams <<<"$config"
            local extra=()
            [ "$messages" = host ] && extra=(--messages-via-host)
            CRYPTGPU_CUDA_STREAMS=$streams timeout 120 "$bin/cryptgpu" bench \
                --network "$network" --batch 1 --backend "$backend" --link lan --runs 5 \
                --warmup 1 --json "${extra[@]}" >>"$rows" 2>>"$out/targets.err" ||
                echo "failed: $network $config" | tee -a "$out/targets.err"
        done
    done
    python3 - "$rows" <<'PY' | tee "$out/targets.txt"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    per = r.get("device_counts_per_round") or {}
    shared = "shared" if "one stream" in r.get("device", "") else "per-thread"
    print(f"{r['network']:16} {r['backend']:5} {r.get('messages','?'):6} {shared:10} median {r['median_seconds']*1e3:8.1f} ms"
          f" rounds {r['rounds']:4} launches/round {per.get('launches', 0):6.1f}"
          f" transfers/round {per.get('uploads', 0) + per.get('downloads', 0):5.2f}"
          f" syncs/round {per.get('syncs', 0):5.2f} allocs/round {per.get('allocations', 0):6.1f}")
PY
    for streams in per-thread shared; do
        CRYPTGPU_CUDA_STREAMS=$streams CRITERION_HOME="$out/criterion-$streams" \
            "$bin/bench-cuda" --bench 'cuda/private/(relu/(10000|1000000)|matmul_fixed/4096)$' \
            2>&1 | tee "$out/targets-criterion-$streams.txt"
    done
}

# One `cryptgpu bench --json` row into $out/big.jsonl, or a line in big.err saying why not
# (a model that does not fit fails naming the layer and the bytes).
big_row() {
    local limit=$1
    shift
    timeout "$limit" "$bin/cryptgpu" bench --backend cuda --json "$@" >>"$out/big.jsonl" \
        2>>"$out/big.err" || echo "failed or timed out: $*" | tee -a "$out/big.err"
}

run_big() {
    mkdir -p "$out"
    : >"$out/big.jsonl"
    for n in 512 1024 4096 8192; do
        big_row 60 --gemm "$n" --runs 5
    done
    big_row 120 --network resnet50 --batch 1 --link lan --runs 3 --warmup 1
    big_row 120 --network vgg16-imagenet --batch 1 --link lan --runs 3 --warmup 1
    big_row 60 --network lenet --mode training --batch 128 --link lan --runs 3 --warmup 1
    big_row 60 --network alexnet-cifar10 --mode training --batch 128 --link lan --runs 3 --warmup 1
    big_row 90 --network vgg16-cifar10 --mode training --batch 32 --link lan --runs 3 --warmup 1
    if [ -z "${BIG_QUICK:-}" ]; then
        big_row 180 --network resnet50 --batch 64 --link lan --runs 2 --warmup 1
        big_row 180 --network vgg16-imagenet --batch 64 --link lan --runs 2 --warmup 1
        big_row 90 --network alexnet-tinyimagenet --batch 64 --link lan --runs 2 --warmup 1
        big_row 90 --network vgg16-tinyimagenet --batch 64 --link lan --runs 2 --warmup 1
        big_row 180 --network vgg16-cifar10 --mode training --batch 128 --link lan --runs 2 \
            --warmup 1
        profile_one resnet50 "$bin/cryptgpu" bench --network resnet50 --batch 1 \
            --backend cuda --link lan --runs 2 --warmup 1 --json
        profile_one vgg16-train "$bin/cryptgpu" bench --network vgg16-cifar10 --mode training \
            --batch 32 --backend cuda --link lan --runs 2 --warmup 1 --json
    fi
    python3 - "$out/big.jsonl" <<'PY' | tee "$out/big.txt"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "network" not in r:
        print(json.dumps(r)[:200]); continue
    peak = r.get("peak_device_bytes") or []
    peak = "/".join(f"{b/1e9:.2f}" for b in peak) if isinstance(peak, list) else str(peak)
    print(f"{r['network']:22} {r['mode']:9} batch {r['batch']:4} median {r['median_seconds']:8.3f} s"
          f" rounds {r['rounds']:5} P0 sent {r['bytes_sent'][0]/1e6:9.1f} MB peak device GB {peak}")
PY
}

run_serve() {
    mkdir -p "$out"
    for model in alexnet-cifar10 resnet18; do
        timeout 200 "$bin/cryptgpu" loadtest --backend cuda --model "$model" --clients 1,8,64 \
            --queries 10 --max-batch 128 --json >>"$out/serve.jsonl" 2>>"$out/serve.err" ||
            echo "failed: serve $model" | tee -a "$out/serve.err"
    done
}

case "${1:-}" in
    build) build ;;
    run)
        find_libs
        case "${2:-all}" in
            tests) run_tests ;;
            sanitizer) run_sanitizer ;;
            profile) run_profile ;;
            targets) run_targets ;;
            big) run_big ;;
            serve) run_serve ;;
            bench) run_bench ;;
            all) run_tests && run_sanitizer && run_profile && run_targets && run_big ;;
            *) echo "usage: $0 run [tests|sanitizer|profile|targets|big|serve|bench|all]" >&2; exit 2 ;;
        esac
        ;;
    *) echo "usage: $0 build | run [tests|sanitizer|profile|targets|big|serve|bench|all]" >&2; exit 2 ;;
esac
