//! Fixed-point encoding of real numbers into the ring Z_2^64.
//!
//! A real `v` is encoded with `f` fractional bits as the integer
//! `round(v * 2^f)` (round half away from zero), stored in two's complement as
//! a [`RingElem`]. See [`FixedPoint`] for the range and precision of the
//! format.

use crate::error::RingError;
use crate::ring::{RingElem, arith_shift_right, from_signed, to_signed};

/// The default number of fractional bits, used by [`FixedPoint::default`].
pub const DEFAULT_FRAC_BITS: u32 = 20;

/// The largest number of fractional bits [`FixedPoint::new`] accepts.
///
/// With 62 fractional bits the format still holds values in `[-2, 2)`.
pub const MAX_FRAC_BITS: u32 = 62;

/// `-2^63` as an `f64` (exactly representable).
const RING_MIN_F64: f64 = -9_223_372_036_854_775_808.0;
/// `2^63` as an `f64` (exactly representable); encodings must stay strictly below it.
const RING_END_F64: f64 = 9_223_372_036_854_775_808.0;

/// `2^e` as an exact `f64`, for `e <= 63`.
fn pow2(e: u32) -> f64 {
    (1u64 << e) as f64
}

/// A fixed-point format over Z_2^64 with `f` fractional bits.
///
/// A real `v` is represented by the ring element `round(v * 2^f)` (two's
/// complement), and a ring element `x` stands for `to_signed(x) / 2^f`.
/// Addition and subtraction of encodings are the ring's wrapping addition and
/// subtraction; multiplication is the ring product followed by
/// [`truncate`](Self::truncate) (see [`mul`](Self::mul)).
///
/// # Range
///
/// The encodings are the integers in `[-2^63, 2^63)`, so the representable
/// values are `[-2^(63-f), 2^(63-f) - 2^-f]` in steps of `2^-f`;
/// [`max_abs`](Self::max_abs) is `2^(63-f)`. [`encode`](Self::encode) rejects
/// anything that would round outside this range with
/// [`RingError::OutOfRange`]; it never wraps.
///
/// A product of two encodings carries `2f` fractional bits before truncation,
/// so it only fits while `|a * b| < 2^(63-2f)` (more precisely while the product
/// of the two encoded integers lies in `[-2^63, 2^63)`). Beyond that, the ring
/// product wraps: [`mul`](Self::mul) wraps like the ring does, and
/// [`checked_mul`](Self::checked_mul) reports [`RingError::ProductOverflow`].
///
/// # Precision
///
/// - The resolution is `2^-f` ([`resolution`](Self::resolution)); encoding
///   rounds to the nearest multiple, so it errs by at most `2^-(f+1)`.
/// - [`decode`](Self::decode) is exact while the encoded integer has
///   magnitude at most `2^53`; beyond that, converting it to `f64` rounds
///   (relative error at most `2^-53`). Values that came from
///   [`encode`](Self::encode) always decode exactly to the rounded value.
/// - A fixed-point product errs by at most
///   [`product_error_bound`](Self::product_error_bound).
///
/// | `f` | resolution `2^-f`   | `max_abs` = `2^(63-f)`         | product limit `2^(63-2f)` |
/// |-----|---------------------|--------------------------------|---------------------------|
/// | 12  | 2.44e-4             | 2^51 ≈ 2.25e15                 | 2^39 ≈ 5.50e11            |
/// | 16  | 1.53e-5             | 2^47 ≈ 1.41e14                 | 2^31 ≈ 2.15e9             |
/// | 20  | 9.54e-7             | 2^43 ≈ 8.80e12                 | 2^23 ≈ 8.39e6             |
/// | 26  | 1.49e-8             | 2^37 ≈ 1.37e11                 | 2^11 = 2048               |
/// | 30  | 9.31e-10            | 2^33 ≈ 8.59e9                  | 2^3 = 8                   |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FixedPoint {
    frac_bits: u32,
}

impl Default for FixedPoint {
    /// The format with [`DEFAULT_FRAC_BITS`] (20) fractional bits.
    fn default() -> Self {
        Self {
            frac_bits: DEFAULT_FRAC_BITS,
        }
    }
}

impl FixedPoint {
    /// A format with `frac_bits` fractional bits.
    ///
    /// # Errors
    ///
    /// [`RingError::InvalidFracBits`] unless `frac_bits` is in
    /// `0..=`[`MAX_FRAC_BITS`] (0..=62).
    pub const fn new(frac_bits: u32) -> Result<Self, RingError> {
        if frac_bits > MAX_FRAC_BITS {
            return Err(RingError::InvalidFracBits {
                frac_bits,
                max: MAX_FRAC_BITS,
            });
        }
        Ok(Self { frac_bits })
    }

    /// The number of fractional bits `f`.
    #[must_use]
    pub const fn frac_bits(&self) -> u32 {
        self.frac_bits
    }

    /// The scale factor `2^f` (exact).
    #[must_use]
    pub fn scale(&self) -> f64 {
        pow2(self.frac_bits)
    }

    /// The resolution `2^-f`, the distance between neighbouring values (exact).
    #[must_use]
    pub fn resolution(&self) -> f64 {
        1.0 / self.scale()
    }

    /// The largest magnitude representable, `2^(63-f)` (exact).
    ///
    /// The representable values are `[-max_abs, max_abs - 2^-f]`. The upper
    /// end needs 63 significant bits and is not itself an `f64`: the largest
    /// `f64` that encodes is `max_abs.next_down()`, i.e. `max_abs * (1 - 2^-53)`.
    #[must_use]
    pub fn max_abs(&self) -> f64 {
        pow2(63 - self.frac_bits)
    }

    /// Encodes `v` as `round(v * 2^f)` (half away from zero) in two's complement.
    ///
    /// The scaling by `2^f` is exact in `f64`, so the only rounding is the
    /// final one to an integer, with error at most `1/2` (i.e. `2^-(f+1)` in
    /// value). Values of magnitude at least `2^(52-f)` are already multiples of
    /// `2^-f` and encode exactly.
    ///
    /// # Errors
    ///
    /// - [`RingError::NotFinite`] for NaN and infinities.
    /// - [`RingError::OutOfRange`] if the rounded encoding lies outside
    ///   `[-2^63, 2^63)`, i.e. `v` is outside `[-max_abs, max_abs)` (near the
    ///   bounds `f64` spacing is far coarser than `2^-f`, so rounding never
    ///   moves a value across them).
    pub fn encode(&self, v: f64) -> Result<RingElem, RingError> {
        if !v.is_finite() {
            return Err(RingError::NotFinite { value: v });
        }
        // Multiplying by a power of two is exact (or overflows to infinity,
        // which the range check below rejects).
        let r = (v * self.scale()).round();
        if (RING_MIN_F64..RING_END_F64).contains(&r) {
            // `r` is an integer in [-2^63, 2^63), so the cast is exact.
            Ok(from_signed(r as i64))
        } else {
            Err(RingError::OutOfRange {
                value: v,
                max_abs: self.max_abs(),
            })
        }
    }

    /// Decodes `x` as `to_signed(x) / 2^f`.
    ///
    /// Exact while `|to_signed(x)| <= 2^53`; beyond that the conversion of the
    /// integer to `f64` rounds to nearest (relative error at most `2^-53`).
    /// Division by `2^f` itself is exact.
    #[must_use]
    pub fn decode(&self, x: RingElem) -> f64 {
        to_signed(x) as f64 / self.scale()
    }

    /// Encodes every element of `values` (see [`encode`](Self::encode)).
    ///
    /// # Errors
    ///
    /// The first failing element's error, with its position:
    /// [`RingError::NotFiniteAt`] or [`RingError::OutOfRangeAt`].
    pub fn encode_slice(&self, values: &[f64]) -> Result<Vec<RingElem>, RingError> {
        values
            .iter()
            .enumerate()
            .map(|(index, &v)| self.encode(v).map_err(|e| e.at(index)))
            .collect()
    }

    /// Decodes every element of `xs` (see [`decode`](Self::decode)).
    #[must_use]
    pub fn decode_slice(&self, xs: &[RingElem]) -> Vec<f64> {
        xs.iter().map(|&x| self.decode(x)).collect()
    }

    /// Truncates a product carrying `2f` fractional bits back to `f` bits.
    ///
    /// This is the exact plaintext truncation: an arithmetic shift right by
    /// `f`, i.e. floor division of the signed view by `2^f`. (Secret-shared
    /// truncation protocols approximate it, typically up to one unit in the
    /// last place.)
    #[must_use]
    pub const fn truncate(&self, x: RingElem) -> RingElem {
        arith_shift_right(x, self.frac_bits)
    }

    /// The plaintext fixed-point product: `truncate(a.wrapping_mul(b))`.
    ///
    /// This is what the ring computes. It is correct only while the product
    /// of the encodings fits, roughly `|a * b| < 2^(63-2f)` in value;
    /// otherwise the ring product wraps before truncation and the result is
    /// garbage. Use [`checked_mul`](Self::checked_mul) to detect that. Within
    /// range, the error is at most
    /// [`product_error_bound`](Self::product_error_bound).
    #[must_use]
    pub const fn mul(&self, a: RingElem, b: RingElem) -> RingElem {
        self.truncate(a.wrapping_mul(b))
    }

    /// Like [`mul`](Self::mul), but detects a product that would wrap.
    ///
    /// # Errors
    ///
    /// [`RingError::ProductOverflow`] if the exact product of the signed
    /// encodings (computed in `i128`) lies outside `[-2^63, 2^63)`.
    pub fn checked_mul(&self, a: RingElem, b: RingElem) -> Result<RingElem, RingError> {
        let (sa, sb) = (to_signed(a), to_signed(b));
        let p = i128::from(sa) * i128::from(sb);
        match i64::try_from(p) {
            Ok(p) => Ok(self.truncate(from_signed(p))),
            Err(_) => Err(RingError::ProductOverflow {
                a: sa,
                b: sb,
                frac_bits: self.frac_bits,
            }),
        }
    }

    /// A bound on `|decode(mul(encode(a), encode(b))) - a * b|`.
    ///
    /// Valid when both encodings succeed and their product fits (i.e.
    /// [`checked_mul`](Self::checked_mul) succeeds). Each encoding errs by at
    /// most `h = 2^-(f+1)`, so the product of the encoded values errs by at
    /// most `(|a| + |b|) * h + h^2`; the floor in the truncating shift adds
    /// less than `2^-f`. The bound is that sum plus `|a * b| * 2^-52`, one
    /// slack term for the `f64` rounding of a reference product `a * b` and
    /// of the decoded result:
    ///
    /// `(|a| + |b|) * 2^-(f+1) + 2^-(2f+2) + 2^-f + |a * b| * 2^-52`
    ///
    /// Returns NaN if `a` or `b` is NaN.
    #[must_use]
    pub fn product_error_bound(&self, a: f64, b: f64) -> f64 {
        let h = 0.5 * self.resolution();
        (a.abs() + b.abs()) * h + h * h + self.resolution() + (a * b).abs() * f64::EPSILON
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(f: u32) -> FixedPoint {
        FixedPoint::new(f).unwrap()
    }

    #[test]
    fn frac_bits_bounds() {
        assert_eq!(fp(0).frac_bits(), 0);
        assert_eq!(fp(62).frac_bits(), 62);
        assert_eq!(
            FixedPoint::new(63),
            Err(RingError::InvalidFracBits {
                frac_bits: 63,
                max: 62
            })
        );
        assert!(FixedPoint::new(u32::MAX).is_err());
        assert_eq!(FixedPoint::default().frac_bits(), DEFAULT_FRAC_BITS);
        assert_eq!(DEFAULT_FRAC_BITS, 20);
    }

    #[test]
    fn scale_resolution_max_abs() {
        let d = FixedPoint::default();
        assert_eq!(d.scale(), 1048576.0);
        assert_eq!(d.resolution(), 1.0 / 1048576.0);
        assert_eq!(d.max_abs(), 8_796_093_022_208.0);
        assert_eq!(fp(0).max_abs(), 9_223_372_036_854_775_808.0);
        assert_eq!(fp(62).max_abs(), 2.0);
        assert_eq!(fp(62).scale(), 4_611_686_018_427_387_904.0);
    }

    #[test]
    fn encode_basic_and_negative() {
        let d = FixedPoint::default();
        assert_eq!(d.encode(0.0), Ok(0));
        assert_eq!(d.encode(-0.0), Ok(0));
        assert_eq!(d.encode(1.0), Ok(1 << 20));
        assert_eq!(d.encode(-1.0), Ok(from_signed(-(1 << 20))));
        assert_eq!(d.decode(d.encode(-3.25).unwrap()), -3.25);
        // Round half away from zero.
        let f0 = fp(0);
        assert_eq!(f0.encode(2.5), Ok(3));
        assert_eq!(f0.encode(-2.5), Ok(from_signed(-3)));
        assert_eq!(f0.encode(2.4999), Ok(2));
        assert_eq!(f0.encode(-0.4), Ok(0));
    }

    #[test]
    fn encode_extremes() {
        for f in [0, 1, 12, 20, 30, 52, 53, 62] {
            let p = fp(f);
            let m = p.max_abs();
            // Most negative representable value: encodes to i64::MIN.
            assert_eq!(p.encode(-m), Ok(from_signed(i64::MIN)), "f={f}");
            assert_eq!(p.decode(from_signed(i64::MIN)), -m);
            // Largest f64 below max_abs is representable.
            let below = m.next_down();
            let e = p.encode(below).unwrap();
            assert!(to_signed(e) > 0, "f={f}");
            assert_eq!(p.decode(e), below, "f={f}");
            // Just past the bounds.
            assert_eq!(
                p.encode(m),
                Err(RingError::OutOfRange {
                    value: m,
                    max_abs: m
                }),
                "f={f}"
            );
            assert!(p.encode(m.next_up()).is_err());
            assert!(p.encode(-m.next_up()).is_err());
            assert!(p.encode(f64::MAX).is_err());
            assert!(p.encode(f64::MIN).is_err());
        }
        // The largest encoding, 2^63 - 1, is not an exact f64 (63 significant
        // bits): decoding it rounds up to max_abs.
        let p = fp(62);
        assert_eq!(p.decode(from_signed(i64::MAX)), 2.0);
        assert_eq!(
            p.encode(2.0f64.next_down()),
            Ok(from_signed(i64::MAX - 1023))
        );
    }

    #[test]
    fn encode_rounding_at_boundary() {
        // With f = 62, -2 - 2^-63 is not an f64; the nearest values below -2 are
        // rejected, values just above are fine.
        let p = fp(62);
        assert!(p.encode((-2.0f64).next_up()).is_ok());
        assert!(p.encode((-2.0f64).next_down()).is_err());
        // Tiny values round to zero, no error.
        assert_eq!(p.encode(f64::MIN_POSITIVE), Ok(0));
        assert_eq!(p.encode(5e-324), Ok(0));
    }

    #[test]
    fn non_finite() {
        let d = FixedPoint::default();
        assert!(matches!(
            d.encode(f64::NAN),
            Err(RingError::NotFinite { value }) if value.is_nan()
        ));
        assert_eq!(
            d.encode(f64::INFINITY),
            Err(RingError::NotFinite {
                value: f64::INFINITY
            })
        );
        assert_eq!(
            d.encode(f64::NEG_INFINITY),
            Err(RingError::NotFinite {
                value: f64::NEG_INFINITY
            })
        );
    }

    #[test]
    fn slices() {
        let d = FixedPoint::default();
        let xs = d.encode_slice(&[1.0, -2.5, 0.125]).unwrap();
        assert_eq!(d.decode_slice(&xs), vec![1.0, -2.5, 0.125]);
        assert_eq!(d.encode_slice(&[]), Ok(vec![]));
        assert_eq!(
            d.encode_slice(&[1.0, 2.0, 1e300, f64::NAN]),
            Err(RingError::OutOfRangeAt {
                index: 2,
                value: 1e300,
                max_abs: d.max_abs()
            })
        );
        assert_eq!(
            d.encode_slice(&[1.0, f64::INFINITY]),
            Err(RingError::NotFiniteAt {
                index: 1,
                value: f64::INFINITY
            })
        );
    }

    #[test]
    fn truncate_and_mul() {
        let d = FixedPoint::default();
        let a = d.encode(1.5).unwrap();
        let b = d.encode(-2.25).unwrap();
        assert_eq!(d.decode(d.mul(a, b)), -3.375);
        assert_eq!(d.checked_mul(a, b), Ok(d.mul(a, b)));
        // Floor semantics: -1 (2f bits) truncates to -1, not 0.
        assert_eq!(d.truncate(u64::MAX), u64::MAX);
        assert_eq!(d.truncate(from_signed(-(1 << 21))), from_signed(-2));
        // f = 0: truncation is the identity.
        assert_eq!(fp(0).truncate(12345), 12345);
    }

    #[test]
    fn checked_mul_overflow() {
        let d = FixedPoint::default();
        // 2^12 * 2^12 = 2^24 > 2^23: the 40-bit-fraction product needs 2^64.
        let a = d.encode(4096.0).unwrap();
        assert_eq!(
            d.checked_mul(a, a),
            Err(RingError::ProductOverflow {
                a: 1 << 32,
                b: 1 << 32,
                frac_bits: 20
            })
        );
        // mul wraps: 2^64 mod 2^64 = 0.
        assert_eq!(d.mul(a, a), 0);
        // Exactly -2^63 fits; +2^63 does not.
        let p = fp(0);
        let m = from_signed(i64::MIN);
        assert_eq!(p.checked_mul(m, 1), Ok(m));
        assert!(p.checked_mul(m, u64::MAX).is_err());
    }

    #[test]
    fn error_bound_holds_on_examples() {
        let d = FixedPoint::default();
        for (a, b) in [
            (0.1, 0.2),
            (-1.3, 7.77),
            (1000.001, -0.0003),
            (2896.0, 2896.0),
        ] {
            let got = d.decode(
                d.checked_mul(d.encode(a).unwrap(), d.encode(b).unwrap())
                    .unwrap(),
            );
            assert!(
                (got - a * b).abs() <= d.product_error_bound(a, b),
                "{a} * {b}"
            );
        }
        assert!(d.product_error_bound(f64::NAN, 1.0).is_nan());
    }

    #[test]
    fn error_display() {
        let e = RingError::OutOfRangeAt {
            index: 3,
            value: 1e20,
            max_abs: 8.0,
        };
        assert!(e.to_string().contains("index 3"));
    }
}
