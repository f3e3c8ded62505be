//! The messages between a client and one server of the service, over its mutual-TLS
//! connection: length-prefixed frames, each a JSON header, some followed by one frame of
//! ring elements (little-endian `u64`s).
//!
//! | from | header | then |
//! | --- | --- | --- |
//! | client | `hello` (its name) | |
//! | server | `service` (the public [`ServiceDescription`]) or `error` | |
//! | client | `query` (id, examples, what to reveal) | its two shares, `2·n·d` words |
//! | server | `result` (id, batch, shape) or `error` | its output share, `n·k` words |
//!
//! The model owner's client, when the model comes from a client (`[serve] model_client`),
//! opens a connection of its own to each server for an upload:
//!
//! | from | header | then |
//! | --- | --- | --- |
//! | client | `upload` (its name, the upload's id, number format, sizes) | the architecture (JSON) |
//! | server | `upload_ready` (the id) or `error` | |
//! | client | | per tensor its two shares, `2·len` words |
//! | server | `uploaded` (the id) or `error` | |
//!
//! Every size is checked before it is read: a header is at most [`MAX_HEADER_BYTES`], a data
//! frame exactly what its header announced, and no more than the service allows.

use std::io::{Read, Write};

use anyhow::{Context, Result, bail, ensure};
use cryptgpu_nn::data::Normalization;
use serde::{Deserialize, Serialize};

use crate::manifest::Reveal;

/// The version of these messages; a client and a server of different versions refuse
/// each other by name.
pub const WIRE_VERSION: u32 = 1;

/// The longest header a peer may send.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The longest architecture an upload may carry.
pub const MAX_ARCHITECTURE_BYTES: usize = 16 << 20;

/// What the servers tell a client about the service: all of it public (the model's input
/// and output shapes, the number format), so that the client can share its input and read
/// its result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceDescription {
    /// The server that answers (0, 1 or 2).
    pub server: usize,
    /// The servers' session: the same at all three while they serve together; a new one
    /// after they set up again.
    pub session: String,
    /// The model's name.
    pub model: String,
    /// One example's shape.
    pub input_shape: Vec<usize>,
    /// One example's output: the number of classes (logits per example).
    pub classes: usize,
    /// Fractional bits of the fixed-point format.
    pub frac_bits: u32,
    /// The most examples one query may carry.
    pub max_query_examples: usize,
    /// What a query may ask to have revealed (`[serve] answers`).
    #[serde(default = "all_answers")]
    pub answers: Vec<Answer>,
    /// How the model's inputs were normalised in training (images and `uint8` arrays are
    /// normalised so before they are shared).
    pub normalization: Option<InputNormalization>,
}

/// The public normalisation of a model's inputs, as the service description carries it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputNormalization {
    /// Channel means on the `[0, 1]` scale.
    pub mean: Vec<f64>,
    /// Channel standard deviations.
    pub std: Vec<f64>,
}

impl From<Normalization> for InputNormalization {
    fn from(n: Normalization) -> Self {
        InputNormalization {
            mean: n.mean,
            std: n.std,
        }
    }
}

impl From<InputNormalization> for Normalization {
    fn from(n: InputNormalization) -> Self {
        Normalization {
            mean: n.mean,
            std: n.std,
        }
    }
}

impl ServiceDescription {
    /// Elements of one example.
    pub fn example_len(&self) -> usize {
        self.input_shape.iter().product()
    }
}

/// What a query asks to have revealed to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The class of each example (the arg-max of the logits, computed privately).
    Class,
    /// The logits.
    Logits,
    /// The softmax of the logits.
    Probabilities,
}

/// "class, logits" for the answers a service allows.
pub fn answer_names(answers: &[Answer]) -> String {
    answers
        .iter()
        .map(|a| a.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn all_answers() -> Vec<Answer> {
    Answer::ALL.to_vec()
}

impl Answer {
    /// The three kinds.
    pub const ALL: [Answer; 3] = [Answer::Class, Answer::Logits, Answer::Probabilities];

    /// Its name in `[serve] answers` and `--reveal`.
    pub fn name(self) -> &'static str {
        match self {
            Answer::Class => "class",
            Answer::Logits => "logits",
            Answer::Probabilities => "probabilities",
        }
    }

    /// From `--reveal`.
    pub fn from_reveal(reveal: Reveal) -> Answer {
        match reveal {
            Reveal::Class => Answer::Class,
            Reveal::Logits => Answer::Logits,
            Reveal::Probabilities => Answer::Probabilities,
        }
    }

    /// Output elements per example for a model of `classes` classes.
    pub fn width(self, classes: usize) -> usize {
        match self {
            Answer::Class => 1,
            Answer::Logits | Answer::Probabilities => classes,
        }
    }
}

/// Why a server did not answer a query. Every kind but `Failed` is about the service's
/// state or the query's form, never about a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The queue is full, or this client has too many queries in flight: retry later.
    Busy,
    /// The servers are not serving together now (one is down or they are setting up).
    Unavailable,
    /// The query does not fit the service (shape, size, id) or the message is malformed.
    Malformed,
    /// The query was not answered in time (it did not reach all three servers, or the
    /// service is overloaded).
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// The client's certificate does not carry the name it claimed, or the versions
    /// differ.
    Refused,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Busy => "busy",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Malformed => "malformed query",
            ErrorKind::Timeout => "timed out",
            ErrorKind::ShuttingDown => "shutting down",
            ErrorKind::Refused => "refused",
        })
    }
}

/// A client's header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientMessage {
    /// The first message: who the client is (checked against its certificate).
    Hello {
        /// The DNS name in its certificate.
        client: String,
        /// [`WIRE_VERSION`].
        version: u32,
    },
    /// The first message of a model upload, instead of `hello`: the architecture (a
    /// frame of `architecture_bytes` bytes of JSON) follows; once the server says
    /// `upload_ready`, each tensor's two shares in the order the architecture gives them.
    Upload {
        /// The DNS name in its certificate (the deployment's `model_client`).
        client: String,
        /// [`WIRE_VERSION`].
        version: u32,
        /// The upload's id, the same at all three servers (hex, at most 64 characters).
        id: String,
        /// Bytes of the architecture frame.
        architecture_bytes: usize,
        /// Tensors that follow.
        tensors: usize,
        /// Fractional bits of the shares' fixed-point format.
        frac_bits: u32,
        /// Truncation the servers use (`exact` or `probabilistic`; default exact).
        truncation: Option<String>,
        /// ℓ of comparisons (default: the format's).
        comparison_bits: Option<u32>,
    },
    /// A query; its shares follow.
    Query {
        /// The client's id of the query, the same at all three servers (hex, at most 64
        /// characters).
        id: String,
        /// Examples in it.
        examples: usize,
        /// What to reveal.
        answer: Answer,
    },
}

/// A server's header.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to `hello`.
    Service(ServiceDescription),
    /// A query's result; this server's share of it follows.
    Result {
        /// The query's id.
        id: String,
        /// The batch it ran in (counted per session by the servers).
        batch: u64,
        /// Examples in that batch, all clients together.
        batch_examples: usize,
        /// The result's shape, `[examples, width]`.
        shape: Vec<usize>,
    },
    /// The upload's header and architecture were checked: its shares may follow.
    UploadReady {
        /// The upload's id.
        id: String,
    },
    /// The upload was received and stored: the servers serve it once all three hold it.
    Uploaded {
        /// The upload's id.
        id: String,
    },
    /// A query (or the connection) was refused.
    Error {
        /// The query's id, if the error is about one query.
        id: Option<String>,
        /// Its kind.
        kind: ErrorKind,
        /// In words; never a value of a share or a secret.
        message: String,
    },
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    let len = u32::try_from(bytes.len()).context("a frame longer than 4 GiB")?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)?;
    Ok(())
}

/// Reads one frame of at most `limit` bytes.
pub fn read_frame(r: &mut impl Read, limit: usize) -> Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    ensure!(
        len <= limit,
        "a frame of {len} bytes where at most {limit} were expected"
    );
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// Writes a header.
pub fn write_header<M: Serialize>(w: &mut impl Write, message: &M) -> Result<()> {
    write_frame(w, &serde_json::to_vec(message)?)
}

/// Reads a header.
pub fn read_header<M: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<M> {
    let bytes = read_frame(r, MAX_HEADER_BYTES)?;
    serde_json::from_slice(&bytes).context("a header that is not one of the service's messages")
}

/// Writes ring elements as one frame.
pub fn write_words(w: &mut impl Write, words: &[u64]) -> Result<()> {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    write_frame(w, &bytes)
}

/// Reads one frame of exactly `count` ring elements.
pub fn read_words(r: &mut impl Read, count: usize) -> Result<Vec<u64>> {
    let bytes = read_frame(r, count.saturating_mul(8))?;
    if bytes.len() != count * 8 {
        bail!(
            "{} bytes of shares where {} were announced",
            bytes.len(),
            count * 8
        );
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Checks a query id: 1 to 64 hex digits.
pub fn check_query_id(id: &str) -> Result<()> {
    ensure!(
        !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "a query id is 1 to 64 hex digits"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_sizes_are_checked() {
        let mut buf = Vec::new();
        write_header(
            &mut buf,
            &ClientMessage::Query {
                id: "ab12".into(),
                examples: 2,
                answer: Answer::Logits,
            },
        )
        .unwrap();
        write_words(&mut buf, &[1, u64::MAX, 3]).unwrap();
        let mut r = &buf[..];
        let header: ClientMessage = read_header(&mut r).unwrap();
        assert!(matches!(header, ClientMessage::Query { examples: 2, .. }));
        assert_eq!(read_words(&mut r, 3).unwrap(), [1, u64::MAX, 3]);

        let mut buf = Vec::new();
        write_words(&mut buf, &[1, 2, 3]).unwrap();
        let err = read_words(&mut &buf[..], 2).unwrap_err();
        assert!(err.to_string().contains("at most 16"), "{err}");
        let err = read_words(&mut &buf[..], 4).unwrap_err();
        assert!(err.to_string().contains("24 bytes"), "{err}");
        let mut huge = Vec::new();
        huge.extend(u32::MAX.to_le_bytes());
        assert!(read_header::<ClientMessage>(&mut &huge[..]).is_err());
        assert!(check_query_id("00ff").is_ok());
        assert!(check_query_id("").is_err());
        assert!(check_query_id("zz").is_err());
        assert!(check_query_id(&"a".repeat(65)).is_err());
    }
}
