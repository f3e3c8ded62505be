//! Every layer kind, as an ONNX file made with the official `onnx` package and checked by
//! `onnxruntime` (`tests/fixtures/make_onnx_fixtures.py`: `every_layer` and `matmul_seq`):
//! plaintext forward = onnxruntime; plaintext backward = finite differences; private
//! forward = plaintext within the fixed-point bound; private SGD steps = plaintext SGD
//! steps; and export → import gives the same function.

mod common;

use common::{fixture, pseudo_random, read_f32};

use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::model::ParamKind;
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::private::{PrivateSgd, SharedModel, share_input};
use cryptgpu_nn::suite::onehot;
use cryptgpu_nn::{Model, Tensor, onnx, plain};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party};
use cryptgpu_transport::{PartyId, run_local_3pc};

fn every_layer() -> Model {
    onnx::import_file(&fixture("every_layer.onnx")).unwrap()
}

fn kinds(model: &Model) -> Vec<&'static str> {
    model.nodes().iter().map(|n| n.op.kind()).collect()
}

fn setup(
    t: &mut cryptgpu_transport::LocalTransport,
) -> Party<CpuBackend, &mut cryptgpu_transport::LocalTransport> {
    common::seeded_party(t, FixedPoint::default(), 9)
}

fn private_logits(model: &Model, x: &Tensor) -> Vec<f64> {
    let out = run_local_3pc(|t| {
        let mut p = setup(t);
        let shared = SharedModel::share(&mut p, model, PartyId::P0).unwrap();
        let input = (p.id() == PartyId::P1).then_some(x);
        let sx = share_input(&mut p, PartyId::P1, input, x.shape()).unwrap();
        let logits = shared.forward(&mut p, &sx).unwrap();
        Ok::<_, cryptgpu_share::ShareError>(p.reveal_f64(&logits).unwrap())
    })
    .unwrap();
    let [a, _, _] = out.map(|r| r.unwrap());
    a
}

#[test]
fn every_layer_imports_and_matches_onnxruntime() {
    let model = every_layer();
    assert_eq!(
        kinds(&model),
        [
            "Input",
            "AddConst",
            "MulConst",
            "Conv2d",
            "LeakyReLU",
            "Conv2d",
            "Clip",
            "MaxPool2d",
            "Sigmoid",
            "Mul",
            "Tanh",
            "Transpose",
            "Concat",
            "Pad",
            "AvgPool2d",
            "GlobalMaxPool",
            "Flatten",
            "GlobalAvgPool",
            "Flatten",
            "Add",
            "Dropout",
            "Linear",
            "LogSoftmax",
        ]
    );
    let x = read_f32("every_layer.input.bin", &[3, 4, 9, 9]);
    let want = read_f32("every_layer.output.bin", &[3, 5]);
    let got = plain::predict(&model, &x).unwrap();
    assert!(
        got.max_abs_diff(&want) < 1e-5,
        "differs from onnxruntime by {}",
        got.max_abs_diff(&want)
    );
    // Both clip bounds, the leaky slope and the pools' padding are exercised.
    let fwd = plain::forward(&model, &x, plain::Mode::Inference).unwrap();
    let clip_in = &fwd.values[5];
    assert!(clip_in.data().iter().any(|&v| v < 0.0) && clip_in.data().iter().any(|&v| v > 6.0));
}

#[test]
fn matmul_over_batch_dimensions_matches_onnxruntime() {
    let model = onnx::import_file(&fixture("matmul_seq.onnx")).unwrap();
    assert_eq!(kinds(&model), ["Input", "Linear", "ReLU", "Flatten"]);
    let x = read_f32("matmul_seq.input.bin", &[2, 3, 4]);
    let want = read_f32("matmul_seq.output.bin", &[2, 15]);
    let got = plain::predict(&model, &x).unwrap();
    assert!(got.max_abs_diff(&want) < 1e-5);
    let private = Tensor::new(&[2, 15], private_logits(&model, &x)).unwrap();
    assert!(
        private.max_abs_diff(&got) < 1e-4,
        "{}",
        private.max_abs_diff(&got)
    );
}

/// A small fixture: plaintext against onnxruntime, private against plaintext, and the
/// plaintext gradients of every parameter and input against finite differences.
fn check_fixture(file: &str, input: &[usize], output: &[usize], want_kinds: &[&str]) {
    let model = onnx::import_file(&fixture(&format!("{file}.onnx"))).unwrap();
    assert_eq!(kinds(&model), want_kinds, "{file}");
    let x = read_f32(&format!("{file}.input.bin"), input);
    let want = read_f32(&format!("{file}.output.bin"), output);
    let got = plain::predict(&model, &x).unwrap();
    assert!(
        got.max_abs_diff(&want) < 1e-5,
        "{file}: {}",
        got.max_abs_diff(&want)
    );
    let private = Tensor::new(output, private_logits(&model, &x)).unwrap();
    assert!(
        private.max_abs_diff(&got) < 1e-3,
        "{file}: {}",
        private.max_abs_diff(&got)
    );
    let fwd = plain::forward(&model, &x, plain::Mode::Inference).unwrap();
    let weights = pseudo_random(got.len(), 3);
    let objective = |m: &Model, input: &Tensor| -> f64 {
        let out = plain::predict(m, input).unwrap();
        out.data().iter().zip(&weights).map(|(a, b)| a * b).sum()
    };
    let seed = Tensor::new(output, weights.clone()).unwrap();
    let grads = plain::backward(&model, &fwd, model.output(), seed).unwrap();
    let h = 1e-6;
    let close =
        |numeric: f64, analytic: f64| (numeric - analytic).abs() < 1e-5 * (1.0 + numeric.abs());
    for (name, g) in &grads.params {
        for i in 0..g.len() {
            let mut plus = model.clone();
            plus.params.get_mut(name).unwrap().data_mut()[i] += h;
            let mut minus = model.clone();
            minus.params.get_mut(name).unwrap().data_mut()[i] -= h;
            let numeric = (objective(&plus, &x) - objective(&minus, &x)) / (2.0 * h);
            assert!(close(numeric, g.data()[i]), "{file}: {name}[{i}]");
        }
    }
    for i in 0..x.len() {
        let mut plus = x.clone();
        plus.data_mut()[i] += h;
        let mut minus = x.clone();
        minus.data_mut()[i] -= h;
        let numeric = (objective(&model, &plus) - objective(&model, &minus)) / (2.0 * h);
        assert!(
            close(numeric, grads.input().data()[i]),
            "{file}: input[{i}]"
        );
    }
}

/// MatMul of two computed values (batched, one side broadcast).
#[test]
fn matmul_of_two_values_matches_onnxruntime_and_finite_differences() {
    check_fixture(
        "attention",
        &[2, 3, 4],
        &[2, 12],
        &[
            "Input",
            "Linear",
            "Linear",
            "Transpose",
            "MatMul",
            "MulConst",
            "MatMul",
            "Flatten",
        ],
    );
}

/// Split along channels and Slice of computed values (a whole axis is no slice).
#[test]
fn split_and_slice_match_onnxruntime_and_finite_differences() {
    check_fixture(
        "split_slice",
        &[2, 6, 5, 5],
        &[2, 3],
        &[
            "Input", "Slice", "Slice", "ReLU", "Slice", "Concat", "Slice", "Flatten", "Linear",
        ],
    );
}

#[test]
fn every_layer_private_forward_matches_plaintext() {
    let model = every_layer();
    let x = read_f32("every_layer.input.bin", &[3, 4, 9, 9]);
    let fwd = plain::forward(&model, &x, plain::Mode::Inference).unwrap();
    let want = fwd.logits(&model);
    let got = Tensor::new(want.shape(), private_logits(&model, &x)).unwrap();
    assert!(
        got.max_abs_diff(want) < 2e-3,
        "private logits differ by {}",
        got.max_abs_diff(want)
    );
    assert_eq!(got.argmax_rows().unwrap(), want.argmax_rows().unwrap());
}

#[test]
fn every_layer_backward_matches_finite_differences() {
    let model = every_layer();
    let x = read_f32("every_layer.input.bin", &[3, 4, 9, 9]);
    let mode = plain::Mode::Training { seed: 4 };
    let fwd = plain::forward(&model, &x, mode).unwrap();
    let from = model.logits();
    let weights = pseudo_random(fwd.values[from].len(), 2);
    let objective = |m: &Model, input: &Tensor| -> f64 {
        let f = plain::forward(m, input, mode).unwrap();
        f.values[from]
            .data()
            .iter()
            .zip(&weights)
            .map(|(a, b)| a * b)
            .sum()
    };
    let grad = Tensor::new(fwd.values[from].shape(), weights.clone()).unwrap();
    let grads = plain::backward(&model, &fwd, from, grad).unwrap();
    let h = 1e-6;
    let check = |what: &str, analytic: f64, plus: f64, minus: f64| {
        let numeric = (plus - minus) / (2.0 * h);
        let err = (analytic - numeric).abs() / (1e-3 + analytic.abs().max(numeric.abs()));
        assert!(err < 1e-4, "{what}: analytic {analytic}, numeric {numeric}");
    };
    for (name, g) in &grads.params {
        for i in (0..g.len()).step_by(7) {
            let mut plus = model.clone();
            plus.params.get_mut(name).unwrap().data_mut()[i] += h;
            let mut minus = model.clone();
            minus.params.get_mut(name).unwrap().data_mut()[i] -= h;
            check(
                &format!("{name}[{i}]"),
                g.data()[i],
                objective(&plus, &x),
                objective(&minus, &x),
            );
        }
    }
    for i in (0..x.len()).step_by(11) {
        let mut plus = x.clone();
        plus.data_mut()[i] += h;
        let mut minus = x.clone();
        minus.data_mut()[i] -= h;
        check(
            &format!("input[{i}]"),
            grads.input().data()[i],
            objective(&model, &plus),
            objective(&model, &minus),
        );
    }
    let trainable = model
        .param_specs()
        .iter()
        .filter(|s| s.kind == ParamKind::Trainable)
        .count();
    assert_eq!(grads.params.len(), trainable);
}

/// Two private SGD steps of `start` on `[3, ..input]` batches against plaintext SGD.
fn check_private_sgd(start: &Model, input: &[usize], classes: usize) {
    let config = SgdConfig::new(0.05).with_momentum(0.9);
    let mut model = start.clone();
    let mut sgd = Sgd::new(config);
    let shape: Vec<usize> = std::iter::once(3).chain(input.iter().copied()).collect();
    let len: usize = shape.iter().product();
    let batches: Vec<(Tensor, Vec<usize>)> = (0..2)
        .map(|s| {
            let x = Tensor::new(&shape, pseudo_random(len, 30 + s)).unwrap();
            (x, vec![0, classes - 1, 1])
        })
        .collect();
    for (step, (x, labels)) in batches.iter().enumerate() {
        plain::train_step(&mut model, &mut sgd, x, labels, step as u64).unwrap();
    }
    let out = run_local_3pc(|t| {
        let mut p = setup(t);
        let mut shared = SharedModel::share_for_training(&mut p, start, PartyId::P0).unwrap();
        let mut opt = PrivateSgd::new(config);
        let owner = p.id() == PartyId::P1;
        for (step, (x, labels)) in batches.iter().enumerate() {
            let sx = share_input(&mut p, PartyId::P1, owner.then_some(x), x.shape()).unwrap();
            let hot = onehot(labels, classes);
            let sy =
                share_input(&mut p, PartyId::P1, owner.then_some(&hot), &[3, classes]).unwrap();
            shared
                .train_step(&mut p, &mut opt, &sx, &sy, step as u64)
                .unwrap();
        }
        Ok::<_, cryptgpu_share::ShareError>(shared.reveal_to(&mut p, PartyId::P0).unwrap())
    })
    .unwrap();
    let [owner, _, _] = out.map(|r| r.unwrap());
    let private = owner.expect("the model owner gets the model");
    common::assert_trained_alike(&private, &model, start, 2e-3, 1e-3);
}

#[test]
fn every_layer_private_sgd_tracks_plaintext_sgd() {
    check_private_sgd(&every_layer(), &[4, 9, 9], 5);
}

#[test]
fn the_suites_every_layer_model_private_sgd_tracks_plaintext_sgd() {
    check_private_sgd(&cryptgpu_nn::suite::every_layer_model(23), &[2, 6, 6], 3);
}

#[test]
fn every_layer_survives_export_and_import() {
    for (file, shape) in [
        ("every_layer", vec![3, 4, 9, 9]),
        ("attention", vec![2, 3, 4]),
        ("matmul_seq", vec![2, 3, 4]),
        ("split_slice", vec![2, 6, 5, 5]),
    ] {
        let model = onnx::import_file(&fixture(&format!("{file}.onnx"))).unwrap();
        let bytes = onnx::export(&model, onnx::TensorEncoding::Raw).unwrap();
        let back = onnx::import(&bytes).unwrap();
        let x = read_f32(&format!("{file}.input.bin"), &shape);
        let a = plain::predict(&model, &x).unwrap();
        let b = plain::predict(&back, &x).unwrap();
        assert!(a.max_abs_diff(&b) < 1e-5, "{file}: {}", a.max_abs_diff(&b));
        assert_eq!(kinds(&model), kinds(&back), "{file}");
    }
    let model = cryptgpu_nn::suite::every_layer_model(23);
    let back = onnx::import(&onnx::export(&model, onnx::TensorEncoding::Raw).unwrap()).unwrap();
    assert_eq!(kinds(&model), kinds(&back));
    let x = cryptgpu_nn::suite::sample_inputs(3, 2);
    let (a, b) = (
        plain::predict(&model, &x).unwrap(),
        plain::predict(&back, &x).unwrap(),
    );
    assert!(a.max_abs_diff(&b) < 1e-5);
}

/// The suite's every-layer network (what the wgpu and CUDA crates compare bit for bit with
/// the CPU backend) trains on the CPU backend, and its private logits track plaintext.
#[test]
fn the_suites_every_layer_model_trains_and_tracks_plaintext() {
    cryptgpu_nn::suite::check_every_layer_matches_cpu(&CpuBackend::new());
    let model = cryptgpu_nn::suite::every_layer_model(23);
    let x = cryptgpu_nn::suite::sample_inputs(5, 3);
    let want = plain::forward(&model, &x, plain::Mode::Inference).unwrap();
    let want = want.logits(&model);
    let got = Tensor::new(want.shape(), private_logits(&model, &x)).unwrap();
    assert!(got.max_abs_diff(want) < 2e-3, "{}", got.max_abs_diff(want));
}

/// Sigmoid and Tanh privately at f = 20 over their stated domains: within 2^-12 and 2^-11.
#[test]
fn sigmoid_and_tanh_hold_their_stated_error() {
    use cryptgpu_nn::layers::prelude::*;
    use cryptgpu_nn::model::GraphBuilder;
    let xs: Vec<f64> = (0..=400).map(|i| -100.0 + i as f64 * 0.5).collect();
    let x = Tensor::new(&[1, xs.len()], xs.clone()).unwrap();
    for (op, bound, f) in [
        (
            Op::Sigmoid(Sigmoid),
            2f64.powi(-12),
            (|v: f64| 1.0 / (1.0 + (-v).exp())) as fn(f64) -> f64,
        ),
        (Op::Tanh(Tanh), 2f64.powi(-11), f64::tanh),
    ] {
        let mut b = GraphBuilder::new();
        let out = b.add("act", op.clone(), &[0]);
        let model = b.finish("act", &[xs.len()], out, 0).unwrap();
        let got = run_local_3pc(|t| {
            let mut p = Party::setup_with(
                CpuBackend::new(),
                t,
                FixedPoint::new(20).unwrap(),
                KeySource::InsecureSeeded(2),
            )
            .unwrap();
            let shared = SharedModel::share(&mut p, &model, PartyId::P0).unwrap();
            let mine = p.id() == PartyId::P1;
            let sx = share_input(&mut p, PartyId::P1, mine.then_some(&x), x.shape()).unwrap();
            let y = shared.forward(&mut p, &sx).unwrap();
            Ok::<_, cryptgpu_share::ShareError>(p.reveal_f64(&y).unwrap())
        })
        .unwrap();
        let [a, _, _] = got.map(|r| r.unwrap());
        let worst = xs
            .iter()
            .zip(&a)
            .map(|(&v, &y)| (y - f(v)).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{}: largest error {worst:.2e} (bound {bound:.2e})",
            op.kind()
        );
        assert!(
            worst < bound,
            "{}: error {worst:e} above {bound:e}",
            op.kind()
        );
    }
}

/// Corrupted files give an error or a model, never a panic: every fixture with bytes
/// changed at random places (a fixed xorshift sequence), imported and, when it imports,
/// run in plaintext.
#[test]
fn corrupted_onnx_files_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (file, shape) in [
        ("every_layer", vec![1, 4, 9, 9]),
        ("attention", vec![1, 3, 4]),
        ("split_slice", vec![1, 6, 5, 5]),
        ("torch/mnist_cnn_legacy", vec![1, 1, 28, 28]),
    ] {
        let bytes = std::fs::read(fixture(&format!("{file}.onnx"))).unwrap();
        // The graph is at the start; weights follow (and dominate) in the torch export.
        let span = bytes.len().min(20_000);
        let mut imported = 0;
        for _ in 0..1000 {
            let mut b = bytes.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % span;
                b[at] = next() as u8;
            }
            let result = std::panic::catch_unwind(|| {
                let model = onnx::import(&b).ok()?;
                let _ = plain::predict(&model, &Tensor::zeros(&shape));
                Some(())
            });
            let Ok(outcome) = result else {
                panic!("{file}: a corrupted file panicked the importer");
            };
            imported += usize::from(outcome.is_some());
        }
        eprintln!("{file}: {imported} of 1000 corrupted copies still imported");
    }
}
