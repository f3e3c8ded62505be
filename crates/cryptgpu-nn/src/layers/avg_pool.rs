//! `AvgPool2d`: the mean over each window, PyTorch's divisor (`count_include_pad`, and in
//! `ceil_mode` a last window clipped to the padded input); ONNX `AveragePool`. Privately
//! local window sums times a public factor (one truncation): 1/(kh·kw) when every window
//! has the same divisor, else a public tensor of per-window reciprocals.

use cryptgpu_backend::Pool2dParams;
use cryptgpu_nonlinear as nl;
use cryptgpu_share::Bilinear;

use super::common::*;
use super::pool::{PoolWindow, pad_private, unpad_private};

/// Average pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2d {
    /// The window.
    pub window: PoolWindow,
    /// Whether padding counts in the divisor (PyTorch's default `True`).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// Average pooling with the backends' symmetric parameters, padding counted.
    pub fn new(params: Pool2dParams) -> Self {
        Self {
            window: params.into(),
            count_include_pad: true,
        }
    }

    /// The divisor of every output position of an `h × w` plane.
    fn divisors(&self, h: usize, w: usize, oh: usize, ow: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(oh * ow);
        for oi in 0..oh {
            for oj in 0..ow {
                let (rows, cols, padded) = self.window.window(h, w, oi, oj);
                let count = if self.count_include_pad {
                    padded
                } else {
                    rows.len() * cols.len()
                };
                out.push(count.max(1) as f64);
            }
        }
        out
    }

    /// The backends' pooling as it is, when it computes this one.
    fn fast(&self) -> Option<Pool2dParams> {
        self.window
            .symmetric()
            .filter(|p| self.count_include_pad || p.padding == [0, 0])
    }
}

struct Saved {
    pads: [usize; 4],
    hw: [usize; 2],
    reciprocals: Vec<f64>,
}

impl Attributes for AvgPool2d {
    fn write_attrs(&self, a: &mut Attrs) {
        self.window.write(a);
        if !self.count_include_pad {
            a.set("count_include_pad", false);
        }
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            window: PoolWindow::read(a)?,
            count_include_pad: a.boolean_or("count_include_pad", true)?,
        })
    }
}

impl Layer for AvgPool2d {
    const KIND: &'static str = "AvgPool2d";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        self.window.output_shape(inputs[0])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let div = self.divisors(h, w, cx.out_shape[2], cx.out_shape[3]);
        let mut y = Vec::with_capacity(cx.out_shape.iter().product());
        self.window
            .plain_windows(x, cx.out_shape, |plane, rows, cols, k| {
                let sum: f64 = rows
                    .flat_map(|i| cols.clone().map(move |j| plane[i * w + j]))
                    .sum();
                y.push(sum / div[k]);
                Ok(())
            })?;
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
        let div = self.divisors(h, w, oh, ow);
        let mut dx = vec![0.0; x.len()];
        for (p, g) in dy.data().chunks(oh * ow).enumerate() {
            let plane = &mut dx[p * h * w..(p + 1) * h * w];
            for oi in 0..oh {
                for oj in 0..ow {
                    let (rows, cols, _) = self.window.window(h, w, oi, oj);
                    let v = g[oi * ow + oj] / div[oi * ow + oj];
                    for i in rows {
                        for j in cols.clone() {
                            plane[i * w + j] += v;
                        }
                    }
                }
            }
        }
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "AveragePool";
        self.window.export(n);
        n.int("count_include_pad", i64::from(self.count_include_pad));
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for AvgPool2d {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let x = x[0];
        if let Some(params) = self.fast() {
            return Ok(nl::avg_pool2d(cx.p, x, params)?);
        }
        let hw = [x.shape()[2], x.shape()[3]];
        let pads = self.window.explicit_pads(hw[0], hw[1]);
        let params = Pool2dParams {
            kernel: self.window.kernel,
            stride: self.window.stride,
            padding: [0, 0],
        };
        let padded = pad_private(cx.p, x, pads, 0)?;
        let sums = cx.p.linear(&padded, |b, t| b.pool_window_sum(t, params))?;
        let (oh, ow) = (cx.out_shape[2], cx.out_shape[3]);
        let reciprocals: Vec<f64> = self
            .divisors(hw[0], hw[1], oh, ow)
            .iter()
            .map(|d| 1.0 / d)
            .collect();
        let y = scale_planes(cx.p, &sums, &reciprocals)?;
        cx.save(Saved {
            pads,
            hw,
            reciprocals,
        });
        Ok(y)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        if let Some(params) = self.fast() {
            let shape = cx.input_shapes[0].clone();
            return Ok(vec![Some(nl::avg_pool2d_backward(
                cx.p, &dy, params, &shape,
            )?)]);
        }
        let saved: &Saved = cx.saved()?;
        let (pads, hw, reciprocals) = (saved.pads, saved.hw, saved.reciprocals.clone());
        let scaled = scale_planes(cx.p, &dy, &reciprocals)?;
        let params = Pool2dParams {
            kernel: self.window.kernel,
            stride: self.window.stride,
            padding: [0, 0],
        };
        let mut padded_shape = cx.input_shapes[0].clone();
        padded_shape[2] += pads[0] + pads[2];
        padded_shape[3] += pads[1] + pads[3];
        let area = params.kernel[0] * params.kernel[1];
        let out = dy.shape().to_vec();
        let mut unfolded = vec![area];
        unfolded.extend(&out);
        let mut one = vec![1];
        one.extend(&out);
        let dx = cx.p.linear(&scaled, |b, t| {
            let spread = b.broadcast_to(&b.reshape(t, &one)?, &unfolded)?;
            b.pool_fold(&spread, params, &padded_shape)
        })?;
        Ok(vec![Some(unpad_private(cx.p, &dx, pads, hw)?)])
    }
}

/// `x` `[N, C, OH, OW]` times a public per-position factor `[OH·OW]` (one truncation).
fn scale_planes<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    factors: &[f64],
) -> Result<Rss<B>> {
    let fixed = p.fixed();
    let encoded = fixed.encode_slice(factors)?;
    let shape = x.shape().to_vec();
    let b = p.backend();
    let plane = b.upload(&encoded, &[1, 1, shape[2], shape[3]])?;
    let spread = b.broadcast_to(&plane, &shape)?;
    let product = p.apply_public(Bilinear::Mul, x, &spread)?;
    Ok(p.truncate(&product)?)
}

/// ONNX `AveragePool` (`count_include_pad` defaults to 0 in ONNX; PyTorch writes 1).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let window = PoolWindow::import(node)?;
    let layer = AvgPool2d {
        window,
        count_include_pad: attr_int(node, "count_include_pad", 0) != 0,
    };
    im.unary(node, layer)
}
