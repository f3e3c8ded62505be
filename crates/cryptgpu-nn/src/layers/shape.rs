//! Shape arithmetic the layers (and the ONNX constant folder) share: NCHW checks, NumPy
//! broadcasting, element counts, strides, window sizes and ONNX reshape targets.

/// `[N, C, H, W]` or an error message.
pub(crate) fn nchw(shape: &[usize]) -> std::result::Result<[usize; 4], String> {
    <[usize; 4]>::try_from(shape).map_err(|_| format!("needs an [N, C, H, W] input, got {shape:?}"))
}

/// NumPy broadcasting of two shapes, or `None` when they do not broadcast.
pub(crate) fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let get = |s: &[usize], i: usize| {
        if i + s.len() >= rank {
            s[i + s.len() - rank]
        } else {
            1
        }
    };
    (0..rank)
        .map(|i| match (get(a, i), get(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// The NumPy broadcast of two inputs' shapes, or why they do not broadcast (Add, Mul).
pub(crate) fn broadcast_inputs(inputs: &[&[usize]]) -> std::result::Result<Vec<usize>, String> {
    broadcast_shapes(inputs[0], inputs[1]).ok_or_else(|| {
        format!(
            "inputs {:?} and {:?} do not broadcast",
            inputs[0], inputs[1]
        )
    })
}

/// `input` when a constant of shape `constant` broadcasts to it (AddConst, MulConst).
pub(crate) fn constant_fits(
    input: &[usize],
    constant: &[usize],
) -> std::result::Result<Vec<usize>, String> {
    match broadcast_shapes(input, constant) {
        Some(s) if s == input => Ok(s),
        _ => Err(format!(
            "a constant of shape {constant:?} does not broadcast to {input:?}"
        )),
    }
}

/// `[N, C, 1, 1]` for a non-empty NCHW plane (the global pools).
pub(crate) fn global_pool_shape(input: &[usize]) -> std::result::Result<Vec<usize>, String> {
    let [n, c, h, w] = nchw(input)?;
    if h * w == 0 {
        return Err("needs a non-empty plane".into());
    }
    Ok(vec![n, c, 1, 1])
}

/// `[N, K]` as it is, or an error (Softmax, LogSoftmax).
pub(crate) fn rows_shape(input: &[usize]) -> std::result::Result<Vec<usize>, String> {
    match input {
        [n, k] => Ok(vec![*n, *k]),
        other => Err(format!("needs [N, K], got {other:?}")),
    }
}

/// `shape` with ones prepended to `rank` axes.
pub(crate) fn left_pad(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut out = vec![1; rank.saturating_sub(shape.len())];
    out.extend_from_slice(shape);
    out
}

/// The number of elements of `dims`, `None` when it overflows `usize`.
pub(crate) fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Row-major strides.
pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Output size of a window op along one axis, or `None` when the window does not fit.
pub fn window_out(size: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    let padded = size + 2 * padding;
    if kernel == 0 || stride == 0 || padded < kernel {
        None
    } else {
        Some((padded - kernel) / stride + 1)
    }
}

/// The full target shape `[N, ...]` of an ONNX `Reshape` of `input` to `target` (0 copies
/// the input's dimension unless `allowzero`, −1 takes what is left), or why it cannot be.
pub(crate) fn resolve_reshape(
    input: &[usize],
    target: &[i64],
    allowzero: bool,
) -> std::result::Result<Vec<usize>, String> {
    let product = |dims: &[usize]| {
        element_count(dims).ok_or_else(|| format!("the shape {dims:?} is too large"))
    };
    let total = product(input)?;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => out.push(
                *input
                    .get(i)
                    .ok_or_else(|| format!("0 at axis {i} copies no input axis"))?,
            ),
            d if d >= 0 => out.push(usize::try_from(d).map_err(|_| format!("dimension {d}"))?),
            _ => return Err(format!("invalid target shape {target:?}")),
        }
    }
    if let Some(i) = infer {
        let known = product(&out)?;
        if known == 0 || !total.is_multiple_of(known) {
            return Err(format!("cannot infer -1 in {target:?} for {input:?}"));
        }
        out[i] = total / known;
    }
    if product(&out)? != total {
        return Err(format!("cannot reshape {input:?} to {target:?}"));
    }
    Ok(out)
}
