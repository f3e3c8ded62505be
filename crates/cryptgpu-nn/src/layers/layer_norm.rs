//! `LayerNorm`: (x − mean)/√(variance + ε)·weight + bias over the last axis, PyTorch's
//! `nn.LayerNorm(d)` (parameters `weight` and `bias` of `[d]`). Privately
//! [`nl::layer_norm`] (44 rounds; 2·10^-3 on its unit-scale outputs for rows whose
//! Σ (x − mean)² + d·ε lies in [3.8·10^-6, 4.2·10^6)) and one product by the weight; the
//! backward pass reuses x̂ and the rows' 1/σ ([`nl::layer_norm_backward`]). ONNX
//! `LayerNormalization` (opset 17) over the last axis; the decomposed form a hand-written
//! LayerNorm exports (ReduceMean, Sub, Pow, Add, Sqrt, Div) imports as those layers, and
//! `InstanceNormalization` (GroupNorm) as a LayerNorm between reshapes.

use cryptgpu_nonlinear as nl;

use super::common::*;

/// Layer normalisation over the last axis, of `size` values.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    /// The length of the normalised (last) axis.
    pub size: usize,
    /// ε.
    pub epsilon: f64,
}

impl Attributes for LayerNorm {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("size", self.size);
        a.set("epsilon", self.epsilon);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let epsilon = a.number("epsilon")?;
        if !(epsilon.is_finite() && (0.0..=1.0).contains(&epsilon)) {
            return Err(a.err(format!("`epsilon` {epsilon} must be in [0, 1]")));
        }
        Ok(Self {
            size: a.dim("size")?,
            epsilon,
        })
    }
}

/// The rows of a plaintext value over its last axis of `d`: (x̂, 1/σ) per row.
fn normalise(x: &[f64], d: usize, epsilon: f64) -> (Vec<f64>, Vec<f64>) {
    let mut normalised = Vec::with_capacity(x.len());
    let mut inverse = Vec::with_capacity(x.len() / d.max(1));
    for row in x.chunks(d) {
        let mean = row.iter().sum::<f64>() / d as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
        let inv = 1.0 / (var + epsilon).sqrt();
        normalised.extend(row.iter().map(|v| (v - mean) * inv));
        inverse.push(inv);
    }
    (normalised, inverse)
}

impl Layer for LayerNorm {
    const KIND: &'static str = "LayerNorm";

    fn params(&self) -> Vec<ParamDecl> {
        vec![
            ParamDecl::trainable("weight", vec![self.size], Init::Constant(1.0)),
            ParamDecl::trainable("bias", vec![self.size], Init::Constant(0.0)),
        ]
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        match inputs[0] {
            [_, .., d] if *d == self.size && self.size > 0 => Ok(inputs[0].to_vec()),
            other => Err(format!("needs [N, .., {}], got {other:?}", self.size)),
        }
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let d = self.size;
        let (w, b) = (cx.param("weight")?.clone(), cx.param("bias")?.clone());
        let (normalised, _) = normalise(x[0].data(), d, self.epsilon);
        let y = normalised
            .iter()
            .enumerate()
            .map(|(i, v)| v * w.data()[i % d] + b.data()[i % d])
            .collect();
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let d = self.size;
        let w = cx.param("weight")?.clone();
        let (normalised, inverse) = normalise(cx.inputs[0].data(), d, self.epsilon);
        let (mut dw, mut db) = (vec![0.0; d], vec![0.0; d]);
        let mut dx = Vec::with_capacity(normalised.len());
        for ((xh, g), inv) in normalised.chunks(d).zip(dy.data().chunks(d)).zip(&inverse) {
            let gw: Vec<f64> = g.iter().zip(w.data()).map(|(g, w)| g * w).collect();
            let mean_g = gw.iter().sum::<f64>() / d as f64;
            let mean_gx = gw.iter().zip(xh).map(|(g, x)| g * x).sum::<f64>() / d as f64;
            for j in 0..d {
                dw[j] += g[j] * xh[j];
                db[j] += g[j];
                dx.push(inv * (gw[j] - mean_g - xh[j] * mean_gx));
            }
        }
        cx.grad("weight", Tensor::new(&[d], dw)?);
        cx.grad("bias", Tensor::new(&[d], db)?);
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        Err(NnError::Graph(format!(
            "LayerNorm `{}` has no ONNX form at opset 13",
            n.name
        )))
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for LayerNorm {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let shape = x[0].shape().to_vec();
        let (normalised, inverse) = nl::layer_norm_parts(cx.p, x[0], self.epsilon)?;
        let w = private_broadcast(cx.p, cx.param("weight")?, &shape)?;
        let b = private_broadcast(cx.p, cx.param("bias")?, &shape)?;
        let scaled = cx.p.mul_fixed(&normalised, &w)?;
        let y = cx.p.add(&scaled, &b)?;
        cx.save((normalised, inverse));
        Ok(y)
    }

    /// dbias = Σ dy, dweight = Σ dy·x̂ over the rows; dx by
    /// [`nl::layer_norm_backward`] of dy·weight.
    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let (normalised, inverse): &(Rss<B>, Rss<B>) = cx.saved()?;
        let shape = dy.shape().to_vec();
        let d = self.size;
        let rows = dy.len() / d;
        let over_rows = |p: &Party<B, T>, t: &Rss<B>| -> Result<Rss<B>> {
            Ok(p.linear(t, |b, s| b.sum_axis(&b.reshape(s, &[rows, d])?, 0))?)
        };
        let weighted = cx.p.mul_fixed(&dy, normalised)?;
        let dw = over_rows(cx.p, &weighted)?;
        let db = over_rows(cx.p, &dy)?;
        let dx = if cx.wants(0) {
            let w = private_broadcast(cx.p, cx.param("weight")?, &shape)?;
            let g = cx.p.mul_fixed(&dy, &w)?;
            Some(nl::layer_norm_backward(cx.p, &g, normalised, inverse)?)
        } else {
            None
        };
        cx.grad("weight", dw);
        cx.grad("bias", db);
        Ok(vec![dx])
    }
}

/// ONNX `LayerNormalization` over the last axis, with a constant scale and bias; and
/// `InstanceNormalization` (see [`import_instance_norm`]).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    if node.op_type == "InstanceNormalization" {
        return import_instance_norm(im, node);
    }
    let x = im.input_node(node, 0)?;
    let shape = im.shape(x).to_vec();
    let rank = shape.len() as i64;
    let axis = attr_int(node, "axis", -1);
    if !(axis == -1 || axis == rank - 1) || rank < 2 {
        return Err(bad(
            node,
            format!(
                "only a normalisation over the last axis is supported, got axis {axis} of {}",
                im.describe(x)
            ),
        ));
    }
    let size = shape[shape.len() - 1];
    let scale = im
        .constant(node, 1)?
        .ok_or_else(|| bad(node, "needs a constant scale"))?;
    let bias = im.constant(node, 2)?;
    let name = im.node_name(node, Some(&scale.name));
    for (suffix, t) in [("weight", Some(&scale)), ("bias", bias.as_ref())] {
        let values = match t {
            Some(t) if t.values.len() == size => t.values.clone(),
            Some(t) => {
                return Err(bad(
                    node,
                    format!("{suffix} of shape {:?} does not fit {size} values", t.dims),
                ));
            }
            None => vec![0.0; size],
        };
        im.insert_param(&name, suffix, Tensor::new(&[size], values)?);
    }
    let epsilon = f64::from(attr_float(node, "epsilon", 1e-5));
    im.push(node, name, LayerNorm { size, epsilon }, &[x])?;
    Ok(())
}

/// ONNX `InstanceNormalization` of `[N, C, ..]` (and GroupNorm, which torch exports as an
/// instance norm of `[N, G, ..]` between two reshapes): each example's channel normalised
/// over the remaining axes, then a per-channel scale and bias. Imported as a reshape to
/// `[N, C, L]`, a [`LayerNorm`] over L (weight 1, bias 0), the reshape back, and the
/// per-channel scale and bias.
fn import_instance_norm(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    let shape = im.shape(x).to_vec();
    if shape.len() < 3 {
        return Err(bad(
            node,
            format!("needs [N, C, ..] of rank 3 or more, got {}", im.describe(x)),
        ));
    }
    let channels = shape[1];
    let size: usize = shape[2..].iter().product();
    let constant = |i: usize, what: &str| -> Result<Vec<f64>> {
        match im.constant(node, i)? {
            Some(t) if t.values.len() == channels => Ok(t.values),
            _ => Err(bad(
                node,
                format!("needs a constant {what} of {channels} values"),
            )),
        }
    };
    let (scale, bias) = (constant(1, "scale")?, constant(2, "bias")?);
    let name = im.node_name(node, None);
    let rows = im.push_internal(
        format!("{name}.rows"),
        super::reshape::Reshape {
            shape: vec![channels, size],
        },
        &[x],
    )?;
    let epsilon = f64::from(attr_float(node, "epsilon", 1e-5));
    let norm = im.push_internal(format!("{name}.norm"), LayerNorm { size, epsilon }, &[rows])?;
    let norm_name = im.name_of(norm).to_owned();
    im.insert_param(&norm_name, "weight", Tensor::full(&[size], 1.0));
    im.insert_param(&norm_name, "bias", Tensor::zeros(&[size]));
    let back = im.push_internal(
        format!("{name}.back"),
        super::reshape::Reshape {
            shape: shape[1..].to_vec(),
        },
        &[norm],
    )?;
    let mut per_channel = vec![channels];
    per_channel.extend(std::iter::repeat_n(1, shape.len() - 2));
    let scaled = super::mul_const::push_scale(
        im,
        &format!("{name}.scale"),
        Tensor::new(&per_channel, scale)?,
        back,
    )?;
    let shifted = super::add_const::push_offset(
        im,
        &format!("{name}.shift"),
        Tensor::new(&per_channel, bias)?,
        scaled,
    )?;
    im.alias(node, shifted);
    Ok(())
}
