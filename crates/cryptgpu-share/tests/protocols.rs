//! The sharing protocols on the CPU backend, in-process and over mutual TLS: correctness
//! against plaintext (exact ring arithmetic and f64), communication against the documented
//! formulas, and the truncation's measured failure rate.

use cryptgpu_backend::{Conv2dParams, GpuBackend, ShiftOp};
use cryptgpu_cpu::{CpuBackend, CpuTensor};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{Bilinear, KeySource, Party, Result, Rss, Truncation};
use cryptgpu_transport::{
    CommStats, LinkConfig, PartyId, Transport, run_local_3pc, run_tls_loopback_3pc,
};
use proptest::prelude::*;

type CpuParty<T> = Party<CpuBackend, T>;

/// A party of [`run3`]: the CPU backend over the in-process transport.
type LocalParty<'t> = CpuParty<&'t mut cryptgpu_transport::LocalTransport>;

/// An op measured by [`cost_of_in`].
type CostedOp<'a> = dyn Fn(&mut LocalParty<'_>, &Rss<CpuBackend>) -> Result<()> + Sync + 'a;

/// An op's communication: each party's bytes sent, and rounds.
type Cost = ([u64; 3], u64);

/// An op of [`communication_matches_the_documented_formulas`], named, and its cost.
type CostCase<'a> = (&'static str, &'a CostedOp<'a>, Cost);

/// Runs `f` as three parties in one process, each set up with OS keys (exact truncation).
fn run3<R: Send>(fixed: FixedPoint, f: impl Fn(&mut LocalParty<'_>) -> Result<R> + Sync) -> [R; 3] {
    run3_in(fixed, Truncation::Exact, f)
}

/// [`run3`] with truncations in `mode`.
fn run3_in<R: Send>(
    fixed: FixedPoint,
    mode: Truncation,
    f: impl Fn(&mut LocalParty<'_>) -> Result<R> + Sync,
) -> [R; 3] {
    run_local_3pc(|t| {
        let mut party = Party::setup(CpuBackend::new(), t, fixed)?;
        party.set_truncation(mode);
        f(&mut party)
    })
    .expect("no party failed")
    .map(|r| r.expect("protocol succeeded"))
}

/// The reals `x` of `shape`, secret-shared by `owner` (the other parties pass none).
fn share_from<T: Transport>(
    p: &mut CpuParty<T>,
    owner: PartyId,
    x: &[f64],
    shape: &[usize],
) -> Result<Rss<CpuBackend>> {
    let mine = (p.id() == owner).then_some(x);
    p.share_f64(owner, mine, shape)
}

/// Deterministic real inputs in [-scale, scale).
fn reals(seed: u64, n: usize, scale: f64) -> Vec<f64> {
    let mut rng = Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..n)
        .map(|_| ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale)
        .collect()
}

/// The exact plaintext fixed-point result of `op` on encoded inputs: the ring op, then an
/// arithmetic shift by f.
fn plaintext(
    op: Bilinear,
    fixed: FixedPoint,
    x: &[f64],
    xs: &[usize],
    y: &[f64],
    ys: &[usize],
) -> Vec<u64> {
    let b = CpuBackend::new();
    let tx = b.upload(&fixed.encode_slice(x).unwrap(), xs).unwrap();
    let ty = b.upload(&fixed.encode_slice(y).unwrap(), ys).unwrap();
    let z = op.apply(&b, &tx, &ty).unwrap();
    b.download(
        &b.shift(ShiftOp::RightArithmetic, &z, fixed.frac_bits())
            .unwrap(),
    )
    .unwrap()
}

/// The f64 result of `op`.
fn real(op: Bilinear, x: &[f64], xs: &[usize], y: &[f64], ys: &[usize]) -> Vec<f64> {
    match op {
        Bilinear::Mul => x.iter().zip(y).map(|(a, b)| a * b).collect(),
        Bilinear::Matmul => {
            let (m, k, n) = (xs[0], xs[1], ys[1]);
            let mut out = vec![0.0; m * n];
            for i in 0..m {
                for j in 0..n {
                    out[i * n + j] = (0..k).map(|l| x[i * k + l] * y[l * n + j]).sum();
                }
            }
            out
        }
        other => panic!("no f64 reference for {other:?} here"),
    }
}

/// Compares a private truncated result with exact plaintext truncation of the 2f-bit
/// product `z` (which must match within one unit) and returns how many elements failed, i.e.
/// were off by about 2^(64-f), the truncation's documented failure mode.
fn count_truncation_failures(fixed: FixedPoint, got: &[u64], exact: &[u64]) -> usize {
    let huge = 1u64 << (63 - fixed.frac_bits());
    let mut failures = 0;
    for (i, (&g, &want)) in got.iter().zip(exact).enumerate() {
        let diff = g.wrapping_sub(want) as i64;
        if !(0..=1).contains(&diff) {
            assert!(
                diff.unsigned_abs() >= huge,
                "element {i}: off by {diff}, neither within one unit nor a wrap failure"
            );
            failures += 1;
        }
    }
    failures
}

/// At most as many failures as the documented odds 2^(l+1-64) allow (with a margin of 8 and
/// at least one), where 2^l bounds the 2f-bit products.
fn assert_failures_within_bound(fixed: FixedPoint, failures: usize, n: usize, max_product: f64) {
    let l = (max_product.log2() + 2.0 * fixed.frac_bits() as f64).ceil();
    let p = 2f64.powf(l + 1.0 - 64.0);
    let allowed = (8.0 * n as f64 * p).ceil().max(1.0) as usize;
    assert!(
        failures <= allowed,
        "{failures} truncation failures in {n} elements; the bound allows {allowed}"
    );
}

/// Private `op` with truncation, revealed; checked against exact plaintext truncation (off by
/// at most one unit in the last place, but for the rare documented failures) and against f64
/// within the documented bound.
#[allow(clippy::too_many_arguments)]
fn check_product(
    op: Bilinear,
    mode: Truncation,
    fixed: FixedPoint,
    x: &[f64],
    xs: &[usize],
    y: &[f64],
    ys: &[usize],
    terms: usize,
    magnitude: f64,
) {
    let revealed = run3_in(fixed, mode, |p| {
        let sx = share_from(p, PartyId::P0, x, xs)?;
        let sy = share_from(p, PartyId::P1, y, ys)?;
        let z = p.product_truncated(op, &sx, &sy)?;
        p.reveal(&z)
    });
    assert_eq!(revealed[0], revealed[1]);
    assert_eq!(revealed[1], revealed[2]);
    let exact = plaintext(op, fixed, x, xs, y, ys);
    let failures = count_truncation_failures(fixed, &revealed[0], &exact);
    if mode == Truncation::Exact {
        assert_eq!(failures, 0, "exact truncation failed");
    }
    assert_failures_within_bound(
        fixed,
        failures,
        exact.len(),
        terms as f64 * magnitude * magnitude,
    );
    // Documented bound vs f64: terms·(2·M·2^-(f+1) + 2^-(2f+2)) + 2·2^-f, off failures.
    let res = fixed.resolution();
    let bound = terms as f64 * (2.0 * magnitude * res / 2.0 + res * res / 4.0) + 2.0 * res;
    let reals = real(op, x, xs, y, ys);
    let beyond = count_beyond(fixed, &revealed[0], &reals, bound);
    assert_eq!(
        beyond, failures,
        "every element off the f64 result by more than {bound} must be a counted truncation failure"
    );
}

/// How many of the fixed-point results `got` decode to more than `bound` away from the reals
/// `want`.
fn count_beyond(fixed: FixedPoint, got: &[u64], want: &[f64], bound: f64) -> usize {
    got.iter()
        .zip(want)
        .filter(|(got, want)| (fixed.decode(**got) - **want).abs() > bound)
        .count()
}

/// Inputs of magnitude at most `scale` keep products in the regime the docs recommend for f:
/// |product| < 2^(44 - 2f), i.e. failure odds below 2^-19 per element.
fn scale_for(f: u32) -> f64 {
    2f64.powf((44.0 - 2.0 * f as f64) / 2.0)
}

#[test]
fn reveal_of_share_is_the_input_for_every_owner() {
    let fixed = FixedPoint::default();
    for owner in PartyId::ALL {
        let values: Vec<u64> = (0..37u64)
            .map(|i| i.wrapping_mul(0x1234_5678_9abc_def1) ^ (i << 60))
            .collect();
        let out = run3(fixed, |p| {
            let b = *p.backend();
            let mine = (p.id() == owner).then(|| b.upload(&values, &[37]).unwrap());
            let x = p.share(owner, mine.as_ref(), &[37])?;
            let all = p.reveal(&x)?;
            let only = p.reveal_to(owner.next(), &x)?;
            Ok((all, only))
        });
        for (i, (all, only)) in out.iter().enumerate() {
            assert_eq!(all, &values);
            assert_eq!(only.is_some(), i == owner.next().index());
            if let Some(v) = only {
                assert_eq!(v, &values);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn share_and_reveal_round_trip(values in prop::collection::vec(any::<u64>(), 1..200), owner in 0usize..3) {
        let owner = PartyId::new(owner).unwrap();
        let n = values.len();
        let out = run3(FixedPoint::default(), |p| {
            let b = *p.backend();
            let mine = (p.id() == owner).then(|| b.upload(&values, &[n]).unwrap());
            let x = p.share(owner, mine.as_ref(), &[n])?;
            p.reveal(&x)
        });
        for got in out {
            prop_assert_eq!(&got, &values);
        }
    }

    #[test]
    fn elementwise_product_with_truncation(seed in any::<u64>(), n in 1usize..300, f in prop::sample::select(vec![20u32, 26]), mode in prop::sample::select(Truncation::ALL.to_vec())) {
        let fixed = FixedPoint::new(f).unwrap();
        let scale = scale_for(f);
        let (x, y) = (reals(seed, n, scale), reals(seed ^ 1, n, scale));
        check_product(Bilinear::Mul, mode, fixed, &x, &[n], &y, &[n], 1, scale);
    }

    #[test]
    fn matmul_with_truncation_on_odd_shapes(seed in any::<u64>(), m in 1usize..13, k in 1usize..17, n in 1usize..11, f in prop::sample::select(vec![20u32, 26]), mode in prop::sample::select(Truncation::ALL.to_vec())) {
        let fixed = FixedPoint::new(f).unwrap();
        let scale = scale_for(f) / (k as f64).sqrt();
        let (x, y) = (reals(seed, m * k, scale), reals(seed ^ 2, k * n, scale));
        check_product(Bilinear::Matmul, mode, fixed, &x, &[m, k], &y, &[k, n], k, scale);
    }
}

/// truncate_by, mul_public_fixed and square_fixed against f64.
#[test]
fn public_factors_shifts_and_fused_square() {
    let fixed = FixedPoint::default();
    let x = reals(5, 300, 8.0);
    let out = run3(fixed, |p| {
        let sx = share_from(p, PartyId::P2, &x[..], &[300])?;
        let a = p.truncate_by(&sx, 3)?;
        let b = p.mul_public_fixed(&sx, -0.375)?;
        let c = p.square_fixed(&sx)?;
        Ok((p.reveal_f64(&a)?, p.reveal_f64(&b)?, p.reveal_f64(&c)?))
    });
    let (a, b, c) = &out[0];
    let unit = fixed.resolution();
    for i in 0..300 {
        assert!((a[i] - x[i] / 8.0).abs() <= 2.0 * unit, "truncate_by {i}");
        assert!(
            (b[i] + 0.375 * x[i]).abs() <= 2.0 * unit,
            "mul_public_fixed {i}"
        );
        assert!(
            (c[i] - x[i] * x[i]).abs() <= 2.0 * unit + x[i].abs() * unit,
            "square_fixed {i}"
        );
    }
    let too_wide = run_local_3pc(|t| {
        let mut p = Party::setup(CpuBackend::new(), t, fixed)?;
        let z = p.constant_f64(&[1.0], &[1])?;
        p.truncate_by(&z, 64).map(drop)
    })
    .expect("runs");
    for r in too_wide {
        assert!(r.unwrap_err().to_string().contains("at most 63"));
    }
}

/// div_public keeps 3 units of precision for divisors far beyond 2^f/2 (where a product by
/// the fixed-point encoding of 1/d would be off by percents), and rejects d = 0.
#[test]
fn division_by_public_integers_of_every_size() {
    let fixed = FixedPoint::new(20).unwrap();
    let divisors = [1u64, 3, 128, 576, 73_728, 1 << 20, 3_000_000];
    let n = 200;
    let means = reals(11, n, 1.0);
    let out = run3(fixed, |p| {
        let mut revealed = Vec::new();
        for &d in &divisors {
            // Sums of d elements whose mean is `means`.
            let sums: Vec<f64> = means.iter().map(|m| m * d as f64).collect();
            let owner = PartyId::P1;
            let s = share_from(p, owner, &sums[..], &[n])?;
            let q = p.div_public(&s, d)?;
            revealed.push(p.reveal_f64(&q)?);
        }
        let zero = p.div_public(&p.constant_f64(&[1.0], &[1])?, 0).map(drop);
        Ok((revealed, zero.unwrap_err().to_string()))
    });
    let (revealed, zero) = &out[0];
    let unit = fixed.resolution();
    for (d, got) in divisors.iter().zip(revealed) {
        for (i, (g, m)) in got.iter().zip(&means).enumerate() {
            let bound = 3.0 * unit + m.abs() * unit / 2.0;
            assert!(
                (g - m).abs() <= bound,
                "d = {d}, element {i}: {g} for {m} (bound {bound})"
            );
        }
    }
    assert!(zero.contains("division by zero"), "{zero}");
}

#[test]
fn square_then_truncate_matches_plaintext() {
    for f in [20, 26] {
        let fixed = FixedPoint::new(f).unwrap();
        let x = reals(7, 101, scale_for(f));
        let out = run3(fixed, |p| {
            let sx = share_from(p, PartyId::P2, &x[..], &[101])?;
            let sq = p.square(&sx)?;
            let t = p.truncate(&sq)?;
            p.reveal(&t)
        });
        let exact = plaintext(Bilinear::Mul, fixed, &x, &[101], &x, &[101]);
        let failures = count_truncation_failures(fixed, &out[0], &exact);
        assert_failures_within_bound(fixed, failures, 101, scale_for(f).powi(2));
    }
}

#[test]
fn convolution_and_its_gradients_with_truncation() {
    let fixed = FixedPoint::default();
    let p = Conv2dParams::new(2, 1).with_groups(2);
    let (xs, ws) = ([2usize, 4, 7, 6], [6usize, 2, 3, 3]);
    let gs = cryptgpu_backend::shape::Conv2dDims::forward(&xs, &ws, p)
        .unwrap()
        .output_shape();
    let x = reals(11, xs.iter().product(), 2.0);
    let w = reals(12, ws.iter().product(), 2.0);
    let g = reals(13, gs.iter().product(), 2.0);
    let cases = [
        (Bilinear::Conv2d(p), &x, &xs[..], &w, &ws[..]),
        (
            Bilinear::Conv2dGradInput {
                input_hw: [7, 6],
                params: p,
            },
            &g,
            &gs[..],
            &w,
            &ws[..],
        ),
        (
            Bilinear::Conv2dGradWeight {
                kernel_hw: [3, 3],
                params: p,
            },
            &x,
            &xs[..],
            &g,
            &gs[..],
        ),
    ];
    for (op, a, sa, b, sb) in cases {
        let out = run3(fixed, |party| {
            let s1 = share_from(party, PartyId::P0, &a[..], sa)?;
            let s2 = share_from(party, PartyId::P2, &b[..], sb)?;
            let z = party.product_truncated(op, &s1, &s2)?;
            party.reveal(&z)
        });
        let exact = plaintext(op, fixed, a, sa, b, sb);
        let failures = count_truncation_failures(fixed, &out[0], &exact);
        assert_failures_within_bound(fixed, failures, exact.len(), 200.0);
    }
}

/// A sharing of public values made with no message (x0 = v, x1 = x2 = 0), so that an op can
/// be measured from the synchronized state right after setup.
fn public_sharing<T: Transport>(
    p: &CpuParty<T>,
    values: &[u64],
) -> cryptgpu_share::Rss<CpuBackend> {
    let b = p.backend();
    let v = b.upload(values, &[values.len()]).unwrap();
    let zero = b.zeros(&[values.len()]).unwrap();
    match p.id().index() {
        0 => cryptgpu_share::Rss::from_shares(v, zero),
        1 => cryptgpu_share::Rss::from_shares(zero.clone(), zero),
        _ => cryptgpu_share::Rss::from_shares(zero, v),
    }
    .unwrap()
}

/// Runs one op in a fresh session from the synchronized state after setup and returns each
/// party's bytes sent and the op's rounds.
fn cost_of(op: &CostedOp<'_>, n: usize) -> Cost {
    cost_of_in(Truncation::Exact, op, n)
}

/// [`cost_of`] with truncations in `mode`.
fn cost_of_in(mode: Truncation, op: &CostedOp<'_>, n: usize) -> Cost {
    let stats = run3_in(FixedPoint::default(), mode, |p| {
        let x = public_sharing(p, &vec![3u64 << 20; n]);
        let before = p.stats();
        op(p, &x)?;
        Ok((before, p.stats()))
    });
    let sent = stats.map(|(before, after)| after.since(&before).total_bytes_sent());
    let rounds = CommStats::rounds_of(&stats.map(|(_, after)| after))
        - CommStats::rounds_of(&stats.map(|(before, _)| before));
    (sent, rounds)
}

/// The communication table of `cryptgpu_share::arith`, checked on the counters.
#[test]
fn communication_matches_the_documented_formulas() {
    let n = 300usize;
    let e = n as u64;
    // Setup: 64 bytes to the previous party and 32 to the next, one round.
    let setup = run3(FixedPoint::default(), |p| Ok(p.stats()));
    for st in &setup {
        assert_eq!((st.total_bytes_sent(), st.rounds), (96, 1), "setup");
    }
    // Ops without a truncation, in the default (exact) mode.
    let cases: [CostCase<'_>; 7] = [
        // 8·n to each neighbour, each message led by the shape: rank and one dimension.
        (
            "share by P1",
            &|p, _| {
                let b = *p.backend();
                let mine = (p.id() == PartyId::P1).then(|| b.full(&[n], 5).unwrap());
                p.share(PartyId::P1, mine.as_ref(), &[n]).map(drop)
            },
            ([0, 16 * e + 2 * 16, 0], 1),
        ),
        (
            "local ops",
            &|p, x| p.add_scalar(&p.mul_scalar(x, 3)?, 1 << 20).map(drop),
            ([0, 0, 0], 0),
        ),
        (
            "product",
            &|p, x| p.product(Bilinear::Mul, x, x).map(drop),
            ([8 * e; 3], 1),
        ),
        ("square", &|p, x| p.square(x).map(drop), ([8 * e; 3], 1)),
        (
            "constants and linear maps",
            &|p, x| {
                let c = p.constant(x.own_share())?;
                p.linear(&p.add(x, &c)?, |b, t| b.sum_axis(t, 0)).map(drop)
            },
            ([0, 0, 0], 0),
        ),
        ("reveal", &|p, x| p.reveal(x).map(drop), ([8 * e; 3], 1)),
        (
            "reveal to P2 (P0 sends)",
            &|p, x| p.reveal_to(PartyId::P2, x).map(drop),
            ([8 * e, 0, 0], 1),
        ),
    ];
    for (what, op, want) in cases {
        assert_eq!(cost_of(op, n), want, "{what}");
    }
    for mode in Truncation::ALL {
        // Bytes of one truncation step, and the extra bytes each party sends in a fused
        // product (which also carries the 3-out-of-3 terms of P1 and P2).
        // Exact mode's masked bits and mask messages travel two to a word (f ≤ 32).
        let h = 8 * (e / 2);
        let (trunc, fused) = match mode {
            Truncation::Probabilistic => ([8 * e, 0, 0], [8 * e; 3]),
            Truncation::Exact => ([8 * e + 2 * h, h, h], [8 * e + 2 * h, 8 * e + h, 8 * e + h]),
        };
        let twice = trunc.map(|b| 2 * b);
        // Two truncations: P0 sends both at once, so probabilistic takes one round; in exact
        // mode P1 waits for the first one's messages before it sends the second's.
        let div_rounds = match mode {
            Truncation::Probabilistic => 1,
            Truncation::Exact => 2,
        };
        let cases: [CostCase<'_>; 8] = [
            ("truncate", &|p, x| p.truncate(x).map(drop), (trunc, 1)),
            (
                "fused product and truncation",
                &|p, x| p.mul_fixed(x, x).map(drop),
                (fused, 2),
            ),
            (
                "product then truncate",
                &|p, x| {
                    let z = p.mul(x, x)?;
                    p.truncate(&z).map(drop)
                },
                ([0, 1, 2].map(|i| 8 * e + trunc[i]), 2),
            ),
            (
                "fused square and truncation",
                &|p, x| p.square_fixed(x).map(drop),
                (fused, 2),
            ),
            (
                "truncate by 7 bits",
                &|p, x| p.truncate_by(x, 7).map(drop),
                (trunc, 1),
            ),
            (
                "product by a public real",
                &|p, x| p.mul_public_fixed(x, 0.3).map(drop),
                (trunc, 1),
            ),
            (
                "division by a public integer",
                &|p, x| p.div_public(x, 73_728).map(drop),
                (twice, div_rounds),
            ),
            (
                "division by a power of two",
                &|p, x| p.div_public(x, 128).map(drop),
                (trunc, 1),
            ),
        ];
        for (what, op, want) in cases {
            assert_eq!(cost_of_in(mode, op, n), want, "{mode}: {what}");
        }
    }
}

/// Truncation fails (by about 2^(64-f)) with probability at most 2^(ℓ+1-64) for |z| < 2^ℓ,
/// and is otherwise off by at most one unit from exact. Measured with ℓ = 55 (z = ±2^54),
/// where failures are frequent enough to count: the expected rate is 2^-10.
#[test]
fn truncation_failure_rate() {
    let fixed = FixedPoint::default();
    let n = 1usize << 17;
    let z: Vec<u64> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                1u64 << 54
            } else {
                (1u64 << 54).wrapping_neg()
            }
        })
        .collect();
    let out = run3_in(fixed, Truncation::Probabilistic, |p| {
        let b = *p.backend();
        let mine = (p.id() == PartyId::P0).then(|| b.upload(&z, &[n]).unwrap());
        let sz = p.share(PartyId::P0, mine.as_ref(), &[n])?;
        let t = p.truncate(&sz)?;
        p.reveal(&t)
    });
    let mut failures = 0usize;
    for (&got, &zi) in out[0].iter().zip(&z) {
        let exact = ((zi as i64) >> 20) as u64;
        let diff = got.wrapping_sub(exact) as i64;
        if !(0..=1).contains(&diff) {
            failures += 1;
            assert!(
                diff.unsigned_abs() > 1 << 40,
                "a failure is off by about 2^44, got {diff}"
            );
        }
    }
    let rate = failures as f64 / n as f64;
    let bound = 2f64.powi(55 + 1 - 64);
    assert!(rate <= bound, "failure rate {rate} above the bound {bound}");
    assert!(
        rate >= 2f64.powi(-12),
        "failure rate {rate} far below the expected 2^-10: is the test measuring?"
    );
}

/// What one party of the realistic job returns: the revealed matmul and convolution, and
/// each op's [bytes sent, rounds].
type JobOutput = (Vec<u64>, Vec<u64>, [u64; 2], [u64; 2]);

/// "Done when": realistic sizes end to end, in-process and over mutual TLS, bit-identical
/// between the two (same seeded keys), matching plaintext, with exact bytes and rounds.
#[test]
fn realistic_matmul_and_conv_in_process_and_over_tls() {
    let fixed = FixedPoint::default();
    let (m, k, n) = (256usize, 256usize, 256usize);
    let a = reals(21, m * k, 1.0);
    let bm = reals(22, k * n, 1.0);
    let conv = Conv2dParams::new(1, 1);
    let (xs, ws) = ([1usize, 64, 32, 32], [64usize, 64, 3, 3]);
    let x = reals(23, xs.iter().product(), 1.0);
    let w = reals(24, ws.iter().product(), 0.1);

    fn job<T: Transport>(
        t: T,
        fixed: FixedPoint,
        inputs: (&[f64], &[f64], &[f64], &[f64]),
        conv: Conv2dParams,
    ) -> Result<JobOutput> {
        let (a, bm, x, w) = inputs;
        let mut p = Party::setup_with(CpuBackend::new(), t, fixed, KeySource::InsecureSeeded(99))?;
        let sa = share_from(&mut p, PartyId::P0, a, &[256, 256])?;
        let sb = share_from(&mut p, PartyId::P1, bm, &[256, 256])?;
        let before = p.stats();
        let prod = p.matmul_fixed(&sa, &sb)?;
        let mm_cost = p.stats().since(&before);
        let sx = share_from(&mut p, PartyId::P2, x, &[1, 64, 32, 32])?;
        let sw = share_from(&mut p, PartyId::P0, w, &[64, 64, 3, 3])?;
        let before = p.stats();
        let y = p.conv2d_fixed(&sx, &sw, conv)?;
        let conv_cost = p.stats().since(&before);
        Ok((
            p.reveal(&prod)?,
            p.reveal(&y)?,
            [mm_cost.total_bytes_sent(), mm_cost.rounds],
            [conv_cost.total_bytes_sent(), conv_cost.rounds],
        ))
    }

    let inputs = (&a[..], &bm[..], &x[..], &w[..]);
    let local = run_local_3pc(|t| job(t, fixed, inputs, conv))
        .unwrap()
        .map(Result::unwrap);
    let tls = run_tls_loopback_3pc(LinkConfig::default(), |t| job(t, fixed, inputs, conv))
        .unwrap()
        .map(Result::unwrap);
    for i in 0..3 {
        assert_eq!(
            local[i].0, tls[i].0,
            "matmul over TLS differs from in-process at P{i}"
        );
        assert_eq!(
            local[i].1, tls[i].1,
            "conv over TLS differs from in-process at P{i}"
        );
        // Exact fused truncation: P0 sends 16 bytes per element, P1 and P2 12 (the masked
        // bits and mask messages travel two to a word).
        let per_element = if i == 0 { 16 } else { 12 };
        assert_eq!(
            local[i].2[0],
            per_element * 256 * 256,
            "matmul bytes sent by P{i}"
        );
        assert_eq!(
            local[i].3[0],
            per_element * 64 * 32 * 32,
            "conv bytes sent by P{i}"
        );
        assert_eq!(local[i].2, tls[i].2);
        assert_eq!(local[i].3, tls[i].3);
    }
    let exact_mm = plaintext(Bilinear::Matmul, fixed, &a, &[m, k], &bm, &[k, n]);
    let exact_conv = plaintext(Bilinear::Conv2d(conv), fixed, &x, &xs, &w, &ws);
    let failures = count_truncation_failures(fixed, &local[0].0, &exact_mm)
        + count_truncation_failures(fixed, &local[0].1, &exact_conv);
    assert_eq!(failures, 0, "exact truncation failed");
    let reals_mm = real(Bilinear::Matmul, &a, &[m, k], &bm, &[k, n]);
    let res = fixed.resolution();
    let bound = k as f64 * (1.0 * res + res * res / 4.0) + 2.0 * res;
    let beyond = count_beyond(fixed, &local[0].0, &reals_mm, bound);
    assert!(
        beyond <= failures,
        "matmul elements beyond the f64 bound must be truncation failures"
    );
}

#[test]
fn a_peer_that_leaves_gives_the_others_an_error() {
    let results = run_local_3pc(|t| -> Result<Vec<u64>> {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default())?;
        let b = *p.backend();
        let mine = (p.id() == PartyId::P0).then(|| b.full(&[4], 9).unwrap());
        let x = p.share(PartyId::P0, mine.as_ref(), &[4])?;
        if p.id() == PartyId::P2 {
            return Ok(vec![]); // P2 leaves: its transport is dropped.
        }
        let y = p.mul(&x, &x)?;
        p.reveal(&y)
    })
    .unwrap();
    assert!(
        results[0].is_err() && results[1].is_err(),
        "P0 and P1 must get an error, not hang"
    );
}

#[test]
fn wrong_input_arguments_are_errors() {
    let out = run_local_3pc(|t| {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default()).unwrap();
        // Every party claims to own the input: P1 and P2 are wrong and say so.
        let b = *p.backend();
        let v: CpuTensor = b.full(&[2], 1).unwrap();
        p.share(PartyId::P0, Some(&v), &[2])
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap();
    // The owner's call was right: it either sent before the others left or saw them leave.
    assert!(
        out[0]
            .as_ref()
            .map_or_else(|e| e.contains("disconnected"), |_| true),
        "P0: {:?}",
        out[0]
    );
    assert!(out[1].as_ref().unwrap_err().contains("does not own"));
    assert!(out[2].as_ref().unwrap_err().contains("does not own"));
}

/// A xorshift stream for the adversarial inputs.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [−2^bits, 2^bits), as a ring element.
    fn signed(&mut self, bits: u32) -> u64 {
        ((self.next() >> (63 - bits)) as i64 - (1i64 << bits)) as u64
    }
}

/// Ring integers that stress exact truncation at f fractional bits: the ends of its range
/// [−2^62, 2^62), values next to 0 and to multiples of 2^f, and uniform values of every
/// magnitude and sign.
fn adversarial_ring_values(seed: u64, n: usize, f: u32) -> Vec<u64> {
    let mut rng = Xorshift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let limit = 1i64 << 62;
    (0..n)
        .map(|i| {
            let small = (rng.next() % 1024) as i64;
            match i % 8 {
                0 => (-limit + small) as u64,
                1 => (limit - 1 - small) as u64,
                2 => rng.signed(62),
                3 => rng.signed(f + 2),
                4 => ((rng.signed(20) as i64) << f).wrapping_add(small % 3 - 1) as u64,
                5 => {
                    let bits = 1 + (rng.next() % 61) as u32;
                    rng.signed(bits)
                }
                6 => [
                    0i64,
                    1,
                    -1,
                    (1 << f) - 1,
                    -(1 << f),
                    1 << f,
                    -limit,
                    limit - 1,
                ][small as usize % 8] as u64,
                _ => rng.signed(2 * f),
            }
        })
        .collect()
}

/// How many of `got` are neither ⌊z / 2^bits⌋ nor one more (as ring integers).
fn off_by_more_than_one_unit(got: &[u64], z: &[u64], bits: u32) -> usize {
    got.iter()
        .zip(z)
        .filter(|&(&g, &zi)| {
            let floor = ((zi as i64) >> bits) as u64;
            !(0..=1).contains(&(g.wrapping_sub(floor) as i64))
        })
        .count()
}

/// Exact truncation is never off by more than one unit, over adversarial inputs and along
/// every path that truncates: a fresh sharing, a constant sharing, the fused product, the
/// output of an earlier truncation, and public multiples of truncated values. At least
/// 10^7 truncations (set `CRYPTGPU_EXACT_TRUNCATIONS` for more: BENCHMARKS.md records a run
/// of 10^9).
#[test]
fn exact_truncation_is_never_off_by_more_than_one_unit() {
    let target: u64 = std::env::var("CRYPTGPU_EXACT_TRUNCATIONS")
        .ok()
        .map(|v| v.parse::<f64>().expect("a count, like 1e9") as u64)
        .unwrap_or(10_000_000);
    let n = 1usize << 18;
    let (mut done, mut chunk) = (0u64, 0u64);
    while done < target {
        let f = [16u32, 20, 24, 26][chunk as usize % 4];
        let fixed = FixedPoint::new(f).unwrap();
        let z = adversarial_ring_values(chunk, n, f);
        // A public multiple of a truncated value, c = ±0.75 or ±0.01: z·c stays in range.
        let c = [0.75, -0.01, -0.75, 0.01][chunk as usize % 4];
        let c_enc = fixed.encode(c).unwrap();
        let shift = [1, 62, 33, 7][chunk as usize % 4];
        let out = run3(fixed, |p| {
            let b = *p.backend();
            let mine = (p.id() == PartyId::P0).then(|| b.upload(&z, &[n]).unwrap());
            let shared = p.share(PartyId::P0, mine.as_ref(), &[n])?;
            let once = p.truncate(&shared)?;
            let constant = p.truncate(&p.constant(&b.upload(&z, &[n])?)?)?;
            let one = p.constant(&b.full(&[n], 1)?)?;
            let fused = p.mul_fixed(&shared, &one)?;
            let twice = p.truncate(&once)?;
            let multiple = p.mul_public_fixed(&once, c)?;
            let by_bits = p.truncate_by(&shared, shift)?;
            [once, constant, fused, twice, multiple, by_bits]
                .iter()
                .map(|t| p.reveal(t))
                .collect::<Result<Vec<_>>>()
        });
        let [once, constant, fused, twice, multiple, by_bits] =
            <[Vec<u64>; 6]>::try_from(out[0].clone()).unwrap();
        let scaled: Vec<u64> = once.iter().map(|t| t.wrapping_mul(c_enc)).collect();
        for (what, got, input, bits) in [
            ("a fresh sharing", &once, &z, f),
            ("a constant", &constant, &z, f),
            ("a fused product", &fused, &z, f),
            ("a truncated value", &twice, &once, f),
            (
                "a public multiple of a truncated value",
                &multiple,
                &scaled,
                f,
            ),
            ("truncate_by", &by_bits, &z, shift),
        ] {
            assert_eq!(
                off_by_more_than_one_unit(got, input, bits),
                0,
                "exact truncation of {what} (f = {f}, chunk {chunk}) off by more than one unit"
            );
            done += n as u64;
        }
        chunk += 1;
    }
    eprintln!("{done} exact truncations, none off by more than one unit");
}

/// Bug 1 of issue 13: truncation not fused with a product re-randomises its 2-out-of-2
/// split, so probabilistic truncation of a truncated product, of a constant, and of a
/// public multiple of each holds the documented bound (it used to fail 67 times in 2^20 on
/// the first and on every element of the second); exact truncation never fails on them.
#[test]
fn truncation_of_truncated_values_and_constants_holds_its_bound() {
    let fixed = FixedPoint::new(20).unwrap();
    let n = 1usize << 20;
    for mode in Truncation::ALL {
        let out = run3_in(fixed, mode, |p| {
            let x = share_from(p, PartyId::P0, &vec![-1024.0; n][..], &[n])?;
            let one = p.constant_f64(&vec![1.0; n], &[n])?;
            let product = p.mul_fixed(&x, &one)?;
            let of_product = p.mul_public_fixed(&product, 0.01)?;
            let constant = p.constant_f64(&vec![-1024.0; n], &[n])?;
            let of_constant = p.mul_public_fixed(&constant, 0.5)?;
            let of_multiple = p.mul_public_fixed(&of_constant, 0.5)?;
            Ok([
                p.reveal(&product)?,
                p.reveal(&of_product)?,
                p.reveal(&of_constant)?,
                p.reveal(&of_multiple)?,
            ])
        });
        let [product, of_product, of_constant, of_multiple] = out[0].clone();
        let encoded = |v: f64| fixed.encode(v).unwrap();
        // (what, result, its 2f-bit input, ℓ with |input| < 2^ℓ)
        let cases = [
            (
                "a truncated product times 0.01",
                &of_product,
                product
                    .iter()
                    .map(|v| v.wrapping_mul(encoded(0.01)))
                    .collect::<Vec<_>>(),
                44,
            ),
            (
                "a constant times 0.5",
                &of_constant,
                vec![encoded(-1024.0).wrapping_mul(encoded(0.5)); n],
                50,
            ),
            (
                "a public multiple of a constant times 0.5",
                &of_multiple,
                of_constant
                    .iter()
                    .map(|v| v.wrapping_mul(encoded(0.5)))
                    .collect(),
                49,
            ),
        ];
        for (what, got, input, l) in cases {
            let failures = off_by_more_than_one_unit(got, &input, 20);
            let expected = n as f64 * 2f64.powi(l + 1 - 64);
            let allowed = (8.0 * expected).ceil().max(1.0) as usize;
            match mode {
                Truncation::Exact => assert_eq!(failures, 0, "exact: {what}"),
                Truncation::Probabilistic => assert!(
                    failures <= allowed,
                    "probabilistic: {failures} failures of {what} in {n}; the bound allows \
                     {allowed}"
                ),
            }
        }
    }
}

/// A per-call mode: `with_truncation` truncates in the mode it is given (its bytes say
/// which) and restores the job's mode afterwards.
#[test]
fn a_per_call_mode_applies_to_that_call_only() {
    let n = 64usize;
    let out = run3(FixedPoint::default(), |p| {
        let x = p.constant_f64(&vec![1.5; n], &[n])?;
        let before = p.stats();
        let probabilistic = p.with_truncation(Truncation::Probabilistic, |p| {
            assert_eq!(p.truncation(), Truncation::Probabilistic);
            p.mul_public_fixed(&x, 0.5)
        })?;
        let middle = p.stats();
        let exact = p.mul_public_fixed(&x, 0.5)?;
        let after = p.stats();
        Ok((
            p.truncation(),
            middle.since(&before).total_bytes_sent(),
            after.since(&middle).total_bytes_sent(),
            p.reveal_f64(&probabilistic)?,
            p.reveal_f64(&exact)?,
        ))
    });
    let e = 8 * n as u64;
    for (i, (mode, per_call, job, a, b)) in out.iter().enumerate() {
        assert_eq!(*mode, Truncation::Exact, "P{i}: the job's mode is restored");
        // Exact: P0 sends y0 and two packed masked bits, P1 and P2 a packed mask message.
        let (want_call, want_job) = if i == 0 { (e, 2 * e) } else { (0, e / 2) };
        assert_eq!(
            (*per_call, *job),
            (want_call, want_job),
            "P{i}: bytes of the per-call and the job's truncation"
        );
        for v in a.iter().chain(b) {
            assert!((v - 0.75).abs() < 1e-5, "P{i}: 1.5 · 0.5 = {v}");
        }
    }
}

/// Sums and dot products on shares: sums are exact (local), a dot product of any length is
/// one fused product with one truncation, within one unit of the plaintext fixed-point
/// result, for the bytes of a single element.
#[test]
fn sums_and_dot_products_of_shared_vectors() {
    let fixed = FixedPoint::default();
    let (x, y) = (reals(3, 1000, 8.0), reals(4, 1000, 8.0));
    let shape = [10, 100];
    let got = run3(fixed, |p| {
        let owner = p.id() == PartyId::P0;
        let xs = p.share_f64(PartyId::P0, owner.then_some(&x[..]), &shape)?;
        let ys = p.share_f64(PartyId::P0, owner.then_some(&y[..]), &shape)?;
        let total = p.sum(&xs)?;
        let rows = p.sum_axis(&xs, 1)?;
        let before = p.stats();
        let dot = p.dot(&xs, &ys)?;
        let cost = p.stats().since(&before);
        assert_eq!(
            (total.shape(), rows.shape(), dot.shape()),
            (&[][..], &[10][..], &[][..])
        );
        assert!(
            p.dot(&xs, &rows).is_err(),
            "a dot product of different shapes"
        );
        Ok((p.reveal(&total)?, p.reveal(&rows)?, p.reveal(&dot)?, cost))
    });
    let encoded = |v: &[f64]| {
        v.iter()
            .map(|&r| fixed.encode(r).unwrap())
            .collect::<Vec<u64>>()
    };
    let (ex, ey) = (encoded(&x), encoded(&y));
    let sum = ex.iter().fold(0u64, |a, &b| a.wrapping_add(b));
    let row_sums: Vec<u64> = ex
        .chunks(100)
        .map(|r| r.iter().fold(0u64, |a, &b| a.wrapping_add(b)))
        .collect();
    let raw = ex
        .iter()
        .zip(&ey)
        .fold(0u64, |a, (&p, &q)| a.wrapping_add(p.wrapping_mul(q)));
    let want = ((raw as i64) >> fixed.frac_bits()) as u64;
    for (party, (total, rows, dot, cost)) in got.iter().enumerate() {
        assert_eq!(total, &vec![sum], "P{party}: sum");
        assert_eq!(rows, &row_sums, "P{party}: sums over an axis");
        let off = dot[0].wrapping_sub(want) as i64;
        assert!((0..=1).contains(&off), "P{party}: dot off by {off}");
        assert_eq!(cost.rounds, 2, "P{party}");
    }
    // One element's product and truncation, however long the vectors.
    let sent: Vec<u64> = got.iter().map(|g| g.3.total_bytes_sent()).collect();
    // One element's fused product with exact truncation (the halves the truncation packs
    // two to a word take a whole word alone).
    assert_eq!(
        sent,
        [24, 16, 16],
        "bytes sent by P0, P1, P2 for a dot product"
    );
}
