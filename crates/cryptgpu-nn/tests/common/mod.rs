//! What several of this crate's tests use: the fixtures folder, raw f32 fixture files, a
//! seeded pseudo-random sequence, a CPU party with repeatable (insecure, test-only) keys,
//! and a model's private logits.

#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;

use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::private::{SharedModel, share_model_input};
use cryptgpu_nn::{Model, Tensor};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party};
use cryptgpu_transport::{LocalTransport, PartyId, run_local_3pc};

/// `tests/fixtures/<name>`.
pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fixture of little-endian f32 values as a tensor of `shape`.
pub(crate) fn read_f32(name: &str, shape: &[usize]) -> Tensor {
    read_f32_file(&fixture(name), shape)
}

/// A file of little-endian f32 values as a tensor of `shape`.
pub(crate) fn read_f32_file(path: &std::path::Path, shape: &[usize]) -> Tensor {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Tensor::from_f32(shape, &values).unwrap()
}

/// `model`'s logits on `x`, computed privately by three parties on the CPU backend (P0
/// shares the model, P1 the input, token ids as one-hot rows), revealed.
pub(crate) fn private_logits(model: &Model, x: &Tensor) -> Tensor {
    let shape = x.shape().to_vec();
    let out = run_local_3pc(|t| {
        let mut p = seeded_party(t, FixedPoint::default(), 5);
        let shared = SharedModel::share(&mut p, model, PartyId::P0).unwrap();
        let input = (p.id() == PartyId::P1).then_some(x);
        let sx = share_model_input(&mut p, model, PartyId::P1, input, &shape).unwrap();
        let logits = shared.forward(&mut p, &sx).unwrap();
        Ok::<_, cryptgpu_share::ShareError>(p.reveal_f64(&logits).unwrap())
    })
    .unwrap();
    let [a, _, _] = out.map(|r| r.unwrap());
    let logits_shape = model.shapes(shape[0]).unwrap()[model.logits()].clone();
    Tensor::new(&logits_shape, a).unwrap()
}

/// `n` values in [−1, 1) from an xorshift sequence seeded by `seed`.
pub(crate) fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// A CPU party at `fixed` whose keys come from the public `seed` (repeatable runs).
pub(crate) fn seeded_party(
    t: &mut LocalTransport,
    fixed: FixedPoint,
    seed: u64,
) -> Party<CpuBackend, &mut LocalTransport> {
    Party::setup_with(CpuBackend::new(), t, fixed, KeySource::InsecureSeeded(seed)).unwrap()
}

/// Checks that every parameter of `private` is within `tolerance` of plaintext training's
/// `trained`, and that training moved some weight of `start` by more than `min_move`.
pub(crate) fn assert_trained_alike(
    private: &cryptgpu_nn::Model,
    trained: &cryptgpu_nn::Model,
    start: &cryptgpu_nn::Model,
    tolerance: f64,
    min_move: f64,
) {
    let mut moved = 0.0f64;
    for (name, want) in &trained.params {
        let got = &private.params[name];
        for i in 0..want.len() {
            moved = moved.max((want.data()[i] - start.params[name].data()[i]).abs());
            let err = (got.data()[i] - want.data()[i]).abs();
            assert!(
                err < tolerance,
                "{name}[{i}]: private {} vs plaintext {}",
                got.data()[i],
                want.data()[i]
            );
        }
    }
    assert!(
        moved > min_move,
        "training moved the weights (by at most {moved})"
    );
}
