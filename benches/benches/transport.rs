//! What a link costs: each of three parties sends a 64 MiB message to its next party and
//! receives one from its previous party, over the in-process channels, plain TCP on loopback
//! and mutual TLS on loopback (ids `net/ring/{local,tcp,tls}`). The throughput criterion
//! prints is bytes sent per party per second; TLS minus TCP is the price of encryption and
//! authentication per GB sent.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use cryptgpu_benches::bench_group;
use cryptgpu_transport::{
    LinkConfig, NetworkConfig, PartyId, Peer, TcpTransport, Transport, run_local_3pc,
    run_tls_loopback_3pc,
};

/// Bytes each party sends per iteration.
const MESSAGE: usize = 64 << 20;

/// `iters` ring shifts of `MESSAGE` bytes; the slowest party's time.
fn shifts<T: Transport + ?Sized>(t: &mut T, iters: u64) -> Duration {
    let msg = vec![t.party().index() as u8; MESSAGE];
    let start = Instant::now();
    for _ in 0..iters {
        t.send_vec(Peer::Next, msg.clone()).expect("send");
        let got = t.recv(Peer::Prev).expect("recv");
        assert_eq!(got.len(), MESSAGE);
    }
    start.elapsed()
}

/// Three parties over plain TCP on loopback (the transport's test-only mode).
fn plain_tcp(iters: u64) -> Duration {
    let listeners: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect::<Vec<_>>();
    let network = NetworkConfig::new([
        addresses[0].clone(),
        addresses[1].clone(),
        addresses[2].clone(),
    ]);
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let network = network.clone();
            thread::spawn(move || {
                let party = PartyId::new(i).expect("party");
                let mut t =
                    TcpTransport::connect_insecure_plaintext_for_testing_only(party, l, &network)
                        .expect("connect");
                shifts(&mut t, iters)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("party"))
        .max()
        .unwrap_or_default()
}

fn links(c: &mut Criterion) {
    let mut group = bench_group(c, "net/ring", Duration::from_secs(8));
    group.throughput(Throughput::Bytes(MESSAGE as u64));
    group.bench_function("local", |b| {
        b.iter_custom(|iters| {
            let times = run_local_3pc(|t| shifts(t, iters)).expect("local");
            times.into_iter().max().unwrap_or_default()
        })
    });
    group.bench_function("tcp", |b| b.iter_custom(plain_tcp));
    group.bench_function("tls", |b| {
        b.iter_custom(|iters| {
            let times =
                run_tls_loopback_3pc(LinkConfig::default(), |t| shifts(t, iters)).expect("tls");
            times.into_iter().max().unwrap_or_default()
        })
    });
    group.finish();
}

criterion_group!(benches, links);
criterion_main!(benches);
