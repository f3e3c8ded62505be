//! Smoke tests of the `cryptgpu` binary as a user runs it: the demo, inference and
//! training with `--limit` on the bundled MNIST sample, JSON output, and the clear errors
//! for a missing data directory, an unknown model and weights of the wrong shapes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cryptgpu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryptgpu"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "cryptgpu failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// A data directory holding the bundled sample as both the MNIST test and training split.
fn sample_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cryptgpu-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sample = assets().join("mnist-sample");
    for (from, to) in [
        ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ] {
        std::fs::copy(sample.join(from), dir.join(to)).unwrap();
    }
    dir
}

fn check_report(v: &serde_json::Value, samples: u64) {
    for key in ["accuracy", "plaintext_accuracy", "agreement", "seconds"] {
        assert!(v[key].is_f64(), "{key} missing in {v}");
    }
    assert_eq!(v["samples"], samples);
    let bytes = v["bytes_sent_per_party"].as_array().expect("three numbers");
    assert_eq!(bytes.len(), 3);
    assert!(bytes.iter().all(|b| b.as_u64().unwrap() > 0));
    assert!(v["rounds"].as_u64().unwrap() > 10);
    assert!(v["backend"].is_string());
}

#[test]
fn demo_classifies_bundled_digits_privately() {
    let v = json_of(&cryptgpu(&[
        "demo",
        "--limit",
        "20",
        "--backend",
        "cpu",
        "--json",
    ]));
    check_report(&v, 20);
    assert_eq!(v["backend"], "cpu");
    assert!(v["agreement"].as_f64().unwrap() >= 0.95, "{v}");
    assert!(v["plaintext_accuracy"].as_f64().unwrap() >= 0.9, "{v}");
}

#[test]
fn infer_and_train_on_a_data_directory() {
    let dir = sample_dir();
    let d = dir.to_str().unwrap();
    let weights = assets().join("lenet-mnist.safetensors");
    let v = json_of(&cryptgpu(&[
        "infer",
        "--model",
        "lenet",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        d,
        "--limit",
        "16",
        "--batch",
        "8",
        "--backend",
        "cpu",
        "--json",
    ]));
    check_report(&v, 16);
    let saved = dir.join("secureml.safetensors");
    let v = json_of(&cryptgpu(&[
        "train",
        "--model",
        "secureml",
        "--data",
        d,
        "--limit",
        "64",
        "--batch",
        "32",
        "--backend",
        "cpu",
        "--save",
        saved.to_str().unwrap(),
        "--json",
    ]));
    check_report(&v, 64);
    assert_eq!(v["epoch_accuracy"].as_array().unwrap().len(), 1);
    assert!(saved.is_file(), "--save wrote the trained weights");
    // The saved weights load back into the same architecture.
    let v = json_of(&cryptgpu(&[
        "infer",
        "--model",
        "secureml",
        "--weights",
        saved.to_str().unwrap(),
        "--data",
        d,
        "--limit",
        "8",
        "--backend",
        "cpu",
        "--json",
    ]));
    check_report(&v, 8);
    std::fs::remove_dir_all(dir).ok();
}

fn error_of(args: &[&str]) -> String {
    let out = cryptgpu(args);
    assert!(!out.status.success(), "cryptgpu {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_gives_clear_errors() {
    let missing = error_of(&[
        "infer",
        "--model",
        "lenet",
        "--data",
        "/nonexistent/mnist",
        "--backend",
        "cpu",
    ]);
    assert!(missing.contains("t10k-images-idx3-ubyte"), "{missing}");
    let unknown = error_of(&[
        "infer",
        "--model",
        "lenet7",
        "--dataset",
        "synthetic",
        "--backend",
        "cpu",
    ]);
    assert!(
        unknown.contains("lenet7") && unknown.contains("secureml"),
        "{unknown}"
    );
    let weights = assets().join("lenet-mnist.safetensors");
    let wrong = error_of(&[
        "infer",
        "--model",
        "secureml",
        "--weights",
        weights.to_str().unwrap(),
        "--dataset",
        "synthetic",
        "--backend",
        "cpu",
    ]);
    assert!(
        wrong.contains("fc1.weight") || wrong.contains("features.0.weight"),
        "{wrong}"
    );
}
