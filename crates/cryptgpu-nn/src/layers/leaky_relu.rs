//! `LeakyRelu`: `x` for x > 0, `alpha·x` otherwise; privately `alpha·x + (1 − alpha)·relu(x)`,
//! one ReLU and two public scalings.

use cryptgpu_nonlinear as nl;
use cryptgpu_share::SharedBits;

use super::common::*;

/// Leaky ReLU with slope `alpha` below zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LeakyRelu {
    /// The slope for x ≤ 0.
    pub alpha: f64,
}

impl Attributes for LeakyRelu {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("alpha", self.alpha);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            alpha: a.number("alpha")?,
        })
    }
}

impl Layer for LeakyRelu {
    const KIND: &'static str = "LeakyReLU";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let a = self.alpha;
        cx.map(x[0], |v| if v > 0.0 { v } else { a * v })
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let a = self.alpha;
        let x = cx.inputs[0];
        cx.elementwise_grad(x, dy, |v, g| if v > 0.0 { g } else { a * g })
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "LeakyRelu";
        n.float("alpha", self.alpha);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for LeakyRelu {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let r = nl::relu(cx.p, x[0])?;
        let y = blend(cx.p, x[0], self.alpha, &r.output, 1.0 - self.alpha)?;
        cx.save(r.drelu);
        Ok(y)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let bits: &SharedBits<B> = cx.saved()?;
        let routed = nl::relu_backward(cx.p, &dy, bits)?;
        Ok(vec![Some(blend(
            cx.p,
            &dy,
            self.alpha,
            &routed,
            1.0 - self.alpha,
        )?)])
    }
}

/// a·x + b·y for public reals a and b: both scaled locally, then one truncation.
pub(crate) fn blend<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    a: f64,
    y: &Rss<B>,
    b: f64,
) -> Result<Rss<B>> {
    let fixed = p.fixed();
    let sum = p.add(
        &p.mul_scalar(x, fixed.encode(a)?)?,
        &p.mul_scalar(y, fixed.encode(b)?)?,
    )?;
    Ok(p.truncate(&sum)?)
}

/// ONNX `LeakyRelu` (`alpha` defaults to 0.01).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let alpha = f64::from(attr_float(node, "alpha", 0.01));
    im.unary(node, LeakyRelu { alpha })
}
