//! [`LocalTransport`]: the three parties as threads of one process, connected by channels,
//! and [`run_local_3pc`], which runs a closure as the three parties.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::runner::run_three;
use crate::transport::{Handle, le_bytes_to_u64s, u64s_to_le_bytes};
use crate::{DEFAULT_RECV_TIMEOUT, PartyId, Peer, Transport, TransportError};

/// One message in flight: bytes, or words moved as they are (their wire form is their
/// little-endian bytes, and a receiver may take either form of either), or a [`Handle`]
/// (taken only as a handle).
#[derive(Debug)]
enum Message {
    Bytes(Vec<u8>),
    Words(Vec<u64>),
    Handle(Handle),
}

/// The receiving end of one direction of a link.
type Queue = Receiver<Message>;

/// Settings of the in-process transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalConfig {
    /// How long `recv` waits for a message before it fails with
    /// [`TransportError::Timeout`]; `None` waits as long as the peer is alive (a peer that
    /// drops its transport or panics still ends the wait with
    /// [`TransportError::Disconnected`]). Default: [`DEFAULT_RECV_TIMEOUT`].
    pub recv_timeout: Option<Duration>,
    /// Whether the parties hand each other [`Handle`]s ([`Transport::carries_handles`]), so
    /// that messages between parties on one device stay on it. `false` makes every message
    /// bytes, as between hosts: the copies three hosts would make, on one machine.
    /// Default: `true`.
    pub carry_handles: bool,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            recv_timeout: Some(DEFAULT_RECV_TIMEOUT),
            carry_handles: true,
        }
    }
}

impl LocalConfig {
    /// This configuration with another receive timeout.
    pub fn with_recv_timeout(mut self, recv_timeout: Option<Duration>) -> Self {
        self.recv_timeout = recv_timeout;
        self
    }

    /// This configuration with handles carried or not (see [`LocalConfig::carry_handles`]).
    pub fn with_handles(mut self, carry_handles: bool) -> Self {
        self.carry_handles = carry_handles;
        self
    }
}

/// One party's end of an in-process three-party network: unbounded channels to and from
/// each neighbour.
///
/// Sending never blocks. Dropping a `LocalTransport` (including when its thread panics)
/// disconnects it: the neighbours receive what it sent before, then
/// [`TransportError::Disconnected`].
#[derive(Debug)]
pub struct LocalTransport {
    party: PartyId,
    // Fields drop in order: the receivers go first, so that by the time a neighbour's `recv`
    // sees this party disconnect, its `send` to this party fails too.
    from_next: Queue,
    from_prev: Queue,
    to_next: Sender<Message>,
    to_prev: Sender<Message>,
    recv_timeout: Option<Duration>,
    carry_handles: bool,
}

impl LocalTransport {
    /// Three connected transports, for P0, P1 and P2 in that order. Move each to its own
    /// thread (or use [`run_local_3pc`], which does it for you).
    pub fn triple(config: LocalConfig) -> [LocalTransport; 3] {
        // into_from_prev[j] sends into party j's queue of messages from its previous party;
        // into_from_next[j] into its queue of messages from its next party.
        let mut into_from_prev: Vec<Sender<Message>> = Vec::with_capacity(3);
        let mut into_from_next: Vec<Sender<Message>> = Vec::with_capacity(3);
        let queues: [(Queue, Queue); 3] = std::array::from_fn(|_| {
            let (prev_tx, prev_rx) = mpsc::channel();
            let (next_tx, next_rx) = mpsc::channel();
            into_from_prev.push(prev_tx);
            into_from_next.push(next_tx);
            (prev_rx, next_rx)
        });
        let mut parties = PartyId::ALL.into_iter();
        queues.map(|(from_prev, from_next)| {
            let party = parties.next().unwrap_or(PartyId::P0);
            LocalTransport {
                party,
                // This party is the previous party of its next party, and vice versa.
                to_next: into_from_prev[party.next().index()].clone(),
                to_prev: into_from_next[party.prev().index()].clone(),
                from_next,
                from_prev,
                recv_timeout: config.recv_timeout,
                carry_handles: config.carry_handles,
            }
        })
        // The original senders are dropped here, so each queue's only senders are the clones
        // held by the neighbour: dropping that neighbour disconnects the queue.
    }

    /// The receive timeout in force.
    pub fn recv_timeout(&self) -> Option<Duration> {
        self.recv_timeout
    }

    /// Changes the receive timeout (`None`: wait as long as the peer is alive).
    pub fn set_recv_timeout(&mut self, recv_timeout: Option<Duration>) {
        self.recv_timeout = recv_timeout;
    }

    fn send_message(&mut self, peer: Peer, msg: Message) -> Result<(), TransportError> {
        let tx = match peer {
            Peer::Next => &self.to_next,
            Peer::Prev => &self.to_prev,
        };
        tx.send(msg).map_err(|_| TransportError::Disconnected {
            peer: self.party.neighbour(peer),
        })
    }

    fn recv_message(&mut self, peer: Peer) -> Result<Message, TransportError> {
        let rx = match peer {
            Peer::Next => &self.from_next,
            Peer::Prev => &self.from_prev,
        };
        let from = self.party.neighbour(peer);
        match self.recv_timeout {
            None => rx
                .recv()
                .map_err(|_| TransportError::Disconnected { peer: from }),
            Some(after) => rx.recv_timeout(after).map_err(|e| match e {
                RecvTimeoutError::Timeout => TransportError::Timeout { peer: from, after },
                RecvTimeoutError::Disconnected => TransportError::Disconnected { peer: from },
            }),
        }
    }
}

impl Transport for LocalTransport {
    fn party(&self) -> PartyId {
        self.party
    }

    fn send(&mut self, peer: Peer, msg: &[u8]) -> Result<(), TransportError> {
        self.send_vec(peer, msg.to_vec())
    }

    fn send_vec(&mut self, peer: Peer, msg: Vec<u8>) -> Result<(), TransportError> {
        self.send_message(peer, Message::Bytes(msg))
    }

    fn send_u64_vec(&mut self, peer: Peer, words: Vec<u64>) -> Result<(), TransportError> {
        self.send_message(peer, Message::Words(words))
    }

    fn recv(&mut self, peer: Peer) -> Result<Vec<u8>, TransportError> {
        Ok(match self.recv_message(peer)? {
            Message::Bytes(bytes) => bytes,
            Message::Words(words) => u64s_to_le_bytes(&words),
            Message::Handle(_) => return Err(self.out_of_step(peer, "a handle", "bytes")),
        })
    }

    fn recv_u64s(&mut self, peer: Peer) -> Result<Vec<u64>, TransportError> {
        match self.recv_message(peer)? {
            Message::Bytes(bytes) => le_bytes_to_u64s(self.party.neighbour(peer), &bytes),
            Message::Words(words) => Ok(words),
            Message::Handle(_) => Err(self.out_of_step(peer, "a handle", "words")),
        }
    }

    fn carries_handles(&self) -> bool {
        self.carry_handles
    }

    fn send_handle(&mut self, peer: Peer, handle: Handle) -> Result<(), TransportError> {
        crate::transport::check_carries_handles(self, peer)?;
        self.send_message(peer, Message::Handle(handle))
    }

    fn recv_handle(&mut self, peer: Peer) -> Result<Handle, TransportError> {
        crate::transport::check_carries_handles(self, peer)?;
        match self.recv_message(peer)? {
            Message::Handle(handle) => Ok(handle),
            Message::Bytes(_) | Message::Words(_) => {
                Err(self.out_of_step(peer, "bytes", "a handle"))
            }
        }
    }
}

impl LocalTransport {
    /// The error of a message of the wrong form: the parties are out of step.
    fn out_of_step(&self, peer: Peer, got: &str, expected: &str) -> TransportError {
        TransportError::Malformed {
            peer: self.party.neighbour(peer),
            reason: format!("{got} where {expected} were expected: the parties are out of step"),
        }
    }
}

/// Runs `f` as the three parties P0, P1, P2 on three threads of this process, connected by a
/// [`LocalTransport`] with the default [`LocalConfig`], and returns the three results in
/// party order.
///
/// Each party's transport is dropped as soon as its closure returns or panics, so the others
/// see [`TransportError::Disconnected`] instead of waiting.
///
/// # Errors
/// [`TransportError::PartyPanicked`] naming the party whose closure panicked first (the
/// others typically fail after it, as their peer went away), or
/// [`TransportError::LocalIo`] if a thread could not be spawned.
pub fn run_local_3pc<T, F>(f: F) -> Result<[T; 3], TransportError>
where
    T: Send,
    F: Fn(&mut LocalTransport) -> T + Sync,
{
    run_local_3pc_with(LocalConfig::default(), f)
}

/// [`run_local_3pc`] with an explicit [`LocalConfig`].
///
/// # Errors
/// As [`run_local_3pc`].
pub fn run_local_3pc_with<T, F>(config: LocalConfig, f: F) -> Result<[T; 3], TransportError>
where
    T: Send,
    F: Fn(&mut LocalTransport) -> T + Sync,
{
    let slots = Mutex::new(LocalTransport::triple(config).map(Some));
    run_three(|party| {
        let taken = match slots.lock() {
            Ok(mut slots) => slots[party.index()].take(),
            Err(poisoned) => poisoned.into_inner()[party.index()].take(),
        };
        let mut transport = taken.ok_or_else(|| {
            TransportError::Config(format!("the transport of {party} was already taken"))
        })?;
        let out = f(&mut transport);
        drop(transport);
        Ok(out)
    })
}
