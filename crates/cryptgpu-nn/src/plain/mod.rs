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

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use crate::data::{Dataset, epoch_order};
use crate::error::{NnError, Result};
use crate::model::{Model, NodeId, Op, ParamKind};
use crate::optim::Sgd;
use crate::tensor::Tensor;
use ops::{ConvGeometry, PoolGeometry};

/// Whether layers behave as in training or in inference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// BatchNorm uses its running statistics; Dropout is the identity.
    Inference,
    /// BatchNorm uses batch statistics; Dropout draws its masks from `seed`.
    Training {
        /// Seed of the dropout masks.
        seed: u64,
    },
}

/// What a node's backward needs besides the values.
#[derive(Clone, Debug)]
enum Cache {
    None,
    /// Max-pool: position of each window's maximum within its plane.
    MaxPool(Vec<u32>),
    /// BatchNorm in training: the normalised input and `1 / sqrt(var + eps)` per channel.
    BatchNorm {
        xhat: Vec<f64>,
        inv_std: Vec<f64>,
    },
    /// Dropout in training: the mask, already scaled by `1 / (1 - p)`.
    Dropout(Vec<f64>),
}

/// The result of a forward pass: every node's value, and what backward needs.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The value of each node (index = node id).
    pub values: Vec<Tensor>,
    caches: Vec<Cache>,
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
    let mut caches = Vec::with_capacity(model.nodes().len());
    let mut running_stats = BTreeMap::new();
    for (id, node) in model.nodes().iter().enumerate() {
        let (value, cache) = if id == 0 {
            (input.clone(), Cache::None)
        } else {
            let inputs: Vec<&Tensor> = node.inputs.iter().map(|&i| &values[i]).collect();
            forward_node(model, id, &inputs, &shapes[id], mode, &mut running_stats)?
        };
        values.push(value);
        caches.push(cache);
    }
    Ok(Forward {
        values,
        caches,
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
    if model.nodes()[model.output()].op == Op::Softmax {
        // Softmax keeps the argmax; nothing to undo.
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
) -> Result<(Tensor, Cache)> {
    let node = &model.nodes()[id];
    let x = inputs[0];
    let mut cache = Cache::None;
    let data = match node.op {
        Op::Input => unreachable!("node 0 is handled by the caller"),
        Op::Conv2d {
            out_channels,
            kernel,
            params,
            bias,
            ..
        } => {
            let geo = ConvGeometry::new(x.shape(), out_channels, kernel, params);
            let weight = model.param(id, "weight")?;
            let bias = if bias {
                Some(model.param(id, "bias")?.data())
            } else {
                None
            };
            ops::conv2d(x.data(), weight.data(), bias, &geo)
        }
        Op::Linear {
            in_features,
            out_features,
            bias,
        } => {
            let weight = model.param(id, "weight")?;
            let bias = if bias {
                Some(model.param(id, "bias")?.data())
            } else {
                None
            };
            let n = x.shape()[0];
            ops::linear(x.data(), weight.data(), bias, n, in_features, out_features)
        }
        Op::Relu => x.data().iter().map(|&v| v.max(0.0)).collect(),
        Op::MaxPool2d(params) => {
            let (y, arg) = ops::max_pool(x.data(), &PoolGeometry::new(x.shape(), params));
            cache = Cache::MaxPool(arg);
            y
        }
        Op::AvgPool2d(params) => ops::avg_pool(x.data(), &PoolGeometry::new(x.shape(), params)),
        Op::GlobalAvgPool => {
            let plane = x.shape()[2] * x.shape()[3];
            x.data()
                .chunks(plane)
                .map(|p| p.iter().sum::<f64>() / plane as f64)
                .collect()
        }
        Op::Flatten => x.data().to_vec(),
        Op::Add => x
            .data()
            .iter()
            .zip(inputs[1].data())
            .map(|(a, b)| a + b)
            .collect(),
        Op::BatchNorm2d {
            channels,
            eps,
            momentum,
        } => match mode {
            Mode::Inference => {
                let (scale, shift) = model.batchnorm_affine(id)?;
                let plane = x.shape()[2] * x.shape()[3];
                let mut y = x.data().to_vec();
                for (i, chunk) in y.chunks_mut(plane).enumerate() {
                    let c = i % channels;
                    chunk.iter_mut().for_each(|v| *v = *v * scale[c] + shift[c]);
                }
                y
            }
            Mode::Training { .. } => {
                let (y, xhat, inv_std, mean, var) = batchnorm_train(model, id, x, channels, eps)?;
                let count = x.len() / channels;
                let unbiased = if count > 1 {
                    count as f64 / (count - 1) as f64
                } else {
                    1.0
                };
                let name = &node.name;
                let old_mean = model.param(id, "running_mean")?.data();
                let old_var = model.param(id, "running_var")?.data();
                let new_mean = (0..channels)
                    .map(|c| (1.0 - momentum) * old_mean[c] + momentum * mean[c])
                    .collect();
                let new_var = (0..channels)
                    .map(|c| (1.0 - momentum) * old_var[c] + momentum * var[c] * unbiased)
                    .collect();
                running_stats.insert(
                    format!("{name}.running_mean"),
                    Tensor::new(&[channels], new_mean)?,
                );
                running_stats.insert(
                    format!("{name}.running_var"),
                    Tensor::new(&[channels], new_var)?,
                );
                cache = Cache::BatchNorm { xhat, inv_std };
                y
            }
        },
        Op::Dropout { p } => match mode {
            Mode::Training { seed } if p > 0.0 => {
                let mask = dropout_mask(seed, id, x.len(), p);
                let y = x.data().iter().zip(&mask).map(|(a, m)| a * m).collect();
                cache = Cache::Dropout(mask);
                y
            }
            _ => x.data().to_vec(),
        },
        Op::Softmax => ops::softmax(x.data(), x.shape()[1]),
    };
    Ok((Tensor::new(out_shape, data)?, cache))
}

/// The dropout mask of node `id` in the training step with `seed`: `len` values, each 0
/// with probability `p` and 1/(1 − p) otherwise (ChaCha8 from `seed ^ id << 32`). The
/// private executor draws the same masks, so private and plaintext training drop the same
/// units.
pub fn dropout_mask(seed: u64, id: NodeId, len: usize, p: f64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (id as u64) << 32);
    let keep = 1.0 / (1.0 - p);
    (0..len)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if u < p { 0.0 } else { keep }
        })
        .collect()
}

/// The seed of step `step` of epoch `epoch` (the dropout masks' seed) in [`train_epoch`].
pub fn step_seed(seed: u64, epoch: u64, step: u64) -> u64 {
    seed ^ (epoch << 40) ^ step
}

/// BatchNorm with batch statistics: `(y, xhat, inv_std, mean, biased var)`.
#[allow(clippy::type_complexity)]
fn batchnorm_train(
    model: &Model,
    id: NodeId,
    x: &Tensor,
    channels: usize,
    eps: f64,
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>)> {
    let plane = x.shape()[2] * x.shape()[3];
    let count = (x.len() / channels) as f64;
    let mut mean = vec![0.0; channels];
    for (i, chunk) in x.data().chunks(plane).enumerate() {
        mean[i % channels] += chunk.iter().sum::<f64>();
    }
    mean.iter_mut().for_each(|m| *m /= count);
    let mut var = vec![0.0; channels];
    for (i, chunk) in x.data().chunks(plane).enumerate() {
        let c = i % channels;
        var[c] += chunk.iter().map(|v| (v - mean[c]).powi(2)).sum::<f64>();
    }
    var.iter_mut().for_each(|v| *v /= count);
    let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let weight = model.param(id, "weight")?.data();
    let bias = model.param(id, "bias")?.data();
    let mut xhat = x.data().to_vec();
    let mut y = vec![0.0; x.len()];
    for (i, (xh, yc)) in xhat.chunks_mut(plane).zip(y.chunks_mut(plane)).enumerate() {
        let c = i % channels;
        for (a, b) in xh.iter_mut().zip(yc) {
            *a = (*a - mean[c]) * inv_std[c];
            *b = *a * weight[c] + bias[c];
        }
    }
    Ok((y, xhat, inv_std, mean, var))
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
    let x = &fwd.values[node.inputs[0]];
    let name = &node.name;
    let same = |data: Vec<f64>| Tensor::new(x.shape(), data);
    let grads = match node.op {
        Op::Input => Vec::new(),
        Op::Conv2d {
            out_channels,
            kernel,
            params: conv,
            bias,
            ..
        } => {
            let geo = ConvGeometry::new(x.shape(), out_channels, kernel, conv);
            let weight = model.param(id, "weight")?;
            let (dx, dw, db) = ops::conv2d_backward(x.data(), weight.data(), dy.data(), &geo);
            params.insert(format!("{name}.weight"), Tensor::new(weight.shape(), dw)?);
            if bias {
                params.insert(format!("{name}.bias"), Tensor::new(&[out_channels], db)?);
            }
            vec![same(dx)?]
        }
        Op::Linear {
            in_features,
            out_features,
            bias,
        } => {
            let weight = model.param(id, "weight")?;
            let n = x.shape()[0];
            let (dx, dw, db) = ops::linear_backward(
                x.data(),
                weight.data(),
                dy.data(),
                n,
                in_features,
                out_features,
            );
            params.insert(format!("{name}.weight"), Tensor::new(weight.shape(), dw)?);
            if bias {
                params.insert(format!("{name}.bias"), Tensor::new(&[out_features], db)?);
            }
            vec![same(dx)?]
        }
        Op::Relu => vec![same(
            x.data()
                .iter()
                .zip(dy.data())
                .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
                .collect(),
        )?],
        Op::MaxPool2d(p) => {
            let Cache::MaxPool(arg) = &fwd.caches[id] else {
                unreachable!("max-pool forward stores its positions")
            };
            let geo = PoolGeometry::new(x.shape(), p);
            vec![same(ops::max_pool_backward(dy.data(), arg, &geo))?]
        }
        Op::AvgPool2d(p) => {
            let geo = PoolGeometry::new(x.shape(), p);
            vec![same(ops::avg_pool_backward(dy.data(), &geo))?]
        }
        Op::GlobalAvgPool => {
            let plane = x.shape()[2] * x.shape()[3];
            let scale = 1.0 / plane as f64;
            vec![same(
                dy.data()
                    .iter()
                    .flat_map(|&g| std::iter::repeat_n(g * scale, plane))
                    .collect(),
            )?]
        }
        Op::Flatten => vec![same(dy.data().to_vec())?],
        Op::Add => vec![dy.clone(), dy.clone()],
        Op::BatchNorm2d { channels, .. } => {
            let plane = x.shape()[2] * x.shape()[3];
            let weight = model.param(id, "weight")?.data();
            let mut dgamma = vec![0.0; channels];
            let mut dbeta = vec![0.0; channels];
            let dx = match (&fwd.caches[id], fwd.mode) {
                (Cache::BatchNorm { xhat, inv_std }, Mode::Training { .. }) => {
                    for (i, (g, xh)) in dy.data().chunks(plane).zip(xhat.chunks(plane)).enumerate()
                    {
                        let c = i % channels;
                        dbeta[c] += g.iter().sum::<f64>();
                        dgamma[c] += g.iter().zip(xh).map(|(a, b)| a * b).sum::<f64>();
                    }
                    let count = (x.len() / channels) as f64;
                    let mut dx = vec![0.0; x.len()];
                    for (i, ((d, g), xh)) in dx
                        .chunks_mut(plane)
                        .zip(dy.data().chunks(plane))
                        .zip(xhat.chunks(plane))
                        .enumerate()
                    {
                        let c = i % channels;
                        let k = weight[c] * inv_std[c] / count;
                        for ((dv, gv), xv) in d.iter_mut().zip(g).zip(xh) {
                            *dv = k * (count * gv - dbeta[c] - xv * dgamma[c]);
                        }
                    }
                    dx
                }
                _ => {
                    let (scale, _) = model.batchnorm_affine(id)?;
                    let mean = model.param(id, "running_mean")?.data();
                    let var = model.param(id, "running_var")?.data();
                    let Op::BatchNorm2d { eps, .. } = node.op else {
                        unreachable!()
                    };
                    let mut dx = vec![0.0; x.len()];
                    for (i, ((d, g), xv)) in dx
                        .chunks_mut(plane)
                        .zip(dy.data().chunks(plane))
                        .zip(x.data().chunks(plane))
                        .enumerate()
                    {
                        let c = i % channels;
                        let inv_std = 1.0 / (var[c] + eps).sqrt();
                        dbeta[c] += g.iter().sum::<f64>();
                        dgamma[c] += g
                            .iter()
                            .zip(xv)
                            .map(|(a, b)| a * (b - mean[c]) * inv_std)
                            .sum::<f64>();
                        d.iter_mut().zip(g).for_each(|(dv, gv)| *dv = gv * scale[c]);
                    }
                    dx
                }
            };
            params.insert(format!("{name}.weight"), Tensor::new(&[channels], dgamma)?);
            params.insert(format!("{name}.bias"), Tensor::new(&[channels], dbeta)?);
            vec![same(dx)?]
        }
        Op::Dropout { .. } => match &fwd.caches[id] {
            Cache::Dropout(mask) => vec![same(
                dy.data().iter().zip(mask).map(|(g, m)| g * m).collect(),
            )?],
            _ => vec![dy.clone()],
        },
        Op::Softmax => {
            let k = x.shape()[1];
            vec![same(ops::softmax_backward(
                fwd.values[id].data(),
                dy.data(),
                k,
            ))?]
        }
    };
    Ok(grads)
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
