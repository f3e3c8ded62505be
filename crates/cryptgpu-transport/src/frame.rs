//! Framing on a byte stream: an 8-byte little-endian payload length, then the payload.

use crate::{PartyId, TransportError};

/// Bytes in a frame header.
pub(crate) const HEADER_LEN: usize = 8;

/// Payload bytes reserved up front for a frame; larger frames grow as their bytes arrive, so
/// a length header alone never makes us allocate much.
const INITIAL_RESERVE: usize = 16 << 20;

/// Reassembles frames from stream chunks, enforcing the maximum frame length.
#[derive(Debug)]
pub(crate) struct FrameDecoder {
    peer: PartyId,
    max_frame_len: u64,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    /// `Some((len, payload so far))` once the header is complete.
    body: Option<(u64, Vec<u8>)>,
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

    /// Feeds `data`, pushing each completed frame to `out`.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        out: &mut Vec<Vec<u8>>,
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
                        let len = u64::from_le_bytes(self.header);
                        if len > self.max_frame_len {
                            return Err(TransportError::FrameTooLarge {
                                peer: self.peer,
                                len,
                                max: self.max_frame_len,
                            });
                        }
                        self.header_filled = 0;
                        let reserve = usize::try_from(len)
                            .unwrap_or(usize::MAX)
                            .min(INITIAL_RESERVE);
                        self.body = Some((len, Vec::with_capacity(reserve)));
                        self.complete_if_done(out);
                    }
                }
                Some((len, payload)) => {
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

    fn complete_if_done(&mut self, out: &mut Vec<Vec<u8>>) {
        if let Some((len, payload)) = &self.body
            && payload.len() as u64 == *len
            && let Some((_, payload)) = self.body.take()
        {
            out.push(payload);
        }
    }

    /// The error for a stream that ended here: [`TransportError::Truncated`] in the middle of
    /// a frame, [`TransportError::Disconnected`] between frames.
    pub(crate) fn end_of_stream(&self) -> TransportError {
        match &self.body {
            Some((len, payload)) => TransportError::Truncated {
                peer: self.peer,
                expected: len.saturating_add(HEADER_LEN as u64),
                received: payload.len() as u64 + HEADER_LEN as u64,
            },
            None if self.header_filled > 0 => TransportError::Truncated {
                peer: self.peer,
                expected: HEADER_LEN as u64,
                received: self.header_filled as u64,
            },
            None => TransportError::Disconnected { peer: self.peer },
        }
    }
}

/// The header of a frame with a payload of `len` bytes.
pub(crate) fn header(len: usize) -> [u8; HEADER_LEN] {
    (len as u64).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut v = header(payload.len()).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn reassembles_across_any_split() {
        let mut stream = frame(b"hello");
        stream.extend(frame(b""));
        stream.extend(frame(&[7u8; 300]));
        for chunk in 1..stream.len() {
            let mut dec = FrameDecoder::new(PartyId::P1, 1000);
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                dec.feed(piece, &mut out).unwrap();
            }
            assert_eq!(out, vec![b"hello".to_vec(), Vec::new(), vec![7u8; 300]]);
            assert!(dec.end_of_stream().is_disconnected());
        }
    }

    #[test]
    fn too_large_and_truncated() {
        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        let mut out = Vec::new();
        let err = dec.feed(&header(11), &mut out).unwrap_err();
        assert!(matches!(
            err,
            TransportError::FrameTooLarge {
                len: 11,
                max: 10,
                ..
            }
        ));

        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        dec.feed(&frame(b"0123456789")[..12], &mut out).unwrap();
        assert!(matches!(
            dec.end_of_stream(),
            TransportError::Truncated {
                expected: 18,
                received: 12,
                ..
            }
        ));

        let mut dec = FrameDecoder::new(PartyId::P2, 10);
        dec.feed(&[1, 0, 0], &mut out).unwrap();
        assert!(matches!(
            dec.end_of_stream(),
            TransportError::Truncated {
                expected: 8,
                received: 3,
                ..
            }
        ));
        assert!(out.is_empty());
    }
}
