//! The f64 plaintext executor: forward and backward of every op, softmax cross-entropy,
//! SGD training and evaluation. It is the reference the private executor is tested against
//! and computes "plaintext accuracy".
//!
//! ```
//! use cryptgpu_nn::{plain, zoo, Tensor};
//!
//! let model = zoo::build("secureml", zoo::Pooling::Avg).unwrap();
//! let images = Tensor::zeros(&[2, 1, 28, 28]);
//! let logits = plain::predict(&model, &images).unwrap();
//! assert_eq!(logits.shape(), &[2, 10]);
//! ```

pub mod ops;

use std::collections::BTreeMap;

use crate::data::{Dataset, epoch_order};
use crate::error::{NnError, Result};
pub use crate::layers::context::Mode;
use crate::layers::context::{PlainBackCx, PlainCx, PlainSaved};
pub use crate::layers::dropout::dropout_mask;
use crate::model::{Model, NodeId, ParamKind};
use crate::optim::Sgd;
use crate::tensor::Tensor;

/// The result of a forward pass: every node's value, and what backward needs.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The value of each node (index = node id).
    pub values: Vec<Tensor>,
    saved: Vec<PlainSaved>,
    mode: Mode,
    /// In training: the BatchNorm running statistics after this batch, by parameter name
    /// (apply with [`Forward::apply_running_stats`]).
    pub running_stats: BTreeMap<String, Tensor>,
}

impl Forward {
    /// The model's output value.
    pub fn output<'a>(&'a self, model: &Model) -> &'a Tensor {
        &self.values[model.output()]
    }

    /// The model's logits (see [`Model::logits`]).
    pub fn logits<'a>(&'a self, model: &Model) -> &'a Tensor {
        &self.values[model.logits()]
    }

    /// Writes the updated BatchNorm running statistics into the model.
    pub fn apply_running_stats(&self, model: &mut Model) {
        for (name, t) in &self.running_stats {
            model.params.insert(name.clone(), t.clone());
        }
    }
}

/// Gradients from a backward pass.
#[derive(Clone, Debug)]
pub struct Gradients {
    /// Gradient of each trainable parameter, by name.
    pub params: BTreeMap<String, Tensor>,
    /// Gradient of each node's value (index = node id); zero-sized for nodes after the one
    /// backward started from.
    pub nodes: Vec<Tensor>,
}

impl Gradients {
    /// Gradient with respect to the model input.
    pub fn input(&self) -> &Tensor {
        &self.nodes[0]
    }
}

fn check_input(model: &Model, input: &Tensor) -> Result<Vec<Vec<usize>>> {
    let shape = input.shape();
    if shape.len() != model.input_shape().len() + 1 || &shape[1..] != model.input_shape() {
        return Err(NnError::InvalidArgument(format!(
            "model `{}` expects input [N, {}], got {:?}",
            model.name(),
            model
                .input_shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            shape
        )));
    }
    model.check_params(&model.params, "")?;
    model.shapes(shape[0])
}

/// Runs the model on `input` (`[N, ..input_shape]`), keeping every node's value.
pub fn forward(model: &Model, input: &Tensor, mode: Mode) -> Result<Forward> {
    let shapes = check_input(model, input)?;
    let mut values: Vec<Tensor> = Vec::with_capacity(model.nodes().len());
    let mut saved = Vec::with_capacity(model.nodes().len());
    let mut running_stats = BTreeMap::new();
    for (id, node) in model.nodes().iter().enumerate() {
        let (value, cache) = if id == 0 {
            (input.clone(), PlainSaved::default())
        } else {
            let inputs: Vec<&Tensor> = node.inputs.iter().map(|&i| &values[i]).collect();
            forward_node(model, id, &inputs, &shapes[id], mode, &mut running_stats)?
        };
        values.push(value);
        saved.push(cache);
    }
    Ok(Forward {
        values,
        saved,
        mode,
        running_stats,
    })
}

/// Runs the model in inference mode and returns its output, dropping each value after its
/// last use.
pub fn predict(model: &Model, input: &Tensor) -> Result<Tensor> {
    let shapes = check_input(model, input)?;
    let last_use = model.last_use();
    let mut values: Vec<Option<Tensor>> = vec![None; model.nodes().len()];
    let mut unused = BTreeMap::new();
    for (id, node) in model.nodes().iter().enumerate() {
        values[id] = Some(if id == 0 {
            input.clone()
        } else {
            let inputs: Vec<&Tensor> = node
                .inputs
                .iter()
                .map(|&i| values[i].as_ref().expect("inputs are alive until last use"))
                .collect();
            forward_node(
                model,
                id,
                &inputs,
                &shapes[id],
                Mode::Inference,
                &mut unused,
            )?
            .0
        });
        for &i in &node.inputs {
            if last_use[i] == id {
                values[i] = None;
            }
        }
    }
    Ok(values[model.output()].take().expect("the output is kept"))
}

/// Predicted classes (argmax of the logits) for `input`.
pub fn classify(model: &Model, input: &Tensor) -> Result<Vec<usize>> {
    let mut out = predict(model, input)?;
    if model.nodes()[model.output()].op.is_output_activation() {
        // Softmax and LogSoftmax keep the argmax; nothing to undo.
    } else if out.shape().len() != 2 {
        let n = out.shape()[0];
        let k = out.len() / n.max(1);
        out = out.reshape(&[n, k])?;
    }
    out.argmax_rows()
}

fn forward_node(
    model: &Model,
    id: NodeId,
    inputs: &[&Tensor],
    out_shape: &[usize],
    mode: Mode,
    running_stats: &mut BTreeMap<String, Tensor>,
) -> Result<(Tensor, PlainSaved)> {
    let mut cx = PlainCx {
        model,
        id,
        mode,
        out_shape,
        saved: PlainSaved::default(),
        running_stats,
    };
    let value = model.nodes()[id].op.plain_forward(&mut cx, inputs)?;
    if value.shape() != out_shape {
        return Err(NnError::Graph(format!(
            "`{}` computed shape {:?} where {out_shape:?} was inferred",
            model.nodes()[id].name,
            value.shape()
        )));
    }
    Ok((value, cx.saved))
}

/// The seed of step `step` of epoch `epoch` (the dropout masks' seed) in [`train_epoch`].
pub fn step_seed(seed: u64, epoch: u64, step: u64) -> u64 {
    seed ^ (epoch << 40) ^ step
}

/// Backpropagates `grad` (the gradient of the loss with respect to node `from`'s value)
/// through the graph. Use `from = model.logits()` with the gradient of
/// [`softmax_cross_entropy`].
pub fn backward(model: &Model, fwd: &Forward, from: NodeId, grad: Tensor) -> Result<Gradients> {
    if grad.shape() != fwd.values[from].shape() {
        return Err(NnError::InvalidArgument(format!(
            "gradient of shape {:?} for node `{}` of shape {:?}",
            grad.shape(),
            model.nodes()[from].name,
            fwd.values[from].shape()
        )));
    }
    let mut grads: Vec<Option<Tensor>> = vec![None; model.nodes().len()];
    grads[from] = Some(grad);
    let mut params = BTreeMap::new();
    for id in (1..=from).rev() {
        let Some(dy) = grads[id].take() else {
            continue;
        };
        let node = &model.nodes()[id];
        let input_grads = backward_node(model, fwd, id, &dy, &mut params)?;
        for (&input, g) in node.inputs.iter().zip(input_grads) {
            match &mut grads[input] {
                Some(acc) => acc
                    .data_mut()
                    .iter_mut()
                    .zip(g.data())
                    .for_each(|(a, b)| *a += b),
                slot @ None => *slot = Some(g),
            }
        }
        grads[id] = Some(dy);
    }
    let nodes = grads
        .into_iter()
        .enumerate()
        .map(|(id, g)| g.unwrap_or_else(|| Tensor::zeros(fwd.values[id].shape())))
        .collect();
    Ok(Gradients { params, nodes })
}

fn backward_node(
    model: &Model,
    fwd: &Forward,
    id: NodeId,
    dy: &Tensor,
    params: &mut BTreeMap<String, Tensor>,
) -> Result<Vec<Tensor>> {
    let node = &model.nodes()[id];
    let mut cx = PlainBackCx {
        model,
        id,
        mode: fwd.mode,
        inputs: node.inputs.iter().map(|&i| &fwd.values[i]).collect(),
        output: &fwd.values[id],
        saved: &fwd.saved[id],
        grads: params,
    };
    node.op.plain_backward(&mut cx, dy)
}

/// Mean softmax cross-entropy of `logits` `[N, K]` against `labels`, and its gradient with
/// respect to the logits: `(softmax(logits) - onehot(labels)) / N`.
pub fn softmax_cross_entropy(logits: &Tensor, labels: &[usize]) -> Result<(f64, Tensor)> {
    let [n, k] = logits.shape()[..] else {
        return Err(NnError::InvalidArgument(format!(
            "cross-entropy needs [N, K] logits, got {:?}",
            logits.shape()
        )));
    };
    if labels.len() != n || n == 0 {
        return Err(NnError::InvalidArgument(format!(
            "{} labels for {n} logit rows",
            labels.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
        return Err(NnError::InvalidArgument(format!(
            "label {bad} out of range for {k} classes"
        )));
    }
    let mut probs = ops::softmax(logits.data(), k);
    let mut loss = 0.0;
    for (row, &label) in probs.chunks_mut(k).zip(labels) {
        loss -= row[label].max(f64::MIN_POSITIVE).ln();
        row[label] -= 1.0;
        row.iter_mut().for_each(|v| *v /= n as f64);
    }
    Ok((loss / n as f64, Tensor::new(&[n, k], probs)?))
}

/// One SGD step on a batch: forward in training mode, cross-entropy on the logits,
/// backward, the optimiser's update, and BatchNorm running statistics. Returns the loss.
pub fn train_step(
    model: &mut Model,
    sgd: &mut Sgd,
    images: &Tensor,
    labels: &[usize],
    seed: u64,
) -> Result<f64> {
    let fwd = forward(model, images, Mode::Training { seed })?;
    let logits = fwd.logits(model);
    let flat = logits
        .clone()
        .reshape(&[labels.len(), model.num_classes()])?;
    let (loss, grad) = softmax_cross_entropy(&flat, labels)?;
    let grad = grad.reshape(logits.shape())?;
    let grads = backward(model, &fwd, model.logits(), grad)?;
    sgd.step(model, &grads.params)?;
    fwd.apply_running_stats(model);
    Ok(loss)
}

/// One epoch of SGD over `data` in [`epoch_order`]`(len, seed, epoch)`, batches of
/// `batch_size` (the last one may be smaller). Returns the mean batch loss.
pub fn train_epoch(
    model: &mut Model,
    sgd: &mut Sgd,
    data: &Dataset,
    batch_size: usize,
    seed: u64,
    epoch: u64,
) -> Result<f64> {
    if batch_size == 0 || data.is_empty() {
        return Err(NnError::InvalidArgument(
            "training needs a batch size of at least 1 and some data".into(),
        ));
    }
    let order = epoch_order(data.len(), seed, epoch);
    let mut total = 0.0;
    let mut batches = 0;
    for (i, indices) in order.chunks(batch_size).enumerate() {
        let (images, labels) = data.batch(indices)?;
        total += train_step(
            model,
            sgd,
            &images,
            &labels,
            step_seed(seed, epoch, i as u64),
        )?;
        batches += 1;
    }
    Ok(total / batches as f64)
}

/// Classes predicted for every example of `data`, in batches of `batch_size`.
pub fn predict_all(model: &Model, data: &Dataset, batch_size: usize) -> Result<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut predictions = Vec::with_capacity(data.len());
    for start in (0..data.len()).step_by(batch_size) {
        let (images, _) = data.range(start, start + batch_size)?;
        predictions.extend(classify(model, &images)?);
    }
    Ok(predictions)
}

/// Fraction of `data` classified correctly.
pub fn accuracy(model: &Model, data: &Dataset, batch_size: usize) -> Result<f64> {
    let predictions = predict_all(model, data, batch_size)?;
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(correct as f64 / data.len().max(1) as f64)
}

/// Whether parameter `name` of `model` is trained by SGD.
pub fn is_trainable(model: &Model, name: &str) -> bool {
    model
        .param_specs()
        .iter()
        .any(|s| s.name == name && s.kind == ParamKind::Trainable)
}
