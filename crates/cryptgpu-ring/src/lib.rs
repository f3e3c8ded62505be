//! The ring Z_2^64 and its fixed-point encoding of real numbers.
//!
//! # The ring
//!
//! Secret shares live in Z_2^64, the integers modulo 2^64. A ring element is a
//! plain `u64` ([`RingElem`]), and the ring operations are `u64`'s wrapping
//! methods: [`u64::wrapping_add`], [`u64::wrapping_sub`],
//! [`u64::wrapping_mul`] and [`u64::wrapping_neg`]. They never panic.
//! [`to_signed`] and [`from_signed`] give the two's complement view of an
//! element as an `i64` in `[-2^63, 2^63)`, and [`arith_shift_right`] /
//! [`logical_shift_right`] shift it.
//!
//! # Fixed point
//!
//! A [`FixedPoint`] format with `f` fractional bits (0..=62, default
//! [`DEFAULT_FRAC_BITS`] = 20) encodes a real `v` as `round(v * 2^f)` in two's
//! complement and decodes `x` as `to_signed(x) / 2^f`. Encodings add with the
//! ring addition; a product of two encodings carries `2f` fractional bits and
//! is brought back to `f` by [`FixedPoint::truncate`], an arithmetic shift
//! right by `f` ([`FixedPoint::mul`] does both).
//!
//! # Range and precision
//!
//! - Representable values: `[-2^(63-f), 2^(63-f) - 2^-f]`
//!   ([`FixedPoint::max_abs`] = `2^(63-f)`), about ±8.8e12 for `f = 20`.
//!   [`FixedPoint::encode`] returns [`RingError::OutOfRange`] outside this
//!   range and [`RingError::NotFinite`] for NaN and infinities; it never wraps.
//! - Resolution `2^-f` (about 9.5e-7 for `f = 20`); encoding errs by at most
//!   `2^-(f+1)`. Decoding is exact while the encoding is below `2^53` in
//!   magnitude.
//! - Products must satisfy roughly `|a * b| < 2^(63-2f)` (about 8.4e6 for
//!   `f = 20`), or the ring product wraps; [`FixedPoint::checked_mul`] detects
//!   this. Their error is bounded by [`FixedPoint::product_error_bound`].
//!
//! # Example
//!
//! ```
//! use cryptgpu_ring::{FixedPoint, RingError};
//!
//! let fp = FixedPoint::default(); // 20 fractional bits
//! let a = fp.encode(1.5)?;
//! let b = fp.encode(-2.25)?;
//!
//! // Addition is the ring's wrapping addition.
//! assert_eq!(fp.decode(a.wrapping_add(b)), -0.75);
//!
//! // Multiplication is the ring product followed by truncation.
//! let c = fp.mul(a, b);
//! assert_eq!(fp.decode(c), -3.375);
//!
//! // Bad input is an error, not a panic or a silent wrap.
//! assert!(matches!(fp.encode(f64::NAN), Err(RingError::NotFinite { .. })));
//! assert!(matches!(fp.encode(1e13), Err(RingError::OutOfRange { .. })));
//! # Ok::<(), RingError>(())
//! ```

#![forbid(unsafe_code)]

mod error;
mod fixed;
mod ring;

pub use error::RingError;
pub use fixed::{DEFAULT_FRAC_BITS, FixedPoint, MAX_FRAC_BITS};
pub use ring::{RingElem, arith_shift_right, from_signed, logical_shift_right, to_signed};
