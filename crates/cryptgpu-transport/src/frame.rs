//! Framing on a byte stream. A frame is an 8-byte little-endian header, the frame's kind in
//! its top byte and its payload length in the low 56 bits, then the payload.
//!
//! A message is one or more [`FrameKind::Data`] frames, the last one
//! [`FrameKind::DataEnd`], so a message of any size crosses a link in frames of bounded
//! size. Control frames travel between the frames of messages: a heartbeat (the sender is
//! alive), a goodbye (the sender is done and sends nothing more) and an abort (the sender
//! stops the job, naming the party it blames and the [`FailureKind`] of the failure: two
//! bytes, never text, so no error message crosses a link).

use crate::{FailureKind, PartyId, TransportError};

/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 8;

/// The low 56 bits of a header: the payload length.
const LEN_MASK: u64 = (1 << 56) - 1;

/// The payload of an abort frame: the party blamed and the failure's code.
pub(crate) const ABORT_LEN: usize = 2;

/// Payload bytes reserved up front for a frame; larger frames grow as their bytes arrive, so
/// a length header alone never makes us allocate much.
const INITIAL_RESERVE: usize = 1 << 20;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    /// A piece of a message; more pieces follow.
    Data = 0,
    /// The last (or only) piece of a message.
    DataEnd = 1,
    /// Nothing: the sender is alive. Empty payload.
    Heartbeat = 2,
    /// The sender finished and will send nothing more. Empty payload.
    Goodbye = 3,
    /// The sender stops the job: exactly two bytes, the party it blames (0, 1 or 2) and the
    /// [`FailureKind::code`] of the failure. Accepted whatever the maximum frame length.
    Abort = 4,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => FrameKind::Data,
            1 => FrameKind::DataEnd,
            2 => FrameKind::Heartbeat,
            3 => FrameKind::Goodbye,
            4 => FrameKind::Abort,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// What it carries.
    pub(crate) kind: FrameKind,
    /// Its payload.
    pub(crate) payload: Vec<u8>,
}

/// The header of a frame of `kind` with a payload of `len` bytes (`len` < 2^56).
pub(crate) fn header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    ((len as u64 & LEN_MASK) | (kind as u64) << 56).to_le_bytes()
}

/// The payload of an abort frame blaming `culprit` for a failure of `kind`: two bytes, by
/// construction nothing else.
pub(crate) fn abort_payload(culprit: PartyId, kind: FailureKind) -> [u8; ABORT_LEN] {
    [culprit.index() as u8, kind.code()]
}

/// Reads an abort frame's payload: the party blamed and the kind of failure. Anything but
/// two bytes naming an existing party is malformed; an unknown code is
/// [`FailureKind::Internal`].
pub(crate) fn parse_abort(
    from: PartyId,
    payload: &[u8],
) -> Result<(PartyId, FailureKind), TransportError> {
    let malformed = |reason: String| TransportError::Malformed { peer: from, reason };
    let &[culprit, code] = payload else {
        return Err(malformed(format!(
            "an abort frame with a {}-byte payload, not {ABORT_LEN}",
            payload.len()
        )));
    };
    let culprit = PartyId::new(usize::from(culprit))
        .map_err(|_| malformed("an abort frame blaming a party that does not exist".to_string()))?;
    Ok((culprit, FailureKind::from_code(code)))
}

/// Reassembles frames from stream chunks, enforcing the maximum frame length and the shape of
/// control frames.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    peer: PartyId,
    max_frame_len: u64,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    /// `Some((kind, len, payload so far))` once the header is complete.
    body: Option<(FrameKind, u64, Vec<u8>)>,
}

impl FrameDecoder {
    pub(crate) fn new(peer: PartyId, max_frame_len: u64) -> Self {
        FrameDecoder {
            peer,
            max_frame_len,
            header: [0; HEADER_LEN],
            header_filled: 0,
            body: None,
        }
    }

    /// Feeds `data`, pushing each completed frame to `out`. After an error the decoder is
    /// unusable (the stream cannot be resynchronised).
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut Vec<Frame>,
    ) -> Result<(), TransportError> {
        while !data.is_empty() {
            match &mut self.body {
                None => {
                    let take = (HEADER_LEN - self.header_filled).min(data.len());
                    self.header[self.header_filled..self.header_filled + take]
                        .copy_from_slice(&data[..take]);
                    self.header_filled += take;
                    data = &data[take..];
                    if self.header_filled == HEADER_LEN {
                        self.header_filled = 0;
                        let (kind, len) = self.check_header()?;
                        let reserve = usize::try_from(len)
                            .unwrap_or(usize::MAX)
                            .min(INITIAL_RESERVE);
                        self.body = Some((kind, len, Vec::with_capacity(reserve)));
                        self.complete_if_done(out);
                    }
                }
                Some((_, len, payload)) => {
                    let missing = *len - payload.len() as u64;
                    let take = usize::try_from(missing)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    payload.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    self.complete_if_done(out);
                }
            }
        }
        Ok(())
    }

    fn check_header(&self) -> Result<(FrameKind, u64), TransportError> {
        let word = u64::from_le_bytes(self.header);
        let len = word & LEN_MASK;
        let kind_byte = (word >> 56) as u8;
        let malformed = |reason: String| TransportError::Malformed {
            peer: self.peer,
            reason,
        };
        let kind = FrameKind::from_byte(kind_byte)
            .ok_or_else(|| malformed(format!("a frame of unknown kind {kind_byte}")))?;
        if kind == FrameKind::Abort {
            return if len == ABORT_LEN as u64 {
                Ok((kind, len))
            } else {
                Err(malformed(format!(
                    "an abort frame with a {len}-byte payload, not {ABORT_LEN}"
                )))
            };
        }
        if len > self.max_frame_len {
            return Err(TransportError::FrameTooLarge {
                peer: self.peer,
                len,
                max: self.max_frame_len,
            });
        }
        match kind {
            FrameKind::Heartbeat | FrameKind::Goodbye if len != 0 => Err(malformed(format!(
                "a {kind:?} frame with a {len}-byte payload"
            ))),
            _ => Ok((kind, len)),
        }
    }

    fn complete_if_done(&mut self, out: &mut Vec<Frame>) {
        if let Some((_, len, payload)) = &self.body
            && payload.len() as u64 == *len
            && let Some((kind, _, payload)) = self.body.take()
        {
            out.push(Frame { kind, payload });
        }
    }

    /// The error for a stream that ended in the middle of a frame, if it did.
    pub(crate) fn truncation(&self) -> Option<TransportError> {
        match &self.body {
            Some((_, len, payload)) => Some(TransportError::Truncated {
                peer: self.peer,
                expected: len.saturating_add(HEADER_LEN as u64),
                received: payload.len() as u64 + HEADER_LEN as u64,
            }),
            None if self.header_filled > 0 => Some(TransportError::Truncated {
                peer: self.peer,
                expected: HEADER_LEN as u64,
                received: self.header_filled as u64,
            }),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: FrameKind, payload: &[u8]) -> Vec<u8> {
        let mut v = header(kind, payload.len()).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reassembles_across_any_split() {
        let mut stream = frame(FrameKind::DataEnd, b"hello");
        stream.extend(frame(FrameKind::Heartbeat, b""));
        stream.extend(frame(FrameKind::Data, &[7u8; 300]));
        stream.extend(frame(FrameKind::DataEnd, b""));
        stream.extend(frame(
            FrameKind::Abort,
            &abort_payload(PartyId::P2, FailureKind::Device),
        ));
        stream.extend(frame(FrameKind::Goodbye, b""));
        for chunk in 1..stream.len() {
            let mut dec = FrameDecoder::new(PartyId::P1, 1000);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                dec.feed(piece, &mut out).unwrap();
            }
            let kinds: Vec<FrameKind> = out.iter().map(|f| f.kind).collect();
            assert_eq!(
                kinds,
                [
                    FrameKind::DataEnd,
                    FrameKind::Heartbeat,
                    FrameKind::Data,
                    FrameKind::DataEnd,
                    FrameKind::Abort,
                    FrameKind::Goodbye
                ]
            );
            assert_eq!(out[0].payload, b"hello");
            assert_eq!(out[2].payload, vec![7u8; 300]);
            assert_eq!(
                parse_abort(PartyId::P1, &out[4].payload).unwrap(),
                (PartyId::P2, FailureKind::Device)
            );
            assert!(dec.truncation().is_none());
        }
    }

    #[test]
    fn too_large_malformed_and_truncated() {
        let mut out = Vec::new();
        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        let err = dec
            .feed(&header(FrameKind::Data, 11), &mut out)
            .unwrap_err();
        assert!(matches!(
            err,
            TransportError::FrameTooLarge {
                len: 11,
                max: 10,
                ..
            }
        ));
        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        let mut bad = header(FrameKind::Data, 1);
        bad[7] = 9;
        assert!(matches!(
            dec.feed(&bad, &mut out).unwrap_err(),
            TransportError::Malformed {
                peer: PartyId::P2,
                ..
            }
        ));
        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        assert!(matches!(
            dec.feed(&header(FrameKind::Heartbeat, 1), &mut out)
                .unwrap_err(),
            TransportError::Malformed { .. }
        ));
        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        dec.feed(&frame(FrameKind::DataEnd, b"0123456789")[..12], &mut out)
            .unwrap();
        assert!(matches!(
            dec.truncation(),
            Some(TransportError::Truncated {
                expected: 18,
                received: 12,
                ..
            })
        ));
        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        dec.feed(&[1, 0, 0], &mut out).unwrap();
        assert!(matches!(
            dec.truncation(),
            Some(TransportError::Truncated {
                expected: 8,
                received: 3,
                ..
            })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn abort_frames_hold_exactly_a_party_and_a_code() {
        // Parsing is strict: two bytes, an existing party; an unknown code is Internal.
        for bad in [
            &[][..],
            &[1],
            &[1, 5, 0],
            &[0, 1, b'o', b'o', b'm'],
            &[3, 1],
        ] {
            assert!(
                matches!(
                    parse_abort(PartyId::P0, bad),
                    Err(TransportError::Malformed {
                        peer: PartyId::P0,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_abort(PartyId::P0, &[2, 200]).unwrap(),
            (PartyId::P2, FailureKind::Internal)
        );
        // The decoder refuses an abort frame of any other length, even under a large frame
        // limit, and takes a two-byte one even under a limit of one byte.
        for len in [0usize, 1, 3, 1025, 1 << 20] {
            let mut dec = FrameDecoder::new(PartyId::P1, u64::MAX >> 8);
            let mut out = Vec::new();
            assert!(
                matches!(
                    dec.feed(&header(FrameKind::Abort, len), &mut out),
                    Err(TransportError::Malformed { .. })
                ),
                "{len}"
            );
        }
        let mut dec = FrameDecoder::new(PartyId::P1, 1);
        let mut out = Vec::new();
        dec.feed(
            &frame(
                FrameKind::Abort,
                &abort_payload(PartyId::P0, FailureKind::Stalled),
            ),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            parse_abort(PartyId::P1, &out[0].payload).unwrap(),
            (PartyId::P0, FailureKind::Stalled)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100_000, ..ProptestConfig::default() })]

        /// Arbitrary bytes, split anywhere, give frames or an error, never a panic; frames
        /// respect the limit.
        #[test]
        fn arbitrary_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            split in 1usize..64,
            max in 0u64..100,
        ) {
            let mut dec = FrameDecoder::new(PartyId::P0, max);
            let mut out = Vec::new();
            for piece in bytes.chunks(split) {
                if dec.feed(piece, &mut out).is_err() {
                    break;
                }
            }
            let _ = dec.truncation();
            for f in &out {
                if f.kind == FrameKind::Abort {
                    prop_assert_eq!(f.payload.len(), ABORT_LEN);
                    let _ = parse_abort(PartyId::P0, &f.payload);
                } else {
                    prop_assert!(f.payload.len() as u64 <= max);
                }
            }
        }

        /// Valid frames with random kinds and payloads decode to themselves across splits.
        #[test]
        fn valid_streams_round_trip(
            frames in proptest::collection::vec((0u8..5, proptest::collection::vec(any::<u8>(), 0..40)), 0..8),
            split in 1usize..50,
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            for (kind, payload) in frames {
                let kind = FrameKind::from_byte(kind).unwrap();
                let payload = match kind {
                    FrameKind::Heartbeat | FrameKind::Goodbye => Vec::new(),
                    FrameKind::Abort => abort_payload(PartyId::P1, FailureKind::from_code(payload.first().copied().unwrap_or(0))).to_vec(),
                    _ => payload,
                };
                stream.extend(frame(kind, &payload));
                expected.push(Frame { kind, payload });
            }
            let mut dec = FrameDecoder::new(PartyId::P0, 100);
            let mut out = Vec::new();
            for piece in stream.chunks(split) {
                dec.feed(piece, &mut out).unwrap();
            }
            prop_assert_eq!(out, expected);
        }

        /// Whatever party and code are passed, an abort payload is those two bytes and
        /// nothing more, and it parses back to them.
        #[test]
        fn an_abort_payload_is_never_more_than_two_bytes(party in 0usize..3, code in any::<u8>()) {
            let culprit = PartyId::new(party).unwrap();
            let kind = FailureKind::from_code(code);
            let payload = abort_payload(culprit, kind);
            prop_assert_eq!(payload.len(), 2);
            prop_assert_eq!(payload, [party as u8, kind.code()]);
            prop_assert_eq!(parse_abort(PartyId::P0, &payload).unwrap(), (culprit, kind));
        }
    }
}
