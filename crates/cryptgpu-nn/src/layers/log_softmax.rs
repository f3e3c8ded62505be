//! `LogSoftmax` over axis 1 of `[N, K]` (how tutorial MNIST networks end, with NLL loss);
//! only as the model's output node, like [`super::softmax::Softmax`]: the arg-max of the
//! logits is the prediction, and training takes the logits. Privately x − max − log Σ
//! exp(x − max) with [`nl::softmax`]'s pieces and [`nl::log`]. ONNX `LogSoftmax`.

use cryptgpu_nonlinear as nl;

use super::common::*;

/// Row-wise log-softmax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSoftmax;

impl NoAttributes for LogSoftmax {}

impl Layer for LogSoftmax {
    const KIND: &'static str = "LogSoftmax";

    fn is_output_activation(&self) -> bool {
        true
    }

    fn only_as_output(&self) -> bool {
        true
    }

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        rows_shape(inputs[0])
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        let k = x[0].shape()[1];
        let mut y = x[0].data().to_vec();
        for row in y.chunks_mut(k) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            row.iter_mut().for_each(|v| *v -= lse);
        }
        cx.output(y)
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        let k = dy.shape()[1];
        let mut dx = dy.data().to_vec();
        for (row, y) in dx.chunks_mut(k).zip(cx.output.data().chunks(k)) {
            let sum: f64 = row.iter().sum();
            row.iter_mut().zip(y).for_each(|(g, y)| *g -= y.exp() * sum);
        }
        Ok(vec![cx.like_input(0, dx)?])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "LogSoftmax";
        n.int("axis", 1);
        Ok(())
    }
}

impl<B: GpuBackend, T: Transport> PrivateLayer<B, T> for LogSoftmax {
    fn private_forward(&self, cx: &mut PrivateCx<'_, B, T>, x: &[&Rss<B>]) -> Result<Rss<B>> {
        let x = x[0];
        let shape = x.shape().to_vec();
        let max = nl::max(cx.p, x, 1, false)?.values;
        let max = cx.p.linear(&max, |b, t| {
            b.broadcast_to(&b.reshape(t, &[shape[0], 1])?, &shape)
        })?;
        let centred = cx.p.sub(x, &max)?;
        let e = nl::exp(cx.p, &centred, nl::ExpOptions::default())?;
        let sum = cx.p.linear(&e, |b, t| b.sum_axis(t, 1))?;
        let log = nl::log(cx.p, &sum, nl::LogOptions::default())?;
        let log = cx.p.linear(&log, |b, t| {
            b.broadcast_to(&b.reshape(t, &[shape[0], 1])?, &shape)
        })?;
        Ok(cx.p.sub(&centred, &log)?)
    }

    fn private_backward(&self, cx: &mut PrivateBackCx<'_, B, T>, _: Rss<B>) -> Grads<B> {
        Err(cx.before_output_activation("log-softmax"))
    }
}
