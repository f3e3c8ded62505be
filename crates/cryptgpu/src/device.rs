//! The device a job runs on: `auto`, `cpu`, `cuda` or `wgpu` (the CLI's `--backend`), and
//! running a job written once, generic over `B: GpuBackend`, on whichever was chosen.

use anyhow::{Result, bail};
use cryptgpu_backend::GpuBackend;
use cryptgpu_cpu::CpuBackend;

/// Which backend runs a job (the CLI's `--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// CUDA if a GPU and libcuda are there, else a hardware GPU through wgpu, else the CPU.
    #[default]
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
pub trait Job {
    /// What the job returns.
    type Output;
    /// Runs the job on `backend`.
    fn run<B: GpuBackend>(self, backend: B) -> Result<Self::Output>;
}

/// Runs `job` on the chosen backend; returns its output and the backend's description.
pub fn run_on<J: Job>(choice: Device, job: J) -> Result<(J::Output, String)> {
    let (output, device) = run_on_device(choice, job)?;
    Ok((output, device.to_string()))
}

/// The backend a job ran on and its device.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// `cpu`, `cuda` or `wgpu`.
    pub backend: &'static str,
    /// The device in words: the CPU model, the GPU's or the adapter's name.
    pub device: String,
    /// Whether the device is a software rasteriser (lavapipe): not a GPU.
    pub software: bool,
}

impl std::fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.backend {
            "cpu" => f.write_str("cpu"),
            backend => write!(f, "{backend} ({})", self.device),
        }
    }
}

/// Runs `job` on the chosen backend; returns its output and the device it ran on.
pub fn run_on_device<J: Job>(choice: Device, job: J) -> Result<(J::Output, DeviceInfo)> {
    match choice {
        Device::Cpu => Ok((job.run(CpuBackend::new())?, cpu_info())),
        Device::Cuda => {
            let (backend, info) = cuda()?;
            Ok((job.run_cuda(backend)?, info))
        }
        Device::Wgpu => {
            let (backend, info) = wgpu(false)?;
            Ok((job.run_wgpu(backend)?, info))
        }
        Device::Auto => {
            if let Ok((backend, info)) = cuda() {
                return Ok((job.run_cuda(backend)?, info));
            }
            if let Ok((backend, info)) = wgpu(true) {
                return Ok((job.run_wgpu(backend)?, info));
            }
            Ok((job.run(CpuBackend::new())?, cpu_info()))
        }
    }
}

/// The CPU backend's device: the processor's model name (Linux) and the threads it may use.
fn cpu_info() -> DeviceInfo {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    DeviceInfo {
        backend: "cpu",
        device: format!("{model}, {threads} threads"),
        software: false,
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
fn cuda() -> Result<(CudaHandle, DeviceInfo)> {
    let backend = cryptgpu_cuda::CudaBackend::new(0)?;
    let info = DeviceInfo {
        backend: "cuda",
        device: match backend.stream_mode() {
            cryptgpu_cuda::StreamMode::PerThread => backend.device_name().to_string(),
            cryptgpu_cuda::StreamMode::Shared => {
                format!("{} (one stream for all parties)", backend.device_name())
            }
        },
        software: false,
    };
    Ok((backend, info))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<(CudaHandle, DeviceInfo)> {
    bail!("this cryptgpu was built without the CUDA backend: rebuild with `--features cuda`")
}

/// A wgpu adapter; with `hardware_only`, a software rasteriser (lavapipe) is refused, so
/// that `auto` prefers the CPU backend to a GPU emulated on the CPU.
#[cfg(feature = "wgpu")]
fn wgpu(hardware_only: bool) -> Result<(WgpuHandle, DeviceInfo)> {
    let backend = cryptgpu_wgpu::WgpuBackend::new()?;
    let adapter = backend.adapter();
    if hardware_only && adapter.is_software {
        bail!("only a software wgpu adapter ({})", adapter.name);
    }
    let info = DeviceInfo {
        backend: "wgpu",
        device: adapter.name.clone(),
        software: adapter.is_software,
    };
    Ok((backend, info))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_hardware_only: bool) -> Result<(WgpuHandle, DeviceInfo)> {
    bail!("this cryptgpu was built without the wgpu backend: rebuild with `--features wgpu`")
}
