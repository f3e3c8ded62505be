//! The shared conformance suite on the CUDA backend, once per GEMM method (matmul and the
//! convolutions differ between them; the other ops run three times, which costs little).
//! Without a GPU every test prints `skipped:`; `CRYPTGPU_REQUIRE_CUDA=1` makes that a
//! failure.

use cryptgpu_backend::BackendError;
use cryptgpu_backend::conformance::unavailable;
use cryptgpu_cuda::{CudaBackend, GemmMethod};

/// Device 0 with `method`, or `None` after saying why when there is no GPU. Any other
/// failure (a kernel that does not compile, cuBLAS missing on a GPU machine) panics.
pub fn make(method: GemmMethod) -> Option<CudaBackend> {
    match CudaBackend::new(0).and_then(|b| b.with_gemm_method(method)) {
        Ok(backend) => Some(backend),
        Err(e @ BackendError::NoDevice { .. }) => unavailable("cuda", e),
        Err(e) => panic!("the CUDA backend failed to start with {method:?}: {e}"),
    }
}

mod int8 {
    fn make() -> Option<cryptgpu_cuda::CudaBackend> {
        super::make(cryptgpu_cuda::GemmMethod::Int8TensorCore)
    }
    cryptgpu_backend::conformance_tests!(make);
}

mod fp64 {
    fn make() -> Option<cryptgpu_cuda::CudaBackend> {
        super::make(cryptgpu_cuda::GemmMethod::Fp64Blocks)
    }
    cryptgpu_backend::conformance_tests!(make);
}

mod tiled {
    fn make() -> Option<cryptgpu_cuda::CudaBackend> {
        super::make(cryptgpu_cuda::GemmMethod::TiledInt)
    }
    cryptgpu_backend::conformance_tests!(make);
}
