//! `GlobalAvgPool`: the mean of each channel's plane, `[N, C, H, W] → [N, C, 1, 1]`; ONNX
//! `GlobalAveragePool` and `ReduceMean` over the spatial axes (how the dynamo exporter
//! writes `AdaptiveAvgPool2d(1)`; with `keepdims = 0` a flatten to `[N, C]` follows).

use cryptgpu_nonlinear as nl;

use super::common::*;
use super::flatten::Flatten;

/// Global average pooling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalAvgPool;

impl NoAttributes for GlobalAvgPool {}

impl Layer for GlobalAvgPool {
    const KIND: &'static str = "GlobalAvgPool";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        global_pool_shape(inputs[0])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let plane = x.shape()[2] * x.shape()[3];
        cx.output(
            x.data()
                .chunks(plane)
                .map(|p| p.iter().sum::<f64>() / plane as f64)
                .collect(),
        )
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let plane = x.shape()[2] * x.shape()[3];
        let scale = 1.0 / plane as f64;
        let dx = dy
            .data()
            .iter()
            .flat_map(|&g| std::iter::repeat_n(g * scale, plane))
            .collect();
        Ok(vec![cx.like_input(0, dx)?])
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for GlobalAvgPool {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let y = nl::global_avg_pool(cx.p, x[0])?;
        cx.reshape_to_output(&y)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let shape = cx.input_shapes[0].clone();
        let flat = cx.p.linear(&dy, |b, t| b.reshape(t, &shape[..2]))?;
        Ok(vec![Some(nl::global_avg_pool_backward(
            cx.p, &flat, &shape,
        )?)])
    }
}

/// ONNX `GlobalAveragePool`, and `ReduceMean` over axes {2, 3} of an NCHW value (axes as
/// an attribute, or an input from opset 18).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    if node.op_type == "GlobalAveragePool" {
        return im.unary(node, GlobalAvgPool);
    }
    let x = im.input_node(node, 0)?;
    let rank = im.shape(x).len() as i64;
    let axes: Vec<i64> = match im.constant(node, 1)? {
        Some(t) => t.values.iter().map(|&v| v as i64).collect(),
        None => attr_ints(node, "axes").unwrap_or_default(),
    };
    let mut axes: Vec<i64> = axes
        .iter()
        .map(|&a| if a < 0 { a + rank } else { a })
        .collect();
    axes.sort_unstable();
    axes.dedup();
    if rank != 4 || axes != [2, 3] {
        if axes.iter().any(|&a| !(0..rank).contains(&a)) {
            return Err(bad(
                node,
                format!("axes {axes:?} are out of range for {}", im.describe(x)),
            ));
        }
        let axes = axes.iter().map(|&a| a as usize).collect();
        return super::mean::import(im, node, x, axes);
    }
    let keepdims = attr_int(node, "keepdims", 1) != 0;
    let name = im.node_name(node, None);
    if keepdims {
        im.push(node, name, GlobalAvgPool, &[x])?;
    } else {
        let pooled = im.push_internal(format!("{name}.pool"), GlobalAvgPool, &[x])?;
        im.push(node, name, Flatten, &[pooled])?;
    }
    Ok(())
}
