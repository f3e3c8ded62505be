//! `Embedding`: rows of a table `weight` `[V, D]` looked up by token ids (PyTorch's
//! `nn.Embedding`, `weight[ids]`), the ids being the model's input (see
//! [`super::input::Input`]). ONNX `Gather` of a constant table by the graph input.
//!
//! Privately the ids never leave the data owner: it shares each id as its one-hot row
//! (ring integers 0 and 1), and the lookup is the product one-hot · weight, an integer
//! times fixed-point values, so it needs no truncation: one round, 8·n·D bytes from each
//! party for n tokens. The cost is in the input: the data owner sends 16·n·V bytes (two
//! ring elements per one-hot entry, to its two neighbours), 62.5 MB for 128 tokens of
//! BERT's 30,522-word vocabulary. A lookup by shared ids (V comparisons a token) costs
//! more in every setting where the data owner is a party.

use cryptgpu_share::Bilinear;

use super::common::*;

/// A lookup of `dim`-wide rows in a table of `vocabulary` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Embedding {
    /// V, the table's rows.
    pub vocabulary: usize,
    /// D, the width of a row.
    pub dim: usize,
}

impl Attributes for Embedding {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("vocabulary", self.vocabulary);
        a.set("dim", self.dim);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            vocabulary: a.dim("vocabulary")?,
            dim: a.dim("dim")?,
        })
    }
}

/// Each id of `ids` as an index in `0..vocabulary`, or an error naming the first bad one.
pub(crate) fn token_indices(ids: &[f64], vocabulary: usize) -> Result<Vec<usize>> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            if id.fract() == 0.0 && id >= 0.0 && id < vocabulary as f64 {
                Ok(id as usize)
            } else {
                Err(NnError::InvalidArgument(format!(
                    "token id {id} at position {i} is not an integer in 0..{vocabulary}"
                )))
            }
        })
        .collect()
}

impl Layer for Embedding {
    const KIND: &'static str = "Embedding";

    fn params(&self) -> Vec<ParamDecl> {
        vec![ParamDecl::trainable(
            "weight",
            vec![self.vocabulary, self.dim],
            Init::Uniform { fan_in: 1 },
        )]
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let mut out = inputs[0].to_vec();
        if out.is_empty() {
            return Err("needs ids with a batch axis".into());
        }
        out.push(self.dim);
        Ok(out)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let table = cx.param("weight")?;
        let d = self.dim;
        let mut out = Vec::with_capacity(x[0].len() * d);
        for id in token_indices(x[0].data(), self.vocabulary)? {
            out.extend_from_slice(&table.data()[id * d..(id + 1) * d]);
        }
        cx.output(out)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let d = self.dim;
        let mut grad = vec![0.0; self.vocabulary * d];
        let ids = token_indices(cx.inputs[0].data(), self.vocabulary)?;
        for (id, g) in ids.into_iter().zip(dy.data().chunks(d)) {
            grad[id * d..(id + 1) * d]
                .iter_mut()
                .zip(g)
                .for_each(|(a, b)| *a += b);
        }
        cx.grad("weight", Tensor::new(&[self.vocabulary, d], grad)?);
        Ok(vec![Tensor::zeros(cx.inputs[0].shape())])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Gather";
        let ids = n.inputs.remove(0);
        n.param_input("weight");
        n.inputs.push(ids);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Embedding {
    /// One-hot rows `[.., V]` times the table: one product, no truncation.
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let onehot = x[0];
        let v = self.vocabulary;
        if onehot.shape().last() != Some(&v) {
            return Err(NnError::InvalidArgument(format!(
                "`{}` takes one-hot token rows of {v}, got shape {:?}",
                cx.name,
                onehot.shape()
            )));
        }
        let rows = onehot.len() / v;
        let flat = cx.p.linear(onehot, |b, t| b.reshape(t, &[rows, v]))?;
        let table = cx.param("weight")?;
        let y = cx.p.product(Bilinear::Matmul, &flat, table)?;
        cx.save(flat);
        cx.reshape_to_output(&y)
    }

    /// The table's gradient: one-hotᵀ · dy, again with no truncation.
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let flat: &Rss<B> = cx.saved()?;
        let rows = flat.shape()[0];
        let dy = cx.p.linear(&dy, |b, t| b.reshape(t, &[rows, self.dim]))?;
        let transposed = cx.p.linear(flat, |b, t| b.transpose(t, 0, 1))?;
        let grad = cx.p.product(Bilinear::Matmul, &transposed, &dy)?;
        cx.grad("weight", grad);
        Ok(vec![None])
    }
}

/// ONNX `Gather` (axis 0) of a constant table `[V, D]` by the graph input, whose values
/// then are token ids in `0..V`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let table = im
        .constant(node, 0)?
        .ok_or_else(|| bad(node, "needs a constant table"))?;
    let ids = im.input_node(node, 1)?;
    let &[v, d] = &table.dims[..] else {
        return Err(bad(
            node,
            format!("table of shape {:?} is not [V, D]", table.dims),
        ));
    };
    if attr_int(node, "axis", 0) != 0 || ids != 0 || v <= 0 || d <= 0 {
        return Err(bad(
            node,
            "only a lookup of rows (axis 0) by the model's input (token ids) is supported",
        ));
    }
    let (vocabulary, dim) = (v as usize, d as usize);
    let input = im
        .layer_mut(0)
        .downcast_mut::<super::input::Input>()
        .ok_or_else(|| bad(node, "node 0 is not the input"))?;
    match input.vocabulary {
        Some(other) if other != vocabulary => {
            return Err(bad(
                node,
                format!("the ids index tables of {other} and {vocabulary} rows"),
            ));
        }
        _ => input.vocabulary = Some(vocabulary),
    }
    let name = im.node_name(node, Some(&table.name));
    im.insert_param(
        &name,
        "weight",
        Tensor::new(&[vocabulary, dim], table.values.clone())?,
    );
    im.push(node, name, Embedding { vocabulary, dim }, &[ids])?;
    Ok(())
}
