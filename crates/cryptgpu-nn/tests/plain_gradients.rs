//! The plaintext executor's backward pass against central finite differences, for every op,
//! in inference and in training mode (BatchNorm batch statistics, dropout masks).

mod common;

use common::pseudo_random;

use cryptgpu_backend::{Conv2dParams, Pool2dParams};
use cryptgpu_nn::layers::prelude::*;
use cryptgpu_nn::model::GraphBuilder;
use cryptgpu_nn::plain::{self, Mode};
use cryptgpu_nn::zoo::{batchnorm, conv, linear};
use cryptgpu_nn::{Model, Op, Tensor};

/// A model that uses every op: conv (stride, padding, groups), BatchNorm, ReLU, both pools,
/// a residual add, global average pool, flatten, dropout, linear and softmax.
fn every_op_model(dropout: f64) -> Model {
    let mut b = GraphBuilder::new();
    let c1 = b.add(
        "c1",
        Op::Conv2d(Conv2d {
            in_channels: 2,
            out_channels: 4,
            kernel: [3, 3],
            params: Conv2dParams::new(1, 1).with_groups(2),
            bias: true,
            dilation: [1, 1],
        }),
        &[0],
    );
    let bn = b.add("bn", batchnorm(4), &[c1]);
    let relu = b.add("relu", Op::Relu(Relu), &[bn]);
    let c2 = b.add("c2", conv(4, 4, 3, 1, 1, false), &[relu]);
    let add = b.add("add", Op::Add(Add::default()), &[c2, c1]);
    let mp = b.add(
        "mp",
        Op::MaxPool2d(MaxPool2d::new(Pool2dParams::new(3, 2).with_padding(1))),
        &[add],
    );
    let ap = b.add(
        "ap",
        Op::AvgPool2d(AvgPool2d::new(Pool2dParams::new(2, 1))),
        &[mp],
    );
    let c3 = b.add("c3", conv(4, 3, 2, 2, 1, true), &[ap]);
    let gap = b.add("gap", Op::GlobalAvgPool(GlobalAvgPool), &[c3]);
    let flat_a = b.add("flat_a", Op::Flatten(Flatten), &[gap]);
    let flat_b = b.add("flat_b", Op::Flatten(Flatten), &[ap]);
    let fc_b = b.add("fc_b", linear(4 * 2 * 2, 3), &[flat_b]);
    let sum = b.add("sum", Op::Add(Add::default()), &[flat_a, fc_b]);
    let drop = b.add("drop", Op::Dropout(Dropout { p: dropout }), &[sum]);
    let fc = b.add("fc", linear(3, 5), &[drop]);
    let soft = b.add("softmax", Op::Softmax(Softmax::default()), &[fc]);
    let mut model = b.finish("every-op", &[2, 6, 6], soft, 7).unwrap();
    // Non-trivial BatchNorm state so inference mode is not the identity.
    let bn_params = [
        ("bn.weight", [1.2, 0.7, -0.9, 1.5]),
        ("bn.bias", [0.1, -0.2, 0.3, 0.05]),
        ("bn.running_mean", [0.2, -0.1, 0.05, 0.0]),
        ("bn.running_var", [0.5, 1.5, 0.8, 2.0]),
    ];
    for (name, values) in bn_params {
        model
            .params
            .insert(name.into(), Tensor::new(&[4], values.to_vec()).unwrap());
    }
    model
}

/// The scalar `sum(weights * output)` whose gradient backward computes.
fn objective(model: &Model, input: &Tensor, weights: &[f64], mode: Mode) -> f64 {
    let fwd = plain::forward(model, input, mode).unwrap();
    let out = fwd.output(model);
    out.data().iter().zip(weights).map(|(a, b)| a * b).sum()
}

/// Checks `model`'s backward pass on `input` against central finite differences of
/// [`objective`]: every parameter's gradient, and every `input_step`-th input's. Returns the
/// parameters' gradients.
fn check_against_finite_differences(
    model: &Model,
    input: &Tensor,
    mode: Mode,
    input_step: usize,
) -> std::collections::BTreeMap<String, Tensor> {
    let fwd = plain::forward(model, input, mode).unwrap();
    let weights = pseudo_random(fwd.output(model).len(), 2);
    let grad_out = Tensor::new(fwd.output(model).shape(), weights.clone()).unwrap();
    let grads = plain::backward(model, &fwd, model.output(), grad_out).unwrap();
    let h = 1e-6;
    let compare = |what: &str, analytic: f64, plus: f64, minus: f64| {
        let numeric = (plus - minus) / (2.0 * h);
        let err = (analytic - numeric).abs() / (1e-3 + analytic.abs().max(numeric.abs()));
        assert!(
            err < 1e-4,
            "{mode:?}: {what}: analytic {analytic}, numeric {numeric}"
        );
    };
    for (name, grad) in &grads.params {
        for i in 0..grad.len() {
            let mut plus = model.clone();
            plus.params.get_mut(name).unwrap().data_mut()[i] += h;
            let mut minus = model.clone();
            minus.params.get_mut(name).unwrap().data_mut()[i] -= h;
            compare(
                &format!("{name}[{i}]"),
                grad.data()[i],
                objective(&plus, input, &weights, mode),
                objective(&minus, input, &weights, mode),
            );
        }
    }
    for i in (0..input.len()).step_by(input_step) {
        let mut plus = input.clone();
        plus.data_mut()[i] += h;
        let mut minus = input.clone();
        minus.data_mut()[i] -= h;
        compare(
            &format!("input[{i}]"),
            grads.input().data()[i],
            objective(model, &plus, &weights, mode),
            objective(model, &minus, &weights, mode),
        );
    }
    grads.params
}

fn check_gradients(mode: Mode, dropout: f64) {
    let model = every_op_model(dropout);
    let input = Tensor::new(&[3, 2, 6, 6], pseudo_random(3 * 72, 1)).unwrap();
    let params = check_against_finite_differences(&model, &input, mode, 5);
    let trainable = model
        .param_specs()
        .iter()
        .filter(|s| s.kind == cryptgpu_nn::model::ParamKind::Trainable)
        .count();
    assert_eq!(params.len(), trainable, "a gradient per trained tensor");
}

#[test]
fn backward_matches_finite_differences_in_inference() {
    check_gradients(Mode::Inference, 0.5);
}

#[test]
fn backward_matches_finite_differences_in_training() {
    check_gradients(Mode::Training { seed: 3 }, 0.3);
}

/// The transformer layers' backward passes against finite differences: LayerNorm, GELU
/// (exact and tanh), Erf, attention (a product of two values, a causal mask, a softmax
/// inside the graph), Pow, Mean, Sqrt, InvSqrt, a class-token Constant and a batch-moving
/// reshape.
#[test]
fn transformer_layers_backward_matches_finite_differences() {
    let (l, d) = (4usize, 6usize);
    let mut b = GraphBuilder::new();
    let cls = b.add("cls", Constant { shape: vec![1, d] }, &[0]);
    let tokens = b.add("tokens", Concat { axis: 1 }, &[cls, 0]);
    let norm = b.add(
        "norm",
        LayerNorm {
            size: d,
            epsilon: 1e-5,
        },
        &[tokens],
    );
    let act = b.add("act", Gelu { tanh: false }, &[norm]);
    let proj = b.add("proj", linear(d, d), &[act]);
    let keys = b.add(
        "keys",
        Transpose {
            perm: vec![0, 2, 1],
        },
        &[proj],
    );
    let scores = b.add("scores", MatMul, &[proj, keys]);
    let masked = b.add("masked", CausalMask { fill: -8.0 }, &[scores]);
    let weights = b.add("weights", Softmax { axis: Some(1) }, &[masked]);
    let mixed = b.add("mixed", MatMul, &[weights, proj]);
    let moved = b.add(
        "moved",
        BatchReshape {
            target: vec![l as i64 + 1, -1, d as i64],
        },
        &[mixed],
    );
    let back = b.add(
        "back",
        BatchReshape {
            target: vec![-1, l as i64 + 1, d as i64],
        },
        &[moved],
    );
    let tanh = b.add("tanh_gelu", Gelu { tanh: true }, &[back]);
    let erf = b.add("erf", Erf, &[tanh]);
    let cube = b.add("cube", Pow { exponent: 3 }, &[erf]);
    let square = b.add("square", Pow { exponent: 2 }, &[cube]);
    let shifted = b.add(
        "shifted",
        AddConst {
            shape: vec![],
            negate_input: false,
        },
        &[square],
    );
    let root = b.add("root", Sqrt, &[shifted]);
    let inverse = b.add("inverse", InvSqrt, &[shifted]);
    let both = b.add("both", Op::Add(Add::default()), &[root, inverse]);
    let mean = b.add(
        "mean",
        Mean {
            axes: vec![2],
            keep_dims: false,
        },
        &[both],
    );
    let out = b.add("out", linear(l + 1, 3), &[mean]);
    let mut model = b.finish("transformer-ops", &[l, d], out, 11).unwrap();
    let set = |model: &mut Model, name: &str, shape: &[usize], seed: u64, scale: f64| {
        let n = shape.iter().product();
        let values = pseudo_random(n, seed).iter().map(|v| v * scale).collect();
        model
            .params
            .insert(name.into(), Tensor::new(shape, values).unwrap());
    };
    set(&mut model, "cls.constant", &[1, d], 3, 1.0);
    set(&mut model, "norm.weight", &[d], 4, 0.5);
    model.params.insert(
        "shifted.constant".into(),
        Tensor::new(&[], vec![1.5]).unwrap(),
    );
    let input = Tensor::new(&[2, l, d], pseudo_random(2 * l * d, 5)).unwrap();
    check_against_finite_differences(&model, &input, Mode::Inference, 1);
}
