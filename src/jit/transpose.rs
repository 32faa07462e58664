//! Copies of a matrix into the other layout (row-major to column-major or
//! back). A fused loop walks one side with a large stride, a cache line per
//! element; tiles of 16x16 touch each line once.

use super::Ctx;
use super::helpers::Loc;
use crate::schedule::View;

/// A 2-D copy; strides in elements.
#[derive(Debug, Clone)]
pub struct TransposeDesc {
    pub rows: usize,
    pub cols: usize,
    pub from: Loc,
    pub from_strides: [isize; 2],
    pub to: Loc,
    pub to_strides: [isize; 2],
}

/// Whether a copy turns one layout of a matrix into the other: the element
/// that is next in memory on one side is a row away on the other.
pub fn is_transposing(from: &View, to: &View) -> bool {
    let unit = |v: &View| v.strides.iter().position(|&s| s == 1);
    from.shape.len() == 2
        && to.shape == from.shape
        && from.shape.iter().all(|&n| n > 1)
        && unit(from).is_some()
        && unit(to).is_some()
        && unit(from) != unit(to)
}

const TILE: usize = 16;

/// Copies of at least this many elements are split across threads (MNIST's
/// 128×512 output and 512×256 weight: 0.025 and 0.032 ms on one thread of
/// two).
const SPLIT: usize = 1 << 15;

pub fn splits(elements: usize) -> bool {
    elements >= SPLIT
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns;
/// both views lie inside their buffers by construction (the scheduler
/// makes them from a matrix's shape and its buffer).
pub unsafe extern "C" fn nnc_transpose(ctx: *const Ctx, d: *const TransposeDesc) {
    unsafe {
        let d = &*d;
        let (from, to) = (d.from.ptr(ctx), d.to.ptr(ctx));
        // Name the axes so that the source is contiguous along `j` and the
        // destination along `i`: element (i, j) is at i·si + j (source) and
        // i + j·dj (destination).
        let (ni, nj, si, dj) = if d.from_strides[1] == 1 && d.to_strides[0] == 1 {
            (d.rows, d.cols, d.from_strides[0], d.to_strides[1])
        } else if d.from_strides[0] == 1 && d.to_strides[1] == 1 {
            (d.cols, d.rows, d.from_strides[1], d.to_strides[0])
        } else {
            return strided(d, from, to);
        };
        let threads = if splits(ni * nj) { (*ctx).threads } else { 1 };
        let blocks = ni.div_ceil(8);
        let parts = threads.min(blocks).max(1);
        if parts == 1 {
            return transpose_into(from, to, ni, nj, si, dj);
        }
        // Runs of 8 source rows (destination columns) per thread.
        let (f, t) = (from as usize, to as usize);
        super::team::parallel_for(threads, parts, |p| {
            let lo = blocks * p / parts * 8;
            let hi = (blocks * (p + 1) / parts * 8).min(ni);
            let from = (f as *const f32).offset(lo as isize * si);
            transpose_into(from, (t as *mut f32).add(lo), hi - lo, nj, si, dj);
        });
    }
}

/// Copies the ni×nj matrix at `from` (element (i, j) at `from + i·si + j`)
/// to `to + i + j·dj`, in 8×8 blocks where the host has AVX2.
///
/// # Safety
/// Both matrices lie inside their buffers.
pub(crate) unsafe fn transpose_into(
    from: *const f32,
    to: *mut f32,
    ni: usize,
    nj: usize,
    si: isize,
    dj: isize,
) {
    unsafe {
        #[cfg(target_arch = "x86_64")]
        if crate::jit::host::has_avx2() {
            return tiles8(from, to, ni, nj, si, dj);
        }
        // Without AVX2: tiles of 16×16 in 4×4 blocks.
        for i0 in (0..ni).step_by(TILE) {
            for j0 in (0..nj).step_by(TILE) {
                let (i1, j1) = ((i0 + TILE).min(ni), (j0 + TILE).min(nj));
                let mut i = i0;
                while i + 4 <= i1 {
                    let mut j = j0;
                    while j + 4 <= j1 {
                        block4(from, to, i as isize, j as isize, si, dj);
                        j += 4;
                    }
                    for j in j..j1 {
                        for i in i..i + 4 {
                            let (i, j) = (i as isize, j as isize);
                            *to.offset(i + j * dj) = *from.offset(i * si + j);
                        }
                    }
                    i += 4;
                }
                for i in i..i1 {
                    for j in j0..j1 {
                        let (i, j) = (i as isize, j as isize);
                        *to.offset(i + j * dj) = *from.offset(i * si + j);
                    }
                }
            }
        }
    }
}

/// The copy in 8×8 blocks with AVX2, the ragged edges element by element.
/// Eight destination rows per block touch fewer cache sets than 16 when the
/// rows are a power of two apart (MNIST's 784×512 weight: 0.238 ms with
/// 16×16 tiles of 4×4 blocks).
///
/// # Safety
/// As [`nnc_transpose`]: element (i, j) of the ni×nj matrix is at
/// `from + i·si + j` and goes to `to + i + j·dj`; the host has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tiles8(from: *const f32, to: *mut f32, ni: usize, nj: usize, si: isize, dj: isize) {
    let (bi, bj) = (ni - ni % 8, nj - nj % 8);
    unsafe {
        // Panels of 32 source rows: each destination row gets two whole
        // cache lines (when aligned) at once. With 8 rows a line was written
        // in quarters a sweep over all columns apart, and when destination
        // rows are a power of two apart their lines evicted each other in
        // between. MNIST's two copies on Zen 5, 1 thread: 0.088 ms with 8,
        // 0.066 with 16, 0.027 with 32 or 64.
        for p0 in (0..bi).step_by(PANEL) {
            for j0 in (0..bj).step_by(8) {
                for i0 in (p0..(p0 + PANEL).min(bi)).step_by(8) {
                    block8(from, to, i0 as isize, j0 as isize, si, dj);
                }
            }
        }
        // The ragged edges: the last ni % 8 rows, and the last nj % 8
        // columns of the others.
        for i in 0..ni {
            let j_from = if i < bi { bj } else { 0 };
            for j in j_from..nj {
                let (i, j) = (i as isize, j as isize);
                *to.offset(i + j * dj) = *from.offset(i * si + j);
            }
        }
    }
}

/// Source rows a panel of [`tiles8`] covers.
const PANEL: usize = 32;

/// The 8×8 block at source row `i`, column `j`, transposed in registers.
///
/// # Safety
/// As [`tiles8`], for the whole block.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block8(from: *const f32, to: *mut f32, i: isize, j: isize, si: isize, dj: isize) {
    use std::arch::x86_64::*;
    unsafe {
        let r: [__m256; 8] =
            std::array::from_fn(|k| _mm256_loadu_ps(from.offset((i + k as isize) * si + j)));
        // Pairs, quads, then halves: the classic 8×8 transpose.
        let t: [__m256; 8] = std::array::from_fn(|k| {
            let (a, b) = (r[2 * (k / 2)], r[2 * (k / 2) + 1]);
            if k % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        let q = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        for k in 0..4 {
            let lo = _mm256_permute2f128_ps::<0x20>(q[k], q[k + 4]);
            let hi = _mm256_permute2f128_ps::<0x31>(q[k], q[k + 4]);
            _mm256_storeu_ps(to.offset(i + (j + k as isize) * dj), lo);
            _mm256_storeu_ps(to.offset(i + (j + k as isize + 4) * dj), hi);
        }
    }
}

/// A 4x4 block: four contiguous source rows in, transposed in registers,
/// four contiguous destination columns out.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn block4(from: *const f32, to: *mut f32, i: isize, j: isize, si: isize, dj: isize) {
    use std::arch::x86_64::*;
    unsafe {
        let r0 = _mm_loadu_ps(from.offset(i * si + j));
        let r1 = _mm_loadu_ps(from.offset((i + 1) * si + j));
        let r2 = _mm_loadu_ps(from.offset((i + 2) * si + j));
        let r3 = _mm_loadu_ps(from.offset((i + 3) * si + j));
        let t0 = _mm_unpacklo_ps(r0, r1);
        let t1 = _mm_unpacklo_ps(r2, r3);
        let t2 = _mm_unpackhi_ps(r0, r1);
        let t3 = _mm_unpackhi_ps(r2, r3);
        _mm_storeu_ps(to.offset(i + j * dj), _mm_movelh_ps(t0, t1));
        _mm_storeu_ps(to.offset(i + (j + 1) * dj), _mm_movehl_ps(t1, t0));
        _mm_storeu_ps(to.offset(i + (j + 2) * dj), _mm_movelh_ps(t2, t3));
        _mm_storeu_ps(to.offset(i + (j + 3) * dj), _mm_movehl_ps(t3, t2));
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
unsafe fn block4(from: *const f32, to: *mut f32, i: isize, j: isize, si: isize, dj: isize) {
    for a in 0..4 {
        for b in 0..4 {
            unsafe { *to.offset(i + a + (j + b) * dj) = *from.offset((i + a) * si + j + b) };
        }
    }
}

/// Any other pair of strides, element by element in tiles.
unsafe fn strided(d: &TransposeDesc, from: *const f32, to: *mut f32) {
    let [fr, fc] = d.from_strides;
    let [tr, tc] = d.to_strides;
    for r0 in (0..d.rows).step_by(TILE) {
        for c0 in (0..d.cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(d.rows) {
                for c in c0..(c0 + TILE).min(d.cols) {
                    let (r, c) = (r as isize, c as isize);
                    unsafe { *to.offset(r * tr + c * tc) = *from.offset(r * fr + c * fc) };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both directions and ragged edges against an element-by-element copy.
    #[test]
    fn blocked_copies_match_plain_ones() {
        for (rows, cols) in [(5, 7), (16, 16), (33, 18), (4, 1029), (75, 41), (41, 75)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = vec![0.0f32; rows * cols];
            let mut regions = [src.as_ptr() as *mut u8, dst.as_mut_ptr() as *mut u8];
            let ctx = Ctx {
                regions: regions.as_mut_ptr(),
                times: std::ptr::null_mut(),
                seed: 0,
                threads: 1,
                profile: std::ptr::null_mut(),
            };
            for (fs, ts) in [
                ([cols as isize, 1], [1, rows as isize]),
                ([1, rows as isize], [cols as isize, 1]),
            ] {
                let d = TransposeDesc {
                    rows,
                    cols,
                    from: Loc {
                        region: 0,
                        offset: 0,
                    },
                    from_strides: fs,
                    to: Loc {
                        region: 1,
                        offset: 0,
                    },
                    to_strides: ts,
                };
                dst.fill(-1.0);
                unsafe { nnc_transpose(&ctx, &d) };
                for r in 0..rows as isize {
                    for c in 0..cols as isize {
                        assert_eq!(
                            dst[(r * ts[0] + c * ts[1]) as usize],
                            src[(r * fs[0] + c * fs[1]) as usize],
                            "{rows}x{cols} at ({r}, {c})"
                        );
                    }
                }
            }
        }
    }
}
