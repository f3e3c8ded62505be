//! Runs `emulate/run.sh`: the CUDA kernels of `kernels/` compiled as host C++ against a
//! small CUDA shim (blocks in turn, threads as OS threads, barriers for `__syncthreads`
//! and warp ballots) and checked against loops written from the definitions, including
//! the int8 and fp64 GEMM pipelines as `src/gemm.rs` drives them. This checks indexing
//! without a GPU; it does not replace the GPU run. `select_rows_u64` and `fused_u64` run
//! under the same shim from drivers of their own, fed the parameter blocks the backend
//! launches and checked against plain Rust (a loop; `Fused::apply`). Skips, saying so,
//! without `g++`.

use cryptgpu_backend::conformance::Inputs;
use cryptgpu_backend::{BinaryOp, Fused, FusedStep, Operand, ShiftOp, UnaryOp};
use cryptgpu_cuda::kernels::{
    FUSED_MAX_INPUTS, FUSED_MAX_STEPS, FusedCode, FusedParams, SELECT_ROWS_MAX, SelectRowsParams,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds the driver `emulate/{file}` into this test process's own binary (so that runs
/// side by side do not overwrite each other), or returns `None` after saying why when
/// there is no `g++`.
fn build_driver(file: &str) -> Option<PathBuf> {
    if Command::new("g++").arg("--version").output().is_err() {
        eprintln!("skipped: g++ is not installed, so {file} cannot be emulated on the CPU");
        return None;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("emulate");
    let driver = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{}-emulated-{}",
        file.trim_end_matches(".cpp"),
        std::process::id()
    ));
    let build = Command::new("g++")
        .args(["-std=c++20", "-O1", "-pthread", "-Wall", "-o"])
        .arg(&driver)
        .arg(dir.join(file))
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "g++ failed on emulate/{file}:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    Some(driver)
}

/// Runs `driver` with `input` (little-endian words) on its stdin and returns the words it
/// writes.
fn run_driver(driver: &Path, input: &[u64]) -> Vec<u64> {
    let bytes: Vec<u8> = input.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut child = Command::new(driver)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}",
        driver.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
        .stdout
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().unwrap()))
        .collect()
}

/// Small random choices from the conformance suite's seeded inputs (the same run after run).
trait Below {
    /// A value below `n`.
    fn below(&mut self, n: usize) -> usize;
}

impl Below for Inputs {
    fn below(&mut self, n: usize) -> usize {
        (self.elem() % n as u64) as usize
    }
}

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

/// Runs `select_rows_u64` under the shim (`emulate/select_rows.cpp`), launched with the
/// parameter blocks the backend launches ([`SelectRowsParams::chunks`], their bytes as the
/// Rust struct lays them out), and returns the output.
fn emulated_select_rows(
    driver: &Path,
    src: &[u64],
    rows: &[Option<usize>],
    row_len: usize,
) -> Vec<u64> {
    let launches = SelectRowsParams::chunks(rows, row_len);
    let mut input: Vec<u64> = vec![src.len() as u64];
    input.extend_from_slice(src);
    input.push((rows.len() * row_len) as u64);
    input.push(launches.len() as u64);
    for p in &launches {
        // The fields in declaration order: #[repr(C)] with u64 fields only, no padding.
        input.extend([p.row_len, p.first_row, p.count]);
        input.extend_from_slice(&p.rows);
    }
    run_driver(driver, &input)
}

#[test]
fn select_rows_runs_right_under_cpu_emulation() {
    assert_eq!(
        std::mem::size_of::<SelectRowsParams>(),
        8 * (3 + SELECT_ROWS_MAX),
        "SelectRowsParams has padding; the byte layout below would be wrong"
    );
    let Some(driver) = build_driver("select_rows.cpp") else {
        return;
    };

    // Source shape [extent, row_len] and the rows picked.
    let cases: Vec<(usize, usize, Vec<Option<usize>>)> = vec![
        // None rows, repeats, out of order: one launch.
        (5, 7, vec![Some(4), None, Some(0), Some(4), Some(2), None]),
        // 300 rows: three launches, the last one short, every ninth row None.
        (
            9,
            130,
            (0..300).map(|i| (i % 10 < 9).then_some(i % 9)).collect(),
        ),
        // One row past a whole launch, rows of one element.
        (4, 1, (0..129).map(|i| Some((i * 7) % 4)).collect()),
        // Exactly two launches, all the same row, or none at all.
        (3, 33, vec![Some(1); 2 * SELECT_ROWS_MAX]),
        (3, 5, vec![None; 140]),
        // No rows: no launch.
        (3, 5, vec![]),
    ];
    let mut rng = Inputs::new("select_rows under emulation");
    for (extent, row_len, rows) in cases {
        let src: Vec<u64> = (0..extent * row_len).map(|_| rng.elem()).collect();
        let mut want = Vec::with_capacity(rows.len() * row_len);
        for row in &rows {
            for j in 0..row_len {
                want.push(match row {
                    Some(r) => src[r * row_len + j],
                    None => 0,
                });
            }
        }
        let got = emulated_select_rows(&driver, &src, &rows, row_len);
        assert!(
            got == want,
            "select_rows of [{extent}, {row_len}], {} rows: first difference at element {:?}",
            rows.len(),
            got.iter().zip(&want).position(|(g, w)| g != w)
        );
    }
    // Best effort: a binary left behind after a failure is harmless.
    let _ = std::fs::remove_file(&driver);
}

/// Runs `fused_u64` under the shim (`emulate/fused.cpp`) on `inputs` (equal lengths) with
/// the parameter block the backend launches ([`FusedParams::new`], its bytes as the Rust
/// struct lays them out), and returns the output.
fn emulated_fused(driver: &Path, program: &Fused, inputs: &[Vec<u64>]) -> Vec<u64> {
    let params = FusedParams::new(program, inputs.len());
    let mut words: Vec<u64> = vec![inputs[0].len() as u64, inputs.len() as u64];
    for input in inputs {
        words.extend_from_slice(input);
    }
    // The fields in declaration order, #[repr(C)] without padding: two u64, then per step
    // the u32 pairs (kind, op) and (a, b) as little-endian words, then the u64 arg.
    words.extend([params.inputs, params.steps]);
    for code in &params.code {
        let pair = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
        words.extend([pair(code.kind, code.op), pair(code.a, code.b), code.arg]);
    }
    run_driver(driver, &words)
}

/// Ring elements where the ops have edge cases: zero, one, the extremes of the signed and
/// unsigned views, and the 32-bit boundaries the emulated WGSL arithmetic cares about too.
const SPECIALS: [u64; 9] = [
    0,
    1,
    u64::MAX,
    1 << 63,
    (1 << 63) - 1,
    0xffff_ffff,
    1 << 32,
    0x8000_0000,
    0xffff_ffff_0000_0000,
];

/// `n` elements, a quarter of them from [`SPECIALS`], half of the rest negative.
fn fused_input(rng: &mut Inputs, n: usize) -> Vec<u64> {
    (0..n)
        .map(|_| {
            if rng.below(4) == 0 {
                SPECIALS[rng.below(SPECIALS.len())]
            } else {
                rng.elem()
            }
        })
        .collect()
}

/// A random checked program over `inputs` inputs: 1 to 12 steps, each reading inputs or
/// earlier steps, every kind and op, scalars from [`SPECIALS`] or random, shifts by 0, 63
/// and amounts between.
fn random_program(rng: &mut Inputs, inputs: usize) -> Fused {
    let mut program = Fused::new();
    let steps = 1 + rng.below(FUSED_MAX_STEPS);
    for index in 0..steps {
        let operand = |rng: &mut Inputs| {
            if index > 0 && rng.below(2) == 0 {
                Operand::Step(rng.below(index) as u8)
            } else {
                Operand::Input(rng.below(inputs) as u8)
            }
        };
        let a = operand(rng);
        let step = match rng.below(4) {
            0 => FusedStep::Binary(
                BinaryOp::ALL[rng.below(BinaryOp::ALL.len())],
                a,
                operand(rng),
            ),
            1 => FusedStep::Scalar(
                BinaryOp::ALL[rng.below(BinaryOp::ALL.len())],
                a,
                if rng.below(2) == 0 {
                    SPECIALS[rng.below(SPECIALS.len())]
                } else {
                    rng.elem()
                },
            ),
            2 => FusedStep::Unary(UnaryOp::ALL[rng.below(UnaryOp::ALL.len())], a),
            _ => FusedStep::Shift(
                ShiftOp::ALL[rng.below(ShiftOp::ALL.len())],
                a,
                [0, 1, 31, 32, 63, rng.below(64) as u32][rng.below(6)],
            ),
        };
        program.push(step);
    }
    program
}

#[test]
fn fused_runs_right_under_cpu_emulation() {
    assert_eq!(
        (
            std::mem::size_of::<FusedCode>(),
            std::mem::size_of::<FusedParams>()
        ),
        (24, 16 + 24 * FUSED_MAX_STEPS),
        "FusedParams has padding; the byte layout below would be wrong"
    );
    let Some(driver) = build_driver("fused.cpp") else {
        return;
    };
    let input = Operand::Input;
    // (inputs, program)
    let mut programs: Vec<(usize, Fused)> = Vec::new();
    // The 6-input AND of the binary sharing: (x0 & (y0 ^ y1)) ^ (x1 & y0) ^ r0 ^ r1.
    let and = Fused::and_term();
    programs.push((6, and));
    // Every op code on its own: binary (operands swapped, so Sub's order shows), scalar
    // (with scalars where wrapping shows), unary, and every shift by 0, 1, 31, 32, 63,
    // on values that include negative ones.
    for op in BinaryOp::ALL {
        let mut p = Fused::new();
        p.binary(op, input(1), input(0));
        programs.push((2, p));
        for scalar in [0, 1, u64::MAX, 1 << 63, 0x9e37_79b9_7f4a_7c15] {
            let mut p = Fused::new();
            p.push(FusedStep::Scalar(op, input(0), scalar));
            programs.push((1, p));
        }
    }
    for op in UnaryOp::ALL {
        let mut p = Fused::new();
        p.push(FusedStep::Unary(op, input(0)));
        programs.push((1, p));
    }
    for op in ShiftOp::ALL {
        for bits in [0, 1, 31, 32, 63] {
            let mut p = Fused::new();
            p.push(FusedStep::Shift(op, input(0), bits));
            programs.push((1, p));
        }
    }
    // Twelve steps, each reading the one before, across all six inputs.
    let mut chain = Fused::new();
    let mut last = chain.push(FusedStep::Unary(UnaryOp::Not, input(5)));
    for i in 0..FUSED_MAX_STEPS - 1 {
        last = match i % 4 {
            0 => chain.binary(BinaryOp::Mul, last, input((i % FUSED_MAX_INPUTS) as u8)),
            1 => chain.push(FusedStep::Shift(ShiftOp::RightArithmetic, last, 63)),
            2 => chain.push(FusedStep::Scalar(BinaryOp::Sub, last, 7)),
            _ => chain.binary(BinaryOp::Add, input((i % FUSED_MAX_INPUTS) as u8), last),
        };
    }
    assert_eq!(chain.steps().len(), FUSED_MAX_STEPS);
    programs.push((FUSED_MAX_INPUTS, chain));
    // Random programs over 1 to 6 inputs (some inputs unread).
    let mut rng = Inputs::new("fused under emulation");
    for _ in 0..48 {
        let inputs = 1 + rng.below(FUSED_MAX_INPUTS);
        programs.push((inputs, random_program(&mut rng, inputs)));
    }

    // 192 threads a launch: lengths below, at and past one turn of the grid-stride loop.
    let lengths = [1, 7, 192, 193, 1000];
    let mut values = [0u64; FUSED_MAX_STEPS];
    for (index, (inputs, program)) in programs.iter().enumerate() {
        program.check("emulation", *inputs).unwrap();
        let n = lengths[index % lengths.len()];
        let xs: Vec<Vec<u64>> = (0..*inputs).map(|_| fused_input(&mut rng, n)).collect();
        let want: Vec<u64> = (0..n)
            .map(|i| {
                let element: Vec<u64> = xs.iter().map(|x| x[i]).collect();
                program.apply(&element, &mut values)
            })
            .collect();
        let got = emulated_fused(&driver, program, &xs);
        assert!(
            got == want,
            "fused program {index} ({program:?}) on {inputs} inputs of {n}: first \
             difference at element {:?}",
            got.iter().zip(&want).position(|(g, w)| g != w)
        );
    }
    // Best effort: a binary left behind after a failure is harmless.
    let _ = std::fs::remove_file(&driver);
}
