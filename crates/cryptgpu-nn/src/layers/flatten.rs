//! `Flatten`: `[N, d1, d2, ...] → [N, d1·d2·...]`; ONNX `Flatten` with axis 1 (axis 0 and
//! other axes would move the batch axis).

use super::common::*;

/// Flattens all but the batch axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flatten;

impl NoAttributes for Flatten {}

impl Layer for Flatten {
    const KIND: &'static str = "Flatten";

    fn output_shape(&self, inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
        match inputs[0] {
            [n, rest @ ..] if !rest.is_empty() => Ok(vec![*n, rest.iter().product()]),
            other => Err(format!("needs at least 2 axes, got {other:?}")),
        }
    }

    relayout_plain_passes!();

    fn onnx_export(&self, n: &mut OnnxNode<'_>) -> Result<()> {
        n.op_type = "Flatten";
        n.int("axis", 1);
        Ok(())
    }
}

relayout_private_passes!(Flatten);

/// ONNX `Flatten` (axis 1; a no-op on a value that is already `[N, K]`).
pub(crate) fn import(im: &mut dyn ImportGraph, node: &NodeProto) -> Result<()> {
    let x = im.input_node(node, 0)?;
    if attr_int(node, "axis", 1) != 1 {
        return Err(bad(node, "only axis = 1 is supported"));
    }
    if im.shape(x).len() == 2 {
        im.alias(node, x);
        return Ok(());
    }
    im.unary(node, Flatten)
}
