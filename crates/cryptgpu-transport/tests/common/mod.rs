//! Shared helpers of the integration tests: a scripted exchange, message patterns, ways
//! to bring up TCP parties on loopback, and [`assert_matches!`] for their errors.

#![allow(dead_code, unreachable_pub, unused_macros)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use cryptgpu_transport::{
    CommStats, LinkConfig, NetworkConfig, PartyId, Peer, PeerCounts, TcpTransport, TlsConfig,
    Transport, TransportError, u64s_to_le_bytes,
};

/// Asserts that `value` (matched by reference) matches `pattern` and its guard, printing
/// both otherwise.
macro_rules! assert_matches {
    ($value:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match &$value {
            $pattern $(if $guard)? => {}
            other => panic!(
                "{other:?} does not match {}",
                stringify!($pattern $(if $guard)?)
            ),
        }
    };
}

/// A fixed sequence of sends and receives touching every method; returns everything received.
pub fn script(t: &mut dyn Transport) -> Result<Vec<Vec<u8>>, TransportError> {
    let me = t.party().index() as u8;
    let mut got = Vec::new();
    // 1. Ring shift: send to next, receive from prev.
    t.send(Peer::Next, &[me; 10])?;
    got.push(t.recv(Peer::Prev)?);
    // 2. Both directions at once, sizes depending on the party.
    let (a, b) = t.exchange_both(&vec![me + 10; 100 * (usize::from(me) + 1)], &[me + 20; 3])?;
    got.push(a);
    got.push(b);
    // 3. The other ring direction, as u64 words.
    let w = t.exchange_u64s(
        Peer::Prev,
        &[u64::from(me), u64::MAX - u64::from(me)],
        Peer::Next,
    )?;
    got.push(u64s_to_le_bytes(&w));
    // 4. An empty message.
    t.send(Peer::Prev, &[])?;
    got.push(t.recv(Peer::Next)?);
    // 5. Three messages, then three receives: one round.
    for k in 0..3u8 {
        t.send(Peer::Next, &[k + 100 * me; 5])?;
    }
    for _ in 0..3 {
        got.push(t.recv(Peer::Prev)?);
    }
    // 6. Only P0 sends, only P1 receives: P1 waits on a message P0 sent after round 5, so its
    //    count becomes 6 while the others stay at 5.
    if me == 0 {
        t.send(Peer::Next, b"only p0")?;
    }
    if me == 1 {
        got.push(t.recv(Peer::Prev)?);
    }
    Ok(got)
}

/// The counters that [`script`] must produce for `party`.
pub fn script_stats(party: PartyId) -> CommStats {
    let p = party.index() as u64;
    let prev = party.prev().index() as u64;
    let only_p0 = u64::from(p == 0);
    let only_p1 = u64::from(p == 1);
    CommStats {
        bytes_sent: PeerCounts {
            next: 10 + 100 * (p + 1) + 15 + 7 * only_p0,
            prev: 3 + 16,
        },
        bytes_received: PeerCounts {
            next: 3 + 16,
            prev: 10 + 100 * (prev + 1) + 15 + 7 * only_p1,
        },
        messages_sent: PeerCounts {
            next: 1 + 1 + 3 + only_p0,
            prev: 1 + 1 + 1,
        },
        messages_received: PeerCounts {
            next: 1 + 1 + 1,
            prev: 1 + 1 + 3 + only_p1,
        },
        rounds: 5 + only_p1,
    }
}

/// A deterministic pattern of `len` bytes, different per `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A listener on a free loopback port.
pub fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")
}

/// The `host:port` a listener is bound to.
pub fn addr(l: &TcpListener) -> String {
    l.local_addr().expect("local addr").to_string()
}

/// Short timeouts for tests.
pub fn test_link() -> LinkConfig {
    LinkConfig {
        connect_timeout: Duration::from_secs(5),
        recv_timeout: Some(Duration::from_secs(20)),
        ..LinkConfig::default()
    }
}

/// [`test_link`] with the receive timeout `timeout`.
pub fn link_with_recv_timeout(timeout: Duration) -> LinkConfig {
    LinkConfig {
        recv_timeout: Some(timeout),
        ..test_link()
    }
}

/// Asserts that less than `limit` has passed since `start`.
pub fn assert_sooner_than(start: Instant, limit: Duration) {
    let elapsed = start.elapsed();
    assert!(elapsed < limit, "took {elapsed:?}, limit {limit:?}");
}

/// The three parties at the addresses of `listeners`, over `link`.
pub fn network_of(listeners: &[TcpListener; 3], link: LinkConfig) -> NetworkConfig {
    NetworkConfig {
        addresses: listeners.each_ref().map(addr),
        link,
    }
}

/// Party `i` of `network` on its own thread: after `delay`, it connects with `tls` on
/// `listener`, then sends `[i]` to its prev while receiving from its next. The thread gives
/// what it received and how long its setup took.
pub fn connect_and_exchange(
    i: usize,
    tls: TlsConfig,
    listener: TcpListener,
    network: &NetworkConfig,
    delay: Duration,
) -> thread::JoinHandle<Result<(Vec<u8>, Duration), TransportError>> {
    let network = network.clone();
    thread::spawn(move || {
        thread::sleep(delay);
        let party = PartyId::new(i).unwrap();
        let start = Instant::now();
        let mut t = TcpTransport::connect_with_listener(party, listener, &network, &tls)?;
        let took = start.elapsed();
        t.exchange(Peer::Prev, &[i as u8], Peer::Next)
            .map(|got| (got, took))
    })
}

/// Connects three TLS parties with the given configurations on loopback, each on its own
/// thread; returns each party's result and how long it took.
pub fn tls_three(
    configs: [TlsConfig; 3],
    link: LinkConfig,
) -> [(Result<TcpTransport, TransportError>, Duration); 3] {
    let listeners = [bind(), bind(), bind()];
    let network = network_of(&listeners, link);
    let mut configs = configs.into_iter();
    let mut listeners = listeners.into_iter();
    let jobs: Vec<_> = PartyId::ALL
        .into_iter()
        .map(|party| {
            let tls = configs.next().unwrap();
            let listener = listeners.next().unwrap();
            let network = network.clone();
            thread::spawn(move || {
                let start = Instant::now();
                let r = TcpTransport::connect_with_listener(party, listener, &network, &tls);
                (r, start.elapsed())
            })
        })
        .collect();
    let mut out = jobs
        .into_iter()
        .map(|j| j.join().expect("setup thread panicked"));
    [
        out.next().unwrap(),
        out.next().unwrap(),
        out.next().unwrap(),
    ]
}

/// Runs `f` on each transport on its own thread and returns the results in party order.
pub fn on_threads<T: Send + 'static>(
    transports: [TcpTransport; 3],
    f: impl Fn(&mut TcpTransport) -> T + Send + Sync + Copy + 'static,
) -> [T; 3] {
    let handles = transports.map(|mut t| thread::spawn(move || f(&mut t)));
    handles.map(|h| h.join().expect("party thread panicked"))
}

/// The 8-byte setup hello of the plaintext and TLS modes (wire version 2).
pub fn hello(from: u8, to: u8, ack: bool) -> [u8; 8] {
    [b'C', b'G', b'T', 2, from, to, u8::from(ack), 0]
}

/// Frame kinds on the wire (the top byte of a frame header).
pub const DATA: u8 = 0;
/// The last frame of a message.
pub const DATA_END: u8 = 1;
/// A heartbeat.
pub const HEARTBEAT: u8 = 2;
/// A goodbye.
pub const GOODBYE: u8 = 3;
/// An abort: the culprit byte and a failure code, nothing else.
pub const ABORT: u8 = 4;

/// A frame header: the payload length in the low 56 bits, the kind in the top byte.
pub fn frame_header(kind: u8, len: u64) -> [u8; 8] {
    (len | u64::from(kind) << 56).to_le_bytes()
}

/// A whole frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = frame_header(kind, payload.len() as u64).to_vec();
    v.extend_from_slice(payload);
    v
}

/// Reads one frame from a raw socket: its kind and payload.
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let word = u64::from_le_bytes(head);
    let len = (word & ((1 << 56) - 1)) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload)?;
    Ok(((word >> 56) as u8, payload))
}

/// Reads frames from a raw socket, skipping heartbeats, until a message is complete or a
/// control frame (goodbye, abort) arrives; returns the last kind and the payload.
pub fn read_message(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut message = Vec::new();
    loop {
        let (kind, payload) = read_frame(s)?;
        match kind {
            HEARTBEAT => {}
            DATA => message.extend(payload),
            DATA_END => {
                message.extend(payload);
                return Ok((DATA_END, message));
            }
            other => return Ok((other, payload)),
        }
    }
}

/// P0 over insecure plaintext TCP, with raw sockets playing P1 (which P0 dials) and P2
/// (which dials P0). Returns P0's transport, the raw P1 socket and the raw P2 socket.
pub fn insecure_p0_with_raw_neighbours(link: LinkConfig) -> (TcpTransport, TcpStream, TcpStream) {
    let l0 = bind();
    let l1 = bind();
    let a0 = addr(&l0);
    let network = NetworkConfig {
        addresses: [a0.clone(), addr(&l1), "127.0.0.1:9".to_string()],
        link,
    };
    let p0 = thread::spawn(move || {
        TcpTransport::connect_insecure_plaintext_for_testing_only(PartyId::P0, l0, &network)
    });

    // Raw P2 dials P0 and says hello.
    let mut raw_p2 = TcpStream::connect(&a0).expect("dial P0");
    raw_p2
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw_p2.write_all(&hello(2, 0, false)).unwrap();
    let mut buf = [0u8; 8];
    raw_p2.read_exact(&mut buf).unwrap();
    assert_eq!(buf, hello(0, 2, true));

    // Raw P1 accepts P0's dial and answers its hello.
    l1.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut raw_p1 = loop {
        match l1.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("P0 never dialed: {e}"),
        }
    };
    raw_p1.set_nonblocking(false).unwrap();
    raw_p1
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    raw_p1.read_exact(&mut buf).unwrap();
    assert_eq!(buf, hello(0, 1, false));
    raw_p1.write_all(&hello(1, 0, true)).unwrap();

    let t = p0
        .join()
        .expect("P0 setup panicked")
        .expect("P0 setup failed");
    (t, raw_p1, raw_p2)
}
