//! The window geometry MaxPool2d and AvgPool2d share: kernel, stride, padding on each of
//! the four sides and `ceil_mode`, with PyTorch's output sizes, plus the plaintext window
//! loops and the private explicit padding used where the backends' symmetric pooling does
//! not reach (asymmetric pads, `ceil_mode`, `count_include_pad = 0`).

use cryptgpu_backend::{DeviceTensor, Pool2dParams};

use super::common::*;

/// A pooling window over NCHW tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    /// Window `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Step `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
    /// Whether the output size rounds up (PyTorch's `ceil_mode`): a last window may start
    /// in the input or left padding and run past the end.
    pub ceil_mode: bool,
}

impl From<Pool2dParams> for PoolWindow {
    fn from(p: Pool2dParams) -> Self {
        Self {
            kernel: p.kernel,
            stride: p.stride,
            pads: [p.padding[0], p.padding[1], p.padding[0], p.padding[1]],
            ceil_mode: false,
        }
    }
}

impl PoolWindow {
    /// The backends' parameters, when the window is one they run as it is (symmetric pads
    /// of at most half the kernel, no `ceil_mode`).
    pub fn symmetric(&self) -> Option<Pool2dParams> {
        let [t, l, b, r] = self.pads;
        (t == b && l == r && !self.ceil_mode && 2 * t <= self.kernel[0] && 2 * l <= self.kernel[1])
            .then_some(Pool2dParams {
                kernel: self.kernel,
                stride: self.stride,
                padding: [t, l],
            })
    }

    /// Output size along axis `a` (0 = height) of an input extent `size`.
    fn out(&self, a: usize, size: usize) -> Option<usize> {
        let (k, s) = (self.kernel[a], self.stride[a]);
        let (p0, p1) = (self.pads[a], self.pads[a + 2]);
        let padded = size + p0 + p1;
        if k == 0 || s == 0 || padded < k {
            return None;
        }
        let span = padded - k;
        let mut out = if self.ceil_mode {
            span.div_ceil(s)
        } else {
            span / s
        } + 1;
        if self.ceil_mode && (out - 1) * s >= size + p0 {
            out -= 1;
        }
        Some(out)
    }

    /// `[N, C, OH, OW]` for an NCHW input, or why it does not fit.
    pub fn output_shape(&self, input: &[usize]) -> std::result::Result<Vec<usize>, String> {
        let [n, c, h, w] = nchw(input)?;
        if self.kernel.contains(&0) || self.stride.contains(&0) {
            return Err("kernel and stride must be at least 1".into());
        }
        let [t, l, b, r] = self.pads;
        if t.max(b) >= self.kernel[0] || l.max(r) >= self.kernel[1] {
            return Err(format!(
                "pads {:?} must be smaller than the window {:?}",
                self.pads, self.kernel
            ));
        }
        match (self.out(0, h), self.out(1, w)) {
            (Some(oh), Some(ow)) => Ok(vec![n, c, oh, ow]),
            _ => Err(format!(
                "window {:?} with stride {:?} and pads {:?} does not fit input {input:?}",
                self.kernel, self.stride, self.pads
            )),
        }
    }

    /// Padding that makes the windows fit exactly: `[top, left, bottom, right]`, where
    /// bottom and right reach the last window's end (more than declared in ceil mode, less
    /// where the declared padding is never read).
    pub fn explicit_pads(&self, h: usize, w: usize) -> [usize; 4] {
        let end = |a: usize, size: usize| {
            let out = self.out(a, size).unwrap_or(1);
            ((out - 1) * self.stride[a] + self.kernel[a]).saturating_sub(size + self.pads[a])
        };
        [self.pads[0], self.pads[1], end(0, h), end(1, w)]
    }

    /// Visits each output position of this pool over `x` (`[N, C, H, W]`, plaintext) into
    /// an output of `out_shape`, plane by plane in order: `f` gets the input plane, the
    /// window's rows and columns in it, and the position's index within the output plane.
    pub(crate) fn plain_windows(
        &self,
        x: &Tensor,
        out_shape: &[usize],
        mut f: impl FnMut(&[f64], std::ops::Range<usize>, std::ops::Range<usize>, usize) -> Result<()>,
    ) -> Result<()> {
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let (oh, ow) = (out_shape[2], out_shape[3]);
        for plane in x.data().chunks(h * w) {
            for oi in 0..oh {
                for oj in 0..ow {
                    let (rows, cols, _) = self.window(h, w, oi, oj);
                    f(plane, rows, cols, oi * ow + oj)?;
                }
            }
        }
        Ok(())
    }

    /// For output `(oi, oj)` of an `h × w` plane: the rows and columns of the input it
    /// covers, and the count of the window inside the padded extent (PyTorch's
    /// `count_include_pad` divisor).
    pub fn window(
        &self,
        h: usize,
        w: usize,
        oi: usize,
        oj: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>, usize) {
        let axis = |a: usize, o: usize, size: usize| {
            let start = (o * self.stride[a]) as isize - self.pads[a] as isize;
            let end = (start + self.kernel[a] as isize).min((size + self.pads[a + 2]) as isize);
            let padded_count = (end - start).max(0) as usize;
            let lo = start.max(0) as usize;
            let hi = (end.max(0) as usize).min(size);
            (lo..hi.max(lo), padded_count)
        };
        let (rows, ch) = axis(0, oi, h);
        let (cols, cw) = axis(1, oj, w);
        (rows, cols, ch * cw)
    }

    /// Writes the attributes.
    pub fn write(&self, a: &mut Attrs) {
        a.set_pair("kernel", self.kernel);
        a.set_pair("stride", self.stride);
        a.set_pair("padding", [self.pads[0], self.pads[1]]);
        if self.pads[2..] != self.pads[..2] {
            a.set("pads", self.pads.to_vec());
        }
        if self.ceil_mode {
            a.set("ceil_mode", true);
        }
    }

    /// Reads the attributes.
    pub fn read(a: &Attrs) -> Result<Self> {
        let padding = a.pair("padding")?;
        let pads = if a.has("pads") {
            <[usize; 4]>::try_from(a.dims("pads")?).map_err(|_| a.err("`pads` must be 4 sizes"))?
        } else {
            [padding[0], padding[1], padding[0], padding[1]]
        };
        Ok(Self {
            kernel: a.positive_pair("kernel")?,
            stride: a.positive_pair("stride")?,
            pads,
            ceil_mode: a.boolean_or("ceil_mode", false)?,
        })
    }

    /// Writes the ONNX attributes.
    pub fn export(&self, n: &mut OnnxNode<'_>) {
        let i = |v: [usize; 2]| [v[0] as i64, v[1] as i64];
        n.ints("kernel_shape", &i(self.kernel));
        n.ints("strides", &i(self.stride));
        n.ints("pads", &self.pads.map(|v| v as i64));
        if self.ceil_mode {
            n.int("ceil_mode", 1);
        }
    }

    /// Reads ONNX `MaxPool` / `AveragePool` attributes.
    pub fn import(node: &NodeProto) -> Result<Self> {
        match attr_ints(node, "dilations").as_deref() {
            None | Some([]) | Some([1, 1]) => {}
            Some(other) => {
                return Err(bad(node, format!("dilations {other:?} are not supported")));
            }
        }
        if attr_int(node, "storage_order", 0) != 0 {
            return Err(bad(node, "storage_order = 1 is not supported"));
        }
        let kernel = attr_pair(node, "kernel_shape", [0, 0])?;
        if kernel.contains(&0) {
            return Err(bad(node, "has no 2-d kernel_shape"));
        }
        Ok(Self {
            kernel,
            stride: attr_pair(node, "strides", [1, 1])?,
            pads: pads4(node)?,
            ceil_mode: attr_int(node, "ceil_mode", 0) != 0,
        })
    }
}

/// `x` `[N, C, H, W]` with `pads` rows and columns of zeros around each plane, plus `fill`
/// (a public value, added once) in the padding when it is not 0. Local.
pub(crate) fn pad_private<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    x: &Rss<B>,
    pads: [usize; 4],
    fill: u64,
) -> Result<Rss<B>> {
    if pads == [0; 4] {
        return Ok(x.clone());
    }
    let padded = p.linear(x, |b, t| pad_tensor(b, t, pads))?;
    if fill == 0 {
        return Ok(padded);
    }
    let b = p.backend();
    let ones = b.full(x.shape(), 1)?;
    let inside = pad_tensor(b, &ones, pads)?;
    // fill · (1 − inside): `fill` at the padding, 0 inside.
    let pattern = b.mul_scalar(&b.sub(&b.full(inside.shape(), 1)?, &inside)?, fill)?;
    Ok(p.add_public(&padded, &pattern)?)
}

/// A tensor zero-padded by `[top, left, bottom, right]` on its last two axes.
pub(crate) fn pad_tensor<B: GpuBackend>(
    b: &B,
    t: &B::Tensor,
    pads: [usize; 4],
) -> cryptgpu_backend::Result<B::Tensor> {
    let mut t = t.clone();
    for (axis, before, after) in [(2, pads[0], pads[2]), (3, pads[1], pads[3])] {
        if before + after == 0 {
            continue;
        }
        let shape = t.shape().to_vec();
        let mut parts = Vec::new();
        let zeros = |k: usize| {
            let mut s = shape.clone();
            s[axis] = k;
            b.zeros(&s)
        };
        let top = if before > 0 {
            Some(zeros(before)?)
        } else {
            None
        };
        let bottom = if after > 0 { Some(zeros(after)?) } else { None };
        if let Some(z) = &top {
            parts.push(z);
        }
        parts.push(&t);
        if let Some(z) = &bottom {
            parts.push(z);
        }
        t = b.concat(&parts, axis)?;
    }
    Ok(t)
}

/// The inner `[h, w]` of a padded sharing (the inverse of [`pad_private`], local).
pub(crate) fn unpad_private<B: GpuBackend, T: Transport>(
    p: &Party<B, T>,
    x: &Rss<B>,
    pads: [usize; 4],
    hw: [usize; 2],
) -> Result<Rss<B>> {
    if pads == [0; 4] {
        return Ok(x.clone());
    }
    Ok(p.linear(x, |b, t| {
        let t = b.slice(t, 2, pads[0]..pads[0] + hw[0])?;
        b.slice(&t, 3, pads[1]..pads[1] + hw[1])
    })?)
}
