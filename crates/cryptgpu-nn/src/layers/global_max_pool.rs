//! `GlobalMaxPool`: the max of each channel's plane, `[N, C, H, W] → [N, C, 1, 1]`; ONNX
//! `GlobalMaxPool`. Privately a max-pool with the plane as its window.

use cryptgpu_backend::Pool2dParams;
use cryptgpu_nonlinear as nl;

use super::common::*;

/// Global max pooling.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalMaxPool;

impl NoAttributes for GlobalMaxPool {}

impl Layer for GlobalMaxPool {
    const KIND: &'static str = "GlobalMaxPool";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        global_pool_shape(inputs[0])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let plane = x.shape()[2] * x.shape()[3];
        let mut y = Vec::new();
        let mut arg = Vec::new();
        for p in x.data().chunks(plane) {
            let mut best = 0;
            for (i, &v) in p.iter().enumerate() {
                if v > p[best] {
                    best = i;
                }
            }
            y.push(p[best]);
            arg.push(best);
        }
        cx.save(arg);
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let plane = x.shape()[2] * x.shape()[3];
        let arg: &Vec<usize> = cx
            .saved()
            .ok_or_else(|| NnError::Graph("global max-pool kept no positions".into()))?;
        let mut dx = vec![0.0; x.len()];
        for (p, (&g, &a)) in dy.data().iter().zip(arg).enumerate() {
            dx[p * plane + a] = g;
        }
        Ok(vec![cx.like_input(0, dx)?])
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for GlobalMaxPool {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let hw = [x[0].shape()[2], x[0].shape()[3]];
        let params = Pool2dParams {
            kernel: hw,
            stride: hw,
            padding: [0, 0],
        };
        if !cx.keep() {
            return Ok(nl::max_pool2d_values(cx.p, x[0], params)?);
        }
        let pool = nl::max_pool2d(cx.p, x[0], params)?;
        let out = pool.output.clone();
        cx.save(pool);
        Ok(out)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let pool: &nl::MaxPool<B> = cx.saved()?;
        let pool = pool.clone();
        Ok(vec![Some(nl::max_pool2d_backward(cx.p, &dy, &pool)?)])
    }
}

/// ONNX `GlobalMaxPool`.
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    im.unary(node, GlobalMaxPool)
}
