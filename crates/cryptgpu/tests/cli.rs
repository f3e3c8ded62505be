//! Smoke tests of the `cryptgpu` binary as a user runs it: the demo, inference and
//! training with `--limit` on the bundled MNIST sample, JSON output, and the clear errors
//! for a missing data directory, an unknown model and weights of the wrong shapes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{argv, lenet_weights, mnist_sample_into, npy};

/// `cryptgpu` with the arguments of `line`, each `{name}` replaced by its value in `vars`.
fn cryptgpu(line: &str, vars: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cryptgpu"))
        .args(argv(line, vars))
        .output()
        .expect("the binary runs")
}

/// The JSON report of `cryptgpu LINE --backend cpu --json`, which must succeed.
fn json(line: &str, vars: &[(&str, &str)]) -> serde_json::Value {
    let out = cryptgpu(&format!("{line} --backend cpu --json"), vars);
    assert!(
        out.status.success(),
        "cryptgpu {line} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

/// What `cryptgpu LINE` prints on stderr; it must fail.
fn error_of(line: &str, vars: &[(&str, &str)]) -> String {
    let out = cryptgpu(line, vars);
    assert!(!out.status.success(), "cryptgpu {line} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh directory for one test (`tag`), since tests run side by side and each removes
/// its own.
fn test_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cryptgpu-cli-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A data directory holding the bundled sample as both the MNIST test and training split.
fn sample_dir(tag: &str) -> PathBuf {
    let dir = test_dir(tag);
    mnist_sample_into(&dir);
    dir
}

/// A path as one command-line argument.
fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
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
    let v = json("demo --limit 20", &[]);
    check_report(&v, 20);
    assert_eq!(v["backend"], "cpu");
    assert!(v["agreement"].as_f64().unwrap() >= 0.95, "{v}");
    assert!(v["plaintext_accuracy"].as_f64().unwrap() >= 0.9, "{v}");
}

#[test]
fn infer_and_train_on_a_data_directory() {
    let dir = sample_dir("infer-train");
    let weights = lenet_weights();
    let vars = [("d", arg(&dir)), ("w", arg(&weights))];
    let v = json(
        "infer --model lenet --weights {w} --data {d} --limit 16 --batch 8",
        &vars,
    );
    check_report(&v, 16);
    assert_eq!(v["truncation"], "exact", "exact truncation is the default");
    assert_eq!(
        v["comparison_bits"], 47,
        "the comparison domain is 63 − f by default"
    );
    // Probabilistic truncation, chosen per job.
    let v = json(
        "infer --model lenet --weights {w} --data {d} --limit 8 --frac-bits 20 \
         --truncation probabilistic --comparison-bits 62",
        &vars,
    );
    check_report(&v, 8);
    assert_eq!(
        (
            v["truncation"].as_str(),
            v["frac_bits"].as_u64(),
            v["comparison_bits"].as_u64()
        ),
        (Some("probabilistic"), Some(20), Some(62))
    );
    let v = json(
        "train --model secureml --data {d} --limit 64 --batch 32 --save {d}/secureml.safetensors",
        &vars,
    );
    check_report(&v, 64);
    assert_eq!(v["epoch_accuracy"].as_array().unwrap().len(), 1);
    assert!(
        dir.join("secureml.safetensors").is_file(),
        "--save wrote the trained weights"
    );
    // The saved weights load back into the same architecture.
    let v = json(
        "infer --model secureml --weights {d}/secureml.safetensors --data {d} --limit 8",
        &vars,
    );
    check_report(&v, 8);
    std::fs::remove_dir_all(dir).ok();
}

/// A model exported by `torch.onnx.export` (dynamic batch, external data) runs privately
/// and fine-tunes from its weights; the trained model saved as ONNX imports and runs again.
#[test]
fn an_onnx_export_infers_fine_tunes_and_saves() {
    let dir = sample_dir("onnx");
    let export = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cryptgpu-nn/tests/fixtures/torch/mnist_cnn_dynamo.onnx");
    let vars = [("d", arg(&dir)), ("export", arg(&export))];
    let v = json("infer --weights {export} --data {d} --limit 8", &vars);
    check_report(&v, 8);
    assert_eq!(v["agreement"], 1.0, "{v}");
    let v = json(
        "train --weights {export} --data {d} --limit 32 --batch 16 --save {d}/tuned.onnx",
        &vars,
    );
    check_report(&v, 32);
    assert!(
        dir.join("tuned.onnx").is_file(),
        "--save wrote the fine-tuned model"
    );
    let v = json("infer --weights {d}/tuned.onnx --data {d} --limit 8", &vars);
    check_report(&v, 8);
    // Training an imported graph again, saved for PyTorch as safetensors.
    let v = json(
        "train --weights {d}/tuned.onnx --data {d} --limit 16 --batch 16 --save {d}/tuned.safetensors",
        &vars,
    );
    check_report(&v, 16);
    assert!(dir.join("tuned.safetensors").is_file());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_input_gives_clear_errors() {
    // A missing data directory, an unknown model (the known ones listed), an unknown
    // truncation mode (the modes listed).
    for (line, expected) in [
        (
            "infer --model lenet --data /nonexistent/mnist --backend cpu",
            &["t10k-images-idx3-ubyte"][..],
        ),
        (
            "infer --model lenet7 --dataset synthetic --backend cpu",
            &["lenet7", "secureml"],
        ),
        (
            "infer --model lenet --dataset synthetic --truncation sometimes",
            &["exact", "probabilistic"],
        ),
    ] {
        let e = error_of(line, &[]);
        assert!(expected.iter().all(|x| e.contains(x)), "{line}: {e}");
    }
    let weights = lenet_weights();
    let wrong = error_of(
        "infer --model secureml --weights {w} --dataset synthetic --backend cpu",
        &[("w", arg(&weights))],
    );
    assert!(
        wrong.contains("fc1.weight") || wrong.contains("features.0.weight"),
        "{wrong}"
    );
}

/// Outputs are checked before any work: a run whose result could not be written stops at
/// once, not after the job; and fractional bits outside 8..=28 are refused with the reason.
#[test]
fn outputs_and_the_format_are_checked_before_any_work() {
    let dir = test_dir("outputs");
    let weights = lenet_weights();
    let infer = |out: &Path| {
        let start = std::time::Instant::now();
        let e = error_of(
            "infer --model lenet --weights {w} --dataset synthetic --limit 512 --backend cpu \
             --out {out}",
            &[("w", arg(&weights)), ("out", arg(out))],
        );
        // Refused before the three parties start: no private inference ran.
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "{e}");
        assert!(e.contains("no work is lost"), "{e}");
        e
    };
    let e = infer(&dir.join("p.xlsx"));
    assert!(e.contains("unknown format .xlsx"), "{e}");
    let e = infer(&dir.join("missing").join("p.csv"));
    assert!(e.contains("cannot be used"), "{e}");
    let e = infer(&dir);
    assert!(e.contains("is a folder"), "{e}");
    let e = error_of(
        "train --model secureml --dataset synthetic --backend cpu --save {save}",
        &[("save", arg(&dir.join("m.pt")))],
    );
    assert!(e.contains("--save") && e.contains(".safetensors"), "{e}");
    for f in ["0", "7", "29", "60"] {
        let e = error_of(
            "infer --model lenet --dataset synthetic --frac-bits {f}",
            &[("f", f)],
        );
        assert!(e.contains("from 8 to 28"), "--frac-bits {f}: {e}");
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "a file was left"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_data_owner_s_own_inputs_and_outputs() {
    let dir = test_dir("inputs");
    let weights = lenet_weights();
    // Five 28×28 "digits" as NHWC uint8, with labels in a text file.
    let pixels: Vec<u8> = (0..5 * 28 * 28).map(|i| ((i * 37) % 251) as u8).collect();
    std::fs::write(dir.join("digits.npy"), npy("|u1", &[5, 28, 28, 1], &pixels)).unwrap();
    std::fs::write(dir.join("labels.txt"), "1\n2\n3\n4\n5\n").unwrap();
    let vars = [("w", arg(&weights)), ("d", arg(&dir))];
    let v = json(
        "infer --model lenet --weights {w} --input {d}/digits.npy --layout nhwc \
         --labels {d}/labels.txt --reveal probabilities --out {d}/scores.json",
        &vars,
    );
    assert_eq!(v["samples"], 5);
    assert!(v["accuracy"].is_f64(), "{v}");
    let scores: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("scores.json")).unwrap()).unwrap();
    let rows = scores.as_array().unwrap();
    assert_eq!(rows.len(), 5);
    for row in rows {
        let p = row["probabilities"].as_array().unwrap();
        assert_eq!(p.len(), 10);
        let total: f64 = p.iter().map(|x| x.as_f64().unwrap()).sum();
        assert!((total - 1.0).abs() < 0.02, "{row}");
    }
    // The wrong layout is refused with a hint.
    let e = error_of(
        "infer --model lenet --weights {w} --input {d}/digits.npy --backend cpu",
        &vars,
    );
    assert!(e.contains("--layout nhwc"), "{e}");

    // A folder of images of other sizes and colours, no labels: classes only, no accuracy.
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    image::RgbImage::from_fn(40, 30, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])
    })
    .save(images.join("b.png"))
    .unwrap();
    image::GrayImage::from_fn(28, 28, |x, _| image::Luma([(x * 9) as u8]))
        .save(images.join("a.png"))
        .unwrap();
    let v = json(
        "infer --model lenet --weights {w} --input {d}/images --out {d}/predictions.csv",
        &vars,
    );
    assert_eq!(v["samples"], 2);
    assert!(v["accuracy"].is_null(), "{v}");
    let text = std::fs::read_to_string(dir.join("predictions.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "input,class");
    assert!(
        lines[1].starts_with("a.png,") && lines[2].starts_with("b.png,"),
        "{text}"
    );

    // Synthetic data needs no --data, for training too; the ONNX export loads back.
    json(
        "train --model secureml --dataset synthetic --limit 16 --batch 8 --save {d}/trained.onnx",
        &vars,
    );
    let v = json(
        "infer --weights {d}/trained.onnx --dataset synthetic --limit 4",
        &vars,
    );
    assert_eq!(v["samples"], 4);
    // Nothing but the outputs asked for is left in the folder.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "digits.npy",
            "images",
            "labels.txt",
            "predictions.csv",
            "scores.json",
            "trained.onnx"
        ]
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `cryptgpu bench`: one cell of the bench matrix, as `cargo xtask bench` runs it.
/// LeNet's private inference at batch 1 on the CPU: the bench reports each party's device
/// work and its cost per round beside the floor, messages stay on the device unless asked
/// otherwise, and the launches a round costs stay within budget (a regression of the GPU
/// path's launch count shows here first).
#[test]
fn bench_counts_device_work_per_round() {
    let cell = |extra: &str| {
        json(
            &format!("bench --network lenet --batch 1 --runs 1 --warmup 0 {extra}"),
            &[],
        )
    };
    let on_device = cell("");
    let via_host = cell("--messages-via-host");
    assert_eq!(on_device["messages"], "device");
    assert_eq!(via_host["messages"], "host");
    assert_eq!(on_device["rounds"], via_host["rounds"]);
    assert_eq!(on_device["bytes_sent"], via_host["bytes_sent"]);
    let rounds = on_device["rounds"].as_u64().unwrap();
    for party in 0..3 {
        let d = &on_device["device_counts"][party];
        let h = &via_host["device_counts"][party];
        let count = |c: &serde_json::Value, k: &str| c[k].as_u64().unwrap();
        // On the device only the inputs move (the data owner's image, and weights), never
        // a message; through the host every message is downloaded once.
        assert!(
            count(d, "downloads") <= 1,
            "P{party} downloads with messages on the device: {d}"
        );
        assert!(
            count(h, "downloads") >= rounds / 2,
            "P{party} downloads through the host: {h}"
        );
        assert!(count(d, "launches") > rounds, "{d}");
    }
    let per_round = &on_device["device_counts_per_round"];
    let launches = per_round["launches"].as_f64().unwrap();
    // 31.1 before the carry tree picked its rows in one pass and the protocols fused their
    // local terms; 15.1 after.
    assert!(launches <= 16.0, "launches per round: {per_round}");
    assert!(per_round["uploads"].as_f64().unwrap() < 0.1, "{per_round}");
    assert_eq!(on_device["round_floor"]["launches"], 1);
    assert_eq!(on_device["round_floor"]["downloads"], 0);
    assert_eq!(via_host["round_floor"]["downloads"], 1);
}

#[test]
fn bench_times_a_network_and_a_gemm() {
    let training = "bench --network secureml --mode training --batch 2";
    let plain = json(&format!("{training} --runs 2 --warmup 1"), &[]);
    assert_eq!(plain["network"], "secureml");
    assert_eq!(plain["mode"], "training");
    assert_eq!(plain["input_shape"], serde_json::json!([1, 28, 28]));
    assert_eq!(plain["link"], "none");
    assert_eq!(plain["seconds"].as_array().unwrap().len(), 2);
    assert!(plain["median_seconds"].as_f64().unwrap() > 0.0);
    let bytes: Vec<u64> = plain["bytes_sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert!(bytes.iter().all(|&b| b > 0), "{plain}");
    assert!(plain["rounds"].as_u64().unwrap() > 10);
    assert!(plain["peak_rss_bytes"].as_u64().unwrap() > 0);
    // Each party's peak of device memory, from the ledger every backend charges.
    let peaks: Vec<u64> = plain["peak_device_bytes"]
        .as_array()
        .unwrap_or_else(|| panic!("peak_device_bytes per party: {plain}"))
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    assert_eq!(peaks.len(), 3, "{plain}");
    assert!(peaks.iter().all(|&b| b > 0), "{plain}");

    // The same cell over an emulated link sends the same bytes in the same rounds, and each
    // iteration takes at least its rounds' one-way latencies (a lower bound only).
    let linked = json(
        &format!("{training} --runs 1 --warmup 1 --link 1gbit,2ms"),
        &[],
    );
    assert_eq!(linked["link"], "1gbit,2ms");
    assert_eq!(linked["link_rtt_seconds"].as_f64().unwrap(), 0.002);
    assert_eq!(linked["link_bits_per_second"].as_f64().unwrap(), 1e9);
    assert_eq!(linked["bytes_sent"], plain["bytes_sent"]);
    assert_eq!(linked["rounds"], plain["rounds"]);
    let rounds = linked["rounds"].as_f64().unwrap();
    assert!(
        linked["median_seconds"].as_f64().unwrap() >= rounds * 0.001,
        "{linked}"
    );

    let gemm = json("bench --gemm 64 --runs 2", &[]);
    assert_eq!(gemm["n"], 64);
    assert_eq!(gemm["backend"], "cpu");
    assert!(gemm["macs_per_second"].as_f64().unwrap() > 0.0);

    for (line, expected) in [
        ("bench --network nonet --backend cpu", "nonet"),
        (
            "bench --network lenet --link 5 --backend cpu",
            "BANDWIDTH,RTT",
        ),
        ("bench --network lenet --batch 0 --backend cpu", "--batch"),
        ("bench --gemm 0 --backend cpu", "--gemm"),
        ("bench --network lenet --runs 0 --backend cpu", "--runs"),
        (
            "bench --network lenet --device-memory 12parsecs --backend cpu",
            "unknown unit `parsecs`",
        ),
        (
            "bench --network lenet --device-memory 0 --backend cpu",
            "needs some device memory",
        ),
        // LeNet's first layer at batch 64 does not fit in 40 MB a party (its weights do):
        // the error names the layer (`features.0 (Conv2d, forward)` today) and the bytes.
        (
            "bench --network lenet --batch 64 --runs 1 --warmup 0 --device-memory 40MB \
             --backend cpu",
            "forward) does not fit: ",
        ),
        (
            "bench --network lenet --batch 64 --runs 1 --warmup 0 --device-memory 40MB \
             --backend cpu",
            ": layer `features.",
        ),
        (
            "bench --network lenet --batch 64 --runs 1 --warmup 0 --device-memory 40MB \
             --backend cpu",
            "of its 40.0 MB limit",
        ),
    ] {
        let message = error_of(line, &[]);
        assert!(
            message.contains(expected),
            "{line}: expected `{expected}` in: {message}"
        );
    }
}
