//! Three `cryptgpu party` processes on 127.0.0.1, as users run them: they give the
//! in-process predictions (and, with seeded keys, the in-process revealed values and trained
//! weights bit for bit); a party killed or interrupted at a random moment stops the other two
//! within the timeout with an error naming it and no partial output file; strangers and
//! misconfigurations are refused with clear errors.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{argv, lenet_weights, mnist_sample_into, npy};

const BIN: &str = env!("CARGO_BIN_EXE_cryptgpu");

/// Connect and receive timeouts of the test deployments, in seconds.
const CONNECT_SECS: u64 = 8;
const RECV_SECS: u64 = 10;

fn weights() -> String {
    lenet_weights().display().to_string()
}

/// A data directory holding the bundled MNIST sample as both the test and the training
/// split.
fn sample() -> String {
    let dir = std::env::temp_dir().join(format!("cryptgpu-party-{}-mnist", std::process::id()));
    mnist_sample_into(&dir);
    dir.display().to_string()
}

/// A fresh directory for one test.
fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cryptgpu-party-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Three free loopback ports.
fn free_addresses() -> Vec<String> {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect()
}

/// `cryptgpu certs` into `dir` with free ports and the test timeouts; returns parties.toml.
fn deployment(dir: &Path) -> PathBuf {
    let addresses = free_addresses().join(",");
    let vars = [("dir", dir.to_str().unwrap()), ("addresses", &addresses)];
    in_process(&argv("certs --out {dir} --addresses {addresses}", &vars));
    let path = dir.join("parties.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "connect_timeout_secs = 30",
            &format!("connect_timeout_secs = {CONNECT_SECS}"),
        )
        .replace(
            "recv_timeout_secs = 120",
            &format!("recv_timeout_secs = {RECV_SECS}"),
        );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `cryptgpu party --config CONFIG --id ID ARGS...`.
fn start_party(config: &Path, id: usize, args: &[String]) -> Child {
    Command::new(BIN)
        .args(["party", "--config", config.to_str().unwrap(), "--id"])
        .arg(id.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; kills it and returns `None` if it is still running.
fn wait_for(mut child: Child, limit: Duration) -> Option<Output> {
    let start = Instant::now();
    loop {
        match child.try_wait().unwrap() {
            Some(_) => return Some(child.wait_with_output().unwrap()),
            None if start.elapsed() >= limit => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            None => thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs the three parties to the end (each within `limit`) and returns their outputs.
fn run_three(config: &Path, args: [Vec<String>; 3], limit: Duration) -> [Output; 3] {
    let children: Vec<Child> = args
        .iter()
        .enumerate()
        .map(|(id, a)| start_party(config, id, a))
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .enumerate()
        .map(|(id, c)| wait_for(c, limit).unwrap_or_else(|| panic!("P{id} hung")))
        .collect();
    let mut it = outputs.into_iter();
    [it.next().unwrap(), it.next().unwrap(), it.next().unwrap()]
}

fn succeeded(outputs: &[Output; 3]) {
    for (id, o) in outputs.iter().enumerate() {
        assert!(
            o.status.success(),
            "P{id} failed: {}{}",
            text(&o.stderr),
            text(&o.stdout)
        );
    }
}

/// `cryptgpu` with `args` (the in-process `infer` or `train`, or `certs`); panics if it
/// fails.
fn in_process(args: &[String]) -> Output {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    out
}

/// The classes column of a predictions CSV.
fn csv_classes(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().to_string())
        .collect()
}

#[test]
fn three_processes_give_the_in_process_predictions() {
    let dir = test_dir("predictions");
    let config = deployment(&dir);
    let (inproc, party) = (dir.join("inproc.csv"), dir.join("party.csv"));
    let (w, s) = (weights(), sample());
    let vars = [
        ("w", w.as_str()),
        ("s", s.as_str()),
        ("inproc", inproc.to_str().unwrap()),
        ("party", party.to_str().unwrap()),
    ];
    in_process(&argv(
        "infer --model lenet --weights {w} --data {s} --limit 40 --batch 20 --backend cpu \
         --out {inproc}",
        &vars,
    ));
    let outputs = run_three(
        &config,
        [
            argv("infer --model lenet --weights {w} --backend cpu", &vars),
            argv(
                "infer --data {s} --limit 40 --batch 20 --backend cpu --out {party} --json",
                &vars,
            ),
            argv("infer --backend cpu", &vars),
        ],
        Duration::from_secs(300),
    );
    succeeded(&outputs);
    assert_eq!(csv_classes(&party), csv_classes(&inproc));
    assert_eq!(csv_classes(&party).len(), 40);
    let report: serde_json::Value = serde_json::from_slice(&outputs[1].stdout).unwrap();
    assert_eq!(report["party"], 1);
    assert_eq!(report["role"], "data owner");
    assert!(report["accuracy"].as_f64().unwrap() >= 0.95, "{report}");
    assert!(report["bytes_sent"].as_u64().unwrap() > 0);
    // The helper learns no predictions and says so by printing none.
    assert!(!text(&outputs[2].stdout).contains("predicted"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn with_seeded_keys_revealed_logits_and_trained_weights_are_bit_identical() {
    let dir = test_dir("seeded");
    let config = deployment(&dir);
    let (w, s) = (weights(), sample());
    let other_backend = if std::env::var("CRYPTGPU_REQUIRE_WGPU").is_ok_and(|v| v == "1") {
        "wgpu"
    } else {
        eprintln!("skipped: a second backend for P2 (set CRYPTGPU_REQUIRE_WGPU=1 to use wgpu)");
        "cpu"
    };
    let files = [
        "inproc.npy",
        "party.npy",
        "inproc.safetensors",
        "party.safetensors",
    ]
    .map(|f| dir.join(f).display().to_string());
    let vars = [
        ("w", w.as_str()),
        ("s", s.as_str()),
        ("other", other_backend),
        ("inproc_npy", files[0].as_str()),
        ("party_npy", files[1].as_str()),
        ("inproc_st", files[2].as_str()),
        ("party_st", files[3].as_str()),
    ];
    let keys = " --insecure-test-keys 7";

    // Inference revealing the logits; P2 runs another backend where one is available.
    in_process(&argv(
        &format!(
            "infer --model lenet --weights {{w}} --data {{s}} --limit 12 --batch 6 \
             --reveal logits --backend cpu --out {{inproc_npy}}{keys}"
        ),
        &vars,
    ));
    let outputs = run_three(
        &config,
        [
            argv(
                &format!("infer --model lenet --weights {{w}} --backend cpu{keys}"),
                &vars,
            ),
            argv(
                &format!(
                    "infer --data {{s}} --limit 12 --batch 6 --reveal logits --backend cpu \
                     --out {{party_npy}}{keys}"
                ),
                &vars,
            ),
            argv(&format!("infer --backend {{other}}{keys}"), &vars),
        ],
        Duration::from_secs(600),
    );
    succeeded(&outputs);
    let read = |f: &str| std::fs::read(f).unwrap();
    assert!(
        read(&files[0]) == read(&files[1]),
        "the revealed logits differ"
    );
    assert!(text(&outputs[0].stderr).contains("WARNING: --insecure-test-keys"));

    // A few private SGD steps: the model owner's trained weights, bit for bit.
    let job = format!("--epochs 1 --batch 16 --lr 0.1 --seed 3 --backend cpu{keys}");
    in_process(&argv(
        &format!("train --model secureml --data {{s}} --limit 48 --save {{inproc_st}} {job}"),
        &vars,
    ));
    let outputs = run_three(
        &config,
        [
            argv(
                &format!("train --model secureml --save {{party_st}} {job}"),
                &vars,
            ),
            argv(&format!("train --data {{s}} --limit 48 {job}"), &vars),
            argv(&format!("train {job}"), &vars),
        ],
        Duration::from_secs(600),
    );
    succeeded(&outputs);
    let (a, b) = (read(&files[2]), read(&files[3]));
    assert!(a.len() > 400_000, "{} bytes", a.len());
    assert!(a == b, "the trained weights differ");
    assert!(text(&outputs[1].stderr).contains("epoch 1: private test accuracy"));
    std::fs::remove_dir_all(dir).ok();
}

/// A small xorshift generator: the test prints its seed, so a failure can be replayed with
/// `CRYPTGPU_KILL_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The party named first in the last `error:` line of `stderr`.
fn blamed(stderr: &str) -> Option<usize> {
    let line = stderr.lines().rev().find(|l| l.starts_with("error:"))?;
    let bytes = line.as_bytes();
    let at = (0..bytes.len().saturating_sub(1))
        .find(|&i| bytes[i] == b'P' && (b'0'..=b'2').contains(&bytes[i + 1]))?;
    Some(usize::from(bytes[at + 1] - b'0'))
}

/// The files in `dir` other than the deployment's.
fn outputs_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".pem") && n != "parties.toml")
        .collect()
}

/// Sends `signal` (e.g. "INT") to `child`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The arguments of a job that runs for a few seconds: inference (with an output file) or
/// training (saving the model).
fn job_args(kind: u64, out: &Path) -> [Vec<String>; 3] {
    let (w, s) = (weights(), sample());
    let vars = [
        ("w", w.as_str()),
        ("s", s.as_str()),
        ("out", out.to_str().unwrap()),
    ];
    if kind == 0 {
        [
            argv("infer --model lenet --weights {w} --backend cpu", &vars),
            argv(
                "infer --data {s} --limit 60 --batch 6 --backend cpu --out {out}",
                &vars,
            ),
            argv("infer --backend cpu", &vars),
        ]
    } else {
        let common = "--batch 16 --epochs 2 --backend cpu";
        [
            argv(
                &format!("train --model secureml --save {{out}} {common}"),
                &vars,
            ),
            argv(&format!("train --data {{s}} --limit 96 {common}"), &vars),
            argv(&format!("train {common}"), &vars),
        ]
    }
}

/// A small inference on four bundled digits: P0 the model, P1 the data, P2 nothing, each
/// with its `extra` arguments.
fn small_inference(extra: [&str; 3]) -> [Vec<String>; 3] {
    let (w, s) = (weights(), sample());
    let vars = [("w", w.as_str()), ("s", s.as_str())];
    [
        argv(
            &format!(
                "infer --model lenet --weights {{w}} --backend cpu {}",
                extra[0]
            ),
            &vars,
        ),
        argv(
            &format!("infer --data {{s}} --limit 4 --backend cpu {}", extra[1]),
            &vars,
        ),
        argv(&format!("infer --backend cpu {}", extra[2]), &vars),
    ]
}

#[test]
fn a_party_killed_at_a_random_moment_stops_the_others_naming_it() {
    let seed = std::env::var("CRYPTGPU_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill test seed: {seed} (replay with CRYPTGPU_KILL_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = test_dir("kill");
    let config = deployment(&dir);
    // How long the jobs take here, so that kills land during them, and the size of a whole
    // output file (the same in every run: names and classes have fixed widths).
    let mut durations = [0.0f64; 2];
    let mut whole_size = [0u64; 2];
    for kind in 0..2u64 {
        let out = dir.join(if kind == 0 {
            "calibrate.csv"
        } else {
            "calibrate.safetensors"
        });
        let start = Instant::now();
        succeeded(&run_three(
            &config,
            job_args(kind, &out),
            Duration::from_secs(300),
        ));
        durations[kind as usize] = start.elapsed().as_secs_f64();
        whole_size[kind as usize] = std::fs::metadata(&out).unwrap().len();
        std::fs::remove_file(out).unwrap();
    }
    eprintln!(
        "job durations: inference {:.1} s, training {:.1} s",
        durations[0], durations[1]
    );
    // A survivor must stop within the setup deadline plus the receive timeout of the kill.
    let limit = Duration::from_secs(CONNECT_SECS + RECV_SECS + 15);
    for round in 0..20 {
        let kind = rng.next() % 2;
        let victim = (rng.next() % 3) as usize;
        let interrupt = rng.next().is_multiple_of(4);
        let at = durations[kind as usize] * (rng.next() % 1000) as f64 / 1000.0;
        let out = dir.join(if kind == 0 {
            "predictions.csv"
        } else {
            "model.safetensors"
        });
        let args = job_args(kind, &out);
        let mut children: Vec<Option<Child>> = args
            .iter()
            .enumerate()
            .map(|(id, a)| Some(start_party(&config, id, a)))
            .collect();
        thread::sleep(Duration::from_secs_f64(at));
        let mut dead = children[victim].take().unwrap();
        let how = if interrupt { "interrupted" } else { "killed" };
        eprintln!(
            "round {round}: {} job, P{victim} {how} after {at:.2} s",
            if kind == 0 { "inference" } else { "training" }
        );
        if interrupt {
            signal(&dead, "INT");
        } else {
            dead.kill().unwrap();
        }
        let killed_at = Instant::now();
        let victim_status: ExitStatus = dead.wait().unwrap();
        let mut survivor_finished = false;
        for (id, child) in children.into_iter().enumerate() {
            let Some(child) = child else { continue };
            let output = wait_for(child, limit)
                .unwrap_or_else(|| panic!("round {round}: P{id} hung after P{victim} was {how}"));
            let stderr = text(&output.stderr);
            if output.status.success() {
                // Parties finish at different times: the kill came after this party's part
                // of the protocol was over (the helper sends its last share and leaves
                // before the data owner reads it). Its results must then be whole: its
                // summary, and the output files checked below.
                assert!(
                    text(&output.stdout).contains(" done in "),
                    "round {round}: P{id} succeeded without its summary: {stderr}"
                );
                survivor_finished = true;
                continue;
            }
            assert!(
                killed_at.elapsed() <= limit,
                "round {round}: P{id} took {:?}",
                killed_at.elapsed()
            );
            assert_eq!(
                blamed(&stderr),
                Some(victim),
                "round {round}: P{id} does not name P{victim} first: {stderr}"
            );
            if interrupt && !stderr.contains("connect") && !stderr.contains("did not connect") {
                assert!(
                    stderr.contains("interrupted") || stderr.contains("lost"),
                    "round {round}: P{id}: {stderr}"
                );
            }
        }
        if interrupt && !survivor_finished {
            assert!(!victim_status.success());
        }
        let left = outputs_in(&dir);
        assert!(
            !left.iter().any(|n| n.contains(".partial")),
            "round {round}: partial files left: {left:?}"
        );
        if survivor_finished || victim_status.success() {
            // Whatever output exists is whole.
            for name in &left {
                let path = dir.join(name);
                assert_eq!(path, out, "round {round}: a stray file {name}");
                let size = std::fs::metadata(&path).unwrap().len();
                assert_eq!(
                    size, whole_size[kind as usize],
                    "round {round}: {name} is not whole"
                );
                std::fs::remove_file(path).unwrap();
            }
        } else {
            assert!(
                left.is_empty(),
                "round {round}: files left behind: {left:?}"
            );
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn mismatched_options_are_refused_naming_the_field() {
    let dir = test_dir("mismatch");
    let config = deployment(&dir);
    let outputs = run_three(
        &config,
        small_inference(["--batch 32", "--batch 16", ""]),
        Duration::from_secs(60),
    );
    for (id, o) in outputs.iter().enumerate() {
        assert!(!o.status.success(), "P{id} accepted a mismatch");
        let e = text(&o.stderr);
        assert!(e.contains("`batch`: P0 says 32, P1 says 16"), "P{id}: {e}");
    }
    // A job of the wrong kind.
    let [p0, p1, _] = small_inference(["", "", ""]);
    let outputs = run_three(
        &config,
        [p0, p1, argv("train --backend cpu", &[])],
        Duration::from_secs(60),
    );
    for (id, o) in outputs.iter().enumerate() {
        let e = text(&o.stderr);
        assert!(!o.status.success() && e.contains("`job`"), "P{id}: {e}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn each_party_passes_only_what_it_owns_and_bad_files_are_named() {
    let dir = test_dir("ownership");
    let config = deployment(&dir);
    // A party that cannot take part waits for the others to tell them so; none comes here.
    let shortened = std::fs::read_to_string(&config).unwrap().replace(
        &format!("connect_timeout_secs = {CONNECT_SECS}"),
        "connect_timeout_secs = 1",
    );
    std::fs::write(&config, shortened).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["party", "--config", config.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        text(&out.stderr)
    };
    let e = run(&["--id", "2", "infer", "--data", "x"]);
    assert!(
        e.contains("--data is the data owner (P1)'s") && e.contains("helper"),
        "{e}"
    );
    let e = run(&[
        "--id",
        "1",
        "infer",
        "--weights",
        "w.safetensors",
        "--data",
        "x",
    ]);
    assert!(e.contains("--weights") && e.contains("model owner"), "{e}");
    // Training's initial weights too, not silently ignored.
    let e = run(&["--id", "2", "train", "--weights", "w.onnx"]);
    assert!(e.contains("--weights") && e.contains("model owner"), "{e}");
    let e = run(&["--id", "0", "train", "--model", "lenet", "--out", "x"]);
    assert!(e.contains("--out"), "{e}");
    let e = run(&["--id", "3", "infer"]);
    assert!(e.contains("0, 1 or 2"), "{e}");
    // A missing key file and an unknown key in the file, named.
    std::fs::remove_file(dir.join("party2.key.pem")).unwrap();
    let e = run(&["--id", "2", "infer"]);
    assert!(e.contains("party2.key.pem"), "{e}");
    let text_now = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text_now.replace("[link]", "[link]\nspeed = 3")).unwrap();
    let e = run(&["--id", "0", "infer", "--model", "lenet"]);
    assert!(
        e.contains("unknown field `speed`") && e.contains("parties.toml"),
        "{e}"
    );
    let missing = Command::new(BIN)
        .args([
            "party",
            "--config",
            "/nonexistent/parties.toml",
            "--id",
            "0",
            "infer",
        ])
        .output()
        .unwrap();
    assert!(text(&missing.stderr).contains("/nonexistent/parties.toml"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_stranger_first_does_not_stop_setup_and_another_deployment_is_refused() {
    let dir = test_dir("stranger");
    let config = deployment(&dir);
    let text_now = std::fs::read_to_string(&config).unwrap();
    let p0 = text_now
        .split("address = \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    // A stranger holds a connection to P0's port before P0 even listens... and another after.
    let stranger = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(&p0) {
                let _ = std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n");
                let mut sink = Vec::new();
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let _ = s.read_to_end(&mut sink);
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    let outputs = run_three(
        &config,
        small_inference(["", "", ""]),
        Duration::from_secs(120),
    );
    succeeded(&outputs);
    stranger.join().unwrap();

    // P2 with a certificate and key from another deployment: refused by both, named.
    let other = test_dir("stranger-other");
    deployment(&other);
    for f in ["party2.pem", "party2.key.pem"] {
        std::fs::copy(other.join(f), dir.join(f)).unwrap();
    }
    let start = Instant::now();
    let outputs = run_three(
        &config,
        small_inference(["", "", ""]),
        Duration::from_secs(60),
    );
    assert!(start.elapsed() < Duration::from_secs(CONNECT_SECS + 15));
    for (id, o) in outputs.iter().enumerate().take(2) {
        let e = text(&o.stderr);
        assert!(
            !o.status.success(),
            "P{id} accepted another deployment's P2"
        );
        assert_eq!(blamed(&e), Some(2), "P{id}: {e}");
        assert!(
            e.contains("certificate") || e.contains("alert"),
            "P{id}: {e}"
        );
    }
    assert!(!outputs[2].status.success());
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(other).ok();
}

#[test]
fn a_stalled_party_is_named_within_the_receive_timeout() {
    let dir = test_dir("stall");
    let config = deployment(&dir);
    let out = dir.join("predictions.csv");
    let args = job_args(0, &out);
    let mut children: Vec<Option<Child>> = args
        .iter()
        .enumerate()
        .map(|(id, a)| Some(start_party(&config, id, a)))
        .collect();
    // Stop P2 (SIGSTOP: alive but silent, not even heartbeats) once the job runs.
    thread::sleep(Duration::from_millis(600));
    let stalled = children[2].take().unwrap();
    signal(&stalled, "STOP");
    let stopped_at = Instant::now();
    for (id, child) in children.into_iter().enumerate() {
        let Some(child) = child else { continue };
        let output = wait_for(child, Duration::from_secs(RECV_SECS + 15))
            .unwrap_or_else(|| panic!("P{id} hung while P2 was stalled"));
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "P{id}: {stderr}");
        assert_eq!(blamed(&stderr), Some(2), "P{id}: {stderr}");
        assert!(stderr.contains("sent nothing"), "P{id}: {stderr}");
    }
    assert!(stopped_at.elapsed() < Duration::from_secs(RECV_SECS + 5));
    signal(&stalled, "CONT");
    let output =
        wait_for(stalled, Duration::from_secs(RECV_SECS + 15)).expect("P2 ends once resumed");
    assert!(!output.status.success());
    assert!(!out.exists());
    std::fs::remove_dir_all(dir).ok();
}

/// A float32 `.npy` array of `shape` (the data owner's `--input`).
fn write_npy_f32(path: &Path, shape: &[usize], values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, npy("<f4", shape, &bytes)).unwrap();
}

/// The bundled LeNet weights with the first value of `features.0.weight` set to `value`.
fn weights_with(path: &Path, value: f32) {
    let mut bytes = std::fs::read(weights()).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let tensor = header
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.as_str() == "features.0.weight")
        .map(|(_, t)| t.clone())
        .expect("the first convolution's weight");
    assert_eq!(tensor["dtype"], "F32");
    let at = 8 + header_len + tensor["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// Everything a party printed.
fn printed(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// A failure carrying a secret (a value, an index, a file path) at any role: that party's
/// own output keeps the detail; the other two are told only who failed and the category,
/// and none of the secret's digits or the path reaches them.
#[test]
fn failures_tell_the_others_a_category_never_a_secret() {
    let dir = test_dir("secrets");
    let config = deployment(&dir);
    let secret_dir = dir.join("secret-folder-4242");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let n = 4 * 28 * 28;
    let out_of_range = secret_dir.join("big.npy");
    let mut values = vec![0.0f32; n];
    values[300] = 987_654_304_825_344.0;
    write_npy_f32(&out_of_range, &[4, 1, 28, 28], &values);
    let nan = secret_dir.join("nan.npy");
    let mut values = vec![0.5f32; n];
    values[100] = f32::NAN;
    write_npy_f32(&nan, &[4, 1, 28, 28], &values);
    let garbage = secret_dir.join("garbage.npy");
    std::fs::write(&garbage, b"\x93NUMPY this is not an array").unwrap();
    let big_weight = secret_dir.join("big.safetensors");
    weights_with(&big_weight, 3.25e15);
    let bad_weights = secret_dir.join("bad.safetensors");
    std::fs::write(&bad_weights, b"not safetensors at all").unwrap();
    let w = weights();
    let p = |path: &Path| path.display().to_string();

    struct Case {
        what: &'static str,
        owner: usize,
        args: [String; 3],
        /// Substrings only the owner may print.
        secrets: &'static [&'static str],
        /// What the owner's own error says.
        owner_says: &'static [&'static str],
        /// The category the others are told.
        category: &'static str,
    }
    let cases = [
        Case {
            what: "an input out of range",
            owner: 1,
            args: [
                format!("infer --model lenet --weights {w} --backend cpu"),
                format!("infer --input {} --backend cpu", p(&out_of_range)),
                "infer --backend cpu".into(),
            ],
            secrets: &["987654", "9.87654", "secret-folder"],
            owner_says: &["987654"],
            category: "out of range",
        },
        Case {
            what: "a NaN input",
            owner: 1,
            args: [
                format!("infer --model lenet --weights {w} --backend cpu"),
                format!("infer --input {} --backend cpu", p(&nan)),
                "infer --backend cpu".into(),
            ],
            secrets: &["NaN", "element 100", "index 100", "secret-folder"],
            owner_says: &["NaN"],
            category: "malformed",
        },
        Case {
            what: "a malformed input file",
            owner: 1,
            args: [
                format!("infer --model lenet --weights {w} --backend cpu"),
                format!("infer --input {} --backend cpu", p(&garbage)),
                "infer --backend cpu".into(),
            ],
            secrets: &["secret-folder", "garbage.npy"],
            owner_says: &["garbage.npy"],
            category: "malformed",
        },
        Case {
            what: "a weight out of range",
            owner: 0,
            args: [
                format!(
                    "infer --model lenet --weights {} --backend cpu",
                    p(&big_weight)
                ),
                format!("infer --data {} --limit 4 --backend cpu", sample()),
                "infer --backend cpu".into(),
            ],
            secrets: &["3249999", "3.249999", "secret-folder"],
            owner_says: &["3249999"],
            category: "out of range",
        },
        Case {
            what: "a malformed weights file",
            owner: 0,
            args: [
                format!(
                    "infer --model lenet --weights {} --backend cpu",
                    p(&bad_weights)
                ),
                format!("infer --data {} --limit 4 --backend cpu", sample()),
                "infer --backend cpu".into(),
            ],
            secrets: &["secret-folder", "bad.safetensors"],
            owner_says: &["bad.safetensors"],
            category: "malformed",
        },
        Case {
            what: "an output that cannot be written",
            owner: 1,
            args: [
                format!("infer --model lenet --weights {w} --backend cpu"),
                format!(
                    "infer --data {} --limit 4 --backend cpu --out {}",
                    sample(),
                    p(&secret_dir.join("missing").join("p.csv"))
                ),
                "infer --backend cpu".into(),
            ],
            secrets: &["secret-folder", "p.csv"],
            owner_says: &["p.csv", "no work is lost"],
            category: "output",
        },
        Case {
            what: "the helper started wrongly",
            owner: 2,
            args: [
                format!("infer --model lenet --weights {w} --backend cpu"),
                format!("infer --data {} --limit 4 --backend cpu", sample()),
                format!("infer --backend cpu --data {}", p(&secret_dir)),
            ],
            secrets: &["secret-folder", "--data"],
            owner_says: &["--data is the data owner (P1)'s"],
            category: "wrong command line",
        },
        Case {
            what: "a layer that does not fit in the helper's device memory",
            owner: 2,
            args: [
                format!("infer --model lenet --weights {w} --backend cpu"),
                format!("infer --data {} --limit 64 --backend cpu", sample()),
                // LeNet's weights fit in 35 MB a party; its first layers at batch 64 do not.
                "infer --backend cpu --device-memory 35MB".into(),
            ],
            secrets: &["does not fit", "35.0 MB", "layer `"],
            owner_says: &["layer `features.", "does not fit: ", "of its 35.0 MB limit"],
            category: "a device error",
        },
    ];
    for case in &cases {
        let args = case
            .args
            .clone()
            .map(|line| line.split_whitespace().map(String::from).collect());
        let start = Instant::now();
        let outputs = run_three(&config, args, Duration::from_secs(120));
        // Told, the others stop at once: far sooner than the connect timeout they would
        // otherwise wait out when the failure came before connecting.
        assert!(
            start.elapsed() < Duration::from_secs(CONNECT_SECS),
            "{}: took {:?}",
            case.what,
            start.elapsed()
        );
        for (id, o) in outputs.iter().enumerate() {
            let all = printed(o);
            assert!(!o.status.success(), "{}: P{id} succeeded: {all}", case.what);
            if id == case.owner {
                for says in case.owner_says {
                    assert!(
                        all.contains(says),
                        "{}: the owner P{id} lost `{says}`: {all}",
                        case.what
                    );
                }
                continue;
            }
            assert_eq!(
                blamed(&all),
                Some(case.owner),
                "{}: P{id}: {all}",
                case.what
            );
            assert!(
                all.contains(case.category),
                "{}: P{id} was not told the category: {all}",
                case.what
            );
            for secret in case.secrets {
                assert!(
                    !all.contains(secret),
                    "{}: `{secret}` reached P{id}: {all}",
                    case.what
                );
            }
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Runs `cryptgpu ARGS` until it succeeds (the servers may still be starting), at most
/// `limit`; returns its output.
fn until_it_succeeds(args: &[String], limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        let out = Command::new(BIN).args(args).output().unwrap();
        if out.status.success() {
            return out;
        }
        assert!(
            start.elapsed() < limit,
            "{args:?} kept failing: {}",
            text(&out.stderr)
        );
        thread::sleep(Duration::from_millis(300));
    }
}

/// Server processes, killed if the test ends before it stops them (a failed assertion).
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three `cryptgpu serve` processes of a deployment whose model a client owns: the owner's
/// `cryptgpu upload`, then another client's `cryptgpu query`, then Ctrl-C on each server.
#[test]
fn three_serve_processes_serve_a_model_a_client_uploaded() {
    let dir = test_dir("serve-upload");
    let parties = free_addresses().join(",");
    let service = free_addresses().join(",");
    let vars = [
        ("dir", dir.to_str().unwrap()),
        ("parties", &parties),
        ("service", &service),
    ];
    in_process(&argv(
        "certs --out {dir} --addresses {parties} --serve-addresses {service} --clients 2",
        &vars,
    ));
    let config = dir.join("parties.toml");
    let text_of = std::fs::read_to_string(&config).unwrap();
    assert!(text_of.contains("# model_client = \"client0\""));
    std::fs::write(
        &config,
        text_of
            .replace("# model_client = \"client0\"", "model_client = \"client0\"")
            .replace(
                "# answers = [\"class\", \"logits\", \"probabilities\"]",
                "answers = [\"class\"]",
            ),
    )
    .unwrap();
    let mut servers = Servers(
        (0..3)
            .map(|id| {
                Command::new(BIN)
                    .args(["serve", "--config", config.to_str().unwrap(), "--id"])
                    .arg(id.to_string())
                    .args(["--backend", "cpu", "--quiet", "--model-store"])
                    .arg(dir.join(format!("store{id}")))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let c = config.to_str().unwrap();
    let w = weights();
    let upload = until_it_succeeds(
        &argv(
            "upload --config {c} --client client0 --model lenet --weights {w}",
            &[("c", c), ("w", &w)],
        ),
        Duration::from_secs(60),
    );
    assert!(
        text(&upload.stdout).contains("uploaded lenet"),
        "{}",
        text(&upload.stdout)
    );
    let data = sample();
    let query = until_it_succeeds(
        &argv(
            "query --config {c} --client client1 --data {data} --limit 8 --json",
            &[("c", c), ("data", &data)],
        ),
        Duration::from_secs(120),
    );
    let report: serde_json::Value = serde_json::from_slice(&query.stdout).unwrap();
    assert_eq!(report["examples"], 8, "{report}");
    assert!(report["accuracy"].as_f64().unwrap() >= 0.75, "{report}");
    // This service reveals classes only.
    let scores = Command::new(BIN)
        .args(argv(
            "query --config {c} --client client1 --data {data} --limit 1 --reveal logits",
            &[("c", c), ("data", &data)],
        ))
        .output()
        .unwrap();
    assert!(!scores.status.success());
    assert!(
        text(&scores.stderr).contains("reveals only class, not logits"),
        "{}",
        text(&scores.stderr)
    );
    // A client that is not the model's owner cannot upload.
    let refused = Command::new(BIN)
        .args(argv(
            "upload --config {c} --client client1 --model lenet --weights {w}",
            &[("c", c), ("w", &w)],
        ))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("refused"),
        "{}",
        text(&refused.stderr)
    );
    for s in &servers.0 {
        signal(s, "INT");
    }
    for (id, s) in std::mem::take(&mut servers.0).into_iter().enumerate() {
        let out = wait_for(s, Duration::from_secs(60)).unwrap_or_else(|| panic!("S{id} hung"));
        let log = text(&out.stderr);
        assert!(out.status.success(), "S{id}: {log}");
        assert!(
            log.contains("client client0 uploaded model shares"),
            "S{id}: {log}"
        );
        assert!(
            dir.join(format!("store{id}/uploaded-model.P{id}.shares"))
                .exists()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
