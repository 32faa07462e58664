//! One vector width of a hand-written kernel: the kernels are written once,
//! generic over [`Simd`], and compiled for 256-bit AVX2 and 512-bit AVX-512
//! by thin wrappers that enable the target features (see [`wide_and_narrow`]).
//!
//! The methods are `#[inline(always)]` and carry no target features of their
//! own, so they inline into the wrappers, whose features then let the
//! intrinsics inline too.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The operations the kernels use, on vectors of [`Simd::L`] floats.
///
/// # Safety
/// Every method needs the host features of its implementation; pointers
/// must hold `L` floats (one for [`Simd::splat`]).
pub(crate) trait Simd {
    type V: Copy;
    /// Floats per vector.
    const L: usize;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const f32) -> Self::V;
    unsafe fn store(p: *mut f32, v: Self::V);
    /// Stores the first `n` (< L) lanes, nothing past them.
    unsafe fn store_first(p: *mut f32, v: Self::V, n: usize);
    /// The float at `p` in every lane.
    unsafe fn splat(p: *const f32) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// a·b + c, rounded once.
    unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
}

/// 8 floats in a 256-bit register (AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

/// 16 floats in a 512-bit register (AVX-512 F).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    type V = __m256;
    const L: usize = 8;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        unsafe { _mm256_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m256) {
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m256, n: usize) {
        // (AVX2's masked stores are microcoded on AMD.)
        let mut tail = [0.0f32; 8];
        unsafe {
            _mm256_storeu_ps(tail.as_mut_ptr(), v);
            std::ptr::copy_nonoverlapping(tail.as_ptr(), p, n.min(8));
        }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m256 {
        unsafe { _mm256_broadcast_ss(&*p) }
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
}

#[cfg(target_arch = "x86_64")]
impl Simd for Avx512 {
    type V = __m512;
    const L: usize = 16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        unsafe { _mm512_setzero_ps() }
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: __m512) {
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: __m512, n: usize) {
        let mask = ((1u32 << n.min(16)) - 1) as __mmask16;
        unsafe { _mm512_mask_storeu_ps(p, mask, v) }
    }
    #[inline(always)]
    unsafe fn splat(p: *const f32) -> __m512 {
        unsafe { _mm512_set1_ps(*p) }
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
}

/// Floats per vector of the widest kernels the host runs: 16 with AVX-512,
/// 8 with AVX2 (0 without: the callers then take other paths).
pub(crate) fn host_lanes() -> usize {
    if super::host::has_avx512() {
        16
    } else if super::host::has_avx2() {
        8
    } else {
        0
    }
}

/// Defines `$name::<A, B>(lanes, args…)`, which runs the generic kernel
/// `$kernel::<S, A, B>(args…)` with S = [`Avx512`] when `lanes` is 16 and
/// [`Avx2`] otherwise, each compiled with its target features. With
/// `$kernel[E, …]` the kernel's further const arguments are fixed to E, ….
macro_rules! wide_and_narrow {
    ($name:ident => $kernel:ident ( $($arg:ident : $ty:ty),* )) => {
        wide_and_narrow!($name => $kernel[] ( $($arg : $ty),* ));
    };
    ($name:ident => $kernel:ident [$($extra:literal),*] ( $($arg:ident : $ty:ty),* )) => {
        #[allow(clippy::too_many_arguments)]
        #[inline]
        unsafe fn $name<const A: usize, const B: usize>(lanes: usize, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide<const A: usize, const B: usize>($($arg: $ty),*) {
                    unsafe { $kernel::<$crate::jit::simd::Avx512, A, B $(, $extra)*>($($arg),*) }
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn narrow<const A: usize, const B: usize>($($arg: $ty),*) {
                    unsafe { $kernel::<$crate::jit::simd::Avx2, A, B $(, $extra)*>($($arg),*) }
                }
                // SAFETY: `lanes` comes from `host_lanes`, so the host has
                // the features of the width chosen.
                unsafe {
                    if lanes == 16 {
                        wide::<A, B>($($arg),*)
                    } else {
                        narrow::<A, B>($($arg),*)
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (lanes, $($arg),*);
            }
        }
    };
}
pub(crate) use wide_and_narrow;
