//! `CudaError`: what the driver, NVRTC and cuBLAS report, wrapped into
//! `BackendError::Device` at the backend boundary.

use cryptgpu_backend::BackendError;

/// A failure of the CUDA backend below the level of argument checking.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// The CUDA driver API reported an error.
    #[error("CUDA driver: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// cuBLAS reported an error.
    #[error("cuBLAS: {0}")]
    Cublas(#[from] cudarc::cublas::result::CublasError),
    /// A shared library the backend needs cannot be loaded.
    #[error("the {library} library cannot be loaded: {why}")]
    LibraryMissing {
        /// Which library: `libcuda`, `libnvrtc` or `libcublas`.
        library: &'static str,
        /// What was tried and how to fix it.
        why: String,
    },
    /// NVRTC rejected a kernel source; the log says why.
    #[error("NVRTC could not compile kernels/{file} for {arch} ({status}):\n{log}")]
    Compile {
        /// The file under `kernels/`.
        file: &'static str,
        /// The target architecture, e.g. `compute_90`.
        arch: String,
        /// NVRTC's status code.
        status: String,
        /// NVRTC's compile log.
        log: String,
    },
    /// A kernel launch whose arguments do not match the kernel's declared parameters.
    #[error("kernel {kernel}: {why}")]
    Launch {
        /// The kernel's name.
        kernel: &'static str,
        /// What does not match.
        why: String,
    },
    /// A buffer that does not fit: the party's limit in the device-memory ledger, or the
    /// device's memory, is reached. Always a
    /// [`BackendError::OutOfDeviceMemory`], which it becomes at the backend boundary.
    #[error(transparent)]
    OutOfMemory(BackendError),
    /// A size beyond what a kernel or cuBLAS can address.
    #[error("{op}: {why}")]
    TooLarge {
        /// The op that refused it.
        op: &'static str,
        /// Which limit it exceeds.
        why: String,
    },
}

impl From<CudaError> for BackendError {
    fn from(error: CudaError) -> Self {
        match error {
            CudaError::OutOfMemory(error) => error,
            error => BackendError::Device(Box::new(error)),
        }
    }
}
