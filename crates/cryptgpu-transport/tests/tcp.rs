//! Tests of the TCP transport: mutual TLS on loopback, refusal of wrong certificates, peer
//! failures, and framing errors driven from raw sockets against the insecure plaintext mode.

#[macro_use]
mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    ABORT, DATA, DATA_END, GOODBYE, HEARTBEAT, addr, assert_sooner_than, bind,
    connect_and_exchange, frame, frame_header, insecure_p0_with_raw_neighbours,
    link_with_recv_timeout, network_of, on_threads, pattern, read_frame, read_message, script,
    script_stats, test_link, tls_three,
};
use rustls::pki_types::pem::PemObject;

use cryptgpu_transport::{
    Counting, DEFAULT_IDENTITIES, FailureKind, LinkConfig, NetworkConfig, PartyCredentials,
    PartyId, Peer, TcpTransport, TlsConfig, Transport, TransportError, generate_deployment,
    run_local_3pc, run_tls_loopback_3pc,
};

fn deployment_configs() -> [TlsConfig; 3] {
    let d = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    PartyId::ALL.map(|p| d.tls_config(p).unwrap())
}

fn connected(link: LinkConfig) -> [TcpTransport; 3] {
    tls_three(deployment_configs(), link).map(|(r, _)| r.expect("TLS setup"))
}

#[test]
fn tls_gives_bit_identical_results_to_the_local_transport() {
    let run = |t: &mut dyn Transport| {
        let mut c = Counting::new(t);
        let got = script(&mut c).unwrap();
        (got, c.stats())
    };
    let local = run_local_3pc(|t| run(t)).unwrap();
    let tls = run_tls_loopback_3pc(test_link(), |t| {
        assert!(t.is_tls());
        run(t)
    })
    .unwrap();
    assert_eq!(local, tls);
    for party in PartyId::ALL {
        assert_eq!(tls[party.index()].1, script_stats(party));
    }
}

#[test]
fn tls_with_credentials_loaded_from_pem_files() {
    let d = generate_deployment(["alice.example", "bob.example", "carol.example"]).unwrap();
    let dir = std::env::temp_dir().join(format!("cryptgpu-transport-test-{}", std::process::id()));
    let files = d.write_pem_files(&dir).unwrap();
    let configs = PartyId::ALL.map(|p| {
        TlsConfig::new(files.credentials(p).unwrap())
            .with_identities(d.identities())
            .unwrap()
    });
    let _ = std::fs::remove_dir_all(&dir);
    let transports = tls_three(configs, test_link()).map(|(r, _)| r.expect("TLS setup"));
    let got = on_threads(transports, |t| {
        let me = t.party().index() as u64;
        t.exchange_u64s(Peer::Next, &[me], Peer::Prev).unwrap()
    });
    assert_eq!(got, [vec![2], vec![0], vec![1]]);
}

#[test]
fn tls_exchange_both_64_mib_each_way_does_not_deadlock() {
    const LEN: usize = 64 << 20;
    let ok = run_tls_loopback_3pc(test_link(), |t| {
        let me = t.party().index() as u64;
        let msg = pattern(me, LEN);
        let (from_next, from_prev) = t.exchange_both(&msg, &msg).unwrap();
        drop(msg);
        from_next == pattern(t.party().next().index() as u64, LEN)
            && from_prev == pattern(t.party().prev().index() as u64, LEN)
    })
    .unwrap();
    assert_eq!(ok, [true; 3]);
}

/// Short setup deadline for the tests in which setup must fail.
fn refusing_link() -> LinkConfig {
    LinkConfig {
        connect_timeout: Duration::from_secs(2),
        ..test_link()
    }
}

/// Runs setup with P2 using `p2` and asserts that the honest P0 and P1 refuse it: neither
/// gets through, both fail at the connect deadline (not later) with an error naming P2 and
/// saying why its connections were refused, which must contain `why`.
fn assert_honest_parties_refuse(honest: [TlsConfig; 3], p2: TlsConfig, why: &[&str]) {
    let [c0, c1, _] = honest;
    let link = refusing_link();
    let [(r0, t0), (r1, t1), (r2, _)] = tls_three([c0, c1, p2], link);
    for (party, r, t) in [(PartyId::P0, r0, t0), (PartyId::P1, r1, t1)] {
        let e = match r {
            Err(e) => e,
            Ok(_) => panic!("{party} accepted a bad peer"),
        };
        eprintln!("{party} refused P2: {e}");
        let text = e.to_string();
        match (party, &e) {
            (
                PartyId::P0,
                TransportError::AcceptTimeout {
                    peer: PartyId::P2,
                    last_refused: Some(_),
                    ..
                },
            )
            | (
                PartyId::P1,
                TransportError::ConnectTimeout {
                    peer: PartyId::P2, ..
                },
            ) => {}
            _ => panic!("{party}: expected a setup timeout naming P2's refusal, got {e}"),
        }
        assert!(
            why.iter().any(|w| text.contains(w)),
            "{party}: {text} does not say {why:?}"
        );
        assert!(
            t >= link.connect_timeout && t < link.connect_timeout + Duration::from_secs(3),
            "{party} took {t:?}"
        );
    }
    assert!(r2.is_err(), "the bad party must not get through either");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let other = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    // A P2 with a well-formed certificate for "party2", but from another CA.
    let why = ["certificate", "Certificate", "alert"];
    assert_honest_parties_refuse(
        deployment_configs(),
        other.tls_config(PartyId::P2).unwrap(),
        &why,
    );
    // The same, but P2 trusts the honest CA too, so it completes its side of the handshake
    // and P0 has to refuse P2's client certificate on its own.
    let (honest, bad) = (
        deployment_configs(),
        other.credentials(PartyId::P2).unwrap(),
    );
    let cas = [honest[0].credentials().ca_certs(), bad.ca_certs()].concat();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(other.parties[2].key_pem.as_bytes())
        .unwrap();
    let lenient = PartyCredentials::from_der(cas, bad.cert_chain().to_vec(), key).unwrap();
    assert_honest_parties_refuse(honest, TlsConfig::new(lenient), &["UnknownIssuer"]);
}

#[test]
fn a_valid_certificate_with_the_wrong_identity_is_refused() {
    let d = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    // P0's certificate (same CA) used where P2 is expected: both P0 (accepting from P2) and
    // P1 (dialing P2) must refuse it.
    let honest = PartyId::ALL.map(|p| d.tls_config(p).unwrap());
    let wrong = d.tls_config(PartyId::P0).unwrap();
    assert_honest_parties_refuse(honest, wrong, &["party2", "name", "alert"]);
}

#[test]
fn strangers_that_connect_first_do_not_stop_setup() {
    let d = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    let other = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    let configs = PartyId::ALL.map(|p| d.tls_config(p).unwrap());
    let listeners = [bind(), bind(), bind()];
    let network = network_of(&listeners, test_link());
    let addresses = network.addresses.clone();
    // Before any party runs, P0's listener gets: a silent TCP connection, one that sends
    // garbage, and two TLS clients claiming to be P2 (another CA's certificate, and P1's
    // certificate, which names the wrong party), which keep retrying.
    let silent = std::net::TcpStream::connect(&addresses[0]).unwrap();
    let mut garbage = std::net::TcpStream::connect(&addresses[0]).unwrap();
    garbage
        .write_all(&[0x16, 3, 1, 0, 5, 1, 2, 3, 4, 5])
        .unwrap();
    let stranger_link = LinkConfig {
        connect_timeout: Duration::from_secs(3),
        ..test_link()
    };
    let strangers: Vec<_> = [
        other.tls_config(PartyId::P2).unwrap(),
        d.tls_config(PartyId::P1).unwrap(),
    ]
    .into_iter()
    .map(|tls| {
        let network = NetworkConfig {
            addresses: [
                addresses[0].clone(),
                "127.0.0.1:9".into(),
                "127.0.0.1:0".into(),
            ],
            link: stranger_link,
        };
        thread::spawn(move || {
            TcpTransport::connect_with_listener(PartyId::P2, bind(), &network, &tls).map(|_| ())
        })
    })
    .collect();
    thread::sleep(Duration::from_millis(300));
    let handles: Vec<_> = configs
        .into_iter()
        .zip(listeners)
        .enumerate()
        .map(|(i, (tls, listener))| {
            connect_and_exchange(i, tls, listener, &network, Duration::ZERO)
        })
        .collect();
    let got: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("setup despite the strangers").0)
        .collect();
    assert_eq!(got, vec![vec![1], vec![2], vec![0]]);
    for s in strangers {
        assert!(s.join().unwrap().is_err(), "a stranger got through");
    }
    drop((silent, garbage));
}

#[test]
fn a_dropped_peer_makes_the_others_fail_promptly() {
    let link = link_with_recv_timeout(Duration::from_secs(20));
    let [p0, p1, p2] = connected(link);
    drop(p1);
    let wait = |mut t: TcpTransport, peer: Peer| {
        thread::spawn(move || {
            let start = Instant::now();
            (t.recv(peer).unwrap_err(), start.elapsed())
        })
    };
    let (h0, h2) = (wait(p0, Peer::Next), wait(p2, Peer::Prev));
    for h in [h0, h2] {
        let (e, elapsed) = h.join().unwrap();
        // Each hears P1's goodbye itself, or first the abort of the other one, which did.
        assert_eq!(e.blamed_party(), Some(PartyId::P1), "{e}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    }
}

#[test]
fn a_silent_tls_peer_times_out() {
    let timeout = Duration::from_millis(300);
    let link = link_with_recv_timeout(timeout);
    let [mut p0, p1, p2] = connected(link);
    let start = Instant::now();
    let e = p0.recv(Peer::Prev).unwrap_err();
    let elapsed = start.elapsed();
    assert_matches!(e, TransportError::Timeout { peer: PartyId::P2, after } if *after == timeout);
    assert!(
        elapsed >= timeout && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    drop((p1, p2));
}

#[test]
fn parties_may_start_in_any_order() {
    let configs = deployment_configs();
    let listeners = [bind(), bind(), bind()];
    let network = network_of(&listeners, test_link());
    let handles: Vec<_> = configs
        .into_iter()
        .zip(listeners)
        .enumerate()
        .map(|(i, (tls, listener))| {
            // P2 first, P0 last, 150 ms apart.
            let delay = Duration::from_millis(150 * (2 - i as u64));
            connect_and_exchange(i, tls, listener, &network, delay)
        })
        .collect();
    let got: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap().0)
        .collect();
    assert_eq!(got, vec![vec![1], vec![2], vec![0]]);
}

#[test]
fn a_missing_neighbour_fails_setup_within_the_connect_timeout() {
    let dead = bind();
    let dead_addr = addr(&dead);
    drop(dead);
    let [c0, _, _] = deployment_configs();
    let link = LinkConfig {
        connect_timeout: Duration::from_millis(500),
        ..test_link()
    };
    let network = NetworkConfig {
        addresses: ["127.0.0.1:0".into(), dead_addr.clone(), dead_addr],
        link,
    };
    let start = Instant::now();
    let e = TcpTransport::connect(PartyId::P0, &network, &c0).unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_sooner_than(start, Duration::from_secs(3));
}

#[test]
fn bad_pem_is_a_credentials_error() {
    let d = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    let p = &d.parties[0];
    assert_matches!(
        PartyCredentials::from_pem("junk", &p.cert_pem, &p.key_pem).err(),
        Some(TransportError::Credentials(_))
    );
    assert_matches!(
        PartyCredentials::from_pem(&d.ca_cert_pem, &p.cert_pem, "junk").err(),
        Some(TransportError::Credentials(_))
    );
    let missing = (
        "/nonexistent/ca.pem",
        "/nonexistent/c.pem",
        "/nonexistent/k.pem",
    );
    assert_matches!(
        PartyCredentials::from_pem_files(missing.0, missing.1, missing.2).err(),
        Some(TransportError::File { .. })
    );
    assert!(generate_deployment(["a", "a", "b"]).is_err());
    assert!(generate_deployment(["a b", "c", "d"]).is_err());
}

#[test]
fn plaintext_mode_moves_frames_both_ways() {
    let (mut p0, mut raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    assert!(!p0.is_tls());
    // From raw P2 (P0's prev): a message in two frames with a heartbeat between, and an
    // empty message, in one write.
    let mut bytes = frame(DATA, b"ab");
    bytes.extend(frame(HEARTBEAT, b""));
    bytes.extend(frame(DATA_END, b"c"));
    bytes.extend(frame(DATA_END, b""));
    raw_p2.write_all(&bytes).unwrap();
    assert_eq!(p0.recv(Peer::Prev).unwrap(), b"abc");
    assert_eq!(p0.recv(Peer::Prev).unwrap(), b"");
    // To raw P1 (P0's next).
    p0.send(Peer::Next, b"hello p1").unwrap();
    assert_eq!(
        read_message(&mut raw_p1).unwrap(),
        (DATA_END, b"hello p1".to_vec())
    );
    // Dropping P0 sends a goodbye.
    drop(p0);
    assert_eq!(read_message(&mut raw_p1).unwrap().0, GOODBYE);
}

#[test]
fn messages_larger_than_a_frame_are_cut_and_reassembled() {
    let link = LinkConfig {
        max_frame_len: 1024,
        ..test_link()
    };
    let (mut p0, mut raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(link);
    // Sending: 3000 bytes leave as frames of at most 1024.
    let msg = pattern(5, 3000);
    p0.send(Peer::Next, &msg).unwrap();
    let mut got = Vec::new();
    loop {
        let (kind, payload) = read_frame(&mut raw_p1).unwrap();
        if kind == HEARTBEAT {
            continue;
        }
        assert!(payload.len() <= 1024);
        got.extend(payload);
        if kind == DATA_END {
            break;
        }
        assert_eq!(kind, DATA);
    }
    assert_eq!(got, msg);
    // Receiving: a frame at the limit is fine, one byte more is not.
    let mut ok = frame(DATA, &[9u8; 1024]);
    ok.extend(frame(DATA_END, &[8u8; 10]));
    raw_p2.write_all(&ok).unwrap();
    let mut want = vec![9u8; 1024];
    want.extend([8u8; 10]);
    assert_eq!(p0.recv(Peer::Prev).unwrap(), want);
    raw_p2.write_all(&frame_header(DATA_END, 1025)).unwrap();
    let e = p0.recv(Peer::Prev).unwrap_err();
    assert_matches!(
        e,
        TransportError::FrameTooLarge {
            peer: PartyId::P2,
            len: 1025,
            max: 1024
        }
    );
    // P0 tells P1 it stops: an abort blaming P2 for garbage, two bytes and no text.
    let (kind, payload) = read_message(&mut raw_p1).unwrap();
    assert_eq!(kind, ABORT);
    assert_eq!(payload, [2, FailureKind::Garbage.code()]);

    // A huge announced length does not allocate or wait: it fails at once.
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    raw_p2
        .write_all(&frame_header(DATA, (1 << 56) - 1))
        .unwrap();
    assert_matches!(
        p0.recv(Peer::Prev).unwrap_err(),
        TransportError::FrameTooLarge { .. }
    );
}

#[test]
fn the_message_limit_holds_both_ways() {
    let link = LinkConfig {
        max_message_len: 100,
        ..test_link()
    };
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(link);
    let e = p0.send(Peer::Next, &[0u8; 101]).unwrap_err();
    assert_matches!(
        e,
        TransportError::MessageTooLarge {
            len: 101,
            max: 100,
            ..
        }
    );
    p0.send(Peer::Next, &[0u8; 100]).unwrap();
    // 60 + 60 bytes in two frames: over the limit when the second arrives.
    let mut bytes = frame(DATA, &[1u8; 60]);
    bytes.extend(frame(DATA_END, &[1u8; 60]));
    raw_p2.write_all(&bytes).unwrap();
    let e = p0.recv(Peer::Prev).unwrap_err();
    assert_matches!(
        e,
        TransportError::MessageTooLarge {
            peer: PartyId::P2,
            len: 120,
            max: 100
        }
    );
}

#[test]
fn malformed_streams_and_cut_connections_name_the_peer() {
    // A frame cut short.
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    let mut bytes = frame_header(DATA_END, 100).to_vec();
    bytes.extend_from_slice(&[1u8; 40]);
    raw_p2.write_all(&bytes).unwrap();
    raw_p2.shutdown(Shutdown::Write).unwrap();
    let e = p0.recv(Peer::Prev).unwrap_err();
    assert_matches!(
        e,
        TransportError::Truncated {
            peer: PartyId::P2,
            expected: 108,
            received: 48
        }
    );

    // Cut inside the header.
    let (mut p0, mut raw_p1, _raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    raw_p1.write_all(&[5, 0, 0]).unwrap();
    drop(raw_p1);
    let e = p0.recv(Peer::Next).unwrap_err();
    assert_matches!(
        e,
        TransportError::Truncated {
            peer: PartyId::P1,
            expected: 8,
            received: 3
        }
    );

    // A close between frames without a goodbye: the peer died.
    let (mut p0, raw_p1, _raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    drop(raw_p1);
    let e = p0.recv(Peer::Next).unwrap_err();
    assert_matches!(e, TransportError::ConnectionLost { peer: PartyId::P1 });

    // A goodbye, then a close: a clean disconnect, delivered after the last message.
    let (mut p0, mut raw_p1, _raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    let mut bytes = frame(DATA_END, b"last");
    bytes.extend(frame(GOODBYE, b""));
    raw_p1.write_all(&bytes).unwrap();
    drop(raw_p1);
    assert_eq!(p0.recv(Peer::Next).unwrap(), b"last");
    assert!(p0.recv(Peer::Next).unwrap_err().is_disconnected());

    // An unknown frame kind, and data after a goodbye.
    for bytes in [
        frame(9, b"x"),
        [frame(GOODBYE, b""), frame(DATA_END, b"x")].concat(),
    ] {
        let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
        raw_p2.write_all(&bytes).unwrap();
        let e = p0.recv(Peer::Prev).unwrap_err();
        assert_matches!(
            e,
            TransportError::Malformed {
                peer: PartyId::P2,
                ..
            }
        );
    }

    // An abort from P2 blaming P1 is passed on to P1, saying who reported it.
    let (mut p0, mut raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    let code = FailureKind::InputOutOfRange.code();
    raw_p2.write_all(&frame(ABORT, &[1, code])).unwrap();
    let e = p0.recv(Peer::Next).unwrap_err();
    assert_matches!(
        e,
        TransportError::PeerFailed {
            peer: PartyId::P1,
            reported_by: Some(PartyId::P2),
            kind: FailureKind::InputOutOfRange
        }
    );
    assert_eq!(
        e.to_string(),
        "P1 failed: an input or weight out of range (reported by P2); the details stay with P1"
    );
    let (kind, payload) = read_message(&mut raw_p1).unwrap();
    assert_eq!((kind, payload), (ABORT, vec![1, code]));

    // An abort that carries anything but a party and a code (the text of an older peer) is
    // malformed, and blamed on its sender.
    for payload in [vec![1u8, 5, b'x'], vec![1], b"\x01out of memory".to_vec()] {
        let (mut p0, mut raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
        raw_p2.write_all(&frame(ABORT, &payload)).unwrap();
        let e = p0.recv(Peer::Prev).unwrap_err();
        assert_matches!(
            e,
            TransportError::Malformed {
                peer: PartyId::P2,
                ..
            }
        );
        let (kind, payload) = read_message(&mut raw_p1).unwrap();
        assert_eq!(
            (kind, payload),
            (ABORT, vec![2, FailureKind::Garbage.code()])
        );
    }
}

#[test]
fn a_stalled_peer_is_named_within_half_the_receive_timeout_and_the_other_told() {
    let timeout = Duration::from_millis(800);
    let link = link_with_recv_timeout(timeout);
    // Raw P2 says nothing at all, not even heartbeats: stalled. P0 waits on P1, which is
    // alive (raw P1 sends heartbeats by hand), and still learns of P2's stall at once.
    let (mut p0, mut raw_p1, _raw_p2) = insecure_p0_with_raw_neighbours(link);
    let beats = {
        let mut raw = raw_p1.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..20 {
                if raw.write_all(&frame(HEARTBEAT, b"")).is_err() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let start = Instant::now();
    let e = p0.recv(Peer::Next).unwrap_err();
    let elapsed = start.elapsed();
    assert_matches!(
        e,
        TransportError::PeerFailed {
            peer: PartyId::P2,
            ..
        }
    );
    assert!(e.to_string().contains("sent nothing"), "{e}");
    assert!(elapsed < timeout, "{elapsed:?}");
    // P1 is told, with P2 named and the stall as the kind.
    let (kind, payload) = read_message(&mut raw_p1).unwrap();
    assert_eq!(
        (kind, payload),
        (ABORT, vec![2, FailureKind::Stalled.code()])
    );
    // And P0's own receive from P2 reports the stall itself.
    assert_matches!(
        p0.recv(Peer::Prev).unwrap_err(),
        TransportError::Stalled {
            peer: PartyId::P2,
            ..
        }
    );
    beats.join().unwrap();
}

#[test]
fn a_wrong_plaintext_hello_is_dropped_and_named_at_the_deadline() {
    let l0 = bind();
    let a0 = addr(&l0);
    let network = NetworkConfig {
        addresses: [a0.clone(), "127.0.0.1:9".into(), "127.0.0.1:9".into()],
        link: refusing_link(),
    };
    let p0 = thread::spawn(move || {
        TcpTransport::connect_insecure_plaintext_for_testing_only(PartyId::P0, l0, &network)
    });
    let mut raw = std::net::TcpStream::connect(&a0).unwrap();
    // P1 pretending to be P0's prev (P2).
    raw.write_all(&common::hello(1, 0, false)).unwrap();
    let e = p0.join().unwrap().unwrap_err();
    assert_matches!(
        e,
        TransportError::ConnectTimeout { .. }
            | TransportError::AcceptTimeout {
                peer: PartyId::P2,
                ..
            }
    );
}

#[test]
fn a_panicking_tls_party_is_reported_and_its_peers_fail_promptly() {
    let link = link_with_recv_timeout(Duration::from_secs(20));
    let start = Instant::now();
    let err = run_tls_loopback_3pc(link, |t| {
        if t.party() == PartyId::P0 {
            panic!("P0 fails on purpose");
        }
        let peer = t.party().peer_of(PartyId::P0).unwrap();
        let e = t.recv(peer).unwrap_err();
        assert_eq!(e.blamed_party(), Some(PartyId::P0), "{e}");
        assert_matches!(
            e,
            TransportError::PeerFailed {
                kind: FailureKind::Internal,
                ..
            }
        );
    })
    .unwrap_err();
    assert_matches!(err, TransportError::PartyPanicked { party: PartyId::P0, message } if message.contains("on purpose"));
    assert_sooner_than(start, Duration::from_secs(5));
}

#[test]
fn a_tensor_larger_than_the_frame_limit_crosses_a_tls_link() {
    // A 4 KiB frame limit and a 3 MiB message: 768 frames, reassembled.
    const LEN: usize = 3 << 20;
    let link = LinkConfig {
        max_frame_len: 4096,
        ..test_link()
    };
    let ok = run_tls_loopback_3pc(link, |t| {
        let me = t.party().index() as u64;
        let got = t
            .exchange(Peer::Next, &pattern(me, LEN), Peer::Prev)
            .unwrap();
        got == pattern(t.party().prev().index() as u64, LEN)
    })
    .unwrap();
    assert_eq!(ok, [true; 3]);
}

#[test]
fn a_small_receive_queue_bounds_memory_without_deadlock() {
    // Each party sends 8 MiB both ways before receiving, through queues of 64 KiB: the
    // writers wait for the receivers, the parties do not wait for each other.
    const LEN: usize = 8 << 20;
    let link = LinkConfig {
        queue_limit: 64 << 10,
        ..test_link()
    };
    let ok = run_tls_loopback_3pc(link, |t| {
        let me = t.party().index() as u64;
        let msg = pattern(me, LEN);
        let (from_next, from_prev) = t.exchange_both(&msg, &msg).unwrap();
        from_next == pattern(t.party().next().index() as u64, LEN)
            && from_prev == pattern(t.party().prev().index() as u64, LEN)
    })
    .unwrap();
    assert_eq!(ok, [true; 3]);
}

#[test]
fn an_abort_reaches_both_neighbours_with_its_kind() {
    let [p0, mut p1, mut p2] = connected(test_link());
    let handle = p0.abort_handle();
    let waiters = [(PartyId::P1, Peer::Prev), (PartyId::P2, Peer::Next)];
    let (r1, r2) = thread::scope(|s| {
        let h1 = s.spawn(|| p1.recv(waiters[0].1).unwrap_err());
        let h2 = s.spawn(|| p2.recv(waiters[1].1).unwrap_err());
        thread::sleep(Duration::from_millis(100));
        handle.abort(FailureKind::Interrupted);
        (h1.join().unwrap(), h2.join().unwrap())
    });
    // Each hears it from P0, or (on a loaded machine, when the other neighbour's relay
    // comes first) from the other neighbour, which names itself.
    for (e, other) in [(r1, "P2"), (r2, "P1")] {
        let text = e.to_string();
        assert!(
            text == "P0 failed: interrupted (Ctrl-C or a termination signal); the details stay \
                     with P0"
                || text
                    == format!(
                        "P0 failed: interrupted (Ctrl-C or a termination signal) (reported by \
                         {other}); the details stay with P0"
                    ),
            "{text}"
        );
    }
    let mut p0 = p0;
    let e = p0.recv(Peer::Next).unwrap_err();
    assert_matches!(e, TransportError::Stopped { .. });
    assert!(e.to_string().contains("interrupted"), "{e}");
    assert_matches!(
        p0.send(Peer::Next, b"x").unwrap_err(),
        TransportError::Stopped { .. }
    );
}

#[test]
fn a_party_that_finishes_first_fails_no_one() {
    // P2 is done at once; P0 and P1 go on for several receive timeouts, past the time P2's
    // end lingers: no heartbeat to the gone P2 and no stall detection on its link may stop
    // them.
    let timeout = Duration::from_millis(400);
    let link = link_with_recv_timeout(timeout);
    let ok = run_tls_loopback_3pc(link, |t| {
        let me = t.party();
        if me == PartyId::P2 {
            return true;
        }
        let start = Instant::now();
        for round in 0..50u64 {
            let peer = if me == PartyId::P0 {
                Peer::Next
            } else {
                Peer::Prev
            };
            let got = t.exchange_u64s(peer, &[round], peer).unwrap();
            assert_eq!(got, [round]);
            thread::sleep(Duration::from_millis(80));
        }
        start.elapsed() > timeout * 8
    })
    .unwrap();
    assert_eq!(ok, [true; 3]);
}

#[test]
fn an_abort_is_two_bytes_whatever_the_kind() {
    for code in 0..=13u8 {
        let kind = FailureKind::from_code(code);
        let (p0, mut raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
        p0.abort(kind);
        for raw in [&mut raw_p1, &mut raw_p2] {
            let (frame_kind, payload) = read_message(raw).unwrap();
            assert_eq!((frame_kind, payload), (ABORT, vec![0, kind.code()]));
        }
    }
}

#[test]
fn the_frame_limit_has_an_upper_bound() {
    let max = cryptgpu_transport::MAX_FRAME_LEN_LIMIT;
    assert_eq!(max, 16 << 20);
    for ok in [1, 1024, max] {
        LinkConfig {
            max_frame_len: ok,
            ..test_link()
        }
        .validate()
        .unwrap();
    }
    for bad in [0, max + 1, u64::MAX] {
        let link = LinkConfig {
            max_frame_len: bad,
            ..test_link()
        };
        let e = link.validate().unwrap_err();
        assert_matches!(e, TransportError::Config(_));
        assert!(e.to_string().contains("16 MiB"), "{e}");
        // Setup refuses it at once.
        let network = NetworkConfig {
            addresses: [
                "127.0.0.1:0".into(),
                "127.0.0.1:9".into(),
                "127.0.0.1:9".into(),
            ],
            link,
        };
        let start = Instant::now();
        let e = TcpTransport::connect_insecure_plaintext_for_testing_only(
            PartyId::P0,
            bind(),
            &network,
        )
        .unwrap_err();
        assert_matches!(e, TransportError::Config(_));
        assert_sooner_than(start, Duration::from_secs(1));
    }
}

#[cfg(unix)]
#[test]
fn a_key_file_that_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    let dir =
        std::env::temp_dir().join(format!("cryptgpu-transport-keymode-{}", std::process::id()));
    let files = d.write_pem_files(&dir).unwrap();
    let key = &files.parties[1].1;
    let mode = std::fs::metadata(key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "write_pem_files writes keys 0600");
    files.credentials(PartyId::P1).unwrap();
    for bad in [0o644, 0o640, 0o604, 0o666] {
        std::fs::set_permissions(key, std::fs::Permissions::from_mode(bad)).unwrap();
        let e = files.credentials(PartyId::P1).unwrap_err();
        assert_matches!(e, TransportError::KeyPermissions { path, mode } if path == key && *mode == bad);
        let text = e.to_string();
        assert!(
            text.contains(&format!("chmod 600 {}", key.display())),
            "{text}"
        );
        assert!(cryptgpu_transport::read_private_key(key).is_err());
    }
    std::fs::set_permissions(key, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert_eq!(
        cryptgpu_transport::read_private_key(key).unwrap(),
        d.parties[1].key_pem.as_bytes()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The setup timeout of the flood tests: the parties must connect within it.
const FLOOD_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections a flood may hold without running this process out of file
/// descriptors (the parties share it): up to `want`, and at most a third of the soft limit.
fn flood_size(want: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
        })
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1024);
    want.min(soft / 3)
}

/// A small xorshift generator for garbage bytes.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The opening bytes of a real TLS 1.3 ClientHello.
fn client_hello() -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "party0".try_into().unwrap())
            .unwrap();
    let mut bytes = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut bytes).unwrap();
    }
    bytes
}

/// A flood of connections to `addr` from 8 threads until `stop` (or 30 s): a burst of `hold`
/// connections, then `per_sec` new ones per second, keeping the newest `hold` open. Each
/// sends what `first_bytes(i)` gives (nothing for an idle one) and then nothing more. Returns
/// how many connections it opened; `opened` counts them as it goes.
fn flood(
    addr: String,
    hold: usize,
    per_sec: u32,
    first_bytes: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> thread::JoinHandle<usize> {
    use std::sync::atomic::Ordering;
    const THREADS: usize = 8;
    let target: std::net::SocketAddr = addr.parse().unwrap();
    let first_bytes = std::sync::Arc::new(first_bytes);
    thread::spawn(move || {
        let start = Instant::now();
        let workers: Vec<_> = (0..THREADS)
            .map(|w| {
                let (stop, opened, first_bytes) =
                    (stop.clone(), opened.clone(), first_bytes.clone());
                thread::spawn(move || {
                    let hold = hold.div_ceil(THREADS);
                    let mut held = std::collections::VecDeque::with_capacity(hold + 1);
                    let mut count = 0usize;
                    while !stop.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30)
                    {
                        let Ok(mut s) =
                            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(1))
                        else {
                            continue;
                        };
                        let bytes = first_bytes(count * THREADS + w);
                        if !bytes.is_empty() {
                            let _ = s.write_all(&bytes);
                        }
                        held.push_back(s);
                        if held.len() > hold {
                            held.pop_front();
                        }
                        count += 1;
                        opened.fetch_add(1, Ordering::SeqCst);
                        if count > hold {
                            thread::sleep(Duration::from_secs(1) * THREADS as u32 / per_sec);
                        }
                    }
                    count
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

/// Runs setup for three TLS parties on loopback while `start_flood` floods P0's listener:
/// P0 starts first, the others once the flood has opened `head_start` connections. Asserts
/// that all three connect within [`FLOOD_CONNECT_TIMEOUT`] and exchange a message; returns
/// the connections the flood opened and the slowest party's setup time.
fn setup_under_flood(
    head_start: usize,
    start_flood: impl FnOnce(
        String,
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) -> thread::JoinHandle<usize>,
) -> (usize, Duration) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let configs = deployment_configs();
    let listeners = [bind(), bind(), bind()];
    let link = LinkConfig {
        connect_timeout: FLOOD_CONNECT_TIMEOUT,
        ..test_link()
    };
    let network = network_of(&listeners, link);
    let stop = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let flooder = start_flood(network.addresses[0].clone(), stop.clone(), opened.clone());
    let mut handles = Vec::new();
    for (i, (tls, listener)) in configs.into_iter().zip(listeners).enumerate() {
        if i == 1 {
            // P0 is up and taking the flood; the others come once it is in full swing. A
            // loaded 2-core machine opens a thousand connections in about 5 s: wait up to 20
            // (within P0's connect timeout), so the flood is whole when setup runs.
            let wait = Instant::now();
            while opened.load(Ordering::SeqCst) < head_start
                && wait.elapsed() < Duration::from_secs(20)
            {
                thread::sleep(Duration::from_millis(5));
            }
        }
        handles.push(connect_and_exchange(
            i,
            tls,
            listener,
            &network,
            Duration::ZERO,
        ));
    }
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::SeqCst);
    let count = flooder.join().unwrap();
    let mut slowest = Duration::ZERO;
    for (i, r) in results.into_iter().enumerate() {
        let (got, took) = r.unwrap_or_else(|e| panic!("P{i} did not get through the flood: {e}"));
        assert_eq!(got, vec![((i + 1) % 3) as u8]);
        assert!(took < FLOOD_CONNECT_TIMEOUT, "P{i} took {took:?}");
        eprintln!("P{i} connected in {took:?}");
        slowest = slowest.max(took);
    }
    (count, slowest)
}

#[test]
fn a_thousand_idle_connections_do_not_stop_setup() {
    let hold = flood_size(1000);
    let (count, slowest) = setup_under_flood(hold, move |addr, stop, opened| {
        flood(addr, hold, 500, |_| Vec::new(), stop, opened)
    });
    eprintln!("{count} idle connections opened on P0's listener; slowest setup {slowest:?}");
    assert!(count >= hold, "only {count} of {hold} connections opened");
}

#[test]
fn a_flood_of_garbage_and_partial_hellos_does_not_stop_setup() {
    let hello = client_hello();
    assert!(hello.len() > 100, "{}", hello.len());
    let hold = flood_size(500);
    let (count, slowest) = setup_under_flood(hold, move |addr, stop, opened| {
        flood(
            addr,
            hold,
            1000,
            move |i| {
                let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
                match i % 4 {
                    // Random garbage.
                    0 => (0..64).map(|_| xorshift(&mut state) as u8).collect(),
                    // Half a ClientHello, then nothing.
                    1 => hello[..hello.len() / 2].to_vec(),
                    // All of a ClientHello but its last byte.
                    2 => hello[..hello.len() - 1].to_vec(),
                    // A TLS record header announcing 16 KiB, and 10 bytes of it.
                    _ => [&[0x16, 3, 1, 0x40, 0][..], &[1; 10]].concat(),
                }
            },
            stop,
            opened,
        )
    });
    eprintln!("{count} garbage connections opened on P0's listener; slowest setup {slowest:?}");
    assert!(count >= hold, "only {count} of {hold} connections opened");
}

#[test]
fn a_connection_from_another_address_is_closed_at_once() {
    use cryptgpu_transport::AcceptFrom;
    use std::io::{ErrorKind, Read};
    // P2 is configured at 127.0.0.2, but every connection the test opens comes from
    // 127.0.0.1 (Linux picks that source address for all of 127.0.0.0/8, and the standard
    // library cannot bind a socket before connecting it).
    // Plaintext P0 with a raw P1 that answers its dial, so that only the accept side can
    // fail (the address check comes before any TLS or hello, in both modes).
    let run = |accept_from: AcceptFrom, p2: &str| {
        let l0 = bind();
        let l1 = bind();
        let a0 = addr(&l0);
        let network = NetworkConfig {
            addresses: [a0.clone(), addr(&l1), p2.to_string()],
            link: LinkConfig {
                connect_timeout: Duration::from_secs(2),
                accept_from,
                ..test_link()
            },
        };
        let raw_p1 = thread::spawn(move || {
            let (mut s, _) = l1.accept().unwrap();
            let mut buf = [0u8; 8];
            s.read_exact(&mut buf).unwrap();
            assert_eq!(buf, common::hello(0, 1, false));
            s.write_all(&common::hello(1, 0, true)).unwrap();
            s
        });
        let p0 = thread::spawn(move || {
            TcpTransport::connect_insecure_plaintext_for_testing_only(PartyId::P0, l0, &network)
                .map(|_| ())
        });
        let mut raw = std::net::TcpStream::connect(&a0).unwrap();
        assert_eq!(raw.local_addr().unwrap().ip().to_string(), "127.0.0.1");
        raw.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let start = Instant::now();
        let closed = match raw.read(&mut [0u8; 16]) {
            Ok(0) => true,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            other => panic!("{other:?}"),
        };
        let after = start.elapsed();
        let e = p0.join().unwrap().unwrap_err();
        drop(raw_p1.join().unwrap());
        (closed, after, e)
    };

    let (closed, after, e) = run(AcceptFrom::PeerAddresses, "127.0.0.2:7002");
    assert!(
        closed && after < Duration::from_millis(300),
        "{closed} {after:?}"
    );
    assert_matches!(e, TransportError::AcceptTimeout { peer: PartyId::P2, last_refused: Some(why), .. } if why.contains("127.0.0.1") && why.contains("127.0.0.2") && why.contains("closed at once"));
    // From the configured address, or from anywhere with AcceptFrom::Any, the same
    // connection is held (until it has been silent for too long).
    for (accept_from, p2) in [
        (AcceptFrom::PeerAddresses, "127.0.0.1:7002"),
        (AcceptFrom::Any, "127.0.0.2:7002"),
    ] {
        let (closed, after, e) = run(accept_from, p2);
        assert!(!closed, "{accept_from:?} {p2}: closed after {after:?}");
        assert!(e.is_timeout(), "{e}");
    }
    // A peer address that does not resolve is a configuration error at once.
    let network = NetworkConfig {
        addresses: [
            "127.0.0.1:0".into(),
            "127.0.0.1:9".into(),
            "no-such-host.invalid:7002".into(),
        ],
        link: test_link(),
    };
    let [c0, _, _] = deployment_configs();
    let e = TcpTransport::connect(PartyId::P0, &network, &c0).unwrap_err();
    assert_matches!(e, TransportError::Config(m) if m.contains("no-such-host.invalid"));
}

/// The environment variable that makes the SIGSTOP test's binary play P1 in a child process:
/// P0's and P2's addresses, separated by a space.
const SIGSTOP_CHILD: &str = "CRYPTGPU_TRANSPORT_TEST_SIGSTOP_CHILD";

/// The receive timeout of the SIGSTOP test: stall detection after 1 s.
const SIGSTOP_RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Each party's loop in the SIGSTOP test: ring exchanges every 20 ms until one fails.
fn exchange_until_failure(t: &mut TcpTransport) -> TransportError {
    for round in 0u64.. {
        if let Err(e) = t.exchange_u64s(Peer::Next, &[round], Peer::Prev) {
            return e;
        }
        thread::sleep(Duration::from_millis(20));
    }
    unreachable!()
}

/// P1 in its own process: prints its address, connects, runs the loop and prints whom its
/// error blames.
fn sigstop_child(spec: &str) {
    let (a0, a2) = spec.split_once(' ').unwrap();
    let l1 = bind();
    let a1 = addr(&l1);
    println!("ADDRESS {a1}");
    let network = NetworkConfig {
        addresses: [a0.to_string(), a1, a2.to_string()],
        link: link_with_recv_timeout(SIGSTOP_RECV_TIMEOUT),
    };
    let mut t =
        TcpTransport::connect_insecure_plaintext_for_testing_only(PartyId::P1, l1, &network)
            .unwrap();
    println!("READY");
    let e = exchange_until_failure(&mut t);
    println!("RESULT {} {e}", e.blamed_party().map_or(9, |p| p.index()));
}

#[test]
fn a_party_resumed_after_sigstop_blames_itself_not_a_peer() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    if let Ok(spec) = std::env::var(SIGSTOP_CHILD) {
        sigstop_child(&spec);
        return;
    }
    if !cfg!(target_os = "linux") {
        return;
    }
    let signal = |pid: u32, sig: &str| {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    };
    /// Kills the child if the test fails half-way.
    struct Reaper(std::process::Child);
    impl Drop for Reaper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let (l0, l2) = (bind(), bind());
    let (a0, a2) = (addr(&l0), addr(&l2));
    let mut child = Reaper(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_party_resumed_after_sigstop_blames_itself_not_a_peer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SIGSTOP_CHILD, format!("{a0} {a2}"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let (tx, lines) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |prefix: &str, within: Duration| -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                // The harness prints the test's name before the child's first line.
                Ok(line) if line.contains(prefix) => {
                    return line[line.find(prefix).unwrap_or(0) + prefix.len()..].to_string();
                }
                Ok(_) => {}
                Err(e) => panic!("no {prefix:?} line from the child: {e}"),
            }
        }
    };
    let a1 = wait_for("ADDRESS ", Duration::from_secs(20));
    let network = NetworkConfig {
        addresses: [a0, a1, a2],
        link: link_with_recv_timeout(SIGSTOP_RECV_TIMEOUT),
    };
    let parties: Vec<_> = [(PartyId::P0, l0), (PartyId::P2, l2)]
        .into_iter()
        .map(|(party, listener)| {
            let network = network.clone();
            thread::spawn(move || {
                let mut t = TcpTransport::connect_insecure_plaintext_for_testing_only(
                    party, listener, &network,
                )
                .unwrap();
                let e = exchange_until_failure(&mut t);
                (e, Instant::now(), t)
            })
        })
        .collect();
    wait_for("READY", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(300));
    signal(pid, "STOP");
    let stopped = Instant::now();
    // P0 and P2 find P1 stalled after half the receive timeout and name it.
    let mut transports = Vec::new();
    for h in parties {
        let (e, at, t) = h.join().unwrap();
        assert_eq!(e.blamed_party(), Some(PartyId::P1), "{e}");
        assert!(
            at - stopped < SIGSTOP_RECV_TIMEOUT * 2,
            "{:?}",
            at - stopped
        );
        transports.push(t);
    }
    // Stopped for longer than the receive timeout itself: on resuming, P1's stall detection
    // and its pending receive have both been "waiting" for longer than their limits.
    thread::sleep((SIGSTOP_RECV_TIMEOUT * 2).saturating_sub(stopped.elapsed()));
    drop(transports);
    signal(pid, "CONT");
    let result = wait_for("RESULT ", Duration::from_secs(10));
    assert!(
        result.starts_with("1 "),
        "P1 resumed blames another party: {result}"
    );
    assert!(result.contains("sent nothing"), "{result}");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}
