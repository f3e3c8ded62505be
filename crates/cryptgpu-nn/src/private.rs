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
//! Each layer's private forward and backward pass lives with the layer (see
//! [`crate::layers`]); this executor walks the graph, keeps what training needs and hands
//! each node its inputs, parameters and gradient. BatchNorm's two forms (an affine map in a
//! model shared for inference, batch statistics in one shared for training) are described
//! in [`crate::layers::batchnorm`].

use std::collections::BTreeMap;

use std::any::Any;

use cryptgpu_backend::GpuBackend;
use cryptgpu_nonlinear as nl;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::{PartyId, Transport};

use crate::error::{NnError, Result};
pub use crate::layers::batchnorm::{
    BATCHNORM_INV_SQRT, BatchNormBatch, batchnorm_backward, batchnorm_forward_train,
};
use crate::layers::{PrivateBackCx, PrivateCx, Sharing};
use crate::model::{Model, NodeId};
use crate::optim::SgdConfig;
use crate::tensor::Tensor;

/// A model with secret-shared parameters, as one party holds it.
pub struct SharedModel<B: GpuBackend> {
    model: Model,
    params: BTreeMap<String, Rss<B>>,
    /// How the parameters were shared (BatchNorm: an affine map or its own statistics).
    sharing: Sharing,
}

/// What a node's forward pass keeps for its backward pass (in training; `None` otherwise).
type Kept = Option<Box<dyn Any>>;

/// One training forward pass: each node's value and what its backward pass needs.
pub struct PrivateForward<B: GpuBackend> {
    values: Vec<Option<Rss<B>>>,
    saved: Vec<Kept>,
    /// Layers that ran after the node they feed (see [`SharedModel::moved_behind`]): their
    /// backward pass is that node's.
    deferred: Vec<bool>,
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
///
/// # Errors
/// At the owner, before anything is sent, for a value the comparisons could not take
/// (see [`SharedModel::share`] for the variants): named "input".
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
    Ok(p.share_f64_checked(owner, "input", input.map(Tensor::data), shape)?)
}

/// Shares the model's input from `owner` (`input` is `Some` there only): real values as
/// [`share_input`] does, or, for a model on token ids ([`Model::token_vocabulary`]), each
/// id of `input` (shape `shape`) as its one-hot row of ring integers 0 and 1, giving a
/// sharing of `[..shape, V]`. The owner checks that every id is an integer in `0..V`.
pub fn share_model_input<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    model: &Model,
    owner: PartyId,
    input: Option<&Tensor>,
    shape: &[usize],
) -> Result<Rss<B>> {
    let Some(vocabulary) = model.token_vocabulary() else {
        return share_input(p, owner, input, shape);
    };
    let mut onehot_shape = shape.to_vec();
    onehot_shape.push(vocabulary);
    let values = match input {
        Some(t) if t.shape() != shape => {
            return Err(NnError::InvalidArgument(format!(
                "input of shape {:?} where {shape:?} was announced",
                t.shape()
            )));
        }
        Some(t) => {
            let ids = crate::layers::embedding::token_indices(t.data(), vocabulary)?;
            let mut onehot = vec![0u64; ids.len() * vocabulary];
            for (row, id) in ids.into_iter().enumerate() {
                onehot[row * vocabulary + id] = 1;
            }
            Some(p.backend().upload(&onehot, &onehot_shape)?)
        }
        None => None,
    };
    Ok(p.share(owner, values.as_ref(), &onehot_shape)?)
}

impl<B: GpuBackend> SharedModel<B> {
    /// Shares the parameters of `model`, whose values only `owner` needs to hold (the
    /// others pass a model of the same architecture, with any values). BatchNorm nodes are
    /// folded into the convolution they follow where possible; the rest become per-channel
    /// `scale` and `shift` tensors, computed by the owner.
    ///
    /// # Errors
    /// The owner checks each tensor it shares (parameters, constants, BatchNorm's affine
    /// map) on its plaintext before sending it, and refuses a value out of range, naming
    /// the tensor and the first offending element: not finite
    /// (`RingError::NotFiniteAt`), beyond the fixed-point range (`RingError::OutOfRangeAt`),
    /// both wrapped as `NnError::Protocol(NonlinearError::Share(ShareError::Ring(_)))`; or
    /// outside the comparison domain [−2^ℓ, 2^ℓ) ([`NnError::OutOfComparisonRange`]). The
    /// others then fail with a transport error.
    pub fn share<T: Transport>(p: &mut Party<B, T>, model: &Model, owner: PartyId) -> Result<Self> {
        let (model, tensors) = inference_layout(model)?;
        let values = if p.id() == owner {
            Some(inference_values(&model)?)
        } else {
            None
        };
        let mut params = BTreeMap::new();
        for (k, tensor) in tensors.into_iter().enumerate() {
            let mine = values.as_ref().map(|v| &v[k][..]);
            let shared = p.share_f64_checked(owner, &tensor.name, mine, &tensor.shape)?;
            params.insert(tensor.name, shared);
        }
        Ok(Self {
            model,
            params,
            sharing: Sharing::Inference,
        })
    }

    /// The model [`SharedModel::share`] would give, from shares this party already holds:
    /// one per tensor of [`inference_layout`] (by name, of its shape, none missing, none
    /// more), shared outside of a job (by a client of a service that uploaded the model,
    /// say). `model` is the unfolded architecture; its values are not read.
    pub fn from_shares(model: &Model, mut shares: BTreeMap<String, Rss<B>>) -> Result<Self> {
        let (model, tensors) = inference_layout(model)?;
        let mut params = BTreeMap::new();
        for tensor in tensors {
            let shared = shares
                .remove(&tensor.name)
                .ok_or_else(|| NnError::MissingParameter {
                    name: tensor.name.clone(),
                    expected: tensor.shape.clone(),
                    context: " among the shares".into(),
                })?;
            if shared.shape() != tensor.shape {
                return Err(NnError::ParameterShape {
                    found: shared.shape().to_vec(),
                    name: tensor.name,
                    expected: tensor.shape,
                    context: " among the shares".into(),
                });
            }
            params.insert(tensor.name, shared);
        }
        if let Some(extra) = shares.keys().next() {
            return Err(NnError::InvalidArgument(format!(
                "shares of {extra}, which the model does not have"
            )));
        }
        Ok(Self {
            model,
            params,
            sharing: Sharing::Inference,
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
        let mut params = BTreeMap::new();
        for spec in model.param_specs() {
            let shared = share_param(p, model, owner, &spec.name, &spec.shape)?;
            params.insert(spec.name, shared);
        }
        Ok(Self {
            model: model.clone(),
            params,
            sharing: Sharing::Training,
        })
    }

    /// The (folded) model structure.
    pub fn model(&self) -> &Model {
        &self.model
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
    /// `seed` as in [`crate::plain::train_step`] (see [`crate::plain::step_seed`]), and every party must
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
        let mut grads = self.backward(p, &fwd, logits_id, grad)?;
        let frozen = self.model.frozen();
        grads.retain(|name, _| !frozen.contains(name));
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
        let needs = self.model.needs_backward();
        let mut flowing: Vec<Option<Rss<B>>> = vec![None; nodes.len()];
        flowing[from] = Some(grad);
        let mut grads = BTreeMap::new();
        for id in (1..=from).rev() {
            let Some(dy) = flowing[id].take() else {
                continue;
            };
            if !needs[id] {
                // Nothing trained at or before it: its backward pass would be wasted.
                continue;
            }
            let node = &nodes[id];
            let input_grads = if fwd.deferred[id] {
                // A layer that ran after its consumer: the consumer's backward pass covered it.
                vec![Some(dy)]
            } else {
                let shape_of = |i: NodeId| {
                    fwd.values[i]
                        .as_ref()
                        .map(|v| v.shape().to_vec())
                        .ok_or_else(|| NnError::Graph(format!("`{}` lost a value", nodes[i].name)))
                };
                let input_shapes = node
                    .inputs
                    .iter()
                    .map(|&i| shape_of(i))
                    .collect::<Result<Vec<_>>>()?;
                let mut cx = PrivateBackCx {
                    p: &mut *p,
                    name: &node.name,
                    inputs: &node.inputs,
                    input_shapes,
                    out_shape: shape_of(id)?,
                    params: &self.params,
                    needs: &needs,
                    saved: fwd.saved[id].as_deref(),
                    grads: &mut grads,
                };
                node.op
                    .private_backward(&mut cx, dy)
                    .map_err(|e| e.in_layer(&node.name, node.op.kind(), "backward"))?
            };
            for (&target, g) in node.inputs.iter().zip(input_grads) {
                let Some(g) = g else { continue };
                if target == 0 {
                    continue;
                }
                flowing[target] = Some(match flowing[target].take() {
                    Some(acc) => p.add(&acc, &g).map_err(|e| {
                        NnError::from(e).in_layer(&node.name, node.op.kind(), "backward")
                    })?,
                    None => g,
                });
            }
        }
        Ok(grads)
    }

    /// For each node that takes maxima of its input ([`crate::layers::Layer::takes_maxima`]:
    /// a max-pool) whose input is a layer that commutes with taking a maximum
    /// ([`crate::layers::Layer::commutes_with_max`]: a ReLU) used by nothing else, that
    /// layer, indexed by its consumer. The executor runs such a layer after its consumer
    /// instead of before it: `max(relu(x)) = relu(max(x))` exactly, a zero pad changes
    /// neither side, and the pool's output has a quarter of its input's elements for 2×2
    /// windows. In training the consumer then takes over the moved layer's saved state
    /// ([`crate::layers::Layer::absorb_moved`]: the pool's winners gated by the ReLU's bits,
    /// [`cryptgpu_nonlinear::gate_winners`]), which gives exactly the gradient of the
    /// original order.
    fn moved_behind(&self) -> Vec<Option<NodeId>> {
        let nodes = self.model.nodes();
        let mut uses = vec![0usize; nodes.len()];
        for node in nodes {
            for &i in &node.inputs {
                uses[i] += 1;
            }
        }
        uses[self.model.logits()] += 1;
        nodes
            .iter()
            .map(|node| match node.inputs.as_slice() {
                &[r] if node.op.takes_maxima()
                    && nodes[r].op.commutes_with_max()
                    && uses[r] == 1 =>
                {
                    Some(r)
                }
                _ => None,
            })
            .collect()
    }

    /// Node `id`'s private forward pass on `args`, its output of shape `out_shape`: its
    /// value, and in training what it keeps for its backward pass.
    fn forward_node<T: Transport>(
        &self,
        p: &mut Party<B, T>,
        id: NodeId,
        args: &[&Rss<B>],
        out_shape: &[usize],
        training_seed: Option<u64>,
        running_stats: &mut BTreeMap<String, Rss<B>>,
    ) -> Result<(Rss<B>, Kept)> {
        let node = &self.model.nodes()[id];
        let mut cx = PrivateCx {
            p,
            name: &node.name,
            id,
            training: training_seed,
            sharing: self.sharing,
            out_shape,
            params: &self.params,
            saved: None,
            updates: running_stats,
        };
        let value = node
            .op
            .private_forward(&mut cx, args)
            .map_err(|e| e.in_layer(&node.name, node.op.kind(), "forward"))?;
        Ok((value, cx.saved.take()))
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
        let mut last_use = self.model.last_use();
        last_use[self.model.logits()] = nodes.len();
        let mut expected: Vec<usize> = self.model.input_shape().to_vec();
        // Token ids arrive as one-hot rows (see `share_model_input`).
        expected.extend(self.model.token_vocabulary());
        if input.shape().get(1..) != Some(&expected[..]) {
            return Err(NnError::Shape {
                node: nodes[0].name.clone(),
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
        let shapes = self.model.shapes(input.shape()[0])?;
        let moved = self.moved_behind();
        let mut deferred = vec![false; nodes.len()];
        for &m in moved.iter().flatten() {
            deferred[m] = true;
        }
        let mut values: Vec<Option<Rss<B>>> = vec![None; nodes.len()];
        let mut saved: Vec<Kept> = (0..nodes.len()).map(|_| None).collect();
        let mut running_stats = BTreeMap::new();
        values[0] = Some(input.clone());
        for (id, node) in nodes.iter().enumerate().skip(1) {
            if id == self.model.output() && node.op.is_output_activation() {
                // Softmax or LogSoftmax at the output: predictions and losses take the
                // logits, so the private executor never computes it.
                continue;
            }
            if deferred[id] {
                // This layer runs after the node that consumes it (below): pass its input on
                // unchanged.
                let i = node.inputs[0];
                values[id] = if last_use[i] == id && !keep {
                    values[i].take()
                } else {
                    values[i].clone()
                };
                continue;
            }
            let args = node
                .inputs
                .iter()
                .map(|&i| {
                    values[i].as_ref().ok_or_else(|| {
                        NnError::Graph(format!("node `{}` lost its input", node.name))
                    })
                })
                .collect::<Result<Vec<&Rss<B>>>>()?;
            let (mut value, kept) =
                self.forward_node(p, id, &args, &shapes[id], training_seed, &mut running_stats)?;
            saved[id] = kept;
            if let Some(m) = moved[id] {
                // The moved layer on this node's output, which keeps this node's shape.
                let (after, moved_saved) = self.forward_node(
                    p,
                    m,
                    &[&value],
                    &shapes[id],
                    training_seed,
                    &mut running_stats,
                )?;
                value = after;
                if keep {
                    node.op
                        .absorb_moved(p, &mut saved[id], moved_saved)
                        .map_err(|e| e.in_layer(&node.name, node.op.kind(), "forward"))?;
                }
            }
            if value.shape() != shapes[id] {
                return Err(NnError::Graph(format!(
                    "`{}` computed shape {:?} where {:?} was inferred",
                    node.name,
                    value.shape(),
                    shapes[id]
                )));
            }
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
            deferred,
            running_stats,
        })
    }
}

/// One tensor that [`SharedModel::share`] shares: a parameter, or a layer's own inference
/// tensor (BatchNorm's per-channel `scale` and `shift`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferenceTensor {
    /// Its name (`node.suffix`).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
}

/// The tensors node `node` shares for inference: its inference tensors if it has any, else
/// its parameters.
fn node_tensors(node: &crate::model::Node) -> Vec<InferenceTensor> {
    let tensor = |suffix: &str, shape: Vec<usize>| InferenceTensor {
        name: format!("{}.{suffix}", node.name),
        shape,
    };
    match node.op.inference_params() {
        Some(specs) => specs
            .into_iter()
            .map(|(suffix, shape)| tensor(suffix, shape))
            .collect(),
        None => node
            .op
            .params()
            .into_iter()
            .map(|decl| tensor(decl.suffix, decl.shape))
            .collect(),
    }
}

/// What [`SharedModel::share`] shares for `model`: the model with its BatchNorm nodes
/// folded ([`Model::fold_batchnorm`]), and its tensors in the order they are shared. It
/// depends on the architecture only, so a party without the values gets the same list.
pub fn inference_layout(model: &Model) -> Result<(Model, Vec<InferenceTensor>)> {
    let model = model.fold_batchnorm()?;
    let tensors = model.nodes().iter().flat_map(node_tensors).collect();
    Ok((model, tensors))
}

/// The model owner's values of the tensors of [`inference_layout`] (given the folded model
/// it returned), in the same order: plaintext, to be encoded and shared.
pub fn inference_values(folded: &Model) -> Result<Vec<Vec<f64>>> {
    let mut values = Vec::new();
    for (id, node) in folded.nodes().iter().enumerate() {
        if node.op.inference_params().is_some() {
            values.extend(node.op.inference_values(folded, id)?);
            continue;
        }
        for tensor in node_tensors(node) {
            let value =
                folded
                    .params
                    .get(&tensor.name)
                    .ok_or_else(|| NnError::MissingParameter {
                        name: tensor.name.clone(),
                        expected: tensor.shape.clone(),
                        context: String::new(),
                    })?;
            if value.shape() != tensor.shape {
                return Err(NnError::ParameterShape {
                    found: value.shape().to_vec(),
                    name: tensor.name,
                    expected: tensor.shape,
                    context: String::new(),
                });
            }
            values.push(value.data().to_vec());
        }
    }
    Ok(values)
}

/// Shares parameter `name` of `model` (of `shape`) from `owner`'s value.
fn share_param<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    model: &Model,
    owner: PartyId,
    name: &str,
    shape: &[usize],
) -> Result<Rss<B>> {
    let value = model
        .params
        .get(name)
        .ok_or_else(|| NnError::MissingParameter {
            name: name.to_owned(),
            expected: shape.to_vec(),
            context: String::new(),
        })?;
    let mine = p.id() == owner;
    Ok(p.share_f64_checked(owner, name, mine.then(|| value.data()), shape)?)
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
