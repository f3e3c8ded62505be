//! The protocol suite, generic over the backend: every check runs three parties in one
//! process on a backend handle and compares the revealed results with plaintext (exactly,
//! for comparisons, ReLU and pooling; within the documented bounds, for the functions by
//! iteration) and the counted communication with [`crate::cost`]. Each backend crate runs
//! it with [`nonlinear_protocol_tests!`](crate::nonlinear_protocol_tests).
//!
//! Parties use seeded keys (`KeySource::InsecureSeeded`), so every run is repeatable,
//! including the rare truncation failures.

use crate::cost::{self, Cost};
use crate::*;
use cryptgpu_backend::counters::{self, DeviceCounts};
use cryptgpu_backend::{GpuBackend, Pool2dParams};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{KeySource, Party, Rss, Truncation};
use cryptgpu_transport::{CommStats, LocalConfig, LocalTransport, PartyId, run_local_3pc_with};

/// A party of the suite's in-process runs.
pub type SuiteParty<'a, B> = Party<B, &'a mut LocalTransport>;

/// Runs `f` as three parties on `backend` with seeded keys and returns each party's result.
pub fn run3<B: GpuBackend, R: Send>(
    backend: &B,
    f: impl Fn(&mut SuiteParty<'_, B>) -> Result<R> + Sync,
) -> [R; 3] {
    run3_with(backend, LocalConfig::default(), f)
}

/// [`run3`] over an in-process transport configured by `config`.
pub fn run3_with<B: GpuBackend, R: Send>(
    backend: &B,
    config: LocalConfig,
    f: impl Fn(&mut SuiteParty<'_, B>) -> Result<R> + Sync,
) -> [R; 3] {
    run_local_3pc_with(config, |t| {
        let mut party = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::default(),
            KeySource::InsecureSeeded(7),
        )?;
        f(&mut party)
    })
    .expect("no party failed")
    .map(|r| r.expect("protocol succeeded"))
}

/// Deterministic reals in [lo, hi), with both ends included as the first two.
pub fn reals(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| match i {
            0 => lo,
            1 => hi,
            _ => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                lo + (x >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
            }
        })
        .collect()
}

/// Deterministic ring elements of the widest comparison domain [−2^62, 2^62) (ℓ = 62),
/// with the edge cases first: 0, ±1, −2^62, 2^62 − 1 and friends.
pub fn ring_values(seed: u64, n: usize) -> Vec<u64> {
    let edges = [
        0u64,
        1,
        u64::MAX,
        (1 << 62) - 2,
        (1u64 << 62).wrapping_neg(),
        (1 << 62) - 1,
        2,
        (1u64 << 20).wrapping_neg(),
    ];
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            if i < edges.len() {
                edges[i]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Values within ±2^61.
                ((x as i64) >> 2) as u64
            }
        })
        .collect()
}

fn signed(v: u64) -> i64 {
    v as i64
}

/// Shares `values` from P0 (a real input round, not a public sharing).
fn input<B: GpuBackend>(
    p: &mut SuiteParty<'_, B>,
    values: &[u64],
    shape: &[usize],
) -> Result<Rss<B>> {
    let t = if p.id() == PartyId::P0 {
        Some(p.backend().upload(values, shape)?)
    } else {
        None
    };
    Ok(p.share(PartyId::P0, t.as_ref(), shape)?)
}

fn input_f64<B: GpuBackend>(
    p: &mut SuiteParty<'_, B>,
    values: &[f64],
    shape: &[usize],
) -> Result<Rss<B>> {
    let mine = (p.id() == PartyId::P0).then_some(values);
    Ok(p.share_f64(PartyId::P0, mine, shape)?)
}

fn same3<R: PartialEq + std::fmt::Debug>(r: [R; 3]) -> R {
    let [a, b, c] = r;
    assert_eq!(a, b, "P0 and P1 revealed different values");
    assert_eq!(b, c, "P1 and P2 revealed different values");
    a
}

/// A relation between two signed ring integers.
type Relation = fn(i64, i64) -> bool;

/// The relations [`reveal_comparisons`] reveals, in its order, on signed ring integers.
const RELATIONS: [(&str, Relation); 4] = [
    ("lt", |a, b| a < b),
    ("gt", |a, b| a > b),
    ("le", |a, b| a <= b),
    ("ge", |a, b| a >= b),
];

/// The bits of x < y, x > y, x ≤ y and x ≥ y between shares, then of z against the public
/// c in the same order, each revealed.
fn reveal_comparisons<B: GpuBackend, T: cryptgpu_transport::Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    y: &Rss<B>,
    z: &Rss<B>,
    c: &B::Tensor,
) -> Result<Vec<Vec<bool>>> {
    let mut out = Vec::new();
    for f in [lt, gt, le, ge] {
        let r = f(p, x, y)?;
        out.push(p.reveal_bits(&r)?);
    }
    for f in [lt_public, gt_public, le_public, ge_public] {
        let r = f(p, z, c)?;
        out.push(p.reveal_bits(&r)?);
    }
    Ok(out)
}

/// MSB and the eight comparisons (shared and public) against plaintext, exactly.
pub fn check_comparisons<B: GpuBackend>(backend: &B) {
    let n = 200;
    let x = ring_values(1, n);
    let mut y = ring_values(2, n);
    y[10] = x[10]; // a tie
    let mut x = x;
    x[11] = 0; // DReLU's convention at 0
    let bits = same3(run3(backend, |p| {
        p.set_comparison_bits(62)?; // the widest domain, [−2^62, 2^62)
        let sx = input(p, &x, &[n])?;
        let sy = input(p, &y, &[n])?;
        let c = p.backend().upload(&y, &[n])?;
        let mut out = Vec::new();
        let sign = p.msb_in(&sx, 63)?; // the whole ring's MSB
        out.push(p.reveal_bits(&sign)?);
        out.extend(reveal_comparisons(p, &sx, &sy, &sx, &c)?);
        let d = drelu(p, &sx)?;
        out.push(p.reveal_bits(&d)?);
        Ok(out)
    }));
    let want = |f: fn(i64, i64) -> bool| -> Vec<bool> {
        x.iter()
            .zip(&y)
            .map(|(&a, &b)| f(signed(a), signed(b)))
            .collect()
    };
    assert_eq!(
        bits[0],
        x.iter().map(|&a| signed(a) < 0).collect::<Vec<_>>(),
        "msb"
    );
    for (k, (name, f)) in RELATIONS.iter().enumerate() {
        assert_eq!(bits[1 + k], want(*f), "{name}");
        assert_eq!(bits[5 + k], want(*f), "{name}_public");
    }
    assert_eq!(
        bits[9],
        x.iter().map(|&a| signed(a) > 0).collect::<Vec<_>>(),
        "drelu (0 at 0, like PyTorch and the plaintext executor)"
    );
}

/// The MSB over k bits ([`Party::msb_in`]) exact at the edges of [−2^k, 2^k) and inside,
/// for odd and even k up to the whole ring (k = 63), and [`Party::msb`] in comparison
/// domains ℓ exact on [−2^(ℓ+1), 2^(ℓ+1)), with the bytes and rounds of [`cost::msb_in`].
pub fn check_comparison_domain<B: GpuBackend>(backend: &B) {
    // (k, ℓ): msb_in over k bits, or msb with ℓ = k − 1.
    for (k, via_domain) in [
        (2u32, false),
        (3, true),
        (17, false),
        (32, true),
        (44, true),
        (62, false),
        (63, false),
        (63, true),
    ] {
        let half = 1u64 << (k - 1);
        let top = (1u64 << k) - 1;
        let mut x: Vec<u64> = vec![
            0,
            1,
            u64::MAX,
            top,
            top.wrapping_neg().wrapping_sub(1), // −2^k
            top.wrapping_neg(),                 // −2^k + 1
            half,
            half.wrapping_neg(),
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(k);
        while x.len() < 300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Uniform in [−2^k, 2^k).
            x.push((state & top).wrapping_sub(if state >> 63 == 1 { top + 1 } else { 0 }));
        }
        let n = x.len();
        let sign_of = |p: &mut SuiteParty<'_, B>, sx: &Rss<B>| {
            if via_domain {
                p.set_comparison_bits(k - 1)?;
                p.msb(sx)
            } else {
                p.msb_in(sx, k)
            }
        };
        let bits = same3(run3(backend, |p| {
            let sx = input(p, &x, &[n])?;
            let sign = sign_of(p, &sx)?;
            Ok(p.reveal_bits(&sign)?)
        }));
        let want: Vec<bool> = x.iter().map(|&v| signed(v) < 0).collect();
        assert_eq!(
            bits, want,
            "msb over {k} bits (via the domain: {via_domain})"
        );
        // Setting the domain sends nothing, so the measure is the MSB's alone.
        let measured = measure(backend, &[n], |p, x| {
            sign_of(p, x).map(drop).map_err(Into::into)
        });
        assert_eq!(measured, cost::msb_in(n, k), "msb cost over {k} bits");
    }
}

/// The comparison domain ℓ exact at both edges, for every comparison: values −2^ℓ,
/// −2^ℓ + 1, −1, 0, 1, 2^ℓ − 2, 2^ℓ − 1 (and random ones of the domain), every pair of
/// them (opposite edges included) for lt, gt, le, ge, max and argmax; public thresholds
/// far beyond the domain (±2^62, the ring's extremes) and at ±2^ℓ, ±(2^ℓ ± 1); msb, DReLU,
/// ReLU; max-pooling with and without padding (the padding sits at the floor −2^ℓ). For
/// small domains and the default one.
pub fn check_comparison_edges<B: GpuBackend>(backend: &B) {
    let default = cost::default_comparison_bits();
    for l in [2u32, 3, 17, default, 62] {
        let half = 1u64 << l;
        let neg = |v: u64| v.wrapping_neg();
        let edges = [neg(half), neg(half) + 1, u64::MAX, 0, 1, half - 2, half - 1];
        // Every pair of edges, then random values of the domain.
        let mut x: Vec<u64> = Vec::new();
        let mut y: Vec<u64> = Vec::new();
        for &a in &edges {
            for &b in &edges {
                x.push(a);
                y.push(b);
            }
        }
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(l);
        let mut draw = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state & (half - 1)).wrapping_sub(if state >> 63 == 1 { half } else { 0 })
        };
        for _ in 0..40 {
            x.push(draw());
            y.push(draw());
        }
        // Public thresholds: beyond the domain, at its edges and one past them, and every
        // edge value, each against every edge of x.
        let thresholds = [
            1u64 << 62,
            neg(1 << 62),
            i64::MAX as u64,
            i64::MIN as u64,
            half,
            neg(half),
            half + 1,
            neg(half + 1),
            half - 1,
            neg(half - 1),
        ];
        let (mut px, mut pc) = (Vec::new(), Vec::new());
        for &c in thresholds.iter().chain(&edges) {
            for &a in &edges {
                px.push(a);
                pc.push(c);
            }
        }
        let (n, m) = (x.len(), px.len());
        let (bits, relu_out, maxima, hot) = same3(run3(backend, |p| {
            p.set_comparison_bits(l)?;
            let sx = input(p, &x, &[n])?;
            let sy = input(p, &y, &[n])?;
            let spx = input(p, &px, &[m])?;
            let c = p.backend().upload(&pc, &[m])?;
            let mut out = Vec::new();
            for v in [&sx, &sy] {
                let sign = p.msb(v)?;
                out.push(p.reveal_bits(&sign)?);
                let d = drelu(p, v)?;
                out.push(p.reveal_bits(&d)?);
            }
            out.extend(reveal_comparisons(p, &sx, &sy, &spx, &c)?);
            let r = relu(p, &sx)?;
            let relu_out = p.reveal(&r.output)?;
            // x and y as the two candidates of each position, then every edge along an axis.
            let pair = p.concat(&[&sx, &sy], 0)?;
            let pair = p.linear(&pair, |b, t| b.reshape(t, &[2, n]))?;
            let m2 = max(p, &pair, 0, true)?;
            let all = input(p, &edges, &[1, edges.len()])?;
            let m7 = max(p, &all, 1, true)?;
            let maxima = (p.reveal(&m2.values)?, p.reveal(&m7.values)?);
            let hot = (
                p.reveal(m2.argmax.as_ref().expect("asked"))?,
                p.reveal(m7.argmax.as_ref().expect("asked"))?,
            );
            Ok((out, relu_out, maxima, hot))
        }));
        let s = |v: u64| signed(v);
        let of = |v: &[u64], f: &dyn Fn(i64) -> bool| -> Vec<bool> {
            v.iter().map(|&a| f(s(a))).collect()
        };
        let want: Vec<Vec<bool>> = vec![
            of(&x, &|a| a < 0),
            of(&x, &|a| a > 0),
            of(&y, &|a| a < 0),
            of(&y, &|a| a > 0),
        ];
        for (k, name) in ["msb(x)", "drelu(x)", "msb(y)", "drelu(y)"]
            .iter()
            .enumerate()
        {
            assert_eq!(bits[k], want[k], "{name} with ℓ = {l}");
        }
        for (k, (name, f)) in RELATIONS.iter().enumerate() {
            let shared: Vec<bool> = x.iter().zip(&y).map(|(&a, &b)| f(s(a), s(b))).collect();
            assert_eq!(bits[4 + k], shared, "{name} with ℓ = {l}");
            let public: Vec<bool> = px.iter().zip(&pc).map(|(&a, &c)| f(s(a), s(c))).collect();
            for (i, (&got, &want)) in bits[8 + k].iter().zip(&public).enumerate() {
                assert_eq!(
                    got,
                    want,
                    "{name}_public({}, {}) with ℓ = {l}",
                    s(px[i]),
                    s(pc[i])
                );
            }
        }
        let want_relu: Vec<u64> = x.iter().map(|&a| if s(a) > 0 { a } else { 0 }).collect();
        assert_eq!(relu_out, want_relu, "relu with ℓ = {l}");
        let (m2, m7) = maxima;
        let (h2, h7) = hot;
        for i in 0..n {
            let first = s(x[i]) >= s(y[i]);
            let want = if first { x[i] } else { y[i] };
            assert_eq!(m2[i], want, "max({}, {}) with ℓ = {l}", s(x[i]), s(y[i]));
            assert_eq!(
                (h2[i], h2[n + i]),
                (u64::from(first), u64::from(!first)),
                "argmax({}, {}) with ℓ = {l}",
                s(x[i]),
                s(y[i])
            );
        }
        assert_eq!(m7, vec![half - 1], "max of the edges with ℓ = {l}");
        let last = edges.len() - 1;
        let want_hot: Vec<u64> = (0..edges.len()).map(|i| u64::from(i == last)).collect();
        assert_eq!(h7, want_hot, "argmax of the edges with ℓ = {l}");
        check_pool_edges(backend, l);
    }
}

/// Max-pooling at the edges of the comparison domain ℓ, with and without padding: planes
/// of the floor −2^ℓ only (the padding ties with every value), of the two opposite edges,
/// and of every edge.
fn check_pool_edges<B: GpuBackend>(backend: &B, l: u32) {
    let half = 1u64 << l;
    let floor = half.wrapping_neg();
    let edges = [floor, floor + 1, u64::MAX, 0, 1, half - 2, half - 1];
    let mut x = vec![floor; 16];
    x.extend((0..16).map(|i| if i % 3 == 0 { half - 1 } else { floor }));
    x.extend((0..16).map(|i| edges[(i * 5) % edges.len()]));
    x.extend((0..16).map(|i| if i == 5 { half - 1 } else { floor + 1 }));
    let shape = [1usize, 4, 4, 4];
    let padded = Pool2dParams {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
    };
    for params in [Pool2dParams::new(2, 2), padded] {
        let (want, _, _) = plain_max_pool(&x, shape, params);
        let (got, values) = same3(run3(backend, |p| {
            p.set_comparison_bits(l)?;
            let sx = input(p, &x, &shape)?;
            let pool = max_pool2d(p, &sx, params)?;
            let values = max_pool2d_values(p, &sx, params)?;
            Ok((p.reveal(&pool.output)?, p.reveal(&values)?))
        }));
        assert_eq!(got, want, "max_pool2d {params:?} with ℓ = {l}");
        assert_eq!(values, want, "max_pool2d_values {params:?} with ℓ = {l}");
    }
}

/// ReLU, its DReLU bits and its backward pass, exactly (no truncation is involved), on an
/// odd size and a multi-axis shape.
pub fn check_relu<B: GpuBackend>(backend: &B) {
    for shape in [vec![1usize], vec![3, 5, 7]] {
        let n: usize = shape.iter().product();
        let mut x = ring_values(3, n);
        for v in x.iter_mut().step_by(4) {
            *v = 0; // the gradient at 0 is 0
        }
        let g = ring_values(4, n);
        let (out, grad) = same3(run3(backend, |p| {
            p.set_comparison_bits(62)?; // the widest domain, [−2^62, 2^62)
            let sx = input(p, &x, &shape)?;
            let sg = input(p, &g, &shape)?;
            let r = relu(p, &sx)?;
            let back = relu_backward(p, &sg, &r.drelu)?;
            Ok((p.reveal(&r.output)?, p.reveal(&back)?))
        }));
        let want: Vec<u64> = x
            .iter()
            .map(|&v| if signed(v) >= 0 { v } else { 0 })
            .collect();
        assert_eq!(out, want, "relu on {shape:?}");
        let want_grad: Vec<u64> = x
            .iter()
            .zip(&g)
            .map(|(&v, &gv)| if signed(v) > 0 { gv } else { 0 })
            .collect();
        assert_eq!(grad, want_grad, "relu backward on {shape:?}");
    }
}

/// Bit injection with trailing axes, `bit_to_arith`, `select` and `abs`, exactly.
pub fn check_bit_injection<B: GpuBackend>(backend: &B) {
    let (rows, cols) = (70, 3);
    let x = ring_values(5, rows);
    let v = ring_values(6, rows * cols);
    let w = ring_values(7, rows);
    let (scaled, arith, chosen, absolute) = same3(run3(backend, |p| {
        p.set_comparison_bits(62)?; // the widest domain, [−2^62, 2^62)
        let sx = input(p, &x, &[rows])?;
        let sv = input(p, &v, &[rows, cols])?;
        let sw = input(p, &w, &[rows])?;
        let neg = p.msb(&sx)?;
        let scaled = p.mul_bit(&neg, &sv)?;
        let arith = p.bit_to_arith(&neg)?;
        let chosen = select(p, &neg, &sx, &sw)?;
        let (absolute, _) = abs(p, &sx)?;
        Ok((
            p.reveal(&scaled)?,
            p.reveal(&arith)?,
            p.reveal(&chosen)?,
            p.reveal(&absolute)?,
        ))
    }));
    for i in 0..rows {
        let bit = signed(x[i]) < 0;
        assert_eq!(arith[i], bit as u64, "bit_to_arith {i}");
        assert_eq!(chosen[i], if bit { x[i] } else { w[i] }, "select {i}");
        assert_eq!(
            absolute[i],
            x[i].wrapping_mul(if bit { u64::MAX } else { 1 }),
            "abs {i}"
        );
        for j in 0..cols {
            let want = if bit { v[i * cols + j] } else { 0 };
            assert_eq!(scaled[i * cols + j], want, "mul_bit [{i}, {j}]");
        }
    }
}

/// max and one-hot argmax along every axis of a 3-d tensor (odd lengths, ties), exactly.
pub fn check_max_argmax<B: GpuBackend>(backend: &B) {
    let shape = [5usize, 3, 6];
    let n: usize = shape.iter().product();
    let mut x = ring_values(8, n);
    for v in x.iter_mut().skip(40).step_by(7) {
        *v = 12345; // ties
    }
    for axis in 0..3 {
        let (values, hot) = same3(run3(backend, |p| {
            p.set_comparison_bits(62)?; // the widest domain, [−2^62, 2^62)
            let sx = input(p, &x, &shape)?;
            let m = max(p, &sx, axis, true)?;
            let hot = m.argmax.as_ref().expect("asked");
            Ok((p.reveal(&m.values)?, p.reveal(hot)?))
        }));
        let strides = [shape[1] * shape[2], shape[2], 1];
        let mut out_i = 0;
        for a in 0..shape[0] {
            for b in 0..shape[1] {
                for c in 0..shape[2] {
                    let idx = [a, b, c];
                    if idx[axis] != 0 {
                        continue;
                    }
                    let at = |k: usize| {
                        let mut j = idx;
                        j[axis] = k;
                        j[0] * strides[0] + j[1] * strides[1] + j[2] * strides[2]
                    };
                    let mut best = 0;
                    for k in 1..shape[axis] {
                        if signed(x[at(k)]) > signed(x[at(best)]) {
                            best = k;
                        }
                    }
                    assert_eq!(values[out_i], x[at(best)], "max along {axis} at {idx:?}");
                    for k in 0..shape[axis] {
                        // Ties go to the lowest index, as in PyTorch.
                        assert_eq!(
                            hot[at(k)],
                            u64::from(k == best),
                            "one-hot argmax along {axis} at {idx:?}, position {k}"
                        );
                    }
                    let winners: u64 = (0..shape[axis]).map(|k| hot[at(k)]).sum();
                    assert_eq!(winners, 1, "exactly one winner along {axis} at {idx:?}");
                    out_i += 1;
                }
            }
        }
    }
}

/// Ties in the tournament go to the lowest index: [1, 5, 5, 5] → 1, [7, 7] → 0, all equal → 0,
/// [0, 3, 3] → 1, [2, 9, 4, 9, 9] → 1.
pub fn check_argmax_ties<B: GpuBackend>(backend: &B) {
    let rows: [&[u64]; 5] = [
        &[1, 5, 5, 5],
        &[7, 7],
        &[4, 4, 4, 4, 4, 4, 4],
        &[0, 3, 3],
        &[2, 9, 4, 9, 9],
    ];
    let want = [1usize, 0, 0, 1, 1];
    for (row, want) in rows.iter().zip(want) {
        let k = row.len();
        let hot = same3(run3(backend, |p| {
            let sx = input(p, row, &[1, k])?;
            let hot = argmax(p, &sx, 1)?;
            Ok(p.reveal(&hot)?)
        }));
        let expected: Vec<u64> = (0..k).map(|i| u64::from(i == want)).collect();
        assert_eq!(hot, expected, "argmax of {row:?}");
    }
}

/// Plaintext max-pooling over signed ring values: output and winner positions.
fn plain_max_pool(
    x: &[u64],
    shape: [usize; 4],
    p: Pool2dParams,
) -> (Vec<u64>, Vec<usize>, [usize; 4]) {
    let [n, c, h, w] = shape;
    let oh = (h + 2 * p.padding[0] - p.kernel[0]) / p.stride[0] + 1;
    let ow = (w + 2 * p.padding[1] - p.kernel[1]) / p.stride[1] + 1;
    let mut out = Vec::new();
    let mut arg = Vec::new();
    for ni in 0..n {
        for ci in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    let mut best: Option<(i64, usize)> = None;
                    for di in 0..p.kernel[0] {
                        for dj in 0..p.kernel[1] {
                            let (r, s) = (i * p.stride[0] + di, j * p.stride[1] + dj);
                            if r < p.padding[0] || s < p.padding[1] {
                                continue;
                            }
                            let (r, s) = (r - p.padding[0], s - p.padding[1]);
                            if r >= h || s >= w {
                                continue;
                            }
                            let at = ((ni * c + ci) * h + r) * w + s;
                            if best.is_none_or(|(v, _)| signed(x[at]) > v) {
                                best = Some((signed(x[at]), at));
                            }
                        }
                    }
                    let (v, at) = best.expect("every window holds an input");
                    out.push(v as u64);
                    arg.push(at);
                }
            }
        }
    }
    (out, arg, [n, c, oh, ow])
}

/// Max-pooling forward and backward against plaintext, exactly, with and without padding.
pub fn check_max_pool<B: GpuBackend>(backend: &B) {
    let shape = [2usize, 3, 7, 6];
    let n: usize = shape.iter().product();
    // The whole default comparison domain [−2^43, 2^43) (ℓ = 43), both edges included; the
    // padding sits at its floor −2^43.
    let x: Vec<u64> = ring_values(9, n)
        .iter()
        .map(|&v| ((v as i64) >> 19) as u64)
        .collect();
    // After a ReLU: many windows tie at 0, some entirely; the winner is the first position.
    let relu_x: Vec<u64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| if signed(v) > 0 && i % 3 == 0 { v } else { 0 })
        .collect();
    let pad = Pool2dParams {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    let cases = [
        (Pool2dParams::new(2, 2), &x),
        (pad, &x),
        (Pool2dParams::new(2, 2), &relu_x),
        (pad, &relu_x),
    ];
    for (params, x) in cases {
        let (want, arg, out_shape) = plain_max_pool(x, shape, params);
        let outs: usize = out_shape.iter().product();
        let g = ring_values(10, outs);
        let (got, grad, values) = same3(run3(backend, |p| {
            let sx = input(p, x, &shape)?;
            let sg = input(p, &g, &out_shape)?;
            let pool = max_pool2d(p, &sx, params)?;
            let back = max_pool2d_backward(p, &sg, &pool)?;
            let values = max_pool2d_values(p, &sx, params)?;
            Ok((
                p.reveal(&pool.output)?,
                p.reveal(&back)?,
                p.reveal(&values)?,
            ))
        }));
        assert_eq!(got, want, "max_pool2d {params:?}");
        assert_eq!(values, want, "max_pool2d_values {params:?}");
        let mut want_grad = vec![0u64; n];
        for (o, &at) in arg.iter().enumerate() {
            want_grad[at] = want_grad[at].wrapping_add(g[o]);
        }
        assert_eq!(grad, want_grad, "max_pool2d backward {params:?}");
    }
    // A ReLU moved behind the pool: relu(max(x)) with the winners gated by its bits gives
    // exactly the output and gradient of max(relu(x)).
    for params in [Pool2dParams::new(2, 2), pad] {
        let (want, arg, out_shape) = plain_max_pool(&relu_of(&x), shape, params);
        let outs: usize = out_shape.iter().product();
        let g = ring_values(11, outs);
        let (got, grad) = same3(run3(backend, |p| {
            let sx = input(p, &x, &shape)?;
            let sg = input(p, &g, &out_shape)?;
            let pool = max_pool2d(p, &sx, params)?;
            let r = relu(p, &pool.output)?;
            let gated = gate_winners(p, &pool, &r.drelu)?;
            let back = max_pool2d_backward(p, &sg, &gated)?;
            Ok((p.reveal(&r.output)?, p.reveal(&back)?))
        }));
        assert_eq!(got, want, "relu after max_pool2d {params:?}");
        let mut want_grad = vec![0u64; n];
        for (o, &at) in arg.iter().enumerate() {
            if signed(x[at]) > 0 {
                want_grad[at] = want_grad[at].wrapping_add(g[o]);
            }
        }
        assert_eq!(grad, want_grad, "gated max_pool2d backward {params:?}");
    }
}

/// max(v, 0) of signed ring values.
fn relu_of(x: &[u64]) -> Vec<u64> {
    x.iter()
        .map(|&v| if signed(v) > 0 { v } else { 0 })
        .collect()
}

/// Average and global average pooling (forward and backward) against f64, within a few
/// units of the last place.
pub fn check_avg_pool<B: GpuBackend>(backend: &B) {
    let fixed = FixedPoint::default();
    let shape = [2usize, 2, 6, 5];
    let n: usize = shape.iter().product();
    let x = reals(11, n, -8.0, 8.0);
    let params = Pool2dParams {
        kernel: [3, 3],
        stride: [2, 2],
        padding: [1, 1],
    };
    let (oh, ow) = (3, 3);
    let g = reals(12, 2 * 2 * oh * ow, -1.0, 1.0);
    let gg = reals(13, 4, -1.0, 1.0);
    let (pooled, back, global, global_back) = same3(run3(backend, |p| {
        let sx = input_f64(p, &x, &shape)?;
        let sg = input_f64(p, &g, &[2, 2, oh, ow])?;
        let sgg = input_f64(p, &gg, &[2, 2])?;
        let pooled = avg_pool2d(p, &sx, params)?;
        let back = avg_pool2d_backward(p, &sg, params, &shape)?;
        let global = global_avg_pool(p, &sx)?;
        let global_back = global_avg_pool_backward(p, &sgg, &shape)?;
        Ok((
            p.reveal_f64(&pooled)?,
            p.reveal_f64(&back)?,
            p.reveal_f64(&global)?,
            p.reveal_f64(&global_back)?,
        ))
    }));
    let tol = 4.0 * fixed.resolution();
    let at = |ni: usize, ci: usize, r: usize, s: usize| ((ni * 2 + ci) * 6 + r) * 5 + s;
    let mut want_back = vec![0.0; n];
    for ni in 0..2 {
        for ci in 0..2 {
            for i in 0..oh {
                for j in 0..ow {
                    let mut sum = 0.0;
                    for di in 0..3 {
                        for dj in 0..3 {
                            let (r, s) = ((i * 2 + di) as isize - 1, (j * 2 + dj) as isize - 1);
                            if (0..6).contains(&r) && (0..5).contains(&s) {
                                sum += x[at(ni, ci, r as usize, s as usize)];
                                want_back[at(ni, ci, r as usize, s as usize)] +=
                                    g[((ni * 2 + ci) * oh + i) * ow + j] / 9.0;
                            }
                        }
                    }
                    let o = ((ni * 2 + ci) * oh + i) * ow + j;
                    // 1/9 itself is encoded with an error up to 2^-(f+1), scaled by the sum.
                    let bound = tol + sum.abs() * fixed.resolution();
                    let err = (pooled[o] - sum / 9.0).abs();
                    assert!(err <= bound, "avg_pool2d {o}: error {err:e} over {bound:e}");
                }
            }
            let mean: f64 = (0..6)
                .flat_map(|r| (0..5).map(move |s| (r, s)))
                .map(|(r, s)| x[at(ni, ci, r, s)])
                .sum::<f64>()
                / 30.0;
            let bound = tol + 30.0 * mean.abs() * fixed.resolution();
            assert!(
                (global[ni * 2 + ci] - mean).abs() <= bound,
                "global_avg_pool"
            );
            for r in 0..6 {
                for s in 0..5 {
                    let want = gg[ni * 2 + ci] / 30.0;
                    assert!(
                        (global_back[at(ni, ci, r, s)] - want).abs() <= tol,
                        "global backward"
                    );
                }
            }
        }
    }
    for (i, (&got, &want)) in back.iter().zip(&want_back).enumerate() {
        assert!(
            (got - want).abs() <= 3.0 * tol,
            "avg_pool2d backward {i}: {got} vs {want}"
        );
        let _ = i;
    }
}

/// The largest error of `got` against `want`: |got − want| ≤ abs + rel·|want| must hold.
fn assert_close(
    what: &str,
    inputs: &[f64],
    got: &[f64],
    want: &[f64],
    abs: f64,
    rel: f64,
) -> (f64, f64) {
    let mut worst_abs = 0f64;
    let mut worst_rel = 0f64;
    for i in 0..got.len() {
        let err = (got[i] - want[i]).abs();
        worst_abs = worst_abs.max(err);
        if want[i].abs() > 1e-3 {
            worst_rel = worst_rel.max(err / want[i].abs());
        }
        assert!(
            err <= abs + rel * want[i].abs(),
            "{what}({}) = {} but should be {} (error {err:e}; bound {abs:e} + {rel:e}·|want|)",
            inputs[i],
            got[i],
            want[i]
        );
    }
    eprintln!("{what}: max abs error {worst_abs:.3e}, max rel error {worst_rel:.3e}");
    (worst_abs, worst_rel)
}

/// The documented error bounds of the functions by iteration (module `approx`), checked on
/// random inputs over each default domain, edges included.
pub fn check_functions<B: GpuBackend>(backend: &B) {
    let n = 400;
    let exp_in = reals(20, n, -256.0, 4.0);
    let mut exp_near = reals(21, n, -8.0, 0.0);
    exp_near[1] = 0.0;
    let rec_in = reals(22, n, 0.5, 256.0);
    let log_in = reals(23, n, 0.01, 200.0);
    let isq_in = reals(24, n, 0.1, 100.0);
    let sig_in = reals(25, n, -256.0, 256.0);
    let sig_near = reals(26, n, -8.0, 8.0);
    let num = reals(27, n, -4.0, 4.0);
    let out = same3(run3(backend, |p| {
        let mut revealed = Vec::new();
        let e = input_f64(p, &exp_in, &[n])?;
        let e = exp(p, &e, ExpOptions::default())?;
        revealed.push(p.reveal_f64(&e)?);
        let e = input_f64(p, &exp_near, &[n])?;
        let e = exp(p, &e, ExpOptions::default())?;
        revealed.push(p.reveal_f64(&e)?);
        let r = input_f64(p, &rec_in, &[n])?;
        let a = input_f64(p, &num, &[n])?;
        let inv = reciprocal(p, &r, ReciprocalOptions::default())?;
        revealed.push(p.reveal_f64(&inv)?);
        let q = div(p, &a, &r, ReciprocalOptions::default())?;
        revealed.push(p.reveal_f64(&q)?);
        let l = input_f64(p, &log_in, &[n])?;
        let l = log(p, &l, LogOptions::default())?;
        revealed.push(p.reveal_f64(&l)?);
        let s = input_f64(p, &isq_in, &[n])?;
        let s = inv_sqrt(p, &s, InvSqrtOptions::default())?;
        revealed.push(p.reveal_f64(&s)?);
        let g = input_f64(p, &sig_in, &[n])?;
        let g = sigmoid(p, &g, SigmoidOptions::default())?;
        revealed.push(p.reveal_f64(&g)?);
        let g = input_f64(p, &sig_near, &[n])?;
        let g = sigmoid(p, &g, SigmoidOptions::default())?;
        revealed.push(p.reveal_f64(&g)?);
        Ok(revealed)
    }));
    let f = |v: &[f64], g: fn(f64) -> f64| v.iter().map(|&x| g(x)).collect::<Vec<_>>();
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    assert_close(
        "exp",
        &exp_in,
        &out[0],
        &f(&exp_in, f64::exp),
        EXP_ABS,
        EXP_REL,
    );
    assert_close(
        "exp near 0",
        &exp_near,
        &out[1],
        &f(&exp_near, f64::exp),
        EXP_ABS,
        EXP_REL,
    );
    assert_close(
        "reciprocal",
        &rec_in,
        &out[2],
        &f(&rec_in, f64::recip),
        RECIPROCAL_ABS,
        RECIPROCAL_REL,
    );
    let quotient: Vec<f64> = num.iter().zip(&rec_in).map(|(a, b)| a / b).collect();
    assert_close(
        "div",
        &rec_in,
        &out[3],
        &quotient,
        RECIPROCAL_ABS * 4.0,
        RECIPROCAL_REL,
    );
    assert_close("log", &log_in, &out[4], &f(&log_in, f64::ln), LOG_ABS, 0.0);
    assert_close(
        "inv_sqrt",
        &isq_in,
        &out[5],
        &f(&isq_in, |x| 1.0 / x.sqrt()),
        INV_SQRT_ABS,
        INV_SQRT_REL,
    );
    assert_close(
        "sigmoid",
        &sig_in,
        &out[6],
        &f(&sig_in, sig),
        SIGMOID_ABS,
        0.0,
    );
    assert_close(
        "sigmoid near 0",
        &sig_near,
        &out[7],
        &f(&sig_near, sig),
        SIGMOID_ABS,
        0.0,
    );
}

/// erf's documented bound (absolute).
pub const ERF_ABS: f64 = 3e-5;
/// GELU's documented bound (absolute).
pub const GELU_ABS: f64 = 1e-4;
/// inv_sqrt_wide's documented bound: relative part.
pub const INV_SQRT_WIDE_REL: f64 = 1.0 / (1u64 << 12) as f64;
/// LayerNorm's documented bound (absolute, on outputs of unit scale).
pub const LAYER_NORM_ABS: f64 = 2e-3;

/// erf, GELU, the wide inverse square root and LayerNorm against f64, over their domains
/// (erf and GELU over the whole line, huge values included), and their counted costs
/// against [`crate::cost`] and the measured rounds of [`crate::transformer`].
pub fn check_transformer_functions<B: GpuBackend>(backend: &B) {
    let n = 512;
    let mut near = reals(40, n, -8.0, 8.0);
    near[..8].copy_from_slice(&[0.0, 3.0, -3.0, 2.999, -3.001, 1e-6, 4.2426, -4.2426]);
    let mut wide = reals(41, n, -5000.0, 5000.0);
    wide[..4].copy_from_slice(&[1e6, -1e6, 64.0, -64.0]);
    // Variances spread over the domain, log-uniformly.
    let variances: Vec<f64> = reals(42, n, -12.4, 15.2).iter().map(|e| e.exp()).collect();
    let (rows, d) = (32, 64);
    let scales = [0.01, 0.1, 1.0, 10.0, 100.0, 150.0];
    let activations: Vec<f64> = reals(43, rows * d, -2.0, 2.0)
        .iter()
        .enumerate()
        .map(|(i, v)| (v + 0.3) * scales[(i / d) % scales.len()])
        .collect();
    let out = same3(run3(backend, |p| {
        let mut revealed = Vec::new();
        for values in [&near, &wide] {
            let x = input_f64(p, values, &[n])?;
            let e = erf(p, &x)?;
            revealed.push(p.reveal_f64(&e)?);
            let g = gelu(p, &x)?;
            revealed.push(p.reveal_f64(&g)?);
        }
        let v = input_f64(p, &variances, &[n])?;
        let s = inv_sqrt_wide(p, &v, InvSqrtWideOptions::default())?;
        revealed.push(p.reveal_f64(&v)?);
        revealed.push(p.reveal_f64(&s)?);
        let x = input_f64(p, &activations, &[rows, d])?;
        let y = layer_norm(p, &x, 1e-5)?;
        revealed.push(p.reveal_f64(&x)?);
        revealed.push(p.reveal_f64(&y)?);
        Ok(revealed)
    }));
    let map = |v: &[f64], g: fn(f64) -> f64| v.iter().map(|&x| g(x)).collect::<Vec<_>>();
    for (k, values) in [&near, &wide].into_iter().enumerate() {
        assert_close(
            "erf",
            values,
            &out[2 * k],
            &map(values, erf_f64),
            ERF_ABS,
            0.0,
        );
        assert_close(
            "gelu",
            values,
            &out[2 * k + 1],
            &map(values, gelu_f64),
            GELU_ABS,
            0.0,
        );
    }
    // Against the encoded inputs: the error of the protocol, not of the input's encoding.
    let encoded = &out[4];
    let want = map(encoded, |v| 1.0 / v.sqrt());
    for i in 0..n {
        let err = (out[5][i] - want[i]).abs();
        let bound = INV_SQRT_WIDE_REL * want[i] + 4.0 * 2f64.powi(-20);
        assert!(
            err <= bound,
            "inv_sqrt_wide({}) = {} but should be {} (error {err:e}, bound {bound:e})",
            encoded[i],
            out[5][i],
            want[i]
        );
    }
    let x = &out[6];
    let mut want = Vec::new();
    for row in x.chunks(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        want.extend(row.iter().map(|v| (v - mean) / (var + 1e-5).sqrt()));
    }
    assert_close("layer_norm", x, &out[7], &want, LAYER_NORM_ABS, 0.0);

    let mode = Truncation::Exact;
    let erf_cost = measure(backend, &[n], |p, x| erf(p, x).map(drop));
    let rounds = assert_composite("erf", erf_cost, cost::erf(n, mode));
    assert_eq!(rounds, crate::transformer::ERF_ROUNDS, "erf rounds");
    let gelu_cost = measure(backend, &[n], |p, x| gelu(p, x).map(drop));
    let rounds = assert_composite("gelu", gelu_cost, cost::gelu(n, mode));
    assert_eq!(rounds, crate::transformer::GELU_ROUNDS, "gelu rounds");
    let isw = measure(backend, &[n], |p, x| {
        inv_sqrt_wide(p, x, InvSqrtWideOptions::default()).map(drop)
    });
    let rounds = assert_composite("inv_sqrt_wide", isw, cost::inv_sqrt_wide(n, 20, 5, mode));
    assert_eq!(
        rounds,
        crate::transformer::INV_SQRT_WIDE_ROUNDS,
        "inv_sqrt_wide rounds"
    );
    let ln = measure(backend, &[rows, d], |p, x| layer_norm(p, x, 1e-5).map(drop));
    let rounds = assert_composite("layer_norm", ln, cost::layer_norm(rows, d, mode));
    assert_eq!(
        rounds,
        crate::transformer::LAYER_NORM_ROUNDS,
        "layer_norm rounds"
    );
}

/// exp's documented bound: absolute part.
pub const EXP_ABS: f64 = 1.0 / (1u64 << 14) as f64;
/// exp's documented bound: relative part.
pub const EXP_REL: f64 = 1.0 / (1u64 << 10) as f64;
/// reciprocal's documented bound: absolute part.
pub const RECIPROCAL_ABS: f64 = 1.0 / (1u64 << 18) as f64;
/// reciprocal's documented bound: relative part.
pub const RECIPROCAL_REL: f64 = 1.0 / (1u64 << 12) as f64;
/// log's documented bound (absolute).
pub const LOG_ABS: f64 = 1.0 / (1u64 << 9) as f64;
/// inv_sqrt's documented bound: absolute part.
pub const INV_SQRT_ABS: f64 = 1.0 / (1u64 << 16) as f64;
/// inv_sqrt's documented bound: relative part.
pub const INV_SQRT_REL: f64 = 1.0 / (1u64 << 10) as f64;
/// sigmoid's documented bound (absolute).
pub const SIGMOID_ABS: f64 = 1.0 / (1u64 << 12) as f64;
/// softmax's documented bound (absolute, per probability).
pub const SOFTMAX_ABS: f64 = 1.0 / (1u64 << 12) as f64;

/// softmax over 10 classes (rows of moderate and of wide logits) against f64.
pub fn check_softmax<B: GpuBackend>(backend: &B) {
    let (rows, classes) = (64, 10);
    let mut logits = reals(30, rows * classes, -20.0, 20.0);
    // A row with a wide spread and a row of equal logits.
    for k in 0..classes {
        logits[k] = -200.0 + 40.0 * k as f64 / 9.0 * 5.0;
        logits[classes + k] = 3.5;
    }
    let got = same3(run3(backend, |p| {
        let x = input_f64(p, &logits, &[rows, classes])?;
        let s = softmax(p, &x, 1, SoftmaxOptions::default())?;
        Ok(p.reveal_f64(&s)?)
    }));
    let mut want = Vec::new();
    for r in 0..rows {
        let row = &logits[r * classes..(r + 1) * classes];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
        want.extend(row.iter().map(|v| (v - m).exp() / z));
    }
    assert_close("softmax", &logits, &got, &want, SOFTMAX_ABS, 0.0);
}

/// Runs `op` from the synchronized state after setup and returns its measured cost.
fn measure<B: GpuBackend>(
    backend: &B,
    shape: &[usize],
    op: impl Fn(&mut SuiteParty<'_, B>, &Rss<B>) -> Result<()> + Sync,
) -> Cost {
    measure_in(backend, Truncation::Exact, shape, op)
}

/// [`measure`] with truncations in `mode`.
fn measure_in<B: GpuBackend>(
    backend: &B,
    mode: Truncation,
    shape: &[usize],
    op: impl Fn(&mut SuiteParty<'_, B>, &Rss<B>) -> Result<()> + Sync,
) -> Cost {
    let n: usize = shape.iter().product();
    let stats = run3(backend, |p| {
        p.set_truncation(mode);
        // A public sharing (no message), so every party starts at the same clock.
        let values = vec![3u64 << 20; n];
        let x = p.constant(&p.backend().upload(&values, shape)?)?;
        let before = p.stats();
        op(p, &x)?;
        Ok((before, p.stats()))
    });
    let bytes = [0, 1, 2].map(|i| stats[i].1.since(&stats[i].0).total_bytes_sent());
    let rounds =
        CommStats::rounds_of(&stats.map(|(_, a)| a)) - CommStats::rounds_of(&stats.map(|(b, _)| b));
    Cost { rounds, bytes }
}

/// Asserts that a composite's measured cost has the formula's bytes exactly and at most its
/// rounds, and returns the measured rounds.
fn assert_composite(what: &str, measured: Cost, formula: Cost) -> u64 {
    assert_eq!(measured.bytes, formula.bytes, "{what}: bytes");
    assert!(
        measured.rounds <= formula.rounds,
        "{what}: {} rounds measured, more than the {} of its parts",
        measured.rounds,
        formula.rounds
    );
    eprintln!(
        "{what}: {} rounds (parts: {}), bytes {:?}",
        measured.rounds, formula.rounds, measured.bytes
    );
    measured.rounds
}

/// The counters of DReLU, ReLU, its backward pass, max-pooling 2×2 (and backward), average
/// pooling, exp, reciprocal and softmax over 10 classes against [`crate::cost`].
pub fn check_communication<B: GpuBackend>(backend: &B) {
    let n = 640;
    let drelu_cost = measure(backend, &[n], |p, x| drelu(p, x).map(drop));
    assert_eq!(drelu_cost, cost::msb(n), "drelu");
    assert_eq!(drelu_cost.rounds, cost::DRELU_ROUNDS, "drelu rounds");
    let relu_cost = measure(backend, &[n], |p, x| relu(p, x).map(drop));
    let rounds = assert_composite("relu", relu_cost, cost::relu(n));
    assert_eq!(rounds, cost::RELU_ROUNDS, "relu rounds");
    let per_elem = relu_cost.bytes.map(|b| b as f64 / n as f64);
    assert_eq!(per_elem, [29.0, 18.125, 18.125], "relu bytes per element");
    assert_composite(
        "relu and backward",
        measure(backend, &[n], |p, x| {
            let r = relu(p, x)?;
            relu_backward(p, x, &r.drelu).map(drop)
        }),
        cost::relu(n) + cost::mul_bit(n, n),
    );
    let shape = [2, 4, 8, 8];
    let outs = 2 * 4 * 4 * 4;
    let pool = measure(backend, &shape, |p, x| {
        max_pool2d(p, x, Pool2dParams::new(2, 2)).map(drop)
    });
    let rounds = assert_composite("max_pool2d 2x2", pool, cost::max_pool2d(4, outs));
    assert_eq!(rounds, cost::MAX_POOL_2X2_ROUNDS, "max_pool2d 2x2 rounds");
    let values = measure(backend, &shape, |p, x| {
        max_pool2d_values(p, x, Pool2dParams::new(2, 2)).map(drop)
    });
    let rounds = assert_composite(
        "max_pool2d_values 2x2",
        values,
        cost::max_pool2d_values(4, outs),
    );
    assert_eq!(
        rounds,
        cost::MAX_POOL_2X2_VALUES_ROUNDS,
        "max_pool2d_values 2x2 rounds"
    );
    assert_composite(
        "max_pool2d 2x2 and backward",
        measure(backend, &shape, |p, x| {
            let pool = max_pool2d(p, x, Pool2dParams::new(2, 2))?;
            max_pool2d_backward(p, &pool.output, &pool).map(drop)
        }),
        cost::max_pool2d(4, outs) + cost::max_pool2d_backward(4, outs),
    );
    assert_composite(
        "max_pool2d 2x2 gated by a ReLU, and backward",
        measure(backend, &shape, |p, x| {
            let pool = max_pool2d(p, x, Pool2dParams::new(2, 2))?;
            let r = relu(p, &pool.output)?;
            let gated = gate_winners(p, &pool, &r.drelu)?;
            max_pool2d_backward(p, &r.output, &gated).map(drop)
        }),
        cost::max_pool2d(4, outs)
            + cost::relu(outs)
            + cost::gate_winners(4, outs)
            + cost::max_pool2d_backward(4, outs),
    );
    assert_composite(
        "argmax over 10 classes",
        measure(backend, &[64, 10], |p, x| argmax(p, x, 1).map(drop)),
        cost::argmax(10, 64),
    );
    for mode in Truncation::ALL {
        assert_eq!(
            measure_in(backend, mode, &shape, |p, x| avg_pool2d(
                p,
                x,
                Pool2dParams::new(2, 2)
            )
            .map(drop)),
            cost::truncation(outs, mode),
            "avg_pool2d ({mode})"
        );
        assert_composite(
            &format!("exp ({mode})"),
            measure_in(backend, mode, &[n], |p, x| {
                exp(p, x, ExpOptions::default()).map(drop)
            }),
            cost::exp(n, 8, mode),
        );
        let rec = ReciprocalOptions::default();
        assert_composite(
            &format!("reciprocal ({mode})"),
            measure_in(backend, mode, &[n], |p, x| reciprocal(p, x, rec).map(drop)),
            cost::reciprocal(n, rec.iterations, mode),
        );
        let (rows, classes) = (64, 10);
        let iterations = ReciprocalOptions::for_range(1.0, classes as f64)
            .expect("valid")
            .iterations;
        let rounds = assert_composite(
            &format!("softmax over 10 classes ({mode})"),
            measure_in(backend, mode, &[rows, classes], |p, x| {
                softmax(p, x, 1, SoftmaxOptions::default()).map(drop)
            }),
            cost::softmax(rows, classes, 8, iterations, mode),
        );
        assert_eq!(
            rounds,
            cost::softmax_10_rounds(mode),
            "softmax over 10 classes ({mode}): rounds"
        );
    }
}

/// One party's device work and communication during one protocol run.
#[derive(Clone, Copy, Debug)]
pub struct DeviceWork {
    /// What the party's backend did (its thread's counters) during the run.
    pub counts: DeviceCounts,
    /// What it sent and received during the run.
    pub stats: CommStats,
}

/// Runs `op` on a shared input of `shape` as three parties on `backend` (messages as
/// handles when `on_device`, else as bytes through the host) and returns each party's
/// [`DeviceWork`] during `op` alone.
pub fn device_work<B: GpuBackend>(
    backend: &B,
    on_device: bool,
    shape: &[usize],
    op: impl Fn(&mut Party<B, &mut LocalTransport>, &Rss<B>) -> Result<()> + Sync,
) -> [DeviceWork; 3] {
    let n: usize = shape.iter().product();
    let values = reals(11, n, -100.0, 100.0);
    let config = LocalConfig::default().with_handles(on_device);
    run3_with(backend, config, |p| {
        let owned = (p.id() == PartyId::P0).then_some(values.as_slice());
        let x = p.share_f64(PartyId::P0, owned, shape)?;
        p.backend().sync()?;
        let (counts, stats) = (counters::thread_counts(), p.stats());
        op(p, &x)?;
        Ok(DeviceWork {
            counts: counters::thread_counts().since(&counts),
            stats: p.stats().since(&stats),
        })
    })
}

/// What a protocol moves between host and device: nothing at all when the parties share
/// the device (messages are handles; ReLU, max-pooling and softmax make no transfer and no
/// host wait), and exactly its messages when they go through the host (each message sent
/// downloaded once, each received uploaded, byte for byte).
pub fn check_device_work<B: GpuBackend>(backend: &B) {
    type Op<B> = fn(&mut Party<B, &mut LocalTransport>, &Rss<B>) -> Result<()>;
    let cases: [(&str, Vec<usize>, Op<B>); 3] = [
        ("relu", vec![1000], |p, x| relu(p, x).map(drop)),
        ("max_pool2d 2x2", vec![2, 3, 8, 8], |p, x| {
            max_pool2d_values(p, x, Pool2dParams::new(2, 2)).map(drop)
        }),
        ("softmax", vec![4, 10], |p, x| {
            softmax(p, x, 1, SoftmaxOptions::default()).map(drop)
        }),
    ];
    for (name, shape, op) in cases {
        let on_device = device_work(backend, true, &shape, op);
        let via_host = device_work(backend, false, &shape, op);
        for party in PartyId::ALL {
            let (d, h) = (on_device[party.index()], via_host[party.index()]);
            assert!(
                d.counts.launches > 0 && h.stats.total_messages_sent() > 0,
                "{name}, {party}: the protocol ran ({}; {})",
                d.counts,
                h.stats
            );
            assert_eq!(
                (d.counts.transfers(), d.counts.syncs),
                (0, 0),
                "{name}, {party}, messages on the device: {}",
                d.counts
            );
            assert_eq!(
                d.stats, h.stats,
                "{name}, {party}: the same messages either way"
            );
            assert_eq!(
                (h.counts.downloads, h.counts.download_bytes),
                (h.stats.total_messages_sent(), h.stats.total_bytes_sent()),
                "{name}, {party}, messages through the host: {}",
                h.counts
            );
            assert_eq!(
                h.counts.upload_bytes,
                h.stats.total_bytes_received(),
                "{name}, {party}, messages through the host: {}",
                h.counts
            );
            assert!(
                h.counts.uploads >= h.stats.total_messages_received(),
                "{name}, {party}: {}",
                h.counts
            );
            // The handles save the copies and the joining of a message's tensors (at most
            // one launch a message), not the work.
            let saved = h.counts.launches.checked_sub(d.counts.launches);
            assert!(
                saved.is_some_and(|s| s <= h.stats.total_messages_sent()),
                "{name}, {party}: {} launches on the device, {} through the host",
                d.counts.launches,
                h.counts.launches
            );
        }
    }
}

/// Instantiates the protocol suite as `#[test]` functions for a backend: `$make` is a
/// `fn() -> Option<B>` that returns `None` (after printing why) when the device is missing.
#[macro_export]
macro_rules! nonlinear_protocol_tests {
    ($make:path) => {
        $crate::nonlinear_protocol_tests!(@tests $make;
            check_comparisons, check_comparison_domain, check_comparison_edges, check_relu, check_bit_injection, check_max_argmax, check_argmax_ties,
            check_max_pool, check_avg_pool, check_functions, check_softmax, check_transformer_functions,
            check_communication, check_device_work);
    };
    (@tests $make:path; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                if let Some(backend) = $make() {
                    $crate::suite::$name(&backend);
                }
            }
        )*
    };
}
