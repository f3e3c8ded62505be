//! Ring GEMM mod 2^64 on the device, by one of three methods ([`GemmMethod`]); matmul and
//! all three convolutions go through [`gemm`]. The maths of the two cuBLAS methods, and the
//! proofs that they are exact, are in [`crate::limbs`].

use crate::device::Arg::{In, Out, Val};
use crate::device::Device;
use crate::kernels::{GemmDims, RecombineDims, SplitDims};
use crate::limbs::{ChunkPlan, PAD, Scheme};
use crate::{CudaBackend, CudaError};
use cudarc::cublas::CudaBlas;
use cudarc::cublas::result as blas;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use std::ffi::c_void;
use std::sync::Arc;

/// How the CUDA backend multiplies ring matrices. All three give the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GemmMethod {
    /// CryptGPU's method: 16-bit blocks in float64, the 10 block products by cuBLAS DGEMM
    /// (grouped into 4 GEMMs), recombined with shifts.
    Fp64Blocks,
    /// Signed 8-bit limbs, the 36 limb products by cuBLAS int8 GEMMs with int32
    /// accumulation on the tensor cores (grouped into 8 GEMMs), recombined mod 2^64.
    Int8TensorCore,
    /// A shared-memory tiled kernel on u64 with wrapping multiply-add.
    TiledInt,
}

impl GemmMethod {
    /// Every method.
    pub const ALL: [GemmMethod; 3] = [Self::Fp64Blocks, Self::Int8TensorCore, Self::TiledInt];

    /// Short name, as in bench ids and `CRYPTGPU_CUDA_GEMM`: `fp64`, `int8`, `tiled`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fp64Blocks => "fp64",
            Self::Int8TensorCore => "int8",
            Self::TiledInt => "tiled",
        }
    }

    /// The method of a short name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the method needs cuBLAS.
    pub fn uses_cublas(self) -> bool {
        self != Self::TiledInt
    }
}

/// A matrix operand on the device: element `(r, c)` of batch entry `t` is at
/// `off + t·bs + r·rs + c·cs` of `buf`.
pub(crate) struct MatRef<'a> {
    pub(crate) buf: &'a CudaSlice<u64>,
    pub(crate) off: u64,
    pub(crate) rs: u64,
    pub(crate) cs: u64,
    pub(crate) bs: u64,
}

impl<'a> MatRef<'a> {
    /// `buf` from its first element, with row stride `rs`, column stride `cs` and batch
    /// stride `bs` (0: one matrix for every batch entry).
    pub(crate) fn strided(buf: &'a CudaSlice<u64>, rs: usize, cs: usize, bs: usize) -> Self {
        let [rs, cs, bs] = [rs, cs, bs].map(|stride| stride as u64);
        MatRef {
            buf,
            off: 0,
            rs,
            cs,
            bs,
        }
    }
}

/// The sizes of a batched product: `batch` products of `m × k` by `k × n`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmShape {
    pub(crate) batch: usize,
    pub(crate) m: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
}

/// `out[t] = a[t] · b[t]` for every batch entry `t`, `out[t]` dense row-major at `t·m·n`.
///
/// The caller guarantees that every element the `MatRef`s address for `r < m`, `c < k`
/// (resp. `k × n`) and `t < batch` lies inside its buffer, and that `out` holds
/// `batch·m·n` elements.
pub(crate) fn gemm(
    backend: &CudaBackend,
    method: GemmMethod,
    shape: GemmShape,
    a: MatRef<'_>,
    b: MatRef<'_>,
    out: &mut CudaSlice<u64>,
) -> Result<(), CudaError> {
    let GemmShape { batch, m, k, n } = shape;
    if batch * m * n == 0 {
        return Ok(());
    }
    if k == 0 {
        return backend.fill_slice(out, (batch * m * n) as u64, 0);
    }
    match method {
        GemmMethod::TiledInt => tiled(backend, shape, a, b, out),
        GemmMethod::Int8TensorCore => limbs::<Int8>(backend, shape, a, b, out),
        GemmMethod::Fp64Blocks => limbs::<Fp64>(backend, shape, a, b, out),
    }
}

fn too_large(why: String) -> CudaError {
    CudaError::TooLarge { op: "matmul", why }
}

/// The tiled kernel: grid (ceil(n / 64), ceil(m / 64), batch entries ≤ 65535 a launch).
fn tiled(
    backend: &CudaBackend,
    GemmShape { batch, m, k, n }: GemmShape,
    a: MatRef<'_>,
    b: MatRef<'_>,
    out: &mut CudaSlice<u64>,
) -> Result<(), CudaError> {
    const TILE: usize = 64;
    const MAX_GRID_YZ: usize = 65535;
    let (grid_x, grid_y) = (n.div_ceil(TILE), m.div_ceil(TILE));
    if grid_y > MAX_GRID_YZ || grid_x > i32::MAX as usize {
        return Err(too_large(format!(
            "a {m} × {n} product needs more thread blocks than a grid holds"
        )));
    }
    let mut first = 0;
    while first < batch {
        let count = (batch - first).min(MAX_GRID_YZ);
        let t = first as u64;
        let dims = GemmDims {
            m: m as u64,
            n: n as u64,
            k: k as u64,
            a_off: a.off + t * a.bs,
            a_rs: a.rs,
            a_cs: a.cs,
            a_bs: a.bs,
            b_off: b.off + t * b.bs,
            b_rs: b.rs,
            b_cs: b.cs,
            b_bs: b.bs,
            c_off: t * (m * n) as u64,
            c_rs: n as u64,
            c_bs: (m * n) as u64,
            accumulate: 0,
        };
        let config = LaunchConfig {
            grid_dim: (grid_x as u32, grid_y as u32, count as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let stream = backend.stream()?;
        let args = [In(a.buf), In(b.buf), Out(&mut *out), Val(&dims)];
        // SAFETY: the kernel reads A and B only at (r < m, c < k) and (r < k, c < n) of
        // batch entries first..first+count, inside the buffers by `gemm`'s contract, and
        // writes out[t·m·n + r·n + c] for those, inside out's batch·m·n elements.
        unsafe {
            backend
                .device()
                .launch(&stream, "gemm_tiled_u64", config, args)
        }?;
        first += count;
    }
    Ok(())
}

/// What differs between the two limb methods.
trait LimbKind {
    /// The limb type in device memory.
    type Limb: DeviceRepr;
    /// The GEMM output type.
    type Sum: DeviceRepr;
    const SCHEME: Scheme;
    const SPLIT: &'static str;
    const RECOMBINE: &'static str;

    /// Runs the product `g` on cuBLAS.
    ///
    /// # Safety
    /// The addresses of `g` must point to device memory holding the operands as described
    /// there.
    unsafe fn gemm_tn(handle: &CudaBlas, g: GemmTn) -> Result<(), CudaError>;
}

/// `C = op(A) · B` in cuBLAS's column-major terms with op(A) transposed: `rows × cols`
/// with inner dimension `inner`; `a` and `b` are `inner`-contiguous with leading dimension
/// `ld`; `c` has leading dimension `ldc`. The operands are raw device addresses.
#[derive(Clone, Copy)]
struct GemmTn {
    rows: i32,
    cols: i32,
    inner: i32,
    a: u64,
    b: u64,
    ld: i32,
    c: u64,
    ldc: i32,
}

impl GemmTn {
    /// `C = Aᵀ · A` for a square `n × n` matrix A at `a`, into `c`.
    fn square(n: i32, a: u64, c: u64) -> Self {
        GemmTn {
            rows: n,
            cols: n,
            inner: n,
            a,
            b: a,
            ld: n,
            c,
            ldc: n,
        }
    }
}

struct Int8;
struct Fp64;

impl LimbKind for Int8 {
    type Limb = i8;
    type Sum = i32;
    const SCHEME: Scheme = Scheme::Int8;
    const SPLIT: &'static str = "split_i8";
    const RECOMBINE: &'static str = "recombine_i32";

    unsafe fn gemm_tn(handle: &CudaBlas, g: GemmTn) -> Result<(), CudaError> {
        let (alpha, beta) = (1i32, 0i32);
        // SAFETY: the caller guarantees the operands; alpha and beta are host int32s, as
        // cuBLAS's default (host) pointer mode and CUBLAS_COMPUTE_32I expect.
        unsafe {
            blas::gemm_ex(
                *handle.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                g.rows,
                g.cols,
                g.inner,
                (&alpha as *const i32).cast::<c_void>(),
                g.a as *const c_void,
                cudaDataType::CUDA_R_8I,
                g.ld,
                g.b as *const c_void,
                cudaDataType::CUDA_R_8I,
                g.ld,
                (&beta as *const i32).cast::<c_void>(),
                g.c as *mut c_void,
                cudaDataType::CUDA_R_32I,
                g.ldc,
                cublasComputeType_t::CUBLAS_COMPUTE_32I,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }?;
        Ok(())
    }
}

impl LimbKind for Fp64 {
    type Limb = f64;
    type Sum = f64;
    const SCHEME: Scheme = Scheme::Fp64;
    const SPLIT: &'static str = "split_f64";
    const RECOMBINE: &'static str = "recombine_f64";

    unsafe fn gemm_tn(handle: &CudaBlas, g: GemmTn) -> Result<(), CudaError> {
        let (alpha, beta) = (1f64, 0f64);
        // SAFETY: the caller guarantees the operands; alpha and beta are host doubles.
        unsafe {
            blas::dgemm(
                *handle.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                g.rows,
                g.cols,
                g.inner,
                &alpha,
                g.a as *const f64,
                g.ld,
                g.b as *const f64,
                g.ld,
                &beta,
                g.c as *mut f64,
                g.ldc,
            )
        }?;
        Ok(())
    }
}

/// Launches the split kernel `K::SPLIT` for one chunk of one operand.
fn split<K: LimbKind>(
    device: &Device,
    stream: &CudaStream,
    src: &CudaSlice<u64>,
    dst: &mut CudaSlice<K::Limb>,
    dims: SplitDims,
) -> Result<(), CudaError> {
    let tiles_y = (dims.rows_pad / PAD as u64).min(65535) as u32;
    let config = LaunchConfig {
        grid_dim: ((dims.kcp / PAD as u64) as u32, tiles_y, 1),
        block_dim: (PAD as u32, 8, 1),
        shared_mem_bytes: 0,
    };
    let args = [In(src), Out(dst), Val(&dims)];
    // SAFETY: the kernel reads src only at off + r·rs + (k0 + kk)·cs for r < rows and
    // kk < cols, inside src by `gemm`'s contract, and writes dst[(r·L + slot)·kcp + kk]
    // for r < rows_pad, kk < kcp: inside dst, which holds rows_pad·L·kcp limbs.
    unsafe { device.launch(stream, K::SPLIT, config, args) }
}

/// The limb methods: per batch entry and chunk of the inner dimension, split both operands
/// into limbs, run the L GEMMs C_s (s = 0..L), and recombine into the output (`limbs.rs`).
fn limbs<K: LimbKind>(
    backend: &CudaBackend,
    GemmShape { batch, m, k, n }: GemmShape,
    a: MatRef<'_>,
    b: MatRef<'_>,
    out: &mut CudaSlice<u64>,
) -> Result<(), CudaError> {
    let l_count = K::SCHEME.limbs();
    let plan = ChunkPlan::new(K::SCHEME, k);
    let kcp = plan.padded_len;
    let (m_pad, n_pad) = (m.next_multiple_of(PAD), n.next_multiple_of(PAD));
    let ld = l_count * kcp;
    if m_pad > i32::MAX as usize || n_pad > i32::MAX as usize || ld > i32::MAX as usize {
        return Err(too_large(format!(
            "a {m} × {k} by {k} × {n} product exceeds cuBLAS's 32-bit sizes"
        )));
    }
    let device = backend.device();
    let queue = backend.queue()?;
    let stream = &queue.stream;
    let sizes = [
        m_pad * ld * std::mem::size_of::<K::Limb>(),
        n_pad * ld * std::mem::size_of::<K::Limb>(),
        l_count * m_pad * n_pad * std::mem::size_of::<K::Sum>(),
    ];
    // The three scratch buffers are device memory of this party's while the product runs.
    let workspace = cryptgpu_backend::memory::charge(sizes.iter().sum::<usize>() as u64)
        .map_err(CudaError::OutOfMemory)?;
    let out_of_memory = |e| backend.driver_error(e, &workspace);
    // SAFETY: every element of the three buffers is written by a split kernel or a GEMM
    // before anything reads it (the split kernels write all rows_pad·L·kcp limbs, the
    // GEMMs all L planes of m_pad·n_pad sums, and the recombination reads only those).
    let (mut a_split, mut b_split, mut sums) = unsafe {
        (
            stream.alloc::<K::Limb>(m_pad * ld).map_err(out_of_memory)?,
            stream.alloc::<K::Limb>(n_pad * ld).map_err(out_of_memory)?,
            stream
                .alloc::<K::Sum>(l_count * m_pad * n_pad)
                .map_err(out_of_memory)?,
        )
    };
    for bytes in sizes {
        cryptgpu_backend::counters::record_allocation(bytes as u64);
    }
    let plane = m_pad * n_pad;
    let blas = queue.blas()?;
    let handle = blas.as_ref().expect("Queue::blas creates the handle");
    for t in 0..batch {
        for index in 0..plan.chunks {
            let (k0, cols) = plan.chunk(index, k);
            let once = plan.chunks == 1 && t > 0;
            if !(once && a.bs == 0) {
                let dims = SplitDims {
                    rows: m as u64,
                    cols: cols as u64,
                    k0: k0 as u64,
                    off: a.off + t as u64 * a.bs,
                    rs: a.rs,
                    cs: a.cs,
                    rows_pad: m_pad as u64,
                    kcp: kcp as u64,
                    reversed: 0,
                };
                split::<K>(device, stream, a.buf, &mut a_split, dims)?;
            }
            if !(once && b.bs == 0) {
                // B is split by columns: its "row" c is column c of B.
                let dims = SplitDims {
                    rows: n as u64,
                    cols: cols as u64,
                    k0: k0 as u64,
                    off: b.off + t as u64 * b.bs,
                    rs: b.cs,
                    cs: b.rs,
                    rows_pad: n_pad as u64,
                    kcp: kcp as u64,
                    reversed: 1,
                };
                split::<K>(device, stream, b.buf, &mut b_split, dims)?;
            }
            {
                // cuBLAS runs on the calling thread's current context: make it ours (a
                // clone of this handle may be used from any thread).
                device.ctx.bind_to_thread()?;
                let limb = std::mem::size_of::<K::Limb>() as u64;
                let sum = std::mem::size_of::<K::Sum>() as u64;
                let (a_ptr, _a_guard) = a_split.device_ptr(stream);
                let (b_ptr, _b_guard) = b_split.device_ptr(stream);
                let (s_ptr, _s_guard) = sums.device_ptr_mut(stream);
                for s in 0..l_count {
                    // C_s (column-major n_pad × m_pad, i.e. row-major m_pad × n_pad) =
                    // B-limb suffix (slots L-1-s.., inner (s+1)·kcp)ᵀ · A-limb prefix.
                    let b_first = ((l_count - 1 - s) * kcp) as u64 * limb;
                    let g = GemmTn {
                        rows: n_pad as i32,
                        cols: m_pad as i32,
                        inner: ((s + 1) * kcp) as i32,
                        a: b_ptr + b_first,
                        b: a_ptr,
                        ld: ld as i32,
                        c: s_ptr + (s * plane) as u64 * sum,
                        ldc: n_pad as i32,
                    };
                    // SAFETY: b_split holds n_pad rows of ld limbs and the suffix starting
                    // at slot L-1-s has (s+1)·kcp of them; a_split's rows have ld limbs of
                    // which the GEMM reads the first (s+1)·kcp; plane s of `sums` holds
                    // m_pad·n_pad sums with leading dimension n_pad.
                    unsafe { K::gemm_tn(handle, g) }?;
                }
                cryptgpu_backend::counters::record_launches(l_count as u64);
            }
            let dims = RecombineDims {
                m: m as u64,
                n: n as u64,
                ld: n_pad as u64,
                plane: plane as u64,
                out_off: (t * m * n) as u64,
                out_rs: n as u64,
                accumulate: u64::from(index > 0),
            };
            let config = device.grid_1d((m * n) as u64);
            let args = [In(&sums), Out(&mut *out), Val(&dims)];
            // SAFETY: the kernel reads sums[s·plane + r·n_pad + c] for s < L, r < m ≤ m_pad,
            // c < n ≤ n_pad, and writes out[t·m·n + r·n + c], inside batch·m·n elements.
            unsafe { device.launch(stream, K::RECOMBINE, config, args) }?;
        }
    }
    Ok(())
}

/// A plain cuBLAS GEMM, timed for reference beside the ring GEMMs (benches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReferenceGemm {
    /// `cublasGemmEx`, int8 inputs, int32 outputs and accumulation (tensor cores).
    Int8,
    /// `cublasDgemm`.
    Fp64,
}

impl CudaBackend {
    /// Runs `iters` square `n × n` GEMMs of kind `kind` on this handle's stream, on
    /// operands of ones, and returns the time until they have finished.
    pub fn time_reference_gemm(
        &self,
        kind: ReferenceGemm,
        n: usize,
        iters: u64,
    ) -> Result<std::time::Duration, CudaError> {
        let n_pad = n.next_multiple_of(PAD);
        if n_pad > i32::MAX as usize {
            return Err(too_large(format!("a reference GEMM of size {n}")));
        }
        let queue = self.queue()?;
        let blas = queue.blas()?;
        let handle = blas.as_ref().expect("Queue::blas creates the handle");
        match kind {
            ReferenceGemm::Int8 => time_square::<Int8>(&queue.stream, handle, n_pad, iters, 1),
            ReferenceGemm::Fp64 => time_square::<Fp64>(&queue.stream, handle, n_pad, iters, 1.0),
        }
    }
}

/// Runs `iters` GEMMs `C = Aᵀ · A` of kind `K` on `stream`, A an `n × n` matrix of `one`s,
/// and returns the time until they have finished.
fn time_square<K: LimbKind>(
    stream: &Arc<CudaStream>,
    handle: &CudaBlas,
    n: usize,
    iters: u64,
    one: K::Limb,
) -> Result<std::time::Duration, CudaError>
where
    K::Limb: Clone,
    K::Sum: ValidAsZeroBits,
{
    let a = stream.clone_htod(&vec![one; n * n])?;
    let mut c = stream.alloc_zeros::<K::Sum>(n * n)?;
    let (a_ptr, _a) = a.device_ptr(stream);
    let (c_ptr, _c) = c.device_ptr_mut(stream);
    stream.synchronize()?;
    let start = std::time::Instant::now();
    for _ in 0..iters {
        // SAFETY: a holds n² limbs (used as both operands, leading dimension n), c holds
        // n² sums.
        unsafe { K::gemm_tn(handle, GemmTn::square(n as i32, a_ptr, c_ptr)) }?;
    }
    stream.synchronize()?;
    Ok(start.elapsed())
}
