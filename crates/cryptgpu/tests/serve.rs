//! The inference service end to end on loopback: three servers (threads of this process,
//! each the `Server` a host runs, over mutual TLS) and clients over their own TLS
//! connections. Answers equal the plaintext model's; a malformed, inconsistent or abandoned
//! query fails alone; a server that stops makes the others answer `unavailable`, and when
//! it is back they set up again and serve on, without a restart of the others.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use cryptgpu::config::ClientSetup;
use cryptgpu::device::Device;
use cryptgpu::nn::plain;
use cryptgpu::serve::client::{Client, ServiceError};
use cryptgpu::serve::load::{TempDeployment, wait_until_serving};
use cryptgpu::serve::wire::{
    Answer, ClientMessage, ErrorKind, ServerMessage, WIRE_VERSION, read_header, write_header,
    write_words,
};
use cryptgpu::transport::PartyId;
use cryptgpu::transport::rustls::pki_types::ServerName;
use cryptgpu::transport::rustls::{ClientConnection, StreamOwned};

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A raw TLS connection to server `i` as client `name` (which must be in the
/// certificate `setup` carries), after its hello.
fn raw(setup: &ClientSetup, i: usize, name: &str) -> (Tls, ServerMessage) {
    let stream = TcpStream::connect(&setup.servers[i]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let server = ServerName::try_from(setup.identities[i].clone()).unwrap();
    let mut tls = StreamOwned::new(
        ClientConnection::new(setup.tls.clone(), server).unwrap(),
        stream,
    );
    write_header(
        &mut tls,
        &ClientMessage::Hello {
            client: name.into(),
            version: WIRE_VERSION,
        },
    )
    .unwrap();
    tls.flush().unwrap();
    let answer = read_header(&mut tls).unwrap();
    (tls, answer)
}

fn kind_of(e: &anyhow::Error) -> Option<ErrorKind> {
    e.downcast_ref::<ServiceError>().map(|s| s.kind)
}

#[test]
fn a_service_answers_clients_survives_bad_queries_and_a_server_restart() {
    let model = cryptgpu::demo::lenet().unwrap();
    let digits = cryptgpu::demo::mnist_sample().unwrap().truncate(24);
    let (images, _) = digits.range(0, digits.len()).unwrap();
    let expected = plain::classify(&model, &images).unwrap();
    let logits = plain::predict(&model, &images).unwrap();
    let d = digits.example_len();
    let x: Vec<f64> = digits.images.iter().map(|&v| f64::from(v)).collect();

    let deployment = TempDeployment::new(4, 16, Duration::from_millis(5)).unwrap();
    // Queries that never run time out in 3 s here (30 s by default).
    deployment
        .set_serve_option("query_timeout_secs", "3")
        .unwrap();
    let start = |me| {
        deployment
            .start_server(me, &model, None, Device::Cpu)
            .unwrap()
    };
    let mut servers: Vec<_> = PartyId::ALL.iter().map(|&me| start(me)).collect();
    wait_until_serving(
        &servers.iter().collect::<Vec<_>>(),
        Duration::from_secs(120),
    )
    .unwrap();

    // Four clients at once, one digit per query: every class is the plaintext model's.
    let x = Arc::new(x);
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let setup = deployment.client(k).unwrap();
            let x = x.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&setup).unwrap();
                (0..6)
                    .map(|j| {
                        let i = 6 * k + j;
                        let a = client
                            .query(&x[i * d..(i + 1) * d], 1, Answer::Class)
                            .unwrap();
                        (i, a.classes()[0])
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for (i, class) in t.join().unwrap() {
            assert_eq!(class, expected[i], "digit {i}");
        }
    }
    let counted = servers[0].counters();
    assert_eq!(counted.queries, 24);
    assert!(counted.batches <= 24);

    // Logits and probabilities of three digits in one query.
    let setup = deployment.client(0).unwrap();
    let mut client = Client::connect(&setup).unwrap();
    let a = client.query(&x[..3 * d], 3, Answer::Logits).unwrap();
    assert_eq!(a.width, 10);
    for (got, want) in a.values.iter().zip(logits.data()) {
        assert!((got - want).abs() < 0.05, "logit {got} vs {want}");
    }
    let p = client.query(&x[..3 * d], 3, Answer::Probabilities).unwrap();
    assert_eq!(p.classes(), expected[..3]);
    for row in p.values.chunks(10) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 0.02);
    }
    // Too many examples for a query: refused here, before anything is sent.
    assert!(client.query(&x[..17 * d], 17, Answer::Class).is_err());

    // A client that claims another client's name is refused.
    let (_, hello) = raw(&setup, 0, "client1");
    assert!(
        matches!(
            hello,
            ServerMessage::Error {
                kind: ErrorKind::Refused,
                ..
            }
        ),
        "{hello:?}"
    );

    // Shares of the wrong length: that query fails as malformed, the service goes on.
    let (mut tls, hello) = raw(&setup, 1, "client0");
    assert!(matches!(hello, ServerMessage::Service(_)));
    write_header(
        &mut tls,
        &ClientMessage::Query {
            id: "bad1".into(),
            examples: 1,
            answer: Answer::Class,
        },
    )
    .unwrap();
    write_words(&mut tls, &[1, 2, 3]).unwrap();
    tls.flush().unwrap();
    let reply: ServerMessage = read_header(&mut tls).unwrap();
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                kind: ErrorKind::Malformed,
                ..
            }
        ),
        "{reply:?}"
    );

    // A query sent to two servers only, and one that asks the servers for different
    // answers: neither enters a batch; both time out alone.
    let zeros = vec![0u64; 2 * d];
    let mut conns: Vec<Tls> = (0..3).map(|i| raw(&setup, i, "client0").0).collect();
    for (i, tls) in conns.iter_mut().enumerate() {
        let answer = if i == 2 {
            Answer::Logits
        } else {
            Answer::Class
        };
        write_header(
            tls,
            &ClientMessage::Query {
                id: "c0ffee".into(),
                examples: 1,
                answer,
            },
        )
        .unwrap();
        write_words(tls, &zeros).unwrap();
        tls.flush().unwrap();
    }
    let mut abandoned: Vec<Tls> = (0..2).map(|i| raw(&setup, i, "client0").0).collect();
    for tls in &mut abandoned {
        write_header(
            tls,
            &ClientMessage::Query {
                id: "abad0ned".into(),
                examples: 1,
                answer: Answer::Class,
            },
        )
        .unwrap();
        write_words(tls, &zeros).unwrap();
        tls.flush().unwrap();
    }
    drop(abandoned);
    // Meanwhile another query runs.
    let a = client.query(&x[..d], 1, Answer::Class).unwrap();
    assert_eq!(a.classes(), [expected[0]]);
    for tls in &mut conns {
        let reply: ServerMessage = read_header(tls).unwrap();
        assert!(
            matches!(
                reply,
                ServerMessage::Error {
                    kind: ErrorKind::Timeout,
                    ..
                }
            ),
            "{reply:?}"
        );
    }

    // P2 stops: the others refuse with `unavailable` until it is back, then serve again.
    let p2 = servers.pop().unwrap();
    p2.stop().unwrap();
    let refused = loop {
        match Client::connect(&setup).and_then(|mut c| c.query(&x[..d], 1, Answer::Class)) {
            Ok(_) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            kind_of(&refused),
            Some(ErrorKind::Unavailable | ErrorKind::ShuttingDown)
        ) || refused.to_string().contains("cannot connect"),
        "{refused:#}"
    );
    servers.push(start(PartyId::P2));
    wait_until_serving(
        &servers.iter().collect::<Vec<_>>(),
        Duration::from_secs(120),
    )
    .unwrap();
    let mut client = Client::connect(&setup).unwrap();
    let a = client.query(&x[..4 * d], 4, Answer::Class).unwrap();
    assert_eq!(a.classes(), expected[..4]);
    assert!(servers[0].counters().sessions >= 2);
    for s in servers {
        s.stop().unwrap();
    }
}

/// The load test at a small size, with its faults (CI runs it): every query is answered
/// right or refused with a named error; none is lost, and nothing stays queued.
#[test]
fn a_small_load_test_with_faults_loses_no_query() {
    use cryptgpu::serve::load::{LoadOptions, run_load};
    let report = run_load(&LoadOptions {
        model: cryptgpu::demo::lenet().unwrap(),
        data: None,
        clients: vec![1, 4],
        queries_per_client: 12,
        max_batch: 8,
        batch_wait: Duration::from_millis(5),
        link: None,
        device: Device::Cpu,
        compare_batch: 0,
        progress: true,
        chaos: true,
    })
    .unwrap();
    assert_eq!(report.rows.len(), 2);
    for row in &report.rows {
        assert_eq!(row.wrong, 0, "{row:?}");
        assert_eq!(
            row.answered + row.errors.len() + row.abandoned + row.malformed[0],
            row.queries,
            "{row:?}"
        );
        assert_eq!(row.restarts, 1);
        assert_eq!(row.left_queued, 0, "{row:?}");
        assert!(row.answered > 0);
        for e in &row.errors {
            assert!(
                e.contains("unavailable") || e.contains("shutting down") || e.contains("connect"),
                "an error other than the restart's: {e}"
            );
        }
    }
    assert!(report.table().contains("server restart"));
}

/// The logits the service gives client `setup` for `images` (`n` examples), once it serves.
fn served_logits(setup: &ClientSetup, images: &[f64], n: usize) -> anyhow::Result<Vec<f64>> {
    let mut client = Client::connect(setup)?;
    Ok(client.query(images, n, Answer::Logits)?.values)
}

fn close(got: &[f64], want: &[f64]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 0.05)
}

/// A model owner who runs no server (`[serve] model_client`): the servers wait for its
/// upload, serve the shares it sent, refuse an upload from anyone else or of the wrong form,
/// switch to a new upload without a restart, and a restarted server serves its stored
/// shares again without a new upload.
#[test]
fn a_client_uploads_the_model_and_a_restarted_server_serves_it_from_its_store() {
    use cryptgpu::serve::shares::NumberFormat;
    use cryptgpu::serve::upload::upload_model;

    let model = cryptgpu::demo::lenet().unwrap();
    // A second model of the same architecture: the last layer's weights negated.
    let mut flipped = model.clone();
    let last = format!("{}.", model.nodes()[model.logits()].name);
    for (name, t) in flipped.params.iter_mut() {
        if name.starts_with(&last) {
            t.data_mut().iter_mut().for_each(|v| *v = -*v);
        }
    }
    let digits = cryptgpu::demo::mnist_sample().unwrap().truncate(4);
    let (images, _) = digits.range(0, digits.len()).unwrap();
    let want = plain::predict(&model, &images).unwrap().data().to_vec();
    let want_flipped = plain::predict(&flipped, &images).unwrap().data().to_vec();
    assert!(!close(&want, &want_flipped), "the two models must differ");
    let x: Vec<f64> = digits.images.iter().map(|&v| f64::from(v)).collect();

    let deployment = TempDeployment::new(2, 16, Duration::from_millis(5)).unwrap();
    deployment
        .set_serve_option("model_client", "\"client0\"")
        .unwrap();
    // Scores make a model easier to extract: this service reveals no probabilities.
    deployment
        .set_serve_option("answers", "[\"class\", \"logits\"]")
        .unwrap();
    let store = |me: PartyId| deployment.dir.join(format!("store-{me}"));
    let start = |me: PartyId| {
        deployment
            .start_server_for_upload(me, Some(store(me)), Device::Cpu)
            .unwrap()
    };
    let mut servers: Vec<_> = PartyId::ALL.iter().map(|&me| start(me)).collect();
    let owner = deployment.client(0).unwrap();
    let user = deployment.client(1).unwrap();

    // No model yet: a client is told the service waits for it.
    let waiting = loop {
        match Client::connect(&user) {
            Err(e) if e.to_string().contains("waits for the model") => break e,
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    assert_eq!(
        kind_of(&waiting),
        Some(ErrorKind::Unavailable),
        "{waiting:#}"
    );

    // Only the model owner's client may upload.
    let refused = upload_model(&user, &model, NumberFormat::default()).unwrap_err();
    assert_eq!(kind_of(&refused), Some(ErrorKind::Refused), "{refused:#}");
    // An upload whose form does not fit its architecture is refused as malformed.
    let mut tls = cryptgpu::serve::client::open_server(&owner, 2).unwrap();
    let architecture = b"{\"name\": 3}".to_vec();
    write_header(
        &mut tls,
        &ClientMessage::Upload {
            client: "client0".into(),
            version: WIRE_VERSION,
            id: "aa".into(),
            architecture_bytes: architecture.len(),
            tensors: 1,
            frac_bits: 16,
            truncation: None,
            comparison_bits: None,
        },
    )
    .unwrap();
    cryptgpu::serve::wire::write_frame(&mut tls, &architecture).unwrap();
    tls.flush().unwrap();
    let reply: ServerMessage = read_header(&mut tls).unwrap();
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                kind: ErrorKind::Malformed,
                ..
            }
        ),
        "{reply:?}"
    );

    // The owner uploads: the three serve its shares, and no server held the model.
    let report = upload_model(&owner, &model, NumberFormat::default()).unwrap();
    assert!(report.elements > 40_000, "{report:?}");
    wait_until_serving(
        &servers.iter().collect::<Vec<_>>(),
        Duration::from_secs(120),
    )
    .unwrap();
    let got = served_logits(&user, &x, 4).unwrap();
    assert!(close(&got, &want), "{got:?} vs {want:?}");
    // Probabilities are refused: by the client library before anything is sent, and by a
    // server to a client that asks all the same.
    let mut client = Client::connect(&user).unwrap();
    assert_eq!(
        client.description().answers,
        [Answer::Class, Answer::Logits]
    );
    let e = client
        .query(&x[..784], 1, Answer::Probabilities)
        .unwrap_err();
    assert!(
        e.to_string().contains("reveals only class, logits"),
        "{e:#}"
    );
    let (mut tls, _) = raw(&user, 1, "client1");
    write_header(
        &mut tls,
        &ClientMessage::Query {
            id: "beef".into(),
            examples: 1,
            answer: Answer::Probabilities,
        },
    )
    .unwrap();
    write_words(&mut tls, &vec![0u64; 2 * 784]).unwrap();
    tls.flush().unwrap();
    let reply: ServerMessage = read_header(&mut tls).unwrap();
    assert!(
        matches!(
            &reply,
            ServerMessage::Error {
                kind: ErrorKind::Malformed,
                message,
                ..
            } if message.contains("reveals only class, logits")
        ),
        "{reply:?}"
    );

    // A new upload replaces it between batches, without a restart.
    upload_model(&owner, &flipped, NumberFormat::default()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match served_logits(&user, &x, 4) {
            Ok(got) if close(&got, &want_flipped) => break,
            Ok(got) => assert!(close(&got, &want), "neither model's logits: {got:?}"),
            Err(e) => assert!(matches!(kind_of(&e), Some(ErrorKind::Unavailable)), "{e:#}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new upload was not served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // P1 restarts: it serves its stored shares of the new upload, with no upload again.
    let p1 = servers.remove(1);
    p1.stop().unwrap();
    assert!(
        cryptgpu::serve::upload::ModelSlot::store_file(&store(PartyId::P1), PartyId::P1).exists()
    );
    servers.insert(1, start(PartyId::P1));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let got = loop {
        match served_logits(&user, &x, 4) {
            Ok(got) => break got,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{e:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(close(&got, &want_flipped), "{got:?} vs {want_flipped:?}");
    for s in servers {
        s.stop().unwrap();
    }
}
