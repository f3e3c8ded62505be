//! `Flatten`: `[N, d1, d2, ...] → [N, d1·d2·...]`; ONNX `Flatten` with axis 1 (axis 0 and
//! other axes would move the batch axis).

use super::*;
use crate::onnx::attr_int;

/// Flattens all but the batch axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flatten;

impl Layer for Flatten {
    const KIND: &'static str = "Flatten";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        match inputs[0] {
            [n, rest @ ..] if !rest.is_empty() => Ok(vec![*n, rest.iter().product()]),
            other => Err(format!("needs at least 2 axes, got {other:?}")),
        }
    }

    fn write_attrs(&self, _: &mut Attrs) {}

    fn read_attrs(_: &Attrs) -> Result<Self> {
        Ok(Flatten)
    }

    fn plain_forward(&self, cx: &mut PlainCx<'_>, x: &[&Tensor]) -> Result<Tensor> {
        cx.output(x[0].data().to_vec())
    }

    fn plain_backward(&self, cx: &mut PlainBackCx<'_>, dy: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![cx.like_input(0, dy.data().to_vec())?])
    }

    fn private_forward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateCx<'_, B, T>,
        x: &[&Rss<B>],
    ) -> Result<Rss<B>> {
        let out = cx.out_shape.to_vec();
        Ok(cx.p.linear(x[0], |b, t| b.reshape(t, &out))?)
    }

    fn private_backward<B: GpuBackend, T: Transport>(
        &self,
        cx: &mut PrivateBackCx<'_, B, T>,
        dy: Rss<B>,
    ) -> Result<Vec<Option<Rss<B>>>> {
        let shape = cx.input_shapes[0].clone();
        Ok(vec![Some(cx.p.linear(&dy, |b, t| b.reshape(t, &shape))?)])
    }

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Flatten";
        n.int("axis", 1);
        Ok(())
    }
}

/// ONNX `Flatten` (axis 1; a no-op on a value that is already `[N, K]`).
pub(crate) fn import(im: &mut Importer, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    if attr_int(node, "axis", 1) != 1 {
        return Err(Importer::bad(node, "only axis = 1 is supported"));
    }
    if im.shape(x).len() == 2 {
        im.alias(node, x);
        return Ok(());
    }
    im.unary(node, Flatten.into())
}
