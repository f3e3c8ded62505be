//! The private executor's suite for every backend (feature `suite`): private training (two
//! SGD steps through every trainable layer, BatchNorm with batch statistics included) and
//! inference must give, bit for bit, the ring elements the CPU reference backend gives under
//! the same seeded keys. Backend crates run it with [`private_nn_tests!`](crate::private_nn_tests).

use crate::layers::prelude::*;
use cryptgpu_backend::{GpuBackend, Pool2dParams};
use cryptgpu_cpu::CpuBackend;
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party};
use cryptgpu_transport::{PartyId, run_local_3pc};

use crate::model::{GraphBuilder, Model, Op};
use crate::optim::SgdConfig;
use crate::private::{PrivateSgd, SharedModel, share_input};
use crate::tensor::Tensor;
use crate::zoo;

/// A small residual network on `[2, 6, 6]` inputs with 3 classes and every trainable op:
/// conv, ReLU, max- and average-pooling, a residual add, flatten, dropout and linear; with
/// `with_batchnorm`, BatchNorm after the first conv and after the add. Weights are
/// PyTorch's default initialisation from `seed`.
pub fn small_trainable_model(seed: u64, with_batchnorm: bool) -> Model {
    let mut b = GraphBuilder::new();
    let mut c0 = b.add("c0", zoo::conv(2, 4, 3, 1, 1, true), &[0]);
    if with_batchnorm {
        c0 = b.add("bn0", zoo::batchnorm(4), &[c0]);
    }
    let r1 = b.add("r1", Op::Relu(Relu), &[c0]);
    let m2 = b.add(
        "m2",
        Op::MaxPool2d(MaxPool2d::new(Pool2dParams::new(2, 2))),
        &[r1],
    );
    let c3 = b.add("c3", zoo::conv(4, 4, 3, 1, 1, true), &[m2]);
    let mut a4 = b.add("a4", Op::Add(Add::default()), &[c3, m2]);
    if with_batchnorm {
        a4 = b.add("bn4", zoo::batchnorm(4), &[a4]);
    }
    let p5 = b.add(
        "p5",
        Op::AvgPool2d(AvgPool2d::new(Pool2dParams::new(3, 3))),
        &[a4],
    );
    let f6 = b.add("f6", Op::Flatten(Flatten), &[p5]);
    let d6 = b.add("d6", Op::Dropout(Dropout { p: 0.25 }), &[f6]);
    let l7 = b.add("l7", zoo::linear(4, 6), &[d6]);
    let r8 = b.add("r8", Op::Relu(Relu), &[l7]);
    let l9 = b.add("l9", zoo::linear(6, 3), &[r8]);
    b.finish("small-trainable", &[2, 6, 6], l9, seed)
        .expect("a well-formed graph")
}

/// `n` inputs `[n, 2, 6, 6]` in [-2, 2) from `seed` (xorshift).
pub fn sample_inputs(seed: u64, n: usize) -> Tensor {
    let mut x = seed | 1;
    let data = (0..n * 72)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        })
        .collect();
    Tensor::new(&[n, 2, 6, 6], data).expect("the shape fits")
}

/// One-hot rows `[N, classes]` of `labels`.
pub fn onehot(labels: &[usize], classes: usize) -> Tensor {
    let mut hot = vec![0.0; labels.len() * classes];
    labels
        .iter()
        .enumerate()
        .for_each(|(i, &l)| hot[i * classes + l] = 1.0);
    Tensor::new(&[labels.len(), classes], hot).expect("the shape fits")
}

/// What one party sees of a private run: the revealed parameters after training (model
/// owner only) and the revealed logits of a test batch, as ring elements.
pub type Transcript = (Option<Vec<(String, Vec<f64>)>>, Vec<u64>);

/// Two private SGD steps (momentum, weight decay) of `small_trainable_model(21, true)`
/// shared for training on `backend` with seeded keys, then inference on a fresh batch with
/// the running statistics: every party's [`Transcript`].
pub fn private_training_transcript<B: GpuBackend>(backend: &B) -> [Transcript; 3] {
    let model = small_trainable_model(21, true);
    let config = SgdConfig::new(0.1)
        .with_momentum(0.9)
        .with_weight_decay(1e-3);
    let batches: Vec<(Tensor, Tensor)> = (0..2)
        .map(|s| (sample_inputs(40 + s, 4), onehot(&[0, 2, 1, 2], 3)))
        .collect();
    let test = sample_inputs(77, 3);
    let (model_owner, data_owner) = (PartyId::P0, PartyId::P1);
    run_local_3pc(|t| {
        let mut p = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::new(20).expect("20 fractional bits"),
            KeySource::InsecureSeeded(8),
        )
        .expect("setup");
        let mut shared =
            SharedModel::share_for_training(&mut p, &model, model_owner).expect("shared");
        let mut sgd = PrivateSgd::new(config);
        let mine = p.id() == data_owner;
        for (step, (x, y)) in batches.iter().enumerate() {
            let sx = share_input(&mut p, data_owner, mine.then_some(x), x.shape()).expect("x");
            let sy = share_input(&mut p, data_owner, mine.then_some(y), y.shape()).expect("y");
            shared
                .train_step(&mut p, &mut sgd, &sx, &sy, step as u64)
                .expect("a training step");
        }
        let st = share_input(&mut p, data_owner, mine.then_some(&test), test.shape())
            .expect("test batch");
        let logits = shared.forward(&mut p, &st).expect("inference");
        let logits = p.reveal(&logits).expect("reveal");
        let trained = shared
            .reveal_to(&mut p, model_owner)
            .expect("reveal the model")
            .map(|m| {
                m.params
                    .into_iter()
                    .map(|(name, t)| (name, t.data().to_vec()))
                    .collect()
            });
        (trained, logits)
    })
    .expect("three parties ran")
}

/// [`private_training_transcript`] on `backend` equals the CPU backend's, element for
/// element, and training moved the weights.
pub fn check_private_training_matches_cpu<B: GpuBackend>(backend: &B) {
    let on_cpu = private_training_transcript(&CpuBackend::new());
    let here = private_training_transcript(backend);
    let trained = on_cpu[0]
        .0
        .as_ref()
        .expect("the model owner gets the model");
    let start = small_trainable_model(21, true);
    assert!(
        trained
            .iter()
            .any(|(name, v)| v.iter().zip(start.params[name].data()).any(|(a, b)| a != b)),
        "training changed no parameter"
    );
    for (party, (got, want)) in here.iter().zip(&on_cpu).enumerate() {
        assert_eq!(
            got.1, want.1,
            "P{party}: the logits after training differ from the CPU backend's"
        );
        assert_eq!(
            got.0, want.0,
            "P{party}: the trained parameters differ from the CPU backend's"
        );
    }
}

/// The private executor's tests for a backend crate: `private_nn_tests!(make)`, where
/// `make() -> Option<B>` gives the backend or `None` (after printing why) to skip.
#[macro_export]
macro_rules! private_nn_tests {
    ($make:path) => {
        #[test]
        fn private_training_is_bit_identical_to_the_cpu_backend() {
            if let Some(backend) = $make() {
                $crate::suite::check_private_training_matches_cpu(&backend);
            }
        }
    };
}
