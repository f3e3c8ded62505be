//! A data owner's side of the service, for one who runs no server: [`Client`] connects to
//! the three servers over mutual TLS, splits each input into three additive shares with the
//! OS's randomness and sends each server its two (x_i, x_{i+1}), so no single server sees
//! the input; it adds the three servers' parts of the answer, a fresh sharing each server
//! made of it, so no single server sees the result.
//!
//! ```no_run
//! use cryptgpu::config::ClientSetup;
//! use cryptgpu::serve::client::Client;
//! use cryptgpu::serve::wire::Answer;
//!
//! # fn main() -> anyhow::Result<()> {
//! let setup = ClientSetup::load("parties.toml".as_ref(), "client0", None, None)?;
//! let mut client = Client::connect(&setup)?;
//! let pixels = vec![0.0f64; 784]; // one MNIST digit, normalised as the model expects
//! let answer = client.query(&pixels, 1, Answer::Class)?;
//! println!("class {:?} (batch {} of {} examples)", answer.classes(), answer.batch, answer.batch_examples);
//! # Ok(())
//! # }
//! ```

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cryptgpu_ring::FixedPoint;
use cryptgpu_transport::rustls::pki_types::ServerName;
use cryptgpu_transport::rustls::{ClientConnection, StreamOwned};

use super::shares::{additive_shares, getrandom_fill, hex};
use super::wire::{
    Answer, ClientMessage, ErrorKind, ServerMessage, ServiceDescription, WIRE_VERSION, read_header,
    read_words, write_header, write_words,
};
use crate::config::ClientSetup;

/// How long a client waits to connect to a server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A server refused or failed a query (or the connection): which server, why, in words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("server P{server}: {kind}: {message}")]
pub struct ServiceError {
    /// The server (0, 1 or 2).
    pub server: usize,
    /// Why.
    pub kind: ErrorKind,
    /// In words.
    pub message: String,
}

/// A client's TLS connection to one server.
pub type ServerStream = StreamOwned<ClientConnection, TcpStream>;
type Tls = ServerStream;

/// A client connected to the three servers of a service.
pub struct Client {
    name: String,
    servers: Vec<Tls>,
    description: ServiceDescription,
    fixed: FixedPoint,
    timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// What a query got back.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryAnswer {
    /// What was asked.
    pub answer: Answer,
    /// The values, `[examples, width]` row-major: class indices for [`Answer::Class`].
    pub values: Vec<f64>,
    /// Values per example (1 for classes, the classes for scores).
    pub width: usize,
    /// The batch the query ran in (numbered per session by the servers).
    pub batch: u64,
    /// Examples in that batch, all clients together.
    pub batch_examples: usize,
    /// From sending the shares to holding the answer.
    pub latency: Duration,
    /// Bytes this client sent for the query (to all three servers, payload only).
    pub bytes_sent: u64,
}

impl QueryAnswer {
    /// The class of each example: the class itself, or the arg-max of its scores.
    pub fn classes(&self) -> Vec<usize> {
        self.values
            .chunks_exact(self.width.max(1))
            .map(|row| match self.answer {
                Answer::Class => row[0] as usize,
                Answer::Logits | Answer::Probabilities => {
                    let mut best = 0;
                    for (k, &v) in row.iter().enumerate() {
                        if v > row[best] {
                            best = k;
                        }
                    }
                    best
                }
            })
            .collect()
    }
}

impl Client {
    /// Connects to the three servers, says who it is, and checks that they serve one model
    /// in one session.
    pub fn connect(setup: &ClientSetup) -> Result<Client> {
        let mut servers = Vec::with_capacity(3);
        let mut descriptions = Vec::with_capacity(3);
        for (i, (address, identity)) in setup.servers.iter().zip(&setup.identities).enumerate() {
            let (tls, description) = connect_one(setup, i, address, identity)?;
            servers.push(tls);
            descriptions.push(description);
        }
        let first = descriptions[0].clone();
        for (i, d) in descriptions.iter().enumerate() {
            ensure!(
                d.server == i,
                "the server at {} says it is P{}, not P{i}",
                setup.servers[i],
                d.server
            );
            let same = |d: &ServiceDescription| ServiceDescription {
                server: 0,
                ..d.clone()
            };
            if same(d) != same(&first) {
                bail!(ServiceError {
                    server: i,
                    kind: ErrorKind::Unavailable,
                    message: format!(
                        "P0 and P{i} describe different services (session {} and {}): one of \
                         them is setting up again; retry",
                        first.session, d.session
                    ),
                });
            }
        }
        let fixed = FixedPoint::new(first.frac_bits)
            .with_context(|| format!("the servers' number format (f = {})", first.frac_bits))?;
        Ok(Client {
            name: setup.name.clone(),
            servers,
            description: first,
            fixed,
            timeout: setup.query_timeout + Duration::from_secs(5),
        })
    }

    /// What the servers serve.
    pub fn description(&self) -> &ServiceDescription {
        &self.description
    }

    /// Asks for `answer` on `examples` examples, `inputs` holding them row-major, each of
    /// the service's input shape and normalised as the model expects.
    ///
    /// # Errors
    /// A value outside the fixed-point range (said here, before anything is sent); a
    /// [`ServiceError`] from a server (busy, unavailable, ...); a broken connection.
    pub fn query(
        &mut self,
        inputs: &[f64],
        examples: usize,
        answer: Answer,
    ) -> Result<QueryAnswer> {
        let d = self.description.example_len();
        ensure!(
            self.description.answers.contains(&answer),
            "the service reveals only {}, not {}",
            super::wire::answer_names(&self.description.answers),
            answer.name()
        );
        ensure!(
            examples >= 1 && examples <= self.description.max_query_examples,
            "a query carries 1 to {} examples; split the input",
            self.description.max_query_examples
        );
        ensure!(
            inputs.len() == examples * d,
            "{} values for {examples} examples of shape {:?}",
            inputs.len(),
            self.description.input_shape
        );
        let x = self
            .fixed
            .encode_slice(inputs)
            .context("an input value cannot be encoded in the servers' fixed-point format")?;
        let shares = additive_shares(&x)?;
        let mut id_bytes = [0u8; 16];
        getrandom_fill(&mut id_bytes)?;
        let id = hex(&id_bytes);
        let start = Instant::now();
        let header = ClientMessage::Query {
            id: id.clone(),
            examples,
            answer,
        };
        let mut bytes_sent = 0;
        for (i, tls) in self.servers.iter_mut().enumerate() {
            let mut both = shares[i].clone();
            both.extend_from_slice(&shares[(i + 1) % 3]);
            bytes_sent += 8 * both.len() as u64;
            write_header(tls, &header).with_context(|| format!("sending to server P{i}"))?;
            write_words(tls, &both).with_context(|| format!("sending to server P{i}"))?;
            tls.flush()
                .with_context(|| format!("sending to server P{i}"))?;
        }
        let width = answer.width(self.description.classes);
        let mut sum = vec![0u64; examples * width];
        let mut batch = None;
        let mut refusal = None;
        for (i, tls) in self.servers.iter_mut().enumerate() {
            tls.sock.set_read_timeout(Some(self.timeout))?;
            let message: ServerMessage =
                read_header(tls).with_context(|| format!("waiting for server P{i}'s answer"))?;
            match message {
                ServerMessage::Result {
                    id: got,
                    batch: b,
                    batch_examples,
                    shape,
                } => {
                    ensure!(
                        got == id && shape == [examples, width],
                        "server P{i} answered another query ({got}, shape {shape:?})"
                    );
                    let part = read_words(tls, examples * width)
                        .with_context(|| format!("server P{i}'s share of the answer"))?;
                    for (s, p) in sum.iter_mut().zip(&part) {
                        *s = s.wrapping_add(*p);
                    }
                    batch = Some((b, batch_examples));
                }
                ServerMessage::Error { kind, message, .. } => {
                    refusal.get_or_insert(ServiceError {
                        server: i,
                        kind,
                        message,
                    });
                }
                ServerMessage::Service(_)
                | ServerMessage::Uploaded { .. }
                | ServerMessage::UploadReady { .. } => {
                    bail!("server P{i} sent {message:?} where an answer was due")
                }
            }
        }
        if let Some(e) = refusal {
            return Err(e.into());
        }
        let (batch, batch_examples) = batch.context("no server answered")?;
        let values = match answer {
            Answer::Class => sum.iter().map(|&c| c as f64).collect(),
            Answer::Logits | Answer::Probabilities => self.fixed.decode_slice(&sum),
        };
        if answer == Answer::Class
            && let Some(&c) = sum
                .iter()
                .find(|&&c| c as usize >= self.description.classes)
        {
            bail!(
                "the servers' shares add up to class {c} of {}: they disagree (a server \
                 restarted mid-query?)",
                self.description.classes
            );
        }
        Ok(QueryAnswer {
            answer,
            values,
            width,
            batch,
            batch_examples,
            latency: start.elapsed(),
            bytes_sent,
        })
    }
}

/// Connects to server `i` alone and says hello: its stream and its description. For tools
/// that speak the [`wire`](super::wire) messages themselves (the load test's faults).
pub fn connect_server(setup: &ClientSetup, i: usize) -> Result<(ServerStream, ServiceDescription)> {
    connect_one(setup, i, &setup.servers[i], &setup.identities[i])
}

fn connect_one(
    setup: &ClientSetup,
    i: usize,
    address: &str,
    identity: &str,
) -> Result<(Tls, ServiceDescription)> {
    let mut tls = open(setup, i, address, identity)?;
    write_header(
        &mut tls,
        &ClientMessage::Hello {
            client: setup.name.clone(),
            version: WIRE_VERSION,
        },
    )
    .with_context(|| format!("saying hello to server P{i} at {address} (TLS)"))?;
    tls.flush()
        .with_context(|| format!("saying hello to server P{i} at {address} (TLS)"))?;
    let message: ServerMessage =
        read_header(&mut tls).with_context(|| format!("server P{i}'s answer to hello"))?;
    match message {
        ServerMessage::Service(d) => Ok((tls, d)),
        ServerMessage::Error { kind, message, .. } => Err(ServiceError {
            server: i,
            kind,
            message,
        }
        .into()),
        ServerMessage::Result { .. }
        | ServerMessage::Uploaded { .. }
        | ServerMessage::UploadReady { .. } => {
            bail!("server P{i} answered hello with a result")
        }
    }
}

/// A TLS connection to server `i` of `setup`, before any message: for an upload, which
/// starts with its own header instead of `hello`.
pub fn open_server(setup: &ClientSetup, i: usize) -> Result<ServerStream> {
    open(setup, i, &setup.servers[i], &setup.identities[i])
}

fn open(setup: &ClientSetup, i: usize, address: &str, identity: &str) -> Result<Tls> {
    let resolved = address
        .to_socket_addrs()
        .with_context(|| format!("resolving server P{i}'s address {address}"))?
        .next()
        .with_context(|| format!("server P{i}'s address {address} resolves to nothing"))?;
    let stream = TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT).map_err(|e| {
        anyhow::Error::new(ServiceError {
            server: i,
            kind: ErrorKind::Unavailable,
            message: format!("cannot connect to {address}: {e}"),
        })
    })?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(CONNECT_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECT_TIMEOUT))?;
    let name = ServerName::try_from(identity.to_string())
        .with_context(|| format!("server P{i}'s identity {identity:?}"))?;
    let connection = ClientConnection::new(setup.tls.clone(), name)
        .with_context(|| format!("a TLS session with server P{i}"))?;
    Ok(StreamOwned::new(connection, stream))
}
