//! The crate's error type, [`TransportError`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::{FailureKind, PartyId};

/// Everything that can go wrong while setting up or using a transport.
///
/// No operation of this crate panics on bad input or on a failing peer, and none waits forever
/// unless a timeout was explicitly disabled: each failure surfaces as one of these variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer finished and closed the connection cleanly (a goodbye over TCP, its end of
    /// the channel dropped in-process), so the message asked for will never come. Messages
    /// that arrived before the close are still delivered first.
    #[error("{peer} disconnected")]
    Disconnected {
        /// The party that went away.
        peer: PartyId,
    },
    /// The connection to the peer ended without its goodbye: its process died or was
    /// killed, or the network failed.
    #[error(
        "the connection to {peer} was lost (its process died or was killed, or the network failed)"
    )]
    ConnectionLost {
        /// The party whose connection was lost.
        peer: PartyId,
    },
    /// The peer sent nothing at all, not even a heartbeat, for this long: it is stalled
    /// (stopped, swapping, deadlocked) or the network between us is down.
    #[error("{peer} sent nothing for {after:?}: it is stalled or unreachable")]
    Stalled {
        /// The silent party.
        peer: PartyId,
        /// How long it was silent.
        after: Duration,
    },
    /// A party stopped the job: `peer` is the party to blame, `reported_by` the neighbour
    /// that told us when it is not `peer` itself, and `kind` the category of the failure,
    /// which is all that crosses a link (the details stay with the party that saw them).
    ///
    /// The message reads e.g. `P1 failed: an input or weight out of range; the details stay
    /// with P1` or `P1 failed: its connection was lost (...) (reported by P2)`.
    #[error("{}", peer_failed_message(*peer, *reported_by, *kind))]
    PeerFailed {
        /// The party blamed.
        peer: PartyId,
        /// The neighbour that passed the failure on, if the blamed party did not say so itself.
        reported_by: Option<PartyId>,
        /// What kind of failure it was.
        kind: FailureKind,
    },
    /// This party's own transport was stopped (by [`crate::TcpTransport::abort`] or an
    /// [`crate::AbortHandle`], e.g. on Ctrl-C, or by a panic). The reason stays local: the
    /// neighbours only hear a [`FailureKind`].
    #[error("this party stopped: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
    /// The peer broke the wire format (an unknown frame kind, a control frame of the wrong
    /// size, data after its goodbye).
    #[error("{peer} sent a malformed stream: {reason}")]
    Malformed {
        /// The party that sent it.
        peer: PartyId,
        /// What was wrong.
        reason: String,
    },
    /// A [`crate::Handle`] was sent or asked for on a transport between processes, which
    /// carries bytes only (see [`crate::Transport::carries_handles`]): a bug of the caller.
    #[error("a value handle cannot go to or come from {peer}: this transport carries bytes only")]
    HandlesNotCarried {
        /// The party at the other end.
        peer: PartyId,
    },
    /// A message longer than the configured maximum message length, on send (refused before
    /// any byte went out) or on receive.
    #[error(
        "a message of {len} bytes to or from {peer} exceeds the maximum message length of {max} bytes"
    )]
    MessageTooLarge {
        /// The party at the other end.
        peer: PartyId,
        /// The message's length (on receive: the bytes that had arrived when it went over).
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// No message arrived from the peer within the receive timeout (over TCP: although the
    /// peer was alive and sending heartbeats).
    #[error("timed out after {after:?} waiting for {peer}")]
    Timeout {
        /// The party that stayed silent.
        peer: PartyId,
        /// The timeout that expired.
        after: Duration,
    },
    /// A frame header announced a payload longer than the configured maximum frame length.
    #[error(
        "a frame of {len} bytes to or from {peer} exceeds the maximum frame length of {max} bytes"
    )]
    FrameTooLarge {
        /// The party at the other end.
        peer: PartyId,
        /// The frame's payload length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The connection ended in the middle of a frame.
    #[error(
        "connection to {peer} ended in the middle of a frame: got {received} of {expected} bytes (length header included)"
    )]
    Truncated {
        /// The party at the other end.
        peer: PartyId,
        /// Bytes the frame should have had, its 8-byte header included (8 when the header itself
        /// was cut).
        expected: u64,
        /// Bytes of it that arrived.
        received: u64,
    },
    /// A round-count header frame of the wrong length: the peer does not wrap its transport
    /// in [`crate::Counting`], or the stream is out of step.
    #[error("the round-count header from {peer} has {len} bytes, not 8: is the peer counting?")]
    BadHeader {
        /// The party that sent it.
        peer: PartyId,
        /// Its length.
        len: usize,
    },
    /// A message meant to hold `u64` words has a byte length that is not a multiple of 8.
    #[error("a message of {len} bytes from {peer} is not a whole number of 8-byte words")]
    NotU64Aligned {
        /// The sender.
        peer: PartyId,
        /// The message's byte length.
        len: usize,
    },
    /// An I/O error on the connection to a peer.
    #[error("I/O error on the connection to {peer}: {source}")]
    Io {
        /// The party at the other end.
        peer: PartyId,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A local I/O error not tied to one peer (binding the listening socket, spawning a thread).
    #[error("{context}: {source}")]
    LocalIo {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// TLS failed with a peer: a handshake refused (certificate from another CA, wrong
    /// identity, ...), an alert from the peer, or a corrupt record.
    #[error("TLS with {peer} failed: {source}")]
    Tls {
        /// The party at the other end.
        peer: PartyId,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The connection to the next party could not be opened before the connect timeout.
    #[error("could not connect to {peer} at {addr} within {after:?}: {last_error}")]
    ConnectTimeout {
        /// The party we tried to reach.
        peer: PartyId,
        /// Its configured address.
        addr: String,
        /// The connect timeout.
        after: Duration,
        /// The last error seen while retrying.
        last_error: String,
    },
    /// The previous party did not connect before the connect timeout.
    #[error("{peer} did not connect within {after:?}{}", last_refused.as_ref().map(|r| format!(" (a connection was refused: {r})")).unwrap_or_default())]
    AcceptTimeout {
        /// The party we waited for.
        peer: PartyId,
        /// The connect timeout.
        after: Duration,
        /// Why the last connection that claimed to be `peer` was refused, if one was.
        last_refused: Option<String>,
    },
    /// The peer broke this crate's connection-setup protocol (e.g. a hello naming the wrong
    /// parties). During setup such a connection is dropped and the party keeps waiting; this
    /// is what the last one did.
    #[error("connection setup with {peer} failed: {reason}")]
    Handshake {
        /// The party at the other end (as expected by us).
        peer: PartyId,
        /// What went wrong.
        reason: String,
    },
    /// A certificate, key or CA could not be loaded or used.
    #[error("invalid TLS credentials: {0}")]
    Credentials(String),
    /// A private key file that its owner's group or other users may read or write (on Unix;
    /// like ssh, a key is used only if its mode gives no permission to anyone but its owner).
    #[error(
        "the private key {} has mode {mode:04o}, which lets other users read or change it: \
         run `chmod 600 {}` (and keep the key on this host only)",
        path.display(),
        path.display()
    )]
    KeyPermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    CertGeneration(#[from] rcgen::Error),
    /// The configuration is unusable (e.g. an address that does not resolve).
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// A link profile for [`crate::EmulatedLink`] that does not parse or is out of range
    /// (see [`crate::parse_link`] for what is accepted).
    #[error("invalid link profile: {0}")]
    BadLinkProfile(String),
    /// A party index outside 0..=2.
    #[error("party index {index} is not 0, 1 or 2")]
    InvalidParty {
        /// The bad index.
        index: usize,
    },
    /// A party's closure panicked in one of the three-party runners.
    #[error("{party} panicked: {message}")]
    PartyPanicked {
        /// The party whose thread panicked first.
        party: PartyId,
        /// The panic message (and a note about other parties that failed after it).
        message: String,
    },
}

impl TransportError {
    /// Whether this error means the peer is gone ([`TransportError::Disconnected`]).
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TransportError::Disconnected { .. })
    }

    /// The party this error blames, if it blames one: the peer that disconnected, died,
    /// stalled, sent garbage or failed (for [`TransportError::PeerFailed`], the party blamed,
    /// not the one that reported it).
    pub fn blamed_party(&self) -> Option<PartyId> {
        use TransportError as E;
        match self {
            E::Disconnected { peer }
            | E::ConnectionLost { peer }
            | E::Stalled { peer, .. }
            | E::PeerFailed { peer, .. }
            | E::Malformed { peer, .. }
            | E::MessageTooLarge { peer, .. }
            | E::Timeout { peer, .. }
            | E::FrameTooLarge { peer, .. }
            | E::Truncated { peer, .. }
            | E::BadHeader { peer, .. }
            | E::NotU64Aligned { peer, .. }
            | E::Io { peer, .. }
            | E::Tls { peer, .. }
            | E::ConnectTimeout { peer, .. }
            | E::AcceptTimeout { peer, .. }
            | E::Handshake { peer, .. } => Some(*peer),
            E::PartyPanicked { party, .. } => Some(*party),
            E::Stopped { .. }
            | E::HandlesNotCarried { .. }
            | E::LocalIo { .. }
            | E::Credentials(_)
            | E::KeyPermissions { .. }
            | E::File { .. }
            | E::CertGeneration(_)
            | E::Config(_)
            | E::BadLinkProfile(_)
            | E::InvalidParty { .. } => None,
        }
    }

    /// The category this error is told to the other parties as, when it stops a job: a link
    /// failure ([`FailureKind::ConnectionLost`], [`FailureKind::Stalled`],
    /// [`FailureKind::Garbage`], [`FailureKind::TimedOut`]) for errors on a connection, the
    /// relayed kind for [`TransportError::PeerFailed`], and a local kind for the rest.
    pub fn failure_kind(&self) -> FailureKind {
        use TransportError as E;
        match self {
            E::PeerFailed { kind, .. } => *kind,
            E::Disconnected { .. }
            | E::ConnectionLost { .. }
            | E::Truncated { .. }
            | E::Io { .. } => FailureKind::ConnectionLost,
            E::Stalled { .. } => FailureKind::Stalled,
            E::Malformed { .. }
            | E::MessageTooLarge { .. }
            | E::FrameTooLarge { .. }
            | E::BadHeader { .. }
            | E::NotU64Aligned { .. }
            | E::Tls { .. }
            | E::Handshake { .. } => FailureKind::Garbage,
            E::Timeout { .. } | E::ConnectTimeout { .. } | E::AcceptTimeout { .. } => {
                FailureKind::TimedOut
            }
            E::LocalIo { .. } | E::File { .. } => FailureKind::LocalIo,
            E::Credentials(_) | E::KeyPermissions { .. } | E::Config(_) | E::BadLinkProfile(_) => {
                FailureKind::MalformedInput
            }
            E::Stopped { .. }
            | E::HandlesNotCarried { .. }
            | E::CertGeneration(_)
            | E::InvalidParty { .. }
            | E::PartyPanicked { .. } => FailureKind::Internal,
        }
    }

    /// Whether this error is a timeout ([`TransportError::Timeout`],
    /// [`TransportError::ConnectTimeout`], [`TransportError::AcceptTimeout`] or
    /// [`TransportError::Stalled`]).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::AcceptTimeout { .. }
                | TransportError::Stalled { .. }
        )
    }

    /// Maps an I/O error on the connection to `peer` to the most specific variant: resets,
    /// broken pipes and EOFs become [`TransportError::ConnectionLost`], socket timeouts
    /// [`TransportError::Timeout`] (with `timeout` as the duration), TLS errors carried inside
    /// an I/O error [`TransportError::Tls`], the rest [`TransportError::Io`].
    pub(crate) fn from_io(peer: PartyId, err: io::Error, timeout: Option<Duration>) -> Self {
        if let Some(tls) = err
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return TransportError::Tls {
                peer,
                source: tls.clone(),
            };
        }
        match err.kind() {
            io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
            | io::ErrorKind::UnexpectedEof => TransportError::ConnectionLost { peer },
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::Timeout {
                peer,
                after: timeout.unwrap_or_default(),
            },
            _ => TransportError::Io { peer, source: err },
        }
    }
}

impl TransportError {
    /// A copy of a link error, for the second and later receives on a link that ended: the
    /// variants a link ends with are copied as they are (an I/O error keeps its kind and
    /// text), anything else becomes [`TransportError::PeerFailed`] with its kind.
    pub(crate) fn duplicate(&self) -> TransportError {
        use TransportError as E;
        match self {
            E::Disconnected { peer } => E::Disconnected { peer: *peer },
            E::ConnectionLost { peer } => E::ConnectionLost { peer: *peer },
            E::Stalled { peer, after } => E::Stalled {
                peer: *peer,
                after: *after,
            },
            E::PeerFailed {
                peer,
                reported_by,
                kind,
            } => E::PeerFailed {
                peer: *peer,
                reported_by: *reported_by,
                kind: *kind,
            },
            E::Stopped { reason } => E::Stopped {
                reason: reason.clone(),
            },
            E::Malformed { peer, reason } => E::Malformed {
                peer: *peer,
                reason: reason.clone(),
            },
            E::MessageTooLarge { peer, len, max } => E::MessageTooLarge {
                peer: *peer,
                len: *len,
                max: *max,
            },
            E::Timeout { peer, after } => E::Timeout {
                peer: *peer,
                after: *after,
            },
            E::FrameTooLarge { peer, len, max } => E::FrameTooLarge {
                peer: *peer,
                len: *len,
                max: *max,
            },
            E::Truncated {
                peer,
                expected,
                received,
            } => E::Truncated {
                peer: *peer,
                expected: *expected,
                received: *received,
            },
            E::Tls { peer, source } => E::Tls {
                peer: *peer,
                source: source.clone(),
            },
            E::Io { peer, source } => E::Io {
                peer: *peer,
                source: io::Error::new(source.kind(), source.to_string()),
            },
            other => match other.blamed_party() {
                Some(peer) => E::PeerFailed {
                    peer,
                    reported_by: None,
                    kind: other.failure_kind(),
                },
                None => E::Stopped {
                    reason: other.to_string(),
                },
            },
        }
    }
}

/// The message of [`TransportError::PeerFailed`].
fn peer_failed_message(peer: PartyId, reported_by: Option<PartyId>, kind: FailureKind) -> String {
    let by = reported_by.map_or_else(String::new, |by| format!(" (reported by {by})"));
    if kind.is_link_failure() {
        format!("{peer} failed: {kind}{by}")
    } else {
        format!("{peer} failed: {kind}{by}; the details stay with {peer}")
    }
}
