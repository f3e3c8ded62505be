//! Helpers shared by the command-line tests: the bundled assets, the MNIST sample as a data
//! directory, and command lines written as one line with named values.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::thread;

/// The bundled assets: LeNet's weights and the MNIST sample.
pub fn assets() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
}

/// The bundled LeNet weights.
pub fn lenet_weights() -> PathBuf {
    assets().join("lenet-mnist.safetensors")
}

/// Puts the bundled MNIST sample into `dir` (created if need be) as both the test and the
/// training split. A file already there is kept; each new one is copied under a temporary
/// name and renamed, so tests running side by side may share `dir`.
pub fn mnist_sample_into(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let from = assets().join("mnist-sample");
    for (src, dst) in [
        ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
        ("t10k-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ] {
        let target = dir.join(dst);
        if !target.exists() {
            let temp = dir.join(format!("{dst}.{:?}", thread::current().id()));
            std::fs::copy(from.join(src), &temp).unwrap();
            std::fs::rename(&temp, &target).unwrap();
        }
    }
}

/// Command-line arguments: `line` split at spaces, then each `{name}` in a word replaced by
/// the value `vars` gives it (so a path with spaces stays one argument, and `{dir}/a.csv`
/// names a file in the folder `dir`).
pub fn argv(line: &str, vars: &[(&str, &str)]) -> Vec<String> {
    line.split_whitespace()
        .map(|word| {
            vars.iter().fold(word.to_string(), |word, (name, value)| {
                word.replace(&format!("{{{name}}}"), value)
            })
        })
        .collect()
}

/// A `.npy` file (version 1.0) of `shape` holding `data`, already little-endian bytes of the
/// numpy type `descr` (e.g. `|u1`, `<f4`).
pub fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ") + if shape.len() == 1 { "," } else { "" }
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}
