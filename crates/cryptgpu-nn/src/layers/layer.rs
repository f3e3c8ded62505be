//! The [`Layer`] trait, everything about one kind of layer, with what it declares
//! ([`Arity`], [`ParamDecl`]) and the typed ways its ONNX `import` adds layers to the graph.

use std::any::Any;

use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::Transport;

use super::attrs::Attributes;
use super::context::{ModelView, NodeId, PlainBackCx, PlainCx, PrivateBackCx, PrivateCx};
use crate::error::{NnError, Result};
use crate::onnx::node::{ImportGraph, OnnxNode, bad};
use crate::onnx::proto::NodeProto;
use crate::tensor::Tensor;

/// How many inputs a layer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// This many or more (`Concat`).
    AtLeast(usize),
}

impl Arity {
    /// Whether `n` inputs fit.
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl std::fmt::Display for Arity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

/// How a parameter starts ([`crate::Model::init_params`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform in ±1/√fan_in (PyTorch's default for convolution and linear layers).
    Uniform {
        /// The fan-in.
        fan_in: usize,
    },
    /// Every value the same.
    Constant(f64),
}

/// One parameter a layer owns: `"{node}.{suffix}"` in the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamDecl {
    /// The name after the node's, e.g. `weight`.
    pub suffix: &'static str,
    /// Its shape (PyTorch's layout).
    pub shape: Vec<usize>,
    /// Trained by SGD or not.
    pub kind: ParamKind,
    /// Its initial value.
    pub init: Init,
}

impl ParamDecl {
    /// A trainable parameter.
    pub fn trainable(suffix: &'static str, shape: Vec<usize>, init: Init) -> Self {
        Self {
            suffix,
            shape,
            kind: ParamKind::Trainable,
            init,
        }
    }

    /// A trainable `weight` of `shape` and, with `bias`, a trainable `bias` of `[out]`, both
    /// uniform in ±1/√fan_in (convolution, linear).
    pub fn weight_and_bias(shape: Vec<usize>, bias: bool, fan_in: usize) -> Vec<Self> {
        let out = shape[0];
        let init = Init::Uniform { fan_in };
        let mut specs = vec![Self::trainable("weight", shape, init)];
        if bias {
            specs.push(Self::trainable("bias", vec![out], init));
        }
        specs
    }

    /// A constant of the graph, `constant` of `shape` (not trained), starting at `value`.
    pub fn constant(shape: &[usize], value: f64) -> Self {
        Self::buffer("constant", shape.to_vec(), Init::Constant(value))
    }

    /// A parameter SGD leaves alone (running statistics, constants of the graph).
    pub fn buffer(suffix: &'static str, shape: Vec<usize>, init: Init) -> Self {
        Self {
            suffix,
            shape,
            kind: ParamKind::Buffer,
            init,
        }
    }
}

/// Whether SGD trains a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// Learned by gradient descent (weights, biases, BatchNorm scale and shift).
    Trainable,
    /// State updated by the forward pass in training (BatchNorm running statistics).
    Buffer,
    /// A parameter the layer could learn, held fixed in this model's training
    /// ([`crate::Model::train_only`]: fine-tuning a head on a frozen encoder).
    Frozen,
}

/// Everything about one kind of layer. See the [module docs](crate::layers) for how to add
/// one. The provided methods are what most layers do: one input, no parameters, the
/// output shaped like the input, the ONNX op type the layer table lists first and no
/// attributes; a layer overrides the ones it does otherwise.
pub trait Layer: Attributes + Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The kind's name, in messages and in the job manifest (e.g. `"Conv2d"`).
    const KIND: &'static str;

    /// Whether its ONNX ops may have outputs past the first (Dropout's mask, Split's
    /// parts); the importer refuses them for other layers.
    const ONNX_EXTRA_OUTPUTS: bool = false;

    /// How many inputs it takes.
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }

    /// The parameters it owns, in PyTorch `state_dict` order.
    fn params(&self) -> Vec<ParamDecl> {
        Vec::new()
    }

    /// Whether it turns logits into probabilities (Softmax, LogSoftmax): as the model's
    /// output, predictions and losses take its input, and the private executor skips it.
    fn is_output_activation(&self) -> bool {
        false
    }

    /// Whether it is allowed only as the model's output (LogSoftmax, which has no private
    /// pass elsewhere).
    fn only_as_output(&self) -> bool {
        false
    }

    /// The output shape (batch axis first) from the inputs' shapes, or why they do not fit.
    /// By default the shape of input 0 (an elementwise layer).
    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        Ok(inputs[0].to_vec())
    }

    /// The plaintext forward pass (f64).
    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor>;

    /// The plaintext backward pass: the gradient of each input, from `dy`, the output's.
    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>>;

    /// Fills in the ONNX node: `node.op_type` comes set to the first ONNX op type the layer
    /// table lists for the kind; a layer adds its parameter inputs and attributes, or sets
    /// another op type. By default nothing more.
    fn onnx_export(&self, node: &mut OnnxNode<'_>) -> Result<()> {
        let _ = node;
        Ok(())
    }

    /// The parameters shared for inference in their place, when they differ from
    /// [`Layer::params`] (BatchNorm: a per-channel scale and shift): `(suffix, shape)`.
    fn inference_params(&self) -> Option<Vec<(&'static str, Vec<usize>)>> {
        None
    }

    /// The model owner's values of [`Layer::inference_params`], in the same order.
    fn inference_values(&self, model: &dyn ModelView, id: NodeId) -> Result<Vec<Vec<f64>>> {
        let _ = (model, id);
        Err(NnError::Graph(format!(
            "{} has no inference parameters",
            Self::KIND
        )))
    }

    /// Whether it commutes with taking a maximum, exactly: f(max S) = max f(S) for every
    /// set S of values, and f(0) = 0 (ReLU, being monotone with relu(0) = 0). The private
    /// executor then runs it after a consumer that [`Layer::takes_maxima`], on that
    /// consumer's smaller output, when nothing else consumes it.
    fn commutes_with_max(&self) -> bool {
        false
    }

    /// Whether its output is a maximum over windows of its input, zero padding included
    /// (MaxPool2d), so that an input layer that [`Layer::commutes_with_max`] may run after
    /// it instead of before.
    fn takes_maxima(&self) -> bool {
        false
    }

    /// In training, after the private executor ran `moved` (a layer that
    /// [`Layer::commutes_with_max`], whose forward pass kept `moved_saved`) on this layer's
    /// output instead of on its input: folds `moved_saved` into this layer's own saved
    /// state, so that this layer's backward pass is the pair's and the moved layer's is the
    /// identity. Only layers that [`Layer::takes_maxima`] are asked.
    fn absorb_moved<B: GpuBackend, T: Transport>(
        &self,
        p: &mut Party<B, T>,
        saved: &mut Option<Box<dyn Any>>,
        moved_saved: Option<Box<dyn Any>>,
    ) -> Result<()> {
        let _ = (p, saved, moved_saved);
        Err(NnError::Graph(format!(
            "{} cannot take over a layer run after it",
            Self::KIND
        )))
    }
}

/// What a layer's private backward pass returns: each input's gradient (`None` where
/// [`PrivateBackCx::wants`] is false or it has none).
pub type Grads<B> = Result<Vec<Option<Rss<B>>>>;

/// A layer's passes on shares, for every backend and transport: written once, generic, in
/// the layer's file beside its [`Layer`] impl.
pub trait PrivateLayer<B: GpuBackend, T: Transport> {
    /// The private forward pass on shares.
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>>;

    /// The private backward pass: each input's gradient from `dy`, the output's.
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B>;
}

/// The typed ways a layer's ONNX `import` adds layers to the graph.
impl dyn ImportGraph + '_ {
    /// Adds `layer` on `inputs` for ONNX node `node` (its first output names the value).
    pub fn push<L: Layer>(
        &mut self,
        node: &NodeProto,
        name: String,
        layer: L,
        inputs: &[NodeId],
    ) -> Result<NodeId> {
        let id = self
            .add_layer(name, false, &layer, inputs)
            .map_err(|e| bad(node, e))?;
        self.alias(node, id);
        Ok(id)
    }

    /// Adds a helper node that no ONNX value names (its name is made unique).
    pub fn push_internal<L: Layer>(
        &mut self,
        name: String,
        layer: L,
        inputs: &[NodeId],
    ) -> Result<NodeId> {
        self.add_layer(name, true, &layer, inputs)
    }

    /// A one-input layer on input 0 of `node`, named after the node.
    pub fn unary<L: Layer>(&mut self, node: &NodeProto, layer: L) -> Result<()> {
        let x = self.input_node(node, 0)?;
        let name = self.node_name(node, None);
        self.push(node, name, layer, &[x])?;
        Ok(())
    }
}
