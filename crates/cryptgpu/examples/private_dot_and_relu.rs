//! A private dot product and ReLU with one dependency: P0 owns x, P1 owns y, and three
//! parties in one process compute x · y and max(x, 0) on shares and reveal only those.

use cryptgpu::prelude::*;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let (x, y) = ([1.5, -2.0, 3.25, 0.5], [2.0, 0.5, -1.0, 4.0]);
    let results = run_local_3pc(|t| -> Result<(f64, Vec<f64>), Error> {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default())?;
        let xs = p.share_f64(PartyId::P0, (p.id() == PartyId::P0).then_some(&x[..]), &[4])?;
        let ys = p.share_f64(PartyId::P1, (p.id() == PartyId::P1).then_some(&y[..]), &[4])?;
        let dot = p.dot(&xs, &ys)?;
        let relu = nl::relu_value(&mut p, &xs)?;
        Ok((p.reveal_f64(&dot)?[0], p.reveal_f64(&relu)?))
    })?;
    let [first, ..] = results;
    let (dot, relu) = first?;
    println!("x · y = {dot}, relu(x) = {relu:?}");
    assert!((dot - 0.75).abs() < 1e-3, "x · y = 3 − 1 − 3.25 + 2 = 0.75");
    assert_eq!(relu, [1.5, 0.0, 3.25, 0.5]);
    Ok(())
}

#[test]
fn the_example_runs() {
    main().unwrap();
}
