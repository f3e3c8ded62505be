//! `Pow`: x^k for a small integer k (1 to 4) elementwise (`(x - mean) ** 2` of a
//! hand-written LayerNorm, `x ** 3` of the tanh GELU). Privately k − 1 fixed-point
//! products (2 rounds each). ONNX `Pow` with a constant integer exponent.

use super::common::*;

/// x^exponent elementwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pow {
    /// The exponent, 1 to 4.
    pub exponent: u32,
}

impl Attributes for Pow {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("exponent", self.exponent);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let exponent = a.dim("exponent")?;
        if !(1..=MAX_EXPONENT).contains(&exponent) {
            return Err(a.err(format!(
                "`exponent` {exponent} must be between 1 and {MAX_EXPONENT}"
            )));
        }
        Ok(Self {
            exponent: exponent as u32,
        })
    }
}

/// The largest exponent taken.
const MAX_EXPONENT: usize = 4;

/// x^k on shares: k − 1 products.
fn private_power<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    k: u32,
) -> Result<Rss<B>> {
    let mut y = x.clone();
    for _ in 1..k {
        y = p.mul_fixed(&y, x)?;
    }
    Ok(y)
}

impl Layer for Pow {
    const KIND: &'static str = "Pow";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let k = self.exponent as i32;
        cx.map(x[0], |v| v.powi(k))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let k = self.exponent as i32;
        cx.elementwise_grad(cx.inputs[0], dy, |v, g| g * f64::from(k) * v.powi(k - 1))
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Pow";
        n.constant_input(
            "exponent",
            Tensor::new(&[], vec![f64::from(self.exponent)])?,
        );
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Pow {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let y = private_power(cx.p, x[0], self.exponent)?;
        cx.save(x[0].clone());
        Ok(y)
    }

    /// k·x^(k−1)·dy.
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let x: &Rss<B> = cx.saved()?;
        let k = self.exponent;
        if k == 1 {
            return Ok(vec![Some(dy)]);
        }
        let slope = private_power(cx.p, x, k - 1)?;
        let dx = cx.p.mul_fixed(&dy, &slope)?;
        Ok(vec![Some(cx.p.mul_scalar(&dx, u64::from(k))?)])
    }
}

/// ONNX `Pow` of a computed value by a constant integer exponent from 1 to 4.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let exponent = match im.constant(node, 1)? {
        Some(t) if t.values.len() == 1 => t.values[0],
        _ => return Err(bad(node, "needs a constant scalar exponent")),
    };
    if exponent.fract() != 0.0 || !(1.0..=MAX_EXPONENT as f64).contains(&exponent) {
        return Err(bad(
            node,
            format!("only integer exponents 1 to {MAX_EXPONENT} are supported, got {exponent}"),
        ));
    }
    im.unary(
        node,
        Pow {
            exponent: exponent as u32,
        },
    )
}
