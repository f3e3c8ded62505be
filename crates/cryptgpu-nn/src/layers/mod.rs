//! The layers: one file per kind, each holding everything about that kind behind the
//! [`Layer`] trait: its attributes (and how they travel in a job manifest), its parameters,
//! its shape rule, its plaintext forward and backward, its private forward and backward, and
//! its ONNX import and export. The executors ([`crate::plain`], [`crate::private`]) and the
//! ONNX reader only walk the graph and call these.
//!
//! # Adding a layer
//!
//! Write `layers/my_layer.rs` with a struct implementing [`Layer`] (and, if ONNX files
//! spell it, an `import` function), then add one line to the `layer_table!` below: the
//! variant, the struct, and the ONNX op types its `import` takes. [`Op`] gains the variant
//! and every executor, the manifest and the ONNX reader and writer pick it up.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::Transport;
use serde_json::{Map, Value as Json, json};

use crate::error::{NnError, Result};
use crate::model::{Model, Node, NodeId, ParamKind};
use crate::onnx::Importer;
use crate::onnx::proto::{NodeProto, Writer};
use crate::plain::Mode;
use crate::tensor::Tensor;

pub mod add;
pub mod add_const;
pub mod avg_pool;
pub mod batchnorm;
pub mod clip;
pub mod concat;
pub mod conv;
pub mod dropout;
pub mod flatten;
pub mod global_avg_pool;
pub mod global_max_pool;
pub mod input;
pub mod leaky_relu;
pub mod linear;
pub mod log_softmax;
pub mod matmul;
pub mod max_pool;
pub mod mul;
pub mod mul_const;
pub mod pad;
pub mod pool;
pub mod relu;
pub mod reshape;
pub mod sigmoid;
pub mod slice;
pub mod softmax;
pub mod tanh;
pub mod transpose;

/// Every layer struct, for `use cryptgpu_nn::layers::prelude::*`.
pub mod prelude {
    pub use super::add::Add;
    pub use super::add_const::AddConst;
    pub use super::avg_pool::AvgPool2d;
    pub use super::batchnorm::BatchNorm2d;
    pub use super::clip::Clip;
    pub use super::concat::Concat;
    pub use super::conv::Conv2d;
    pub use super::dropout::Dropout;
    pub use super::flatten::Flatten;
    pub use super::global_avg_pool::GlobalAvgPool;
    pub use super::global_max_pool::GlobalMaxPool;
    pub use super::input::Input;
    pub use super::leaky_relu::LeakyRelu;
    pub use super::linear::Linear;
    pub use super::log_softmax::LogSoftmax;
    pub use super::matmul::MatMul;
    pub use super::max_pool::MaxPool2d;
    pub use super::mul::Mul;
    pub use super::mul_const::MulConst;
    pub use super::pad::Pad;
    pub use super::pool::PoolWindow;
    pub use super::relu::Relu;
    pub use super::reshape::Reshape;
    pub use super::sigmoid::Sigmoid;
    pub use super::slice::Slice;
    pub use super::softmax::Softmax;
    pub use super::tanh::Tanh;
    pub use super::transpose::Transpose;
    pub use super::{Layer, Op};
}

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

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

/// How a parameter starts ([`Model::init_params`]).
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

/// A layer's attributes as they travel in a job manifest: a JSON object, read back with
/// checked getters (a peer's manifest is untrusted input).
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    map: Map<String, Json>,
    what: String,
}

impl Attrs {
    /// Attributes from a JSON object; `what` names the node in errors.
    pub fn from_json(map: Map<String, Json>, what: impl Into<String>) -> Self {
        Self {
            map,
            what: what.into(),
        }
    }

    /// The JSON object.
    pub fn into_json(self) -> Map<String, Json> {
        self.map
    }

    fn err(&self, message: impl fmt::Display) -> NnError {
        NnError::InvalidArgument(format!("{}: {message}", self.what))
    }

    /// Sets an attribute.
    pub fn set(&mut self, key: &str, value: impl Into<Json>) {
        self.map.insert(key.to_owned(), value.into());
    }

    /// Sets a pair of sizes.
    pub fn set_pair(&mut self, key: &str, value: [usize; 2]) {
        self.map.insert(key.to_owned(), json!(value));
    }

    /// A size (below 2^31).
    pub fn dim(&self, key: &str) -> Result<usize> {
        match self.map.get(key).and_then(Json::as_u64) {
            Some(v) if v < 1 << 31 => Ok(v as usize),
            _ => Err(self.err(format!("`{key}` must be an integer in [0, 2^31)"))),
        }
    }

    /// A size, or `default` when absent.
    pub fn dim_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.map.contains_key(key) {
            self.dim(key)
        } else {
            Ok(default)
        }
    }

    /// A list of sizes (at most 16).
    pub fn dims(&self, key: &str) -> Result<Vec<usize>> {
        let list = self
            .map
            .get(key)
            .and_then(Json::as_array)
            .ok_or_else(|| self.err(format!("`{key}` must be a list of sizes")))?;
        if list.len() > 16 {
            return Err(self.err(format!("`{key}` has more than 16 entries")));
        }
        list.iter()
            .map(|v| match v.as_u64() {
                Some(v) if v < 1 << 31 => Ok(v as usize),
                _ => Err(self.err(format!("`{key}` must hold integers in [0, 2^31)"))),
            })
            .collect()
    }

    /// A list of sizes, or `default` when absent.
    pub fn dims_or(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        if self.map.contains_key(key) {
            self.dims(key)
        } else {
            Ok(default.to_vec())
        }
    }

    /// A pair of sizes.
    pub fn pair(&self, key: &str) -> Result<[usize; 2]> {
        let v = self.dims(key)?;
        <[usize; 2]>::try_from(v).map_err(|_| self.err(format!("`{key}` must be two sizes")))
    }

    /// A pair of sizes, or `default` when absent.
    pub fn pair_or(&self, key: &str, default: [usize; 2]) -> Result<[usize; 2]> {
        if self.map.contains_key(key) {
            self.pair(key)
        } else {
            Ok(default)
        }
    }

    /// A pair of sizes, each at least 1.
    pub fn positive_pair(&self, key: &str) -> Result<[usize; 2]> {
        let v = self.pair(key)?;
        if v.contains(&0) {
            return Err(self.err(format!("`{key}` must be at least 1")));
        }
        Ok(v)
    }

    /// A finite number.
    pub fn number(&self, key: &str) -> Result<f64> {
        match self.map.get(key).and_then(Json::as_f64) {
            Some(v) if v.is_finite() => Ok(v),
            _ => Err(self.err(format!("`{key}` must be a finite number"))),
        }
    }

    /// A signed integer.
    pub fn int(&self, key: &str) -> Result<i64> {
        self.map
            .get(key)
            .and_then(Json::as_i64)
            .ok_or_else(|| self.err(format!("`{key}` must be an integer")))
    }

    /// A boolean.
    pub fn boolean(&self, key: &str) -> Result<bool> {
        self.map
            .get(key)
            .and_then(Json::as_bool)
            .ok_or_else(|| self.err(format!("`{key}` must be true or false")))
    }

    /// A boolean, or `default` when absent.
    pub fn boolean_or(&self, key: &str, default: bool) -> Result<bool> {
        if self.map.contains_key(key) {
            self.boolean(key)
        } else {
            Ok(default)
        }
    }
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
    pub model: &'a Model,
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
    /// The node.
    pub fn node(&self) -> &Node {
        &self.model.nodes()[self.id]
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
        let name = format!("{}.{suffix}", self.node().name);
        self.running_stats.insert(name, value);
    }

    /// A tensor of the output's shape.
    pub fn output(&self, data: Vec<f64>) -> Result<Tensor> {
        Tensor::new(self.out_shape, data)
    }
}

/// A node's context in the plaintext backward pass.
pub struct PlainBackCx<'a> {
    /// The model.
    pub model: &'a Model,
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
    /// The node.
    pub fn node(&self) -> &Node {
        &self.model.nodes()[self.id]
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
        let name = format!("{}.{suffix}", self.node().name);
        self.grads.insert(name, value);
    }

    /// A tensor of input `i`'s shape.
    pub fn like_input(&self, i: usize, data: Vec<f64>) -> Result<Tensor> {
        Tensor::new(self.inputs[i].shape(), data)
    }
}

/// How a model's parameters were shared: decides what BatchNorm holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// [`crate::private::SharedModel::share`]: layers hold their inference parameters
    /// ([`Layer::inference_params`]).
    Inference,
    /// [`crate::private::SharedModel::share_for_training`]: every parameter as it is.
    Training,
}

/// A node's context in the private forward pass.
pub struct PrivateCx<'a, B: GpuBackend, T: Transport> {
    /// The party.
    pub p: &'a mut Party<B, T>,
    /// The node.
    pub node: &'a Node,
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
        shared_param(self.params, self.node, suffix)
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

    /// Records a new value of the shared buffer `suffix` (running statistics).
    pub fn update_buffer(&mut self, suffix: &str, value: Rss<B>) {
        self.updates
            .insert(format!("{}.{suffix}", self.node.name), value);
    }
}

/// A node's context in the private backward pass.
pub struct PrivateBackCx<'a, B: GpuBackend, T: Transport> {
    /// The party.
    pub p: &'a mut Party<B, T>,
    /// The node.
    pub node: &'a Node,
    /// The shapes of the node's inputs.
    pub input_shapes: Vec<Vec<usize>>,
    /// The shape of the node's output.
    pub out_shape: Vec<usize>,
    pub(crate) params: &'a BTreeMap<String, Rss<B>>,
    pub(crate) saved: Option<&'a dyn Any>,
    pub(crate) grads: &'a mut BTreeMap<String, Rss<B>>,
}

impl<'a, B: GpuBackend, T: Transport> PrivateBackCx<'a, B, T> {
    /// The node's shared parameter `suffix`.
    pub fn param(&self, suffix: &str) -> Result<&'a Rss<B>> {
        shared_param(self.params, self.node, suffix)
    }

    /// What the forward pass saved, or an error naming the node.
    pub fn saved<S: Any>(&self) -> Result<&'a S> {
        self.saved.and_then(|s| s.downcast_ref()).ok_or_else(|| {
            NnError::Graph(format!("`{}` kept nothing to train with", self.node.name))
        })
    }

    /// Whether input `i`'s gradient is wanted: not for the model's input, which no
    /// parameter depends on.
    pub fn wants(&self, i: usize) -> bool {
        self.node.inputs[i] != 0
    }

    /// Records the gradient of parameter `suffix`.
    pub fn grad(&mut self, suffix: &str, value: Rss<B>) {
        self.grads
            .insert(format!("{}.{suffix}", self.node.name), value);
    }
}

fn shared_param<'a, B: GpuBackend>(
    params: &'a BTreeMap<String, Rss<B>>,
    node: &Node,
    suffix: &str,
) -> Result<&'a Rss<B>> {
    let name = format!("{}.{suffix}", node.name);
    params.get(&name).ok_or_else(|| NnError::MissingParameter {
        name,
        expected: Vec::new(),
        context: " among the shared parameters".into(),
    })
}

/// One ONNX node being written by [`Layer::onnx_export`].
pub struct OnnxNode<'a> {
    /// The model being exported (its parameters, for layers that write them differently).
    pub model: &'a Model,
    /// The shapes of the node's inputs at batch 1.
    pub input_shapes: Vec<Vec<usize>>,
    /// The node's name in the model.
    pub name: &'a str,
    /// The ONNX op type.
    pub op_type: &'static str,
    /// Input value names: the node's inputs first; add initializer names after.
    pub inputs: Vec<String>,
    /// Attributes.
    pub attrs: Vec<Writer>,
    /// Initializers this node adds besides the model's parameters (e.g. Clip's bounds).
    pub constants: Vec<(String, Tensor)>,
    /// A second node applied to this one's output: its op type and its other inputs (a
    /// bias `Add` after a `MatMul`).
    pub then: Option<(&'static str, Vec<String>)>,
    /// Parameters the node writes in another form (as a constant) instead of as they are.
    pub replaced: Vec<String>,
}

impl OnnxNode<'_> {
    /// Adds a parameter of the node as an input, by its `state_dict` name.
    pub fn param_input(&mut self, suffix: &str) {
        self.inputs.push(format!("{}.{suffix}", self.name));
    }

    /// Adds a constant input of the node.
    pub fn constant_input(&mut self, suffix: &str, value: Tensor) {
        let name = format!("{}.{suffix}", self.name);
        self.inputs.push(name.clone());
        self.constants.push((name, value));
    }

    /// An `ints` attribute.
    pub fn ints(&mut self, name: &str, values: &[i64]) {
        let mut a = Writer::new();
        a.string(1, name).int(20, 7);
        for &v in values {
            a.int(8, v);
        }
        self.attrs.push(a);
    }

    /// An `int` attribute.
    pub fn int(&mut self, name: &str, value: i64) {
        let mut a = Writer::new();
        a.string(1, name).int(3, value).int(20, 2);
        self.attrs.push(a);
    }

    /// A `float` attribute.
    pub fn float(&mut self, name: &str, value: f64) {
        let mut a = Writer::new();
        a.string(1, name).float(2, value as f32).int(20, 1);
        self.attrs.push(a);
    }
}

/// Everything about one kind of layer. See the [module docs](self) for how to add one.
pub trait Layer: Clone + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The kind's name, in messages and in the job manifest (e.g. `"Conv2d"`).
    const KIND: &'static str;

    /// How many inputs it takes.
    fn arity(&self) -> Arity {
        Arity::Exactly(1)
    }

    /// The parameters it owns, in PyTorch `state_dict` order.
    fn params(&self) -> Vec<ParamDecl> {
        Vec::new()
    }

    /// Whether it turns logits into probabilities (Softmax, LogSoftmax): allowed only as
    /// the model's output, and losses take its input.
    fn is_output_activation(&self) -> bool {
        false
    }

    /// The output shape (batch axis first) from the inputs' shapes, or why they do not fit.
    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String>;

    /// Writes the attributes into the manifest's node object.
    fn write_attrs(&self, attrs: &mut Attrs);

    /// Reads the attributes back (checked: they may come from a peer).
    fn read_attrs(attrs: &Attrs) -> Result<Self>;

    /// The plaintext forward pass (f64).
    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor>;

    /// The plaintext backward pass: the gradient of each input, from `dy`, the output's.
    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>>;

    /// The private forward pass on shares.
    fn private_forward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateCx<'_, B, T>,
        x: &[&Rss<B>],
    ) -> Result<Rss<B>>;

    /// The private backward pass: each input's gradient (`None` where
    /// [`PrivateBackCx::wants`] is false or it has none).
    fn private_backward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateBackCx<'_, B, T>,
        dy: Rss<B>,
    ) -> Result<Vec<Option<Rss<B>>>>;

    /// Fills in the ONNX node (op type, parameter inputs, attributes).
    fn onnx_export(&self, node: &mut OnnxNode<'_>) -> Result<()>;

    /// The parameters shared for inference in their place, when they differ from
    /// [`Layer::params`] (BatchNorm: a per-channel scale and shift): `(suffix, shape)`.
    fn inference_params(&self) -> Option<Vec<(&'static str, Vec<usize>)>> {
        None
    }

    /// The model owner's values of [`Layer::inference_params`], in the same order.
    fn inference_values(&self, model: &Model, id: NodeId) -> Result<Vec<Vec<f64>>> {
        let _ = (model, id);
        Err(NnError::Graph(format!(
            "{} has no inference parameters",
            Self::KIND
        )))
    }
}

/// One ONNX node importer: reads `node` and adds layers (or constants) to the graph.
pub(crate) type ImportFn = fn(&mut Importer, &NodeProto) -> Result<()>;

macro_rules! layer_table {
    ($($variant:ident => $module:ident :: $ty:ident [$($onnx:literal),*]),* $(,)?) => {
        /// What a node computes: one variant per layer kind, each holding that kind's
        /// attributes (see [`crate::layers`]).
        #[derive(Clone, Debug, PartialEq)]
        pub enum Op {
            $(
                #[doc = concat!("See [`", stringify!($module), "::", stringify!($ty), "`].")]
                $variant($module::$ty),
            )*
        }

        $(
            impl From<$module::$ty> for Op {
                fn from(layer: $module::$ty) -> Self {
                    Op::$variant(layer)
                }
            }
        )*

        /// Every layer kind's name, as in the manifest.
        pub const KINDS: &[&str] = &[$(<$module::$ty as Layer>::KIND),*];

        /// Every ONNX op type a layer imports (besides the shape ops folded at import).
        pub const ONNX_OPS: &[&str] = &[$($($onnx,)*)*];

        /// The importer of ONNX op `op_type`, if a layer takes it.
        pub(crate) fn onnx_importer(op_type: &str) -> Option<ImportFn> {
            $(
                if [$($onnx),*].contains(&op_type) {
                    return Some($module::import as ImportFn);
                }
            )*
            None
        }

        impl Op {
            /// The kind's name (e.g. `Conv2d`).
            pub fn kind(&self) -> &'static str {
                match self { $(Op::$variant(_) => <$module::$ty as Layer>::KIND,)* }
            }

            /// How many inputs it takes.
            pub fn arity(&self) -> Arity {
                match self { $(Op::$variant(l) => l.arity(),)* }
            }

            /// Its parameters.
            pub fn params(&self) -> Vec<ParamDecl> {
                match self { $(Op::$variant(l) => l.params(),)* }
            }

            /// Whether it is Softmax or LogSoftmax.
            pub fn is_output_activation(&self) -> bool {
                match self { $(Op::$variant(l) => l.is_output_activation(),)* }
            }

            /// Its output shape, or why its inputs do not fit.
            pub fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
                match self { $(Op::$variant(l) => l.output_shape(inputs),)* }
            }

            /// Its attributes as a manifest object (with `op`).
            pub fn to_attrs(&self) -> Attrs {
                let mut attrs = Attrs::default();
                attrs.set("op", self.kind());
                match self { $(Op::$variant(l) => l.write_attrs(&mut attrs),)* }
                attrs
            }

            /// An op from its kind and attributes, checked.
            pub fn from_attrs(kind: &str, attrs: &Attrs) -> Result<Self> {
                match kind {
                    $(<$module::$ty as Layer>::KIND => Ok(Op::$variant($module::$ty::read_attrs(attrs)?)),)*
                    other => Err(attrs.err(format!(
                        "unknown op {other:?}; known: {}", KINDS.join(", ")
                    ))),
                }
            }

            pub(crate) fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
                match self { $(Op::$variant(l) => l.plain_forward(cx, x),)* }
            }

            pub(crate) fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
                match self { $(Op::$variant(l) => l.plain_backward(cx, dy),)* }
            }

            pub(crate) fn private_forward<B: GpuBackend, T: Transport>(
                &self,
                cx: &mut PrivateCx<'_, B, T>,
                x: &[&Rss<B>],
            ) -> Result<Rss<B>> {
                match self { $(Op::$variant(l) => l.private_forward(cx, x),)* }
            }

            pub(crate) fn private_backward<B: GpuBackend, T: Transport>(
                &self,
                cx: &mut PrivateBackCx<'_, B, T>,
                dy: Rss<B>,
            ) -> Result<Vec<Option<Rss<B>>>> {
                match self { $(Op::$variant(l) => l.private_backward(cx, dy),)* }
            }

            pub(crate) fn onnx_export(&self, node: &mut OnnxNode<'_>) -> Result<()> {
                match self { $(Op::$variant(l) => l.onnx_export(node),)* }
            }

            /// See [`Layer::inference_params`].
            pub fn inference_params(&self) -> Option<Vec<(&'static str, Vec<usize>)>> {
                match self { $(Op::$variant(l) => l.inference_params(),)* }
            }

            /// See [`Layer::inference_values`].
            pub fn inference_values(&self, model: &Model, id: NodeId) -> Result<Vec<Vec<f64>>> {
                match self { $(Op::$variant(l) => l.inference_values(model, id),)* }
            }
        }
    };
}

layer_table! {
    Input => input::Input [],
    Conv2d => conv::Conv2d ["Conv"],
    Linear => linear::Linear ["Gemm", "MatMul"],
    Relu => relu::Relu ["Relu"],
    Clip => clip::Clip ["Clip"],
    LeakyRelu => leaky_relu::LeakyRelu ["LeakyRelu"],
    Sigmoid => sigmoid::Sigmoid ["Sigmoid"],
    Tanh => tanh::Tanh ["Tanh"],
    MaxPool2d => max_pool::MaxPool2d ["MaxPool"],
    AvgPool2d => avg_pool::AvgPool2d ["AveragePool"],
    GlobalAvgPool => global_avg_pool::GlobalAvgPool ["GlobalAveragePool", "ReduceMean"],
    GlobalMaxPool => global_max_pool::GlobalMaxPool ["GlobalMaxPool"],
    Flatten => flatten::Flatten ["Flatten"],
    Reshape => reshape::Reshape ["Reshape", "Squeeze", "Unsqueeze"],
    Transpose => transpose::Transpose ["Transpose"],
    Concat => concat::Concat ["Concat"],
    Slice => slice::Slice ["Slice", "Split"],
    Pad => pad::Pad ["Pad"],
    Add => add::Add ["Add", "Sub"],
    AddConst => add_const::AddConst [],
    MatMul => matmul::MatMul [],
    Mul => mul::Mul ["Mul", "Div"],
    MulConst => mul_const::MulConst [],
    BatchNorm2d => batchnorm::BatchNorm2d ["BatchNormalization"],
    Dropout => dropout::Dropout ["Dropout", "Identity"],
    Softmax => softmax::Softmax ["Softmax"],
    LogSoftmax => log_softmax::LogSoftmax ["LogSoftmax"],
}

// ---- helpers the layers share --------------------------------------------------------------

/// `[N, C, H, W]` or an error message.
pub(crate) fn nchw(shape: &[usize]) -> std::result::Result<[usize; 4], String> {
    <[usize; 4]>::try_from(shape).map_err(|_| format!("needs an [N, C, H, W] input, got {shape:?}"))
}

/// NumPy broadcasting of two shapes, or `None` when they do not broadcast.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// `shape` with ones prepended to `rank` axes.
pub(crate) fn left_pad(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut out = vec![1; rank.saturating_sub(shape.len())];
    out.extend_from_slice(shape);
    out
}

/// The number of elements of `dims`, `None` when it overflows `usize`.
pub(crate) fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// The transpose of each `rows × cols` row-major matrix in `data` (one or a batch of them).
pub(crate) fn transpose_matrices(data: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; data.len()];
    for (src, dst) in data.chunks(rows * cols).zip(out.chunks_mut(rows * cols)) {
        for i in 0..rows {
            for j in 0..cols {
                dst[j * rows + i] = src[i * cols + j];
            }
        }
    }
    out
}

/// Row-major strides.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `t` broadcast (NumPy rules) to `shape`.
pub(crate) fn plain_broadcast(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if t.shape() == shape {
        return Ok(t.clone());
    }
    let src = left_pad(t.shape(), shape.len());
    let src_strides = strides(&src);
    let out_strides = strides(shape);
    let len: usize = shape.iter().product();
    let data = (0..len)
        .map(|flat| {
            let mut offset = 0;
            for axis in 0..shape.len() {
                let i = flat / out_strides[axis] % shape[axis];
                if src[axis] != 1 {
                    offset += i * src_strides[axis];
                }
            }
            t.data()[offset]
        })
        .collect();
    Tensor::new(shape, data)
}

/// The sum of `t` over the axes along which `shape` was broadcast to `t`'s shape: the
/// gradient of a broadcast.
pub(crate) fn plain_reduce_to(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if t.shape() == shape {
        return Ok(t.clone());
    }
    let full = t.shape();
    let padded = left_pad(shape, full.len());
    let dst_strides = strides(&padded);
    let src_strides = strides(full);
    let mut out = vec![0.0; padded.iter().product()];
    for (flat, v) in t.data().iter().enumerate() {
        let mut offset = 0;
        for axis in 0..full.len() {
            let i = flat / src_strides[axis] % full[axis];
            if padded[axis] != 1 {
                offset += i * dst_strides[axis];
            }
        }
        out[offset] += v;
    }
    Tensor::new(shape, out)
}

/// A sharing broadcast (NumPy rules) to `shape` (local).
pub(crate) fn private_broadcast<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    x: &Rss<B>,
    shape: &[usize],
) -> Result<Rss<B>> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let padded = left_pad(x.shape(), shape.len());
    Ok(p.linear(x, |b, t| b.broadcast_to(&b.reshape(t, &padded)?, shape))?)
}

/// The sum of a sharing over the axes along which `shape` was broadcast to it (local).
pub(crate) fn private_reduce_to<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    x: &Rss<B>,
    shape: &[usize],
) -> Result<Rss<B>> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    let full = x.shape().to_vec();
    let padded = left_pad(shape, full.len());
    Ok(p.linear(x, |b, t| {
        use cryptgpu_backend::DeviceTensor;
        let mut t = t.clone();
        for axis in (0..full.len()).rev() {
            if padded[axis] == 1 && full[axis] != 1 {
                t = b.sum_axis(&t, axis)?;
                let mut kept = t.shape().to_vec();
                kept.insert(axis, 1);
                t = b.reshape(&t, &kept)?;
            }
        }
        b.reshape(&t, shape)
    })?)
}

/// `f` of every element.
pub(crate) fn elementwise(x: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    x.iter().map(|&v| f(v)).collect()
}
