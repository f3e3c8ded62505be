//! Pooling windows: window sums, unfolding into `[kh·kw, n, c, oh, ow]`, and folding back.

use cryptgpu_backend::shape::Pool2dDims;
use rayon::prelude::*;

/// Calls `visit(window_element, output_offset, input_offset)` for every element of every
/// window over one `h × w` plane; `input_offset` is `None` on padding.
fn for_each_window_elem(d: &Pool2dDims, mut visit: impl FnMut(usize, usize, Option<usize>)) {
    let [kh, kw] = d.params.kernel;
    let [sy, sx] = d.params.stride;
    let [py, px] = d.params.padding;
    for oy in 0..d.oh {
        for ox in 0..d.ow {
            for ky in 0..kh {
                let iy = (oy * sy + ky) as isize - py as isize;
                for kx in 0..kw {
                    let ix = (ox * sx + kx) as isize - px as isize;
                    let inside = iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w;
                    visit(
                        ky * kw + kx,
                        oy * d.ow + ox,
                        inside.then(|| iy as usize * d.w + ix as usize),
                    );
                }
            }
        }
    }
}

/// The sum of every window (padding reads zero).
pub(crate) fn window_sum(d: &Pool2dDims, input: &[u64]) -> Vec<u64> {
    let (plane_in, plane_out) = (d.h * d.w, d.oh * d.ow);
    let mut out = crate::buffer::take_zeroed(d.n * d.c * plane_out);
    out.par_chunks_mut(plane_out.max(1))
        .enumerate()
        .for_each(|(plane, out)| {
            let x = &input[plane * plane_in..][..plane_in];
            for_each_window_elem(d, |_, o, i| {
                if let Some(i) = i {
                    out[o] = out[o].wrapping_add(x[i]);
                }
            });
        });
    out
}

/// The windows as `[kh·kw, n, c, oh, ow]`; padding reads `pad_value`.
pub(crate) fn unfold(d: &Pool2dDims, input: &[u64], pad_value: u64) -> Vec<u64> {
    let (plane_in, plane_out) = (d.h * d.w, d.oh * d.ow);
    let per_elem = d.n * d.c * plane_out;
    let window = d.params.window_len();
    // Work plane by plane (each plane's windows are contiguous in `[.., oh, ow]`), then
    // scatter each plane's block into its place along the window axis.
    let planes: Vec<Vec<u64>> = (0..d.n * d.c)
        .into_par_iter()
        .map(|plane| {
            let x = &input[plane * plane_in..][..plane_in];
            let mut block = vec![0u64; window * plane_out];
            for_each_window_elem(d, |e, o, i| {
                block[e * plane_out + o] = i.map_or(pad_value, |i| x[i])
            });
            block
        })
        .collect();
    let mut out = crate::buffer::take(window * per_elem);
    for (plane, block) in planes.iter().enumerate() {
        for e in 0..window {
            out[e * per_elem + plane * plane_out..][..plane_out]
                .copy_from_slice(&block[e * plane_out..][..plane_out]);
        }
    }
    out
}

/// The adjoint of [`unfold`]: adds each window element back onto its input position.
pub(crate) fn fold(d: &Pool2dDims, windows: &[u64]) -> Vec<u64> {
    let (plane_in, plane_out) = (d.h * d.w, d.oh * d.ow);
    let per_elem = d.n * d.c * plane_out;
    let mut out = crate::buffer::take_zeroed(d.n * d.c * plane_in);
    out.par_chunks_mut(plane_in.max(1))
        .enumerate()
        .for_each(|(plane, x)| {
            for_each_window_elem(d, |e, o, i| {
                if let Some(i) = i {
                    x[i] = x[i].wrapping_add(windows[e * per_elem + plane * plane_out + o]);
                }
            });
        });
    out
}
