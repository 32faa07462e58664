//! Runtime routines the generated code calls: matrix products (the `gemm`
//! crate), convolution by im2col, pooling, softmax, fills and the parallel
//! loop driver. Each takes the step context and a descriptor built at compile
//! time; shapes were checked before any call, so no bounds are re-checked here.

use super::Ctx;
use crate::ir::ops::Window;

/// A location: a region of the context and a byte offset.
#[derive(Debug, Clone, Copy)]
pub struct Loc {
    pub region: u32,
    pub offset: i64,
}

impl Loc {
    /// # Safety
    /// `ctx` must be a live context whose region table has this region.
    pub unsafe fn ptr(self, ctx: *const Ctx) -> *mut f32 {
        unsafe {
            let table = (*ctx).regions;
            let base = *table.add(self.region as usize);
            base.offset(self.offset as isize) as *mut f32
        }
    }
}

/// A buffer's pointer shared by the threads of one kernel, each of which
/// writes its own disjoint part (images, planes, partial sums) or only reads.
#[derive(Clone, Copy)]
pub(super) struct Shared(pub(super) *mut f32);
// SAFETY: the kernels that share one hand each thread a disjoint part.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the `Send` wrapper, not the field).
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs `part(t, buf)` for t in 0..parts (on the team of `threads`), each
/// part into its own zeroed `len`-float buffer, and returns their sum, added
/// in the order t = 0, 1, … so the result does not depend on timing (the
/// weight gradients of the convolutions, summed over images).
pub(super) fn sum_of_parts(
    threads: usize,
    parts: usize,
    len: usize,
    part: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut all = vec![0.0f32; parts.max(1) * len];
    let base = Shared(all.as_mut_ptr());
    super::team::parallel_for(threads, parts, |t| {
        // SAFETY: part t alone uses floats t·len .. (t + 1)·len of `all`.
        let mine = unsafe { std::slice::from_raw_parts_mut(base.get().add(t * len), len) };
        part(t, mine);
    });
    let (sum, rest) = all.split_at_mut(len);
    for p in rest.chunks_exact(len) {
        for (s, a) in sum.iter_mut().zip(p) {
            *s += *a;
        }
    }
    all.truncate(len);
    all
}

/// Loops of at least this many element-operations are split.
const LOOP_SPLIT_WORK: i64 = 1 << 18;

pub fn loop_splits(work: i64, outer: i64) -> bool {
    work >= LOOP_SPLIT_WORK && outer >= 2
}

/// A convolution's geometry on [N, C, H, W] (1-D as H = 1).
#[derive(Debug, Clone)]
pub struct ConvDesc {
    pub kind: u8, // 0 forward, 1 grad input, 2 grad weight
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub groups: usize,
    pub x: Loc,
    pub wt: Loc,
    pub y: Loc,
    pub scratch: Loc,
}

impl ConvDesc {
    pub fn from_window(
        window: &Window,
        x: &[usize],
        w: &[usize],
        y: &[usize],
        groups: usize,
    ) -> ConvDesc {
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
        let [n, c, h, wd] = four(x);
        let [o, _, _, _] = four(w);
        let [_, _, oh, ow] = four(y);
        let (kh, kw) = two(&window.kernel, 1);
        let (sh, sw) = two(&window.stride, 1);
        let (ph, pw) = two(&window.pad, 0);
        let (dh, dw) = two(&window.dilation, 1);
        let here = Loc {
            region: 0,
            offset: 0,
        };
        ConvDesc {
            kind: 0,
            n,
            c,
            h,
            w: wd,
            o,
            oh,
            ow,
            kh,
            kw,
            sh,
            sw,
            ph,
            pw,
            dh,
            dw,
            groups,
            x: here,
            wt: here,
            y: here,
            scratch: here,
        }
    }
}

/// Softmax over lanes: `dims` are the row dims then the lane; strides in elements.
#[derive(Debug, Clone)]
pub struct SoftmaxDesc {
    pub log: bool,
    pub dims: Vec<usize>,
    pub x: Loc,
    pub x_strides: Vec<isize>,
    pub y: Loc,
    pub y_strides: Vec<isize>,
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns.
pub unsafe extern "C" fn nnc_softmax(ctx: *const Ctx, d: *const SoftmaxDesc) {
    unsafe {
        let d = &*d;
        let (x, y) = (d.x.ptr(ctx), d.y.ptr(ctx));
        let r = d.dims.len();
        let len = d.dims[r - 1];
        let (xs, ys) = (d.x_strides[r - 1], d.y_strides[r - 1]);
        let rows: usize = d.dims[..r - 1].iter().product();
        let mut idx = vec![0usize; r - 1];
        for _ in 0..rows {
            let mut xo = 0isize;
            let mut yo = 0isize;
            for (k, &i) in idx.iter().enumerate() {
                xo += i as isize * d.x_strides[k];
                yo += i as isize * d.y_strides[k];
            }
            let xr = x.offset(xo);
            let yr = y.offset(yo);
            let mut m = f32::NEG_INFINITY;
            for i in 0..len as isize {
                let v = *xr.offset(i * xs);
                if v > m {
                    m = v;
                }
            }
            let mut sum = 0.0f32;
            for i in 0..len as isize {
                sum += (*xr.offset(i * xs) - m).exp();
            }
            let ls = sum.ln();
            for i in 0..len as isize {
                let v = *xr.offset(i * xs) - m;
                *yr.offset(i * ys) = if d.log { v - ls } else { v.exp() / sum };
            }
            // Next row index.
            for k in (0..r - 1).rev() {
                idx[k] += 1;
                if idx[k] < d.dims[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
    }
}

/// Fill `len` floats at `at` with `value` (reduction outputs before they accumulate).
#[derive(Debug, Clone)]
pub struct FillDesc {
    pub at: Loc,
    pub len: usize,
    pub value: f32,
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns.
pub unsafe extern "C" fn nnc_fill(ctx: *const Ctx, d: *const FillDesc) {
    unsafe {
        let d = &*d;
        let p = d.at.ptr(ctx);
        std::slice::from_raw_parts_mut(p, d.len).fill(d.value);
    }
}

/// The signature of a loop kernel.
pub type LoopFn = unsafe extern "C" fn(*const Ctx, i64, i64);

/// Runs a loop kernel over `n` outer iterations, split across the team's
/// threads when the work is large enough to pay for it.
///
/// # Safety
/// Called by generated code with a live context and one of its kernels.
pub unsafe extern "C" fn nnc_parallel(ctx: *const Ctx, f: LoopFn, n: i64, work: i64) {
    unsafe {
        let threads = (*ctx).threads;
        if threads <= 1 || !loop_splits(work, n) {
            f(ctx, 0, n);
            return;
        }
        let parts = (threads as i64).min(n);
        let ctx_addr = ctx as usize;
        super::team::parallel_for(threads, parts as usize, |p| {
            let p = p as i64;
            let (lo, hi) = (n * p / parts, n * (p + 1) / parts);
            f(ctx_addr as *const Ctx, lo, hi)
        });
    }
}
