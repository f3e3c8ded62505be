//! `Input`: the model's input `[N, ..input_shape]`; always node 0 and only there. The
//! executors give it its value; it has no forward pass of its own.

use super::common::*;

/// The model's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Input;

impl NoAttributes for Input {}

impl Layer for Input {
    const KIND: &'static str = "Input";

    fn arity(&self) -> Arity {
        Arity::Exactly(0)
    }

    fn output_shape(&self, _: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        Err("the input's shape comes from the model".into())
    }

    fn plain_forward(&self, _: &mut PlainCx<'_>, _: &[&Tensor]) -> Result<Tensor> {
        Err(NnError::Graph("the Input node is given its value".into()))
    }

    fn plain_backward(&self, _: &mut PlainBackCx<'_>, _: &Tensor) -> Result<Vec<Tensor>> {
        Ok(Vec::new())
    }

    fn onnx_export(&self, _: &mut OnnxNode<'_>) -> Result<()> {
        Err(NnError::Graph("the Input node is the graph input".into()))
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Input {
    fn private_forward(&self, _: &mut PrivateCx<'_, B, T>, _: &[&Rss<B>]) -> Result<Rss<B>> {
        Err(NnError::Graph("the Input node is given its value".into()))
    }

    fn private_backward(&self, _: &mut PrivateBackCx<'_, B, T>, _: Rss<B>) -> Grads<B> {
        Ok(Vec::new())
    }
}
