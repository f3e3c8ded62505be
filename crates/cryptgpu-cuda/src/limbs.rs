//! The arithmetic behind the two cuBLAS ring GEMMs, on the host: limb decompositions, how
//! long a slice of the inner dimension one floating-point or int32 GEMM may take while
//! staying exact, and the recombination mod 2^64. The kernels in `kernels/gemm.cu` mirror
//! these functions line by line, and [`simulate_gemm`] runs the whole device pipeline
//! (same layouts, same chunking, same GEMM shapes) with plain loops, so the tests prove the
//! method bit-exact on the CPU without a GPU.
//!
//! # The method
//! Write every ring element as `x = Σ_l x_l · 2^(w·l) (mod 2^64)` with `L` limbs of `w`
//! bits. Then, mod 2^64,
//!
//! ```text
//! a · b = Σ_{i+j < L} a_i b_j 2^(w(i+j))        (terms with i + j ≥ L are multiples of 2^64)
//! (A·B)[r][c] = Σ_s 2^(w·s) · C_s[r][c],   C_s = Σ_{i+j=s} A_i · B_j
//! ```
//!
//! and `C_s` is one GEMM of inner dimension `(s + 1)·k`: the row `[A_0 | A_1 | .. | A_s]`
//! against the column `[B_s ; B_{s-1} ; .. ; B_0]`. Storing each row of A as its limbs
//! `0..L` side by side and each column of B as its limbs in reverse order (`L-1 .. 0`)
//! makes both of those contiguous: a prefix of the A row and a suffix of the B column. So
//! `L` GEMMs compute all `L(L+1)/2` limb products, with no wasted ones.
//!
//! - [`Scheme::Int8`] (tensor cores): `L = 8`, `w = 8`, balanced digits in `[-128, 127]`
//!   ([`split_i8`]); int8 × int8 products summed in int32.
//! - [`Scheme::Fp64`] (CryptGPU's method): `L = 4`, `w = 16`, blocks in `[0, 2^16)` held in
//!   float64 ([`split_f64`]); sums in float64, exact while below 2^53.
//!
//! # Exactness
//! The inner dimension is cut into chunks of at most [`Scheme::max_chunk`] columns, padded
//! with zeros to a multiple of [`PAD`]; each chunk's `C_s` is recombined into the u64
//! result, and the chunks' results are added mod 2^64.
//!
//! - Int8: a product of two digits lies in `[-128·127, 128·128] = [-16256, 16384]`, so
//!   `|d·e| ≤ 2^14`. `C_s` of a chunk of padded length `kcp` sums `(s+1)·kcp ≤ 8·kcp` such
//!   products, and every partial sum of them (in any order, as a GEMM may add) is bounded
//!   by the sum of the magnitudes: `|partial| ≤ 8·kcp·2^14`. With `kcp ≤ 16352`,
//!   `8·16352·2^14 = 2 143 289 344 < 2^31 - 1`: no int32 accumulator can overflow, and
//!   `C_s` is exact.
//! - Fp64: a block product lies in `[0, (2^16-1)^2]`, all terms are non-negative, so every
//!   partial sum is an integer at most the total, `4·kcp·(2^16-1)^2`. With `kcp ≤ 2^19`
//!   that is below `2^53`, where every integer is a double, so every addition (or fused
//!   multiply-add) is exact and `C_s` converts to u64 exactly.

/// Padding granularity of the limb layouts: rows and chunk lengths are multiples of it
/// (the split kernel's tile, and aligned leading dimensions for the tensor cores).
pub const PAD: usize = 32;

/// The two limb decompositions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Eight signed 8-bit limbs; int8 GEMMs with int32 accumulation.
    Int8,
    /// Four unsigned 16-bit limbs in float64; DGEMMs.
    Fp64,
}

impl Scheme {
    /// Number of limbs `L`.
    pub const fn limbs(self) -> usize {
        match self {
            Scheme::Int8 => 8,
            Scheme::Fp64 => 4,
        }
    }

    /// Bits per limb `w`.
    pub const fn limb_bits(self) -> u32 {
        match self {
            Scheme::Int8 => 8,
            Scheme::Fp64 => 16,
        }
    }

    /// The largest magnitude of one limb product: `2^14` for int8 (`(-128)·(-128)`),
    /// `(2^16-1)^2` for fp64.
    pub const fn max_product(self) -> u64 {
        match self {
            Scheme::Int8 => 128 * 128,
            Scheme::Fp64 => 0xffff * 0xffff,
        }
    }

    /// The largest accumulator value that is still exact: `i32::MAX` for int8, `2^53` for
    /// fp64.
    pub const fn exact_limit(self) -> u64 {
        match self {
            Scheme::Int8 => i32::MAX as u64,
            Scheme::Fp64 => 1 << 53,
        }
    }

    /// The longest padded chunk of the inner dimension: the largest multiple of [`PAD`]
    /// with `L · kcp · max_product ≤ exact_limit` (the bound of the module docs).
    pub const fn max_chunk(self) -> usize {
        let per_column = self.limbs() as u64 * self.max_product();
        let most = self.exact_limit() / per_column;
        (most as usize / PAD) * PAD
    }
}

/// How the inner dimension `k` is cut: `chunks` chunks of `chunk_len` real columns (the
/// last may be shorter), each padded with zeros to `padded_len`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    /// Number of chunks (0 when `k` is 0).
    pub chunks: usize,
    /// Real columns per chunk.
    pub chunk_len: usize,
    /// Columns per chunk after padding: a multiple of [`PAD`], at most the scheme's
    /// [`Scheme::max_chunk`].
    pub padded_len: usize,
}

impl ChunkPlan {
    /// Chunks of nearly equal length, as few as the scheme's bound allows.
    pub fn new(scheme: Scheme, k: usize) -> Self {
        if k == 0 {
            return Self {
                chunks: 0,
                chunk_len: 0,
                padded_len: 0,
            };
        }
        let max = scheme.max_chunk();
        let chunks = k.div_ceil(max);
        // chunk_len ≤ max because chunks ≥ k / max; rounding up to PAD keeps it ≤ max
        // because max is a multiple of PAD.
        let chunk_len = k.div_ceil(chunks);
        Self {
            chunks,
            chunk_len,
            padded_len: chunk_len.next_multiple_of(PAD),
        }
    }

    /// The real columns `(first, count)` of chunk `index`.
    pub fn chunk(&self, index: usize, k: usize) -> (usize, usize) {
        let first = index * self.chunk_len;
        (first, self.chunk_len.min(k - first))
    }
}

/// The balanced base-256 digits of `x`: `d_l ∈ [-128, 127]` with
/// `Σ_l d_l · 256^l ≡ x (mod 2^64)`.
///
/// Digit by digit, `t = byte_l(x) + carry ∈ [0, 256]`; if `t ≥ 128` the digit is `t - 256`
/// (in `[-128, 0]`) and 1 is carried, else the digit is `t` (in `[0, 127]`). By induction
/// `Σ_{l<n} d_l 256^l + carry_n 256^n = x mod 256^n`; the last carry multiplies
/// `256^8 = 2^64` and vanishes mod 2^64. `kernels/gemm.cu` `digits_i8` is the same loop.
pub fn split_i8(x: u64) -> [i8; 8] {
    let mut carry = 0i32;
    std::array::from_fn(|l| {
        let t = ((x >> (8 * l)) & 0xff) as i32 + carry;
        carry = i32::from(t >= 128);
        (t - 256 * carry) as i8
    })
}

/// `Σ_l d_l · 256^l mod 2^64`: the inverse of [`split_i8`].
pub fn join_i8(digits: &[i8; 8]) -> u64 {
    digits.iter().enumerate().fold(0u64, |acc, (l, &d)| {
        acc.wrapping_add((d as i64 as u64) << (8 * l))
    })
}

/// The 16-bit blocks of `x` as doubles (exact: each is below 2^16).
pub fn split_f64(x: u64) -> [f64; 4] {
    std::array::from_fn(|l| ((x >> (16 * l)) & 0xffff) as f64)
}

/// `Σ_s C_s · 256^s mod 2^64` for int32 sums `C_s` (sign-extended): `recombine_i32`.
pub fn recombine_i32(sums: &[i32; 8]) -> u64 {
    sums.iter().enumerate().fold(0u64, |acc, (s, &c)| {
        acc.wrapping_add((c as i64 as u64) << (8 * s))
    })
}

/// `Σ_s C_s · 2^(16 s) mod 2^64` for exact non-negative integer sums `C_s < 2^53` held in
/// doubles: `recombine_f64`.
pub fn recombine_f64(sums: &[f64; 4]) -> u64 {
    sums.iter().enumerate().fold(0u64, |acc, (s, &c)| {
        acc.wrapping_add((c as u64) << (16 * s))
    })
}

/// The limb layout of one chunk of a matrix, as the split kernels write it: `[rows][L][kcp]`,
/// row `r`, slot `t`, column `kk`; slot `t` holds limb `t`, or limb `L-1-t` when
/// `reversed`; columns past the chunk are zero. `element(r, kk)` reads the source.
fn split_layout<T: Copy + Default>(
    rows: usize,
    plan: &ChunkPlan,
    (first, count): (usize, usize),
    limbs_of: impl Fn(u64) -> Vec<T>,
    element: impl Fn(usize, usize) -> u64,
    reversed: bool,
) -> Vec<T> {
    let (l_count, kcp) = (limbs_of(0).len(), plan.padded_len);
    let mut out = vec![T::default(); rows * l_count * kcp];
    for r in 0..rows {
        for kk in 0..count {
            for (l, limb) in limbs_of(element(r, first + kk)).into_iter().enumerate() {
                let slot = if reversed { l_count - 1 - l } else { l };
                out[(r * l_count + slot) * kcp + kk] = limb;
            }
        }
    }
    out
}

/// The device pipeline of `scheme` on the host: `a` (`m × k`) times `b` (`k × n`), both
/// row-major, mod 2^64, through exactly the chunks, limb layouts and GEMM shapes the CUDA
/// backend uses (`src/gemm.rs`), with each cuBLAS GEMM replaced by a loop that **panics if
/// an accumulator leaves its exact range** (int32 overflow, or a double sum that is not the
/// exact integer). Rows are not padded here: padded rows are zero and never read back.
pub fn simulate_gemm(scheme: Scheme, [m, k, n]: [usize; 3], a: &[u64], b: &[u64]) -> Vec<u64> {
    simulate_gemm_with_plan(scheme, ChunkPlan::new(scheme, k), m, k, n, a, b)
}

/// [`simulate_gemm`] with a given chunk plan (tests pass plans that break the bound, to
/// see the simulation notice).
pub fn simulate_gemm_with_plan(
    scheme: Scheme,
    plan: ChunkPlan,
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    b: &[u64],
) -> Vec<u64> {
    assert_eq!(a.len(), m * k, "a must be m × k");
    assert_eq!(b.len(), k * n, "b must be k × n");
    assert!(plan.chunks * plan.chunk_len >= k && plan.chunk_len <= plan.padded_len);
    let gemm = (m, k, n, a, b);
    let mut out = vec![0u64; m * n];
    for index in 0..plan.chunks {
        let chunk = plan.chunk(index, k);
        let recombined = match scheme {
            Scheme::Int8 => simulate_chunk(gemm, &plan, chunk, split_i8, dot_i8, recombine_i32),
            Scheme::Fp64 => simulate_chunk(gemm, &plan, chunk, split_f64, dot_f64, recombine_f64),
        };
        for (o, x) in out.iter_mut().zip(recombined) {
            *o = o.wrapping_add(x);
        }
    }
    out
}

/// One chunk of [`simulate_gemm_with_plan`] with `L` limbs of type `T`: A's rows and B's
/// columns split and laid out as on the device, each limb product `C_s` summed by `dot`
/// (which checks its accumulator), and every output element recombined from its `L` sums.
fn simulate_chunk<T: Copy + Default, S, const L: usize>(
    (m, k, n, a, b): (usize, usize, usize, &[u64], &[u64]),
    plan: &ChunkPlan,
    chunk: (usize, usize),
    split: fn(u64) -> [T; L],
    dot: impl Fn(&[T], &[T]) -> S,
    recombine: fn(&[S; L]) -> u64,
) -> Vec<u64> {
    let kcp = plan.padded_len;
    let limbs = |x: u64| split(x).to_vec();
    let a_split = split_layout(m, plan, chunk, limbs, |r, kk| a[r * k + kk], false);
    let b_split = split_layout(n, plan, chunk, limbs, |c, kk| b[kk * n + c], true);
    // Row r of A's split and column c of B's split, as the GEMM of C_s reads them: the
    // first (s+1)·kcp limbs of the A row, the B column from slot L-1-s on.
    let sum = |s: usize, r: usize, c: usize| {
        let a_row = &a_split[r * L * kcp..][..(s + 1) * kcp];
        let b_col = &b_split[c * L * kcp + (L - 1 - s) * kcp..][..(s + 1) * kcp];
        dot(a_row, b_col)
    };
    (0..m * n)
        .map(|i| recombine(&std::array::from_fn(|s| sum(s, i / n, i % n))))
        .collect()
}

/// The int32 sum of limb products of one int8 GEMM entry; panics on overflow.
fn dot_i8(x: &[i8], y: &[i8]) -> i32 {
    x.iter().zip(y).fold(0i32, |acc, (&x, &y)| {
        acc.checked_add(i32::from(x) * i32::from(y))
            .expect("int32 accumulator overflow: the chunk bound is wrong")
    })
}

/// The float64 sum of limb products of one fp64 GEMM entry, as `fma` accumulates it;
/// panics when it leaves the exact range.
fn dot_f64(x: &[f64], y: &[f64]) -> f64 {
    let (mut acc, mut exact) = (0f64, 0u128);
    for (&x, &y) in x.iter().zip(y) {
        acc = x.mul_add(y, acc);
        exact += (x as u128) * (y as u128);
        assert!(
            exact <= 1 << 53 && acc as u128 == exact,
            "float64 sum left the exact range: the chunk bound is wrong"
        );
    }
    acc
}
