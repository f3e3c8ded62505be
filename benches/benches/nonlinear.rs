//! Private non-linear protocols on the CPU backend, three parties in one process: ReLU on
//! 10^4, 10^5 and 10^6 elements, 2×2 max-pooling (keeping the winners, and at inference),
//! and in both truncation modes softmax
//! over 10 classes and BatchNorm training (forward with batch statistics and backward), with
//! each run's bytes sent per party and rounds printed beside the bench id.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cryptgpu_benches::{
    BatchNormTrain, MaxPool2x2, MaxPool2x2Values, Measured, SoftmaxRows, WithTruncation,
    bench_group, private_relu, run_private,
};
use cryptgpu_cpu::CpuBackend;
use cryptgpu_share::Truncation;
use std::time::Duration;

fn report(id: &str, elements: usize, m: Measured) {
    let per = m.bytes.map(|b| b as f64 / elements as f64);
    eprintln!("{id}: {} ({per:?} bytes per element)", m.summary());
}

fn nonlinear(c: &mut Criterion) {
    let cpu = CpuBackend::new();
    let mut group = bench_group(c, "cpu/private", Duration::from_secs(4));
    for n in [10_000usize, 100_000, 1_000_000] {
        report(
            &format!("cpu/private/relu/{n}"),
            n,
            private_relu(&cpu, n, 0),
        );
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("relu", n), &n, |bench, &n| {
            bench.iter_custom(|iters| private_relu(&cpu, n, iters).time);
        });
    }
    // 2×2 max-pooling of a 64-channel 32×32 batch of 8 (as after a CIFAR-10 conv layer).
    let shape = [8usize, 64, 32, 32];
    let outputs = 8 * 64 * 16 * 16;
    report(
        "cpu/private/max_pool2x2/8x64x32x32",
        outputs,
        run_private(&cpu, &shape, 0, &MaxPool2x2),
    );
    group.throughput(Throughput::Elements(outputs as u64));
    group.bench_function("max_pool2x2/8x64x32x32", |bench| {
        bench.iter_custom(|iters| run_private(&cpu, &shape, iters, &MaxPool2x2).time);
    });
    report(
        "cpu/private/max_pool2x2_values/8x64x32x32",
        outputs,
        run_private(&cpu, &shape, 0, &MaxPool2x2Values),
    );
    group.bench_function("max_pool2x2_values/8x64x32x32", |bench| {
        bench.iter_custom(|iters| run_private(&cpu, &shape, iters, &MaxPool2x2Values).time);
    });
    for mode in Truncation::ALL {
        // Softmax over 10 classes for a batch of 128.
        let rows = 128;
        let softmax = WithTruncation(mode, SoftmaxRows);
        let id = format!("softmax10/{mode}/128");
        report(
            &format!("cpu/private/{id}"),
            rows,
            run_private(&cpu, &[rows, 10], 0, &softmax),
        );
        group.throughput(Throughput::Elements(rows as u64));
        group.bench_function(&id, |bench| {
            bench.iter_custom(|iters| run_private(&cpu, &[rows, 10], iters, &softmax).time);
        });
        // BatchNorm training, forward and backward, on a 64-channel 16×16 batch of 32.
        let shape = [32usize, 64, 16, 16];
        let elements = shape.iter().product();
        let batchnorm = WithTruncation(mode, BatchNormTrain);
        let id = format!("batchnorm_train/{mode}/32x64x16x16");
        report(
            &format!("cpu/private/{id}"),
            elements,
            run_private(&cpu, &shape, 0, &batchnorm),
        );
        group.throughput(Throughput::Elements(elements as u64));
        group.bench_function(&id, |bench| {
            bench.iter_custom(|iters| run_private(&cpu, &shape, iters, &batchnorm).time);
        });
    }
    group.finish();
}

criterion_group!(benches, nonlinear);
criterion_main!(benches);
