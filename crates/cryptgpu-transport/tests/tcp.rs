//! Tests of the TCP transport: mutual TLS on loopback, refusal of wrong certificates, peer
//! failures, and framing errors driven from raw sockets against the insecure plaintext mode.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    ABORT, DATA, DATA_END, GOODBYE, HEARTBEAT, addr, bind, frame, frame_header,
    insecure_p0_with_raw_neighbours, on_threads, pattern, read_frame, read_message, script,
    script_stats, test_link, tls_three,
};
use rustls::pki_types::pem::PemObject;

use cryptgpu_transport::{
    Counting, DEFAULT_IDENTITIES, LinkConfig, NetworkConfig, PartyCredentials, PartyId, Peer,
    TcpTransport, TlsConfig, Transport, TransportError, generate_deployment, run_local_3pc,
    run_tls_loopback_3pc,
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
    let addresses = [
        addr(&listeners[0]),
        addr(&listeners[1]),
        addr(&listeners[2]),
    ];
    let network = NetworkConfig {
        addresses: addresses.clone(),
        link: test_link(),
    };
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
            let network = network.clone();
            thread::spawn(move || {
                let party = PartyId::new(i).unwrap();
                let mut t = TcpTransport::connect_with_listener(party, listener, &network, &tls)?;
                t.exchange(Peer::Prev, &[i as u8], Peer::Next)
            })
        })
        .collect();
    let got: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("setup despite the strangers"))
        .collect();
    assert_eq!(got, vec![vec![1], vec![2], vec![0]]);
    for s in strangers {
        assert!(s.join().unwrap().is_err(), "a stranger got through");
    }
    drop((silent, garbage));
}

#[test]
fn a_dropped_peer_makes_the_others_fail_promptly() {
    let link = LinkConfig {
        recv_timeout: Some(Duration::from_secs(20)),
        ..test_link()
    };
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
    let link = LinkConfig {
        recv_timeout: Some(timeout),
        ..test_link()
    };
    let [mut p0, p1, p2] = connected(link);
    let start = Instant::now();
    let e = p0.recv(Peer::Prev).unwrap_err();
    let elapsed = start.elapsed();
    assert!(
        matches!(e, TransportError::Timeout { peer: PartyId::P2, after } if after == timeout),
        "{e}"
    );
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
    let network = NetworkConfig {
        addresses: [
            addr(&listeners[0]),
            addr(&listeners[1]),
            addr(&listeners[2]),
        ],
        link: test_link(),
    };
    let handles: Vec<_> = configs
        .into_iter()
        .zip(listeners)
        .enumerate()
        .map(|(i, (tls, listener))| {
            let network = network.clone();
            thread::spawn(move || {
                // P2 first, P0 last, 150 ms apart.
                thread::sleep(Duration::from_millis(150 * (2 - i as u64)));
                let party = PartyId::new(i).unwrap();
                let mut t = TcpTransport::connect_with_listener(party, listener, &network, &tls)?;
                t.exchange(Peer::Prev, &[i as u8], Peer::Next)
            })
        })
        .collect();
    let got: Vec<Vec<u8>> = handles
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
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
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn bad_pem_is_a_credentials_error() {
    let d = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    let p = &d.parties[0];
    assert!(matches!(
        PartyCredentials::from_pem("junk", &p.cert_pem, &p.key_pem),
        Err(TransportError::Credentials(_))
    ));
    assert!(matches!(
        PartyCredentials::from_pem(&d.ca_cert_pem, &p.cert_pem, "junk"),
        Err(TransportError::Credentials(_))
    ));
    assert!(matches!(
        PartyCredentials::from_pem_files(
            "/nonexistent/ca.pem",
            "/nonexistent/c.pem",
            "/nonexistent/k.pem"
        ),
        Err(TransportError::File { .. })
    ));
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
    assert!(
        matches!(
            e,
            TransportError::FrameTooLarge {
                peer: PartyId::P2,
                len: 1025,
                max: 1024
            }
        ),
        "{e}"
    );
    // P0 tells P1 why it stops: an abort blaming P2.
    let (kind, payload) = read_message(&mut raw_p1).unwrap();
    assert_eq!(kind, ABORT);
    assert_eq!(payload[0], 2);
    assert!(String::from_utf8_lossy(&payload[1..]).contains("maximum frame length"));

    // A huge announced length does not allocate or wait: it fails at once.
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    raw_p2
        .write_all(&frame_header(DATA, (1 << 56) - 1))
        .unwrap();
    assert!(matches!(
        p0.recv(Peer::Prev).unwrap_err(),
        TransportError::FrameTooLarge { .. }
    ));
}

#[test]
fn the_message_limit_holds_both_ways() {
    let link = LinkConfig {
        max_message_len: 100,
        ..test_link()
    };
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(link);
    let e = p0.send(Peer::Next, &[0u8; 101]).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::MessageTooLarge {
                len: 101,
                max: 100,
                ..
            }
        ),
        "{e}"
    );
    p0.send(Peer::Next, &[0u8; 100]).unwrap();
    // 60 + 60 bytes in two frames: over the limit when the second arrives.
    let mut bytes = frame(DATA, &[1u8; 60]);
    bytes.extend(frame(DATA_END, &[1u8; 60]));
    raw_p2.write_all(&bytes).unwrap();
    let e = p0.recv(Peer::Prev).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::MessageTooLarge {
                peer: PartyId::P2,
                len: 120,
                max: 100
            }
        ),
        "{e}"
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
    assert!(
        matches!(
            e,
            TransportError::Truncated {
                peer: PartyId::P2,
                expected: 108,
                received: 48
            }
        ),
        "{e}"
    );

    // Cut inside the header.
    let (mut p0, mut raw_p1, _raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    raw_p1.write_all(&[5, 0, 0]).unwrap();
    drop(raw_p1);
    let e = p0.recv(Peer::Next).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Truncated {
                peer: PartyId::P1,
                expected: 8,
                received: 3
            }
        ),
        "{e}"
    );

    // A close between frames without a goodbye: the peer died.
    let (mut p0, raw_p1, _raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    drop(raw_p1);
    let e = p0.recv(Peer::Next).unwrap_err();
    assert!(
        matches!(e, TransportError::ConnectionLost { peer: PartyId::P1 }),
        "{e}"
    );

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
        assert!(
            matches!(
                e,
                TransportError::Malformed {
                    peer: PartyId::P2,
                    ..
                }
            ),
            "{e}"
        );
    }

    // An abort from P2 blaming P1 is passed on to P1, saying who reported it.
    let (mut p0, mut raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    let mut payload = vec![1u8];
    payload.extend_from_slice(b"out of memory");
    raw_p2.write_all(&frame(ABORT, &payload)).unwrap();
    let e = p0.recv(Peer::Next).unwrap_err();
    assert!(
        matches!(&e, TransportError::PeerFailed { peer: PartyId::P1, reported_by: Some(PartyId::P2), reason } if reason == "out of memory"),
        "{e}"
    );
    assert_eq!(e.to_string(), "P1 failed (reported by P2): out of memory");
    let (kind, payload) = read_message(&mut raw_p1).unwrap();
    assert_eq!((kind, payload[0]), (ABORT, 1));
}

#[test]
fn a_stalled_peer_is_named_within_half_the_receive_timeout_and_the_other_told() {
    let timeout = Duration::from_millis(800);
    let link = LinkConfig {
        recv_timeout: Some(timeout),
        ..test_link()
    };
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
    assert!(
        matches!(
            &e,
            TransportError::PeerFailed {
                peer: PartyId::P2,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("sent nothing"), "{e}");
    assert!(elapsed < timeout, "{elapsed:?}");
    // P1 is told, with P2 named.
    let (kind, payload) = read_message(&mut raw_p1).unwrap();
    assert_eq!((kind, payload[0]), (ABORT, 2));
    // And P0's own receive from P2 reports the stall itself.
    assert!(matches!(
        p0.recv(Peer::Prev).unwrap_err(),
        TransportError::Stalled {
            peer: PartyId::P2,
            ..
        }
    ));
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
    assert!(
        matches!(
            &e,
            TransportError::ConnectTimeout { .. }
                | TransportError::AcceptTimeout {
                    peer: PartyId::P2,
                    ..
                }
        ),
        "{e}"
    );
}

#[test]
fn a_panicking_tls_party_is_reported_and_its_peers_fail_promptly() {
    let link = LinkConfig {
        recv_timeout: Some(Duration::from_secs(20)),
        ..test_link()
    };
    let start = Instant::now();
    let err = run_tls_loopback_3pc(link, |t| {
        if t.party() == PartyId::P0 {
            panic!("P0 fails on purpose");
        }
        let peer = t.party().peer_of(PartyId::P0).unwrap();
        let e = t.recv(peer).unwrap_err();
        assert_eq!(e.blamed_party(), Some(PartyId::P0), "{e}");
        assert!(e.to_string().contains("panicked"), "{e}");
    })
    .unwrap_err();
    assert!(
        matches!(&err, TransportError::PartyPanicked { party: PartyId::P0, message } if message.contains("on purpose")),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
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
fn an_abort_reaches_both_neighbours_with_the_reason() {
    let [p0, mut p1, mut p2] = connected(test_link());
    let handle = p0.abort_handle();
    let waiters = [(PartyId::P1, Peer::Prev), (PartyId::P2, Peer::Next)];
    let (r1, r2) = thread::scope(|s| {
        let h1 = s.spawn(|| p1.recv(waiters[0].1).unwrap_err());
        let h2 = s.spawn(|| p2.recv(waiters[1].1).unwrap_err());
        thread::sleep(Duration::from_millis(100));
        handle.abort("P0 was interrupted (Ctrl-C)");
        (h1.join().unwrap(), h2.join().unwrap())
    });
    for e in [r1, r2] {
        assert_eq!(e.to_string(), "P0 failed: P0 was interrupted (Ctrl-C)");
    }
    let mut p0 = p0;
    assert!(matches!(
        p0.recv(Peer::Next).unwrap_err(),
        TransportError::Stopped { .. }
    ));
    assert!(matches!(
        p0.send(Peer::Next, b"x").unwrap_err(),
        TransportError::Stopped { .. }
    ));
}

#[test]
fn a_party_that_finishes_first_fails_no_one() {
    // P2 is done at once; P0 and P1 go on for several receive timeouts, past the time P2's
    // end lingers: no heartbeat to the gone P2 and no stall detection on its link may stop
    // them.
    let timeout = Duration::from_millis(400);
    let link = LinkConfig {
        recv_timeout: Some(timeout),
        ..test_link()
    };
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
