//! The private executor against the f64 plaintext executor: every layer forward (a small
//! residual network with every op, BatchNorm folded and not), classification revealed to
//! the data owner only, and private SGD steps tracking plaintext SGD, through BatchNorm
//! with batch statistics too.

mod common;

use cryptgpu_backend::Pool2dParams;
use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::layers::prelude::*;
use cryptgpu_nn::model::{GraphBuilder, Model, Op};
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::private::{PrivateSgd, SharedModel, share_input};
use cryptgpu_nn::suite::{onehot, sample_inputs, small_trainable_model};
use cryptgpu_nn::{Tensor, plain, zoo};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::Party;
use cryptgpu_transport::{PartyId, run_local_3pc};

const MODEL_OWNER: PartyId = PartyId::P0;
const DATA_OWNER: PartyId = PartyId::P1;

/// Every op: conv, BatchNorm (after a conv: folded; after an add: affine), ReLU, max- and
/// average-pooling, a residual add, global average pooling, flatten, dropout and linear.
fn small_model(seed: u64) -> Model {
    let mut b = GraphBuilder::new();
    let c0 = b.add("c0", zoo::conv(2, 4, 3, 1, 1, true), &[0]);
    let bn0 = b.add("bn0", zoo::batchnorm(4), &[c0]);
    let r1 = b.add("r1", Op::Relu(Relu), &[bn0]);
    let m2 = b.add(
        "m2",
        Op::MaxPool2d(MaxPool2d::new(Pool2dParams::new(2, 2))),
        &[r1],
    );
    let c3 = b.add("c3", zoo::conv(4, 4, 3, 1, 1, true), &[m2]);
    let a4 = b.add("a4", Op::Add(Add::default()), &[c3, m2]);
    let bn4 = b.add("bn4", zoo::batchnorm(4), &[a4]);
    let p5 = b.add(
        "p5",
        Op::AvgPool2d(AvgPool2d::new(Pool2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
        })),
        &[bn4],
    );
    let g6 = b.add("g6", Op::GlobalAvgPool(GlobalAvgPool), &[p5]);
    let f7 = b.add("f7", Op::Flatten(Flatten), &[g6]);
    let d8 = b.add("d8", Op::Dropout(Dropout { p: 0.5 }), &[f7]);
    let l9 = b.add("l9", zoo::linear(4, 5), &[d8]);
    let r10 = b.add("r10", Op::Relu(Relu), &[l9]);
    let l11 = b.add("l11", zoo::linear(5, 3), &[r10]);
    let mut model = b.finish("small", &[2, 6, 6], l11, seed).unwrap();
    // Non-trivial BatchNorm statistics.
    for (name, value) in [
        ("bn0.running_mean", 0.1),
        ("bn0.running_var", 1.7),
        ("bn4.running_var", 0.6),
        ("bn4.bias", -0.2),
    ] {
        model
            .params
            .get_mut(name)
            .unwrap()
            .data_mut()
            .iter_mut()
            .for_each(|v| *v = value);
    }
    model
}

fn setup(
    t: &mut cryptgpu_transport::LocalTransport,
) -> Party<CpuBackend, &mut cryptgpu_transport::LocalTransport> {
    common::seeded_party(t, FixedPoint::default(), 3)
}

#[test]
fn private_forward_and_classification_match_plaintext() {
    let model = small_model(11);
    let x = sample_inputs(5, 4);
    let want = plain::forward(&model, &x, plain::Mode::Inference).unwrap();
    let want_logits = want.logits(&model).clone();
    let want_classes = plain::classify(&model, &x).unwrap();
    let out = run_local_3pc(|t| {
        let mut p = setup(t);
        // Only the model owner's weights and the data owner's inputs carry values.
        let mine = if p.id() == MODEL_OWNER {
            small_model(11)
        } else {
            small_model(999)
        };
        let shared = SharedModel::share(&mut p, &mine, MODEL_OWNER).unwrap();
        let input = (p.id() == DATA_OWNER).then_some(&x);
        let sx = share_input(&mut p, DATA_OWNER, input, &[4, 2, 6, 6]).unwrap();
        let logits = shared.forward(&mut p, &sx).unwrap();
        let revealed = p.reveal_f64(&logits).unwrap();
        let classes = shared.classify(&mut p, &sx, DATA_OWNER).unwrap();
        Ok::<_, cryptgpu_share::ShareError>((revealed, classes))
    })
    .unwrap();
    let [a, b, c] = out.map(|r| r.unwrap());
    for (i, (&got, &w)) in a.0.iter().zip(want_logits.data()).enumerate() {
        assert!(
            (got - w).abs() < 1e-3,
            "logit {i}: private {got}, plaintext {w}"
        );
    }
    assert_eq!(a.1, None, "the model owner learns no prediction");
    assert_eq!(c.1, None, "the helper learns no prediction");
    assert_eq!(
        b.1,
        Some(want_classes),
        "the data owner gets the plaintext predictions"
    );
}

/// Trains `small_trainable_model(21, with_batchnorm)` for 3 SGD steps in plaintext and privately
/// (shared for training), checks every parameter and running statistic within `tolerance`,
/// and the trained shared model's inference logits on a fresh batch against plaintext
/// inference.
fn check_private_sgd(with_batchnorm: bool, tolerance: f64) {
    let config = SgdConfig::new(0.1)
        .with_momentum(0.9)
        .with_weight_decay(1e-3);
    let mut model = small_trainable_model(21, with_batchnorm);
    let mut sgd = Sgd::new(config);
    let batches: Vec<(Tensor, Vec<usize>)> = (0..3)
        .map(|s| (sample_inputs(40 + s, 4), vec![0, 2, 1, 2]))
        .collect();
    for (step, (x, labels)) in batches.iter().enumerate() {
        plain::train_step(&mut model, &mut sgd, x, labels, step as u64).unwrap();
    }
    let test = sample_inputs(77, 4);
    let want_logits = plain::forward(&model, &test, plain::Mode::Inference)
        .unwrap()
        .logits(&model)
        .clone();
    let trained = run_local_3pc(|t| {
        let mut p = setup(t);
        let start = small_trainable_model(21, with_batchnorm);
        let mut shared = SharedModel::share_for_training(&mut p, &start, MODEL_OWNER).unwrap();
        let mut opt = PrivateSgd::new(config);
        let owner = p.id() == DATA_OWNER;
        for (step, (x, labels)) in batches.iter().enumerate() {
            let sx = share_input(&mut p, DATA_OWNER, owner.then_some(x), x.shape()).unwrap();
            let hot = onehot(labels, 3);
            let sy = share_input(&mut p, DATA_OWNER, owner.then_some(&hot), &[4, 3]).unwrap();
            shared
                .train_step(&mut p, &mut opt, &sx, &sy, step as u64)
                .unwrap();
        }
        let st = share_input(&mut p, DATA_OWNER, owner.then_some(&test), test.shape()).unwrap();
        let logits = shared.forward(&mut p, &st).unwrap();
        let logits = p.reveal_f64(&logits).unwrap();
        let revealed = shared.reveal_to(&mut p, MODEL_OWNER).unwrap();
        Ok::<_, cryptgpu_share::ShareError>((revealed, logits))
    })
    .unwrap();
    let [owner, other, _] = trained.map(|r| r.unwrap());
    let private = owner.0.expect("the model owner gets the model");
    assert!(other.0.is_none(), "only the model owner gets the model");
    let start = small_trainable_model(21, with_batchnorm);
    common::assert_trained_alike(&private, &model, &start, tolerance, 1e-2);
    for (i, (got, want)) in owner.1.iter().zip(want_logits.data()).enumerate() {
        assert!(
            (got - want).abs() < 5.0 * tolerance,
            "logit {i} after training: private {got}, plaintext {want}"
        );
    }
}

#[test]
fn private_sgd_tracks_plaintext_sgd() {
    check_private_sgd(false, 2e-3);
}

#[test]
fn private_batchnorm_training_tracks_plaintext() {
    check_private_sgd(true, 2e-3);
}

/// A model shared for inference has its BatchNorm folded away: training it is refused with
/// a message that says what to do instead.
#[test]
fn training_a_model_shared_for_inference_through_batchnorm_is_refused() {
    let out = run_local_3pc(|t| {
        let mut p = setup(t);
        let model = small_trainable_model(3, true);
        // After `bn4` follows an add, so it stays a (folded) affine map.
        let mut shared = SharedModel::share(&mut p, &model, MODEL_OWNER).unwrap();
        let mut opt = PrivateSgd::new(SgdConfig::new(0.1));
        let x = p.constant_f64(&vec![0.5; 4 * 72], &[4, 2, 6, 6]).unwrap();
        let y = p
            .constant_f64(onehot(&[0, 1, 2, 0], 3).data(), &[4, 3])
            .unwrap();
        Ok::<_, cryptgpu_share::ShareError>(shared.train_step(&mut p, &mut opt, &x, &y, 0))
    })
    .unwrap();
    for r in out {
        let message = r.unwrap().unwrap_err().to_string();
        assert!(
            message.contains("bn4") && message.contains("share_for_training"),
            "{message}"
        );
    }
}

/// The public BatchNorm protocols check their shapes and say what they expect.
#[test]
fn batchnorm_protocols_reject_wrong_shapes() {
    use cryptgpu_nn::private::{batchnorm_backward, batchnorm_forward_train};
    let out = run_local_3pc(|t| {
        let mut p = setup(t);
        let x = p.constant_f64(&[0.5; 12], &[4, 3]).unwrap();
        let x4 = p.constant_f64(&[0.5; 24], &[2, 3, 2, 2]).unwrap();
        let c3 = p.constant_f64(&[1.0; 3], &[3]).unwrap();
        let c2 = p.constant_f64(&[1.0; 2], &[2]).unwrap();
        let flat = batchnorm_forward_train(&mut p, &x, 1e-5, &c3, &c3).err();
        let channels = batchnorm_forward_train(&mut p, &x4, 1e-5, &c2, &c3).err();
        let grads = batchnorm_backward(&mut p, &x4, &x, &c3, &c3).err();
        Ok::<_, cryptgpu_share::ShareError>([flat, channels, grads].map(|e| e.unwrap().to_string()))
    })
    .unwrap();
    for messages in out {
        let [flat, channels, grads] = messages.unwrap();
        assert!(
            flat.contains("[N, C, H, W]") && flat.contains("[4, 3]"),
            "{flat}"
        );
        assert!(channels.contains("[2]"), "{channels}");
        assert!(grads.contains("x̂ of shape [4, 3]"), "{grads}");
    }
}

/// Fixed point at depth: 20 private SGD steps at f = 24 with exact truncation (the
/// default) track plaintext SGD from the same weights and batches, every step's loss
/// within 1 % (the README records VGG-16 and AlexNet runs of the same check).
#[test]
fn twenty_private_sgd_steps_at_24_fractional_bits_track_plaintext() {
    let config = SgdConfig::new(0.05).with_momentum(0.9);
    let start = small_trainable_model(5, true);
    let batches: Vec<(Tensor, Vec<usize>)> = (0..20)
        .map(|s| {
            let labels = (0..4).map(|i| (s + i) % 3).collect();
            (sample_inputs(100 + s as u64, 4), labels)
        })
        .collect();
    let mut model = start.clone();
    let mut sgd = Sgd::new(config);
    let plain_losses: Vec<f64> = batches
        .iter()
        .enumerate()
        .map(|(s, (x, y))| plain::train_step(&mut model, &mut sgd, x, y, s as u64).unwrap())
        .collect();
    let logits = run_local_3pc(|t| {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::new(24).unwrap())?;
        let mut shared = SharedModel::share_for_training(&mut p, &start, MODEL_OWNER).unwrap();
        let mut opt = PrivateSgd::new(config);
        let owner = p.id() == DATA_OWNER;
        let mut all = Vec::new();
        for (s, (x, labels)) in batches.iter().enumerate() {
            let sx = share_input(&mut p, DATA_OWNER, owner.then_some(x), x.shape()).unwrap();
            let hot = onehot(labels, 3);
            let sy = share_input(&mut p, DATA_OWNER, owner.then_some(&hot), &[4, 3]).unwrap();
            let out = shared
                .train_step(&mut p, &mut opt, &sx, &sy, s as u64)
                .unwrap();
            all.push(p.reveal_f64(&out)?);
        }
        Ok::<_, cryptgpu_share::ShareError>(all)
    })
    .unwrap();
    let [logits, _, _] = logits.map(|r| r.unwrap());
    for (s, ((_, labels), (want, got))) in batches
        .iter()
        .zip(plain_losses.iter().zip(&logits))
        .enumerate()
    {
        let got = Tensor::new(&[4, 3], got.clone()).unwrap();
        let loss = plain::softmax_cross_entropy(&got, labels).unwrap().0;
        assert!(
            (loss - want).abs() <= 0.01 * want.abs(),
            "step {}: private loss {loss} against plaintext {want}",
            s + 1
        );
    }
}

/// Inference runs a ReLU whose only consumer is a max-pool after the pool (ReLU is
/// monotone, so they commute exactly): `conv → ReLU → max-pool` costs what `conv → max-pool →
/// ReLU` costs, a ReLU on a quarter of the elements, and gives bit-identical logits.
#[test]
fn inference_runs_a_relu_after_the_max_pool_it_feeds() {
    let build = |relu_first: bool| {
        let mut b = GraphBuilder::new();
        let c0 = b.add("c0", zoo::conv(2, 4, 3, 1, 1, true), &[0]);
        let pool = Op::MaxPool2d(MaxPool2d::new(Pool2dParams::new(2, 2)));
        let pooled = if relu_first {
            let r = b.add("r", Op::Relu(Relu), &[c0]);
            b.add("m", pool, &[r])
        } else {
            let m = b.add("m", pool, &[c0]);
            b.add("r", Op::Relu(Relu), &[m])
        };
        let f = b.add("f", Op::Flatten(Flatten), &[pooled]);
        let l = b.add("l", zoo::linear(36, 3), &[f]);
        b.finish("commute", &[2, 6, 6], l, 5).unwrap()
    };
    let x = sample_inputs(7, 4);
    let run = |model: Model| {
        let out = run_local_3pc(|t| {
            let mut p = setup(t);
            let shared = SharedModel::share(&mut p, &model, MODEL_OWNER).unwrap();
            let input = (p.id() == DATA_OWNER).then_some(&x);
            let sx = share_input(&mut p, DATA_OWNER, input, &[4, 2, 6, 6]).unwrap();
            let before = p.stats();
            let logits = shared.forward(&mut p, &sx).unwrap();
            let sent = p.stats().since(&before).total_bytes_sent();
            Ok::<_, cryptgpu_share::ShareError>((p.reveal(&logits).unwrap(), sent))
        })
        .unwrap();
        out.map(|r| r.unwrap())
    };
    let (relu_first, pool_first) = (build(true), build(false));
    let want = plain::forward(&relu_first, &x, plain::Mode::Inference).unwrap();
    let got = run(relu_first.clone());
    assert_eq!(
        got,
        run(pool_first),
        "the same logits and bytes, party by party"
    );
    let fixed = FixedPoint::default();
    for (i, (&g, &w)) in got[0]
        .0
        .iter()
        .zip(want.logits(&relu_first).data())
        .enumerate()
    {
        let g = fixed.decode(g);
        assert!(
            (g - w).abs() < 1e-3,
            "logit {i}: private {g}, plaintext {w}"
        );
    }
}
