//! Running a kernel over windows of its tensors, so that no binding exceeds the adapter's
//! limit: the op splits its output into chunks, each chunk names the input elements it
//! reads, and this module cuts those reads into windows of at most the binding limit and
//! dispatches one pass per combination. Kernels are linear in each input window (reads
//! outside the window give zero) and the first pass writes while later ones add, so the
//! passes sum to the op. Elementwise ops, which are not linear, always get one window;
//! the inputs past the first two of a fused program (`Kernel::Fused`) are bound with the
//! first input's window, which for an elementwise op is the output chunk's elements.

use crate::device::{ALIGN, Context};
use crate::error::WgpuError;
use crate::shaders::Kernel;
use cryptgpu_backend::counters;
use std::num::NonZeroU64;
use std::ops::Range;

/// Threads per workgroup of the 1-d kernels (`WORKGROUP_THREADS` in `common.wgsl`).
const WORKGROUP_THREADS: usize = 256;
/// Workgroups along one dispatch dimension (WebGPU's minimum `max_compute_workgroups_per_dimension`).
pub(crate) const MAX_GROUPS: usize = 65_535;

/// One chunk of an op's output and what it reads.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    /// Output elements written (at most the binding limit, less [`ALIGN`] slack).
    pub(crate) out: Range<usize>,
    /// Elements read from each input (empty where there is no input).
    pub(crate) reads: [Range<usize>; 2],
    /// Workgroups to dispatch.
    pub(crate) groups: [u32; 3],
    /// The kernel's parameters after the window header.
    pub(crate) params: Vec<u32>,
    /// For GEMMs whose right operand is row-major with rows of `row_len` elements from
    /// element `origin`: each pass loops only over the inner indices whose rows lie in
    /// its window of that operand (`k_begin`, `k_end` of `gemm.wgsl`).
    pub(crate) k_from_b: Option<KFromB>,
}

/// See [`Chunk::k_from_b`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct KFromB {
    pub(crate) origin: usize,
    pub(crate) row_len: usize,
    pub(crate) depth: usize,
}

/// Where `k_begin` sits among a GEMM kernel's parameters (`Gemm` in `gemm.wgsl`).
pub(crate) const GEMM_K_BEGIN: usize = 8;

/// The 2-d grid of 256-thread groups that covers `threads` threads.
pub(crate) fn groups_1d(threads: usize) -> [u32; 3] {
    let total = threads.div_ceil(WORKGROUP_THREADS).max(1);
    let x = total.min(MAX_GROUPS);
    [x as u32, total.div_ceil(x) as u32, 1]
}

/// Splits `0..total` into chunks of at most `limit` elements starting at multiples of it.
pub(crate) fn flat_chunks(total: usize, limit: usize) -> impl Iterator<Item = Range<usize>> {
    (0..total)
        .step_by(limit.max(1))
        .map(move |start| start..(start + limit).min(total))
}

/// The windows `(base, len)` that cover `range`, each starting at a multiple of [`ALIGN`]
/// and at most `limit` long; one empty window for an empty range.
fn windows(range: &Range<usize>, limit: usize) -> Vec<(usize, usize)> {
    if range.is_empty() {
        return vec![(0, 0)];
    }
    let mut out = Vec::new();
    let mut base = range.start / ALIGN * ALIGN;
    while base < range.end {
        let end = (base + limit).min(range.end);
        out.push((base, end - base));
        base = end;
    }
    out
}

fn binding(buffer: &wgpu::Buffer, (base, len): (usize, usize)) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: (base * 8) as u64,
        size: NonZeroU64::new((len * 8) as u64),
    })
}

/// Whether several input windows of one output chunk may be summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Windowing {
    /// The kernel is linear in each input window: passes over windows add up.
    Linear,
    /// The kernel must see all its inputs in one pass (elementwise ops).
    Single,
}

impl Context {
    /// Records and submits every pass of `chunks`, writing `out` from `inputs` (at most
    /// [`Kernel::inputs`]; `None` or missing where the kernel reads nothing). Inputs 0
    /// and 1 are bound at bindings 0 and 1 with the windows of the chunk's reads; inputs 2
    /// and up (of [`Kernel::Fused`] only) at bindings 4 and up with input 0's window, so
    /// only for [`Windowing::Single`] and chunks whose every input reads input 0's range.
    pub(crate) fn run(
        &self,
        op: &'static str,
        kernel: Kernel,
        out: &wgpu::Buffer,
        inputs: &[Option<&wgpu::Buffer>],
        chunks: impl IntoIterator<Item = Chunk>,
        windowing: Windowing,
    ) -> Result<(), WgpuError> {
        debug_assert!(
            inputs.len() <= kernel.inputs()
                && (inputs.len() <= 2 || windowing == Windowing::Single),
            "{op}: {} inputs for {kernel:?} with {windowing:?} windows",
            inputs.len()
        );
        let limit = self.binding_limit;
        let (bind_group_layout, pipeline_layout) = self.layouts(op, kernel)?;
        // The passes' uniform buffers, given back to the pool once submitted.
        let mut uniforms = Vec::new();
        let pipeline = self.pipeline(kernel, pipeline_layout);
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(op) });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(op),
                timestamp_writes: None,
            });
            pass.set_pipeline(&pipeline);
            for chunk in chunks {
                if chunk.out.is_empty() {
                    continue;
                }
                let out_window = (
                    chunk.out.start / ALIGN * ALIGN,
                    chunk.out.end - chunk.out.start / ALIGN * ALIGN,
                );
                let a_windows = windows(&chunk.reads[0], limit);
                let b_windows = windows(&chunk.reads[1], limit);
                let passes = a_windows.len() * b_windows.len();
                if out_window.1 > limit || (windowing == Windowing::Single && passes > 1) {
                    return Err(WgpuError::TooLarge {
                        op,
                        why: format!(
                            "a chunk writing elements {:?} and reading {:?} does not fit \
                             storage bindings of {limit} elements",
                            chunk.out, chunk.reads
                        ),
                    });
                }
                for (index, (&a, &b)) in a_windows
                    .iter()
                    .flat_map(|a| b_windows.iter().map(move |b| (a, b)))
                    .enumerate()
                {
                    let mut words = vec![
                        out_window.0 as u32,
                        out_window.1 as u32,
                        a.0 as u32,
                        a.1 as u32,
                        b.0 as u32,
                        b.1 as u32,
                        u32::from(index == 0),
                        0,
                    ];
                    words.extend_from_slice(&chunk.params);
                    if let Some(k) = chunk.k_from_b.filter(|_| b.1 > 0) {
                        let begin = b.0.saturating_sub(k.origin) / k.row_len.max(1);
                        let end = (b.0 + b.1)
                            .saturating_sub(k.origin)
                            .div_ceil(k.row_len.max(1));
                        words[8 + GEMM_K_BEGIN] = begin.min(k.depth) as u32;
                        words[8 + GEMM_K_BEGIN + 1] = end.min(k.depth) as u32;
                    }
                    words.resize(words.len().next_multiple_of(4), 0);
                    let params: &[u8] = bytemuck::cast_slice(&words);
                    let uniform = self.uniform(op, params);
                    let params_len = NonZeroU64::new(params.len() as u64);
                    let input = |slot: usize, window: (usize, usize)| match inputs.get(slot) {
                        Some(Some(buffer)) if window.1 > 0 => binding(buffer, window),
                        _ => self.placeholder.as_entire_binding(),
                    };
                    let mut entries = vec![
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: input(0, a),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: input(1, b),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: binding(out, out_window),
                        },
                        wgpu::BindGroupEntry {
                            binding: 3,
                            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &uniform,
                                offset: 0,
                                size: params_len,
                            }),
                        },
                    ];
                    // Inputs 2 and up (a fused program's) with input 0's window.
                    for slot in 2..kernel.inputs() {
                        entries.push(wgpu::BindGroupEntry {
                            binding: 2 + slot as u32,
                            resource: input(slot, a),
                        });
                    }
                    let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some(op),
                        layout: bind_group_layout,
                        entries: &entries,
                    });
                    pass.set_bind_group(0, &bind_group, &[]);
                    let [x, y, z] = chunk.groups;
                    pass.dispatch_workgroups(x, y, z);
                    counters::record_launches(1);
                    uniforms.push(uniform);
                }
            }
        }
        self.queue.submit([encoder.finish()]);
        self.give_back_uniforms(uniforms);
        Ok(())
    }
}
