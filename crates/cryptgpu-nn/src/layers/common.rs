//! What a layer file uses, in one import (`use super::common::*`): the [`Layer`] trait and
//! its contexts, attributes, the ONNX node view, the shared shape and tensor helpers, and
//! the protocol types. It re-exports only modules that import no layer.

pub(crate) use cryptgpu_backend::GpuBackend;
pub(crate) use cryptgpu_share::{Party, Rss};
pub(crate) use cryptgpu_transport::Transport;

pub(crate) use super::attrs::{Attributes, Attrs, NoAttributes};
pub(crate) use super::context::{
    Mode, ModelView, NodeId, PlainBackCx, PlainCx, PrivateBackCx, PrivateCx, Sharing,
};
pub(crate) use super::layer::{Arity, Grads, Init, Layer, ParamDecl, PrivateLayer};
pub(crate) use super::shape::{
    broadcast_inputs, broadcast_shapes, constant_fits, element_count, global_pool_shape, nchw,
    rows_shape, strides,
};
pub(crate) use super::tensor_ops::{
    plain_broadcast, plain_reduce_to, private_broadcast, private_reduce_to, transpose_matrices,
};
pub(crate) use crate::error::{NnError, Result};
pub(crate) use crate::onnx::node::{
    ImportGraph, OnnxNode, PROBE_BATCH, Value, attr_float, attr_int, attr_ints, attr_pair, bad,
    pads4, symmetric_pads,
};
pub(crate) use crate::onnx::proto::NodeProto;
pub(crate) use crate::tensor::Tensor;

/// Inside `impl Layer`: the plaintext passes of a layer that only gives its one input the
/// output's shape (the values, in order, unchanged; the gradient reshaped back).
macro_rules! relayout_plain_passes {
    () => {
        fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
            cx.map(x[0], |v| v)
        }

        fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
            cx.elementwise_grad(dy, dy, |_, g| g)
        }
    };
}
pub(crate) use relayout_plain_passes;

/// The private passes of such a layer: local reshapes of the shares, no message.
macro_rules! relayout_private_passes {
    ($layer:ty) => {
        impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for $layer {
            fn private_forward(
                &self,
                cx: &mut PrivateCx<'_, B, T>,
                x: &[&Rss<B>],
            ) -> Result<Rss<B>> {
                cx.reshape_to_output(x[0])
            }

            fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
                Ok(vec![Some(cx.reshape_to_input(0, &dy)?)])
            }
        }
    };
}
pub(crate) use relayout_private_passes;
