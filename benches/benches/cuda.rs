//! The CUDA backend: ring GEMM rates (u64 MACs mod 2^64) of the three methods at 1024, 4096
//! and 8192, beside plain cuBLAS int8 and fp64 GEMMs of the same size on the same GPU, and
//! private fixed-point matmul and ReLU with three parties on one GPU (each party's thread
//! gets its own stream). Prints `skipped:` and measures nothing without a GPU.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cryptgpu_backend::GpuBackend;
use cryptgpu_benches::{bench_group, private_relu};
use cryptgpu_cuda::{CudaBackend, GemmMethod, ReferenceGemm};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{Bilinear, KeySource, Party, Rss};
use cryptgpu_transport::{LocalTransport, PartyId, run_local_3pc};
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [1024, 4096, 8192];

/// Device 0, or `None` after saying why the benches skip.
fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(backend) => {
            eprintln!(
                "cuda: {} (compute capability {:?}), default GEMM method {}",
                backend.device_name(),
                backend.compute_capability(),
                backend.gemm_method().name()
            );
            Some(backend)
        }
        Err(e) => {
            eprintln!("skipped: the cuda benches need a GPU: {e}");
            None
        }
    }
}

fn bench_gemm(c: &mut Criterion) {
    let Some(cuda) = gpu() else { return };
    let mut group = bench_group(c, "cuda", Duration::from_secs(3));
    for n in SIZES {
        group.throughput(Throughput::Elements((n * n * n) as u64));
        let a = cuda.fill_chacha12(&[n, n], &[1; 32], 0, 0).unwrap();
        let b = cuda.fill_chacha12(&[n, n], &[2; 32], 0, 0).unwrap();
        let (ha, hb) = (cuda.download(&a).unwrap(), cuda.download(&b).unwrap());
        // Element (0, 0) of the product, on the host, to check each method before timing it.
        let corner = (0..n).fold(0u64, |acc, l| {
            acc.wrapping_add(ha[l].wrapping_mul(hb[l * n]))
        });
        for method in GemmMethod::ALL {
            let backend = cuda.clone().with_gemm_method(method).unwrap();
            let check = backend.download(&backend.matmul(&a, &b).unwrap()).unwrap();
            assert_eq!(
                check[0],
                corner,
                "cuda {} gemm {n}: element (0, 0) is wrong",
                method.name()
            );
            group.bench_function(format!("gemm_u64/{}/{n}", method.name()), |bench| {
                bench.iter_custom(|iters| {
                    backend.sync().unwrap();
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(backend.matmul(&a, &b).unwrap());
                    }
                    backend.sync().unwrap();
                    start.elapsed()
                })
            });
        }
        for (name, kind) in [
            ("gemm_i8_cublas", ReferenceGemm::Int8),
            ("gemm_f64_cublas", ReferenceGemm::Fp64),
        ] {
            group.bench_function(format!("{name}/{n}"), |bench| {
                bench.iter_custom(|iters| cuda.time_reference_gemm(kind, n, iters).unwrap())
            });
        }
    }
    group.finish();
}

/// `iters` fused fixed-point matmuls of two shared `n × n` inputs, three parties in one
/// process, each with its own backend handle (stream); the slowest party's time.
fn private_matmul(n: usize, iters: u64) -> Duration {
    let out = run_local_3pc(|t: &mut LocalTransport| {
        let backend = CudaBackend::new(0).unwrap();
        let mut p = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::default(),
            KeySource::InsecureSeeded(1),
        )
        .unwrap();
        let input = backend.fill_chacha12(&[n, n], &[7; 32], 0, 0).unwrap();
        let x: Rss<CudaBackend> = p
            .share(
                PartyId::P0,
                (p.id() == PartyId::P0).then_some(&input),
                &[n, n],
            )
            .unwrap();
        let y = p
            .share(
                PartyId::P1,
                (p.id() == PartyId::P1).then_some(&input),
                &[n, n],
            )
            .unwrap();
        let _ = p.reveal(&x).unwrap();
        let start = Instant::now();
        for _ in 0..iters {
            drop(p.product_truncated(Bilinear::Matmul, &x, &y).unwrap());
            backend.sync().unwrap();
        }
        start.elapsed()
    })
    .unwrap();
    out.into_iter().max().unwrap()
}

fn bench_private(c: &mut Criterion) {
    let Some(cuda) = gpu() else { return };
    let mut group = bench_group(c, "cuda/private", Duration::from_secs(3));
    for n in [256usize, 1024, 4096] {
        group.throughput(Throughput::Elements((n * n * n) as u64));
        group.bench_with_input(BenchmarkId::new("matmul_fixed", n), &n, |bench, &n| {
            bench.iter_custom(|iters| private_matmul(n, iters));
        });
    }
    for n in [10_000usize, 100_000, 1_000_000] {
        let once = private_relu(&cuda, n, 0);
        eprintln!("cuda/private/relu/{n}: {}", once.summary());
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("relu", n), &n, |bench, &n| {
            bench.iter_custom(|iters| private_relu(&cuda, n, iters).time);
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm, bench_private);
criterion_main!(benches);
