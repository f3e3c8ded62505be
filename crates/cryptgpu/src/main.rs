//! `cryptgpu`: private inference and training of neural networks by three parties holding
//! 2-out-of-3 replicated secret shares, on the CPU, CUDA or a wgpu GPU.
//!
//! `cryptgpu demo` classifies a bundled sample of MNIST test digits with a bundled LeNet;
//! `cryptgpu infer` and `cryptgpu train` take models, weights and data sets. The three
//! parties (model owner P0, data owner P1, helper P2) run in one process.

mod backend;
mod demo;
mod jobs;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use cryptgpu_nn::data::{self, Dataset, Normalization, Split};
use cryptgpu_nn::model::Model;
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::{onnx, plain, weights, zoo};
use cryptgpu_ring::FixedPoint;
use indicatif::{ProgressBar, ProgressStyle};

use backend::{BackendChoice, run_on};
use jobs::{Inference, Traffic, Training};

/// Private machine learning on secret shares, three parties, one process.
#[derive(Parser, Debug)]
#[command(name = "cryptgpu", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Classify bundled MNIST test digits privately with the bundled LeNet and compare
    /// with plaintext inference.
    Demo {
        /// Device: auto (CUDA, else a hardware wgpu GPU, else CPU), cpu, cuda or wgpu.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// Classify only the first N bundled digits.
        #[arg(long)]
        limit: Option<usize>,
        /// Print one JSON object at the end instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Private inference of a model over a data set.
    Infer {
        /// A zoo model (lenet, secureml, alexnet-cifar10, ...); may be left out with an
        /// ONNX file, whose graph is the model.
        #[arg(long)]
        model: Option<String>,
        /// Weights: a .safetensors file for the zoo model, or an .onnx file.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Directory of the data set's files.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Data set.
        #[arg(long, value_enum, default_value = "mnist")]
        dataset: DatasetChoice,
        /// Pooling of zoo models.
        #[arg(long, default_value = "avg")]
        pooling: String,
        /// Examples per private batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Classify at most N examples.
        #[arg(long)]
        limit: Option<usize>,
        /// Input normalisation mean(s) on the [0, 1] scale: one value or one per channel.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        mean: Option<Vec<f64>>,
        /// Input normalisation standard deviation(s).
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        std: Option<Vec<f64>>,
        /// Fractional bits of the fixed-point encoding.
        #[arg(long, default_value_t = 16)]
        frac_bits: u32,
        /// Device.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// Print one JSON object at the end.
        #[arg(long)]
        json: bool,
    },
    /// Private training with SGD, evaluated privately and in plaintext after each epoch.
    Train {
        /// A zoo model.
        #[arg(long)]
        model: String,
        /// Directory of the data set's files.
        #[arg(long)]
        data: PathBuf,
        /// Data set.
        #[arg(long, value_enum, default_value = "mnist")]
        dataset: DatasetChoice,
        /// Pooling of zoo models.
        #[arg(long, default_value = "avg")]
        pooling: String,
        /// Epochs.
        #[arg(long, default_value_t = 1)]
        epochs: u64,
        /// Examples per SGD step.
        #[arg(long, default_value_t = 128)]
        batch: usize,
        /// Learning rate.
        #[arg(long, default_value_t = 0.05)]
        lr: f64,
        /// Momentum.
        #[arg(long, default_value_t = 0.9)]
        momentum: f64,
        /// Weight decay.
        #[arg(long, default_value_t = 0.0)]
        weight_decay: f64,
        /// Train on at most N examples (and test on at most N).
        #[arg(long)]
        limit: Option<usize>,
        /// Seed of the initial weights and of the example order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Fractional bits of the fixed-point encoding. At 16 a truncated product near 1
        /// fails with odds 2^-31; at 20, 2^-23, often enough over the millions of products
        /// of a CNN's batch to wreck its training (see the README).
        #[arg(long, default_value_t = 16)]
        frac_bits: u32,
        /// Save the trained weights (revealed to the model owner) as safetensors.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Device.
        #[arg(long, value_enum, default_value = "auto")]
        backend: BackendChoice,
        /// Print one JSON object at the end.
        #[arg(long)]
        json: bool,
    },
}

/// The `--dataset` choice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DatasetChoice {
    /// MNIST idx files (gzip or raw).
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// Random inputs of the model's shape, for timing.
    Synthetic,
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
            json,
        } => {
            let model = demo::lenet()?;
            let mut data = demo::mnist_sample()?;
            if let Some(n) = limit {
                data = data.truncate(n);
            }
            let fixed = FixedPoint::new(16)?;
            infer(
                &model,
                &data,
                50,
                fixed,
                backend,
                json,
                "LeNet",
                "bundled MNIST test digits",
            )
        }
        Command::Infer {
            model,
            weights: weights_path,
            data: dir,
            dataset,
            pooling,
            batch,
            limit,
            mean,
            std,
            frac_bits,
            backend,
            json,
        } => {
            let model = load_model(model.as_deref(), weights_path.as_deref(), &pooling)?;
            let norm = normalization(&model, mean, std)?;
            let data = load_data(dataset, dir.as_deref(), Split::Test, &norm, limit, &model)?;
            let name = model.name().to_owned();
            let fixed = FixedPoint::new(frac_bits)?;
            infer(
                &model,
                &data,
                batch,
                fixed,
                backend,
                json,
                &name,
                &format!("{dataset:?} examples"),
            )
        }
        Command::Train {
            model,
            data: dir,
            dataset,
            pooling,
            epochs,
            batch,
            lr,
            momentum,
            weight_decay,
            limit,
            seed,
            frac_bits,
            save,
            backend,
            json,
        } => {
            let pooling = pooling.parse()?;
            let model = zoo::build_seeded(&model, pooling, seed)?;
            let norm = normalization(&model, None, None)?;
            let train = load_data(dataset, Some(&dir), Split::Train, &norm, limit, &model)?;
            let test = load_data(dataset, Some(&dir), Split::Test, &norm, limit, &model)?;
            let sgd = SgdConfig::new(lr)
                .with_momentum(momentum)
                .with_weight_decay(weight_decay);
            train_model(
                &model,
                &train,
                &test,
                epochs,
                batch,
                sgd,
                seed,
                FixedPoint::new(frac_bits)?,
                backend,
                save.as_deref(),
                json,
            )
        }
    }
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
fn progress(len: u64, what: &str) -> ProgressBar {
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

/// Runs private inference, plaintext inference, and prints the comparison.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site per command, all options"
)]
fn infer(
    model: &Model,
    data: &Dataset,
    batch: usize,
    fixed: FixedPoint,
    choice: BackendChoice,
    json: bool,
    model_name: &str,
    what: &str,
) -> Result<()> {
    anyhow::ensure!(!data.is_empty(), "no examples to classify");
    anyhow::ensure!(batch > 0, "--batch must be at least 1");
    let plain_predictions = plain::predict_all(model, data, batch)?;
    let bar = progress(data.len() as u64, "private inference");
    let job = Inference {
        model,
        data,
        batch,
        fixed,
        progress: &bar,
    };
    let (outcome, backend) = run_on(choice, job)?;
    bar.finish_and_clear();
    let n = data.len() as f64;
    let correct =
        |p: &[usize]| p.iter().zip(&data.labels).filter(|(a, b)| a == b).count() as f64 / n;
    let accuracy = correct(&outcome.predictions);
    let plaintext_accuracy = correct(&plain_predictions);
    let agreement = outcome
        .predictions
        .iter()
        .zip(&plain_predictions)
        .filter(|(a, b)| a == b)
        .count() as f64
        / n;
    let report = Report {
        accuracy,
        plaintext_accuracy,
        agreement,
        samples: data.len(),
        seconds: outcome.seconds,
        traffic: outcome.traffic,
        backend,
    };
    if json {
        println!("{}", report.json(serde_json::Map::new()));
    } else {
        println!(
            "Private {model_name} inference on {} {what}: three parties in one process, backend {}, fixed point with {} fractional bits.",
            data.len(),
            report.backend,
            fixed.frac_bits()
        );
        report.print();
    }
    Ok(())
}

/// The figures every command reports.
struct Report {
    accuracy: f64,
    plaintext_accuracy: f64,
    agreement: f64,
    samples: usize,
    seconds: f64,
    traffic: Traffic,
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
            "bytes_sent_per_party": self.traffic.bytes,
            "rounds": self.traffic.rounds,
            "backend": self.backend,
        });
        if let serde_json::Value::Object(map) = &mut object {
            map.extend(extra);
        }
        object
    }

    fn print(&self) {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!("  private accuracy    {:>7.2}%", 100.0 * self.accuracy);
        println!(
            "  plaintext accuracy  {:>7.2}%",
            100.0 * self.plaintext_accuracy
        );
        println!("  agreement           {:>7.2}%", 100.0 * self.agreement);
        println!("  time                {:>7.1} s", self.seconds);
        println!(
            "  sent per party      P0 {:.1} MiB, P1 {:.1} MiB, P2 {:.1} MiB",
            mib(self.traffic.bytes[0]),
            mib(self.traffic.bytes[1]),
            mib(self.traffic.bytes[2])
        );
        println!("  rounds              {}", self.traffic.rounds);
    }
}

/// Private training and the same training in plaintext from the same initial weights.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, all options of `train`"
)]
fn train_model(
    model: &Model,
    train: &Dataset,
    test: &Dataset,
    epochs: u64,
    batch: usize,
    sgd: SgdConfig,
    seed: u64,
    fixed: FixedPoint,
    choice: BackendChoice,
    save: Option<&Path>,
    json: bool,
) -> Result<()> {
    anyhow::ensure!(
        batch > 0 && epochs > 0,
        "--batch and --epochs must be at least 1"
    );
    anyhow::ensure!(
        !train.is_empty() && !test.is_empty(),
        "no examples to train or test on"
    );
    // Plaintext reference: the same network, initial weights, example order and optimiser.
    let mut reference = model.clone();
    let mut plain_sgd = Sgd::new(sgd);
    let mut plain_accuracy = Vec::new();
    for epoch in 0..epochs {
        plain::train_epoch(&mut reference, &mut plain_sgd, train, batch, seed, epoch)?;
        let accuracy = plain::accuracy(&reference, test, batch)?;
        eprintln!(
            "plaintext reference, epoch {}: test accuracy {:.2}%",
            epoch + 1,
            100.0 * accuracy
        );
        plain_accuracy.push(accuracy);
    }
    let work = epochs * (train.len() + test.len()) as u64;
    let bar = progress(work, "private training");
    let job = Training {
        model,
        train,
        test,
        epochs,
        batch,
        sgd,
        seed,
        fixed,
        progress: &bar,
    };
    let (outcome, backend) = run_on(choice, job)?;
    bar.finish_and_clear();
    let n = test.len() as f64;
    let accuracy: Vec<f64> = outcome
        .predictions
        .iter()
        .map(|p| p.iter().zip(&test.labels).filter(|(a, b)| a == b).count() as f64 / n)
        .collect();
    let plain_final = plain::predict_all(&reference, test, batch)?;
    let last = outcome.predictions.last().context("no epoch ran")?;
    let agreement = last
        .iter()
        .zip(&plain_final)
        .filter(|(a, b)| a == b)
        .count() as f64
        / n;
    if let Some(path) = save {
        weights::save(&outcome.model, path)?;
    }
    let report = Report {
        accuracy: *accuracy.last().context("no epoch ran")?,
        plaintext_accuracy: *plain_accuracy.last().context("no epoch ran")?,
        agreement,
        samples: test.len(),
        seconds: outcome.seconds,
        traffic: outcome.traffic,
        backend,
    };
    if json {
        let mut extra = serde_json::Map::new();
        extra.insert("epoch_accuracy".into(), serde_json::json!(accuracy));
        extra.insert(
            "epoch_plaintext_accuracy".into(),
            serde_json::json!(plain_accuracy),
        );
        extra.insert("train_samples".into(), serde_json::json!(train.len()));
        println!("{}", report.json(extra));
    } else {
        println!(
            "Private training of {} on {} examples, {epochs} epoch(s), batch {batch}, backend {}:",
            model.name(),
            train.len(),
            report.backend
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
        if let Some(path) = save {
            println!("  saved               {}", path.display());
        }
    }
    Ok(())
}

/// The model of `infer`: a zoo model with optional safetensors weights, or an ONNX graph.
fn load_model(name: Option<&str>, weights_path: Option<&Path>, pooling: &str) -> Result<Model> {
    let is_onnx = weights_path.is_some_and(|p| p.extension().is_some_and(|e| e == "onnx"));
    if is_onnx {
        let path = weights_path.expect("checked");
        let model = onnx::import_file(path)?;
        if let Some(name) = name {
            // Names the architecture the user expects: check it exists.
            zoo::build(name, pooling.parse()?)?;
        }
        return Ok(model);
    }
    let Some(name) = name else {
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

/// The input normalisation: `--mean`/`--std`, else the model's own, else x/255.
fn normalization(
    model: &Model,
    mean: Option<Vec<f64>>,
    std: Option<Vec<f64>>,
) -> Result<Normalization> {
    match (mean, std) {
        (Some(mean), Some(std)) => Ok(Normalization { mean, std }),
        (None, None) => Ok(model
            .normalization
            .clone()
            .unwrap_or_else(Normalization::unit)),
        _ => bail!("give both --mean and --std, or neither"),
    }
}

/// Loads the data set the model needs.
fn load_data(
    dataset: DatasetChoice,
    dir: Option<&Path>,
    split: Split,
    norm: &Normalization,
    limit: Option<usize>,
    model: &Model,
) -> Result<Dataset> {
    let data = match dataset {
        DatasetChoice::Synthetic => {
            let shape = model.input_shape();
            anyhow::ensure!(
                shape.len() == 3,
                "synthetic inputs need a [C, H, W] model input"
            );
            data::synthetic(
                [shape[0], shape[1], shape[2]],
                limit.unwrap_or(64),
                model.num_classes(),
                1,
            )?
        }
        DatasetChoice::Mnist => {
            let dir = dir.context("--data DIR is needed for MNIST (the four idx files)")?;
            data::load_mnist(dir, split, norm, limit)?
        }
        DatasetChoice::Cifar10 => {
            let dir = dir.context("--data DIR is needed for CIFAR-10 (the binary batches)")?;
            data::load_cifar10(dir, split, norm, limit)?
        }
    };
    let want = model.input_shape();
    anyhow::ensure!(
        data.image_shape[..] == want[..],
        "the data set's examples are {:?} but the model takes {:?}",
        data.image_shape,
        want
    );
    Ok(data)
}
