//! A new primitive written outside the workspace's protocol crates with `Party`'s open API:
//! the squared distance Σ (x − y)² of two private vectors, whose product is written here
//! from the shares, a zero sharing and one message to a neighbour, as the sharing layer
//! writes its own.

use cryptgpu::prelude::*;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// x · y elementwise, no truncation: this party's term x_i·(y_i + y_{i+1}) + x_{i+1}·y_i,
/// masked by a fresh zero sharing (so the message says nothing), goes to the previous
/// party, and the next party's term comes back: one round, 8 bytes an element.
fn product<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    y: &Rss<B>,
) -> Result<Rss<B>, Error> {
    let b = p.backend().clone();
    let (x0, x1, y0, y1) = (x.own_share(), x.next_share(), y.own_share(), y.next_share());
    let term = b.add(&b.mul(x0, &b.add(y0, y1)?)?, &b.mul(x1, y0)?)?;
    let z = b.add(&term, &p.zero_share(x.shape())?)?;
    p.send_tensor(Peer::Prev, &z)?;
    let next = p.recv_tensor("product", Peer::Next, x.shape())?;
    Ok(Rss::from_shares(z, next)?)
}

/// Σ (x − y)²: a local difference, the product above, a local sum, one truncation.
fn squared_distance<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    y: &Rss<B>,
) -> Result<Rss<B>, Error> {
    let d = p.sub(x, y)?;
    let squares = product(p, &d, &d)?;
    let total = p.sum(&squares)?;
    Ok(p.truncate(&total)?)
}

fn main() -> Result<(), Error> {
    let (x, y) = ([1.5, -2.0, 3.25, 0.5], [2.0, 0.5, -1.0, 4.0]);
    let results = run_local_3pc(|t| -> Result<(f64, [CommStats; 2]), Error> {
        let mut p = Party::setup(CpuBackend::new(), t, FixedPoint::default())?;
        let xs = p.share_f64(PartyId::P0, (p.id() == PartyId::P0).then_some(&x[..]), &[4])?;
        let ys = p.share_f64(PartyId::P1, (p.id() == PartyId::P1).then_some(&y[..]), &[4])?;
        let before = p.stats();
        let distance = squared_distance(&mut p, &xs, &ys)?;
        let after = p.stats();
        Ok((p.reveal_f64(&distance)?[0], [before, after]))
    })?;
    let want: f64 = x.iter().zip(&y).map(|(a, b)| (a - b) * (a - b)).sum();
    let mut stats = Vec::new();
    for result in results {
        let (distance, counted) = result?;
        println!("Σ (x − y)² = {distance} (plaintext {want})");
        assert!((distance - want).abs() < 1e-3);
        stats.push(counted);
    }
    // Rounds are the longest chain of messages over the three parties: the product's
    // round and the truncation's.
    let rounds = |i: usize| CommStats::rounds_of(&stats.iter().map(|s| s[i]).collect::<Vec<_>>());
    assert_eq!(rounds(1) - rounds(0), 2);
    Ok(())
}

#[test]
fn the_example_runs() {
    main().unwrap();
}
