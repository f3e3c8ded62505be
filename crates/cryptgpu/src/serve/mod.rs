//! A private inference service: three servers (the parties of a deployment) share the
//! model once and then answer queries from any number of clients who run no server, until
//! they are stopped (`cryptgpu serve` on each server, `cryptgpu query` for a client).
//!
//! - [`wire`]: the messages between a client and a server.
//! - [`queue`]: a server's bounded queue of queries and the service's state.
//! - [`connections`]: a server's client connections (mutual TLS, client certificates).
//! - [`engine`]: the party-local function: set up, batch, run, set up again after a loss.
//! - [`client`]: the data owner's library call.
//! - [`shares`]: the randomness, additive shares, hex ids and number format both sides use.
//! - [`upload`]: a model uploaded by its owner's client (`[serve] model_client`).
//! - [`load`]: the load generator behind `cryptgpu bench --serve`.
//!
//! What each server and each client learns is in `SECURITY.md`; the protocol in
//! `PROTOCOLS.md` §9.5.

pub mod client;
pub mod connections;
pub mod engine;
pub mod load;
pub mod queue;
pub mod shares;
pub mod upload;
pub mod wire;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use crate::device::{Device, run_on};
use engine::{Engine, EngineConfig, ServeCounters};
use queue::{Limits, Queue};
use upload::ModelSlot;

/// One server, started: its engine on a thread of its own, and its client listener.
pub struct Server {
    stop: Arc<AtomicBool>,
    counters: Arc<Mutex<ServeCounters>>,
    queue: Arc<Queue>,
    engine: Option<JoinHandle<Result<(ServeCounters, String)>>>,
    connections: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds this server's two listeners (the other servers, the clients) and starts it on
    /// `device`; it sets up with the other two as soon as they are there.
    pub fn start(config: EngineConfig, device: Device) -> Result<Server> {
        let me = config.me;
        let serve = config.deployment.serve.clone().with_context(|| {
            format!(
                "{} has no [serve] table: add one (see README) or rerun `cryptgpu certs` \
                 with --clients",
                config.deployment.path.display()
            )
        })?;
        let listen = &config.deployment.listen[me.index()];
        let listener = TcpListener::bind(listen)
            .with_context(|| format!("{me} cannot listen for the other servers on {listen}"))?;
        let client_listen = &serve.listen[me.index()];
        let client_listener = TcpListener::bind(client_listen)
            .with_context(|| format!("{me} cannot listen for clients on {client_listen}"))?;
        let tls = config.deployment.tls_config(me)?;
        let client_tls = config.deployment.service_server_config(me)?;
        let queue = Arc::new(Queue::new(Limits {
            queue_examples: serve.queue_limit,
            per_client: serve.client_limit,
        }));
        let slot = match &serve.model_client {
            Some(client) => {
                anyhow::ensure!(
                    config.model.is_none(),
                    "the model comes from client {client}'s upload ([serve] model_client): no \
                     server takes a model of its own"
                );
                Some(Arc::new(ModelSlot::open(me, config.model_store.clone())?))
            }
            None => {
                anyhow::ensure!(
                    config.model_store.is_none(),
                    "a model store keeps a model uploaded by a client; this deployment has no \
                     [serve] model_client"
                );
                None
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Mutex::new(ServeCounters::default()));
        let connections = connections::spawn(
            client_listener,
            connections::Connections {
                me,
                tls: client_tls,
                queue: queue.clone(),
                query_timeout: serve.query_timeout,
                stop: stop.clone(),
                log: config.log_queries,
                uploads: serve
                    .model_client
                    .clone()
                    .zip(slot.clone())
                    .map(|(client, slot)| connections::Uploads { client, slot }),
            },
        )?;
        let engine = Engine {
            listener,
            tls,
            queue: queue.clone(),
            stop: stop.clone(),
            counters: counters.clone(),
            last_batch_end: std::cell::Cell::new(std::time::Instant::now()),
            slot,
            serve,
            config,
        };
        let engine = std::thread::Builder::new()
            .name(format!("{me}-engine"))
            .spawn(move || run_on(device, engine))
            .context("starting the engine")?;
        Ok(Server {
            stop,
            counters,
            queue,
            engine: Some(engine),
            connections: Some(connections),
        })
    }

    /// The flag that stops the server (after the batch it runs).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// What it counted so far.
    pub fn counters(&self) -> ServeCounters {
        self.counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether it serves now (set up with the other two).
    pub fn is_serving(&self) -> bool {
        matches!(self.queue.status(), queue::Status::Serving(_))
    }

    /// Queries and examples in its queue now.
    pub fn queued(&self) -> (usize, usize) {
        self.queue.len()
    }

    /// Whether its engine has ended (stopped, or failed for good).
    pub fn is_finished(&self) -> bool {
        self.engine.as_ref().is_none_or(|e| e.is_finished())
    }

    /// Stops it and waits: the batch it runs finishes, queued queries fail with "shutting
    /// down", the other servers are told. Returns what it counted and its device.
    pub fn stop(mut self) -> Result<(ServeCounters, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait()
    }

    /// Waits until it ends (another thread or a signal sets its stop flag).
    pub fn wait(&mut self) -> Result<(ServeCounters, String)> {
        let result = match self.engine.take() {
            Some(engine) => engine
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the engine panicked"))),
            None => Err(anyhow::anyhow!("the server was already waited for")),
        };
        self.stop.store(true, Ordering::SeqCst);
        self.queue.set_status(queue::Status::Stopping);
        if let Some(c) = self.connections.take() {
            let _ = c.join();
        }
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if self.engine.is_some() {
            let _ = self.wait();
        }
    }
}
