//! Runs `emulate/run.sh`: the CUDA kernels of `kernels/` compiled as host C++ against a
//! small CUDA shim (blocks in turn, threads as OS threads, barriers for `__syncthreads`
//! and warp ballots) and checked against loops written from the definitions, including
//! the int8 and fp64 GEMM pipelines as `src/gemm.rs` drives them. This checks indexing
//! without a GPU; it does not replace the GPU run. Skips, saying so, without `g++`.

use std::path::Path;
use std::process::Command;

#[test]
fn kernels_run_right_under_cpu_emulation() {
    if Command::new("g++").arg("--version").output().is_err() {
        eprintln!("skipped: g++ is not installed, so the kernels cannot be emulated on the CPU");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("emulate/run.sh");
    let output = Command::new("bash").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed:\n{stdout}\n{stderr}",
        script.display()
    );
    assert!(
        stdout.contains("all emulated kernel tests passed"),
        "{stdout}"
    );
}
