//! Direct convolution for layers with few output channels (LeNet's, a
//! ResNet stem), vectorised over the output channels with 256-bit or
//! 512-bit FMAs.
//!
//! Through im2col such a layer is a product per image too small for the
//! `gemm` crate (LeNet's second layer: 100×16×150, ~36 GFLOP/s with the
//! columns, which are six times the input). Here the output channels of a
//! position are one or two accumulators, a run of positions (or of
//! kernel taps) stays in registers, and the input is read in place from a
//! zero-padded copy of the image. The kernels are written once over
//! [`Simd`] and run 16 lanes wide where the host has AVX-512, 8 otherwise:
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
use super::simd::{Simd, host_lanes, wide_and_narrow};
use super::team::parallel_for;

/// Output channels up to which the kernels vectorise over positions rather
/// than channels (more lanes would sit idle over channels).
const NARROW: usize = 8;
/// Output channels of the convolution computed this module takes.
const MAX_OUTPUTS: usize = 16;
/// The widest vector (AVX-512's 16 floats).
const MAX_LANES: usize = 16;
/// Accumulators a block keeps in registers (of the 16 AVX2 has; AVX-512's
/// 32 would allow more, but LeNet's rows of 10 and 14 positions use no more).
const ACCS: usize = 12;
/// Zeros after a padded image, for the positions (up to a block of L·ACCS)
/// and taps a block computes past the end of a row (their results are
/// dropped).
const SLACK: usize = MAX_LANES * ACCS + 32;

thread_local! {
    static XPAD: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static TRANS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static PACK: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    static ROW: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
use super::conv::with_scratch as scratch;

/// Whether this convolution runs here (the host has AVX2 and FMA, and the
/// shape is one this module handles). Kernels are 16 lanes wide where the
/// host has AVX-512: on Zen 5, at 1 thread, LeNet's convolutions take 0.94
/// instead of 1.35 ms a step.
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
    let wins = outputs <= NARROW || positions < DIRECT_MAX_POSITIONS || terms >= DIRECT_MIN_TERMS;
    simple
        && same_geometry
        && d.kh * d.kw > 1
        && (1..=MAX_OUTPUTS).contains(&outputs)
        && wins
        && super::host::has_avx2()
}

/// Maps of at least this many positions run channel-vectorised passes with
/// fewer than [`DIRECT_MIN_TERMS`] terms per output through im2col instead.
const DIRECT_MAX_POSITIONS: usize = 512;
const DIRECT_MIN_TERMS: usize = 64;

/// A stride-1 convolution of one padded image: `xp` is [c][hp][wp] plus
/// [`SLACK`] zeros, `wk` the weights as [c][kh][kw][v·L], `y` [o][oh][ow].
struct Image {
    /// Floats per vector of the kernels (L): 16 or 8.
    lanes: usize,
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
        self.o.div_ceil(self.lanes)
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
    let lanes = host_lanes();
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
                lanes,
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
            let vl = im.vectors() * lanes;
            scratch(&PACK, ci * kk * vl, |wk| {
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
                            wk[(cc * kk + t) * vl + oc] = unsafe { *w.get().add(from) };
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
                                if co <= NARROW {
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
                lanes,
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
            let vl = im.vectors() * lanes;
            let (p, xs, ys) = (d.oh * d.ow, d.c * d.h * d.w, d.o * d.oh * d.ow);
            // One partial dWᵀ [k][v·L] per part, summed in a fixed order.
            scratch(&PACK, parts * k * vl, |partials| {
                partials.fill(0.0);
                let base = Shared(partials.as_mut_ptr());
                parallel_for(threads, parts, |t| {
                    let (lo, hi_img) = images(t);
                    let acc = unsafe { base.get().add(t * k * vl) };
                    scratch(&XPAD, im.c * im.hp * im.wp + SLACK, |xp| {
                        let narrow = d.o <= NARROW;
                        let owl = d.ow.next_multiple_of(lanes);
                        let len = if narrow { d.o * d.oh * owl } else { p * vl };
                        scratch(&TRANS, len, |dyt| {
                            dyt.fill(0.0);
                            for n in lo..hi_img {
                                unsafe {
                                    pad_image(x.get().add(n * xs), d.c, d.h, d.w, d.ph, d.pw, xp);
                                    let dy = y.get().add(n * ys);
                                    if narrow {
                                        // dy with rows widened to owl (zeros past ow).
                                        for r in 0..d.o * d.oh {
                                            let src =
                                                std::slice::from_raw_parts(dy.add(r * d.ow), d.ow);
                                            dyt[r * owl..r * owl + d.ow].copy_from_slice(src);
                                        }
                                        weight_grad_image_narrow(
                                            &im,
                                            xp.as_ptr(),
                                            dyt.as_ptr(),
                                            acc,
                                        );
                                    } else {
                                        // dy transposed to [P][v·L] (the lanes past
                                        // o stay zero).
                                        super::transpose::transpose_into(
                                            dy,
                                            dyt.as_mut_ptr(),
                                            d.o,
                                            p,
                                            p as isize,
                                            vl as isize,
                                        );
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
                            s += partials[(t * k + kq) * vl + oc];
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
/// As [`Image`]: `xp` has c·hp·wp + SLACK floats, `wk` c·kh·kw·v·L, `y`
/// o·oh·ow.
unsafe fn forward_image(im: &Image, xp: *const f32, wk: *const f32, y: *mut f32) {
    let v = im.vectors();
    let vl = v * im.lanes;
    let nx = run_length(im.ow, ACCS / v);
    // A row's outputs as [ow][v·L], then copied out channel by channel:
    // storing each position's channels straight into y would write o
    // planes at once, which alias in the cache when a plane is 4 KiB.
    scratch(&ROW, im.ow.next_multiple_of(nx) * vl, |tile| {
        for oy in 0..im.oh {
            let mut ox = 0;
            while ox < im.ow {
                // SAFETY: the host has the lanes' features (`applies`); reads
                // stay in xp (a run past the row end reads at most nx + kw
                // into SLACK).
                unsafe {
                    let at = tile.as_mut_ptr().add(ox * vl);
                    by_block!(v, nx, forward_run(im.lanes, im, xp, wk, at, oy, ox));
                }
                ox += nx;
            }
            // SAFETY: row oy of each plane is inside y.
            unsafe {
                super::transpose::transpose_into(
                    tile.as_ptr(),
                    y.add(oy * im.ow),
                    im.ow,
                    im.o,
                    vl as isize,
                    (im.oh * im.ow) as isize,
                )
            };
        }
    });
}

wide_and_narrow!(forward_run => forward_kernel(
    im: &Image, xp: *const f32, wk: *const f32, tile: *mut f32, oy: usize, ox: usize
));

/// N positions from (oy, ox) of every output channel, into `tile` as [N][V·L].
#[inline(always)]
unsafe fn forward_kernel<S: Simd, const V: usize, const N: usize>(
    im: &Image,
    xp: *const f32,
    wk: *const f32,
    tile: *mut f32,
    oy: usize,
    ox: usize,
) {
    unsafe {
        let mut acc = [[S::zero(); V]; N];
        let vl = V * S::L;
        let (i0, i1) = im.taps_rows(oy);
        for cc in 0..im.c {
            for i in i0..i1 {
                let row = xp.add((cc * im.hp + oy + i) * im.wp + ox);
                let wrow = wk.add((cc * im.kh + i) * im.kw * vl);
                for j in 0..im.kw {
                    let mut wv = [S::zero(); V];
                    for (u, w) in wv.iter_mut().enumerate() {
                        *w = S::load(wrow.add(j * vl + u * S::L));
                    }
                    for (t, a) in acc.iter_mut().enumerate() {
                        let xb = S::splat(row.add(j + t));
                        for u in 0..V {
                            a[u] = S::fma(xb, wv[u], a[u]);
                        }
                    }
                }
            }
        }
        for (t, a) in acc.iter().enumerate() {
            for u in 0..V {
                S::store(tile.add(t * vl + u * S::L), a[u]);
            }
        }
    }
}

/// Adds this image's dWᵀ [c][kh][kw][v·L] into `acc`.
///
/// # Safety
/// `xp` as in [`forward_image`]; `dyt` is dy as [oh·ow][v·L]; `acc` has
/// c·kh·kw·v·L floats.
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
                    if rows == 2 {
                        by_block!(
                            v,
                            nk,
                            weight_grad_run2(im.lanes, im, xp, dyt, acc, cc, i, j, valid)
                        )
                    } else {
                        by_block!(
                            v,
                            nk,
                            weight_grad_run1(im.lanes, im, xp, dyt, acc, cc, i, j, valid)
                        )
                    }
                };
                j += nk;
            }
            i += rows;
        }
    }
}

// [`weight_grad_kernel`] for one kernel row, and for two.
wide_and_narrow!(weight_grad_run1 => weight_grad_kernel[1](
    im: &Image, xp: *const f32, dyt: *const f32, acc: *mut f32,
    cc: usize, i: usize, j: usize, valid: usize
));
wide_and_narrow!(weight_grad_run2 => weight_grad_kernel[2](
    im: &Image, xp: *const f32, dyt: *const f32, acc: *mut f32,
    cc: usize, i: usize, j: usize, valid: usize
));

/// Taps (i.., j..j + N) of input channel `cc` for R (1 or 2) kernel rows,
/// summed over all positions; adds the first `valid` of each row into
/// `acc`. Two rows share each load of dy: with a 3-wide kernel one row
/// keeps only 6 accumulators busy, too few to hide the FMA latency.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_kernel<S: Simd, const V: usize, const N: usize, const R: usize>(
    im: &Image,
    xp: *const f32,
    dyt: *const f32,
    acc: *mut f32,
    cc: usize,
    i: usize,
    j: usize,
    valid: usize,
) {
    unsafe {
        let mut s = [[[S::zero(); V]; N]; R];
        let vl = V * S::L;
        for oy in 0..im.oh {
            let row = xp.add((cc * im.hp + oy + i) * im.wp + j);
            let drow = dyt.add(oy * im.ow * vl);
            for ox in 0..im.ow {
                let mut dv = [S::zero(); V];
                for (u, d) in dv.iter_mut().enumerate() {
                    *d = S::load(drow.add(ox * vl + u * S::L));
                }
                for (r, sr) in s.iter_mut().enumerate() {
                    for (t, a) in sr.iter_mut().enumerate() {
                        let xb = S::splat(row.add(r * im.wp + ox + t));
                        for u in 0..V {
                            a[u] = S::fma(xb, dv[u], a[u]);
                        }
                    }
                }
            }
        }
        for (r, sr) in s.iter().enumerate() {
            for (t, a) in sr.iter().enumerate().take(valid) {
                let at = acc.add(((cc * im.kh + i + r) * im.kw + j + t) * vl);
                for u in 0..V {
                    let p = at.add(u * S::L);
                    S::store(p, S::add(S::load(p), a[u]));
                }
            }
        }
    }
}

// Few output channels (at most NARROW): vectorised over output positions
// instead, a block of channels × L-position vectors in registers.

/// Output channels × position vectors a narrow block keeps in registers.
fn narrow_vectors(channels: usize, len: usize, lanes: usize) -> usize {
    (ACCS / channels).clamp(1, len.div_ceil(lanes))
}

/// y [o][oh][ow] of one padded image, for o ≤ NARROW (`wk` as in
/// [`forward_image`]).
///
/// # Safety
/// As [`forward_image`].
unsafe fn forward_image_narrow(im: &Image, xp: *const f32, wk: *const f32, y: *mut f32) {
    let xv = narrow_vectors(im.o, im.ow, im.lanes);
    // AVX-512's 32 registers hold the accumulators of two output rows, so
    // each weight broadcast feeds twice the FMAs. LeNet's second input
    // gradient (6 channels × one vector of a 14-wide row): 0.30 → 0.255 ms
    // at 1 thread on Zen 5; four rows took 0.27 (more taps over the
    // padding), and two rows of its first layer (6 × two vectors) 0.122
    // instead of 0.112.
    let rows = if im.lanes == 16 && im.o * xv <= 6 {
        2
    } else {
        1
    };
    let mut oy = 0;
    while oy < im.oh {
        let r = if oy + rows <= im.oh { rows } else { 1 };
        let mut ox = 0;
        while ox < im.ow {
            // SAFETY: as in `forward_image`; a block reads at most
            // L·xv + kw past its start, inside the row or SLACK, and rows
            // up to oy + r − 1 + kh − 1 < hp.
            unsafe {
                match r {
                    2 => by_block!(
                        im.o,
                        xv,
                        forward_run_narrow2(im.lanes, im, xp, wk, y, oy, ox)
                    ),
                    _ => by_block!(
                        im.o,
                        xv,
                        forward_run_narrow1(im.lanes, im, xp, wk, y, oy, ox)
                    ),
                }
            };
            ox += xv * im.lanes;
        }
        oy += r;
    }
}

// [`forward_kernel_narrow`] for blocks of 1 and 2 output rows.
wide_and_narrow!(forward_run_narrow1 => forward_kernel_narrow[1](
    im: &Image, xp: *const f32, wk: *const f32, y: *mut f32, oy: usize, ox: usize
));
wide_and_narrow!(forward_run_narrow2 => forward_kernel_narrow[2](
    im: &Image, xp: *const f32, wk: *const f32, y: *mut f32, oy: usize, ox: usize
));

/// Positions ox..ox + L·X of output rows oy..oy + R, all C channels.
#[inline(always)]
unsafe fn forward_kernel_narrow<S: Simd, const C: usize, const X: usize, const R: usize>(
    im: &Image,
    xp: *const f32,
    wk: *const f32,
    y: *mut f32,
    oy: usize,
    ox: usize,
) {
    unsafe {
        let mut acc = [[[S::zero(); X]; C]; R];
        let vl = im.vectors() * S::L;
        // The kernel rows that read the image for any of the R rows (the
        // others read zeros of the padding only).
        let (i0, i1) = (im.taps_rows(oy + R - 1).0, im.taps_rows(oy).1);
        for cc in 0..im.c {
            for i in i0..i1 {
                let wrow = wk.add((cc * im.kh + i) * im.kw * vl);
                for j in 0..im.kw {
                    let mut xs = [[S::zero(); X]; R];
                    for (r, xr) in xs.iter_mut().enumerate() {
                        let row = xp.add((cc * im.hp + oy + r + i) * im.wp + ox + j);
                        for (u, x) in xr.iter_mut().enumerate() {
                            *x = S::load(row.add(u * S::L));
                        }
                    }
                    for o in 0..C {
                        let wb = S::splat(wrow.add(j * vl + o));
                        for r in 0..R {
                            for u in 0..X {
                                acc[r][o][u] = S::fma(wb, xs[r][u], acc[r][o][u]);
                            }
                        }
                    }
                }
            }
        }
        let plane = im.oh * im.ow;
        let valid = (im.ow - ox).min(X * S::L);
        for (r, ar) in acc.iter().enumerate() {
            for (o, a) in ar.iter().enumerate() {
                let at = y.add(o * plane + (oy + r) * im.ow + ox);
                for u in 0..X {
                    let n = valid.saturating_sub(u * S::L).min(S::L);
                    if n == S::L {
                        S::store(at.add(u * S::L), a[u]);
                    } else if n > 0 {
                        S::store_first(at.add(u * S::L), a[u], n);
                    }
                }
            }
        }
    }
}

/// Adds this image's dW [o][c][kh][kw] (o ≤ NARROW) into `acc` (laid out
/// as in [`weight_grad_image`]); `dy` is the image's output gradient with
/// each row widened to ow rounded up to L, zero past ow.
///
/// # Safety
/// `xp` as in [`forward_image`]; `dy` has o·oh·⌈ow⌉_L floats; `acc` has
/// c·kh·kw·v·L.
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
                        weight_grad_run_narrow(im.lanes, im, xp, dy, acc, cc, i, j)
                    )
                };
                j += taps;
            }
        }
    }
}

wide_and_narrow!(weight_grad_run_narrow => weight_grad_kernel_narrow(
    im: &Image, xp: *const f32, dy: *const f32, acc: *mut f32, cc: usize, i: usize, j: usize
));

/// Taps (i, j..j + T) of input channel `cc` for all C output channels,
/// summed over the image's positions; adds those with j + t < kw to `acc`.
/// The lanes past `ow` multiply dy's zero padding by the next row's x: the
/// same sum for finite inputs, NaN for a tap where im2col would not see an
/// infinity.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn weight_grad_kernel_narrow<S: Simd, const C: usize, const T: usize>(
    im: &Image,
    xp: *const f32,
    dy: *const f32,
    acc: *mut f32,
    cc: usize,
    i: usize,
    j: usize,
) {
    unsafe {
        let mut s = [[S::zero(); T]; C];
        let owl = im.ow.next_multiple_of(S::L);
        let plane = im.oh * owl;
        for oy in 0..im.oh {
            let row = xp.add((cc * im.hp + oy + i) * im.wp + j);
            let drow = dy.add(oy * owl);
            for ox in (0..owl).step_by(S::L) {
                let mut xs = [S::zero(); T];
                for (t, x) in xs.iter_mut().enumerate() {
                    *x = S::load(row.add(ox + t));
                }
                for (o, a) in s.iter_mut().enumerate() {
                    let d = S::load(drow.add(o * plane + ox));
                    for t in 0..T {
                        a[t] = S::fma(d, xs[t], a[t]);
                    }
                }
            }
        }
        let vl = im.vectors() * S::L;
        for (o, a) in s.iter().enumerate() {
            for (t, v) in a.iter().enumerate() {
                if j + t >= im.kw {
                    break;
                }
                let mut lanes = [0.0f32; MAX_LANES];
                S::store(lanes.as_mut_ptr(), *v);
                *acc.add(((cc * im.kh + i) * im.kw + j + t) * vl + o) +=
                    lanes[..S::L].iter().sum::<f32>();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A padded image of c channels, its values a fixed wave, with zero
    /// borders of (ph, pw) and SLACK zeros after it.
    fn padded(c: usize, h: usize, w: usize, ph: usize, pw: usize) -> (Vec<f32>, usize, usize) {
        let (hp, wp) = (h + 2 * ph, w + 2 * pw);
        let mut xp = vec![0.0f32; c * hp * wp + SLACK];
        for cc in 0..c {
            for r in 0..h {
                for q in 0..w {
                    let v = ((cc * 31 + r * 7 + q * 3) as f32 * 0.37).sin();
                    xp[(cc * hp + r + ph) * wp + q + pw] = v;
                }
            }
        }
        (xp, hp, wp)
    }

    fn image(lanes: usize, c: usize, o: usize, h: usize, k: usize, pad: usize) -> Image {
        let hp = h + 2 * pad;
        Image {
            lanes,
            c,
            rows: (pad, pad + h),
            hp,
            wp: hp,
            kh: k,
            kw: k,
            o,
            oh: hp + 1 - k,
            ow: hp + 1 - k,
        }
    }

    /// Every kernel at both widths the host runs, against plain loops in
    /// f64: channel- and position-vectorised forward passes and weight
    /// gradients, rows that fill no vector, ragged runs and blocks.
    /// Tolerances are about three times the largest errors seen: f32 sums of
    /// up to 400 (forward) and 784 (weight gradient) products of values
    /// below 1 in magnitude, off by up to 6.5e-7 and 4.8e-6 of 1 + |sum|.
    #[test]
    fn kernels_match_plain_loops_at_every_width() {
        let widths: Vec<usize> = [8, 16].into_iter().filter(|&l| l <= host_lanes()).collect();
        for lanes in widths {
            // (c, o, h, k, pad): LeNet's layers, a stem, odd sizes.
            for (c, o, h, k, pad) in [
                (6, 16, 14, 5, 0),
                (1, 6, 28, 5, 2),
                (16, 6, 10, 5, 4),
                (3, 13, 11, 3, 1),
                (5, 3, 19, 3, 1),
                (2, 9, 7, 2, 0),
            ] {
                let im = image(lanes, c, o, h, k, pad);
                let (xp, hp, wp) = padded(c, h, h, pad, pad);
                let vl = im.vectors() * lanes;
                let kk = k * k;
                let wv = |oc: usize, t: usize| ((oc * 13 + t * 5) as f32 * 0.21).cos();
                let mut wk = vec![0.0f32; c * kk * vl];
                for oc in 0..o {
                    for t in 0..c * kk {
                        wk[t * vl + oc] = wv(oc, t);
                    }
                }
                let (oh, ow) = (im.oh, im.ow);
                let x = |cc: usize, r: usize, q: usize| xp[(cc * hp + r) * wp + q] as f64;
                // Forward.
                let mut y = vec![0.0f32; o * oh * ow];
                unsafe {
                    if o <= NARROW {
                        forward_image_narrow(&im, xp.as_ptr(), wk.as_ptr(), y.as_mut_ptr());
                    } else {
                        forward_image(&im, xp.as_ptr(), wk.as_ptr(), y.as_mut_ptr());
                    }
                }
                for oc in 0..o {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut want = 0.0f64;
                            for cc in 0..c {
                                for i in 0..k {
                                    for j in 0..k {
                                        let t = (cc * k + i) * k + j;
                                        want += wv(oc, t) as f64 * x(cc, oy + i, ox + j);
                                    }
                                }
                            }
                            let got = y[(oc * oh + oy) * ow + ox] as f64;
                            assert!(
                                (got - want).abs() <= 2e-6 * (1.0 + want.abs()),
                                "forward {lanes} lanes {c}->{o} k{k}: ({oc},{oy},{ox}) {got} vs {want}"
                            );
                        }
                    }
                }
                // Weight gradient, from dy = a wave.
                let dv = |oc: usize, q: usize| ((oc * 17 + q * 3) as f32 * 0.11).sin();
                let mut acc = vec![0.0f32; c * kk * vl];
                unsafe {
                    if o <= NARROW {
                        let owl = ow.next_multiple_of(lanes);
                        let mut dy = vec![0.0f32; o * oh * owl];
                        for oc in 0..o {
                            for oy in 0..oh {
                                for ox in 0..ow {
                                    dy[(oc * oh + oy) * owl + ox] = dv(oc, oy * ow + ox);
                                }
                            }
                        }
                        weight_grad_image_narrow(&im, xp.as_ptr(), dy.as_ptr(), acc.as_mut_ptr());
                    } else {
                        let mut dyt = vec![0.0f32; oh * ow * vl];
                        for oc in 0..o {
                            for q in 0..oh * ow {
                                dyt[q * vl + oc] = dv(oc, q);
                            }
                        }
                        weight_grad_image(&im, xp.as_ptr(), dyt.as_ptr(), acc.as_mut_ptr());
                    }
                }
                for oc in 0..o {
                    for cc in 0..c {
                        for i in 0..k {
                            for j in 0..k {
                                let mut want = 0.0f64;
                                for oy in 0..oh {
                                    for ox in 0..ow {
                                        want += dv(oc, oy * ow + ox) as f64 * x(cc, oy + i, ox + j);
                                    }
                                }
                                let got = acc[((cc * k + i) * k + j) * vl + oc] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "weight grad {lanes} lanes {c}->{o} k{k}: ({oc},{cc},{i},{j}) {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
