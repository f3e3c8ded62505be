//! The private executor against the f64 plaintext executor: every layer forward (a small
//! residual network with every op, BatchNorm folded and not), classification revealed to
//! the data owner only, and private SGD steps tracking plaintext SGD.

use cryptgpu_backend::{Conv2dParams, Pool2dParams};
use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::model::{GraphBuilder, Model, Op};
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::private::{PrivateSgd, SharedModel, share_input};
use cryptgpu_nn::{Tensor, plain};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party};
use cryptgpu_transport::{PartyId, run_local_3pc};

const MODEL_OWNER: PartyId = PartyId::P0;
const DATA_OWNER: PartyId = PartyId::P1;

fn conv(i: usize, o: usize, padding: usize) -> Op {
    Op::Conv2d {
        in_channels: i,
        out_channels: o,
        kernel: [3, 3],
        params: Conv2dParams {
            stride: [1, 1],
            padding: [padding, padding],
            groups: 1,
        },
        bias: true,
    }
}

/// Every op: conv, BatchNorm (after a conv: folded; after an add: affine), ReLU, max- and
/// average-pooling, a residual add, global average pooling, flatten, dropout and linear.
fn small_model(seed: u64) -> Model {
    let mut b = GraphBuilder::new();
    let c0 = b.add("c0", conv(2, 4, 1), &[0]);
    let bn0 = b.add(
        "bn0",
        Op::BatchNorm2d {
            channels: 4,
            eps: 1e-5,
            momentum: 0.1,
        },
        &[c0],
    );
    let r1 = b.add("r1", Op::Relu, &[bn0]);
    let m2 = b.add("m2", Op::MaxPool2d(Pool2dParams::new(2, 2)), &[r1]);
    let c3 = b.add("c3", conv(4, 4, 1), &[m2]);
    let a4 = b.add("a4", Op::Add, &[c3, m2]);
    let bn4 = b.add(
        "bn4",
        Op::BatchNorm2d {
            channels: 4,
            eps: 1e-5,
            momentum: 0.1,
        },
        &[a4],
    );
    let p5 = b.add(
        "p5",
        Op::AvgPool2d(Pool2dParams {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
        }),
        &[bn4],
    );
    let g6 = b.add("g6", Op::GlobalAvgPool, &[p5]);
    let f7 = b.add("f7", Op::Flatten, &[g6]);
    let d8 = b.add("d8", Op::Dropout { p: 0.5 }, &[f7]);
    let l9 = b.add(
        "l9",
        Op::Linear {
            in_features: 4,
            out_features: 5,
            bias: true,
        },
        &[d8],
    );
    let r10 = b.add("r10", Op::Relu, &[l9]);
    let l11 = b.add(
        "l11",
        Op::Linear {
            in_features: 5,
            out_features: 3,
            bias: true,
        },
        &[r10],
    );
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

/// A model without BatchNorm, for training (private BatchNorm training is not supported).
fn trainable_model(seed: u64) -> Model {
    let mut b = GraphBuilder::new();
    let c0 = b.add("c0", conv(2, 4, 1), &[0]);
    let r1 = b.add("r1", Op::Relu, &[c0]);
    let m2 = b.add("m2", Op::MaxPool2d(Pool2dParams::new(2, 2)), &[r1]);
    let c3 = b.add("c3", conv(4, 4, 1), &[m2]);
    let a4 = b.add("a4", Op::Add, &[c3, m2]);
    let p5 = b.add("p5", Op::AvgPool2d(Pool2dParams::new(3, 3)), &[a4]);
    let f6 = b.add("f6", Op::Flatten, &[p5]);
    let l7 = b.add(
        "l7",
        Op::Linear {
            in_features: 4,
            out_features: 6,
            bias: true,
        },
        &[f6],
    );
    let r8 = b.add("r8", Op::Relu, &[l7]);
    let l9 = b.add(
        "l9",
        Op::Linear {
            in_features: 6,
            out_features: 3,
            bias: true,
        },
        &[r8],
    );
    b.finish("trainable", &[2, 6, 6], l9, seed).unwrap()
}

fn inputs(seed: u64, n: usize) -> Tensor {
    let mut x = seed | 1;
    let data = (0..n * 72)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 * 4.0 - 2.0
        })
        .collect();
    Tensor::new(&[n, 2, 6, 6], data).unwrap()
}

fn setup(
    t: &mut cryptgpu_transport::LocalTransport,
) -> Party<CpuBackend, &mut cryptgpu_transport::LocalTransport> {
    Party::setup_with(
        CpuBackend::new(),
        t,
        FixedPoint::default(),
        KeySource::InsecureSeeded(3),
    )
    .unwrap()
}

#[test]
fn private_forward_and_classification_match_plaintext() {
    let model = small_model(11);
    let x = inputs(5, 4);
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

#[test]
fn private_sgd_tracks_plaintext_sgd() {
    let config = SgdConfig::new(0.1)
        .with_momentum(0.9)
        .with_weight_decay(1e-3);
    let mut model = trainable_model(21);
    let mut sgd = Sgd::new(config);
    let batches: Vec<(Tensor, Vec<usize>)> = (0..3)
        .map(|s| (inputs(40 + s, 4), vec![0, 2, 1, 2]))
        .collect();
    for (x, labels) in &batches {
        plain::train_step(&mut model, &mut sgd, x, labels, 0).unwrap();
    }
    let trained = run_local_3pc(|t| {
        let mut p = setup(t);
        let start = trainable_model(21);
        let mut shared = SharedModel::share(&mut p, &start, MODEL_OWNER).unwrap();
        let mut opt = PrivateSgd::new(config);
        for (x, labels) in &batches {
            let owner = p.id() == DATA_OWNER;
            let sx = share_input(&mut p, DATA_OWNER, owner.then_some(x), x.shape()).unwrap();
            let mut onehot = vec![0.0; labels.len() * 3];
            labels
                .iter()
                .enumerate()
                .for_each(|(i, &l)| onehot[i * 3 + l] = 1.0);
            let hot = Tensor::new(&[labels.len(), 3], onehot).unwrap();
            let sy = share_input(&mut p, DATA_OWNER, owner.then_some(&hot), &[4, 3]).unwrap();
            shared.train_step(&mut p, &mut opt, &sx, &sy).unwrap();
        }
        Ok::<_, cryptgpu_share::ShareError>(shared.reveal_to(&mut p, MODEL_OWNER).unwrap())
    })
    .unwrap();
    let private = trained[0]
        .as_ref()
        .unwrap()
        .as_ref()
        .expect("the model owner gets the model");
    assert!(trained[1].as_ref().unwrap().is_none());
    let mut moved = 0.0f64;
    for (name, want) in &model.params {
        let got = &private.params[name];
        let start = &trainable_model(21).params[name];
        for i in 0..want.len() {
            moved = moved.max((want.data()[i] - start.data()[i]).abs());
            let err = (got.data()[i] - want.data()[i]).abs();
            assert!(
                err < 2e-3,
                "{name}[{i}]: private {} vs plaintext {}",
                got.data()[i],
                want.data()[i]
            );
        }
    }
    assert!(
        moved > 1e-2,
        "training moved the weights (by at most {moved})"
    );
}
