//! The layer table: [`Op`], one variant per layer kind, with [`KINDS`], [`ONNX_OPS`] and
//! the dispatch from `Op` to each kind's [`Layer`] methods, which is the only way the
//! executors, the manifest and the ONNX reader and writer reach a layer.

use std::any::Any;

use cryptgpu_backend::GpuBackend;
use cryptgpu_share::{Party, Rss};
use cryptgpu_transport::Transport;

use super::attrs::{Attributes, Attrs};
use super::context::{ModelView, NodeId, PlainBackCx, PlainCx, PrivateBackCx, PrivateCx};
use super::layer::{Arity, Layer, ParamDecl, PrivateLayer};
use super::{
    add, add_const, avg_pool, batch_reshape, batchnorm, causal_mask, clip, concat, constant, conv,
    dropout, embedding, erf, flatten, gelu, global_avg_pool, global_max_pool, input, inv_sqrt,
    layer_norm, leaky_relu, linear, log_softmax, matmul, max_pool, mean, mul, mul_const, pad, pow,
    relu, reshape, sigmoid, slice, softmax, sqrt, tanh, transpose,
};
use crate::error::{NnError, Result};
use crate::onnx::node::{ImportGraph, OnnxNode};
use crate::onnx::proto::NodeProto;
use crate::tensor::Tensor;

/// One ONNX node importer: reads `node` and adds layers (or constants) to the graph.
pub(crate) type ImportFn = fn(&mut dyn ImportGraph, &NodeProto) -> Result<()>;

macro_rules! layer_table {
    ($($variant:ident => $module:ident :: $ty:ident $([$($onnx:literal),+])?),* $(,)?) => {
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
        pub const ONNX_OPS: &[&str] = &[$($($($onnx,)+)?)*];

        /// The importer of ONNX op `op_type`, if a layer takes it, and whether that layer
        /// takes ONNX nodes with more than one output ([`Layer::ONNX_EXTRA_OUTPUTS`]).
        pub(crate) fn onnx_importer(op_type: &str) -> Option<(ImportFn, bool)> {
            $($(
                if [$($onnx),+].contains(&op_type) {
                    return Some((
                        $module::import as ImportFn,
                        <$module::$ty as Layer>::ONNX_EXTRA_OUTPUTS,
                    ));
                }
            )?)*
            None
        }

        impl Op {
            /// The kind's name (e.g. `Conv2d`).
            pub fn kind(&self) -> &'static str {
                match self { $(Op::$variant(_) => <$module::$ty as Layer>::KIND,)* }
            }

            /// The op of a layer struct given as `Any` (the importer's way in), if it is one.
            pub(crate) fn from_any(layer: &dyn Any) -> Option<Self> {
                $(
                    if let Some(l) = layer.downcast_ref::<$module::$ty>() {
                        return Some(Op::$variant(l.clone()));
                    }
                )*
                None
            }

            /// The layer struct, as `Any`.
            pub(crate) fn as_any_mut(&mut self) -> &mut dyn Any {
                match self { $(Op::$variant(l) => l,)* }
            }

            /// The ONNX op type a layer of this kind is written as unless it says otherwise
            /// (the first its table entry lists; none for kinds without one).
            fn onnx_op_type(&self) -> &'static str {
                match self { $(Op::$variant(_) => [$($($onnx,)+)? ""][0],)* }
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

            /// See [`Layer::only_as_output`].
            pub fn only_as_output(&self) -> bool {
                match self { $(Op::$variant(l) => l.only_as_output(),)* }
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

            /// Fills in `node` (see [`Layer::onnx_export`]); an error for a kind ONNX
            /// cannot write.
            pub(crate) fn onnx_export(&self, node: &mut OnnxNode<'_>) -> Result<()> {
                node.op_type = self.onnx_op_type();
                match self { $(Op::$variant(l) => l.onnx_export(node)?,)* }
                if node.op_type.is_empty() {
                    return Err(NnError::Graph(format!(
                        "{} `{}` has no ONNX form",
                        self.kind(),
                        node.name
                    )));
                }
                Ok(())
            }

            /// See [`Layer::inference_params`].
            pub fn inference_params(&self) -> Option<Vec<(&'static str, Vec<usize>)>> {
                match self { $(Op::$variant(l) => l.inference_params(),)* }
            }

            /// See [`Layer::inference_values`].
            pub fn inference_values(&self, model: &dyn ModelView, id: NodeId) -> Result<Vec<Vec<f64>>> {
                match self { $(Op::$variant(l) => l.inference_values(model, id),)* }
            }

            /// See [`Layer::commutes_with_max`].
            pub fn commutes_with_max(&self) -> bool {
                match self { $(Op::$variant(l) => l.commutes_with_max(),)* }
            }

            /// See [`Layer::takes_maxima`].
            pub fn takes_maxima(&self) -> bool {
                match self { $(Op::$variant(l) => l.takes_maxima(),)* }
            }

            /// See [`Layer::absorb_moved`].
            pub(crate) fn absorb_moved<B: GpuBackend, T: Transport>(
                &self,
                p: &mut Party<B, T>,
                saved: &mut Option<Box<dyn Any>>,
                moved_saved: Option<Box<dyn Any>>,
            ) -> Result<()> {
                match self { $(Op::$variant(l) => l.absorb_moved(p, saved, moved_saved),)* }
            }
        }
    };
}

layer_table! {
    Input => input::Input,
    Conv2d => conv::Conv2d ["Conv"],
    Linear => linear::Linear ["Gemm", "MatMul"],
    Relu => relu::Relu ["Relu"],
    Clip => clip::Clip ["Clip", "HardSigmoid", "HardSwish"],
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
    Slice => slice::Slice ["Slice", "Split", "Gather"],
    Pad => pad::Pad ["Pad"],
    Add => add::Add ["Add", "Sub"],
    AddConst => add_const::AddConst,
    MatMul => matmul::MatMul,
    Mul => mul::Mul ["Mul", "Div"],
    MulConst => mul_const::MulConst ["Where"],
    BatchNorm2d => batchnorm::BatchNorm2d ["BatchNormalization"],
    Dropout => dropout::Dropout ["Dropout", "Identity"],
    Softmax => softmax::Softmax ["Softmax", "LogSoftmax"],
    LogSoftmax => log_softmax::LogSoftmax,
    LayerNorm => layer_norm::LayerNorm ["LayerNormalization", "InstanceNormalization"],
    Erf => erf::Erf ["Erf"],
    Gelu => gelu::Gelu ["Gelu"],
    Pow => pow::Pow ["Pow"],
    Sqrt => sqrt::Sqrt ["Sqrt"],
    InvSqrt => inv_sqrt::InvSqrt ["Reciprocal"],
    Mean => mean::Mean,
    Constant => constant::Constant,
    Embedding => embedding::Embedding,
    CausalMask => causal_mask::CausalMask,
    BatchReshape => batch_reshape::BatchReshape,
}
