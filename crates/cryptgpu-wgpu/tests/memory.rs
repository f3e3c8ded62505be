//! The device-memory ledger on the wgpu backend (alone in this binary: it sets the
//! process-wide limit). Without an adapter it prints `skipped:` (a failure under
//! `CRYPTGPU_REQUIRE_WGPU=1`).

use cryptgpu_backend::conformance::{check_memory_ledger, unavailable};
use cryptgpu_backend::memory;
use cryptgpu_backend::{BackendError, GpuBackend};
use cryptgpu_wgpu::WgpuBackend;

#[test]
fn tensors_and_staging_buffers_are_charged_and_refused_past_the_limit() {
    let Some(backend) = WgpuBackend::new().map_or_else(|e| unavailable("wgpu", e), Some) else {
        return;
    };
    check_memory_ledger(&backend);
    // A download's staging buffer is charged while the download lasts: refused where the
    // party has no room for it, before wgpu is asked.
    memory::set_thread_party(Some(2));
    let x = backend.upload(&[5; 1000], &[1000]).unwrap();
    let held = memory::party_live_bytes()[2];
    memory::set_party_limit(Some(held + 4000));
    let refused = backend.download(&x);
    memory::set_party_limit(Some(held + 8000));
    let fits = backend.download(&x);
    memory::set_party_limit(None);
    assert!(
        matches!(
            refused,
            Err(BackendError::OutOfDeviceMemory(memory::Shortfall {
                requested: 8000,
                ..
            }))
        ),
        "{refused:?}"
    );
    assert_eq!(fits.unwrap(), vec![5; 1000]);
    assert_eq!(memory::party_live_bytes()[2], held);
    drop(x);
    memory::set_thread_party(None);
}
