//! [`TcpTransport`]: the parties as separate processes (or hosts) over TCP with mutual TLS.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, Connection, ServerConnection};

use crate::frame::{FrameDecoder, HEADER_LEN, header};
use crate::runner::run_three;
use crate::{
    DEFAULT_MAX_FRAME_LEN, DEFAULT_RECV_TIMEOUT, PartyId, Peer, TlsConfig, Transport,
    TransportError, generate_deployment,
};

/// Default time to wait for the connections to the two neighbours: 30 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often an idle reader thread wakes up to see whether its transport was dropped.
const READER_POLL: Duration = Duration::from_millis(200);

/// How long a dropped transport keeps draining a connection (so the peer's last bytes are not
/// answered by a reset) before closing it.
const LINGER: Duration = Duration::from_secs(2);

/// Plaintext bytes encrypted per lock of the TLS state when sending.
const SEND_CHUNK: usize = 256 << 10;

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 256 << 10;

/// Timeouts and limits of a TCP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// How long setup may take: connecting to the next party (retried until then), accepting
    /// the previous one, and the TLS handshakes. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How long `recv` waits for a message, and how long a `send` may make no progress,
    /// before failing with [`TransportError::Timeout`]; `None` disables both. Default
    /// [`DEFAULT_RECV_TIMEOUT`].
    pub recv_timeout: Option<Duration>,
    /// The longest payload a frame may have, in bytes. Default [`DEFAULT_MAX_FRAME_LEN`].
    pub max_frame_len: u64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            recv_timeout: Some(DEFAULT_RECV_TIMEOUT),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
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
/// start in any order: connecting is retried until the connect timeout. So P0 dials P1, P1
/// dials P2 and P2 dials P0, and every pair shares exactly one connection.
///
/// With TLS (the default, [`TcpTransport::connect`]) the dialing party is the TLS client and
/// checks that the server's certificate chains to the deployment CA and names the next
/// party's identity; the accepting party is the TLS server, requires a client certificate and
/// checks that it chains to the CA and names the previous party's identity. A connection that
/// fails these checks makes setup fail with [`TransportError::Tls`] at once: setup does not
/// keep waiting for another connection. After the handshake the dialer sends an 8-byte hello
/// `b"CGT"`, version 1, its index, the acceptor's index, 0, 0 and the acceptor answers with the
/// same bytes but its own index first and a 1 in the seventh byte, so both sides know the
/// other accepted them before setup returns.
///
/// # Wire format
///
/// Each message is a frame: its length as 8 little-endian bytes, then the payload. A header
/// announcing more than the maximum frame length fails with [`TransportError::FrameTooLarge`];
/// a stream that ends inside a frame with [`TransportError::Truncated`].
///
/// # Threads
///
/// Each connection has a reader thread that decrypts and reassembles incoming frames into a
/// queue, so a send never waits for the peer to call `recv` and a send never blocks while a
/// lock is held. Sending happens on the caller's thread.
///
/// # Dropping
///
/// Dropping the transport closes both connections (TLS `close_notify`, then FIN): the
/// neighbours' pending and later receives fail with [`TransportError::Disconnected`].
#[derive(Debug)]
pub struct TcpTransport {
    party: PartyId,
    next: Link,
    prev: Link,
    recv_timeout: Option<Duration>,
    max_frame_len: u64,
}

/// Messages from a reader thread.
type Incoming = Result<Vec<u8>, TransportError>;

/// State shared between a link's owner and its reader thread.
#[derive(Debug, Default)]
struct Shared {
    /// Set when the owner dropped the link: the reader drains until EOF or the linger time.
    closing: AtomicBool,
}

/// One connection to a neighbour.
#[derive(Debug)]
struct Link {
    peer: PartyId,
    stream: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    incoming: Receiver<Incoming>,
    shared: Arc<Shared>,
    write_timeout: Option<Duration>,
    /// Set once a send failed: the stream may hold part of a frame.
    send_failed: bool,
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    // A panic while holding the lock cannot leave the TLS state half-updated in a way that
    // matters more than the connection failing, which it then will.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Link {
    fn send(&mut self, msg: &[u8], max_frame_len: u64) -> Result<(), TransportError> {
        let peer = self.peer;
        if msg.len() as u64 > max_frame_len {
            return Err(TransportError::FrameTooLarge {
                peer,
                len: msg.len() as u64,
                max: max_frame_len,
            });
        }
        if self.send_failed {
            // An earlier send may have stopped mid-frame: the stream cannot be resynchronised.
            return Err(TransportError::Io {
                peer,
                source: io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "an earlier send to this peer failed; the connection is unusable",
                ),
            });
        }
        let result = self.write_frame(msg);
        self.send_failed = result.is_err();
        result
    }

    fn write_frame(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        let peer = self.peer;
        let io_err = |e| TransportError::from_io(peer, e, self.write_timeout);
        // The header travels with the first chunk of the payload.
        let first_take = msg.len().min(SEND_CHUNK);
        let mut first = Vec::with_capacity(HEADER_LEN + first_take);
        first.extend_from_slice(&header(msg.len()));
        first.extend_from_slice(&msg[..first_take]);
        let rest = &msg[first_take..];
        match &self.tls {
            None => {
                (&self.stream).write_all(&first).map_err(io_err)?;
                (&self.stream).write_all(rest).map_err(io_err)
            }
            Some(conn) => {
                let mut records = Vec::with_capacity(SEND_CHUNK + 4096);
                for piece in std::iter::once(&first[..]).chain(rest.chunks(SEND_CHUNK)) {
                    {
                        let mut conn = lock(conn);
                        conn.writer().write_all(piece).map_err(io_err)?;
                        while conn.wants_write() {
                            conn.write_tls(&mut records).map_err(io_err)?;
                        }
                    }
                    // The socket write happens without the lock, so the reader thread keeps
                    // draining the other direction while this blocks.
                    (&self.stream).write_all(&records).map_err(io_err)?;
                    records.clear();
                }
                Ok(())
            }
        }
    }

    fn recv(&mut self, timeout: Option<Duration>) -> Result<Vec<u8>, TransportError> {
        let peer = self.peer;
        match timeout {
            None => self
                .incoming
                .recv()
                .map_err(|_| TransportError::Disconnected { peer })?,
            Some(after) => self.incoming.recv_timeout(after).map_err(|e| match e {
                RecvTimeoutError::Timeout => TransportError::Timeout { peer, after },
                RecvTimeoutError::Disconnected => TransportError::Disconnected { peer },
            })?,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Best effort: nothing here may block for long or fail loudly.
        let _ = self
            .stream
            .set_write_timeout(Some(Duration::from_millis(500)));
        if let Some(conn) = &self.tls {
            let mut records = Vec::new();
            {
                let mut conn = lock(conn);
                conn.send_close_notify();
                while conn.wants_write() {
                    if conn.write_tls(&mut records).is_err() {
                        break;
                    }
                }
            }
            let _ = (&self.stream).write_all(&records);
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        self.shared.closing.store(true, Ordering::SeqCst);
    }
}

/// The reader thread of one link: reads the socket, decrypts, reassembles frames and queues
/// them; ends with an error item (or, once the owner is gone, silently).
fn reader_loop(
    peer: PartyId,
    stream: TcpStream,
    tls: Option<Arc<Mutex<Connection>>>,
    max_frame_len: u64,
    tx: Sender<Incoming>,
    shared: Arc<Shared>,
) {
    let mut decoder = FrameDecoder::new(peer, max_frame_len);
    let mut frames = Vec::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut plain = Vec::new();
    let mut closing_since: Option<Instant> = None;
    let mut owner_gone = false;

    // Hand over frames; a failed send means the owner dropped the receiver.
    let deliver = |frames: &mut Vec<Vec<u8>>, owner_gone: &mut bool| {
        for frame in frames.drain(..) {
            if !*owner_gone && tx.send(Ok(frame)).is_err() {
                *owner_gone = true;
            }
        }
    };

    let end = |result: Result<(), TransportError>, owner_gone: bool| {
        if let Err(e) = result
            && !owner_gone
        {
            let _ = tx.send(Err(e));
        }
        let _ = stream.shutdown(Shutdown::Read);
    };

    // With TLS, plaintext may already sit in the connection from the setup reads.
    if let Some(conn) = &tls {
        let mut conn = lock(conn);
        if let Err(e) = drain_plaintext(&mut conn, &mut plain) {
            drop(conn);
            end(Err(TransportError::from_io(peer, e, None)), owner_gone);
            return;
        }
    }
    let fed = decoder.feed(&plain, &mut frames);
    plain.clear();
    deliver(&mut frames, &mut owner_gone);
    if let Err(e) = fed {
        end(Err(e), owner_gone);
        return;
    }

    loop {
        if shared.closing.load(Ordering::SeqCst) || owner_gone {
            let since = *closing_since.get_or_insert_with(Instant::now);
            owner_gone = true;
            if since.elapsed() >= LINGER {
                end(Ok(()), true);
                return;
            }
        }
        let n = match (&stream).read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                let err = match TransportError::from_io(peer, e, None) {
                    TransportError::Disconnected { .. } => decoder.end_of_stream(),
                    other => other,
                };
                end(Err(err), owner_gone);
                return;
            }
        };
        if n == 0 {
            end(Err(decoder.end_of_stream()), owner_gone);
            return;
        }
        let mut clean_close = false;
        if let Some(conn) = &tls {
            let mut conn = lock(conn);
            let mut data = &buf[..n];
            while !data.is_empty() {
                let step = conn
                    .read_tls(&mut data)
                    .and_then(|_| {
                        conn.process_new_packets()
                            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
                    })
                    .and_then(|_| drain_plaintext(&mut conn, &mut plain));
                match step {
                    Ok(closed) => {
                        if closed {
                            clean_close = true;
                            break;
                        }
                    }
                    Err(e) => {
                        drop(conn);
                        let _ = decoder.feed(&plain, &mut frames);
                        deliver(&mut frames, &mut owner_gone);
                        end(Err(TransportError::from_io(peer, e, None)), owner_gone);
                        return;
                    }
                }
            }
        } else {
            plain.extend_from_slice(&buf[..n]);
        }
        let fed = decoder.feed(&plain, &mut frames);
        plain.clear();
        deliver(&mut frames, &mut owner_gone);
        if let Err(e) = fed {
            end(Err(e), owner_gone);
            return;
        }
        if clean_close {
            end(Err(decoder.end_of_stream()), owner_gone);
            return;
        }
    }
}

/// Moves all decrypted plaintext into `out`; returns whether the peer closed the TLS session
/// (`close_notify`).
fn drain_plaintext(conn: &mut Connection, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// The setup messages.
const HELLO: u8 = 0;
const HELLO_ACK: u8 = 1;

fn hello(from: PartyId, to: PartyId, kind: u8) -> [u8; 8] {
    [
        b'C',
        b'G',
        b'T',
        1,
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

/// A connected, verified socket before its reader thread starts.
struct Established {
    stream: TcpStream,
    tls: Option<Connection>,
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
    after: Duration,
) -> Result<Established, TransportError> {
    let left = remaining(deadline).ok_or(TransportError::Timeout { peer, after })?;
    let io_err = |e| TransportError::from_io(peer, e, Some(after));
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
    Ok(Established { stream, tls })
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

fn dial(
    party: PartyId,
    addr: &str,
    security: &Security,
    deadline: Instant,
    after: Duration,
) -> Result<Established, TransportError> {
    let peer = party.next();
    let mut last_error = String::from("no attempt finished");
    let stream = loop {
        let Some(left) = remaining(deadline) else {
            return Err(TransportError::ConnectTimeout {
                peer,
                addr: addr.to_string(),
                after,
                last_error,
            });
        };
        match addr.to_socket_addrs() {
            Ok(addrs) => {
                let addrs: Vec<SocketAddr> = addrs.collect();
                if addrs.is_empty() {
                    last_error = "the address resolves to nothing".to_string();
                }
                let mut connected = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, left.min(Duration::from_secs(2))) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last_error = format!("{a}: {e}"),
                    }
                }
                if let Some(s) = connected {
                    break s;
                }
            }
            Err(e) => last_error = format!("resolving: {e}"),
        }
        thread::sleep(Duration::from_millis(25).min(remaining(deadline).unwrap_or_default()));
    };
    let tls = match security {
        Security::Tls(client, name, _) => Some(Connection::Client(
            ClientConnection::new(client.clone(), name.clone())
                .map_err(|source| TransportError::Tls { peer, source })?,
        )),
        Security::Plaintext => None,
    };
    handshake(party, peer, stream, tls, true, deadline, after)
}

fn accept(
    party: PartyId,
    listener: &TcpListener,
    security: &Security,
    deadline: Instant,
    after: Duration,
) -> Result<Established, TransportError> {
    let peer = party.prev();
    let local = |context: &str, source| TransportError::LocalIo {
        context: context.to_string(),
        source,
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| local("making the listener non-blocking", e))?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                if remaining(deadline).is_none() {
                    return Err(TransportError::AcceptTimeout { peer, after });
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(local("accepting a connection", e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| TransportError::from_io(peer, e, None))?;
    let tls = match security {
        Security::Tls(_, _, server) => Some(Connection::Server(
            ServerConnection::new(server.clone())
                .map_err(|source| TransportError::Tls { peer, source })?,
        )),
        Security::Plaintext => None,
    };
    handshake(party, peer, stream, tls, false, deadline, after)
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
    /// [`TransportError::Tls`] if a peer's certificate does not chain to the CA or names the
    /// wrong party (or the peer refuses ours), [`TransportError::ConnectTimeout`] /
    /// [`TransportError::AcceptTimeout`] if a neighbour does not show up within the connect
    /// timeout, [`TransportError::Credentials`] for unusable credentials, and I/O errors.
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
        let after = link.connect_timeout;
        let deadline = Instant::now() + after;
        let next_addr = network.addresses[party.next().index()].clone();

        // Dial and accept at once, each on its own thread, so that three parties that all
        // dial first cannot block one another; return as soon as either side fails. A side
        // still running after a failure ends by itself at the deadline.
        let (tx, rx) = mpsc::channel::<(Peer, Result<Established, TransportError>)>();
        let spawn = |name: String,
                     job: Box<dyn FnOnce() -> Result<Established, TransportError> + Send>,
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
                Ok((Peer::Next, Ok(est))) => next = Some(est),
                Ok((Peer::Prev, Ok(est))) => prev = Some(est),
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
        Ok(TcpTransport {
            party,
            next: start_link(party.next(), next, link)?,
            prev: start_link(party.prev(), prev, link)?,
            recv_timeout: link.recv_timeout,
            max_frame_len: link.max_frame_len,
        })
    }

    /// The receive timeout in force.
    pub fn recv_timeout(&self) -> Option<Duration> {
        self.recv_timeout
    }

    /// Changes the receive timeout (`None`: wait as long as the peer is connected).
    pub fn set_recv_timeout(&mut self, recv_timeout: Option<Duration>) {
        self.recv_timeout = recv_timeout;
    }

    /// Whether the links are protected by TLS (false only for the insecure test constructor).
    pub fn is_tls(&self) -> bool {
        self.next.tls.is_some()
    }

    fn link(&mut self, peer: Peer) -> &mut Link {
        match peer {
            Peer::Next => &mut self.next,
            Peer::Prev => &mut self.prev,
        }
    }
}

fn bind(addr: &str) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr).map_err(|source| TransportError::LocalIo {
        context: format!("listening on {addr}"),
        source,
    })
}

fn start_link(peer: PartyId, est: Established, link: LinkConfig) -> Result<Link, TransportError> {
    let io_err = |e| TransportError::from_io(peer, e, None);
    let Established { stream, tls } = est;
    stream.set_read_timeout(Some(READER_POLL)).map_err(io_err)?;
    stream
        .set_write_timeout(link.recv_timeout)
        .map_err(io_err)?;
    let tls = tls.map(|mut conn| {
        // Records are drained right after each write, so no need to cap the send buffer.
        conn.set_buffer_limit(None);
        Arc::new(Mutex::new(conn))
    });
    let reader_stream = stream.try_clone().map_err(io_err)?;
    let shared = Arc::new(Shared::default());
    let (tx, incoming) = mpsc::channel();
    let (reader_tls, reader_shared) = (tls.clone(), shared.clone());
    let max = link.max_frame_len;
    thread::Builder::new()
        .name(format!("cryptgpu-read-{peer}"))
        .spawn(move || reader_loop(peer, reader_stream, reader_tls, max, tx, reader_shared))
        .map_err(|source| TransportError::LocalIo {
            context: "spawning a reader thread".to_string(),
            source,
        })?;
    Ok(Link {
        peer,
        stream,
        tls,
        incoming,
        shared,
        write_timeout: link.recv_timeout,
        send_failed: false,
    })
}

impl Transport for TcpTransport {
    fn party(&self) -> PartyId {
        self.party
    }

    fn send(&mut self, peer: Peer, msg: &[u8]) -> Result<(), TransportError> {
        let max = self.max_frame_len;
        self.link(peer).send(msg, max)
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
