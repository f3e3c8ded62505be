//! `Gelu`: x·Φ(x), PyTorch's `nn.GELU()`, or its tanh form (`approximate="tanh"`) in
//! plaintext. Privately [`nl::gelu`] for both: x·(1 + erf(x/√2))/2 within 10^-4 of the
//! exact GELU over the whole comparison domain (29 rounds), which is within 6·10^-4 of the
//! tanh form. ONNX `Gelu` (opset 20, as the dynamo exporter writes it).

use cryptgpu_nonlinear as nl;

use super::common::*;

/// GELU elementwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gelu {
    /// The tanh form 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in plaintext.
    pub tanh: bool,
}

impl Attributes for Gelu {
    fn write_attrs(&self, a: &mut Attrs) {
        if self.tanh {
            a.set("tanh", true);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            tanh: a.boolean_or("tanh", false)?,
        })
    }
}

/// √(2/π).
const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;

impl Layer for Gelu {
    const KIND: &'static str = "Gelu";

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        if self.tanh {
            cx.map(x[0], |v| {
                0.5 * v * (1.0 + (SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)).tanh())
            })
        } else {
            cx.map(x[0], nl::gelu_f64)
        }
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        if self.tanh {
            cx.elementwise_grad(x, dy, |v, g| {
                let u = SQRT_2_OVER_PI * (v + 0.044715 * v * v * v);
                let t = u.tanh();
                let du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
                g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du)
            })
        } else {
            let density = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
            cx.elementwise_grad(x, dy, |v, g| {
                let cdf = 0.5 * (1.0 + nl::erf_f64(v * std::f64::consts::FRAC_1_SQRT_2));
                g * (cdf + v * density * (-0.5 * v * v).exp())
            })
        }
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        Err(NnError::Graph(format!(
            "Gelu `{}` has no ONNX form at opset 13",
            n.name
        )))
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Gelu {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let parts = nl::gelu_parts(cx.p, x[0])?;
        let y = parts.output.clone();
        if cx.keep() {
            cx.save((x[0].clone(), parts));
        }
        Ok(y)
    }

    /// dy·(Φ(x) + x·φ(x)) ([`nl::gelu_slope`]; the exact GELU's, for the tanh form too).
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let (x, parts): &(Rss<B>, nl::Gelu<B>) = cx.saved()?;
        let slope = nl::gelu_slope(cx.p, x, parts)?;
        Ok(vec![Some(cx.p.mul_fixed(&dy, &slope)?)])
    }
}

/// ONNX `Gelu` (`approximate` "none" or "tanh").
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let approximate = node
        .attribute("approximate")
        .map(|a| String::from_utf8_lossy(&a.s).into_owned())
        .unwrap_or_default();
    let tanh = match approximate.as_str() {
        "" | "none" => false,
        "tanh" => true,
        other => return Err(bad(node, format!("approximate {other:?} is not supported"))),
    };
    im.unary(node, Gelu { tanh })
}
