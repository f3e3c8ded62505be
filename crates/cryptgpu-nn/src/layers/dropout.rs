//! `Dropout`: the identity at inference; in training, each element zeroed with probability
//! `p` and the rest scaled by 1/(1 − p). ONNX `Dropout` (an inference export keeps it or
//! drops it) and `Identity` (which the importer only aliases).
//!
//! Privately the masks are public ([`dropout_mask`] from the step's seed, as
//! in plaintext training): they depend on no secret, and the product by a public tensor is
//! local but for one truncation.

use cryptgpu_share::Bilinear;

use super::common::*;
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Dropout with drop probability `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    /// Drop probability, in `[0, 1)`.
    pub p: f64,
}

impl Attributes for Dropout {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("p", self.p);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self { p: a.number("p")? })
    }
}

impl Layer for Dropout {
    const KIND: &'static str = "Dropout";

    /// The mask, unused.
    const ONNX_EXTRA_OUTPUTS: bool = true;

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        if (0.0..1.0).contains(&self.p) {
            Ok(inputs[0].to_vec())
        } else {
            Err(format!(
                "drop probability must be in [0, 1), got {}",
                self.p
            ))
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        match cx.mode {
            Mode::Training { seed } if self.p > 0.0 => {
                let mask = dropout_mask(seed, cx.id, x.len(), self.p);
                let y = x.data().iter().zip(&mask).map(|(a, m)| a * m).collect();
                cx.save(mask);
                cx.output(y)
            }
            _ => cx.output(x.data().to_vec()),
        }
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![match cx.saved::<Vec<f64>>() {
            Some(mask) => {
                let dx = dy.data().iter().zip(mask).map(|(g, m)| g * m).collect();
                cx.like_input(0, dx)?
            }
            None => dy.clone(),
        }])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Dropout";
        n.constant_input("ratio", Tensor::new(&[], vec![self.p])?);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Dropout {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let x = x[0];
        match cx.training {
            Some(seed) if self.p > 0.0 => {
                let mask = dropout_mask(seed, cx.id, x.len(), self.p);
                let mask = cx.p.fixed().encode_slice(&mask)?;
                let mask = cx.p.backend().upload(&mask, x.shape())?;
                let dropped = cx.p.apply_public(Bilinear::Mul, x, &mask)?;
                cx.save(mask);
                Ok(cx.p.truncate(&dropped)?)
            }
            _ => Ok(x.clone()),
        }
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        match cx.saved::<B::Tensor>() {
            Ok(mask) => {
                let mask = mask.clone();
                let dx = cx.p.apply_public(Bilinear::Mul, &dy, &mask)?;
                Ok(vec![Some(cx.p.truncate(&dx)?)])
            }
            Err(_) => Ok(vec![Some(dy)]),
        }
    }
}

/// ONNX `Dropout` (ratio from input 1 or the `ratio` attribute; the mask output unused)
/// and `Identity` (an alias, no node).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    if node.op_type == "Identity" {
        return im.identity(node);
    }
    let p = match im.constant(node, 1)? {
        Some(t) => t.values.first().copied().unwrap_or(0.5),
        None => f64::from(attr_float(node, "ratio", 0.5)),
    };
    im.unary(node, Dropout { p })
}

/// The dropout mask of node `id` in the training step with `seed`: `len` values, each 0
/// with probability `p` and 1/(1 − p) otherwise (ChaCha8 from `seed ^ id << 32`). The
/// private executor draws the same masks, so private and plaintext training drop the same
/// units.
pub fn dropout_mask(seed: u64, id: NodeId, len: usize, p: f64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (id as u64) << 32);
    let keep = 1.0 / (1.0 - p);
    (0..len)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            if u < p { 0.0 } else { keep }
        })
        .collect()
}
