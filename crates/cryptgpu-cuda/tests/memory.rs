//! The device-memory ledger on the CUDA backend (alone in this binary: it sets the
//! process-wide limit). Without a GPU it prints `skipped:` (a failure under
//! `CRYPTGPU_REQUIRE_CUDA=1`).

use cryptgpu_backend::BackendError;
use cryptgpu_backend::conformance::{check_memory_ledger, unavailable};
use cryptgpu_cuda::CudaBackend;

#[test]
fn tensors_are_charged_to_the_ledger_and_refused_past_the_limit() {
    let backend = match CudaBackend::new(0) {
        Ok(backend) => backend,
        Err(e @ BackendError::NoDevice { .. }) => {
            unavailable::<CudaBackend>("cuda", e);
            return;
        }
        Err(e) => panic!("the CUDA backend failed to start: {e}"),
    };
    check_memory_ledger(&backend);
}
