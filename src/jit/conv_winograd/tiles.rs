//! The per-tile transforms, eight tiles of a tile row at a time in 256-bit
//! registers: the plane handling shared by F(2×2, 3×3) and F(4×4, 3×3), and
//! the kernels of F(2×2, 3×3) (those of F(4×4, 3×3) are in `f4`).
//!
//! A tile row's input rows are read from a zero-padded copy of the plane, so
//! that every run of eight tiles loads whole vectors; the last run of a row
//! may compute up to seven tiles past its end. Their values land on the next
//! tiles of the same channel, which are written afterwards, or in the
//! [`SLACK`](super::SLACK) after the channel's last tile.

// The transforms index a tile's rows and columns by number, as the
// matrices G, B and A in the comments do.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::f4;
use super::{Geo, SLACK};
use crate::jit::lanes::split2;

/// Tiles per vector.
const L: usize = 8;

/// Row length of the padded planes: eight tiles' columns (and the two the
/// last tile reads past them, within L) for every run of eight tiles.
fn line(g: &Geo) -> usize {
    g.m * g.tw.next_multiple_of(L) + L
}

/// Floats of the plane buffer the kernels need: a padded input plane
/// (m·th + 2 rows) or output-gradient plane (m·th rows) with m more rows
/// for a paired run's second tile row, 2m output rows, and L of slack.
pub(super) fn plane_len(g: &Geo) -> usize {
    (g.m * g.th + 2 + g.m) * line(g) + 2 * g.m * line(g) + L
}

/// Lane masks: eight set, then eight clear.
const MASKS: [i32; 2 * L] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];

/// The mask of the first `r` lanes (r ≤ 8).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn first_lanes(r: usize) -> __m256i {
    // SAFETY: 8 − r + 8 ≤ 16 elements.
    unsafe { _mm256_loadu_si256(MASKS.as_ptr().add(L - r) as *const __m256i) }
}

/// Copies the whole vectors of `n` floats from `src` to `dst`; returns how
/// many floats that was (n rounded down to 8). Rows this short lose more to
/// a `memcpy` call than they spend copying.
///
/// # Safety
/// Both hold n floats; the host has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn copy_vectors(src: *const f32, n: usize, dst: *mut f32) -> usize {
    let mut k = 0;
    while k + L <= n {
        // SAFETY: k + 8 ≤ n.
        unsafe { _mm256_storeu_ps(dst.add(k), _mm256_loadu_ps(src.add(k))) };
        k += L;
    }
    k
}

/// Asks for the cache lines of the `n` floats at `p` (a hint: it reads
/// nothing and cannot fault).
#[inline]
#[target_feature(enable = "avx2")]
fn prefetch(p: *const f32, n: usize) {
    for k in (0..n).step_by(16) {
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(k) as *const i8);
    }
}

/// Copies `n` floats from `src` to `dst`, with zeros after them up to the
/// next multiple of 8.
///
/// # Safety
/// `src` holds n floats; `dst` has room for n rounded up to 8.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_row(src: *const f32, n: usize, dst: *mut f32) {
    unsafe {
        let k = copy_vectors(src, n, dst);
        if k < n {
            let tail = _mm256_maskload_ps(src.add(k), first_lanes(n - k));
            _mm256_storeu_ps(dst.add(k), tail);
        }
    }
}

/// Copies `n` floats from `src` to `dst`, writing nothing past them.
///
/// # Safety
/// `src` holds n rounded up to 8 floats; `dst` has room for n.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_row(src: *const f32, n: usize, dst: *mut f32) {
    unsafe {
        let k = copy_vectors(src, n, dst);
        if k < n {
            _mm256_maskstore_ps(dst.add(k), first_lanes(n - k), _mm256_loadu_ps(src.add(k)));
        }
    }
}

/// Stores a0, b0, … a3, b3 at `p` and a4, b4, … a7, b7 at `q`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn interleave(a: __m256, b: __m256, p: *mut f32, q: *mut f32) {
    unsafe {
        // (a0 b0 a1 b1 | a4 b4 a5 b5) and (a2 b2 a3 b3 | a6 b6 a7 b7).
        let (lo, hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        _mm256_storeu_ps(p, _mm256_permute2f128_ps::<0x20>(lo, hi));
        _mm256_storeu_ps(q, _mm256_permute2f128_ps::<0x31>(lo, hi));
    }
}

/// How a run of eight tiles lies in the padded planes: tiles 4..8 follow
/// tiles 0..4 in the same rows (`half` = their offset, 4·m columns), or,
/// when a tile row has exactly 4 tiles, are the next tile row (`half` = m
/// rows), so that small maps still fill the vectors.
fn half(g: &Geo, lw: usize) -> usize {
    if paired(g) { g.m * lw } else { 4 * g.m }
}

/// Whether runs take two tile rows of 4 tiles.
fn paired(g: &Geo) -> bool {
    g.tw == 4
}

/// The tile rows a run starts at, and the tile runs within a row.
fn runs(g: &Geo, ty0: usize, ty1: usize) -> impl Iterator<Item = (usize, usize)> {
    let (step, tw) = (if paired(g) { 2 } else { 1 }, g.tw);
    (ty0..ty1)
        .step_by(step)
        .flat_map(move |ty| (0..tw).step_by(L).map(move |i0| (ty, i0)))
}

/// V[ξ][c][t] = (Bᵀ d B)[ξ] for the input block d of every tile of tile rows
/// q0..q1 (q = n·th + ty; t = (q − q0)·tw + tx), zeros outside the input.
///
/// # Safety
/// `src` holds the images of those rows ([N][ci][hi][wi]); `v` has
/// ξ·ci·ts floats (ts = `g.tile_stride()`), `plane` [`plane_len`]; the host
/// has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn input(
    g: &Geo,
    src: *const f32,
    q0: usize,
    q1: usize,
    v: &mut [f32],
    plane: &mut [f32],
) {
    let (lw, ts, m) = (line(g), g.tile_stride(), g.m);
    let rows = m * g.th + 2 + m;
    assert!(v.len() >= g.xis() * g.ci * ts && plane.len() >= rows * lw + L);
    assert!(g.pw + g.wi <= lw && g.ph + g.hi <= rows && (q1 - q0) * g.tw + SLACK <= ts);
    // Zeros around the input, which each plane's copy leaves in place.
    plane[..rows * lw].fill(0.0);
    let (v, pp, xs) = (v.as_mut_ptr(), plane.as_mut_ptr(), g.ci * ts);
    for (n, ty0, ty1) in g.spans(q0, q1) {
        // Tile rows ty0..ty1 read padded rows m·ty0 .. m·ty1 + 2.
        let first = (m * ty0).saturating_sub(g.ph).min(g.hi);
        let last = (m * ty1 + 2).saturating_sub(g.ph).min(g.hi);
        for c in 0..g.ci {
            // The next channel's rows, fetched while this one is
            // transformed: they come from beyond the core's caches, and the
            // hardware prefetchers start each channel's few KiB cold
            // (ResNet-mini: 23.3 → 22.0 ms a step at 1 thread, 12.5 → 12.0
            // at 2).
            if c + 1 < g.ci {
                prefetch(
                    src.wrapping_add(((n * g.ci + c + 1) * g.hi + first) * g.wi),
                    (last - first) * g.wi,
                );
            }
            for r in first..last {
                // SAFETY: row r of plane (n, c) is inside src; the zeros
                // past it stay within the padded row (pw + wi rounded up to
                // 8 ≤ lw for every padding up to 2).
                unsafe {
                    load_row(
                        src.add(((n * g.ci + c) * g.hi + r) * g.wi),
                        g.wi,
                        pp.add((r + g.ph) * lw + g.pw),
                    );
                }
            }
            // A paired run at the span's last tile row (an odd count) reads
            // the row after it, which holds another channel's or image's
            // rows: its tiles land on the next image's first tile row,
            // written after this one, or in the SLACK.
            for (ty, i0) in runs(g, ty0, ty1) {
                let t = (n * g.th + ty - q0) * g.tw + i0;
                // SAFETY: the loads stay within the padded rows m·ty ..
                // m·ty + 2m + 2 (m·i0 + m·8 + m ≤ lw); the stores within v
                // (asserted above), up to L − 1 tiles past the run's row.
                unsafe {
                    let (p, out) = (pp.add(m * ty * lw + m * i0), v.add(c * ts + t));
                    if m == 2 {
                        input_f2(p, half(g, lw), lw, out, xs);
                    } else {
                        f4::input(p, half(g, lw), lw, out, xs);
                    }
                }
            }
        }
    }
}

/// One run of eight tiles of F(2×2, 3×3): the 4×4 blocks whose rows start
/// at `p`, `p + lw`, … (tiles 4..8 at `half` further) to `out + ξ·xs`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn input_f2(p: *const f32, half: usize, lw: usize, out: *mut f32, xs: usize) {
    unsafe {
        let mut d = [[_mm256_setzero_ps(); 4]; 4];
        for (r, dr) in d.iter_mut().enumerate() {
            let row = p.add(r * lw);
            let (e, o) = split2(row, row.add(half));
            let (e1, o1) = split2(row.add(2), row.add(2 + half));
            // d B: the columns (x0, x1, x2, x3) of each tile.
            *dr = [
                _mm256_sub_ps(e, e1),
                _mm256_add_ps(o, e1),
                _mm256_sub_ps(e1, o),
                _mm256_sub_ps(o, o1),
            ];
        }
        for b in 0..4 {
            // Bᵀ (d B): rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
            let (r0, r1, r2, r3) = (d[0][b], d[1][b], d[2][b], d[3][b]);
            let vals = [
                _mm256_sub_ps(r0, r2),
                _mm256_add_ps(r1, r2),
                _mm256_sub_ps(r2, r1),
                _mm256_sub_ps(r1, r3),
            ];
            for (a, val) in vals.into_iter().enumerate() {
                _mm256_storeu_ps(out.add((a * 4 + b) * xs), val);
            }
        }
    }
}

/// y = Aᵀ M A for every tile of tile rows q0..q1 from M [ξ][co][ts],
/// cropped to the output.
///
/// # Safety
/// `dst` holds the images of those rows ([N][co][ho][wo]); `mm` has
/// ξ·co·ts floats, `plane` [`plane_len`]; the host has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn output(
    g: &Geo,
    mm: &[f32],
    dst: *mut f32,
    q0: usize,
    q1: usize,
    plane: &mut [f32],
) {
    let (lw, ts, m) = (line(g), g.tile_stride(), g.m);
    assert!(mm.len() >= g.xis() * g.co * ts && plane.len() >= 2 * m * lw);
    assert!(m * g.tw.next_multiple_of(L) <= lw && (q1 - q0) * g.tw + SLACK <= ts);
    let (mp, rows, xs) = (mm.as_ptr(), plane.as_mut_ptr(), g.co * ts);
    for (n, ty0, ty1) in g.spans(q0, q1) {
        for o in 0..g.co {
            // Row buffers: m output rows of the run's tile row, then m of
            // the next (a paired run's second half).
            let half_out = if paired(g) { m * lw } else { 4 * m };
            let mut runs = runs(g, ty0, ty1).peekable();
            while let Some((ty, i0)) = runs.next() {
                let t = o * ts + (n * g.th + ty - q0) * g.tw + i0;
                // SAFETY: the loads stay within mm (asserted: tiles up to
                // L − 1 past the block's last are inside the slack); the
                // stores within the 2m row buffers.
                unsafe {
                    let out = rows.add(m * i0);
                    if m == 2 {
                        output_f2(mp.add(t), xs, out, half_out, lw);
                    } else {
                        f4::output(mp.add(t), xs, out, half_out, lw);
                    }
                }
                if runs.peek().is_some_and(|&(next, _)| next == ty) {
                    continue;
                }
                // The run's tile rows are complete: copy them out.
                let tile_rows = if paired(g) { 2 } else { 1 };
                for r in 0..tile_rows * m {
                    let oy = m * ty + r;
                    if oy < g.ho && ty + r / m < ty1 {
                        // SAFETY: row oy of plane (n, o) is inside dst; the
                        // row buffer holds m·tw ≥ wo floats.
                        unsafe {
                            store_row(
                                rows.add(r * lw),
                                g.wo,
                                dst.add(((n * g.co + o) * g.ho + oy) * g.wo),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// One run of eight tiles of F(2×2, 3×3): M at `mp + ξ·xs` to the 2×2
/// outputs, interleaved into rows `rows` and `rows + lw` (tiles 4..8 at
/// `half` further).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn output_f2(mp: *const f32, xs: usize, rows: *mut f32, half: usize, lw: usize) {
    unsafe {
        let at = |xi: usize| _mm256_loadu_ps(mp.add(xi * xs));
        // M A per row a: (m0 + m1 + m2, m1 − m2 − m3).
        let mut p = [[_mm256_setzero_ps(); 2]; 4];
        for (a, pa) in p.iter_mut().enumerate() {
            let (m0, m1, m2, m3) = (at(4 * a), at(4 * a + 1), at(4 * a + 2), at(4 * a + 3));
            *pa = [
                _mm256_add_ps(_mm256_add_ps(m0, m1), m2),
                _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3),
            ];
        }
        // Aᵀ (M A): rows (p0 + p1 + p2, p1 − p2 − p3).
        let y = |s: usize| {
            (
                _mm256_add_ps(_mm256_add_ps(p[0][s], p[1][s]), p[2][s]),
                _mm256_sub_ps(_mm256_sub_ps(p[1][s], p[2][s]), p[3][s]),
            )
        };
        let ((y00, y10), (y01, y11)) = (y(0), y(1));
        interleave(y00, y01, rows, rows.add(half));
        interleave(y10, y11, rows.add(lw), rows.add(lw + half));
    }
}

/// dM[ξ][o][t] = (A dy Aᵀ)[ξ] for the output-gradient block of every tile
/// of tile rows q0..q1, zeros outside the output.
///
/// # Safety
/// `dy` holds the images of those rows ([N][co][ho][wo]); `dm` has
/// ξ·co·ts floats, `plane` [`plane_len`]; the host has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn output_grad(
    g: &Geo,
    dy: *const f32,
    q0: usize,
    q1: usize,
    dm: &mut [f32],
    plane: &mut [f32],
) {
    let (lw, ts, m) = (line(g), g.tile_stride(), g.m);
    let rows = m * g.th + m;
    assert!(dm.len() >= g.xis() * g.co * ts && plane.len() >= rows * lw);
    assert!(g.wo.next_multiple_of(L) <= lw && g.ho <= rows && (q1 - q0) * g.tw + SLACK <= ts);
    plane[..rows * lw].fill(0.0);
    let (dm, pp, xs) = (dm.as_mut_ptr(), plane.as_mut_ptr(), g.co * ts);
    for (n, ty0, ty1) in g.spans(q0, q1) {
        for o in 0..g.co {
            if o + 1 < g.co {
                let rows = (m * ty1).min(g.ho).saturating_sub(m * ty0);
                prefetch(
                    dy.wrapping_add(((n * g.co + o + 1) * g.ho + m * ty0) * g.wo),
                    rows * g.wo,
                );
            }
            for r in m * ty0..(m * ty1).min(g.ho) {
                // SAFETY: row r of plane (n, o) is inside dy; a padded row
                // holds wo rounded up to 8 floats (asserted).
                unsafe {
                    load_row(
                        dy.add(((n * g.co + o) * g.ho + r) * g.wo),
                        g.wo,
                        pp.add(r * lw),
                    )
                };
            }
            // A paired run at the span's last tile row (an odd count) reads
            // the row after it, which holds another channel's or image's
            // rows: its tiles land on the next image's first tile row,
            // written after this one, or in the SLACK.
            for (ty, i0) in runs(g, ty0, ty1) {
                let t = o * ts + (n * g.th + ty - q0) * g.tw + i0;
                // SAFETY: the loads stay within padded rows m·ty ..
                // m·ty + 2m (m·i0 + m·8 ≤ lw); the stores within dm
                // (asserted), up to L − 1 tiles past the run's row.
                unsafe {
                    let p = pp.add(m * ty * lw + m * i0);
                    if m == 2 {
                        output_grad_f2(p, half(g, lw), lw, dm.add(t), xs);
                    } else {
                        f4::output_grad(p, half(g, lw), lw, dm.add(t), xs);
                    }
                }
            }
        }
    }
}

/// One run of eight tiles of F(2×2, 3×3): the 2×2 dy blocks whose rows
/// start at `p` and `p + lw` (tiles 4..8 at `half` further) to dM at
/// `out + ξ·xs`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn output_grad_f2(p: *const f32, half: usize, lw: usize, out: *mut f32, xs: usize) {
    unsafe {
        // dy Aᵀ per row: (y0, y0 + y1, y0 − y1, −y1).
        let q = |r: usize| {
            let (e, o) = split2(p.add(r * lw), p.add(r * lw + half));
            [
                e,
                _mm256_add_ps(e, o),
                _mm256_sub_ps(e, o),
                _mm256_sub_ps(_mm256_setzero_ps(), o),
            ]
        };
        let (r0, r1) = (q(0), q(1));
        for b in 0..4 {
            // A (dy Aᵀ): rows (r0, r0 + r1, r0 − r1, −r1).
            let vals = [
                r0[b],
                _mm256_add_ps(r0[b], r1[b]),
                _mm256_sub_ps(r0[b], r1[b]),
                _mm256_sub_ps(_mm256_setzero_ps(), r1[b]),
            ];
            for (a, val) in vals.into_iter().enumerate() {
                _mm256_storeu_ps(out.add((a * 4 + b) * xs), val);
            }
        }
    }
}
