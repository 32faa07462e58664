//! Convolution by im2col and matrix products, one image at a time (split
//! across threads by images).
//!
//! The products are oriented so that the large dimension — the output
//! positions P — is the one the `gemm` kernels stream over (measured: a
//! 1024×16×144 product runs at 110 GFLOP/s, its 16×1024×144 transpose at 56):
//!
//! - forward:      yᵀ (P×O) = colsᵀ (P×K) · Wᵀ (K×O)
//! - input grad:   dcolsᵀ (P×K) = dyᵀ (P×O) · W (O×K), then col2im
//! - weight grad:  dW (O×K) += dy (O×P) · cols (P×K), summed over images
//!
//! with K = C/groups·kh·kw, columns stored [K][P] (forward, input gradient)
//! or [P][K] (weight gradient) — whichever the product runs fastest on.

use std::cell::RefCell;

use super::Ctx;
use super::gemm::gemm_raw;
use super::helpers::{ConvDesc, Shared, sum_of_parts};

thread_local! {
    /// Column scratch, grown once per thread and reused every step.
    static COLS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A zero-padded input plane (im2col) or input-gradient plane (col2im).
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A transposed output gradient and a transposed weight gradient.
    static DYT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the first `len` elements of a per-thread scratch buffer,
/// grown as needed and kept for the next call.
pub(super) fn with_scratch<R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    cell.with(|c| {
        let mut v = c.borrow_mut();
        if v.len() < len {
            v.resize(len, 0.0);
        }
        f(&mut v[..len])
    })
}

impl ConvDesc {
    fn k(&self) -> usize {
        (self.c / self.groups) * self.kh * self.kw
    }

    fn p(&self) -> usize {
        self.oh * self.ow
    }

    /// Stride 1, no dilation and an output the size of the input: each
    /// row of the columns is the input plane shifted, so it is one copy
    /// plus zeroing at the borders instead of a copy per output row.
    fn same_size(&self) -> bool {
        self.sh == 1
            && self.sw == 1
            && self.dh == 1
            && self.dw == 1
            && self.oh == self.h
            && self.ow == self.w
    }

    /// The input plane shifted by kernel offset (i, j), zero outside.
    fn shifted_plane(&self, plane: &[f32], i: usize, j: usize, row: &mut [f32]) {
        let (h, w) = (self.h as isize, self.w as isize);
        let (di, dj) = (i as isize - self.ph as isize, j as isize - self.pw as isize);
        let shift = di * w + dj;
        let n = (h * w) as usize;
        // Element q reads q + shift; copy the overlapping range at once.
        let q0 = (-shift).clamp(0, n as isize) as usize;
        let q1 = (n as isize - shift).clamp(q0 as isize, n as isize) as usize;
        row[..q0].fill(0.0);
        row[q0..q1].copy_from_slice(
            &plane[(q0 as isize + shift) as usize..(q1 as isize + shift) as usize],
        );
        row[q1..].fill(0.0);
        // Columns that wrapped to the next or previous input row are outside.
        if dj != 0 {
            let (c0, c1) = if dj > 0 {
                ((w - dj).max(0) as usize, w as usize)
            } else {
                (0, (-dj).min(w) as usize)
            };
            for r in row.chunks_exact_mut(w as usize) {
                r[c0..c1].fill(0.0);
            }
        }
    }

    /// The input plane with its padding: (h + 2ph) × (w + 2pw), and
    /// [`PLANE_SLACK`] floats after it.
    fn padded_dims(&self) -> (usize, usize) {
        (self.h + 2 * self.ph, self.w + 2 * self.pw)
    }

    /// Row (i, j) of the columns from a padded plane: output (a, b) reads
    /// padded (a·sh + i·dh, b·sw + j·dw), always inside it.
    fn gather_row(&self, padded: &[f32], i: usize, j: usize, row: &mut [f32]) {
        let wp = self.padded_dims().1;
        #[cfg(target_arch = "x86_64")]
        if self.sw == 2 && crate::jit::host::has_avx2() {
            // Stride 2 (a ResNet's downsampling layers): the even lanes of
            // whole vectors instead of one load per element.
            let first = i * self.dh * wp + j * self.dw;
            // SAFETY: the host has AVX2; the plane has PLANE_SLACK floats
            // after it for the last vector's odd half.
            unsafe { super::lanes::even_rows(&padded[first..], self.sh * wp, row, self.ow) };
            return;
        }
        for (a, out) in row.chunks_exact_mut(self.ow).enumerate() {
            let first = (a * self.sh + i * self.dh) * wp + j * self.dw;
            let taken = padded[first..].iter().step_by(self.sw);
            for (o, v) in out.iter_mut().zip(taken) {
                *o = *v;
            }
        }
    }

    /// Columns [K][P] of image `img`, group `g`.
    ///
    /// # Safety
    /// `x` holds the whole input; `cols` has K·P elements.
    unsafe fn im2col(&self, x: *const f32, img: usize, g: usize, cols: &mut [f32]) {
        let cg = self.c / self.groups;
        let p = self.p();
        let (hp, wp) = self.padded_dims();
        // Same-size convolutions shift the plane itself and need no copy.
        let len = if self.same_size() {
            0
        } else {
            hp * wp + PLANE_SLACK
        };
        with_scratch(&PADDED, len, |padded| {
            padded.fill(0.0);
            for cc in 0..cg {
                // SAFETY: the plane of channel g·cg + cc of image img is inside x.
                let plane = unsafe {
                    std::slice::from_raw_parts(
                        x.add((img * self.c + g * cg + cc) * self.h * self.w),
                        self.h * self.w,
                    )
                };
                if !self.same_size() {
                    // The interior; the zeros around it stay from the fill.
                    for (r, src) in plane.chunks_exact(self.w).enumerate() {
                        padded[(r + self.ph) * wp + self.pw..][..self.w].copy_from_slice(src);
                    }
                }
                for i in 0..self.kh {
                    for j in 0..self.kw {
                        let row = &mut cols[((cc * self.kh + i) * self.kw + j) * p..][..p];
                        if self.same_size() {
                            self.shifted_plane(plane, i, j, row);
                        } else {
                            self.gather_row(padded, i, j, row);
                        }
                    }
                }
            }
        })
    }

    /// Adds columns [K][P] back into image `img`'s input gradient.
    ///
    /// # Safety
    /// `dx` holds the whole input gradient; `cols` has K·P elements.
    unsafe fn col2im_add(&self, cols: &[f32], img: usize, g: usize, dx: *mut f32) {
        let cg = self.c / self.groups;
        let p = self.p();
        let (hp, wp) = self.padded_dims();
        with_scratch(&PADDED, hp * wp + PLANE_SLACK, |padded| {
            for cc in 0..cg {
                // SAFETY: the plane is inside dx, and only this thread writes image img.
                let plane = unsafe {
                    std::slice::from_raw_parts_mut(
                        dx.add((img * self.c + g * cg + cc) * self.h * self.w),
                        self.h * self.w,
                    )
                };
                // Every tap adds into the padded plane, whose interior is then
                // added to the gradient.
                padded.fill(0.0);
                for i in 0..self.kh {
                    for j in 0..self.kw {
                        let row = &cols[((cc * self.kh + i) * self.kw + j) * p..][..p];
                        #[cfg(target_arch = "x86_64")]
                        if self.sw == 2 && crate::jit::host::has_avx2() {
                            let first = i * self.dh * wp + j * self.dw;
                            let (stride, dst) = (self.sh * wp, &mut padded[first..]);
                            // SAFETY: the host has AVX2; the plane has
                            // PLANE_SLACK floats after it.
                            unsafe { super::lanes::add_to_even_rows(row, self.ow, dst, stride) };
                            continue;
                        }
                        for (a, src) in row.chunks_exact(self.ow).enumerate() {
                            let first = (a * self.sh + i * self.dh) * wp + j * self.dw;
                            let targets = padded[first..].iter_mut().step_by(self.sw);
                            for (t, v) in targets.zip(src) {
                                *t += *v;
                            }
                        }
                    }
                }
                for (r, dst) in plane.chunks_exact_mut(self.w).enumerate() {
                    let src = &padded[(r + self.ph) * wp + self.pw..][..self.w];
                    for (t, v) in dst.iter_mut().zip(src) {
                        *t += *v;
                    }
                }
            }
        })
    }
}

/// Floats after a padded plane: room for a stride-2 row's last 16-float
/// load or add.
const PLANE_SLACK: usize = 16;

/// Splits images across threads in fixed contiguous chunks (deterministic).
pub(super) fn chunks(n: usize, threads: usize) -> Vec<(usize, usize)> {
    let parts = threads.clamp(1, n.max(1));
    (0..parts)
        .map(|t| (n * t / parts, n * (t + 1) / parts))
        .collect()
}

/// Runs `f(first, last)` over image ranges, on the team when several threads.
fn over_images(threads: usize, n: usize, f: impl Fn(usize, usize) + Sync) {
    let parts = chunks(n, threads);
    if parts.len() == 1 {
        f(0, n);
        return;
    }
    super::team::parallel_for(threads, parts.len(), |t| {
        let (lo, hi) = parts[t];
        f(lo, hi)
    });
}

/// Stride-1 convolutions over maps of at least this many positions use the
/// shifted products (`conv_shift`): measured on 32×32 maps (C = 16) they run
/// at 74–79 GFLOP/s against 53–60 through im2col, while on 16×16 and 8×8
/// maps the padding they compute costs more than im2col (80 against 87,
/// 73 against 83 for the forward pass).
const SHIFT_MIN_POSITIONS: usize = 512;

/// Runs a convolution by one method or the other (for measurements).
///
/// # Safety
/// As [`nnc_conv`].
pub unsafe fn run_with(ctx: &Ctx, d: &ConvDesc, shift: bool) {
    unsafe {
        if shift && d.shiftable() {
            super::conv_shift::run(d, ctx, ctx.threads.max(1));
        } else {
            let saved = d.clone();
            nnc_conv_im2col(ctx, &saved);
        }
    }
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns.
pub unsafe extern "C" fn nnc_conv(ctx: *const Ctx, d: *const ConvDesc) {
    unsafe {
        let d = &*d;
        // Each tap is a product with K = C/groups: too few channels (LeNet's
        // first layer has one) leave the products nothing to do.
        #[cfg(target_arch = "x86_64")]
        if super::conv_winograd::applies(d) {
            super::conv_winograd::run(ctx, d, (*ctx).threads.max(1));
            return;
        }
        if super::conv_direct::applies(d) {
            super::conv_direct::run(ctx, d, (*ctx).threads.max(1));
        } else if d.shiftable() && d.h * d.w >= SHIFT_MIN_POSITIONS && d.c / d.groups >= 8 {
            super::conv_shift::run(d, ctx, (*ctx).threads.max(1));
        } else {
            nnc_conv_im2col(ctx, d);
        }
    }
}

/// im2col and a product per image.
///
/// # Safety
/// As [`nnc_conv`].
unsafe fn nnc_conv_im2col(ctx: *const Ctx, d: &ConvDesc) {
    unsafe {
        let threads = (*ctx).threads.max(1);
        let (x, w, y) = (
            Shared(d.x.ptr(ctx)),
            Shared(d.wt.ptr(ctx)),
            Shared(d.y.ptr(ctx)),
        );
        let og = d.o / d.groups;
        let (k, p) = (d.k(), d.p());
        let (xs, ys) = (d.c * d.h * d.w, d.o * p);
        let none = gemm::Parallelism::None;
        match d.kind {
            0 => over_images(threads, d.n, |lo, hi| {
                with_scratch(&COLS, k * p, |cols| {
                    for img in lo..hi {
                        for g in 0..d.groups {
                            d.im2col(x.get(), img, g, cols);
                            let yg = y.get().add(img * ys + g * og * p);
                            let wg = w.get().add(g * og * k);
                            // yᵀ (P×O): rows along p (stride 1), columns o (stride P).
                            gemm_raw(
                                p,
                                og,
                                k,
                                yg,
                                1,
                                p as isize,
                                cols.as_ptr(),
                                1,
                                p as isize,
                                wg,
                                1,
                                k as isize,
                                false,
                                none,
                            );
                        }
                    }
                })
            }),
            1 => over_images(threads, d.n, |lo, hi| {
                with_scratch(&COLS, k * p, |cols| {
                    for img in lo..hi {
                        std::ptr::write_bytes(x.get().add(img * xs), 0, xs);
                        for g in 0..d.groups {
                            let yg = y.get().add(img * ys + g * og * p);
                            let wg = w.get().add(g * og * k);
                            // dcolsᵀ (P×K) = dyᵀ (P×O) · W (O×K).
                            gemm_raw(
                                p,
                                k,
                                og,
                                cols.as_mut_ptr(),
                                1,
                                p as isize,
                                yg,
                                1,
                                p as isize,
                                wg,
                                k as isize,
                                1,
                                false,
                                none,
                            );
                            d.col2im_add(cols, img, g, x.get());
                        }
                    }
                })
            }),
            _ => {
                let wlen = d.o * k;
                let parts = chunks(d.n, threads);
                if parts.len() == 1 {
                    weight_grad(d, x.get(), y.get(), w.get(), 0, d.n);
                    return;
                }
                let sum = sum_of_parts(threads, parts.len(), wlen, |t, part| {
                    let (lo, hi) = parts[t];
                    weight_grad(d, x.get(), y.get(), part.as_mut_ptr(), lo, hi);
                });
                std::slice::from_raw_parts_mut(w.get(), wlen).copy_from_slice(&sum);
            }
        }
    }
}

/// dW (into `dw`, overwritten) from images lo..hi.
///
/// Columns are built [K][P] by row copies and the product is oriented by
/// size (measured, 1 thread): with dy transposed per image to [P][O] and the
/// result accumulated as dWᵀ [K][O] it runs at 108–112 GFLOP/s for the
/// 3×3 convolutions of a ResNet; for tiny K (LeNet's first layer, K = 25)
/// dW (O×K) = dy (O×P) · colsᵀ is faster (99 against 26).
///
/// # Safety
/// Pointers cover the whole input, output gradient and weight gradient.
unsafe fn weight_grad(
    d: &ConvDesc,
    x: *const f32,
    dy: *const f32,
    dw: *mut f32,
    lo: usize,
    hi: usize,
) {
    let og = d.o / d.groups;
    let (k, p) = (d.k(), d.p());
    let ys = d.o * p;
    let none = gemm::Parallelism::None;
    unsafe {
        if lo == hi {
            std::ptr::write_bytes(dw, 0, d.o * k);
            return;
        }
        if k < 64 {
            with_scratch(&COLS, k * p, |cols| {
                for img in lo..hi {
                    for g in 0..d.groups {
                        d.im2col(x, img, g, cols);
                        let yg = dy.add(img * ys + g * og * p);
                        let wg = dw.add(g * og * k);
                        // dW (O×K) += dy (O×P) · colsᵀ (P×K), cols [K][P].
                        gemm_raw(
                            og,
                            k,
                            p,
                            wg,
                            k as isize,
                            1,
                            yg,
                            p as isize,
                            1,
                            cols.as_ptr(),
                            1,
                            p as isize,
                            img > lo,
                            none,
                        );
                    }
                }
            });
            return;
        }
        with_scratch(&COLS, k * p, |cols| {
            with_scratch(&DYT, p * og + k * og * d.groups, |buf| {
                let (dyt, acc) = buf.split_at_mut(p * og);
                for img in lo..hi {
                    for g in 0..d.groups {
                        d.im2col(x, img, g, cols);
                        // dyᵀ [P][O] of this image and group.
                        super::transpose::transpose_into(
                            dy.add(img * ys + g * og * p),
                            dyt.as_mut_ptr(),
                            og,
                            p,
                            p as isize,
                            og as isize,
                        );
                        let ag = &mut acc[g * k * og..(g + 1) * k * og];
                        // dWᵀ (K×O) += cols (K×P) · dyᵀ (P×O).
                        gemm_raw(
                            k,
                            og,
                            p,
                            ag.as_mut_ptr(),
                            og as isize,
                            1,
                            cols.as_ptr(),
                            p as isize,
                            1,
                            dyt.as_ptr(),
                            og as isize,
                            1,
                            img > lo,
                            none,
                        );
                    }
                }
                // dW [O][K] = (dWᵀ)ᵀ per group.
                for g in 0..d.groups {
                    let (ag, wg) = (acc[g * k * og..].as_ptr(), dw.add(g * og * k));
                    super::transpose::transpose_into(ag, wg, k, og, og as isize, k as isize);
                }
            })
        })
    }
}
