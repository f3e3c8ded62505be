//! ONNX import: round trips of exported models (compared by plaintext outputs), a
//! hand-written graph in the shapes `torch.onnx.export` produces (MatMul + Add bias,
//! Reshape by a Constant, Dropout, Softmax), and clear errors.

use cryptgpu_nn::layers::prelude::*;
use cryptgpu_nn::model::GraphBuilder;
use cryptgpu_nn::onnx::proto::{Writer, data_type};
use cryptgpu_nn::onnx::{self, TensorEncoding};
use cryptgpu_nn::zoo::{self, Pooling};
use cryptgpu_nn::{Model, NnError, Op, Tensor, plain};

fn inputs(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| (((i as u64 + 1) * (seed * 2 + 1) * 2_654_435_761) % 1000) as f64 / 500.0 - 1.0)
        .collect();
    Tensor::new(shape, data).unwrap()
}

/// Model outputs agree up to the f32 rounding of the exported weights.
fn assert_same_function(a: &Model, b: &Model, batch: usize) {
    let mut shape = vec![batch];
    shape.extend_from_slice(a.input_shape());
    let x = inputs(&shape, 3);
    let ya = plain::predict(a, &x).unwrap();
    let yb = plain::predict(b, &x).unwrap();
    let scale = ya.data().iter().fold(1.0f64, |m, v| m.max(v.abs()));
    assert!(
        ya.max_abs_diff(&yb) < 1e-5 * scale,
        "outputs differ by {}",
        ya.max_abs_diff(&yb)
    );
}

fn residual_block_with_batchnorm() -> Model {
    let mut b = GraphBuilder::new();
    let c1 = b.add("conv1", zoo::conv(3, 8, 3, 2, 1, false), &[0]);
    let bn1 = b.add("bn1", zoo::batchnorm(8), &[c1]);
    let r1 = b.add("relu", Op::Relu(Relu), &[bn1]);
    let mp = b.add("maxpool", zoo::pool(Pooling::Max, 3, 1, 1), &[r1]);
    let c2 = b.add("layer1.0.conv1", zoo::conv(8, 8, 3, 1, 1, false), &[mp]);
    let bn2 = b.add("layer1.0.bn1", zoo::batchnorm(8), &[c2]);
    let add = b.add("layer1.0.add", Op::Add(Add::default()), &[bn2, mp]);
    let r2 = b.add("layer1.0.relu", Op::Relu(Relu), &[add]);
    let ap = b.add("avgpool", Op::GlobalAvgPool(GlobalAvgPool), &[r2]);
    let fl = b.add("flatten", Op::Flatten(Flatten), &[ap]);
    let fc = b.add("fc", zoo::linear(8, 4), &[fl]);
    let mut model = b.finish("tiny-resnet", &[3, 10, 10], fc, 11).unwrap();
    // Non-trivial BatchNorm statistics.
    for (i, (name, t)) in model.params.iter_mut().enumerate() {
        if name.ends_with("running_var") || name.ends_with("running_mean") || name.contains("bn") {
            let len = t.len();
            let values = (0..len).map(|j| 0.5 + ((i + j) % 5) as f64 * 0.3).collect();
            *t = Tensor::new(&[len], values).unwrap();
        }
    }
    model
}

#[test]
fn lenet_round_trips_through_onnx() {
    let model = zoo::build_seeded("lenet", Pooling::Avg, 2).unwrap();
    let bytes = onnx::export(&model, TensorEncoding::Raw).unwrap();
    let back = onnx::import(&bytes).unwrap();
    assert_eq!(back.input_shape(), &[1, 28, 28]);
    let names: Vec<&String> = back.params.keys().collect();
    assert_eq!(
        names,
        model.params.keys().collect::<Vec<_>>(),
        "PyTorch names kept"
    );
    assert_eq!(
        back.nodes().iter().map(|n| n.op.kind()).collect::<Vec<_>>(),
        model
            .nodes()
            .iter()
            .map(|n| n.op.kind())
            .collect::<Vec<_>>()
    );
    assert_same_function(&model, &back, 3);

    let max = zoo::build_seeded("lenet", Pooling::Max, 2).unwrap();
    let back = onnx::import(&onnx::export(&max, TensorEncoding::FloatData).unwrap()).unwrap();
    assert_same_function(&max, &back, 2);
}

#[test]
fn residual_block_with_batchnorm_round_trips() {
    let model = residual_block_with_batchnorm();
    for encoding in [TensorEncoding::Raw, TensorEncoding::FloatData] {
        let back = onnx::import(&onnx::export(&model, encoding).unwrap()).unwrap();
        assert_eq!(back.nodes().len(), model.nodes().len());
        let bn = back
            .nodes()
            .iter()
            .find(|n| n.name == "layer1.0.bn1")
            .unwrap();
        match bn.op {
            Op::BatchNorm2d(BatchNorm2d { eps, momentum, .. }) => {
                assert!((eps - 1e-5).abs() < 1e-9 && (momentum - 0.1).abs() < 1e-6);
            }
            ref other => panic!("expected BatchNorm2d, got {other:?}"),
        }
        assert_same_function(&model, &back, 2);
    }
}

// ---- Hand-written graphs ----------------------------------------------------------------

fn tensor(name: &str, dims: &[i64], values: &[f32]) -> Writer {
    let mut w = Writer::new();
    w.packed_ints(1, dims)
        .int(2, data_type::FLOAT)
        .string(8, name);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.bytes(9, &raw);
    w
}

fn int64_tensor(name: &str, values: &[i64]) -> Writer {
    let mut w = Writer::new();
    w.packed_ints(1, &[values.len() as i64])
        .int(2, data_type::INT64)
        .string(8, name);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.bytes(9, &raw);
    w
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[Writer]) -> Writer {
    let mut n = Writer::new();
    for i in inputs {
        n.string(1, i);
    }
    for o in outputs {
        n.string(2, o);
    }
    n.string(3, name).string(4, op);
    for a in attrs {
        n.message(5, a);
    }
    n
}

fn value_info(name: &str, dims: &[i64]) -> Writer {
    let mut shape = Writer::new();
    for (i, &d) in dims.iter().enumerate() {
        let mut dim = Writer::new();
        if i == 0 {
            dim.string(2, "batch");
        } else {
            dim.int(1, d);
        }
        shape.message(1, &dim);
    }
    let mut tensor_type = Writer::new();
    tensor_type.int(1, data_type::FLOAT).message(2, &shape);
    let mut ty = Writer::new();
    ty.message(1, &tensor_type);
    let mut info = Writer::new();
    info.string(1, name).message(2, &ty);
    info
}

fn model_bytes(nodes: &[Writer], initializers: &[Writer], input: &[i64], output: &str) -> Vec<u8> {
    let mut graph = Writer::new();
    for n in nodes {
        graph.message(1, n);
    }
    graph.string(2, "main_graph");
    for t in initializers {
        graph.message(5, t);
    }
    graph
        .message(11, &value_info("x", input))
        .message(12, &value_info(output, &[0, 3]));
    let mut opset = Writer::new();
    opset.string(1, "").int(2, 17);
    let mut m = Writer::new();
    m.int(1, 8).message(7, &graph).message(8, &opset);
    m.finish()
}

#[test]
fn torch_style_matmul_reshape_dropout_softmax_graph_imports() {
    // x [N, 2, 2, 2] -> Reshape([-1, 8]) -> MatMul(W [8, 3]) -> Add(b) -> Dropout -> Softmax
    let w: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) / 10.0).collect();
    let b = [0.5f32, -0.25, 0.0];
    let mut constant_attr = Writer::new();
    constant_attr
        .string(1, "value")
        .message(5, &int64_tensor("shape", &[-1, 8]))
        .int(20, 4);
    let mut ratio = Writer::new();
    ratio.string(1, "ratio").float(2, 0.3).int(20, 1);
    let nodes = [
        node("Constant", "/Constant", &[], &["shape_c"], &[constant_attr]),
        node("Reshape", "/Reshape", &["x", "shape_c"], &["flat"], &[]),
        node(
            "MatMul",
            "/fc/MatMul",
            &["flat", "onnx::MatMul_9"],
            &["mm"],
            &[],
        ),
        node("Add", "/fc/Add", &["fc.bias", "mm"], &["logits"], &[]),
        node(
            "Dropout",
            "/drop/Dropout",
            &["logits"],
            &["dropped"],
            &[ratio],
        ),
        node("Identity", "/id", &["dropped"], &["same"], &[]),
        node("Softmax", "/Softmax", &["same"], &["probs"], &[]),
    ];
    let inits = [
        tensor("onnx::MatMul_9", &[8, 3], &w),
        tensor("fc.bias", &[3], &b),
    ];
    let model = onnx::import(&model_bytes(&nodes, &inits, &[0, 2, 2, 2], "probs")).unwrap();
    assert_eq!(model.input_shape(), &[2, 2, 2]);
    let kinds: Vec<&str> = model.nodes().iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["Input", "Flatten", "Linear", "Dropout", "Softmax"]);
    assert_eq!(model.num_classes(), 3);
    let x = inputs(&[2, 2, 2, 2], 1);
    let probs = plain::predict(&model, &x).unwrap();
    for n in 0..2 {
        let row = &x.data()[n * 8..(n + 1) * 8];
        let logits: Vec<f64> = (0..3)
            .map(|o| {
                (0..8)
                    .map(|i| row[i] * f64::from(w[i * 3 + o]))
                    .sum::<f64>()
                    + f64::from(b[o])
            })
            .collect();
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        for (o, logit) in logits.iter().enumerate() {
            assert!((probs.data()[n * 3 + o] - logit.exp() / z).abs() < 1e-9);
        }
    }
}

#[test]
fn unsupported_op_names_the_op_and_node() {
    let nodes = [
        node("Relu", "/relu", &["x"], &["r"], &[]),
        node("Hardmax", "/head/Hardmax_3", &["r"], &["y"], &[]),
    ];
    let err = onnx::import(&model_bytes(&nodes, &[], &[0, 3], "y")).unwrap_err();
    assert!(matches!(err, NnError::UnsupportedOnnxOp { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("`Hardmax`") && msg.contains("/head/Hardmax_3"),
        "{msg}"
    );
    // The message lists what is supported.
    assert!(
        msg.contains("Conv") && msg.contains("Sigmoid") && msg.contains("Shape"),
        "{msg}"
    );
}

#[test]
fn malformed_or_unsupported_files_are_clear_errors() {
    assert!(matches!(
        onnx::import(b"\xff\xff\xff"),
        Err(NnError::Onnx(_))
    ));
    assert!(
        matches!(onnx::import(&[]), Err(NnError::Onnx(_))),
        "no graph"
    );

    // Asymmetric padding.
    let mut pads = Writer::new();
    pads.string(1, "pads")
        .packed_ints(8, &[0, 0, 1, 1])
        .int(20, 7);
    let nodes = [node("Conv", "/conv", &["x", "w"], &["y"], &[pads])];
    let inits = [tensor("w", &[3, 1, 1, 1], &[1.0, 2.0, 3.0])];
    let err = onnx::import(&model_bytes(&nodes, &inits, &[0, 1, 4, 4], "y")).unwrap_err();
    assert!(
        err.to_string().contains("/conv") && err.to_string().contains("pads"),
        "{err}"
    );

    // LogSoftmax before the end (a Softmax there is attention's, and runs).
    let nodes = [
        node("LogSoftmax", "/sm", &["x"], &["s"], &[]),
        node("Relu", "/relu", &["s"], &["y"], &[]),
    ];
    let err = onnx::import(&model_bytes(&nodes, &[], &[0, 3], "y")).unwrap_err();
    assert!(err.to_string().contains("LogSoftmax"), "{err}");
    let nodes = [
        node("Softmax", "/sm", &["x"], &["s"], &[]),
        node("Relu", "/relu", &["s"], &["y"], &[]),
    ];
    assert!(onnx::import(&model_bytes(&nodes, &[], &[0, 3], "y")).is_ok());

    // Weight shapes that do not fit the input.
    let nodes = [node("Gemm", "/fc", &["x", "w"], &["y"], &[])];
    let inits = [tensor("w", &[5, 3], &[0.0; 15])];
    let err = onnx::import(&model_bytes(&nodes, &inits, &[0, 4], "y")).unwrap_err();
    assert!(err.to_string().contains("/fc"), "{err}");
}

#[test]
fn errors_name_the_batch_not_the_importers_probe() {
    // Softmax over axis 0 of [N, 4, 3, 3]: across the batch, which is refused.
    let mut axis = Writer::new();
    axis.string(1, "axis").int(3, 0).int(20, 2);
    let nodes = [node("Softmax", "/sm", &["x"], &["y"], &[axis])];
    let err = onnx::import(&model_bytes(&nodes, &[], &[0, 4, 3, 3], "y")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("[N, 4, 3, 3]"), "{msg}");
    assert!(!msg.contains(&onnx::PROBE_BATCH.to_string()), "{msg}");
    // A reshape that moves the batch into axis 1 for good: the output must have it first.
    let nodes = [node("Reshape", "/r", &["x", "target"], &["y"], &[])];
    let inits = [int64_tensor("target", &[2, -1, 3])];
    let err = onnx::import(&model_bytes(&nodes, &inits, &[0, 4, 3], "y")).unwrap_err();
    let msg = err.to_string();
    assert!(
        !msg.contains(&onnx::PROBE_BATCH.to_string()) && msg.contains("batch axis first"),
        "{msg}"
    );
}
