//! The wgpu backend's GEMM throughput (u64 mod 2^64, MACs = n³ per product), on the
//! native `u64` path and on the emulated `vec2<u32>` path, beside `cpu/gemm_u64` of
//! `gemm.rs`. The adapter is printed first: on a machine without a GPU it is Mesa's
//! lavapipe, a software rasteriser on the CPU, and the figures are that, not a GPU's.
//!
//! Each timed iteration queues products on the device and the sample ends with a device
//! sync, so the time covers finished work; the operands stay on the device.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cryptgpu_backend::GpuBackend;
use cryptgpu_benches::bench_group;
use cryptgpu_wgpu::{Int64Mode, WgpuBackend, WgpuOptions};
use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};

const SIZES: [usize; 3] = [256, 512, 1024];

fn open(int64: Int64Mode) -> Option<WgpuBackend> {
    match WgpuBackend::with_options(WgpuOptions {
        int64,
        ..WgpuOptions::default()
    }) {
        Ok(backend) => {
            eprintln!("wgpu {int64:?}: {}", backend.adapter());
            Some(backend)
        }
        Err(e) => {
            eprintln!("skipped: wgpu {int64:?} benches: {e}");
            None
        }
    }
}

fn bench_gemm(c: &mut Criterion) {
    let mut rng = ChaCha12Rng::seed_from_u64(0x6770);
    let mut group = bench_group(c, "wgpu", Duration::from_secs(3));
    for (int64, name) in [
        (Int64Mode::Native, "gemm_u64"),
        (Int64Mode::Emulated, "gemm_u64_emulated"),
    ] {
        let Some(backend) = open(int64) else {
            continue;
        };
        for n in SIZES {
            group.throughput(Throughput::Elements((n * n * n) as u64));
            let a: Vec<u64> = (0..n * n).map(|_| rng.next_u64()).collect();
            let b: Vec<u64> = (0..n * n).map(|_| rng.next_u64()).collect();
            let ta = backend.upload(&a, &[n, n]).unwrap();
            let tb = backend.upload(&b, &[n, n]).unwrap();
            // Build the pipeline and check one product before timing.
            let check = backend
                .download(&backend.matmul(&ta, &tb).unwrap())
                .unwrap();
            let want = (0..n).fold(0u64, |acc, l| acc.wrapping_add(a[l].wrapping_mul(b[l * n])));
            assert_eq!(
                check[0], want,
                "wgpu {int64:?} gemm {n}: element (0, 0) is wrong"
            );
            group.bench_function(format!("{name}/{n}"), |bench| {
                bench.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(backend.matmul(&ta, &tb).unwrap());
                    }
                    backend.sync().unwrap();
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

/// Private ReLU (`wgpu/private/relu/...`, beside `cpu/private/relu/...` of the nonlinear
/// bench): the protocol of `cryptgpu-nonlinear` on three clones of one `WgpuBackend`, with
/// bytes and rounds printed. On a software adapter (lavapipe) only 10^4 elements.
fn bench_relu(c: &mut Criterion) {
    let Some(backend) = open(Int64Mode::Auto) else {
        return;
    };
    let sizes: &[usize] = if backend.adapter().is_software {
        &[10_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let mut group = bench_group(c, "wgpu/private", Duration::from_secs(4));
    for &n in sizes {
        let m = cryptgpu_benches::private_relu(&backend, n, 0);
        eprintln!("wgpu/private/relu/{n}: {}", m.summary());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("relu/{n}"), |bench| {
            bench.iter_custom(|iters| cryptgpu_benches::private_relu(&backend, n, iters).time)
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm, bench_relu);
criterion_main!(benches);
