//! Shape arithmetic and validation shared by every backend, so that they all accept and
//! refuse the same arguments with the same errors.
//!
//! Tensors are dense and row-major (C order); a shape is a slice of extents, and `[]` is
//! a scalar of one element.

use crate::{BackendError, Conv2dParams, Pool2dParams, Result};
use std::ops::Range;

/// Elements in a tensor of this shape, or an error if the count overflows `usize`.
pub fn numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            BackendError::invalid(
                op,
                format!("shape {shape:?} has more elements than fit in usize"),
            )
        })
}

/// Row-major strides, in elements, of a dense tensor of this shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for axis in (0..shape.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * shape[axis + 1];
    }
    strides
}

/// Checks that a buffer of `len` elements fills `shape` exactly.
pub fn check_len(op: &'static str, shape: &[usize], len: usize) -> Result<()> {
    let expected = numel(op, shape)?;
    if expected != len {
        return Err(BackendError::LengthMismatch {
            op,
            shape: shape.to_vec(),
            expected,
            actual: len,
        });
    }
    Ok(())
}

/// Checks that two elementwise operands have the same shape (backends do not broadcast
/// implicitly: protocols call `broadcast_to` where they mean it).
pub fn check_same(op: &'static str, lhs: &[usize], rhs: &[usize]) -> Result<()> {
    if lhs != rhs {
        return Err(BackendError::shapes(
            op,
            lhs,
            rhs,
            "elementwise operands need equal shapes",
        ));
    }
    Ok(())
}

/// Checks an axis against a rank.
pub fn check_axis(op: &'static str, shape: &[usize], axis: usize) -> Result<()> {
    if axis >= shape.len() {
        return Err(BackendError::invalid(
            op,
            format!(
                "axis {axis} is out of range for a tensor of rank {} (shape {shape:?})",
                shape.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a shift amount.
pub fn check_shift(op: &'static str, bits: u32) -> Result<()> {
    if bits >= 64 {
        return Err(BackendError::invalid(
            op,
            format!("shift by {bits} bits; shifts must be below 64"),
        ));
    }
    Ok(())
}

/// Checks a bit index.
pub fn check_bit(op: &'static str, bit: u32) -> Result<()> {
    if bit >= 64 {
        return Err(BackendError::invalid(
            op,
            format!("bit {bit} of a 64-bit ring element"),
        ));
    }
    Ok(())
}

/// Words needed to hold `bits` packed bits.
pub fn packed_words(bits: usize) -> usize {
    bits.div_ceil(64)
}

/// The shape after permuting axes: `out[i] = shape[axes[i]]`. `axes` must be a permutation
/// of `0..rank`.
pub fn permuted(op: &'static str, shape: &[usize], axes: &[usize]) -> Result<Vec<usize>> {
    let mut seen = vec![false; shape.len()];
    let valid = axes.len() == shape.len()
        && axes
            .iter()
            .all(|&a| a < shape.len() && !std::mem::replace(&mut seen[a], true));
    if !valid {
        return Err(BackendError::invalid(
            op,
            format!(
                "{axes:?} is not a permutation of the {} axes of shape {shape:?}",
                shape.len()
            ),
        ));
    }
    Ok(axes.iter().map(|&a| shape[a]).collect())
}

/// The shape of `shape[.., range, ..]` along `axis`.
pub fn sliced(
    op: &'static str,
    shape: &[usize],
    axis: usize,
    range: &Range<usize>,
) -> Result<Vec<usize>> {
    check_axis(op, shape, axis)?;
    if range.start > range.end || range.end > shape[axis] {
        return Err(BackendError::invalid(
            op,
            format!(
                "range {range:?} does not fit axis {axis} of extent {} (shape {shape:?})",
                shape[axis]
            ),
        ));
    }
    let mut out = shape.to_vec();
    out[axis] = range.end - range.start;
    Ok(out)
}

/// The shape of the concatenation of `shapes` along `axis`: all extents but `axis` agree.
pub fn concatenated(op: &'static str, shapes: &[&[usize]], axis: usize) -> Result<Vec<usize>> {
    let Some(first) = shapes.first() else {
        return Err(BackendError::invalid(op, "nothing to concatenate"));
    };
    check_axis(op, first, axis)?;
    let mut out = first.to_vec();
    for shape in &shapes[1..] {
        let agree = shape.len() == first.len()
            && shape
                .iter()
                .zip(first.iter())
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !agree {
            return Err(BackendError::shapes(
                op,
                first,
                shape,
                format!("every extent but axis {axis} must agree"),
            ));
        }
        out[axis] += shape[axis];
    }
    Ok(out)
}

/// Checks that `from` broadcasts to `to` by NumPy's rules: align the trailing axes; each
/// extent of `from` equals the target's or is 1; missing leading axes are added.
pub fn check_broadcast(op: &'static str, from: &[usize], to: &[usize]) -> Result<()> {
    let fits = from.len() <= to.len()
        && from
            .iter()
            .rev()
            .zip(to.iter().rev())
            .all(|(&f, &t)| f == t || f == 1);
    if !fits {
        return Err(BackendError::shapes(
            op,
            from,
            to,
            "the first does not broadcast to the second",
        ));
    }
    Ok(())
}

/// The shape with `axis` removed (the result of summing over it).
pub fn reduced(op: &'static str, shape: &[usize], axis: usize) -> Result<Vec<usize>> {
    check_axis(op, shape, axis)?;
    let mut out = shape.to_vec();
    out.remove(axis);
    Ok(out)
}

/// The dimensions of a batched matrix product `a · b`.
///
/// `a` is `[batch.., m, k]` and `b` is `[batch.., k, n]`; both have rank at least 2. The
/// batch axes are equal, or one side has none and is used for every batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Number of matrix products (the product of the batch extents; 1 if none).
    pub batch: usize,
    /// Whether `a` has its own matrix per batch (else one matrix serves all).
    pub a_batched: bool,
    /// Whether `b` has its own matrix per batch.
    pub b_batched: bool,
    /// Rows of `a` and of the output.
    pub m: usize,
    /// Columns of `a`, rows of `b`: the inner dimension.
    pub k: usize,
    /// Columns of `b` and of the output.
    pub n: usize,
    /// Shape of the output: `[batch.., m, n]`.
    pub out_shape: Vec<usize>,
}

impl MatmulDims {
    /// Checks the operand shapes and works out the product's dimensions.
    pub fn new(a: &[usize], b: &[usize]) -> Result<Self> {
        const OP: &str = "matmul";
        if a.len() < 2 || b.len() < 2 {
            return Err(BackendError::shapes(
                OP,
                a,
                b,
                "both operands need rank 2 or more",
            ));
        }
        let (a_batch, a_mat) = a.split_at(a.len() - 2);
        let (b_batch, b_mat) = b.split_at(b.len() - 2);
        let (m, k, k2, n) = (a_mat[0], a_mat[1], b_mat[0], b_mat[1]);
        if k != k2 {
            return Err(BackendError::shapes(
                OP,
                a,
                b,
                format!("inner dimensions differ ({k} and {k2})"),
            ));
        }
        let batch_shape = match (a_batch.is_empty(), b_batch.is_empty()) {
            (_, true) => a_batch,
            (true, false) => b_batch,
            (false, false) if a_batch == b_batch => a_batch,
            _ => {
                return Err(BackendError::shapes(
                    OP,
                    a,
                    b,
                    "batch axes must be equal, or absent on one side",
                ));
            }
        };
        let mut out_shape = batch_shape.to_vec();
        out_shape.extend([m, n]);
        numel(OP, &out_shape)?;
        Ok(Self {
            batch: batch_shape.iter().product(),
            a_batched: !a_batch.is_empty(),
            b_batched: !b_batch.is_empty(),
            m,
            k,
            n,
            out_shape,
        })
    }
}

/// The dimensions of a 2-d convolution: input `[n, c, h, w]`, weight `[o, c / groups, kh,
/// kw]`, output `[n, o, oh, ow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dDims {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub o: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// The stride, padding and groups.
    pub params: Conv2dParams,
}

/// Output extent of a window of `kernel` sliding with `stride` over `input + 2·padding`.
fn window_count(
    op: &'static str,
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<usize> {
    if kernel == 0 || stride == 0 {
        return Err(BackendError::invalid(
            op,
            "kernel size and stride must be at least 1",
        ));
    }
    let padded = input + 2 * padding;
    if padded < kernel {
        return Err(BackendError::invalid(
            op,
            format!("a window of {kernel} does not fit an input of {input} with padding {padding}"),
        ));
    }
    Ok((padded - kernel) / stride + 1)
}

fn rank4(op: &'static str, what: &str, shape: &[usize]) -> Result<[usize; 4]> {
    <[usize; 4]>::try_from(shape).map_err(|_| {
        BackendError::invalid(op, format!("{what} must have rank 4, got shape {shape:?}"))
    })
}

impl Conv2dDims {
    /// Checks a forward convolution's input and weight shapes.
    pub fn forward(input: &[usize], weight: &[usize], params: Conv2dParams) -> Result<Self> {
        Self::build("conv2d", input, weight, params)
    }

    /// Checks the shapes of the gradient with respect to the input: `grad_out` is `[n, o,
    /// oh, ow]`, and `input_hw` the input's height and width (several input sizes give
    /// the same output size when the stride is above 1).
    pub fn grad_input(
        grad_out: &[usize],
        weight: &[usize],
        input_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<Self> {
        const OP: &str = "conv2d_grad_input";
        let [n, o, oh, ow] = rank4(OP, "the output gradient", grad_out)?;
        let [_, c_per_group, _, _] = rank4(OP, "the weight", weight)?;
        let input = [n, c_per_group * params.groups, input_hw[0], input_hw[1]];
        let dims = Self::build(OP, &input, weight, params)?;
        if dims.o != o || dims.oh != oh || dims.ow != ow {
            return Err(BackendError::shapes(
                OP,
                grad_out,
                &[n, dims.o, dims.oh, dims.ow],
                "the output gradient must have the convolution's output shape",
            ));
        }
        Ok(dims)
    }

    /// Checks the shapes of the gradient with respect to the weight: `input` is `[n, c, h,
    /// w]`, `grad_out` `[n, o, oh, ow]`, and `kernel_hw` the kernel's height and width.
    pub fn grad_weight(
        input: &[usize],
        grad_out: &[usize],
        kernel_hw: [usize; 2],
        params: Conv2dParams,
    ) -> Result<Self> {
        const OP: &str = "conv2d_grad_weight";
        let [n, c, _, _] = rank4(OP, "the input", input)?;
        let [n2, o, oh, ow] = rank4(OP, "the output gradient", grad_out)?;
        if params.groups == 0 || c % params.groups != 0 {
            return Err(BackendError::invalid(
                OP,
                format!(
                    "{c} input channels do not split into {} groups",
                    params.groups
                ),
            ));
        }
        let weight = [o, c / params.groups, kernel_hw[0], kernel_hw[1]];
        let dims = Self::build(OP, input, &weight, params)?;
        if n2 != n || dims.oh != oh || dims.ow != ow {
            return Err(BackendError::shapes(
                OP,
                grad_out,
                &[n, o, dims.oh, dims.ow],
                "the output gradient must have the convolution's output shape",
            ));
        }
        Ok(dims)
    }

    fn build(
        op: &'static str,
        input: &[usize],
        weight: &[usize],
        params: Conv2dParams,
    ) -> Result<Self> {
        let [n, c, h, w] = rank4(op, "the input", input)?;
        let [o, c_per_group, kh, kw] = rank4(op, "the weight", weight)?;
        let g = params.groups;
        if g == 0 || c % g != 0 || o % g != 0 {
            return Err(BackendError::shapes(
                op,
                input,
                weight,
                format!("{g} groups must divide the {c} input and {o} output channels"),
            ));
        }
        if c / g != c_per_group {
            return Err(BackendError::shapes(
                op,
                input,
                weight,
                format!(
                    "the weight expects {c_per_group} input channels per group, the input has {}",
                    c / g
                ),
            ));
        }
        let oh = window_count(op, h, kh, params.stride[0], params.padding[0])?;
        let ow = window_count(op, w, kw, params.stride[1], params.padding[1])?;
        let dims = Self {
            n,
            c,
            h,
            w,
            o,
            kh,
            kw,
            oh,
            ow,
            params,
        };
        numel(op, &dims.output_shape())?;
        Ok(dims)
    }

    /// `[n, c, h, w]`.
    pub fn input_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.h, self.w]
    }

    /// `[o, c / groups, kh, kw]`.
    pub fn weight_shape(&self) -> Vec<usize> {
        vec![self.o, self.c / self.params.groups, self.kh, self.kw]
    }

    /// `[n, o, oh, ow]`.
    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.o, self.oh, self.ow]
    }
}

/// The dimensions of 2-d pooling: input `[n, c, h, w]`, output `[n, c, oh, ow]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dDims {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
    /// The window, stride and padding.
    pub params: Pool2dParams,
}

impl Pool2dDims {
    /// Checks a pooling input shape and parameters.
    pub fn new(op: &'static str, input: &[usize], params: Pool2dParams) -> Result<Self> {
        let [n, c, h, w] = rank4(op, "the input", input)?;
        for axis in 0..2 {
            if params.padding[axis] >= params.kernel[axis].max(1) {
                return Err(BackendError::invalid(
                    op,
                    format!(
                        "padding {:?} must be smaller than the window {:?}",
                        params.padding, params.kernel
                    ),
                ));
            }
        }
        let oh = window_count(op, h, params.kernel[0], params.stride[0], params.padding[0])?;
        let ow = window_count(op, w, params.kernel[1], params.stride[1], params.padding[1])?;
        Ok(Self {
            n,
            c,
            h,
            w,
            oh,
            ow,
            params,
        })
    }

    /// `[n, c, h, w]`.
    pub fn input_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.h, self.w]
    }

    /// `[n, c, oh, ow]`.
    pub fn output_shape(&self) -> Vec<usize> {
        vec![self.n, self.c, self.oh, self.ow]
    }

    /// `[kh·kw, n, c, oh, ow]`: the shape of the unfolded windows.
    pub fn windows_shape(&self) -> Vec<usize> {
        vec![self.params.window_len(), self.n, self.c, self.oh, self.ow]
    }

    /// Checks that `windows` has the unfolded shape of this input (for `pool_fold`).
    pub fn check_windows(&self, op: &'static str, windows: &[usize]) -> Result<()> {
        let want = self.windows_shape();
        if windows != want {
            return Err(BackendError::shapes(
                op,
                windows,
                &want,
                "the windows must have the unfolded shape of the input",
            ));
        }
        Ok(())
    }
}

/// A layout op as a strided gather: output element at multi-index `i` (row-major over
/// `shape`) reads input element `offset + Σ i[a]·strides[a]`. Permute, slice and broadcast
/// are all this, so every backend implements them with one gather kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedView {
    /// The output shape.
    pub shape: Vec<usize>,
    /// The input stride of each output axis (0 for a broadcast axis).
    pub strides: Vec<usize>,
    /// The input position of the first output element.
    pub offset: usize,
}

impl StridedView {
    /// Whether the view reads every element of an input of `input_len` elements in order:
    /// a full slice, an identity permutation, a broadcast to the same shape. Backends then
    /// hand back the input (reshaped) without a launch.
    pub fn is_whole(&self, input_len: usize) -> bool {
        let len: usize = self.shape.iter().product();
        let mut expected = 1;
        let in_order = self
            .shape
            .iter()
            .zip(&self.strides)
            .rev()
            .all(|(&extent, &stride)| {
                let ok = extent == 1 || stride == expected;
                expected *= extent;
                ok
            });
        self.offset == 0 && len == input_len && in_order
    }
}

/// The shape of [`GpuBackend::select_rows`](crate::GpuBackend::select_rows) of a tensor of
/// `shape` (rank at least 1): `shape` with axis 0 of extent `rows.len()`, each row index
/// checked against axis 0.
pub fn selected_rows(
    op: &'static str,
    shape: &[usize],
    rows: &[Option<usize>],
) -> Result<Vec<usize>> {
    let Some(&extent) = shape.first() else {
        return Err(BackendError::invalid(op, "a scalar has no rows"));
    };
    if let Some(bad) = rows.iter().flatten().find(|&&r| r >= extent) {
        return Err(BackendError::invalid(
            op,
            format!("row {bad} of a tensor of shape {shape:?}"),
        ));
    }
    let mut out = shape.to_vec();
    out[0] = rows.len();
    numel(op, &out)?;
    Ok(out)
}

/// [`StridedView`] of `permute(axes)` on a tensor of `shape`, checked.
pub fn permute_view(op: &'static str, shape: &[usize], axes: &[usize]) -> Result<StridedView> {
    let out = permuted(op, shape, axes)?;
    let strides = strides(shape);
    Ok(StridedView {
        shape: out,
        strides: axes.iter().map(|&a| strides[a]).collect(),
        offset: 0,
    })
}

/// [`StridedView`] of `slice(axis, range)` on a tensor of `shape`, checked.
pub fn slice_view(
    op: &'static str,
    shape: &[usize],
    axis: usize,
    range: &Range<usize>,
) -> Result<StridedView> {
    let out = sliced(op, shape, axis, range)?;
    let strides = strides(shape);
    Ok(StridedView {
        shape: out,
        offset: range.start * strides[axis],
        strides,
    })
}

/// [`StridedView`] of broadcasting a tensor of `from` to `to`, checked.
pub fn broadcast_view(op: &'static str, from: &[usize], to: &[usize]) -> Result<StridedView> {
    check_broadcast(op, from, to)?;
    numel(op, to)?;
    let lead = to.len() - from.len();
    let strides = strides(from);
    Ok(StridedView {
        shape: to.to_vec(),
        strides: (0..to.len())
            .map(|axis| match axis.checked_sub(lead) {
                Some(a) if from[a] != 1 => strides[a],
                _ => 0,
            })
            .collect(),
        offset: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_views_are_the_ones_that_read_every_element_in_order() {
        let shape = [2, 3, 4];
        let whole = |v: Result<StridedView>| v.unwrap().is_whole(24);
        assert!(whole(slice_view("t", &shape, 1, &(0..3))));
        assert!(whole(permute_view("t", &shape, &[0, 1, 2])));
        assert!(whole(broadcast_view("t", &shape, &shape)));
        // Moving an axis of extent 1 keeps the order.
        assert!(permute_view("t", &[1, 5], &[1, 0]).unwrap().is_whole(5));
        assert!(!whole(slice_view("t", &shape, 1, &(0..2))));
        assert!(!whole(slice_view("t", &shape, 0, &(1..2))));
        assert!(!whole(permute_view("t", &shape, &[0, 2, 1])));
        assert!(!broadcast_view("t", &[1, 4], &[3, 4]).unwrap().is_whole(4));
    }
}
