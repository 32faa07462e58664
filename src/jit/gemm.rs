//! Matrix products for generated code: the `gemm` crate on one thread, or
//! split into one block of the output per thread.

use ::gemm::Parallelism;

use super::Ctx;
use super::helpers::Loc;

/// Products of at least this many multiply-adds are split across threads;
/// smaller ones run faster on one (measured on the benchmark models with the
/// team's spinning workers: the Elman RNN's 32×128×128 steps split at 2
/// threads take 1.53–1.56 ms a training step against 1.73 unsplit; the
/// digits MLP's 32×128×64 products lost when split, 0.047 → 0.060 ms).
const GEMM_SPLIT_WORK: usize = 1 << 19;

pub fn gemm_splits(work: usize) -> bool {
    work >= GEMM_SPLIT_WORK
}

/// c = a @ b (or c += a @ b) for `batch` items; strides in elements.
#[derive(Debug, Clone)]
pub struct GemmDesc {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: Loc,
    pub a_rs: isize,
    pub a_cs: isize,
    pub a_bs: isize,
    pub b: Loc,
    pub b_rs: isize,
    pub b_cs: isize,
    pub b_bs: isize,
    pub c: Loc,
    pub c_rs: isize,
    pub c_cs: isize,
    pub c_bs: isize,
    pub accumulate: bool,
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns.
pub unsafe extern "C" fn nnc_gemm(ctx: *const Ctx, d: *const GemmDesc) {
    unsafe {
        let d = &*d;
        let (a, b, c) = (d.a.ptr(ctx), d.b.ptr(ctx), d.c.ptr(ctx));
        let threads = if gemm_splits(d.m * d.n * d.k) {
            (*ctx).threads
        } else {
            1
        };
        for i in 0..d.batch as isize {
            gemm_on(
                d.m,
                d.n,
                d.k,
                c.offset(i * d.c_bs),
                d.c_rs,
                d.c_cs,
                a.offset(i * d.a_bs),
                d.a_rs,
                d.a_cs,
                b.offset(i * d.b_bs),
                d.b_rs,
                d.b_cs,
                d.accumulate,
                threads,
            );
        }
    }
}

/// Like [`gemm_raw`] on `threads` threads: the output is cut into one block
/// of rows or columns per thread (along the longer side, so each thread
/// reads all of the smaller operand), and each block is a one-thread product
/// (one block, on the caller, for one thread).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_on(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    c_rs: isize,
    c_cs: isize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    acc: bool,
    threads: usize,
) {
    let along_n = n >= m;
    let len = if along_n { n } else { m };
    if len == 0 {
        return;
    }
    let chunk = len.div_ceil(threads.max(1)).next_multiple_of(16);
    let (c, a, b) = (c as usize, a as usize, b as usize);
    let blocks = len.div_ceil(chunk);
    super::team::parallel_for(threads, blocks, |i| {
        let start = i * chunk;
        let size = chunk.min(len - start);
        unsafe {
            let (c, a, b) = (c as *mut f32, a as *const f32, b as *const f32);
            let st = start as isize;
            // This block: columns start.. (of C and B) or rows start.. (of C and A).
            let (bm, bn, c, a, b) = if along_n {
                (m, size, c.offset(st * c_cs), a, b.offset(st * b_cs))
            } else {
                (size, n, c.offset(st * c_rs), a.offset(st * a_rs), b)
            };
            gemm_raw(
                bm,
                bn,
                k,
                c,
                c_rs,
                c_cs,
                a,
                a_rs,
                a_cs,
                b,
                b_rs,
                b_cs,
                acc,
                Parallelism::None,
            );
        }
    });
}

/// c = a·b (+ c when `acc`), strides in elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    c: *mut f32,
    c_rs: isize,
    c_cs: isize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    acc: bool,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        if k == 0 {
            if !acc {
                for i in 0..m as isize {
                    for j in 0..n as isize {
                        *c.offset(i * c_rs + j * c_cs) = 0.0;
                    }
                }
            }
            return;
        }
        // gemm: dst := alpha·dst + beta·lhs·rhs.
        gemm::gemm(
            m, n, k, c, c_cs, c_rs, acc, a, a_cs, a_rs, b, b_cs, b_rs, 1.0f32, 1.0f32, false,
            false, false, par,
        );
    }
}
