//! The comparison domain at the layer level on the CPU backend: Clip and max-pooling exact
//! at its edges (the suite's check, which every backend crate also runs), and the owners'
//! checks of what they share: a value outside the domain, one beyond the fixed-point range
//! and a non-finite one are refused at the owner, before anything is sent, each as its own
//! error variant naming the tensor.

mod common;

use cryptgpu_cpu::CpuBackend;
use cryptgpu_nn::model::{GraphBuilder, Model};
use cryptgpu_nn::private::{SharedModel, share_input};
use cryptgpu_nn::{NnError, Tensor, zoo};
use cryptgpu_nonlinear::NonlinearError;
use cryptgpu_ring::{FixedPoint, RingError};
use cryptgpu_share::{OutOfComparisonRange, ShareError};
use cryptgpu_transport::{PartyId, run_local_3pc};

#[test]
fn clip_and_max_pool_are_exact_at_the_comparison_domain_edges() {
    cryptgpu_nn::suite::check_comparison_range_in_layers(&CpuBackend::new());
}

/// The error of the owner (P0) sharing `values` as an input at f = 20, after checking that
/// the others failed too (they wait for a message that never comes).
fn input_error(values: Vec<f64>) -> NnError {
    let x = Tensor::new(&[1, values.len()], values).unwrap();
    let out = run_local_3pc(|t| {
        let mut p = common::seeded_party(t, FixedPoint::new(20).unwrap(), 1);
        let mine = (p.id() == PartyId::P0).then_some(&x);
        Ok::<_, ShareError>(share_input(&mut p, PartyId::P0, mine, x.shape()).map(drop))
    })
    .unwrap();
    let [owner, a, b] = out.map(|r| r.unwrap());
    assert!(a.is_err() && b.is_err(), "the others get nothing");
    owner.expect_err("the owner refuses")
}

#[test]
fn the_data_owner_refuses_inputs_outside_the_comparison_domain() {
    // f = 20, ℓ = 43: real values in [−2^23, 2^23).
    let top = 8_388_608.0;
    let e = input_error(vec![1.0, -top, top, 0.0]);
    match &e {
        NnError::OutOfComparisonRange(OutOfComparisonRange {
            tensor,
            index,
            value,
            limit,
            comparison_bits,
            frac_bits,
        }) => {
            assert_eq!(tensor, "input");
            assert_eq!((*index, *value, *limit), (2, top, top));
            assert_eq!((*comparison_bits, *frac_bits), (43, 20));
        }
        other => panic!("expected OutOfComparisonRange, got {other:?}"),
    }
    let text = e.to_string();
    for part in [
        "input",
        "8388608",
        "index 2",
        "--comparison-bits",
        "fractional bits",
    ] {
        assert!(text.contains(part), "`{text}` lacks `{part}`");
    }
    // Just below the bottom edge is refused too; the edge itself is not.
    let below = -top - 1.0 / f64::from(1u32 << 20);
    assert!(matches!(
        input_error(vec![-top, below]),
        NnError::OutOfComparisonRange(OutOfComparisonRange { index: 1, .. })
    ));
    assert!(matches!(
        input_error(vec![0.0, 1e30]),
        NnError::Protocol(NonlinearError::Share(ShareError::Ring(
            RingError::OutOfRangeAt { index: 1, .. }
        )))
    ));
    assert!(matches!(
        input_error(vec![f64::NAN]),
        NnError::Protocol(NonlinearError::Share(ShareError::Ring(
            RingError::NotFiniteAt { index: 0, .. }
        )))
    ));
}

fn linear_model(weight: f64) -> Model {
    let mut b = GraphBuilder::new();
    let l = b.add("fc", zoo::linear(2, 2), &[0]);
    let mut m = b.finish("fc", &[2], l, 1).unwrap();
    m.params.get_mut("fc.weight").unwrap().data_mut()[3] = weight;
    m
}

#[test]
fn the_model_owner_refuses_weights_outside_the_comparison_domain() {
    let model = linear_model(1e7);
    let out = run_local_3pc(|t| {
        let mut p = common::seeded_party(t, FixedPoint::new(20).unwrap(), 1);
        Ok::<_, ShareError>(SharedModel::share(&mut p, &model, PartyId::P0).map(drop))
    })
    .unwrap();
    let [owner, a, b] = out.map(|r| r.unwrap());
    assert!(a.is_err() && b.is_err(), "the others get nothing");
    match owner.expect_err("the owner refuses") {
        NnError::OutOfComparisonRange(OutOfComparisonRange {
            tensor,
            index,
            value,
            ..
        }) => assert_eq!((tensor.as_str(), index, value), ("fc.weight", 3, 1e7)),
        other => panic!("expected OutOfComparisonRange, got {other:?}"),
    }
    // Inside the domain: shared.
    let model = linear_model(-8_388_608.0);
    let out = run_local_3pc(|t| {
        let mut p = common::seeded_party(t, FixedPoint::new(20).unwrap(), 1);
        SharedModel::share(&mut p, &model, PartyId::P0).map(drop)
    })
    .unwrap();
    for r in out {
        r.expect("a weight at the domain's floor is shared");
    }
}
