//! The protocol suites on the wgpu backend: the non-linear suite (comparisons, ReLU,
//! pooling, softmax, the functions by iteration, communication) on the native and the
//! emulated u64 paths; private training of a small network through every trainable layer,
//! BatchNorm included (`private_nn_tests!`), on both paths; and a private LeNet
//! (convolutions, ReLU, average pooling, linear layers, the private arg-max). Every
//! revealed ring element must equal the CPU backend's under the same seeded keys. Without an adapter every test prints `skipped:`;
//! `CRYPTGPU_REQUIRE_WGPU=1` makes that a failure.

use cryptgpu_backend::GpuBackend;
use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::Tensor;
use cryptgpu_nn::private::{SharedModel, share_input};
use cryptgpu_nn::zoo::{self, Pooling};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party};
use cryptgpu_transport::{PartyId, run_local_3pc};
use cryptgpu_wgpu::{Int64Mode, WgpuBackend, WgpuOptions};
use std::sync::OnceLock;

fn open(
    cell: &'static OnceLock<Result<WgpuBackend, String>>,
    int64: Int64Mode,
) -> Option<WgpuBackend> {
    let options = WgpuOptions {
        int64,
        ..WgpuOptions::default()
    };
    match cell.get_or_init(|| WgpuBackend::with_options(options).map_err(|e| e.to_string())) {
        Ok(backend) => Some(backend.clone()),
        Err(why) => cryptgpu_backend::conformance::unavailable("wgpu", why),
    }
}

fn native() -> Option<WgpuBackend> {
    static CELL: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
    open(&CELL, Int64Mode::Native)
}

mod native_path {
    use super::native;
    cryptgpu_nonlinear::nonlinear_protocol_tests!(native);
    cryptgpu_nn::private_nn_tests!(native);
}

mod emulated_path {
    use super::*;

    fn emulated() -> Option<WgpuBackend> {
        static CELL: OnceLock<Result<WgpuBackend, String>> = OnceLock::new();
        open(&CELL, Int64Mode::Emulated)
    }

    cryptgpu_nonlinear::nonlinear_protocol_tests!(emulated);
    cryptgpu_nn::private_nn_tests!(emulated);
}

/// A LeNet (seeded weights) on two synthetic digits, privately: every party's revealed
/// logits (as ring elements) and the data owner's predictions.
fn private_lenet<B: GpuBackend>(backend: &B) -> [(Vec<u64>, Option<Vec<usize>>); 3] {
    let model = zoo::build_seeded("lenet", Pooling::Avg, 5).unwrap();
    let mut x = 9u64;
    let data: Vec<f64> = (0..2 * 784)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 40) as f64 / (1u64 << 24) as f64 * 3.0 - 0.5
        })
        .collect();
    let images = Tensor::new(&[2, 1, 28, 28], data).unwrap();
    run_local_3pc(|t| {
        let mut p = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::new(16).unwrap(),
            KeySource::InsecureSeeded(4),
        )
        .unwrap();
        let shared = SharedModel::share(&mut p, &model, PartyId::P0).unwrap();
        let mine = (p.id() == PartyId::P1).then_some(&images);
        let sx = share_input(&mut p, PartyId::P1, mine, &[2, 1, 28, 28]).unwrap();
        let logits = shared.forward(&mut p, &sx).unwrap();
        let revealed = p.reveal(&logits).unwrap();
        let classes = shared.classify(&mut p, &sx, PartyId::P1).unwrap();
        (revealed, classes)
    })
    .unwrap()
}

#[test]
fn private_network_is_bit_identical_to_the_cpu_backend() {
    let Some(wgpu) = native() else { return };
    let on_cpu = private_lenet(&CpuBackend::new());
    let on_wgpu = private_lenet(&wgpu);
    assert_eq!(
        on_wgpu, on_cpu,
        "wgpu and CPU runs of the same protocol differ"
    );
    assert!(on_cpu[1].1.is_some(), "the data owner got predictions");
}
