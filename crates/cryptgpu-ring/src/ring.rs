//! The ring Z_2^64 on plain `u64` with wrapping arithmetic.
//!
//! A ring element is a [`RingElem`], which is just `u64`. The ring
//! operations are `u64`'s own wrapping methods:
//!
//! | ring operation | `u64` method        |
//! |----------------|---------------------|
//! | `a + b`        | [`u64::wrapping_add`] |
//! | `a - b`        | [`u64::wrapping_sub`] |
//! | `a * b`        | [`u64::wrapping_mul`] |
//! | `-a`           | [`u64::wrapping_neg`] |
//!
//! All of them reduce modulo 2^64 and never panic. The functions here add the
//! signed (two's complement) view of an element and shifts.

/// An element of the ring Z_2^64: a `u64` combined with wrapping arithmetic.
pub type RingElem = u64;

/// Reads a ring element as a signed integer in `[-2^63, 2^63)` (two's complement).
///
/// This is the inverse of [`from_signed`]; it is a bit-level reinterpretation.
#[inline]
#[must_use]
pub const fn to_signed(x: RingElem) -> i64 {
    x as i64
}

/// Maps a signed integer to the ring (two's complement, i.e. reduction mod 2^64).
///
/// This is a ring homomorphism from `i64` with wrapping arithmetic: for
/// example `from_signed(a).wrapping_add(from_signed(b)) == from_signed(a.wrapping_add(b))`.
#[inline]
#[must_use]
pub const fn from_signed(x: i64) -> RingElem {
    x as u64
}

/// Arithmetic (sign-extending) shift right of the signed view of `x` by `s` bits.
///
/// This is floor division of [`to_signed`]`(x)` by `2^s`. A shift of 64 or more
/// saturates instead of panicking: the result is all sign bits (`0` or `u64::MAX`),
/// the same as a shift by 63.
#[inline]
#[must_use]
pub const fn arith_shift_right(x: RingElem, s: u32) -> RingElem {
    let s = if s > 63 { 63 } else { s };
    from_signed(to_signed(x) >> s)
}

/// Logical (zero-filling) shift right of `x` by `s` bits.
///
/// A shift of 64 or more gives `0` instead of panicking.
#[inline]
#[must_use]
pub const fn logical_shift_right(x: RingElem, s: u32) -> RingElem {
    if s > 63 { 0 } else { x >> s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_view_round_trips() {
        for x in [0i64, 1, -1, i64::MIN, i64::MAX, 12345, -98765] {
            assert_eq!(to_signed(from_signed(x)), x);
        }
        assert_eq!(from_signed(-1), u64::MAX);
        assert_eq!(to_signed(1 << 63), i64::MIN);
    }

    #[test]
    fn shifts() {
        assert_eq!(arith_shift_right(from_signed(-8), 2), from_signed(-2));
        assert_eq!(arith_shift_right(from_signed(-7), 1), from_signed(-4));
        assert_eq!(arith_shift_right(from_signed(7), 1), 3);
        assert_eq!(arith_shift_right(from_signed(-7), 64), u64::MAX);
        assert_eq!(arith_shift_right(from_signed(7), 200), 0);
        assert_eq!(logical_shift_right(u64::MAX, 60), 0xF);
        assert_eq!(logical_shift_right(u64::MAX, 64), 0);
        assert_eq!(logical_shift_right(5, 0), 5);
    }
}
