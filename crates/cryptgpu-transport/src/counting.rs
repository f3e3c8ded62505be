//! [`Counting`]: a [`Transport`] wrapper that counts bytes, messages and rounds, readable at
//! any time as a [`CommStats`] snapshot.

use std::fmt;
use std::ops::{Add, AddAssign};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::transport::check_carries_handles;
use crate::{Handle, PartyId, Peer, Transport, TransportError};

/// A pair of counters, one per neighbour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerCounts {
    /// The count for the next party.
    pub next: u64,
    /// The count for the previous party.
    pub prev: u64,
}

impl PeerCounts {
    /// The sum over both neighbours.
    pub fn total(&self) -> u64 {
        self.next + self.prev
    }

    /// The count for `peer`.
    pub fn get(&self, peer: Peer) -> u64 {
        match peer {
            Peer::Next => self.next,
            Peer::Prev => self.prev,
        }
    }

    fn since(&self, earlier: &PeerCounts) -> PeerCounts {
        PeerCounts {
            next: self.next.saturating_sub(earlier.next),
            prev: self.prev.saturating_sub(earlier.prev),
        }
    }
}

impl Add for PeerCounts {
    type Output = PeerCounts;
    fn add(self, rhs: PeerCounts) -> PeerCounts {
        PeerCounts {
            next: self.next + rhs.next,
            prev: self.prev + rhs.prev,
        }
    }
}

/// A snapshot of one party's communication counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CommStats {
    /// Payload bytes sent, per neighbour.
    pub bytes_sent: PeerCounts,
    /// Payload bytes received, per neighbour.
    pub bytes_received: PeerCounts,
    /// Messages sent, per neighbour.
    pub messages_sent: PeerCounts,
    /// Messages received, per neighbour.
    pub messages_received: PeerCounts,
    /// Communication rounds, as defined on [`Counting`].
    pub rounds: u64,
}

impl CommStats {
    /// The counts accumulated between `earlier` (a snapshot taken before) and this snapshot:
    /// what an operation cost when `earlier` was taken just before it.
    pub fn since(&self, earlier: &CommStats) -> CommStats {
        CommStats {
            bytes_sent: self.bytes_sent.since(&earlier.bytes_sent),
            bytes_received: self.bytes_received.since(&earlier.bytes_received),
            messages_sent: self.messages_sent.since(&earlier.messages_sent),
            messages_received: self.messages_received.since(&earlier.messages_received),
            rounds: self.rounds.saturating_sub(earlier.rounds),
        }
    }

    /// Payload bytes sent to both neighbours: the "bytes sent per party" of PROTOCOLS.md.
    pub fn total_bytes_sent(&self) -> u64 {
        self.bytes_sent.total()
    }

    /// Payload bytes received from both neighbours.
    pub fn total_bytes_received(&self) -> u64 {
        self.bytes_received.total()
    }

    /// Messages sent to both neighbours.
    pub fn total_messages_sent(&self) -> u64 {
        self.messages_sent.total()
    }

    /// Messages received from both neighbours.
    pub fn total_messages_received(&self) -> u64 {
        self.messages_received.total()
    }

    /// The round count of a protocol run by three parties: the largest of their counts.
    pub fn rounds_of(stats: &[CommStats]) -> u64 {
        stats.iter().map(|s| s.rounds).max().unwrap_or(0)
    }

    /// The field-wise sum of several snapshots (e.g. of the three parties). Note that the sum
    /// of `rounds` adds the parties' rounds; for a protocol's round count use [`CommStats::rounds_of`].
    pub fn sum<'a>(stats: impl IntoIterator<Item = &'a CommStats>) -> CommStats {
        stats
            .into_iter()
            .fold(CommStats::default(), |acc, s| acc + *s)
    }
}

impl Add for CommStats {
    type Output = CommStats;
    fn add(self, rhs: CommStats) -> CommStats {
        CommStats {
            bytes_sent: self.bytes_sent + rhs.bytes_sent,
            bytes_received: self.bytes_received + rhs.bytes_received,
            messages_sent: self.messages_sent + rhs.messages_sent,
            messages_received: self.messages_received + rhs.messages_received,
            rounds: self.rounds + rhs.rounds,
        }
    }
}

impl AddAssign for CommStats {
    fn add_assign(&mut self, rhs: CommStats) {
        *self = *self + rhs;
    }
}

impl fmt::Display for CommStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rounds, sent {} B in {} messages (next {} B, prev {} B), received {} B in {} messages",
            self.rounds,
            self.total_bytes_sent(),
            self.total_messages_sent(),
            self.bytes_sent.next,
            self.bytes_sent.prev,
            self.total_bytes_received(),
            self.total_messages_received(),
        )
    }
}

#[derive(Debug, Default)]
struct Cells {
    bytes_sent: [AtomicU64; 2],
    bytes_received: [AtomicU64; 2],
    messages_sent: [AtomicU64; 2],
    messages_received: [AtomicU64; 2],
    rounds: AtomicU64,
}

fn slot(peer: Peer) -> usize {
    match peer {
        Peer::Next => 0,
        Peer::Prev => 1,
    }
}

impl Cells {
    fn snapshot(&self) -> CommStats {
        let pair = |c: &[AtomicU64; 2]| PeerCounts {
            next: c[0].load(Ordering::Relaxed),
            prev: c[1].load(Ordering::Relaxed),
        };
        CommStats {
            bytes_sent: pair(&self.bytes_sent),
            bytes_received: pair(&self.bytes_received),
            messages_sent: pair(&self.messages_sent),
            messages_received: pair(&self.messages_received),
            rounds: self.rounds.load(Ordering::Relaxed),
        }
    }
}

/// A cheap, cloneable handle to a [`Counting`] transport's counters, readable from any
/// thread while the transport is in use.
#[derive(Clone, Debug)]
pub struct StatsHandle(Arc<Cells>);

impl StatsHandle {
    /// The counters now.
    pub fn snapshot(&self) -> CommStats {
        self.0.snapshot()
    }
}

/// Wraps a [`Transport`] and counts what goes through it: bytes and messages per neighbour
/// and direction, and rounds.
///
/// # Rounds
///
/// PROTOCOLS.md defines a round as "a step in which a party must wait for a message before it
/// can continue". `Counting` measures rounds as the length of the longest chain of messages,
/// each waiting on the one before, that ends at this party: a Lamport clock. Every message
/// carries its sender's count in an 8-byte header frame sent just before it (both ends must
/// wrap their transport in `Counting`); on a receive, the count becomes
/// `max(own, sender's + 1)`. So a reshare in which every party sends and then receives
/// costs one round, and a protocol in which P1 sends to P0, which then sends to P2, costs two
/// at P2, whatever the parties counted before. A protocol's round count is the largest count
/// over the three parties ([`CommStats::rounds_of`]).
///
/// Bytes are payload bytes: the header frames, framing and TLS overhead are not counted.
/// Counters cover operations that succeeded. Use [`CommStats::since`] to measure one
/// operation.
#[derive(Debug)]
pub struct Counting<T> {
    inner: T,
    cells: Arc<Cells>,
    /// This party's round count (the Lamport clock).
    depth: u64,
}

/// Bytes of the round-count header frame that precedes every counted message.
const HEADER_LEN: usize = 8;

impl<T: Transport> Counting<T> {
    /// Starts counting from zero.
    pub fn new(inner: T) -> Self {
        Counting {
            inner,
            cells: Arc::new(Cells::default()),
            depth: 0,
        }
    }

    /// The counters now.
    pub fn stats(&self) -> CommStats {
        self.cells.snapshot()
    }

    /// A handle that reads the counters from anywhere.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle(self.cells.clone())
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably (what goes through it directly is not counted).
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwraps the transport.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Sends the round-count header, then the message by `send` on the inner transport,
    /// and counts the message's `len` payload bytes.
    fn send_counted(
        &mut self,
        peer: Peer,
        len: usize,
        send: impl FnOnce(&mut T) -> Result<(), TransportError>,
    ) -> Result<(), TransportError> {
        self.inner.send(peer, &self.depth.to_le_bytes())?;
        send(&mut self.inner)?;
        let i = slot(peer);
        self.cells.bytes_sent[i].fetch_add(len as u64, Ordering::Relaxed);
        self.cells.messages_sent[i].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reads the round-count header, then the message by `recv` on the inner transport,
    /// and counts its `len(message)` payload bytes.
    fn recv_counted<M>(
        &mut self,
        peer: Peer,
        recv: impl FnOnce(&mut T) -> Result<M, TransportError>,
        len: impl FnOnce(&M) -> usize,
    ) -> Result<M, TransportError> {
        let sender_depth = self.recv_header(peer)?;
        let msg = recv(&mut self.inner)?;
        self.count_received(peer, len(&msg) as u64, sender_depth);
        Ok(msg)
    }

    /// Counts a message of `len` bytes received from `peer`, sent at the sender's round
    /// count `sender_depth`.
    fn count_received(&mut self, peer: Peer, len: u64, sender_depth: u64) {
        let i = slot(peer);
        self.cells.bytes_received[i].fetch_add(len, Ordering::Relaxed);
        self.cells.messages_received[i].fetch_add(1, Ordering::Relaxed);
        self.depth = self.depth.max(sender_depth.saturating_add(1));
        self.cells.rounds.store(self.depth, Ordering::Relaxed);
    }

    /// Reads the round-count header that precedes every counted message: the sender's
    /// round count.
    fn recv_header(&mut self, peer: Peer) -> Result<u64, TransportError> {
        let header = self.inner.recv(peer)?;
        <[u8; HEADER_LEN]>::try_from(header.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| TransportError::BadHeader {
                peer: self.inner.party().neighbour(peer),
                len: header.len(),
            })
    }
}

impl<T: Transport> Transport for Counting<T> {
    fn party(&self) -> PartyId {
        self.inner.party()
    }

    fn send(&mut self, peer: Peer, msg: &[u8]) -> Result<(), TransportError> {
        self.send_counted(peer, msg.len(), |t| t.send(peer, msg))
    }

    fn send_vec(&mut self, peer: Peer, msg: Vec<u8>) -> Result<(), TransportError> {
        self.send_counted(peer, msg.len(), |t| t.send_vec(peer, msg))
    }

    fn send_u64_vec(&mut self, peer: Peer, words: Vec<u64>) -> Result<(), TransportError> {
        self.send_counted(peer, 8 * words.len(), |t| t.send_u64_vec(peer, words))
    }

    fn recv(&mut self, peer: Peer) -> Result<Vec<u8>, TransportError> {
        self.recv_counted(peer, |t| t.recv(peer), Vec::len)
    }

    fn recv_u64s(&mut self, peer: Peer) -> Result<Vec<u64>, TransportError> {
        self.recv_counted(peer, |t| t.recv_u64s(peer), |w| 8 * w.len())
    }

    fn carries_handles(&self) -> bool {
        self.inner.carries_handles()
    }

    fn send_handle(&mut self, peer: Peer, handle: Handle) -> Result<(), TransportError> {
        check_carries_handles(&self.inner, peer)?;
        let len = handle.wire_len() as usize;
        self.send_counted(peer, len, |t| t.send_handle(peer, handle))
    }

    fn recv_handle(&mut self, peer: Peer) -> Result<Handle, TransportError> {
        check_carries_handles(&self.inner, peer)?;
        self.recv_counted(peer, |t| t.recv_handle(peer), |h| h.wire_len() as usize)
    }

    // `exchange` and `exchange_both` keep the trait's defaults: sends (which never wait for
    // the peer; every transport queues them) followed by receives.
}
