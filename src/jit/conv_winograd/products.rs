//! The products of Winograd's algorithm with AVX-512, straight from the
//! transformed layout: 16 tiles to a vector, no packing.
//!
//! They are small (a block's 256 tiles by 16 to 64 channels on each side)
//! and many (16 or 36 a block): through the `gemm` crate, whose packing and
//! dispatch are made for large products, they ran well below the machine's
//! peak.
//!
//! - forward: M[o][t] = Σ_c V[c][t] · U[c][o], a block of 3 vectors of
//!   tiles by 8 output channels in 24 registers;
//! - weight gradient: dU[c][o] += Σ_t V[c][t] · dM[o][t], 4 × 4 sums of
//!   16 lanes each, added across lanes at the end.

use std::arch::x86_64::*;

/// Tiles per vector.
const L: usize = 16;

/// The first `n` lanes (all for n ≥ 16).
fn first(n: usize) -> __mmask16 {
    if n >= L {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// M[o·ts + t] = Σ_c V[c·ts + t] · U[c·co + o] for t < tn and o < co.
///
/// # Safety
/// `v` holds ci rows of ts floats, `m` co rows, `u` ci·co floats, tn ≤ ts;
/// the host has AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn forward(
    tn: usize,
    ci: usize,
    co: usize,
    v: *const f32,
    ts: usize,
    u: *const f32,
    m: *mut f32,
) {
    let mut t = 0;
    while t < tn {
        let vectors = (tn - t).div_ceil(L).min(3);
        let mask = first(tn - t - (vectors - 1) * L);
        let mut o = 0;
        while o < co {
            let ob = (co - o).min(8);
            // SAFETY: as the caller's, for tiles t.. and outputs o..o + ob.
            unsafe {
                let (v, u, m) = (v.add(t), u.add(o), m.add(o * ts + t));
                match vectors {
                    1 => forward_ob::<1>(ob, ci, co, v, ts, u, m, mask),
                    2 => forward_ob::<2>(ob, ci, co, v, ts, u, m, mask),
                    _ => forward_ob::<3>(ob, ci, co, v, ts, u, m, mask),
                }
            }
            o += ob;
        }
        t += vectors * L;
    }
}

/// [`forward_block`] with NV vectors of tiles and a runtime count of
/// outputs (1 to 8).
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_ob<const NV: usize>(
    ob: usize,
    ci: usize,
    co: usize,
    v: *const f32,
    ts: usize,
    u: *const f32,
    m: *mut f32,
    mask: __mmask16,
) {
    unsafe {
        match ob {
            1 => forward_block::<NV, 1>(ci, co, v, ts, u, m, mask),
            2 => forward_block::<NV, 2>(ci, co, v, ts, u, m, mask),
            3 => forward_block::<NV, 3>(ci, co, v, ts, u, m, mask),
            4 => forward_block::<NV, 4>(ci, co, v, ts, u, m, mask),
            5 => forward_block::<NV, 5>(ci, co, v, ts, u, m, mask),
            6 => forward_block::<NV, 6>(ci, co, v, ts, u, m, mask),
            7 => forward_block::<NV, 7>(ci, co, v, ts, u, m, mask),
            _ => forward_block::<NV, 8>(ci, co, v, ts, u, m, mask),
        }
    }
}

/// NV vectors of tiles by OB outputs; the last vector's lanes past `mask`
/// are neither read nor written.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn forward_block<const NV: usize, const OB: usize>(
    ci: usize,
    co: usize,
    v: *const f32,
    ts: usize,
    u: *const f32,
    m: *mut f32,
    mask: __mmask16,
) {
    let masks: [__mmask16; NV] = std::array::from_fn(|k| if k + 1 == NV { mask } else { 0xffff });
    let mut acc = [[_mm512_setzero_ps(); NV]; OB];
    for c in 0..ci {
        // SAFETY: row c of v holds the block's tiles; u row c its outputs.
        unsafe {
            let row = v.add(c * ts);
            let x: [__m512; NV] =
                std::array::from_fn(|k| _mm512_maskz_loadu_ps(masks[k], row.add(k * L)));
            for (j, a) in acc.iter_mut().enumerate() {
                let w = _mm512_set1_ps(*u.add(c * co + j));
                for k in 0..NV {
                    a[k] = _mm512_fmadd_ps(x[k], w, a[k]);
                }
            }
        }
    }
    for (j, a) in acc.iter().enumerate() {
        for k in 0..NV {
            // SAFETY: output row j holds the block's tiles.
            unsafe { _mm512_mask_storeu_ps(m.add(j * ts + k * L), masks[k], a[k]) };
        }
    }
}

/// dU[c·co + o] += Σ_{t < tn} V[c·ts + t] · dM[o·ts + t] for c < ci, o < co.
///
/// # Safety
/// `v` holds ci rows of ts floats, `dm` co rows, `du` ci·co floats,
/// tn ≤ ts; the host has AVX-512 F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn weight_grad(
    tn: usize,
    ci: usize,
    co: usize,
    v: *const f32,
    ts: usize,
    dm: *const f32,
    du: *mut f32,
) {
    let mut c = 0;
    while c < ci {
        let cb = (ci - c).min(4);
        let mut o = 0;
        while o < co {
            let ob = (co - o).min(4);
            // SAFETY: as the caller's, for rows c..c + cb and o..o + ob.
            unsafe {
                let (v, dm, du) = (v.add(c * ts), dm.add(o * ts), du.add(c * co + o));
                match cb {
                    1 => grad_ob::<1>(ob, tn, co, v, ts, dm, du),
                    2 => grad_ob::<2>(ob, tn, co, v, ts, dm, du),
                    3 => grad_ob::<3>(ob, tn, co, v, ts, dm, du),
                    _ => grad_ob::<4>(ob, tn, co, v, ts, dm, du),
                }
            }
            o += ob;
        }
        c += cb;
    }
}

/// [`grad_block`] with CB rows of V and a runtime count (1 to 4) of dM's.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn grad_ob<const CB: usize>(
    ob: usize,
    tn: usize,
    co: usize,
    v: *const f32,
    ts: usize,
    dm: *const f32,
    du: *mut f32,
) {
    unsafe {
        match ob {
            1 => grad_block::<CB, 1>(tn, co, v, ts, dm, du),
            2 => grad_block::<CB, 2>(tn, co, v, ts, dm, du),
            3 => grad_block::<CB, 3>(tn, co, v, ts, dm, du),
            _ => grad_block::<CB, 4>(tn, co, v, ts, dm, du),
        }
    }
}

/// CB rows of V by OB rows of dM.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn grad_block<const CB: usize, const OB: usize>(
    tn: usize,
    co: usize,
    v: *const f32,
    ts: usize,
    dm: *const f32,
    du: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); OB]; CB];
    let mut t = 0;
    while t < tn {
        let mask = first(tn - t);
        // SAFETY: lanes t.. below tn of each row.
        unsafe {
            let x: [__m512; CB] =
                std::array::from_fn(|i| _mm512_maskz_loadu_ps(mask, v.add(i * ts + t)));
            let d: [__m512; OB] =
                std::array::from_fn(|j| _mm512_maskz_loadu_ps(mask, dm.add(j * ts + t)));
            for i in 0..CB {
                for j in 0..OB {
                    acc[i][j] = _mm512_fmadd_ps(x[i], d[j], acc[i][j]);
                }
            }
        }
        t += L;
    }
    for i in 0..CB {
        for j in 0..OB {
            // SAFETY: du holds row i's outputs j.
            unsafe { *du.add(i * co + j) += _mm512_reduce_add_ps(acc[i][j]) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both products against plain loops, for tile counts that leave
    /// partial vectors and blocks and channel counts that leave partial
    /// blocks.
    /// Tolerances are about twice the largest errors seen: 1.1e-6 for the
    /// forward sums of up to 64 terms, under 3e-6 for the sums over up to
    /// 256 tiles (all terms below 1 in magnitude).
    #[test]
    fn products_match_plain_loops() {
        if !crate::jit::host::has_avx512() {
            return;
        }
        for (tn, ci, co) in [
            (256, 16, 16),
            (37, 5, 13),
            (1, 3, 9),
            (100, 64, 7),
            (48, 9, 17),
        ] {
            let ts = tn + 9;
            let v: Vec<f32> = (0..ci * ts).map(|i| (i as f32 * 0.13).sin()).collect();
            let u: Vec<f32> = (0..ci * co).map(|i| (i as f32 * 0.29).cos()).collect();
            let mut m = vec![f32::NAN; co * ts];
            unsafe { forward(tn, ci, co, v.as_ptr(), ts, u.as_ptr(), m.as_mut_ptr()) };
            for o in 0..co {
                for t in 0..ts {
                    let got = m[o * ts + t];
                    if t >= tn {
                        assert!(got.is_nan(), "forward wrote past tile {tn}: ({o}, {t})");
                        continue;
                    }
                    let want: f64 = (0..ci)
                        .map(|c| v[c * ts + t] as f64 * u[c * co + o] as f64)
                        .sum();
                    assert!(
                        (got as f64 - want).abs() < 2e-6,
                        "forward {tn} {ci} {co} ({o}, {t}): {got} vs {want}"
                    );
                }
            }
            let dm: Vec<f32> = (0..co * ts).map(|i| (i as f32 * 0.07).cos()).collect();
            let mut du = vec![0.5f32; ci * co];
            unsafe { weight_grad(tn, ci, co, v.as_ptr(), ts, dm.as_ptr(), du.as_mut_ptr()) };
            for c in 0..ci {
                for o in 0..co {
                    let want: f64 = 0.5
                        + (0..tn)
                            .map(|t| v[c * ts + t] as f64 * dm[o * ts + t] as f64)
                            .sum::<f64>();
                    let got = du[c * co + o] as f64;
                    assert!(
                        (got - want).abs() < 5e-6,
                        "grad {tn} {ci} {co} ({c}, {o}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
