//! The crate's error type, [`TransportError`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::PartyId;

/// Everything that can go wrong while setting up or using a transport.
///
/// No operation of this crate panics on bad input or on a failing peer, and none waits forever
/// unless a timeout was explicitly disabled: each failure surfaces as one of these variants.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer closed the connection (or dropped its end of the channel) cleanly, or the
    /// connection was reset. Frames that arrived before the close are still delivered first.
    #[error("{peer} disconnected")]
    Disconnected {
        /// The party that went away.
        peer: PartyId,
    },
    /// Nothing arrived from the peer within the receive timeout (or a send made no progress
    /// for that long).
    #[error("timed out after {after:?} waiting for {peer}")]
    Timeout {
        /// The party that stayed silent.
        peer: PartyId,
        /// The timeout that expired.
        after: Duration,
    },
    /// A frame is longer than the configured maximum frame length. On receive, the length
    /// header announced it; on send, the message was refused before any byte went out.
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
    #[error("{peer} did not connect within {after:?}")]
    AcceptTimeout {
        /// The party we waited for.
        peer: PartyId,
        /// The connect timeout.
        after: Duration,
    },
    /// The peer broke this crate's connection-setup protocol (e.g. a hello naming the wrong
    /// parties).
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

    /// Whether this error is a timeout ([`TransportError::Timeout`],
    /// [`TransportError::ConnectTimeout`] or [`TransportError::AcceptTimeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            TransportError::Timeout { .. }
                | TransportError::ConnectTimeout { .. }
                | TransportError::AcceptTimeout { .. }
        )
    }

    /// Maps an I/O error on the connection to `peer` to the most specific variant: resets,
    /// broken pipes and EOFs become [`TransportError::Disconnected`], socket timeouts
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
            | io::ErrorKind::UnexpectedEof => TransportError::Disconnected { peer },
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => TransportError::Timeout {
                peer,
                after: timeout.unwrap_or_default(),
            },
            _ => TransportError::Io { peer, source: err },
        }
    }
}
