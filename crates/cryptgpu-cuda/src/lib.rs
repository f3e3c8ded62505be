//! The CUDA backend: ring tensors (u64, arithmetic mod 2^64) on an NVIDIA GPU through
//! [cudarc](https://docs.rs/cudarc) (driver API, NVRTC, cuBLAS), loaded at run time so the
//! crate builds and its tests run on machines without CUDA.
//!
//! - [`CudaBackend::new`] opens a device; without a driver it returns
//!   [`BackendError::NoDevice`] instead of letting cudarc panic ([`libs`]).
//! - The kernels are the CUDA C files of `kernels/` ([`kernels::SOURCES`]), compiled once
//!   per device and process by NVRTC for the device's architecture.
//! - Matrix products and convolutions use one of three exact ring GEMMs ([`GemmMethod`]):
//!   int8 tensor cores, CryptGPU's fp64 blocks (both through cuBLAS, maths in [`limbs`]),
//!   or a tiled integer kernel.
//! - Each host thread that uses a backend (or a clone of it) gets its own stream and cuBLAS
//!   handle: three parties on three threads run side by side on one GPU, and one party's
//!   host copies do not wait for another's kernels. Ops are queued asynchronously;
//!   `download` and `sync` wait for the calling thread's stream (and, through cudarc's
//!   events, for the work on other streams that produced their inputs).
//!
//! # Testing without a GPU
//! `tests/nvrtc_ptx.rs` compiles every kernel with NVRTC and holds each launch's declared
//! parameters to the PTX; `tests/limbs.rs` proves the limb arithmetic of the cuBLAS GEMMs
//! on the CPU ([`limbs::simulate_gemm`]); `tests/kernel_emulation.rs` runs the kernels
//! themselves as host C++ under a CUDA shim (`emulate/`). The conformance, device and
//! protocol tests need a GPU and print `skipped:` without one (`CRYPTGPU_REQUIRE_CUDA=1`
//! makes that a failure); `device-run.sh` runs them on a GPU machine.

mod conv;
mod device;
mod error;
mod gemm;
pub mod kernels;
pub mod libs;
pub mod limbs;

pub use device::{STREAMS_VAR, StreamMode};
pub use error::CudaError;
pub use gemm::{GemmMethod, ReferenceGemm};

use cryptgpu_backend::counters;
use cryptgpu_backend::memory::{self, MemoryCharge, Shortfall};
use cryptgpu_backend::shape::{self, Conv2dDims, MatmulDims, Pool2dDims};
use cryptgpu_backend::{
    BackendError, BinaryOp, Conv2dParams, DeviceTensor, Fused, GpuBackend, Pool2dParams, Result,
    ShiftOp, UnaryOp, prg,
};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaSlice, CudaStream, DriverError, LaunchArgs};
use device::Arg::{self, In, Out, Val};
use device::{Device, KernelBuffer};
use gemm::{GemmShape, MatRef};
use kernels::Param;
use kernels::{ChachaKey, FusedParams, GATHER_MAX_RANK, GatherParams, PoolDims, SelectRowsParams};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut, Range};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

/// The environment variable that picks the GEMM method of new backends: `int8`, `fp64` or
/// `tiled` (see [`GemmMethod::name`]).
pub const GEMM_METHOD_VAR: &str = "CRYPTGPU_CUDA_GEMM";

/// One thread's stream and, created on first use, its cuBLAS handle (bound to that stream).
pub(crate) struct Queue {
    pub(crate) stream: Arc<CudaStream>,
    blas: Mutex<Option<CudaBlas>>,
}

impl Queue {
    /// The cuBLAS handle of this stream, created on first use; the guard holds `Some`.
    pub(crate) fn blas(&self) -> Result<MutexGuard<'_, Option<CudaBlas>>, CudaError> {
        let mut blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        if blas.is_none() {
            libs::cublas()?;
            *blas = Some(CudaBlas::new(self.stream.clone())?);
        }
        Ok(blas)
    }
}

/// The streams of one backend and its clones, one per host thread that uses them.
#[derive(Default)]
struct Queues(Mutex<HashMap<ThreadId, Arc<Queue>>>);

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let count = self.0.lock().map(|q| q.len()).unwrap_or_default();
        f.debug_struct("Queues").field("streams", &count).finish()
    }
}

/// The CUDA backend: a device, a GEMM method, and a stream per host thread. Cheap to
/// clone; `Send + Sync`. Work a thread queues goes to that thread's stream, so parties on
/// three threads run side by side on one GPU even when they share one handle; tensors
/// passed between threads are ordered by cudarc's stream events.
#[derive(Clone, Debug)]
pub struct CudaBackend {
    device: Arc<Device>,
    queues: Arc<Queues>,
    method: GemmMethod,
}

/// A device buffer of ring elements ([`CudaBackend::alloc`]) and its bytes in the
/// device-memory ledger, given back when the buffer is freed.
#[derive(Debug)]
pub(crate) struct DeviceBuf {
    slice: CudaSlice<u64>,
    _charge: MemoryCharge,
}

impl Deref for DeviceBuf {
    type Target = CudaSlice<u64>;
    fn deref(&self) -> &CudaSlice<u64> {
        &self.slice
    }
}

impl DerefMut for DeviceBuf {
    fn deref_mut(&mut self) -> &mut CudaSlice<u64> {
        &mut self.slice
    }
}

impl KernelBuffer for DeviceBuf {
    fn push_read<'a>(&'a self, builder: &mut LaunchArgs<'a>) -> Param {
        self.slice.push_read(builder)
    }

    fn push_write<'a>(&'a mut self, builder: &mut LaunchArgs<'a>) -> Param {
        self.slice.push_write(builder)
    }
}

/// A tensor in device memory. Clones share the buffer; ops never write to an existing
/// tensor. The buffer holds at least one element, so empty tensors are real allocations.
#[derive(Clone, Debug)]
pub struct CudaTensor {
    buf: Arc<DeviceBuf>,
    shape: Vec<usize>,
}

impl CudaTensor {
    fn new(buf: DeviceBuf, shape: Vec<usize>) -> Self {
        Self {
            buf: Arc::new(buf),
            shape,
        }
    }

    fn buffer(&self) -> &CudaSlice<u64> {
        &self.buf
    }

    fn with_shape(self, shape: Vec<usize>) -> Self {
        Self { shape, ..self }
    }
}

impl DeviceTensor for CudaTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl CudaBackend {
    /// Opens CUDA device `ordinal` (compiling the kernels on the first open in this
    /// process) with a new stream and the default GEMM method: `CRYPTGPU_CUDA_GEMM` if
    /// set, else int8 tensor cores on compute capability 7.5 and above when cuBLAS loads,
    /// else the tiled kernel.
    ///
    /// Without a driver, or without that device, returns [`BackendError::NoDevice`].
    pub fn new(ordinal: usize) -> Result<Self> {
        let device = Device::get(ordinal)?;
        let method = match std::env::var(GEMM_METHOD_VAR) {
            Ok(name) if !name.is_empty() => GemmMethod::from_name(&name).ok_or_else(|| {
                BackendError::invalid(
                    "CudaBackend::new",
                    format!("{GEMM_METHOD_VAR}={name}: expected int8, fp64 or tiled"),
                )
            })?,
            _ if libs::cublas().is_ok() && device.compute_capability >= (7, 5) => {
                GemmMethod::Int8TensorCore
            }
            _ => GemmMethod::TiledInt,
        };
        let backend = Self {
            device,
            queues: Arc::default(),
            method,
        };
        backend.check_method(method)?;
        // Open this thread's stream now: a failure shows here, not at the first op.
        backend.queue()?;
        Ok(backend)
    }

    /// The same handle with GEMM method `method` for matmul and convolutions. Refused when
    /// the method needs cuBLAS and cuBLAS does not load, or the device is too old for it.
    pub fn with_gemm_method(self, method: GemmMethod) -> Result<Self> {
        self.check_method(method)?;
        Ok(Self { method, ..self })
    }

    fn check_method(&self, method: GemmMethod) -> Result<()> {
        if method.uses_cublas() {
            libs::cublas()?;
        }
        if method == GemmMethod::Int8TensorCore && self.device.compute_capability < (6, 1) {
            return Err(BackendError::invalid(
                "with_gemm_method",
                format!(
                    "int8 GEMMs need compute capability 6.1 or above; this device has {:?}",
                    self.device.compute_capability
                ),
            ));
        }
        Ok(())
    }

    /// The GEMM method in use.
    pub fn gemm_method(&self) -> GemmMethod {
        self.method
    }

    /// The device's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device.name
    }

    /// How the threads that use this device share it ([`StreamMode`], from
    /// [`STREAMS_VAR`] when the device was first opened in this process).
    pub fn stream_mode(&self) -> StreamMode {
        match self.device.shared_stream {
            Some(_) => StreamMode::Shared,
            None => StreamMode::PerThread,
        }
    }

    /// The device's compute capability, `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.device.compute_capability
    }

    fn device(&self) -> &Device {
        &self.device
    }

    /// The calling thread's queue, created on its first use.
    pub(crate) fn queue(&self) -> Result<Arc<Queue>, CudaError> {
        let thread = std::thread::current().id();
        let mut queues = self.queues.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = queues.get(&thread) {
            return Ok(queue.clone());
        }
        // In the shared mode every thread's queue holds the device's one stream (each its
        // own cuBLAS handle on it).
        let stream = match &self.device.shared_stream {
            Some(stream) => stream.clone(),
            None => self.device.ctx.new_stream()?,
        };
        let queue = Arc::new(Queue {
            stream,
            blas: Mutex::new(None),
        });
        queues.insert(thread, queue.clone());
        Ok(queue)
    }

    /// The calling thread's stream.
    pub(crate) fn stream(&self) -> Result<Arc<CudaStream>, CudaError> {
        Ok(self.queue()?.stream.clone())
    }

    /// A buffer of `len` elements (at least one) whose contents the caller will write,
    /// charged to this thread's party in the device-memory ledger before the driver is
    /// asked for it.
    ///
    /// # Errors
    /// [`CudaError::OutOfMemory`] where the party's limit or the device's memory is
    /// reached; a driver error.
    pub(crate) fn alloc(&self, len: usize) -> Result<DeviceBuf, CudaError> {
        let bytes = 8 * len.max(1) as u64;
        let charge = memory::charge(bytes).map_err(CudaError::OutOfMemory)?;
        // SAFETY: every caller launches a kernel (or a copy) that writes all `len`
        // elements before the buffer is read; the spare element of an empty tensor is
        // never read.
        let slice = unsafe { self.stream()?.alloc::<u64>(len.max(1)) }
            .map_err(|e| self.driver_error(e, &charge))?;
        counters::record_allocation(bytes);
        Ok(DeviceBuf {
            slice,
            _charge: charge,
        })
    }

    /// `e`, the driver's refusal of an allocation charged as `charge`: where the device's
    /// memory ran out, [`CudaError::OutOfMemory`] with the bytes asked for, what the party
    /// held besides them and the device's total memory (0 if the driver cannot say).
    pub(crate) fn driver_error(&self, e: DriverError, charge: &MemoryCharge) -> CudaError {
        if e.0 != cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            return e.into();
        }
        CudaError::OutOfMemory(
            Shortfall {
                requested: charge.bytes(),
                live: memory::thread_live_bytes().saturating_sub(charge.bytes()),
                limit: self.device.ctx.total_mem().map_or(0, |total| total as u64),
                party: charge.party(),
                by_driver: true,
            }
            .into(),
        )
    }

    /// Launches kernel `name` on the calling thread's stream over a 1-d grid for `items`
    /// grid-stride items ([`Device::grid_1d`]), `args` in the order of its parameters;
    /// checked against its declaration and counted by [`Device::launch`].
    ///
    /// # Safety
    /// As for [`Device::launch`]: the sizes and offsets passed keep every access of the
    /// kernel inside the buffers passed.
    pub(crate) unsafe fn launch_1d<'b>(
        &self,
        name: &'static str,
        items: u64,
        args: impl IntoIterator<Item = Arg<'b>>,
    ) -> Result<(), CudaError> {
        let stream = self.stream()?;
        // SAFETY: the caller's guarantee, passed on.
        unsafe {
            self.device
                .launch(&stream, name, self.device.grid_1d(items), args)
        }
    }

    /// Sets the first `n` elements of `buf` to `value`.
    fn fill_slice(&self, buf: &mut CudaSlice<u64>, n: u64, value: u64) -> Result<(), CudaError> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the kernel writes buf[i] for i < n, and callers pass n ≤ buf.len().
        unsafe { self.launch_1d("fill_u64", n, [Out(buf), Val(&n), Val(&value)]) }
    }

    /// A new tensor of `shape` where element `i` (row-major multi-index `(i_0, ..)`) reads
    /// `x[offset + Σ i_k · strides[k]]`.
    fn gather(
        &self,
        x: &CudaTensor,
        shape: &[usize],
        strides: &[usize],
        offset: usize,
    ) -> Result<CudaTensor, CudaError> {
        let n: usize = shape.iter().product();
        let mut out = self.alloc(n)?;
        if n > 0 {
            // Drop axes of extent 1 and merge neighbours that are contiguous in the source
            // (stride_outer = extent_inner · stride_inner): same addresses, fewer divisions.
            let mut axes: Vec<(u64, u64)> = Vec::with_capacity(shape.len());
            for (&extent, &stride) in shape.iter().zip(strides) {
                let (extent, stride) = (extent as u64, stride as u64);
                if extent == 1 {
                    continue;
                }
                match axes.last_mut() {
                    Some(last) if last.1 == extent * stride => *last = (last.0 * extent, stride),
                    _ => axes.push((extent, stride)),
                }
            }
            if axes.len() > GATHER_MAX_RANK {
                return Err(CudaError::TooLarge {
                    op: "strided gather",
                    why: format!(
                        "{} axes remain after merging; the kernel takes {GATHER_MAX_RANK}",
                        axes.len()
                    ),
                });
            }
            let mut params = GatherParams {
                rank: axes.len() as u64,
                offset: offset as u64,
                ..Default::default()
            };
            for (i, (extent, stride)) in axes.into_iter().enumerate() {
                params.shape[i] = extent;
                params.strides[i] = stride;
            }
            let n = n as u64;
            let args = [In(x.buffer()), Out(&mut out), Val(&n), Val(&params)];
            // SAFETY: the kernel writes out[i] for i < n (the allocation); the addresses it
            // reads are those of a view that the shape checks keep inside x (a permutation,
            // a slice or a broadcast of x, or a reordering of all of x's elements).
            unsafe { self.launch_1d("strided_gather_u64", n, args) }?;
        }
        Ok(CudaTensor::new(out, shape.to_vec()))
    }

    /// A layout op's view of `x`: `x` itself (reshaped) when the view reads all of it in
    /// order, else a gather.
    fn view(&self, x: &CudaTensor, v: shape::StridedView) -> Result<CudaTensor> {
        if v.is_whole(x.len()) {
            return Ok(x.clone().with_shape(v.shape));
        }
        Ok(self.gather(x, &v.shape, &v.strides, v.offset)?)
    }

    /// A kernel that maps `x` elementwise to a new tensor of the same shape; `op` is the
    /// kernel's op code or parameter.
    fn map(
        &self,
        kernel: &'static str,
        x: &CudaTensor,
        scalar: Option<u64>,
        codes: &[u32],
    ) -> Result<CudaTensor, CudaError> {
        let n = x.len() as u64;
        let mut out = self.alloc(x.len())?;
        if n > 0 {
            let mut args = vec![In(x.buffer()), Out(&mut out), Val(&n)];
            args.extend(scalar.as_ref().map(|scalar| Val(scalar)));
            args.extend(codes.iter().map(|code| Val(code)));
            // SAFETY: elementwise kernels read x[i] and write out[i] for i < n, the
            // element count of both.
            unsafe { self.launch_1d(kernel, n, args) }?;
        }
        Ok(CudaTensor::new(out, x.shape.clone()))
    }
}

/// The kernels' op codes (`kernels/elementwise.cu`).
fn binary_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::And => 3,
        BinaryOp::Or => 4,
        BinaryOp::Xor => 5,
    }
}

fn unary_code(op: UnaryOp) -> u32 {
    match op {
        UnaryOp::Neg => 0,
        UnaryOp::Not => 1,
    }
}

fn shift_code(op: ShiftOp) -> u32 {
    match op {
        ShiftOp::Left => 0,
        ShiftOp::RightLogical => 1,
        ShiftOp::RightArithmetic => 2,
    }
}

fn pool_dims(d: &Pool2dDims) -> PoolDims {
    let p = d.params;
    PoolDims {
        planes: (d.n * d.c) as u64,
        h: d.h as u64,
        w: d.w as u64,
        oh: d.oh as u64,
        ow: d.ow as u64,
        kh: p.kernel[0] as u64,
        kw: p.kernel[1] as u64,
        sy: p.stride[0] as u64,
        sx: p.stride[1] as u64,
        py: p.padding[0] as u64,
        px: p.padding[1] as u64,
    }
}

impl GpuBackend for CudaBackend {
    type Tensor = CudaTensor;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, data: &[u64], shape: &[usize]) -> Result<CudaTensor> {
        shape::check_len("upload", shape, data.len())?;
        let buf = if data.is_empty() {
            self.alloc(0)?
        } else {
            let charge = memory::charge(8 * data.len() as u64)?;
            let slice = self
                .stream()?
                .clone_htod(data)
                .map_err(|e| self.driver_error(e, &charge))?;
            counters::record_allocation(8 * data.len() as u64);
            DeviceBuf {
                slice,
                _charge: charge,
            }
        };
        counters::record_upload(8 * data.len() as u64);
        Ok(CudaTensor::new(buf, shape.to_vec()))
    }

    fn download(&self, tensor: &CudaTensor) -> Result<Vec<u64>> {
        let n = tensor.len();
        // A copy to the host waits for the work before it.
        counters::record_download(8 * n as u64, n > 0);
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(self
            .stream()?
            .clone_dtoh(&tensor.buf.slice(0..n))
            .map_err(CudaError::from)?)
    }

    fn full(&self, shape: &[usize], value: u64) -> Result<CudaTensor> {
        let n = shape::numel("full", shape)?;
        let mut buf = self.alloc(n)?;
        self.fill_slice(&mut buf, n as u64, value)?;
        Ok(CudaTensor::new(buf, shape.to_vec()))
    }

    fn sync(&self) -> Result<()> {
        counters::record_sync();
        Ok(self.stream()?.synchronize().map_err(CudaError::from)?)
    }

    fn reshape(&self, tensor: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        shape::check_len("reshape", shape, tensor.len())?;
        Ok(tensor.clone().with_shape(shape.to_vec()))
    }

    fn permute(&self, tensor: &CudaTensor, axes: &[usize]) -> Result<CudaTensor> {
        let v = shape::permute_view("permute", &tensor.shape, axes)?;
        self.view(tensor, v)
    }

    fn slice(&self, tensor: &CudaTensor, axis: usize, range: Range<usize>) -> Result<CudaTensor> {
        let v = shape::slice_view("slice", &tensor.shape, axis, &range)?;
        self.view(tensor, v)
    }

    fn concat(&self, tensors: &[&CudaTensor], axis: usize) -> Result<CudaTensor> {
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
        let out_shape = shape::concatenated("concat", &shapes, axis)?;
        if let [only] = tensors {
            return self.reshape(only, &out_shape);
        }
        let total: usize = out_shape.iter().product();
        let mut out = self.alloc(total)?;
        let outer: usize = out_shape[..axis].iter().product();
        let out_run = out_shape[axis..].iter().product::<usize>() as u64;
        let mut out_offset = 0u64;
        for part in tensors {
            let run = part.shape[axis..].iter().product::<usize>() as u64;
            let (outer, items) = (outer as u64, outer as u64 * run);
            if items > 0 {
                let args = [
                    In(part.buffer()),
                    Out(&mut out),
                    Val(&outer),
                    Val(&run),
                    Val(&out_run),
                    Val(&out_offset),
                ];
                // SAFETY: the kernel reads part[i] for i < outer·run (its element count)
                // and writes out[o·out_run + out_offset + j] for o < outer, j < run, where
                // out_offset + run ≤ out_run: inside out's outer·out_run elements.
                unsafe { self.launch_1d("copy_runs_u64", items, args) }?;
            }
            out_offset += run;
        }
        Ok(CudaTensor::new(out, out_shape))
    }

    fn select_rows(&self, tensor: &CudaTensor, rows: &[Option<usize>]) -> Result<CudaTensor> {
        let out_shape = shape::selected_rows("select_rows", &tensor.shape, rows)?;
        let row_len: usize = out_shape[1..].iter().product();
        let mut out = self.alloc(rows.len() * row_len)?;
        if row_len > 0 {
            // One launch per SELECT_ROWS_MAX rows, the row indices passed by value.
            for params in SelectRowsParams::chunks(rows, row_len) {
                let items = params.count * params.row_len;
                let args = [In(tensor.buffer()), Out(&mut out), Val(&params)];
                // SAFETY: the kernel writes out[(first_row + r)·row_len + j] for r < count,
                // j < row_len, and first_row + count ≤ rows.len(): inside out's
                // rows.len()·row_len elements. It reads x[rows[r]·row_len + j] only for
                // rows[r] ≠ SELECT_ROWS_NONE, a row that `selected_rows` checked is below
                // x's extent along axis 0, whose rows are row_len elements long: inside x.
                unsafe { self.launch_1d("select_rows_u64", items, args) }?;
            }
        }
        Ok(CudaTensor::new(out, out_shape))
    }

    fn broadcast_to(&self, tensor: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        let v = shape::broadcast_view("broadcast_to", &tensor.shape, shape)?;
        self.view(tensor, v)
    }

    fn binary(&self, op: BinaryOp, lhs: &CudaTensor, rhs: &CudaTensor) -> Result<CudaTensor> {
        shape::check_same("binary", &lhs.shape, &rhs.shape)?;
        let n = lhs.len() as u64;
        let code = binary_code(op);
        let mut out = self.alloc(lhs.len())?;
        if n > 0 {
            let args = [
                In(lhs.buffer()),
                In(rhs.buffer()),
                Out(&mut out),
                Val(&n),
                Val(&code),
            ];
            // SAFETY: the kernel reads lhs[i], rhs[i] and writes out[i] for i < n, the
            // element count of all three (the shapes are equal).
            unsafe { self.launch_1d("binary_u64", n, args) }?;
        }
        Ok(CudaTensor::new(out, lhs.shape.clone()))
    }

    fn binary_scalar(&self, op: BinaryOp, tensor: &CudaTensor, scalar: u64) -> Result<CudaTensor> {
        Ok(self.map(
            "binary_scalar_u64",
            tensor,
            Some(scalar),
            &[binary_code(op)],
        )?)
    }

    fn unary(&self, op: UnaryOp, tensor: &CudaTensor) -> Result<CudaTensor> {
        Ok(self.map("unary_u64", tensor, None, &[unary_code(op)])?)
    }

    fn shift(&self, op: ShiftOp, tensor: &CudaTensor, bits: u32) -> Result<CudaTensor> {
        shape::check_shift("shift", bits)?;
        Ok(self.map("shift_u64", tensor, None, &[bits, shift_code(op)])?)
    }

    fn fused(&self, program: &Fused, inputs: &[&CudaTensor]) -> Result<CudaTensor> {
        let shape = cryptgpu_backend::fused_shape(program, inputs)?;
        let n = inputs[0].len() as u64;
        let params = FusedParams::new(program, inputs.len());
        let mut out = self.alloc(inputs[0].len())?;
        if n > 0 {
            // Six input slots; those the program is not given hold the first input again.
            let mut args: Vec<Arg<'_>> = (0..kernels::FUSED_MAX_INPUTS)
                .map(|slot| In(inputs.get(slot).unwrap_or(&inputs[0]).buffer()))
                .collect();
            args.extend([Out(&mut out), Val(&n), Val(&params)]);
            // SAFETY: the kernel writes out[i] for i < n, out's element count, and reads
            // in_k[i] for i < n only for k < params.inputs = inputs.len(), tensors of
            // n elements (fused_shape checked that they all have the same shape). The
            // program was checked by fused_shape, so every operand names an input below
            // inputs.len() or an earlier step: the kernel's value array is indexed only
            // inside its FUSED_MAX_INPUTS + FUSED_MAX_STEPS entries, at ones it has set.
            unsafe { self.launch_1d("fused_u64", n, args) }?;
        }
        Ok(CudaTensor::new(out, shape))
    }

    fn extract_bit(&self, tensor: &CudaTensor, bit: u32) -> Result<CudaTensor> {
        shape::check_bit("extract_bit", bit)?;
        Ok(self.map("extract_bit_u64", tensor, None, &[bit])?)
    }

    fn pack_bits(&self, tensor: &CudaTensor) -> Result<CudaTensor> {
        let n = tensor.len() as u64;
        let words = shape::packed_words(tensor.len()) as u64;
        let mut out = self.alloc(words as usize)?;
        if words > 0 {
            // One warp per word; 256-thread blocks are whole warps.
            let args = [In(tensor.buffer()), Out(&mut out), Val(&n), Val(&words)];
            // SAFETY: the kernel reads tensor[i] only for i < n and writes out[w] for
            // w < words = ceil(n / 64), the allocation.
            unsafe { self.launch_1d("pack_bits_u64", words * 32, args) }?;
        }
        Ok(CudaTensor::new(out, vec![words as usize]))
    }

    fn bit_planes(&self, tensor: &CudaTensor) -> Result<CudaTensor> {
        let n = tensor.len() as u64;
        let words = shape::packed_words(tensor.len()) as u64;
        let mut out = self.alloc(64 * words as usize)?;
        if words > 0 {
            // One warp per word, as in pack_bits.
            let args = [In(tensor.buffer()), Out(&mut out), Val(&n), Val(&words)];
            // SAFETY: the kernel reads tensor[i] only for i < n and writes out[j·words + w]
            // for j < 64 and w < words, inside the allocation of 64·words.
            unsafe { self.launch_1d("bit_planes_u64", words * 32, args) }?;
        }
        Ok(CudaTensor::new(out, vec![64, words as usize]))
    }

    fn unpack_bits(&self, packed: &CudaTensor, shape: &[usize]) -> Result<CudaTensor> {
        let n = shape::numel("unpack_bits", shape)?;
        shape::check_len("unpack_bits", &[shape::packed_words(n)], packed.len())?;
        let mut out = self.alloc(n)?;
        let n = n as u64;
        if n > 0 {
            let args = [In(packed.buffer()), Out(&mut out), Val(&n)];
            // SAFETY: the kernel writes out[i] for i < n and reads packed[i / 64], below
            // ceil(n / 64) = packed's length (checked above).
            unsafe { self.launch_1d("unpack_bits_u64", n, args) }?;
        }
        Ok(CudaTensor::new(out, shape.to_vec()))
    }

    fn matmul(&self, lhs: &CudaTensor, rhs: &CudaTensor) -> Result<CudaTensor> {
        let d = MatmulDims::new(&lhs.shape, &rhs.shape)?;
        let (m, k, n) = (d.m, d.k, d.n);
        let mut out = self.alloc(d.batch * m * n)?;
        gemm::gemm(
            self,
            self.method,
            GemmShape {
                batch: d.batch,
                m,
                k,
                n,
            },
            MatRef::strided(lhs.buffer(), k, 1, if d.a_batched { m * k } else { 0 }),
            MatRef::strided(rhs.buffer(), n, 1, if d.b_batched { k * n } else { 0 }),
            &mut out,
        )?;
        Ok(CudaTensor::new(out, d.out_shape))
    }

    fn conv2d(
        &self,
        input: &CudaTensor,
        weight: &CudaTensor,
        params: Conv2dParams,
    ) -> Result<CudaTensor> {
        let d = Conv2dDims::forward(&input.shape, &weight.shape, params)?;
        Ok(conv::forward(self, &d, input, weight)?)
    }

    fn conv2d_grad_input(
        &self,
        grad_output: &CudaTensor,
        weight: &CudaTensor,
        input_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<CudaTensor> {
        let d = Conv2dDims::grad_input(&grad_output.shape, &weight.shape, input_hw, params)?;
        Ok(conv::grad_input(self, &d, grad_output, weight)?)
    }

    fn conv2d_grad_weight(
        &self,
        input: &CudaTensor,
        grad_output: &CudaTensor,
        kernel_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<CudaTensor> {
        let d = Conv2dDims::grad_weight(&input.shape, &grad_output.shape, kernel_hw, params)?;
        Ok(conv::grad_weight(self, &d, input, grad_output)?)
    }

    fn sum_axis(&self, tensor: &CudaTensor, axis: usize) -> Result<CudaTensor> {
        let out_shape = shape::reduced("sum_axis", &tensor.shape, axis)?;
        let outer = tensor.shape[..axis].iter().product::<usize>() as u64;
        let extent = tensor.shape[axis] as u64;
        let inner = tensor.shape[axis + 1..].iter().product::<usize>() as u64;
        let total = outer * inner;
        let mut out = self.alloc(total as usize)?;
        if total > 0 {
            let args = [
                In(tensor.buffer()),
                Out(&mut out),
                Val(&outer),
                Val(&extent),
                Val(&inner),
            ];
            // SAFETY: the kernel writes out[i] for i < outer·inner and reads
            // tensor[o·extent·inner + a·inner + j] for o < outer, a < extent, j < inner:
            // inside its outer·extent·inner elements.
            unsafe { self.launch_1d("sum_axis_u64", total, args) }?;
        }
        Ok(CudaTensor::new(out, out_shape))
    }

    fn pool_window_sum(&self, input: &CudaTensor, params: Pool2dParams) -> Result<CudaTensor> {
        let d = Pool2dDims::new("pool_window_sum", &input.shape, params)?;
        let total = (d.n * d.c * d.oh * d.ow) as u64;
        let mut out = self.alloc(total as usize)?;
        if total > 0 {
            let dims = pool_dims(&d);
            let args = [In(input.buffer()), Out(&mut out), Val(&dims)];
            // SAFETY: the kernel writes out[i] for i < planes·oh·ow and reads the input
            // only at in-range (plane, iy, ix).
            unsafe { self.launch_1d("pool_window_sum_u64", total, args) }?;
        }
        Ok(CudaTensor::new(out, d.output_shape()))
    }

    fn pool_unfold(
        &self,
        input: &CudaTensor,
        params: Pool2dParams,
        pad_value: u64,
    ) -> Result<CudaTensor> {
        let d = Pool2dDims::new("pool_unfold", &input.shape, params)?;
        let total = (params.window_len() * d.n * d.c * d.oh * d.ow) as u64;
        let mut out = self.alloc(total as usize)?;
        if total > 0 {
            let dims = pool_dims(&d);
            let args = [
                In(input.buffer()),
                Out(&mut out),
                Val(&dims),
                Val(&pad_value),
            ];
            // SAFETY: the kernel writes out[i] for i < kh·kw·planes·oh·ow and reads the
            // input only at in-range (plane, iy, ix).
            unsafe { self.launch_1d("pool_unfold_u64", total, args) }?;
        }
        Ok(CudaTensor::new(out, d.windows_shape()))
    }

    fn pool_fold(
        &self,
        windows: &CudaTensor,
        params: Pool2dParams,
        input_shape: &[usize],
    ) -> Result<CudaTensor> {
        let d = Pool2dDims::new("pool_fold", input_shape, params)?;
        d.check_windows("pool_fold", &windows.shape)?;
        let total = (d.n * d.c * d.h * d.w) as u64;
        let mut out = self.alloc(total as usize)?;
        if total > 0 {
            let dims = pool_dims(&d);
            let args = [In(windows.buffer()), Out(&mut out), Val(&dims)];
            // SAFETY: the kernel writes out[i] for i < planes·h·w and reads windows at
            // (e < kh·kw, plane, oy < oh, ox < ow): inside its checked windows shape.
            unsafe { self.launch_1d("pool_fold_u64", total, args) }?;
        }
        Ok(CudaTensor::new(out, d.input_shape()))
    }

    fn fill_chacha12(
        &self,
        shape: &[usize],
        key: &[u8; 32],
        stream: u64,
        position: u64,
    ) -> Result<CudaTensor> {
        let n = shape::numel("fill_chacha12", shape)? as u64;
        let mut out = self.alloc(n as usize)?;
        if n > 0 {
            let key = ChachaKey {
                words: prg::key_words(key),
            };
            let blocks = ((position & 7) + n).div_ceil(8);
            let args = [
                Out(&mut out),
                Val(&n),
                Val(&position),
                Val(&stream),
                Val(&key),
            ];
            // SAFETY: the kernel writes out[i] only for i < n, the allocation.
            unsafe { self.launch_1d("chacha12_fill_u64", blocks, args) }?;
        }
        Ok(CudaTensor::new(out, shape.to_vec()))
    }
}
