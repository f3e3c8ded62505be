//! The command line's options: what the model owner, the data owner and every party pass,
//! and how they become the library's job options ([`Options`]), data ([`DataSpec`]) and
//! model source ([`ModelSource`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use cryptgpu::device::Device;
use cryptgpu::files::inputs::{Layout, open_input};
use cryptgpu::files::output::{MODEL_EXTENSIONS, OutputError, PREDICTION_EXTENSIONS, check_output};
use cryptgpu::jobs::{DataSpec, DatasetChoice, load_dataset};
use cryptgpu::local::LocalRun;
use cryptgpu::manifest::{self, JobKind, Options, Reveal};
use cryptgpu::models::ModelSource;
use cryptgpu::nn::data::{Normalization, Split};
use cryptgpu::share::{KeySource, Truncation};
use cryptgpu::transport::LinkProfile;
use indicatif::ProgressBar;

/// What the model owner passes.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct ModelArgs {
    /// A zoo model (lenet, secureml, alexnet-cifar10, ...); may be left out with an ONNX
    /// file, whose graph is the model. [model owner]
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// Pooling of zoo models: avg or max (default avg). [model owner]
    #[arg(long)]
    pub(crate) pooling: Option<String>,
    /// Weights: a .safetensors file for the zoo model, or an .onnx file whose graph is the
    /// model. To train, the starting point to fine-tune; without it a zoo model starts from
    /// its seeded initialisation. [model owner]
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
}

/// What the data owner passes.
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct DataArgs {
    /// Directory of the data set's files. [data owner]
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Data set: mnist (the default), cifar10, or synthetic (random examples of the model's
    /// shape, for timing). [data owner]
    #[arg(long, value_enum)]
    pub(crate) dataset: Option<DatasetChoice>,
    /// Use at most N examples (of each split). [data owner]
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// Input normalisation mean(s) on the [0, 1] scale: one value or one per channel
    /// (default: the model's). [data owner]
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub(crate) mean: Option<Vec<f64>>,
    /// Input normalisation standard deviation(s). [data owner]
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub(crate) std: Option<Vec<f64>>,
}

/// How a command runs: device, output format, keys.
#[derive(Args, Debug, Clone)]
pub(crate) struct RunArgs {
    /// Device: auto (CUDA, else a hardware wgpu GPU, else CPU), cpu, cuda or wgpu. Parties
    /// may use different devices: the results are the same.
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) backend: Device,
    /// Print one JSON object at the end.
    #[arg(long)]
    pub(crate) json: bool,
    /// INSECURE, FOR TESTS ONLY: derive every party's PRG keys from this public seed, so that
    /// runs are bit-for-bit repeatable and anyone who knows the seed knows every share. All
    /// three parties must pass the same seed.
    #[arg(long, value_name = "SEED")]
    pub(crate) insecure_test_keys: Option<u64>,
    /// Deliver every message this party sends as late as it would arrive over an emulated
    /// network link: `none`, `lan` (10 Gbit/s, 0.2 ms round trip), `wan` (100 Mbit/s,
    /// 40 ms) or `BANDWIDTH,RTT` such as `1gbit,10ms`; try a WAN deployment on one machine.
    /// `party` takes it from the deployment's `[link] emulate` unless given here.
    #[arg(long, value_name = "LINK", value_parser = parse_link)]
    pub(crate) link: Option<LinkChoice>,
    /// The most device memory each party may hold, e.g. `40GB`, `512MiB` or a number of
    /// bytes (decimal kB/MB/GB/TB, binary KiB/MiB/GiB/TiB): a layer whose buffers would go
    /// past it stops the job with an error that names it and the bytes it lacks, before the
    /// device runs out. Counted per party on every backend (tensors; on the GPUs also an
    /// op's scratch buffers). Default: no limit.
    #[arg(long, value_name = "SIZE", value_parser = parse_device_memory)]
    pub(crate) device_memory: Option<u64>,
}

/// Parses `--device-memory`: a size of at least one byte.
pub(crate) fn parse_device_memory(s: &str) -> std::result::Result<u64, String> {
    match cryptgpu::backend::memory::parse_size(s)? {
        0 => Err(format!("`{s}`: a party needs some device memory")),
        bytes => Ok(bytes),
    }
}

/// `--link`: `none` or an emulated link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct LinkChoice(pub(crate) Option<LinkProfile>);

/// Parses `--link`.
pub(crate) fn parse_link(s: &str) -> std::result::Result<LinkChoice, String> {
    cryptgpu_transport::parse_link(s)
        .map(LinkChoice)
        .map_err(|e| e.to_string())
}

impl RunArgs {
    /// Sets the device-memory ledger's per-party limit to `--device-memory` (none without
    /// it), for the jobs this process runs next.
    pub(crate) fn limit_device_memory(&self) {
        cryptgpu::backend::memory::set_party_limit(self.device_memory);
    }

    /// The emulated link `--link` asks for, if any (`--link none` and no `--link` alike).
    pub(crate) fn link(&self) -> Option<LinkProfile> {
        self.link.and_then(|l| l.0)
    }
}

impl RunArgs {
    pub(crate) fn keys(&self) -> KeySource {
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

/// The number format of a job: every party passes the same (the manifest checks).
#[derive(Args, Debug, Default, Clone)]
pub(crate) struct NumberArgs {
    /// Fractional bits f of the fixed-point encoding: 8 to 28 (default 16; 20 to 26 to
    /// train deeper networks). Real values are compared exactly below 2^(63 − 2f) and
    /// products are exact below 2^(62 − 2f): see the README's "Fixed point and its limits".
    #[arg(long, value_parser = parse_frac_bits)]
    pub(crate) frac_bits: Option<u64>,
    /// How products are truncated back to f fractional bits: exact (never off by more than
    /// one unit; the default) or probabilistic (ABY3's, fewer bytes; a truncated product
    /// near 1 fails by a huge amount with odds 2^-31 at f = 16 and 2^-23 at f = 20, often
    /// enough over the millions of products of a CNN's batch to wreck its training; see the
    /// README).
    #[arg(long, value_parser = parse_truncation)]
    pub(crate) truncation: Option<Truncation>,
    /// ℓ of the comparison domain, 2 to 62: ReLU, max-pooling, Clip and every comparison
    /// are exact for values in [−2^ℓ, 2^ℓ) as ring integers (real magnitudes up to
    /// 2^(ℓ − f)) and silently wrong outside it; the owners' inputs and weights are checked
    /// against it before sharing. Costs about 6 bits (all parties together) per bit of ℓ.
    /// Default 63 − f (47 at f = 16: real magnitudes up to 2^31), twice any value a product
    /// makes before exact truncation fails.
    #[arg(long)]
    pub(crate) comparison_bits: Option<u64>,
}

/// `infer`'s options.
#[derive(Args, Debug, Clone)]
pub(crate) struct InferArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// The data owner's own inputs instead of a data set: a .npy array (float32 or uint8;
    /// NCHW, or NHWC with --layout nhwc) or a folder of PNG/JPEG images (resized to the
    /// model's input). uint8 and images are scaled to [0, 1] and normalised with
    /// --mean/--std (default: the model's); float arrays are used as they are unless
    /// --mean/--std is given. [data owner]
    #[arg(long)]
    pub(crate) input: Option<PathBuf>,
    /// The order of a 4-d --input array. [data owner]
    #[arg(long, value_enum, default_value = "nchw")]
    pub(crate) layout: Layout,
    /// Labels of --input (a .npy of integers, or a text file with one per line), for the
    /// accuracy. [data owner]
    #[arg(long)]
    pub(crate) labels: Option<PathBuf>,
    /// Write what the data owner receives: .csv (input and class, and the scores), .json
    /// or .npy (classes, or [N, classes] scores). [data owner]
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// What is revealed to the data owner (and no one else): the class, the logits, or
    /// softmax probabilities computed privately. Default class.
    #[arg(long, value_enum)]
    pub(crate) reveal: Option<Reveal>,
    /// Examples per private batch (default 64).
    #[arg(long)]
    pub(crate) batch: Option<u64>,
    #[command(flatten)]
    pub(crate) number: NumberArgs,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// `train`'s options.
#[derive(Args, Debug, Clone)]
pub(crate) struct TrainArgs {
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Epochs (default 1).
    #[arg(long)]
    pub(crate) epochs: Option<u64>,
    /// Examples per SGD step (default 128).
    #[arg(long)]
    pub(crate) batch: Option<u64>,
    /// Learning rate (default 0.05).
    #[arg(long)]
    pub(crate) lr: Option<f64>,
    /// Momentum (default 0.9).
    #[arg(long)]
    pub(crate) momentum: Option<f64>,
    /// Weight decay (default 0).
    #[arg(long)]
    pub(crate) weight_decay: Option<f64>,
    /// Seed of the initial weights (the model owner's) and of the example order and dropout
    /// masks (public). Default 0.
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    #[command(flatten)]
    pub(crate) number: NumberArgs,
    /// Save the trained model (revealed to the model owner only): .safetensors (PyTorch
    /// names) or .onnx. [model owner]
    #[arg(long)]
    pub(crate) save: Option<PathBuf>,
    /// Train only the parameters whose names start with PREFIX (repeatable; e.g. `head` to
    /// fine-tune a classifier on a frozen encoder); the rest stay as they are and no
    /// backward pass runs through them. [model owner]
    #[arg(long = "train-only", value_name = "PREFIX")]
    pub(crate) train_only: Vec<String>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

impl InferArgs {
    /// Checks `--out` before any work ([`check_output`]): a result that could not be
    /// written at the end would be work lost.
    pub(crate) fn check_out(&self) -> std::result::Result<(), OutputError> {
        self.out.as_deref().map_or(Ok(()), |path| {
            check_output("--out", path, PREDICTION_EXTENSIONS)
        })
    }
}

impl TrainArgs {
    /// Checks `--save` before any work ([`check_output`]).
    pub(crate) fn check_save(&self) -> std::result::Result<(), OutputError> {
        self.save.as_deref().map_or(Ok(()), |path| {
            check_output("--save", path, MODEL_EXTENSIONS)
        })
    }
}

/// `--frac-bits`: a number in [`cryptgpu::manifest::FRAC_BITS`], refused with the reason otherwise.
pub(crate) fn parse_frac_bits(s: &str) -> std::result::Result<u64, String> {
    let f: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a whole number of fractional bits"))?;
    manifest::check_frac_bits(f).map_err(|e| e.to_string())?;
    Ok(f)
}

/// Parses `--truncation`.
pub(crate) fn parse_truncation(s: &str) -> std::result::Result<Truncation, String> {
    s.parse()
}

/// The public options of `infer` as this party gives them.
pub(crate) fn infer_options(args: &InferArgs) -> Options {
    Options {
        batch: args.batch,
        frac_bits: args.number.frac_bits,
        reveal: args.reveal,
        truncation: args.number.truncation,
        comparison_bits: args.number.comparison_bits,
        ..Options::default()
    }
}

/// The public options of `train` as this party gives them.
pub(crate) fn train_options(args: &TrainArgs) -> Options {
    Options {
        batch: args.batch,
        frac_bits: args.number.frac_bits,
        epochs: args.epochs,
        lr: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        seed: args.seed,
        reveal: None,
        truncation: args.number.truncation,
        comparison_bits: args.number.comparison_bits,
    }
}

/// `--mean`/`--std`, if given.
pub(crate) fn normalization(args: &DataArgs) -> Result<Option<Normalization>> {
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
pub(crate) fn data_spec(
    args: &DataArgs,
    infer: Option<&InferArgs>,
    job: JobKind,
) -> Result<DataSpec> {
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
    let load = |split| load_dataset(kind, dir, split, &unit, args.limit);
    Ok(DataSpec::Dataset {
        test: load(Split::Test)?,
        train: (job == JobKind::Train)
            .then(|| load(Split::Train))
            .transpose()?,
        normalization,
    })
}

impl TrainArgs {
    /// The model owner's starting model, with `--train-only` applied.
    pub(crate) fn initial_model(&self) -> Result<cryptgpu_nn::Model> {
        let mut model =
            cryptgpu::models::initial_model(&self.model.source(), self.seed.unwrap_or(0))?;
        model.train_only(&self.train_only)?;
        Ok(model)
    }
}

impl ModelArgs {
    /// The library's model source.
    pub(crate) fn source(&self) -> ModelSource<'_> {
        ModelSource {
            name: self.model.as_deref(),
            pooling: self.pooling.as_deref(),
            weights: self.weights.as_deref(),
        }
    }
}

impl RunArgs {
    /// How a job runs in this process, with `progress` advanced by the data owner.
    pub(crate) fn local<'a>(&self, progress: &'a ProgressBar) -> LocalRun<'a> {
        LocalRun {
            device: self.backend,
            keys: self.keys(),
            link: self.link(),
            progress: Some(progress),
        }
    }
}
