//! The counter-based random numbers of dropout masks.
//!
//! A mask element is a pure function of (step seed, mask stream, time step,
//! element index), so the backward pass — and the backward re-run of a
//! recurrence step — sees exactly the mask the forward pass used, without
//! storing it, and generated code can compute it in parallel, four lanes at a
//! time, with 32-bit integer multiplies.

/// Chris Wellons' `lowbias32` integer hash: a bijection with good avalanche.
#[inline]
pub fn hash32(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The key of one mask: mixes the step seed, the stream and the time step.
pub fn mask_key(seed: u64, stream: u32, t: u32) -> u32 {
    let mut k = hash32(t ^ 0x9e37_79b9);
    k = hash32(k ^ stream);
    k = hash32(k ^ (seed as u32));
    hash32(k ^ ((seed >> 32) as u32))
}

/// Uniform in [0, 1) with 24 bits, for element `index` of the mask `key`.
#[inline]
pub fn uniform(key: u32, index: u32) -> f32 {
    (hash32(key ^ hash32(index)) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// A dropout mask value: 0 with probability p, else 1/(1-p).
#[inline]
pub fn keep_scale(key: u32, index: u32, p: f64) -> f64 {
    if (uniform(key, index) as f64) < p {
        0.0
    } else {
        1.0 / (1.0 - p)
    }
}

/// The seed of training step `step` of a run seeded with `seed`.
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let lo = hash32((step as u32) ^ hash32(seed as u32));
    let hi = hash32(((step >> 32) as u32) ^ hash32((seed >> 32) as u32 ^ 0x85eb_ca6b));
    ((hi as u64) << 32) | lo as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_about_one_minus_p() {
        let key = mask_key(42, 3, 0);
        let n = 100_000;
        let kept = (0..n).filter(|&i| keep_scale(key, i, 0.3) > 0.0).count();
        let frac = kept as f64 / n as f64;
        // Binomial standard deviation at n = 1e5 is 0.0014; 5 sigma.
        assert!((frac - 0.7).abs() < 0.0075, "kept fraction {frac}");
    }

    #[test]
    fn keys_differ_by_stream_step_and_seed() {
        let a = mask_key(1, 0, 0);
        assert_ne!(a, mask_key(1, 1, 0));
        assert_ne!(a, mask_key(1, 0, 1));
        assert_ne!(a, mask_key(2, 0, 0));
        assert_ne!(step_seed(7, 0), step_seed(7, 1));
    }
}
