//! Lane shuffles shared by the AVX2 kernels.

use std::arch::x86_64::*;

/// Floats per 256-bit vector.
const L: usize = 8;

/// The even and odd elements of the 16 floats at `p`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn split(p: *const f32) -> (__m256, __m256) {
    unsafe { split2(p, p.add(L)) }
}

/// The even and odd elements of the 8 floats at `lo` followed by the 8 at
/// `hi`.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn split2(lo: *const f32, hi: *const f32) -> (__m256, __m256) {
    unsafe {
        let (lo, hi) = (_mm256_loadu_ps(lo), _mm256_loadu_ps(hi));
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

/// out[b] = src[2b] for b < out.len(): the even elements, 8 at a time.
///
/// # Safety
/// `src` holds 2·out.len() rounded up to 16 floats; the host has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn even(src: &[f32], out: &mut [f32]) {
    let n = out.len();
    assert!(src.len() >= 2 * n.next_multiple_of(L));
    let (s, o) = (src.as_ptr(), out.as_mut_ptr());
    let mut b = 0;
    unsafe {
        while b + L <= n {
            _mm256_storeu_ps(o.add(b), split(s.add(2 * b)).0);
            b += L;
        }
        if b < n {
            let mut last = [0.0f32; L];
            _mm256_storeu_ps(last.as_mut_ptr(), split(s.add(2 * b)).0);
            out[b..].copy_from_slice(&last[..n - b]);
        }
    }
}

/// dst[2b] += src[b] for b < src.len(), 8 at a time (the odd elements of
/// dst are read and written back unchanged).
///
/// # Safety
/// `dst` holds 2·src.len() floats; the host has AVX2.
#[inline]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_to_even(src: &[f32], dst: &mut [f32]) {
    let n = src.len();
    assert!(dst.len() >= 2 * n);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    let mut b = 0;
    unsafe {
        let zero = _mm256_setzero_ps();
        while b + L <= n {
            let v = _mm256_loadu_ps(s.add(b));
            // (v0 0 v1 0 | v4 0 v5 0) and (v2 0 v3 0 | v6 0 v7 0).
            let (lo, hi) = (_mm256_unpacklo_ps(v, zero), _mm256_unpackhi_ps(v, zero));
            let at = d.add(2 * b);
            let first = _mm256_permute2f128_ps::<0x20>(lo, hi);
            let second = _mm256_permute2f128_ps::<0x31>(lo, hi);
            _mm256_storeu_ps(at, _mm256_add_ps(_mm256_loadu_ps(at), first));
            _mm256_storeu_ps(at.add(L), _mm256_add_ps(_mm256_loadu_ps(at.add(L)), second));
            b += L;
        }
    }
    for k in b..n {
        dst[2 * k] += src[k];
    }
}

/// [`even`] for consecutive rows of `out`, `width` floats each: row a
/// takes the even elements from `src[a·stride..]`. One call per column row
/// of an im2col (a call per 8 or 16 outputs cost more than the shuffles).
///
/// # Safety
/// As [`even`] for every row; the host has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn even_rows(src: &[f32], stride: usize, out: &mut [f32], width: usize) {
    for (a, row) in out.chunks_exact_mut(width).enumerate() {
        unsafe { even(&src[a * stride..], row) };
    }
}

/// [`add_to_even`] for consecutive rows of `src`, `width` floats each: row
/// a adds into the even elements of `dst[a·stride..]`.
///
/// # Safety
/// As [`add_to_even`] for every row; the host has AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn add_to_even_rows(src: &[f32], width: usize, dst: &mut [f32], stride: usize) {
    for (a, row) in src.chunks_exact(width).enumerate() {
        unsafe { add_to_even(row, &mut dst[a * stride..]) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_and_add_to_even_match_plain_loops() {
        if !crate::jit::host::has_avx2() {
            return;
        }
        for n in 0..40usize {
            let src: Vec<f32> = (0..2 * n.next_multiple_of(L)).map(|v| v as f32).collect();
            let mut out = vec![-1.0f32; n];
            unsafe { even(&src, &mut out) };
            for (b, v) in out.iter().enumerate() {
                assert_eq!(*v, src[2 * b], "even, n = {n}, b = {b}");
            }
            let add: Vec<f32> = (0..n).map(|v| 1000.0 + v as f32).collect();
            let mut dst = src.clone();
            unsafe { add_to_even(&add, &mut dst) };
            for (k, v) in dst.iter().enumerate() {
                let want = if k % 2 == 0 && k / 2 < n {
                    src[k] + add[k / 2]
                } else {
                    src[k]
                };
                assert_eq!(*v, want, "add_to_even, n = {n}, k = {k}");
            }
        }
    }
}
