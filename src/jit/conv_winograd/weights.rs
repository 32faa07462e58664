//! The weights' side of Winograd's algorithm: U = G g Gᵀ before a forward
//! or input-gradient pass, dW = Gᵀ dU G after a weight gradient.
//!
//! Both run over the output channels of the convolution computed, which
//! are contiguous in U and dU, so that the loops vectorise (16 lanes where
//! the host has AVX-512). Done one kernel at a time in scalars, they took
//! 4 % of ResNet-mini's step.

use std::cell::RefCell;

use super::g_of;
use crate::jit::conv::with_scratch as scratch;

thread_local! {
    /// The kernels rearranged [i][tap][o] (transform) or Gᵀ dU [3][α][o]
    /// (untransform).
    static K: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// U[ξ][i][o] = G g Gᵀ for every kernel g from input channel i to output
/// channel o of the convolution computed, with tiles of m×m outputs. The
/// weights are [O][C][3][3]; for the input gradient (`flip`) the convolution
/// runs from the O channels to the C channels with each kernel rotated by
/// 180°.
pub(super) fn weight_transform(w: &[f32], o: usize, c: usize, flip: bool, m: usize, u: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::jit::host::has_avx512() {
        // SAFETY: the host has AVX-512.
        return unsafe { transform_wide(w, o, c, flip, m, u) };
    }
    transform(w, o, c, flip, m, u)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_wide(w: &[f32], o: usize, c: usize, flip: bool, m: usize, u: &mut [f32]) {
    transform(w, o, c, flip, m, u)
}

#[inline(always)]
fn transform(w: &[f32], o: usize, c: usize, flip: bool, m: usize, u: &mut [f32]) {
    let gm = g_of(m);
    let al = gm.len();
    let (ci, co) = if flip { (o, c) } else { (c, o) };
    let u = &mut u[..al * al * ci * co];
    scratch(&K, ci * 9 * co + al * 3 * co, |buf| {
        let (kt, gg) = buf.split_at_mut(ci * 9 * co);
        // kt[i][t][o]: tap t of the kernel from i to o.
        for oo in 0..o {
            for cc in 0..c {
                for t in 0..9 {
                    let v = w[(oo * c + cc) * 9 + t];
                    if flip {
                        kt[(oo * 9 + 8 - t) * c + cc] = v;
                    } else {
                        kt[(cc * 9 + t) * o + oo] = v;
                    }
                }
            }
        }
        for i in 0..ci {
            let k = &kt[i * 9 * co..(i + 1) * 9 * co];
            let tap = |r: usize, j: usize| &k[(r * 3 + j) * co..(r * 3 + j + 1) * co];
            // G g (α×3).
            for a in 0..al {
                for j in 0..3 {
                    let [g0, g1, g2] = [gm[a][0], gm[a][1], gm[a][2]];
                    let (k0, k1, k2) = (tap(0, j), tap(1, j), tap(2, j));
                    let out = &mut gg[(a * 3 + j) * co..(a * 3 + j + 1) * co];
                    for x in 0..co {
                        out[x] = g0 * k0[x] + g1 * k1[x] + g2 * k2[x];
                    }
                }
            }
            // (G g) Gᵀ (α×α).
            for a in 0..al {
                let row = |j: usize| &gg[(a * 3 + j) * co..(a * 3 + j + 1) * co];
                let (r0, r1, r2) = (row(0), row(1), row(2));
                for b in 0..al {
                    let [g0, g1, g2] = [gm[b][0], gm[b][1], gm[b][2]];
                    let out = &mut u[((a * al + b) * ci + i) * co..][..co];
                    for x in 0..co {
                        out[x] = r0[x] * g0 + r1[x] * g1 + r2[x] * g2;
                    }
                }
            }
        }
    })
}

/// dW[o][c] = Gᵀ dU[·][c][o] G for every pair, from dU [ξ][C][O].
pub(super) fn weight_untransform(du: &[f32], o: usize, c: usize, m: usize, dw: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::jit::host::has_avx512() {
        // SAFETY: the host has AVX-512.
        return unsafe { untransform_wide(du, o, c, m, dw) };
    }
    untransform(du, o, c, m, dw)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn untransform_wide(du: &[f32], o: usize, c: usize, m: usize, dw: &mut [f32]) {
    untransform(du, o, c, m, dw)
}

#[inline(always)]
fn untransform(du: &[f32], o: usize, c: usize, m: usize, dw: &mut [f32]) {
    let gm = g_of(m);
    let al = gm.len();
    scratch(&K, 3 * al * o + 9 * o, |buf| {
        let (gx, k) = buf.split_at_mut(3 * al * o);
        for cc in 0..c {
            let x = |a: usize, b: usize| &du[((a * al + b) * c + cc) * o..][..o];
            // Gᵀ X (3×α): the sum over a in order.
            for i in 0..3 {
                for b in 0..al {
                    let out = &mut gx[(i * al + b) * o..(i * al + b + 1) * o];
                    out.fill(0.0);
                    for a in 0..al {
                        let (g, xa) = (gm[a][i], x(a, b));
                        for y in 0..o {
                            out[y] += g * xa[y];
                        }
                    }
                }
            }
            // (Gᵀ X) G (3×3).
            for i in 0..3 {
                for j in 0..3 {
                    let out = &mut k[(i * 3 + j) * o..(i * 3 + j + 1) * o];
                    out.fill(0.0);
                    for b in 0..al {
                        let (g, r) = (gm[b][j], &gx[(i * al + b) * o..(i * al + b + 1) * o]);
                        for y in 0..o {
                            out[y] += r[y] * g;
                        }
                    }
                }
            }
            for oo in 0..o {
                for t in 0..9 {
                    dw[(oo * c + cc) * 9 + t] = k[t * o + oo];
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The per-kernel scalar code these replaced: the oracle.
    /// U[ξ][i][o] = G g Gᵀ for every kernel g from input channel i to output
    /// channel o of the convolution computed, with tiles of m×m outputs. The
    /// weights are [O][C][3][3]; for the input gradient (`flip`) the convolution
    /// runs from the O channels to the C channels with each kernel rotated by
    /// 180°.
    fn plain_transform(w: &[f32], o: usize, c: usize, flip: bool, m: usize, u: &mut [f32]) {
        let gm = g_of(m);
        let al = gm.len();
        let (ci, co) = if flip { (o, c) } else { (c, o) };
        // Every element of u is written below.
        let u = &mut u[..al * al * ci * co];
        for oo in 0..o {
            for cc in 0..c {
                let k = &w[(oo * c + cc) * 9..][..9];
                let g = |i: usize, j: usize| {
                    if flip {
                        k[(2 - i) * 3 + (2 - j)]
                    } else {
                        k[i * 3 + j]
                    }
                };
                // G g (α×3), then (G g) Gᵀ (α×α).
                let mut gg = [[0.0f32; 3]; 6];
                for a in 0..al {
                    for j in 0..3 {
                        gg[a][j] = (0..3).map(|i| gm[a][i] * g(i, j)).sum();
                    }
                }
                let (i_ch, o_ch) = if flip { (oo, cc) } else { (cc, oo) };
                for a in 0..al {
                    for b in 0..al {
                        let v: f32 = (0..3).map(|j| gg[a][j] * gm[b][j]).sum();
                        u[((a * al + b) * ci + i_ch) * co + o_ch] = v;
                    }
                }
            }
        }
    }

    /// dW[o][c] = Gᵀ dU[·][c][o] G for every pair, from dU [ξ][C][O].
    fn plain_untransform(du: &[f32], o: usize, c: usize, m: usize, dw: &mut [f32]) {
        let gm = g_of(m);
        let al = gm.len();
        for oo in 0..o {
            for cc in 0..c {
                let x = |a: usize, b: usize| du[((a * al + b) * c + cc) * o + oo];
                // Gᵀ X (3×α), then (Gᵀ X) G (3×3).
                let mut gx = [[0.0f32; 6]; 3];
                for i in 0..3 {
                    for b in 0..al {
                        gx[i][b] = (0..al).map(|a| gm[a][i] * x(a, b)).sum();
                    }
                }
                let k = &mut dw[(oo * c + cc) * 9..][..9];
                for i in 0..3 {
                    for j in 0..3 {
                        k[i * 3 + j] = (0..al).map(|b| gx[i][b] * gm[b][j]).sum();
                    }
                }
            }
        }
    }

    /// Both transforms give the per-kernel scalar code's values exactly (the
    /// same products added in the same order) for both tile sizes, both
    /// orientations, and channel counts that fill no vector.
    #[test]
    fn transforms_match_the_per_kernel_code() {
        for (o, c) in [(16, 16), (5, 19), (33, 7)] {
            let w: Vec<f32> = (0..o * c * 9).map(|i| (i as f32 * 0.37).sin()).collect();
            for m in [2, 4] {
                let al = m + 2;
                for flip in [false, true] {
                    let mut want = vec![f32::NAN; al * al * o * c];
                    let mut got = vec![f32::NAN; al * al * o * c];
                    plain_transform(&w, o, c, flip, m, &mut want);
                    weight_transform(&w, o, c, flip, m, &mut got);
                    for (i, (g, x)) in got.iter().zip(&want).enumerate() {
                        assert!(g == x, "U {o} {c} F{m} flip {flip} [{i}]: {g} vs {x}");
                    }
                }
                let du: Vec<f32> = (0..al * al * o * c)
                    .map(|i| (i as f32 * 0.11).cos())
                    .collect();
                let mut want = vec![f32::NAN; o * c * 9];
                let mut got = vec![f32::NAN; o * c * 9];
                plain_untransform(&du, o, c, m, &mut want);
                weight_untransform(&du, o, c, m, &mut got);
                for (i, (g, x)) in got.iter().zip(&want).enumerate() {
                    assert!(g == x, "dW {o} {c} F{m} [{i}]: {g} vs {x}");
                }
            }
        }
    }
}
