//! The kernels of F(4×4, 3×3) for eight tiles of a tile row: 6×6 input
//! blocks at a stride of 4, 36 products per 16 outputs (Lavin & Gray's
//! matrices, interpolation points 0, ±1, ±2):
//!
//! ```text
//! Bᵀ = [4  0 −5  0  1  0]    G = [ 1/4    0     0  ]    Aᵀ = [1 1  1 1  1 0]
//!      [0 −4 −4  1  1  0]        [−1/6 −1/6  −1/6 ]         [0 1 −1 2 −2 0]
//!      [0  4 −4 −1  1  0]        [−1/6  1/6  −1/6 ]         [0 1  1 4  4 0]
//!      [0 −2 −1  2  1  0]        [1/24  1/12  1/6 ]         [0 1 −1 8 −8 1]
//!      [0  2 −1 −2  1  0]        [1/24 −1/12  1/6 ]
//!      [0  4  0 −5  0  1]        [  0     0     1  ]
//! ```

use std::arch::x86_64::*;

/// Tiles per vector.
const L: usize = 8;

type V8 = __m256;

/// Elements 4i + k, for k = 0..4, of the 16 floats at `p` followed by the
/// 16 at `q`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn split4(p: *const f32, q: *const f32) -> [V8; 4] {
    unsafe {
        let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(L)));
        let (c, d) = (_mm256_loadu_ps(q), _mm256_loadu_ps(q.add(L)));
        // Per 128-bit lane, after two rounds of unpacking, phase k holds
        // (x_k, x_16+k, x_8+k, x_24+k | x_4+k, x_20+k, x_12+k, x_28+k).
        let (t0, t1) = (_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
        let (t2, t3) = (_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
        let order = _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7);
        [
            _mm256_permutevar8x32_ps(_mm256_unpacklo_ps(t0, t2), order),
            _mm256_permutevar8x32_ps(_mm256_unpackhi_ps(t0, t2), order),
            _mm256_permutevar8x32_ps(_mm256_unpacklo_ps(t1, t3), order),
            _mm256_permutevar8x32_ps(_mm256_unpackhi_ps(t1, t3), order),
        ]
    }
}

/// Stores y[k][i] at `p + 4i + k` for i < 4 and at `q + 4(i − 4) + k` for
/// the others (the inverse of [`split4`]).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn interleave4(y: [V8; 4], p: *mut f32, q: *mut f32) {
    unsafe {
        // The permutation of split4 is its own inverse.
        let order = _mm256_setr_epi32(0, 4, 2, 6, 1, 5, 3, 7);
        let u = y.map(|v| _mm256_permutevar8x32_ps(v, order));
        let t0 = _mm256_shuffle_ps::<0b10_00_10_00>(u[0], u[1]);
        let t2 = _mm256_shuffle_ps::<0b11_01_11_01>(u[0], u[1]);
        let t1 = _mm256_shuffle_ps::<0b10_00_10_00>(u[2], u[3]);
        let t3 = _mm256_shuffle_ps::<0b11_01_11_01>(u[2], u[3]);
        _mm256_storeu_ps(p, _mm256_shuffle_ps::<0b10_00_10_00>(t0, t1));
        _mm256_storeu_ps(p.add(L), _mm256_shuffle_ps::<0b11_01_11_01>(t0, t1));
        _mm256_storeu_ps(q, _mm256_shuffle_ps::<0b10_00_10_00>(t2, t3));
        _mm256_storeu_ps(q.add(L), _mm256_shuffle_ps::<0b11_01_11_01>(t2, t3));
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn splat(v: f32) -> V8 {
    _mm256_set1_ps(v)
}

/// Bᵀ x for six vectors.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn bt(x: [V8; 6]) -> [V8; 6] {
    let (four, five, two) = (splat(4.0), splat(5.0), splat(2.0));
    let s12 = _mm256_add_ps(x[1], x[2]);
    let d12 = _mm256_sub_ps(x[1], x[2]);
    let d31 = _mm256_sub_ps(x[3], x[1]);
    let d42 = _mm256_sub_ps(x[4], x[2]);
    [
        _mm256_fmadd_ps(four, x[0], _mm256_fnmadd_ps(five, x[2], x[4])),
        _mm256_fnmadd_ps(four, s12, _mm256_add_ps(x[3], x[4])),
        _mm256_fmadd_ps(four, d12, _mm256_sub_ps(x[4], x[3])),
        _mm256_fmadd_ps(two, d31, d42),
        _mm256_fnmadd_ps(two, d31, d42),
        _mm256_fmadd_ps(four, x[1], _mm256_fnmadd_ps(five, x[3], x[5])),
    ]
}

/// Aᵀ m for six vectors.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn at(m: [V8; 6]) -> [V8; 4] {
    let s12 = _mm256_add_ps(m[1], m[2]);
    let d12 = _mm256_sub_ps(m[1], m[2]);
    let s34 = _mm256_add_ps(m[3], m[4]);
    let d34 = _mm256_sub_ps(m[3], m[4]);
    [
        _mm256_add_ps(_mm256_add_ps(m[0], s12), s34),
        _mm256_fmadd_ps(splat(2.0), d34, d12),
        _mm256_fmadd_ps(splat(4.0), s34, s12),
        _mm256_add_ps(_mm256_fmadd_ps(splat(8.0), d34, d12), m[5]),
    ]
}

/// A y for four vectors (the transpose of [`at`]).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn a_y(y: [V8; 4]) -> [V8; 6] {
    let s02 = _mm256_add_ps(y[0], y[2]);
    let s13 = _mm256_add_ps(y[1], y[3]);
    let e = _mm256_fmadd_ps(splat(4.0), y[2], y[0]);
    let f = _mm256_mul_ps(splat(2.0), _mm256_fmadd_ps(splat(4.0), y[3], y[1]));
    [
        y[0],
        _mm256_add_ps(s02, s13),
        _mm256_sub_ps(s02, s13),
        _mm256_add_ps(e, f),
        _mm256_sub_ps(e, f),
        y[3],
    ]
}

/// The 6×6 blocks of eight tiles whose rows start at `p`, `p + lw`, … (tiles
/// 4..8 at `half` further) to V
/// at `out + ξ·xs` (ξ = 6a + b).
///
/// # Safety
/// Six rows of 20 floats from `p` and from `p + half` at a stride of `lw`,
/// and 36 runs of eight at `out` at a stride of `xs`; the host has AVX2 and
/// FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn input(p: *const f32, half: usize, lw: usize, out: *mut f32, xs: usize) {
    unsafe {
        // d B per row.
        let mut d = [[_mm256_setzero_ps(); 6]; 6];
        for (r, dr) in d.iter_mut().enumerate() {
            let row = p.add(r * lw);
            let [x0, x1, x2, x3] = split4(row, row.add(half));
            let [x4, x5, _, _] = split4(row.add(4), row.add(4 + half));
            *dr = bt([x0, x1, x2, x3, x4, x5]);
        }
        // Bᵀ (d B) per column.
        for b in 0..6 {
            let col = bt([d[0][b], d[1][b], d[2][b], d[3][b], d[4][b], d[5][b]]);
            for (a, val) in col.into_iter().enumerate() {
                _mm256_storeu_ps(out.add((6 * a + b) * xs), val);
            }
        }
    }
}

/// M at `mp + ξ·xs` to the 4×4 outputs of eight tiles, interleaved into
/// rows `rows + r·lw` (tiles 4..8 at `half` further).
///
/// # Safety
/// 36 runs of eight floats at `mp` at a stride of `xs`; four rows of 16 at
/// `rows` and at `rows + half`; the host has AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn output(mp: *const f32, xs: usize, rows: *mut f32, half: usize, lw: usize) {
    unsafe {
        // M A per row.
        let mut p = [[_mm256_setzero_ps(); 4]; 6];
        for (a, pa) in p.iter_mut().enumerate() {
            let m = std::array::from_fn(|b| _mm256_loadu_ps(mp.add((6 * a + b) * xs)));
            *pa = at(m);
        }
        // Aᵀ (M A) per column.
        let mut y = [[_mm256_setzero_ps(); 4]; 4];
        for s in 0..4 {
            let col = at([p[0][s], p[1][s], p[2][s], p[3][s], p[4][s], p[5][s]]);
            for r in 0..4 {
                y[r][s] = col[r];
            }
        }
        for (r, yr) in y.into_iter().enumerate() {
            interleave4(yr, rows.add(r * lw), rows.add(r * lw + half));
        }
    }
}

/// The 4×4 dy blocks of eight tiles whose rows start at `p`, `p + lw`, …
/// (tiles 4..8 at `half` further) to dM = A dy Aᵀ at `out + ξ·xs`.
///
/// # Safety
/// Four rows of 16 floats from `p` and from `p + half` at a stride of `lw`,
/// and 36 runs of eight at `out` at a stride of `xs`; the host has AVX2 and
/// FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn output_grad(p: *const f32, half: usize, lw: usize, out: *mut f32, xs: usize) {
    unsafe {
        // dy Aᵀ per row.
        let mut q = [[_mm256_setzero_ps(); 6]; 4];
        for (r, qr) in q.iter_mut().enumerate() {
            *qr = a_y(split4(p.add(r * lw), p.add(r * lw + half)));
        }
        // A (dy Aᵀ) per column.
        for b in 0..6 {
            let col = a_y([q[0][b], q[1][b], q[2][b], q[3][b]]);
            for (a, val) in col.into_iter().enumerate() {
                _mm256_storeu_ps(out.add((6 * a + b) * xs), val);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split4_and_interleave4_are_inverse() {
        if !crate::jit::host::has_avx2() {
            return;
        }
        let x: Vec<f32> = (0..32).map(|v| v as f32).collect();
        let mut back = [0.0f32; 32];
        unsafe {
            let phases = split4(x.as_ptr(), x.as_ptr().add(16));
            for (k, ph) in phases.iter().enumerate() {
                let mut lanes = [0.0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *ph);
                for (i, v) in lanes.iter().enumerate() {
                    assert_eq!(*v, (4 * i + k) as f32);
                }
            }
            interleave4(phases, back.as_mut_ptr(), back.as_mut_ptr().add(16));
        }
        assert_eq!(&back[..], &x[..]);
    }
}
