//! GEMM throughput: our `u64` (mod 2^64) matrix product against an f64 GEMM of the same
//! shape (faer, whose kernels are the `gemm` crate's AVX-512/AVX2 ones), both multithreaded
//! on rayon's global pool. Throughput is in MACs (`n³` per product).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cryptgpu_benches::bench_group;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use rand_chacha::ChaCha12Rng;
use rand_core::{Rng, SeedableRng};

const SIZES: [usize; 3] = [256, 512, 1024];

fn bench_gemm(c: &mut Criterion) {
    let mut rng = ChaCha12Rng::seed_from_u64(0x6e6d);
    let mut group = bench_group(c, "cpu", Duration::from_secs(3));
    for n in SIZES {
        group.throughput(Throughput::Elements((n * n * n) as u64));

        let a: Vec<u64> = (0..n * n).map(|_| rng.next_u64()).collect();
        let b: Vec<u64> = (0..n * n).map(|_| rng.next_u64()).collect();
        let mut out = vec![0u64; n * n];
        group.bench_function(format!("gemm_u64/{n}"), |bench| {
            bench.iter(|| {
                cryptgpu_cpu::gemm::gemm_u64(
                    n,
                    n,
                    n,
                    black_box(&a),
                    n,
                    1,
                    black_box(&b),
                    n,
                    1,
                    &mut out,
                    n,
                    false,
                );
                black_box(&out);
            })
        });

        let to_f64 = |x: u64| (x >> 11) as f64 / (1u64 << 53) as f64;
        let af = Mat::<f64>::from_fn(n, n, |i, j| to_f64(a[i * n + j]));
        let bf = Mat::<f64>::from_fn(n, n, |i, j| to_f64(b[i * n + j]));
        let mut cf = Mat::<f64>::zeros(n, n);
        group.bench_function(format!("gemm_f64_faer/{n}"), |bench| {
            bench.iter(|| {
                matmul(
                    cf.as_mut(),
                    Accum::Replace,
                    black_box(af.as_ref()),
                    black_box(bf.as_ref()),
                    1.0,
                    Par::rayon(0),
                );
                black_box(&cf);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_gemm);
criterion_main!(benches);
