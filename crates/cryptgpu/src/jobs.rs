//! The jobs behind the commands: private inference and private training, each written once
//! as a party-local function of (this party, its transport, what it owns). The in-process
//! commands (`demo`, `infer`, `train`) run the three functions on three threads over the
//! local transport ([`run_in_process`]); `cryptgpu party` runs one of them over mutual TLS.
//! There is no other code path.
//!
//! Each function first agrees on the job manifest with the other two
//! ([`crate::manifest::agree`]), then sets up the party's keys, shares what it owns and runs
//! the protocol. The model owner's closure alone reads the weights and the data owner's
//! alone the examples; the others learn the public architecture and the sizes from the
//! manifest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cryptgpu_backend::GpuBackend;
use cryptgpu_backend::counters::{self, DeviceCounts};
use cryptgpu_backend::memory;
use cryptgpu_nn::Tensor;
use cryptgpu_nn::data::{self, Dataset, Normalization, Split, epoch_order};
use cryptgpu_nn::model::Model;
use cryptgpu_nn::optim::SgdConfig;
use cryptgpu_nn::plain;
use cryptgpu_nn::private::{PrivateSgd, SharedModel, share_input, share_model_input};
use cryptgpu_nonlinear as nl;
use cryptgpu_share::{KeySource, Party, Rss};
use cryptgpu_transport::{
    CommStats, EmulatedLink, LinkProfile, LocalConfig, LocalTransport, PartyId, Transport,
    run_local_3pc_with,
};
use indicatif::ProgressBar;

use crate::failure::Stage;
use crate::files::inputs::InputSource;
use crate::files::predictions::Revealed;
use crate::manifest::{self, DataDescription, JobKind, Manifest, Options, Proposal, Reveal};
use crate::roles::Roles;

/// The data sets `--dataset` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatasetChoice {
    /// MNIST idx files (gzip or raw).
    Mnist,
    /// CIFAR-10 binary batches.
    Cifar10,
    /// Random inputs of the model's shape, for timing.
    Synthetic,
}

/// Where the data owner's examples come from, before they are loaded (loading needs the
/// model's input shape and normalisation, which the manifest brings).
#[derive(Clone, Debug)]
pub enum DataSpec {
    /// Examples already in memory and normalised (the demo's bundled digits).
    Loaded(Dataset),
    /// MNIST or CIFAR-10, read once with [`Normalization::unit`] (for the sizes the others
    /// must know) and normalised when the manifest is agreed.
    Dataset {
        /// The test split.
        test: Dataset,
        /// The training split (training only).
        train: Option<Dataset>,
        /// `--mean`/`--std`, if given.
        normalization: Option<Normalization>,
    },
    /// Random examples of the model's input shape, for timing.
    Synthetic {
        /// How many (default 64).
        limit: Option<usize>,
        /// How many test examples training evaluates on after each epoch (default: the
        /// same examples as the training set).
        test_limit: Option<usize>,
    },
    /// `--input`: a `.npy` array or a folder of images, with optional `--labels`.
    Input {
        /// The opened input.
        source: InputSource,
        /// A file of labels.
        labels: Option<PathBuf>,
        /// Use at most this many examples.
        limit: Option<usize>,
        /// `--mean`/`--std`, if given.
        normalization: Option<Normalization>,
    },
}

/// The data owner's examples, loaded.
#[derive(Clone, Debug)]
pub struct OwnedData {
    /// What inference classifies, or the test set of training.
    pub test: Dataset,
    /// The training set (training only).
    pub train: Option<Dataset>,
    /// One name per example of `test`: a file name or an index.
    pub names: Vec<String>,
    /// Whether `test` has real labels (without them, accuracy means nothing).
    pub labelled: bool,
}

impl DataSpec {
    /// What the other parties may know of the data: count, shape, classes, labels.
    fn describe(&self, job: JobKind) -> Result<DataDescription> {
        let shape = |s: &[usize]| Some(s.iter().map(|&d| d as u64).collect());
        Ok(match self {
            DataSpec::Loaded(d) => DataDescription {
                count: d.len() as u64,
                shape: shape(&d.image_shape),
                classes: Some(d.num_classes as u64),
                labels: true,
                test_count: Some(d.len() as u64),
            },
            DataSpec::Synthetic { limit, test_limit } => {
                let n = limit.unwrap_or(64) as u64;
                DataDescription {
                    count: n,
                    shape: None,
                    classes: None,
                    labels: true,
                    test_count: Some(test_limit.map_or(n, |t| t as u64)),
                }
            }
            DataSpec::Dataset { test, train, .. } => DataDescription {
                count: train.as_ref().unwrap_or(test).len() as u64,
                shape: shape(&test.image_shape),
                classes: Some(test.num_classes as u64),
                labels: true,
                test_count: Some(test.len() as u64),
            },
            DataSpec::Input {
                source,
                labels,
                limit,
                ..
            } => {
                if job == JobKind::Train {
                    bail!(
                        "training takes a data set (--dataset and --data); --input is for \
                         inference"
                    );
                }
                let n = limit.map_or(source.count(), |l| l.min(source.count()));
                DataDescription {
                    count: n as u64,
                    shape: source.shape().and_then(|s| shape(&s)),
                    classes: None,
                    labels: labels.is_some(),
                    test_count: None,
                }
            }
        })
    }

    /// Loads the examples as the manifest says: the model's input shape, the normalisation
    /// given on the command line or else the model's.
    fn load(&self, m: &Manifest) -> Result<OwnedData> {
        let model_norm = m.structure.normalization.clone();
        let norm = |given: &Option<Normalization>| {
            given
                .clone()
                .or_else(|| model_norm.clone())
                .unwrap_or_else(Normalization::unit)
        };
        let data = match self {
            DataSpec::Loaded(d) => OwnedData {
                names: index_names(d.len()),
                test: d.clone(),
                train: (m.job == JobKind::Train).then(|| d.clone()),
                labelled: true,
            },
            DataSpec::Synthetic { limit, test_limit } => {
                let n = limit.unwrap_or(64);
                let d = match m.structure.token_vocabulary() {
                    Some(v) => data::synthetic_tokens(&m.input_shape, v, n, m.classes, 1)?,
                    None => data::synthetic(&m.input_shape, n, m.classes, 1)?,
                };
                let (test, train) = match m.job {
                    JobKind::Train => (
                        test_limit.map_or_else(|| d.clone(), |t| d.clone().truncate(t)),
                        Some(d),
                    ),
                    JobKind::Infer => (d, None),
                };
                OwnedData {
                    names: index_names(test.len()),
                    train,
                    test,
                    labelled: true,
                }
            }
            DataSpec::Dataset {
                test,
                train,
                normalization,
            } => {
                let n = norm(normalization);
                OwnedData {
                    names: index_names(test.len()),
                    test: test.renormalized(&n)?,
                    train: train.as_ref().map(|t| t.renormalized(&n)).transpose()?,
                    labelled: true,
                }
            }
            DataSpec::Input {
                source,
                labels,
                limit,
                normalization,
            } => {
                // Float arrays are taken as they are unless --mean/--std says otherwise;
                // bytes and images are scaled to [0, 1] and normalised like the model's
                // training data.
                let n = match normalization {
                    Some(n) => Some(n.clone()),
                    None if source.is_float() || source.is_tokens() => None,
                    None => model_norm.clone(),
                };
                let mut inputs = source.load(&m.input_shape, n.as_ref(), *limit)?;
                if let Some(path) = labels {
                    inputs.labels = Some(crate::files::inputs::load_labels(path, inputs.len())?);
                }
                let labelled = inputs.labels.is_some();
                let names = inputs.names.clone();
                OwnedData {
                    test: inputs.into_dataset(m.classes)?,
                    train: None,
                    names,
                    labelled,
                }
            }
        };
        let count = match &data.train {
            Some(train) => train.len(),
            None => data.test.len(),
        };
        if count != m.count || (m.job == JobKind::Train && data.test.len() != m.test_count) {
            bail!(
                "the data loaded ({count} examples) is not what was announced ({}): did a file \
                 change?",
                m.count
            );
        }
        if data.test.image_shape != m.input_shape {
            bail!(
                "the examples are {:?} but the model takes {:?}",
                data.test.image_shape,
                m.input_shape
            );
        }
        Ok(data)
    }
}

fn index_names(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Loads a split of MNIST or CIFAR-10 from its directory.
pub fn load_dataset(
    kind: DatasetChoice,
    dir: &Path,
    split: Split,
    norm: &Normalization,
    limit: Option<usize>,
) -> Result<Dataset> {
    Ok(match kind {
        DatasetChoice::Mnist => data::load_mnist(dir, split, norm, limit)?,
        DatasetChoice::Cifar10 => data::load_cifar10(dir, split, norm, limit)?,
        DatasetChoice::Synthetic => bail!("synthetic examples are made, not loaded"),
    })
}

/// What one party owns and was told for a job.
#[derive(Debug)]
pub struct PartyInput {
    /// Who owns what.
    pub roles: Roles,
    /// The parties' identities, over TLS (`None` in one process).
    pub identities: Option<[String; 3]>,
    /// The job.
    pub job: JobKind,
    /// The public options this party was given.
    pub options: Options,
    /// Where this party's PRG keys come from.
    pub keys: KeySource,
    /// The model owner's model (weights for inference, initial weights for training).
    pub model: Option<Model>,
    /// The data owner's data.
    pub data: Option<DataSpec>,
}

impl PartyInput {
    /// This party's input for a job of a deployment (its roles and identities), with keys
    /// from the OS and nothing owned yet: the model owner adds [`PartyInput::with_model`],
    /// the data owner [`PartyInput::with_data`], the helper nothing.
    pub fn for_deployment(
        deployment: &crate::config::Deployment,
        job: JobKind,
        options: Options,
    ) -> PartyInput {
        PartyInput {
            roles: deployment.roles,
            identities: Some(deployment.identities.clone()),
            job,
            options,
            keys: KeySource::Os,
            model: None,
            data: None,
        }
    }

    /// The model owner's model.
    pub fn with_model(mut self, model: Model) -> PartyInput {
        self.model = Some(model);
        self
    }

    /// The data owner's data.
    pub fn with_data(mut self, data: DataSpec) -> PartyInput {
        self.data = Some(data);
        self
    }

    /// Keys from `keys` instead of the OS.
    pub fn with_keys(mut self, keys: KeySource) -> PartyInput {
        self.keys = keys;
        self
    }
}

/// What a party ends a job with.
#[derive(Debug)]
pub struct PartyOutcome {
    /// The manifest the parties agreed on.
    pub manifest: Manifest,
    /// The data owner's examples, as loaded.
    pub data: Option<OwnedData>,
    /// Inference: what was revealed to the data owner.
    pub revealed: Option<Revealed>,
    /// Training: the data owner's private predictions on the test set after each epoch.
    pub epoch_predictions: Vec<Vec<usize>>,
    /// Training: the trained model, revealed to the model owner.
    pub trained: Option<Model>,
    /// This party's communication, key setup included (the manifest's two rounds not).
    pub stats: CommStats,
    /// Each inference batch (inference) or SGD step (training), in order: the bench's
    /// per-step figures.
    pub steps: Vec<StepRecord>,
    /// Wall time from the agreed manifest to the end.
    pub seconds: f64,
}

/// One inference batch or training step as one party saw it.
#[derive(Clone, Copy, Debug)]
pub struct StepRecord {
    /// Wall time of the step at this party.
    pub seconds: f64,
    /// This party's communication during the step.
    pub stats: CommStats,
    /// This party's device work during the step (its thread's backend counters).
    pub device: DeviceCounts,
}

/// Runs one party's side of a job over `transport`: the manifest, key setup, and the
/// protocol. `progress` is advanced by the data owner.
pub fn run_party<B: GpuBackend, T: Transport>(
    backend: B,
    mut transport: T,
    input: PartyInput,
    progress: Option<&ProgressBar>,
) -> Result<PartyOutcome> {
    let me = transport.party();
    // Every backend charges the device buffers this thread makes to this party.
    memory::set_thread_party(Some(me.index()));
    let roles = input.roles;
    if (me == roles.model_owner) != input.model.is_some() {
        bail!(
            "{me} is the {}: the model goes to the model owner {} only",
            roles.describe(me),
            roles.model_owner
        );
    }
    if (me == roles.data_owner) != input.data.is_some() {
        bail!(
            "{me} is the {}: the data goes to the data owner {} only",
            roles.describe(me),
            roles.data_owner
        );
    }
    let proposal = Proposal {
        party: me,
        job: input.job,
        roles,
        identities: input.identities.clone(),
        keys: input.keys,
        options: input.options.clone(),
        architecture: input.model.as_ref().map(manifest::architecture_json),
        data: input
            .data
            .as_ref()
            .map(|d| d.describe(input.job).context(Stage::DATA))
            .transpose()?,
    };
    let manifest = manifest::agree(&mut transport, &proposal)?;
    let data = input
        .data
        .as_ref()
        .map(|d| d.load(&manifest).context(Stage::DATA))
        .transpose()?;
    if let (Some(_), Some(bar)) = (&data, progress) {
        let work = match manifest.job {
            JobKind::Infer => manifest.count,
            JobKind::Train => (manifest.count + manifest.test_count) * manifest.epochs as usize,
        };
        bar.set_length(work as u64);
    }
    let model = match input.model {
        Some(model) => model,
        None => manifest.structure.clone(),
    };
    let start = Instant::now();
    let mut p = Party::setup_with(backend, transport, manifest.fixed, manifest.keys)?;
    p.set_truncation(manifest.truncation);
    p.set_comparison_bits(manifest.comparison_bits)?;
    let mut outcome = PartyOutcome {
        data: None,
        revealed: None,
        epoch_predictions: Vec::new(),
        trained: None,
        stats: CommStats::default(),
        steps: Vec::new(),
        seconds: 0.0,
        manifest,
    };
    let m = &outcome.manifest;
    match m.job {
        JobKind::Infer => {
            let shared = SharedModel::share(&mut p, &model, roles.model_owner)?;
            outcome.revealed = infer_all(
                &mut p,
                &shared,
                m,
                m.count,
                m.reveal,
                data.as_ref(),
                progress,
                Some(&mut outcome.steps),
            )?;
        }
        JobKind::Train => {
            let (predictions, trained) = train(
                &mut p,
                &model,
                m,
                data.as_ref(),
                progress,
                start,
                &mut outcome.steps,
            )?;
            outcome.epoch_predictions = predictions;
            outcome.trained = trained;
        }
    }
    outcome.data = data;
    outcome.stats = p.stats();
    outcome.seconds = start.elapsed().as_secs_f64();
    Ok(outcome)
}

/// Shape of a batch of `n` examples.
fn batch_shape(m: &Manifest, n: usize) -> Vec<usize> {
    std::iter::once(n)
        .chain(m.input_shape.iter().copied())
        .collect()
}

/// Classifies (or scores) the first `count` examples of the data owner's `test` set in
/// batches; the data owner gets what `reveal` says.
fn infer_all<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    shared: &SharedModel<B>,
    m: &Manifest,
    count: usize,
    reveal: Reveal,
    data: Option<&OwnedData>,
    progress: Option<&ProgressBar>,
    mut steps: Option<&mut Vec<StepRecord>>,
) -> Result<Option<Revealed>> {
    let owner = m.roles.data_owner;
    let mut classes = Vec::new();
    let mut scores = Vec::new();
    for start in (0..count).step_by(m.batch) {
        let step = StepTimer::start(p);
        let end = (start + m.batch).min(count);
        let images = data.map(|d| d.test.range(start, end)).transpose()?;
        let x = share_model_input(
            p,
            &m.structure,
            owner,
            images.as_ref().map(|i| &i.0),
            &batch_shape(m, end - start),
        )?;
        match reveal {
            Reveal::Class => {
                if let Some(c) = shared.classify(p, &x, owner)? {
                    classes.extend(c);
                }
            }
            Reveal::Logits | Reveal::Probabilities => {
                let mut y = shared.forward(p, &x)?;
                if reveal == Reveal::Probabilities {
                    y = nl::softmax(p, &y, 1, nl::SoftmaxOptions::default())?;
                }
                if let Some(v) = p.reveal_to(owner, &y)? {
                    scores.extend(p.fixed().decode_slice(&v));
                }
            }
        }
        if let Some(steps) = steps.as_deref_mut() {
            steps.push(step.stop(p));
        }
        if p.id() == owner
            && let Some(bar) = progress
        {
            bar.inc((end - start) as u64);
        }
    }
    if p.id() != owner {
        return Ok(None);
    }
    Ok(Some(match reveal {
        Reveal::Class => Revealed::Classes(classes),
        Reveal::Logits => Revealed::Logits {
            values: scores,
            classes: m.classes,
        },
        Reveal::Probabilities => Revealed::Probabilities {
            values: scores,
            classes: m.classes,
        },
    }))
}

/// Private SGD for the manifest's epochs, with a private evaluation on the test set after
/// each; returns the data owner's predictions per epoch and the model owner's trained model.
fn train<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    model: &Model,
    m: &Manifest,
    data: Option<&OwnedData>,
    progress: Option<&ProgressBar>,
    start: Instant,
    steps: &mut Vec<StepRecord>,
) -> Result<(Vec<Vec<usize>>, Option<Model>)> {
    let roles = m.roles;
    let mut shared = SharedModel::share_for_training(p, model, roles.model_owner)?;
    let sgd = SgdConfig::new(m.lr)
        .with_momentum(m.momentum)
        .with_weight_decay(m.weight_decay);
    let mut optimizer = PrivateSgd::new(sgd);
    let classes = m.classes;
    let mut per_epoch = Vec::new();
    for epoch in 0..m.epochs {
        let order = epoch_order(m.count, m.seed, epoch);
        for (step, chunk) in order.chunks(m.batch).enumerate() {
            let timer = StepTimer::start(p);
            let (x, y) = match data.and_then(|d| d.train.as_ref()) {
                Some(train) => {
                    let (images, labels) = train.batch(chunk)?;
                    (Some(images), Some(onehot(&labels, classes)?))
                }
                None => (None, None),
            };
            let owner = roles.data_owner;
            let sx = share_model_input(
                p,
                &m.structure,
                owner,
                x.as_ref(),
                &batch_shape(m, chunk.len()),
            )?;
            let sy: Rss<B> = share_input(p, owner, y.as_ref(), &[chunk.len(), classes])?;
            let seed = plain::step_seed(m.seed, epoch, step as u64);
            shared.train_step(p, &mut optimizer, &sx, &sy, seed)?;
            steps.push(timer.stop(p));
            if let (Some(_), Some(bar)) = (data, progress) {
                bar.inc(chunk.len() as u64);
            }
        }
        let revealed = infer_all(
            p,
            &shared,
            m,
            m.test_count,
            Reveal::Class,
            data,
            progress,
            None,
        )?;
        if let (Some(Revealed::Classes(predictions)), Some(d)) = (&revealed, data) {
            report_epoch(progress, epoch, predictions, &d.test.labels, start);
            per_epoch.push(predictions.clone());
        }
    }
    let trained = shared.reveal_to(p, roles.model_owner)?;
    Ok((per_epoch, trained))
}

/// Tells the data owner each epoch's private test accuracy as soon as it is known (long runs
/// take hours): above the progress bar on a terminal, else as a line on stderr.
fn report_epoch(
    progress: Option<&ProgressBar>,
    epoch: u64,
    predictions: &[usize],
    labels: &[usize],
    start: Instant,
) {
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    let line = format!(
        "epoch {}: private test accuracy {:.2}% ({correct}/{}), {:.0} s",
        epoch + 1,
        100.0 * correct as f64 / labels.len().max(1) as f64,
        labels.len(),
        start.elapsed().as_secs_f64()
    );
    match progress {
        Some(bar) if !bar.is_hidden() => bar.println(line),
        _ => eprintln!("{line}"),
    }
}

/// Measures one step: its wall time, this party's communication and its device work.
struct StepTimer {
    start: Instant,
    stats: CommStats,
    device: DeviceCounts,
}

impl StepTimer {
    fn start<B: GpuBackend, T: Transport>(p: &Party<B, T>) -> StepTimer {
        StepTimer {
            start: Instant::now(),
            stats: p.stats(),
            device: counters::thread_counts(),
        }
    }

    fn stop<B: GpuBackend, T: Transport>(self, p: &Party<B, T>) -> StepRecord {
        StepRecord {
            seconds: self.start.elapsed().as_secs_f64(),
            stats: p.stats().since(&self.stats),
            device: counters::thread_counts().since(&self.device),
        }
    }
}

/// One-hot rows `[N, classes]` of `labels`.
fn onehot(labels: &[usize], classes: usize) -> Result<Tensor> {
    let mut data = vec![0.0; labels.len() * classes];
    for (i, &l) in labels.iter().enumerate() {
        anyhow::ensure!(l < classes, "label {l} out of range for {classes} classes");
        data[i * classes + l] = 1.0;
    }
    Ok(Tensor::new(&[labels.len(), classes], data)?)
}

/// The three parties' inputs of a job run in one process with the default roles: the model
/// to the model owner, the data to the data owner, the same options and keys to all.
pub fn in_process_inputs(
    job: JobKind,
    options: Options,
    keys: KeySource,
    model: Model,
    data: DataSpec,
) -> [PartyInput; 3] {
    let roles = Roles::DEFAULT;
    let mut model = Some(model);
    let mut data = Some(data);
    PartyId::ALL.map(|party| PartyInput {
        roles,
        identities: None,
        job,
        options: options.clone(),
        keys,
        model: if party == roles.model_owner {
            model.take()
        } else {
            None
        },
        data: if party == roles.data_owner {
            data.take()
        } else {
            None
        },
    })
}

/// Runs the three parties' functions on three threads of this process over the local
/// transport, each with what it owns; returns the three outcomes in party order. With a
/// `link`, every message is delivered as late as it would arrive over that link
/// ([`EmulatedLink`]). With `messages_on_device`, the parties hand each other the tensors
/// they send (they share the device); without, every message is downloaded and uploaded
/// as between hosts.
pub fn run_in_process<B: GpuBackend>(
    backend: &B,
    inputs: [PartyInput; 3],
    progress: &ProgressBar,
    link: Option<LinkProfile>,
    messages_on_device: bool,
) -> Result<[PartyOutcome; 3]> {
    let slots = std::sync::Mutex::new(inputs.map(Some));
    memory::reset_party_peaks();
    let config = LocalConfig::default().with_handles(messages_on_device);
    let results = run_local_3pc_with(config, |t: &mut LocalTransport| {
        let me = t.party();
        let taken = match slots.lock() {
            Ok(mut slots) => slots[me.index()].take(),
            Err(poisoned) => poisoned.into_inner()[me.index()].take(),
        };
        let result = match taken {
            Some(input) => match link {
                Some(profile) => run_party(
                    backend.clone(),
                    EmulatedLink::new(t, profile),
                    input,
                    Some(progress),
                ),
                None => run_party(backend.clone(), t, input, Some(progress)),
            },
            None => Err(anyhow::anyhow!("the input of {me} was taken twice")),
        };
        // When a party fails, the others fail after it (their peer went away): the
        // earliest failure is the cause.
        (
            result.map_err(|e| e.context(me.to_string())),
            Instant::now(),
        )
    })?;
    let [(a, ta), (b, tb), (c, tc)] = results;
    match (a, b, c) {
        (Ok(a), Ok(b), Ok(c)) => Ok([a, b, c]),
        (a, b, c) => {
            let mut failures: Vec<(Instant, anyhow::Error)> =
                [(ta, a.err()), (tb, b.err()), (tc, c.err())]
                    .into_iter()
                    .filter_map(|(t, e)| e.map(|e| (t, e)))
                    .collect();
            failures.sort_by_key(|(t, _)| *t);
            let (_, first) = failures.remove(0);
            Err(first)
        }
    }
}

/// The bytes each party sent and the rounds of a job run in one process.
pub fn traffic(outcomes: &[PartyOutcome; 3]) -> ([u64; 3], u64) {
    let stats = [outcomes[0].stats, outcomes[1].stats, outcomes[2].stats];
    (
        stats.map(|s| s.total_bytes_sent()),
        CommStats::rounds_of(&stats),
    )
}
