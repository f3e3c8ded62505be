//! Backend selection: `--backend auto|cpu|cuda|wgpu`, and running a job generic over
//! `B: GpuBackend` on whichever was chosen.

use anyhow::{Result, bail};
use cryptgpu_backend::GpuBackend;
use cryptgpu_cpu::CpuBackend;

/// The `--backend` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BackendChoice {
    /// CUDA if a GPU and libcuda are there, else a hardware GPU through wgpu, else the CPU.
    Auto,
    /// The multithreaded CPU backend.
    Cpu,
    /// NVIDIA GPUs through CUDA (feature `cuda`).
    Cuda,
    /// Any Vulkan, Metal or DX12 GPU through wgpu compute shaders (feature `wgpu`),
    /// software rasterisers such as lavapipe included.
    Wgpu,
}

/// A job that runs on any backend.
pub(crate) trait Job {
    /// What the job returns.
    type Output;
    /// Runs the job on `backend`.
    fn run<B: GpuBackend>(self, backend: B) -> Result<Self::Output>;
}

/// Runs `job` on the chosen backend; returns its output and the backend's description.
pub(crate) fn run_on<J: Job>(choice: BackendChoice, job: J) -> Result<(J::Output, String)> {
    match choice {
        BackendChoice::Cpu => Ok((job.run(CpuBackend::new())?, "cpu".into())),
        BackendChoice::Cuda => {
            let (backend, name) = cuda()?;
            Ok((job.run_cuda(backend)?, name))
        }
        BackendChoice::Wgpu => {
            let (backend, name) = wgpu(false)?;
            Ok((job.run_wgpu(backend)?, name))
        }
        BackendChoice::Auto => {
            if let Ok((backend, name)) = cuda() {
                return Ok((job.run_cuda(backend)?, name));
            }
            if let Ok((backend, name)) = wgpu(true) {
                return Ok((job.run_wgpu(backend)?, name));
            }
            Ok((job.run(CpuBackend::new())?, "cpu".into()))
        }
    }
}

/// Extension that runs a job on the optional backends, so `run_on` compiles with any set
/// of features.
trait OptionalBackends: Job + Sized {
    fn run_cuda(self, backend: CudaHandle) -> Result<Self::Output>;
    fn run_wgpu(self, backend: WgpuHandle) -> Result<Self::Output>;
}

impl<J: Job> OptionalBackends for J {
    #[cfg(feature = "cuda")]
    fn run_cuda(self, backend: CudaHandle) -> Result<Self::Output> {
        self.run(backend)
    }
    #[cfg(not(feature = "cuda"))]
    fn run_cuda(self, backend: CudaHandle) -> Result<Self::Output> {
        match backend {}
    }
    #[cfg(feature = "wgpu")]
    fn run_wgpu(self, backend: WgpuHandle) -> Result<Self::Output> {
        self.run(backend)
    }
    #[cfg(not(feature = "wgpu"))]
    fn run_wgpu(self, backend: WgpuHandle) -> Result<Self::Output> {
        match backend {}
    }
}

#[cfg(feature = "cuda")]
type CudaHandle = cryptgpu_cuda::CudaBackend;
#[cfg(not(feature = "cuda"))]
enum CudaHandle {}

#[cfg(feature = "wgpu")]
type WgpuHandle = cryptgpu_wgpu::WgpuBackend;
#[cfg(not(feature = "wgpu"))]
enum WgpuHandle {}

#[cfg(feature = "cuda")]
fn cuda() -> Result<(CudaHandle, String)> {
    let backend = cryptgpu_cuda::CudaBackend::new(0)?;
    Ok((backend, "cuda".into()))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<(CudaHandle, String)> {
    bail!("this cryptgpu was built without the CUDA backend: rebuild with `--features cuda`")
}

/// A wgpu adapter; with `hardware_only`, a software rasteriser (lavapipe) is refused, so
/// that `auto` prefers the CPU backend to a GPU emulated on the CPU.
#[cfg(feature = "wgpu")]
fn wgpu(hardware_only: bool) -> Result<(WgpuHandle, String)> {
    let backend = cryptgpu_wgpu::WgpuBackend::new()?;
    let adapter = backend.adapter();
    if hardware_only && adapter.is_software {
        bail!("only a software wgpu adapter ({})", adapter.name);
    }
    let name = format!("wgpu ({})", adapter.name);
    Ok((backend, name))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_hardware_only: bool) -> Result<(WgpuHandle, String)> {
    bail!("this cryptgpu was built without the wgpu backend: rebuild with `--features wgpu`")
}
