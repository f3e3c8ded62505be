//! Property tests for the ring laws and the fixed-point encoding.

use cryptgpu_ring::{FixedPoint, RingError, from_signed, to_signed};
use proptest::prelude::*;

/// `2^e` for a possibly negative exponent (exact for the ranges used here).
fn pow2(e: i32) -> f64 {
    2f64.powi(e)
}

/// A value in `[-max_abs, max_abs)` for `f`, spread over many magnitudes:
/// `u * 2^(63 - f - k)` with `u` uniform in `[-1, 1)`.
fn value_in_range() -> impl Strategy<Value = (u32, f64)> {
    (12u32..=30, -1.0f64..1.0, 0i32..=70).prop_map(|(f, u, k)| (f, u * pow2(63 - f as i32 - k)))
}

proptest! {
    #[test]
    fn encode_decode_round_trip((f, v) in value_in_range()) {
        let fp = FixedPoint::new(f).unwrap();
        let x = fp.encode(v).unwrap();
        let back = fp.decode(x);
        let err = (back - v).abs();
        // Tight bound 2^-(f+1); it implies the requested 2^-f.
        prop_assert!(err <= fp.resolution() / 2.0, "f={f} v={v} back={back}");
        prop_assert!(err <= fp.resolution());
    }

    #[test]
    fn encode_rejects_out_of_range(f in 12u32..=30, u in 1.0f64..1e6, neg in any::<bool>()) {
        let fp = FixedPoint::new(f).unwrap();
        let mut v = u * fp.max_abs();
        if neg {
            // -max_abs itself is representable; go strictly below it.
            v = -v.next_up();
        }
        let is_out_of_range = matches!(fp.encode(v), Err(RingError::OutOfRange { .. }));
        prop_assert!(is_out_of_range);
    }

    #[test]
    fn product_within_bound(
        f in 12u32..=30,
        ua in -1.0f64..1.0,
        ub in -1.0f64..1.0,
        ka in 0i32..=20,
        kb in 0i32..=20,
    ) {
        let fp = FixedPoint::new(f).unwrap();
        // |a|, |b| < 2^((63 - 2f)/2 - 1), so the product fits.
        let e = (63 - 2 * f as i32) / 2 - 1;
        let (a, b) = (ua * pow2(e - ka), ub * pow2(e - kb));
        let (xa, xb) = (fp.encode(a).unwrap(), fp.encode(b).unwrap());
        let prod = fp.checked_mul(xa, xb);
        prop_assert_eq!(prod, Ok(fp.mul(xa, xb)));
        let got = fp.decode(fp.mul(xa, xb));
        let bound = fp.product_error_bound(a, b);
        prop_assert!((got - a * b).abs() <= bound, "f={} a={} b={} got={} bound={}", f, a, b, got, bound);
    }

    #[test]
    fn checked_mul_detects_overflow(
        f in 12u32..=30,
        ua in 0.0f64..1.0,
        ub in 0.0f64..1.0,
        na in any::<bool>(),
        nb in any::<bool>(),
    ) {
        let fp = FixedPoint::new(f).unwrap();
        // |a|, |b| in [2^(32-f), 2^(63-f)): both encodings are at least 2^32 in
        // magnitude, so their product is at least 2^64.
        let lo = pow2(32 - f as i32);
        let span = fp.max_abs() - lo;
        let mut a = lo + ua * span;
        let mut b = lo + ub * span;
        if na { a = -a; }
        if nb { b = -b; }
        let (xa, xb) = (fp.encode(a).unwrap(), fp.encode(b).unwrap());
        let is_overflow = matches!(fp.checked_mul(xa, xb), Err(RingError::ProductOverflow { .. }));
        prop_assert!(is_overflow);
    }

    #[test]
    fn ring_add_laws(a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
        prop_assert_eq!(a.wrapping_add(b), b.wrapping_add(a));
        prop_assert_eq!(a.wrapping_add(b).wrapping_add(c), a.wrapping_add(b.wrapping_add(c)));
        prop_assert_eq!(a.wrapping_add(0), a);
        prop_assert_eq!(a.wrapping_add(a.wrapping_neg()), 0);
        prop_assert_eq!(a.wrapping_sub(b), a.wrapping_add(b.wrapping_neg()));
    }

    #[test]
    fn ring_mul_laws(a in any::<u64>(), b in any::<u64>(), c in any::<u64>()) {
        prop_assert_eq!(a.wrapping_mul(b), b.wrapping_mul(a));
        prop_assert_eq!(a.wrapping_mul(b).wrapping_mul(c), a.wrapping_mul(b.wrapping_mul(c)));
        prop_assert_eq!(a.wrapping_mul(1), a);
        prop_assert_eq!(
            a.wrapping_mul(b.wrapping_add(c)),
            a.wrapping_mul(b).wrapping_add(a.wrapping_mul(c))
        );
        prop_assert_eq!(a.wrapping_neg().wrapping_mul(b), a.wrapping_mul(b).wrapping_neg());
    }

    #[test]
    fn signed_view_is_homomorphism(a in any::<i64>(), b in any::<i64>()) {
        prop_assert_eq!(from_signed(a).wrapping_add(from_signed(b)), from_signed(a.wrapping_add(b)));
        prop_assert_eq!(from_signed(a).wrapping_mul(from_signed(b)), from_signed(a.wrapping_mul(b)));
        prop_assert_eq!(from_signed(a).wrapping_neg(), from_signed(a.wrapping_neg()));
        prop_assert_eq!(to_signed(from_signed(a)), a);
    }

    #[test]
    fn encode_additive_up_to_one_ulp(
        f in 12u32..=30,
        i in -(1i64 << 50)..(1i64 << 50),
        j in -(1i64 << 50)..(1i64 << 50),
        k in 0i32..=8,
    ) {
        let fp = FixedPoint::new(f).unwrap();
        // a = i * 2^-(f+k), b = j * 2^-(f+k): a, b and a + b are exact in f64
        // and well inside the range.
        let s = pow2(-(f as i32 + k));
        let (a, b) = (i as f64 * s, j as f64 * s);
        let sum = a + b;
        prop_assert_eq!(sum, (i + j) as f64 * s);
        let (xa, xb, xs) = (fp.encode(a).unwrap(), fp.encode(b).unwrap(), fp.encode(sum).unwrap());
        let diff = to_signed(xa.wrapping_add(xb).wrapping_sub(xs));
        prop_assert!(diff.abs() <= 1, "diff={diff}");
        if k == 0 {
            // Multiples of 2^-f encode exactly, so the sum is exact.
            prop_assert_eq!(diff, 0);
        }
    }
}
