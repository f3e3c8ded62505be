//! ONNX files written by the official `onnx` package (`tests/fixtures/make_onnx_fixtures.py`)
//! import and compute what `onnxruntime` computed for them.

mod common;

use common::{fixture, read_f32};

use cryptgpu_nn::layers::prelude::*;

use cryptgpu_nn::{Op, onnx, plain};

fn check(name: &str, input: &[usize], output: &[usize]) -> cryptgpu_nn::Model {
    let model = onnx::import_file(&fixture(&format!("{name}.onnx"))).unwrap();
    assert_eq!(model.input_shape(), &input[1..]);
    let x = read_f32(&format!("{name}.input.bin"), input);
    let want = read_f32(&format!("{name}.output.bin"), output);
    let got = plain::predict(&model, &x).unwrap();
    assert!(
        got.max_abs_diff(&want) < 1e-5,
        "{name}: differs from onnxruntime by {}",
        got.max_abs_diff(&want)
    );
    model
}

#[test]
fn residual_cnn_matches_onnxruntime() {
    let model = check("residual_cnn", &[2, 3, 8, 8], &[2, 5]);
    let kinds: Vec<&str> = model.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(
        kinds,
        [
            "Input",
            "Conv2d",
            "BatchNorm2d",
            "ReLU",
            "MaxPool2d",
            "Conv2d",
            "Add",
            "AvgPool2d",
            "Flatten",
            "Linear",
            "Softmax"
        ]
    );
    for name in [
        "features.0.weight",
        "features.1.running_var",
        "block.conv.weight",
        "fc.bias",
    ] {
        assert!(
            model.params.contains_key(name),
            "{name} keeps its PyTorch name"
        );
    }
}

#[test]
fn grouped_conv_global_pool_matmul_matches_onnxruntime() {
    let model = check("gap_matmul", &[3, 4, 7, 7], &[3, 3]);
    let linear = model.nodes().last().unwrap();
    assert_eq!(
        linear.op,
        Op::Linear(Linear {
            in_features: 6,
            out_features: 3,
            bias: true
        }),
        "MatMul + Add became one linear layer"
    );
}
