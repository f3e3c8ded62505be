//! Non-linear protocols on 2-out-of-3 replicated shares, written once for any
//! [`GpuBackend`](cryptgpu_backend::GpuBackend): comparisons, DReLU and ReLU, max and
//! argmax, max- and average-pooling with their backward passes, and exp, reciprocal,
//! division, softmax, log, inverse square root and sigmoid by iteration.
//!
//! Everything builds on the binary sharing of `cryptgpu_share::binary`: the sign of a
//! shared value comes from a carry tree over its bits (7 rounds), and a shared bit scales a
//! shared value by bit injection (2 rounds). Each function is a free function taking the
//! calling [`Party`](cryptgpu_share::Party); all three parties call it in the same order.
//!
//! # Communication
//!
//! Rounds are the longest chain of messages, measured on the counting transport; bytes are
//! those one party sends, per element, for n a multiple of 64 (bit counts otherwise round
//! up to whole 64-bit words). [`cost`] has every formula, and the tests check them.
//! Comparisons, ReLU and max-pooling truncate nothing; the rest depends on the party's
//! [`Truncation`](cryptgpu_share::Truncation) mode (exact by default).
//!
//! | op | rounds | bytes sent per element: P0 | P1 | P2 |
//! | --- | --- | --- | --- | --- |
//! | [`drelu`], [`lt`], [`gt`], [`le`], [`ge`] (and `*_public`) | 7 | 13 | 10.125 | 10.125 |
//! | [`relu`] | 8 | 29 | 18.125 | 18.125 |
//! | [`relu_backward`] | 2 | 16 | 8 | 8 |
//! | [`max_pool2d`] 2×2 (keeping the winners), per output element | 17 | 87.25 | 54.625 | 54.625 |
//! | [`max_pool2d_values`] 2×2 (inference), per output element | 16 | 87 | 54.375 | 54.375 |
//! | [`max_pool2d_backward`] 2×2, per output element | 2 | 64 | 32 | 32 |
//! | [`avg_pool2d`], [`global_avg_pool`], per output element: exact (probabilistic) | 1 | 16 (8) | 4 (0) | 4 (0) |
//! | [`softmax`] over 10 classes, per row: exact (probabilistic) | 79 (65) | 2325 (1333) | 1555.125 (1059.125) | 1555.125 (1059.125) |
//!
//! Comparisons are exact for values in the party's comparison domain [−2^ℓ, 2^ℓ), both
//! edges included, with ℓ = 63 − f by default (`Party::comparison_bits`): 43 at f = 20,
//! real values in [−2^23, 2^23), which covers every value a product can make before exact
//! truncation fails. That holds for lt/gt/le/ge (shared, and public with any threshold,
//! which is clamped into the domain), DReLU, ReLU, max, argmax and max-pooling (padded with
//! the domain's floor −2^ℓ): the MSB under them covers [−2^(ℓ+1), 2^(ℓ+1)), every
//! difference of two values of the domain. Outside the domain a result is silently wrong
//! for some values (periodically), with no error; see [`compare`]. The figures above are
//! for the default; ℓ = 62 (the MSB over the whole ring) costs 19 / 15.125 / 15.125 bytes
//! per DReLU element, in the same 7 rounds.
//!
//! For comparison, CryptGPU's ReLU takes about 53 sequential messages (its carry-select
//! adder over 8-bit blocks, then a 3-party OT and a multiplication). The functions by
//! iteration ([`approx`]) list their rounds, bytes, domains and errors in their own table,
//! and so do the functions of transformer layers ([`transformer`]: erf, GELU, a wide-range
//! inverse square root and LayerNorm).

#![forbid(unsafe_code)]

pub mod approx;
pub mod compare;
pub mod cost;
mod error;
pub mod pool;
pub mod transformer;

#[cfg(feature = "suite")]
pub mod suite;

pub use approx::{
    ExpOptions, InvSqrtOptions, LogOptions, ReciprocalOptions, SigmoidOptions, SoftmaxOptions, div,
    exp, inv_sqrt, log, reciprocal, sigmoid, softmax,
};
pub use compare::{
    Relu, abs, drelu, ge, ge_public, gt, gt_public, gt_threshold_bounds, le, le_public, lt,
    lt_public, lt_threshold_bounds, relu, relu_backward, relu_value, select,
};
pub use error::{NonlinearError, Result};
pub use pool::{
    Max, MaxPool, argmax, avg_pool2d, avg_pool2d_backward, gate_winners, global_avg_pool,
    global_avg_pool_backward, max, max_pool2d, max_pool2d_backward, max_pool2d_values,
};
pub use transformer::{
    Gelu, InvSqrtWideOptions, erf, erf_f64, erf_parts, erf_slope, gelu, gelu_f64, gelu_parts,
    gelu_slope, inv_sqrt_wide, layer_norm, layer_norm_backward, layer_norm_parts, polynomial,
};
