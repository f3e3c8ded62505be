//! `Constant`: a constant of the graph as a computed value, the same for every example of
//! the batch (a ViT's class token, `cls.expand(N, -1, -1)` before the `cat` with the
//! patches). It takes the model's input only for the batch size. The constant is the model
//! owner's, shared like the weights (`{node}.constant`, not trained); no message. Made by
//! the importer from an ONNX `Expand` of a constant to the batch.

use super::common::*;

/// `[N, ..shape]`: the parameter `constant` of `shape` for each of the N examples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constant {
    /// The shape of one example's constant.
    pub shape: Vec<usize>,
}

impl Attributes for Constant {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("shape", self.shape.clone());
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            shape: a.dims("shape")?,
        })
    }
}

impl Constant {
    /// `[n, ..shape]`.
    fn batched(&self, n: usize) -> Vec<usize> {
        std::iter::once(n)
            .chain(self.shape.iter().copied())
            .collect()
    }
}

impl Layer for Constant {
    const KIND: &'static str = "Constant";

    fn params(&self) -> Vec<ParamDecl> {
        vec![ParamDecl::constant(&self.shape, 0.0)]
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        match inputs[0].first() {
            Some(&n) => Ok(self.batched(n)),
            None => Err("needs an input with a batch axis".into()),
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, _: &[&Tensor]) -> Result<Tensor> {
        let c = plain_broadcast(cx.param("constant")?, cx.out_shape)?;
        cx.output(c.into_data())
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, _: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![Tensor::zeros(cx.inputs[0].shape())])
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Constant {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, _: &[&Rss<B>]) -> Result<Rss<B>> {
        private_broadcast(cx.p, cx.param("constant")?, cx.out_shape)
    }

    fn private_backward(&self, _: &mut PrivateBackCx<'_, B, T>, _: Rss<B>) -> Grads<B> {
        Ok(vec![None])
    }
}

/// A node of `value` (shape `[1, ..rest]` or `[..rest]`) for every example, named after
/// `node` (the importer's `Expand` of a constant to the batch).
pub(crate) fn import_batched(
    im: &mut dyn ImportGraph,
    node: &NodeProto,
    shape: Vec<usize>,
    values: Vec<f64>,
) -> Result<()> {
    let name = im.node_name(node, None);
    im.insert_param(&name, "constant", Tensor::new(&shape, values)?);
    im.push(node, name, Constant { shape }, &[0])?;
    Ok(())
}
