//! Each op as chunks of one kernel: what every chunk writes, what it reads and its
//! parameters (the words of the kernel's `Params` after the window header, in order).

use crate::WgpuTensor;
use crate::device::{ALIGN, Context};
use crate::dispatch::{Chunk, KFromB, MAX_GROUPS, Windowing, flat_chunks, groups_1d};
use crate::error::WgpuError;
use crate::shaders::Kernel;
use cryptgpu_backend::fused::FUSED_MAX_STEPS;
use cryptgpu_backend::shape::{self, Conv2dDims, MatmulDims, Pool2dDims};
use cryptgpu_backend::{
    BinaryOp, DeviceTensor, Fused, FusedStep, Operand, Result, ShiftOp, UnaryOp, prg,
};
use std::ops::Range;

// Op codes of `elementwise.wgsl`.
const OP_ADD: u32 = 0;
const OP_SUB: u32 = 1;
const OP_MUL: u32 = 2;
const OP_AND: u32 = 3;
const OP_OR: u32 = 4;
const OP_XOR: u32 = 5;
const OP_NEG: u32 = 6;
const OP_NOT: u32 = 7;
const OP_SHL: u32 = 8;
const OP_SHR: u32 = 9;
const OP_SAR: u32 = 10;
/// `extract_bit`.
pub(crate) const OP_BIT: u32 = 11;
const OP_FILL: u32 = 12;

/// The `elementwise.wgsl` code of a binary op.
pub(crate) fn binary_code(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => OP_ADD,
        BinaryOp::Sub => OP_SUB,
        BinaryOp::Mul => OP_MUL,
        BinaryOp::And => OP_AND,
        BinaryOp::Or => OP_OR,
        BinaryOp::Xor => OP_XOR,
    }
}

/// The `elementwise.wgsl` code of a unary op.
pub(crate) fn unary_code(op: UnaryOp) -> u32 {
    match op {
        UnaryOp::Neg => OP_NEG,
        UnaryOp::Not => OP_NOT,
    }
}

/// The `elementwise.wgsl` code of a shift.
pub(crate) fn shift_code(op: ShiftOp) -> u32 {
    match op {
        ShiftOp::Left => OP_SHL,
        ShiftOp::RightLogical => OP_SHR,
        ShiftOp::RightArithmetic => OP_SAR,
    }
}

/// A `u32` kernel parameter; every size was checked against [`crate::device::MAX_ELEMENTS`].
fn word(x: usize) -> u32 {
    debug_assert!(u32::try_from(x).is_ok(), "kernel parameter {x} exceeds u32");
    x as u32
}

fn lo(x: u64) -> u32 {
    x as u32
}

fn hi(x: u64) -> u32 {
    (x >> 32) as u32
}

/// Runs `kernel` into a new tensor of `shape` with the chunks `plan` makes, all inside
/// one set of error scopes. `inputs` as [`Context::run`] takes them: two for every kernel
/// but [`Kernel::Fused`].
fn launch<const N: usize>(
    ctx: &Context,
    op: &'static str,
    kernel: Kernel,
    shape: &[usize],
    inputs: [Option<&WgpuTensor>; N],
    windowing: Windowing,
    plan: impl FnOnce(usize) -> Result<Vec<Chunk>, WgpuError>,
) -> Result<WgpuTensor> {
    for input in inputs.iter().flatten() {
        if input.len() > ctx.buffer_limit {
            return Err(WgpuError::TooLarge {
                op,
                why: format!(
                    "an input of {} elements exceeds the largest buffer of this adapter \
                     ({} elements)",
                    input.len(),
                    ctx.buffer_limit
                ),
            }
            .into());
        }
    }
    let out = ctx.output(op, shape)?;
    if out.is_empty() {
        return Ok(out);
    }
    let chunks = plan(ctx.binding_limit)?;
    ctx.scoped(op, || {
        ctx.run(
            op,
            kernel,
            &out.buffer,
            &inputs.map(|t| t.map(|t| &t.buffer)),
            chunks,
            windowing,
        )
    })?;
    Ok(out)
}

/// Elementwise op `code` on `a` and either `b` or the public `scalar`.
pub(crate) fn elementwise(
    ctx: &Context,
    op: &'static str,
    code: u32,
    a: &WgpuTensor,
    b: Option<&WgpuTensor>,
    scalar: u64,
    bits: u32,
) -> Result<WgpuTensor> {
    let len = a.len();
    launch(
        ctx,
        op,
        Kernel::Elementwise,
        &a.shape,
        [Some(a), b],
        Windowing::Single,
        |limit| {
            Ok(flat_chunks(len, limit)
                .map(|r| Chunk {
                    k_from_b: None,
                    reads: [r.clone(), if b.is_some() { r.clone() } else { 0..0 }],
                    groups: groups_1d(r.len()),
                    params: vec![
                        word(r.start),
                        word(r.len()),
                        code,
                        u32::from(b.is_none()),
                        lo(scalar),
                        hi(scalar),
                        bits,
                        0,
                    ],
                    out: r,
                })
                .collect())
        },
    )
}

/// The operand code of `fused.wgsl` that stands for the step's scalar.
const FUSED_SCALAR: u32 = 0xffff;

/// The words of a fused program after `fused.wgsl`'s `first_index` and `count`: the input
/// and step counts, then per step `(op, a | b << 16, lo, hi)` with the `elementwise.wgsl`
/// op codes, operands coded as input `i` → `i` and step `s` → 6 + `s`, [`FUSED_SCALAR`]
/// as `b` where the second operand is the scalar (`lo`, `hi`), and a shift's amount in
/// `lo`. Unused steps are zero; the program is checked, so every operand names an input
/// the call binds or an earlier step.
fn fused_words(program: &Fused, inputs: usize) -> Vec<u32> {
    let operand = |operand: Operand| match operand {
        Operand::Input(i) => u32::from(i),
        Operand::Step(s) => Kernel::FUSED_INPUTS as u32 + u32::from(s),
    };
    let steps = program.steps();
    let mut words = vec![word(inputs), word(steps.len())];
    for step in steps {
        let (op, a, b, scalar) = match *step {
            FusedStep::Binary(op, a, b) => (binary_code(op), a, operand(b), 0),
            FusedStep::Scalar(op, a, scalar) => (binary_code(op), a, FUSED_SCALAR, scalar),
            FusedStep::Unary(op, a) => (unary_code(op), a, FUSED_SCALAR, 0),
            FusedStep::Shift(op, a, bits) => (shift_code(op), a, FUSED_SCALAR, u64::from(bits)),
        };
        words.extend([op, operand(a) | (b << 16), lo(scalar), hi(scalar)]);
    }
    words.resize(2 + 4 * FUSED_MAX_STEPS, 0);
    words
}

/// A checked `program` on `inputs` (1 to 6 tensors of `shape`): one dispatch of
/// `fused.wgsl` per flat chunk of the output, every input bound with the chunk's window.
pub(crate) fn fused(
    ctx: &Context,
    program: &Fused,
    inputs: &[&WgpuTensor],
    shape: &[usize],
) -> Result<WgpuTensor> {
    let len = shape::numel("fused", shape)?;
    let mut slots = [None; Kernel::FUSED_INPUTS];
    for (slot, input) in slots.iter_mut().zip(inputs) {
        *slot = Some(*input);
    }
    let program = fused_words(program, inputs.len());
    launch(
        ctx,
        "fused",
        Kernel::Fused,
        shape,
        slots,
        Windowing::Single,
        |limit| {
            Ok(flat_chunks(len, limit)
                .map(|r| {
                    let mut params = vec![word(r.start), word(r.len())];
                    params.extend_from_slice(&program);
                    Chunk {
                        k_from_b: None,
                        // Input 1's window; inputs 2 and up take input 0's, the same.
                        reads: [r.clone(), if inputs.len() > 1 { r.clone() } else { 0..0 }],
                        groups: groups_1d(r.len()),
                        params,
                        out: r,
                    }
                })
                .collect())
        },
    )
}

/// A tensor of `shape` with every element `value`.
pub(crate) fn fill(ctx: &Context, shape: &[usize], value: u64) -> Result<WgpuTensor> {
    let len = shape::numel("full", shape)?;
    launch(
        ctx,
        "full",
        Kernel::Elementwise,
        shape,
        [None, None],
        Windowing::Single,
        |limit| {
            Ok(flat_chunks(len, limit)
                .map(|r| Chunk {
                    k_from_b: None,
                    reads: [0..0, 0..0],
                    groups: groups_1d(r.len()),
                    params: vec![
                        word(r.start),
                        word(r.len()),
                        OP_FILL,
                        1,
                        lo(value),
                        hi(value),
                        0,
                        0,
                    ],
                    out: r,
                })
                .collect())
        },
    )
}

/// Where thread `g` of a gather writes: `offset + (g / row_len) * row_stride + g % row_len`.
#[derive(Clone, Copy, Debug)]
struct RowMap {
    row_len: usize,
    row_stride: usize,
    offset: usize,
}

/// Axes of a gather's thread space after dropping extents of 1 and merging neighbours that
/// the source walks contiguously; at most 8 remain.
fn merged_axes(
    op: &'static str,
    shape: &[usize],
    strides: &[usize],
) -> Result<Vec<(usize, usize)>, WgpuError> {
    let mut axes: Vec<(usize, usize)> = Vec::new();
    for (&extent, &stride) in shape.iter().zip(strides) {
        if extent == 1 {
            continue;
        }
        match axes.last_mut() {
            Some(last) if last.1 == stride * extent => *last = (last.0 * extent, stride),
            _ => axes.push((extent, stride)),
        }
    }
    if axes.len() > 8 {
        return Err(WgpuError::TooLarge {
            op,
            why: format!(
                "a strided copy over {} axes; the kernel takes 8",
                axes.len()
            ),
        });
    }
    Ok(axes)
}

/// The chunks of a gather over `threads` threads reading `src` through `axes` (extent,
/// stride) from `src_offset` and writing through `dst`.
fn gather_chunks(
    limit: usize,
    threads: usize,
    axes: &[(usize, usize)],
    src_offset: usize,
    src_len: usize,
    dst: RowMap,
) -> Vec<Chunk> {
    let budget = limit - ALIGN;
    // Thread ranges whose destinations span at most `budget` elements.
    let mut ranges = Vec::new();
    if dst.row_stride <= budget {
        let per = dst.row_len * (budget / dst.row_stride.max(1)).max(1);
        ranges.extend(flat_chunks(threads, per.min(budget)));
    } else {
        for row_start in (0..threads).step_by(dst.row_len) {
            let row_end = (row_start + dst.row_len).min(threads);
            for start in (row_start..row_end).step_by(budget) {
                ranges.push(start..(start + budget).min(row_end));
            }
        }
    }
    let mut extent = [0u32; 8];
    let mut div = [0u32; 8];
    let mut stride = [0u32; 8];
    let mut after = 1usize;
    for (d, &(e, s)) in axes.iter().enumerate().rev() {
        extent[d] = word(e);
        div[d] = word(after);
        stride[d] = word(s);
        after *= e;
    }
    // The sum over every axis but the first of its largest offset: with the first axis's
    // index range this bounds the source elements of a thread range.
    let rest: usize = axes.iter().skip(1).map(|&(e, s)| (e - 1) * s).sum();
    ranges
        .into_iter()
        .map(|r| {
            let dst_index =
                |g: usize| dst.offset + (g / dst.row_len) * dst.row_stride + g % dst.row_len;
            let reads = match axes.first() {
                Some(&(_, s0)) => {
                    let first = r.start / div[0] as usize;
                    let last = (r.end - 1) / div[0] as usize;
                    src_offset + first * s0..(src_offset + last * s0 + rest + 1).min(src_len)
                }
                None => src_offset..src_offset + 1,
            };
            let mut params = vec![
                word(r.start),
                word(r.len()),
                word(dst.row_len),
                word(dst.row_stride),
                word(dst.offset),
                word(src_offset),
                word(axes.len()),
                0,
            ];
            params.extend_from_slice(&extent);
            params.extend_from_slice(&div);
            params.extend_from_slice(&stride);
            Chunk {
                k_from_b: None,
                out: dst_index(r.start)..dst_index(r.end - 1) + 1,
                reads: [reads, 0..0],
                groups: groups_1d(r.len()),
                params,
            }
        })
        .collect()
}

/// A new dense tensor of `shape` whose element at multi-index `i` is
/// `src[offset + sum_d i_d * src_strides[d]]` (permute, slice, broadcast).
pub(crate) fn gather_new(
    ctx: &Context,
    op: &'static str,
    src: &WgpuTensor,
    shape: &[usize],
    src_strides: &[usize],
    offset: usize,
) -> Result<WgpuTensor> {
    let view = shape::StridedView {
        shape: shape.to_vec(),
        strides: src_strides.to_vec(),
        offset,
    };
    if view.is_whole(src.len()) {
        // The view reads all of src in order: src itself, no pass.
        return Ok(src.whole_as(view.shape));
    }
    let threads = shape::numel(op, shape)?;
    let axes = merged_axes(op, shape, src_strides)?;
    launch(
        ctx,
        op,
        Kernel::Gather,
        shape,
        [Some(src), None],
        Windowing::Linear,
        |limit| {
            Ok(gather_chunks(
                limit,
                threads,
                &axes,
                offset,
                src.len(),
                RowMap {
                    row_len: threads,
                    row_stride: threads,
                    offset: 0,
                },
            ))
        },
    )
}

/// Joins `tensors` along `axis` into a new tensor of `out_shape`: each part's rows (its
/// extent along `axis` times the inner extents) go between the other parts' rows.
pub(crate) fn concat(
    ctx: &Context,
    tensors: &[&WgpuTensor],
    axis: usize,
    out_shape: &[usize],
) -> Result<WgpuTensor> {
    const OP: &str = "concat";
    if let [only] = tensors {
        return Ok(only.whole_as(out_shape.to_vec()));
    }
    let out = ctx.output(OP, out_shape)?;
    if out.is_empty() {
        return Ok(out);
    }
    let inner: usize = out_shape[axis + 1..].iter().product();
    let out_row = out_shape[axis] * inner;
    let mut start = 0;
    ctx.scoped(OP, || {
        for part in tensors {
            let row_len = part.shape[axis] * inner;
            let threads = part.len();
            if threads > 0 {
                let chunks = gather_chunks(
                    ctx.binding_limit,
                    threads,
                    &[(threads, 1)],
                    0,
                    threads,
                    RowMap {
                        row_len,
                        row_stride: out_row,
                        offset: start,
                    },
                );
                ctx.run(
                    OP,
                    Kernel::Gather,
                    &out.buffer,
                    &[Some(&part.buffer)],
                    chunks,
                    Windowing::Linear,
                )?;
            }
            start += row_len;
        }
        Ok(())
    })?;
    Ok(out)
}

/// Output rows one `select_rows.wgsl` dispatch fills at most: the length of its `rows`
/// table in the uniform parameters.
const SELECT_ROWS_MAX: usize = 128;
/// The `rows` entry of a row of zeros (`SELECT_ROWS_NONE` in `select_rows.wgsl`).
const SELECT_ROWS_NONE: u32 = u32::MAX;

/// Rows of `src` picked by index into a new tensor of `out_shape` (its rows `row_len`
/// elements long): output row `i` is source row `rows[i]`, or zeros for `None`.
pub(crate) fn select_rows(
    ctx: &Context,
    src: &WgpuTensor,
    rows: &[Option<usize>],
    out_shape: &[usize],
) -> Result<WgpuTensor> {
    let row_len: usize = out_shape[1..].iter().product();
    launch(
        ctx,
        "select_rows",
        Kernel::SelectRows,
        out_shape,
        [Some(src), None],
        Windowing::Linear,
        |limit| Ok(select_rows_chunks(limit, rows, row_len)),
    )
}

/// The dispatches of a `select_rows` with rows of `row_len > 0` elements and at least one
/// row, each covering consecutive output rows with one binding window of the output and
/// one of the source: up to [`SELECT_ROWS_MAX`] rows while their output and the span of
/// source rows they read both fit a binding, so every dispatch is one pass. Rows longer
/// than a binding go in pieces of a row, one dispatch each.
fn select_rows_chunks(limit: usize, rows: &[Option<usize>], row_len: usize) -> Vec<Chunk> {
    // Windows start on a multiple of ALIGN, so ranges of at most `budget` elements fit
    // one binding of `limit`.
    let budget = limit - ALIGN;
    let mut chunks = Vec::new();
    if row_len > budget {
        for (i, row) in rows.iter().enumerate() {
            for start in (0..row_len).step_by(budget) {
                let cols = start..(start + budget).min(row_len);
                chunks.push(select_rows_chunk(i, &[*row], row_len, cols));
            }
        }
        return chunks;
    }
    // Rows whose elements fit `budget`.
    let per_binding = budget / row_len;
    let mut first = 0;
    let mut span: Option<(usize, usize)> = None;
    for (i, row) in rows.iter().enumerate() {
        let widened = match (span, *row) {
            (Some((lo, hi)), Some(r)) => Some((lo.min(r), hi.max(r))),
            (None, Some(r)) => Some((r, r)),
            (span, None) => span,
        };
        let taken = i - first;
        let fits = taken < SELECT_ROWS_MAX.min(per_binding)
            && widened.is_none_or(|(lo, hi)| hi - lo < per_binding);
        if taken > 0 && !fits {
            chunks.push(select_rows_chunk(
                first,
                &rows[first..i],
                row_len,
                0..row_len,
            ));
            first = i;
            span = row.map(|r| (r, r));
        } else {
            span = widened;
        }
    }
    chunks.push(select_rows_chunk(
        first,
        &rows[first..],
        row_len,
        0..row_len,
    ));
    chunks
}

/// One `select_rows.wgsl` dispatch: output rows `first_row ..` from source `rows`, columns
/// `cols` of each (all of them unless there is one row).
fn select_rows_chunk(
    first_row: usize,
    rows: &[Option<usize>],
    row_len: usize,
    cols: Range<usize>,
) -> Chunk {
    debug_assert!(!rows.is_empty() && rows.len() <= SELECT_ROWS_MAX);
    debug_assert!(rows.len() == 1 || cols == (0..row_len));
    let last_row = first_row + rows.len() - 1;
    let out = first_row * row_len + cols.start..last_row * row_len + cols.end;
    let picked = rows.iter().flatten();
    let reads = match (picked.clone().min(), picked.max()) {
        (Some(lo), Some(hi)) => lo * row_len + cols.start..hi * row_len + cols.end,
        _ => 0..0,
    };
    let mut params = vec![
        word(out.start),
        word(out.len()),
        word(row_len),
        word(first_row),
    ];
    params.extend(
        rows.iter()
            .map(|row| row.map_or(SELECT_ROWS_NONE, word))
            .chain(std::iter::repeat(SELECT_ROWS_NONE))
            .take(SELECT_ROWS_MAX),
    );
    Chunk {
        k_from_b: None,
        reads: [reads, 0..0],
        groups: groups_1d(out.len()),
        params,
        out,
    }
}

/// Packs the lowest bit of every element into 64-bit words.
pub(crate) fn pack_bits(ctx: &Context, tensor: &WgpuTensor) -> Result<WgpuTensor> {
    per_block_of_64(ctx, "pack_bits", Kernel::PackBits, tensor, 1)
}

/// The bit planes of `tensor`, word-major: `[words, 64]`, row w holding bit j of elements
/// 64w .. 64w + 63 in word j (the transpose of `GpuBackend::bit_planes`).
pub(crate) fn bit_planes_word_major(ctx: &Context, tensor: &WgpuTensor) -> Result<WgpuTensor> {
    per_block_of_64(ctx, "bit_planes", Kernel::BitPlanes, tensor, 64)
}

/// A `bits.wgsl` kernel that turns each block of 64 elements (the last one may be short)
/// into `words_per_block` output words, one thread per output word: the output is
/// `[blocks]`, or `[blocks, words_per_block]`, chunked by whole blocks.
fn per_block_of_64(
    ctx: &Context,
    op: &'static str,
    kernel: Kernel,
    tensor: &WgpuTensor,
    words_per_block: usize,
) -> Result<WgpuTensor> {
    let bits = tensor.len();
    let blocks = shape::packed_words(bits);
    let shape = if words_per_block == 1 {
        vec![blocks]
    } else {
        vec![blocks, words_per_block]
    };
    launch(
        ctx,
        op,
        kernel,
        &shape,
        [Some(tensor), None],
        Windowing::Linear,
        |limit| {
            // 64 elements read and at most 64 words written per block.
            Ok(flat_chunks(blocks, limit / 64)
                .map(|r| {
                    let out = words_per_block * r.start..words_per_block * r.end;
                    Chunk {
                        k_from_b: None,
                        reads: [64 * r.start..(64 * r.end).min(bits), 0..0],
                        groups: groups_1d(out.len()),
                        params: vec![word(out.start), word(out.len()), word(bits), 0],
                        out,
                    }
                })
                .collect())
        },
    )
}

/// The packed bits of `packed` as a tensor of `shape` of zeros and ones.
pub(crate) fn unpack_bits(
    ctx: &Context,
    packed: &WgpuTensor,
    shape: &[usize],
) -> Result<WgpuTensor> {
    let bits = shape::numel("unpack_bits", shape)?;
    launch(
        ctx,
        "unpack_bits",
        Kernel::UnpackBits,
        shape,
        [Some(packed), None],
        Windowing::Linear,
        |limit| {
            Ok(flat_chunks(bits, limit)
                .map(|r| Chunk {
                    k_from_b: None,
                    reads: [r.start / 64..(r.end - 1) / 64 + 1, 0..0],
                    groups: groups_1d(r.len()),
                    params: vec![word(r.start), word(r.len()), word(bits), 0],
                    out: r,
                })
                .collect())
        },
    )
}

/// The ChaCha12 keystream fill of [`prg`].
pub(crate) fn fill_chacha12(
    ctx: &Context,
    shape: &[usize],
    key: &[u8; 32],
    stream: u64,
    position: u64,
) -> Result<WgpuTensor> {
    let len = shape::numel("fill_chacha12", shape)?;
    let key_words = prg::key_words(key);
    launch(
        ctx,
        "fill_chacha12",
        Kernel::ChaCha12,
        shape,
        [None, None],
        Windowing::Single,
        |limit| {
            let mut chunks = Vec::new();
            let mut start = 0;
            while start < len {
                let pos = position.wrapping_add(start as u64);
                // Split where the position wraps past 2^64, as the CPU definition does.
                let before_wrap = u64::MAX - pos;
                let take = (len - start).min(limit - ALIGN).min(
                    usize::try_from(before_wrap)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1),
                );
                let block = pos / prg::BLOCK_ELEMS as u64;
                let skip = (pos % prg::BLOCK_ELEMS as u64) as usize;
                let mut params = key_words.to_vec();
                params.extend_from_slice(&[
                    lo(stream),
                    hi(stream),
                    lo(block),
                    hi(block),
                    word(skip),
                    word(take),
                    word(start),
                    0,
                ]);
                chunks.push(Chunk {
                    k_from_b: None,
                    out: start..start + take,
                    reads: [0..0, 0..0],
                    groups: groups_1d((skip + take).div_ceil(prg::BLOCK_ELEMS)),
                    params,
                });
                start += take;
            }
            Ok(chunks)
        },
    )
}

/// The sizes of a family of GEMMs: `count` products of `rows x depth` by `depth x cols`,
/// whose outputs lie one after another.
#[derive(Clone, Copy, Debug)]
struct GemmShape {
    count: usize,
    rows: usize,
    cols: usize,
    depth: usize,
    /// Elements of the left operand one output row reads, where that operand is read by
    /// rows (matmul); 0 where it is read whole.
    a_row: usize,
}

/// Rows of output in one GEMM workgroup tile (`TILE` in `gemm.wgsl`).
const TILE: usize = 64;

/// The chunks of a GEMM family: whole products while they fit a binding, else blocks of
/// rows, else pieces of single rows. `reads(products, rows)` names the input elements a
/// chunk reads; `extra` follows the `Gemm` parameters.
fn gemm_chunks(
    limit: usize,
    g: GemmShape,
    reads: impl Fn(Range<usize>, Range<usize>) -> [Range<usize>; 2],
    k_from_b: impl Fn(Range<usize>) -> Option<KFromB>,
    extra: &[u32],
) -> Vec<Chunk> {
    let budget = limit - ALIGN;
    let per_product = g.rows * g.cols;
    let mut blocks = Vec::new();
    if per_product <= budget {
        let per_chunk = (budget / per_product).min(MAX_GROUPS);
        for z0 in (0..g.count).step_by(per_chunk) {
            blocks.push((z0..(z0 + per_chunk).min(g.count), 0..g.rows, 0..g.cols));
        }
    } else if g.cols <= budget.min(MAX_GROUPS * TILE) {
        let row_reads = if g.a_row <= budget {
            g.cols.max(g.a_row)
        } else {
            g.cols
        };
        let rows_per_chunk = (budget / row_reads).min(MAX_GROUPS * TILE);
        for z in 0..g.count {
            for r0 in (0..g.rows).step_by(rows_per_chunk) {
                blocks.push((z..z + 1, r0..(r0 + rows_per_chunk).min(g.rows), 0..g.cols));
            }
        }
    } else {
        let cols_per_chunk = budget.min(MAX_GROUPS * TILE);
        for z in 0..g.count {
            for r in 0..g.rows {
                for c0 in (0..g.cols).step_by(cols_per_chunk) {
                    blocks.push((z..z + 1, r..r + 1, c0..(c0 + cols_per_chunk).min(g.cols)));
                }
            }
        }
    }
    blocks
        .into_iter()
        .map(|(z, r, c)| {
            let mut params = vec![
                word(g.rows),
                word(g.cols),
                word(g.depth),
                word(z.start),
                word(r.start),
                word(r.end),
                word(c.start),
                word(c.end),
                0,
                word(g.depth),
                0,
                0,
            ];
            params.extend_from_slice(extra);
            Chunk {
                out: z.start * per_product + r.start * g.cols + c.start
                    ..(z.end - 1) * per_product + (r.end - 1) * g.cols + c.end,
                reads: reads(z.clone(), r.clone()),
                groups: [
                    word(c.len().div_ceil(TILE)),
                    word(r.len().div_ceil(TILE)),
                    word(z.len()),
                ],
                k_from_b: k_from_b(z.clone()),
                params,
            }
        })
        .collect()
}

/// Batched matrix product.
pub(crate) fn matmul(
    ctx: &Context,
    d: &MatmulDims,
    a: &WgpuTensor,
    b: &WgpuTensor,
) -> Result<WgpuTensor> {
    const OP: &str = "matmul";
    let (m, k, n) = (d.m, d.k, d.n);
    let a_stride = if d.a_batched { m * k } else { 0 };
    let b_stride = if d.b_batched { k * n } else { 0 };
    launch(
        ctx,
        OP,
        Kernel::Matmul,
        &d.out_shape,
        [Some(a), Some(b)],
        Windowing::Linear,
        |limit| {
            Ok(gemm_chunks(
                limit,
                GemmShape {
                    count: d.batch,
                    rows: m,
                    cols: n,
                    depth: k,
                    a_row: k,
                },
                |z, r| {
                    let a_reads =
                        z.start * a_stride + r.start * k..(z.end - 1) * a_stride + r.end * k;
                    let b_reads = z.start * b_stride..(z.end - 1) * b_stride + k * n;
                    [a_reads, b_reads]
                },
                |z| {
                    (z.len() == 1 || !d.b_batched).then_some(KFromB {
                        origin: z.start * b_stride,
                        row_len: n,
                        depth: k,
                    })
                },
                &[word(a_stride), word(b_stride), 0, 0],
            ))
        },
    )
}

/// The `ConvDims` parameters of `conv_common.wgsl`.
fn conv_params(d: &Conv2dDims) -> Vec<u32> {
    let g = d.params.groups;
    [
        d.c,
        d.h,
        d.w,
        d.o,
        d.kh,
        d.kw,
        d.oh,
        d.ow,
        d.params.stride[0],
        d.params.stride[1],
        d.params.padding[0],
        d.params.padding[1],
        g,
        d.c / g,
        d.o / g,
        0,
    ]
    .map(word)
    .to_vec()
}

/// Forward convolution: product (image, group) is `W_g · im2col(x_n, g)`.
pub(crate) fn conv2d(
    ctx: &Context,
    d: &Conv2dDims,
    input: &WgpuTensor,
    weight: &WgpuTensor,
) -> Result<WgpuTensor> {
    let g = d.params.groups;
    let per_image = PerImageGemm {
        op: "conv2d",
        kernel: Kernel::ConvForward,
        out_shape: d.output_shape(),
        image_len: d.c * d.h * d.w,
        rows: d.o / g,
        cols: d.oh * d.ow,
        depth: d.c / g * d.kh * d.kw,
    };
    per_image.launch(ctx, d, input, weight)
}

/// Input gradient: product (image, group) is `W_gᵀ` times the output gradient read
/// through the transposed window map.
pub(crate) fn conv2d_grad_input(
    ctx: &Context,
    d: &Conv2dDims,
    grad_out: &WgpuTensor,
    weight: &WgpuTensor,
) -> Result<WgpuTensor> {
    let g = d.params.groups;
    let per_image = PerImageGemm {
        op: "conv2d_grad_input",
        kernel: Kernel::ConvGradInput,
        out_shape: d.input_shape(),
        image_len: d.o * d.oh * d.ow,
        rows: d.c / g,
        cols: d.h * d.w,
        depth: d.o / g * d.kh * d.kw,
    };
    per_image.launch(ctx, d, grad_out, weight)
}

/// A convolution kernel whose products are one GEMM per (image, group): the left operand
/// is read image by image (`image_len` elements each), the weight whole.
struct PerImageGemm {
    op: &'static str,
    kernel: Kernel,
    out_shape: Vec<usize>,
    image_len: usize,
    rows: usize,
    cols: usize,
    depth: usize,
}

impl PerImageGemm {
    fn launch(
        &self,
        ctx: &Context,
        d: &Conv2dDims,
        images: &WgpuTensor,
        weight: &WgpuTensor,
    ) -> Result<WgpuTensor> {
        let g = d.params.groups;
        launch(
            ctx,
            self.op,
            self.kernel,
            &self.out_shape,
            [Some(images), Some(weight)],
            Windowing::Linear,
            |limit| {
                Ok(gemm_chunks(
                    limit,
                    GemmShape {
                        count: d.n * g,
                        rows: self.rows,
                        cols: self.cols,
                        depth: self.depth,
                        a_row: 0,
                    },
                    |z, _| {
                        let images = z.start / g..(z.end - 1) / g + 1;
                        [
                            images.start * self.image_len..images.end * self.image_len,
                            0..weight.len(),
                        ]
                    },
                    |_| None,
                    &conv_params(d),
                ))
            },
        )
    }
}

/// Weight gradient: product (group) is the output gradient times the stacked im2col
/// matrices transposed, summed over the batch.
pub(crate) fn conv2d_grad_weight(
    ctx: &Context,
    d: &Conv2dDims,
    input: &WgpuTensor,
    grad_out: &WgpuTensor,
) -> Result<WgpuTensor> {
    const OP: &str = "conv2d_grad_weight";
    let g = d.params.groups;
    launch(
        ctx,
        OP,
        Kernel::ConvGradWeight,
        &d.weight_shape(),
        [Some(input), Some(grad_out)],
        Windowing::Linear,
        |limit| {
            Ok(gemm_chunks(
                limit,
                GemmShape {
                    count: g,
                    rows: d.o / g,
                    cols: d.c / g * d.kh * d.kw,
                    depth: d.n * d.oh * d.ow,
                    a_row: 0,
                },
                |_, _| [0..input.len(), 0..grad_out.len()],
                |_| None,
                &conv_params(d),
            ))
        },
    )
}

/// Sum over `axis`.
pub(crate) fn sum_axis(
    ctx: &Context,
    tensor: &WgpuTensor,
    axis: usize,
    out_shape: &[usize],
) -> Result<WgpuTensor> {
    let reduce_len = tensor.shape[axis];
    let inner: usize = tensor.shape[axis + 1..].iter().product();
    let total: usize = out_shape.iter().product();
    launch(
        ctx,
        "sum_axis",
        Kernel::SumAxis,
        out_shape,
        [Some(tensor), None],
        Windowing::Linear,
        |limit| {
            Ok(flat_chunks(total, limit)
                .map(|r| {
                    let (o0, o1) = (r.start / inner, (r.end - 1) / inner + 1);
                    Chunk {
                        k_from_b: None,
                        reads: [o0 * reduce_len * inner..o1 * reduce_len * inner, 0..0],
                        groups: groups_1d(r.len()),
                        params: vec![word(r.start), word(r.len()), word(reduce_len), word(inner)],
                        out: r,
                    }
                })
                .collect())
        },
    )
}

/// The parameters of `pool.wgsl` for one chunk.
fn pool_params(d: &Pool2dDims, r: &Range<usize>, pad: u64) -> Vec<u32> {
    let p = d.params;
    vec![
        word(r.start),
        word(r.len()),
        word(d.n * d.c),
        word(d.h),
        word(d.w),
        word(d.oh),
        word(d.ow),
        word(p.kernel[0]),
        word(p.kernel[1]),
        word(p.stride[0]),
        word(p.stride[1]),
        word(p.padding[0]),
        word(p.padding[1]),
        lo(pad),
        hi(pad),
        0,
    ]
}

/// A pooling op over flat output chunks; `reads(chunk)` names the input it reads.
fn pool_op(
    ctx: &Context,
    op: &'static str,
    kernel: Kernel,
    d: &Pool2dDims,
    input: &WgpuTensor,
    out_shape: &[usize],
    pad: u64,
    reads: impl Fn(&Range<usize>) -> Range<usize>,
) -> Result<WgpuTensor> {
    let total: usize = out_shape.iter().product();
    launch(
        ctx,
        op,
        kernel,
        out_shape,
        [Some(input), None],
        Windowing::Linear,
        |limit| {
            Ok(flat_chunks(total, limit)
                .map(|r| Chunk {
                    k_from_b: None,
                    reads: [reads(&r), 0..0],
                    groups: groups_1d(r.len()),
                    params: pool_params(d, &r, pad),
                    out: r,
                })
                .collect())
        },
    )
}

/// The sum of every pooling window.
pub(crate) fn pool_window_sum(
    ctx: &Context,
    d: &Pool2dDims,
    input: &WgpuTensor,
) -> Result<WgpuTensor> {
    let (plane_in, plane_out) = (d.h * d.w, d.oh * d.ow);
    pool_op(
        ctx,
        "pool_window_sum",
        Kernel::PoolWindowSum,
        d,
        input,
        &d.output_shape(),
        0,
        |r| r.start / plane_out * plane_in..((r.end - 1) / plane_out + 1) * plane_in,
    )
}

/// The pooling windows, `[kh·kw, n, c, oh, ow]`.
pub(crate) fn pool_unfold(
    ctx: &Context,
    d: &Pool2dDims,
    input: &WgpuTensor,
    pad: u64,
) -> Result<WgpuTensor> {
    let len = input.len();
    pool_op(
        ctx,
        "pool_unfold",
        Kernel::PoolUnfold,
        d,
        input,
        &d.windows_shape(),
        pad,
        |_| 0..len,
    )
}

/// The adjoint of the unfold.
pub(crate) fn pool_fold(ctx: &Context, d: &Pool2dDims, windows: &WgpuTensor) -> Result<WgpuTensor> {
    let len = windows.len();
    pool_op(
        ctx,
        "pool_fold",
        Kernel::PoolFold,
        d,
        windows,
        &d.input_shape(),
        0,
        |_| 0..len,
    )
}
