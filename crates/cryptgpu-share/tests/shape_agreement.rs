//! Input sharing checks that the parties agree on the shape, not only on the element count:
//! in one process (tensors handed over) and between processes (words on the wire).

use cryptgpu_cpu::CpuBackend;
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{Party, ShareError};
use cryptgpu_transport::{
    LinkConfig, LocalConfig, PartyId, Transport, run_local_3pc_with, run_tls_loopback_3pc,
};

/// P0 shares `[1, 2, 3, 4]` in shape `[4]`; P2 asks for `p2_shape`. Returns each party's
/// result as text: `ok` or the error.
fn share_with<T: Transport>(t: T, p2_shape: &[usize]) -> String {
    let mut p = match Party::setup(CpuBackend::new(), t, FixedPoint::default()) {
        Ok(p) => p,
        Err(e) => return e.to_string(),
    };
    let me = p.id();
    let values = [1.0, 2.0, 3.0, 4.0];
    let shape: &[usize] = if me == PartyId::P2 { p2_shape } else { &[4] };
    let mine = (me == PartyId::P0).then_some(&values[..]);
    match p.share_f64(PartyId::P0, mine, shape) {
        Ok(x) => match p.reveal_f64(&x) {
            Ok(v) if v == values => "ok".to_string(),
            Ok(v) => format!("revealed {v:?}"),
            Err(e) => e.to_string(),
        },
        Err(e @ ShareError::ShapeDisagreement { .. }) => format!("disagree: {e}"),
        Err(e) => e.to_string(),
    }
}

fn check(results: [String; 3]) {
    assert!(
        results[2].starts_with(
            "disagree: share: P0 shares a tensor of shape [4] where shape [2, 2] was expected"
        ),
        "{results:?}"
    );
}

#[test]
fn same_count_other_shape_is_refused_in_one_process() {
    for handles in [true, false] {
        let config = LocalConfig::default().with_handles(handles);
        let results = run_local_3pc_with(config, |t| share_with(t, &[2, 2])).unwrap();
        check(results);
    }
}

#[test]
fn same_count_other_shape_is_refused_over_tls() {
    let results = run_tls_loopback_3pc(LinkConfig::default(), |t| share_with(t, &[2, 2])).unwrap();
    check(results);
}

#[test]
fn agreeing_shapes_share_and_reveal() {
    let results = run_local_3pc_with(LocalConfig::default(), |t| share_with(t, &[4])).unwrap();
    assert_eq!(results, ["ok", "ok", "ok"].map(String::from));
}
