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

/// The transformer fixtures the suite runs on every backend: a ViT (patch convolution,
/// class token, LayerNorm, exact GELU through Erf, attention) and a GPT-2-style decoder on
/// token ids (embedding lookup by one-hot shares, causal mask, tanh GELU) and PyTorch's
/// `nn.TransformerEncoderLayer` (its attention moves the batch axis), as
/// `torch.onnx.export` wrote them (`tests/fixtures/transformers/`).
const TRANSFORMERS: [(&str, &[u8]); 3] = [
    (
        "vit_legacy",
        include_bytes!("../tests/fixtures/transformers/vit_legacy.onnx"),
    ),
    (
        "gpt2_legacy",
        include_bytes!("../tests/fixtures/transformers/gpt2_legacy.onnx"),
    ),
    (
        "torch_encoder_legacy",
        include_bytes!("../tests/fixtures/transformers/torch_encoder_legacy.onnx"),
    ),
];

/// The private logits of each of [`TRANSFORMERS`] on two examples, revealed as ring
/// elements, are the same on `backend` as on the CPU backend, bit for bit.
pub fn check_transformers_match_cpu<B: GpuBackend>(backend: &B) {
    for (name, bytes) in TRANSFORMERS {
        let model = crate::onnx::import(bytes).expect("a fixture imports");
        let mut shape = vec![2];
        shape.extend(model.input_shape());
        let n: usize = shape.iter().product();
        let values: Vec<f64> = match model.token_vocabulary() {
            Some(v) => (0..n).map(|i| ((i * 7 + 3) % v) as f64).collect(),
            None => (0..n)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 40.0)
                .collect(),
        };
        let x = Tensor::new(&shape, values).expect("an input");
        let here = revealed_logits(backend, &model, &x);
        let on_cpu = revealed_logits(&CpuBackend::new(), &model, &x);
        assert_eq!(
            here, on_cpu,
            "{name}: the private logits differ from the CPU backend's"
        );
    }
}

/// `model`'s private logits on `x` (P0 the model owner, P1 the data owner, seeded keys),
/// revealed as ring elements.
fn revealed_logits<B: GpuBackend>(backend: &B, model: &Model, x: &Tensor) -> Vec<u64> {
    let [got, ..] = run_local_3pc(|t| {
        let mut p = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::default(),
            KeySource::InsecureSeeded(6),
        )
        .expect("setup");
        let shared = SharedModel::share(&mut p, model, PartyId::P0).expect("shared");
        let mine = (p.id() == PartyId::P1).then_some(x);
        let sx = crate::private::share_model_input(&mut p, model, PartyId::P1, mine, x.shape())
            .expect("input");
        let y = shared.forward(&mut p, &sx).expect("forward");
        p.reveal(&y).expect("reveal")
    })
    .expect("three parties ran");
    got
}

/// Runs `model` privately on `x` at `frac_bits` fractional bits (the model owner P0 and the
/// data owner P1 sharing, seeded keys; the default comparison domain) and returns the
/// revealed output, with the plaintext executor's.
pub fn private_and_plain<B: GpuBackend>(
    backend: &B,
    model: &Model,
    x: &Tensor,
    frac_bits: u32,
) -> (Vec<f64>, Vec<f64>) {
    let plain = crate::plain::forward(model, x, crate::plain::Mode::Inference)
        .expect("plaintext forward")
        .logits(model)
        .data()
        .to_vec();
    let [got, ..] = run_local_3pc(|t| {
        let mut p = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::new(frac_bits).expect("a valid format"),
            KeySource::InsecureSeeded(5),
        )
        .expect("setup");
        let shared = SharedModel::share(&mut p, model, PartyId::P0).expect("shared");
        let mine = (p.id() == PartyId::P1).then_some(x);
        let sx = share_input(&mut p, PartyId::P1, mine, x.shape()).expect("input");
        let y = shared.forward(&mut p, &sx).expect("forward");
        p.reveal_f64(&y).expect("reveal")
    })
    .expect("three parties ran");
    (got, plain)
}

/// A model of one layer `op` on inputs of `shape`, followed (when `identity_gemm`) by
/// Flatten and a Gemm with the identity matrix, as an ONNX export of the graph.
fn one_layer(op: Op, shape: &[usize], identity_gemm: bool) -> Model {
    let mut b = GraphBuilder::new();
    let mut last = b.add("layer", op, &[0]);
    let n: usize = shape.iter().product();
    if identity_gemm {
        let f = b.add("flatten", Op::Flatten(Flatten), &[last]);
        last = b.add("gemm", zoo::linear(n, n), &[f]);
    }
    let mut model = b
        .finish("one-layer", shape, last, 1)
        .expect("a well-formed graph");
    if identity_gemm {
        let eye: Vec<f64> = (0..n * n)
            .map(|i| if i / n == i % n { 1.0 } else { 0.0 })
            .collect();
        model.params.insert(
            "gemm.weight".into(),
            Tensor::new(&[n, n], eye).expect("n × n"),
        );
        model.params.insert(
            "gemm.bias".into(),
            Tensor::new(&[n], vec![0.0; n]).expect("n"),
        );
    }
    model
}

/// Clip and max-pooling exact at the edges of the default comparison domain (real
/// [−2^(ℓ−f), 2^(ℓ−f))), against the plaintext executor:
/// - Clip → Flatten → Gemm(identity) with bounds far beyond the domain (±1e7 at f = 20,
///   ±65504 at f = 24, fp16's max) passes [0.5, −2, 100, 3] through unchanged;
/// - Clip with binding bounds (two-sided, one-sided, lo > hi) at the domain's edges;
/// - MaxPool 3×3 with padding 1 (the backends' padding and the explicit one), and global
///   max-pooling, over [[6291456, 1], [2, 3]] at f = 20 (0.75·2^23), over four values of
///   −6291456, and over the domain's edges.
pub fn check_comparison_range_in_layers<B: GpuBackend>(backend: &B) {
    let close = |what: &str, got: &[f64], want: &[f64], tol: f64| {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
        }
    };
    let x = Tensor::new(&[1, 4], vec![0.5, -2.0, 100.0, 3.0]).expect("4 values");
    for (f, bound) in [(20u32, 1e7), (24, 65504.0)] {
        let clip = Clip {
            min: Some(-bound),
            max: Some(bound),
        };
        let model = one_layer(clip.into(), &[4], true);
        let (got, plain) = private_and_plain(backend, &model, &x, f);
        let tol = 2.0 / f64::from(1u32 << f);
        close(&format!("Clip ±{bound} at f = {f}"), &got, x.data(), tol);
        close(&format!("plaintext Clip ±{bound}"), &plain, x.data(), 0.0);
    }
    // Clip alone at the edges of the domain [−2^23, 2^23) at f = 20.
    let ulp = 1.0 / f64::from(1u32 << 20);
    let top = 8_388_608.0;
    let edges = vec![
        -top,
        -top + ulp,
        -1.5 - ulp,
        -1.5,
        -ulp,
        0.0,
        2.25,
        2.25 + ulp,
        top - 2.0 * ulp,
        top - ulp,
    ];
    let xe = Tensor::new(&[1, edges.len()], edges.clone()).expect("edges");
    for (lo, hi) in [
        (Some(-1.5), Some(2.25)),
        (Some(-1.5), None),
        (None, Some(2.25)),
        (Some(-1e7), Some(1e7)),
        (Some(-top), Some(top - ulp)),
        (Some(3.0), Some(-1.0)),
        (None, None),
    ] {
        let clip = Clip { min: lo, max: hi };
        let model = one_layer(clip.into(), &[edges.len()], false);
        let (got, plain) = private_and_plain(backend, &model, &xe, 20);
        close(
            &format!("Clip({lo:?}, {hi:?}) at the edges"),
            &got,
            &plain,
            0.0,
        );
    }
    // Max-pooling 3×3, padding 1, of 2×2 planes: the backends' symmetric padding, then
    // explicit padding (asymmetric pads), then global max-pooling.
    let planes = vec![
        6_291_456.0,
        1.0,
        2.0,
        3.0,
        -6_291_456.0,
        -6_291_456.0,
        -6_291_456.0,
        -6_291_456.0,
        -top,
        -top,
        -top,
        -top,
        -top,
        top - ulp,
        -top + ulp,
        -top,
    ];
    let xp = Tensor::new(&[4, 1, 2, 2], planes).expect("four planes");
    let symmetric = PoolWindow::from(Pool2dParams {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    });
    let asymmetric = PoolWindow {
        pads: [1, 1, 2, 2],
        ..symmetric
    };
    let ops: [(&str, Op); 3] = [
        ("MaxPool 3×3 pad 1", MaxPool2d { window: symmetric }.into()),
        (
            "MaxPool 3×3 pads [1, 1, 2, 2]",
            MaxPool2d { window: asymmetric }.into(),
        ),
        ("GlobalMaxPool", GlobalMaxPool.into()),
    ];
    for (what, op) in ops {
        let model = one_layer(op, &[1, 2, 2], false);
        let (got, plain) = private_and_plain(backend, &model, &xp, 20);
        close(what, &got, &plain, 0.0);
        if what == "MaxPool 3×3 pad 1" {
            let want = [
                [6_291_456.0; 4],
                [-6_291_456.0; 4],
                [-top; 4],
                [top - ulp; 4],
            ]
            .concat();
            close("MaxPool 3×3 pad 1 (the issue's values)", &got, &want, 0.0);
        }
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

        #[test]
        fn transformers_are_bit_identical_to_the_cpu_backend() {
            if let Some(backend) = $make() {
                $crate::suite::check_transformers_match_cpu(&backend);
            }
        }

        #[test]
        fn clip_and_max_pool_are_exact_at_the_comparison_domain_edges() {
            if let Some(backend) = $make() {
                $crate::suite::check_comparison_range_in_layers(&backend);
            }
        }
    };
}
