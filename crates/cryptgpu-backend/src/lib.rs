//! The `GpuBackend` trait: tensors of ring elements (`u64`, arithmetic mod 2^64) that live
//! on a device, and every op the secret-sharing protocols need, so that each protocol is
//! written once, generic over `B: GpuBackend`, and runs on the CPU, CUDA or WGSL backends.
//!
//! # Contract
//! - A tensor is dense, row-major, and immutable: every op returns a new tensor and leaves
//!   its inputs as they were. Cloning a tensor handle is cheap and shares the buffer.
//! - Every op is defined by the scalar reference of the conformance suite (module
//!   `conformance`, behind the feature of that name), and every backend matches it **bit
//!   for bit**.
//! - Arguments are checked before any device work with the helpers of [`shape`], so every
//!   backend refuses the same inputs with the same [`BackendError`].
//! - Data leaves the device only through [`GpuBackend::download`]: protocols call it to
//!   send a message or to reveal a result, never to compute.
//! - Ops may run asynchronously on the device; [`GpuBackend::download`] and
//!   [`GpuBackend::sync`] wait for the work before them.
//! - Every backend counts its work for the calling thread ([`counters`]): launches,
//!   transfers, syncs and allocations, read with [`counters::thread_counts`].
//! - Every backend charges every tensor buffer it makes to the calling thread's party in
//!   the device-memory ledger ([`memory`]) before allocating it, and refuses one past the
//!   party's limit with [`BackendError::OutOfDeviceMemory`].

#![forbid(unsafe_code)]

pub mod counters;
mod error;
pub mod fused;
pub mod memory;
mod params;
pub mod prg;
pub mod shape;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use counters::DeviceCounts;
pub use error::{BackendError, Result};
pub use fused::{Fused, FusedStep, Operand};
pub use params::{BinaryOp, Conv2dParams, Pool2dParams, ShiftOp, UnaryOp};

use std::fmt::Debug;
use std::ops::Range;

/// The checks of [`GpuBackend::fused`] every backend runs first: the program against the
/// number of inputs, and the inputs' shapes against each other. Returns the shape.
///
/// # Errors
/// [`BackendError::InvalidArgument`] for a bad program, [`BackendError::ShapeMismatch`]
/// (through [`shape::check_same`]) for inputs of different shapes.
pub fn fused_shape<T: DeviceTensor>(program: &Fused, inputs: &[&T]) -> Result<Vec<usize>> {
    program.check("fused", inputs.len())?;
    let first = inputs[0].shape();
    for input in &inputs[1..] {
        shape::check_same("fused", first, input.shape())?;
    }
    Ok(first.to_vec())
}

/// [`GpuBackend::fused`] as one op per step (the trait's default, and a backend's fallback
/// where its one-pass kernel cannot run), for a program and inputs `fused_shape` checked,
/// of shape `shape`.
///
/// # Errors
/// What the steps' ops return.
pub fn fused_step_by_step<B: GpuBackend>(
    backend: &B,
    program: &Fused,
    inputs: &[&B::Tensor],
    shape: &[usize],
) -> Result<B::Tensor> {
    let mut values: Vec<B::Tensor> = Vec::with_capacity(program.steps().len());
    for step in program.steps() {
        let read = |operand: Operand| -> &B::Tensor {
            match operand {
                Operand::Input(i) => inputs[usize::from(i)],
                Operand::Step(s) => &values[usize::from(s)],
            }
        };
        let value = match *step {
            FusedStep::Binary(op, a, b) => backend.binary(op, read(a), read(b))?,
            FusedStep::Scalar(op, a, scalar) => backend.binary_scalar(op, read(a), scalar)?,
            FusedStep::Unary(op, a) => backend.unary(op, read(a))?,
            FusedStep::Shift(op, a, bits) => backend.shift(op, read(a), bits)?,
        };
        values.push(value);
    }
    let last = values.pop().expect("a checked program has a step");
    backend.reshape(&last, shape)
}

/// A handle to a tensor of ring elements on a backend's device.
pub trait DeviceTensor: Clone + Debug + Send + Sync + 'static {
    /// The tensor's shape; `[]` for a scalar.
    fn shape(&self) -> &[usize];

    /// Number of elements.
    fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// Whether the tensor has no elements.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A compute device for ring tensors: the one interface every protocol is written against.
///
/// The handle is cheap to clone and may be shared between threads (each party of an
/// in-process run holds one).
pub trait GpuBackend: Clone + Debug + Send + Sync + 'static {
    /// This backend's tensor handle.
    type Tensor: DeviceTensor;

    /// Short lowercase name: `cpu`, `cuda`, `wgpu`. Bench ids start with it.
    fn name(&self) -> &'static str;

    // ---- memory -------------------------------------------------------------------------

    /// Copies host data (row-major) into a new tensor of `shape`.
    fn upload(&self, data: &[u64], shape: &[usize]) -> Result<Self::Tensor>;

    /// Copies a tensor back to the host (row-major), after the work that produces it.
    fn download(&self, tensor: &Self::Tensor) -> Result<Vec<u64>>;

    /// [`GpuBackend::upload`] of data the caller gives away: a backend whose tensors live
    /// in host memory keeps the vector instead of copying it.
    fn upload_vec(&self, data: Vec<u64>, shape: &[usize]) -> Result<Self::Tensor> {
        self.upload(&data, shape)
    }

    /// [`GpuBackend::download`] of a tensor the caller gives away: a backend whose tensors
    /// live in host memory hands over the buffer without a copy when no clone shares it.
    fn download_vec(&self, tensor: Self::Tensor) -> Result<Vec<u64>> {
        self.download(&tensor)
    }

    /// A tensor of `shape` with every element `value`.
    fn full(&self, shape: &[usize], value: u64) -> Result<Self::Tensor>;

    /// A tensor of `shape` filled with zeros.
    fn zeros(&self, shape: &[usize]) -> Result<Self::Tensor> {
        self.full(shape, 0)
    }

    /// Waits until all work queued so far has finished (benchmarks time finished work).
    fn sync(&self) -> Result<()>;

    // ---- layout -------------------------------------------------------------------------

    /// The same elements in a new shape with as many elements.
    fn reshape(&self, tensor: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// Reorders axes: output axis `i` is input axis `axes[i]` (NumPy's `transpose(axes)`).
    fn permute(&self, tensor: &Self::Tensor, axes: &[usize]) -> Result<Self::Tensor>;

    /// Swaps two axes.
    fn transpose(&self, tensor: &Self::Tensor, axis0: usize, axis1: usize) -> Result<Self::Tensor> {
        let rank = tensor.shape().len();
        shape::check_axis("transpose", tensor.shape(), axis0.max(axis1))?;
        let mut axes: Vec<usize> = (0..rank).collect();
        axes.swap(axis0, axis1);
        self.permute(tensor, &axes)
    }

    /// The elements whose index along `axis` lies in `range`.
    fn slice(
        &self,
        tensor: &Self::Tensor,
        axis: usize,
        range: Range<usize>,
    ) -> Result<Self::Tensor>;

    /// Joins tensors along `axis`; every other extent must agree.
    fn concat(&self, tensors: &[&Self::Tensor], axis: usize) -> Result<Self::Tensor>;

    /// Rows of a tensor picked by index: the result's row `i` (a slice along axis 0) is
    /// row `rows[i]` of `tensor`, or zeros for `None`; its shape is `tensor`'s with axis 0
    /// of extent `rows.len()`. Rows may repeat. One pass where a backend overrides it (a
    /// carry tree's level picks its operands this way); the default composes slices,
    /// zeros and one concatenation.
    fn select_rows(&self, tensor: &Self::Tensor, rows: &[Option<usize>]) -> Result<Self::Tensor> {
        let out_shape = shape::selected_rows("select_rows", tensor.shape(), rows)?;
        let mut row_shape = out_shape.clone();
        row_shape[0] = 1;
        let parts = rows
            .iter()
            .map(|row| match row {
                Some(r) => self.slice(tensor, 0, *r..*r + 1),
                None => self.zeros(&row_shape),
            })
            .collect::<Result<Vec<_>>>()?;
        if parts.is_empty() {
            return self.zeros(&out_shape);
        }
        self.concat(&parts.iter().collect::<Vec<_>>(), 0)
    }

    /// Repeats a tensor to a larger shape by NumPy's broadcasting rules.
    fn broadcast_to(&self, tensor: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    // ---- elementwise --------------------------------------------------------------------

    /// `op(lhs[i], rhs[i])` for every element; the shapes must be equal.
    fn binary(&self, op: BinaryOp, lhs: &Self::Tensor, rhs: &Self::Tensor) -> Result<Self::Tensor>;

    /// `op(tensor[i], scalar)` for every element: the scalar is a public value.
    fn binary_scalar(
        &self,
        op: BinaryOp,
        tensor: &Self::Tensor,
        scalar: u64,
    ) -> Result<Self::Tensor>;

    /// `op(tensor[i])` for every element.
    fn unary(&self, op: UnaryOp, tensor: &Self::Tensor) -> Result<Self::Tensor>;

    /// Shifts every element by `bits` (below 64).
    fn shift(&self, op: ShiftOp, tensor: &Self::Tensor, bits: u32) -> Result<Self::Tensor>;

    /// `program` on every element of `inputs` (1 to [`fused::FUSED_MAX_INPUTS`] tensors of
    /// one shape): its last step's value, in a tensor of that shape. One pass where a
    /// backend overrides it; the default runs each step as its own op.
    fn fused(&self, program: &Fused, inputs: &[&Self::Tensor]) -> Result<Self::Tensor> {
        let shape = fused_shape(program, inputs)?;
        fused_step_by_step(self, program, inputs, &shape)
    }

    /// Bit `bit` (0 = least significant) of every element, as 0 or 1.
    fn extract_bit(&self, tensor: &Self::Tensor, bit: u32) -> Result<Self::Tensor>;

    /// Packs the lowest bit of every element, in row-major order, into 64-bit words: bit
    /// `j` of word `w` is element `64·w + j`. The result has shape `[ceil(len / 64)]` and
    /// its unused high bits are zero. Binary shares travel in this form.
    fn pack_bits(&self, tensor: &Self::Tensor) -> Result<Self::Tensor>;

    /// The inverse of [`GpuBackend::pack_bits`]: a tensor of `shape` whose elements are the
    /// packed bits (0 or 1). `packed` must hold exactly `ceil(numel(shape) / 64)` words.
    fn unpack_bits(&self, packed: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;

    /// The 64 bit planes of a tensor of n elements (bit slicing, for binary circuits on
    /// arithmetic values): row j holds bit j of every element, packed as
    /// [`GpuBackend::pack_bits`] packs, so the result is `[64, ceil(n / 64)]`. The default
    /// composes 64 [`GpuBackend::extract_bit`] and [`GpuBackend::pack_bits`] passes; a
    /// backend may fuse them (the CPU backend transposes 64×64 bit blocks).
    fn bit_planes(&self, tensor: &Self::Tensor) -> Result<Self::Tensor> {
        let words = shape::packed_words(tensor.len());
        let planes = (0..64)
            .map(|j| self.reshape(&self.pack_bits(&self.extract_bit(tensor, j)?)?, &[1, words]))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Self::Tensor> = planes.iter().collect();
        self.concat(&refs, 0)
    }

    // ---- linear algebra -----------------------------------------------------------------

    /// Batched matrix product mod 2^64; see [`shape::MatmulDims`] for the shapes.
    fn matmul(&self, lhs: &Self::Tensor, rhs: &Self::Tensor) -> Result<Self::Tensor>;

    /// 2-d convolution (cross-correlation, as in PyTorch) of an NCHW input with OIHW
    /// weights, mod 2^64.
    fn conv2d(
        &self,
        input: &Self::Tensor,
        weight: &Self::Tensor,
        params: Conv2dParams,
    ) -> Result<Self::Tensor>;

    /// The gradient of [`GpuBackend::conv2d`] with respect to its input: the adjoint
    /// (transposed convolution) of the output gradient, of shape `[n, c, input_hw..]`.
    fn conv2d_grad_input(
        &self,
        grad_output: &Self::Tensor,
        weight: &Self::Tensor,
        input_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<Self::Tensor>;

    /// The gradient of [`GpuBackend::conv2d`] with respect to its weight, of shape `[o, c /
    /// groups, kernel_hw..]`, summed over the batch.
    fn conv2d_grad_weight(
        &self,
        input: &Self::Tensor,
        grad_output: &Self::Tensor,
        kernel_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<Self::Tensor>;

    // ---- reductions and pooling ---------------------------------------------------------

    /// Sums over `axis`, which is removed from the shape.
    fn sum_axis(&self, tensor: &Self::Tensor, axis: usize) -> Result<Self::Tensor>;

    /// The sum of every pooling window of an NCHW tensor (padding counts as zero): average
    /// pooling before its public division.
    fn pool_window_sum(&self, input: &Self::Tensor, params: Pool2dParams) -> Result<Self::Tensor>;

    /// Gathers the pooling windows of an NCHW tensor: the result is `[kh·kw, n, c, oh, ow]`,
    /// where slice `i` along axis 0 holds window element `i` (row-major within the window)
    /// of every window. Padding positions read `pad_value`. Max-pooling compares these
    /// slices in a tournament.
    fn pool_unfold(
        &self,
        input: &Self::Tensor,
        params: Pool2dParams,
        pad_value: u64,
    ) -> Result<Self::Tensor>;

    /// The adjoint of [`GpuBackend::pool_unfold`]: adds every window element of `windows`
    /// (`[kh·kw, n, c, oh, ow]`) back onto its input position of an `[n, c, h, w]` tensor;
    /// padding positions are dropped. Max-pooling's backward pass.
    fn pool_fold(
        &self,
        windows: &Self::Tensor,
        params: Pool2dParams,
        input_shape: &[usize],
    ) -> Result<Self::Tensor>;

    // ---- randomness ---------------------------------------------------------------------

    /// A tensor of `shape` filled from the ChaCha12 stream `stream` under `key`, starting at
    /// element position `position` (in 64-bit elements): element `i` (row-major) equals the
    /// `u64` that `rand_chacha::ChaCha12Rng` with that key and stream returns after
    /// `set_word_pos(2 · (position + i))`. See [`prg`].
    fn fill_chacha12(
        &self,
        shape: &[usize],
        key: &[u8; 32],
        stream: u64,
        position: u64,
    ) -> Result<Self::Tensor>;

    // ---- shorthands ---------------------------------------------------------------------

    /// `lhs + rhs`.
    fn add(&self, lhs: &Self::Tensor, rhs: &Self::Tensor) -> Result<Self::Tensor> {
        self.binary(BinaryOp::Add, lhs, rhs)
    }

    /// `lhs - rhs`.
    fn sub(&self, lhs: &Self::Tensor, rhs: &Self::Tensor) -> Result<Self::Tensor> {
        self.binary(BinaryOp::Sub, lhs, rhs)
    }

    /// `lhs · rhs`, elementwise.
    fn mul(&self, lhs: &Self::Tensor, rhs: &Self::Tensor) -> Result<Self::Tensor> {
        self.binary(BinaryOp::Mul, lhs, rhs)
    }

    /// `lhs ⊕ rhs`.
    fn xor(&self, lhs: &Self::Tensor, rhs: &Self::Tensor) -> Result<Self::Tensor> {
        self.binary(BinaryOp::Xor, lhs, rhs)
    }

    /// `lhs ∧ rhs`.
    fn and(&self, lhs: &Self::Tensor, rhs: &Self::Tensor) -> Result<Self::Tensor> {
        self.binary(BinaryOp::And, lhs, rhs)
    }

    /// `-tensor`.
    fn neg(&self, tensor: &Self::Tensor) -> Result<Self::Tensor> {
        self.unary(UnaryOp::Neg, tensor)
    }

    /// `tensor · scalar` for a public scalar.
    fn mul_scalar(&self, tensor: &Self::Tensor, scalar: u64) -> Result<Self::Tensor> {
        self.binary_scalar(BinaryOp::Mul, tensor, scalar)
    }

    /// `tensor + scalar` for a public scalar.
    fn add_scalar(&self, tensor: &Self::Tensor, scalar: u64) -> Result<Self::Tensor> {
        self.binary_scalar(BinaryOp::Add, tensor, scalar)
    }
}
