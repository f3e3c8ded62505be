//! `Conv2d`: 2-d convolution with PyTorch's semantics (cross-correlation, zero padding,
//! groups, dilation); ONNX `Conv`.
//!
//! A dilated convolution is the plain convolution with the dilated kernel (zeros between
//! the taps): the same outputs, computed by the backends' one convolution. Its weight
//! gradient is the dilated kernel's gradient at the taps.

use cryptgpu_backend::Conv2dParams;
use cryptgpu_share::Bilinear;

use super::common::*;
use super::shape::window_out;
use crate::plain::ops::{self, ConvGeometry};

/// 2-d convolution; weight `[O, C / groups, kh, kw]`, optional bias `[O]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2d {
    /// Input channels `C`.
    pub in_channels: usize,
    /// Output channels `O`.
    pub out_channels: usize,
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride, padding and groups.
    pub params: Conv2dParams,
    /// Spacing between the window's taps, `[1, 1]` for none.
    pub dilation: [usize; 2],
    /// Whether the node has a `bias` parameter.
    pub bias: bool,
}

impl Conv2d {
    /// A convolution without dilation.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        kernel: [usize; 2],
        params: Conv2dParams,
        bias: bool,
    ) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            params,
            dilation: [1, 1],
            bias,
        }
    }

    /// The dilated window: `(k − 1)·d + 1` per axis.
    pub fn effective_kernel(&self) -> [usize; 2] {
        [0, 1].map(|a| (self.kernel[a].max(1) - 1) * self.dilation[a] + 1)
    }

    fn dilated(&self) -> bool {
        self.dilation != [1, 1]
    }

    fn weight_shape(&self) -> Vec<usize> {
        vec![
            self.out_channels,
            self.in_channels / self.params.groups.max(1),
            self.kernel[0],
            self.kernel[1],
        ]
    }

    fn dilated_shape(&self) -> Vec<usize> {
        let [eh, ew] = self.effective_kernel();
        vec![
            self.out_channels,
            self.in_channels / self.params.groups.max(1),
            eh,
            ew,
        ]
    }

    /// The weight with zeros between its taps (plaintext).
    fn dilate_plain(&self, w: &[f64]) -> Vec<f64> {
        let [kh, kw] = self.kernel;
        let [eh, ew] = self.effective_kernel();
        let [dh, dw] = self.dilation;
        let mut out = vec![0.0; w.len() / (kh * kw) * eh * ew];
        for (plane, src) in w.chunks(kh * kw).enumerate() {
            for i in 0..kh {
                for j in 0..kw {
                    out[plane * eh * ew + i * dh * ew + j * dw] = src[i * kw + j];
                }
            }
        }
        out
    }

    /// The taps of a dilated kernel's gradient (plaintext).
    fn undilate_plain(&self, g: &[f64]) -> Vec<f64> {
        let [kh, kw] = self.kernel;
        let [eh, ew] = self.effective_kernel();
        let [dh, dw] = self.dilation;
        g.chunks(eh * ew)
            .flat_map(|src| {
                (0..kh).flat_map(move |i| (0..kw).map(move |j| src[i * dh * ew + j * dw]))
            })
            .collect()
    }
}

/// Spreads axis `axis` of a tensor by `d`: each entry followed by `d − 1` zeros, the last
/// one's dropped (linear, so it applies to each share).
fn spread_axis<B: GpuBackend>(
    b: &B,
    t: &B::Tensor,
    axis: usize,
    d: usize,
) -> cryptgpu_backend::Result<B::Tensor> {
    use cryptgpu_backend::DeviceTensor;
    if d == 1 {
        return Ok(t.clone());
    }
    let shape = t.shape().to_vec();
    let k = shape[axis];
    let mut with_unit = shape.clone();
    with_unit.insert(axis + 1, 1);
    let mut zeros_shape = with_unit.clone();
    zeros_shape[axis + 1] = d - 1;
    let spread = b.concat(
        &[&b.reshape(t, &with_unit)?, &b.zeros(&zeros_shape)?],
        axis + 1,
    )?;
    let mut merged = shape.clone();
    merged[axis] = k * d;
    let merged = b.reshape(&spread, &merged)?;
    b.slice(&merged, axis, 0..(k - 1) * d + 1)
}

/// The inverse of [`spread_axis`]: every `d`-th entry along `axis`.
fn gather_axis<B: GpuBackend>(
    b: &B,
    t: &B::Tensor,
    axis: usize,
    d: usize,
    k: usize,
) -> cryptgpu_backend::Result<B::Tensor> {
    use cryptgpu_backend::DeviceTensor;
    if d == 1 {
        return Ok(t.clone());
    }
    let shape = t.shape().to_vec();
    let mut pad_shape = shape.clone();
    pad_shape[axis] = k * d - shape[axis];
    let padded = b.concat(&[t, &b.zeros(&pad_shape)?], axis)?;
    let mut split = shape.clone();
    split[axis] = k;
    split.insert(axis + 1, d);
    let first = b.slice(&b.reshape(&padded, &split)?, axis + 1, 0..1)?;
    let mut out = shape;
    out[axis] = k;
    b.reshape(&first, &out)
}

impl Attributes for Conv2d {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("in_channels", self.in_channels);
        a.set("out_channels", self.out_channels);
        a.set_pair("kernel", self.kernel);
        a.set_pair("stride", self.params.stride);
        a.set_pair("padding", self.params.padding);
        a.set("groups", self.params.groups);
        a.set_pair("dilation", self.dilation);
        a.set("bias", self.bias);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let groups = a.dim("groups")?;
        if groups == 0 {
            return Err(a.err("`groups` must be at least 1"));
        }
        Ok(Self {
            in_channels: a.dim("in_channels")?,
            out_channels: a.dim("out_channels")?,
            kernel: a.positive_pair("kernel")?,
            params: Conv2dParams {
                stride: a.positive_pair("stride")?,
                padding: a.pair("padding")?,
                groups,
            },
            dilation: if a.has("dilation") {
                a.positive_pair("dilation")?
            } else {
                [1, 1]
            },
            bias: a.boolean("bias")?,
        })
    }
}

impl Layer for Conv2d {
    const KIND: &'static str = "Conv2d";

    fn params(&self) -> Vec<ParamDecl> {
        let fan_in = self.in_channels / self.params.groups.max(1) * self.kernel[0] * self.kernel[1];
        ParamDecl::weight_and_bias(self.weight_shape(), self.bias, fan_in)
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let [n, c, h, w] = nchw(inputs[0])?;
        if c != self.in_channels {
            return Err(format!(
                "expects {} input channels, got input {:?}",
                self.in_channels, inputs[0]
            ));
        }
        let g = self.params.groups;
        if g == 0 || !c.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            return Err(format!(
                "groups {g} must divide in_channels {c} and out_channels {}",
                self.out_channels
            ));
        }
        if self.dilation.contains(&0) {
            return Err("dilation must be at least 1".into());
        }
        let k = self.effective_kernel();
        let oh = window_out(h, k[0], self.params.stride[0], self.params.padding[0]);
        let ow = window_out(w, k[1], self.params.stride[1], self.params.padding[1]);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok(vec![n, self.out_channels, oh, ow]),
            _ => Err(format!(
                "kernel {:?} (dilation {:?}) with stride {:?} and padding {:?} does not fit input {:?}",
                self.kernel, self.dilation, self.params.stride, self.params.padding, inputs[0]
            )),
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let geo = ConvGeometry::new(
            x.shape(),
            self.out_channels,
            self.effective_kernel(),
            self.params,
        );
        let weight = cx.param("weight")?.data();
        let dilated;
        let weight = if self.dilated() {
            dilated = self.dilate_plain(weight);
            &dilated[..]
        } else {
            weight
        };
        let bias = if self.bias {
            Some(cx.param("bias")?.data())
        } else {
            None
        };
        cx.output(ops::conv2d(x.data(), weight, bias, &geo))
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let geo = ConvGeometry::new(
            x.shape(),
            self.out_channels,
            self.effective_kernel(),
            self.params,
        );
        let weight = cx.param("weight")?;
        let shape = weight.shape().to_vec();
        let dilated = if self.dilated() {
            self.dilate_plain(weight.data())
        } else {
            weight.data().to_vec()
        };
        let (dx, dw, db) = ops::conv2d_backward(x.data(), &dilated, dy.data(), &geo);
        let dw = if self.dilated() {
            self.undilate_plain(&dw)
        } else {
            dw
        };
        cx.grad("weight", Tensor::new(&shape, dw)?);
        if self.bias {
            cx.grad("bias", Tensor::new(&[self.out_channels], db)?);
        }
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Conv";
        n.param_input("weight");
        if self.bias {
            n.param_input("bias");
        }
        let i = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
        n.ints("kernel_shape", &i(self.kernel));
        n.ints("strides", &i(self.params.stride));
        let [ph, pw] = i(self.params.padding);
        n.ints("pads", &[ph, pw, ph, pw]);
        n.ints("dilations", &i(self.dilation));
        n.int("group", self.params.groups as i64);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Conv2d {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let x = x[0].clone();
        let w = cx.param("weight")?.clone();
        let w = if self.dilated() {
            let [dh, dw] = self.dilation;
            cx.p.linear(&w, |b, t| spread_axis(b, &spread_axis(b, t, 2, dh)?, 3, dw))?
        } else {
            w
        };
        let y = cx.p.conv2d_fixed(&x, &w, self.params)?;
        cx.save(x);
        if self.bias {
            add_channel_bias(cx.p, &y, cx.param("bias")?)
        } else {
            Ok(y)
        }
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let x: &Rss<B> = cx.saved()?;
        let hw = [x.shape()[2], x.shape()[3]];
        let dw = cx.p.product_truncated(
            Bilinear::Conv2dGradWeight {
                kernel_hw: self.effective_kernel(),
                params: self.params,
            },
            x,
            &dy,
        )?;
        let dw = if self.dilated() {
            let [dh, dwid] = self.dilation;
            let [kh, kw] = self.kernel;
            cx.p.linear(&dw, |b, t| {
                gather_axis(b, &gather_axis(b, t, 2, dh, kh)?, 3, dwid, kw)
            })?
        } else {
            dw
        };
        debug_assert_eq!(dw.shape(), self.weight_shape().as_slice());
        cx.grad("weight", dw);
        if self.bias {
            let db = cx.p.linear(&dy, |b, t| {
                b.sum_axis(&b.sum_axis(&b.sum_axis(t, 3)?, 2)?, 0)
            })?;
            cx.grad("bias", db);
        }
        if !cx.wants(0) {
            return Ok(vec![None]);
        }
        let w = cx.param("weight")?.clone();
        let w = if self.dilated() {
            let [dh, dw] = self.dilation;
            cx.p.linear(&w, |b, t| spread_axis(b, &spread_axis(b, t, 2, dh)?, 3, dw))?
        } else {
            w
        };
        debug_assert_eq!(w.shape(), self.dilated_shape().as_slice());
        let dx = cx.p.product_truncated(
            Bilinear::Conv2dGradInput {
                input_hw: hw,
                params: self.params,
            },
            &dy,
            &w,
        )?;
        Ok(vec![Some(dx)])
    }
}

/// y + b for a shared per-channel bias `[C]` on `[N, C, ...]` (local).
pub(crate) fn add_channel_bias<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    y: &Rss<B>,
    bias: &Rss<B>,
) -> Result<Rss<B>> {
    let spread = spread_channels(p, bias, y.shape())?;
    Ok(p.add(y, &spread)?)
}

/// A per-channel `[C]` sharing broadcast to `shape` = `[N, C, ...]` (local).
pub(crate) fn spread_channels<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    per_channel: &Rss<B>,
    shape: &[usize],
) -> Result<Rss<B>> {
    let mut keep = vec![1; shape.len()];
    keep[1] = shape[1];
    Ok(p.linear(per_channel, |b, t| {
        b.broadcast_to(&b.reshape(t, &keep)?, shape)
    })?)
}

/// ONNX `Conv`: weight (and bias) initializers, symmetric pads, groups, dilations.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let w = im
        .constant(node, 1)?
        .ok_or_else(|| bad(node, "has no weight"))?;
    let b = im.constant(node, 2)?;
    let &[o, cg, kh, kw] = &w.dims[..] else {
        return Err(bad(node, format!("weight dims {:?} are not 4-d", w.dims)));
    };
    let groups = attr_int(node, "group", 1).max(1) as usize;
    if let Some(k) = attr_ints(node, "kernel_shape")
        && k != [kh, kw]
    {
        return Err(bad(
            node,
            format!("kernel_shape {k:?} disagrees with the weight"),
        ));
    }
    let layer = Conv2d {
        in_channels: cg as usize * groups,
        out_channels: o as usize,
        kernel: [kh as usize, kw as usize],
        params: Conv2dParams {
            stride: attr_pair(node, "strides", [1, 1])?,
            padding: symmetric_pads(node)?,
            groups,
        },
        dilation: attr_pair(node, "dilations", [1, 1])?,
        bias: b.is_some(),
    };
    let name = im.node_name(node, Some(&w.name));
    im.param(&name, "weight", &w, None)?;
    if let Some(b) = &b {
        im.param(&name, "bias", b, Some(&[o as usize]))?;
    }
    im.push(node, name, layer, &[x])?;
    Ok(())
}
