//! The bench matrix of `cargo xtask bench`: runs `cryptgpu bench` once per cell, then writes
//! `results.json`, `results.md` and SVG plots under `target/bench/<timestamp>/`.

pub(crate) mod plots;
pub(crate) mod published;
pub(crate) mod report;
pub(crate) mod run;
pub(crate) mod schema;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees
/// half a file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
