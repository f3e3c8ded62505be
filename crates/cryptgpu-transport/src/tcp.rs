//! [`TcpTransport`]: the parties as separate processes (or hosts) over TCP with mutual TLS,
//! and its connection setup.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, Connection, ServerConnection};

use crate::link::{Connected, Hub, Link, STOP_GRACE};
use crate::runner::run_three;
use crate::{
    DEFAULT_MAX_FRAME_LEN, DEFAULT_RECV_TIMEOUT, FailureKind, MAX_FRAME_LEN_LIMIT, PartyId, Peer,
    TlsConfig, Transport, TransportError, generate_deployment,
};

/// Default time to wait for the connections to the two neighbours: 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Default maximum length of one message: 16 GiB (a 64×64×224×224 activation is 1.6 GB).
pub const DEFAULT_MAX_MESSAGE_LEN: u64 = 16 << 30;

/// Default bound on the received bytes a link queues before its party takes them: 64 MiB.
pub const DEFAULT_QUEUE_LIMIT: usize = 64 << 20;

/// How long one connection attempt may take, from the TCP connection to the end of the
/// hello, on either side.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(5);

/// A connection to the listener that sends no byte for this long is closed. A real peer
/// sends its TLS ClientHello at once; the margin covers a lost packet's retransmission.
const FIRST_BYTE_LIMIT: Duration = Duration::from_secs(2);

/// Connections the listener holds in setup at once (accepted, their handshake not yet
/// done). When full, a new connection takes the place of the oldest one that has sent
/// nothing, else of the oldest: a flood cannot keep the previous party out, since its
/// connection is dropped only after this many newer ones, and it finishes in a few round
/// trips. Each holds at most a TLS handshake message (64 KiB) of buffers.
const MAX_PENDING: usize = 128;

/// New connections taken from the listener per turn of the accept loop, before the pending
/// ones are served: enough to empty the kernel's accept queue (128 connections) each turn,
/// so that a flood does not keep the previous party's connection out of it for long.
const ACCEPT_BATCH: usize = 1024;

/// How long the accept loop sleeps between turns in which nothing happened.
const ACCEPT_TICK: Duration = Duration::from_millis(5);

/// Reads of one pending connection per turn of the accept loop.
const READS_PER_TURN: usize = 8;

/// The longest pause between two connection attempts to the next party.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Which connections a party's listener considers during setup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AcceptFrom {
    /// Only connections from an IP address of the previous party's configured address (a
    /// host name is resolved once, when setup starts); any other connection is closed at
    /// once, before any TLS work. The default. When all parties share one host (loopback)
    /// this cannot tell them apart, and the other setup defences hold on their own.
    #[default]
    PeerAddresses,
    /// Connections from any address: for a previous party that reaches this one through NAT
    /// or from another address than its configured one. The TLS checks still decide which
    /// connection is the previous party.
    Any,
}

/// Timeouts and limits of a TCP link.
///
/// # What a peer can make a party hold
///
/// Per link: at most [`LinkConfig::queue_limit`] bytes of received data that the party has
/// not asked for yet (the reader stops reading beyond that, and TCP flow control holds the
/// peer back), plus one frame being decoded (at most [`LinkConfig::max_frame_len`] bytes),
/// plus, while the party is receiving a message, that message (at most
/// [`LinkConfig::max_message_len`] bytes). What a party has queued to send is its own data.
/// During setup, the listener holds at most 128 connections at once, each for at most 5 s
/// (2 s if it sends nothing), with at most a TLS handshake message (64 KiB) of buffers each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// How long setup may take: connecting to the next party (retried with backoff until
    /// then), accepting the previous one, and the TLS handshakes. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// The receive timeout T. A `recv` waits at most T for its message and fails with
    /// [`TransportError::Timeout`]; a peer that sends nothing at all for T/2 (each side sends
    /// a heartbeat after T/8 of silence) is declared [`TransportError::Stalled`]. Both count
    /// only time this process was running, so a party stopped (SIGSTOP) and resumed reads
    /// what arrived meanwhile before it blames a peer. `None` disables both. Default
    /// [`DEFAULT_RECV_TIMEOUT`].
    pub recv_timeout: Option<Duration>,
    /// The longest payload a frame may have, in bytes, from 1 to [`MAX_FRAME_LEN_LIMIT`]
    /// (16 MiB). Messages are cut into frames of at most 256 KiB (or this, if smaller), so
    /// this bounds memory, not message size. Default [`DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: u64,
    /// The longest message, in bytes. Default [`DEFAULT_MAX_MESSAGE_LEN`].
    pub max_message_len: u64,
    /// Received bytes a link queues before its party takes them. Default
    /// [`DEFAULT_QUEUE_LIMIT`].
    pub queue_limit: usize,
    /// Which connections the listener considers during setup. Default
    /// [`AcceptFrom::PeerAddresses`].
    pub accept_from: AcceptFrom,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            recv_timeout: Some(DEFAULT_RECV_TIMEOUT),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            queue_limit: DEFAULT_QUEUE_LIMIT,
            accept_from: AcceptFrom::default(),
        }
    }
}

impl LinkConfig {
    /// Checks the limits: a frame length from 1 byte to [`MAX_FRAME_LEN_LIMIT`] (16 MiB:
    /// data frames are never larger than 256 KiB, and a larger limit would only let a peer
    /// make this party allocate more for one frame) and a queue limit of at least 1 byte.
    /// Setup checks this first.
    ///
    /// # Errors
    /// [`TransportError::Config`] naming the limit that is out of range, and why.
    pub fn validate(&self) -> Result<(), TransportError> {
        if self.max_frame_len == 0 || self.max_frame_len > MAX_FRAME_LEN_LIMIT {
            return Err(TransportError::Config(format!(
                "the maximum frame length is {} bytes: it must be at least 1 and at most \
                 {MAX_FRAME_LEN_LIMIT} (16 MiB), since messages travel in frames of at most \
                 256 KiB and a larger limit only lets a peer make this party allocate more \
                 for one frame",
                self.max_frame_len
            )));
        }
        if self.queue_limit == 0 {
            return Err(TransportError::Config(
                "the queue limit must be at least 1 byte".to_string(),
            ));
        }
        Ok(())
    }
}

/// The network of a deployment: the three parties' addresses and the link settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `host:port` of P0, P1 and P2. A party listens on its own address (use
    /// [`TcpTransport::connect_with_listener`] to listen elsewhere, e.g. `0.0.0.0`), dials
    /// its next party's, and (with [`AcceptFrom::PeerAddresses`]) takes connections only
    /// from the host of its previous party's.
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
/// a stranger that connects first cannot stop setup.
///
/// Nor can many strangers. The listener first closes a connection that does not come from
/// the previous party's configured address ([`AcceptFrom`]), before any TLS work. It then
/// serves every connection it holds from one thread, without waiting on any: a connection
/// silent for 2 s is closed, one whose handshake and hello take more than 5 s is closed,
/// and it holds at most 128 at once, a new one taking the place of the oldest silent one
/// (else the oldest), so idle, slow or garbage connections in any number cost bounded memory
/// and never keep the previous party out: its dial, retried with backoff, gets through.
///
/// After the handshake the dialer sends an 8-byte hello `b"CGT"`, version 2, its index, the
/// acceptor's index, 0, 0 and the acceptor answers with the same bytes but its own index
/// first and a 1 in the seventh byte, so both sides know the other accepted them.
///
/// # Wire format
///
/// A stream of frames: an 8-byte little-endian header (kind in the top byte, payload length
/// below) and the payload. A message is cut into data frames of at most 256 KiB, so a
/// message of any size up to [`LinkConfig::max_message_len`] crosses a link; between them
/// travel heartbeats, a goodbye when the sender is done, and an abort when the sender stops
/// the job: two bytes, the party to blame and a [`FailureKind`], never an error's text.
///
/// # Failures
///
/// A peer that dies (its connection ends without a goodbye), stalls (sends nothing, not even
/// a heartbeat, for half the receive timeout), sends garbage or fails TLS makes this party's
/// receives and sends fail with an error naming it, and this party at once sends both
/// neighbours an abort naming it with the matching link kind ([`FailureKind::ConnectionLost`],
/// [`FailureKind::Stalled`], [`FailureKind::Garbage`], [`FailureKind::TimedOut`]), so the
/// third party stops too, with the same name, even if it was waiting for this one.
/// [`TcpTransport::abort`] and [`AbortHandle`] stop a party on purpose (e.g. on Ctrl-C),
/// blaming itself for a [`FailureKind`] of its own.
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
/// an abort naming this party and a [`FailureKind`], and this party's own pending and later
/// receives and sends fail with [`TransportError::Stopped`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AbortHandle {
    hub: Arc<Hub>,
}

impl AbortHandle {
    /// Stops the transport, blaming this party for a failure of `kind` (all that the
    /// neighbours learn of it: the details stay in this party's own error), and waits (at
    /// most 2 s) for the aborts to go out. Does nothing more if the transport already failed:
    /// its aborts are already on their way.
    pub fn abort(&self, kind: FailureKind) {
        self.hub.stop(kind, kind.describe().to_string());
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

/// Runs the dialer's side of setup on `stream`: the TLS handshake (if any) and the hello.
fn dial_handshake(
    party: PartyId,
    peer: PartyId,
    mut stream: TcpStream,
    mut tls: Option<Connection>,
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
    setup_write(&mut stream, tls.as_mut(), &hello(party, peer, HELLO)).map_err(io_err)?;
    setup_read(&mut stream, tls.as_mut(), &mut reply).map_err(io_err)?;
    if reply != hello(peer, party, HELLO_ACK) {
        return Err(TransportError::Handshake {
            peer,
            reason: format!("expected the hello answer of {peer} to {party}, got {reply:?}"),
        });
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
                match dial_handshake(party, peer, stream, tls, attempt_deadline) {
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

/// The IP addresses `addr` (`host:port`) resolves to, IPv4-mapped IPv6 ones as IPv4.
fn resolve_ips(addr: &str) -> Result<Vec<IpAddr>, TransportError> {
    let ips: Vec<IpAddr> = addr
        .to_socket_addrs()
        .map_err(|e| TransportError::Config(format!("resolving {addr}: {e}")))?
        .map(|a| a.ip().to_canonical())
        .collect();
    if ips.is_empty() {
        return Err(TransportError::Config(format!(
            "{addr} resolves to no address"
        )));
    }
    Ok(ips)
}

/// A connection to the listener in setup: accepted, not yet known to be the previous party.
struct Pending {
    stream: TcpStream,
    /// The TLS server side (`None` in plaintext mode).
    tls: Option<ServerConnection>,
    from: SocketAddr,
    accepted: Instant,
    /// Whether it has sent a byte.
    heard: bool,
    /// The hello, as far as it has arrived.
    hello: [u8; 8],
    filled: usize,
}

/// What a turn of the accept loop did with a pending connection.
enum Turn {
    /// Still in setup; whether anything moved.
    Waiting { progress: bool },
    /// Its hello is the previous party's: answer it.
    Done,
    /// Closed, with why when it is worth reporting.
    Dropped(Option<TransportError>),
}

impl Pending {
    /// Moves the connection's setup on as far as it goes without waiting, and closes it
    /// when it is out of time (`now` is this turn's time).
    fn turn(&mut self, party: PartyId, peer: PartyId, now: Instant) -> Turn {
        let turn = match self.tls.take() {
            Some(mut conn) => {
                let turn = self.turn_tls(&mut conn, party, peer);
                self.tls = Some(conn);
                turn
            }
            None => self.turn_plain(party, peer),
        };
        let age = now.saturating_duration_since(self.accepted);
        match turn {
            Turn::Waiting { .. } if !self.heard && age >= FIRST_BYTE_LIMIT => Turn::Dropped(None),
            Turn::Waiting { .. } if age >= HANDSHAKE_LIMIT => {
                Turn::Dropped(Some(TransportError::Handshake {
                    peer,
                    reason: format!(
                        "a connection from {} did not finish the TLS handshake and hello \
                         within {HANDSHAKE_LIMIT:?}",
                        self.from
                    ),
                }))
            }
            other => other,
        }
    }

    fn turn_tls(&mut self, conn: &mut ServerConnection, party: PartyId, peer: PartyId) -> Turn {
        let mut progress = false;
        let lost = |heard: bool, what: &str| {
            Turn::Dropped(heard.then(|| TransportError::Handshake {
                peer,
                reason: format!("the connection closed {what}"),
            }))
        };
        for _ in 0..READS_PER_TURN {
            match conn.read_tls(&mut self.stream) {
                Ok(0) => return lost(self.heard, "during the TLS handshake"),
                Ok(_) => {
                    self.heard = true;
                    progress = true;
                    if let Err(source) = conn.process_new_packets() {
                        // Tell the peer why, best effort.
                        let _ = conn.write_tls(&mut self.stream);
                        return Turn::Dropped(Some(TransportError::Tls { peer, source }));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Turn::Dropped(
                        self.heard.then(|| TransportError::from_io(peer, e, None)),
                    );
                }
            }
        }
        if let Err(e) = flush_without_waiting(conn, &mut self.stream) {
            return Turn::Dropped(Some(TransportError::from_io(peer, e, None)));
        }
        if conn.is_handshaking() {
            return Turn::Waiting { progress };
        }
        self.read_hello(Some(conn), party, peer, progress)
    }

    fn turn_plain(&mut self, party: PartyId, peer: PartyId) -> Turn {
        self.read_hello(None, party, peer, false)
    }

    /// Reads what has arrived of the hello without waiting, from the TLS plaintext (`tls`)
    /// or, in plaintext mode, from the stream; then checks it once it is whole.
    fn read_hello(
        &mut self,
        mut tls: Option<&mut ServerConnection>,
        party: PartyId,
        peer: PartyId,
        mut progress: bool,
    ) -> Turn {
        while self.filled < self.hello.len() {
            let into = &mut self.hello[self.filled..];
            let read = match tls.as_deref_mut() {
                Some(conn) => conn.reader().read(into),
                None => self.stream.read(into),
            };
            match read {
                Ok(0) => {
                    return Turn::Dropped(self.heard.then(|| TransportError::Handshake {
                        peer,
                        reason: "the connection closed before its hello".to_string(),
                    }));
                }
                Ok(n) => {
                    self.heard = true;
                    self.filled += n;
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Turn::Dropped(
                        self.heard.then(|| TransportError::from_io(peer, e, None)),
                    );
                }
            }
        }
        self.check_hello(party, peer, progress)
    }

    fn check_hello(&self, party: PartyId, peer: PartyId, progress: bool) -> Turn {
        if self.filled < self.hello.len() {
            Turn::Waiting { progress }
        } else if self.hello == hello(peer, party, HELLO) {
            Turn::Done
        } else {
            Turn::Dropped(Some(TransportError::Handshake {
                peer,
                reason: format!(
                    "expected the hello of {peer} to {party}, got {:?}",
                    self.hello
                ),
            }))
        }
    }

    /// Answers the previous party's hello: the connection is set up.
    fn finish(mut self, party: PartyId, peer: PartyId) -> Result<Connected, TransportError> {
        let io_err = |e| TransportError::from_io(peer, e, Some(HANDSHAKE_LIMIT));
        self.stream.set_nonblocking(false).map_err(io_err)?;
        self.stream
            .set_write_timeout(Some(HANDSHAKE_LIMIT))
            .map_err(io_err)?;
        let mut tls = self.tls.map(Connection::Server);
        setup_write(
            &mut self.stream,
            tls.as_mut(),
            &hello(party, peer, HELLO_ACK),
        )
        .map_err(io_err)?;
        Ok(Connected {
            stream: self.stream,
            tls,
        })
    }
}

/// Writes what TLS has to send, as far as the socket takes it without waiting.
fn flush_without_waiting(conn: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Accepts connections until one is the previous party (it passes the TLS checks and the
/// hello) or the deadline passes. With `allowed`, a connection from another IP address is
/// closed at once. Every connection is served from this thread without waiting on it (see
/// [`TcpTransport`]'s setup section for the bounds).
fn accept(
    party: PartyId,
    listener: &TcpListener,
    security: &Security,
    allowed: Option<&[IpAddr]>,
    deadline: Instant,
    after: Duration,
) -> Result<Connected, TransportError> {
    let peer = party.prev();
    listener
        .set_nonblocking(true)
        .map_err(|source| TransportError::LocalIo {
            context: "making the listener non-blocking".to_string(),
            source,
        })?;
    let mut pending: Vec<Pending> = Vec::with_capacity(MAX_PENDING);
    let mut last_refused: Option<String> = None;
    loop {
        if remaining(deadline).is_none() {
            return Err(TransportError::AcceptTimeout {
                peer,
                after,
                last_refused,
            });
        }
        let mut busy = false;
        for _ in 0..ACCEPT_BATCH {
            let (stream, from) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // Out of file descriptors, a connection reset before it was taken, ...:
                    // nothing to do with the previous party; try again next turn.
                    last_refused = Some(format!("accepting a connection: {e}"));
                    break;
                }
            };
            busy = true;
            if let Some(ips) = allowed
                && !ips.contains(&from.ip().to_canonical())
            {
                last_refused = Some(format!(
                    "a connection from {} was closed at once: {peer} is expected from {}; \
                     accept connections from any address (AcceptFrom::Any, \
                     `accept_any_address` in parties.toml) if it is behind NAT",
                    from.ip(),
                    ips.iter()
                        .map(IpAddr::to_string)
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let tls = match security {
                Security::Tls(_, _, server) => Some(
                    ServerConnection::new(server.clone())
                        .map_err(|source| TransportError::Tls { peer, source })?,
                ),
                Security::Plaintext => None,
            };
            if pending.len() >= MAX_PENDING {
                // The oldest connection that has sent nothing, else the oldest.
                if let Some(victim) = pending
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, p)| (p.heard, p.accepted))
                    .map(|(i, _)| i)
                {
                    pending.swap_remove(victim);
                }
            }
            pending.push(Pending {
                stream,
                tls,
                from,
                accepted: Instant::now(),
                heard: false,
                hello: [0; 8],
                filled: 0,
            });
        }
        let now = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            match pending[i].turn(party, peer, now) {
                Turn::Waiting { progress } => {
                    busy |= progress;
                    i += 1;
                }
                Turn::Done => match pending.swap_remove(i).finish(party, peer) {
                    Ok(connected) => return Ok(connected),
                    Err(e) => last_refused = Some(e.to_string()),
                },
                Turn::Dropped(why) => {
                    if let Some(e) = why {
                        last_refused = Some(e.to_string());
                    }
                    pending.swap_remove(i);
                }
            }
        }
        if busy {
            thread::yield_now();
            continue;
        }
        thread::sleep(if pending.is_empty() {
            Duration::from_millis(10)
        } else {
            ACCEPT_TICK
        });
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
        link.validate()?;
        let prev_addr = &network.addresses[party.prev().index()];
        let allowed = match link.accept_from {
            AcceptFrom::Any => None,
            AcceptFrom::PeerAddresses => Some(resolve_ips(prev_addr).map_err(|e| {
                TransportError::Config(format!(
                    "the address of {} ({prev_addr}), from which {party} accepts it: {e}",
                    party.prev()
                ))
            })?),
        };
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
            Box::new(move || {
                accept(
                    party,
                    &listener,
                    &accept_security,
                    allowed.as_deref(),
                    deadline,
                    after,
                )
            }),
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

    /// Stops this party: both neighbours receive an abort naming it and `kind` (at the next
    /// frame boundary: two bytes, never the error's text, which may hold secrets), and later
    /// receives and sends fail with [`TransportError::Stopped`]. Waits at most 2 s for the
    /// aborts to go out. Call it when a job fails for a reason of its own (a bad file, a
    /// refused manifest); failures of the transport itself are passed on without it.
    pub fn abort(&self, kind: FailureKind) {
        AbortHandle {
            hub: self.hub.clone(),
        }
        .abort(kind);
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
            self.hub
                .stop(FailureKind::Internal, format!("{} panicked", self.party));
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
