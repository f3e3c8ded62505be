//! `cryptgpu serve` (one server of the service), `cryptgpu query` (a client's query),
//! `cryptgpu upload` (the model owner's client uploading the model) and
//! `cryptgpu loadtest` (three servers and many clients in one process, timed): options and
//! printing over [`cryptgpu::serve`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Result, bail};
use clap::Args;
use cryptgpu::config::{ClientSetup, Deployment};
use cryptgpu::device::Device;
use cryptgpu::files::inputs::{Inputs, Layout, load_labels, open_input};
use cryptgpu::files::output::{PREDICTION_EXTENSIONS, check_output};
use cryptgpu::files::predictions::{Revealed, write_predictions};
use cryptgpu::manifest::Reveal;
use cryptgpu::models::load_model;
use cryptgpu::nn::data::{Normalization, Split, load_mnist};
use cryptgpu::serve::Server;
use cryptgpu::serve::client::Client;
use cryptgpu::serve::engine::EngineConfig;
use cryptgpu::serve::load::{LoadOptions, run_load};
use cryptgpu::serve::shares::NumberFormat;
use cryptgpu::serve::upload::upload_model;
use cryptgpu::serve::wire::Answer;
use cryptgpu::share::KeySource;
use cryptgpu::transport::PartyId;

use super::args::{LinkChoice, ModelArgs, NumberArgs, parse_device_memory, parse_link};

/// The model the options name, or the bundled LeNet when they name none.
fn model_or_bundled(args: &ModelArgs) -> Result<cryptgpu::nn::model::Model> {
    if args.model.is_none() && args.weights.is_none() {
        return cryptgpu::demo::lenet();
    }
    load_model(&args.source())
}

/// `cryptgpu serve`'s options.
#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// The deployment file, with its `[serve]` table (`cryptgpu certs --clients N` writes
    /// one).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// This server: 0, 1 or 2.
    #[arg(long)]
    pub(crate) id: usize,
    /// The model: --model and --weights, as for `infer` (default: the bundled MNIST
    /// LeNet). [model owner]
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) number: NumberArgs,
    /// Device: auto, cpu, cuda or wgpu.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) backend: Device,
    /// Deliver this server's messages to the other servers as late as over an emulated
    /// link (`lan`, `wan`, `BANDWIDTH,RTT`); default the deployment's `[link] emulate`.
    #[arg(long, value_name = "LINK", value_parser = parse_link)]
    pub(crate) link: Option<LinkChoice>,
    /// Device memory this server may hold (e.g. `40GB`, `512MiB`): a batch that would need
    /// more fails naming the layer and the bytes, and the servers set up again.
    #[arg(long, value_name = "SIZE", value_parser = parse_device_memory)]
    pub(crate) device_memory: Option<u64>,
    /// Where this server keeps its shares of a model its owner's client uploaded
    /// (`[serve] model_client`): a folder, made if absent; a restarted server serves them
    /// again without a new upload. Without it, the shares are held in memory only.
    #[arg(long, value_name = "DIR")]
    pub(crate) model_store: Option<PathBuf>,
    /// Do not log every query.
    #[arg(long)]
    pub(crate) quiet: bool,
}

/// Runs one server until Ctrl-C (or a termination signal): the first finishes the batch
/// that runs, fails what is queued with "shutting down" and tells the other servers; a
/// second exits at once.
pub(crate) fn serve(args: ServeArgs) -> Result<()> {
    let me = PartyId::new(args.id)
        .map_err(|_| anyhow::anyhow!("--id {}: a server is 0, 1 or 2", args.id))?;
    let deployment = Deployment::load(&args.config)?;
    let owner = deployment.roles.model_owner;
    let model_client = deployment
        .serve
        .as_ref()
        .and_then(|s| s.model_client.clone());
    let number_given = args.number.frac_bits.is_some()
        || args.number.truncation.is_some()
        || args.number.comparison_bits.is_some();
    let model = if let Some(client) = &model_client {
        let m = &args.model;
        if m.model.is_some() || m.weights.is_some() || m.pooling.is_some() || number_given {
            bail!(
                "the model and its number format come from client {client}'s upload ([serve] \
                 model_client in {}): no server takes --model, --weights, --pooling or a \
                 number format",
                args.config.display()
            );
        }
        if args.model_store.is_none() {
            eprintln!(
                "note: without --model-store the uploaded shares are held in memory only: \
                 after a restart this server waits for a new upload"
            );
        }
        None
    } else if args.model_store.is_some() {
        bail!(
            "--model-store keeps a model uploaded by a client, and {} has no [serve] \
             model_client",
            args.config.display()
        );
    } else if me == owner {
        Some(model_or_bundled(&args.model)?)
    } else {
        let m = &args.model;
        if m.model.is_some() || m.weights.is_some() || m.pooling.is_some() {
            bail!(
                "--model, --weights and --pooling are the model owner {owner}'s to pass; this \
                 is {me}"
            );
        }
        if number_given {
            bail!("the number format is the model owner {owner}'s to choose; this is {me}");
        }
        None
    };
    let link = match args.link {
        Some(l) => l.0,
        None => deployment.emulated_link,
    };
    let config = EngineConfig {
        me,
        deployment,
        model,
        number: NumberFormat {
            frac_bits: args.number.frac_bits,
            truncation: args.number.truncation,
            comparison_bits: args.number.comparison_bits,
        },
        link,
        keys: KeySource::Os,
        log_queries: !args.quiet,
        model_store: args.model_store,
    };
    cryptgpu::backend::memory::set_party_limit(args.device_memory);
    let mut server = Server::start(config, args.backend)?;
    let stop = server.stop_flag();
    let handler = ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            eprintln!("error: {me} was interrupted twice; exiting now");
            std::process::exit(130);
        }
        eprintln!("{me}: stopping after the batch that runs (Ctrl-C again to exit now)");
    });
    if let Err(e) = handler {
        eprintln!("note: Ctrl-C will not stop the server cleanly: {e}");
    }
    let (counters, device) = server.wait()?;
    eprintln!(
        "{me}: stopped on {device}: {} queries ({} examples) in {} batches over {} session(s)",
        counters.queries, counters.examples, counters.batches, counters.sessions
    );
    Ok(())
}

/// Who a client is: its deployment file, name, certificate and key (`query`, `upload`).
#[derive(Args, Debug)]
pub(crate) struct ClientArgs {
    /// The deployment file (its `[serve]` table and the parties' names); the client needs it,
    /// `ca.pem`, and its own certificate and key.
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// This client's name, as in its certificate (default client0).
    #[arg(long, default_value = "client0")]
    pub(crate) client: String,
    /// Its certificate (default NAME.pem beside the deployment file).
    #[arg(long)]
    pub(crate) cert: Option<PathBuf>,
    /// Its private key (default NAME.key.pem beside the deployment file).
    #[arg(long)]
    pub(crate) key: Option<PathBuf>,
}

impl ClientArgs {
    fn setup(&self) -> Result<ClientSetup> {
        ClientSetup::load(
            &self.config,
            &self.client,
            self.cert.as_deref(),
            self.key.as_deref(),
        )
    }
}

/// `cryptgpu query`'s options.
#[derive(Args, Debug)]
pub(crate) struct QueryArgs {
    #[command(flatten)]
    pub(crate) identity: ClientArgs,
    /// The inputs: a .npy array or a folder of PNG/JPEG images, as for `infer`.
    #[arg(long, required_unless_present = "data", conflicts_with = "data")]
    pub(crate) input: Option<PathBuf>,
    /// Or MNIST's test digits from this directory (idx files, gzip or raw), with their
    /// labels, for the accuracy.
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// The order of a 4-d --input array.
    #[arg(long, value_enum, default_value = "nchw")]
    pub(crate) layout: Layout,
    /// Labels of --input, for the accuracy.
    #[arg(long)]
    pub(crate) labels: Option<PathBuf>,
    /// Write the answers: .csv, .json or .npy, as for `infer`.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// What is revealed to this client (and no one else): class (default), logits or
    /// probabilities.
    #[arg(long, value_enum)]
    pub(crate) reveal: Option<Reveal>,
    /// Examples per query (default: all, up to the service's maximum).
    #[arg(long)]
    pub(crate) batch: Option<usize>,
    /// Use at most N examples.
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Print one JSON object at the end.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs a client's queries and writes its answers.
pub(crate) fn query(args: QueryArgs) -> Result<()> {
    if let Some(out) = &args.out {
        check_output("--out", out, PREDICTION_EXTENSIONS)?;
    }
    let setup = args.identity.setup()?;
    let mut client = Client::connect(&setup)?;
    let description = client.description().clone();
    let normalization: Option<Normalization> = description.normalization.clone().map(Into::into);
    let inputs = match (&args.input, &args.data) {
        (Some(path), _) => {
            let source = open_input(path, args.layout)?;
            if source.is_tokens() {
                bail!("the service takes real-valued inputs; token ids are not served yet");
            }
            let norm = if source.is_float() {
                None
            } else {
                normalization.as_ref()
            };
            source.load(&description.input_shape, norm, args.limit)?
        }
        (None, Some(dir)) => {
            let norm = normalization.unwrap_or_else(Normalization::unit);
            let digits = load_mnist(dir, Split::Test, &norm, args.limit)?;
            Inputs {
                names: (0..digits.len()).map(|i| i.to_string()).collect(),
                shape: digits.image_shape.clone(),
                labels: Some(digits.labels.clone()),
                images: digits.images,
            }
        }
        (None, None) => bail!("give --input or --data"),
    };
    anyhow::ensure!(
        inputs.shape == description.input_shape,
        "the inputs are {:?}, the served model takes {:?}",
        inputs.shape,
        description.input_shape
    );
    let n = inputs.len();
    let labels = match &args.labels {
        Some(p) => Some(load_labels(p, n)?),
        None => inputs.labels.clone(),
    };
    let d = description.example_len();
    let per_query = args
        .batch
        .unwrap_or(description.max_query_examples)
        .clamp(1, description.max_query_examples);
    let reveal = args.reveal.unwrap_or(Reveal::Class);
    let answer = Answer::from_reveal(reveal);
    let mut values = Vec::new();
    let mut latencies = Vec::new();
    let mut bytes = 0;
    for start in (0..n).step_by(per_query) {
        let end = (start + per_query).min(n);
        let x: Vec<f64> = inputs.images[start * d..end * d]
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let a = client.query(&x, end - start, answer)?;
        eprintln!(
            "{}: examples {start}..{end} ran in batch {} of {} examples; {:.1} ms",
            args.identity.client,
            a.batch,
            a.batch_examples,
            a.latency.as_secs_f64() * 1e3
        );
        latencies.push(a.latency.as_secs_f64());
        bytes += a.bytes_sent;
        values.extend(a.values);
    }
    let classes = description.classes;
    let revealed = match answer {
        Answer::Class => Revealed::Classes(values.iter().map(|&c| c as usize).collect()),
        Answer::Logits => Revealed::Logits { values, classes },
        Answer::Probabilities => Revealed::Probabilities { values, classes },
    };
    if let Some(out) = &args.out {
        write_predictions(out, &inputs.names, &revealed)?;
    }
    let predicted = revealed.predicted_classes();
    let accuracy = labels
        .as_ref()
        .map(|l| predicted.iter().zip(l).filter(|(p, l)| p == l).count() as f64 / n.max(1) as f64);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "client": args.identity.client,
                "model": description.model,
                "examples": n,
                "queries": latencies.len(),
                "latency_seconds": latencies,
                "bytes_sent": bytes,
                "accuracy": accuracy,
                "classes": if args.out.is_none() { Some(&predicted) } else { None },
            })
        );
    } else {
        if args.out.is_none() {
            for (name, c) in inputs.names.iter().zip(&predicted) {
                println!("{name}: class {c}");
            }
        }
        println!(
            "{n} examples of {} answered privately in {} queries; this client sent {:.2} MB{}{}",
            description.model,
            latencies.len(),
            bytes as f64 / 1e6,
            accuracy.map_or(String::new(), |a| format!("; accuracy {:.2}%", 100.0 * a)),
            args.out
                .as_ref()
                .map_or(String::new(), |o| format!("; written to {}", o.display())),
        );
    }
    Ok(())
}

/// `cryptgpu upload`'s options.
#[derive(Args, Debug)]
pub(crate) struct UploadArgs {
    #[command(flatten)]
    pub(crate) identity: ClientArgs,
    /// The model: --model and --weights, as for `infer` (default: the bundled MNIST
    /// LeNet).
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// The number format the servers compute in.
    #[command(flatten)]
    pub(crate) number: NumberArgs,
}

/// Uploads a model's shares to the three servers.
pub(crate) fn upload(args: UploadArgs) -> Result<()> {
    let setup = args.identity.setup()?;
    let model = model_or_bundled(&args.model)?;
    let report = upload_model(
        &setup,
        &model,
        NumberFormat {
            frac_bits: args.number.frac_bits,
            truncation: args.number.truncation,
            comparison_bits: args.number.comparison_bits,
        },
    )?;
    println!(
        "{}: uploaded {} ({} tensors, {} weights) as shares {}: {:.2} MB sent to the three \
         servers, which serve it once all three hold it",
        args.identity.client,
        model.name(),
        report.tensors,
        report.elements,
        report.id,
        report.bytes_sent as f64 / 1e6
    );
    Ok(())
}

/// `cryptgpu loadtest`'s options.
#[derive(Args, Debug)]
pub(crate) struct LoadArgs {
    /// The served model (default: the bundled MNIST LeNet).
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// MNIST directory for the queries' digits (default: the bundled test digits).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Concurrent clients of each run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    pub(crate) clients: Vec<usize>,
    /// Queries per client in each run.
    #[arg(long, default_value_t = 20)]
    pub(crate) queries: usize,
    /// Examples per batch the servers run at most.
    #[arg(long, default_value_t = 64)]
    pub(crate) max_batch: usize,
    /// How long the first query of a batch waits for others, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub(crate) batch_wait_ms: u64,
    /// Emulated link between the servers: none, lan, wan or BANDWIDTH,RTT.
    #[arg(long, value_name = "LINK", value_parser = parse_link)]
    pub(crate) link: Option<LinkChoice>,
    /// Device of the three servers.
    #[arg(long, value_enum, default_value = "cpu")]
    pub(crate) backend: Device,
    /// Also time the one-shot job (one digit, the model shared for it) and the one-process
    /// inference of a batch of this many digits, for comparison (0: neither).
    #[arg(long, default_value_t = 128)]
    pub(crate) compare_batch: usize,
    /// Inject faults: about 1 query in 20 abandoned after reaching two servers, 1 in 20
    /// malformed, and server P1 stopped and started again half way through each run.
    #[arg(long)]
    pub(crate) chaos: bool,
    /// Print one JSON object per run instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs the load test and prints its rows.
pub(crate) fn loadtest(args: LoadArgs) -> Result<()> {
    let model = model_or_bundled(&args.model)?;
    let report = run_load(&LoadOptions {
        model,
        data: args.data.clone(),
        clients: args.clients.clone(),
        queries_per_client: args.queries,
        max_batch: args.max_batch,
        batch_wait: std::time::Duration::from_millis(args.batch_wait_ms),
        link: args.link.and_then(|l| l.0),
        device: args.backend,
        compare_batch: args.compare_batch,
        progress: !args.json,
        chaos: args.chaos,
    })?;
    if args.json {
        for row in &report.rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
