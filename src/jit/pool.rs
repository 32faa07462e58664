//! Max and average pooling and their gradients over [N·C planes, H, W]
//! (1-D as H = 1), split across threads by planes. Window spans are
//! computed once at compile time.

use super::Ctx;
use super::helpers::{Loc, Shared};
use crate::ir::ops::{PoolKind, Window};

/// Pooling geometry with the span of every output row and column.
#[derive(Debug, Clone)]
pub struct PoolDesc {
    pub max: bool,
    pub grad: bool,
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    /// Per output row/column: first and last+1 input index, and the window
    /// size as PyTorch counts it for averages (clipped to the padded input).
    rows: Vec<(usize, usize, usize)>,
    cols: Vec<(usize, usize, usize)>,
    pub x: Loc,
    pub y: Loc,
    pub dx: Loc,
    /// Max pooling: the argmax of each window, written forward, read backward.
    pub indices: Option<Loc>,
}

/// Rows or columns a window covers, clipped, and the average's divisor.
fn span(o: usize, stride: usize, pad: usize, k: usize, n: usize) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + k as isize).min((n + pad) as isize);
    let size = (end - start).max(0) as usize;
    let lo = start.max(0) as usize;
    let hi = (end.max(0) as usize).min(n);
    (lo, hi.max(lo), size)
}

impl PoolDesc {
    pub fn new(kind: PoolKind, grad: bool, window: &Window, x: &[usize], y: &[usize]) -> PoolDesc {
        let four = |s: &[usize]| {
            if s.len() == 3 {
                [s[0], s[1], 1, s[2]]
            } else {
                [s[0], s[1], s[2], s[3]]
            }
        };
        let two = |v: &[usize], fill: usize| {
            if v.len() == 1 {
                (fill, v[0])
            } else {
                (v[0], v[1])
            }
        };
        let [n, c, h, w] = four(x);
        let [_, _, oh, ow] = four(y);
        let (kh, kw) = two(&window.kernel, 1);
        let (sh, sw) = two(&window.stride, 1);
        let (ph, pw) = two(&window.pad, 0);
        let here = Loc {
            region: 0,
            offset: 0,
        };
        PoolDesc {
            max: kind == PoolKind::Max,
            grad,
            planes: n * c,
            h,
            w,
            oh,
            ow,
            rows: (0..oh).map(|a| span(a, sh, ph, kh, h)).collect(),
            cols: (0..ow).map(|b| span(b, sw, pw, kw, w)).collect(),
            x: here,
            y: here,
            dx: here,
            indices: None,
        }
    }

    /// One plane forward; for max pooling also the argmax of each window
    /// (plane-local index) when `idx` is given.
    fn forward(&self, x: &[f32], y: &mut [f32], mut idx: Option<&mut [u32]>) {
        if self.max && self.full_2x2() {
            return self.max_2x2(x, y, idx);
        }
        for (a, &(y0, y1, sy)) in self.rows.iter().enumerate() {
            for (b, &(x0, x1, sx)) in self.cols.iter().enumerate() {
                let o = a * self.ow + b;
                if self.max {
                    let (best, at) = window_max(x, self.w, y0, y1, x0, x1);
                    y[o] = best;
                    if let Some(ix) = idx.as_deref_mut() {
                        ix[o] = at as u32;
                    }
                } else {
                    let mut s = 0.0f32;
                    for r in y0..y1 {
                        for &v in &x[r * self.w + x0..r * self.w + x1] {
                            s += v;
                        }
                    }
                    y[o] = s / (sy * sx).max(1) as f32;
                }
            }
        }
    }

    /// Every window is 2×2 and inside the input (the common max pooling).
    fn full_2x2(&self) -> bool {
        let full = |spans: &[(usize, usize, usize)]| spans.iter().all(|&(lo, hi, _)| hi - lo == 2);
        full(&self.rows) && full(&self.cols)
    }

    /// 2×2 max pooling with its argmax, written as selects the compiler
    /// vectorises (the first maximum of the window wins, as in the generic
    /// path; NaNs are not singled out here).
    fn max_2x2(&self, x: &[f32], y: &mut [f32], mut idx: Option<&mut [u32]>) {
        let w = self.w;
        let ow = self.ow;
        let stride = if self.cols.len() > 1 {
            self.cols[1].0 - self.cols[0].0
        } else {
            2
        };
        let c0 = self.cols.first().map_or(0, |c| c.0);
        for (a, &(r0, _, _)) in self.rows.iter().enumerate() {
            let top = &x[r0 * w..(r0 + 1) * w];
            let bot = &x[(r0 + 1) * w..(r0 + 2) * w];
            let out = &mut y[a * ow..(a + 1) * ow];
            let base = (r0 * w) as u32;
            let ix = idx.as_deref_mut().map(|ix| &mut ix[a * ow..(a + 1) * ow]);
            // Runs of 8 windows 8 at a time, the rest below.
            let (done, ix) = if stride == 2 {
                max_2x2_simd(top, bot, out, ix, c0, base, w)
            } else {
                (0, ix)
            };
            match ix {
                Some(ix) => {
                    for (b, (o, i)) in out.iter_mut().zip(ix.iter_mut()).enumerate().skip(done) {
                        let c = c0 + b * stride;
                        let (p, q, r, t) = (top[c], top[c + 1], bot[c], bot[c + 1]);
                        let up = q > p;
                        let m01 = if up { q } else { p };
                        let i01 = c as u32 + up as u32;
                        let dn = t > r;
                        let m23 = if dn { t } else { r };
                        let i23 = (w + c) as u32 + dn as u32;
                        let lower = m23 > m01;
                        *o = if lower { m23 } else { m01 };
                        *i = base + if lower { i23 } else { i01 };
                    }
                }
                None => {
                    for (b, o) in out.iter_mut().enumerate().skip(done) {
                        let c = c0 + b * stride;
                        let (p, q, r, t) = (top[c], top[c + 1], bot[c], bot[c + 1]);
                        let m01 = if q > p { q } else { p };
                        let m23 = if t > r { t } else { r };
                        *o = if m23 > m01 { m23 } else { m01 };
                    }
                }
            }
        }
    }

    /// One plane backward: `dx` (zeroed here) from the output gradient `dy`.
    fn backward(&self, x: &[f32], dy: &[f32], dx: &mut [f32], idx: Option<&[u32]>) {
        dx.fill(0.0);
        if let (true, Some(ix)) = (self.max, idx) {
            // A plain scatter from the argmax the forward pass kept.
            for (&g, &i) in dy.iter().zip(ix) {
                if let Some(t) = dx.get_mut(i as usize) {
                    *t += g;
                }
            }
            return;
        }
        for (a, &(y0, y1, sy)) in self.rows.iter().enumerate() {
            for (b, &(x0, x1, sx)) in self.cols.iter().enumerate() {
                let gv = dy[a * self.ow + b];
                if self.max {
                    let (_, at) = window_max(x, self.w, y0, y1, x0, x1);
                    if let Some(t) = dx.get_mut(at) {
                        *t += gv;
                    }
                } else {
                    let share = gv / (sy * sx).max(1) as f32;
                    for r in y0..y1 {
                        for t in &mut dx[r * self.w + x0..r * self.w + x1] {
                            *t += share;
                        }
                    }
                }
            }
        }
    }
}

/// Windows of stride 2 along a row pair, 8 at a time with 256-bit vectors
/// (the same comparisons as [`PoolDesc::max_2x2`], so the same results);
/// returns how many windows it did (all, or none when the host lacks AVX2
/// or the row is short) and the index slice back.
#[allow(clippy::type_complexity)]
fn max_2x2_simd<'a>(
    top: &[f32],
    bot: &[f32],
    out: &mut [f32],
    ix: Option<&'a mut [u32]>,
    c0: usize,
    base: u32,
    w: usize,
) -> (usize, Option<&'a mut [u32]>) {
    #[cfg(target_arch = "x86_64")]
    if crate::jit::host::has_avx512() && c0 + 2 * out.len() <= w {
        // Masked 512-bit stores are cheap (AVX2's are microcoded on AMD):
        // every row, short or long, in blocks of 16 windows. LeNet's pooling
        // (28 and 10 wide) took 0.061 and 0.052 ms a step with the AVX2
        // path and scalars (Zen 5, 1 thread).
        let mut ix = ix;
        // SAFETY: AVX-512 is present; the masked loads stay within the
        // windows' columns, the masked stores within `out` / `ix`.
        unsafe { max_2x2_avx512(top, bot, out, ix.as_deref_mut(), c0, base, w) };
        return (out.len(), ix);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::jit::host::has_avx2() {
        // Windows b.. read columns c0 + 2b .. of both rows; all of them
        // must lie inside the row (they do for an unpadded 2×2 pooling).
        // Rows of fewer than 8 windows stay scalar (one short block costs
        // more than it saves: 0.064 → 0.074 ms on LeNet's 10×10 maps).
        if out.len() < 8 || c0 + 2 * out.len() > w {
            return (0, ix);
        }
        let mut ix = ix;
        // SAFETY: AVX2 is present; loads stay within the windows' columns
        // (the last block's are masked), stores within `out` / `ix`.
        unsafe { max_2x2_avx2(top, bot, out, ix.as_deref_mut(), c0, base, w) };
        return (out.len(), ix);
    }
    let _ = (top, bot, out, c0, base, w);
    (0, ix)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn max_2x2_avx2(
    top: &[f32],
    bot: &[f32],
    out: &mut [f32],
    ix: Option<&mut [u32]>,
    c0: usize,
    base: u32,
    w: usize,
) {
    use std::arch::x86_64::*;
    // Even and odd elements of 16 consecutive floats, in order.
    let split = |a: __m256, b: __m256| {
        let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
        let odd = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
        let fix = |v: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        };
        (fix(even), fix(odd))
    };
    let steps = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Lanes below n: a mask for masked loads and stores.
    let below = |n: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane);
    let mut ix = ix;
    let n = out.len();
    for b in (0..n).step_by(8) {
        let c = c0 + 2 * b;
        let k = (n - b).min(8);
        // SAFETY: columns c .. c + 2k are inside both rows (checked by the
        // caller); a short last block masks the loads past them and the
        // stores past `out`.
        unsafe {
            let load = |row: &[f32], at: usize, m: __m256i| {
                if k == 8 {
                    _mm256_loadu_ps(row.as_ptr().add(at))
                } else {
                    _mm256_maskload_ps(row.as_ptr().wrapping_add(at), m)
                }
            };
            let (m0, m1) = (below(2 * k), below((2 * k).saturating_sub(8)));
            let (p, q) = split(load(top, c, m0), load(top, c + 8, m1));
            let (r, t) = split(load(bot, c, m0), load(bot, c + 8, m1));
            let up = _mm256_cmp_ps::<_CMP_GT_OQ>(q, p);
            let m01 = _mm256_blendv_ps(p, q, up);
            let dn = _mm256_cmp_ps::<_CMP_GT_OQ>(t, r);
            let m23 = _mm256_blendv_ps(r, t, dn);
            let lower = _mm256_cmp_ps::<_CMP_GT_OQ>(m23, m01);
            // (Masked stores are microcoded and slow on AMD: a short block
            // goes through a small array.)
            let store = |at: *mut f32, v: __m256| {
                if k == 8 {
                    _mm256_storeu_ps(at, v)
                } else {
                    let mut tmp = [0.0f32; 8];
                    _mm256_storeu_ps(tmp.as_mut_ptr(), v);
                    std::ptr::copy_nonoverlapping(tmp.as_ptr(), at, k);
                }
            };
            store(out.as_mut_ptr().add(b), _mm256_blendv_ps(m01, m23, lower));
            if let Some(ix) = ix.as_deref_mut() {
                let col = _mm256_add_epi32(_mm256_set1_epi32((base as usize + c) as i32), steps);
                // A true mask is −1: subtracting it adds 1 (the odd column).
                let i01 = _mm256_sub_epi32(col, _mm256_castps_si256(up));
                let i23 = _mm256_sub_epi32(
                    _mm256_add_epi32(col, _mm256_set1_epi32(w as i32)),
                    _mm256_castps_si256(dn),
                );
                let i = _mm256_blendv_ps(_mm256_castsi256_ps(i01), _mm256_castsi256_ps(i23), lower);
                store(ix.as_mut_ptr().add(b) as *mut f32, i);
            }
        }
    }
}

/// [`max_2x2_avx2`] with 512-bit vectors and masks: 16 windows at a time.
///
/// # Safety
/// The host has AVX-512 F; columns c0 .. c0 + 2·out.len() lie inside both
/// rows; `ix`, if any, is as long as `out`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn max_2x2_avx512(
    top: &[f32],
    bot: &[f32],
    out: &mut [f32],
    ix: Option<&mut [u32]>,
    c0: usize,
    base: u32,
    w: usize,
) {
    use std::arch::x86_64::*;
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
    let steps = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let one = _mm512_set1_epi32(1);
    // The first n lanes.
    let first = |n: usize| -> __mmask16 { if n >= 16 { 0xffff } else { (1u16 << n) - 1 } };
    let mut ix = ix;
    let n = out.len();
    for b in (0..n).step_by(16) {
        let c = c0 + 2 * b;
        let k = (n - b).min(16);
        let (m0, m1, mk) = (first(2 * k), first((2 * k).saturating_sub(16)), first(k));
        // SAFETY: the masked loads read columns c .. c + 2k only, inside
        // both rows (checked by the caller); the stores lanes < k only.
        unsafe {
            let split = |row: &[f32]| {
                let p = row.as_ptr().add(c);
                let lo = _mm512_maskz_loadu_ps(m0, p);
                let hi = _mm512_maskz_loadu_ps(m1, p.wrapping_add(16));
                (
                    _mm512_permutex2var_ps(lo, evens, hi),
                    _mm512_permutex2var_ps(lo, odds, hi),
                )
            };
            let (p, q) = split(top);
            let (r, t) = split(bot);
            let up = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(q, p);
            let m01 = _mm512_mask_blend_ps(up, p, q);
            let dn = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(t, r);
            let m23 = _mm512_mask_blend_ps(dn, r, t);
            let lower = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m23, m01);
            _mm512_mask_storeu_ps(
                out.as_mut_ptr().add(b),
                mk,
                _mm512_mask_blend_ps(lower, m01, m23),
            );
            if let Some(ix) = ix.as_deref_mut() {
                let col = _mm512_add_epi32(_mm512_set1_epi32((base as usize + c) as i32), steps);
                let i01 = _mm512_mask_add_epi32(col, up, col, one);
                let row2 = _mm512_add_epi32(col, _mm512_set1_epi32(w as i32));
                let i23 = _mm512_mask_add_epi32(row2, dn, row2, one);
                let i = _mm512_mask_blend_epi32(lower, i01, i23);
                _mm512_mask_storeu_epi32(ix.as_mut_ptr().add(b) as *mut i32, mk, i);
            }
        }
    }
}

/// The maximum of a window and where it is: the first maximum in scan
/// order, a NaN winning (as the reference interpreter). Written without
/// data-dependent branches: maxima are unpredictable.
#[inline]
fn window_max(x: &[f32], w: usize, y0: usize, y1: usize, x0: usize, x1: usize) -> (f32, usize) {
    let mut best = f32::NEG_INFINITY.to_bits();
    let mut at = u32::MAX;
    for r in y0..y1 {
        let row = &x[r * w + x0..r * w + x1];
        for (c, &v) in row.iter().enumerate() {
            let b = f32::from_bits(best);
            let take = (v > b) | (v.is_nan() & !b.is_nan());
            // Masks instead of branches.
            let m = (take as u32).wrapping_neg();
            best = (v.to_bits() & m) | (best & !m);
            at = (((r * w + x0 + c) as u32) & m) | (at & !m);
        }
    }
    (
        f32::from_bits(best),
        if at == u32::MAX {
            usize::MAX
        } else {
            at as usize
        },
    )
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns.
pub unsafe extern "C" fn nnc_pool(ctx: *const Ctx, d: *const PoolDesc) {
    unsafe {
        let d = &*d;
        let threads = (*ctx).threads.max(1);
        let (x, y) = (Shared(d.x.ptr(ctx)), Shared(d.y.ptr(ctx)));
        let dx = Shared(if d.grad {
            d.dx.ptr(ctx)
        } else {
            std::ptr::null_mut()
        });
        let idx = d.indices.map(|l| Shared(l.ptr(ctx)));
        let (xs, ys) = (d.h * d.w, d.oh * d.ow);
        let run = |lo: usize, hi: usize| {
            for pl in lo..hi {
                // SAFETY: plane pl of each tensor is inside its buffer.
                let xp = std::slice::from_raw_parts(x.get().add(pl * xs), xs);
                let yp = std::slice::from_raw_parts_mut(y.get().add(pl * ys), ys);
                let ip = idx.map(|p| {
                    std::slice::from_raw_parts_mut((p.get() as *mut u32).add(pl * ys), ys)
                });
                if d.grad {
                    let dxp = std::slice::from_raw_parts_mut(dx.get().add(pl * xs), xs);
                    d.backward(xp, yp, dxp, ip.as_deref());
                } else {
                    d.forward(xp, yp, ip);
                }
            }
        };
        let work = d.planes * xs;
        if threads == 1 || work < 1 << 15 {
            run(0, d.planes);
        } else {
            let parts = threads.min(d.planes);
            super::team::parallel_for(threads, parts, |t| {
                let (lo, hi) = (d.planes * t / parts, d.planes * (t + 1) / parts);
                run(lo, hi)
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::{PoolKind, Window};

    fn window(k: usize, s: usize, p: usize) -> Window {
        Window {
            kernel: vec![k, k],
            stride: vec![s, s],
            pad: vec![p, p],
            dilation: vec![1, 1],
            ceil: false,
        }
    }

    #[test]
    fn two_by_two_windows_take_the_fast_path_and_agree() {
        let d = PoolDesc::new(
            PoolKind::Max,
            false,
            &window(2, 2, 0),
            &[1, 1, 6, 6],
            &[1, 1, 3, 3],
        );
        assert!(d.full_2x2());
        let x: Vec<f32> = (0..36).map(|i| ((i * 7919) % 37) as f32).collect();
        let (mut y1, mut y2) = (vec![0.0; 9], vec![0.0; 9]);
        let (mut i1, mut i2) = (vec![0u32; 9], vec![0u32; 9]);
        d.max_2x2(&x, &mut y1, Some(&mut i1));
        for (o, (&(y0, yh, _), &(x0, xh, _))) in d
            .rows
            .iter()
            .flat_map(|r| d.cols.iter().map(move |c| (r, c)))
            .enumerate()
        {
            let (m, at) = window_max(&x, 6, y0, yh, x0, xh);
            y2[o] = m;
            i2[o] = at as u32;
        }
        assert_eq!((y1, i1), (y2, i2));
        // Planes wide enough for runs of 8 windows (and a remainder), with
        // ties and negative values.
        for (h, w) in [(4, 36), (2, 34), (6, 18), (4, 10), (2, 28), (2, 64)] {
            let d = PoolDesc::new(
                PoolKind::Max,
                false,
                &window(2, 2, 0),
                &[1, 1, h, w],
                &[1, 1, h / 2, w / 2],
            );
            assert!(d.full_2x2());
            let x: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
            let n = (h / 2) * (w / 2);
            let (mut y1, mut y2) = (vec![0.0; n], vec![0.0; n]);
            let (mut i1, mut i2) = (vec![0u32; n], vec![0u32; n]);
            d.max_2x2(&x, &mut y1, Some(&mut i1));
            let mut y3 = vec![0.0; n];
            d.max_2x2(&x, &mut y3, None);
            for (o, (&(y0, yh, _), &(x0, xh, _))) in d
                .rows
                .iter()
                .flat_map(|r| d.cols.iter().map(move |c| (r, c)))
                .enumerate()
            {
                let (m, at) = window_max(&x, w, y0, yh, x0, xh);
                y2[o] = m;
                i2[o] = at as u32;
            }
            assert_eq!((&y1, &i1), (&y2, &i2), "{h}x{w}");
            assert_eq!(y3, y2, "{h}x{w} without indices");
        }
        let padded = PoolDesc::new(
            PoolKind::Max,
            false,
            &window(3, 2, 1),
            &[1, 1, 6, 6],
            &[1, 1, 3, 3],
        );
        assert!(!padded.full_2x2());
    }

    /// Both vector widths give the scalar windows' maxima and argmaxima on
    /// one row pair, for every row length up to 40 windows (ties and
    /// negative values included), including rows the dispatch would leave
    /// to scalars.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_vector_widths_match_the_scalar_windows() {
        for n in 1..=40usize {
            let w = 2 * n + 3;
            let x: Vec<f32> = (0..2 * w).map(|i| ((i * 7919) % 11) as f32 - 5.0).collect();
            let (top, bot) = x.split_at(w);
            let c0 = 1;
            let want: Vec<(f32, u32)> = (0..n)
                .map(|b| {
                    let (m, at) = window_max(&x, w, 0, 2, c0 + 2 * b, c0 + 2 * b + 2);
                    (m, 100 + at as u32)
                })
                .collect();
            let mut runs: Vec<(&str, Vec<f32>, Vec<u32>)> = Vec::new();
            if crate::jit::host::has_avx2() {
                let (mut y, mut i) = (vec![0.0; n], vec![0u32; n]);
                unsafe { max_2x2_avx2(top, bot, &mut y, Some(&mut i), c0, 100, w) };
                runs.push(("avx2", y, i));
            }
            if crate::jit::host::has_avx512() {
                let (mut y, mut i) = (vec![0.0; n], vec![0u32; n]);
                unsafe { max_2x2_avx512(top, bot, &mut y, Some(&mut i), c0, 100, w) };
                runs.push(("avx512", y, i));
            }
            for (name, y, i) in runs {
                let got: Vec<(f32, u32)> = y.into_iter().zip(i).collect();
                assert_eq!(got, want, "{name}, {n} windows");
            }
        }
    }
}
