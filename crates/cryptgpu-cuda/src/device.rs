//! One CUDA device shared by every backend handle on it: the context, the compiled kernels
//! (NVRTC runs once per device and process), and the checked kernel launch.

use crate::CudaError;
use crate::kernels::{self, KernelDecl, KernelValue, Param};
use cryptgpu_backend::BackendError;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchArgs, LaunchConfig,
    PushKernelArg,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A device with its kernels loaded.
pub(crate) struct Device {
    /// The device's primary context.
    pub(crate) ctx: Arc<CudaContext>,
    /// The device's name, e.g. `NVIDIA H100 80GB HBM3`.
    pub(crate) name: String,
    /// Compute capability `(major, minor)`.
    pub(crate) compute_capability: (i32, i32),
    /// Number of streaming multiprocessors (sizes grids).
    pub(crate) multiprocessors: u32,
    functions: HashMap<&'static str, (CudaFunction, &'static KernelDecl)>,
    /// With [`StreamMode::Shared`], the one stream every thread's work goes to.
    pub(crate) shared_stream: Option<Arc<CudaStream>>,
}

/// How the host threads that use a device share it: the value of [`STREAMS_VAR`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// A stream per host thread (the default): three parties' kernels run side by side,
    /// and a tensor one thread made and another uses is ordered by cudarc's per-buffer
    /// events (two events per allocation, a wait and a record per kernel argument).
    PerThread,
    /// One stream for every thread, and cudarc's event tracking off: all work on the
    /// device is ordered by the stream alone, so no events are made, waited on or
    /// recorded, at the cost of the parties' kernels no longer overlapping. For measuring
    /// which pays at small sizes; chosen per process, before the device is first opened.
    Shared,
}

/// The environment variable that picks the [`StreamMode`]: `per-thread` (the default) or
/// `shared`.
pub const STREAMS_VAR: &str = "CRYPTGPU_CUDA_STREAMS";

impl StreamMode {
    /// The mode [`STREAMS_VAR`] asks for.
    ///
    /// # Errors
    /// A value other than `per-thread` or `shared`.
    pub fn from_env() -> Result<StreamMode, BackendError> {
        match std::env::var(STREAMS_VAR) {
            Err(_) => Ok(StreamMode::PerThread),
            Ok(v) if v.is_empty() || v == "per-thread" => Ok(StreamMode::PerThread),
            Ok(v) if v == "shared" => Ok(StreamMode::Shared),
            Ok(v) => Err(BackendError::invalid(
                "CudaBackend::new",
                format!("{STREAMS_VAR}={v}: expected per-thread or shared"),
            )),
        }
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field("compute_capability", &self.compute_capability)
            .finish_non_exhaustive()
    }
}

/// The devices opened so far in this process, by ordinal.
fn opened() -> &'static Mutex<HashMap<usize, Arc<Device>>> {
    static OPENED: OnceLock<Mutex<HashMap<usize, Arc<Device>>>> = OnceLock::new();
    OPENED.get_or_init(Default::default)
}

impl Device {
    /// The device `ordinal`, opened and its kernels compiled on first use.
    pub(crate) fn get(ordinal: usize) -> Result<Arc<Device>, BackendError> {
        let no_device = |why: String| BackendError::NoDevice {
            backend: "cuda",
            why,
        };
        crate::libs::driver().map_err(|e| no_device(e.to_string()))?;
        let mut opened = opened().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(device) = opened.get(&ordinal) {
            return Ok(device.clone());
        }
        let count = CudaContext::device_count()
            .map_err(|e| no_device(format!("the CUDA driver cannot count devices: {e}")))?;
        if ordinal >= count.max(0) as usize {
            return Err(no_device(format!(
                "device {ordinal} was asked for but the driver reports {count}"
            )));
        }
        let mode = StreamMode::from_env()?;
        let ctx = CudaContext::new(ordinal).map_err(CudaError::from)?;
        keep_freed_memory(&ctx);
        let shared_stream = match mode {
            StreamMode::PerThread => None,
            StreamMode::Shared => {
                // SAFETY: every buffer of this context is made, used and freed on the one
                // stream made just below (`CudaBackend::queue` hands it to every thread),
                // so the stream orders every use before the free, every write before the
                // reads, and no two streams ever touch a buffer: the synchronisation the
                // events would provide is the stream's order. No buffer exists yet.
                unsafe { ctx.disable_event_tracking() };
                Some(ctx.new_stream().map_err(CudaError::from)?)
            }
        };
        let mut device = Self::load(ctx)?;
        device.shared_stream = shared_stream;
        let device = Arc::new(device);
        opened.insert(ordinal, device.clone());
        Ok(device)
    }

    /// Compiles every kernel source for the device's architecture and loads it.
    fn load(ctx: Arc<CudaContext>) -> Result<Self, CudaError> {
        let name = ctx.name()?;
        let compute_capability = ctx.compute_capability()?;
        let multiprocessors = ctx.attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )?;
        let arch = kernels::arch_for(compute_capability)?;
        let mut functions = HashMap::new();
        for source in kernels::SOURCES {
            let compiled = kernels::compile_ptx(source, &arch)?;
            let module = ctx.load_module(cudarc::nvrtc::Ptx::from_src(compiled.ptx))?;
            for decl in source.kernels {
                functions.insert(decl.name, (module.load_function(decl.name)?, decl));
            }
        }
        Ok(Self {
            ctx,
            name,
            compute_capability,
            multiprocessors: multiprocessors.max(1) as u32,
            functions,
            shared_stream: None,
        })
    }

    /// A 1-d grid-stride launch over `n` items: 256 threads a block, enough blocks to fill
    /// the device several times over (the kernels loop over the rest).
    pub(crate) fn grid_1d(&self, n: u64) -> LaunchConfig {
        const THREADS: u64 = 256;
        let most = u64::from(self.multiprocessors) * 32;
        let blocks = n.div_ceil(THREADS).clamp(1, most);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Launches kernel `name` with `config` on `stream`, `args` in the order of its
    /// parameters, and counts the launch. An argument list that differs from the kernel's
    /// declaration in [`kernels::SOURCES`] (which the NVRTC test holds to the PTX) is refused
    /// before anything is launched.
    ///
    /// # Safety
    /// The sizes and offsets passed must keep every access of the kernel inside the
    /// buffers passed, and a buffer passed as [`Arg::In`] must be one the kernel does not
    /// write (each call site says why its launch is sound).
    pub(crate) unsafe fn launch<'b>(
        &self,
        stream: &CudaStream,
        name: &'static str,
        config: LaunchConfig,
        args: impl IntoIterator<Item = Arg<'b>>,
    ) -> Result<(), CudaError> {
        let (function, decl) = self.functions.get(name).ok_or(CudaError::Launch {
            kernel: name,
            why: "no such kernel in kernels::SOURCES".into(),
        })?;
        let mut builder = stream.launch_builder(function);
        let mut pushed = Vec::with_capacity(decl.params.len());
        for arg in args {
            pushed.push(match arg {
                Arg::In(buffer) => buffer.push_read(&mut builder),
                Arg::Out(buffer) => buffer.push_write(&mut builder),
                Arg::Val(value) => value.push(&mut builder),
            });
        }
        if pushed != decl.params {
            return Err(CudaError::Launch {
                kernel: decl.name,
                why: format!(
                    "launched with {pushed:?} but declared with {:?}",
                    decl.params
                ),
            });
        }
        // SAFETY: the argument list matches the kernel's declared parameters in number,
        // kind and size (checked just above; the NVRTC test checks the declaration against
        // the PTX), so the kernel reads every parameter from a value of the right layout;
        // the caller guarantees the memory accesses stay in bounds.
        unsafe { builder.launch(config) }?;
        cryptgpu_backend::counters::record_launches(1);
        Ok(())
    }
}

/// Keeps memory freed on the device in its default pool, from which cudarc's stream-ordered
/// allocations (`cuMemAllocAsync`) are served, instead of handing it back to the driver at
/// every synchronisation (the pool's default release threshold is 0): the tensors of a
/// protocol round then come from the pool, not from fresh mappings. Where the threshold
/// cannot be set (no stream-ordered allocator, an old driver), allocations stay correct,
/// only slower, so that is not an error.
fn keep_freed_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    if !ctx.has_async_alloc() || ctx.bind_to_thread().is_err() {
        return;
    }
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid place for the driver to write a pool handle, and the device
    // is the context's own, which is current on this thread (bound just above).
    let got = unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) };
    if got != sys::CUresult::CUDA_SUCCESS || pool.is_null() {
        return;
    }
    let mut threshold = u64::MAX;
    // SAFETY: the release threshold attribute takes a pointer to a cuuint64_t, which
    // `threshold` is, alive for the call; `pool` is the handle the driver just returned.
    // A failure leaves the default threshold (see above), so the result is not needed.
    let _ = unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    };
}

/// One argument of a kernel launch ([`Device::launch`]), in the kernel's parameter order.
pub(crate) enum Arg<'b> {
    /// A buffer the kernel reads.
    In(&'b dyn KernelBuffer),
    /// A buffer the kernel writes (and may read).
    Out(&'b mut dyn KernelBuffer),
    /// A value passed by value: an integer or one of the parameter structs of `kernels`.
    Val(&'b dyn KernelArg),
}

/// A device buffer a kernel takes as a pointer: a `CudaSlice` of any element type.
pub(crate) trait KernelBuffer {
    /// Pushes the buffer as one the kernel reads (cudarc orders it after earlier writes).
    fn push_read<'a>(&'a self, builder: &mut LaunchArgs<'a>) -> Param;
    /// Pushes the buffer as one the kernel writes (ordered after earlier reads and writes).
    fn push_write<'a>(&'a mut self, builder: &mut LaunchArgs<'a>) -> Param;
}

impl<T> KernelBuffer for CudaSlice<T> {
    fn push_read<'a>(&'a self, builder: &mut LaunchArgs<'a>) -> Param {
        builder.arg(self);
        Param::Ptr
    }

    fn push_write<'a>(&'a mut self, builder: &mut LaunchArgs<'a>) -> Param {
        builder.arg(self);
        Param::Ptr
    }
}

/// A value a kernel takes by value, pushed with the [`Param`] kind it declares.
pub(crate) trait KernelArg {
    /// Pushes the value and says which kind of parameter it is.
    fn push<'a>(&'a self, builder: &mut LaunchArgs<'a>) -> Param;
}

impl<T: KernelValue + DeviceRepr> KernelArg for T {
    fn push<'a>(&'a self, builder: &mut LaunchArgs<'a>) -> Param {
        builder.arg(self);
        T::PARAM
    }
}
