//! What a layer sees of the graph while it runs: the contexts the executors hand each
//! node (plaintext and private, forward and backward), and [`ModelView`], the model as a
//! layer reads it (node names and parameters).

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::Transport;

use crate::error::{NnError, Result};
use crate::tensor::Tensor;

/// Index of a node in [`crate::Model::nodes`].
pub type NodeId = usize;

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

/// The model as a layer reads it: node names and parameter values
/// (implemented by [`crate::Model`]).
pub trait ModelView {
    /// The name of node `id`.
    fn node_name(&self, id: NodeId) -> &str;

    /// The parameter `"{node}.{suffix}"`, or a `MissingParameter` error.
    fn param(&self, node: NodeId, suffix: &str) -> Result<&Tensor>;

    /// The parameter called `name`, or a `MissingParameter` error.
    fn param_by_name(&self, name: &str) -> Result<&Tensor>;
}

/// What a plaintext forward pass keeps for the backward pass of one node (each layer
/// stores and reads its own type).
#[derive(Clone, Default)]
pub struct PlainSaved(Option<Arc<dyn Any + Send + Sync>>);

impl fmt::Debug for PlainSaved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "PlainSaved(..)"
        } else {
            "PlainSaved(none)"
        })
    }
}

/// A node's context in the plaintext forward pass.
pub struct PlainCx<'a> {
    /// The model (parameters included).
    pub model: &'a dyn ModelView,
    /// The node's id.
    pub id: NodeId,
    /// Training or inference.
    pub mode: Mode,
    /// The shape the node's output must have.
    pub out_shape: &'a [usize],
    pub(crate) saved: PlainSaved,
    pub(crate) running_stats: &'a mut BTreeMap<String, Tensor>,
}

impl PlainCx<'_> {
    /// The node's name.
    pub fn name(&self) -> &str {
        self.model.node_name(self.id)
    }

    /// The node's parameter `suffix`.
    pub fn param(&self, suffix: &str) -> Result<&Tensor> {
        self.model.param(self.id, suffix)
    }

    /// Keeps `value` for the backward pass.
    pub fn save<S: Any + Send + Sync>(&mut self, value: S) {
        self.saved = PlainSaved(Some(Arc::new(value)));
    }

    /// Records a new value of the buffer `suffix` (BatchNorm's running statistics).
    pub fn update_buffer(&mut self, suffix: &str, value: Tensor) {
        let name = format!("{}.{suffix}", self.name());
        self.running_stats.insert(name, value);
    }

    /// A tensor of the output's shape.
    pub fn output(&self, data: Vec<f64>) -> Result<Tensor> {
        Tensor::new(self.out_shape, data)
    }

    /// `f` of every element of `x`, in the output's shape.
    pub fn map(&self, x: &Tensor, f: impl Fn(f64) -> f64) -> Result<Tensor> {
        self.output(x.data().iter().map(|&v| f(v)).collect())
    }

    /// The output `f(a, b)` of two inputs broadcast (NumPy rules) to the output's shape.
    pub fn zip_broadcast(
        &self,
        a: &Tensor,
        b: &Tensor,
        f: impl Fn(f64, f64) -> f64,
    ) -> Result<Tensor> {
        let a = super::tensor_ops::plain_broadcast(a, self.out_shape)?;
        let b = super::tensor_ops::plain_broadcast(b, self.out_shape)?;
        self.output(
            a.data()
                .iter()
                .zip(b.data())
                .map(|(&u, &v)| f(u, v))
                .collect(),
        )
    }
}

/// A node's context in the plaintext backward pass.
pub struct PlainBackCx<'a> {
    /// The model.
    pub model: &'a dyn ModelView,
    /// The node's id.
    pub id: NodeId,
    /// Training or inference, as in the forward pass.
    pub mode: Mode,
    /// The node's inputs' values.
    pub inputs: Vec<&'a Tensor>,
    /// The node's output value.
    pub output: &'a Tensor,
    pub(crate) saved: &'a PlainSaved,
    pub(crate) grads: &'a mut BTreeMap<String, Tensor>,
}

impl PlainBackCx<'_> {
    /// The node's name.
    pub fn name(&self) -> &str {
        self.model.node_name(self.id)
    }

    /// The node's parameter `suffix`.
    pub fn param(&self, suffix: &str) -> Result<&Tensor> {
        self.model.param(self.id, suffix)
    }

    /// What the forward pass saved, as the type it saved.
    pub fn saved<S: Any>(&self) -> Option<&S> {
        self.saved.0.as_ref().and_then(|s| s.downcast_ref())
    }

    /// Records the gradient of parameter `suffix`.
    pub fn grad(&mut self, suffix: &str, value: Tensor) {
        let name = format!("{}.{suffix}", self.name());
        self.grads.insert(name, value);
    }

    /// A tensor of input `i`'s shape.
    pub fn like_input(&self, i: usize, data: Vec<f64>) -> Result<Tensor> {
        Tensor::new(self.inputs[i].shape(), data)
    }

    /// The gradient of the one input of an elementwise layer: `f(v, g)` for each element
    /// `v` of `along` (the input or the output) and `g` of `dy`.
    pub fn elementwise_grad(
        &self,
        along: &Tensor,
        dy: &Tensor,
        f: impl Fn(f64, f64) -> f64,
    ) -> Result<Vec<Tensor>> {
        let dx = along.data().iter().zip(dy.data()).map(|(&v, &g)| f(v, g));
        Ok(vec![self.like_input(0, dx.collect())?])
    }
}

/// How a model's parameters were shared: decides what BatchNorm holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// [`crate::private::SharedModel::share`]: layers hold their inference parameters
    /// ([`crate::layers::Layer::inference_params`]).
    Inference,
    /// [`crate::private::SharedModel::share_for_training`]: every parameter as it is.
    Training,
}

/// A node's context in the private forward pass.
pub struct PrivateCx<'a, B: GpuBackend, T: Transport> {
    /// The party.
    pub p: &'a mut Party<B, T>,
    /// The node's name.
    pub name: &'a str,
    /// The node's id.
    pub id: NodeId,
    /// In training: the step's public seed (dropout masks); `None` at inference.
    pub training: Option<u64>,
    /// How the parameters were shared.
    pub sharing: Sharing,
    /// The shape the node's output must have.
    pub out_shape: &'a [usize],
    pub(crate) params: &'a BTreeMap<String, Rss<B>>,
    pub(crate) saved: Option<Box<dyn Any>>,
    pub(crate) updates: &'a mut BTreeMap<String, Rss<B>>,
}

impl<'a, B: GpuBackend, T: Transport> PrivateCx<'a, B, T> {
    /// The node's shared parameter `suffix`.
    pub fn param(&self, suffix: &str) -> Result<&'a Rss<B>> {
        shared_param(self.params, self.name, suffix)
    }

    /// Whether the pass trains (and must keep what the backward pass needs).
    pub fn keep(&self) -> bool {
        self.training.is_some()
    }

    /// Keeps `value` for the backward pass (only in training).
    pub fn save<S: Any>(&mut self, value: S) {
        if self.keep() {
            self.saved = Some(Box::new(value));
        }
    }

    /// `y` reshaped to the output's shape (local).
    pub fn reshape_to_output(&self, y: &Rss<B>) -> Result<Rss<B>> {
        let out = self.out_shape;
        Ok(self.p.linear(y, |b, t| b.reshape(t, out))?)
    }

    /// Records a new value of the shared buffer `suffix` (running statistics).
    pub fn update_buffer(&mut self, suffix: &str, value: Rss<B>) {
        self.updates
            .insert(format!("{}.{suffix}", self.name), value);
    }
}

/// A node's context in the private backward pass.
pub struct PrivateBackCx<'a, B: GpuBackend, T: Transport> {
    /// The party.
    pub p: &'a mut Party<B, T>,
    /// The node's name.
    pub name: &'a str,
    /// The node's inputs.
    pub inputs: &'a [NodeId],
    /// The shapes of the node's inputs.
    pub input_shapes: Vec<Vec<usize>>,
    /// The shape of the node's output.
    pub out_shape: Vec<usize>,
    pub(crate) params: &'a BTreeMap<String, Rss<B>>,
    /// For each node of the model, whether training needs its gradient.
    pub(crate) needs: &'a [bool],
    pub(crate) saved: Option<&'a dyn Any>,
    pub(crate) grads: &'a mut BTreeMap<String, Rss<B>>,
}

impl<'a, B: GpuBackend, T: Transport> PrivateBackCx<'a, B, T> {
    /// The node's shared parameter `suffix`.
    pub fn param(&self, suffix: &str) -> Result<&'a Rss<B>> {
        shared_param(self.params, self.name, suffix)
    }

    /// What the forward pass saved, or an error naming the node.
    pub fn saved<S: Any>(&self) -> Result<&'a S> {
        self.saved
            .and_then(|s| s.downcast_ref())
            .ok_or_else(|| NnError::Graph(format!("`{}` kept nothing to train with", self.name)))
    }

    /// `dx` reshaped to input `i`'s shape (local).
    pub fn reshape_to_input(&self, i: usize, dx: &Rss<B>) -> Result<Rss<B>> {
        let shape = &self.input_shapes[i];
        Ok(self.p.linear(dx, |b, t| b.reshape(t, shape))?)
    }

    /// The error of a backward pass through an output activation (Softmax, LogSoftmax):
    /// training starts from the logits before it.
    pub fn before_output_activation(&self, what: &str) -> NnError {
        NnError::Graph(format!(
            "`{}`: training starts from the logits before the {what}",
            self.name
        ))
    }

    /// Whether input `i`'s gradient is wanted: only where a trained parameter is at or
    /// before it (never the model's input; not a frozen encoder's output).
    pub fn wants(&self, i: usize) -> bool {
        self.inputs[i] != 0 && self.needs[self.inputs[i]]
    }

    /// Records the gradient of parameter `suffix`.
    pub fn grad(&mut self, suffix: &str, value: Rss<B>) {
        self.grads.insert(format!("{}.{suffix}", self.name), value);
    }
}

/// The shared parameter `"{node}.{suffix}"`, or a `MissingParameter` error.
pub(crate) fn shared_param<'a, B: GpuBackend>(
    params: &'a BTreeMap<String, Rss<B>>,
    node: &str,
    suffix: &str,
) -> Result<&'a Rss<B>> {
    let name = format!("{node}.{suffix}");
    params.get(&name).ok_or_else(|| NnError::MissingParameter {
        name,
        expected: Vec::new(),
        context: " among the shared parameters".into(),
    })
}
