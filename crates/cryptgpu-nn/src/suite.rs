//! The private executor's suite for every backend (feature `suite`): private training (two
//! SGD steps through every trainable layer, BatchNorm with batch statistics included; and
//! through a network holding every other layer kind) and inference must give, bit for bit,
//! the ring elements the CPU reference backend gives under the same seeded keys. Backend
//! crates run it with [`private_nn_tests!`](crate::private_nn_tests).

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

/// A network on `[2, 6, 6]` inputs with 3 classes holding every layer kind that
/// [`small_trainable_model`] lacks: constants added and multiplied, a dilated depthwise
/// convolution, LeakyReLU, Clip, max- and average-pooling with `ceil_mode` and asymmetric
/// padding, `x · sigmoid(x)`, Tanh, Transpose, Concat, Pad, global max- and average-pooling,
/// Dropout and LogSoftmax.
pub fn every_layer_model(seed: u64) -> Model {
    use cryptgpu_backend::Conv2dParams;
    let mut b = GraphBuilder::new();
    let shape = vec![1, 2, 1, 1];
    let a = b.add(
        "shift",
        AddConst {
            shape: shape.clone(),
            negate_input: false,
        },
        &[0],
    );
    let m = b.add("scale", MulConst { shape }, &[a]);
    let dw = Conv2d {
        dilation: [2, 2],
        ..Conv2d::new(2, 2, [3, 3], Conv2dParams::new(1, 2).with_groups(2), true)
    };
    let c0 = b.add("dw", dw, &[m]);
    let l0 = b.add("leaky", LeakyRelu { alpha: 0.1 }, &[c0]);
    let c1 = b.add("pw", zoo::conv(2, 4, 3, 1, 1, true), &[l0]);
    let k0 = b.add(
        "clip",
        Clip {
            min: Some(0.0),
            max: Some(1.0),
        },
        &[c1],
    );
    let window = PoolWindow {
        kernel: [3, 3],
        stride: [2, 2],
        pads: [0, 0, 1, 1],
        ceil_mode: true,
    };
    let m0 = b.add("maxpool", MaxPool2d { window }, &[k0]);
    let g0 = b.add("sigmoid", Sigmoid, &[m0]);
    let sw = b.add("swish", Mul, &[m0, g0]);
    let t0 = b.add("tanh", Tanh, &[m0]);
    let tt = b.add(
        "transpose",
        Transpose {
            perm: vec![0, 1, 3, 2],
        },
        &[t0],
    );
    let cc = b.add("concat", Concat { axis: 1 }, &[sw, tt]);
    let mm = b.add("matmul", MatMul, &[sw, tt]);
    let cm = b.add("concat2", Concat { axis: 1 }, &[mm, cc]);
    let sl = b.add(
        "slice",
        Slice {
            axis: 1,
            start: 1,
            end: 11,
        },
        &[cm],
    );
    let pd = b.add("pad", Pad { pads: [0, 1, 1, 0] }, &[sl]);
    let window = PoolWindow {
        kernel: [2, 2],
        stride: [2, 2],
        pads: [1, 1, 1, 1],
        ceil_mode: true,
    };
    let ap = b.add(
        "avgpool",
        AvgPool2d {
            window,
            count_include_pad: false,
        },
        &[pd],
    );
    let gm = b.add("gmp", GlobalMaxPool, &[ap]);
    let f0 = b.add("gmp_flat", Flatten, &[gm]);
    let ga = b.add("gap", GlobalAvgPool, &[ap]);
    let f1 = b.add("gap_flat", Flatten, &[ga]);
    let sum = b.add("sum", Add::default(), &[f0, f1]);
    let d0 = b.add("drop", Dropout { p: 0.25 }, &[sum]);
    let fc = b.add("fc", zoo::linear(10, 3), &[d0]);
    let out = b.add("log_softmax", LogSoftmax, &[fc]);
    let mut model = b
        .finish("every-layer", &[2, 6, 6], out, seed)
        .expect("a well-formed graph");
    for (name, values) in [
        ("shift.constant", [0.1, -0.2]),
        ("scale.constant", [1.5, 0.8]),
    ] {
        let t = Tensor::new(&[1, 2, 1, 1], values.to_vec()).expect("4 values");
        model.params.insert(name.into(), t);
    }
    model
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
    training_transcript(backend, &small_trainable_model(21, true))
}

/// [`private_training_transcript`] of any model on `[2, 6, 6]` inputs with 3 classes.
pub fn training_transcript<B: GpuBackend>(backend: &B, model: &Model) -> [Transcript; 3] {
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
            SharedModel::share_for_training(&mut p, model, model_owner).expect("shared");
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
    check_transcripts_match(backend, &small_trainable_model(21, true));
}

/// [`check_private_training_matches_cpu`] for [`every_layer_model`].
pub fn check_every_layer_matches_cpu<B: GpuBackend>(backend: &B) {
    check_transcripts_match(backend, &every_layer_model(23));
}

fn check_transcripts_match<B: GpuBackend>(backend: &B, start: &Model) {
    let on_cpu = training_transcript(&CpuBackend::new(), start);
    let here = training_transcript(backend, start);
    let trained = on_cpu[0]
        .0
        .as_ref()
        .expect("the model owner gets the model");
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

        #[test]
        fn every_layer_kind_is_bit_identical_to_the_cpu_backend() {
            if let Some(backend) = $make() {
                $crate::suite::check_every_layer_matches_cpu(&backend);
            }
        }
    };
}
