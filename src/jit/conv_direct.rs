//! Direct convolution for layers with few output channels (LeNet's, a
//! ResNet stem), vectorised over the output channels with 256-bit FMAs.
//!
//! Through im2col such a layer is a product per image too small for the
//! `gemm` crate (LeNet's second layer: 100×16×150, ~36 GFLOP/s with the
//! columns, which are six times the input). Here the output channels of a
//! position are one or two 8-lane accumulators, a run of positions (or of
//! kernel taps) stays in registers, and the input is read in place from a
//! zero-padded copy of the image:
//!
//! - forward:     y[o, p] = Σ W[o, c, i, j] · x[c, p + (i, j)]
//! - input grad:  the forward convolution of dy, padded by k − 1 − pad, with
//!   W flipped and its two channel axes swapped (stride 1 only)
//! - weight grad: dW[o, c, i, j] = Σ dy[n, o, p] · x[n, c, p + (i, j)], with
//!   dy transposed per image to [P][O] so that a position's channels are one
//!   load, and a kernel row's taps in registers
//!
//! Stride 1, no dilation, one group; up to 16 output channels (of the
//! convolution computed: C for the input gradient).

// The register blocks index accumulator arrays by lane group and position
// together; iterators would hide which register is which.
#![allow(clippy::needless_range_loop)]

use super::Ctx;
use super::helpers::{ConvDesc, Shared};
use super::team::parallel_for;

/// Output channels per accumulator.
const LANES: usize = 8;
/// Accumulators a block keeps in registers (of the 16 the ISA has).
const ACCS: usize = 12;
/// Zeros after a padded image, for the positions (up to a block of 8·ACCS)
/// and taps a block computes past the end of a row (their results are
/// dropped).
const SLACK: usize = LANES * ACCS + 32;

thread_local! {
    static XPAD: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static TRANS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
use super::conv::with_scratch as scratch;

/// Whether this convolution runs here (the host has AVX2 and FMA, and the
/// shape is one this module handles).
pub fn applies(d: &ConvDesc) -> bool {
    let simple = d.groups == 1 && d.sh == 1 && d.sw == 1 && d.dh == 1 && d.dw == 1;
    let same_geometry = d.oh + d.kh == d.h + 2 * d.ph + 1 && d.ow + d.kw == d.w + 2 * d.pw + 1;
    // Outputs, positions and terms per output of the convolution computed.
    let (outputs, positions, terms) = match d.kind {
        0 => (d.o, d.oh * d.ow, d.c * d.kh * d.kw),
        // The input gradient is a convolution of dy padded by k − 1 − pad.
        1 if d.ph < d.kh && d.pw < d.kw => (d.c, d.h * d.w, d.o * d.kh * d.kw),
        1 => return false,
        _ => (d.o, 0, usize::MAX),
    };
    // Vectorised over channels, a convolution with few terms per output is
    // bound by storing its outputs and loses to im2col on large maps (a
    // ResNet stem, 3 channels × 3×3 on 32×32: 0.43 → 0.54 ms); with many
    // terms or on small maps it wins (LeNet's 6 × 5×5 on 10×10: 0.84 →
    // 0.35 ms; 16 × 3×3 on 32×32: 2.18 → 1.74 ms against the shifted
    // products, 2.6 → 1.0 at 2 threads). Over positions (≤ 8 channels) and
    // for weight gradients it won on every layer measured. A 1×1
    // convolution is a plain product: left to `gemm`.
    let wins = outputs <= LANES || positions < DIRECT_MAX_POSITIONS || terms >= DIRECT_MIN_TERMS;
    simple
        && same_geometry
        && d.kh * d.kw > 1
        && (1..=2 * LANES).contains(&outputs)
        && wins
        && super::host::has_avx2()
}

/// Maps of at least this many positions run channel-vectorised passes with
/// fewer than [`DIRECT_MIN_TERMS`] terms per output through im2col instead.
const DIRECT_MAX_POSITIONS: usize = 512;
const DIRECT_MIN_TERMS: usize = 64;

/// A stride-1 convolution of one padded image: `xp` is [c][hp][wp] plus
/// [`SLACK`] zeros, `wk` the weights as [c][kh][kw][v·8], `y` [o][oh][ow].
struct Image {
    c: usize,
    /// Padded rows `rows.0..rows.1` hold the image; the others are zeros,
    /// whose taps are skipped.
    rows: (usize, usize),
    hp: usize,
    wp: usize,
    kh: usize,
    kw: usize,
    o: usize,
    oh: usize,
    ow: usize,
}

impl Image {
    fn vectors(&self) -> usize {
        self.o.div_ceil(LANES)
    }

    /// The kernel rows whose taps read image rows (not padding) for output
    /// row `oy`.
    fn taps_rows(&self, oy: usize) -> (usize, usize) {
        let i0 = self.rows.0.saturating_sub(oy).min(self.kh);
        let i1 = self.rows.1.saturating_sub(oy).clamp(i0, self.kh);
        (i0, i1)
    }
}

/// The run length (of positions or taps) in 1..=max with the least work
/// computed and dropped past `len`; the longer on ties.
fn run_length(len: usize, max: usize) -> usize {
    (1..=max)
        .min_by_key(|&n| (len.div_ceil(n) * n, usize::MAX - n))
        .unwrap_or(1)
}

/// Copies `src` [c][h][w] into `dst` [c][h + 2ph][w + 2pw] + SLACK, zero
/// around.
///
/// # Safety
/// `src` holds c·h·w floats.
unsafe fn pad_image(
    src: *const f32,
    c: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    dst: &mut [f32],
) {
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    dst.fill(0.0);
    for cc in 0..c {
        for r in 0..h {
            // SAFETY: row r of channel cc is inside src.
            let row = unsafe { std::slice::from_raw_parts(src.add((cc * h + r) * w), w) };
            let at = (cc * hp + r + ph) * wp + pw;
            dst[at..at + w].copy_from_slice(row);
        }
    }
}

/// Runs a convolution this module [`applies`] to.
///
/// # Safety
/// Called from `nnc_conv` with a live context: the descriptor's buffers
/// cover the shapes it names.
pub unsafe fn run(ctx: *const Ctx, d: &ConvDesc, threads: usize) {
    let (x, w, y) = unsafe {
        (
            Shared(d.x.ptr(ctx)),
            Shared(d.wt.ptr(ctx)),
            Shared(d.y.ptr(ctx)),
        )
    };
    let (kk, k) = (d.kh * d.kw, d.c * d.kh * d.kw);
    let parts = threads.clamp(1, d.n.max(1));
    let images = |t: usize| (d.n * t / parts, d.n * (t + 1) / parts);
    match d.kind {
        0 | 1 => {
            // Forward: x → y with W; input grad: dy → dx with W flipped.
            let grad = d.kind == 1;
            let (src, dst) = if grad { (y, x) } else { (x, y) };
            let (ci, hi, wi, co, ho, wo) = if grad {
                (d.o, d.oh, d.ow, d.c, d.h, d.w)
            } else {
                (d.c, d.h, d.w, d.o, d.oh, d.ow)
            };
            let (ph, pw) = if grad {
                (d.kh - 1 - d.ph, d.kw - 1 - d.pw)
            } else {
                (d.ph, d.pw)
            };
            let im = Image {
                c: ci,
                rows: (ph, ph + hi),
                hp: hi + 2 * ph,
                wp: wi + 2 * pw,
                kh: d.kh,
                kw: d.kw,
                o: co,
                oh: ho,
                ow: wo,
            };
            let v8 = im.vectors() * LANES;
            scratch(&PACK, ci * kk * v8, |wk| {
                wk.fill(0.0);
                for oc in 0..co {
                    for cc in 0..ci {
                        for t in 0..kk {
                            // Forward: W[oc][cc][t]; grad: W[cc][oc][flipped t].
                            let from = if grad {
                                (cc * d.c + oc) * kk + (kk - 1 - t)
                            } else {
                                (oc * d.c + cc) * kk + t
                            };
                            wk[(cc * kk + t) * v8 + oc] = unsafe { *w.get().add(from) };
                        }
                    }
                }
                let wk = Shared(wk.as_mut_ptr());
                let (xs, ys) = (ci * hi * wi, co * ho * wo);
                parallel_for(threads, parts, |t| {
                    let (lo, hi_img) = images(t);
                    scratch(&XPAD, im.c * im.hp * im.wp + SLACK, |xp| {
                        for n in lo..hi_img {
                            unsafe {
                                pad_image(src.get().add(n * xs), ci, hi, wi, ph, pw, xp);
                                let out = dst.get().add(n * ys);
                                if co <= LANES {
                                    forward_image_narrow(&im, xp.as_ptr(), wk.get(), out);
                                } else {
                                    forward_image(&im, xp.as_ptr(), wk.get(), out);
                                }
                            }
                        }
                    })
                });
            });
        }
        _ => {
            let im = Image {
                c: d.c,
                rows: (d.ph, d.ph + d.h),
                hp: d.h + 2 * d.ph,
                wp: d.w + 2 * d.pw,
                kh: d.kh,
                kw: d.kw,
                o: d.o,
                oh: d.oh,
                ow: d.ow,
            };
            let v8 = im.vectors() * LANES;
            let (p, xs, ys) = (d.oh * d.ow, d.c * d.h * d.w, d.o * d.oh * d.ow);
            // One partial dWᵀ [k][v·8] per part, summed in a fixed order.
            scratch(&PACK, parts * k * v8, |partials| {
                partials.fill(0.0);
                let base = Shared(partials.as_mut_ptr());
                parallel_for(threads, parts, |t| {
                    let (lo, hi_img) = images(t);
                    let acc = unsafe { base.get().add(t * k * v8) };
                    scratch(&XPAD, im.c * im.hp * im.wp + SLACK, |xp| {
                        let narrow = d.o <= LANES;
                        let ow8 = d.ow.next_multiple_of(LANES);
                        let len = if narrow { d.o * d.oh * ow8 } else { p * v8 };
                        scratch(&TRANS, len, |dyt| {
                            dyt.fill(0.0);
                            for n in lo..hi_img {
                                unsafe {
                                    pad_image(x.get().add(n * xs), d.c, d.h, d.w, d.ph, d.pw, xp);
                                    let dy = y.get().add(n * ys);
                                    if narrow {
                                        // dy with rows widened to ow8 (zeros past ow).
                                        for r in 0..d.o * d.oh {
                                            let src =
                                                std::slice::from_raw_parts(dy.add(r * d.ow), d.ow);
                                            dyt[r * ow8..r * ow8 + d.ow].copy_from_slice(src);
                                        }
                                        weight_grad_image_narrow(
                                            &im,
                                            xp.as_ptr(),
                                            dyt.as_ptr(),
                                            acc,
                                        );
                                    } else {
                                        // dy transposed to [P][v·8].
                                        for oc in 0..d.o {
                                            for q in 0..p {
                                                dyt[q * v8 + oc] = *dy.add(oc * p + q);
                                            }
                                        }
                                        weight_grad_image(&im, xp.as_ptr(), dyt.as_ptr(), acc);
                                    }
                                }
                            }
                        })
                    })
                });
                // dW [o][k] = Σ over parts of the partials' transposes.
                let dw = w.get();
                for oc in 0..d.o {
                    for kq in 0..k {
                        let mut s = 0.0f32;
                        for t in 0..parts {
                            s += partials[(t * k + kq) * v8 + oc];
                        }
                        unsafe { *dw.add(oc * k + kq) = s };
                    }
                }
            });
        }
    }
}

/// Calls `$f::<A, B>` for the runtime pair (a, b), a in 1..=8 and
/// b in 1..=ACCS / a: accumulator vectors (or channels) by positions (or
/// taps), at most ACCS registers in all.
macro_rules! by_block {
    ($c:expr, $x:expr, $f:ident ( $($arg:expr),* )) => {
        match ($c, $x) {
            (1, 1) => $f::<1, 1>($($arg),*),
            (1, 2) => $f::<1, 2>($($arg),*),
            (1, 3) => $f::<1, 3>($($arg),*),
            (1, 4) => $f::<1, 4>($($arg),*),
            (1, 5) => $f::<1, 5>($($arg),*),
            (1, 6) => $f::<1, 6>($($arg),*),
            (1, 7) => $f::<1, 7>($($arg),*),
            (1, 8) => $f::<1, 8>($($arg),*),
            (1, 9) => $f::<1, 9>($($arg),*),
            (1, 10) => $f::<1, 10>($($arg),*),
            (1, 11) => $f::<1, 11>($($arg),*),
            (1, _) => $f::<1, 12>($($arg),*),
            (2, 1) => $f::<2, 1>($($arg),*),
            (2, 2) => $f::<2, 2>($($arg),*),
            (2, 3) => $f::<2, 3>($($arg),*),
            (2, 4) => $f::<2, 4>($($arg),*),
            (2, 5) => $f::<2, 5>($($arg),*),
            (2, _) => $f::<2, 6>($($arg),*),
            (3, 1) => $f::<3, 1>($($arg),*),
            (3, 2) => $f::<3, 2>($($arg),*),
            (3, 3) => $f::<3, 3>($($arg),*),
            (3, _) => $f::<3, 4>($($arg),*),
            (4, 1) => $f::<4, 1>($($arg),*),
            (4, 2) => $f::<4, 2>($($arg),*),
            (4, _) => $f::<4, 3>($($arg),*),
            (5, 1) => $f::<5, 1>($($arg),*),
            (5, _) => $f::<5, 2>($($arg),*),
            (6, 1) => $f::<6, 1>($($arg),*),
            (6, _) => $f::<6, 2>($($arg),*),
            (7, _) => $f::<7, 1>($($arg),*),
            _ => $f::<8, 1>($($arg),*),
        }
    };
}

/// y [o][oh][ow] of one padded image.
///
/// # Safety
/// As [`Image`]: `xp` has c·hp·wp + SLACK floats, `wk` c·kh·kw·v·8, `y`
/// o·oh·ow.
unsafe fn forward_image(im: &Image, xp: *const f32, wk: *const f32, y: *mut f32) {
    let v = im.vectors();
    let v8 = v * LANES;
    let nx = run_length(im.ow, ACCS / v);
    // A row's outputs as [ow][v·8], then copied out channel by channel:
    // storing each position's channels straight into y would write o
    // planes at once, which alias in the cache when a plane is 4 KiB.
    scratch(&ROW, im.ow.next_multiple_of(nx) * v8, |tile| {
        for oy in 0..im.oh {
            let mut ox = 0;
            while ox < im.ow {
                // SAFETY: the host has AVX2 and FMA (`applies`); reads stay in
                // xp (a run past the row end reads at most nx + kw into SLACK).
                unsafe {
                    let at = tile.as_mut_ptr().add(ox * v8);
                    by_block!(v, nx, forward_run(im, xp, wk, at, oy, ox));
                }
                ox += nx;
            }
            for oc in 0..im.o {
                // SAFETY: row oy of plane oc is inside y.
                let out = unsafe {
                    std::slice::from_raw_parts_mut(y.add((oc * im.oh + oy) * im.ow), im.ow)
                };
                for (x, o) in out.iter_mut().enumerate() {
                    *o = tile[x * v8 + oc];
                }
            }
        }
    });
}

/// N positions from (oy, ox) of every output channel, into `tile` as [N][V·8].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_run<const V: usize, const N: usize>(
    im: &Image,
    xp: *const f32,
    wk: *const f32,
    tile: *mut f32,
    oy: usize,
    ox: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); V]; N];
    let v8 = V * LANES;
    unsafe {
        let (i0, i1) = im.taps_rows(oy);
        for cc in 0..im.c {
            for i in i0..i1 {
                let row = xp.add((cc * im.hp + oy + i) * im.wp + ox);
                let wrow = wk.add((cc * im.kh + i) * im.kw * v8);
                for j in 0..im.kw {
                    let mut wv = [_mm256_setzero_ps(); V];
                    for (u, w) in wv.iter_mut().enumerate() {
                        *w = _mm256_loadu_ps(wrow.add(j * v8 + u * LANES));
                    }
                    for (t, a) in acc.iter_mut().enumerate() {
                        let xb = _mm256_broadcast_ss(&*row.add(j + t));
                        for u in 0..V {
                            a[u] = _mm256_fmadd_ps(xb, wv[u], a[u]);
                        }
                    }
                }
            }
        }
        for (t, a) in acc.iter().enumerate() {
            for u in 0..V {
                _mm256_storeu_ps(tile.add(t * v8 + u * LANES), a[u]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_run<const V: usize, const N: usize>(
    _: &Image,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: usize,
    _: usize,
) {
}

/// Adds this image's dWᵀ [c][kh][kw][v·8] into `acc`.
///
/// # Safety
/// `xp` as in [`forward_image`]; `dyt` is dy as [oh·ow][v·8]; `acc` has
/// c·kh·kw·v·8 floats.
unsafe fn weight_grad_image(im: &Image, xp: *const f32, dyt: *const f32, acc: *mut f32) {
    let v = im.vectors();
    let nk = run_length(im.kw, ACCS / v);
    // Two kernel rows at a time when their accumulators fit in registers.
    let pair = 2 * v * nk <= ACCS;
    for cc in 0..im.c {
        let mut i = 0;
        while i < im.kh {
            let rows = if pair && i + 1 < im.kh { 2 } else { 1 };
            let mut j = 0;
            while j < im.kw {
                let valid = nk.min(im.kw - j);
                // SAFETY: as in `forward_image`; taps past kw read SLACK,
                // and row i + rows − 1 < kh is inside the padded image.
                unsafe {
                    by_block!(
                        v,
                        nk,
                        weight_grad_run(im, xp, dyt, acc, cc, i, j, valid, rows)
                    )
                };
                j += nk;
            }
            i += rows;
        }
    }
}

/// Taps (i.., j..j + N) of input channel `cc` for `rows` (1 or 2) kernel
/// rows, summed over all positions; adds the first `valid` of each row into
/// `acc`. Two rows share each load of dy: with a 3-wide kernel one row
/// keeps only 6 accumulators busy, too few to hide the FMA latency.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_run<const V: usize, const N: usize>(
    im: &Image,
    xp: *const f32,
    dyt: *const f32,
    acc: *mut f32,
    cc: usize,
    i: usize,
    j: usize,
    valid: usize,
    rows: usize,
) {
    unsafe {
        if rows == 2 {
            weight_grad_rows::<V, N, 2>(im, xp, dyt, acc, cc, i, j, valid)
        } else {
            weight_grad_rows::<V, N, 1>(im, xp, dyt, acc, cc, i, j, valid)
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_rows<const V: usize, const N: usize, const R: usize>(
    im: &Image,
    xp: *const f32,
    dyt: *const f32,
    acc: *mut f32,
    cc: usize,
    i: usize,
    j: usize,
    valid: usize,
) {
    use std::arch::x86_64::*;
    let mut s = [[[_mm256_setzero_ps(); V]; N]; R];
    let v8 = V * LANES;
    unsafe {
        for oy in 0..im.oh {
            let row = xp.add((cc * im.hp + oy + i) * im.wp + j);
            let drow = dyt.add(oy * im.ow * v8);
            for ox in 0..im.ow {
                let mut dv = [_mm256_setzero_ps(); V];
                for (u, d) in dv.iter_mut().enumerate() {
                    *d = _mm256_loadu_ps(drow.add(ox * v8 + u * LANES));
                }
                for (r, sr) in s.iter_mut().enumerate() {
                    for (t, a) in sr.iter_mut().enumerate() {
                        let xb = _mm256_broadcast_ss(&*row.add(r * im.wp + ox + t));
                        for u in 0..V {
                            a[u] = _mm256_fmadd_ps(xb, dv[u], a[u]);
                        }
                    }
                }
            }
        }
        for (r, sr) in s.iter().enumerate() {
            for (t, a) in sr.iter().enumerate().take(valid) {
                let at = acc.add(((cc * im.kh + i + r) * im.kw + j + t) * v8);
                for u in 0..V {
                    let p = at.add(u * LANES);
                    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), a[u]));
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_run<const V: usize, const N: usize>(
    _: &Image,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
) {
}

// Few output channels (at most 8): vectorised over output positions instead,
// a block of channels × 8-position vectors in registers.

/// Output channels × position vectors a narrow block keeps in registers.
fn narrow_vectors(channels: usize, len: usize) -> usize {
    (ACCS / channels).clamp(1, len.div_ceil(LANES))
}

/// y [o][oh][ow] of one padded image, for o ≤ 8 (`wk` as in
/// [`forward_image`]).
///
/// # Safety
/// As [`forward_image`].
unsafe fn forward_image_narrow(im: &Image, xp: *const f32, wk: *const f32, y: *mut f32) {
    let xv = narrow_vectors(im.o, im.ow);
    for oy in 0..im.oh {
        let mut ox = 0;
        while ox < im.ow {
            // SAFETY: as in `forward_image`; a block reads at most
            // 8·xv + kw past its start, inside the row or SLACK.
            unsafe { by_block!(im.o, xv, forward_run_narrow(im, xp, wk, y, oy, ox)) };
            ox += xv * LANES;
        }
    }
}

/// Positions ox..ox + 8·X of output row oy, all C channels.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_run_narrow<const C: usize, const X: usize>(
    im: &Image,
    xp: *const f32,
    wk: *const f32,
    y: *mut f32,
    oy: usize,
    ox: usize,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); X]; C];
    let v8 = im.vectors() * LANES;
    let (i0, i1) = im.taps_rows(oy);
    unsafe {
        for cc in 0..im.c {
            for i in i0..i1 {
                let row = xp.add((cc * im.hp + oy + i) * im.wp + ox);
                let wrow = wk.add((cc * im.kh + i) * im.kw * v8);
                for j in 0..im.kw {
                    let mut xs = [_mm256_setzero_ps(); X];
                    for (u, x) in xs.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(row.add(j + u * LANES));
                    }
                    for (o, a) in acc.iter_mut().enumerate() {
                        let wb = _mm256_broadcast_ss(&*wrow.add(j * v8 + o));
                        for u in 0..X {
                            a[u] = _mm256_fmadd_ps(wb, xs[u], a[u]);
                        }
                    }
                }
            }
        }
        let plane = im.oh * im.ow;
        let valid = (im.ow - ox).min(X * LANES);
        for (o, a) in acc.iter().enumerate() {
            let at = y.add(o * plane + oy * im.ow + ox);
            for u in 0..X {
                let n = valid.saturating_sub(u * LANES).min(LANES);
                if n == LANES {
                    _mm256_storeu_ps(at.add(u * LANES), a[u]);
                } else if n > 0 {
                    let mut tail = [0.0f32; LANES];
                    _mm256_storeu_ps(tail.as_mut_ptr(), a[u]);
                    std::ptr::copy_nonoverlapping(tail.as_ptr(), at.add(u * LANES), n);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn forward_run_narrow<const C: usize, const X: usize>(
    _: &Image,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: usize,
    _: usize,
) {
}

/// Adds this image's dW [o][c][kh][kw] (o ≤ 8) into `acc` (laid out as in
/// [`weight_grad_image`]); `dy` is the image's output gradient with each
/// row widened to `ow8` = ow rounded up to 8 and zero past ow.
///
/// # Safety
/// `xp` as in [`forward_image`]; `dy` has o·oh·ow8 floats; `acc` has
/// c·kh·kw·v·8.
unsafe fn weight_grad_image_narrow(im: &Image, xp: *const f32, dy: *const f32, acc: *mut f32) {
    let taps = (ACCS / im.o).clamp(1, im.kw);
    for cc in 0..im.c {
        for i in 0..im.kh {
            let mut j = 0;
            while j < im.kw {
                // SAFETY: as in `weight_grad_image`.
                unsafe {
                    by_block!(
                        im.o,
                        taps,
                        weight_grad_run_narrow(im, xp, dy, acc, cc, i, j)
                    )
                };
                j += taps;
            }
        }
    }
}

/// Taps (i, j..j + T) of input channel `cc` for all C output channels,
/// summed over the image's positions; adds those with j + t < kw to `acc`.
/// The lanes past `ow` multiply dy's zero padding by the next row's x: the
/// same sum for finite inputs, NaN for a tap where im2col would not see an
/// infinity.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_run_narrow<const C: usize, const T: usize>(
    im: &Image,
    xp: *const f32,
    dy: *const f32,
    acc: *mut f32,
    cc: usize,
    i: usize,
    j: usize,
) {
    use std::arch::x86_64::*;
    let mut s = [[_mm256_setzero_ps(); T]; C];
    let ow8 = im.ow.next_multiple_of(LANES);
    let plane = im.oh * ow8;
    unsafe {
        for oy in 0..im.oh {
            let row = xp.add((cc * im.hp + oy + i) * im.wp + j);
            let drow = dy.add(oy * ow8);
            for ox in (0..ow8).step_by(LANES) {
                let mut xs = [_mm256_setzero_ps(); T];
                for (t, x) in xs.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(row.add(ox + t));
                }
                for (o, a) in s.iter_mut().enumerate() {
                    let d = _mm256_loadu_ps(drow.add(o * plane + ox));
                    for t in 0..T {
                        a[t] = _mm256_fmadd_ps(d, xs[t], a[t]);
                    }
                }
            }
        }
        let v8 = im.vectors() * LANES;
        for (o, a) in s.iter().enumerate() {
            for (t, v) in a.iter().enumerate() {
                if j + t >= im.kw {
                    break;
                }
                let mut lanes = [0.0f32; LANES];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *v);
                *acc.add(((cc * im.kh + i) * im.kw + j + t) * v8 + o) += lanes.iter().sum::<f32>();
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_run_narrow<const C: usize, const T: usize>(
    _: &Image,
    _: *const f32,
    _: *const f32,
    _: *mut f32,
    _: usize,
    _: usize,
    _: usize,
) {
}
