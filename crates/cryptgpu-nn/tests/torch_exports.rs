//! Models as users export them: `torch.onnx.export` (legacy and dynamo exporters, dynamic
//! batch) of torchvision's squeezenet1_1 and mobilenet_v2 and of a tutorial-style MNIST CNN
//! (`tests/fixtures/torch/make_torch_fixtures.py`). Each imports, its plaintext forward
//! equals onnxruntime's within 1e-4 (relative), and its private forward equals the
//! plaintext one within the fixed-point bound with the same arg-max on every row, at the
//! exported batch and at another one (the batch axis is dynamic).
//!
//! resnet18 (45 MB) is not committed: with `CRYPTGPU_TORCH_MODELS` naming the folder that
//! `make_torch_fixtures.py --large DIR` wrote, its two exports run too; otherwise the test
//! says it skipped them.

use std::path::{Path, PathBuf};

use cryptgpu_nn::{Tensor, onnx, plain};

mod common;

use common::{private_logits, read_f32_file as read_f32};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
}

/// The largest |a − b| / max(1, |b|).
fn max_relative(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

fn check(dir: &Path, name: &str, input: &[usize], private: bool) {
    let model = onnx::import_file(&dir.join(format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(model.input_shape(), &input[1..], "{name}");
    let x = read_f32(&dir.join(format!("{name}.input.bin")), input);
    let want = read_f32(&dir.join(format!("{name}.output.bin")), &[input[0], 10]);
    let got = plain::predict(&model, &x).unwrap();
    let err = max_relative(&got, &want);
    assert!(
        err < 1e-4,
        "{name}: plaintext differs from onnxruntime by {err:.2e} (relative)"
    );
    let want_classes = want.argmax_rows().unwrap();
    assert_eq!(plain::classify(&model, &x).unwrap(), want_classes, "{name}");
    // The batch axis is dynamic: a batch of one (the last example) gives the same row.
    let last = Tensor::new(
        &[1, input[1], input[2], input[3]],
        x.data()[x.len() / input[0] * (input[0] - 1)..].to_vec(),
    )
    .unwrap();
    let single = plain::predict(&model, &last).unwrap();
    assert!(
        max_relative(
            &single,
            &Tensor::new(&[1, 10], want.data()[want.len() - 10..].to_vec()).unwrap()
        ) < 1e-4,
        "{name} at batch 1"
    );
    if !private {
        return;
    }
    let logits = plain::forward(&model, &x, plain::Mode::Inference).unwrap();
    let plain_logits = logits.logits(&model).clone();
    let secret = private_logits(&model, &x);
    let gap = secret.max_abs_diff(&plain_logits);
    let scale = plain_logits
        .data()
        .iter()
        .fold(1.0f64, |m, v| m.max(v.abs()));
    eprintln!("{name}: private logits within {gap:.2e} of plaintext (largest |logit| {scale:.1})");
    assert!(
        gap < 1e-2 * scale,
        "{name}: private logits differ from plaintext by {gap}"
    );
    assert_eq!(
        secret.argmax_rows().unwrap(),
        want_classes,
        "{name}: private arg-max"
    );
}

#[test]
fn tutorial_mnist_cnn_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        check(
            &fixtures(),
            &format!("mnist_cnn_{exporter}"),
            &[3, 1, 28, 28],
            true,
        );
    }
}

#[test]
fn squeezenet1_1_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        check(
            &fixtures(),
            &format!("squeezenet1_1_{exporter}"),
            &[3, 3, 32, 32],
            true,
        );
    }
}

#[test]
fn mobilenet_v2_from_both_exporters() {
    for exporter in ["legacy", "dynamo"] {
        check(
            &fixtures(),
            &format!("mobilenet_v2_{exporter}"),
            &[3, 3, 32, 32],
            true,
        );
    }
}

#[test]
fn resnet18_from_both_exporters_when_generated() {
    let Some(dir) = std::env::var_os("CRYPTGPU_TORCH_MODELS") else {
        eprintln!(
            "SKIPPED resnet18: set CRYPTGPU_TORCH_MODELS to the folder written by \
             `make_torch_fixtures.py --large DIR` (45 MB, not committed)"
        );
        return;
    };
    for exporter in ["legacy", "dynamo"] {
        check(
            Path::new(&dir),
            &format!("resnet18_{exporter}"),
            &[3, 3, 32, 32],
            true,
        );
    }
}

/// External data (the dynamo exporter's `model.onnx.data`) is read from the model's folder
/// only, and a missing, truncated or escaping data file is a clear error.
#[test]
fn external_data_is_read_safely() {
    let model_bytes = std::fs::read(fixtures().join("mnist_cnn_dynamo.onnx")).unwrap();
    let data = std::fs::read(fixtures().join("mnist_cnn_dynamo.onnx.data")).unwrap();
    let location = b"mnist_cnn_dynamo.onnx.data";
    let replace = |with: &[u8]| -> Vec<u8> {
        assert_eq!(with.len(), location.len());
        let mut out = model_bytes.clone();
        let mut i = 0;
        while i + location.len() <= out.len() {
            if &out[i..i + location.len()] == location {
                out[i..i + location.len()].copy_from_slice(with);
            }
            i += 1;
        }
        out
    };
    let dir = std::env::temp_dir().join(format!("cryptgpu-external-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("model")).unwrap();
    let model_path = dir.join("model/net.onnx");
    let error = |bytes: &[u8]| -> String {
        std::fs::write(&model_path, bytes).unwrap();
        onnx::import_file(&model_path).unwrap_err().to_string()
    };

    // From bytes alone there is no folder to read from.
    let msg = onnx::import(&model_bytes).unwrap_err().to_string();
    assert!(
        msg.contains("external data") && msg.contains("from its file"),
        "{msg}"
    );
    // No data file beside the model.
    let msg = error(&model_bytes);
    assert!(msg.contains("mnist_cnn_dynamo.onnx.data"), "{msg}");
    // A location that climbs out of the folder, or is absolute.
    let msg = error(&replace(b"../mnist_cnn_dynamo.onnx.dat"[..26].as_ref()));
    assert!(msg.contains("not a plain path"), "{msg}");
    let msg = error(&replace(b"/etc/mnist_cnn_dynamo.onnx"));
    assert!(msg.contains("not a plain path"), "{msg}");
    // A link that leads outside the folder.
    std::fs::write(dir.join("outside.data"), &data).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(
            dir.join("outside.data"),
            dir.join("model")
                .join(std::str::from_utf8(location).unwrap()),
        )
        .unwrap();
        let msg = error(&model_bytes);
        assert!(msg.contains("leads outside"), "{msg}");
        std::fs::remove_file(
            dir.join("model")
                .join(std::str::from_utf8(location).unwrap()),
        )
        .unwrap();
    }
    // A truncated data file.
    std::fs::write(
        dir.join("model")
            .join(std::str::from_utf8(location).unwrap()),
        &data[..data.len() / 2],
    )
    .unwrap();
    let msg = error(&model_bytes);
    assert!(msg.contains("does not hold"), "{msg}");
    // The whole file beside the model imports.
    std::fs::write(
        dir.join("model")
            .join(std::str::from_utf8(location).unwrap()),
        &data,
    )
    .unwrap();
    std::fs::write(&model_path, &model_bytes).unwrap();
    onnx::import_file(&model_path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
