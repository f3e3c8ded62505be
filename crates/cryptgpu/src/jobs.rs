//! The three-party jobs behind the commands: private inference (model owner P0, data owner
//! P1, helper P2) and private training, each run as three parties in one process on any
//! backend, with the communication the parties counted.

use std::time::Instant;

use anyhow::{Context, Result};
use cryptgpu_backend::GpuBackend;
use cryptgpu_nn::Tensor;
use cryptgpu_nn::data::{Dataset, epoch_order};
use cryptgpu_nn::model::Model;
use cryptgpu_nn::optim::SgdConfig;
use cryptgpu_nn::plain;
use cryptgpu_nn::private::{PrivateSgd, SharedModel, share_input};
use cryptgpu_ring::FixedPoint;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::{CommStats, PartyId, Transport, run_local_3pc};
use indicatif::ProgressBar;

use crate::backend::Job;

/// The party that owns the model's weights.
pub(crate) const MODEL_OWNER: PartyId = PartyId::P0;
/// The party that owns the data and receives the predictions.
pub(crate) const DATA_OWNER: PartyId = PartyId::P1;

/// Communication of a whole job.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Traffic {
    /// Bytes sent by P0, P1, P2.
    pub(crate) bytes: [u64; 3],
    /// Rounds (the longest chain of messages).
    pub(crate) rounds: u64,
}

/// The same architecture with every parameter zero: what a party that does not own the
/// weights holds.
pub(crate) fn structure_of(model: &Model) -> Result<Model> {
    let mut copy = Model::new(
        model.name(),
        model.input_shape(),
        model.nodes().to_vec(),
        model.output(),
    )?;
    copy.normalization = model.normalization.clone();
    Ok(copy)
}

/// The model owner's weights, shared: only the owner reads `model`; the others pass the
/// public architecture `structure`. For training, BatchNorm keeps its own shared parameters
/// and statistics; for inference it is folded into an affine map.
fn share_model<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    model: &Model,
    structure: &Model,
    for_training: bool,
) -> Result<SharedModel<B>> {
    let mine = if p.id() == MODEL_OWNER {
        model
    } else {
        structure
    };
    Ok(if for_training {
        SharedModel::share_for_training(p, mine, MODEL_OWNER)?
    } else {
        SharedModel::share(p, mine, MODEL_OWNER)?
    })
}

/// Shape of a batch of `n` examples of `data`.
fn batch_shape(data: &Dataset, n: usize) -> Vec<usize> {
    let [c, h, w] = data.image_shape;
    vec![n, c, h, w]
}

/// Runs `f` as the three parties with OS keys; returns each party's output and the traffic.
fn three_parties<B: GpuBackend, R: Send>(
    backend: &B,
    fixed: FixedPoint,
    f: impl Fn(&mut Party<B, &mut cryptgpu_transport::LocalTransport>) -> Result<R> + Sync,
) -> Result<([R; 3], Traffic)> {
    let results = run_local_3pc(|t| -> Result<(R, CommStats)> {
        let mut p = Party::setup(backend.clone(), t, fixed)?;
        let out = f(&mut p)?;
        Ok((out, p.stats()))
    })?;
    let [a, b, c] = results;
    let (a, b, c) = (a?, b?, c?);
    let stats = [a.1, b.1, c.1];
    let traffic = Traffic {
        bytes: stats.map(|s| s.total_bytes_sent()),
        rounds: CommStats::rounds_of(&stats),
    };
    Ok(([a.0, b.0, c.0], traffic))
}

/// Private classification of `data` by `model`.
pub(crate) struct Inference<'a> {
    /// The model with the owner's weights.
    pub(crate) model: &'a Model,
    /// The data owner's examples.
    pub(crate) data: &'a Dataset,
    /// Examples per private batch.
    pub(crate) batch: usize,
    /// Fixed-point format.
    pub(crate) fixed: FixedPoint,
    /// Advanced by the data owner after each batch.
    pub(crate) progress: &'a ProgressBar,
}

/// What private inference gives the data owner.
pub(crate) struct InferenceOutcome {
    /// The predicted classes, as revealed to the data owner.
    pub(crate) predictions: Vec<usize>,
    /// Wall time, key setup and weight sharing included.
    pub(crate) seconds: f64,
    /// Communication, key setup included.
    pub(crate) traffic: Traffic,
}

impl Job for Inference<'_> {
    type Output = InferenceOutcome;

    fn run<B: GpuBackend>(self, backend: B) -> Result<InferenceOutcome> {
        let structure = structure_of(self.model)?;
        let start = Instant::now();
        let (outputs, traffic) = three_parties(&backend, self.fixed, |p| {
            let shared = share_model(p, self.model, &structure, false)?;
            classify_all(p, &shared, self.data, self.batch, Some(self.progress))
        })?;
        let [_, predictions, _] = outputs;
        Ok(InferenceOutcome {
            predictions: predictions.context("the data owner received no predictions")?,
            seconds: start.elapsed().as_secs_f64(),
            traffic,
        })
    }
}

/// Classifies every example of `data` in batches; the data owner gets the classes.
fn classify_all<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    shared: &SharedModel<B>,
    data: &Dataset,
    batch: usize,
    progress: Option<&ProgressBar>,
) -> Result<Option<Vec<usize>>> {
    let owner = p.id() == DATA_OWNER;
    let mut predictions = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(batch.max(1)) {
        let end = (start + batch).min(data.len());
        let images = if owner {
            Some(data.range(start, end)?.0)
        } else {
            None
        };
        let shape = batch_shape(data, end - start);
        let x = share_input(p, DATA_OWNER, images.as_ref(), &shape)?;
        if let Some(classes) = shared.classify(p, &x, DATA_OWNER)? {
            predictions.extend(classes);
            if let Some(bar) = progress {
                bar.inc((end - start) as u64);
            }
        }
    }
    Ok(owner.then_some(predictions))
}

/// Private training with SGD, evaluated privately on `test` after each epoch.
pub(crate) struct Training<'a> {
    /// The initial model (the model owner's weights).
    pub(crate) model: &'a Model,
    /// Training examples (the data owner's).
    pub(crate) train: &'a Dataset,
    /// Test examples (the data owner's).
    pub(crate) test: &'a Dataset,
    /// Epochs.
    pub(crate) epochs: u64,
    /// Examples per SGD step.
    pub(crate) batch: usize,
    /// The optimiser.
    pub(crate) sgd: SgdConfig,
    /// Seed of the example order (public).
    pub(crate) seed: u64,
    /// Fixed-point format.
    pub(crate) fixed: FixedPoint,
    /// Advanced by the data owner after each step and each evaluated batch.
    pub(crate) progress: &'a ProgressBar,
}

/// What private training gives its owners.
pub(crate) struct TrainingOutcome {
    /// The predictions on the test set after each epoch (data owner's view).
    pub(crate) predictions: Vec<Vec<usize>>,
    /// The trained model, revealed to the model owner.
    pub(crate) model: Model,
    /// Wall time.
    pub(crate) seconds: f64,
    /// Communication.
    pub(crate) traffic: Traffic,
}

impl Job for Training<'_> {
    type Output = TrainingOutcome;

    fn run<B: GpuBackend>(self, backend: B) -> Result<TrainingOutcome> {
        let structure = structure_of(self.model)?;
        let classes = self.train.num_classes;
        let start = Instant::now();
        let (outputs, traffic) = three_parties(&backend, self.fixed, |p| {
            let mut shared = share_model(p, self.model, &structure, true)?;
            let mut sgd = PrivateSgd::new(self.sgd);
            let owner = p.id() == DATA_OWNER;
            let mut per_epoch = Vec::new();
            for epoch in 0..self.epochs {
                let order = epoch_order(self.train.len(), self.seed, epoch);
                for (step, chunk) in order.chunks(self.batch.max(1)).enumerate() {
                    let (x, y) = if owner {
                        let (images, labels) = self.train.batch(chunk)?;
                        (Some(images), Some(onehot(&labels, classes)?))
                    } else {
                        (None, None)
                    };
                    let sx = share_input(
                        p,
                        DATA_OWNER,
                        x.as_ref(),
                        &batch_shape(self.train, chunk.len()),
                    )?;
                    let sy: Rss<B> =
                        share_input(p, DATA_OWNER, y.as_ref(), &[chunk.len(), classes])?;
                    let seed = plain::step_seed(self.seed, epoch, step as u64);
                    shared.train_step(p, &mut sgd, &sx, &sy, seed)?;
                    if owner {
                        self.progress.inc(chunk.len() as u64);
                    }
                }
                let bar = owner.then_some(self.progress);
                let predictions = classify_all(p, &shared, self.test, self.batch.max(1), bar)?;
                if let Some(predictions) = &predictions {
                    report_epoch(self.progress, epoch, predictions, &self.test.labels, start);
                }
                per_epoch.push(predictions);
            }
            let model = shared.reveal_to(p, MODEL_OWNER)?;
            Ok((per_epoch, model))
        })?;
        let [(_, model), (predictions, _), _] = outputs;
        Ok(TrainingOutcome {
            predictions: predictions.into_iter().flatten().collect(),
            model: model.context("the model owner received no model")?,
            seconds: start.elapsed().as_secs_f64(),
            traffic,
        })
    }
}

/// Tells the data owner each epoch's private test accuracy as soon as it is known (long runs
/// take hours): above the progress bar on a terminal, else as a line on stderr.
fn report_epoch(
    progress: &ProgressBar,
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
    if progress.is_hidden() {
        eprintln!("{line}");
    } else {
        progress.println(line);
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
