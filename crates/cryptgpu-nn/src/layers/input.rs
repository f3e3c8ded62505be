//! `Input`: the model's input `[N, ..input_shape]`; always node 0 and only there. The
//! executors give it its value; it has no forward pass of its own.
//!
//! Its values are real numbers (images), or token ids of a vocabulary (a language model's
//! `input_ids`, read only by [`super::embedding::Embedding`] lookups). The plaintext
//! executor takes ids as they are; privately, the data owner shares each id as its one-hot
//! row of ring integers 0 and 1 (`[N, ..input_shape, vocabulary]`), so that a lookup is one
//! product with no truncation (see [`crate::private::share_model_input`]).

use super::common::*;

/// The model's input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// `Some(V)` when the values are token ids in `0..V`.
    pub vocabulary: Option<usize>,
}

impl Attributes for Input {
    fn write_attrs(&self, a: &mut Attrs) {
        if let Some(v) = self.vocabulary {
            a.set("vocabulary", v);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let vocabulary = match a.has("vocabulary") {
            false => None,
            true => match a.dim("vocabulary")? {
                0 => return Err(a.err("`vocabulary` must be positive")),
                v => Some(v),
            },
        };
        Ok(Self { vocabulary })
    }
}

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
