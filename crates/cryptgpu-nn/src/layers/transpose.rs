//! `Transpose`: a permutation of the non-batch axes (the batch axis stays first); ONNX
//! `Transpose`.

use super::common::*;

/// Permutes axes: output axis i is input axis `perm[i]`; `perm[0] = 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transpose {
    /// The permutation, batch axis included.
    pub perm: Vec<usize>,
}

impl Transpose {
    fn inverse(&self) -> Vec<usize> {
        let mut inv = vec![0; self.perm.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            inv[p] = i;
        }
        inv
    }

    fn permute_plain(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
        let shape = x.shape();
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let in_strides = strides(shape);
        let out_strides = strides(&out_shape);
        let data = (0..x.len())
            .map(|flat| {
                let offset: usize = (0..perm.len())
                    .map(|a| flat / out_strides[a] % out_shape[a] * in_strides[perm[a]])
                    .sum();
                x.data()[offset]
            })
            .collect();
        Tensor::new(&out_shape, data)
    }
}

impl Attributes for Transpose {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("perm", self.perm.clone());
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            perm: a.dims("perm")?,
        })
    }
}

impl Layer for Transpose {
    const KIND: &'static str = "Transpose";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let x = inputs[0];
        let mut seen = self.perm.clone();
        seen.sort_unstable();
        if self.perm.len() != x.len() || seen != (0..x.len()).collect::<Vec<_>>() {
            return Err(format!(
                "{:?} is not a permutation of the axes of {x:?}",
                self.perm
            ));
        }
        Ok(self.perm.iter().map(|&p| x[p]).collect())
    }

    fn plain_forward(&self, _: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        Self::permute_plain(x[0], &self.perm)
    }

    fn plain_backward(&self, _: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![Self::permute_plain(dy, &self.inverse())?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Transpose";
        let perm: Vec<i64> = self.perm.iter().map(|&p| p as i64).collect();
        n.ints("perm", &perm);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Transpose {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        Ok(cx.p.linear(x[0], |b, t| b.permute(t, &self.perm))?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let inv = self.inverse();
        Ok(vec![Some(cx.p.linear(&dy, |b, t| b.permute(t, &inv))?)])
    }
}

/// ONNX `Transpose` (no `perm`: all axes reversed). The batch axis may move (multi-head
/// attention's `[N, L, E] → [L, N, E]`); the model's output must have it first again.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let rank = im.shape(x).len();
    let perm: Vec<usize> = match attr_ints(node, "perm") {
        Some(p) => p.iter().map(|&v| v as usize).collect(),
        None => (0..rank).rev().collect(),
    };
    if perm == (0..rank).collect::<Vec<_>>() {
        im.alias(node, x);
        return Ok(());
    }
    im.unary(node, Transpose { perm })
}
