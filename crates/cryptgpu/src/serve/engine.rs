//! A server's engine: the party-local function that sets the three servers up together
//! (links, keys, the model shared once) and then answers queries a batch at a time until it
//! is stopped; when the servers lose each other, it fails what is queued, sets up again and
//! goes on. The same function runs as a thread (three servers in one process) or as the
//! `cryptgpu serve` process of one host. When the model comes from a client
//! (`[serve] model_client`), a session starts only once all three hold the same upload,
//! and P0 ends it (`reload`) when it holds a newer one.
//!
//! # One batch
//! P0 leads: it takes the oldest queries from its queue (up to the batch size, waiting up to
//! the batch wait for more), and proposes them to P1 and P2 by name, examples and answer.
//! Each says which of them it lacks (waiting briefly for stragglers) or holds in another
//! form; P0 then announces the batch of queries all three hold alike, and all three run it:
//! the shares of every query's examples side by side, the model's forward pass, then for each
//! answer asked (class, logits, probabilities) its value and a fresh 3-out-of-3 sharing of
//! it, of which each server sends its own part to each client. A query only one or two
//! servers hold never enters a batch and times out alone.
//!
//! When nothing is queued, P0 sends a tick every [`TICK`], so that the links stay alive and
//! a follower that is told to stop notices within a tick.

use std::cell::Cell;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use cryptgpu_backend::GpuBackend;
use cryptgpu_nn::model::Model;
use cryptgpu_nn::private::SharedModel;
use cryptgpu_nonlinear as nl;
use cryptgpu_share::{KeySource, Party, Rss, Truncation};
use cryptgpu_transport::{
    CommStats, EmulatedLink, LinkProfile, PartyId, Peer, TcpTransport, TlsConfig, Transport,
    TransportError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::queue::{Outcome, Pending, Proposed, QueryKey, Queue, Status};
use super::shares::{NumberFormat, getrandom_fill, hex, unhex};
use super::upload::{ModelSlot, Upload};
use super::wire::{Answer, ErrorKind, ServiceDescription};
use crate::config::{Deployment, ServeConfig};
use crate::device::Job;
use crate::failure::classify;
use crate::manifest::{architecture_json, check_frac_bits, model_from_architecture};

/// How often P0 ticks when nothing is queued.
pub const TICK: Duration = Duration::from_millis(500);

/// The longest one attempt to set up with the other servers waits for them.
pub const CONNECT_ATTEMPT: Duration = Duration::from_secs(5);

/// How long a follower waits for a proposed query it has not received yet.
pub const ARRIVAL_GRACE: Duration = Duration::from_millis(500);

/// What one server's engine is given.
#[derive(Debug)]
pub struct EngineConfig {
    /// This server.
    pub me: PartyId,
    /// The deployment (its `[serve]` table included).
    pub deployment: Deployment,
    /// The model owner's model (`None` at the other servers).
    pub model: Option<Model>,
    /// The model owner's number format.
    pub number: NumberFormat,
    /// An emulated link the servers' messages go over (load tests), else the deployment's.
    pub link: Option<LinkProfile>,
    /// Where PRG keys come from (the OS unless a test says otherwise).
    pub keys: KeySource,
    /// Whether to log every query (its batch and latency) on stderr.
    pub log_queries: bool,
    /// Where this server keeps the shares of a model uploaded by a client
    /// (`[serve] model_client`), so that it serves them again after a restart; `None`: in
    /// memory only.
    pub model_store: Option<std::path::PathBuf>,
}

/// What the servers' engines count while they serve (read by the load test).
#[derive(Clone, Debug, Default)]
pub struct ServeCounters {
    /// Sessions set up (1 unless the servers lost each other).
    pub sessions: u64,
    /// Batches run.
    pub batches: u64,
    /// Queries answered.
    pub queries: u64,
    /// Examples classified.
    pub examples: u64,
    /// Bytes this server sent to the other servers while serving (setup and model
    /// sharing not included).
    pub serving_bytes: u64,
    /// Rounds while serving.
    pub serving_rounds: u64,
    /// Bytes and rounds of the last setup (keys and the model's shares).
    pub setup: CommStats,
}

/// How a session ended without an error.
enum SessionEnd {
    /// This server was told to stop.
    Stopped,
    /// P0 said it stops.
    LeaderStopped,
    /// P0 holds a new upload of the model: set up again to serve it.
    Reload,
}

/// A control message between the servers (JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Control {
    /// Nothing queued at P0.
    Tick,
    /// P0 stops serving.
    Stop,
    /// P0's proposed batch.
    Propose(Vec<Proposed>),
    /// A follower's answer: the proposed queries it lacks or holds in another form.
    Missing(Vec<QueryKey>),
    /// The batch to run.
    Run(Vec<QueryKey>),
    /// P0 holds a new upload of the model: all three set up again.
    Reload,
}

/// What each server says at the start of a session.
#[derive(Debug, Serialize, Deserialize)]
struct SetupMessage {
    party: usize,
    /// 16 random bytes (hex): the session id is the XOR of the three.
    session_part: String,
    /// The model owner's architecture and number format.
    architecture: Option<Value>,
    frac_bits: Option<u64>,
    truncation: Option<String>,
    comparison_bits: Option<u64>,
    /// The id of the upload it serves, when the model comes from a client.
    #[serde(default)]
    upload: Option<String>,
}

/// The largest control or setup message a server accepts.
const MAX_CONTROL_BYTES: usize = 64 << 20;

/// One server's engine, run on a backend by [`crate::device::run_on`].
pub struct Engine {
    /// What it was given.
    pub config: EngineConfig,
    /// The `[serve]` table.
    pub serve: ServeConfig,
    /// This server's listener for the other servers.
    pub listener: TcpListener,
    /// TLS for the links between servers.
    pub tls: TlsConfig,
    /// The queue the client connections fill.
    pub queue: Arc<Queue>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// What it counts.
    pub counters: Arc<Mutex<ServeCounters>>,
    /// When P0's last batch ended (read and set by the engine's own thread only).
    pub last_batch_end: Cell<Instant>,
    /// The uploaded model, when it comes from a client (`[serve] model_client`).
    pub slot: Option<Arc<ModelSlot>>,
}

impl Job for Engine {
    type Output = ServeCounters;

    fn run<B: GpuBackend>(self, backend: B) -> Result<ServeCounters> {
        let me = self.config.me;
        // This server's device buffers are charged to its party (three servers in one
        // process are three accounts).
        cryptgpu_backend::memory::set_thread_party(Some(me.index()));
        // Each attempt to set up waits at most CONNECT_ATTEMPT, so that a server told to
        // stop while the others are away stops within it.
        let mut network = self.config.deployment.network.clone();
        network.link.connect_timeout = network.link.connect_timeout.min(CONNECT_ATTEMPT);
        let network = &network;
        let mut waiting_since: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(slot) = &self.slot
                && slot.get().is_none()
            {
                let client = self.serve.model_client.as_deref().unwrap_or("its owner");
                self.queue.set_status(Status::Down(format!(
                    "the service is down: it waits for the model, which client {client} uploads \
                     (`cryptgpu upload`)"
                )));
                sleep_unless(&self.stop, Duration::from_millis(200));
                continue;
            }
            let listener = self
                .listener
                .try_clone()
                .context("cloning the listener for the other servers")?;
            let mut transport =
                match TcpTransport::connect_with_listener(me, listener, network, &self.tls) {
                    Ok(t) => t,
                    Err(e) => {
                        let since = *waiting_since.get_or_insert_with(Instant::now);
                        eprintln!(
                            "{me}: the other servers are not all there yet ({e}); trying again \
                         ({:.0} s so far)",
                            since.elapsed().as_secs_f64()
                        );
                        self.queue.set_status(Status::Down(
                            "the service is down: the servers are waiting for each other".into(),
                        ));
                        sleep_unless(&self.stop, Duration::from_secs(1));
                        continue;
                    }
                };
            waiting_since = None;
            let ended = match self.config.link {
                Some(profile) => self.session(&backend, EmulatedLink::new(&mut transport, profile)),
                None => self.session(&backend, &mut transport),
            };
            match ended {
                Ok(SessionEnd::Stopped) => {
                    self.queue.set_status(Status::Stopping);
                    eprintln!("{me}: stopped serving; telling the other servers");
                    break;
                }
                Ok(SessionEnd::Reload) => {
                    eprintln!("{me}: setting up again to serve the model owner's new upload");
                    self.queue.set_status(Status::Down(
                        "the service is down: the servers set up again to serve a new upload \
                         of the model; retry in a moment"
                            .into(),
                    ));
                }
                Ok(SessionEnd::LeaderStopped) => {
                    eprintln!("{me}: P0 stopped serving; waiting for it to come back");
                    self.queue.set_status(Status::Down(
                        "the service is down: server P0 stopped; it resumes when P0 is back".into(),
                    ));
                }
                Err(e) if e.downcast_ref::<UploadsDiffer>().is_some() => {
                    eprintln!("{me}: {e:#}; trying again");
                    self.queue.set_status(Status::Down(
                        "the service is down: the servers wait until the model owner's upload \
                         has reached all three"
                            .into(),
                    ));
                    sleep_unless(&self.stop, Duration::from_millis(200));
                }
                Err(e) => {
                    let kind = classify(&e);
                    transport.abort(kind);
                    eprintln!(
                        "{me}: the servers stopped serving together: {e:#}; setting up again"
                    );
                    // A link's failure names the server that left (public); any other
                    // error only by its category: its text may name values.
                    let why = e
                        .chain()
                        .find_map(|c| c.downcast_ref::<TransportError>())
                        .map_or_else(|| kind.to_string(), |t| t.to_string());
                    self.queue.set_status(Status::Down(format!(
                        "the service is down: the servers lost each other ({why}); it resumes \
                         when all three are back"
                    )));
                }
            }
            drop(transport);
        }
        self.queue.set_status(Status::Stopping);
        Ok(self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone())
    }
}

impl Engine {
    /// One session: setup, then batches until this server stops, P0 stops, or an error.
    fn session<B: GpuBackend, T: Transport>(&self, backend: &B, mut t: T) -> Result<SessionEnd> {
        let me = self.config.me;
        let owner = self.config.deployment.roles.model_owner;
        let setup = self.agree(&mut t)?;
        let model = match (&self.config.model, &setup.upload) {
            (Some(m), _) => m.clone(),
            (None, Some(upload)) => upload.model()?,
            (None, None) => model_from_architecture(&setup.architecture)?,
        };
        ensure!(
            model.token_vocabulary().is_none(),
            "the service takes real-valued inputs; models on token ids are not served yet"
        );
        let fixed = check_frac_bits(setup.frac_bits)?;
        let mut p = Party::setup_with(backend.clone(), t, fixed, self.config.keys)?;
        p.set_truncation(setup.truncation);
        if let Some(bits) = setup.comparison_bits {
            p.set_comparison_bits(u32::try_from(bits).context("`comparison_bits`")?)?;
        }
        let started = Instant::now();
        let shared = match &setup.upload {
            Some(upload) => upload.shared(backend)?,
            None => SharedModel::share(&mut p, &model, owner)?,
        };
        let setup_stats = p.stats();
        let description = ServiceDescription {
            server: me.index(),
            session: setup.session.clone(),
            model: model.name().to_string(),
            input_shape: model.input_shape().to_vec(),
            classes: model.num_classes(),
            frac_bits: fixed.frac_bits(),
            max_query_examples: self.serve.max_batch,
            answers: self.serve.answers.clone(),
            normalization: model.normalization.clone().map(Into::into),
        };
        {
            let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
            c.sessions += 1;
            c.setup = setup_stats;
        }
        let how = match &setup.upload {
            Some(u) => format!("the model is client upload {}", &u.id[..u.id.len().min(8)]),
            None => format!(
                "the model was shared in {:.2} s ({:.1} MB sent)",
                started.elapsed().as_secs_f64(),
                setup_stats.total_bytes_sent() as f64 / 1e6
            ),
        };
        eprintln!(
            "{me}: serving {} (session {}): {how}; clients reach this server at {}",
            description.model,
            &description.session[..8],
            self.serve.addresses[me.index()],
        );
        self.queue.set_status(Status::Serving(description.clone()));
        let mut batch = 0u64;
        loop {
            let before = p.stats();
            let ran = if me == PartyId::P0 {
                if let (Some(slot), Some(serving)) = (&self.slot, &setup.upload)
                    && slot.get().is_some_and(|u| u.id != serving.id)
                {
                    send_both(&mut p, &Control::Reload)?;
                    return Ok(SessionEnd::Reload);
                }
                self.lead(&mut p, &shared, &description, batch)?
            } else {
                self.follow(&mut p, &shared, &description, batch)?
            };
            let during = p.stats().since(&before);
            match ran {
                Step::Ran => {
                    batch += 1;
                    let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
                    c.serving_bytes += during.total_bytes_sent();
                    c.serving_rounds += during.rounds;
                }
                Step::Idle => {}
                Step::End(end) => return Ok(end),
            }
        }
    }

    /// The setup round: each server tells the other two its part of the session id, and the
    /// model owner the architecture and number format.
    fn agree<T: Transport>(&self, t: &mut T) -> Result<Agreed> {
        let me = self.config.me;
        let owner = self.config.deployment.roles.model_owner;
        let mut part = [0u8; 16];
        getrandom_fill(&mut part)?;
        let upload = self.slot.as_ref().and_then(|s| s.get());
        let mine = SetupMessage {
            party: me.index(),
            session_part: hex(&part),
            architecture: self.config.model.as_ref().map(architecture_json),
            frac_bits: self.config.number.frac_bits,
            truncation: self.config.number.truncation.map(|t| t.name().to_string()),
            comparison_bits: self.config.number.comparison_bits,
            upload: upload.as_ref().map(|u| u.id.clone()),
        };
        let bytes = serde_json::to_vec(&mine)?;
        t.send(Peer::Next, &bytes)?;
        t.send(Peer::Prev, &bytes)?;
        let mut messages = vec![mine];
        for (peer, from) in [(Peer::Next, me.next()), (Peer::Prev, me.prev())] {
            let bytes = t.recv(peer)?;
            ensure!(
                bytes.len() <= MAX_CONTROL_BYTES,
                "{from}'s setup message is too long"
            );
            let m: SetupMessage = serde_json::from_slice(&bytes)
                .with_context(|| format!("{from}'s setup message is malformed"))?;
            ensure!(
                m.party == from.index(),
                "{from}'s setup message names P{}",
                m.party
            );
            messages.push(m);
        }
        let mut session = [0u8; 16];
        for m in &messages {
            let part = unhex(&m.session_part).context("a session part")?;
            ensure!(part.len() == 16, "a session part of {} bytes", part.len());
            for (s, p) in session.iter_mut().zip(&part) {
                *s ^= p;
            }
        }
        let session = hex(&session);
        if self.slot.is_some() {
            // The model is a client's upload: all three must hold the same one.
            let ids: Vec<Option<&str>> = messages.iter().map(|m| m.upload.as_deref()).collect();
            let Some(upload) = upload.filter(|u| ids.iter().all(|id| *id == Some(&u.id[..])))
            else {
                let mut held: Vec<(usize, Option<&str>)> = messages
                    .iter()
                    .map(|m| (m.party, m.upload.as_deref()))
                    .collect();
                held.sort();
                let held: Vec<String> = held
                    .iter()
                    .map(|(p, id)| format!("P{p} {}", id.map_or("none", |i| &i[..i.len().min(8)])))
                    .collect();
                return Err(UploadsDiffer(held.join(", ")).into());
            };
            return Ok(Agreed {
                session,
                architecture: upload.architecture.clone(),
                frac_bits: u64::from(upload.frac_bits),
                truncation: upload.truncation,
                comparison_bits: upload.comparison_bits.map(u64::from),
                upload: Some(upload),
            });
        }
        let from_owner = messages
            .iter()
            .find(|m| m.party == owner.index())
            .context("the model owner's setup message")?;
        for m in &messages {
            if m.party != owner.index() && m.architecture.is_some() {
                bail!(
                    "P{} has a model, but the model owner is {owner}: only it shares one",
                    m.party
                );
            }
        }
        let architecture = from_owner.architecture.clone().with_context(|| {
            format!("the model owner {owner} has no model to serve (give it --model or --weights)")
        })?;
        let truncation = match &from_owner.truncation {
            Some(name) => name
                .parse::<Truncation>()
                .map_err(|_| anyhow!("the model owner's truncation {name:?} is unknown"))?,
            None => Truncation::Exact,
        };
        Ok(Agreed {
            session,
            architecture,
            frac_bits: from_owner.frac_bits.unwrap_or(16),
            truncation,
            comparison_bits: from_owner.comparison_bits,
            upload: None,
        })
    }

    /// P0's step: a batch, a tick, or the end.
    fn lead<B: GpuBackend, T: Transport>(
        &self,
        p: &mut Party<B, T>,
        shared: &SharedModel<B>,
        description: &ServiceDescription,
        batch: u64,
    ) -> Result<Step> {
        if self.stop.load(Ordering::SeqCst) {
            send_both(p, &Control::Stop)?;
            return Ok(Step::End(SessionEnd::Stopped));
        }
        let proposal = self.queue.next_batch(
            self.serve.max_batch,
            self.serve.batch_wait,
            self.last_batch_end.get(),
            TICK,
        );
        if proposal.is_empty() {
            send_both(p, &Control::Tick)?;
            self.queue.expire(self.serve.query_timeout);
            return Ok(Step::Idle);
        }
        send_both(p, &Control::Propose(proposal.clone()))?;
        let mut missing = Vec::new();
        for peer in [Peer::Next, Peer::Prev] {
            match recv_control(p, peer)? {
                Control::Missing(keys) => missing.extend(keys),
                other => bail!("{} answered a proposal with {other:?}", peer_of(p, peer)),
            }
        }
        let run: Vec<QueryKey> = proposal
            .iter()
            .map(|q| q.key.clone())
            .filter(|k| !missing.contains(k))
            .collect();
        // A query the others still lack after the grace is dropped at once: it reached only
        // some of the servers.
        let stale: Vec<QueryKey> = missing
            .iter()
            .filter(|k| self.queue.age(k).is_some_and(|a| a > 2 * ARRIVAL_GRACE))
            .cloned()
            .collect();
        for q in self.queue.take(&stale) {
            let _ = q.reply.send(Outcome::Failed(
                ErrorKind::Timeout,
                format!(
                    "query {} did not reach all three servers alike (each must get the same \
                     id, examples and answer)",
                    q.key.id
                ),
            ));
        }
        send_both(p, &Control::Run(run.clone()))?;
        if run.is_empty() {
            return Ok(Step::Idle);
        }
        let queries = self.queue.take(&run);
        self.run_batch(p, shared, description, batch, queries)?;
        self.last_batch_end.set(Instant::now());
        Ok(Step::Ran)
    }

    /// A follower's step: what P0 says, then the batch if there is one.
    fn follow<B: GpuBackend, T: Transport>(
        &self,
        p: &mut Party<B, T>,
        shared: &SharedModel<B>,
        description: &ServiceDescription,
        batch: u64,
    ) -> Result<Step> {
        if self.stop.load(Ordering::SeqCst) {
            // Leaving closes the links: P0 and the other follower see it at once.
            return Ok(Step::End(SessionEnd::Stopped));
        }
        let leader = if p.id().prev() == PartyId::P0 {
            Peer::Prev
        } else {
            Peer::Next
        };
        match recv_control(p, leader)? {
            Control::Tick => {
                self.queue.expire(self.serve.query_timeout);
                if self.stop.load(Ordering::SeqCst) {
                    return Ok(Step::End(SessionEnd::Stopped));
                }
                Ok(Step::Idle)
            }
            Control::Stop => Ok(Step::End(SessionEnd::LeaderStopped)),
            Control::Reload => Ok(Step::End(SessionEnd::Reload)),
            Control::Propose(proposal) => {
                let missing = self.queue.missing(&proposal, ARRIVAL_GRACE);
                send_control(p, leader, &Control::Missing(missing))?;
                let run = match recv_control(p, leader)? {
                    Control::Run(keys) => keys,
                    other => bail!("P0 followed its proposal with {other:?}"),
                };
                if run.is_empty() {
                    return Ok(Step::Idle);
                }
                let queries = self.queue.take(&run);
                ensure!(
                    queries.len() == run.len(),
                    "P0 ran queries this server does not hold"
                );
                self.run_batch(p, shared, description, batch, queries)?;
                Ok(Step::Ran)
            }
            other => bail!("P0 sent {other:?} where a proposal or a tick was due"),
        }
    }

    /// Runs one batch and sends each query's share of its answer to its connection.
    fn run_batch<B: GpuBackend, T: Transport>(
        &self,
        p: &mut Party<B, T>,
        shared: &SharedModel<B>,
        description: &ServiceDescription,
        batch: u64,
        queries: Vec<Pending>,
    ) -> Result<()> {
        let b = p.backend().clone();
        let examples: usize = queries.iter().map(|q| q.examples).sum();
        let d = description.example_len();
        let mut own = Vec::with_capacity(examples * d);
        let mut next = Vec::with_capacity(examples * d);
        for q in &queries {
            own.extend_from_slice(&q.own);
            next.extend_from_slice(&q.next);
        }
        let shape: Vec<usize> = std::iter::once(examples)
            .chain(description.input_shape.iter().copied())
            .collect();
        let x = Rss::from_shares(b.upload_vec(own, &shape)?, b.upload_vec(next, &shape)?)?;
        let logits = shared.forward(p, &x)?;
        let classes = description.classes;
        let logits = p.linear(&logits, |b, t| b.reshape(t, &[examples, classes]))?;
        for answer in [Answer::Class, Answer::Logits, Answer::Probabilities] {
            if !queries.iter().any(|q| q.answer == answer) {
                continue;
            }
            let y = match answer {
                Answer::Class => class_index(p, &logits)?,
                Answer::Logits => logits.clone(),
                Answer::Probabilities => nl::softmax(p, &logits, 1, nl::SoftmaxOptions::default())?,
            };
            // A fresh 3-out-of-3 sharing of y: each client gets three parts uniformly
            // random but for their sum, whatever the shares of y were.
            let alpha = p.zero_share(y.shape())?;
            let part = b.download(&b.add(y.own_share(), &alpha)?)?;
            let width = answer.width(classes);
            let mut row = 0;
            for q in &queries {
                if q.answer == answer {
                    let share = part[row * width..(row + q.examples) * width].to_vec();
                    if self.config.log_queries {
                        eprintln!(
                            "{}: query {} ({} example(s), {answer:?}) ran in batch {batch} of \
                             {examples} example(s); {:.1} ms after it arrived",
                            p.id(),
                            q.key,
                            q.examples,
                            q.arrived.elapsed().as_secs_f64() * 1e3
                        );
                    }
                    let _ = q.reply.send(Outcome::Done {
                        batch,
                        batch_examples: examples,
                        shape: vec![q.examples, width],
                        share,
                    });
                }
                row += q.examples;
            }
        }
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        c.batches += 1;
        c.queries += queries.len() as u64;
        c.examples += examples as u64;
        Ok(())
    }
}

/// What the setup round agreed.
struct Agreed {
    session: String,
    architecture: Value,
    frac_bits: u64,
    truncation: Truncation,
    comparison_bits: Option<u64>,
    /// The client's upload it serves, if the model comes from a client.
    upload: Option<Arc<Upload>>,
}

/// The servers hold different uploads of the model (or some none): the model owner's
/// upload has not reached all three yet. The servers try again.
#[derive(Debug, thiserror::Error)]
#[error("the servers hold different uploads of the model ({0})")]
struct UploadsDiffer(String);

/// What one step of the serving loop did.
enum Step {
    Ran,
    Idle,
    End(SessionEnd),
}

/// The class index Σ_k k·onehot_k of each row's arg-max, as a sharing of integers.
fn class_index<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    logits: &Rss<B>,
) -> Result<Rss<B>> {
    let (rows, classes) = (logits.shape()[0], logits.shape()[1]);
    let hot = nl::argmax(p, logits, 1)?;
    let index: Vec<u64> = (0..rows).flat_map(|_| 0..classes as u64).collect();
    let index = p.backend().upload(&index, logits.shape())?;
    Ok(p.linear(&hot, |b, t| b.sum_axis(&b.mul(t, &index)?, 1))?)
}

fn send_control<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    peer: Peer,
    message: &Control,
) -> Result<()> {
    let bytes = serde_json::to_vec(message)?;
    p.transport_mut().send_vec(peer, bytes)?;
    Ok(())
}

fn send_both<B: GpuBackend, T: Transport>(p: &mut Party<B, T>, message: &Control) -> Result<()> {
    send_control(p, Peer::Next, message)?;
    send_control(p, Peer::Prev, message)
}

fn recv_control<B: GpuBackend, T: Transport>(p: &mut Party<B, T>, peer: Peer) -> Result<Control> {
    let from = peer_of(p, peer);
    let bytes = p.transport_mut().recv(peer)?;
    ensure!(
        bytes.len() <= MAX_CONTROL_BYTES,
        "{from} sent a control message of {} bytes",
        bytes.len()
    );
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{from} sent a malformed control message"))
}

fn peer_of<B: GpuBackend, T: Transport>(p: &Party<B, T>, peer: Peer) -> PartyId {
    match peer {
        Peer::Next => p.id().next(),
        Peer::Prev => p.id().prev(),
    }
}

/// Sleeps up to `total`, waking early when `stop` is set.
pub fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let start = Instant::now();
    while !stop.load(Ordering::SeqCst) && start.elapsed() < total {
        std::thread::sleep(Duration::from_millis(20));
    }
}
