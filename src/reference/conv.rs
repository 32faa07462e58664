//! Convolution (by im2col and a matrix product) and pooling, with their
//! gradients. One-dimensional inputs run as images of height 1.

use ndarray::{Array2, ArrayD, IxDyn, linalg::general_mat_mul};

use super::{Real, real};
use crate::ir::ops::{PoolKind, Window};

/// A window lifted to two spatial axes.
struct Geo {
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    ph: usize,
    pw: usize,
    dh: usize,
    dw: usize,
}

fn geo(w: &Window) -> Geo {
    let two = |v: &[usize], fill: usize| {
        if v.len() == 1 {
            (fill, v[0])
        } else {
            (v[0], v[1])
        }
    };
    let (kh, kw) = two(&w.kernel, 1);
    let (sh, sw) = two(&w.stride, 1);
    let (ph, pw) = two(&w.pad, 0);
    let (dh, dw) = two(&w.dilation, 1);
    Geo {
        kh,
        kw,
        sh,
        sw,
        ph,
        pw,
        dh,
        dw,
    }
}

/// [N, C, *S] as [N, C, H, W].
fn as4(shape: &[usize]) -> [usize; 4] {
    if shape.len() == 3 {
        [shape[0], shape[1], 1, shape[2]]
    } else {
        [shape[0], shape[1], shape[2], shape[3]]
    }
}

/// The elements in row-major order, borrowed when the array is laid out so.
fn data<T: Real>(x: &ArrayD<T>) -> std::borrow::Cow<'_, [T]> {
    match x.as_slice() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(x.iter().copied().collect()),
    }
}

/// A weight tensor [O, ...] as an [O, K] matrix over `d` (NaN if the sizes
/// disagree, like [`array`]).
fn matrix<T: Real>(d: &[T], o: usize, k: usize) -> ndarray::CowArray<'_, T, ndarray::Ix2> {
    match ndarray::ArrayView2::from_shape((o, k), d) {
        Ok(v) => v.into(),
        Err(_) => Array2::from_elem((o, k), T::nan()).into(),
    }
}

fn array<T: Real>(shape: &[usize], v: Vec<T>) -> ArrayD<T> {
    ArrayD::from_shape_vec(IxDyn(shape), v)
        .unwrap_or_else(|_| ArrayD::from_elem(IxDyn(shape), T::nan()))
}

/// The input position read by output (oh, ow) at kernel offset (i, j), if inside.
fn src(
    g: &Geo,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    i: usize,
    j: usize,
) -> Option<(usize, usize)> {
    let y = (oh * g.sh + i * g.dh).checked_sub(g.ph)?;
    let x = (ow * g.sw + j * g.dw).checked_sub(g.pw)?;
    (y < h && x < w).then_some((y, x))
}

/// Columns of one image and group: [Cg·kh·kw, OH·OW].
#[allow(clippy::too_many_arguments)]
fn im2col<T: Real>(
    x: &[T],
    c0: usize,
    cg: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    g: &Geo,
) -> Array2<T> {
    let mut cols = Array2::zeros((cg * g.kh * g.kw, oh * ow));
    for c in 0..cg {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = (c * g.kh + i) * g.kw + j;
                for a in 0..oh {
                    for b in 0..ow {
                        if let Some((y, z)) = src(g, h, w, a, b, i, j) {
                            cols[[row, a * ow + b]] = x[((c0 + c) * h + y) * w + z];
                        }
                    }
                }
            }
        }
    }
    cols
}

pub fn conv<T: Real>(
    x: &ArrayD<T>,
    wt: &ArrayD<T>,
    window: &Window,
    groups: usize,
    out_shape: &[usize],
) -> ArrayD<T> {
    let g = geo(window);
    let [n, c, h, w] = as4(x.shape());
    let [_, o, oh, ow] = as4(out_shape);
    let (cg, og) = (c / groups, o / groups);
    let xd = data(x);
    let k = cg * g.kh * g.kw;
    let wd = data(wt);
    let wm = matrix(&wd, o, k);
    let mut out = vec![T::zero(); n * o * oh * ow];
    for img in 0..n {
        let xi = &xd[img * c * h * w..(img + 1) * c * h * w];
        for gr in 0..groups {
            let cols = im2col(xi, gr * cg, cg, h, w, oh, ow, &g);
            let wg = wm.slice(ndarray::s![gr * og..(gr + 1) * og, ..]);
            let mut y = Array2::zeros((og, oh * ow));
            general_mat_mul(T::one(), &wg, &cols, T::zero(), &mut y);
            let base = (img * o + gr * og) * oh * ow;
            for (dst, v) in out[base..base + og * oh * ow].iter_mut().zip(y.iter()) {
                *dst = *v;
            }
        }
    }
    array(out_shape, out)
}

pub fn conv_grad_input<T: Real>(
    dy: &ArrayD<T>,
    wt: &ArrayD<T>,
    window: &Window,
    groups: usize,
    x_shape: &[usize],
) -> ArrayD<T> {
    let g = geo(window);
    let [n, c, h, w] = as4(x_shape);
    let [_, o, oh, ow] = as4(dy.shape());
    let (cg, og) = (c / groups, o / groups);
    let k = cg * g.kh * g.kw;
    let wd = data(wt);
    let wm = matrix(&wd, o, k);
    let dyd = data(dy);
    let mut dx = vec![T::zero(); n * c * h * w];
    for img in 0..n {
        for gr in 0..groups {
            let base = (img * o + gr * og) * oh * ow;
            let dyg = array(&[og, oh * ow], dyd[base..base + og * oh * ow].to_vec());
            let dyg = dyg
                .into_dimensionality::<ndarray::Ix2>()
                .unwrap_or_else(|_| Array2::zeros((og, oh * ow)));
            let wg = wm.slice(ndarray::s![gr * og..(gr + 1) * og, ..]);
            let mut cols = Array2::zeros((k, oh * ow));
            general_mat_mul(T::one(), &wg.t(), &dyg, T::zero(), &mut cols);
            for cc in 0..cg {
                for i in 0..g.kh {
                    for j in 0..g.kw {
                        let row = (cc * g.kh + i) * g.kw + j;
                        for a in 0..oh {
                            for b in 0..ow {
                                if let Some((y, z)) = src(&g, h, w, a, b, i, j) {
                                    let idx = ((img * c + gr * cg + cc) * h + y) * w + z;
                                    dx[idx] = dx[idx] + cols[[row, a * ow + b]];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    array(x_shape, dx)
}

pub fn conv_grad_weight<T: Real>(
    x: &ArrayD<T>,
    dy: &ArrayD<T>,
    window: &Window,
    groups: usize,
    w_shape: &[usize],
) -> ArrayD<T> {
    let g = geo(window);
    let [n, c, h, w] = as4(x.shape());
    let [_, o, oh, ow] = as4(dy.shape());
    let (cg, og) = (c / groups, o / groups);
    let k = cg * g.kh * g.kw;
    let xd = data(x);
    let dyd = data(dy);
    let mut dw = Array2::<T>::zeros((o, k));
    for img in 0..n {
        let xi = &xd[img * c * h * w..(img + 1) * c * h * w];
        for gr in 0..groups {
            let cols = im2col(xi, gr * cg, cg, h, w, oh, ow, &g);
            let base = (img * o + gr * og) * oh * ow;
            let dyg =
                Array2::from_shape_vec((og, oh * ow), dyd[base..base + og * oh * ow].to_vec())
                    .unwrap_or_else(|_| Array2::zeros((og, oh * ow)));
            let mut part = dw.slice_mut(ndarray::s![gr * og..(gr + 1) * og, ..]);
            general_mat_mul(T::one(), &dyg, &cols.t(), T::one(), &mut part);
        }
    }
    array(w_shape, dw.iter().copied().collect())
}

/// The rows/columns a pooling window covers, clipped to the input, and the
/// divisor of average pooling (PyTorch: the window clipped to the padded input).
fn span(o: usize, stride: usize, pad: usize, k: usize, n: usize) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + k as isize).min((n + pad) as isize);
    let size = (end - start).max(0) as usize;
    let lo = start.max(0) as usize;
    let hi = (end.max(0) as usize).min(n);
    (lo, hi.max(lo), size)
}

pub fn pool<T: Real>(
    x: &ArrayD<T>,
    kind: PoolKind,
    window: &Window,
    out_shape: &[usize],
) -> ArrayD<T> {
    let g = geo(window);
    let [n, c, h, w] = as4(x.shape());
    let [_, _, oh, ow] = as4(out_shape);
    let xd = data(x);
    let mut out = vec![T::zero(); n * c * oh * ow];
    for nc in 0..n * c {
        let plane = &xd[nc * h * w..(nc + 1) * h * w];
        for a in 0..oh {
            let (y0, y1, sy) = span(a, g.sh, g.ph, g.kh, h);
            for b in 0..ow {
                let (x0, x1, sx) = span(b, g.sw, g.pw, g.kw, w);
                let v = match kind {
                    PoolKind::Max => {
                        let mut m = T::neg_infinity();
                        for y in y0..y1 {
                            for z in x0..x1 {
                                let v = plane[y * w + z];
                                if v > m || v.is_nan() {
                                    m = v;
                                }
                            }
                        }
                        m
                    }
                    PoolKind::Avg => {
                        let mut s = T::zero();
                        for y in y0..y1 {
                            for z in x0..x1 {
                                s = s + plane[y * w + z];
                            }
                        }
                        s / real((sy * sx).max(1) as f64)
                    }
                };
                out[(nc * oh + a) * ow + b] = v;
            }
        }
    }
    array(out_shape, out)
}

/// Where each max-pooling window's first maximum is, as a flat index into
/// `x` (the element the gradient goes to; `usize::MAX` for an empty window).
pub fn max_pool_argmax<T: Real>(x: &ArrayD<T>, window: &Window, out_shape: &[usize]) -> Vec<usize> {
    let g = geo(window);
    let [n, c, h, w] = as4(x.shape());
    let [_, _, oh, ow] = as4(out_shape);
    let xd = data(x);
    let mut out = vec![usize::MAX; n * c * oh * ow];
    for nc in 0..n * c {
        let plane = &xd[nc * h * w..(nc + 1) * h * w];
        for a in 0..oh {
            let (y0, y1, _) = span(a, g.sh, g.ph, g.kh, h);
            for b in 0..ow {
                let (x0, x1, _) = span(b, g.sw, g.pw, g.kw, w);
                let mut m = T::neg_infinity();
                let at = &mut out[(nc * oh + a) * ow + b];
                for y in y0..y1 {
                    for z in x0..x1 {
                        let v = plane[y * w + z];
                        if v > m || *at == usize::MAX {
                            m = v;
                            *at = nc * h * w + y * w + z;
                        }
                    }
                }
            }
        }
    }
    out
}

pub fn pool_grad<T: Real>(
    x: &ArrayD<T>,
    dy: &ArrayD<T>,
    kind: PoolKind,
    window: &Window,
) -> ArrayD<T> {
    let g = geo(window);
    let [n, c, h, w] = as4(x.shape());
    let [_, _, oh, ow] = as4(dy.shape());
    let xd = data(x);
    let dyd = data(dy);
    let mut dx = vec![T::zero(); n * c * h * w];
    for nc in 0..n * c {
        let plane = &xd[nc * h * w..(nc + 1) * h * w];
        for a in 0..oh {
            let (y0, y1, sy) = span(a, g.sh, g.ph, g.kh, h);
            for b in 0..ow {
                let (x0, x1, sx) = span(b, g.sw, g.pw, g.kw, w);
                let gv = dyd[(nc * oh + a) * ow + b];
                match kind {
                    PoolKind::Max => {
                        // The first maximum in scan order takes the gradient.
                        let mut best: Option<(usize, T)> = None;
                        for y in y0..y1 {
                            for z in x0..x1 {
                                let v = plane[y * w + z];
                                if best.is_none_or(|(_, m)| v > m || (v.is_nan() && !m.is_nan())) {
                                    best = Some((y * w + z, v));
                                }
                            }
                        }
                        if let Some((i, _)) = best {
                            dx[nc * h * w + i] = dx[nc * h * w + i] + gv;
                        }
                    }
                    PoolKind::Avg => {
                        let share = gv / real((sy * sx).max(1) as f64);
                        for y in y0..y1 {
                            for z in x0..x1 {
                                dx[nc * h * w + y * w + z] = dx[nc * h * w + y * w + z] + share;
                            }
                        }
                    }
                }
            }
        }
    }
    array(x.shape(), dx)
}
