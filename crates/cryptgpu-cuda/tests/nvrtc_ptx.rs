//! Compiles every kernel source under `kernels/` to PTX with NVRTC (no GPU needed), fails on
//! any error or warning, and checks each kernel's PTX signature against the parameter list
//! the launches are checked against.
//!
//! NVRTC comes from the loader's path or from `CRYPTGPU_NVRTC_DIR`. Without it the test
//! prints `skipped:`; `CRYPTGPU_REQUIRE_NVRTC=1` (CI sets it) makes that a failure.

use cryptgpu_cuda::kernels::{self, SOURCES};
use std::collections::BTreeSet;
use std::path::Path;

/// Targets: the oldest architecture with int8 tensor cores (Turing) and Hopper.
const ARCHS: [&str; 2] = ["compute_75", "compute_90"];

/// `true` when NVRTC is there; `false` after printing why the test skips; a panic when
/// `CRYPTGPU_REQUIRE_NVRTC` says it must be there.
fn nvrtc_or_skip() -> bool {
    let Err(why) = cryptgpu_cuda::libs::nvrtc() else {
        return true;
    };
    let required = std::env::var("CRYPTGPU_REQUIRE_NVRTC").is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "CRYPTGPU_REQUIRE_NVRTC is set but NVRTC is unavailable: {why}"
    );
    eprintln!(
        "skipped: NVRTC is unavailable here ({why}); set CRYPTGPU_REQUIRE_NVRTC=1 to make this a failure"
    );
    false
}

#[test]
fn every_kernel_file_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".cu"))
        .collect();
    let embedded: BTreeSet<String> = SOURCES.iter().map(|s| s.file.to_string()).collect();
    assert_eq!(
        on_disk, embedded,
        "kernels/*.cu and kernels::SOURCES must list the same files"
    );
    for source in SOURCES {
        let on_disk = std::fs::read_to_string(dir.join(source.file)).unwrap();
        assert_eq!(on_disk, source.source, "{} is stale", source.file);
    }
}

#[test]
fn every_kernel_compiles_to_ptx_with_matching_signatures() {
    if !nvrtc_or_skip() {
        return;
    }
    for arch in ARCHS {
        for source in SOURCES {
            let compiled = match kernels::compile_ptx(source, arch) {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            };
            assert!(
                compiled.log.is_empty(),
                "NVRTC warned on kernels/{} for {arch}:\n{}",
                source.file,
                compiled.log
            );
            let entries = compiled.ptx.matches(".entry ").count();
            assert_eq!(
                entries,
                source.kernels.len(),
                "kernels/{} has {entries} entry points but {} are declared",
                source.file,
                source.kernels.len()
            );
            for kernel in source.kernels {
                let actual =
                    kernels::ptx_entry_params(&compiled.ptx, kernel.name).unwrap_or_else(|| {
                        panic!(
                            "no parsable .entry {} in the PTX of {}",
                            kernel.name, source.file
                        )
                    });
                assert!(
                    kernels::params_match(kernel.params, &actual),
                    "{}: declared {:?} but the PTX takes {:?}",
                    kernel.name,
                    kernel.params,
                    actual
                );
            }
        }
    }
}

#[test]
fn a_broken_source_returns_the_nvrtc_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let broken = kernels::KernelSource {
        file: "broken.cu",
        source: "extern \"C\" __global__ void broken(unsigned long long* out) { out[0] = undeclared; }",
        kernels: &[],
    };
    let error = kernels::compile_ptx(&broken, "compute_90")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("undeclared"),
        "the error must carry NVRTC's log: {error}"
    );
}

#[test]
fn the_target_architecture_follows_what_nvrtc_supports() {
    if !nvrtc_or_skip() {
        return;
    }
    let archs = kernels::supported_archs().unwrap();
    assert!(archs.contains(&75) && archs.contains(&90), "{archs:?}");
    assert_eq!(kernels::arch_for((9, 0)).unwrap(), "compute_90");
    assert_eq!(kernels::arch_for((7, 5)).unwrap(), "compute_75");
    // A device newer than this NVRTC gets the newest architecture it knows.
    let newest = archs.iter().max().unwrap();
    assert_eq!(
        kernels::arch_for((99, 9)).unwrap(),
        format!("compute_{newest}")
    );
    assert!(kernels::arch_for((1, 0)).is_err());
}
