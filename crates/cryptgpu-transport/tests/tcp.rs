//! Tests of the TCP transport: mutual TLS on loopback, refusal of wrong certificates, peer
//! failures, and framing errors driven from raw sockets against the insecure plaintext mode.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use common::{
    addr, bind, insecure_p0_with_raw_neighbours, on_threads, pattern, script, script_stats,
    test_link, tls_three,
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

/// Runs setup with P2 using `p2` and asserts that the honest P0 and P1 are refused promptly
/// with a TLS error.
fn assert_honest_parties_refuse(p2: TlsConfig) {
    assert_honest_parties_refuse_with(deployment_configs(), p2, false);
}

/// As [`assert_honest_parties_refuse`] with the honest parties' configurations given; with
/// `own_verification`, both honest parties must have rejected P2's certificate themselves.
fn assert_honest_parties_refuse_with(
    honest: [TlsConfig; 3],
    p2: TlsConfig,
    own_verification: bool,
) {
    let [c0, c1, _] = honest;
    let [(r0, t0), (r1, t1), (r2, _)] = tls_three([c0, c1, p2], test_link());
    if own_verification {
        for r in [&r0, &r1] {
            assert!(
                matches!(
                    r,
                    Err(TransportError::Tls {
                        source: rustls::Error::InvalidCertificate(_),
                        ..
                    })
                ),
                "{:?}",
                r.as_ref().err()
            );
        }
    }
    for (party, r, t) in [(PartyId::P0, r0, t0), (PartyId::P1, r1, t1)] {
        if let Err(e) = &r {
            eprintln!("{party} refused P2: {e}");
        }
        match r {
            Err(TransportError::Tls {
                peer: PartyId::P2, ..
            }) => {}
            Err(e) => panic!("{party}: expected a TLS error from P2, got {e}"),
            Ok(_) => panic!("{party} accepted a bad peer"),
        }
        assert!(t < Duration::from_secs(4), "{party} took {t:?}");
    }
    assert!(r2.is_err(), "the bad party must not get through either");
}

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let other = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    // A P2 with a well-formed certificate for "party2", but from another CA.
    assert_honest_parties_refuse(other.tls_config(PartyId::P2).unwrap());
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
    assert_honest_parties_refuse_with(honest, TlsConfig::new(lenient), true);
}

#[test]
fn a_valid_certificate_with_the_wrong_identity_is_refused() {
    let d = generate_deployment(DEFAULT_IDENTITIES).unwrap();
    // P0's certificate (same CA) used where P2 is expected: both P0 (accepting from P2) and
    // P1 (dialing P2) must refuse it. The honest parties come from another deployment here,
    // so build them from `d` as well.
    let [c0, c1, _] = PartyId::ALL.map(|p| d.tls_config(p).unwrap());
    let wrong = d.tls_config(PartyId::P0).unwrap();
    let [(r0, t0), (r1, t1), (r2, _)] = tls_three([c0, c1, wrong], test_link());
    for (party, r, t) in [(PartyId::P0, r0, t0), (PartyId::P1, r1, t1)] {
        if let Err(e) = &r {
            eprintln!("{party} refused P2: {e}");
        }
        match r {
            Err(TransportError::Tls {
                peer: PartyId::P2,
                source,
            }) => {
                let text = source.to_string();
                assert!(
                    text.contains("party2") || text.contains("name") || text.contains("alert"),
                    "{party}: {text}"
                );
            }
            Err(e) => panic!("{party}: expected a TLS error from P2, got {e}"),
            Ok(_) => panic!("{party} accepted a peer with the wrong identity"),
        }
        assert!(t < Duration::from_secs(4), "{party} took {t:?}");
    }
    assert!(r2.is_err());
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
        assert!(
            matches!(e, TransportError::Disconnected { peer: PartyId::P1 }),
            "{e}"
        );
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
    // From raw P2 (P0's prev): two frames in one write.
    let mut bytes = 3u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"abc");
    bytes.extend_from_slice(&0u64.to_le_bytes());
    raw_p2.write_all(&bytes).unwrap();
    assert_eq!(p0.recv(Peer::Prev).unwrap(), b"abc");
    assert_eq!(p0.recv(Peer::Prev).unwrap(), b"");
    // To raw P1 (P0's next).
    p0.send(Peer::Next, b"hello p1").unwrap();
    let mut buf = [0u8; 16];
    std::io::Read::read_exact(&mut raw_p1, &mut buf).unwrap();
    assert_eq!(&buf[..8], &8u64.to_le_bytes());
    assert_eq!(&buf[8..], b"hello p1");
}

#[test]
fn an_oversized_frame_is_frame_too_large() {
    let link = LinkConfig {
        max_frame_len: 1024,
        ..test_link()
    };
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(link);
    // A frame at the limit is fine, one byte more is not.
    let mut ok = 1024u64.to_le_bytes().to_vec();
    ok.extend_from_slice(&[9u8; 1024]);
    raw_p2.write_all(&ok).unwrap();
    assert_eq!(p0.recv(Peer::Prev).unwrap(), vec![9u8; 1024]);
    raw_p2.write_all(&1025u64.to_le_bytes()).unwrap();
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
    // Sending more than the limit is refused locally.
    let e = p0.send(Peer::Next, &[0u8; 1025]).unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::FrameTooLarge {
                len: 1025,
                max: 1024,
                ..
            }
        ),
        "{e}"
    );
    // A huge announced length does not allocate or wait: it fails at once.
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    raw_p2.write_all(&u64::MAX.to_le_bytes()).unwrap();
    assert!(matches!(
        p0.recv(Peer::Prev).unwrap_err(),
        TransportError::FrameTooLarge { len: u64::MAX, .. }
    ));
}

#[test]
fn a_frame_cut_short_is_truncated() {
    let (mut p0, _raw_p1, mut raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    let mut bytes = 100u64.to_le_bytes().to_vec();
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

    // A close between frames is a plain disconnect.
    let (mut p0, raw_p1, _raw_p2) = insecure_p0_with_raw_neighbours(test_link());
    drop(raw_p1);
    assert!(p0.recv(Peer::Next).unwrap_err().is_disconnected());
}

#[test]
fn a_wrong_plaintext_hello_is_refused() {
    let l0 = bind();
    let a0 = addr(&l0);
    let network = NetworkConfig {
        addresses: [a0.clone(), "127.0.0.1:9".into(), "127.0.0.1:9".into()],
        link: test_link(),
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
            e,
            TransportError::Handshake {
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
        assert!(e.is_disconnected(), "{e}");
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
