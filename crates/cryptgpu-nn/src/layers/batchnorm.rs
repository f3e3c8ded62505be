//! `BatchNorm2d`: per-channel normalisation; ONNX `BatchNormalization` (inference form).
//!
//! Inference: `(x − running_mean) / √(running_var + ε) · weight + bias`, an affine map per
//! channel ([`crate::Model::batchnorm_affine`]). Training: batch statistics over N, H, W (biased
//! variance) and running statistics updated with `momentum` (unbiased variance), as
//! PyTorch does.
//!
//! Privately, a model shared for inference holds the affine map its owner computes
//! ([`Layer::inference_params`]: `scale`, `shift`), folded into the preceding convolution
//! where there is one ([`crate::Model::fold_batchnorm`]). A model shared for training holds
//! weight, bias and running statistics as shares: training normalises with the batch
//! statistics ([`batchnorm_forward_train`]), backpropagates through them
//! ([`batchnorm_backward`]) and updates the running statistics on shares; inference with
//! such a model applies the running statistics through a private inverse square root.

use cryptgpu_nonlinear as nl;

use super::common::*;
use super::context::shared_param;
use super::conv::{add_channel_bias, spread_channels};
use super::leaky_relu::blend;

/// The inverse square root of BatchNorm's variance + ε: 8 Newton iterations from CrypTen's
/// initial guess, which take the relative error below 10^-5 (f = 20 limits it beyond) for
/// var + ε in [0.01, 100], where 4 iterations need [0.1, 100]. Above 100 the iteration
/// diverges. It runs on one value per channel, so the iterations cost rounds, not bytes.
pub const BATCHNORM_INV_SQRT: nl::InvSqrtOptions = nl::InvSqrtOptions {
    iterations: 8,
    exp: nl::ExpOptions::DEFAULT,
};

/// Per-channel normalisation of `[N, C, H, W]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm2d {
    /// Channels `C`.
    pub channels: usize,
    /// Added to the variance.
    pub eps: f64,
    /// Weight of the new batch statistic in the running average.
    pub momentum: f64,
}

/// What the plaintext training pass keeps.
struct PlainSavedStats {
    xhat: Vec<f64>,
    inv_std: Vec<f64>,
}

/// What the private training pass keeps.
struct SavedStats<B: GpuBackend> {
    xhat: Rss<B>,
    inv_std: Rss<B>,
}

impl Attributes for BatchNorm2d {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("channels", self.channels);
        a.set("eps", self.eps);
        a.set("momentum", self.momentum);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            channels: a.dim("channels")?,
            eps: a.number("eps")?,
            momentum: a.number("momentum")?,
        })
    }
}

impl Layer for BatchNorm2d {
    const KIND: &'static str = "BatchNorm2d";

    fn params(&self) -> Vec<ParamDecl> {
        let c = vec![self.channels];
        vec![
            ParamDecl::trainable("weight", c.clone(), Init::Constant(1.0)),
            ParamDecl::trainable("bias", c.clone(), Init::Constant(0.0)),
            ParamDecl::buffer("running_mean", c.clone(), Init::Constant(0.0)),
            ParamDecl::buffer("running_var", c, Init::Constant(1.0)),
        ]
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let [_, c, _, _] = nchw(inputs[0])?;
        if c != self.channels {
            return Err(format!(
                "expects {} channels, got input {:?}",
                self.channels, inputs[0]
            ));
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return Err(format!("eps must be positive, got {}", self.eps));
        }
        Ok(inputs[0].to_vec())
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let channels = self.channels;
        let plane = x.shape()[2] * x.shape()[3];
        match cx.mode {
            Mode::Inference => {
                let (scale, shift) = affine(cx.model, cx.id, self.eps)?;
                let mut y = x.data().to_vec();
                for (i, chunk) in y.chunks_mut(plane).enumerate() {
                    let c = i % channels;
                    chunk.iter_mut().for_each(|v| *v = *v * scale[c] + shift[c]);
                }
                cx.output(y)
            }
            Mode::Training { .. } => {
                let count = (x.len() / channels) as f64;
                let mut mean = vec![0.0; channels];
                for (i, chunk) in x.data().chunks(plane).enumerate() {
                    mean[i % channels] += chunk.iter().sum::<f64>();
                }
                mean.iter_mut().for_each(|m| *m /= count);
                let mut var = vec![0.0; channels];
                for (i, chunk) in x.data().chunks(plane).enumerate() {
                    let c = i % channels;
                    var[c] += chunk.iter().map(|v| (v - mean[c]).powi(2)).sum::<f64>();
                }
                var.iter_mut().for_each(|v| *v /= count);
                let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
                let weight = cx.param("weight")?.data();
                let bias = cx.param("bias")?.data();
                let mut xhat = x.data().to_vec();
                let mut y = vec![0.0; x.len()];
                for (i, (xh, yc)) in xhat.chunks_mut(plane).zip(y.chunks_mut(plane)).enumerate() {
                    let c = i % channels;
                    for (a, b) in xh.iter_mut().zip(yc) {
                        *a = (*a - mean[c]) * inv_std[c];
                        *b = *a * weight[c] + bias[c];
                    }
                }
                let unbiased = if count > 1.0 {
                    count / (count - 1.0)
                } else {
                    1.0
                };
                let m = self.momentum;
                let old_mean = cx.param("running_mean")?.data();
                let old_var = cx.param("running_var")?.data();
                let new_mean = (0..channels)
                    .map(|c| (1.0 - m) * old_mean[c] + m * mean[c])
                    .collect();
                let new_var = (0..channels)
                    .map(|c| (1.0 - m) * old_var[c] + m * var[c] * unbiased)
                    .collect();
                cx.update_buffer("running_mean", Tensor::new(&[channels], new_mean)?);
                cx.update_buffer("running_var", Tensor::new(&[channels], new_var)?);
                cx.save(PlainSavedStats { xhat, inv_std });
                cx.output(y)
            }
        }
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let channels = self.channels;
        let plane = x.shape()[2] * x.shape()[3];
        let weight = cx.param("weight")?.data().to_vec();
        let mut dgamma = vec![0.0; channels];
        let mut dbeta = vec![0.0; channels];
        let dx = match cx.saved::<PlainSavedStats>() {
            Some(PlainSavedStats { xhat, inv_std }) => {
                for (i, (g, xh)) in dy.data().chunks(plane).zip(xhat.chunks(plane)).enumerate() {
                    let c = i % channels;
                    dbeta[c] += g.iter().sum::<f64>();
                    dgamma[c] += g.iter().zip(xh).map(|(a, b)| a * b).sum::<f64>();
                }
                let count = (x.len() / channels) as f64;
                let mut dx = vec![0.0; x.len()];
                for (i, ((d, g), xh)) in dx
                    .chunks_mut(plane)
                    .zip(dy.data().chunks(plane))
                    .zip(xhat.chunks(plane))
                    .enumerate()
                {
                    let c = i % channels;
                    let k = weight[c] * inv_std[c] / count;
                    for ((dv, gv), xv) in d.iter_mut().zip(g).zip(xh) {
                        *dv = k * (count * gv - dbeta[c] - xv * dgamma[c]);
                    }
                }
                dx
            }
            None => {
                let (scale, _) = affine(cx.model, cx.id, self.eps)?;
                let mean = cx.param("running_mean")?.data();
                let var = cx.param("running_var")?.data();
                let mut dx = vec![0.0; x.len()];
                for (i, ((d, g), xv)) in dx
                    .chunks_mut(plane)
                    .zip(dy.data().chunks(plane))
                    .zip(x.data().chunks(plane))
                    .enumerate()
                {
                    let c = i % channels;
                    let inv_std = 1.0 / (var[c] + self.eps).sqrt();
                    dbeta[c] += g.iter().sum::<f64>();
                    dgamma[c] += g
                        .iter()
                        .zip(xv)
                        .map(|(a, b)| a * (b - mean[c]) * inv_std)
                        .sum::<f64>();
                    d.iter_mut().zip(g).for_each(|(dv, gv)| *dv = gv * scale[c]);
                }
                dx
            }
        };
        cx.grad("weight", Tensor::new(&[channels], dgamma)?);
        cx.grad("bias", Tensor::new(&[channels], dbeta)?);
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "BatchNormalization";
        for suffix in ["weight", "bias", "running_mean", "running_var"] {
            n.param_input(suffix);
        }
        n.float("epsilon", self.eps);
        n.float("momentum", 1.0 - self.momentum);
        Ok(())
    }

    fn inference_params(&self) -> Option<Vec<(&'static str, Vec<usize>)>> {
        Some(vec![
            ("scale", vec![self.channels]),
            ("shift", vec![self.channels]),
        ])
    }

    fn inference_values(&self, model: &dyn ModelView, id: NodeId) -> Result<Vec<Vec<f64>>> {
        let (scale, shift) = affine(model, id, self.eps)?;
        Ok(vec![scale, shift])
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for BatchNorm2d {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let x = x[0];
        match (cx.sharing, cx.keep()) {
            (Sharing::Inference, false) => {
                let y = mul_channel_scale(cx.p, x, cx.param("scale")?)?;
                add_channel_bias(cx.p, &y, cx.param("shift")?)
            }
            (Sharing::Inference, true) => Err(NnError::InvalidArgument(format!(
                "BatchNorm2d `{}` was shared for inference (folded into an affine map); share \
                 the model with `SharedModel::share_for_training` to train it",
                cx.name
            ))),
            (Sharing::Training, false) => {
                let (scale, shift) = running_affine(cx, self.eps)?;
                let y = mul_channel_scale(cx.p, x, &scale)?;
                add_channel_bias(cx.p, &y, &shift)
            }
            (Sharing::Training, true) => {
                let (weight, bias) = (cx.param("weight")?.clone(), cx.param("bias")?.clone());
                let batch = batchnorm_forward_train(cx.p, x, self.eps, &weight, &bias)?;
                let m = (x.len() / x.shape()[1]) as u64;
                for (stat, fresh, unbiased) in [
                    ("running_mean", &batch.mean, 1.0),
                    ("running_var", &batch.var, m as f64 / (m.max(2) - 1) as f64),
                ] {
                    let old = cx.param(stat)?.clone();
                    let updated = blend(
                        cx.p,
                        &old,
                        1.0 - self.momentum,
                        fresh,
                        self.momentum * unbiased,
                    )?;
                    cx.update_buffer(stat, updated);
                }
                cx.save(SavedStats {
                    xhat: batch.xhat,
                    inv_std: batch.inv_std,
                });
                Ok(batch.output)
            }
        }
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let saved: &SavedStats<B> = cx.saved()?;
        let (xhat, inv_std) = (saved.xhat.clone(), saved.inv_std.clone());
        let weight = cx.param("weight")?.clone();
        let (dx, dgamma, dbeta) = batchnorm_backward(cx.p, &dy, &xhat, &inv_std, &weight)?;
        cx.grad("weight", dgamma);
        cx.grad("bias", dbeta);
        Ok(vec![Some(dx)])
    }
}

/// The per-channel `(scale, shift)` of BatchNorm node `node` (with `eps`) at inference:
/// `scale = weight / sqrt(running_var + eps)`, `shift = bias - running_mean * scale`
/// ([`crate::Model::batchnorm_affine`]).
pub(crate) fn affine(
    model: &dyn ModelView,
    node: NodeId,
    eps: f64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let weight = model.param(node, "weight")?.data();
    let bias = model.param(node, "bias")?.data();
    let mean = model.param(node, "running_mean")?.data();
    let var = model.param(node, "running_var")?.data();
    let scale: Vec<f64> = weight
        .iter()
        .zip(var)
        .map(|(w, v)| w / (v + eps).sqrt())
        .collect();
    let shift = bias
        .iter()
        .zip(mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    Ok((scale, shift))
}

/// The per-channel `(scale, shift)` from the shared running statistics: scale = weight /
/// √(running_var + ε), shift = bias − running_mean · scale.
fn running_affine<B: GpuBackend, T: Transport>(
    cx: &mut PrivateCx<'_, B, T>,
    eps: f64,
) -> Result<(Rss<B>, Rss<B>)> {
    let p = &mut *cx.p;
    let var = shared_param(cx.params, cx.name, "running_var")?;
    let var_eps = p.add_scalar(var, p.fixed().encode(eps)?)?;
    let inv_std = nl::inv_sqrt(p, &var_eps, BATCHNORM_INV_SQRT)?;
    let scale = p.mul_fixed(shared_param(cx.params, cx.name, "weight")?, &inv_std)?;
    let shifted = p.mul_fixed(shared_param(cx.params, cx.name, "running_mean")?, &scale)?;
    let shift = p.sub(shared_param(cx.params, cx.name, "bias")?, &shifted)?;
    Ok((scale, shift))
}

/// BatchNorm's forward pass with batch statistics, on shares.
pub struct BatchNormBatch<B: GpuBackend> {
    /// The layer's output, `[N, C, H, W]`.
    pub output: Rss<B>,
    /// The normalised input (x − μ)/√(σ² + ε), kept for the backward pass.
    pub xhat: Rss<B>,
    /// 1/√(σ² + ε) per channel, `[C]`, kept for the backward pass.
    pub inv_std: Rss<B>,
    /// The batch mean per channel, `[C]`.
    pub mean: Rss<B>,
    /// The biased batch variance per channel (over m = N·H·W values), `[C]`.
    pub var: Rss<B>,
}

/// BatchNorm in training on a shared `[N, C, H, W]` batch:
/// y = weight · (x − μ) / √(σ² + ε) + bias per channel, with μ and σ² (biased) over the
/// batch and the plane, `weight` and `bias` shared `[C]`. Three full-size fixed-point
/// products (the squares, x̂ and the scaling by the weight), two divisions by m and the
/// inverse square root ([`BATCHNORM_INV_SQRT`]) of C values.
pub fn batchnorm_forward_train<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    x: &Rss<B>,
    eps: f64,
    weight: &Rss<B>,
    bias: &Rss<B>,
) -> Result<BatchNormBatch<B>> {
    let m = per_channel_count("batchnorm_forward_train", x.shape(), weight)?;
    per_channel_count("batchnorm_forward_train", x.shape(), bias)?;
    let mean = p.div_public(&sum_per_channel(p, x)?, m)?;
    let centred = p.sub(x, &spread_channels(p, &mean, x.shape())?)?;
    let squares = p.square_fixed(&centred)?;
    let var = p.div_public(&sum_per_channel(p, &squares)?, m)?;
    let var_eps = p.add_scalar(&var, p.fixed().encode(eps)?)?;
    let inv_std = nl::inv_sqrt(p, &var_eps, BATCHNORM_INV_SQRT)?;
    let xhat = mul_channel_scale(p, &centred, &inv_std)?;
    let scaled = mul_channel_scale(p, &xhat, weight)?;
    let output = add_channel_bias(p, &scaled, bias)?;
    Ok(BatchNormBatch {
        output,
        xhat,
        inv_std,
        mean,
        var,
    })
}

/// BatchNorm's backward pass with batch statistics, from what
/// [`batchnorm_forward_train`] kept: `(dx, dweight, dbias)` with dbias = Σ dy,
/// dweight = Σ dy·x̂ and dx = weight·inv_std · (dy − dbias/m − x̂ · dweight/m), sums per
/// channel over its m values. Three full-size fixed-point products.
pub fn batchnorm_backward<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    dy: &Rss<B>,
    xhat: &Rss<B>,
    inv_std: &Rss<B>,
    weight: &Rss<B>,
) -> Result<(Rss<B>, Rss<B>, Rss<B>)> {
    let m = per_channel_count("batchnorm_backward", dy.shape(), weight)?;
    per_channel_count("batchnorm_backward", dy.shape(), inv_std)?;
    if xhat.shape() != dy.shape() {
        return Err(NnError::InvalidArgument(format!(
            "batchnorm_backward: x̂ of shape {:?} for a gradient of shape {:?}",
            xhat.shape(),
            dy.shape()
        )));
    }
    let dbias = sum_per_channel(p, dy)?;
    let products = p.mul_fixed(dy, xhat)?;
    let dweight = sum_per_channel(p, &products)?;
    let mean_dy = p.div_public(&dbias, m)?;
    let mean_dyx = p.div_public(&dweight, m)?;
    let along_xhat = mul_channel_scale(p, xhat, &mean_dyx)?;
    let centred = p.sub(
        &p.sub(dy, &spread_channels(p, &mean_dy, dy.shape())?)?,
        &along_xhat,
    )?;
    let factor = p.mul_fixed(weight, inv_std)?;
    let dx = mul_channel_scale(p, &centred, &factor)?;
    Ok((dx, dweight, dbias))
}

/// m = N·H·W, the values per channel of `[N, C, H, W]`, after checking that `per_channel`
/// is `[C]`.
fn per_channel_count<B: GpuBackend>(
    op: &str,
    shape: &[usize],
    per_channel: &Rss<B>,
) -> Result<u64> {
    match shape {
        &[n, c, h, w] if per_channel.shape() == [c] && n * h * w > 0 => Ok((n * h * w) as u64),
        _ => Err(NnError::InvalidArgument(format!(
            "{op}: a non-empty [N, C, H, W] input with [C] per-channel values, not {shape:?} \
             with {:?}",
            per_channel.shape()
        ))),
    }
}

/// Σ over every axis but the channel axis 1 of `[N, C, ...]`: `[C]` (local).
fn sum_per_channel<B: GpuBackend, T: Transport>(p: &Party<B, T>, x: &Rss<B>) -> Result<Rss<B>> {
    let rank = x.shape().len();
    Ok(p.linear(x, |b, t| {
        let mut t = t.clone();
        for axis in (2..rank).rev() {
            t = b.sum_axis(&t, axis)?;
        }
        b.sum_axis(&t, 0)
    })?)
}

/// y · s for a shared per-channel scale `[C]` on `[N, C, ...]` (fixed point, 2 rounds).
fn mul_channel_scale<B: GpuBackend, T: Transport>(
    p: &mut Party<B, T>,
    y: &Rss<B>,
    scale: &Rss<B>,
) -> Result<Rss<B>> {
    let spread = spread_channels(p, scale, y.shape())?;
    Ok(p.mul_fixed(y, &spread)?)
}

/// ONNX `BatchNormalization` in inference form (one output).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    if attr_int(node, "training_mode", 0) != 0 {
        return Err(bad(node, "training_mode = 1 is not supported"));
    }
    let mut tensors = Vec::new();
    for i in 1..5 {
        let t = im
            .constant(node, i)?
            .ok_or_else(|| bad(node, format!("input {i} is missing")))?;
        tensors.push(t);
    }
    let channels = tensors[0].values.len();
    if tensors.iter().any(|t| t.values.len() != channels) {
        return Err(bad(node, "scale, bias, mean and var differ in length"));
    }
    let name = im.node_name(node, Some(&tensors[0].name));
    for (suffix, t) in ["weight", "bias", "running_mean", "running_var"]
        .iter()
        .zip(&tensors)
    {
        im.insert_param(&name, suffix, Tensor::new(&[channels], t.values.clone())?);
    }
    let layer = BatchNorm2d {
        channels,
        eps: f64::from(attr_float(node, "epsilon", 1e-5)),
        momentum: 1.0 - f64::from(attr_float(node, "momentum", 0.9)),
    };
    // BatchNorm1d of [N, C] (after a Linear) or [N, C, L]: as [N, C, L, 1].
    let shape = im.shape(x).to_vec();
    let planar = match shape[..] {
        [_, _, _, _] => None,
        [_, c] => Some(vec![c, 1, 1]),
        [_, c, l] => Some(vec![c, l, 1]),
        _ => {
            return Err(bad(
                node,
                format!(
                    "needs [N, C], [N, C, L] or [N, C, H, W], got {}",
                    im.describe(x)
                ),
            ));
        }
    };
    let Some(planar) = planar else {
        im.push(node, name, layer, &[x])?;
        return Ok(());
    };
    let reshape = |shape: Vec<usize>| super::reshape::Reshape { shape };
    let to_planes = im.push_internal(format!("{name}.planes"), reshape(planar), &[x])?;
    let normalised = im.push(node, name, layer, &[to_planes])?;
    let back = im.push_internal(
        format!("{}.back", im.name_of(normalised)),
        reshape(shape[1..].to_vec()),
        &[normalised],
    )?;
    im.alias(node, back);
    Ok(())
}
