//! `Pad`: zeros around each plane of an NCHW value (`[top, left, bottom, right]`); ONNX
//! `Pad` in constant mode with value 0 over the spatial axes. Local on shares.

use super::common::*;
use super::pool::{pad_private, unpad_private};

/// Zero padding of the last two axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pad {
    /// `[top, left, bottom, right]`.
    pub pads: [usize; 4],
}

impl Attributes for Pad {
    fn write_attrs(&self, a: &mut Attrs) {
        a.set("pads", self.pads.to_vec());
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        let pads =
            <[usize; 4]>::try_from(a.dims("pads")?).map_err(|_| a.err("`pads` must be 4 sizes"))?;
        Ok(Self { pads })
    }
}

impl Layer for Pad {
    const KIND: &'static str = "Pad";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        let [n, c, h, w] = nchw(inputs[0])?;
        let [t, l, b, r] = self.pads;
        Ok(vec![n, c, h + t + b, w + l + r])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let [t, l, _, _] = self.pads;
        let (oh, ow) = (cx.out_shape[2], cx.out_shape[3]);
        let mut y = vec![0.0; cx.out_shape.iter().product()];
        for (src, dst) in x.data().chunks(h * w).zip(y.chunks_mut(oh * ow)) {
            for i in 0..h {
                dst[(i + t) * ow + l..(i + t) * ow + l + w]
                    .copy_from_slice(&src[i * w..(i + 1) * w]);
            }
        }
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let [t, l, _, _] = self.pads;
        let (oh, ow) = (dy.shape()[2], dy.shape()[3]);
        let mut dx = Vec::with_capacity(x.len());
        for src in dy.data().chunks(oh * ow) {
            for i in 0..h {
                dx.extend_from_slice(&src[(i + t) * ow + l..(i + t) * ow + l + w]);
            }
        }
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Pad";
        let [t, l, b, r] = self.pads.map(|v| v as f64);
        n.constant_input(
            "pads",
            Tensor::new(&[8], vec![0.0, 0.0, t, l, 0.0, 0.0, b, r])?,
        );
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for Pad {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        pad_private(cx.p, x[0], self.pads, 0)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let hw = [cx.input_shapes[0][2], cx.input_shapes[0][3]];
        Ok(vec![Some(unpad_private(cx.p, &dy, self.pads, hw)?)])
    }
}

/// ONNX `Pad`: constant mode, value 0, non-negative pads on the last two axes of an NCHW
/// value (pads as input 1 from opset 11, an attribute before).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    im.input_node(node, 0)?;
    if let Some(a) = node.attribute("mode") {
        let mode = String::from_utf8_lossy(&a.s);
        if mode != "constant" {
            return Err(bad(
                node,
                format!("mode {mode} is not supported (constant is)"),
            ));
        }
    }
    if let Some(v) = im.constant(node, 2)?
        && v.values.iter().any(|&v| v != 0.0)
    {
        return Err(bad(node, "only padding with zeros is supported"));
    }
    if node.inputs.get(3).is_some_and(|a| !a.is_empty()) {
        return Err(bad(node, "the axes input is not supported"));
    }
    let pads: Vec<i64> = match im.constant(node, 1)? {
        Some(t) => t.values.iter().map(|&v| v as i64).collect(),
        None => attr_ints(node, "pads").ok_or_else(|| bad(node, "has no pads"))?,
    };
    let &[0, 0, t, l, 0, 0, b, r] = &pads[..] else {
        return Err(bad(
            node,
            format!(
                "only padding of the last two axes of an NCHW value is supported, got {pads:?}"
            ),
        ));
    };
    if [t, l, b, r].iter().any(|&v| v < 0) {
        return Err(bad(node, "negative pads (cropping) are not supported"));
    }
    let layer = Pad {
        pads: [t, l, b, r].map(|v| v as usize),
    };
    im.unary(node, layer)
}
