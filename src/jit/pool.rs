//! Max and average pooling and their gradients over [N·C planes, H, W]
//! (1-D as H = 1), split across threads by planes. Window spans are
//! computed once at compile time.

use super::Ctx;
use super::helpers::Loc;
use crate::ir::ops::{PoolKind, Window};

/// Pooling geometry with the span of every output row and column.
#[derive(Debug, Clone)]
pub struct PoolDesc {
    pub max: bool,
    pub grad: bool,
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    /// Per output row/column: first and last+1 input index, and the window
    /// size as PyTorch counts it for averages (clipped to the padded input).
    rows: Vec<(usize, usize, usize)>,
    cols: Vec<(usize, usize, usize)>,
    pub x: Loc,
    pub y: Loc,
    pub dx: Loc,
}

/// Rows or columns a window covers, clipped, and the average's divisor.
fn span(o: usize, stride: usize, pad: usize, k: usize, n: usize) -> (usize, usize, usize) {
    let start = (o * stride) as isize - pad as isize;
    let end = (start + k as isize).min((n + pad) as isize);
    let size = (end - start).max(0) as usize;
    let lo = start.max(0) as usize;
    let hi = (end.max(0) as usize).min(n);
    (lo, hi.max(lo), size)
}

impl PoolDesc {
    pub fn new(kind: PoolKind, grad: bool, window: &Window, x: &[usize], y: &[usize]) -> PoolDesc {
        let four = |s: &[usize]| {
            if s.len() == 3 {
                [s[0], s[1], 1, s[2]]
            } else {
                [s[0], s[1], s[2], s[3]]
            }
        };
        let two = |v: &[usize], fill: usize| {
            if v.len() == 1 {
                (fill, v[0])
            } else {
                (v[0], v[1])
            }
        };
        let [n, c, h, w] = four(x);
        let [_, _, oh, ow] = four(y);
        let (kh, kw) = two(&window.kernel, 1);
        let (sh, sw) = two(&window.stride, 1);
        let (ph, pw) = two(&window.pad, 0);
        let here = Loc {
            region: 0,
            offset: 0,
        };
        PoolDesc {
            max: kind == PoolKind::Max,
            grad,
            planes: n * c,
            h,
            w,
            oh,
            ow,
            rows: (0..oh).map(|a| span(a, sh, ph, kh, h)).collect(),
            cols: (0..ow).map(|b| span(b, sw, pw, kw, w)).collect(),
            x: here,
            y: here,
            dx: here,
        }
    }

    /// One plane forward.
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        for (a, &(y0, y1, sy)) in self.rows.iter().enumerate() {
            let out = &mut y[a * self.ow..(a + 1) * self.ow];
            for (o, &(x0, x1, sx)) in out.iter_mut().zip(&self.cols) {
                if self.max {
                    let mut best = f32::NEG_INFINITY;
                    for r in y0..y1 {
                        for &v in &x[r * self.w + x0..r * self.w + x1] {
                            // NaN wins, as in the reference interpreter.
                            best = if v > best || v != v { v } else { best };
                        }
                    }
                    *o = best;
                } else {
                    let mut s = 0.0f32;
                    for r in y0..y1 {
                        for &v in &x[r * self.w + x0..r * self.w + x1] {
                            s += v;
                        }
                    }
                    *o = s / (sy * sx).max(1) as f32;
                }
            }
        }
    }

    /// One plane backward: `dx` (zeroed here) from the output gradient `dy`.
    fn backward(&self, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        dx.fill(0.0);
        for (a, &(y0, y1, sy)) in self.rows.iter().enumerate() {
            let g = &dy[a * self.ow..(a + 1) * self.ow];
            for (&gv, &(x0, x1, sx)) in g.iter().zip(&self.cols) {
                if self.max {
                    // The first maximum in scan order takes the gradient.
                    let mut best = f32::NEG_INFINITY;
                    let mut at = usize::MAX;
                    for r in y0..y1 {
                        for c in x0..x1 {
                            let v = x[r * self.w + c];
                            if v > best || (v != v && best == best) {
                                best = v;
                                at = r * self.w + c;
                            }
                        }
                    }
                    if let Some(t) = dx.get_mut(at) {
                        *t += gv;
                    }
                } else {
                    let share = gv / (sy * sx).max(1) as f32;
                    for r in y0..y1 {
                        for t in &mut dx[r * self.w + x0..r * self.w + x1] {
                            *t += share;
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: threads touch disjoint planes.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns.
pub unsafe extern "C" fn nnc_pool(ctx: *const Ctx, d: *const PoolDesc) {
    unsafe {
        let d = &*d;
        let threads = (*ctx).threads.max(1);
        let (x, y) = (Shared(d.x.ptr(ctx)), Shared(d.y.ptr(ctx)));
        let dx = Shared(if d.grad {
            d.dx.ptr(ctx)
        } else {
            std::ptr::null_mut()
        });
        let (xs, ys) = (d.h * d.w, d.oh * d.ow);
        let run = |lo: usize, hi: usize| {
            for pl in lo..hi {
                // SAFETY: plane pl of each tensor is inside its buffer.
                let xp = std::slice::from_raw_parts(x.get().add(pl * xs), xs);
                let yp = std::slice::from_raw_parts_mut(y.get().add(pl * ys), ys);
                if d.grad {
                    let dxp = std::slice::from_raw_parts_mut(dx.get().add(pl * xs), xs);
                    d.backward(xp, yp, dxp);
                } else {
                    d.forward(xp, yp);
                }
            }
        };
        let work = d.planes * xs;
        if threads == 1 || work < 1 << 15 {
            run(0, d.planes);
        } else {
            let parts = threads.min(d.planes);
            rayon::scope(|s| {
                for t in 0..parts {
                    let run = &run;
                    let (lo, hi) = (d.planes * t / parts, d.planes * (t + 1) / parts);
                    s.spawn(move |_| run(lo, hi));
                }
            });
        }
    }
}
