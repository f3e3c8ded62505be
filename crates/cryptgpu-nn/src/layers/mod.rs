//! The layers: one file per kind, each holding everything about that kind behind the
//! [`Layer`] trait: its attributes (and how they travel in a job manifest), its parameters,
//! its shape rule, its plaintext forward and backward, its private forward and backward, and
//! its ONNX import and export. The executors ([`crate::plain`], [`crate::private`]) and the
//! ONNX reader only walk the graph and call these.
//!
//! # Layout
//!
//! - `layer.rs`: the [`Layer`] trait (with default methods for what most layers do: one
//!   input, no parameters, the input's shape, the table's ONNX op type), [`Arity`],
//!   [`ParamDecl`], and the typed `push`/`unary` an ONNX `import` adds layers with;
//! - `context.rs`: what a node sees while it runs ([`PlainCx`], [`PlainBackCx`],
//!   [`PrivateCx`], [`PrivateBackCx`], [`ModelView`]);
//! - `attrs.rs`: [`Attrs`], the manifest form of a layer's attributes, and
//!   [`Attributes`] / [`NoAttributes`], how a kind writes and reads its own;
//! - `table.rs`: `layer_table!`, which makes [`Op`], [`KINDS`], [`ONNX_OPS`] and the
//!   dispatch from `Op` to the layers;
//! - `shape.rs`, `tensor_ops.rs`: shape arithmetic and tensor helpers the layers share;
//! - `common.rs`: the one import a layer file starts with;
//! - one file per layer kind.
//!
//! A layer file imports `common.rs` (and at most a sibling layer it builds on), never the
//! table, the executors or the ONNX importer: its ONNX code sees only
//! [`crate::onnx::node`]'s view of a node and of the graph being imported.
//!
//! # Adding a layer
//!
//! Write `layers/my_layer.rs` with a struct implementing [`Layer`] and [`Attributes`]
//! (or [`NoAttributes`] if it has none), and, if ONNX files spell it, an `import`
//! function; then add one line to the `layer_table!` in `table.rs`: the variant, the
//! struct, and the ONNX op types its `import` takes. [`Op`] gains the variant and every
//! executor, the manifest and the ONNX reader and writer pick it up.

mod attrs;
mod common;
pub(crate) mod context;
mod layer;
pub(crate) mod shape;
mod table;
pub(crate) mod tensor_ops;

pub mod add;
pub mod add_const;
pub mod avg_pool;
pub mod batch_reshape;
pub mod batchnorm;
pub mod causal_mask;
pub mod clip;
pub mod concat;
pub mod constant;
pub mod conv;
pub mod dropout;
pub mod embedding;
pub mod erf;
pub mod flatten;
pub mod gelu;
pub mod global_avg_pool;
pub mod global_max_pool;
pub mod input;
pub mod inv_sqrt;
pub mod layer_norm;
pub mod leaky_relu;
pub mod linear;
pub mod log_softmax;
pub mod matmul;
pub mod max_pool;
pub mod mean;
pub mod mul;
pub mod mul_const;
pub mod pad;
pub mod pool;
pub mod pow;
pub mod relu;
pub mod reshape;
pub mod sigmoid;
pub mod slice;
pub mod softmax;
pub mod sqrt;
pub mod tanh;
pub mod transpose;

/// Every layer struct, for `use cryptgpu_nn::layers::prelude::*`.
pub mod prelude {
    pub use super::add::Add;
    pub use super::add_const::AddConst;
    pub use super::avg_pool::AvgPool2d;
    pub use super::batch_reshape::BatchReshape;
    pub use super::batchnorm::BatchNorm2d;
    pub use super::causal_mask::CausalMask;
    pub use super::clip::Clip;
    pub use super::concat::Concat;
    pub use super::constant::Constant;
    pub use super::conv::Conv2d;
    pub use super::dropout::Dropout;
    pub use super::embedding::Embedding;
    pub use super::erf::Erf;
    pub use super::flatten::Flatten;
    pub use super::gelu::Gelu;
    pub use super::global_avg_pool::GlobalAvgPool;
    pub use super::global_max_pool::GlobalMaxPool;
    pub use super::input::Input;
    pub use super::inv_sqrt::InvSqrt;
    pub use super::layer_norm::LayerNorm;
    pub use super::leaky_relu::LeakyRelu;
    pub use super::linear::Linear;
    pub use super::log_softmax::LogSoftmax;
    pub use super::matmul::MatMul;
    pub use super::max_pool::MaxPool2d;
    pub use super::mean::Mean;
    pub use super::mul::Mul;
    pub use super::mul_const::MulConst;
    pub use super::pad::Pad;
    pub use super::pool::PoolWindow;
    pub use super::pow::Pow;
    pub use super::relu::Relu;
    pub use super::reshape::Reshape;
    pub use super::sigmoid::Sigmoid;
    pub use super::slice::Slice;
    pub use super::softmax::Softmax;
    pub use super::sqrt::Sqrt;
    pub use super::tanh::Tanh;
    pub use super::transpose::Transpose;
    pub use super::{Layer, Op, PrivateLayer};
}

pub use attrs::{Attributes, Attrs, NoAttributes};
pub use context::{
    Mode, ModelView, NodeId, PlainBackCx, PlainCx, PlainSaved, PrivateBackCx, PrivateCx, Sharing,
};
pub use layer::{Arity, Grads, Init, Layer, ParamDecl, ParamKind, PrivateLayer};
pub(crate) use table::onnx_importer;
pub use table::{KINDS, ONNX_OPS, Op};

pub use crate::onnx::node::OnnxNode;
