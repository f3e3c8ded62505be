//! A whole job in this process: the three parties' functions of [`crate::jobs::run_party`]
//! on three threads over the local transport, on the chosen [`Device`], with plaintext
//! inference or training beside it for the report. The CLI's `demo`, `infer` and `train` are
//! these functions and some printing.
//!
//! ```no_run
//! use cryptgpu::jobs::DataSpec;
//! use cryptgpu::local::{self, LocalRun};
//! use cryptgpu::manifest::Options;
//!
//! # fn main() -> anyhow::Result<()> {
//! let digits = cryptgpu::demo::mnist_sample()?.truncate(10);
//! let result = local::infer(
//!     cryptgpu::demo::lenet()?,
//!     DataSpec::Loaded(digits),
//!     Options::default(),
//!     &LocalRun::default(),
//! )?;
//! println!("{:?}, {:.0}% agree", result.predictions, 100.0 * result.summary.agreement);
//! # Ok(())
//! # }
//! ```

use std::io::IsTerminal;

use anyhow::{Context, Result};
use cryptgpu_backend::GpuBackend;
use cryptgpu_nn::model::Model;
use cryptgpu_nn::optim::{Sgd, SgdConfig};
use cryptgpu_nn::plain;
use cryptgpu_share::KeySource;
use cryptgpu_transport::LinkProfile;
use indicatif::{ProgressBar, ProgressStyle};

use crate::device::{Device, Job, run_on};
use crate::files::predictions::Revealed;
use crate::jobs::{self, DataSpec, PartyInput, PartyOutcome, in_process_inputs, run_in_process};
use crate::manifest::{JobKind, Manifest, Options};
use crate::roles::Roles;

/// How a job runs in this process: by default on [`Device::Auto`], with keys from the OS,
/// no emulated link and no progress bar.
#[derive(Clone, Debug)]
pub struct LocalRun<'a> {
    /// The backend the three parties share.
    pub device: Device,
    /// Where the parties' PRG keys come from ([`KeySource::Os`] unless a test asks for
    /// repeatable runs).
    pub keys: KeySource,
    /// Every message delivered as late as over this link, if any.
    pub link: Option<LinkProfile>,
    /// Advanced by the data owner; none shown without one.
    pub progress: Option<&'a ProgressBar>,
}

impl Default for LocalRun<'_> {
    fn default() -> Self {
        LocalRun {
            device: Device::Auto,
            keys: KeySource::Os,
            link: None,
            progress: None,
        }
    }
}

/// Runs a job's three parties in this process on the chosen device.
#[derive(Debug)]
pub struct InProcess<'a> {
    /// What each party owns and was told.
    pub inputs: [PartyInput; 3],
    /// Advanced by the data owner.
    pub progress: &'a ProgressBar,
    /// The emulated link every party's messages go over, if any.
    pub link: Option<LinkProfile>,
    /// Whether messages between the parties stay on the device (handles), or leave it and
    /// enter it again as between hosts.
    pub messages_on_device: bool,
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

/// Runs a job's three parties in this process, the model given to the model owner and the
/// data to the data owner ([`Roles::DEFAULT`]); returns their outcomes in party order and
/// the device they ran on.
pub fn run_job(
    job: JobKind,
    options: Options,
    run: &LocalRun<'_>,
    model: Model,
    data: DataSpec,
) -> Result<([PartyOutcome; 3], String)> {
    let inputs = in_process_inputs(job, options, run.keys, model, data);
    let hidden = ProgressBar::hidden();
    run_on(
        run.device,
        InProcess {
            inputs,
            progress: run.progress.unwrap_or(&hidden),
            link: run.link,
            messages_on_device: true,
        },
    )
}

/// The figures of a job run in one process.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Private accuracy on the test examples (none without labels).
    pub accuracy: Option<f64>,
    /// The plaintext model's accuracy on the same examples.
    pub plaintext_accuracy: Option<f64>,
    /// The fraction of examples where private and plaintext predictions agree.
    pub agreement: f64,
    /// Test examples.
    pub samples: usize,
    /// Wall time of the slowest party.
    pub seconds: f64,
    /// Bytes each party sent.
    pub bytes: [u64; 3],
    /// Rounds.
    pub rounds: u64,
    /// The device, in words.
    pub backend: String,
}

impl Summary {
    /// The figures of a job's `outcomes`: the private `predictions` against the plaintext
    /// ones and the `labels` (if any), the slowest party's time, the traffic.
    fn of(
        outcomes: &[PartyOutcome; 3],
        backend: String,
        predictions: &[usize],
        plaintext: &[usize],
        labels: Option<&[usize]>,
    ) -> Summary {
        let (bytes, rounds) = jobs::traffic(outcomes);
        Summary {
            accuracy: labels.map(|l| fraction_equal(predictions, l)),
            plaintext_accuracy: labels.map(|l| fraction_equal(plaintext, l)),
            agreement: fraction_equal(predictions, plaintext),
            samples: predictions.len(),
            seconds: outcomes.iter().map(|o| o.seconds).fold(0.0, f64::max),
            bytes,
            rounds,
            backend,
        }
    }

    /// The summary as a JSON object, with `extra` fields.
    pub fn json(&self, extra: serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
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
}

/// The fixed-point format and truncation mode of a job, for its JSON report.
pub fn number_format(m: &Manifest) -> serde_json::Map<String, serde_json::Value> {
    let mut map = serde_json::Map::new();
    map.insert("frac_bits".into(), serde_json::json!(m.fixed.frac_bits()));
    map.insert("truncation".into(), serde_json::json!(m.truncation.name()));
    map.insert(
        "comparison_bits".into(),
        serde_json::json!(m.comparison_bits),
    );
    map
}

/// The fraction of `predictions` equal to `truth`.
pub fn fraction_equal(predictions: &[usize], truth: &[usize]) -> f64 {
    let n = predictions.len().max(1) as f64;
    predictions
        .iter()
        .zip(truth)
        .filter(|(a, b)| a == b)
        .count() as f64
        / n
}

/// What private inference in one process gives.
#[derive(Debug)]
pub struct Inference {
    /// The figures.
    pub summary: Summary,
    /// The classes predicted privately, in the examples' order.
    pub predictions: Vec<usize>,
    /// What was revealed to the data owner.
    pub revealed: Revealed,
    /// One name per example: a file name or an index.
    pub names: Vec<String>,
    /// The manifest the parties agreed on.
    pub manifest: Manifest,
}

/// Private inference in one process, and plaintext inference beside it.
pub fn infer(
    model: Model,
    data: DataSpec,
    options: Options,
    run: &LocalRun<'_>,
) -> Result<Inference> {
    let reference = model.clone();
    let (mut outcomes, backend) = run_job(JobKind::Infer, options, run, model, data)?;
    let owner = &mut outcomes[Roles::DEFAULT.data_owner.index()];
    let data = owner.data.take().context("the data owner loaded no data")?;
    let revealed = owner
        .revealed
        .take()
        .context("the data owner received no predictions")?;
    let manifest = owner.manifest.clone();
    let predictions = revealed.predicted_classes();
    let plain_predictions = plain::predict_all(&reference, &data.test, manifest.batch)?;
    let labels = data.labelled.then_some(&data.test.labels[..]);
    let summary = Summary::of(&outcomes, backend, &predictions, &plain_predictions, labels);
    let names = data.names;
    Ok(Inference {
        summary,
        predictions,
        revealed,
        names,
        manifest,
    })
}

/// What private training in one process gives.
#[derive(Debug)]
pub struct Training {
    /// The figures (after the last epoch).
    pub summary: Summary,
    /// The trained model, revealed to the model owner.
    pub trained: Model,
    /// Private test accuracy after each epoch.
    pub epoch_accuracy: Vec<f64>,
    /// The plaintext reference's test accuracy after each epoch: the same network, initial
    /// weights, example order and optimiser.
    pub epoch_plaintext_accuracy: Vec<f64>,
    /// Training examples.
    pub train_samples: usize,
    /// The manifest the parties agreed on.
    pub manifest: Manifest,
}

/// Private training in one process, and the same training in plaintext beside it.
pub fn train(
    model: Model,
    data: DataSpec,
    options: Options,
    run: &LocalRun<'_>,
) -> Result<Training> {
    let initial = model.clone();
    let (mut outcomes, backend) = run_job(JobKind::Train, options, run, model, data)?;
    let trained = outcomes[Roles::DEFAULT.model_owner.index()]
        .trained
        .take()
        .context("the model owner received no model")?;
    let owner = &outcomes[Roles::DEFAULT.data_owner.index()];
    let m = &owner.manifest;
    let data = owner
        .data
        .as_ref()
        .context("the data owner loaded no data")?;
    let train = data.train.as_ref().context("no training set")?;
    let test = &data.test;
    let sgd = SgdConfig::new(m.lr)
        .with_momentum(m.momentum)
        .with_weight_decay(m.weight_decay);
    let mut reference = initial;
    let mut plain_sgd = Sgd::new(sgd);
    let mut epoch_plaintext_accuracy = Vec::new();
    for epoch in 0..m.epochs {
        plain::train_epoch(
            &mut reference,
            &mut plain_sgd,
            train,
            m.batch,
            m.seed,
            epoch,
        )?;
        epoch_plaintext_accuracy.push(plain::accuracy(&reference, test, m.batch)?);
    }
    let epoch_accuracy: Vec<f64> = owner
        .epoch_predictions
        .iter()
        .map(|p| fraction_equal(p, &test.labels))
        .collect();
    let plain_final = plain::predict_all(&reference, test, m.batch)?;
    let last = owner.epoch_predictions.last().context("no epoch ran")?;
    let summary = Summary::of(&outcomes, backend, last, &plain_final, Some(&test.labels));
    Ok(Training {
        summary,
        trained,
        epoch_accuracy,
        epoch_plaintext_accuracy,
        train_samples: train.len(),
        manifest: m.clone(),
    })
}

/// A progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress_bar(len: u64, what: &str) -> ProgressBar {
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
