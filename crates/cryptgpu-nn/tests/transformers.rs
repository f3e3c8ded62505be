//! Transformers as users export them (`tests/fixtures/transformers/`, written by
//! `make_transformer_fixtures.py` with `torch.onnx.export`, legacy opset 17 and dynamo): a
//! ViT with nn.LayerNorm and exact GELU, the same with a hand-written LayerNorm and the
//! tanh GELU, a decoder with a causal mask on embedded tokens, and a BERT-style classifier
//! and a GPT-2-style decoder on token ids (shared by the data owner as one-hot rows). Each
//! imports; its plaintext forward equals onnxruntime's within 1e-4 (relative); its private logits (three parties,
//! CPU backend, f = 20) are within 1e-2 (absolute) of onnxruntime's, with the same arg-max
//! on every row, at the exported batch and at batch 1.

use std::path::PathBuf;

use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::private::{SharedModel, share_model_input};
use cryptgpu_nn::{Model, Tensor, onnx, plain};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party};
use cryptgpu_transport::{PartyId, run_local_3pc};

mod common;

use common::{private_logits, read_f32_file as read_f32};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers")
}

/// The first `n` examples of `t`.
fn first(t: &Tensor, n: usize) -> Tensor {
    let mut shape = t.shape().to_vec();
    let per = t.len() / shape[0];
    shape[0] = n;
    Tensor::new(&shape, t.data()[..n * per].to_vec()).unwrap()
}

fn check(name: &str, input: &[usize], classes: usize) {
    let dir = fixtures();
    let model = onnx::import_file(&dir.join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(model.input_shape(), &input[1..], "{name}");
    let x = read_f32(&dir.join(format!("{name}.input.bin")), input);
    let want = read_f32(
        &dir.join(format!("{name}.output.bin")),
        &[input[0], classes],
    );
    let got = plain::predict(&model, &x).unwrap();
    let err = got
        .data()
        .iter()
        .zip(want.data())
        .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max);
    assert!(
        err < 1e-4,
        "{name}: plaintext differs from onnxruntime by {err:.2e}"
    );
    for batch in [input[0], 1] {
        let (x, want) = (first(&x, batch), first(&want, batch));
        let secret = private_logits(&model, &x);
        let gap = secret.max_abs_diff(&want);
        eprintln!("{name} at batch {batch}: private logits within {gap:.2e} of onnxruntime");
        assert!(
            gap < 1e-2,
            "{name}: private logits differ from onnxruntime by {gap}"
        );
        assert_eq!(
            secret.argmax_rows().unwrap(),
            want.argmax_rows().unwrap(),
            "{name}: private arg-max at batch {batch}"
        );
    }
}

#[test]
fn vit_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        check(&format!("vit_{exporter}"), &[3, 1, 28, 28], 10);
    }
}

#[test]
fn vit_with_hand_written_layer_norm_and_tanh_gelu() {
    check("vit_hand_legacy", &[3, 1, 28, 28], 10);
}

#[test]
fn causal_decoder_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        check(&format!("decoder_{exporter}"), &[3, 8, 32], 50);
    }
}

#[test]
fn bert_style_classifier_on_token_ids_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        let name = format!("bert_{exporter}");
        check(&name, &[3, 16], 3);
        let model = onnx::import_file(&fixtures().join(format!("{name}.onnx"))).unwrap();
        assert_eq!(model.token_vocabulary(), Some(100), "{name}");
    }
}

#[test]
fn gpt2_style_decoder_on_token_ids_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        check(&format!("gpt2_{exporter}"), &[3, 8], 64);
    }
}

#[test]
fn a_token_id_out_of_the_vocabulary_is_refused() {
    let model = onnx::import_file(&fixtures().join("gpt2_legacy.onnx")).unwrap();
    let ids = Tensor::new(&[1, 8], vec![1.0, 2.0, 3.0, 64.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
    let err = plain::predict(&model, &ids).unwrap_err().to_string();
    assert!(
        err.contains("token id 64") && err.contains("0..64"),
        "{err}"
    );
    let half = Tensor::new(&[1, 8], vec![0.5; 8]).unwrap();
    let err = plain::predict(&model, &half).unwrap_err().to_string();
    assert!(err.contains("not an integer"), "{err}");
}

#[test]
fn group_and_instance_norm_hard_activations_and_batchnorm1d_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        check(&format!("norms_{exporter}"), &[3, 3, 8, 8], 5);
    }
}

#[test]
fn torch_transformer_encoder_layers_whose_attention_moves_the_batch_axis() {
    for exporter in ["legacy", "dynamo"] {
        check(&format!("torch_encoder_{exporter}"), &[3, 8, 32], 5);
    }
}

/// Two private SGD steps of the ViT against two plaintext ones from the same start: with
/// the encoder frozen (`train_only(["head"])`), the head moves alike, the encoder does not
/// move and no backward pass runs through it; with everything trained, every parameter
/// (LayerNorms, GELUs, attention, the class token's constant excepted) moves alike.
#[test]
fn fine_tuning_a_head_on_a_frozen_private_encoder_and_training_it_all() {
    use cryptgpu_nn::optim::{Sgd, SgdConfig};
    use cryptgpu_nn::private::{PrivateSgd, share_input};

    let x = read_f32(&fixtures().join("vit_legacy.input.bin"), &[3, 1, 28, 28]);
    let labels = [1usize, 4, 7];
    let mut onehot = Tensor::zeros(&[3, 10]);
    for (row, &l) in labels.iter().enumerate() {
        onehot.data_mut()[row * 10 + l] = 1.0;
    }
    let config = SgdConfig::new(0.5).with_momentum(0.9);
    let plaintext = |start: &Model| {
        let mut model = start.clone();
        let mut sgd = Sgd::new(config);
        for step in 0..2 {
            plain::train_step(&mut model, &mut sgd, &x, &labels, step).unwrap();
        }
        model
    };
    let private = |model: &Model| {
        let [owner, _, _] = run_local_3pc(|t| {
            let mut p = Party::setup_with(
                CpuBackend::new(),
                t,
                FixedPoint::default(),
                KeySource::InsecureSeeded(9),
            )
            .unwrap();
            let mut shared = SharedModel::share_for_training(&mut p, model, PartyId::P0)?;
            let mut sgd = PrivateSgd::new(config);
            let mine = p.id() == PartyId::P1;
            for step in 0..2 {
                let sx =
                    share_model_input(&mut p, model, PartyId::P1, mine.then_some(&x), x.shape())?;
                let sy = share_input(&mut p, PartyId::P1, mine.then_some(&onehot), &[3, 10])?;
                shared.train_step(&mut p, &mut sgd, &sx, &sy, step)?;
            }
            shared.reveal_to(&mut p, PartyId::P0)
        })
        .unwrap();
        owner.unwrap().unwrap()
    };
    let mut start = onnx::import_file(&fixtures().join("vit_legacy.onnx")).unwrap();
    for head_only in [true, false] {
        let prefixes: Vec<String> = if head_only {
            vec!["head".into()]
        } else {
            vec![]
        };
        let trained = start.train_only(&prefixes).unwrap();
        if head_only {
            assert_eq!(trained, 2);
        }
        let (want, got) = (plaintext(&start), private(&start));
        let mut moved_encoder = 0.0f64;
        for (name, w) in &want.params {
            let moved = w.max_abs_diff(&start.params[name]);
            let gap = got.params[name].max_abs_diff(w);
            let tolerance = if head_only { 2e-3 } else { 5e-3 };
            assert!(
                gap < tolerance,
                "{name}: private differs from plaintext by {gap}"
            );
            if name.starts_with("head") {
                assert!(moved > 1e-3, "{name} did not move in plaintext ({moved})");
            } else if head_only {
                assert_eq!(moved, 0.0, "{name} is frozen but moved in plaintext");
            } else {
                moved_encoder = moved_encoder.max(moved);
            }
        }
        assert!(
            head_only || moved_encoder > 1e-3,
            "training everything moved the encoder by {moved_encoder}"
        );
    }
}

/// A softmax over an axis other than the last (here over the 3 rows of `[N, 3, 4]`), as
/// the output: computed privately, within 10^-3 of plaintext.
#[test]
fn softmax_over_another_axis_runs_privately() {
    use cryptgpu_nn::layers::prelude::Softmax;
    use cryptgpu_nn::model::GraphBuilder;

    let mut b = GraphBuilder::new();
    let fc = b.add("fc", cryptgpu_nn::zoo::linear(4, 4), &[0]);
    let soft = b.add("soft", Softmax { axis: Some(1) }, &[fc]);
    let model = b.finish("columns", &[3, 4], soft, 3).unwrap();
    let values: Vec<f64> = (0..24).map(|i| ((i * 7 % 11) as f64 - 5.0) / 2.0).collect();
    let x = Tensor::new(&[2, 3, 4], values).unwrap();
    let want = plain::predict(&model, &x).unwrap();
    for column in want.data().chunks(12) {
        for j in 0..4 {
            let total: f64 = (0..3).map(|r| column[r * 4 + j]).sum();
            assert!((total - 1.0).abs() < 1e-9, "a column sums to {total}");
        }
    }
    let got = private_logits(&model, &x);
    let gap = got.max_abs_diff(&want);
    assert!(gap < 1e-3, "private softmax over axis 1 differs by {gap}");
}
