//! 3×3 stride-1 convolutions by Winograd's F(2×2, 3×3): each 2×2 block of
//! outputs ("tile") comes from a 4×4 block of input through 16 products of
//! transformed values instead of 36, so the matrix products do 2.25× fewer
//! multiply-adds than im2col's (Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks", 2016):
//!
//! - U = G g Gᵀ per (input, output) channel pair (weights, 4×4),
//! - V = Bᵀ d B per (channel, tile) (input, 4×4),
//! - M[ξ] = V[ξ] · U[ξ] for each of the 16 positions ξ, a product over
//!   channels with the tiles as its long dimension,
//! - y = Aᵀ M A per (output channel, tile) (2×2).
//!
//! Outputs at least [`F4_MIN_WIDTH`] wide, or 13 to 16 wide (four tiles to
//! a row, two rows to a vector), use F(4×4, 3×3) instead (6×6 input
//! blocks, 36 products per 16 outputs, 4× fewer than direct: `f4`); on
//! other maps its tile rows would fill less than a vector.
//!
//! The input gradient is the same forward convolution of dy, padded by
//! 2 − pad, with the kernel flipped and its channel axes swapped. The weight
//! gradient runs the chain backwards: dM = A dy Aᵀ per tile, dU[ξ] = V[ξ]ᵀ ·
//! dM[ξ] summed over tiles, dW = Gᵀ dU G.
//!
//! Transformed values are stored [ξ][channel][tile], tiles innermost: the
//! tile kernels (`tiles`, AVX2) transform eight tiles of a tile row at once,
//! and the products read them with unit stride along their long dimension.
//! Images are split across threads; a thread works through its images in
//! blocks of about [`BLOCK_TILES`] tiles so that the transformed blocks stay
//! in the core's cache.
//!
//! F(2×2, 3×3)'s transforms only add, subtract and halve; F(4×4, 3×3)'s
//! scale by up to 8 and 1/24, so its rounding errors are a few times larger
//! (the unit tests hold both to 1e-5 of the largest output).

// The transforms index a tile's rows and columns by number, as the
// matrices G, B and A in the comments do.
#![allow(clippy::needless_range_loop)]

use std::cell::RefCell;

use super::Ctx;
use super::conv::with_scratch as scratch;
use super::gemm::gemm_raw;
use super::helpers::{ConvDesc, Shared, sum_of_parts};
use super::team::parallel_for;

mod f4;
mod products;
mod tiles;
mod weights;

use weights::{weight_transform, weight_untransform};

thread_local! {
    /// Transformed input V of a block of images.
    static V: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Transformed weights U of a forward or input-gradient pass.
    static U: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Products M (forward) or transformed output gradient dM (weights).
    static M: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// A padded plane and row buffers for the tile kernels.
    static ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Tiles past a channel's last that the tile kernels may write (garbage): a
/// run of 8 tiles ends up to 7 past a row.
const SLACK: usize = 8;

/// Tiles a thread transforms before running the 16 products on them.
const BLOCK_TILES: usize = 256;

/// Convolutions with fewer channels on either side stay on the other paths:
/// with few channels the products are short and the transforms dominate.
/// Measured on two 3×3 layers over 32×32 maps at batch 32 (all passes, ms):
/// 8 channels 2.83–3.05 → 2.43–2.50 here; 4 channels 1.12–1.25 → 1.21–1.32.
const MIN_CHANNELS: usize = 8;

/// Whether this convolution runs here: 3×3, stride 1, no dilation, one
/// group, padding at most 2 (so that the input gradient's padding, 2 − pad,
/// is not negative) and enough channels on both sides.
pub fn applies(d: &ConvDesc) -> bool {
    d.groups == 1
        && d.kh == 3
        && d.kw == 3
        && d.sh == 1
        && d.sw == 1
        && d.dh == 1
        && d.dw == 1
        && d.ph <= 2
        && d.pw <= 2
        && d.oh + 2 == d.h + 2 * d.ph
        && d.ow + 2 == d.w + 2 * d.pw
        && d.oh > 0
        && d.ow > 0
        && d.c >= MIN_CHANNELS
        && d.o >= MIN_CHANNELS
        && crate::jit::host::has_avx2()
}

/// The geometry of one forward-shaped convolution: `ci` channels of
/// `hi`×`wi` in, `co` channels of `ho`×`wo` out, padding (`ph`, `pw`).
#[derive(Clone, Copy)]
struct Geo {
    ci: usize,
    hi: usize,
    wi: usize,
    co: usize,
    ho: usize,
    wo: usize,
    ph: usize,
    pw: usize,
    /// Outputs per tile side: 2 for F(2×2, 3×3), 4 for F(4×4, 3×3).
    m: usize,
    /// Tile rows and columns.
    th: usize,
    tw: usize,
}

impl Geo {
    fn new(ci: usize, hi: usize, wi: usize, co: usize, ph: usize, pw: usize) -> Geo {
        let (ho, wo) = (hi + 2 * ph - 2, wi + 2 * pw - 2);
        let m = tile_size(ho, wo);
        Geo {
            ci,
            hi,
            wi,
            co,
            ho,
            wo,
            ph,
            pw,
            m,
            th: ho.div_ceil(m),
            tw: wo.div_ceil(m),
        }
    }

    /// The same convolution with tiles of m×m outputs.
    #[cfg(test)]
    fn with_tiles(self, m: usize) -> Geo {
        Geo {
            m,
            th: self.ho.div_ceil(m),
            tw: self.wo.div_ceil(m),
            ..self
        }
    }

    /// Transformed values per tile: (m + 2)².
    fn xis(&self) -> usize {
        (self.m + 2) * (self.m + 2)
    }

    /// Tile rows per block: about [`BLOCK_TILES`] tiles, whole images or
    /// part of one (a large map's transformed image would not stay in cache).
    fn block_rows(&self) -> usize {
        (BLOCK_TILES / self.tw).max(1)
    }

    /// Distance between two channels' tiles in V and M: a block's tiles and
    /// [`SLACK`] more, which the tile kernels' last 8-tile run may write.
    fn tile_stride(&self) -> usize {
        self.block_rows() * self.tw + SLACK
    }

    /// The blocks of images lo..hi: ranges of tile rows q = n·th + ty.
    fn blocks(&self, lo: usize, hi: usize) -> impl Iterator<Item = (usize, usize)> {
        let (first, last, step) = (lo * self.th, hi * self.th, self.block_rows());
        (first..last)
            .step_by(step)
            .map(move |q0| (q0, (q0 + step).min(last)))
    }

    /// The images of tile rows q0..q1, each with its tile rows ty0..ty1.
    fn spans(&self, q0: usize, q1: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let th = self.th;
        (q0 / th..q1.div_ceil(th)).map(move |n| {
            let ty0 = q0.max(n * th) - n * th;
            let ty1 = q1.min((n + 1) * th) - n * th;
            (n, ty0, ty1)
        })
    }
}

/// Runs the convolution `d` (see [`applies`]).
///
/// # Safety
/// `ctx` is live and `d` describes buffers inside it.
pub unsafe fn run(ctx: *const Ctx, d: &ConvDesc, threads: usize) {
    let (x, w, y) = unsafe {
        (
            Shared(d.x.ptr(ctx)),
            Shared(d.wt.ptr(ctx)),
            Shared(d.y.ptr(ctx)),
        )
    };
    // Images split across threads in fixed contiguous chunks.
    let parts = super::conv::chunks(d.n, threads);
    let wide = crate::jit::host::has_avx512();
    match d.kind {
        0 | 1 => {
            let grad = d.kind == 1;
            // The input gradient: dy → dx with the kernel flipped, padded by 2 − pad.
            let (src, dst, g) = if grad {
                (y, x, Geo::new(d.o, d.oh, d.ow, d.c, 2 - d.ph, 2 - d.pw))
            } else {
                (x, y, Geo::new(d.c, d.h, d.w, d.o, d.ph, d.pw))
            };
            // SAFETY: the weights hold o·c·9 floats.
            let wts = unsafe { std::slice::from_raw_parts(w.get(), d.o * d.c * 9) };
            // U in the caller's scratch (256 KB for 64 channels: a fresh
            // allocation that large is mapped and faulted in at every call).
            scratch(&U, g.xis() * d.c * d.o, |u| {
                weight_transform(wts, d.o, d.c, grad, g.m, u);
                let u = &*u;
                parallel_for(threads, parts.len(), |t| {
                    let (lo, hi) = parts[t];
                    // SAFETY: src and dst hold the whole batch; threads write
                    // disjoint images.
                    unsafe { forward_images(&g, src.get(), dst.get(), u, lo, hi, wide) }
                });
            });
        }
        _ => {
            let g = Geo::new(d.c, d.h, d.w, d.o, d.ph, d.pw);
            let len = g.xis() * d.c * d.o;
            // Each thread sums its images' dU; the sums are added in a fixed order.
            let du = sum_of_parts(threads, parts.len(), len, |t, du| {
                let (lo, hi) = parts[t];
                // SAFETY: x and dy hold the whole batch.
                unsafe { weight_grad_images(&g, x.get(), y.get(), du, lo, hi, wide) };
            });
            // SAFETY: the weight gradient holds o·c·9 floats.
            let dw = unsafe { std::slice::from_raw_parts_mut(w.get(), d.o * d.c * 9) };
            weight_untransform(&du, d.o, d.c, g.m, dw);
        }
    }
}

/// G of F(2×2, 3×3) and of F(4×4, 3×3) (see `f4`).
const G2: [[f32; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];
const G4: [[f32; 3]; 6] = [
    [0.25, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// The tile size for an output of ho×wo: F(4×4, 3×3) when its tile rows
/// fill a vector of eight tiles, alone or paired (4 tiles: outputs 13 to 16
/// wide), F(2×2, 3×3) otherwise. On ResNet-mini's 16×16 maps F(4×4) does
/// 44 % fewer multiply-adds in the products and writes 44 % fewer
/// transformed values: the step took 24.0 instead of 25.4 ms (Zen 5, 1
/// thread).
fn tile_size(_ho: usize, wo: usize) -> usize {
    if wo >= F4_MIN_WIDTH || wo.div_ceil(4) == 4 {
        4
    } else {
        2
    }
}

/// Outputs at least this wide use F(4×4, 3×3).
const F4_MIN_WIDTH: usize = 29;

fn g_of(m: usize) -> &'static [[f32; 3]] {
    if m == 4 { &G4 } else { &G2 }
}

/// A thread's scratch: V and M (or dM) for one block of images, with
/// [`SLACK`] tiles after each channel's row, and the tile kernels' plane
/// and row buffers.
fn with_buffers<R>(g: &Geo, f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]) -> R) -> R {
    let ts = g.tile_stride();
    scratch(&V, g.xis() * g.ci * ts, |v| {
        scratch(&M, g.xis() * g.co * ts, |m| {
            scratch(&ROWS, tiles::plane_len(g), |r| f(v, m, r))
        })
    })
}

/// The forward convolution of images lo..hi.
///
/// # Safety
/// `src` holds the batch's input [N][ci][hi][wi], `dst` its output
/// [N][co][ho][wo]; `u` is [ξ][ci][co]; the host has AVX2 and FMA, and
/// AVX-512 when `wide` (the products then run in `products`, else through
/// the `gemm` crate).
unsafe fn forward_images(
    g: &Geo,
    src: *const f32,
    dst: *mut f32,
    u: &[f32],
    lo: usize,
    hi: usize,
    wide: bool,
) {
    let none = gemm::Parallelism::None;
    let ts = g.tile_stride();
    with_buffers(g, |v, m, plane| {
        for (q0, q1) in g.blocks(lo, hi) {
            let t = (q1 - q0) * g.tw;
            // SAFETY: images lo..hi are inside src; v has 16·ci·ts floats.
            unsafe { tiles::input(g, src, q0, q1, v, plane) };
            for xi in 0..g.xis() {
                let (mx, vx, ux) = (
                    m.as_mut_ptr().wrapping_add(xi * g.co * ts),
                    v.as_ptr().wrapping_add(xi * g.ci * ts),
                    u.as_ptr().wrapping_add(xi * g.ci * g.co),
                );
                if wide {
                    // SAFETY: as below; the host has AVX-512.
                    unsafe { products::forward(t, g.ci, g.co, vx, ts, ux, mx) };
                    continue;
                }
                // M[ξ] (T×co), stored [co][ts] = V[ξ] (T×ci, stored [ci][ts]) · U[ξ] (ci×co).
                // SAFETY: each operand's block lies inside its buffer.
                unsafe {
                    gemm_raw(
                        t,
                        g.co,
                        g.ci,
                        mx,
                        1,
                        ts as isize,
                        vx,
                        1,
                        ts as isize,
                        ux,
                        g.co as isize,
                        1,
                        false,
                        none,
                    )
                };
            }
            // SAFETY: images lo..hi are inside dst; m has 16·co·ts floats.
            unsafe { tiles::output(g, m, dst, q0, q1, plane) };
        }
    })
}

/// The weight gradient's dU [ξ][ci][co] from images lo..hi (overwritten).
///
/// # Safety
/// `x` holds the batch's input, `dy` its output gradient; the host has
/// AVX2, and AVX-512 when `wide` (as in [`forward_images`]).
unsafe fn weight_grad_images(
    g: &Geo,
    x: *const f32,
    dy: *const f32,
    du: &mut [f32],
    lo: usize,
    hi: usize,
    wide: bool,
) {
    du.fill(0.0);
    let none = gemm::Parallelism::None;
    let ts = g.tile_stride();
    with_buffers(g, |v, dm, plane| {
        for (q0, q1) in g.blocks(lo, hi) {
            let t = (q1 - q0) * g.tw;
            // SAFETY: images lo..hi are inside x and dy; v and dm are sized by g.
            unsafe {
                tiles::input(g, x, q0, q1, v, plane);
                tiles::output_grad(g, dy, q0, q1, dm, plane);
            }
            for xi in 0..g.xis() {
                if wide {
                    // SAFETY: as below; the host has AVX-512.
                    unsafe {
                        products::weight_grad(
                            t,
                            g.ci,
                            g.co,
                            v.as_ptr().add(xi * g.ci * ts),
                            ts,
                            dm.as_ptr().add(xi * g.co * ts),
                            du.as_mut_ptr().add(xi * g.ci * g.co),
                        )
                    };
                    continue;
                }
                // dU[ξ] (ci×co) += V[ξ]ᵀ (ci×T, stored [ci][ts]) · dM[ξ] (T×co, stored [co][ts]).
                // SAFETY: each operand's block lies inside its buffer.
                unsafe {
                    gemm_raw(
                        g.ci,
                        g.co,
                        t,
                        du.as_mut_ptr().add(xi * g.ci * g.co),
                        g.co as isize,
                        1,
                        v.as_ptr().add(xi * g.ci * ts),
                        ts as isize,
                        1,
                        dm.as_ptr().add(xi * g.co * ts),
                        1,
                        ts as isize,
                        true,
                        none,
                    )
                };
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct 3×3 convolution of one image, [ci][h][w] → [co][ho][wo].
    fn direct(g: &Geo, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0f32; g.co * g.ho * g.wo];
        for o in 0..g.co {
            for a in 0..g.ho {
                for b in 0..g.wo {
                    let mut s = 0.0f64;
                    for c in 0..g.ci {
                        for i in 0..3 {
                            for j in 0..3 {
                                let (yy, xx) = (
                                    (a + i) as isize - g.ph as isize,
                                    (b + j) as isize - g.pw as isize,
                                );
                                if yy >= 0
                                    && xx >= 0
                                    && (yy as usize) < g.hi
                                    && (xx as usize) < g.wi
                                {
                                    s += (w[((o * g.ci + c) * 3 + i) * 3 + j]
                                        * x[(c * g.hi + yy as usize) * g.wi + xx as usize])
                                        as f64;
                                }
                            }
                        }
                    }
                    y[(o * g.ho + a) * g.wo + b] = s as f32;
                }
            }
        }
        y
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// dW[o][c][i][j] = Σ dy[n][o][a][b] · x[n][c][a + i − ph][b + j − pw].
    fn direct_weight_grad(g: &Geo, n: usize, x: &[f32], dy: &[f32]) -> Vec<f32> {
        let mut dw = vec![0.0f32; g.co * g.ci * 9];
        for o in 0..g.co {
            for c in 0..g.ci {
                for i in 0..3 {
                    for j in 0..3 {
                        let mut s = 0.0f64;
                        for img in 0..n {
                            for a in 0..g.ho {
                                for b in 0..g.wo {
                                    let (yy, xx) = (
                                        (a + i) as isize - g.ph as isize,
                                        (b + j) as isize - g.pw as isize,
                                    );
                                    if yy >= 0
                                        && xx >= 0
                                        && (yy as usize) < g.hi
                                        && (xx as usize) < g.wi
                                    {
                                        let xv = x[((img * g.ci + c) * g.hi + yy as usize) * g.wi
                                            + xx as usize];
                                        let dv = dy[((img * g.co + o) * g.ho + a) * g.wo + b];
                                        s += (xv * dv) as f64;
                                    }
                                }
                            }
                        }
                        dw[((o * g.ci + c) * 3 + i) * 3 + j] = s as f32;
                    }
                }
            }
        }
        dw
    }

    /// The product paths the host runs: the `gemm` crate's, and the
    /// AVX-512 kernels where it has AVX-512.
    fn widths() -> impl Iterator<Item = bool> + Clone {
        [false, true]
            .into_iter()
            .filter(|&w| !w || crate::jit::host::has_avx512())
    }

    /// Shapes with odd maps, every padding, one tile, and maps wide enough
    /// that a block holds part of an image (blocks cross image boundaries).
    const SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
        (3, 5, 7, 6, 1, 1),
        (2, 4, 5, 5, 0, 0),
        (4, 3, 6, 9, 2, 1),
        (1, 1, 3, 3, 0, 2),
        (2, 3, 30, 41, 1, 1),
        (1, 2, 37, 70, 0, 2),
        // Four tiles to a row (paired runs), with an odd number of tile rows.
        (3, 4, 9, 8, 1, 1),
        (2, 3, 13, 16, 1, 1),
        (2, 2, 11, 13, 0, 1),
        // Four tiles to a row and blocks (64 tile rows) that cut an image.
        (2, 3, 131, 8, 1, 1),
    ];

    fn close(got: &[f32], want: &[f32], what: &str) {
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (k, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() <= 1e-5 * scale, "{what} [{k}]: {a} vs {b}");
        }
    }

    #[test]
    fn forward_matches_a_direct_convolution() {
        if !crate::jit::host::has_avx2() {
            return;
        }
        let n = 2;
        for (&(ci, co, h, w, ph, pw), wide) in
            SHAPES.iter().flat_map(|s| widths().map(move |w| (s, w)))
        {
            for m in [2, 4] {
                let g = Geo::new(ci, h, w, co, ph, pw).with_tiles(m);
                let x = values(n * ci * h * w, 1);
                let k = values(co * ci * 9, 2);
                let plane = g.co * g.ho * g.wo;
                let mut want = Vec::new();
                for img in 0..n {
                    want.extend(direct(&g, &x[img * ci * h * w..][..ci * h * w], &k));
                }
                let mut u = vec![f32::NAN; g.xis() * ci * co];
                weight_transform(&k, co, ci, false, m, &mut u);
                let mut got = vec![f32::NAN; n * plane];
                unsafe { forward_images(&g, x.as_ptr(), got.as_mut_ptr(), &u, 0, n, wide) };
                close(
                    &got,
                    &want,
                    &format!("F({m}) forward {ci} {co} {h} {w} {ph} {pw}, wide {wide}"),
                );
            }
        }
    }

    #[test]
    fn weight_grad_matches_a_direct_sum() {
        if !crate::jit::host::has_avx2() {
            return;
        }
        let n = 2;
        for (&(ci, co, h, w, ph, pw), wide) in
            SHAPES.iter().flat_map(|s| widths().map(move |w| (s, w)))
        {
            for m in [2, 4] {
                let g = Geo::new(ci, h, w, co, ph, pw).with_tiles(m);
                let x = values(n * ci * h * w, 3);
                let dy = values(n * co * g.ho * g.wo, 4);
                let want = direct_weight_grad(&g, n, &x, &dy);
                let mut du = vec![f32::NAN; g.xis() * ci * co];
                unsafe { weight_grad_images(&g, x.as_ptr(), dy.as_ptr(), &mut du, 0, n, wide) };
                let mut got = vec![f32::NAN; co * ci * 9];
                weight_untransform(&du, co, ci, m, &mut got);
                close(
                    &got,
                    &want,
                    &format!("F({m}) weight grad {ci} {co} {h} {w} {ph} {pw}, wide {wide}"),
                );
            }
        }
    }
}
