//! `cryptgpu`: private inference and training of neural networks by three parties holding
//! 2-out-of-3 replicated secret shares, on the CPU, CUDA or a wgpu GPU.
//!
//! `demo`, `infer` and `train` run the three parties (model owner, data owner, helper) as
//! threads of one process; `certs` makes a deployment's certificates and `parties.toml`,
//! and `party` runs one party of the same jobs on its own host, over mutual TLS.

#![forbid(unsafe_code)]

mod backend;
mod bench;
mod config;
mod demo;
mod failure;
mod files;
mod jobs;
mod manifest;
mod party;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use cryptgpu_backend::GpuBackend;
use cryptgpu_nn::data::{Normalization, Split};
use cryptgpu_nn::model::Model;
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::{onnx, plain, weights, zoo};
use cryptgpu_share::{KeySource, Truncation};
use cryptgpu_transport::LinkProfile;
use indicatif::{ProgressBar, ProgressStyle};

use backend::{BackendChoice, Job, run_on};
use files::inputs::{Layout, open_input};
use files::output::{MODEL_EXTENSIONS, PREDICTION_EXTENSIONS, check_output};
use files::predictions::write_predictions;
use jobs::{DataSpec, DatasetChoice, PartyInput, PartyOutcome, Roles, run_in_process};
use manifest::{JobKind, Options, Reveal};

/// Private machine learning on secret shares by three parties.
#[derive(Parser, Debug)]
#[command(name = "cryptgpu", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Classify bundled MNIST test digits privately with the bundled LeNet (three parties in
    /// one process) and compare with plaintext inference.
    Demo {
        /// Device: auto (CUDA, else a hardware wgpu GPU, else CPU), cpu, cuda or wgpu.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// Classify only the first N bundled digits.
        #[arg(long)]
        limit: Option<usize>,
        /// Truncation: exact (the default) or probabilistic.
        #[arg(long, value_parser = parse_truncation)]
        truncation: Option<Truncation>,
        /// Print one JSON object at the end instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Private inference of a model over the data owner's examples, three parties in one
    /// process.
    Infer(InferArgs),
    /// Private training with SGD, evaluated privately after each epoch, three parties in one
    /// process, compared with the same training in plaintext.
    Train(TrainArgs),
    /// Make a deployment: a CA, a certificate and key per party, and `parties.toml`.
    Certs {
        /// The directory to write (created if needed).
        #[arg(long)]
        out: PathBuf,
        /// Where P0, P1 and P2 are reached: three host:port, comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 1.., required = true)]
        addresses: Vec<String>,
        /// The parties' names (DNS names in their certificates); default party0,party1,party2.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        names: Option<Vec<String>>,
        /// Replace an existing deployment in DIR (its keys are lost).
        #[arg(long)]
        force: bool,
    },
    /// Time one cell of the bench matrix: a zoo network's private inference or training
    /// iteration (three parties in one process, random inputs, optionally over an emulated
    /// link), or one backend's ring GEMM. `cargo xtask bench` runs the whole matrix.
    Bench(bench::BenchArgs),
    /// Run one party of a job on this host, over mutual TLS with the other two. Each party
    /// passes only what it owns: the model owner --model/--weights, the data owner
    /// --data/--dataset or --input (and --out), the helper nothing but the config.
    Party {
        /// The deployment file (`cryptgpu certs` writes one).
        #[arg(long)]
        config: PathBuf,
        /// This party: 0, 1 or 2.
        #[arg(long)]
        id: usize,
        #[command(subcommand)]
        job: PartyJob,
    },
}

/// The job a party runs.
#[derive(Subcommand, Debug)]
enum PartyJob {
    /// Private inference.
    Infer(InferArgs),
    /// Private training.
    Train(TrainArgs),
}

/// What the model owner passes.
#[derive(Args, Debug, Default, Clone)]
struct ModelArgs {
    /// A zoo model (lenet, secureml, alexnet-cifar10, ...); may be left out with an ONNX
    /// file, whose graph is the model. [model owner]
    #[arg(long)]
    model: Option<String>,
    /// Pooling of zoo models: avg or max (default avg). [model owner]
    #[arg(long)]
    pooling: Option<String>,
}

/// What the data owner passes.
#[derive(Args, Debug, Default, Clone)]
struct DataArgs {
    /// Directory of the data set's files. [data owner]
    #[arg(long)]
    data: Option<PathBuf>,
    /// Data set: mnist (the default), cifar10, or synthetic (random examples of the model's
    /// shape, for timing). [data owner]
    #[arg(long, value_enum)]
    dataset: Option<DatasetChoice>,
    /// Use at most N examples (of each split). [data owner]
    #[arg(long)]
    limit: Option<usize>,
    /// Input normalisation mean(s) on the [0, 1] scale: one value or one per channel
    /// (default: the model's). [data owner]
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    mean: Option<Vec<f64>>,
    /// Input normalisation standard deviation(s). [data owner]
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    std: Option<Vec<f64>>,
}

/// How a command runs: device, output format, keys.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Device: auto (CUDA, else a hardware wgpu GPU, else CPU), cpu, cuda or wgpu. Parties
    /// may use different devices: the results are the same.
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// Print one JSON object at the end.
    #[arg(long)]
    json: bool,
    /// INSECURE, FOR TESTS ONLY: derive every party's PRG keys from this public seed, so that
    /// runs are bit-for-bit repeatable and anyone who knows the seed knows every share. All
    /// three parties must pass the same seed.
    #[arg(long, value_name = "SEED")]
    insecure_test_keys: Option<u64>,
    /// Deliver every message this party sends as late as it would arrive over an emulated
    /// network link: `none`, `lan` (10 Gbit/s, 0.2 ms round trip), `wan` (100 Mbit/s,
    /// 40 ms) or `BANDWIDTH,RTT` such as `1gbit,10ms`; try a WAN deployment on one machine.
    /// `party` takes it from the deployment's `[link] emulate` unless given here.
    #[arg(long, value_name = "LINK", value_parser = parse_link)]
    link: Option<LinkChoice>,
}

/// `--link`: `none` or an emulated link.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LinkChoice(Option<LinkProfile>);

/// Parses `--link`.
fn parse_link(s: &str) -> std::result::Result<LinkChoice, String> {
    cryptgpu_transport::parse_link(s)
        .map(LinkChoice)
        .map_err(|e| e.to_string())
}

impl RunArgs {
    /// The emulated link `--link` asks for, if any.
    fn link(&self) -> Option<LinkProfile> {
        self.link.and_then(|l| l.0)
    }
}

impl RunArgs {
    fn keys(&self) -> KeySource {
        match self.insecure_test_keys {
            None => KeySource::Os,
            Some(seed) => {
                eprintln!(
                    "WARNING: --insecure-test-keys: every party's keys come from a public seed; \
                     the shares are NOT secret. For tests only."
                );
                KeySource::InsecureSeeded(seed)
            }
        }
    }
}

/// `infer`'s options.
#[derive(Args, Debug, Clone)]
struct InferArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Weights: a .safetensors file for the zoo model, or an .onnx file. [model owner]
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// The data owner's own inputs instead of a data set: a .npy array (float32 or uint8;
    /// NCHW, or NHWC with --layout nhwc) or a folder of PNG/JPEG images (resized to the
    /// model's input). uint8 and images are scaled to [0, 1] and normalised with
    /// --mean/--std (default: the model's); float arrays are used as they are unless
    /// --mean/--std is given. [data owner]
    #[arg(long)]
    input: Option<PathBuf>,
    /// The order of a 4-d --input array. [data owner]
    #[arg(long, value_enum, default_value = "nchw")]
    layout: Layout,
    /// Labels of --input (a .npy of integers, or a text file with one per line), for the
    /// accuracy. [data owner]
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Write what the data owner receives: .csv (input and class, and the scores), .json
    /// or .npy (classes, or [N, classes] scores). [data owner]
    #[arg(long)]
    out: Option<PathBuf>,
    /// What is revealed to the data owner (and no one else): the class, the logits, or
    /// softmax probabilities computed privately. Default class.
    #[arg(long, value_enum)]
    reveal: Option<Reveal>,
    /// Examples per private batch (default 64).
    #[arg(long)]
    batch: Option<u64>,
    /// Fractional bits f of the fixed-point encoding: 8 to 28 (default 16). Real values
    /// are compared exactly below 2^(63 − 2f) and products are exact below 2^(62 − 2f): see
    /// the README's "Fixed point and its limits".
    #[arg(long, value_parser = parse_frac_bits)]
    frac_bits: Option<u64>,
    /// How products are truncated back to f fractional bits: exact (never off by more than
    /// one unit; the default) or probabilistic (ABY3's, fewer bytes, rarely wrong by a huge
    /// amount; see the README).
    #[arg(long, value_parser = parse_truncation)]
    truncation: Option<Truncation>,
    /// ℓ of the comparison domain, 2 to 62: ReLU, max-pooling, Clip and every comparison
    /// are exact for values in [−2^ℓ, 2^ℓ) as ring integers (real magnitudes up to
    /// 2^(ℓ − f)) and silently wrong outside it; the owners' inputs and weights are checked
    /// against it before sharing. Costs about 6 bits per bit of ℓ. Default 63 − f (47 at
    /// f = 16: real magnitudes up to 2^31), twice any value a product makes before exact
    /// truncation fails.
    #[arg(long)]
    comparison_bits: Option<u64>,
    #[command(flatten)]
    run: RunArgs,
}

/// `train`'s options.
#[derive(Args, Debug, Clone)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Initial weights, to fine-tune: a .safetensors file for the zoo model, or an .onnx
    /// file whose graph is the model and whose weights are the starting point. Without it a
    /// zoo model starts from its seeded initialisation. [model owner]
    #[arg(long)]
    weights: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs (default 1).
    #[arg(long)]
    epochs: Option<u64>,
    /// Examples per SGD step (default 128).
    #[arg(long)]
    batch: Option<u64>,
    /// Learning rate (default 0.05).
    #[arg(long)]
    lr: Option<f64>,
    /// Momentum (default 0.9).
    #[arg(long)]
    momentum: Option<f64>,
    /// Weight decay (default 0).
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Seed of the initial weights (the model owner's) and of the example order and dropout
    /// masks (public). Default 0.
    #[arg(long)]
    seed: Option<u64>,
    /// Fractional bits f of the fixed-point encoding: 8 to 28 (default 16; 20 to 26 for
    /// deeper networks). Real values are compared exactly below 2^(63 − 2f) and products
    /// are exact below 2^(62 − 2f): see the README's "Fixed point and its limits".
    #[arg(long, value_parser = parse_frac_bits)]
    frac_bits: Option<u64>,
    /// How products are truncated back to f fractional bits: exact (the default) or
    /// probabilistic (a truncated product near 1 fails with odds 2^-31 at f = 16 and 2^-23
    /// at f = 20, often enough over the millions of products of a CNN's batch to wreck its
    /// training; see the README).
    #[arg(long, value_parser = parse_truncation)]
    truncation: Option<Truncation>,
    /// ℓ of the comparison domain, 2 to 62: ReLU, max-pooling, Clip and every comparison
    /// are exact for values in [−2^ℓ, 2^ℓ) as ring integers (real magnitudes up to
    /// 2^(ℓ − f)) and silently wrong outside it; the owners' inputs and weights are checked
    /// against it before sharing. Costs about 6 bits per bit of ℓ. Default 63 − f (47 at
    /// f = 16: real magnitudes up to 2^31), twice any value a product makes before exact
    /// truncation fails.
    #[arg(long)]
    comparison_bits: Option<u64>,
    /// Save the trained model (revealed to the model owner only): .safetensors (PyTorch
    /// names) or .onnx. [model owner]
    #[arg(long)]
    save: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

impl InferArgs {
    /// Checks `--out` before any work ([`check_output`]): a result that could not be
    /// written at the end would be work lost.
    fn check_out(&self) -> std::result::Result<(), files::output::OutputError> {
        self.out.as_deref().map_or(Ok(()), |path| {
            check_output("--out", path, PREDICTION_EXTENSIONS)
        })
    }
}

impl TrainArgs {
    /// Checks `--save` before any work ([`check_output`]).
    fn check_save(&self) -> std::result::Result<(), files::output::OutputError> {
        self.save.as_deref().map_or(Ok(()), |path| {
            check_output("--save", path, MODEL_EXTENSIONS)
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            backend,
            limit,
            truncation,
            json,
        } => {
            party::on_interrupt(None);
            let mut data = demo::mnist_sample()?;
            if let Some(n) = limit {
                data = data.truncate(n);
            }
            let args = InferArgs {
                model: ModelArgs::default(),
                weights: None,
                data: DataArgs::default(),
                input: None,
                layout: Layout::Nchw,
                labels: None,
                out: None,
                reveal: None,
                batch: Some(50),
                frac_bits: Some(16),
                truncation,
                comparison_bits: None,
                run: RunArgs {
                    backend,
                    json,
                    insecure_test_keys: None,
                    link: None,
                },
            };
            infer_in_process(
                demo::lenet()?,
                DataSpec::Loaded(data),
                &args,
                "bundled MNIST test digits",
            )
        }
        Command::Infer(args) => {
            party::on_interrupt(None);
            args.check_out()?;
            let model = load_model(&args.model, args.weights.as_deref())?;
            let data = data_spec(&args.data, Some(&args), JobKind::Infer)?;
            let what = match (&args.input, args.data.dataset) {
                (Some(path), _) => format!("inputs from {}", path.display()),
                (None, d) => format!("{:?} examples", d.unwrap_or(DatasetChoice::Mnist)),
            };
            infer_in_process(model, data, &args, &what)
        }
        Command::Train(args) => {
            party::on_interrupt(None);
            args.check_save()?;
            let model = initial_model(&args)?;
            let data = data_spec(&args.data, None, JobKind::Train)?;
            train_in_process(model, data, &args)
        }
        Command::Certs {
            out,
            addresses,
            names,
            force,
        } => {
            let path = config::make_deployment(&config::CertsRequest {
                out: &out,
                addresses: &addresses,
                names: names.as_deref(),
                force,
            })?;
            println!(
                "Wrote a deployment to {}: ca.pem, a certificate and a private key (mode 0600) \
                 per party, and {}.",
                out.display(),
                path.display()
            );
            println!(
                "Give every host parties.toml, ca.pem and its own certificate and key (never \
                 another party's key), then run on each: cryptgpu party --config parties.toml \
                 --id N infer|train ..."
            );
            Ok(())
        }
        Command::Bench(args) => {
            party::on_interrupt(None);
            bench::run(&args)
        }
        Command::Party { config, id, job } => party::run(&config, id, job),
    }
}

/// The fixed-point format and truncation mode of a job, for its JSON report.
fn number_format(m: &manifest::Manifest) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("frac_bits".into(), serde_json::json!(m.fixed.frac_bits()));
    map.insert("truncation".into(), serde_json::json!(m.truncation.name()));
    map.insert(
        "comparison_bits".into(),
        serde_json::json!(m.comparison_bits),
    );
    map
}

/// Parses `--truncation`.
/// `--frac-bits`: a number in [`manifest::FRAC_BITS`], refused with the reason otherwise.
fn parse_frac_bits(s: &str) -> std::result::Result<u64, String> {
    let f: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of fractional bits"))?;
    manifest::check_frac_bits(f).map_err(|e| e.to_string())?;
    Ok(f)
}

fn parse_truncation(s: &str) -> std::result::Result<Truncation, String> {
    s.parse()
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub(crate) fn progress(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// The public options of `infer` as this party gives them.
fn infer_options(args: &InferArgs) -> Options {
    Options {
        batch: args.batch,
        frac_bits: args.frac_bits,
        reveal: args.reveal,
        truncation: args.truncation,
        comparison_bits: args.comparison_bits,
        ..Options::default()
    }
}

/// The public options of `train` as this party gives them.
fn train_options(args: &TrainArgs) -> Options {
    Options {
        batch: args.batch,
        frac_bits: args.frac_bits,
        epochs: args.epochs,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        seed: args.seed,
        reveal: None,
        truncation: args.truncation,
        comparison_bits: args.comparison_bits,
    }
}

/// Runs a job's three parties in this process on the chosen backend, the model given to the
/// model owner and the data to the data owner; returns their outcomes and the backend's name.
fn run_in_process_on(
    job: JobKind,
    options: Options,
    run: &RunArgs,
    model: Model,
    data: DataSpec,
) -> Result<([PartyOutcome; 3], String)> {
    let inputs = jobs::in_process_inputs(job, options, run.keys(), model, data);
    let what = match job {
        JobKind::Infer => "private inference",
        JobKind::Train => "private training",
    };
    let bar = progress(0, what);
    let result = run_on(
        run.backend,
        InProcess {
            inputs,
            progress: &bar,
            link: run.link(),
            messages_on_device: true,
        },
    );
    bar.finish_and_clear();
    result
}

/// Runs a job's three parties in this process on the chosen backend.
pub(crate) struct InProcess<'a> {
    /// What each party owns and was told.
    pub(crate) inputs: [PartyInput; 3],
    /// Advanced by the data owner.
    pub(crate) progress: &'a ProgressBar,
    /// The emulated link every party's messages go over, if any.
    pub(crate) link: Option<LinkProfile>,
    /// Whether messages between the parties stay on the device (handles), or leave it and
    /// enter it again as between hosts.
    pub(crate) messages_on_device: bool,
}

impl Job for InProcess<'_> {
    type Output = [PartyOutcome; 3];

    fn run<B: GpuBackend>(self, backend: B) -> Result<[PartyOutcome; 3]> {
        run_in_process(
            &backend,
            self.inputs,
            self.progress,
            self.link,
            self.messages_on_device,
        )
    }
}

/// The figures every command reports.
struct Report {
    accuracy: Option<f64>,
    plaintext_accuracy: Option<f64>,
    agreement: f64,
    samples: usize,
    seconds: f64,
    bytes: [u64; 3],
    rounds: u64,
    backend: String,
}

impl Report {
    fn json(&self, extra: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
        let mut object = serde_json::json!({
            "accuracy": self.accuracy,
            "plaintext_accuracy": self.plaintext_accuracy,
            "agreement": self.agreement,
            "samples": self.samples,
            "seconds": self.seconds,
            "bytes_sent_per_party": self.bytes,
            "rounds": self.rounds,
            "backend": self.backend,
        });
        if let serde_json::Value::Object(map) = &mut object {
            map.extend(extra);
        }
        object
    }

    fn print(&self) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let percent = |a: Option<f64>| match a {
            Some(a) => format!("{:>7.2}%", 100.0 * a),
            None => "      - (no labels)".to_string(),
        };
        println!("  private accuracy    {}", percent(self.accuracy));
        println!("  plaintext accuracy  {}", percent(self.plaintext_accuracy));
        println!("  agreement           {:>7.2}%", 100.0 * self.agreement);
        println!("  time                {:>7.1} s", self.seconds);
        println!(
            "  sent per party      P0 {:.1} MiB, P1 {:.1} MiB, P2 {:.1} MiB",
            mib(self.bytes[0]),
            mib(self.bytes[1]),
            mib(self.bytes[2])
        );
        println!("  rounds              {}", self.rounds);
    }
}

/// The fraction of `predictions` equal to `truth`.
fn fraction_equal(predictions: &[usize], truth: &[usize]) -> f64 {
    let n = predictions.len().max(1) as f64;
    predictions
        .iter()
        .zip(truth)
        .filter(|(a, b)| a == b)
        .count() as f64
        / n
}

/// Private inference in one process, plaintext inference beside it, and the report.
fn infer_in_process(model: Model, data: DataSpec, args: &InferArgs, what: &str) -> Result<()> {
    let reference = model.clone();
    let (outcomes, backend) =
        run_in_process_on(JobKind::Infer, infer_options(args), &args.run, model, data)?;
    let owner = &outcomes[Roles::DEFAULT.data_owner.index()];
    let data = owner
        .data
        .as_ref()
        .context("the data owner loaded no data")?;
    let revealed = owner
        .revealed
        .as_ref()
        .context("the data owner received no predictions")?;
    let predictions = revealed.predicted_classes();
    let m = &owner.manifest;
    let plain_predictions = plain::predict_all(&reference, &data.test, m.batch)?;
    let (bytes, rounds) = jobs::traffic(&outcomes);
    let labels = data.labelled.then_some(&data.test.labels);
    let report = Report {
        accuracy: labels.map(|l| fraction_equal(&predictions, l)),
        plaintext_accuracy: labels.map(|l| fraction_equal(&plain_predictions, l)),
        agreement: fraction_equal(&predictions, &plain_predictions),
        samples: predictions.len(),
        seconds: outcomes.iter().map(|o| o.seconds).fold(0.0, f64::max),
        bytes,
        rounds,
        backend,
    };
    if let Some(path) = &args.out {
        write_predictions(path, &data.names, revealed)?;
    }
    if args.run.json {
        println!("{}", report.json(number_format(m)));
    } else {
        println!(
            "Private {} inference on {} {what}: three parties in one process, backend {}, \
             fixed point with {} fractional bits and {} truncation, revealing the {}.",
            reference.name(),
            report.samples,
            report.backend,
            m.fixed.frac_bits(),
            m.truncation,
            m.reveal,
        );
        report.print();
        if let Some(path) = &args.out {
            println!("  predictions         {}", path.display());
        }
    }
    Ok(())
}

/// Private training in one process, the same training in plaintext, and the report.
fn train_in_process(model: Model, data: DataSpec, args: &TrainArgs) -> Result<()> {
    let initial = model.clone();
    let (outcomes, backend) =
        run_in_process_on(JobKind::Train, train_options(args), &args.run, model, data)?;
    let owner = &outcomes[Roles::DEFAULT.data_owner.index()];
    let m = &owner.manifest;
    let data = owner
        .data
        .as_ref()
        .context("the data owner loaded no data")?;
    let train = data.train.as_ref().context("no training set")?;
    let test = &data.test;
    let trained = outcomes[Roles::DEFAULT.model_owner.index()]
        .trained
        .as_ref()
        .context("the model owner received no model")?;
    // Plaintext reference: the same network, initial weights, example order and optimiser.
    let sgd = SgdConfig::new(m.lr)
        .with_momentum(m.momentum)
        .with_weight_decay(m.weight_decay);
    let mut reference = initial;
    let mut plain_sgd = Sgd::new(sgd);
    let mut plain_accuracy = Vec::new();
    for epoch in 0..m.epochs {
        plain::train_epoch(
            &mut reference,
            &mut plain_sgd,
            train,
            m.batch,
            m.seed,
            epoch,
        )?;
        let accuracy = plain::accuracy(&reference, test, m.batch)?;
        eprintln!(
            "plaintext reference, epoch {}: test accuracy {:.2}%",
            epoch + 1,
            100.0 * accuracy
        );
        plain_accuracy.push(accuracy);
    }
    let accuracy: Vec<f64> = owner
        .epoch_predictions
        .iter()
        .map(|p| fraction_equal(p, &test.labels))
        .collect();
    let plain_final = plain::predict_all(&reference, test, m.batch)?;
    let last = owner.epoch_predictions.last().context("no epoch ran")?;
    if let Some(path) = &args.save {
        save_model(trained, path)?;
    }
    let (bytes, rounds) = jobs::traffic(&outcomes);
    let report = Report {
        accuracy: accuracy.last().copied(),
        plaintext_accuracy: plain_accuracy.last().copied(),
        agreement: fraction_equal(last, &plain_final),
        samples: test.len(),
        seconds: outcomes.iter().map(|o| o.seconds).fold(0.0, f64::max),
        bytes,
        rounds,
        backend,
    };
    if args.run.json {
        let mut extra = serde_json::Map::new();
        extra.insert("epoch_accuracy".into(), serde_json::json!(accuracy));
        extra.insert(
            "epoch_plaintext_accuracy".into(),
            serde_json::json!(plain_accuracy),
        );
        extra.insert("train_samples".into(), serde_json::json!(train.len()));
        extra.extend(number_format(m));
        println!("{}", report.json(extra));
    } else {
        println!(
            "Private training of {} on {} examples, {} epoch(s), batch {}, backend {}, {} \
             fractional bits, {} truncation:",
            trained.name(),
            train.len(),
            m.epochs,
            m.batch,
            report.backend,
            m.fixed.frac_bits(),
            m.truncation,
        );
        for (e, (a, p)) in accuracy.iter().zip(&plain_accuracy).enumerate() {
            println!(
                "  epoch {}: test accuracy private {:.2}%, plaintext {:.2}%",
                e + 1,
                100.0 * a,
                100.0 * p
            );
        }
        report.print();
        if let Some(path) = &args.save {
            println!("  saved               {}", path.display());
        }
    }
    Ok(())
}

/// Writes a model atomically: safetensors (PyTorch names) or ONNX, by the extension.
pub(crate) fn save_model(model: &Model, path: &Path) -> Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bytes = match extension.as_deref() {
        Some("safetensors") => weights::encode(&model.params, &weights::model_metadata(model))?,
        Some("onnx") => onnx::export(model, onnx::TensorEncoding::Raw)?,
        _ => bail!(
            "--save {}: the file must end in .safetensors or .onnx",
            path.display()
        ),
    };
    // The trained model is the model owner's secret: readable by its owner only.
    files::atomic::write_private_atomically(path, &bytes)
}

/// The model owner's model for `infer`: a zoo model with optional safetensors weights, or
/// an ONNX graph.
fn load_model(args: &ModelArgs, weights_path: Option<&Path>) -> Result<Model> {
    let pooling = args.pooling.as_deref().unwrap_or("avg");
    let is_onnx = weights_path.is_some_and(|p| p.extension().is_some_and(|e| e == "onnx"));
    if let (true, Some(path)) = (is_onnx, weights_path) {
        let model = onnx::import_file(path)?;
        if let Some(name) = &args.model {
            // Names the architecture the user expects: check it exists.
            zoo::build(name, pooling.parse()?)?;
        }
        return Ok(model);
    }
    let Some(name) = &args.model else {
        bail!(
            "--model is needed unless --weights is an .onnx file; known models: {}",
            zoo::MODELS.join(", ")
        );
    };
    let mut model = zoo::build(name, pooling.parse()?)?;
    if let Some(path) = weights_path {
        weights::load(&mut model, path)?;
    } else {
        eprintln!("note: no --weights given: {name} runs with its seeded initial weights");
    }
    Ok(model)
}

/// The model owner's initial model for `train`: `--weights` (an ONNX graph with its
/// weights, or a zoo model's safetensors) to fine-tune, else a zoo model seeded by `--seed`.
fn initial_model(args: &TrainArgs) -> Result<Model> {
    if let Some(path) = &args.weights {
        return load_model(&args.model, Some(path));
    }
    let name = args.model.model.as_deref().with_context(|| {
        format!(
            "--model is needed (a zoo model to train from its seeded initialisation: {}), or \
             --weights with an .onnx file to fine-tune",
            zoo::MODELS.join(", ")
        )
    })?;
    let pooling = args.model.pooling.as_deref().unwrap_or("avg");
    Ok(zoo::build_seeded(
        name,
        pooling.parse()?,
        args.seed.unwrap_or(0),
    )?)
}

/// `--mean`/`--std`, if given.
fn normalization(args: &DataArgs) -> Result<Option<Normalization>> {
    match (&args.mean, &args.std) {
        (Some(mean), Some(std)) => Ok(Some(Normalization {
            mean: mean.clone(),
            std: std.clone(),
        })),
        (None, None) => Ok(None),
        _ => bail!("give both --mean and --std, or neither"),
    }
}

/// The data owner's data: `--input` (inference), else a data set.
fn data_spec(args: &DataArgs, infer: Option<&InferArgs>, job: JobKind) -> Result<DataSpec> {
    let normalization = normalization(args)?;
    if let Some(infer) = infer
        && let Some(path) = &infer.input
    {
        if args.dataset.is_some() || args.data.is_some() {
            bail!("give --input, or --dataset/--data, not both");
        }
        return Ok(DataSpec::Input {
            source: open_input(path, infer.layout)?,
            labels: infer.labels.clone(),
            limit: args.limit,
            normalization,
        });
    }
    if infer.is_some_and(|i| i.labels.is_some()) {
        bail!("--labels goes with --input (data sets have their own labels)");
    }
    let kind = args.dataset.unwrap_or(DatasetChoice::Mnist);
    if kind == DatasetChoice::Synthetic {
        if args.data.is_some() {
            bail!("--dataset synthetic makes its examples: --data is not used");
        }
        return Ok(DataSpec::Synthetic {
            limit: args.limit,
            test_limit: None,
        });
    }
    let Some(dir) = &args.data else {
        bail!(
            "--data DIR is needed for {} ({}), or --dataset synthetic{}",
            if kind == DatasetChoice::Mnist {
                "MNIST"
            } else {
                "CIFAR-10"
            },
            if kind == DatasetChoice::Mnist {
                "the four idx files"
            } else {
                "the binary batches"
            },
            if job == JobKind::Infer {
                ", or --input FILE"
            } else {
                ""
            }
        );
    };
    // Read now, before any connection, so a missing file stops nobody else; normalised once
    // the manifest brings the model's constants.
    let unit = Normalization::unit();
    let load = |split| jobs::load_dataset(kind, dir, split, &unit, args.limit);
    Ok(DataSpec::Dataset {
        test: load(Split::Test)?,
        train: (job == JobKind::Train)
            .then(|| load(Split::Train))
            .transpose()?,
        normalization,
    })
}
