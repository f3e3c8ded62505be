//! The load generator behind `cryptgpu loadtest` (and `cargo xtask bench --serve`): a
//! fresh deployment in a temporary folder, its three servers as threads of this process
//! (each the same [`Server`] a host runs, over mutual TLS on loopback), and 1, 8, 64, ...
//! concurrent clients, each on its own thread and connections, sending one-example
//! queries back to back. Every answer is checked against the plaintext model; the report
//! holds latency percentiles, queries per second and bytes per query, beside the one-shot
//! job's time and the one-process batch rate on the same machine.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use cryptgpu_nn::data::{self, Dataset, Normalization, Split};
use cryptgpu_nn::model::Model;
use cryptgpu_nn::plain;
use cryptgpu_share::KeySource;
use cryptgpu_transport::{LinkProfile, PartyId};
use serde::Serialize;

use super::Server;
use super::client::{Client, ServiceError};
use super::engine::EngineConfig;
use super::shares::{NumberFormat, getrandom_fill, hex};
use super::wire::Answer;
use crate::config::{
    CertsRequest, ClientSetup, Deployment, ServiceRequest, make_deployment_with_service,
};
use crate::device::Device;
use crate::jobs::DataSpec;
use crate::local::{LocalRun, run_job};
use crate::manifest::{JobKind, Options};

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The served model (the model owner's).
    pub model: Model,
    /// MNIST directory for the digits (else the bundled sample, or random inputs for a
    /// model that does not take digits).
    pub data: Option<PathBuf>,
    /// Concurrent clients of each run.
    pub clients: Vec<usize>,
    /// Queries per client in each run.
    pub queries_per_client: usize,
    /// The servers' largest batch.
    pub max_batch: usize,
    /// The servers' batch wait.
    pub batch_wait: Duration,
    /// An emulated link between the servers.
    pub link: Option<LinkProfile>,
    /// The servers' device.
    pub device: Device,
    /// The batch of the one-process comparison (0: no comparison).
    pub compare_batch: usize,
    /// Print progress on stderr.
    pub progress: bool,
    /// Faults: about 1 in 20 queries is abandoned by its client after reaching two servers
    /// only, 1 in 20 is malformed, and server P1 is stopped and started again when half
    /// the queries are answered.
    pub chaos: bool,
}

/// One run: `clients` clients at once.
#[derive(Clone, Debug, Serialize)]
pub struct LoadRow {
    /// The model.
    pub model: String,
    /// The servers' device.
    pub device: String,
    /// The emulated link between the servers.
    pub link: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Queries sent.
    pub queries: usize,
    /// Queries answered.
    pub answered: usize,
    /// Answers that differ from the plaintext model's.
    pub wrong: usize,
    /// Errors, by kind, in words.
    pub errors: Vec<String>,
    /// Median latency.
    pub p50_seconds: f64,
    /// 99th percentile latency.
    pub p99_seconds: f64,
    /// Answered queries per second.
    pub queries_per_second: f64,
    /// Batches the servers ran, and their mean size.
    pub batches: u64,
    /// Mean examples per batch.
    pub mean_batch: f64,
    /// Bytes the three servers sent each other per query (all three together).
    pub server_bytes_per_query: f64,
    /// Bytes a client sends per query (to the three servers together).
    pub client_bytes_per_query: f64,
    /// Server rounds per batch.
    pub rounds_per_batch: f64,
    /// Queries abandoned by their clients on purpose (chaos).
    pub abandoned: usize,
    /// Malformed queries sent on purpose (chaos), and how many of them the server refused
    /// as malformed (the others met a server that was down, and were refused as
    /// unavailable).
    pub malformed: [usize; 2],
    /// Servers restarted during the run (chaos).
    pub restarts: usize,
    /// Queries left in the servers' queues after the run (with chaos, once abandoned queries
    /// had the query timeout to expire; 0 when nothing leaks).
    pub left_queued: usize,
    /// Growth of this process's resident memory (servers, clients and all), in bytes: from
    /// a tenth of the run to its middle, and from its middle to its end. Memory is bounded
    /// when the second is about zero (the first holds the CPU backend's buffer pool filling
    /// up to its limit).
    pub rss_growth_bytes: [i64; 2],
    /// Seconds the one-shot job takes for one example in one process (keys and model
    /// shared for it), if measured.
    pub one_shot_seconds: Option<f64>,
    /// Examples per second of one-process inference at the comparison batch (the median of
    /// five batches), if measured.
    pub batch_rate: Option<f64>,
    /// That batch.
    pub compare_batch: usize,
}

/// The runs, and the comparison.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// One per client count.
    pub rows: Vec<LoadRow>,
}

impl LoadReport {
    /// The rows as a text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if let Some(r) = self.rows.first() {
            out += &format!(
                "{} served by three servers on {} (link {}), one-example queries:\n",
                r.model, r.device, r.link
            );
            if let (Some(one), Some(rate)) = (r.one_shot_seconds, r.batch_rate) {
                out += &format!(
                    "for comparison: the one-shot job takes {:.3} s for one example; one-process \
                     inference at batch {} runs {:.0} examples/s\n",
                    one, r.compare_batch, rate
                );
            }
        }
        out += "clients  queries  answered  wrong  errors   p50 ms   p99 ms    q/s  mean batch  server B/query  client B/query\n";
        for r in &self.rows {
            out += &format!(
                "{:7}  {:7}  {:8}  {:5}  {:6}  {:7.1}  {:7.1}  {:5.1}  {:10.1}  {:14.0}  {:14.0}\n",
                r.clients,
                r.queries,
                r.answered,
                r.wrong,
                r.errors.len(),
                r.p50_seconds * 1e3,
                r.p99_seconds * 1e3,
                r.queries_per_second,
                r.mean_batch,
                r.server_bytes_per_query,
                r.client_bytes_per_query,
            );
            if r.abandoned + r.malformed[0] + r.restarts > 0 {
                out += &format!(
                    "    faults: {} abandoned, {} malformed ({} refused as malformed), {} server \
                     restart(s); left queued {}; resident memory {:+.1} MB in the first half, \
                     {:+.1} MB in the second\n",
                    r.abandoned,
                    r.malformed[0],
                    r.malformed[1],
                    r.restarts,
                    r.left_queued,
                    r.rss_growth_bytes[0] as f64 / 1e6,
                    r.rss_growth_bytes[1] as f64 / 1e6,
                );
            }
            let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
            for e in &r.errors {
                let kind = e.split(':').take(2).collect::<Vec<_>>().join(":");
                *kinds.entry(kind).or_default() += 1;
            }
            for (kind, n) in kinds {
                out += &format!("    {n} error(s): {kind}\n");
            }
        }
        out
    }
}

/// A deployment with a `[serve]` table and client certificates in a temporary folder,
/// on free loopback ports; removed when dropped.
pub struct TempDeployment {
    /// Its folder.
    pub dir: PathBuf,
    /// Its `parties.toml`.
    pub config: PathBuf,
}

impl TempDeployment {
    /// Makes one with `clients` client certificates (`client0`, ...) and `max_batch`.
    pub fn new(clients: usize, max_batch: usize, batch_wait: Duration) -> Result<TempDeployment> {
        let mut tag = [0u8; 6];
        getrandom_fill(&mut tag)?;
        let dir = std::env::temp_dir().join(format!("cryptgpu-serve-{}", hex(&tag)));
        let ports = free_ports(6)?;
        let addresses: Vec<String> = ports[..3]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let serve: Vec<String> = ports[3..]
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let config = make_deployment_with_service(
            &CertsRequest {
                out: &dir,
                addresses: &addresses,
                names: None,
                force: false,
            },
            &ServiceRequest {
                clients,
                serve_addresses: Some(&serve),
            },
        )?;
        // The run's batching, in place of the defaults.
        let text = std::fs::read_to_string(&config)?;
        let text = set_serve_key(&text, "max_batch", &max_batch.to_string());
        let text = set_serve_key(&text, "batch_wait_ms", &batch_wait.as_millis().to_string());
        let text = set_serve_key(&text, "client_limit", "64");
        // Abandoned queries leave the queues within 10 s.
        let text = set_serve_key(&text, "query_timeout_secs", "10");
        let text = set_serve_key(
            &text,
            "queue_limit",
            &(64 * max_batch).max(1024).to_string(),
        );
        std::fs::write(&config, text)?;
        Ok(TempDeployment { dir, config })
    }

    /// Sets `key = value` in its `[serve]` table (before the servers start).
    pub fn set_serve_option(&self, key: &str, value: &str) -> Result<()> {
        let text = std::fs::read_to_string(&self.config)?;
        std::fs::write(&self.config, set_serve_key(&text, key, value))?;
        Ok(())
    }

    /// The deployment.
    pub fn load(&self) -> Result<Deployment> {
        Deployment::load(&self.config)
    }

    /// Client `k`'s setup.
    pub fn client(&self, k: usize) -> Result<ClientSetup> {
        ClientSetup::load(&self.config, &format!("client{k}"), None, None)
    }

    /// Starts server `me` (the model to P0, the model owner).
    pub fn start_server(
        &self,
        me: PartyId,
        model: &Model,
        link: Option<LinkProfile>,
        device: Device,
    ) -> Result<Server> {
        let deployment = self.load()?;
        let owner = deployment.roles.model_owner;
        Server::start(
            EngineConfig {
                me,
                deployment,
                model: (me == owner).then(|| model.clone()),
                number: NumberFormat::default(),
                link,
                keys: KeySource::Os,
                log_queries: false,
                model_store: None,
            },
            device,
        )
    }

    /// Starts server `me` of a deployment whose model a client uploads
    /// (`[serve] model_client`), keeping the upload in `store` if given.
    pub fn start_server_for_upload(
        &self,
        me: PartyId,
        store: Option<PathBuf>,
        device: Device,
    ) -> Result<Server> {
        Server::start(
            EngineConfig {
                me,
                deployment: self.load()?,
                model: None,
                number: NumberFormat::default(),
                link: None,
                keys: KeySource::Os,
                log_queries: false,
                model_store: store,
            },
            device,
        )
    }
}

impl Drop for TempDeployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sets `key = value` in the `[serve]` table of a deployment file's text (the line is
/// added if absent).
fn set_serve_key(text: &str, key: &str, value: &str) -> String {
    let setting = format!("{key} = {value}");
    let mut out = Vec::new();
    let (mut in_serve, mut saw_serve, mut done) = (false, false, false);
    for line in text.lines() {
        if line.trim_start().starts_with('[') {
            if in_serve && !done {
                out.push(setting.clone());
                done = true;
            }
            in_serve = line.trim() == "[serve]";
            saw_serve |= in_serve;
            out.push(line.to_string());
            continue;
        }
        if in_serve {
            let bare = line.trim_start().trim_start_matches('#').trim_start();
            if bare
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                if !done {
                    out.push(setting.clone());
                    done = true;
                }
                continue;
            }
        }
        out.push(line.to_string());
    }
    if !done {
        if !saw_serve {
            out.push("[serve]".into());
        }
        out.push(setting);
    }
    out.join("\n") + "\n"
}

/// `n` free loopback ports (bound and released: another process could take one in between,
/// which the servers would report).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("finding free loopback ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The examples the clients send: MNIST digits for a digit model, else random inputs.
fn examples(model: &Model, dir: Option<&Path>) -> Result<Dataset> {
    let shape = model.input_shape().to_vec();
    if shape == [1, 28, 28] {
        return match dir {
            Some(dir) => Ok(data::load_mnist(
                dir,
                Split::Test,
                &Normalization::mnist(),
                Some(1000),
            )?),
            None => crate::demo::mnist_sample(),
        };
    }
    Ok(data::synthetic(&shape, 256, model.num_classes(), 7)?)
}

/// Waits until all three servers serve (or one of them ends).
pub fn wait_until_serving(servers: &[&Server], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !servers.iter().all(|s| s.is_serving()) {
        ensure!(
            !servers.iter().any(|s| s.is_finished()),
            "a server ended before the three were serving"
        );
        ensure!(
            start.elapsed() < timeout,
            "the three servers were not serving after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// What one client thread saw.
#[derive(Default)]
struct ClientLog {
    latencies: Vec<f64>,
    wrong: usize,
    errors: Vec<String>,
    bytes: u64,
    abandoned: usize,
    malformed: [usize; 2],
}

/// A fault the chaos mode injects instead of a query.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// Sent to two servers only, then the client's connections drop.
    Abandon,
    /// Shares of the wrong length.
    Malformed,
}

/// A small deterministic generator of the faults (xorshift), per client.
struct Dice(u64);

impl Dice {
    fn fault(&mut self) -> Option<Fault> {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        match self.0 % 20 {
            0 => Some(Fault::Abandon),
            1 => Some(Fault::Malformed),
            _ => None,
        }
    }
}

/// Injects `fault` as client `setup` with the example `x`.
fn inject(setup: &ClientSetup, fault: Fault, x: &[f64], log: &mut ClientLog) {
    use super::client::connect_server;
    use super::wire::{
        ClientMessage, ErrorKind, ServerMessage, read_header, write_header, write_words,
    };
    use std::io::Write;
    let mut id = [0u8; 8];
    if getrandom_fill(&mut id).is_err() {
        return;
    }
    let header = ClientMessage::Query {
        id: hex(&id),
        examples: 1,
        answer: Answer::Class,
    };
    match fault {
        Fault::Abandon => {
            log.abandoned += 1;
            for i in 0..2 {
                if let Ok((mut tls, _)) = connect_server(setup, i) {
                    let _ = write_header(&mut tls, &header);
                    let _ = write_words(&mut tls, &vec![0; 2 * x.len()]);
                    let _ = tls.flush();
                }
            }
        }
        Fault::Malformed => {
            log.malformed[0] += 1;
            if let Ok((mut tls, _)) = connect_server(setup, 2) {
                let _ = write_header(&mut tls, &header);
                let _ = write_words(&mut tls, &vec![0; x.len()]);
                let _ = tls.flush();
                if let Ok(ServerMessage::Error {
                    kind: ErrorKind::Malformed,
                    ..
                }) = read_header::<ServerMessage>(&mut tls)
                {
                    log.malformed[1] += 1;
                }
            }
        }
    }
}

/// This process's resident memory in bytes (0 where /proc is absent).
fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<i64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Connects, retrying for up to `patience` while the servers are unavailable.
fn reconnect(setup: &ClientSetup, patience: Duration) -> Result<Client> {
    let start = Instant::now();
    loop {
        match Client::connect(setup) {
            Ok(c) => return Ok(c),
            Err(e) if start.elapsed() >= patience => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Runs the load test.
pub fn run_load(options: &LoadOptions) -> Result<LoadReport> {
    let data = examples(&options.model, options.data.as_deref())?;
    let (images, _) = data.range(0, data.len())?;
    let expected = plain::classify(&options.model, &images)?;
    let d = data.example_len();
    let inputs: Arc<Vec<f64>> = Arc::new(data.images.iter().map(|&v| f64::from(v)).collect());
    let expected = Arc::new(expected);
    let (one_shot, batch_rate) = if options.compare_batch > 0 {
        compare(options, &data)?
    } else {
        (None, None)
    };
    let most = options.clients.iter().copied().max().unwrap_or(1).max(1);
    let deployment = TempDeployment::new(most, options.max_batch, options.batch_wait)?;
    let say = |s: String| {
        if options.progress {
            eprintln!("{s}");
        }
    };
    say(format!(
        "loadtest: starting three servers of {} on {:?} ({})",
        options.model.name(),
        options.device,
        deployment.dir.display()
    ));
    let mut servers = PartyId::ALL
        .iter()
        .map(|&me| deployment.start_server(me, &options.model, options.link, options.device))
        .collect::<Result<Vec<_>>>()?;
    wait_until_serving(
        &servers.iter().collect::<Vec<_>>(),
        Duration::from_secs(300),
    )?;
    let device = format!("{:?}", options.device).to_lowercase();
    let link = options
        .link
        .map_or_else(|| "loopback".to_string(), |l| l.to_string());
    let mut rows = Vec::new();
    for &clients in &options.clients {
        let before: Vec<_> = servers.iter().map(|s| s.counters()).collect();
        let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier = Arc::new(Barrier::new(clients + 1));
        let mut threads = Vec::new();
        for k in 0..clients {
            let setup = deployment.client(k)?;
            let (barrier, inputs, expected) = (barrier.clone(), inputs.clone(), expected.clone());
            let queries = options.queries_per_client;
            let answered = answered.clone();
            let chaos = options.chaos;
            threads.push(std::thread::spawn(move || -> ClientLog {
                let mut log = ClientLog::default();
                let mut dice = Dice(0x9e37_79b9_7f4a_7c15 ^ (k as u64 + 1));
                let mut client = Client::connect(&setup);
                barrier.wait();
                let n = expected.len();
                for j in 0..queries {
                    let i = (k * queries + j) % n;
                    let x = &inputs[i * d..(i + 1) * d];
                    if chaos && let Some(fault) = dice.fault() {
                        inject(&setup, fault, x, &mut log);
                        continue;
                    }
                    // After a broken connection (a server restarted), connect again.
                    let connected = match &mut client {
                        Ok(c) => Ok(c),
                        Err(_) => {
                            client = reconnect(&setup, Duration::from_secs(60));
                            client.as_mut().map_err(|e| format!("connect: {e:#}"))
                        }
                    };
                    let c = match connected {
                        Ok(c) => c,
                        Err(e) => {
                            log.errors.push(e);
                            continue;
                        }
                    };
                    match c.query(x, 1, Answer::Class) {
                        Ok(a) => {
                            log.latencies.push(a.latency.as_secs_f64());
                            log.bytes += a.bytes_sent;
                            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            if a.classes() != [expected[i]] {
                                log.wrong += 1;
                            }
                        }
                        Err(e) => {
                            log.errors.push(match e.downcast_ref::<ServiceError>() {
                                Some(s) => s.to_string(),
                                None => format!("{e:#}"),
                            });
                            // The connections may be out of step or broken: start afresh.
                            client = Err(e);
                        }
                    }
                }
                log
            }));
        }
        barrier.wait();
        let start = Instant::now();
        let mut restarts = 0;
        // Resident memory is measured from when a tenth of the queries are answered (the
        // buffer pool and the threads have warmed up) to the end.
        let total = clients * options.queries_per_client;
        while answered.load(std::sync::atomic::Ordering::SeqCst) < total / 10
            && !threads.iter().all(|t| t.is_finished())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let rss_before = rss_bytes();
        while answered.load(std::sync::atomic::Ordering::SeqCst) < total * 9 / 20
            && !threads.iter().all(|t| t.is_finished())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let rss_half = rss_bytes();
        if options.chaos {
            // Half way through, P1 stops and starts again.
            say("loadtest: stopping server P1 and starting it again".into());
            let p1 = servers.remove(1);
            p1.stop()?;
            std::thread::sleep(Duration::from_millis(500));
            servers.insert(
                1,
                deployment.start_server(
                    PartyId::P1,
                    &options.model,
                    options.link,
                    options.device,
                )?,
            );
            restarts += 1;
        }
        let logs: Vec<ClientLog> = threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| ClientLog {
                    errors: vec!["a client thread panicked".into()],
                    ..ClientLog::default()
                })
            })
            .collect();
        let wall = start.elapsed().as_secs_f64();
        if options.chaos {
            // Abandoned queries expire from the queues within the query timeout.
            let drained = Instant::now();
            while servers.iter().any(|s| s.queued().0 > 0)
                && drained.elapsed() < Duration::from_secs(15)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let after: Vec<_> = servers.iter().map(|s| s.counters()).collect();
        let mut latencies: Vec<f64> = logs.iter().flat_map(|l| l.latencies.clone()).collect();
        latencies.sort_by(f64::total_cmp);
        let answered = latencies.len();
        let batches = after[0].batches - before[0].batches;
        let examples = after[0].examples - before[0].examples;
        // A restarted server counts afresh: its bytes before the restart are not in this.
        let server_bytes: u64 = after
            .iter()
            .zip(&before)
            .map(|(a, b)| a.serving_bytes.saturating_sub(b.serving_bytes))
            .sum();
        let rounds = after[0].serving_rounds - before[0].serving_rounds;
        let row = LoadRow {
            model: options.model.name().to_string(),
            device: device.clone(),
            link: link.clone(),
            clients,
            queries: clients * options.queries_per_client,
            answered,
            wrong: logs.iter().map(|l| l.wrong).sum(),
            errors: logs.iter().flat_map(|l| l.errors.clone()).collect(),
            p50_seconds: percentile(&latencies, 0.50),
            p99_seconds: percentile(&latencies, 0.99),
            queries_per_second: answered as f64 / wall,
            batches,
            mean_batch: examples as f64 / batches.max(1) as f64,
            server_bytes_per_query: server_bytes as f64 / answered.max(1) as f64,
            client_bytes_per_query: logs.iter().map(|l| l.bytes).sum::<u64>() as f64
                / answered.max(1) as f64,
            rounds_per_batch: rounds as f64 / batches.max(1) as f64,
            abandoned: logs.iter().map(|l| l.abandoned).sum(),
            malformed: [
                logs.iter().map(|l| l.malformed[0]).sum(),
                logs.iter().map(|l| l.malformed[1]).sum(),
            ],
            restarts,
            left_queued: servers.iter().map(|s| s.queued().0).sum(),
            rss_growth_bytes: [rss_half - rss_before, rss_bytes() - rss_half],
            one_shot_seconds: one_shot,
            batch_rate,
            compare_batch: options.compare_batch,
        };
        say(format!(
            "loadtest: {clients} client(s): p50 {:.1} ms, p99 {:.1} ms, {:.1} queries/s, {} \
             wrong, {} errors",
            row.p50_seconds * 1e3,
            row.p99_seconds * 1e3,
            row.queries_per_second,
            row.wrong,
            row.errors.len()
        ));
        rows.push(row);
    }
    // All three at once: none sets up again for the others.
    for s in &servers {
        s.stop_flag()
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    for s in servers {
        s.stop()?;
    }
    Ok(LoadReport { rows })
}

/// The one-shot job for one example, and the one-process rate at the comparison batch.
fn compare(options: &LoadOptions, data: &Dataset) -> Result<(Option<f64>, Option<f64>)> {
    let run = LocalRun {
        device: options.device,
        link: options.link,
        ..LocalRun::default()
    };
    let start = Instant::now();
    run_job(
        JobKind::Infer,
        Options {
            batch: Some(1),
            ..Options::default()
        },
        &run,
        options.model.clone(),
        DataSpec::Loaded(data.clone().truncate(1)),
    )?;
    let one_shot = start.elapsed().as_secs_f64();
    // Five batches: the rate of the median one, as `cryptgpu bench` reports it.
    const STEPS: usize = 5;
    let n = options.compare_batch;
    let mut batch = data.clone();
    while batch.len() < STEPS * n {
        let more = data.clone();
        batch.images.extend(more.images);
        batch.labels.extend(more.labels);
    }
    let batch = batch.truncate(STEPS * n);
    let (outcomes, _) = run_job(
        JobKind::Infer,
        Options {
            batch: Some(n as u64),
            ..Options::default()
        },
        &run,
        options.model.clone(),
        DataSpec::Loaded(batch),
    )?;
    // A step's time is its slowest party's.
    let mut steps: Vec<f64> = (0..STEPS)
        .map(|k| {
            outcomes
                .iter()
                .filter_map(|o| o.steps.get(k).map(|s| s.seconds))
                .fold(0.0, f64::max)
        })
        .collect();
    steps.sort_by(f64::total_cmp);
    let step = steps[STEPS / 2];
    Ok((Some(one_shot), Some(n as f64 / step.max(1e-9))))
}

/// The `q` quantile of sorted values (nearest rank); 0 for none.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_keys_are_set_in_place_or_added() {
        let text =
            "ca = \"ca.pem\"\n[serve]\naddresses = []\n# max_batch = 64\n[[party]]\nname = \"a\"\n";
        let out = set_serve_key(text, "max_batch", "8");
        assert!(
            out.contains("[serve]\naddresses = []\nmax_batch = 8\n[[party]]"),
            "{out}"
        );
        let out = set_serve_key(&out, "max_batch", "16");
        assert_eq!(out.matches("max_batch").count(), 1, "{out}");
        assert!(out.contains("max_batch = 16"));
        let out = set_serve_key("ca = 1\n", "client_limit", "3");
        assert!(out.ends_with("[serve]\nclient_limit = 3\n"), "{out}");
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.99), 4.0);
    }
}
