//! Privacy checks that can fail: what one party receives in share, mul, truncation, binary
//! AND, the MSB and bit injection must be distributed the same for two very different
//! secrets, and turning off the zero sharing of products (or the XOR zero sharing of AND,
//! or any one of the exact truncation's masks: x1, x2 of its masked bits, σ1, σ2 of its
//! mask messages, u of y0) must make the check fail. (Sending bit
//! injection's d·a unmasked fails the MSB and bit injection check with a chi-square above
//! 15 000.)
//!
//! Each element of a large tensor is an independent run. From a party's view (its shares and
//! what it received) the test computes a statistic per element and compares the histograms
//! of its low 4 bits under the two secrets with a two-sample chi-square test (15 degrees of
//! freedom; the threshold 60 has a false-alarm chance near 10^-7).

use crate::{Party, Rss};
use cryptgpu_backend::GpuBackend;
use cryptgpu_cpu::CpuBackend;
use cryptgpu_ring::FixedPoint;
use cryptgpu_transport::{PartyId, run_local_3pc};

const RUNS: usize = 20_000;
const BINS: usize = 16;
const THRESHOLD: f64 = 60.0;

/// Histograms of the low 4 bits of: P1's received share of x, P0's product statistic, and
/// P2's received truncation message.
struct Views {
    share: [u64; BINS],
    product: [u64; BINS],
    truncation: [u64; BINS],
    and: [u64; BINS],
}

fn histogram(values: impl Iterator<Item = u64>) -> [u64; BINS] {
    let mut h = [0u64; BINS];
    for v in values {
        h[(v as usize) % BINS] += 1;
    }
    h
}

fn download(
    p: &Party<CpuBackend, impl cryptgpu_transport::Transport>,
    x: &Rss<CpuBackend>,
) -> (Vec<u64>, Vec<u64>) {
    let b = p.backend();
    (b.download(&x.own).unwrap(), b.download(&x.next).unwrap())
}

/// Runs share (x by P0, y by P1), product and truncation on `RUNS` copies of the secrets.
fn views(secret_x: u64, secret_y: u64, zero_sharing: bool) -> Views {
    let out = run_local_3pc(|t| {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default()).unwrap();
        p.insecure_skip_zero_sharing = !zero_sharing;
        let b = *p.backend();
        let me = p.id();
        let xs = (me == PartyId::P0).then(|| b.full(&[RUNS], secret_x).unwrap());
        let ys = (me == PartyId::P1).then(|| b.full(&[RUNS], secret_y).unwrap());
        let x = p.share(PartyId::P0, xs.as_ref(), &[RUNS]).unwrap();
        let y = p.share(PartyId::P1, ys.as_ref(), &[RUNS]).unwrap();
        let z = p.mul(&x, &y).unwrap();
        let t = p.truncate(&z).unwrap();
        let bx = p.share_binary(PartyId::P0, xs.as_ref(), &[RUNS]).unwrap();
        let by = p.share_binary(PartyId::P1, ys.as_ref(), &[RUNS]).unwrap();
        let bz = p.binary_and(&bx, &by).unwrap();
        let words = |v: &crate::BinaryRss<CpuBackend>| {
            (b.download(&v.own).unwrap(), b.download(&v.next).unwrap())
        };
        (
            download(&p, &x),
            download(&p, &y),
            download(&p, &z),
            download(&p, &t),
            (words(&bx), words(&by), words(&bz)),
        )
    })
    .unwrap();
    // P1 holds (x1, x2) and received x2 from the owner P0.
    let share = histogram(out[1].0.1.iter().copied());
    // P0 holds (x0, x1), (y0, y1) and received z1 = x1·y1 + x1·y2 + x2·y1 (+ α1) from P1.
    // Without α1, z1 + x1·y0 + x0·y1 + x1·y1 = x1·y + x·y1: zero whenever the secrets are.
    let ((x0, x1), (y0, y1), (_, z1)) = (&out[0].0, &out[0].1, &out[0].2);
    let product = histogram((0..RUNS).map(|i| {
        z1[i]
            .wrapping_add(x1[i].wrapping_mul(y0[i]))
            .wrapping_add(x0[i].wrapping_mul(y1[i]))
            .wrapping_add(x1[i].wrapping_mul(y1[i]))
    }));
    // P2 holds (y2, y0) of the truncated value and received y0 = A' − r from P0.
    let truncation = histogram(out[2].3.1.iter().copied());
    // P0 received z1 of the AND from P1; without β1, z1 ⊕ x1∧y0 ⊕ x0∧y1 ⊕ x1∧y1 =
    // x1∧y ⊕ x∧y1, zero whenever the secrets are.
    let ((bx0, bx1), (by0, by1), (_, bz1)) = &out[0].4;
    let and = histogram(
        (0..RUNS).map(|i| bz1[i] ^ (bx1[i] & by0[i]) ^ (bx0[i] & by1[i]) ^ (bx1[i] & by1[i])),
    );
    Views {
        share,
        product,
        truncation,
        and,
    }
}

/// Two-sample chi-square statistic of two histograms of equal totals.
fn chi_square(a: &[u64; BINS], b: &[u64; BINS]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(x, y)| **x + **y > 0)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d / (x + y) as f64
        })
        .sum()
}

fn secrets() -> [(u64, u64); 2] {
    let fixed = FixedPoint::default();
    [
        (0, 0),
        (
            fixed.encode(1000.0 * std::f64::consts::PI).unwrap(),
            fixed.encode(-77.0 * std::f64::consts::E).unwrap(),
        ),
    ]
}

#[test]
fn what_a_party_receives_does_not_depend_on_the_secret() {
    let [a, b] = secrets();
    let (va, vb) = (views(a.0, a.1, true), views(b.0, b.1, true));
    for (what, ha, hb) in [
        ("share", va.share, vb.share),
        ("product", va.product, vb.product),
        ("truncation", va.truncation, vb.truncation),
        ("binary and", va.and, vb.and),
    ] {
        let chi = chi_square(&ha, &hb);
        assert!(
            chi < THRESHOLD,
            "{what}: the view tells the secrets apart (chi-square {chi:.1} ≥ {THRESHOLD})"
        );
    }
}

#[test]
fn without_the_zero_sharing_the_product_leaks_and_the_test_sees_it() {
    let [a, b] = secrets();
    let (va, vb) = (views(a.0, a.1, false), views(b.0, b.1, false));
    let chi = chi_square(&va.product, &vb.product);
    assert!(
        chi > THRESHOLD,
        "without α the product view must differ between secrets (chi-square {chi:.1})"
    );
    let chi = chi_square(&va.and, &vb.and);
    assert!(
        chi > THRESHOLD,
        "without β the AND view must differ between secrets (chi-square {chi:.1})"
    );
}

/// Every party's view of one exact truncation by f = 20 of `z` (an RSS with z0 = z at P0),
/// with the mask `skip` replaced by zero at every party: per party, one histogram per
/// statistic of what it received, beside what it holds.
///
/// P0 receives nothing. P1 receives e1 (P0's masked top bit a) and h1; P2 receives e2 and
/// y0 (one message) and h2. The statistics tie each message to the receiver's B (the top
/// 3 bits, which with z = ∓2^61 say much about a = msb(z + 2^62 − B)):
/// - e: its low bit (a + x: a, without x);
/// - e − h: low bit of e minus the mask message's payload (b·x + σ', with b the top bit of
///   B: without σ, e − h = a whenever b = 1);
/// - y0 + sar(B, f), bits 41 to 44 (without u, about z/2^f, whose bit 41 tells ±2^41).
fn exact_truncation_views(
    z: u64,
    skip: Option<crate::truncation::TruncationMask>,
) -> [Vec<[u64; BINS]>; 3] {
    const F: u32 = 20;
    let out = run_local_3pc(|t| {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default()).unwrap();
        p.insecure_skip_truncation_mask = skip;
        let b = *p.backend();
        let secret = b.full(&[RUNS], z).unwrap();
        let x = p.constant(&secret).unwrap();
        p.received = Some(Vec::new());
        let part = p.split_for_truncation(&x).unwrap();
        p.truncate_split(part.clone(), F).unwrap();
        let received = p.received.take().unwrap();
        (b.download(&part).unwrap(), received)
    })
    .unwrap();
    // Masked bits and mask messages travel two elements to a word (32-bit halves): element
    // i in the low half of word i, or in the high half of word i − ⌈n/2⌉.
    let half = RUNS.div_ceil(2);
    let at = |words: &[u64], i: usize| {
        if i < half {
            words[i] & 0xFFFF_FFFF
        } else {
            words[i - half] >> 32
        }
    };
    let with_b = |part: &[u64], i: usize, bit: u64| (bit & 1) | ((part[i] >> 61) << 1);
    assert!(out[0].1.is_empty(), "P0 receives nothing");
    // P1: e1 from P0, then h1 from P2 (the order of its receive calls).
    let (part1, got1) = &out[1];
    assert_eq!(got1.len(), 2, "P1 receives e1 and h1");
    let (e1, h1) = (&got1[0], &got1[1]);
    assert_eq!(
        (e1.len(), h1.len()),
        (half, half),
        "e1, h1 packed two to a word"
    );
    // P2: e2 and y0 from P0 in one message, then h2 from P1.
    let (part2, got2) = &out[2];
    assert_eq!(got2.len(), 2, "P2 receives (e2, y0) and h2");
    let (e2, y0) = got2[0].split_at(half);
    let h2 = &got2[1];
    assert_eq!((y0.len(), h2.len()), (RUNS, half), "y0 whole, h2 packed");
    let joint = |part: &[u64], e: &[u64], h: &[u64]| {
        [
            histogram((0..RUNS).map(|i| with_b(part, i, at(e, i)))),
            histogram((0..RUNS).map(|i| with_b(part, i, at(e, i).wrapping_sub(at(h, i))))),
        ]
    };
    let mut p2 = joint(part2, e2, h2).to_vec();
    p2.push(histogram((0..RUNS).map(|i| {
        (y0[i].wrapping_add(((part2[i] as i64) >> F) as u64) >> 41) & 15
    })));
    [Vec::new(), joint(part1, e1, h1).to_vec(), p2]
}

/// The largest chi-square between the two secrets' views, over every statistic of every
/// party, with the party and statistic where it occurs.
fn worst_truncation_chi(skip: Option<crate::truncation::TruncationMask>) -> (f64, String) {
    // z = ∓2^61: a = msb(z + 2^62 − B) says which half-range B is in relative to z.
    let (low, high) = ((1u64 << 61).wrapping_neg(), 1u64 << 61);
    let (a, b) = (
        exact_truncation_views(low, skip),
        exact_truncation_views(high, skip),
    );
    let mut worst = (0.0, String::new());
    for (party, (va, vb)) in a.iter().zip(&b).enumerate() {
        for (k, (ha, hb)) in va.iter().zip(vb).enumerate() {
            let chi = chi_square(ha, hb);
            if chi > worst.0 {
                worst = (chi, format!("P{party}'s statistic {k}"));
            }
        }
    }
    worst
}

#[test]
fn exact_truncation_reveals_nothing_and_the_test_sees_a_missing_mask() {
    let (chi, at) = worst_truncation_chi(None);
    assert!(
        chi < THRESHOLD,
        "exact truncation: {at} tells the secrets apart (chi-square {chi:.1})"
    );
    for mask in crate::truncation::TruncationMask::ALL {
        let (chi, at) = worst_truncation_chi(Some(mask));
        eprintln!("exact truncation without {mask:?}: chi-square {chi:.1} ({at})");
        assert!(
            chi > THRESHOLD,
            "without {mask:?} the exact truncation's views must differ (largest chi-square \
             {chi:.1}, {at})"
        );
    }
}

/// Every message each party receives in an MSB and a bit injection (β = msb(s), then β·v),
/// as histograms of their words' low 4 bits, message by message.
fn comparison_views(s: u64, v: u64) -> [Vec<[u64; BINS]>; 3] {
    let out = run_local_3pc(|t| {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default()).unwrap();
        let b = *p.backend();
        let sign = p.constant(&b.full(&[RUNS], s).unwrap()).unwrap();
        let value = p.constant(&b.full(&[RUNS], v).unwrap()).unwrap();
        p.received = Some(Vec::new());
        let bits = p.msb(&sign).unwrap();
        p.mul_bit(&bits, &value).unwrap();
        p.received.take().unwrap()
    })
    .unwrap();
    out.map(|messages| {
        messages
            .iter()
            .map(|m| histogram(m.iter().copied()))
            .collect()
    })
}

#[test]
fn comparison_and_bit_injection_reveal_nothing() {
    // A negative and a positive secret, scaling very different values.
    let a = comparison_views(5u64.wrapping_neg(), 7);
    let b = comparison_views(5, 123_456_789);
    for (party, (va, vb)) in a.iter().zip(&b).enumerate() {
        assert_eq!(va.len(), vb.len(), "P{party} received as many messages");
        assert!(!va.is_empty(), "P{party} received messages");
        for (k, (ha, hb)) in va.iter().zip(vb).enumerate() {
            let chi = chi_square(ha, hb);
            assert!(
                chi < THRESHOLD,
                "P{party}'s message {k} tells the secrets apart (chi-square {chi:.1})"
            );
        }
    }
}
