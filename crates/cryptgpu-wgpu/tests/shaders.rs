//! Every `shaders/*.wgsl` file is used by a kernel, and every kernel module parses and
//! validates with naga on both ring paths (no GPU needed). The emulated path is validated
//! without the 64-bit integer capability, so it cannot use `u64` by accident.

use cryptgpu_wgpu::shaders::{FILES, Kernel, RingPath};
use std::path::Path;

#[test]
fn every_shader_file_is_embedded_and_used() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("shaders/ exists")
        .map(|entry| {
            entry
                .expect("readable entry")
                .file_name()
                .into_string()
                .unwrap()
        })
        .filter(|name| name.ends_with(".wgsl"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = FILES.iter().map(|(name, _)| name.to_string()).collect();
    embedded.sort();
    assert_eq!(
        on_disk, embedded,
        "shaders/*.wgsl and shaders::FILES differ"
    );
    for (name, text) in FILES {
        let disk = std::fs::read_to_string(dir.join(name)).unwrap();
        assert_eq!(disk, text, "{name}: the embedded text is stale");
        let used = name.starts_with("ring_")
            || Kernel::ALL
                .iter()
                .any(|kernel| kernel.files().contains(&name));
        assert!(used, "{name} is in no kernel");
    }
}

#[test]
fn every_kernel_validates_with_naga_on_both_paths() {
    for path in RingPath::ALL {
        let capabilities = match path {
            RingPath::Native => naga::valid::Capabilities::SHADER_INT64,
            RingPath::Emulated => naga::valid::Capabilities::empty(),
        };
        for kernel in Kernel::ALL {
            let source = kernel.source(path);
            let module = naga::front::wgsl::parse_str(&source).unwrap_or_else(|e| {
                panic!(
                    "{kernel:?} on {path:?} does not parse:\n{}",
                    e.emit_to_string(&source)
                )
            });
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), capabilities)
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!(
                        "{kernel:?} on {path:?} does not validate:\n{}",
                        e.emit_to_string(&source)
                    )
                });
            if path == RingPath::Native {
                assert!(
                    naga::valid::Validator::new(
                        naga::valid::ValidationFlags::all(),
                        naga::valid::Capabilities::empty()
                    )
                    .validate(&module)
                    .is_err(),
                    "{kernel:?}: the native path must need SHADER_INT64"
                );
            }
            assert!(
                module
                    .entry_points
                    .iter()
                    .any(|ep| ep.name == kernel.entry_point()),
                "{kernel:?} has no entry point {}",
                kernel.entry_point()
            );
        }
    }
}
