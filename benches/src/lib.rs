//! Bench helpers shared by the bench targets: private protocol runs that every backend's
//! bench calls the same way, so the CPU, CUDA and wgpu figures are directly comparable.

#![forbid(unsafe_code)]

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion};
use cryptgpu_backend::GpuBackend;
use cryptgpu_backend::Pool2dParams;
use cryptgpu_backend::counters::{self, DeviceCounts};
use cryptgpu_nn::private::{batchnorm_backward, batchnorm_forward_train};
use cryptgpu_nonlinear::{SoftmaxOptions, max_pool2d, relu, softmax};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::Rss;
use cryptgpu_share::{KeySource, Party, Truncation};
use cryptgpu_transport::Transport;
use cryptgpu_transport::{CommStats, PartyId, run_local_3pc};
use std::time::{Duration, Instant};

/// One measured protocol: the slowest party's wall time over the timed iterations, and one
/// run's communication from parties in step (bytes sent by P0, P1, P2; rounds).
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Wall time of all timed iterations (the slowest party).
    pub time: Duration,
    /// Bytes sent by each party in one run.
    pub bytes: [u64; 3],
    /// Rounds of one run.
    pub rounds: u64,
    /// Each party's device work in one run (launches, transfers, syncs, allocations).
    pub device: [DeviceCounts; 3],
}

impl Measured {
    /// One run's rounds, bytes sent and busiest party's device work per round, in words.
    pub fn summary(&self) -> String {
        let busiest = self
            .device
            .iter()
            .max_by_key(|d| d.launches)
            .copied()
            .unwrap_or_default();
        let per_round = |x: u64| x as f64 / self.rounds.max(1) as f64;
        format!(
            "rounds {}, bytes sent per party {:?}; busiest party: {busiest}; per round {:.1} \
             launches, {:.1} transfers, {:.1} syncs, {:.1} allocations",
            self.rounds,
            self.bytes,
            per_round(busiest.launches),
            per_round(busiest.transfers()),
            per_round(busiest.syncs),
            per_round(busiest.allocations),
        )
    }
}

/// A private op on a shared input of `shape`, run `iters` times after one measured run, by
/// three parties in one process on `backend` (seeded keys: repeatable).
pub fn run_private<B: GpuBackend>(
    backend: &B,
    shape: &[usize],
    iters: u64,
    op: &impl PrivateOp,
) -> Measured {
    let out = run_local_3pc(|t| {
        let mut p = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::default(),
            KeySource::InsecureSeeded(1),
        )
        .expect("setup");
        let b = p.backend().clone();
        // Reals in about [-8, 8): random ring elements shifted down.
        let raw = b.fill_chacha12(shape, &[7; 32], 0, 0).expect("fill");
        let values = b
            .shift(cryptgpu_backend::ShiftOp::RightArithmetic, &raw, 40)
            .expect("shift");
        let x = p
            .share(
                PartyId::P0,
                (p.id() == PartyId::P0).then_some(&values),
                shape,
            )
            .expect("share");
        // A reveal puts the parties in step before the measured run.
        let _ = p.reveal(&x).expect("reveal");
        let before = p.stats();
        let counted = counters::thread_counts();
        op.run(&mut p, &x).expect("op");
        let device = counters::thread_counts().since(&counted);
        let after = p.stats();
        b.sync().expect("sync");
        let start = Instant::now();
        for _ in 0..iters {
            op.run(&mut p, &x).expect("op");
        }
        b.sync().expect("sync");
        (start.elapsed(), before, after, device)
    })
    .expect("no party failed");
    Measured {
        device: out.each_ref().map(|o| o.3),
        time: out.iter().map(|o| o.0).max().expect("three parties"),
        bytes: out.each_ref().map(|o| o.2.since(&o.1).total_bytes_sent()),
        rounds: CommStats::rounds_of(&out.each_ref().map(|o| o.2))
            - CommStats::rounds_of(&out.each_ref().map(|o| o.1)),
    }
}

/// A private op on one shared input, for [`run_private`].
pub trait PrivateOp: Sync {
    /// Runs the op once as party `p` on `x`.
    fn run<B: GpuBackend, T: Transport>(
        &self,
        p: &mut Party<B, T>,
        x: &Rss<B>,
    ) -> cryptgpu_nonlinear::Result<()>;
}

/// An op run with truncations in a given mode (the parties' default is exact).
pub struct WithTruncation<O>(pub Truncation, pub O);

impl<O: PrivateOp> PrivateOp for WithTruncation<O> {
    fn run<B: GpuBackend, T: Transport>(
        &self,
        p: &mut Party<B, T>,
        x: &Rss<B>,
    ) -> cryptgpu_nonlinear::Result<()> {
        p.with_truncation(self.0, |p| self.1.run(p, x))
    }
}

/// A unit struct `$name` (documented by the attributes before it) that is a [`PrivateOp`]
/// running `$body` as the party `$p` on the input `$x`.
macro_rules! private_op {
    ($(#[$attr:meta])* $name:ident, |$p:ident, $x:ident| $body:expr) => {
        $(#[$attr])*
        pub struct $name;

        impl PrivateOp for $name {
            fn run<B: GpuBackend, T: Transport>(
                &self,
                $p: &mut Party<B, T>,
                $x: &Rss<B>,
            ) -> cryptgpu_nonlinear::Result<()> {
                $body
            }
        }
    };
}

private_op!(
    /// ReLU.
    Relu,
    |p, x| relu(p, x).map(drop)
);

private_op!(
    /// 2×2 max-pooling with stride 2 of an NCHW input.
    MaxPool2x2,
    |p, x| max_pool2d(p, x, Pool2dParams::new(2, 2)).map(drop)
);

private_op!(
    /// 2×2 max-pooling at inference: the maxima only, no winners kept.
    MaxPool2x2Values,
    |p, x| cryptgpu_nonlinear::max_pool2d_values(p, x, Pool2dParams::new(2, 2)).map(drop)
);

private_op!(
    /// Softmax over the last axis of a 2-d input.
    SoftmaxRows,
    |p, x| softmax(p, x, 1, SoftmaxOptions::default()).map(drop)
);

private_op!(
    /// BatchNorm2d training on an `[N, C, H, W]` input: the forward pass with batch
    /// statistics, then the backward pass with the input as the output gradient (weight 1,
    /// bias 0).
    BatchNormTrain,
    |p, x| {
        let channels = x.shape()[1];
        let weight = p.constant_f64(&vec![1.0; channels], &[channels])?;
        let bias = p.constant_f64(&vec![0.0; channels], &[channels])?;
        let batch = batchnorm_forward_train(p, x, 1e-5, &weight, &bias).expect("forward");
        batchnorm_backward(p, x, &batch.xhat, &batch.inv_std, &weight).expect("backward");
        Ok(())
    }
);

/// A benchmark group of ten samples, each measured for `measurement` after half a second of
/// warm-up.
pub fn bench_group<'a>(
    c: &'a mut Criterion,
    name: &str,
    measurement: Duration,
) -> BenchmarkGroup<'a, WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(measurement);
    group
}

/// Private ReLU of `n` elements on `backend`.
pub fn private_relu<B: GpuBackend>(backend: &B, n: usize, iters: u64) -> Measured {
    run_private(backend, &[n], iters, &Relu)
}
