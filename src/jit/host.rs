//! What the host CPU can run, for the hand-written kernels that pick a
//! vector width at run time (generated code is Cranelift's 128-bit SIMD).

/// AVX2 with FMA: the 256-bit kernels.
#[cfg(target_arch = "x86_64")]
pub fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx2() -> bool {
    false
}

/// AVX-512 F: the 512-bit kernels. Zen 4 splits them in two halves, Zen 5
/// and Intel's server cores run them whole.
#[cfg(target_arch = "x86_64")]
pub fn has_avx512() -> bool {
    has_avx2() && std::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
pub fn has_avx512() -> bool {
    false
}
