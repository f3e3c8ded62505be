//! The CPU backend's device work per protocol, held to budgets: a change that adds kernel
//! launches, allocations or host↔device transfers to a round fails here, in CI, before any
//! GPU sees it (the CPU counts its passes as the GPU backends count their launches).
//!
//! Budgets are the counts measured when they were set (`cargo test -p cryptgpu-nonlinear
//! --test device_counts -- --nocapture` prints them); lower them as the counts fall.

use cryptgpu_backend::DeviceCounts;
use cryptgpu_backend::counters::round_floor;
use cryptgpu_cpu::CpuBackend;
use cryptgpu_nonlinear::suite::{DeviceWork, device_work};
use cryptgpu_nonlinear::{SoftmaxOptions, relu, softmax};
use cryptgpu_share::Bilinear;

/// The most launches and allocations a party's device may make for one protocol run, and
/// its rounds. Launches are exact counts of the code; the CPU's allocations are its pool's
/// misses, which depend on what other tests freed, so their budget has room (1.5×).
struct Budget {
    name: &'static str,
    rounds: u64,
    launches: u64,
    allocations: u64,
}

/// Checks every party's counts against `budget`, on the device and through the host, and
/// prints them.
fn check(budget: Budget, work: [[DeviceWork; 3]; 2]) {
    for (on_device, parties) in [(true, work[0]), (false, work[1])] {
        let floor = round_floor(on_device);
        let rounds = parties.iter().map(|w| w.stats.rounds).max().unwrap_or(0);
        assert_eq!(rounds, budget.rounds, "{}: rounds", budget.name);
        for (i, w) in parties.iter().enumerate() {
            let c: DeviceCounts = w.counts;
            println!(
                "{} (messages {}), P{i}: {c}; per round {:.1} launches, {:.1} transfers, {:.1} allocations",
                budget.name,
                if on_device {
                    "on the device"
                } else {
                    "via the host"
                },
                c.launches as f64 / rounds as f64,
                c.transfers() as f64 / rounds as f64,
                c.allocations as f64 / rounds as f64,
            );
            assert!(
                c.launches >= floor.launches * rounds.min(1),
                "{}: {c}",
                budget.name
            );
            for (what, count, most) in [
                ("launches", c.launches, budget.launches),
                ("allocations", c.allocations, budget.allocations),
            ] {
                assert!(
                    count <= most,
                    "{} P{i}: {count} {what}, budget {most}",
                    budget.name
                );
            }
            if on_device {
                assert_eq!(c.transfers(), 0, "{} P{i}: {c}", budget.name);
            } else {
                assert!(c.downloads >= floor.downloads * w.stats.total_messages_sent());
            }
        }
    }
}

fn both(
    shape: &[usize],
    op: impl Fn(
        &mut cryptgpu_share::Party<CpuBackend, &mut cryptgpu_transport::LocalTransport>,
        &cryptgpu_share::Rss<CpuBackend>,
    ) -> cryptgpu_nonlinear::Result<()>
    + Sync
    + Copy,
) -> [[DeviceWork; 3]; 2] {
    let cpu = CpuBackend::new();
    [
        device_work(&cpu, true, shape, op),
        device_work(&cpu, false, shape, op),
    ]
}

#[test]
fn relu_of_10000_elements() {
    check(
        Budget {
            name: "relu/10000",
            rounds: 8,
            // 251 before the carry tree picked its rows in one pass and the products, ANDs
            // and bit injections fused their local terms; 96 after.
            launches: 100,
            allocations: 150,
        },
        both(&[10_000], |p, x| relu(p, x).map(drop)),
    );
}

#[test]
fn fixed_point_matmul_of_64x64() {
    check(
        Budget {
            name: "matmul_fixed/64",
            rounds: 2,
            // 34 before the truncation's and the product's steps were fused; 21 after.
            launches: 24,
            allocations: 36,
        },
        both(&[64, 64], |p, x| {
            p.product_truncated(Bilinear::Matmul, x, x)
                .map(drop)
                .map_err(Into::into)
        }),
    );
}

#[test]
fn softmax_over_10_classes() {
    check(
        Budget {
            name: "softmax 64x10",
            rounds: 79,
            // 1443 before; 919 after.
            launches: 950,
            allocations: 1_425,
        },
        both(&[64, 10], |p, x| {
            softmax(p, x, 1, SoftmaxOptions::default()).map(drop)
        }),
    );
}
