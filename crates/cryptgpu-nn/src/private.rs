//! The private executor: a [`Model`] whose weights are secret-shared among the three
//! parties, run on secret-shared inputs with the protocols of `cryptgpu_share` and
//! `cryptgpu_nonlinear`, generic over the device backend.
//!
//! The architecture is public (every party holds the same [`Model`] structure); the model
//! owner's weights enter by [`SharedModel::share`] and the data owner's inputs by
//! [`share_input`]. Predictions are revealed to the data owner only
//! ([`SharedModel::classify`]): the arg-max is computed privately, so the data owner learns
//! the predicted classes and nothing else of the logits.
//!
//! Layers map to protocols one to one: convolution and linear layers are fixed-point
//! products (2 rounds); ReLU is the 10-round MSB-and-bit-injection protocol and keeps its
//! DReLU bits for the backward pass; max-pooling is a tournament that keeps one-hot
//! winners; average pooling is a public scaling. Dropout is the identity at inference; in
//! training it multiplies by the same public masks as the plaintext executor
//! ([`plain::dropout_mask`] from the step's seed): the masks depend on no secret, so the
//! parties may all know them, and the product by a public tensor is local but for one
//! truncation.
//!
//! BatchNorm has two forms. A model shared for inference ([`SharedModel::share`]) holds it
//! as the affine map its owner computes in plaintext, folded into the preceding
//! convolution where there is one. A model shared for training
//! ([`SharedModel::share_for_training`]) holds its weight, bias and running statistics as
//! shares: training normalises with the batch statistics (the mean by
//! [`Party::div_public`], the variance from fused squares, 1/√(var + ε) by
//! [`nl::inv_sqrt`] with [`BATCHNORM_INV_SQRT`]), backpropagates through them and updates
//! the running statistics on shares; inference with such a model applies the running
//! statistics, again through a private inverse square root.

use std::collections::BTreeMap;

use cryptgpu_backend::GpuBackend;
use cryptgpu_nonlinear as nl;
use cryptgpu_share::Bilinear;
use cryptgpu_share::{Party, Rss, SharedBits};
use cryptgpu_transport::{PartyId, Transport};

use crate::error::{NnError, Result};
use crate::model::{Model, NodeId, Op, ParamKind, ParamSpec};
use crate::optim::SgdConfig;
use crate::plain;
use crate::tensor::Tensor;

/// The inverse square root of BatchNorm's variance + ε: 8 Newton iterations from CrypTen's
/// initial guess, which take the relative error below 10^-5 (f = 20 limits it beyond) for
/// var + ε in [0.01, 100], where 4 iterations need [0.1, 100]. Above 100 the iteration
/// diverges. It runs on one value per channel, so the iterations cost rounds, not bytes.
pub const BATCHNORM_INV_SQRT: nl::InvSqrtOptions = nl::InvSqrtOptions {
    iterations: 8,
    exp: nl::ExpOptions::DEFAULT,
};

/// A model with secret-shared parameters, as one party holds it.
pub struct SharedModel<B: GpuBackend> {
    model: Model,
    params: BTreeMap<String, Rss<B>>,
    /// Whether BatchNorm nodes keep their own shared parameters and running statistics
    /// ([`SharedModel::share_for_training`]) rather than a folded affine map.
    trainable_batchnorm: bool,
}

/// What a training forward pass keeps for the backward pass, per node.
enum Saved<B: GpuBackend> {
    Nothing,
    Input(Rss<B>),
    Relu(SharedBits<B>),
    MaxPool(nl::MaxPool<B>),
    /// Dropout in training: the public mask (0 or 1/(1 − p), fixed point).
    Dropout(B::Tensor),
    /// BatchNorm with batch statistics: the normalised input and 1/√(var + ε) per channel.
    BatchNorm {
        xhat: Rss<B>,
        inv_std: Rss<B>,
    },
}

/// One training forward pass: each node's value and what its backward pass needs.
pub struct PrivateForward<B: GpuBackend> {
    values: Vec<Option<Rss<B>>>,
    saved: Vec<Saved<B>>,
    /// In training: BatchNorm running statistics after this batch, by parameter name.
    running_stats: BTreeMap<String, Rss<B>>,
}

impl<B: GpuBackend> PrivateForward<B> {
    /// The value of `node`.
    pub fn value(&self, node: NodeId) -> Option<&Rss<B>> {
        self.values[node].as_ref()
    }
}

/// Secret-shares a batch of inputs `[N, ..input_shape]` held by `owner` (who passes
/// `Some(tensor)`; the others pass `None` and the public batch size).
pub fn share_input<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    owner: PartyId,
    input: Option<&Tensor>,
    shape: &[usize],
) -> Result<Rss<B>> {
    if let Some(t) = input
        && t.shape() != shape
    {
        return Err(NnError::InvalidArgument(format!(
            "input of shape {:?} where {shape:?} was announced",
            t.shape()
        )));
    }
    Ok(p.share_f64(owner, input.map(Tensor::data), shape)?)
}

impl<B: GpuBackend> SharedModel<B> {
    /// Shares the parameters of `model`, whose values only `owner` needs to hold (the
    /// others pass a model of the same architecture, with any values). BatchNorm nodes are
    /// folded into the convolution they follow where possible; the rest become per-channel
    /// `scale` and `shift` tensors, computed by the owner.
    pub fn share<T: Transport>(p: &mut Party<B, T>, model: &Model, owner: PartyId) -> Result<Self> {
        let model = model.fold_batchnorm()?;
        let mine = p.id() == owner;
        let mut params = share_params(p, &model, owner, |spec| {
            spec.kind != ParamKind::Buffer
                && !matches!(model.nodes()[spec.node].op, Op::BatchNorm2d { .. })
        })?;
        for (id, node) in model.nodes().iter().enumerate() {
            if let Op::BatchNorm2d { channels, .. } = node.op {
                let (scale, shift) = if mine {
                    model.batchnorm_affine(id)?
                } else {
                    (vec![0.0; channels], vec![0.0; channels])
                };
                let scale = p.share_f64(owner, mine.then_some(&scale[..]), &[channels])?;
                let shift = p.share_f64(owner, mine.then_some(&shift[..]), &[channels])?;
                params.insert(format!("{}.scale", node.name), scale);
                params.insert(format!("{}.shift", node.name), shift);
            }
        }
        Ok(Self {
            model,
            params,
            trainable_batchnorm: false,
        })
    }

    /// Shares every parameter of `model` as it is, for training: BatchNorm nodes keep their
    /// weight, bias and running statistics (as shares), so that [`SharedModel::train_step`]
    /// can train through them. Inference with the result ([`SharedModel::forward`],
    /// [`SharedModel::classify`]) applies the running statistics privately, which costs an
    /// inverse square root per BatchNorm more than a model from [`SharedModel::share`].
    /// Only `owner`'s values matter, as in [`SharedModel::share`].
    pub fn share_for_training<T: Transport>(
        p: &mut Party<B, T>,
        model: &Model,
        owner: PartyId,
    ) -> Result<Self> {
        let params = share_params(p, model, owner, |_| true)?;
        Ok(Self {
            model: model.clone(),
            params,
            trainable_batchnorm: true,
        })
    }

    /// The (folded) model structure.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The shared parameter `"{node}.{suffix}"`.
    fn param(&self, node: NodeId, suffix: &str) -> Result<&Rss<B>> {
        let name = format!("{}.{suffix}", self.model.nodes()[node].name);
        self.params
            .get(&name)
            .ok_or_else(|| NnError::MissingParameter {
                name,
                expected: Vec::new(),
                context: " among the shared parameters".into(),
            })
    }

    /// The private logits of a shared batch (inference: no state kept).
    pub fn forward<T: Transport>(&self, p: &mut Party<B, T>, input: &Rss<B>) -> Result<Rss<B>> {
        let fwd = self.run(p, input, None)?;
        let logits = self.model.logits();
        fwd.values[logits]
            .clone()
            .ok_or_else(|| NnError::Graph("the logits were dropped".into()))
    }

    /// Classifies a shared batch: the arg-max of the logits, computed privately and revealed
    /// to `data_owner` only, who gets `Some(classes)`; the others get `None`.
    pub fn classify<T: Transport>(
        &self,
        p: &mut Party<B, T>,
        input: &Rss<B>,
        data_owner: PartyId,
    ) -> Result<Option<Vec<usize>>> {
        let logits = self.forward(p, input)?;
        let classes = logits.shape().get(1).copied().unwrap_or(1);
        let hot = nl::argmax(p, &logits, 1)?;
        // Σ_k k·onehot_k: the class index itself, so only the prediction is revealed.
        let index: Vec<u64> = (0..logits.shape()[0])
            .flat_map(|_| 0..classes as u64)
            .collect();
        let index = p.backend().upload(&index, logits.shape())?;
        let weighted = p.linear(&hot, |b, t| b.sum_axis(&b.mul(t, &index)?, 1))?;
        let revealed = p.reveal_to(data_owner, &weighted)?;
        Ok(revealed.map(|v| v.iter().map(|&c| c as usize).collect()))
    }

    /// The parameters, revealed to `owner` (who gets `Some(model)` with the trained
    /// values); the others get `None`. Used to hand a privately trained model back.
    pub fn reveal_to<T: Transport>(
        &self,
        p: &mut Party<B, T>,
        owner: PartyId,
    ) -> Result<Option<Model>> {
        let mut revealed = BTreeMap::new();
        for (name, value) in &self.params {
            if let Some(v) = p.reveal_to(owner, value)? {
                let data = p.fixed().decode_slice(&v);
                revealed.insert(name.clone(), Tensor::new(value.shape(), data)?);
            }
        }
        if p.id() != owner {
            return Ok(None);
        }
        let mut model = self.model.clone();
        model.params.extend(revealed);
        Ok(Some(model))
    }

    /// One private SGD step on a shared batch and shared one-hot labels `[N, classes]`:
    /// forward (keeping each layer's state), the cross-entropy gradient (softmax − onehot)/N
    /// at the logits, backward through every layer, and the update of `optimizer` (PyTorch's
    /// SGD with momentum and weight decay, all on shares). Dropout masks come from the public
    /// `seed` as in [`plain::train_step`] (see [`plain::step_seed`]), and every party must
    /// pass the same one. Returns the batch's logits from the forward pass (before the
    /// update), still shared: revealing them (to measure the loss) is the caller's choice.
    pub fn train_step<T: Transport>(
        &mut self,
        p: &mut Party<B, T>,
        optimizer: &mut PrivateSgd<B>,
        input: &Rss<B>,
        onehot: &Rss<B>,
        seed: u64,
    ) -> Result<Rss<B>> {
        let fwd = self.run(p, input, Some(seed))?;
        let logits_id = self.model.logits();
        let logits = fwd.values[logits_id].clone().expect("kept");
        if logits.shape() != onehot.shape() {
            return Err(NnError::InvalidArgument(format!(
                "one-hot labels of shape {:?} for logits of shape {:?}",
                onehot.shape(),
                logits.shape()
            )));
        }
        let n = logits.shape()[0];
        let probs = nl::softmax(p, &logits, 1, nl::SoftmaxOptions::default())?;
        let diff = p.sub(&probs, onehot)?;
        let grad = p.mul_public_fixed(&diff, 1.0 / n as f64)?;
        let grads = self.backward(p, &fwd, logits_id, grad)?;
        optimizer.step(p, &mut self.params, &grads)?;
        self.params.extend(fwd.running_stats);
        Ok(logits)
    }

    /// Gradients of every trainable parameter, from `grad` at node `from`.
    fn backward<T: Transport>(
        &self,
        p: &mut Party<B, T>,
        fwd: &PrivateForward<B>,
        from: NodeId,
        grad: Rss<B>,
    ) -> Result<BTreeMap<String, Rss<B>>> {
        let nodes = self.model.nodes();
        let mut flowing: Vec<Option<Rss<B>>> = vec![None; nodes.len()];
        flowing[from] = Some(grad);
        let mut grads = BTreeMap::new();
        for id in (1..=from).rev() {
            let Some(dy) = flowing[id].take() else {
                continue;
            };
            let node = &nodes[id];
            let name = |suffix: &str| format!("{}.{suffix}", node.name);
            let input_shape = fwd.values[node.inputs.first().copied().unwrap_or(0)]
                .as_ref()
                .map(|v| v.shape().to_vec())
                .unwrap_or_default();
            let mut into = |i: usize, g: Rss<B>, p: &Party<B, T>| -> Result<()> {
                let target = node.inputs[i];
                flowing[target] = Some(match flowing[target].take() {
                    Some(acc) => p.add(&acc, &g)?,
                    None => g,
                });
                Ok(())
            };
            match &node.op {
                Op::Input | Op::Softmax => {}
                Op::Conv2d {
                    kernel,
                    params,
                    bias,
                    ..
                } => {
                    let Saved::Input(x) = &fwd.saved[id] else {
                        return Err(NnError::Graph(format!("`{}` kept no input", node.name)));
                    };
                    let w = self.param(id, "weight")?;
                    let hw = [x.shape()[2], x.shape()[3]];
                    let dw = p.product_truncated(
                        Bilinear::Conv2dGradWeight {
                            kernel_hw: *kernel,
                            params: *params,
                        },
                        x,
                        &dy,
                    )?;
                    grads.insert(name("weight"), dw);
                    if *bias {
                        let db = p.linear(&dy, |b, t| {
                            b.sum_axis(&b.sum_axis(&b.sum_axis(t, 3)?, 2)?, 0)
                        })?;
                        grads.insert(name("bias"), db);
                    }
                    if node.inputs[0] != 0 {
                        let dx = p.product_truncated(
                            Bilinear::Conv2dGradInput {
                                input_hw: hw,
                                params: *params,
                            },
                            &dy,
                            w,
                        )?;
                        into(0, dx, p)?;
                    }
                }
                Op::Linear { bias, .. } => {
                    let Saved::Input(x) = &fwd.saved[id] else {
                        return Err(NnError::Graph(format!("`{}` kept no input", node.name)));
                    };
                    let dy_t = p.linear(&dy, |b, t| b.transpose(t, 0, 1))?;
                    let dw = p.matmul_fixed(&dy_t, x)?;
                    grads.insert(name("weight"), dw);
                    if *bias {
                        grads.insert(name("bias"), p.linear(&dy, |b, t| b.sum_axis(t, 0))?);
                    }
                    if node.inputs[0] != 0 {
                        let dx = p.matmul_fixed(&dy, self.param(id, "weight")?)?;
                        into(0, dx, p)?;
                    }
                }
                Op::Relu => {
                    let Saved::Relu(bits) = &fwd.saved[id] else {
                        return Err(NnError::Graph(format!(
                            "`{}` kept no DReLU bits",
                            node.name
                        )));
                    };
                    let dx = nl::relu_backward(p, &dy, bits)?;
                    into(0, dx, p)?;
                }
                Op::MaxPool2d(_) => {
                    let Saved::MaxPool(pool) = &fwd.saved[id] else {
                        return Err(NnError::Graph(format!("`{}` kept no winners", node.name)));
                    };
                    let dx = nl::max_pool2d_backward(p, &dy, pool)?;
                    into(0, dx, p)?;
                }
                Op::AvgPool2d(params) => {
                    let dx = nl::avg_pool2d_backward(p, &dy, *params, &input_shape)?;
                    into(0, dx, p)?;
                }
                Op::GlobalAvgPool => {
                    let flat = p.linear(&dy, |b, t| b.reshape(t, &input_shape[..2]))?;
                    let dx = nl::global_avg_pool_backward(p, &flat, &input_shape)?;
                    into(0, dx, p)?;
                }
                Op::Flatten => {
                    let dx = p.linear(&dy, |b, t| b.reshape(t, &input_shape))?;
                    into(0, dx, p)?;
                }
                Op::Add => {
                    into(0, dy.clone(), p)?;
                    into(1, dy, p)?;
                }
                Op::Dropout { .. } => match &fwd.saved[id] {
                    Saved::Dropout(mask) => {
                        let dx = p.apply_public(Bilinear::Mul, &dy, mask)?;
                        into(0, p.truncate(&dx)?, p)?
                    }
                    _ => into(0, dy, p)?,
                },
                Op::BatchNorm2d { .. } => {
                    let Saved::BatchNorm { xhat, inv_std } = &fwd.saved[id] else {
                        return Err(NnError::Graph(format!(
                            "`{}` kept no batch statistics",
                            node.name
                        )));
                    };
                    let (dx, dgamma, dbeta) =
                        batchnorm_backward(p, &dy, xhat, inv_std, self.param(id, "weight")?)?;
                    grads.insert(name("weight"), dgamma);
                    grads.insert(name("bias"), dbeta);
                    into(0, dx, p)?;
                }
            }
        }
        Ok(grads)
    }

    /// Runs the graph. In training (`training_seed` is the step's seed), every value and what
    /// each backward pass needs are kept; at inference (`None`), values are dropped after
    /// their last use.
    fn run<T: Transport>(
        &self,
        p: &mut Party<B, T>,
        input: &Rss<B>,
        training_seed: Option<u64>,
    ) -> Result<PrivateForward<B>> {
        let keep = training_seed.is_some();
        let nodes = self.model.nodes();
        let last_use = self.model.last_use();
        let mut values: Vec<Option<Rss<B>>> = vec![None; nodes.len()];
        let mut saved: Vec<Saved<B>> = (0..nodes.len()).map(|_| Saved::Nothing).collect();
        let mut running_stats = BTreeMap::new();
        for (id, node) in nodes.iter().enumerate() {
            let arg = |i: usize| -> Result<&Rss<B>> {
                values[node.inputs[i]]
                    .as_ref()
                    .ok_or_else(|| NnError::Graph(format!("node `{}` lost its input", node.name)))
            };
            let value = match &node.op {
                Op::Input => {
                    let expected: Vec<usize> = self.model.input_shape().to_vec();
                    if input.shape().get(1..) != Some(&expected[..]) {
                        return Err(NnError::Shape {
                            node: node.name.clone(),
                            op: "Input",
                            message: format!(
                                "input of shape {:?}; the model takes [N, {}]",
                                input.shape(),
                                expected
                                    .iter()
                                    .map(|d| d.to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                    input.clone()
                }
                Op::Conv2d { params, bias, .. } => {
                    let x = arg(0)?.clone();
                    let y = p.conv2d_fixed(&x, self.param(id, "weight")?, *params)?;
                    if keep {
                        saved[id] = Saved::Input(x);
                    }
                    if *bias {
                        add_channel_bias(p, &y, self.param(id, "bias")?)?
                    } else {
                        y
                    }
                }
                Op::Linear { bias, .. } => {
                    let x = arg(0)?.clone();
                    let w_t = p.linear(self.param(id, "weight")?, |b, t| b.transpose(t, 0, 1))?;
                    let y = p.matmul_fixed(&x, &w_t)?;
                    if keep {
                        saved[id] = Saved::Input(x);
                    }
                    if *bias {
                        let b = self.param(id, "bias")?;
                        let shape = y.shape().to_vec();
                        let spread = p.linear(b, |be, t| be.broadcast_to(t, &shape))?;
                        p.add(&y, &spread)?
                    } else {
                        y
                    }
                }
                Op::Relu => {
                    let r = nl::relu(p, arg(0)?)?;
                    if keep {
                        saved[id] = Saved::Relu(r.drelu);
                    }
                    r.output
                }
                Op::MaxPool2d(params) => {
                    let pool = nl::max_pool2d(p, arg(0)?, *params)?;
                    let out = pool.output.clone();
                    if keep {
                        saved[id] = Saved::MaxPool(pool);
                    }
                    out
                }
                Op::AvgPool2d(params) => nl::avg_pool2d(p, arg(0)?, *params)?,
                Op::GlobalAvgPool => {
                    let x = arg(0)?;
                    let (n, c) = (x.shape()[0], x.shape()[1]);
                    let y = nl::global_avg_pool(p, x)?;
                    p.linear(&y, |b, t| b.reshape(t, &[n, c, 1, 1]))?
                }
                Op::Flatten => {
                    let x = arg(0)?;
                    let n = x.shape()[0];
                    let rest: usize = x.shape()[1..].iter().product();
                    p.linear(x, |b, t| b.reshape(t, &[n, rest]))?
                }
                Op::Add => p.add(arg(0)?, arg(1)?)?,
                Op::BatchNorm2d { eps, momentum, .. } => {
                    let x = arg(0)?.clone();
                    match (self.trainable_batchnorm, keep) {
                        (false, false) => {
                            let y = mul_channel_scale(p, &x, self.param(id, "scale")?)?;
                            add_channel_bias(p, &y, self.param(id, "shift")?)?
                        }
                        (false, true) => {
                            return Err(NnError::InvalidArgument(format!(
                                "BatchNorm2d `{}` was shared for inference (folded into an \
                                 affine map); share the model with \
                                 `SharedModel::share_for_training` to train it",
                                node.name
                            )));
                        }
                        (true, false) => {
                            let (scale, shift) = self.running_affine(p, id, *eps)?;
                            let y = mul_channel_scale(p, &x, &scale)?;
                            add_channel_bias(p, &y, &shift)?
                        }
                        (true, true) => {
                            let batch = batchnorm_forward_train(
                                p,
                                &x,
                                *eps,
                                self.param(id, "weight")?,
                                self.param(id, "bias")?,
                            )?;
                            let m = (x.len() / x.shape()[1]) as u64;
                            for (stat, fresh, unbiased) in [
                                ("running_mean", &batch.mean, 1.0),
                                ("running_var", &batch.var, m as f64 / (m.max(2) - 1) as f64),
                            ] {
                                let old = self.param(id, stat)?;
                                let updated =
                                    blend(p, old, 1.0 - momentum, fresh, momentum * unbiased)?;
                                running_stats.insert(format!("{}.{stat}", node.name), updated);
                            }
                            saved[id] = Saved::BatchNorm {
                                xhat: batch.xhat,
                                inv_std: batch.inv_std,
                            };
                            batch.output
                        }
                    }
                }
                Op::Dropout { p: rate } => match training_seed {
                    Some(seed) if *rate > 0.0 => {
                        let x = arg(0)?.clone();
                        let mask = plain::dropout_mask(seed, id, x.len(), *rate);
                        let mask = p.fixed().encode_slice(&mask)?;
                        let mask = p.backend().upload(&mask, x.shape())?;
                        let dropped = p.apply_public(Bilinear::Mul, &x, &mask)?;
                        saved[id] = Saved::Dropout(mask);
                        p.truncate(&dropped)?
                    }
                    _ => arg(0)?.clone(),
                },
                Op::Softmax => nl::softmax(p, arg(0)?, 1, nl::SoftmaxOptions::default())?,
            };
            values[id] = Some(value);
            if !keep {
                for &i in &node.inputs {
                    if last_use[i] == id {
                        values[i] = None;
                    }
                }
            }
        }
        Ok(PrivateForward {
            values,
            saved,
            running_stats,
        })
    }

    /// The per-channel `(scale, shift)` of BatchNorm `id` from its shared running
    /// statistics: scale = weight / √(running_var + ε), shift = bias − running_mean · scale.
    fn running_affine<T: Transport>(
        &self,
        p: &mut Party<B, T>,
        id: NodeId,
        eps: f64,
    ) -> Result<(Rss<B>, Rss<B>)> {
        let var_eps = p.add_scalar(self.param(id, "running_var")?, p.fixed().encode(eps)?)?;
        let inv_std = nl::inv_sqrt(p, &var_eps, BATCHNORM_INV_SQRT)?;
        let scale = p.mul_fixed(self.param(id, "weight")?, &inv_std)?;
        let shifted = p.mul_fixed(self.param(id, "running_mean")?, &scale)?;
        let shift = p.sub(self.param(id, "bias")?, &shifted)?;
        Ok((scale, shift))
    }
}

/// BatchNorm's forward pass with batch statistics, on shares.
pub struct BatchNormBatch<B: GpuBackend> {
    /// The layer's output, `[N, C, H, W]`.
    pub output: Rss<B>,
    /// The normalised input (x − μ)/√(σ² + ε), kept for the backward pass.
    pub xhat: Rss<B>,
    /// 1/√(σ² + ε) per channel, `[C]`, kept for the backward pass.
    pub inv_std: Rss<B>,
    /// The batch mean per channel, `[C]`.
    pub mean: Rss<B>,
    /// The biased batch variance per channel (over m = N·H·W values), `[C]`.
    pub var: Rss<B>,
}

/// BatchNorm in training on a shared `[N, C, H, W]` batch:
/// y = weight · (x − μ) / √(σ² + ε) + bias per channel, with μ and σ² (biased) over the
/// batch and the plane, `weight` and `bias` shared `[C]`. Three full-size fixed-point
/// products (the squares, x̂ and the scaling by the weight), two divisions by m and the
/// inverse square root ([`BATCHNORM_INV_SQRT`]) of C values.
pub fn batchnorm_forward_train<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    eps: f64,
    weight: &Rss<B>,
    bias: &Rss<B>,
) -> Result<BatchNormBatch<B>> {
    let m = per_channel_count("batchnorm_forward_train", x.shape(), weight)?;
    per_channel_count("batchnorm_forward_train", x.shape(), bias)?;
    let mean = p.div_public(&sum_per_channel(p, x)?, m)?;
    let centred = p.sub(x, &spread_channels(p, &mean, x.shape())?)?;
    let squares = p.square_fixed(&centred)?;
    let var = p.div_public(&sum_per_channel(p, &squares)?, m)?;
    let var_eps = p.add_scalar(&var, p.fixed().encode(eps)?)?;
    let inv_std = nl::inv_sqrt(p, &var_eps, BATCHNORM_INV_SQRT)?;
    let xhat = mul_channel_scale(p, &centred, &inv_std)?;
    let scaled = mul_channel_scale(p, &xhat, weight)?;
    let output = add_channel_bias(p, &scaled, bias)?;
    Ok(BatchNormBatch {
        output,
        xhat,
        inv_std,
        mean,
        var,
    })
}

/// BatchNorm's backward pass with batch statistics, from what
/// [`batchnorm_forward_train`] kept: `(dx, dweight, dbias)` with dbias = Σ dy,
/// dweight = Σ dy·x̂ and dx = weight·inv_std · (dy − dbias/m − x̂ · dweight/m), sums per
/// channel over its m values. Three full-size fixed-point products.
pub fn batchnorm_backward<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    dy: &Rss<B>,
    xhat: &Rss<B>,
    inv_std: &Rss<B>,
    weight: &Rss<B>,
) -> Result<(Rss<B>, Rss<B>, Rss<B>)> {
    let m = per_channel_count("batchnorm_backward", dy.shape(), weight)?;
    per_channel_count("batchnorm_backward", dy.shape(), inv_std)?;
    if xhat.shape() != dy.shape() {
        return Err(NnError::InvalidArgument(format!(
            "batchnorm_backward: x̂ of shape {:?} for a gradient of shape {:?}",
            xhat.shape(),
            dy.shape()
        )));
    }
    let dbias = sum_per_channel(p, dy)?;
    let products = p.mul_fixed(dy, xhat)?;
    let dweight = sum_per_channel(p, &products)?;
    let mean_dy = p.div_public(&dbias, m)?;
    let mean_dyx = p.div_public(&dweight, m)?;
    let along_xhat = mul_channel_scale(p, xhat, &mean_dyx)?;
    let centred = p.sub(
        &p.sub(dy, &spread_channels(p, &mean_dy, dy.shape())?)?,
        &along_xhat,
    )?;
    let factor = p.mul_fixed(weight, inv_std)?;
    let dx = mul_channel_scale(p, &centred, &factor)?;
    Ok((dx, dweight, dbias))
}

/// m = N·H·W, the values per channel of `[N, C, H, W]`, after checking that `per_channel`
/// is `[C]`.
fn per_channel_count<B: GpuBackend>(
    op: &str,
    shape: &[usize],
    per_channel: &Rss<B>,
) -> Result<u64> {
    match shape {
        &[n, c, h, w] if per_channel.shape() == [c] && n * h * w > 0 => Ok((n * h * w) as u64),
        _ => Err(NnError::InvalidArgument(format!(
            "{op}: a non-empty [N, C, H, W] input with [C] per-channel values, not {shape:?} \
             with {:?}",
            per_channel.shape()
        ))),
    }
}

/// a·x + b·y for public reals a and b: both scaled locally, then one truncation.
fn blend<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    a: f64,
    y: &Rss<B>,
    b: f64,
) -> Result<Rss<B>> {
    let fixed = p.fixed();
    let sum = p.add(
        &p.mul_scalar(x, fixed.encode(a)?)?,
        &p.mul_scalar(y, fixed.encode(b)?)?,
    )?;
    Ok(p.truncate(&sum)?)
}

/// Σ over every axis but the channel axis 1 of `[N, C, ...]`: `[C]` (local).
fn sum_per_channel<B: GpuBackend, T: Transport>(p: &Party<B, T>, x: &Rss<B>) -> Result<Rss<B>> {
    let rank = x.shape().len();
    Ok(p.linear(x, |b, t| {
        let mut t = t.clone();
        for axis in (2..rank).rev() {
            t = b.sum_axis(&t, axis)?;
        }
        b.sum_axis(&t, 0)
    })?)
}

/// A per-channel `[C]` sharing broadcast to `shape` = `[N, C, ...]` (local).
fn spread_channels<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    per_channel: &Rss<B>,
    shape: &[usize],
) -> Result<Rss<B>> {
    let mut keep = vec![1; shape.len()];
    keep[1] = shape[1];
    Ok(p.linear(per_channel, |b, t| {
        b.broadcast_to(&b.reshape(t, &keep)?, shape)
    })?)
}

/// Shares the parameters of `model` that `include` selects, from `owner`'s values.
fn share_params<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    model: &Model,
    owner: PartyId,
    include: impl Fn(&ParamSpec) -> bool,
) -> Result<BTreeMap<String, Rss<B>>> {
    let mine = p.id() == owner;
    let mut params = BTreeMap::new();
    for spec in model.param_specs().into_iter().filter(|s| include(s)) {
        let value = model
            .params
            .get(&spec.name)
            .ok_or_else(|| NnError::MissingParameter {
                name: spec.name.clone(),
                expected: spec.shape.clone(),
                context: String::new(),
            })?;
        let shared = p.share_f64(owner, mine.then(|| value.data()), &spec.shape)?;
        params.insert(spec.name, shared);
    }
    Ok(params)
}

/// y + b for a per-channel bias `[C]` on `[N, C, H, W]` (or `[N, C]`).
fn add_channel_bias<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    y: &Rss<B>,
    bias: &Rss<B>,
) -> Result<Rss<B>> {
    let spread = spread_channels(p, bias, y.shape())?;
    Ok(p.add(y, &spread)?)
}

/// y · s for a shared per-channel scale `[C]` on `[N, C, ...]` (fixed point, 2 rounds).
fn mul_channel_scale<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    y: &Rss<B>,
    scale: &Rss<B>,
) -> Result<Rss<B>> {
    let spread = spread_channels(p, scale, y.shape())?;
    Ok(p.mul_fixed(y, &spread)?)
}

/// SGD on shared parameters, PyTorch's formulation: g' = g + weight_decay·w,
/// v = momentum·v + g', w = w − lr·v. Each public factor is a fixed-point product by a
/// public value (one round in which only P0 sends).
pub struct PrivateSgd<B: GpuBackend> {
    config: SgdConfig,
    velocity: BTreeMap<String, Rss<B>>,
}

impl<B: GpuBackend> PrivateSgd<B> {
    /// A fresh optimiser (zero velocity).
    pub fn new(config: SgdConfig) -> Self {
        Self {
            config,
            velocity: BTreeMap::new(),
        }
    }

    fn step<T: Transport>(
        &mut self,
        p: &mut Party<B, T>,
        params: &mut BTreeMap<String, Rss<B>>,
        grads: &BTreeMap<String, Rss<B>>,
    ) -> Result<()> {
        let SgdConfig {
            lr,
            momentum,
            weight_decay,
        } = self.config;
        for (name, grad) in grads {
            let w = params.get(name).ok_or_else(|| {
                NnError::InvalidArgument(format!("gradient for unknown `{name}`"))
            })?;
            let mut g = grad.clone();
            if weight_decay != 0.0 {
                let decay = p.mul_public_fixed(w, weight_decay)?;
                g = p.add(&g, &decay)?;
            }
            if momentum != 0.0 {
                g = match self.velocity.get(name) {
                    Some(v) => {
                        let kept = p.mul_public_fixed(v, momentum)?;
                        p.add(&kept, &g)?
                    }
                    None => g,
                };
                self.velocity.insert(name.clone(), g.clone());
            }
            let update = p.mul_public_fixed(&g, lr)?;
            let updated = p.sub(w, &update)?;
            params.insert(name.clone(), updated);
        }
        Ok(())
    }
}
