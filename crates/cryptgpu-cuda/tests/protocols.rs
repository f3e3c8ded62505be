//! The protocol suites on the CUDA backend. The non-linear suite (comparisons, ReLU,
//! pooling, softmax, communication) runs through `nonlinear_protocol_tests!`, and private
//! training and inference of a small network (BatchNorm included) through
//! `private_nn_tests!`, bit for bit against the CPU backend; the sharing
//! protocols (products of every kind, with truncation) run on the CPU and on the GPU with
//! the same seeded keys and must agree share for share, bit for bit. Without a GPU every
//! test prints `skipped:`; `CRYPTGPU_REQUIRE_CUDA=1` makes that a failure.

use cryptgpu_backend::conformance::unavailable;
use cryptgpu_backend::{BackendError, Conv2dParams, GpuBackend};
use cryptgpu_cpu::CpuBackend;
use cryptgpu_cuda::CudaBackend;
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{Bilinear, KeySource, Party};
use cryptgpu_transport::{PartyId, run_local_3pc};

fn cuda() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(backend) => Some(backend),
        Err(e @ BackendError::NoDevice { .. }) => unavailable("cuda", e),
        Err(e) => panic!("the CUDA backend failed to start: {e}"),
    }
}

cryptgpu_nonlinear::nonlinear_protocol_tests!(cuda);
cryptgpu_nn::private_nn_tests!(cuda);

/// Both of every party's shares of `op(x, y)` (fused product with truncation), and the
/// revealed result, for inputs that P0 and P1 share from the same seeded reals.
fn transcript<B: GpuBackend>(
    backend: &B,
    op: Bilinear,
    xs: &[usize],
    ys: &[usize],
) -> [(Vec<u64>, Vec<u64>, Vec<u64>); 3] {
    run_local_3pc(|t| {
        let mut p = Party::setup_with(
            backend.clone(),
            t,
            FixedPoint::default(),
            KeySource::InsecureSeeded(5),
        )?;
        let reals = |n: usize, seed: u64| -> Vec<f64> {
            (0..n)
                .map(|i| (((i as u64 + 1).wrapping_mul(seed) >> 40) as f64 / 65536.0) - 64.0)
                .collect()
        };
        let x_values = reals(xs.iter().product(), 0x9E37_79B9_7F4A_7C15);
        let y_values = reals(ys.iter().product(), 0xC2B2_AE3D_27D4_EB4F);
        let me = p.id();
        let x = p.share_f64(
            PartyId::P0,
            (me == PartyId::P0).then_some(&x_values[..]),
            xs,
        )?;
        let y = p.share_f64(
            PartyId::P1,
            (me == PartyId::P1).then_some(&y_values[..]),
            ys,
        )?;
        let z = p.product_truncated(op, &x, &y)?;
        let b = p.backend().clone();
        let own = b.download(z.own_share()).expect("download");
        let next = b.download(z.next_share()).expect("download");
        let revealed = p.reveal(&z)?;
        Ok::<_, cryptgpu_share::ShareError>((own, next, revealed))
    })
    .expect("no party failed")
    .map(|r| r.expect("protocol succeeded"))
}

#[test]
fn products_give_the_cpu_backends_shares_bit_for_bit() {
    let Some(gpu) = cuda() else { return };
    let conv = Conv2dParams::new(1, 1).with_groups(2);
    let cases: [(Bilinear, &[usize], &[usize]); 6] = [
        (Bilinear::Mul, &[1000], &[1000]),
        (Bilinear::Matmul, &[33, 65], &[65, 17]),
        (Bilinear::Matmul, &[3, 20, 30], &[30, 7]),
        (Bilinear::Conv2d(conv), &[2, 4, 9, 9], &[6, 2, 3, 3]),
        (
            Bilinear::Conv2dGradInput {
                input_hw: [9, 9],
                params: conv,
            },
            &[2, 6, 9, 9],
            &[6, 2, 3, 3],
        ),
        (
            Bilinear::Conv2dGradWeight {
                kernel_hw: [3, 3],
                params: conv,
            },
            &[2, 4, 9, 9],
            &[2, 6, 9, 9],
        ),
    ];
    for (op, xs, ys) in cases {
        let want = transcript(&CpuBackend::new(), op, xs, ys);
        let got = transcript(&gpu, op, xs, ys);
        for (party, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g == w,
                "{op:?} {xs:?} x {ys:?}: party {party}'s shares or result differ"
            );
        }
    }
}

#[test]
fn the_transcript_harness_runs_and_repeats_on_the_cpu() {
    // The GPU comparison above is only as good as its harness: on the CPU it must run,
    // give every party the same revealed result, and repeat exactly.
    let op = Bilinear::Matmul;
    let first = transcript(&CpuBackend::new(), op, &[5, 7], &[7, 3]);
    let second = transcript(&CpuBackend::new(), op, &[5, 7], &[7, 3]);
    assert_eq!(first, second);
    assert!(
        first
            .iter()
            .all(|(_, _, r)| *r == first[0].2 && r.len() == 15)
    );
    assert!(first[0].2.iter().any(|&v| v != 0));
    // Replicated: party i's next share is party i+1's own share.
    for i in 0..3 {
        assert_eq!(first[i].1, first[(i + 1) % 3].0);
    }
}
