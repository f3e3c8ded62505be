//! Multithreaded, cache-blocked, packed matrix product over the ring Z/2^64 (`u64` with
//! wrapping arithmetic), bit-exact with the naive triple loop.
//!
//! # Design
//!
//! BLIS-style: the `n` dimension is cut into blocks of [`NC`] columns, the depth `k` into blocks
//! of [`KC`]; for each (column block, depth block) the `KC × NC` block of `B` is packed once
//! into `NR`-column micro-panels (in parallel, by ranges of depth), then row blocks of at most
//! [`MC`] rows (and, when there are too few of them to feed every thread, column chunks) are
//! handed to rayon. Each task packs its `mc × kc` block of `A` into `MR`-row micro-panels
//! (zero-padded at the edges, so the microkernel never branches on the shape) and walks the
//! `NR`-panels (outer) and `MR`-panels (inner): a `B` micro-panel stays in L1/L2 while the
//! `A` block sits in L2. A full `MR × NR` tile is stored (first depth block) or added (later
//! ones, or `accumulate`) straight into `C` by the microkernel; an edge tile goes through a
//! scratch tile, of which only the valid part is written.
//!
//! Problems with `m·n·k` below [`SMALL_WORK`] use a plain serial loop; below
//! [`PARALLEL_WORK`] the blocked path runs on the calling thread only.
//!
//! # Microkernels and their ceiling
//!
//! One kernel is picked once per process ([`selected_kernel`]), best first:
//!
//! * `avx512-ifma` (AVX-512F + IFMA + VNNI), 4×16 tile. Write `a = a_l + 2^52·a_h` with
//!   `a_l < 2^52`, `a_h < 2^12` (same for `b`). Then
//!   `a·b mod 2^64 = lo52(a_l·b_l) + 2^52·(hi52(a_l·b_l) + a_l·b_h + a_h·b_l mod 2^12)`, and
//!   `a_l·b_h + a_h·b_l ≡ (a_l mod 2^12)·b_h + a_h·(b_l mod 2^12) (mod 2^12)`. `vpmadd52luq` /
//!   `vpmadd52huq` give `lo52` / `hi52` as fused multiply-adds into 64-bit accumulators (one
//!   each per 8 MACs); the two 12-bit cross products of *two* depth steps are packed as 16-bit
//!   words and done by a single `vpdpwssd` (dword accumulators; only their sum mod 2^12 is
//!   used, so wrap-around is harmless). Every step is linear, so the recombination
//!   `lo + ((hi + x₀ + x₁) << 52)` happens once per tile. Cost: 2.5 vector uops per 8 MACs.
//! * `avx512-dq`, 4×16 tile: `vpmullq` (3 uops) + `vpaddq` = 4 uops per 8 MACs.
//! * `avx2`, 4×4 tile: no 64-bit low multiply; `a·b = a₀b₀ + ((a₀b₁ + a₁b₀) << 32)` with three
//!   `vpmuludq`, the cross terms kept in their own accumulator and shifted once per tile.
//! * `portable`, 4×4 tile of plain `wrapping_mul`/`wrapping_add` (any architecture).
//!
//! On Sapphire Rapids every one of these vector instructions (and `vfmadd231pd`) issues on
//! ports 0 and 5 only, two 512-bit uops per cycle (measured: `vfmadd231pd`,
//! `vpmadd52[lh]uq`, `vpdpwssd`, `vpmuludq`, `vpaddq` at 0.5 cycle each, `vpmullq` at 1.5
//! cycles). An f64 GEMM does 8 MACs per uop, i.e. 16 MACs/cycle/core; the IFMA kernel needs
//! 2.5 uops per 8 MACs, i.e. at most 6.4 MACs/cycle/core = **40 %** of the f64 peak
//! (`vpmullq`: 4 MACs/cycle = 25 %). Half the f64 rate would take 2 uops per 8 MACs: the
//! `lo52`/`hi52` pair alone already costs that. On the 2-core development VM the kernel runs
//! at ~16–17 GMAC/s per core in L1 (ceiling ≈ 17.5 at 2.74 GHz) and the whole GEMM at
//! ~26–31 GMAC/s on two cores, 0.40–0.47× faer's f64 GEMM at n = 256…1024.
//!
//! The AVX-512 kernels are written with `asm!` rather than `#[target_feature]` intrinsics:
//! AVX-512 target features were stabilised in Rust 1.89, after the workspace MSRV (1.88).

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Depth of a packed block (the `k` extent of one pass of the microkernel). A `B` micro-panel
/// is `KC × 16 × 1.5` words = 96 KiB (L2), an `A` micro-panel 24 KiB.
pub const KC: usize = 512;
/// Maximum number of rows of `A` packed by one task (the packed `MC × KC` block, 768 KiB,
/// lives in L2).
pub const MC: usize = 128;
/// Number of columns of `B` packed at once (the packed `KC × NC` block, 6 MiB, lives in L3).
pub const NC: usize = 1024;
/// Below this many MACs (`m·n·k`) a plain serial triple loop is used.
pub const SMALL_WORK: usize = 32 * 32 * 32;
/// Below this many MACs the blocked path runs on the calling thread only.
pub const PARALLEL_WORK: usize = 96 * 96 * 96;

/// Parallel tasks per thread the blocked path aims for (row blocks, or column chunks when
/// the rows run out).
const TASKS_PER_THREAD: usize = 4;

/// Rows of every microkernel's tile.
const MR: usize = 4;
/// Largest `MR·NR` over all microkernels.
const TILE: usize = 64;

/// C = A·B (or C += A·B when `accumulate`) mod 2^64. A is m×k, B is k×n, given by element
/// strides (row stride, column stride) so that transposed operands cost nothing; C is
/// row-major m×n with leading dimension ldc.
///
/// Element `(i, p)` of `A` is `a[i * a_rs + p * a_cs]`, element `(p, j)` of `B` is
/// `b[p * b_rs + j * b_cs]` and element `(i, j)` of `C` is `c[i * ldc + j]`. Elements of `c`
/// outside the `m × n` window (the padding between `n` and `ldc`) are never touched. With
/// `k == 0` the product is zero: `C` is zeroed, or left as it is when accumulating.
///
/// Large problems run on the rayon thread pool; the result does not depend on the number of
/// threads (integer arithmetic mod 2^64 is exact).
///
/// # Panics
///
/// Panics when a slice is too short for the shape and strides it is given with (when
/// `m, k > 0`: `a.len() <= (m-1)·a_rs + (k-1)·a_cs`; when `k, n > 0`:
/// `b.len() <= (k-1)·b_rs + (n-1)·b_cs`; when `m, n > 0`: `c.len() < (m-1)·ldc + n`), when
/// `ldc < n` with more than one row, or when an index computation overflows `usize`.
pub fn gemm_u64(
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    a_rs: usize,
    a_cs: usize,
    b: &[u64],
    b_rs: usize,
    b_cs: usize,
    c: &mut [u64],
    ldc: usize,
    accumulate: bool,
) {
    gemm_with(
        selected(),
        None,
        m,
        k,
        n,
        Operand::new(a, a_rs, a_cs),
        Operand::new(b, b_rs, b_cs),
        c,
        ldc,
        accumulate,
    );
}

/// Row-major `C = A·B mod 2^64` for row-major `A` (m×k) and `B` (k×n), into a new vector.
///
/// # Panics
///
/// Panics when `a.len() != m·k` or `b.len() != k·n`, or when `m·n` overflows `usize`.
pub fn matmul_u64(a: &[u64], b: &[u64], m: usize, k: usize, n: usize) -> Vec<u64> {
    assert_eq!(Some(a.len()), m.checked_mul(k), "matmul_u64: a is not m×k");
    assert_eq!(Some(b.len()), k.checked_mul(n), "matmul_u64: b is not k×n");
    let len = m.checked_mul(n).expect("matmul_u64: m·n overflows usize");
    let mut c = vec![0u64; len];
    gemm_u64(m, k, n, a, k, 1, b, n, 1, &mut c, n, false);
    c
}

/// Name of the microkernel this process uses: `"avx512-ifma"`, `"avx512-dq"`, `"avx2"` or
/// `"portable"` (chosen once, at the first call, from run-time CPU feature detection).
pub fn selected_kernel() -> &'static str {
    selected().name
}

/// A read-only strided matrix operand.
#[derive(Clone, Copy)]
struct Operand<'a> {
    data: &'a [u64],
    rs: usize,
    cs: usize,
}

impl<'a> Operand<'a> {
    fn new(data: &'a [u64], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }

    /// Element `(i, j)`.
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> u64 {
        self.data[i * self.rs + j * self.cs]
    }

    /// The same matrix, transposed.
    fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// How a microkernel wants its micro-panels laid out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// Depth-major: `w` consecutive values per depth step.
    Plain,
    /// Per pair of depth steps: `w` values of step `2q`, `w` values of step `2q + 1`, then `w`
    /// words-packed 12-bit pieces for the IFMA kernel's cross term (see the module docs).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Split52,
}

/// Where a microkernel puts its `MR × NR` tile: row `i` goes to `rows[i][..NR]`, stored, or
/// added to what is there when `add`. Full tiles go straight into `C`; edge tiles into a
/// scratch tile whose valid part is then copied.
struct TileOut<'a> {
    rows: [&'a mut [u64]; MR],
    add: bool,
}

impl TileOut<'_> {
    /// Stores or adds `acc` (row-major, `NR` per row) into the rows (portable kernels).
    fn write<const NR: usize>(self, acc: &[[u64; NR]; MR]) {
        for (row, acc) in self.rows.into_iter().zip(acc) {
            let row = &mut row[..NR];
            if self.add {
                for (d, s) in row.iter_mut().zip(acc) {
                    *d = d.wrapping_add(*s);
                }
            } else {
                row.copy_from_slice(acc);
            }
        }
    }
}

/// A microkernel: computes the `MR × NR` tile `A_panel · B_panel` of depth `kc >= 1` into
/// `out`.
///
/// # Safety
///
/// The running CPU must support the target features of the kernel it belongs to. The
/// kernels check their slice lengths (panels and output rows) themselves.
type MicroFn = unsafe fn(kc: usize, a: &[u64], b: &[u64], out: TileOut<'_>);

/// A microkernel with its tile shape and packing format.
///
/// Invariant: a `&Kernel` is only ever obtained from [`available_kernels`], which checks at
/// run time that the CPU supports it; so calling `micro` on it is sound.
struct Kernel {
    name: &'static str,
    nr: usize,
    format: Format,
    micro: MicroFn,
}

impl Kernel {
    /// `u64`s in one packed micro-panel of width `w` and depth `kc`.
    fn panel_len(&self, w: usize, kc: usize) -> usize {
        match self.format {
            Format::Plain => kc * w,
            Format::Split52 => kc.div_ceil(2) * 3 * w,
        }
    }

    /// Depth steps of a packed panel of depth `kc`: one per depth (plain) or per pair.
    fn steps(&self, kc: usize) -> usize {
        match self.format {
            Format::Plain => kc,
            Format::Split52 => kc.div_ceil(2),
        }
    }

    /// Packs lanes `l0..l0 + lanes` (rows of `A`, or columns of `B` given transposed) at depth
    /// `p0..p0 + kc` of `src` into consecutive micro-panels, zero-padding the last panel's lanes
    /// up to the panel width ([`MR`] for `A`, `nr` for `B`). Each of `panels` holds the depth
    /// steps `s0..` of one panel (all the same number of steps), so that a panel can be packed
    /// in several pieces. `is_a` selects which side of the cross term the pieces are laid out
    /// for.
    fn pack(
        &self,
        panels: &mut [&mut [u64]],
        src: Operand<'_>,
        l0: usize,
        lanes: usize,
        p0: usize,
        kc: usize,
        s0: usize,
        is_a: bool,
    ) {
        let w = if is_a { MR } else { self.nr };
        let args = (panels, src, l0, lanes, p0, kc, s0, is_a);
        match (w, self.format) {
            (4, Format::Plain) => pack_panels::<4, false>(args),
            (16, Format::Plain) => pack_panels::<16, false>(args),
            (4, Format::Split52) => pack_panels::<4, true>(args),
            (16, Format::Split52) => pack_panels::<16, true>(args),
            _ => unreachable!("no kernel has panel width {w}"),
        }
    }
}

/// Depth step `p` (absolute) of lanes `l0..l0 + lanes` of `src`, zero-padded to `W` lanes.
#[inline(always)]
fn gather<const W: usize>(src: Operand<'_>, l0: usize, lanes: usize, p: usize) -> [u64; W] {
    let mut v = [0u64; W];
    let start = l0 * src.rs + p * src.cs;
    if lanes == W {
        if src.rs == 1 {
            v.copy_from_slice(&src.data[start..start + W]);
        } else {
            for (l, x) in v.iter_mut().enumerate() {
                *x = src.data[start + l * src.rs];
            }
        }
    } else {
        for (l, x) in v[..lanes].iter_mut().enumerate() {
            *x = src.data[start + l * src.rs];
        }
    }
    v
}

/// The arguments of [`Kernel::pack`].
type PackArgs<'p, 'q, 'a> = (
    &'p mut [&'q mut [u64]],
    Operand<'a>,
    usize,
    usize,
    usize,
    usize,
    usize,
    bool,
);

/// [`Kernel::pack`] for panel width `W`, in [`Format::Split52`] when `SPLIT`, else
/// [`Format::Plain`].
///
/// When the depth is contiguous in `src` (`A` row-major, `B` column-major), each lane is
/// read in one sequential run; otherwise (`B` row-major, `A` column-major) the lanes are
/// contiguous, and each depth step is gathered across all panels at once, reading one run
/// of `panels.len() · W` lanes (a whole row of a row-major `B`) instead of a short piece
/// of a new row, on a new page, per panel.
fn pack_panels<const W: usize, const SPLIT: bool>(args: PackArgs<'_, '_, '_>) {
    let (panels, src, l0, lanes, p0, kc, s0, is_a) = args;
    let step_len = if SPLIT { 3 * W } else { W };
    let Some(n_steps) = panels.first().map(|p| p.len() / step_len) else {
        return;
    };
    if src.cs == 1 && src.rs != 1 {
        for (pi, panel) in panels.iter_mut().enumerate() {
            let pl = W.min(lanes - pi * W);
            for l in 0..W {
                let lane = l0 + pi * W + l;
                let run: &[u64] = if l < pl {
                    let start = lane * src.rs + p0;
                    &src.data[start..start + kc]
                } else {
                    &[]
                };
                // The next lane's run (a new page, likely): ask for it now.
                if pi * W + l + 1 < lanes {
                    let next = (lane + 1) * src.rs + p0;
                    prefetch(src.data.get(next..next + kc).unwrap_or(&[]));
                }
                let steps = panel.chunks_exact_mut(step_len).zip(s0..);
                if SPLIT {
                    for (d, q) in steps {
                        let e0 = run.get(2 * q).copied().unwrap_or(0);
                        let e1 = run.get(2 * q + 1).copied().unwrap_or(0);
                        d[l] = e0;
                        d[W + l] = e1;
                        d[2 * W + l] = cross(e0, e1, is_a);
                    }
                } else {
                    for (d, p) in steps {
                        d[l] = run.get(p).copied().unwrap_or(0);
                    }
                }
            }
        }
        return;
    }
    for (i, s) in (s0..s0 + n_steps).enumerate() {
        // The next step's rows (on other pages, likely): ask for them now.
        if src.rs == 1 && i + 1 < n_steps {
            let d = if SPLIT { 2 } else { 1 };
            for p in p0 + d * (s + 1)..(p0 + d * (s + 2)).min(p0 + kc) {
                let start = l0 + p * src.cs;
                prefetch(src.data.get(start..start + lanes).unwrap_or(&[]));
            }
        }
        for (pi, panel) in panels.iter_mut().enumerate() {
            let (pl0, pl) = (l0 + pi * W, W.min(lanes - pi * W));
            let d = &mut panel[i * step_len..(i + 1) * step_len];
            if !SPLIT {
                d.copy_from_slice(&gather::<W>(src, pl0, pl, p0 + s));
                continue;
            }
            let v0 = gather::<W>(src, pl0, pl, p0 + 2 * s);
            let v1 = if 2 * s + 1 < kc {
                gather::<W>(src, pl0, pl, p0 + 2 * s + 1)
            } else {
                [0; W]
            };
            let mut x = [0u64; W];
            for ((x, &e0), &e1) in x.iter_mut().zip(&v0).zip(&v1) {
                *x = cross(e0, e1, is_a);
            }
            d[..W].copy_from_slice(&v0);
            d[W..2 * W].copy_from_slice(&v1);
            d[2 * W..].copy_from_slice(&x);
        }
    }
}

/// The 16-bit words the `vpdpwssd` cross term of depth steps `e0`, `e1` needs (see the module
/// docs): `[lo12(a₀), hi12(a₀), lo12(a₁), hi12(a₁)]` for `A`, `[hi12(b₀), lo12(b₀), hi12(b₁),
/// lo12(b₁)]` for `B`, so that each dword of the product sums `lo12(a)·hi12(b) +
/// hi12(a)·lo12(b)` for one depth step.
#[inline(always)]
fn cross(e0: u64, e1: u64, is_a: bool) -> u64 {
    if is_a {
        lo12(e0) | hi12(e0) << 16 | lo12(e1) << 32 | hi12(e1) << 48
    } else {
        hi12(e0) | lo12(e0) << 16 | hi12(e1) << 32 | lo12(e1) << 48
    }
}

#[inline(always)]
fn lo12(x: u64) -> u64 {
    x & 0xfff
}

#[inline(always)]
fn hi12(x: u64) -> u64 {
    x >> 52
}

static PORTABLE: Kernel = Kernel {
    name: "portable",
    nr: 4,
    format: Format::Plain,
    micro: micro_portable,
};

#[cfg(target_arch = "x86_64")]
static AVX512_IFMA: Kernel = Kernel {
    name: "avx512-ifma",
    nr: 16,
    format: Format::Split52,
    micro: x86::micro_ifma,
};

#[cfg(target_arch = "x86_64")]
static AVX512_DQ: Kernel = Kernel {
    name: "avx512-dq",
    nr: 16,
    format: Format::Plain,
    micro: x86::micro_dq,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernel = Kernel {
    name: "avx2",
    nr: 4,
    format: Format::Plain,
    micro: x86::micro_avx2,
};

/// Every kernel the running CPU supports, best first (the last is always `portable`).
fn available_kernels() -> Vec<&'static Kernel> {
    #[cfg(target_arch = "x86_64")]
    let simd = {
        let avx512 = is_x86_feature_detected!("avx512f");
        [
            (avx512
                && is_x86_feature_detected!("avx512ifma")
                && is_x86_feature_detected!("avx512vnni"))
            .then_some(&AVX512_IFMA),
            (avx512 && is_x86_feature_detected!("avx512dq")).then_some(&AVX512_DQ),
            is_x86_feature_detected!("avx2").then_some(&AVX2),
        ]
    };
    #[cfg(not(target_arch = "x86_64"))]
    let simd: [Option<&'static Kernel>; 0] = [];
    simd.into_iter().flatten().chain([&PORTABLE]).collect()
}

/// The kernel used by [`gemm_u64`], chosen once.
fn selected() -> &'static Kernel {
    static SELECTED: OnceLock<&'static Kernel> = OnceLock::new();
    SELECTED.get_or_init(|| available_kernels()[0])
}

/// The portable microkernel (any architecture).
fn micro_portable(kc: usize, a: &[u64], b: &[u64], out: TileOut<'_>) {
    const NR: usize = 4;
    let mut acc = [[0u64; NR]; MR];
    for (ap, bp) in a[..kc * MR]
        .chunks_exact(MR)
        .zip(b[..kc * NR].chunks_exact(NR))
    {
        for (row, &ai) in acc.iter_mut().zip(ap) {
            for (x, &bj) in row.iter_mut().zip(bp) {
                *x = x.wrapping_add(ai.wrapping_mul(bj));
            }
        }
    }
    out.write(&acc);
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! x86-64 microkernels. Each is an `unsafe fn` whose only precondition is that the CPU
    //! supports its instructions; slice lengths are checked here.

    use super::{MR, TileOut};
    use std::arch::asm;
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi64, _mm256_loadu_si256, _mm256_mul_epu32, _mm256_set1_epi64x,
        _mm256_setzero_si256, _mm256_slli_epi64, _mm256_srli_epi64, _mm256_storeu_si256,
    };

    /// `asm!` text zeroing zmm0..zmm7, the accumulators of a 4×16 tile (two per row).
    macro_rules! zero_zmm0_to_7 {
        () => {
            concat!(
                "vpxorq zmm0, zmm0, zmm0\n",
                "vpxorq zmm1, zmm1, zmm1\n",
                "vpxorq zmm2, zmm2, zmm2\n",
                "vpxorq zmm3, zmm3, zmm3\n",
                "vpxorq zmm4, zmm4, zmm4\n",
                "vpxorq zmm5, zmm5, zmm5\n",
                "vpxorq zmm6, zmm6, zmm6\n",
                "vpxorq zmm7, zmm7, zmm7",
            )
        };
    }

    /// `asm!` text ending a 4×16 tile kernel: the accumulators zmm0..zmm7 (two per row)
    /// are added to the rows `{c0}`..`{c3}` of C when `{add}` is nonzero, then stored
    /// there; `vzeroupper` restores the clean upper state before returning.
    macro_rules! store_tile_4x16 {
        () => {
            concat!(
                "test {add:e}, {add:e}\n",
                "jz 3f\n",
                "vpaddq zmm0, zmm0, zmmword ptr [{c0} + 0]\n",
                "vpaddq zmm1, zmm1, zmmword ptr [{c0} + 64]\n",
                "vpaddq zmm2, zmm2, zmmword ptr [{c1} + 0]\n",
                "vpaddq zmm3, zmm3, zmmword ptr [{c1} + 64]\n",
                "vpaddq zmm4, zmm4, zmmword ptr [{c2} + 0]\n",
                "vpaddq zmm5, zmm5, zmmword ptr [{c2} + 64]\n",
                "vpaddq zmm6, zmm6, zmmword ptr [{c3} + 0]\n",
                "vpaddq zmm7, zmm7, zmmword ptr [{c3} + 64]\n",
                "3:\n",
                "vmovdqu64 zmmword ptr [{c0} + 0], zmm0\n",
                "vmovdqu64 zmmword ptr [{c0} + 64], zmm1\n",
                "vmovdqu64 zmmword ptr [{c1} + 0], zmm2\n",
                "vmovdqu64 zmmword ptr [{c1} + 64], zmm3\n",
                "vmovdqu64 zmmword ptr [{c2} + 0], zmm4\n",
                "vmovdqu64 zmmword ptr [{c2} + 64], zmm5\n",
                "vmovdqu64 zmmword ptr [{c3} + 0], zmm6\n",
                "vmovdqu64 zmmword ptr [{c3} + 64], zmm7\n",
                "vzeroupper",
            )
        };
    }

    /// AVX-512 IFMA + VNNI microkernel, 4×16 tile, [`super::Format::Split52`] panels.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F, AVX-512IFMA and AVX-512VNNI.
    pub(super) unsafe fn micro_ifma(kc: usize, a: &[u64], b: &[u64], out: TileOut<'_>) {
        let kp = kc.div_ceil(2);
        assert!(kp > 0 && a.len() >= kp * 12 && b.len() >= kp * 48);
        let [c0, c1, c2, c3] = out.rows.map(|r| r[..16].as_mut_ptr());
        // SAFETY: the caller guarantees AVX-512F/IFMA/VNNI. The loop runs `kp >= 1` times and
        // reads 96 bytes of `a` and 384 bytes of `b` per iteration, in bounds by the assert
        // above; the epilogue reads (when adding) and writes 16 `u64`s at each `c*`, which
        // point to distinct live `&mut` rows of at least 16 elements (the `[..16]` above). All
        // accesses are unaligned loads/stores (`vmovdqu64`, `vpbroadcastq`, `vpaddq` with a
        // memory operand). Every vector register used is declared clobbered, and `vzeroupper`
        // restores the clean upper state before returning to (possibly SSE) compiled code.
        unsafe {
            asm!(
                zero_zmm0_to_7!(),
                "vpxorq zmm8, zmm8, zmm8",
                "vpxorq zmm9, zmm9, zmm9",
                "vpxorq zmm10, zmm10, zmm10",
                "vpxorq zmm11, zmm11, zmm11",
                "vpxorq zmm12, zmm12, zmm12",
                "vpxorq zmm13, zmm13, zmm13",
                "vpxorq zmm14, zmm14, zmm14",
                "vpxorq zmm15, zmm15, zmm15",
                "vpxorq zmm16, zmm16, zmm16",
                "vpxorq zmm17, zmm17, zmm17",
                "vpxorq zmm18, zmm18, zmm18",
                "vpxorq zmm19, zmm19, zmm19",
                "vpxorq zmm20, zmm20, zmm20",
                "vpxorq zmm21, zmm21, zmm21",
                "vpxorq zmm22, zmm22, zmm22",
                "vpxorq zmm23, zmm23, zmm23",
                "2:",
                "vmovdqu64 zmm24, zmmword ptr [{b} + 0]",
                "vmovdqu64 zmm25, zmmword ptr [{b} + 64]",
                "vpbroadcastq zmm28, qword ptr [{a} + 0]",
                "vpbroadcastq zmm29, qword ptr [{a} + 8]",
                "vpbroadcastq zmm30, qword ptr [{a} + 16]",
                "vpbroadcastq zmm31, qword ptr [{a} + 24]",
                "vpmadd52luq zmm0, zmm24, zmm28",
                "vpmadd52luq zmm1, zmm25, zmm28",
                "vpmadd52huq zmm8, zmm24, zmm28",
                "vpmadd52huq zmm9, zmm25, zmm28",
                "vpmadd52luq zmm2, zmm24, zmm29",
                "vpmadd52luq zmm3, zmm25, zmm29",
                "vpmadd52huq zmm10, zmm24, zmm29",
                "vpmadd52huq zmm11, zmm25, zmm29",
                "vpmadd52luq zmm4, zmm24, zmm30",
                "vpmadd52luq zmm5, zmm25, zmm30",
                "vpmadd52huq zmm12, zmm24, zmm30",
                "vpmadd52huq zmm13, zmm25, zmm30",
                "vpmadd52luq zmm6, zmm24, zmm31",
                "vpmadd52luq zmm7, zmm25, zmm31",
                "vpmadd52huq zmm14, zmm24, zmm31",
                "vpmadd52huq zmm15, zmm25, zmm31",
                "vmovdqu64 zmm26, zmmword ptr [{b} + 128]",
                "vmovdqu64 zmm27, zmmword ptr [{b} + 192]",
                "vpbroadcastq zmm28, qword ptr [{a} + 32]",
                "vpbroadcastq zmm29, qword ptr [{a} + 40]",
                "vpbroadcastq zmm30, qword ptr [{a} + 48]",
                "vpbroadcastq zmm31, qword ptr [{a} + 56]",
                "vpmadd52luq zmm0, zmm26, zmm28",
                "vpmadd52luq zmm1, zmm27, zmm28",
                "vpmadd52huq zmm8, zmm26, zmm28",
                "vpmadd52huq zmm9, zmm27, zmm28",
                "vpmadd52luq zmm2, zmm26, zmm29",
                "vpmadd52luq zmm3, zmm27, zmm29",
                "vpmadd52huq zmm10, zmm26, zmm29",
                "vpmadd52huq zmm11, zmm27, zmm29",
                "vpmadd52luq zmm4, zmm26, zmm30",
                "vpmadd52luq zmm5, zmm27, zmm30",
                "vpmadd52huq zmm12, zmm26, zmm30",
                "vpmadd52huq zmm13, zmm27, zmm30",
                "vpmadd52luq zmm6, zmm26, zmm31",
                "vpmadd52luq zmm7, zmm27, zmm31",
                "vpmadd52huq zmm14, zmm26, zmm31",
                "vpmadd52huq zmm15, zmm27, zmm31",
                "vmovdqu64 zmm24, zmmword ptr [{b} + 256]",
                "vmovdqu64 zmm25, zmmword ptr [{b} + 320]",
                "vpbroadcastq zmm28, qword ptr [{a} + 64]",
                "vpbroadcastq zmm29, qword ptr [{a} + 72]",
                "vpbroadcastq zmm30, qword ptr [{a} + 80]",
                "vpbroadcastq zmm31, qword ptr [{a} + 88]",
                "vpdpwssd zmm16, zmm24, zmm28",
                "vpdpwssd zmm17, zmm25, zmm28",
                "vpdpwssd zmm18, zmm24, zmm29",
                "vpdpwssd zmm19, zmm25, zmm29",
                "vpdpwssd zmm20, zmm24, zmm30",
                "vpdpwssd zmm21, zmm25, zmm30",
                "vpdpwssd zmm22, zmm24, zmm31",
                "vpdpwssd zmm23, zmm25, zmm31",
                "add {a}, 96",
                "add {b}, 384",
                "dec {n}",
                "jnz 2b",
                "vpsrlq zmm24, zmm16, 32",
                "vpaddq zmm8, zmm8, zmm16",
                "vpaddq zmm8, zmm8, zmm24",
                "vpsllq zmm8, zmm8, 52",
                "vpaddq zmm0, zmm0, zmm8",
                "vpsrlq zmm24, zmm17, 32",
                "vpaddq zmm9, zmm9, zmm17",
                "vpaddq zmm9, zmm9, zmm24",
                "vpsllq zmm9, zmm9, 52",
                "vpaddq zmm1, zmm1, zmm9",
                "vpsrlq zmm24, zmm18, 32",
                "vpaddq zmm10, zmm10, zmm18",
                "vpaddq zmm10, zmm10, zmm24",
                "vpsllq zmm10, zmm10, 52",
                "vpaddq zmm2, zmm2, zmm10",
                "vpsrlq zmm24, zmm19, 32",
                "vpaddq zmm11, zmm11, zmm19",
                "vpaddq zmm11, zmm11, zmm24",
                "vpsllq zmm11, zmm11, 52",
                "vpaddq zmm3, zmm3, zmm11",
                "vpsrlq zmm24, zmm20, 32",
                "vpaddq zmm12, zmm12, zmm20",
                "vpaddq zmm12, zmm12, zmm24",
                "vpsllq zmm12, zmm12, 52",
                "vpaddq zmm4, zmm4, zmm12",
                "vpsrlq zmm24, zmm21, 32",
                "vpaddq zmm13, zmm13, zmm21",
                "vpaddq zmm13, zmm13, zmm24",
                "vpsllq zmm13, zmm13, 52",
                "vpaddq zmm5, zmm5, zmm13",
                "vpsrlq zmm24, zmm22, 32",
                "vpaddq zmm14, zmm14, zmm22",
                "vpaddq zmm14, zmm14, zmm24",
                "vpsllq zmm14, zmm14, 52",
                "vpaddq zmm6, zmm6, zmm14",
                "vpsrlq zmm24, zmm23, 32",
                "vpaddq zmm15, zmm15, zmm23",
                "vpaddq zmm15, zmm15, zmm24",
                "vpsllq zmm15, zmm15, 52",
                "vpaddq zmm7, zmm7, zmm15",
                store_tile_4x16!(),
                a = inout(reg) a.as_ptr() => _,
                b = inout(reg) b.as_ptr() => _,
                n = inout(reg) kp => _,
                c0 = in(reg) c0,
                c1 = in(reg) c1,
                c2 = in(reg) c2,
                c3 = in(reg) c3,
                add = in(reg) u32::from(out.add),
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
                out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
                options(nostack),
            );
        }
    }

    /// AVX-512DQ microkernel (`vpmullq` + `vpaddq`), 4×16 tile, plain panels.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX-512F and AVX-512DQ.
    pub(super) unsafe fn micro_dq(kc: usize, a: &[u64], b: &[u64], out: TileOut<'_>) {
        assert!(kc > 0 && a.len() >= kc * 4 && b.len() >= kc * 16);
        let [c0, c1, c2, c3] = out.rows.map(|r| r[..16].as_mut_ptr());
        // SAFETY: the caller guarantees AVX-512F/DQ. The loop runs `kc >= 1` times and reads
        // 32 bytes of `a` and 128 bytes of `b` per iteration, in bounds by the assert above;
        // the epilogue reads (when adding) and writes 16 `u64`s at each `c*`, which point to
        // distinct live `&mut` rows of at least 16 elements. All accesses are unaligned; every
        // vector register used is declared clobbered; `vzeroupper` before returning.
        unsafe {
            asm!(
                zero_zmm0_to_7!(),
                "2:",
                "vmovdqu64 zmm16, zmmword ptr [{b}]",
                "vmovdqu64 zmm17, zmmword ptr [{b} + 64]",
                "vpmullq zmm20, zmm16, qword ptr [{a} + 0]{{1to8}}",
                "vpmullq zmm21, zmm17, qword ptr [{a} + 0]{{1to8}}",
                "vpmullq zmm22, zmm16, qword ptr [{a} + 8]{{1to8}}",
                "vpmullq zmm23, zmm17, qword ptr [{a} + 8]{{1to8}}",
                "vpmullq zmm24, zmm16, qword ptr [{a} + 16]{{1to8}}",
                "vpmullq zmm25, zmm17, qword ptr [{a} + 16]{{1to8}}",
                "vpmullq zmm26, zmm16, qword ptr [{a} + 24]{{1to8}}",
                "vpmullq zmm27, zmm17, qword ptr [{a} + 24]{{1to8}}",
                "vpaddq zmm0, zmm0, zmm20",
                "vpaddq zmm1, zmm1, zmm21",
                "vpaddq zmm2, zmm2, zmm22",
                "vpaddq zmm3, zmm3, zmm23",
                "vpaddq zmm4, zmm4, zmm24",
                "vpaddq zmm5, zmm5, zmm25",
                "vpaddq zmm6, zmm6, zmm26",
                "vpaddq zmm7, zmm7, zmm27",
                "add {a}, 32",
                "add {b}, 128",
                "dec {n}",
                "jnz 2b",
                store_tile_4x16!(),
                a = inout(reg) a.as_ptr() => _,
                b = inout(reg) b.as_ptr() => _,
                n = inout(reg) kc => _,
                c0 = in(reg) c0,
                c1 = in(reg) c1,
                c2 = in(reg) c2,
                c3 = in(reg) c3,
                add = in(reg) u32::from(out.add),
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm16") _, out("zmm17") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
                options(nostack),
            );
        }
    }

    /// AVX2 microkernel (32-bit split with `vpmuludq`), 4×4 tile, plain panels.
    ///
    /// # Safety
    ///
    /// The CPU must support AVX2.
    pub(super) unsafe fn micro_avx2(kc: usize, a: &[u64], b: &[u64], out: TileOut<'_>) {
        // SAFETY: the caller guarantees AVX2, the only target feature `avx2_impl` enables.
        unsafe { avx2_impl(kc, a, b, out) }
    }

    #[target_feature(enable = "avx2")]
    fn avx2_impl(kc: usize, a: &[u64], b: &[u64], out: TileOut<'_>) {
        let zero = _mm256_setzero_si256();
        // a·b = a0·b0 + ((a0·b1 + a1·b0) << 32) mod 2^64: `lo` accumulates a0·b0, `x` the
        // cross terms, shifted once at the end (the shift is linear mod 2^64).
        let mut lo = [zero; MR];
        let mut x = [zero; MR];
        for (ap, bp) in a[..kc * MR]
            .chunks_exact(MR)
            .zip(b[..kc * 4].chunks_exact(4))
        {
            // SAFETY: `bp` holds exactly 4 `u64`s, one unaligned 256-bit load.
            let bv: __m256i = unsafe { _mm256_loadu_si256(bp.as_ptr().cast()) };
            let bh = _mm256_srli_epi64::<32>(bv);
            for i in 0..MR {
                let av = _mm256_set1_epi64x(ap[i] as i64);
                let ah = _mm256_srli_epi64::<32>(av);
                lo[i] = _mm256_add_epi64(lo[i], _mm256_mul_epu32(av, bv));
                let cross = _mm256_add_epi64(_mm256_mul_epu32(av, bh), _mm256_mul_epu32(ah, bv));
                x[i] = _mm256_add_epi64(x[i], cross);
            }
        }
        let mut acc = [[0u64; 4]; MR];
        for (i, o) in acc.iter_mut().enumerate() {
            let r = _mm256_add_epi64(lo[i], _mm256_slli_epi64::<32>(x[i]));
            // SAFETY: `o` is 4 `u64`s, one unaligned 256-bit store.
            unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), r) };
        }
        out.write(&acc);
    }
}

/// Checks that the slices cover the shapes and strides (see [`gemm_u64`]'s panics).
fn check_shapes(
    m: usize,
    k: usize,
    n: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    c_len: usize,
    ldc: usize,
) {
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows - 1)
            .checked_mul(rs)
            .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)))
            .expect("gemm_u64: index overflows usize")
    };
    if m > 0 && k > 0 {
        assert!(
            last(m, k, a.rs, a.cs) < a.data.len(),
            "gemm_u64: a is too short for m×k"
        );
    }
    if k > 0 && n > 0 {
        assert!(
            last(k, n, b.rs, b.cs) < b.data.len(),
            "gemm_u64: b is too short for k×n"
        );
    }
    if m > 0 && n > 0 {
        assert!(m == 1 || ldc >= n, "gemm_u64: ldc < n");
        assert!(
            last(m, n, ldc, 1) < c_len,
            "gemm_u64: c is too short for m×n with ldc"
        );
    }
}

/// [`gemm_u64`] with an explicit kernel and, optionally, thread count (tests use these to
/// cover every kernel and both the serial and parallel paths).
fn gemm_with(
    kern: &Kernel,
    threads: Option<usize>,
    m: usize,
    k: usize,
    n: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    c: &mut [u64],
    ldc: usize,
    accumulate: bool,
) {
    check_shapes(m, k, n, a, b, c.len(), ldc);
    if m == 0 || n == 0 {
        return;
    }
    let rows = split_rows(c, m, n, ldc);
    if k == 0 {
        if !accumulate {
            rows.into_iter().for_each(|r| r.fill(0));
        }
        return;
    }
    let work = m.saturating_mul(n).saturating_mul(k);
    if threads.is_none() && work < SMALL_WORK {
        gemm_naive(k, a, b, rows, accumulate);
        return;
    }
    let threads = threads.unwrap_or(if work < PARALLEL_WORK {
        1
    } else {
        rayon::current_num_threads()
    });
    gemm_packed(kern, threads.max(1), m, k, n, a, b, rows, accumulate);
}

/// Splits the `m × n` window of `c` into disjoint row slices of length `n`.
fn split_rows(c: &mut [u64], m: usize, n: usize, ldc: usize) -> Vec<&mut [u64]> {
    let mut rows = Vec::with_capacity(m);
    let mut rest = c;
    for i in 0..m {
        let take = if i + 1 < m { ldc } else { n };
        let (row, tail) = std::mem::take(&mut rest).split_at_mut(take);
        rows.push(&mut row[..n]);
        rest = tail;
    }
    rows
}

/// The plain triple loop, for small problems.
fn gemm_naive(k: usize, a: Operand<'_>, b: Operand<'_>, rows: Vec<&mut [u64]>, accumulate: bool) {
    for (i, row) in rows.into_iter().enumerate() {
        for (j, x) in row.iter_mut().enumerate() {
            let mut s = 0u64;
            for p in 0..k {
                s = s.wrapping_add(a.at(i, p).wrapping_mul(b.at(p, j)));
            }
            *x = if accumulate { x.wrapping_add(s) } else { s };
        }
    }
}

thread_local! {
    /// Per-thread buffers for packed blocks of `A` and `B`, reused across calls. They are
    /// taken out while in use and put back afterwards, so a nested call on the same thread
    /// (rayon may run another `gemm_u64` while this one waits) just allocates its own.
    static PACKED_A: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
    static PACKED_B: Cell<Vec<u64>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's buffer `key`, grown to at least `len` elements (contents
/// unspecified).
fn with_buffer<R>(
    key: &'static std::thread::LocalKey<Cell<Vec<u64>>>,
    len: usize,
    f: impl FnOnce(&mut [u64]) -> R,
) -> R {
    let mut buf = key.take();
    if buf.len() < len {
        buf = vec![0; len];
    }
    let r = f(&mut buf[..len]);
    key.set(buf);
    r
}

/// One unit of parallel work: rows `i0..i0 + rows.len()` of `C` times the `B` micro-panels
/// `p0..` of the current packed block; `rows` hold exactly the columns of those panels.
struct Task<'r> {
    i0: usize,
    p0: usize,
    rows: Vec<&'r mut [u64]>,
}

/// The blocked, packed path.
fn gemm_packed(
    kern: &Kernel,
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    a: Operand<'_>,
    b: Operand<'_>,
    mut rows: Vec<&mut [u64]>,
    accumulate: bool,
) {
    let nr = kern.nr;
    // Enough row blocks for every thread to get a few (so that a thread that starts late, or is
    // preempted, still finds work), but no more than MC rows each.
    let mc = if threads > 1 {
        m.div_ceil(TASKS_PER_THREAD * threads)
            .next_multiple_of(MR)
            .clamp(MR, MC)
    } else {
        MC
    };
    let row_blocks = m.div_ceil(mc);
    let bt = b.t();
    let nc_max = n.min(NC).next_multiple_of(nr);
    with_buffer(&PACKED_B, kern.panel_len(nc_max, KC.min(k)), |packed_b| {
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            let n_panels = nc.div_ceil(nr);
            // Too few row blocks to feed the threads: also cut the columns.
            let col_chunks = if threads > 1 && row_blocks < TASKS_PER_THREAD * threads {
                (TASKS_PER_THREAD * threads)
                    .div_ceil(row_blocks)
                    .min(n_panels)
            } else {
                1
            };
            let panels_per_chunk = n_panels.div_ceil(col_chunks);
            for pc in (0..k).step_by(KC) {
                let kc = KC.min(k - pc);
                let bl = kern.panel_len(nr, kc);
                let packed_b = &mut packed_b[..n_panels * bl];
                pack_b_block(kern, threads, packed_b, bt, jc, nc, pc, kc);
                let packed_b = &*packed_b;

                let mut tasks = Vec::with_capacity(row_blocks * col_chunks);
                for (rb, block) in rows.chunks_mut(mc).enumerate() {
                    let (chunk_cols, block_rows) = (panels_per_chunk * nr, block.len());
                    let mut segs: Vec<Vec<&mut [u64]>> = Vec::new();
                    for row in block.iter_mut() {
                        let pieces = row[jc..jc + nc].chunks_mut(chunk_cols);
                        segs.resize_with(pieces.len(), || Vec::with_capacity(block_rows));
                        for (seg, piece) in segs.iter_mut().zip(pieces) {
                            seg.push(piece);
                        }
                    }
                    for (cc, rows) in segs.into_iter().enumerate() {
                        tasks.push(Task {
                            i0: rb * mc,
                            p0: cc * panels_per_chunk,
                            rows,
                        });
                    }
                }
                let overwrite = pc == 0 && !accumulate;
                let run = |task| run_task(kern, a, pc, kc, packed_b, bl, task, overwrite);
                if threads > 1 && tasks.len() > 1 {
                    tasks.into_par_iter().for_each(run);
                } else {
                    tasks.into_iter().for_each(run);
                }
            }
        }
    });
}

/// Packs columns `jc..jc + nc`, depth `pc..pc + kc` of `B` (given transposed, as `bt`) into
/// `packed` (`nc.div_ceil(nr)` micro-panels), split across the threads by ranges of depth
/// steps, each over every panel (see `pack_panels`).
fn pack_b_block(
    kern: &Kernel,
    threads: usize,
    packed: &mut [u64],
    bt: Operand<'_>,
    jc: usize,
    nc: usize,
    pc: usize,
    kc: usize,
) {
    let bl = kern.panel_len(kern.nr, kc);
    let steps = kern.steps(kc);
    let step_len = bl / steps;
    let parts = if threads > 1 {
        (2 * threads).min(steps)
    } else {
        1
    };
    let per_part = steps.div_ceil(parts) * step_len;
    let mut jobs: Vec<Vec<&mut [u64]>> = Vec::new();
    for panel in packed.chunks_exact_mut(bl) {
        let pieces = panel.chunks_mut(per_part);
        jobs.resize_with(pieces.len(), Vec::new);
        for (job, piece) in jobs.iter_mut().zip(pieces) {
            job.push(piece);
        }
    }
    let pack = |(t, mut pieces): (usize, Vec<&mut [u64]>)| {
        kern.pack(
            &mut pieces,
            bt,
            jc,
            nc,
            pc,
            kc,
            t * per_part / step_len,
            false,
        );
    };
    if threads > 1 && jobs.len() > 1 {
        jobs.into_par_iter().enumerate().for_each(pack);
    } else {
        jobs.into_iter().enumerate().for_each(pack);
    }
}

/// Asks for the cache lines of `s` (into L2), so that they arrive while other work runs.
#[inline(always)]
fn prefetch(s: &[u64]) {
    #[cfg(target_arch = "x86_64")]
    for chunk in s.chunks(8) {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        // SAFETY: a prefetch is only a hint: it never faults and has no architectural effect;
        // the pointer points into a live slice anyway. SSE is part of the x86-64 baseline.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(chunk.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = s;
}

/// Packs this task's block of `A` and runs the microkernel over its tiles.
fn run_task(
    kern: &Kernel,
    a: Operand<'_>,
    pc: usize,
    kc: usize,
    packed_b: &[u64],
    bl: usize,
    mut task: Task<'_>,
    overwrite: bool,
) {
    let (mr, nr) = (MR, kern.nr);
    let mrows = task.rows.len();
    let Some(width) = task.rows.first().map(|r| r.len()) else {
        return;
    };
    let n_panels = width.div_ceil(nr);
    let al = kern.panel_len(mr, kc);
    let a_panels = mrows.div_ceil(mr);
    with_buffer(&PACKED_A, a_panels * al, |apack| {
        let mut panels: Vec<&mut [u64]> = apack.chunks_exact_mut(al).collect();
        kern.pack(&mut panels, a, task.i0, mrows, pc, kc, 0, true);
        let mut scratch = [0u64; TILE];
        for jp in 0..n_panels {
            let pi = task.p0 + jp;
            let bpanel = &packed_b[pi * bl..(pi + 1) * bl];
            let col0 = jp * nr;
            let ncols = nr.min(width - col0);
            for (ip, apanel) in apack.chunks_exact(al).enumerate() {
                let r0 = ip * mr;
                let nrows = mr.min(mrows - r0);
                for row in &task.rows[r0..r0 + nrows] {
                    prefetch(&row[col0..col0 + ncols]);
                }
                if nrows == MR && ncols == nr {
                    // A full tile: straight into C.
                    let rows: &mut [&mut [u64]; MR] =
                        (&mut task.rows[r0..r0 + MR]).try_into().expect("MR rows");
                    let rows = rows.each_mut().map(|r| &mut r[col0..col0 + nr]);
                    let out = TileOut {
                        rows,
                        add: !overwrite,
                    };
                    // SAFETY: `kern` came from `available_kernels`, which only returns kernels
                    // whose target features were detected on this CPU (the `Kernel`
                    // invariant); the kernel checks the slice lengths itself.
                    unsafe { (kern.micro)(kc, apanel, bpanel, out) };
                    continue;
                }
                // An edge tile: into the scratch tile, then its valid part into C.
                let mut chunks = scratch.chunks_exact_mut(nr);
                let rows = [(); MR].map(|()| chunks.next().expect("TILE >= MR·NR"));
                // SAFETY: as for the full tile: `kern` is supported by this CPU (`Kernel`
                // invariant), and the kernel checks the slice lengths itself.
                unsafe { (kern.micro)(kc, apanel, bpanel, TileOut { rows, add: false }) };
                for (i, row) in task.rows[r0..r0 + nrows].iter_mut().enumerate() {
                    let dst = &mut row[col0..col0 + ncols];
                    let src = &scratch[i * nr..i * nr + ncols];
                    if overwrite {
                        dst.copy_from_slice(src);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d = d.wrapping_add(*s);
                        }
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: a tiny deterministic generator, enough for test data.
    struct SplitMix64(u64);

    impl SplitMix64 {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// `len` nonzero values.
        fn vec(&mut self, len: usize) -> Vec<u64> {
            (0..len).map(|_| self.next() | 1).collect()
        }
    }

    /// Naive reference over strided operands, into row-major `c` with `ldc`.
    fn reference(
        m: usize,
        k: usize,
        n: usize,
        a: Operand<'_>,
        b: Operand<'_>,
        c: &mut [u64],
        ldc: usize,
        accumulate: bool,
    ) {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0u64;
                for p in 0..k {
                    s = s.wrapping_add(a.at(i, p).wrapping_mul(b.at(p, j)));
                }
                let x = &mut c[i * ldc + j];
                *x = if accumulate { x.wrapping_add(s) } else { s };
            }
        }
    }

    /// Runs one shape through every available kernel, serial and parallel, plus the public
    /// entry point; row-major, transposed and padded layouts; overwrite and accumulate.
    fn check(m: usize, k: usize, n: usize, seed: u64) {
        let mut rng = SplitMix64(seed);
        let a_rm = rng.vec(m * k);
        let b_rm = rng.vec(k * n);
        // Transposed copies (column-major storage of the same matrices).
        let mut a_cm = vec![0; m * k];
        let mut b_cm = vec![0; k * n];
        for i in 0..m {
            for p in 0..k {
                a_cm[p * m + i] = a_rm[i * k + p];
            }
        }
        for p in 0..k {
            for j in 0..n {
                b_cm[j * k + p] = b_rm[p * n + j];
            }
        }
        let layouts = [
            (Operand::new(&a_rm, k, 1), Operand::new(&b_rm, n, 1)),
            (Operand::new(&a_cm, 1, m), Operand::new(&b_cm, 1, k)),
        ];
        let ldc = n + 3;
        let c0 = rng.vec(m * ldc);
        for (li, &(a, b)) in layouts.iter().enumerate() {
            for accumulate in [false, true] {
                let mut want = c0.clone();
                reference(m, k, n, a, b, &mut want, ldc, accumulate);
                let mut got = c0.clone();
                gemm_u64(
                    m, k, n, a.data, a.rs, a.cs, b.data, b.rs, b.cs, &mut got, ldc, accumulate,
                );
                assert!(
                    got == want,
                    "gemm_u64 {m}×{k}×{n} layout {li} acc {accumulate}"
                );
                if li == 1 && m * n * k > 200_000 {
                    continue; // the big case: every kernel on one layout is enough
                }
                for kern in available_kernels() {
                    for threads in [1, 3] {
                        let mut got = c0.clone();
                        gemm_with(
                            kern,
                            Some(threads),
                            m,
                            k,
                            n,
                            a,
                            b,
                            &mut got,
                            ldc,
                            accumulate,
                        );
                        assert!(
                            got == want,
                            "{} threads={threads} {m}×{k}×{n} layout {li} acc {accumulate}",
                            kern.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn small_and_odd_shapes() {
        let shapes = [
            (1, 1, 1),
            (1, 7, 1),
            (1, 5, 40),
            (40, 5, 1),
            (2, 1, 3),
            (7, 13, 5),
            (5, 2, 17),
            (16, 1, 16),
            (4, 3, 16),
            (33, 65, 17),
            (17, 33, 65),
            (64, 64, 64),
        ];
        for (s, &(m, k, n)) in shapes.iter().enumerate() {
            check(m, k, n, s as u64 + 1);
        }
    }

    #[test]
    fn shapes_crossing_blocks() {
        // k crosses KC (odd remainders exercise the padded depth pair), m crosses MC and
        // splits into uneven row blocks, n crosses NC with a ragged last panel.
        check(MC + 5, KC + 3, 37, 11);
        check(9, 2 * KC + 1, 21, 12);
        check(3, 40, NC + 17, 13);
        check(130, 7, 70, 14);
    }

    #[test]
    fn large_square() {
        check(300, 300, 300, 21);
    }

    #[test]
    fn extreme_values() {
        // Values that stress the 52/12-bit split: all ones, high bit only, 2^52 ± 1, ...
        let vals = [
            u64::MAX,
            1 << 63,
            (1 << 52) - 1,
            1 << 52,
            (1 << 52) + 1,
            0xfff,
            1,
        ];
        let (m, k, n) = (9, 70, 19);
        let pick = |i: usize| vals[(i * 7 + i / 3) % vals.len()];
        let a: Vec<u64> = (0..m * k).map(pick).collect();
        let b: Vec<u64> = (0..k * n).map(|i| pick(i + 3)).collect();
        let mut want = vec![0; m * n];
        reference(
            m,
            k,
            n,
            Operand::new(&a, k, 1),
            Operand::new(&b, n, 1),
            &mut want,
            n,
            false,
        );
        for kern in available_kernels() {
            let mut got = vec![0; m * n];
            let (ao, bo) = (Operand::new(&a, k, 1), Operand::new(&b, n, 1));
            gemm_with(kern, Some(2), m, k, n, ao, bo, &mut got, n, false);
            assert!(got == want, "{}", kern.name);
        }
    }

    #[test]
    fn k_zero_and_empty() {
        let mut c = vec![5u64; 6];
        gemm_u64(2, 0, 3, &[], 0, 1, &[], 3, 1, &mut c, 3, true);
        assert_eq!(c, vec![5; 6]);
        gemm_u64(2, 0, 3, &[], 0, 1, &[], 3, 1, &mut c, 3, false);
        assert_eq!(c, vec![0; 6]);
        // Padding between n and ldc is left alone.
        let mut c = vec![5u64; 5];
        gemm_u64(2, 0, 2, &[], 0, 1, &[], 2, 1, &mut c, 3, false);
        assert_eq!(c, vec![0, 0, 5, 0, 0]);
        let mut c: Vec<u64> = vec![];
        gemm_u64(0, 4, 3, &[], 4, 1, &[0; 12], 3, 1, &mut c, 3, false);
        assert!(matmul_u64(&[1, 2], &[], 2, 1, 0).is_empty());
    }

    #[test]
    fn broadcast_strides_and_matmul() {
        // Zero strides: A is the all-`x` matrix; B a single repeated column.
        let (m, k, n) = (40, 50, 45);
        let x = 0xdead_beef_1234_5678u64;
        let mut rng = SplitMix64(99);
        let col = rng.vec(k);
        let mut c = vec![0; m * n];
        gemm_u64(m, k, n, &[x], 0, 0, &col, 1, 0, &mut c, n, false);
        let s = col
            .iter()
            .fold(0u64, |acc, &v| acc.wrapping_add(x.wrapping_mul(v)));
        assert!(c.iter().all(|&v| v == s));

        let a = rng.vec(m * k);
        let b = rng.vec(k * n);
        let mut want = vec![0; m * n];
        reference(
            m,
            k,
            n,
            Operand::new(&a, k, 1),
            Operand::new(&b, n, 1),
            &mut want,
            n,
            false,
        );
        assert_eq!(matmul_u64(&a, &b, m, k, n), want);
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn short_slice_panics() {
        let mut c = vec![0; 4];
        gemm_u64(
            2,
            2,
            2,
            &[1, 2, 3],
            2,
            1,
            &[1, 2, 3, 4],
            2,
            1,
            &mut c,
            2,
            false,
        );
    }

    #[test]
    fn kernel_is_selected() {
        let names: Vec<_> = available_kernels().iter().map(|k| k.name).collect();
        assert_eq!(selected_kernel(), names[0]);
        assert_eq!(*names.last().unwrap(), "portable");
    }
}
