//! The per-tile transforms of F(2×2, 3×3), eight tiles of a tile row at a
//! time in 256-bit registers.
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

use super::Geo;

/// Tiles per vector.
const L: usize = 8;

/// Row length of the padded planes: eight tiles' columns (and the two the
/// last tile reads past them) for every run of eight tiles.
fn line(g: &Geo) -> usize {
    2 * g.tw.next_multiple_of(L) + L
}

/// Floats of the plane buffer the kernels need: a padded input plane
/// (2·th + 2 rows) or output-gradient plane (2·th rows), and two output rows.
pub(super) fn plane_len(g: &Geo) -> usize {
    (2 * g.th + 2) * line(g) + 2 * line(g) + L
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

/// Copies `n` floats from `src` to `dst` in whole vectors, with zeros after
/// them up to the next multiple of 8 (rows this short lose more to a
/// `memcpy` call than they spend copying).
///
/// # Safety
/// `src` holds n floats; `dst` has room for n rounded up to 8.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load_row(src: *const f32, n: usize, dst: *mut f32) {
    let mut k = 0;
    unsafe {
        while k + L <= n {
            _mm256_storeu_ps(dst.add(k), _mm256_loadu_ps(src.add(k)));
            k += L;
        }
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
    let mut k = 0;
    unsafe {
        while k + L <= n {
            _mm256_storeu_ps(dst.add(k), _mm256_loadu_ps(src.add(k)));
            k += L;
        }
        if k < n {
            _mm256_maskstore_ps(dst.add(k), first_lanes(n - k), _mm256_loadu_ps(src.add(k)));
        }
    }
}

/// The even and odd elements of the 16 floats at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn split(p: *const f32) -> (__m256, __m256) {
    unsafe {
        let (lo, hi) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(L)));
        // Per 128-bit lane: (lo0, lo2, hi0, hi2 | lo4, lo6, hi4, hi6), then
        // the 64-bit blocks reordered 0, 2, 1, 3.
        let e = _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi);
        let o = _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi);
        let order = |v: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        };
        (order(e), order(o))
    }
}

/// Stores a0, b0, a1, b1, … a7, b7 at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn interleave(a: __m256, b: __m256, p: *mut f32) {
    unsafe {
        // (a0 b0 a1 b1 | a4 b4 a5 b5) and (a2 b2 a3 b3 | a6 b6 a7 b7).
        let (lo, hi) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        _mm256_storeu_ps(p, _mm256_permute2f128_ps::<0x20>(lo, hi));
        _mm256_storeu_ps(p.add(L), _mm256_permute2f128_ps::<0x31>(lo, hi));
    }
}

/// V[ξ][c][t] = (Bᵀ d B)[ξ] for the 4×4 input block d of every tile of
/// tile rows q0..q1 (q = n·th + ty; t = (q − q0)·tw + tx), zeros outside
/// the input.
///
/// # Safety
/// `src` holds the images of those rows ([N][ci][hi][wi]); `v` has
/// 16·ci·ts floats (ts = `g.tile_stride()`), `plane` [`plane_len`]; the host
/// has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn input(
    g: &Geo,
    src: *const f32,
    q0: usize,
    q1: usize,
    v: &mut [f32],
    plane: &mut [f32],
) {
    let (lw, ts) = (line(g), g.tile_stride());
    let rows = 2 * g.th + 2;
    assert!(v.len() >= 16 * g.ci * ts && plane.len() >= rows * lw + L);
    assert!(g.pw + g.wi <= lw && g.ph + g.hi <= rows && (q1 - q0) * g.tw + SLACK_MIN <= ts);
    // Zeros around the input, which each plane's copy leaves in place.
    plane[..rows * lw].fill(0.0);
    let (v, pp) = (v.as_mut_ptr(), plane.as_mut_ptr());
    for (n, ty0, ty1) in g.spans(q0, q1) {
        // Tile rows ty0..ty1 read padded rows 2·ty0 .. 2·ty1 + 2.
        let first = (2 * ty0).saturating_sub(g.ph).min(g.hi);
        let last = (2 * ty1 + 2).saturating_sub(g.ph).min(g.hi);
        for c in 0..g.ci {
            for r in first..last {
                // SAFETY: row r of plane (n, c) is inside src; the zeros
                // past it land on padding or on the next row, copied after
                // (the plane has L floats of slack).
                unsafe {
                    load_row(
                        src.add(((n * g.ci + c) * g.hi + r) * g.wi),
                        g.wi,
                        pp.add((r + g.ph) * lw + g.pw),
                    );
                }
            }
            let base = |a: usize| (a * 4 * g.ci + c) * ts;
            for ty in ty0..ty1 {
                for i0 in (0..g.tw).step_by(L) {
                    // SAFETY: the loads stay within the padded rows 2ty..2ty+4
                    // (2·i0 + 18 ≤ lw); the stores within v (asserted above),
                    // up to L − 1 tiles past this row's last.
                    unsafe {
                        let mut d = [[_mm256_setzero_ps(); 4]; 4];
                        for (r, dr) in d.iter_mut().enumerate() {
                            let p = pp.add((2 * ty + r) * lw + 2 * i0);
                            let ((e, o), (e1, o1)) = (split(p), split(p.add(2)));
                            // d B: the columns (x0, x1, x2, x3) of each tile.
                            *dr = [
                                _mm256_sub_ps(e, e1),
                                _mm256_add_ps(o, e1),
                                _mm256_sub_ps(e1, o),
                                _mm256_sub_ps(o, o1),
                            ];
                        }
                        let t = (n * g.th + ty - q0) * g.tw + i0;
                        for b in 0..4 {
                            // Bᵀ (d B): rows (d0 − d2, d1 + d2, d2 − d1, d1 − d3).
                            let (r0, r1, r2, r3) = (d[0][b], d[1][b], d[2][b], d[3][b]);
                            let out = [
                                _mm256_sub_ps(r0, r2),
                                _mm256_add_ps(r1, r2),
                                _mm256_sub_ps(r2, r1),
                                _mm256_sub_ps(r1, r3),
                            ];
                            for (a, val) in out.into_iter().enumerate() {
                                _mm256_storeu_ps(v.add(base(a) + b * g.ci * ts + t), val);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The least slack the kernels need after a channel's tiles.
const SLACK_MIN: usize = L - 1;

/// y = Aᵀ M A for every tile of tile rows q0..q1 from M [16][co][ts],
/// cropped to the output.
///
/// # Safety
/// `dst` holds the images of those rows ([N][co][ho][wo]); `m` has 16·co·ts floats,
/// `plane` [`plane_len`]; the host has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn output(
    g: &Geo,
    m: &[f32],
    dst: *mut f32,
    q0: usize,
    q1: usize,
    plane: &mut [f32],
) {
    let (lw, ts) = (line(g), g.tile_stride());
    assert!(m.len() >= 16 * g.co * ts && plane.len() >= 2 * lw);
    assert!(2 * g.tw.next_multiple_of(L) <= lw && (q1 - q0) * g.tw + SLACK_MIN <= ts);
    let (m, rows) = (m.as_ptr(), plane.as_mut_ptr());
    for (n, ty0, ty1) in g.spans(q0, q1) {
        for o in 0..g.co {
            let base = o * ts;
            for ty in ty0..ty1 {
                for i0 in (0..g.tw).step_by(L) {
                    let t = base + (n * g.th + ty - q0) * g.tw + i0;
                    // SAFETY: the loads stay within m (asserted: tiles up to
                    // L − 1 past the block's last are inside the slack); the
                    // stores within the two row buffers.
                    unsafe {
                        let at = |xi: usize| _mm256_loadu_ps(m.add(xi * g.co * ts + t));
                        // M A per row a: (m0 + m1 + m2, m1 − m2 − m3).
                        let mut p = [[_mm256_setzero_ps(); 2]; 4];
                        for (a, pa) in p.iter_mut().enumerate() {
                            let (m0, m1, m2, m3) =
                                (at(4 * a), at(4 * a + 1), at(4 * a + 2), at(4 * a + 3));
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
                        interleave(y00, y01, rows.add(2 * i0));
                        interleave(y10, y11, rows.add(lw + 2 * i0));
                    }
                }
                for r in 0..2 {
                    let oy = 2 * ty + r;
                    if oy < g.ho {
                        // SAFETY: row oy of plane (n, o) is inside dst; the
                        // row buffer holds 2·tw ≥ wo floats.
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

/// dM[ξ][o][t] = (A dy Aᵀ)[ξ] for the 2×2 output-gradient block of every
/// tile of tile rows q0..q1, zeros outside the output.
///
/// # Safety
/// `dy` holds the images of those rows ([N][co][ho][wo]); `dm` has 16·co·ts floats,
/// `plane` [`plane_len`]; the host has AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn output_grad(
    g: &Geo,
    dy: *const f32,
    q0: usize,
    q1: usize,
    dm: &mut [f32],
    plane: &mut [f32],
) {
    let (lw, ts) = (line(g), g.tile_stride());
    let rows = 2 * g.th;
    assert!(dm.len() >= 16 * g.co * ts && plane.len() >= rows * lw);
    assert!(g.wo.next_multiple_of(L) <= lw && g.ho <= rows && (q1 - q0) * g.tw + SLACK_MIN <= ts);
    plane[..rows * lw].fill(0.0);
    let (dm, pp) = (dm.as_mut_ptr(), plane.as_mut_ptr());
    for (n, ty0, ty1) in g.spans(q0, q1) {
        for o in 0..g.co {
            for r in 2 * ty0..(2 * ty1).min(g.ho) {
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
            let base = o * ts;
            for ty in ty0..ty1 {
                for i0 in (0..g.tw).step_by(L) {
                    // SAFETY: the loads stay within padded rows 2ty, 2ty + 1
                    // (2·i0 + 16 ≤ lw); the stores within dm (asserted), up to
                    // L − 1 tiles past this row's last.
                    unsafe {
                        // dy Aᵀ per row: (y0, y0 + y1, y0 − y1, −y1).
                        let q = |r: usize| {
                            let (e, o) = split(pp.add((2 * ty + r) * lw + 2 * i0));
                            [
                                e,
                                _mm256_add_ps(e, o),
                                _mm256_sub_ps(e, o),
                                _mm256_sub_ps(_mm256_setzero_ps(), o),
                            ]
                        };
                        let (r0, r1) = (q(0), q(1));
                        let t = base + (n * g.th + ty - q0) * g.tw + i0;
                        for b in 0..4 {
                            // A (dy Aᵀ): rows (r0, r0 + r1, r0 − r1, −r1).
                            let out = [
                                r0[b],
                                _mm256_add_ps(r0[b], r1[b]),
                                _mm256_sub_ps(r0[b], r1[b]),
                                _mm256_sub_ps(_mm256_setzero_ps(), r1[b]),
                            ];
                            for (a, val) in out.into_iter().enumerate() {
                                _mm256_storeu_ps(dm.add(((a * 4 + b) * g.co) * ts + t), val);
                            }
                        }
                    }
                }
            }
        }
    }
}
