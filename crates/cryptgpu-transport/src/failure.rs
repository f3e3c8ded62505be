//! [`FailureKind`]: the category of a failure, the only thing besides the party blamed that
//! crosses a link when a job stops.

use std::fmt;

/// Why a party stopped the job, as told to the other parties: a category, never text.
///
/// When a job fails, the abort frame sent to the neighbours holds the party blamed and the
/// [`FailureKind::code`] of one of these, nothing else: the error text of a failure may hold
/// secrets (input values, weights, file paths), so it stays with the party that saw it.
///
/// Codes 1 to 8 and 13 are a party's own failures (reported by that party, whose log has
/// the details); codes 9 to 12 are failures of a link, reported by the party at the other
/// end of it (see [`FailureKind::is_link_failure`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Code 1: an input or weight out of range (e.g. outside the fixed-point range).
    InputOutOfRange,
    /// Code 2: a malformed or unreadable input (a file, a manifest, a configuration).
    MalformedInput,
    /// Code 3: a local I/O error.
    LocalIo,
    /// Code 4: an output the party cannot write.
    OutputUnwritable,
    /// Code 5: a protocol error (e.g. a message of the wrong size, a manifest that does not
    /// match).
    Protocol,
    /// Code 6: a device error (GPU out of memory, a failed kernel).
    Device,
    /// Code 7: the party was interrupted (Ctrl-C or a termination signal).
    Interrupted,
    /// Code 8: an internal error (a bug, a panic). Also what an unknown code from a peer
    /// decodes to.
    Internal,
    /// Code 9: the connection to the party was lost (it died, was killed or the network
    /// failed), as seen by the neighbour that reports it.
    ConnectionLost,
    /// Code 10: the party stalled: it sent nothing, not even heartbeats, for half the receive
    /// timeout.
    Stalled,
    /// Code 11: the party sent garbage: a malformed stream, a TLS error, a frame or message
    /// too large, a bad header.
    Garbage,
    /// Code 12: the party did not send an expected message within the receive timeout
    /// (although it was alive), or did not connect in time.
    TimedOut,
    /// Code 13: the party was started wrongly: an option that is another party's to pass,
    /// a configuration it cannot use (reported by that party, before the job starts).
    Usage,
}

impl FailureKind {
    /// The kind's one-byte code on the wire (1 to 13).
    pub fn code(self) -> u8 {
        match self {
            FailureKind::InputOutOfRange => 1,
            FailureKind::MalformedInput => 2,
            FailureKind::LocalIo => 3,
            FailureKind::OutputUnwritable => 4,
            FailureKind::Protocol => 5,
            FailureKind::Device => 6,
            FailureKind::Interrupted => 7,
            FailureKind::Internal => 8,
            FailureKind::ConnectionLost => 9,
            FailureKind::Stalled => 10,
            FailureKind::Garbage => 11,
            FailureKind::TimedOut => 12,
            FailureKind::Usage => 13,
        }
    }

    /// The kind of a code; an unknown code (0, or above 13: a newer peer) is
    /// [`FailureKind::Internal`].
    pub fn from_code(code: u8) -> FailureKind {
        match code {
            1 => FailureKind::InputOutOfRange,
            2 => FailureKind::MalformedInput,
            3 => FailureKind::LocalIo,
            4 => FailureKind::OutputUnwritable,
            5 => FailureKind::Protocol,
            6 => FailureKind::Device,
            7 => FailureKind::Interrupted,
            9 => FailureKind::ConnectionLost,
            10 => FailureKind::Stalled,
            11 => FailureKind::Garbage,
            12 => FailureKind::TimedOut,
            13 => FailureKind::Usage,
            _ => FailureKind::Internal,
        }
    }

    /// What happened, in words that fit after "P1 failed: ".
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::InputOutOfRange => "an input or weight out of range",
            FailureKind::MalformedInput => "a malformed or unreadable input",
            FailureKind::LocalIo => "a local I/O error",
            FailureKind::OutputUnwritable => "an output it cannot write",
            FailureKind::Protocol => "a protocol error",
            FailureKind::Device => "a device error",
            FailureKind::Interrupted => "interrupted (Ctrl-C or a termination signal)",
            FailureKind::Internal => "an internal error",
            FailureKind::ConnectionLost => {
                "its connection was lost (its process died or was killed, or the network failed)"
            }
            FailureKind::Stalled => "it stalled (sent nothing, not even heartbeats)",
            FailureKind::Garbage => {
                "it sent garbage (a malformed stream, a TLS error or a frame or message too large)"
            }
            FailureKind::TimedOut => "it did not send an expected message in time",
            FailureKind::Usage => "a wrong command line or configuration",
        }
    }

    /// Whether this is the failure of a link, seen by the party at its other end
    /// ([`FailureKind::ConnectionLost`], [`FailureKind::Stalled`], [`FailureKind::Garbage`],
    /// [`FailureKind::TimedOut`]), rather than a party's own failure, whose details only that
    /// party has.
    pub fn is_link_failure(self) -> bool {
        matches!(
            self,
            FailureKind::ConnectionLost
                | FailureKind::Stalled
                | FailureKind::Garbage
                | FailureKind::TimedOut
        )
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_internal() {
        let mut seen = Vec::new();
        for code in 1..=13u8 {
            let kind = FailureKind::from_code(code);
            assert_eq!(kind.code(), code);
            assert!(!seen.contains(&kind));
            assert_eq!(kind.is_link_failure(), (9..=12).contains(&code), "{kind:?}");
            assert_eq!(kind.to_string(), kind.describe());
            seen.push(kind);
        }
        for code in [0u8, 14, 100, 255] {
            assert_eq!(FailureKind::from_code(code), FailureKind::Internal);
        }
        assert_eq!(
            FailureKind::InputOutOfRange.to_string(),
            "an input or weight out of range"
        );
        assert!(FailureKind::Stalled.describe().contains("sent nothing"));
    }
}
