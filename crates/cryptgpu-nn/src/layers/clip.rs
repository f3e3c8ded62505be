//! `Clip`: `min(max(x, lo), hi)` (ReLU6 is `Clip(0, 6)`); ONNX `Clip` (bounds as inputs
//! from opset 11, attributes before).
//!
//! Privately, `lo + relu(x − lo) − relu(x − hi)` (`lo + relu(x − lo)` or `x − relu(x − hi)`
//! with one bound), the ReLUs of both shifted copies in one call, so a clip costs the rounds
//! of one ReLU. The gradient passes where lo < x ≤ hi, the DReLU bits' convention (ties go
//! to the lower side, as in ReLU); the plaintext executor uses the same.

use cryptgpu_nonlinear as nl;
use cryptgpu_share::SharedBits;

use super::*;
use crate::onnx::attr_float;

/// Clamps to `[min, max]`; either bound may be absent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clip {
    /// Lower bound.
    pub min: Option<f64>,
    /// Upper bound.
    pub max: Option<f64>,
}

impl Clip {
    /// ReLU6.
    pub fn relu6() -> Self {
        Self {
            min: Some(0.0),
            max: Some(6.0),
        }
    }

    /// The thresholds t of the ReLUs and their signs.
    fn thresholds(&self) -> Vec<(f64, f64)> {
        self.min
            .map(|lo| (lo, 1.0))
            .into_iter()
            .chain(self.max.map(|hi| (hi, -1.0)))
            .collect()
    }
}

impl Layer for Clip {
    const KIND: &'static str = "Clip";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        if let (Some(lo), Some(hi)) = (self.min, self.max)
            && lo > hi
        {
            return Err(format!("min {lo} exceeds max {hi}"));
        }
        Ok(inputs[0].to_vec())
    }

    fn write_attrs(&self, a: &mut Attrs) {
        if let Some(lo) = self.min {
            a.set("min", lo);
        }
        if let Some(hi) = self.max {
            a.set("max", hi);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let get = |k| a.map.contains_key(k).then(|| a.number(k)).transpose();
        Ok(Self {
            min: get("min")?,
            max: get("max")?,
        })
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let (lo, hi) = (self.min.unwrap_or(f64::MIN), self.max.unwrap_or(f64::MAX));
        cx.output(elementwise(x[0].data(), |v| v.max(lo).min(hi)))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let (lo, hi) = (self.min.unwrap_or(f64::MIN), self.max.unwrap_or(f64::MAX));
        let dx = cx.inputs[0]
            .data()
            .iter()
            .zip(dy.data())
            .map(|(&v, &g)| if v > lo && v <= hi { g } else { 0.0 })
            .collect();
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn private_forward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateCx<'_, B, T>,
        x: &[&Rss<B>],
    ) -> Result<Rss<B>> {
        let x = x[0];
        let terms = self.thresholds();
        if terms.is_empty() {
            return Ok(x.clone());
        }
        let fixed = cx.p.fixed();
        let mut shifted = Vec::new();
        for &(t, _) in &terms {
            shifted.push(cx.p.add_scalar(x, fixed.encode(-t)?)?);
        }
        let refs: Vec<&Rss<B>> = shifted.iter().collect();
        let stacked = cx.p.concat(&refs, 0)?;
        let r = nl::relu(cx.p, &stacked)?;
        let n = x.shape()[0];
        let mut y = match self.min {
            Some(lo) => cx.p.constant_f64(&vec![lo; x.len()], x.shape())?,
            None => x.clone(),
        };
        for (i, &(_, sign)) in terms.iter().enumerate() {
            let part =
                cx.p.linear(&r.output, |b, t| b.slice(t, 0, i * n..(i + 1) * n))?;
            y = if sign > 0.0 {
                cx.p.add(&y, &part)?
            } else {
                cx.p.sub(&y, &part)?
            };
        }
        cx.save(r.drelu);
        Ok(y)
    }

    fn private_backward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateBackCx<'_, B, T>,
        dy: Rss<B>,
    ) -> Result<Vec<Option<Rss<B>>>> {
        let terms = self.thresholds();
        if terms.is_empty() {
            return Ok(vec![Some(dy)]);
        }
        let bits: &SharedBits<B> = cx.saved()?;
        let copies: Vec<&Rss<B>> = terms.iter().map(|_| &dy).collect();
        let stacked = cx.p.concat(&copies, 0)?;
        let routed = nl::relu_backward(cx.p, &stacked, bits)?;
        let n = dy.shape()[0];
        let mut dx = if self.min.is_some() {
            None
        } else {
            Some(dy.clone())
        };
        for (i, &(_, sign)) in terms.iter().enumerate() {
            let part =
                cx.p.linear(&routed, |b, t| b.slice(t, 0, i * n..(i + 1) * n))?;
            dx = Some(match dx {
                None => part,
                Some(acc) if sign > 0.0 => cx.p.add(&acc, &part)?,
                Some(acc) => cx.p.sub(&acc, &part)?,
            });
        }
        Ok(vec![dx])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Clip";
        match self.min {
            Some(lo) => n.constant_input("min", Tensor::new(&[], vec![lo])?),
            None => n.inputs.push(String::new()),
        }
        if let Some(hi) = self.max {
            n.constant_input("max", Tensor::new(&[], vec![hi])?);
        }
        Ok(())
    }
}

/// ONNX `Clip`: bounds from inputs 1 and 2 (opset 11+) or the `min`/`max` attributes.
pub(crate) fn import(im: &mut Importer, node: &NodeProto) -> Result<()> {
    // Exporters write an absent bound as ±FLT_MAX (or ±inf): no bound.
    let bound = |im: &Importer, i: usize, attr: &str| -> Result<Option<f64>> {
        let value = match im.constant(node, i)? {
            Some(t) => match t.values[..] {
                [v] => Some(v),
                _ => return Err(Importer::bad(node, format!("bound {i} is not a scalar"))),
            },
            None => node
                .attribute(attr)
                .map(|_| f64::from(attr_float(node, attr, 0.0))),
        };
        Ok(value.filter(|v| v.abs() < 1e30))
    };
    let clip = Clip {
        min: bound(im, 1, "min")?,
        max: bound(im, 2, "max")?,
    };
    im.unary(node, clip.into())
}
