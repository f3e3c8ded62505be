//! The CPU backend: the bit-exact reference for every device op, and a fast one
//! (rayon threads, a packed cache-blocked u64 GEMM, convolution as im2col + GEMM).
//!
//! Every kernel of the CUDA and WGSL backends has its twin here, and the conformance
//! suite holds all of them to the same scalar definitions.

mod buffer;
mod chacha;
mod conv;
pub mod gemm;
mod layout;
mod par;
mod pool;

use buffer::Buffer;
use cryptgpu_backend::counters;
use cryptgpu_backend::shape::{self, Conv2dDims, MatmulDims, Pool2dDims};
use cryptgpu_backend::{
    BinaryOp, Conv2dParams, DeviceTensor, Fused, GpuBackend, Pool2dParams, Result, ShiftOp, UnaryOp,
};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::Arc;

pub use buffer::{DEFAULT_POOL_MIB, POOL_LIMIT_ENV, idle_buffer_bytes, release_idle_buffers};

/// The CPU backend. Work runs on rayon's global thread pool (size it with
/// `RAYON_NUM_THREADS`); every op has finished when it returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// The CPU backend.
    pub fn new() -> Self {
        Self
    }

    /// A layout op (permute, slice, broadcast) as the strided gather it is.
    fn gather(&self, tensor: &CpuTensor, view: shape::StridedView) -> Result<CpuTensor> {
        if view.is_whole(tensor.len()) {
            return Ok(CpuTensor {
                data: tensor.data.clone(),
                shape: view.shape,
            });
        }
        let data = layout::strided_gather(&tensor.data, &view.shape, &view.strides, view.offset);
        CpuTensor::new(data, view.shape)
    }
}

/// A tensor in host memory. Clones share the buffer; ops never write to an existing tensor.
/// The last clone to go returns the buffer to the pool of the `buffer` module.
#[derive(Clone, Debug)]
pub struct CpuTensor {
    data: Arc<Buffer>,
    shape: Vec<usize>,
}

impl PartialEq for CpuTensor {
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.as_slice() == other.as_slice()
    }
}

impl Eq for CpuTensor {}

impl CpuTensor {
    /// The result of an op: one pass over memory, counted as a launch.
    ///
    /// # Errors
    /// [`cryptgpu_backend::BackendError::OutOfDeviceMemory`] where the buffer would take
    /// this thread's party past its limit ([`cryptgpu_backend::memory`]).
    fn new(data: Vec<u64>, shape: Vec<usize>) -> Result<Self> {
        counters::record_launches(1);
        Self::from_host(data, shape)
    }

    /// A tensor of words from the host (an upload: no pass counted), charged to this
    /// thread's party.
    ///
    /// # Errors
    /// As [`CpuTensor::new`].
    fn from_host(data: Vec<u64>, shape: Vec<usize>) -> Result<Self> {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        Ok(Self {
            data: Arc::new(Buffer::new(data)?),
            shape,
        })
    }

    /// The elements, row-major (no copy: the CPU's "device" memory is the host's).
    pub fn as_slice(&self) -> &[u64] {
        &self.data
    }
}

impl DeviceTensor for CpuTensor {
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl GpuBackend for CpuBackend {
    type Tensor = CpuTensor;

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn upload(&self, data: &[u64], shape: &[usize]) -> Result<CpuTensor> {
        shape::check_len("upload", shape, data.len())?;
        counters::record_upload(8 * data.len() as u64);
        CpuTensor::from_host(buffer::copy_of(data), shape.to_vec())
    }

    fn upload_vec(&self, data: Vec<u64>, shape: &[usize]) -> Result<CpuTensor> {
        shape::check_len("upload", shape, data.len())?;
        counters::record_upload(8 * data.len() as u64);
        CpuTensor::from_host(data, shape.to_vec())
    }

    fn download(&self, tensor: &CpuTensor) -> Result<Vec<u64>> {
        counters::record_download(8 * tensor.len() as u64, false);
        Ok(tensor.data.to_vec())
    }

    fn download_vec(&self, tensor: CpuTensor) -> Result<Vec<u64>> {
        counters::record_download(8 * tensor.len() as u64, false);
        Ok(match Arc::try_unwrap(tensor.data) {
            Ok(buffer) => buffer.into_vec(),
            Err(shared) => buffer::copy_of(&shared),
        })
    }

    fn full(&self, shape: &[usize], value: u64) -> Result<CpuTensor> {
        let n = shape::numel("full", shape)?;
        let mut data = buffer::take(n);
        data.fill(value);
        CpuTensor::new(data, shape.to_vec())
    }

    fn sync(&self) -> Result<()> {
        // Every op has finished when it returns: the wait is counted, and free.
        counters::record_sync();
        Ok(())
    }

    fn reshape(&self, tensor: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        shape::check_len("reshape", shape, tensor.len())?;
        Ok(CpuTensor {
            data: tensor.data.clone(),
            shape: shape.to_vec(),
        })
    }

    fn permute(&self, tensor: &CpuTensor, axes: &[usize]) -> Result<CpuTensor> {
        let view = shape::permute_view("permute", &tensor.shape, axes)?;
        self.gather(tensor, view)
    }

    fn slice(&self, tensor: &CpuTensor, axis: usize, range: Range<usize>) -> Result<CpuTensor> {
        let view = shape::slice_view("slice", &tensor.shape, axis, &range)?;
        self.gather(tensor, view)
    }

    fn concat(&self, tensors: &[&CpuTensor], axis: usize) -> Result<CpuTensor> {
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape.as_slice()).collect();
        let out_shape = shape::concatenated("concat", &shapes, axis)?;
        if let [only] = tensors {
            return self.reshape(only, &out_shape);
        }
        let parts: Vec<(&[u64], &[usize])> = tensors
            .iter()
            .map(|t| (&t.data[..], t.shape.as_slice()))
            .collect();
        let total = out_shape.iter().product();
        CpuTensor::new(layout::concat(&parts, axis, total), out_shape)
    }

    fn select_rows(&self, tensor: &CpuTensor, rows: &[Option<usize>]) -> Result<CpuTensor> {
        let out_shape = shape::selected_rows("select_rows", &tensor.shape, rows)?;
        let row_len: usize = out_shape[1..].iter().product();
        let x = &tensor.data;
        let mut out = buffer::take(rows.len() * row_len);
        let copy_row = |(dst, row): (&mut [u64], &Option<usize>)| match row {
            Some(r) => dst.copy_from_slice(&x[r * row_len..][..row_len]),
            None => dst.fill(0),
        };
        if row_len > 0 && out.len() < par::PARALLEL_MIN {
            out.chunks_mut(row_len).zip(rows).for_each(copy_row);
        } else if row_len > 0 {
            out.par_chunks_mut(row_len).zip(rows).for_each(copy_row);
        }
        CpuTensor::new(out, out_shape)
    }

    fn broadcast_to(&self, tensor: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        let view = shape::broadcast_view("broadcast_to", &tensor.shape, shape)?;
        self.gather(tensor, view)
    }

    fn binary(&self, op: BinaryOp, lhs: &CpuTensor, rhs: &CpuTensor) -> Result<CpuTensor> {
        shape::check_same("binary", &lhs.shape, &rhs.shape)?;
        let data = match op {
            BinaryOp::Add => par::zip_map(&lhs.data, &rhs.data, u64::wrapping_add),
            BinaryOp::Sub => par::zip_map(&lhs.data, &rhs.data, u64::wrapping_sub),
            BinaryOp::Mul => par::zip_map(&lhs.data, &rhs.data, u64::wrapping_mul),
            BinaryOp::And => par::zip_map(&lhs.data, &rhs.data, |a, b| a & b),
            BinaryOp::Or => par::zip_map(&lhs.data, &rhs.data, |a, b| a | b),
            BinaryOp::Xor => par::zip_map(&lhs.data, &rhs.data, |a, b| a ^ b),
        };
        CpuTensor::new(data, lhs.shape.clone())
    }

    fn binary_scalar(&self, op: BinaryOp, tensor: &CpuTensor, scalar: u64) -> Result<CpuTensor> {
        CpuTensor::new(
            par::map(&tensor.data, |x| op.apply(x, scalar)),
            tensor.shape.clone(),
        )
    }

    fn unary(&self, op: UnaryOp, tensor: &CpuTensor) -> Result<CpuTensor> {
        CpuTensor::new(
            par::map(&tensor.data, |x| op.apply(x)),
            tensor.shape.clone(),
        )
    }

    fn shift(&self, op: ShiftOp, tensor: &CpuTensor, bits: u32) -> Result<CpuTensor> {
        shape::check_shift("shift", bits)?;
        CpuTensor::new(
            par::map(&tensor.data, |x| op.apply(x, bits)),
            tensor.shape.clone(),
        )
    }

    fn fused(&self, program: &Fused, inputs: &[&CpuTensor]) -> Result<CpuTensor> {
        let shape = cryptgpu_backend::fused_shape(program, inputs)?;
        let words: Vec<&[u64]> = inputs.iter().map(|t| &t.data[..]).collect();
        CpuTensor::new(par::fused(program, &words), shape)
    }

    fn extract_bit(&self, tensor: &CpuTensor, bit: u32) -> Result<CpuTensor> {
        shape::check_bit("extract_bit", bit)?;
        CpuTensor::new(
            par::map(&tensor.data, |x| (x >> bit) & 1),
            tensor.shape.clone(),
        )
    }

    fn pack_bits(&self, tensor: &CpuTensor) -> Result<CpuTensor> {
        let bits = &tensor.data;
        let words = shape::packed_words(bits.len());
        let mut out = buffer::take(words);
        par::fill_chunks(&mut out, |first, chunk| {
            for (w, word) in chunk.iter_mut().enumerate() {
                let start = (first + w) * 64;
                *word = bits[start..bits.len().min(start + 64)]
                    .iter()
                    .enumerate()
                    .fold(0, |acc, (j, &b)| acc | ((b & 1) << j));
            }
        });
        CpuTensor::new(out, vec![words])
    }

    fn bit_planes(&self, tensor: &CpuTensor) -> Result<CpuTensor> {
        let values = &tensor.data;
        let words = shape::packed_words(values.len());
        // Block w (64 elements, zero-padded) as a 64×64 bit matrix, transposed in place:
        // its row j is then bit j of the block's elements, i.e. word w of plane j.
        let mut blocks = buffer::take(words * 64);
        par::fill_chunks(&mut blocks, |first, chunk| {
            for (b, block) in chunk.chunks_exact_mut(64).enumerate() {
                let start = first + 64 * b;
                let end = values.len().min(start + 64);
                block[..end - start].copy_from_slice(&values[start..end]);
                block[end - start..].fill(0);
                transpose_bits_64(block.try_into().expect("64 words"));
            }
        });
        let mut planes = buffer::take(64 * words);
        par::fill_chunks(&mut planes, |first, chunk| {
            for (k, word) in chunk.iter_mut().enumerate() {
                let (plane, w) = ((first + k) / words, (first + k) % words);
                *word = blocks[64 * w + plane];
            }
        });
        CpuTensor::new(planes, vec![64, words])
    }

    fn unpack_bits(&self, packed: &CpuTensor, shape: &[usize]) -> Result<CpuTensor> {
        let n = shape::numel("unpack_bits", shape)?;
        shape::check_len("unpack_bits", &[shape::packed_words(n)], packed.len())?;
        let words = &packed.data;
        let mut out = buffer::take(n);
        par::fill_chunks(&mut out, |first, chunk| {
            for (j, bit) in chunk.iter_mut().enumerate() {
                let i = first + j;
                *bit = (words[i / 64] >> (i % 64)) & 1;
            }
        });
        CpuTensor::new(out, shape.to_vec())
    }

    fn matmul(&self, lhs: &CpuTensor, rhs: &CpuTensor) -> Result<CpuTensor> {
        let d = MatmulDims::new(&lhs.shape, &rhs.shape)?;
        let (m, k, n) = (d.m, d.k, d.n);
        let mut out = buffer::take_zeroed(d.batch * m * n);
        if m * n > 0 {
            out.par_chunks_mut(m * n).enumerate().for_each(|(t, c)| {
                let a = &lhs.data[if d.a_batched { t * m * k } else { 0 }..][..m * k];
                let b = &rhs.data[if d.b_batched { t * k * n } else { 0 }..][..k * n];
                gemm::gemm_u64(m, k, n, a, k, 1, b, n, 1, c, n, false);
            });
        }
        CpuTensor::new(out, d.out_shape)
    }

    fn conv2d(
        &self,
        input: &CpuTensor,
        weight: &CpuTensor,
        params: Conv2dParams,
    ) -> Result<CpuTensor> {
        let d = Conv2dDims::forward(&input.shape, &weight.shape, params)?;
        CpuTensor::new(
            conv::conv2d(&d, &input.data, &weight.data),
            d.output_shape(),
        )
    }

    fn conv2d_grad_input(
        &self,
        grad_output: &CpuTensor,
        weight: &CpuTensor,
        input_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<CpuTensor> {
        let d = Conv2dDims::grad_input(&grad_output.shape, &weight.shape, input_hw, params)?;
        CpuTensor::new(
            conv::grad_input(&d, &grad_output.data, &weight.data),
            d.input_shape(),
        )
    }

    fn conv2d_grad_weight(
        &self,
        input: &CpuTensor,
        grad_output: &CpuTensor,
        kernel_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<CpuTensor> {
        let d = Conv2dDims::grad_weight(&input.shape, &grad_output.shape, kernel_hw, params)?;
        CpuTensor::new(
            conv::grad_weight(&d, &input.data, &grad_output.data),
            d.weight_shape(),
        )
    }

    fn sum_axis(&self, tensor: &CpuTensor, axis: usize) -> Result<CpuTensor> {
        let out_shape = shape::reduced("sum_axis", &tensor.shape, axis)?;
        let extent = tensor.shape[axis];
        let inner: usize = tensor.shape[axis + 1..].iter().product();
        let x = &tensor.data;
        let mut out = buffer::take(out_shape.iter().product());
        par::fill_chunks(&mut out, |first, chunk| {
            for (j, o) in chunk.iter_mut().enumerate() {
                let (outer, i) = ((first + j) / inner, (first + j) % inner);
                let base = outer * extent * inner + i;
                *o = (0..extent).fold(0u64, |acc, a| acc.wrapping_add(x[base + a * inner]));
            }
        });
        CpuTensor::new(out, out_shape)
    }

    fn pool_window_sum(&self, input: &CpuTensor, params: Pool2dParams) -> Result<CpuTensor> {
        let d = Pool2dDims::new("pool_window_sum", &input.shape, params)?;
        CpuTensor::new(pool::window_sum(&d, &input.data), d.output_shape())
    }

    fn pool_unfold(
        &self,
        input: &CpuTensor,
        params: Pool2dParams,
        pad_value: u64,
    ) -> Result<CpuTensor> {
        let d = Pool2dDims::new("pool_unfold", &input.shape, params)?;
        CpuTensor::new(pool::unfold(&d, &input.data, pad_value), d.windows_shape())
    }

    fn pool_fold(
        &self,
        windows: &CpuTensor,
        params: Pool2dParams,
        input_shape: &[usize],
    ) -> Result<CpuTensor> {
        let d = Pool2dDims::new("pool_fold", input_shape, params)?;
        d.check_windows("pool_fold", &windows.shape)?;
        CpuTensor::new(pool::fold(&d, &windows.data), d.input_shape())
    }

    fn fill_chacha12(
        &self,
        shape: &[usize],
        key: &[u8; 32],
        stream: u64,
        position: u64,
    ) -> Result<CpuTensor> {
        let n = shape::numel("fill_chacha12", shape)?;
        let mut out = buffer::take(n);
        par::fill_chunks(&mut out, |first, chunk| {
            chacha::fill_chacha12(key, stream, position.wrapping_add(first as u64), chunk);
        });
        CpuTensor::new(out, shape.to_vec())
    }
}

/// Transposes a 64×64 bit matrix in place, row `i` being word `i` with column `j` at bit
/// `j`: afterwards bit `j` of word `i` is what bit `i` of word `j` was. Six rounds of
/// swapping the off-diagonal blocks of every 2k×2k block (k = 32, 16, ..., 1), each
/// with one shift, xor and mask per pair of words.
fn transpose_bits_64(rows: &mut [u64; 64]) {
    let mut width = 32;
    let mut mask: u64 = 0x0000_0000_FFFF_FFFF;
    while width != 0 {
        for top in (0..64).filter(|k| k & width == 0) {
            let bottom = top | width;
            let swap = ((rows[top] >> width) ^ rows[bottom]) & mask;
            rows[top] ^= swap << width;
            rows[bottom] ^= swap;
        }
        width >>= 1;
        mask ^= mask << width;
    }
}

#[cfg(test)]
mod tests {
    use super::transpose_bits_64;

    #[test]
    fn bit_transpose_moves_every_bit_across_the_diagonal() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let rows: [u64; 64] = std::array::from_fn(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        });
        let mut t = rows;
        transpose_bits_64(&mut t);
        for (i, row) in t.iter().enumerate() {
            for (j, original) in rows.iter().enumerate() {
                assert_eq!((row >> j) & 1, (original >> i) & 1, "bit ({i}, {j})");
            }
        }
    }
}
