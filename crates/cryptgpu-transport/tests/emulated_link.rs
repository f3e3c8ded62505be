//! Tests of [`EmulatedLink`] between three parties: payloads intact and in order, counters
//! as without the link, at least the modelled time, malformed streams refused.

#[macro_use]
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{pattern, script, script_stats};
use cryptgpu_transport::{
    Counting, EmulatedLink, LinkProfile, LocalConfig, LocalTransport, PartyId, Peer, Transport,
    TransportError, run_local_3pc,
};

fn fast() -> LinkProfile {
    "1gbit,1ms".parse().unwrap()
}

#[test]
fn counters_see_only_payloads_and_messages_arrive_intact() {
    let plain = run_local_3pc(|t| {
        let mut c = Counting::new(t);
        (script(&mut c).unwrap(), c.stats())
    })
    .unwrap();
    let linked = run_local_3pc(|t| {
        let mut c = Counting::new(EmulatedLink::new(t, fast()));
        (script(&mut c).unwrap(), c.stats())
    })
    .unwrap();
    for (party, ((got_plain, stats_plain), (got_linked, stats_linked))) in
        PartyId::ALL.into_iter().zip(plain.into_iter().zip(linked))
    {
        assert_eq!(got_linked, got_plain, "{party}");
        assert_eq!(stats_linked, stats_plain, "{party}");
        assert_eq!(stats_linked, script_stats(party), "{party}");
    }
}

#[test]
fn rounds_take_at_least_half_a_round_trip_each() {
    const ROUNDS: u64 = 5;
    let profile: LinkProfile = "1gbit,20ms".parse().unwrap();
    let start = Instant::now();
    let results = run_local_3pc(|t| {
        let mut c = Counting::new(EmulatedLink::new(t, profile));
        let me = c.party().index() as u64;
        let prev = c.party().prev().index() as u64;
        let mut ok = true;
        for r in 0..ROUNDS {
            let got = c.exchange_u64s(Peer::Next, &[me, r], Peer::Prev).unwrap();
            ok &= got == [prev, r];
        }
        (ok, c.stats().rounds)
    })
    .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(results, [(true, ROUNDS); 3]);
    // A lower bound only: the machine is shared, so no upper bound is asserted.
    let modelled = profile.one_way() * ROUNDS as u32;
    assert_eq!(modelled, Duration::from_millis(50));
    assert!(elapsed >= modelled, "{elapsed:?} < {modelled:?}");
}

#[test]
fn both_neighbours_share_the_uplink_bandwidth() {
    const ROUNDS: usize = 4;
    const LEN: usize = 5000;
    // 8 Mbit/s: 5000 bytes take 5 ms; one-way latency 5 ms.
    let profile: LinkProfile = "8mbit,10ms".parse().unwrap();
    let start = Instant::now();
    let results = run_local_3pc(|t| {
        let mut c = Counting::new(EmulatedLink::new(t, profile));
        let me = c.party();
        let mut ok = true;
        for r in 0..ROUNDS as u64 {
            let to_next = pattern(10 * r + me.index() as u64, LEN);
            let to_prev = pattern(100 + 10 * r + me.index() as u64, LEN);
            let (from_next, from_prev) = c.exchange_both(&to_next, &to_prev).unwrap();
            ok &= from_next == pattern(100 + 10 * r + me.next().index() as u64, LEN);
            ok &= from_prev == pattern(10 * r + me.prev().index() as u64, LEN);
        }
        (ok, c.stats().total_bytes_sent(), c.stats().rounds)
    })
    .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(
        results,
        [(true, (2 * ROUNDS * LEN) as u64, ROUNDS as u64); 3]
    );
    // Each round, the second message of each party waits for its first on the shared
    // uplink: 2 transfers and the latency before a party has both of its messages.
    let per_round = profile.transfer_time(LEN as u64) * 2 + profile.one_way();
    assert_eq!(per_round, Duration::from_millis(15));
    let modelled = per_round * ROUNDS as u32;
    assert!(elapsed >= modelled, "{elapsed:?} < {modelled:?}");
}

#[test]
fn works_over_boxed_and_borrowed_dyn_transports() {
    let parties = LocalTransport::triple(LocalConfig::default());
    let handles: Vec<_> = parties
        .into_iter()
        .map(|t| {
            thread::spawn(move || {
                let boxed: Box<dyn Transport> = Box::new(t);
                let mut c = Counting::new(EmulatedLink::new(boxed, fast()));
                let (n, p) = c.exchange_both_u64s(&[1], &[2]).unwrap();
                // And through a borrowed trait object.
                let mut link = c.into_inner();
                let dyn_t: &mut dyn Transport = link.inner_mut();
                let mut again = EmulatedLink::new(dyn_t, LinkProfile::LAN);
                let got = again.exchange(Peer::Next, b"hi", Peer::Prev).unwrap();
                assert_eq!(again.profile(), LinkProfile::LAN);
                (n, p, got)
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), (vec![2], vec![1], b"hi".to_vec()));
    }
}

/// What P1's link makes of `messages` sent by a P0 without the link: an error blaming P0
/// for a malformed stream.
fn refused_from_p0(
    p0: &mut LocalTransport,
    p1: &mut EmulatedLink<LocalTransport>,
    messages: [&[u8]; 2],
) -> TransportError {
    for message in messages {
        p0.send(Peer::Next, message).unwrap();
    }
    let err = p1.recv(Peer::Prev).unwrap_err();
    assert_matches!(
        err,
        TransportError::Malformed {
            peer: PartyId::P0,
            ..
        }
    );
    assert_eq!(err.blamed_party(), Some(PartyId::P0));
    err
}

#[test]
fn a_peer_without_the_link_is_refused_not_panicked_on() {
    let [mut p0, p1, _p2] = LocalTransport::triple(LocalConfig::default());
    let mut p1 = EmulatedLink::new(p1, fast());
    for frame in [&b"short"[..], &[0u8; 32][..], &[]] {
        let err = refused_from_p0(&mut p0, &mut p1, [frame, b"payload"]);
        assert!(err.to_string().contains("EmulatedLink"), "{err}");
        // Drop the payload that followed the bad header.
        assert_eq!(p1.inner_mut().recv(Peer::Prev).unwrap(), b"payload");
    }
}

#[test]
fn a_payload_of_the_wrong_length_is_refused() {
    // A genuine header announcing 10 bytes, taken off another network.
    let [q0, mut q1, _q2] = LocalTransport::triple(LocalConfig::default());
    let mut q0 = EmulatedLink::new(q0, fast());
    q0.send(Peer::Next, &[7; 10]).unwrap();
    let header = q1.recv(Peer::Prev).unwrap();

    let [mut p0, p1, _p2] = LocalTransport::triple(LocalConfig::default());
    let mut p1 = EmulatedLink::new(p1, fast());
    let err = refused_from_p0(&mut p0, &mut p1, [&header, &[7; 3]]);
    assert!(err.to_string().contains("3 bytes"), "{err}");
    assert!(err.to_string().contains("announcing 10"), "{err}");
}

#[test]
fn a_peer_that_leaves_is_reported_as_disconnected() {
    let [p0, p1, _p2] = LocalTransport::triple(LocalConfig::default());
    let mut p0 = EmulatedLink::new(p0, fast());
    let mut p1 = EmulatedLink::new(p1, fast());
    p0.send(Peer::Next, b"last words").unwrap();
    drop(p0);
    assert_eq!(p1.recv(Peer::Prev).unwrap(), b"last words");
    let err = p1.recv(Peer::Prev).unwrap_err();
    assert!(err.is_disconnected(), "{err:?}");
    assert!(p1.send(Peer::Prev, b"x").unwrap_err().is_disconnected());
}

#[test]
fn a_handle_takes_the_time_of_the_bytes_it_stands_for() {
    // 8 Mbit/s: 10000 bytes take 10 ms on the uplink; one-way latency 5 ms.
    let profile: LinkProfile = "8mbit,10ms".parse().unwrap();
    let start = Instant::now();
    let results = run_local_3pc(|t| {
        let mut c = Counting::new(EmulatedLink::new(t, profile));
        assert!(c.carries_handles());
        let me = c.party().index();
        c.send_handle(Peer::Next, cryptgpu_transport::Handle::new(me, 10_000))
            .unwrap();
        let got = c.recv_handle(Peer::Prev).unwrap();
        (
            got.downcast::<usize>().unwrap(),
            c.stats().total_bytes_sent(),
        )
    })
    .unwrap();
    let elapsed = start.elapsed();
    for party in PartyId::ALL {
        assert_eq!(results[party.index()], (party.prev().index(), 10_000));
    }
    let modelled = profile.transfer_time(10_000) + profile.one_way();
    assert_eq!(modelled, Duration::from_millis(15));
    assert!(elapsed >= modelled, "{elapsed:?} < {modelled:?}");
}
