//! One server's side of its clients: it accepts their mutual-TLS connections (a bounded
//! number, each on its own thread, with timeouts on every read), checks each client's
//! claimed name against its certificate, answers `hello` with the service's public
//! description, and turns each query into a [`Pending`] entry of the queue, then writes back
//! the engine's outcome. A malformed or abandoned query fails alone. The model owner's
//! client, when the model comes from a client, uploads its shares here too.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cryptgpu_transport::rustls::{ServerConfig, ServerConnection, StreamOwned};
use cryptgpu_transport::{PartyId, check_client_name};

use super::queue::{Outcome, Pending, QueryKey, Queue, Status};
use super::upload::{ModelSlot, check_upload, receive_shares};
use super::wire::{
    ClientMessage, ErrorKind, MAX_ARCHITECTURE_BYTES, ServerMessage, WIRE_VERSION, answer_names,
    check_query_id, read_frame, read_header, read_words, write_header, write_words,
};

/// Client connections a server holds at most; more are closed at once.
pub const MAX_CONNECTIONS: usize = 512;

/// How long a client may take to finish the handshake and say hello, and to send a query's
/// shares once it announced them.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may stay idle between queries.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// What the connections of one server share.
pub struct Connections {
    /// This server.
    pub me: PartyId,
    /// TLS for clients (client certificates required).
    pub tls: Arc<ServerConfig>,
    /// The queue.
    pub queue: Arc<Queue>,
    /// How long a query may wait for its answer.
    pub query_timeout: Duration,
    /// Set to stop accepting.
    pub stop: Arc<AtomicBool>,
    /// Whether to log refused connections and failed queries.
    pub log: bool,
    /// Where a model upload goes, if the model comes from a client.
    pub uploads: Option<Uploads>,
}

/// Who may upload the model, and where it goes.
pub struct Uploads {
    /// The model owner's client (`[serve] model_client`).
    pub client: String,
    /// This server's slot.
    pub slot: Arc<ModelSlot>,
}

/// Accepts clients on `listener` until `stop` is set, on a thread of its own.
pub fn spawn(listener: TcpListener, connections: Connections) -> Result<JoinHandle<()>> {
    listener
        .set_nonblocking(true)
        .context("setting the client listener non-blocking")?;
    let shared = Arc::new(connections);
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(format!("{}-clients", shared.me))
        .spawn(move || {
            while !shared.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        if open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                            drop(stream);
                            continue;
                        }
                        open.fetch_add(1, Ordering::SeqCst);
                        let (mine, count) = (shared.clone(), open.clone());
                        let spawned = std::thread::Builder::new()
                            .name(format!("{}-client", shared.me))
                            .spawn(move || {
                                if let Err(e) = serve_connection(&mine, stream)
                                    && mine.log
                                {
                                    eprintln!("{}: a client connection ended: {e:#}", mine.me);
                                }
                                count.fetch_sub(1, Ordering::SeqCst);
                            });
                        if spawned.is_err() {
                            open.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .context("starting the client listener")
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

fn send_error(tls: &mut Tls, id: Option<&str>, kind: ErrorKind, message: String) -> Result<()> {
    write_header(
        tls,
        &ServerMessage::Error {
            id: id.map(str::to_string),
            kind,
            message,
        },
    )?;
    tls.flush()?;
    Ok(())
}

/// A model upload from `client` (checked against its certificate), after its header.
fn take_upload(
    shared: &Connections,
    tls: &mut Tls,
    client: &str,
    header: &ClientMessage,
    architecture: Result<Vec<u8>>,
) -> Result<()> {
    let Some(uploads) = &shared.uploads else {
        send_error(
            tls,
            None,
            ErrorKind::Refused,
            "this service serves a model owned by one of its servers ([serve] model_client is \
             not set); it takes no upload"
                .into(),
        )?;
        bail!("client {client} tried to upload a model; this service takes none");
    };
    if client != uploads.client {
        send_error(
            tls,
            None,
            ErrorKind::Refused,
            format!("only the model owner's client may upload the model, and {client} is not it"),
        )?;
        bail!(
            "client {client} tried to upload a model; only {} may",
            uploads.client
        );
    }
    // Errors are about the upload's form (sizes, the architecture), never a value.
    let malformed = |tls: &mut Tls, e: anyhow::Error| {
        let _ = send_error(
            tls,
            None,
            ErrorKind::Malformed,
            format!("the upload: {e:#}"),
        );
        anyhow::anyhow!("client {client}'s upload: {e:#}")
    };
    let form = match architecture.and_then(|a| check_upload(header, &a)) {
        Ok(form) => form,
        Err(e) => return Err(malformed(tls, e)),
    };
    let ClientMessage::Upload { id, .. } = header else {
        bail!("not an upload");
    };
    write_header(tls, &ServerMessage::UploadReady { id: id.clone() })?;
    tls.flush()?;
    let upload = match receive_shares(tls, form) {
        Ok(u) => u,
        Err(e) => return Err(malformed(tls, e)),
    };
    let id = upload.id.clone();
    let elements: usize = upload.tensors.iter().map(|t| t.own.len()).sum();
    if let Err(e) = uploads.slot.put(upload) {
        let _ = send_error(
            tls,
            None,
            ErrorKind::Unavailable,
            format!("the server could not keep the upload: {e:#}"),
        );
        bail!("keeping client {client}'s upload: {e:#}");
    }
    eprintln!(
        "{}: client {client} uploaded model shares {id} ({elements} elements); the servers \
         serve them once all three hold them",
        shared.me
    );
    write_header(tls, &ServerMessage::Uploaded { id })?;
    tls.flush()?;
    Ok(())
}

/// One client connection: hello, then queries one at a time.
fn serve_connection(shared: &Connections, stream: TcpStream) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HELLO_TIMEOUT))?;
    stream.set_write_timeout(Some(HELLO_TIMEOUT))?;
    let connection = ServerConnection::new(shared.tls.clone()).context("a TLS session")?;
    let mut tls = StreamOwned::new(connection, stream);
    let hello: ClientMessage = read_header(&mut tls).context("reading the client's hello")?;
    // An upload's architecture is read before anything is answered, so that a refusal is
    // read by the client, not lost to a connection reset over unread bytes.
    let architecture = match &hello {
        ClientMessage::Upload {
            architecture_bytes, ..
        } => Some(if *architecture_bytes <= MAX_ARCHITECTURE_BYTES {
            read_frame(&mut tls, *architecture_bytes).context("the upload's architecture")
        } else {
            Err(anyhow::anyhow!(
                "an architecture of {architecture_bytes} bytes; at most {MAX_ARCHITECTURE_BYTES}"
            ))
        }),
        _ => None,
    };
    let (client, version) = match &hello {
        ClientMessage::Hello { client, version }
        | ClientMessage::Upload {
            client, version, ..
        } => (client.clone(), *version),
        ClientMessage::Query { .. } => {
            send_error(
                &mut tls,
                None,
                ErrorKind::Malformed,
                "say hello first".into(),
            )?;
            bail!("a client sent a query before its hello");
        }
    };
    if version != WIRE_VERSION {
        send_error(
            &mut tls,
            None,
            ErrorKind::Refused,
            format!(
                "this server speaks version {WIRE_VERSION} of the service, the client {version}"
            ),
        )?;
        bail!("a client of version {version}");
    }
    let certificate = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .context("a client without a certificate")?
        .clone();
    if check_client_name(&certificate, &client).is_err() {
        send_error(
            &mut tls,
            None,
            ErrorKind::Refused,
            format!("the client certificate is not valid for the name {client:?}"),
        )?;
        bail!("a client claimed the name {client:?}, which its certificate does not carry");
    }
    if let Some(architecture) = architecture {
        return take_upload(shared, &mut tls, &client, &hello, architecture);
    }
    let description = match shared.queue.status() {
        Status::Serving(d) => d,
        Status::Down(why) => {
            send_error(&mut tls, None, ErrorKind::Unavailable, why)?;
            return Ok(());
        }
        Status::Stopping => {
            send_error(
                &mut tls,
                None,
                ErrorKind::ShuttingDown,
                "the server is stopping".into(),
            )?;
            return Ok(());
        }
    };
    write_header(&mut tls, &ServerMessage::Service(description.clone()))?;
    tls.flush()?;
    loop {
        tls.sock.set_read_timeout(Some(IDLE_TIMEOUT))?;
        let message: ClientMessage = match read_header(&mut tls) {
            Ok(m) => m,
            // The client closed the connection, or stayed idle too long.
            Err(_) => return Ok(()),
        };
        tls.sock.set_read_timeout(Some(HELLO_TIMEOUT))?;
        let ClientMessage::Query {
            id,
            examples,
            answer,
        } = message
        else {
            send_error(
                &mut tls,
                None,
                ErrorKind::Malformed,
                "a second hello".into(),
            )?;
            bail!("client {client} said hello twice");
        };
        if let Err(e) = check_query_id(&id) {
            send_error(&mut tls, None, ErrorKind::Malformed, format!("{e}"))?;
            bail!("client {client} sent a malformed query id");
        }
        if examples == 0 || examples > description.max_query_examples {
            send_error(
                &mut tls,
                Some(&id),
                ErrorKind::Malformed,
                format!(
                    "a query carries 1 to {} examples, this one {examples}",
                    description.max_query_examples
                ),
            )?;
            bail!("client {client} sent a query of {examples} examples");
        }
        if !description.answers.contains(&answer) {
            // The connection is sound; only this query is refused, before its shares are
            // read, so they are read and dropped.
            let words = examples * description.example_len();
            read_words(&mut tls, 2 * words)?;
            send_error(
                &mut tls,
                Some(&id),
                ErrorKind::Malformed,
                format!(
                    "this service reveals only {}; ask for one of them",
                    answer_names(&description.answers)
                ),
            )?;
            continue;
        }
        let words = examples * description.example_len();
        let shares = match read_words(&mut tls, 2 * words) {
            Ok(s) => s,
            Err(e) => {
                let _ = send_error(
                    &mut tls,
                    Some(&id),
                    ErrorKind::Malformed,
                    format!("the query's shares: {e}"),
                );
                bail!("client {client}'s query {id}: {e:#}");
            }
        };
        let (own, next) = shares.split_at(words);
        let (reply, outcome) = mpsc::channel();
        let arrived = Instant::now();
        let pending = Pending {
            key: QueryKey {
                client: client.clone(),
                id: id.clone(),
            },
            examples,
            answer,
            own: own.to_vec(),
            next: next.to_vec(),
            arrived,
            reply,
        };
        if let Err((kind, why)) = shared.queue.submit(pending) {
            send_error(&mut tls, Some(&id), kind, why)?;
            continue;
        }
        let message = match outcome.recv_timeout(shared.query_timeout) {
            Ok(Outcome::Done {
                batch,
                batch_examples,
                shape,
                share,
            }) => Ok((
                ServerMessage::Result {
                    id: id.clone(),
                    batch,
                    batch_examples,
                    shape,
                },
                share,
            )),
            Ok(Outcome::Failed(kind, why)) => Err((kind, why)),
            Err(mpsc::RecvTimeoutError::Timeout) => Err((
                ErrorKind::Timeout,
                format!("no answer within {:?}", shared.query_timeout),
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err((
                ErrorKind::Unavailable,
                "the servers stopped serving together while the query ran; retry".into(),
            )),
        };
        match message {
            Ok((header, share)) => {
                write_header(&mut tls, &header)?;
                write_words(&mut tls, &share)?;
                tls.flush()?;
            }
            Err((kind, why)) => send_error(&mut tls, Some(&id), kind, why)?,
        }
    }
}
