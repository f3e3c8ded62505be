//! The limb arithmetic of the cuBLAS GEMMs, proven on the CPU: digit ranges, exact
//! round trips, chunk bounds at their limits, and the simulated device pipeline
//! (`limbs::simulate_gemm`, which panics if an accumulator leaves its exact range) bit for
//! bit against the CPU backend's u64 matmul, on random and extreme values.

use cryptgpu_backend::GpuBackend;
use cryptgpu_cpu::CpuBackend;
use cryptgpu_cuda::limbs::{
    self, ChunkPlan, PAD, Scheme, join_i8, recombine_f64, recombine_i32, split_f64, split_i8,
};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Every digit of x is -128: x = Σ -128·256^l mod 2^64 (the worst case for int8 sums).
const ALL_MINUS_128: u64 = 0x7f7f_7f7f_7f7f_7f80;

/// Values that stress carries, signs and limb boundaries.
const EXTREMES: [u64; 12] = [
    0,
    1,
    u64::MAX,
    1 << 63,
    (1 << 63) - 1,
    ALL_MINUS_128,
    0x8080_8080_8080_8080,
    0x7f7f_7f7f_7f7f_7f7f,
    0xffff_0000_ffff_0000,
    0x0000_ffff_0000_ffff,
    0x00ff_00ff_00ff_00ff,
    0x8000_0000_0000_0080,
];

fn values(rng: &mut ChaCha8Rng, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| match rng.next_u32() % 3 {
            0 => EXTREMES[i % EXTREMES.len()],
            _ => rng.next_u64(),
        })
        .collect()
}

fn cpu_matmul(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) -> Vec<u64> {
    let cpu = CpuBackend::new();
    let c = cpu
        .matmul(
            &cpu.upload(a, &[m, k]).unwrap(),
            &cpu.upload(b, &[k, n]).unwrap(),
        )
        .unwrap();
    cpu.download(&c).unwrap()
}

#[test]
fn int8_digits_are_balanced_and_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let samples = EXTREMES
        .into_iter()
        .chain((0..100_000).map(|_| rng.next_u64()));
    for x in samples {
        let d = split_i8(x);
        assert_eq!(join_i8(&d), x, "digits of {x:#x}");
        // i8 holds exactly [-128, 127], so the type itself is the range proof; the
        // recombination of the digits as int32 "sums" must agree too.
        assert_eq!(recombine_i32(&d.map(i32::from)), x);
    }
    assert_eq!(split_i8(ALL_MINUS_128), [-128; 8]);
    assert_eq!(split_i8(u64::MAX), [-1, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn fp64_blocks_are_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for x in EXTREMES
        .into_iter()
        .chain((0..100_000).map(|_| rng.next_u64()))
    {
        let blocks = split_f64(x);
        assert!(
            blocks
                .iter()
                .all(|&b| (0.0..65536.0).contains(&b) && b.fract() == 0.0)
        );
        assert_eq!(recombine_f64(&blocks), x);
    }
}

#[test]
fn chunk_bounds_are_the_largest_safe_ones() {
    for scheme in [Scheme::Int8, Scheme::Fp64] {
        let max = scheme.max_chunk() as u64;
        let per_column = scheme.limbs() as u64 * scheme.max_product();
        assert_eq!(max % PAD as u64, 0);
        assert!(
            max * per_column <= scheme.exact_limit(),
            "{scheme:?}: bound too loose"
        );
        assert!(
            (max + PAD as u64) * per_column > scheme.exact_limit(),
            "{scheme:?}: a longer chunk would still be exact"
        );
    }
    assert_eq!(Scheme::Int8.max_chunk(), 16352);
    assert_eq!(Scheme::Fp64.max_chunk(), 1 << 19);
}

#[test]
fn chunk_plans_cover_k_within_the_bound() {
    for scheme in [Scheme::Int8, Scheme::Fp64] {
        let max = scheme.max_chunk();
        for k in (0..70).chain([max - 1, max, max + 1, 2 * max, 2 * max + 1, 5 * max + 17]) {
            let plan = ChunkPlan::new(scheme, k);
            let covered: usize = (0..plan.chunks).map(|i| plan.chunk(i, k).1).sum();
            assert_eq!(covered, k, "{scheme:?} k = {k}: {plan:?}");
            assert!(plan.padded_len <= max && plan.padded_len.is_multiple_of(PAD));
            assert!(plan.chunk_len <= plan.padded_len);
            assert_eq!(
                plan.chunks,
                k.div_ceil(max),
                "as few chunks as the bound allows"
            );
        }
    }
}

#[test]
fn simulated_pipelines_match_the_cpu_matmul() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let shapes = [
        (1, 1, 1),
        (1, 7, 1),
        (3, 1, 5),
        (7, 13, 5),
        (33, 65, 17),
        (5, 100, 3),
        (2, 0, 3),
    ];
    for (m, k, n) in shapes {
        let (a, b) = (values(&mut rng, m * k), values(&mut rng, k * n));
        let want = cpu_matmul(m, k, n, &a, &b);
        for scheme in [Scheme::Int8, Scheme::Fp64] {
            assert_eq!(
                limbs::simulate_gemm(scheme, [m, k, n], &a, &b),
                want,
                "{scheme:?} {m}x{k}x{n}"
            );
        }
    }
}

#[test]
fn int8_worst_case_sums_at_the_chunk_limit() {
    // All digits -128: every product is +2^14, the largest; C_7 sums 8·kcp of them.
    for k in [
        Scheme::Int8.max_chunk(),
        Scheme::Int8.max_chunk() + 1,
        2 * Scheme::Int8.max_chunk() + 5,
    ] {
        let a = vec![ALL_MINUS_128; k];
        let b = vec![ALL_MINUS_128; k];
        assert_eq!(
            limbs::simulate_gemm(Scheme::Int8, [1, k, 1], &a, &b),
            cpu_matmul(1, k, 1, &a, &b),
            "k = {k}"
        );
        // The most negative products: -128 · 127.
        let b: Vec<u64> = vec![0x7f7f_7f7f_7f7f_7f7f; k];
        let a2 = vec![ALL_MINUS_128; k];
        assert_eq!(
            limbs::simulate_gemm(Scheme::Int8, [1, k, 1], &a2, &b),
            cpu_matmul(1, k, 1, &a2, &b),
            "k = {k}, mixed signs"
        );
    }
}

#[test]
fn fp64_worst_case_sums_at_the_chunk_limit() {
    // All blocks 0xffff: every product is (2^16-1)^2, the largest; C_3 sums 4·kcp of them.
    let k = Scheme::Fp64.max_chunk() + 1;
    let a = vec![u64::MAX; k];
    let b = vec![u64::MAX; k];
    assert_eq!(
        limbs::simulate_gemm(Scheme::Fp64, [1, k, 1], &a, &b),
        cpu_matmul(1, k, 1, &a, &b)
    );
}

/// A plan one padding step past the scheme's bound, over all of `k`.
fn too_long_plan(scheme: Scheme) -> (ChunkPlan, usize) {
    let k = scheme.max_chunk() + PAD;
    let plan = ChunkPlan {
        chunks: 1,
        chunk_len: k,
        padded_len: k,
    };
    (plan, k)
}

#[test]
#[should_panic(expected = "int32 accumulator overflow")]
fn the_int8_simulation_notices_a_chunk_past_the_bound() {
    let (plan, k) = too_long_plan(Scheme::Int8);
    let a = vec![ALL_MINUS_128; k];
    let _ = limbs::simulate_gemm_with_plan(Scheme::Int8, plan, 1, k, 1, &a, &a);
}

#[test]
#[should_panic(expected = "float64 sum left the exact range")]
fn the_fp64_simulation_notices_a_chunk_past_the_bound() {
    let (plan, k) = too_long_plan(Scheme::Fp64);
    let a = vec![u64::MAX; k];
    let _ = limbs::simulate_gemm_with_plan(Scheme::Fp64, plan, 1, k, 1, &a, &a);
}
