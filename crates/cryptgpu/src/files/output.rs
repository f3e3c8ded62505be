//! Output paths checked before any work: a party that could not write its result at the end
//! must say so before the three parties connect, not after hours of private computation.
//!
//! [`check_output`] refuses a path whose extension names no known format, that is a folder,
//! whose folder does not exist or is not a folder, or in whose folder no file can be
//! created (read-only, no permission, full file table): it creates and removes a probe file
//! there, the same operation the atomic write at the end does first.

use std::fmt;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

/// The formats a predictions file (`--out`) can be written in.
pub const PREDICTION_EXTENSIONS: &[&str] = &["csv", "json", "npy"];
/// The formats a trained model (`--save`) can be written in.
pub const MODEL_EXTENSIONS: &[&str] = &["safetensors", "onnx"];

/// An output path that cannot be written: the option that named it, the path and why.
#[derive(Debug)]
pub struct OutputError {
    /// The option, e.g. `--out`.
    pub option: &'static str,
    /// The path given.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} (checked before the job starts, so no work is lost)",
            self.option,
            self.path.display(),
            self.why
        )
    }
}

impl std::error::Error for OutputError {}

/// Checks that `path`, given as `option`, can be written at the end of the job in one of
/// `extensions` (compared without case).
pub fn check_output(
    option: &'static str,
    path: &Path,
    extensions: &[&str],
) -> Result<(), OutputError> {
    let refuse = |why: String| OutputError {
        option,
        path: path.to_path_buf(),
        why,
    };
    let known = |e: &str| extensions.iter().any(|k| e.eq_ignore_ascii_case(k));
    let listed = extensions
        .iter()
        .map(|e| format!(".{e}"))
        .collect::<Vec<_>>()
        .join(", ");
    if path.is_dir() {
        return Err(refuse(format!("is a folder: name a file in it ({listed})")));
    }
    let Some(name) = path.file_name() else {
        return Err(refuse(format!(
            "is not a file name: name a file ({listed})"
        )));
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if known(e) => {}
        Some(e) => {
            return Err(refuse(format!(
                "unknown format .{e}: name the file {listed}"
            )));
        }
        None => return Err(refuse(format!("no format: name the file {listed}"))),
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse(format!("{} is not a folder", dir.display()))),
        Err(e) => {
            return Err(refuse(format!(
                "its folder {} cannot be used: {e}",
                dir.display()
            )));
        }
    }
    // Create and remove a file beside it, as the atomic write will: the one test that
    // covers permissions, read-only mounts, ACLs and a full disk's inode table alike.
    let mut probe_name = std::ffi::OsString::from(".");
    probe_name.push(name);
    probe_name.push(format!(".probe-{}", std::process::id()));
    let probe = dir.join(probe_name);
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            return Err(refuse(format!(
                "no file can be created in its folder {}: {e}",
                dir.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::test_dir;

    fn why(path: &Path, extensions: &[&str]) -> String {
        check_output("--out", path, extensions)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_writable_file_of_a_known_format_passes_and_leaves_nothing() {
        let dir = test_dir("output-ok");
        check_output("--out", &dir.join("p.csv"), PREDICTION_EXTENSIONS).unwrap();
        check_output("--out", &dir.join("P.JSON"), PREDICTION_EXTENSIONS).unwrap();
        check_output("--save", &dir.join("m.onnx"), MODEL_EXTENSIONS).unwrap();
        std::fs::write(dir.join("old.npy"), b"old").unwrap();
        check_output("--out", &dir.join("old.npy"), PREDICTION_EXTENSIONS).unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1, "the probe file was left: {left:?}");
        assert_eq!(std::fs::read(dir.join("old.npy")).unwrap(), b"old");
    }

    #[test]
    fn bad_paths_are_refused_with_the_reason() {
        let dir = test_dir("output-bad");
        let e = why(&dir.join("p.xlsx"), PREDICTION_EXTENSIONS);
        assert!(
            e.contains("unknown format .xlsx") && e.contains(".csv"),
            "{e}"
        );
        let e = why(&dir.join("p"), PREDICTION_EXTENSIONS);
        assert!(e.contains("no format"), "{e}");
        let e = why(&dir, PREDICTION_EXTENSIONS);
        assert!(e.contains("is a folder"), "{e}");
        let sub = dir.join("sub.csv");
        std::fs::create_dir(&sub).unwrap();
        let e = why(&sub, PREDICTION_EXTENSIONS);
        assert!(e.contains("is a folder"), "{e}");
        let e = why(&dir.join("missing/p.csv"), PREDICTION_EXTENSIONS);
        assert!(e.contains("cannot be used"), "{e}");
        let file = dir.join("file");
        std::fs::write(&file, b"").unwrap();
        let e = why(&file.join("p.csv"), PREDICTION_EXTENSIONS);
        assert!(e.contains("is not a folder"), "{e}");
        let e = check_output("--save", &dir.join("m.pt"), MODEL_EXTENSIONS)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--save") && e.contains(".safetensors"), "{e}");
    }

    /// A read-only folder. Root writes anywhere the permission bits forbid, so as root the
    /// test uses a file system mounted read-only if it can make one, and otherwise says
    /// that it skipped.
    #[cfg(unix)]
    #[test]
    fn a_read_only_folder_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = test_dir("output-read-only");
        let locked = dir.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = locked.join("x");
        let bits_bind = std::fs::write(&probe, b"").is_err();
        let _ = std::fs::remove_file(&probe);
        if bits_bind {
            let e = why(&locked.join("p.csv"), PREDICTION_EXTENSIONS);
            assert!(e.contains("no file can be created"), "{e}");
        } else {
            // Privileged: try a read-only tmpfs.
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", "ro,size=64k", "tmpfs"])
                .arg(&locked)
                .status()
                .is_ok_and(|s| s.success());
            if !mounted {
                eprintln!(
                    "a_read_only_folder_is_refused skipped: running privileged (permission bits \
                     do not bind) and no read-only file system could be mounted"
                );
                return;
            }
            let result = check_output("--out", &locked.join("p.csv"), PREDICTION_EXTENSIONS);
            let _ = std::process::Command::new("umount").arg(&locked).status();
            let e = result.unwrap_err().to_string();
            assert!(e.contains("no file can be created"), "{e}");
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}
