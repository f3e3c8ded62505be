//! The crate's error type, [`RingError`].

use thiserror::Error;

/// Everything that can go wrong in this crate.
///
/// Bad input never panics and never wraps silently: it comes back as one of
/// these variants.
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum RingError {
    /// A fixed-point format was requested with more fractional bits than
    /// [`MAX_FRAC_BITS`](crate::MAX_FRAC_BITS) allows.
    #[error("invalid number of fractional bits {frac_bits}: must be in 0..={max}")]
    InvalidFracBits {
        /// The number of fractional bits asked for.
        frac_bits: u32,
        /// The largest number accepted.
        max: u32,
    },

    /// The value to encode is NaN or infinite.
    #[error("cannot encode non-finite value {value}")]
    NotFinite {
        /// The offending value.
        value: f64,
    },

    /// The value to encode rounds to an integer outside `[-2^63, 2^63)`.
    #[error("value {value} is out of the fixed-point range (magnitude at most {max_abs})")]
    OutOfRange {
        /// The offending value.
        value: f64,
        /// The format's [`max_abs`](crate::FixedPoint::max_abs).
        max_abs: f64,
    },

    /// Element `index` of a slice is NaN or infinite.
    #[error("cannot encode non-finite value {value} at index {index}")]
    NotFiniteAt {
        /// Position of the offending element in the slice.
        index: usize,
        /// The offending value.
        value: f64,
    },

    /// Element `index` of a slice rounds to an integer outside `[-2^63, 2^63)`.
    #[error(
        "value {value} at index {index} is out of the fixed-point range (magnitude at most {max_abs})"
    )]
    OutOfRangeAt {
        /// Position of the offending element in the slice.
        index: usize,
        /// The offending value.
        value: f64,
        /// The format's [`max_abs`](crate::FixedPoint::max_abs).
        max_abs: f64,
    },

    /// The product of two encodings (carrying `2f` fractional bits) does not
    /// fit in a signed 64-bit integer, so the ring product would wrap.
    #[error(
        "fixed-point product {a} * {b} (as signed encodings) overflows 64 bits with {frac_bits} fractional bits"
    )]
    ProductOverflow {
        /// The first factor's encoding, read as signed.
        a: i64,
        /// The second factor's encoding, read as signed.
        b: i64,
        /// The format's number of fractional bits.
        frac_bits: u32,
    },
}

impl RingError {
    /// Attaches a slice position to a per-element encoding error.
    pub(crate) fn at(self, index: usize) -> Self {
        match self {
            RingError::NotFinite { value } => RingError::NotFiniteAt { index, value },
            RingError::OutOfRange { value, max_abs } => RingError::OutOfRangeAt {
                index,
                value,
                max_abs,
            },
            other => other,
        }
    }
}
