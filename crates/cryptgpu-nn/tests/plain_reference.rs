//! The plaintext executor's forward pass against naive loops written from the definitions,
//! the loss and SGD against hand-computed values, and training that learns.

mod common;

use common::pseudo_random;

use cryptgpu_backend::{Conv2dParams, Pool2dParams};
use cryptgpu_nn::data::synthetic;
use cryptgpu_nn::layers::prelude::*;
use cryptgpu_nn::model::GraphBuilder;
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::plain::{self, Mode};
use cryptgpu_nn::zoo::{self, Pooling};
use cryptgpu_nn::{Model, Op, Tensor};

fn single_op(op: Op, input: &[usize], seed: u64) -> Model {
    let mut b = GraphBuilder::new();
    let out = b.add("layer", op, &[0]);
    b.finish("single", input, out, seed).unwrap()
}

/// Direct convolution: one loop nest per output element.
fn naive_conv(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, p: Conv2dParams) -> Vec<f64> {
    let &[n, c, h, wd] = x.shape() else { panic!() };
    let &[o, cg, kh, kw] = w.shape() else {
        panic!()
    };
    let oh = (h + 2 * p.padding[0] - kh) / p.stride[0] + 1;
    let ow = (wd + 2 * p.padding[1] - kw) / p.stride[1] + 1;
    let og = o / p.groups;
    let mut out = Vec::new();
    for b in 0..n {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = bias.map_or(0.0, |t| t.data()[oc]);
                    for ci in 0..cg {
                        let ic = (oc / og) * cg + ci;
                        for di in 0..kh {
                            for dj in 0..kw {
                                let y = (i * p.stride[0] + di) as isize - p.padding[0] as isize;
                                let z = (j * p.stride[1] + dj) as isize - p.padding[1] as isize;
                                if y < 0 || z < 0 || y >= h as isize || z >= wd as isize {
                                    continue;
                                }
                                let xv =
                                    x.data()[((b * c + ic) * h + y as usize) * wd + z as usize];
                                acc += xv * w.data()[((oc * cg + ci) * kh + di) * kw + dj];
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    let _ = c;
    out
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-10, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn conv_matches_direct_loops() {
    let cases = [
        (Conv2dParams::new(1, 0), [2, 3, 7, 6], 4, [3, 3], true),
        (Conv2dParams::new(2, 1), [1, 2, 8, 8], 3, [3, 2], false),
        (
            Conv2dParams::new(3, 2).with_groups(2),
            [2, 4, 9, 7],
            6,
            [5, 3],
            true,
        ),
        (Conv2dParams::new(4, 9), [1, 3, 32, 32], 5, [11, 11], true),
    ];
    for (i, (params, input, o, kernel, bias)) in cases.into_iter().enumerate() {
        let op = Op::Conv2d(Conv2d {
            in_channels: input[1],
            out_channels: o,
            kernel,
            params,
            bias,
            dilation: [1, 1],
        });
        let model = single_op(op, &input[1..], i as u64);
        let x = Tensor::new(&input, pseudo_random(input.iter().product(), 10 + i as u64)).unwrap();
        let got = plain::predict(&model, &x).unwrap();
        let want = naive_conv(
            &x,
            &model.params["layer.weight"],
            model.params.get("layer.bias"),
            params,
        );
        assert_close(got.data(), &want, &format!("conv case {i}"));
    }
}

#[test]
fn linear_pools_and_softmax_match_definitions() {
    let model = single_op(
        Op::Linear(Linear {
            in_features: 5,
            out_features: 3,
            bias: true,
        }),
        &[5],
        1,
    );
    let x = Tensor::new(&[2, 5], pseudo_random(10, 2)).unwrap();
    let got = plain::predict(&model, &x).unwrap();
    let (w, b) = (&model.params["layer.weight"], &model.params["layer.bias"]);
    let mut want = Vec::new();
    for n in 0..2 {
        for o in 0..3 {
            let dot: f64 = (0..5)
                .map(|i| x.data()[n * 5 + i] * w.data()[o * 5 + i])
                .sum();
            want.push(dot + b.data()[o]);
        }
    }
    assert_close(got.data(), &want, "linear");

    // 3x3 windows, stride 2, padding 1 over a 5x5 plane: corners see 4 values.
    let params = Pool2dParams::new(3, 2).with_padding(1);
    let x = Tensor::new(
        &[1, 1, 5, 5],
        (0..25).map(|v| (v * 7 % 11) as f64).collect(),
    )
    .unwrap();
    let window = |i: usize, j: usize| -> Vec<f64> {
        let mut v = Vec::new();
        for y in (2 * i) as isize - 1..=(2 * i) as isize + 1 {
            for z in (2 * j) as isize - 1..=(2 * j) as isize + 1 {
                if (0..5).contains(&y) && (0..5).contains(&z) {
                    v.push(x.data()[(y * 5 + z) as usize]);
                }
            }
        }
        v
    };
    let max = plain::predict(
        &single_op(Op::MaxPool2d(MaxPool2d::new(params)), &[1, 5, 5], 0),
        &x,
    )
    .unwrap();
    let avg = plain::predict(
        &single_op(Op::AvgPool2d(AvgPool2d::new(params)), &[1, 5, 5], 0),
        &x,
    )
    .unwrap();
    for i in 0..3 {
        for j in 0..3 {
            let w = window(i, j);
            assert_eq!(
                max.data()[i * 3 + j],
                w.iter().copied().fold(f64::MIN, f64::max)
            );
            let mean = w.iter().sum::<f64>() / 9.0; // count_include_pad
            assert!((avg.data()[i * 3 + j] - mean).abs() < 1e-12);
        }
    }

    let gap = plain::predict(
        &single_op(Op::GlobalAvgPool(GlobalAvgPool), &[1, 5, 5], 0),
        &x,
    )
    .unwrap();
    assert_eq!(gap.shape(), &[1, 1, 1, 1]);
    assert!((gap.data()[0] - x.data().iter().sum::<f64>() / 25.0).abs() < 1e-12);

    let logits = Tensor::new(&[1, 3], vec![1.0, 2.0, 3.0]).unwrap();
    let soft = plain::predict(
        &single_op(Op::Softmax(Softmax::default()), &[3], 0),
        &logits,
    )
    .unwrap();
    let z: f64 = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).sum();
    assert_close(
        soft.data(),
        &[1.0f64.exp() / z, 2.0f64.exp() / z, 3.0f64.exp() / z],
        "softmax",
    );
}

#[test]
fn batchnorm_folding_keeps_the_function() {
    let mut b = GraphBuilder::new();
    let c = b.add("conv", zoo::conv(3, 4, 3, 1, 1, false), &[0]);
    let bn = b.add("bn", zoo::batchnorm(4), &[c]);
    let r = b.add("relu", Op::Relu(Relu), &[bn]);
    let c2 = b.add("conv2", zoo::conv(4, 4, 1, 1, 0, true), &[r]);
    let bn2 = b.add("bn2", zoo::batchnorm(4), &[c2]);
    let add = b.add("add", Op::Add(Add::default()), &[bn2, bn]);
    let mut model = b.finish("fold", &[3, 6, 6], add, 3).unwrap();
    for (name, v) in [
        ("bn.running_mean", vec![0.1, -0.2, 0.3, 0.0]),
        ("bn.running_var", vec![0.5, 2.0, 1.0, 0.25]),
        ("bn.weight", vec![1.5, -0.5, 1.0, 2.0]),
        ("bn2.running_var", vec![3.0, 0.2, 1.0, 1.0]),
        ("bn2.bias", vec![0.3, 0.1, -0.4, 0.0]),
    ] {
        model
            .params
            .insert(name.into(), Tensor::new(&[4], v).unwrap());
    }
    let folded = model.fold_batchnorm().unwrap();
    // `bn` feeds two nodes but folds (its conv has one consumer); both BatchNorms go.
    assert!(
        !folded
            .nodes()
            .iter()
            .any(|n| matches!(n.op, Op::BatchNorm2d(BatchNorm2d { .. })))
    );
    assert!(folded.params.contains_key("conv.bias"));
    let x = Tensor::new(&[2, 3, 6, 6], pseudo_random(216, 4)).unwrap();
    let a = plain::predict(&model, &x).unwrap();
    let f = plain::predict(&folded, &x).unwrap();
    assert!(a.max_abs_diff(&f) < 1e-12, "{}", a.max_abs_diff(&f));
}

#[test]
fn cross_entropy_and_sgd_match_hand_computation() {
    let logits = Tensor::new(&[2, 3], vec![1.0, 2.0, 0.5, -1.0, 0.0, 3.0]).unwrap();
    let (loss, grad) = plain::softmax_cross_entropy(&logits, &[1, 2]).unwrap();
    let lse = |r: &[f64]| r.iter().map(|v| v.exp()).sum::<f64>().ln();
    let want = ((lse(&[1.0, 2.0, 0.5]) - 2.0) + (lse(&[-1.0, 0.0, 3.0]) - 3.0)) / 2.0;
    assert!((loss - want).abs() < 1e-12);
    let row_sums: Vec<f64> = grad.data().chunks(3).map(|r| r.iter().sum()).collect();
    assert!(row_sums.iter().all(|s| s.abs() < 1e-12));
    assert!(plain::softmax_cross_entropy(&logits, &[3, 0]).is_err());

    // Two SGD steps on one weight: w = 1, gradients 0.5 then -0.25.
    let mut model = single_op(
        Op::Linear(Linear {
            in_features: 1,
            out_features: 1,
            bias: false,
        }),
        &[1],
        0,
    );
    model.params.insert(
        "layer.weight".into(),
        Tensor::new(&[1, 1], vec![1.0]).unwrap(),
    );
    let config = SgdConfig::new(0.1)
        .with_momentum(0.9)
        .with_weight_decay(0.01);
    let mut sgd = Sgd::new(config);
    let mut w = 1.0;
    let mut v = 0.0;
    for g in [0.5, -0.25] {
        let grads = [(
            "layer.weight".to_owned(),
            Tensor::new(&[1, 1], vec![g]).unwrap(),
        )]
        .into_iter()
        .collect();
        sgd.step(&mut model, &grads).unwrap();
        let d = g + 0.01 * w;
        v = 0.9 * v + d;
        w -= 0.1 * v;
        assert!((model.params["layer.weight"].data()[0] - w).abs() < 1e-15);
    }
}

#[test]
fn training_learns_a_synthetic_task_and_is_deterministic() {
    // Labels that depend on the input: class = which half of the image is brighter.
    let mut data = synthetic(&[1, 28, 28], 256, 2, 9).unwrap();
    for (i, label) in data.labels.iter_mut().enumerate() {
        let img = &data.images[i * 784..(i + 1) * 784];
        let top: f32 = img[..392].iter().sum();
        let bottom: f32 = img[392..].iter().sum();
        *label = usize::from(top > bottom);
    }
    data.num_classes = 10;
    let train = |seed| {
        let mut model = zoo::build_seeded("secureml", Pooling::Avg, seed).unwrap();
        let mut sgd = Sgd::new(SgdConfig::new(0.05).with_momentum(0.9));
        let mut losses = Vec::new();
        for epoch in 0..4 {
            losses.push(plain::train_epoch(&mut model, &mut sgd, &data, 32, 1, epoch).unwrap());
        }
        (model, losses)
    };
    let (model, losses) = train(2);
    assert!(losses[3] < 0.5 * losses[0], "loss went {losses:?}");
    let acc = plain::accuracy(&model, &data, 64).unwrap();
    assert!(acc > 0.9, "training accuracy {acc}");
    let (again, _) = train(2);
    assert_eq!(model.params, again.params, "training is deterministic");
}

#[test]
fn dropout_and_batchnorm_follow_the_mode() {
    let model = single_op(Op::Dropout(Dropout { p: 0.5 }), &[4, 4], 0);
    let x = Tensor::full(&[2, 4, 4], 1.0).reshape(&[2, 4, 4]).unwrap();
    let inference = plain::forward(&model, &x, Mode::Inference).unwrap();
    assert_eq!(inference.output(&model), &x);
    let training = plain::forward(&model, &x, Mode::Training { seed: 1 }).unwrap();
    let kept = training
        .output(&model)
        .data()
        .iter()
        .filter(|&&v| v == 2.0)
        .count();
    let dropped = training
        .output(&model)
        .data()
        .iter()
        .filter(|&&v| v == 0.0)
        .count();
    assert_eq!(kept + dropped, 32);
    assert!(kept > 4 && dropped > 4, "kept {kept}, dropped {dropped}");

    let mut model = single_op(zoo::batchnorm(2), &[2, 3, 3], 0);
    let x = Tensor::new(&[4, 2, 3, 3], pseudo_random(72, 5)).unwrap();
    let fwd = plain::forward(&model, &x, Mode::Training { seed: 0 }).unwrap();
    // Batch statistics: each channel of the output has mean 0 and variance ~1.
    let out = fwd.output(&model).data();
    for c in 0..2 {
        let vals: Vec<f64> = (0..4)
            .flat_map(|n| out[(n * 2 + c) * 9..(n * 2 + c + 1) * 9].to_vec())
            .collect();
        let mean = vals.iter().sum::<f64>() / 36.0;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 36.0;
        assert!(
            mean.abs() < 1e-12 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
    }
    fwd.apply_running_stats(&mut model);
    let rm = model.params["layer.running_mean"].data()[0];
    assert!(rm != 0.0, "running mean moved");
}

#[test]
fn wrong_input_shape_is_a_clear_error() {
    let model = zoo::build("lenet", Pooling::Avg).unwrap();
    let err = plain::predict(&model, &Tensor::zeros(&[1, 3, 28, 28])).unwrap_err();
    assert!(err.to_string().contains("[N, 1, 28, 28]"), "{err}");
}
