//! The [`Transport`] trait that protocols program against, and its `u64` helpers.

use std::any::Any;
use std::fmt;

use crate::{PartyId, Peer, TransportError};

/// A value handed to a neighbour in the same process instead of bytes: e.g. the handles of
/// device tensors, so that a message between parties that share a device never leaves it.
/// It stands for `wire_len` payload bytes, which the counters ([`crate::Counting`]) and an
/// emulated link ([`crate::EmulatedLink`]) charge as if those bytes were sent.
pub struct Handle {
    value: Box<dyn Any + Send>,
    wire_len: u64,
}

impl Handle {
    /// `value`, standing for a message of `wire_len` bytes.
    pub fn new<V: Any + Send>(value: V, wire_len: u64) -> Handle {
        Handle {
            value: Box::new(value),
            wire_len,
        }
    }

    /// The bytes this handle stands for.
    pub fn wire_len(&self) -> u64 {
        self.wire_len
    }

    /// The value, if it is a `V`; else the handle back.
    ///
    /// # Errors
    /// The handle itself when it holds something else.
    pub fn downcast<V: Any>(self) -> Result<V, Handle> {
        let wire_len = self.wire_len;
        self.value
            .downcast::<V>()
            .map(|v| *v)
            .map_err(|value| Handle { value, wire_len })
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("wire_len", &self.wire_len)
            .finish_non_exhaustive()
    }
}

/// Moves byte messages between one party and its two neighbours.
///
/// Messages are whole frames: each `send` is delivered as one `recv` on the other side, in
/// order, per direction. Protocols see only this trait, never what carries the bytes
/// ([`LocalTransport`](crate::LocalTransport) between threads of one process,
/// [`TcpTransport`](crate::TcpTransport) over mutual TLS).
///
/// # No deadlocks, no hangs
///
/// `send` never waits for the peer to call `recv`: every implementation of this crate drains
/// incoming messages into a queue in the background (a channel for the local transport, a
/// reader thread per connection for TCP). So any pattern in which each message sent is
/// eventually received completes, including both neighbours sending 64 MiB to each other in
/// the same round. `recv` waits at most the configured receive timeout and reports a peer
/// that went away as [`TransportError::Disconnected`].
///
/// The trait is object safe: protocols may take `&mut dyn Transport`.
pub trait Transport: Send {
    /// This party's identity.
    fn party(&self) -> PartyId;

    /// Sends one message to `peer`. Returns once the message is handed to the carrier (queued
    /// or written to the socket), not when the peer has read it.
    ///
    /// # Errors
    /// [`TransportError::Disconnected`] if the peer is gone, [`TransportError::FrameTooLarge`]
    /// if the message exceeds the maximum frame length, I/O and TLS errors.
    fn send(&mut self, peer: Peer, msg: &[u8]) -> Result<(), TransportError>;

    /// [`Transport::send`] of a message the caller gives away, which saves a copy where the
    /// carrier queues messages.
    ///
    /// # Errors
    /// As [`Transport::send`].
    fn send_vec(&mut self, peer: Peer, msg: Vec<u8>) -> Result<(), TransportError> {
        self.send(peer, &msg)
    }

    /// Receives the next message from `peer`, waiting at most the receive timeout.
    ///
    /// # Errors
    /// [`TransportError::Timeout`], [`TransportError::Disconnected`], framing errors
    /// ([`TransportError::FrameTooLarge`], [`TransportError::Truncated`]), I/O and TLS errors.
    fn recv(&mut self, peer: Peer) -> Result<Vec<u8>, TransportError>;

    /// Sends `msg` to `to` and receives one message from `from`, as one round. Both
    /// neighbours may call this against each other with messages of any size at once.
    ///
    /// # Errors
    /// As [`Transport::send`] and [`Transport::recv`].
    fn exchange(&mut self, to: Peer, msg: &[u8], from: Peer) -> Result<Vec<u8>, TransportError> {
        self.send(to, msg)?;
        self.recv(from)
    }

    /// Sends `to_next` to the next party and `to_prev` to the previous one, then receives one
    /// message from each: returns `(from_next, from_prev)`. One round.
    ///
    /// # Errors
    /// As [`Transport::send`] and [`Transport::recv`].
    fn exchange_both(
        &mut self,
        to_next: &[u8],
        to_prev: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), TransportError> {
        self.send(Peer::Next, to_next)?;
        self.send(Peer::Prev, to_prev)?;
        let from_next = self.recv(Peer::Next)?;
        let from_prev = self.recv(Peer::Prev)?;
        Ok((from_next, from_prev))
    }

    /// Sends `words` to `peer` as little-endian bytes (8 per word).
    ///
    /// # Errors
    /// As [`Transport::send`].
    fn send_u64s(&mut self, peer: Peer, words: &[u64]) -> Result<(), TransportError> {
        self.send_vec(peer, u64s_to_le_bytes(words))
    }

    /// [`Transport::send_u64s`] of words the caller gives away: a carrier between threads
    /// of one process moves the vector to the receiver without encoding or copying it.
    /// The peer may receive it with [`Transport::recv_u64s`] or as bytes.
    ///
    /// # Errors
    /// As [`Transport::send`].
    fn send_u64_vec(&mut self, peer: Peer, words: Vec<u64>) -> Result<(), TransportError> {
        self.send_vec(peer, u64s_to_le_bytes(&words))
    }

    /// Receives a message from `peer` and reads it as little-endian `u64` words.
    ///
    /// # Errors
    /// As [`Transport::recv`], and [`TransportError::NotU64Aligned`] if the message's length
    /// is not a multiple of 8.
    fn recv_u64s(&mut self, peer: Peer) -> Result<Vec<u64>, TransportError> {
        let bytes = self.recv(peer)?;
        le_bytes_to_u64s(self.party().neighbour(peer), &bytes)
    }

    /// [`Transport::exchange`] for `u64` words (little-endian on the wire).
    ///
    /// # Errors
    /// As [`Transport::exchange`] and [`Transport::recv_u64s`].
    fn exchange_u64s(
        &mut self,
        to: Peer,
        words: &[u64],
        from: Peer,
    ) -> Result<Vec<u64>, TransportError> {
        self.send_vec(to, u64s_to_le_bytes(words))?;
        let bytes = self.recv(from)?;
        le_bytes_to_u64s(self.party().neighbour(from), &bytes)
    }

    /// Whether this transport moves [`Handle`]s: true only where both ends of each link
    /// live in this process (the in-process transport, and wrappers around it), and then
    /// for both ends alike, so a protocol that checks it sends what its peer expects.
    fn carries_handles(&self) -> bool {
        false
    }

    /// Hands `handle` to `peer`, which takes it with [`Transport::recv_handle`]; only where
    /// [`Transport::carries_handles`].
    ///
    /// # Errors
    /// [`TransportError::HandlesNotCarried`] on a transport between processes, and as
    /// [`Transport::send`].
    fn send_handle(&mut self, peer: Peer, handle: Handle) -> Result<(), TransportError> {
        drop(handle);
        Err(TransportError::HandlesNotCarried {
            peer: self.party().neighbour(peer),
        })
    }

    /// Takes the next message from `peer`, which must be a [`Handle`].
    ///
    /// # Errors
    /// [`TransportError::HandlesNotCarried`] on a transport between processes,
    /// [`TransportError::Malformed`] when the next message is bytes, and as
    /// [`Transport::recv`].
    fn recv_handle(&mut self, peer: Peer) -> Result<Handle, TransportError> {
        Err(TransportError::HandlesNotCarried {
            peer: self.party().neighbour(peer),
        })
    }

    /// [`Transport::exchange_both`] for `u64` words: returns `(from_next, from_prev)`.
    ///
    /// # Errors
    /// As [`Transport::exchange_both`] and [`Transport::recv_u64s`].
    fn exchange_both_u64s(
        &mut self,
        to_next: &[u64],
        to_prev: &[u64],
    ) -> Result<(Vec<u64>, Vec<u64>), TransportError> {
        self.send_vec(Peer::Next, u64s_to_le_bytes(to_next))?;
        self.send_vec(Peer::Prev, u64s_to_le_bytes(to_prev))?;
        let from_next = self.recv(Peer::Next)?;
        let from_prev = self.recv(Peer::Prev)?;
        let party = self.party();
        Ok((
            le_bytes_to_u64s(party.next(), &from_next)?,
            le_bytes_to_u64s(party.prev(), &from_prev)?,
        ))
    }
}

/// [`TransportError::HandlesNotCarried`] unless `transport` carries handles: what a wrapper
/// checks before it sends or reads anything of its own for a handle.
pub(crate) fn check_carries_handles(
    transport: &impl Transport,
    peer: Peer,
) -> Result<(), TransportError> {
    if transport.carries_handles() {
        return Ok(());
    }
    Err(TransportError::HandlesNotCarried {
        peer: transport.party().neighbour(peer),
    })
}

/// `Transport` for a pointer to a transport, forwarding every method.
macro_rules! forward_transport {
    ($pointer:ty) => {
        impl<T: Transport + ?Sized> Transport for $pointer {
            fn party(&self) -> PartyId {
                (**self).party()
            }
            fn send(&mut self, peer: Peer, msg: &[u8]) -> Result<(), TransportError> {
                (**self).send(peer, msg)
            }
            fn send_vec(&mut self, peer: Peer, msg: Vec<u8>) -> Result<(), TransportError> {
                (**self).send_vec(peer, msg)
            }
            fn send_u64_vec(&mut self, peer: Peer, words: Vec<u64>) -> Result<(), TransportError> {
                (**self).send_u64_vec(peer, words)
            }
            fn recv(&mut self, peer: Peer) -> Result<Vec<u8>, TransportError> {
                (**self).recv(peer)
            }
            fn carries_handles(&self) -> bool {
                (**self).carries_handles()
            }
            fn send_handle(&mut self, peer: Peer, handle: Handle) -> Result<(), TransportError> {
                (**self).send_handle(peer, handle)
            }
            fn recv_handle(&mut self, peer: Peer) -> Result<Handle, TransportError> {
                (**self).recv_handle(peer)
            }
            fn recv_u64s(&mut self, peer: Peer) -> Result<Vec<u64>, TransportError> {
                (**self).recv_u64s(peer)
            }
            fn exchange(
                &mut self,
                to: Peer,
                msg: &[u8],
                from: Peer,
            ) -> Result<Vec<u8>, TransportError> {
                (**self).exchange(to, msg, from)
            }
            fn exchange_both(
                &mut self,
                to_next: &[u8],
                to_prev: &[u8],
            ) -> Result<(Vec<u8>, Vec<u8>), TransportError> {
                (**self).exchange_both(to_next, to_prev)
            }
        }
    };
}

forward_transport!(&mut T);
forward_transport!(Box<T>);

/// Encodes `words` as little-endian bytes, 8 per word: the wire format of the `u64` helpers.
pub fn u64s_to_le_bytes(words: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for w in words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    bytes
}

/// Decodes little-endian `u64` words from a message received from `from`.
///
/// # Errors
/// [`TransportError::NotU64Aligned`] if `bytes.len()` is not a multiple of 8.
pub fn le_bytes_to_u64s(from: PartyId, bytes: &[u8]) -> Result<Vec<u64>, TransportError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(TransportError::NotU64Aligned {
            peer: from,
            len: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn u64_round_trip() {
        let words = [0u64, 1, u64::MAX, 0x0102_0304_0506_0708];
        let bytes = u64s_to_le_bytes(&words);
        assert_eq!(&bytes[24..32], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(le_bytes_to_u64s(PartyId::P1, &bytes).unwrap(), words);
        let err = le_bytes_to_u64s(PartyId::P1, &bytes[..7]).unwrap_err();
        assert!(matches!(
            err,
            TransportError::NotU64Aligned {
                peer: PartyId::P1,
                len: 7
            }
        ));
    }
}
