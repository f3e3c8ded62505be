//! Tests of the in-process transport, the three-party runner and the counters.

mod common;

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::{pattern, script, script_stats};
use cryptgpu_transport::{
    CommStats, Counting, Handle, LocalConfig, LocalTransport, PartyId, Peer, Transport,
    TransportError, run_local_3pc, run_local_3pc_with,
};

#[test]
fn messages_reach_the_right_party_in_both_directions() {
    let results = run_local_3pc(|t| {
        let me = t.party();
        t.send(Peer::Next, format!("{me} to next").as_bytes())
            .unwrap();
        t.send(Peer::Prev, format!("{me} to prev").as_bytes())
            .unwrap();
        let from_next = String::from_utf8(t.recv(Peer::Next).unwrap()).unwrap();
        let from_prev = String::from_utf8(t.recv(Peer::Prev).unwrap()).unwrap();
        (me, from_next, from_prev)
    })
    .unwrap();
    for (i, (me, from_next, from_prev)) in results.into_iter().enumerate() {
        assert_eq!(me.index(), i);
        assert_eq!(from_next, format!("{} to prev", me.next()));
        assert_eq!(from_prev, format!("{} to next", me.prev()));
    }
}

#[test]
fn exchange_both_64_mib_each_way_does_not_deadlock() {
    const LEN: usize = 64 << 20;
    let results = run_local_3pc(|t| {
        let me = t.party().index() as u64;
        let msg = pattern(me, LEN);
        let (from_next, from_prev) = t.exchange_both(&msg, &msg).unwrap();
        drop(msg);
        let next = t.party().next().index() as u64;
        let prev = t.party().prev().index() as u64;
        from_next == pattern(next, LEN) && from_prev == pattern(prev, LEN)
    })
    .unwrap();
    assert_eq!(results, [true; 3]);
}

#[test]
fn counters_are_exact_for_a_scripted_sequence() {
    let results = run_local_3pc(|t| {
        let mut c = Counting::new(t);
        let handle = c.stats_handle();
        script(&mut c).unwrap();
        assert_eq!(handle.snapshot(), c.stats());
        c.stats()
    })
    .unwrap();
    for party in PartyId::ALL {
        assert_eq!(results[party.index()], script_stats(party), "{party}");
    }
    let total = CommStats::sum(&results);
    assert_eq!(total.total_bytes_sent(), total.total_bytes_received());
    assert_eq!(total.total_messages_sent(), total.total_messages_received());
}

#[test]
fn rounds_and_deltas() {
    let [(delta, rounds), _, _] = run_local_3pc(|t| {
        let mut c = Counting::new(t);
        // Two exchanges: two rounds; receives in a row without sends: one round.
        c.exchange(Peer::Next, &[1; 8], Peer::Prev).unwrap();
        let before = c.stats();
        c.exchange_both(&[2; 16], &[3; 24]).unwrap();
        c.exchange_u64s(Peer::Prev, &[7, 8], Peer::Next).unwrap();
        let delta = c.stats().since(&before);
        // A step in which every party sends and then receives is one more round.
        c.send(Peer::Next, &[]).unwrap();
        c.send(Peer::Prev, &[]).unwrap();
        c.recv(Peer::Next).unwrap();
        c.recv(Peer::Prev).unwrap();
        (delta, c.stats().rounds)
    })
    .unwrap();
    assert_eq!(delta.rounds, 2);
    assert_eq!(delta.bytes_sent.next, 16);
    assert_eq!(delta.bytes_sent.prev, 24 + 16);
    assert_eq!(delta.bytes_received.next, 24 + 16);
    assert_eq!(delta.messages_received.prev, 1);
    assert_eq!(rounds, 4);
}

#[test]
fn a_panicking_party_is_reported_and_its_peers_fail_promptly() {
    let seen: Mutex<Vec<(PartyId, TransportError, Duration)>> = Mutex::new(Vec::new());
    let config = LocalConfig::default().with_recv_timeout(Some(Duration::from_secs(60)));
    let err = run_local_3pc_with(config, |t| {
        if t.party() == PartyId::P1 {
            panic!("P1 fails on purpose");
        }
        let start = Instant::now();
        // P0 waits on its next (P1), P2 on its prev (P1).
        let peer = t.party().peer_of(PartyId::P1).unwrap();
        let e = t.recv(peer).unwrap_err();
        seen.lock().unwrap().push((t.party(), e, start.elapsed()));
    })
    .unwrap_err();
    match err {
        TransportError::PartyPanicked { party, message } => {
            assert_eq!(party, PartyId::P1);
            assert!(message.contains("P1 fails on purpose"), "{message}");
        }
        other => panic!("expected PartyPanicked, got {other}"),
    }
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 2);
    for (party, e, elapsed) in seen {
        assert!(
            matches!(e, TransportError::Disconnected { peer: PartyId::P1 }),
            "{party}: {e}"
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "{party} waited {elapsed:?}"
        );
    }
}

#[test]
fn a_party_that_returns_early_disconnects() {
    let results = run_local_3pc(|t| match t.party() {
        PartyId::P2 => None,
        _ => {
            // P2 is P0's prev and P1's next.
            let peer = t.party().peer_of(PartyId::P2).unwrap();
            let recv = t.recv(peer).unwrap_err();
            let send = t.send(peer, b"anyone?").unwrap_err();
            Some((recv.is_disconnected(), send.is_disconnected()))
        }
    })
    .unwrap();
    assert_eq!(results, [Some((true, true)), Some((true, true)), None]);
}

#[test]
fn queued_messages_arrive_before_the_disconnect() {
    let [mut p0, mut p1, _p2] = LocalTransport::triple(LocalConfig::default());
    p1.send(Peer::Prev, b"last words").unwrap();
    drop(p1);
    assert_eq!(p0.recv(Peer::Next).unwrap(), b"last words");
    assert!(p0.recv(Peer::Next).unwrap_err().is_disconnected());
}

#[test]
fn a_silent_party_times_out_within_the_configured_timeout() {
    let timeout = Duration::from_millis(300);
    let results = run_local_3pc_with(
        LocalConfig::default().with_recv_timeout(Some(timeout)),
        |t| {
            if t.party() == PartyId::P1 {
                // Alive but silent for longer than the timeout.
                thread::sleep(Duration::from_millis(1500));
                return None;
            }
            if t.party() == PartyId::P0 {
                let start = Instant::now();
                let e = t.recv(Peer::Next).unwrap_err();
                return Some((e, start.elapsed()));
            }
            None
        },
    )
    .unwrap();
    let (e, elapsed) = results[0].as_ref().unwrap();
    assert!(
        matches!(e, TransportError::Timeout { peer: PartyId::P1, after } if *after == timeout),
        "{e}"
    );
    assert!(
        elapsed >= &timeout && elapsed < &Duration::from_millis(1200),
        "{elapsed:?}"
    );
}

#[test]
fn u64_helpers_reject_misaligned_messages() {
    let results = run_local_3pc(|t| {
        t.send(Peer::Next, &[1, 2, 3]).unwrap();
        let e = t.recv_u64s(Peer::Prev).unwrap_err();
        t.send_u64s(Peer::Next, &[u64::MAX, 5]).unwrap();
        let words = t.recv_u64s(Peer::Prev).unwrap();
        (
            matches!(e, TransportError::NotU64Aligned { len: 3, .. }),
            words,
        )
    })
    .unwrap();
    for r in results {
        assert_eq!(r, (true, vec![u64::MAX, 5]));
    }
}

#[test]
fn works_through_dyn_and_box() {
    let results = run_local_3pc(|t| {
        let dyn_t: &mut dyn Transport = t;
        let mut boxed: Box<&mut dyn Transport> = Box::new(dyn_t);
        let mut counted = Counting::new(&mut boxed);
        let (n, p) = counted.exchange_both_u64s(&[1], &[2]).unwrap();
        (n, p, counted.stats().rounds)
    })
    .unwrap();
    for r in results {
        assert_eq!(r, (vec![2], vec![1], 1));
    }
}

#[test]
fn handles_move_between_threads_counted_as_the_bytes_they_stand_for() {
    let results = run_local_3pc(|t| {
        let mut c = Counting::new(t);
        assert!(c.carries_handles());
        let me = c.party().index() as u64;
        c.send_handle(Peer::Next, Handle::new(vec![me; 3], 24))
            .unwrap();
        let got = c.recv_handle(Peer::Prev).unwrap();
        assert_eq!(got.wire_len(), 24);
        // A handle of another type comes back whole, to be refused by the caller.
        let got = got.downcast::<String>().unwrap_err();
        (got.downcast::<Vec<u64>>().unwrap(), c.stats())
    })
    .unwrap();
    for party in PartyId::ALL {
        let (values, stats) = &results[party.index()];
        assert_eq!(values, &vec![party.prev().index() as u64; 3]);
        assert_eq!(stats.total_bytes_sent(), 24);
        assert_eq!(stats.total_bytes_received(), 24);
        assert_eq!(stats.rounds, 1);
    }
}

#[test]
fn a_handle_where_bytes_are_expected_and_the_reverse_are_refused() {
    let results = run_local_3pc(|t| {
        match t.party() {
            PartyId::P0 => {
                t.send_handle(Peer::Next, Handle::new(1u8, 8)).unwrap();
                t.send(Peer::Next, b"bytes").unwrap();
            }
            PartyId::P1 => {
                let bytes = t.recv(Peer::Prev).unwrap_err();
                let handle = t.recv_handle(Peer::Prev).unwrap_err();
                return Some((bytes, handle));
            }
            _ => {}
        }
        None
    })
    .unwrap();
    let (bytes, handle) = results[1].as_ref().unwrap();
    for (err, words) in [
        (bytes, "a handle where bytes"),
        (handle, "bytes where a handle"),
    ] {
        assert!(
            matches!(
                err,
                TransportError::Malformed {
                    peer: PartyId::P0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(words), "{err}");
    }
}

#[test]
fn a_transport_between_processes_refuses_handles_by_default() {
    /// A transport that carries bytes only (the trait's defaults for handles).
    struct BytesOnly;
    impl Transport for BytesOnly {
        fn party(&self) -> PartyId {
            PartyId::P1
        }
        fn send(&mut self, _: Peer, _: &[u8]) -> Result<(), TransportError> {
            Ok(())
        }
        fn recv(&mut self, _: Peer) -> Result<Vec<u8>, TransportError> {
            Ok(Vec::new())
        }
    }
    // The in-process transport told to carry bytes only refuses them too.
    let results = run_local_3pc_with(LocalConfig::default().with_handles(false), |t| {
        (
            t.carries_handles(),
            t.send_handle(Peer::Next, Handle::new(0u8, 8)).is_err(),
        )
    })
    .unwrap();
    assert_eq!(results, [(false, true); 3]);
    let mut t = Counting::new(BytesOnly);
    assert!(!t.carries_handles());
    let err = t.send_handle(Peer::Next, Handle::new(0u8, 8)).unwrap_err();
    assert!(matches!(
        err,
        TransportError::HandlesNotCarried { peer: PartyId::P2 }
    ));
    assert!(matches!(
        t.recv_handle(Peer::Prev),
        Err(TransportError::HandlesNotCarried { .. })
    ));
    assert_eq!(t.stats().total_messages_sent(), 0);
}
