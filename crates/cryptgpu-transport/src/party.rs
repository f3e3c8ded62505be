//! Party identities ([`PartyId`]) and the two neighbours of a party in the ring ([`Peer`]).

use std::fmt;

use crate::TransportError;

/// One of the three parties P0, P1 and P2.
///
/// The parties sit in a ring: P_i's next party is P_(i+1 mod 3) and its previous party is
/// P_(i-1 mod 3). In 2-out-of-3 replicated secret sharing each party talks to exactly these two
/// neighbours, which are named relative to it by [`Peer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartyId(u8);

impl PartyId {
    /// Party P0.
    pub const P0: PartyId = PartyId(0);
    /// Party P1.
    pub const P1: PartyId = PartyId(1);
    /// Party P2.
    pub const P2: PartyId = PartyId(2);
    /// The three parties in order.
    pub const ALL: [PartyId; 3] = [PartyId::P0, PartyId::P1, PartyId::P2];

    /// The party with index `index` (0, 1 or 2).
    ///
    /// # Errors
    /// [`TransportError::InvalidParty`] for any other index.
    pub fn new(index: usize) -> Result<PartyId, TransportError> {
        match index {
            0..=2 => Ok(PartyId(index as u8)),
            _ => Err(TransportError::InvalidParty { index }),
        }
    }

    /// The index of this party: 0, 1 or 2.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The next party in the ring: P_(i+1 mod 3).
    pub fn next(self) -> PartyId {
        PartyId((self.0 + 1) % 3)
    }

    /// The previous party in the ring: P_(i-1 mod 3).
    pub fn prev(self) -> PartyId {
        PartyId((self.0 + 2) % 3)
    }

    /// The party that `peer` names, seen from this party.
    pub fn neighbour(self, peer: Peer) -> PartyId {
        match peer {
            Peer::Next => self.next(),
            Peer::Prev => self.prev(),
        }
    }

    /// How this party names `other`: `Some(Peer::Next)`, `Some(Peer::Prev)`, or `None` when
    /// `other` is this party itself.
    pub fn peer_of(self, other: PartyId) -> Option<Peer> {
        if other == self.next() {
            Some(Peer::Next)
        } else if other == self.prev() {
            Some(Peer::Prev)
        } else {
            None
        }
    }
}

impl fmt::Display for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P{}", self.0)
    }
}

impl TryFrom<usize> for PartyId {
    type Error = TransportError;

    fn try_from(index: usize) -> Result<PartyId, TransportError> {
        PartyId::new(index)
    }
}

impl From<PartyId> for usize {
    fn from(party: PartyId) -> usize {
        party.index()
    }
}

/// A neighbour of a party, named relative to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The next party: P_(i+1 mod 3) for party P_i.
    Next,
    /// The previous party: P_(i-1 mod 3) for party P_i.
    Prev,
}

impl Peer {
    /// Both neighbours, next first.
    pub const BOTH: [Peer; 2] = [Peer::Next, Peer::Prev];

    /// The other neighbour.
    pub fn other(self) -> Peer {
        match self {
            Peer::Next => Peer::Prev,
            Peer::Prev => Peer::Next,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Peer::Next => "next",
            Peer::Prev => "prev",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_neighbours() {
        for p in PartyId::ALL {
            assert_eq!(p.next().prev(), p);
            assert_eq!(p.prev().next(), p);
            assert_eq!(p.peer_of(p.next()), Some(Peer::Next));
            assert_eq!(p.peer_of(p.prev()), Some(Peer::Prev));
            assert_eq!(p.peer_of(p), None);
            assert_eq!(p.neighbour(Peer::Next), p.next());
        }
        assert_eq!(PartyId::P0.next(), PartyId::P1);
        assert_eq!(PartyId::P0.prev(), PartyId::P2);
        assert_eq!(PartyId::P2.next(), PartyId::P0);
        assert_eq!(PartyId::P1.to_string(), "P1");
        assert!(PartyId::new(3).is_err());
        assert_eq!(PartyId::new(2).unwrap().index(), 2);
    }
}
