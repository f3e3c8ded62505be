//! Tidy tests: plain `#[test]`s that hold the repository to its own rules.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Crates allowed to contain `unsafe`: the backends, which talk to devices and SIMD.
    const UNSAFE_ALLOWED: &[&str] = &[
        "crates/cryptgpu-cpu/",
        "crates/cryptgpu-cuda/",
        "crates/cryptgpu-wgpu/",
    ];

    fn root() -> PathBuf {
        crate::project_root()
    }

    fn files_with_extension(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    files_with_extension(&path, ext, out);
                }
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }

    fn rust_files() -> Vec<PathBuf> {
        let mut files = Vec::new();
        for dir in ["crates", "xtask", "benches"] {
            files_with_extension(&root().join(dir), "rs", &mut files);
        }
        assert!(
            files.len() > 10,
            "tidy found too few Rust files: is the root right?"
        );
        files
    }

    fn relative(path: &Path) -> String {
        path.strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/")
    }

    #[test]
    fn every_rust_file_starts_with_a_module_doc() {
        let missing: Vec<String> = rust_files()
            .into_iter()
            .filter(|f| {
                !std::fs::read_to_string(f)
                    .unwrap()
                    .trim_start()
                    .starts_with("//!")
            })
            .map(|f| relative(&f))
            .collect();
        assert!(
            missing.is_empty(),
            "files without a `//!` line at the top: {missing:?}"
        );
    }

    #[test]
    fn unsafe_only_in_backend_crates() {
        let offenders: Vec<String> = rust_files()
            .into_iter()
            .map(|f| relative(&f))
            .filter(|f| {
                !UNSAFE_ALLOWED.iter().any(|allowed| f.starts_with(allowed))
                    && !f.ends_with("tidy.rs")
            })
            .filter(|f| {
                let text = std::fs::read_to_string(root().join(f)).unwrap();
                text.lines().any(|line| {
                    let code = line.split("//").next().unwrap_or("");
                    code.contains("unsafe ") || code.contains("unsafe{")
                })
            })
            .collect();
        assert!(
            offenders.is_empty(),
            "`unsafe` outside the backend crates: {offenders:?}"
        );
    }

    /// The compiler enforces the rule above: every crate root outside the backends that
    /// need `unsafe` (CPU SIMD, CUDA) says `#![forbid(unsafe_code)]`.
    #[test]
    fn crates_without_unsafe_forbid_it() {
        let roots = [
            "crates/cryptgpu/src/main.rs",
            "crates/cryptgpu/src/lib.rs",
            "crates/cryptgpu-ring/src/lib.rs",
            "crates/cryptgpu-backend/src/lib.rs",
            "crates/cryptgpu-transport/src/lib.rs",
            "crates/cryptgpu-share/src/lib.rs",
            "crates/cryptgpu-nonlinear/src/lib.rs",
            "crates/cryptgpu-nn/src/lib.rs",
            "crates/cryptgpu-wgpu/src/lib.rs",
            "benches/src/lib.rs",
            "xtask/src/main.rs",
        ];
        let missing: Vec<&str> = roots
            .into_iter()
            .filter(|f| {
                !std::fs::read_to_string(root().join(f))
                    .unwrap()
                    .lines()
                    .any(|l| l.trim() == "#![forbid(unsafe_code)]")
            })
            .collect();
        assert!(
            missing.is_empty(),
            "crate roots without #![forbid(unsafe_code)]: {missing:?}"
        );
    }

    #[test]
    fn every_manifest_inherits_the_workspace() {
        let mut manifests = Vec::new();
        files_with_extension(&root().join("crates"), "toml", &mut manifests);
        manifests.push(root().join("xtask/Cargo.toml"));
        manifests.push(root().join("benches/Cargo.toml"));
        for manifest in manifests.iter().filter(|m| m.ends_with("Cargo.toml")) {
            let text = std::fs::read_to_string(manifest).unwrap();
            let name = relative(manifest);
            assert!(
                text.contains("[lints]\nworkspace = true"),
                "{name} must use the workspace lints"
            );
            assert!(
                text.contains("version.workspace = true"),
                "{name} must inherit the workspace version"
            );
            assert!(
                text.contains("edition.workspace = true"),
                "{name} must inherit the workspace edition"
            );
            let folder = manifest
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if name.starts_with("crates/") {
                assert!(
                    text.contains(&format!("name = \"{folder}\"")),
                    "{name}: the crate name must equal its folder"
                );
            }
        }
    }

    #[test]
    fn every_workspace_allow_has_a_reason() {
        let text = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("= \"allow\"") {
                assert!(
                    i > 0 && lines[i - 1].trim_start().starts_with('#'),
                    "Cargo.toml line {}: an `allow` needs a reason in a comment above it",
                    i + 1
                );
            }
        }
    }
}
