//! The WGSL backend: every [`GpuBackend`] op as a compute shader, run through wgpu on any
//! Vulkan, Metal or DX12 adapter (in CI, Mesa's lavapipe software Vulkan driver).
//!
//! - Ring elements are 64-bit. Where the adapter has `SHADER_INT64` the kernels use WGSL's
//!   `u64`; elsewhere (WebGPU, many mobile and integrated GPUs) they use two 32-bit limbs.
//!   Both paths run the same kernel sources over a different prelude ([`RingPath`]) and
//!   both pass the conformance suite; [`Int64Mode`] picks one.
//! - Pipelines are built once per backend and cached; the handle is cheap to clone and
//!   may be used from several threads at once.
//! - No binding exceeds the adapter's `max_storage_buffer_binding_size`: every op splits
//!   its work into chunks and passes over windows of its tensors (see `dispatch`).
//! - Ops are submitted to the device queue and run asynchronously;
//!   [`GpuBackend::download`] and [`GpuBackend::sync`] wait for them.

#![forbid(unsafe_code)]

mod device;
mod dispatch;
mod error;
mod kernels;
pub mod shaders;

pub use device::{AdapterSummary, Int64Mode, WgpuOptions};
pub use error::WgpuError;
pub use shaders::RingPath;

use cryptgpu_backend::counters;
use cryptgpu_backend::memory::{self, MemoryCharge};
use cryptgpu_backend::shape::{self, Conv2dDims, MatmulDims, Pool2dDims};
use cryptgpu_backend::{
    BinaryOp, Conv2dParams, DeviceTensor, Fused, GpuBackend, Pool2dParams, Result, ShiftOp, UnaryOp,
};
use device::Context;
use std::ops::Range;
use std::sync::Arc;

/// The wgpu backend: one device, its queue and its pipeline cache, shared by every clone.
#[derive(Clone, Debug)]
pub struct WgpuBackend {
    ctx: Arc<Context>,
}

/// A tensor in a device buffer. Clones share the buffer; ops never write to an existing
/// tensor.
#[derive(Clone, Debug)]
pub struct WgpuTensor {
    buffer: wgpu::Buffer,
    /// The buffer's bytes in the device-memory ledger, given back when the last tensor on
    /// the buffer goes (as the buffer itself is).
    charge: Arc<MemoryCharge>,
    shape: Vec<usize>,
}

impl WgpuTensor {
    /// The same buffer read as `shape` (a view of all of it, in order: no pass).
    pub(crate) fn whole_as(&self, shape: Vec<usize>) -> WgpuTensor {
        WgpuTensor {
            buffer: self.buffer.clone(),
            charge: self.charge.clone(),
            shape,
        }
    }
}

impl DeviceTensor for WgpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// Elements read back per staging copy in [`GpuBackend::download`] (32 MiB).
const DOWNLOAD_PIECE: usize = 1 << 22;

impl WgpuBackend {
    /// Opens the preferred adapter (hardware before software) with native `u64` where it
    /// has `SHADER_INT64`. [`cryptgpu_backend::BackendError::NoDevice`] if there is none.
    pub fn new() -> Result<Self> {
        Self::with_options(WgpuOptions::default())
    }

    /// Opens an adapter as `options` say.
    pub fn with_options(options: WgpuOptions) -> Result<Self> {
        Ok(Self {
            ctx: Arc::new(Context::open(&options)?),
        })
    }

    /// The adapter this backend runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.ctx.adapter
    }

    /// Which 64-bit arithmetic the kernels use.
    pub fn ring_path(&self) -> RingPath {
        self.ctx.path
    }

    /// Elements one storage binding holds: larger tensors are processed in chunks.
    pub fn binding_limit(&self) -> usize {
        self.ctx.binding_limit
    }

    fn ctx(&self) -> &Context {
        &self.ctx
    }
}

impl Context {
    /// A new, uninitialised output tensor of `shape`, charged to this thread's party in
    /// the device-memory ledger before wgpu is asked for it.
    pub(crate) fn output(&self, op: &'static str, shape: &[usize]) -> Result<WgpuTensor> {
        let len = shape::numel(op, shape)?;
        self.check_size(op, len)?;
        let charge = memory::charge((len.max(1) * 8) as u64)?;
        counters::record_allocation((len.max(1) * 8) as u64);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size: (len.max(1) * 8) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(WgpuTensor {
            buffer,
            charge: Arc::new(charge),
            shape: shape.to_vec(),
        })
    }

    fn check_size(&self, op: &'static str, len: usize) -> Result<(), WgpuError> {
        if len > self.buffer_limit {
            return Err(WgpuError::TooLarge {
                op,
                why: format!(
                    "a tensor of {len} elements exceeds the largest buffer of this adapter \
                     ({} elements)",
                    self.buffer_limit
                ),
            });
        }
        Ok(())
    }
}

impl GpuBackend for WgpuBackend {
    type Tensor = WgpuTensor;

    fn name(&self) -> &'static str {
        "wgpu"
    }

    fn upload(&self, data: &[u64], shape: &[usize]) -> Result<WgpuTensor> {
        shape::check_len("upload", shape, data.len())?;
        let ctx = self.ctx();
        ctx.check_size("upload", data.len())?;
        let charge = Arc::new(memory::charge((data.len().max(1) * 8) as u64)?);
        counters::record_upload(8 * data.len() as u64);
        counters::record_allocation((data.len().max(1) * 8) as u64);
        Ok(ctx.scoped("upload", || {
            let contents: &[u8] = if data.is_empty() {
                &[0; 8]
            } else {
                bytemuck::cast_slice(data)
            };
            let buffer = wgpu::util::DeviceExt::create_buffer_init(
                &ctx.device,
                &wgpu::util::BufferInitDescriptor {
                    label: Some("upload"),
                    contents,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                },
            );
            Ok(WgpuTensor {
                buffer,
                charge,
                shape: shape.to_vec(),
            })
        })?)
    }

    fn download(&self, tensor: &WgpuTensor) -> Result<Vec<u64>> {
        const OP: &str = "download";
        let ctx = self.ctx();
        let len = tensor.len();
        let mut out = Vec::with_capacity(len);
        // The waits are counted by `Context::wait`, one per piece.
        counters::record_download(8 * len as u64, false);
        if len == 0 {
            return Ok(out);
        }
        // The staging buffer is device memory too, for as long as the download lasts.
        let _staging_charge = memory::charge((len.min(DOWNLOAD_PIECE) * 8) as u64)?;
        counters::record_allocation((len.min(DOWNLOAD_PIECE) * 8) as u64);
        let staging = ctx.scoped(OP, || {
            Ok(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(OP),
                size: (len.min(DOWNLOAD_PIECE) * 8) as u64,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }))
        })?;
        for start in (0..len).step_by(DOWNLOAD_PIECE) {
            let bytes = ((len - start).min(DOWNLOAD_PIECE) * 8) as u64;
            ctx.scoped(OP, || {
                let mut encoder = ctx
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(OP) });
                encoder.copy_buffer_to_buffer(
                    &tensor.buffer,
                    (start * 8) as u64,
                    &staging,
                    0,
                    bytes,
                );
                ctx.queue.submit([encoder.finish()]);
                Ok(())
            })?;
            let slice = staging.slice(..bytes);
            let (sender, receiver) = std::sync::mpsc::channel();
            slice.map_async(wgpu::MapMode::Read, move |result| {
                // The receiver waits below; if it is gone there is nobody left to tell.
                let _ = sender.send(result);
            });
            ctx.wait(OP)?;
            receiver
                .recv()
                .map_err(|_| WgpuError::Map {
                    op: OP,
                    message: "the map callback was dropped".into(),
                })?
                .map_err(|e| WgpuError::Map {
                    op: OP,
                    message: e.to_string(),
                })?;
            {
                let view = slice.get_mapped_range().map_err(|e| WgpuError::Map {
                    op: OP,
                    message: e.to_string(),
                })?;
                out.extend(bytemuck::pod_collect_to_vec::<u8, u64>(&view));
            }
            staging.unmap();
        }
        Ok(out)
    }

    fn full(&self, shape: &[usize], value: u64) -> Result<WgpuTensor> {
        kernels::fill(self.ctx(), shape, value)
    }

    fn sync(&self) -> Result<()> {
        Ok(self.ctx().wait("sync")?)
    }

    fn reshape(&self, tensor: &WgpuTensor, shape: &[usize]) -> Result<WgpuTensor> {
        shape::check_len("reshape", shape, tensor.len())?;
        Ok(tensor.whole_as(shape.to_vec()))
    }

    fn permute(&self, tensor: &WgpuTensor, axes: &[usize]) -> Result<WgpuTensor> {
        let v = shape::permute_view("permute", &tensor.shape, axes)?;
        kernels::gather_new(
            self.ctx(),
            "permute",
            tensor,
            &v.shape,
            &v.strides,
            v.offset,
        )
    }

    fn slice(&self, tensor: &WgpuTensor, axis: usize, range: Range<usize>) -> Result<WgpuTensor> {
        let v = shape::slice_view("slice", &tensor.shape, axis, &range)?;
        kernels::gather_new(self.ctx(), "slice", tensor, &v.shape, &v.strides, v.offset)
    }

    fn concat(&self, tensors: &[&WgpuTensor], axis: usize) -> Result<WgpuTensor> {
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
        let out_shape = shape::concatenated("concat", &shapes, axis)?;
        kernels::concat(self.ctx(), tensors, axis, &out_shape)
    }

    fn select_rows(&self, tensor: &WgpuTensor, rows: &[Option<usize>]) -> Result<WgpuTensor> {
        let out_shape = shape::selected_rows("select_rows", &tensor.shape, rows)?;
        kernels::select_rows(self.ctx(), tensor, rows, &out_shape)
    }

    fn broadcast_to(&self, tensor: &WgpuTensor, shape: &[usize]) -> Result<WgpuTensor> {
        let v = shape::broadcast_view("broadcast_to", &tensor.shape, shape)?;
        kernels::gather_new(
            self.ctx(),
            "broadcast_to",
            tensor,
            &v.shape,
            &v.strides,
            v.offset,
        )
    }

    fn binary(&self, op: BinaryOp, lhs: &WgpuTensor, rhs: &WgpuTensor) -> Result<WgpuTensor> {
        shape::check_same("binary", &lhs.shape, &rhs.shape)?;
        kernels::elementwise(
            self.ctx(),
            "binary",
            kernels::binary_code(op),
            lhs,
            Some(rhs),
            0,
            0,
        )
    }

    fn binary_scalar(&self, op: BinaryOp, tensor: &WgpuTensor, scalar: u64) -> Result<WgpuTensor> {
        kernels::elementwise(
            self.ctx(),
            "binary_scalar",
            kernels::binary_code(op),
            tensor,
            None,
            scalar,
            0,
        )
    }

    fn unary(&self, op: UnaryOp, tensor: &WgpuTensor) -> Result<WgpuTensor> {
        kernels::elementwise(
            self.ctx(),
            "unary",
            kernels::unary_code(op),
            tensor,
            None,
            0,
            0,
        )
    }

    fn shift(&self, op: ShiftOp, tensor: &WgpuTensor, bits: u32) -> Result<WgpuTensor> {
        shape::check_shift("shift", bits)?;
        kernels::elementwise(
            self.ctx(),
            "shift",
            kernels::shift_code(op),
            tensor,
            None,
            0,
            bits,
        )
    }

    fn fused(&self, program: &Fused, inputs: &[&WgpuTensor]) -> Result<WgpuTensor> {
        let shape = cryptgpu_backend::fused_shape(program, inputs)?;
        if self.ctx().fused_layout.is_none() {
            // An adapter with fewer than 7 storage buffers per shader stage cannot bind
            // the fused kernel: one op per step, as the trait's default does.
            return cryptgpu_backend::fused_step_by_step(self, program, inputs, &shape);
        }
        kernels::fused(self.ctx(), program, inputs, &shape)
    }

    fn extract_bit(&self, tensor: &WgpuTensor, bit: u32) -> Result<WgpuTensor> {
        shape::check_bit("extract_bit", bit)?;
        kernels::elementwise(
            self.ctx(),
            "extract_bit",
            kernels::OP_BIT,
            tensor,
            None,
            0,
            bit,
        )
    }

    fn pack_bits(&self, tensor: &WgpuTensor) -> Result<WgpuTensor> {
        kernels::pack_bits(self.ctx(), tensor)
    }

    fn bit_planes(&self, tensor: &WgpuTensor) -> Result<WgpuTensor> {
        // One pass slices 64 elements at a time, then one gather transposes to [64, words].
        let word_major = kernels::bit_planes_word_major(self.ctx(), tensor)?;
        self.permute(&word_major, &[1, 0])
    }

    fn unpack_bits(&self, packed: &WgpuTensor, shape: &[usize]) -> Result<WgpuTensor> {
        const OP: &str = "unpack_bits";
        let n = shape::numel(OP, shape)?;
        shape::check_len(OP, &[shape::packed_words(n)], packed.len())?;
        kernels::unpack_bits(self.ctx(), packed, shape)
    }

    fn matmul(&self, lhs: &WgpuTensor, rhs: &WgpuTensor) -> Result<WgpuTensor> {
        let dims = MatmulDims::new(&lhs.shape, &rhs.shape)?;
        kernels::matmul(self.ctx(), &dims, lhs, rhs)
    }

    fn conv2d(
        &self,
        input: &WgpuTensor,
        weight: &WgpuTensor,
        params: Conv2dParams,
    ) -> Result<WgpuTensor> {
        let dims = Conv2dDims::forward(&input.shape, &weight.shape, params)?;
        kernels::conv2d(self.ctx(), &dims, input, weight)
    }

    fn conv2d_grad_input(
        &self,
        grad_output: &WgpuTensor,
        weight: &WgpuTensor,
        input_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<WgpuTensor> {
        let dims = Conv2dDims::grad_input(&grad_output.shape, &weight.shape, input_hw, params)?;
        kernels::conv2d_grad_input(self.ctx(), &dims, grad_output, weight)
    }

    fn conv2d_grad_weight(
        &self,
        input: &WgpuTensor,
        grad_output: &WgpuTensor,
        kernel_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<WgpuTensor> {
        let dims = Conv2dDims::grad_weight(&input.shape, &grad_output.shape, kernel_hw, params)?;
        kernels::conv2d_grad_weight(self.ctx(), &dims, input, grad_output)
    }

    fn sum_axis(&self, tensor: &WgpuTensor, axis: usize) -> Result<WgpuTensor> {
        let out_shape = shape::reduced("sum_axis", &tensor.shape, axis)?;
        kernels::sum_axis(self.ctx(), tensor, axis, &out_shape)
    }

    fn pool_window_sum(&self, input: &WgpuTensor, params: Pool2dParams) -> Result<WgpuTensor> {
        let dims = Pool2dDims::new("pool_window_sum", &input.shape, params)?;
        kernels::pool_window_sum(self.ctx(), &dims, input)
    }

    fn pool_unfold(
        &self,
        input: &WgpuTensor,
        params: Pool2dParams,
        pad_value: u64,
    ) -> Result<WgpuTensor> {
        let dims = Pool2dDims::new("pool_unfold", &input.shape, params)?;
        kernels::pool_unfold(self.ctx(), &dims, input, pad_value)
    }

    fn pool_fold(
        &self,
        windows: &WgpuTensor,
        params: Pool2dParams,
        input_shape: &[usize],
    ) -> Result<WgpuTensor> {
        const OP: &str = "pool_fold";
        let dims = Pool2dDims::new(OP, input_shape, params)?;
        dims.check_windows(OP, &windows.shape)?;
        kernels::pool_fold(self.ctx(), &dims, windows)
    }

    fn fill_chacha12(
        &self,
        shape: &[usize],
        key: &[u8; 32],
        stream: u64,
        position: u64,
    ) -> Result<WgpuTensor> {
        kernels::fill_chacha12(self.ctx(), shape, key, stream, position)
    }
}
