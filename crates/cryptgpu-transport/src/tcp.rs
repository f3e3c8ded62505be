//! [`TcpTransport`]: the parties as separate processes (or hosts) over TCP with mutual TLS,
//! and its connection setup.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, Connection, ServerConnection};

use crate::link::{Connected, Hub, Link, STOP_GRACE};
use crate::runner::run_three;
use crate::{
    DEFAULT_MAX_FRAME_LEN, DEFAULT_RECV_TIMEOUT, PartyId, Peer, TlsConfig, Transport,
    TransportError, generate_deployment,
};

/// Default time to wait for the connections to the two neighbours: 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default maximum length of one message: 16 GiB (a 64×64×224×224 activation is 1.6 GB).
pub const DEFAULT_MAX_MESSAGE_LEN: u64 = 16 << 30;

/// Default bound on the received bytes a link queues before its party takes them: 64 MiB.
pub const DEFAULT_QUEUE_LIMIT: usize = 64 << 20;

/// How long one connection attempt may take to finish its TLS handshake and hello.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Connections being handshaken at once while waiting for the previous party; more are
/// closed at once, so strangers cannot make a party hold many sockets and threads.
const MAX_PENDING_HANDSHAKES: usize = 16;

/// The longest pause between two connection attempts to the next party.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Timeouts and limits of a TCP link.
///
/// # What a peer can make a party hold
///
/// Per link: at most [`LinkConfig::queue_limit`] bytes of received data that the party has
/// not asked for yet (the reader stops reading beyond that, and TCP flow control holds the
/// peer back), plus one frame being decoded (at most [`LinkConfig::max_frame_len`] bytes),
/// plus, while the party is receiving a message, that message (at most
/// [`LinkConfig::max_message_len`] bytes). What a party has queued to send is its own data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// How long setup may take: connecting to the next party (retried with backoff until
    /// then), accepting the previous one, and the TLS handshakes. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// The receive timeout T. A `recv` waits at most T for its message and fails with
    /// [`TransportError::Timeout`]; a peer that sends nothing at all for T/2 (each side sends
    /// a heartbeat after T/8 of silence) is declared [`TransportError::Stalled`]. `None`
    /// disables both. Default [`DEFAULT_RECV_TIMEOUT`].
    pub recv_timeout: Option<Duration>,
    /// The longest payload a frame may have, in bytes. Messages are cut into frames of at most
    /// 256 KiB (or this, if smaller), so this bounds memory, not message size. Default
    /// [`DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: u64,
    /// The longest message, in bytes. Default [`DEFAULT_MAX_MESSAGE_LEN`].
    pub max_message_len: u64,
    /// Received bytes a link queues before its party takes them. Default
    /// [`DEFAULT_QUEUE_LIMIT`].
    pub queue_limit: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            recv_timeout: Some(DEFAULT_RECV_TIMEOUT),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            queue_limit: DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// The network of a deployment: the three parties' addresses and the link settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `host:port` of P0, P1 and P2. A party listens on its own address (use
    /// [`TcpTransport::connect_with_listener`] to listen elsewhere, e.g. `0.0.0.0`) and dials
    /// its next party's.
    pub addresses: [String; 3],
    /// Timeouts and limits.
    pub link: LinkConfig,
}

impl NetworkConfig {
    /// A network with these addresses and the default [`LinkConfig`].
    pub fn new(addresses: [String; 3]) -> Self {
        NetworkConfig {
            addresses,
            link: LinkConfig::default(),
        }
    }

    /// This configuration with another [`LinkConfig`].
    pub fn with_link(mut self, link: LinkConfig) -> Self {
        self.link = link;
        self
    }
}

/// One party's end of a three-party network over TCP, normally with mutual TLS.
///
/// # Connection setup
///
/// Each party P_i listens on its own address, connects to its next party P_(i+1) and accepts
/// one connection from its previous party P_(i-1), both at once, so the three parties may
/// start in any order: connecting is retried with backoff until the connect timeout. So P0
/// dials P1, P1 dials P2 and P2 dials P0, and every pair shares exactly one connection.
///
/// With TLS (the default, [`TcpTransport::connect`]) the dialing party is the TLS client and
/// checks that the server's certificate chains to the deployment CA and names the next
/// party's identity; the accepting party is the TLS server, requires a client certificate and
/// checks that it chains to the CA and names the previous party's identity. A connection that
/// fails these checks (or the hello below) is dropped and the party goes on waiting for the
/// right peer until the connect timeout, whose error then says why the last one was refused:
/// a stranger that connects first cannot stop setup. Several connections are handshaken at
/// once (at most 16, each for at most 10 s), so a silent one does not hold up the others.
/// After the handshake the dialer sends an 8-byte hello `b"CGT"`, version 2, its index, the
/// acceptor's index, 0, 0 and the acceptor answers with the same bytes but its own index
/// first and a 1 in the seventh byte, so both sides know the other accepted them.
///
/// # Wire format
///
/// A stream of frames: an 8-byte little-endian header (kind in the top byte, payload length
/// below) and the payload. A message is cut into data frames of at most 256 KiB, so a
/// message of any size up to [`LinkConfig::max_message_len`] crosses a link; between them
/// travel heartbeats, a goodbye when the sender is done, and an abort naming the party to
/// blame when the sender stops the job.
///
/// # Failures
///
/// A peer that dies (its connection ends without a goodbye), stalls (sends nothing, not even
/// a heartbeat, for half the receive timeout), sends garbage or fails TLS makes this party's
/// receives and sends fail with an error naming it, and this party at once sends both
/// neighbours an abort naming it, so the third party stops too, with the same name, even if
/// it was waiting for this one. [`TcpTransport::abort`] and [`AbortHandle`] stop a party on
/// purpose (e.g. on Ctrl-C), blaming itself.
///
/// # Threads
///
/// Each connection has a reader thread that decrypts and reassembles incoming frames into a
/// bounded queue (see [`LinkConfig`]) and a writer thread that sends queued messages, so a
/// send never waits for the peer to receive. Dropping the transport sends what is queued,
/// then a goodbye (or, after a failure, the abort), waiting at most the receive timeout.
#[derive(Debug)]
pub struct TcpTransport {
    party: PartyId,
    next: Link,
    prev: Link,
    hub: Arc<Hub>,
    recv_timeout: Option<Duration>,
    tls: bool,
}

/// Stops a [`TcpTransport`] from any thread, e.g. a Ctrl-C handler: both neighbours receive
/// an abort naming this party and the reason, and this party's own pending and later
/// receives and sends fail with [`TransportError::Stopped`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AbortHandle {
    hub: Arc<Hub>,
}

impl AbortHandle {
    /// Stops the transport, blaming this party for `reason`, and waits (at most 2 s) for the
    /// aborts to go out. Does nothing more if the transport already failed: its aborts are
    /// already on their way.
    pub fn abort(&self, reason: &str) {
        self.hub.stop(reason);
        self.hub.finish(Some(STOP_GRACE));
    }
}

/// The setup messages.
const HELLO: u8 = 0;
const HELLO_ACK: u8 = 1;
/// The wire-format version in the hello.
const WIRE_VERSION: u8 = 2;

fn hello(from: PartyId, to: PartyId, kind: u8) -> [u8; 8] {
    [
        b'C',
        b'G',
        b'T',
        WIRE_VERSION,
        from.index() as u8,
        to.index() as u8,
        kind,
        0,
    ]
}

/// How the links are secured during setup.
#[derive(Clone)]
enum Security {
    Tls(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
        Arc<rustls::ServerConfig>,
    ),
    Plaintext,
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// Runs the TLS handshake (if any) and the hello exchange on `stream`.
fn handshake(
    party: PartyId,
    peer: PartyId,
    mut stream: TcpStream,
    mut tls: Option<Connection>,
    dialer: bool,
    deadline: Instant,
) -> Result<Connected, TransportError> {
    let left = remaining(deadline).ok_or(TransportError::Timeout {
        peer,
        after: HANDSHAKE_LIMIT,
    })?;
    let io_err = |e| TransportError::from_io(peer, e, Some(left));
    stream.set_nodelay(true).map_err(io_err)?;
    stream.set_read_timeout(Some(left)).map_err(io_err)?;
    stream.set_write_timeout(Some(left)).map_err(io_err)?;

    if let Some(conn) = &mut tls {
        while conn.is_handshaking() {
            conn.complete_io(&mut stream).map_err(io_err)?;
        }
    }
    let mut reply = [0u8; 8];
    if dialer {
        setup_write(&mut stream, tls.as_mut(), &hello(party, peer, HELLO)).map_err(io_err)?;
        setup_read(&mut stream, tls.as_mut(), &mut reply).map_err(io_err)?;
        if reply != hello(peer, party, HELLO_ACK) {
            return Err(TransportError::Handshake {
                peer,
                reason: format!("expected the hello answer of {peer} to {party}, got {reply:?}"),
            });
        }
    } else {
        setup_read(&mut stream, tls.as_mut(), &mut reply).map_err(io_err)?;
        if reply != hello(peer, party, HELLO) {
            return Err(TransportError::Handshake {
                peer,
                reason: format!("expected the hello of {peer} to {party}, got {reply:?}"),
            });
        }
        setup_write(&mut stream, tls.as_mut(), &hello(party, peer, HELLO_ACK)).map_err(io_err)?;
    }
    Ok(Connected { stream, tls })
}

/// Writes `data` during setup, through TLS if there is a connection.
fn setup_write(
    stream: &mut TcpStream,
    tls: Option<&mut Connection>,
    data: &[u8],
) -> io::Result<()> {
    match tls {
        None => stream.write_all(data),
        Some(conn) => {
            conn.writer().write_all(data)?;
            while conn.wants_write() {
                conn.write_tls(stream)?;
            }
            Ok(())
        }
    }
}

/// Reads exactly `buf.len()` bytes during setup, through TLS if there is a connection. TLS
/// errors (such as the peer's alert refusing our certificate) come back inside the
/// `io::Error`.
fn setup_read(
    stream: &mut TcpStream,
    tls: Option<&mut Connection>,
    buf: &mut [u8],
) -> io::Result<()> {
    let Some(conn) = tls else {
        return stream.read_exact(buf);
    };
    let mut filled = 0;
    while filled < buf.len() {
        match conn.reader().read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if conn.read_tls(stream)? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                if let Err(e) = conn.process_new_packets() {
                    // Tell the peer why, best effort.
                    let _ = conn.write_tls(stream);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens one TCP connection to `addr`, trying each address it resolves to.
fn connect_once(addr: &str, left: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("resolving {addr}: {e}"))?
        .collect();
    let mut last_error = format!("{addr} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, left.min(Duration::from_secs(2))) {
            Ok(s) => return Ok(s),
            Err(e) => last_error = format!("{a}: {e}"),
        }
    }
    Err(last_error)
}

/// Dials the next party until a connection passes the handshake or the deadline passes.
fn dial(
    party: PartyId,
    addr: &str,
    security: &Security,
    deadline: Instant,
    after: Duration,
) -> Result<Connected, TransportError> {
    let peer = party.next();
    let mut last_error = String::from("no attempt finished");
    let mut backoff = Duration::from_millis(25);
    loop {
        let Some(left) = remaining(deadline) else {
            return Err(TransportError::ConnectTimeout {
                peer,
                addr: addr.to_string(),
                after,
                last_error,
            });
        };
        match connect_once(addr, left) {
            Ok(stream) => {
                let tls = match security {
                    Security::Tls(client, name, _) => Some(Connection::Client(
                        ClientConnection::new(client.clone(), name.clone())
                            .map_err(|source| TransportError::Tls { peer, source })?,
                    )),
                    Security::Plaintext => None,
                };
                let attempt_deadline = deadline.min(Instant::now() + HANDSHAKE_LIMIT);
                match handshake(party, peer, stream, tls, true, attempt_deadline) {
                    Ok(connected) => return Ok(connected),
                    Err(e) => last_error = e.to_string(),
                }
            }
            Err(e) => last_error = e,
        }
        thread::sleep(backoff.min(remaining(deadline).unwrap_or_default()));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Accepts connections until one is the previous party (it passes the TLS checks and the
/// hello) or the deadline passes. Each connection is handshaken on its own thread.
fn accept(
    party: PartyId,
    listener: &TcpListener,
    security: &Security,
    deadline: Instant,
    after: Duration,
) -> Result<Connected, TransportError> {
    let peer = party.prev();
    let local = |context: &str, source| TransportError::LocalIo {
        context: context.to_string(),
        source,
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| local("making the listener non-blocking", e))?;
    let (tx, rx) = mpsc::channel::<Result<Connected, TransportError>>();
    let pending = Arc::new(AtomicUsize::new(0));
    let mut last_refused: Option<String> = None;
    loop {
        // Results of the handshakes in flight.
        loop {
            match rx.try_recv() {
                Ok(Ok(connected)) => return Ok(connected),
                Ok(Err(e)) => last_refused = Some(e.to_string()),
                Err(_) => break,
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                if pending.load(Ordering::SeqCst) >= MAX_PENDING_HANDSHAKES {
                    continue; // dropped: too many connections at once
                }
                if let Err(e) = stream.set_nonblocking(false) {
                    last_refused = Some(e.to_string());
                    continue;
                }
                let tls = match security {
                    Security::Tls(_, _, server) => Some(Connection::Server(
                        ServerConnection::new(server.clone())
                            .map_err(|source| TransportError::Tls { peer, source })?,
                    )),
                    Security::Plaintext => None,
                };
                let attempt_deadline = deadline.min(Instant::now() + HANDSHAKE_LIMIT);
                let (tx, pending) = (tx.clone(), pending.clone());
                pending.fetch_add(1, Ordering::SeqCst);
                let spawned = thread::Builder::new()
                    .name(format!("cryptgpu-{party}-handshake"))
                    .spawn(move || {
                        let result = handshake(party, peer, stream, tls, false, attempt_deadline);
                        pending.fetch_sub(1, Ordering::SeqCst);
                        let _ = tx.send(result);
                    });
                if let Err(e) = spawned {
                    return Err(local("spawning a handshake thread", e));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                if remaining(deadline).is_none() {
                    return Err(TransportError::AcceptTimeout {
                        peer,
                        after,
                        last_refused,
                    });
                }
                match rx.recv_timeout(Duration::from_millis(10)) {
                    Ok(Ok(connected)) => return Ok(connected),
                    Ok(Err(e)) => last_refused = Some(e.to_string()),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
                }
            }
            Err(e) => return Err(local("accepting a connection", e)),
        }
    }
}

impl TcpTransport {
    /// Connects `party` to its neighbours over mutual TLS, listening on its own address from
    /// `network`.
    ///
    /// # Errors
    /// [`TransportError::LocalIo`] if the address cannot be bound, else as
    /// [`TcpTransport::connect_with_listener`].
    pub fn connect(
        party: PartyId,
        network: &NetworkConfig,
        tls: &TlsConfig,
    ) -> Result<Self, TransportError> {
        let listener = bind(&network.addresses[party.index()])?;
        Self::connect_with_listener(party, listener, network, tls)
    }

    /// Connects `party` to its neighbours over mutual TLS, accepting the previous party on
    /// `listener` (bound by the caller, e.g. to `127.0.0.1:0` in tests or `0.0.0.0` behind
    /// NAT) and dialing the next party at its address in `network`.
    ///
    /// # Errors
    /// [`TransportError::ConnectTimeout`] / [`TransportError::AcceptTimeout`] if a neighbour
    /// does not show up, or only connections that fail the checks do, within the connect
    /// timeout (the error says why the last one failed), [`TransportError::Credentials`] for
    /// unusable credentials, and local I/O errors.
    pub fn connect_with_listener(
        party: PartyId,
        listener: TcpListener,
        network: &NetworkConfig,
        tls: &TlsConfig,
    ) -> Result<Self, TransportError> {
        let security = Security::Tls(
            tls.client_config()?,
            tls.server_name(party.next())?,
            tls.server_config(party)?,
        );
        Self::establish(party, listener, network, security)
    }

    /// **Insecure: no encryption, no authentication. For tests only.** Connects like
    /// [`TcpTransport::connect_with_listener`] but over plain TCP: anyone on the network can
    /// read and forge every message, and any process that sends the right 8-byte hello is
    /// taken for the previous party. Never use it with real data.
    ///
    /// # Errors
    /// As [`TcpTransport::connect_with_listener`], less the TLS errors.
    pub fn connect_insecure_plaintext_for_testing_only(
        party: PartyId,
        listener: TcpListener,
        network: &NetworkConfig,
    ) -> Result<Self, TransportError> {
        Self::establish(party, listener, network, Security::Plaintext)
    }

    fn establish(
        party: PartyId,
        listener: TcpListener,
        network: &NetworkConfig,
        security: Security,
    ) -> Result<Self, TransportError> {
        let link = network.link;
        if link.max_frame_len == 0 || link.queue_limit == 0 {
            return Err(TransportError::Config(
                "the maximum frame length and the queue limit must be at least 1 byte".into(),
            ));
        }
        let after = link.connect_timeout;
        let deadline = Instant::now() + after;
        let next_addr = network.addresses[party.next().index()].clone();

        // Dial and accept at once, each on its own thread, so that three parties that all
        // dial first cannot block one another; return as soon as either side fails. A side
        // still running after a failure ends by itself at the deadline.
        let (tx, rx) = mpsc::channel::<(Peer, Result<Connected, TransportError>)>();
        let spawn = |name: String,
                     job: Box<dyn FnOnce() -> Result<Connected, TransportError> + Send>,
                     peer: Peer| {
            let tx = tx.clone();
            thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let _ = tx.send((peer, job()));
                })
                .map(|_| ())
                .map_err(|source| TransportError::LocalIo {
                    context: "spawning a setup thread".to_string(),
                    source,
                })
        };
        let dial_security = security.clone();
        spawn(
            format!("cryptgpu-{party}-dial"),
            Box::new(move || dial(party, &next_addr, &dial_security, deadline, after)),
            Peer::Next,
        )?;
        let accept_security = security.clone();
        spawn(
            format!("cryptgpu-{party}-accept"),
            Box::new(move || accept(party, &listener, &accept_security, deadline, after)),
            Peer::Prev,
        )?;
        drop(tx);

        let (mut next, mut prev) = (None, None);
        while next.is_none() || prev.is_none() {
            // Both jobs end by the deadline; the margin covers a handshake step that started
            // just before it.
            let wait = remaining(deadline).unwrap_or_default() + Duration::from_secs(5);
            match rx.recv_timeout(wait) {
                Ok((_, Err(e))) => return Err(e),
                Ok((Peer::Next, Ok(c))) => next = Some(c),
                Ok((Peer::Prev, Ok(c))) => prev = Some(c),
                Err(_) => {
                    let peer = if next.is_none() {
                        party.next()
                    } else {
                        party.prev()
                    };
                    return Err(TransportError::Timeout { peer, after });
                }
            }
        }
        let (Some(next), Some(prev)) = (next, prev) else {
            return Err(TransportError::Config(
                "setup ended without both links".to_string(),
            ));
        };
        let tls = next.tls.is_some();
        let hub = Hub::new(party);
        Ok(TcpTransport {
            party,
            next: Link::start(&hub, 0, next, &link)?,
            prev: Link::start(&hub, 1, prev, &link)?,
            hub,
            recv_timeout: link.recv_timeout,
            tls,
        })
    }

    /// The receive timeout in force.
    pub fn recv_timeout(&self) -> Option<Duration> {
        self.recv_timeout
    }

    /// Changes how long a receive waits for its message (`None`: as long as the peer is
    /// alive). Stall detection keeps the setting the transport was connected with.
    pub fn set_recv_timeout(&mut self, recv_timeout: Option<Duration>) {
        self.recv_timeout = recv_timeout;
    }

    /// Whether the links are protected by TLS (false only for the insecure test constructor).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Stops this party: both neighbours receive an abort naming it and `reason` (at the next
    /// frame boundary), and later receives and sends fail with
    /// [`TransportError::Stopped`]. Waits at most 2 s for the aborts to go out. Call it when
    /// a job fails for a reason of its own (a bad file, a refused manifest); failures of the
    /// transport itself are passed on without it.
    pub fn abort(&self, reason: &str) {
        AbortHandle {
            hub: self.hub.clone(),
        }
        .abort(reason);
    }

    /// A handle that stops this transport from another thread (e.g. a signal handler).
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            hub: self.hub.clone(),
        }
    }

    fn link(&mut self, peer: Peer) -> &mut Link {
        match peer {
            Peer::Next => &mut self.next,
            Peer::Prev => &mut self.prev,
        }
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        if self.hub.failed() {
            self.hub.finish(Some(STOP_GRACE));
        } else if thread::panicking() {
            self.hub.stop(&format!("{} panicked", self.party));
            self.hub.finish(Some(STOP_GRACE));
        } else {
            self.next.say_goodbye();
            self.prev.say_goodbye();
            self.hub.finish(self.recv_timeout);
        }
    }
}

fn bind(addr: &str) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr).map_err(|source| TransportError::LocalIo {
        context: format!("listening on {addr}"),
        source,
    })
}

impl Transport for TcpTransport {
    fn party(&self) -> PartyId {
        self.party
    }

    fn send(&mut self, peer: Peer, msg: &[u8]) -> Result<(), TransportError> {
        self.link(peer).send(msg.to_vec())
    }

    fn send_vec(&mut self, peer: Peer, msg: Vec<u8>) -> Result<(), TransportError> {
        self.link(peer).send(msg)
    }

    fn recv(&mut self, peer: Peer) -> Result<Vec<u8>, TransportError> {
        let timeout = self.recv_timeout;
        self.link(peer).recv(timeout)
    }
}

/// Runs `f` as P0, P1, P2 on three threads, connected by [`TcpTransport`]s over mutual TLS
/// on loopback with a freshly generated deployment (default identities) and listeners on
/// `127.0.0.1:0`; returns the three results in party order. For tests, demos and benches
/// that want the real network stack.
///
/// # Errors
/// Setup errors, or [`TransportError::PartyPanicked`] as in
/// [`run_local_3pc`](crate::run_local_3pc).
pub fn run_tls_loopback_3pc<T, F>(link: LinkConfig, f: F) -> Result<[T; 3], TransportError>
where
    T: Send,
    F: Fn(&mut TcpTransport) -> T + Sync,
{
    let deployment = generate_deployment(crate::DEFAULT_IDENTITIES)?;
    let mut listeners = Vec::with_capacity(3);
    let mut addresses = Vec::with_capacity(3);
    for _ in 0..3 {
        let listener = bind("127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .map_err(|source| TransportError::LocalIo {
                context: "reading a listener's address".to_string(),
                source,
            })?;
        addresses.push(addr.to_string());
        listeners.push(Mutex::new(Some(listener)));
    }
    let network = NetworkConfig {
        addresses: [
            addresses[0].clone(),
            addresses[1].clone(),
            addresses[2].clone(),
        ],
        link,
    };
    run_three(|party| {
        let listener = match listeners[party.index()].lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        }
        .ok_or_else(|| {
            TransportError::Config(format!("the listener of {party} was already taken"))
        })?;
        let tls = deployment.tls_config(party)?;
        let mut transport = TcpTransport::connect_with_listener(party, listener, &network, &tls)?;
        let out = f(&mut transport);
        drop(transport);
        Ok(out)
    })
}
