//! The data owner's files: its inputs (`--input`: a `.npy` array or a folder of images),
//! its labels, what it receives (`--out`: CSV, JSON or `.npy` predictions), the checks of
//! every output path before any work, and the atomic writing of every output file (mode
//! 0600 for secrets), with clean-up of partial files on Ctrl-C.

pub mod atomic;
pub mod inputs;
pub mod npy;
pub mod output;
pub mod predictions;

/// A fresh, empty directory for one test: `{temp}/cryptgpu-files-{pid}-{name}`.
#[cfg(test)]
pub fn test_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cryptgpu-files-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
