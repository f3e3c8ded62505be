//! Plain scalar reference implementations of every backend op, written from the
//! definitions with no blocking, no threads and no shared code with any backend: the
//! conformance suite compares each backend against these, bit for bit.

use crate::shape::{Conv2dDims, Pool2dDims, strides};
use crate::{BinaryOp, Conv2dParams, Pool2dParams};

/// A host tensor: row-major data and its shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostTensor {
    /// Elements, row-major.
    pub data: Vec<u64>,
    /// Extents.
    pub shape: Vec<usize>,
}

impl HostTensor {
    /// Wraps data and shape (lengths must agree).
    pub fn new(data: Vec<u64>, shape: &[usize]) -> Self {
        assert_eq!(
            data.len(),
            shape.iter().product::<usize>(),
            "reference tensor of wrong length"
        );
        Self {
            data,
            shape: shape.to_vec(),
        }
    }

    /// `f` applied to every element, same shape.
    pub fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        Self::new(self.data.iter().map(|&x| f(x)).collect(), &self.shape)
    }
}

/// Multi-index of flat position `flat` in `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for axis in (0..shape.len()).rev() {
        index[axis] = flat % shape[axis];
        flat /= shape[axis];
    }
    index
}

/// Flat position of a multi-index in `shape`.
fn ravel(index: &[usize], shape: &[usize]) -> usize {
    index.iter().zip(strides(shape)).map(|(i, s)| i * s).sum()
}

/// NumPy's `transpose(axes)`.
pub fn permute(x: &HostTensor, axes: &[usize]) -> HostTensor {
    let out_shape: Vec<usize> = axes.iter().map(|&a| x.shape[a]).collect();
    let n = x.data.len();
    let data = (0..n)
        .map(|flat| {
            let out_index = unravel(flat, &out_shape);
            let mut in_index = vec![0; axes.len()];
            for (i, &a) in axes.iter().enumerate() {
                in_index[a] = out_index[i];
            }
            x.data[ravel(&in_index, &x.shape)]
        })
        .collect();
    HostTensor::new(data, &out_shape)
}

/// `x[.., start..end, ..]` along `axis`.
pub fn slice(x: &HostTensor, axis: usize, start: usize, end: usize) -> HostTensor {
    let mut out_shape = x.shape.clone();
    out_shape[axis] = end - start;
    let n: usize = out_shape.iter().product();
    let data = (0..n)
        .map(|flat| {
            let mut index = unravel(flat, &out_shape);
            index[axis] += start;
            x.data[ravel(&index, &x.shape)]
        })
        .collect();
    HostTensor::new(data, &out_shape)
}

/// A fused program, step by step: each step one loop over the elements with the op's
/// scalar definition.
pub fn fused(program: &crate::Fused, inputs: &[&HostTensor]) -> HostTensor {
    use crate::{FusedStep, Operand};
    let mut values: Vec<Vec<u64>> = Vec::new();
    for step in program.steps() {
        let read = |operand: Operand| -> &Vec<u64> {
            match operand {
                Operand::Input(i) => &inputs[usize::from(i)].data,
                Operand::Step(s) => &values[usize::from(s)],
            }
        };
        let value: Vec<u64> = match *step {
            FusedStep::Binary(op, a, b) => read(a)
                .iter()
                .zip(read(b))
                .map(|(&x, &y)| op.apply(x, y))
                .collect(),
            FusedStep::Scalar(op, a, scalar) => {
                read(a).iter().map(|&x| op.apply(x, scalar)).collect()
            }
            FusedStep::Unary(op, a) => read(a).iter().map(|&x| op.apply(x)).collect(),
            FusedStep::Shift(op, a, bits) => read(a).iter().map(|&x| op.apply(x, bits)).collect(),
        };
        values.push(value);
    }
    HostTensor::new(values.pop().unwrap_or_default(), &inputs[0].shape)
}

/// `select_rows`: row `i` of the result is row `rows[i]` of `x`, or zeros for `None`.
pub fn select_rows(x: &HostTensor, rows: &[Option<usize>]) -> HostTensor {
    let row_len: usize = x.shape[1..].iter().product();
    let mut out_shape = x.shape.clone();
    out_shape[0] = rows.len();
    let mut data = Vec::with_capacity(rows.len() * row_len);
    for row in rows {
        for j in 0..row_len {
            data.push(row.map_or(0, |r| x.data[r * row_len + j]));
        }
    }
    HostTensor::new(data, &out_shape)
}

/// Concatenation along `axis`.
pub fn concat(xs: &[&HostTensor], axis: usize) -> HostTensor {
    let mut out_shape = xs[0].shape.clone();
    out_shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    let n: usize = out_shape.iter().product();
    let data = (0..n)
        .map(|flat| {
            let mut index = unravel(flat, &out_shape);
            let mut part = 0;
            while index[axis] >= xs[part].shape[axis] {
                index[axis] -= xs[part].shape[axis];
                part += 1;
            }
            xs[part].data[ravel(&index, &xs[part].shape)]
        })
        .collect();
    HostTensor::new(data, &out_shape)
}

/// NumPy broadcasting of `x` to `shape`.
pub fn broadcast(x: &HostTensor, shape: &[usize]) -> HostTensor {
    let lead = shape.len() - x.shape.len();
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|flat| {
            let out_index = unravel(flat, shape);
            let in_index: Vec<usize> = x
                .shape
                .iter()
                .enumerate()
                .map(|(a, &d)| if d == 1 { 0 } else { out_index[lead + a] })
                .collect();
            x.data[ravel(&in_index, &x.shape)]
        })
        .collect();
    HostTensor::new(data, shape)
}

/// Batched matrix product with the batch rules of `MatmulDims`.
pub fn matmul(a: &HostTensor, b: &HostTensor) -> HostTensor {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    let (m, k, n) = (a.shape[ra - 2], a.shape[ra - 1], b.shape[rb - 1]);
    let batch_shape = if ra > 2 {
        &a.shape[..ra - 2]
    } else {
        &b.shape[..rb - 2]
    };
    let batch: usize = batch_shape.iter().product();
    let mut out_shape = batch_shape.to_vec();
    out_shape.extend([m, n]);
    let mut data = vec![0u64; batch * m * n];
    for t in 0..batch {
        let a_off = if ra > 2 { t * m * k } else { 0 };
        let b_off = if rb > 2 { t * k * n } else { 0 };
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0u64;
                for l in 0..k {
                    acc = acc.wrapping_add(
                        a.data[a_off + i * k + l].wrapping_mul(b.data[b_off + l * n + j]),
                    );
                }
                data[t * m * n + i * n + j] = acc;
            }
        }
    }
    HostTensor::new(data, &out_shape)
}

/// Calls `visit(input_index, weight_index, output_index)` for every term of a 2-d
/// convolution that reads a real (not padding) input element: the definition shared by
/// the forward pass and both gradients, which are its adjoints.
fn for_each_conv_term(d: &Conv2dDims, mut visit: impl FnMut(usize, usize, usize)) {
    let g = d.params.groups;
    let (c_per_group, o_per_group) = (d.c / g, d.o / g);
    let [sy, sx] = d.params.stride;
    let [py, px] = d.params.padding;
    for n in 0..d.n {
        for o in 0..d.o {
            let group = o / o_per_group;
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let out_index = ((n * d.o + o) * d.oh + oy) * d.ow + ox;
                    for ci in 0..c_per_group {
                        let c = group * c_per_group + ci;
                        for ky in 0..d.kh {
                            let iy = (oy * sy + ky) as isize - py as isize;
                            if iy < 0 || iy >= d.h as isize {
                                continue;
                            }
                            for kx in 0..d.kw {
                                let ix = (ox * sx + kx) as isize - px as isize;
                                if ix < 0 || ix >= d.w as isize {
                                    continue;
                                }
                                let in_index =
                                    ((n * d.c + c) * d.h + iy as usize) * d.w + ix as usize;
                                let w_index = ((o * c_per_group + ci) * d.kh + ky) * d.kw + kx;
                                visit(in_index, w_index, out_index);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Forward convolution.
pub fn conv2d(x: &HostTensor, w: &HostTensor, params: Conv2dParams) -> HostTensor {
    let d = Conv2dDims::forward(&x.shape, &w.shape, params).expect("reference conv2d shapes");
    let mut out = vec![0u64; d.output_shape().iter().product()];
    for_each_conv_term(&d, |i, k, o| {
        out[o] = out[o].wrapping_add(x.data[i].wrapping_mul(w.data[k]))
    });
    HostTensor::new(out, &d.output_shape())
}

/// Gradient of the convolution with respect to its input.
pub fn conv2d_grad_input(
    grad: &HostTensor,
    w: &HostTensor,
    input_hw: [usize; 2],
    params: Conv2dParams,
) -> HostTensor {
    let d = Conv2dDims::grad_input(&grad.shape, &w.shape, input_hw, params)
        .expect("reference grad_input shapes");
    let mut out = vec![0u64; d.input_shape().iter().product()];
    for_each_conv_term(&d, |i, k, o| {
        out[i] = out[i].wrapping_add(grad.data[o].wrapping_mul(w.data[k]))
    });
    HostTensor::new(out, &d.input_shape())
}

/// Gradient of the convolution with respect to its weight.
pub fn conv2d_grad_weight(
    x: &HostTensor,
    grad: &HostTensor,
    kernel_hw: [usize; 2],
    params: Conv2dParams,
) -> HostTensor {
    let d = Conv2dDims::grad_weight(&x.shape, &grad.shape, kernel_hw, params)
        .expect("reference grad_weight shapes");
    let mut out = vec![0u64; d.weight_shape().iter().product()];
    for_each_conv_term(&d, |i, k, o| {
        out[k] = out[k].wrapping_add(grad.data[o].wrapping_mul(x.data[i]))
    });
    HostTensor::new(out, &d.weight_shape())
}

/// Sum over `axis` (removed).
pub fn sum_axis(x: &HostTensor, axis: usize) -> HostTensor {
    let mut out_shape = x.shape.clone();
    out_shape.remove(axis);
    let mut out = vec![0u64; out_shape.iter().product()];
    for (flat, &v) in x.data.iter().enumerate() {
        let mut index = unravel(flat, &x.shape);
        index.remove(axis);
        let o = ravel(&index, &out_shape);
        out[o] = out[o].wrapping_add(v);
    }
    HostTensor::new(out, &out_shape)
}

/// Calls `visit(window_element, output_index, input_index)` for every element of every
/// pooling window; `input_index` is `None` on padding.
fn for_each_window_elem(d: &Pool2dDims, mut visit: impl FnMut(usize, usize, Option<usize>)) {
    let [kh, kw] = d.params.kernel;
    let [sy, sx] = d.params.stride;
    let [py, px] = d.params.padding;
    for nc in 0..d.n * d.c {
        for oy in 0..d.oh {
            for ox in 0..d.ow {
                let out_index = (nc * d.oh + oy) * d.ow + ox;
                for ky in 0..kh {
                    for kx in 0..kw {
                        let iy = (oy * sy + ky) as isize - py as isize;
                        let ix = (ox * sx + kx) as isize - px as isize;
                        let inside =
                            iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w;
                        let in_index = inside.then(|| (nc * d.h + iy as usize) * d.w + ix as usize);
                        visit(ky * kw + kx, out_index, in_index);
                    }
                }
            }
        }
    }
}

/// Sum of every pooling window.
pub fn pool_window_sum(x: &HostTensor, params: Pool2dParams) -> HostTensor {
    let d = Pool2dDims::new("reference", &x.shape, params).expect("reference pool shapes");
    let mut out = vec![0u64; d.output_shape().iter().product()];
    for_each_window_elem(&d, |_, o, i| {
        if let Some(i) = i {
            out[o] = out[o].wrapping_add(x.data[i]);
        }
    });
    HostTensor::new(out, &d.output_shape())
}

/// The windows, `[kh·kw, n, c, oh, ow]`.
pub fn pool_unfold(x: &HostTensor, params: Pool2dParams, pad_value: u64) -> HostTensor {
    let d = Pool2dDims::new("reference", &x.shape, params).expect("reference pool shapes");
    let per_elem: usize = d.output_shape().iter().product();
    let mut out = vec![0u64; params.window_len() * per_elem];
    for_each_window_elem(&d, |e, o, i| {
        out[e * per_elem + o] = i.map_or(pad_value, |i| x.data[i])
    });
    HostTensor::new(out, &d.windows_shape())
}

/// The adjoint of `pool_unfold`.
pub fn pool_fold(windows: &HostTensor, params: Pool2dParams, input_shape: &[usize]) -> HostTensor {
    let d = Pool2dDims::new("reference", input_shape, params).expect("reference pool shapes");
    let per_elem: usize = d.output_shape().iter().product();
    let mut out = vec![0u64; input_shape.iter().product()];
    for_each_window_elem(&d, |e, o, i| {
        if let Some(i) = i {
            out[i] = out[i].wrapping_add(windows.data[e * per_elem + o]);
        }
    });
    HostTensor::new(out, input_shape)
}

/// Elementwise binary op.
pub fn binary(op: BinaryOp, a: &HostTensor, b: &HostTensor) -> HostTensor {
    HostTensor::new(
        a.data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| op.apply(x, y))
            .collect(),
        &a.shape,
    )
}
