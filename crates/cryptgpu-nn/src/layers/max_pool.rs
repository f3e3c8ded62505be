//! `MaxPool2d`: the max over each window (padding never wins), with `ceil_mode` and any
//! padding; ONNX `MaxPool`. Privately a tournament, which in training keeps its one-hot
//! winners (shared bits) for the backward pass and at inference keeps nothing; windows the
//! backends cannot pool as they are run on an explicitly padded input whose padding holds
//! the comparison floor −2^ℓ (`Party::comparison_floor`). Exact for inputs in the whole
//! comparison domain [−2^ℓ, 2^ℓ) (the padding never changes a window's max; where a
//! window's inputs all sit at the floor, a padding position may take the tie, so in
//! training its gradient goes to the padding and is dropped).

use cryptgpu_backend::Pool2dParams;
use cryptgpu_nonlinear as nl;

use super::common::*;
use super::pool::{PoolWindow, pad_private, unpad_private};

/// What a private max-pool keeps: the tournament's winners and the padding added first.
struct Saved<B: GpuBackend> {
    pool: nl::MaxPool<B>,
    pads: [usize; 4],
    hw: [usize; 2],
}

/// Max-pooling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// The window.
    pub window: PoolWindow,
}

impl MaxPool2d {
    /// Max-pooling with the backends' symmetric parameters.
    pub fn new(params: Pool2dParams) -> Self {
        Self {
            window: params.into(),
        }
    }
}

impl Attributes for MaxPool2d {
    fn write_attrs(&self, a: &mut Attrs) {
        self.window.write(a);
    }

    fn read_attrs(a: &Attrs) -> Result<Self> {
        Ok(Self {
            window: PoolWindow::read(a)?,
        })
    }
}

impl Layer for MaxPool2d {
    const KIND: &'static str = "MaxPool2d";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        self.window.output_shape(inputs[0])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let x = x[0];
        let w = x.shape()[3];
        let mut y = Vec::with_capacity(cx.out_shape.iter().product());
        let mut arg = Vec::with_capacity(y.capacity());
        self.window
            .plain_windows(x, cx.out_shape, |plane, rows, cols, _| {
                let mut best: Option<usize> = None;
                for i in rows {
                    for j in cols.clone() {
                        let pos = i * w + j;
                        if best.is_none_or(|b| plane[pos] > plane[b]) {
                            best = Some(pos);
                        }
                    }
                }
                let best = best.ok_or_else(|| {
                    NnError::Graph(format!("a window of `{}` is all padding", cx.name()))
                })?;
                y.push(plane[best]);
                arg.push(best as u32);
                Ok(())
            })?;
        cx.save(arg);
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let x = cx.inputs[0];
        let plane = x.shape()[2] * x.shape()[3];
        let out_plane = dy.shape()[2] * dy.shape()[3];
        let arg: &Vec<u32> = cx
            .saved()
            .ok_or_else(|| NnError::Graph("max-pool kept no positions".into()))?;
        let mut dx = vec![0.0; x.len()];
        for (p, (g, a)) in dy
            .data()
            .chunks(out_plane)
            .zip(arg.chunks(out_plane))
            .enumerate()
        {
            for (&gv, &av) in g.iter().zip(a) {
                dx[p * plane + av as usize] += gv;
            }
        }
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        self.window.export(n);
        Ok(())
    }

    fn takes_maxima(&self) -> bool {
        true
    }

    /// The moved layer is a ReLU (the only one that [`Layer::commutes_with_max`]): keeps in
    /// the pool's saved state only the winners whose max the ReLU passed (`moved_saved`, the
    /// ReLU's DReLU bits), so that this pool's backward pass is the pair's
    /// ([`nl::gate_winners`]).
    fn absorb_moved<B: GpuBackend, T: Transport>(
        &self,
        p: &mut Party<B, T>,
        saved: &mut Option<Box<dyn std::any::Any>>,
        moved_saved: Option<Box<dyn std::any::Any>>,
    ) -> Result<()> {
        let lost = || NnError::Graph("a max-pool and its ReLU lost their training state".into());
        let drelu = moved_saved
            .and_then(|d| d.downcast::<cryptgpu_share::SharedBits<B>>().ok())
            .ok_or_else(lost)?;
        let state = saved
            .as_mut()
            .and_then(|s| s.downcast_mut::<Saved<B>>())
            .ok_or_else(lost)?;
        state.pool = nl::gate_winners(p, &state.pool, &drelu)?;
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for MaxPool2d {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let x = x[0];
        let hw = [x.shape()[2], x.shape()[3]];
        let (input, params, pads) = match self.window.symmetric() {
            Some(params) => (x.clone(), params, [0; 4]),
            None => {
                let pads = self.window.explicit_pads(hw[0], hw[1]);
                let params = Pool2dParams {
                    kernel: self.window.kernel,
                    stride: self.window.stride,
                    padding: [0, 0],
                };
                let floor = cx.p.comparison_floor();
                (pad_private(cx.p, x, pads, floor)?, params, pads)
            }
        };
        if !cx.keep() {
            return Ok(nl::max_pool2d_values(cx.p, &input, params)?);
        }
        let pool = nl::max_pool2d(cx.p, &input, params)?;
        let out = pool.output.clone();
        cx.save(Saved { pool, pads, hw });
        Ok(out)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, dy: Rss<B>) -> Grads<B> {
        let saved: &Saved<B> = cx.saved()?;
        let (pads, hw) = (saved.pads, saved.hw);
        let dx = nl::max_pool2d_backward(cx.p, &dy, &saved.pool)?;
        Ok(vec![Some(unpad_private(cx.p, &dx, pads, hw)?)])
    }
}

/// ONNX `MaxPool` (one output; no indices).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let window = PoolWindow::import(node)?;
    im.unary(node, MaxPool2d { window })
}
