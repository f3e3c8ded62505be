//! Private (secret-shared) products on the CPU backend, three parties in one process: time
//! per fixed-point matmul and elementwise product, and per truncation alone, in both
//! truncation modes, with bytes sent per party and rounds printed beside each bench id
//! (criterion times; the counters give the communication).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use cryptgpu_backend::GpuBackend;
use cryptgpu_benches::bench_group;
use cryptgpu_cpu::CpuBackend;
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{Bilinear, KeySource, Party, Rss, Truncation};
use cryptgpu_transport::{CommStats, LocalTransport, PartyId, run_local_3pc};
use std::time::{Duration, Instant};

/// What one timed iteration does.
#[derive(Clone, Copy)]
enum Step {
    /// A fused product with truncation.
    Product(Bilinear),
    /// A truncation of the left input alone.
    Truncate,
}

/// Runs `iters` steps on two shared inputs of the given shapes in a fresh three-party
/// session with truncations in `mode`; returns the slowest party's time and one step's
/// communication (bytes sent by each party, rounds).
fn run(
    step: Step,
    mode: Truncation,
    xs: &[usize],
    ys: &[usize],
    iters: u64,
) -> (Duration, [u64; 3], u64) {
    let out = run_local_3pc(|t: &mut LocalTransport| {
        let mut p = Party::setup_with(
            CpuBackend::new(),
            t,
            FixedPoint::default(),
            KeySource::InsecureSeeded(1),
        )
        .unwrap();
        p.set_truncation(mode);
        let b = *p.backend();
        let input = |shape: &[usize]| b.fill_chacha12(shape, &[7; 32], 0, 0).unwrap();
        let (x0, y0) = (input(xs), input(ys));
        let once = |p: &mut Party<CpuBackend, &mut LocalTransport>,
                    x: &Rss<CpuBackend>,
                    y: &Rss<CpuBackend>| match step {
            Step::Product(op) => p.product_truncated(op, x, y).unwrap(),
            Step::Truncate => p.truncate(x).unwrap(),
        };
        // One step on public sharings first (no message), so that every party starts from
        // the same clock right after setup: its communication and rounds.
        let (cx, cy) = (p.constant(&x0).unwrap(), p.constant(&y0).unwrap());
        let before = p.stats();
        let _ = once(&mut p, &cx, &cy);
        let after = p.stats();
        let x: Rss<CpuBackend> = p
            .share(PartyId::P0, (p.id() == PartyId::P0).then_some(&x0), xs)
            .unwrap();
        let y = p
            .share(PartyId::P1, (p.id() == PartyId::P1).then_some(&y0), ys)
            .unwrap();
        let start = Instant::now();
        for _ in 0..iters {
            let z = once(&mut p, &x, &y);
            b.sync().unwrap();
            drop(z);
        }
        (start.elapsed(), before, after)
    })
    .unwrap();
    let time = out.iter().map(|o| o.0).max().unwrap();
    let sent = out.each_ref().map(|o| o.2.since(&o.1).total_bytes_sent());
    let rounds = CommStats::rounds_of(&out.each_ref().map(|o| o.2))
        - CommStats::rounds_of(&out.each_ref().map(|o| o.1));
    (time, sent, rounds)
}

fn private_products(c: &mut Criterion) {
    let mut group = bench_group(c, "cpu/private", Duration::from_secs(3));
    for mode in Truncation::ALL {
        for n in [64usize, 128, 256, 512] {
            let step = Step::Product(Bilinear::Matmul);
            let (_, sent, rounds) = run(step, mode, &[n, n], &[n, n], 1);
            eprintln!(
                "cpu/private/matmul_fixed/{mode}/{n}: bytes sent per party {sent:?}, rounds {rounds}"
            );
            group.throughput(Throughput::Elements((n * n * n) as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("matmul_fixed/{mode}"), n),
                &n,
                |bench, &n| bench.iter_custom(|iters| run(step, mode, &[n, n], &[n, n], iters).0),
            );
        }
        for (name, step) in [
            ("mul_fixed", Step::Product(Bilinear::Mul)),
            ("truncate", Step::Truncate),
        ] {
            for n in [10_000usize, 100_000, 1_000_000] {
                let (_, sent, rounds) = run(step, mode, &[n], &[n], 1);
                eprintln!(
                    "cpu/private/{name}/{mode}/{n}: bytes sent per party {sent:?}, rounds {rounds}"
                );
                group.throughput(Throughput::Elements(n as u64));
                group.bench_with_input(
                    BenchmarkId::new(format!("{name}/{mode}"), n),
                    &n,
                    |bench, &n| bench.iter_custom(|iters| run(step, mode, &[n], &[n], iters).0),
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, private_products);
criterion_main!(benches);
