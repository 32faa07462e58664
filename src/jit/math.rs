//! Elementary functions in CLIF, for f32 scalars and f32x4 vectors alike:
//! Cranelift has no exp, log or tanh, so they are polynomials (the Cephes
//! single-precision approximations), with range reduction by bit
//! manipulation. `tests/jit_math.rs` measures their error in ulps against the
//! standard library.

// Coefficients are written as published (Cephes, Eigen), with more digits
// than an f32 holds.
#![allow(clippy::excessive_precision)]

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

/// The integer type with the lanes of a float type.
fn int_of(ty: Type) -> Type {
    if ty.is_vector() {
        types::I32X4
    } else {
        types::I32
    }
}

/// Same-size reinterpretation (vectors need an explicit byte order).
fn bits(b: &mut FunctionBuilder<'_>, to: Type, v: Value) -> Value {
    let flags = if to.is_vector() {
        MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
    } else {
        MemFlagsData::new()
    };
    b.ins().bitcast(to, flags, v)
}

/// |mag| with the sign of `sign`, by bits (fcopysign has no vector lowering).
fn copysign(b: &mut FunctionBuilder<'_>, ty: Type, mag: Value, sign: Value) -> Value {
    let it = int_of(ty);
    let m = bits(b, it, mag);
    let s = bits(b, it, sign);
    let abs_mask = iconst(b, ty, 0x7fff_ffff);
    let sign_mask = iconst(b, ty, 0x8000_0000u32 as i32 as i64);
    let m = b.ins().band(m, abs_mask);
    let s = b.ins().band(s, sign_mask);
    let r = b.ins().bor(m, s);
    bits(b, ty, r)
}

/// A float constant of type `ty` (splat for vectors).
pub fn fconst(b: &mut FunctionBuilder<'_>, ty: Type, v: f32) -> Value {
    let s = b.ins().f32const(v);
    if ty.is_vector() {
        b.ins().splat(ty, s)
    } else {
        s
    }
}

fn iconst(b: &mut FunctionBuilder<'_>, ty: Type, v: i64) -> Value {
    let it = int_of(ty);
    if it.is_vector() {
        let s = b.ins().iconst(types::I32, v);
        b.ins().splat(it, s)
    } else {
        b.ins().iconst(types::I32, v)
    }
}

/// Horner evaluation of c[0]·x^n + ... + c[n].
fn horner(b: &mut FunctionBuilder<'_>, ty: Type, x: Value, c: &[f32]) -> Value {
    let mut acc = fconst(b, ty, c[0]);
    for &k in &c[1..] {
        let kk = fconst(b, ty, k);
        acc = b.ins().fma(acc, x, kk);
    }
    acc
}

/// `cond ? a : b` for a float comparison mask.
pub fn select(b: &mut FunctionBuilder<'_>, ty: Type, cond: Value, a: Value, c: Value) -> Value {
    if ty.is_vector() {
        let m = bits(b, ty, cond);
        b.ins().bitselect(m, a, c)
    } else {
        b.ins().select(cond, a, c)
    }
}

/// e^x: x = n·ln2 + r, e^r by a degree-6 polynomial, 2^n built in the
/// exponent bits. Below −87.3 gives 0, above 88.7 gives infinity.
pub fn exp(b: &mut FunctionBuilder<'_>, ty: Type, x: Value) -> Value {
    let hi = fconst(b, ty, 88.722_83);
    let lo = fconst(b, ty, -87.336_54);
    let over = b.ins().fcmp(FloatCC::GreaterThan, x, hi);
    let under = b.ins().fcmp(FloatCC::LessThan, x, lo);
    let xc = select(b, ty, over, hi, x);
    let xc = select(b, ty, under, lo, xc);
    let log2e = fconst(b, ty, std::f32::consts::LOG2_E);
    let t = b.ins().fmul(xc, log2e);
    let n = b.ins().nearest(t);
    // r = x − n·ln2 in two parts (Cody–Waite) for accuracy.
    let c1 = fconst(b, ty, -0.693_359_4);
    let c2 = fconst(b, ty, 2.121_944_4e-4);
    let r = b.ins().fma(n, c1, xc);
    let r = b.ins().fma(n, c2, r);
    let p = horner(
        b,
        ty,
        r,
        &[
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            5.000_000_1e-1,
        ],
    );
    let r2 = b.ins().fmul(r, r);
    let one = fconst(b, ty, 1.0);
    let pr = b.ins().fma(p, r2, r);
    let y = b.ins().fadd(pr, one);
    // 2^n: (n + 127) << 23 as float bits.
    let ni = b.ins().fcvt_to_sint_sat(int_of(ty), n);
    let bias = iconst(b, ty, 127);
    let e = b.ins().iadd(ni, bias);
    let e = b.ins().ishl_imm_u(e, 23);
    let scale = bits(b, ty, e);
    let y = b.ins().fmul(y, scale);
    let inf = fconst(b, ty, f32::INFINITY);
    let zero = fconst(b, ty, 0.0);
    let y = select(b, ty, over, inf, y);
    select(b, ty, under, zero, y)
}

/// ln x: x = m·2^e with m in [√½, √2), ln m by a degree-8 polynomial.
/// ln 0 = −inf, ln of a negative number or NaN is NaN, ln inf = inf.
pub fn log(b: &mut FunctionBuilder<'_>, ty: Type, x: Value) -> Value {
    let it = int_of(ty);
    let min_norm = fconst(b, ty, f32::MIN_POSITIVE);
    let small = b.ins().fcmp(FloatCC::LessThan, x, min_norm);
    let xs = select(b, ty, small, min_norm, x);
    let xi = bits(b, it, xs);
    let e = b.ins().ushr_imm_u(xi, 23);
    let c127 = iconst(b, ty, 127);
    let e = b.ins().isub(e, c127);
    let mant_mask = iconst(b, ty, 0x007f_ffff);
    let half_bits = iconst(b, ty, 0x3f00_0000);
    let m = b.ins().band(xi, mant_mask);
    let m = b.ins().bor(m, half_bits);
    let m = bits(b, ty, m); // in [0.5, 1)
    let ef = b.ins().fcvt_from_sint(ty, e);
    let one = fconst(b, ty, 1.0);
    let ef = b.ins().fadd(ef, one); // m is x/2^(e+1)
    let sqrthf = fconst(b, ty, std::f32::consts::FRAC_1_SQRT_2);
    let below = b.ins().fcmp(FloatCC::LessThan, m, sqrthf);
    // m < √½: e −= 1, m = 2m − 1; else m = m − 1.
    let m2 = b.ins().fadd(m, m);
    let ma = b.ins().fsub(m2, one);
    let mb = b.ins().fsub(m, one);
    let m = select(b, ty, below, ma, mb);
    let ef1 = b.ins().fsub(ef, one);
    let ef = select(b, ty, below, ef1, ef);
    let z = b.ins().fmul(m, m);
    let p = horner(
        b,
        ty,
        m,
        &[
            7.037_683_6e-2,
            -1.151_461e-1,
            1.167_699_9e-1,
            -1.242_014_1e-1,
            1.424_932_3e-1,
            -1.666_805_8e-1,
            2.000_071_5e-1,
            -2.499_999_4e-1,
            3.333_333_1e-1,
        ],
    );
    let mz = b.ins().fmul(m, z);
    let y = b.ins().fmul(p, mz);
    let c1 = fconst(b, ty, -2.121_944_4e-4);
    let y = b.ins().fma(ef, c1, y);
    let mhalf = fconst(b, ty, -0.5);
    let y = b.ins().fma(z, mhalf, y);
    let r = b.ins().fadd(m, y);
    let c2 = fconst(b, ty, 0.693_359_4);
    let r = b.ins().fma(ef, c2, r);
    // Special values.
    let zero = fconst(b, ty, 0.0);
    let neg_inf = fconst(b, ty, f32::NEG_INFINITY);
    let nan = fconst(b, ty, f32::NAN);
    let inf = fconst(b, ty, f32::INFINITY);
    let is_zero = b.ins().fcmp(FloatCC::Equal, x, zero);
    let is_neg = b.ins().fcmp(FloatCC::UnorderedOrLessThan, x, zero);
    let is_inf = b.ins().fcmp(FloatCC::Equal, x, inf);
    let r = select(b, ty, is_inf, inf, r);
    let r = select(b, ty, is_neg, nan, r);
    select(b, ty, is_zero, neg_inf, r)
}

/// tanh x: an odd rational function of degree 13/6 on |x| ≤ 7.9 (beyond,
/// tanh is ±1 in f32), the approximation Eigen and XLA use: eleven
/// multiply-adds and a division, no exp.
pub fn tanh(b: &mut FunctionBuilder<'_>, ty: Type, x: Value) -> Value {
    let lim = fconst(b, ty, 7.905_311);
    let nlim = fconst(b, ty, -7.905_311);
    let hi = b.ins().fcmp(FloatCC::GreaterThan, x, lim);
    let lo = b.ins().fcmp(FloatCC::LessThan, x, nlim);
    let xc = select(b, ty, hi, lim, x);
    let xc = select(b, ty, lo, nlim, xc);
    let x2 = b.ins().fmul(xc, xc);
    let p = horner(
        b,
        ty,
        x2,
        &[
            -2.760_768_5e-16,
            2.000_187_9e-13,
            -8.604_671_5e-11,
            5.122_297e-8,
            1.485_722_4e-5,
            6.372_619_3e-4,
            4.893_524_6e-3,
        ],
    );
    let p = b.ins().fmul(p, xc);
    let q = horner(
        b,
        ty,
        x2,
        &[1.198_258_4e-6, 1.185_347_1e-4, 2.268_434_6e-3, 4.893_525e-3],
    );
    let r = b.ins().fdiv(p, q);
    // Tiny arguments: tanh x = x to the last bit (and keeps −0); from 9 on,
    // tanh x rounds to ±1.
    let ax = b.ins().fabs(x);
    let tiny = fconst(b, ty, 4e-4);
    let is_tiny = b.ins().fcmp(FloatCC::LessThan, ax, tiny);
    let r = select(b, ty, is_tiny, x, r);
    let nine = fconst(b, ty, 9.0);
    let big = b.ins().fcmp(FloatCC::GreaterThanOrEqual, ax, nine);
    let one = fconst(b, ty, 1.0);
    let unit = copysign(b, ty, one, x);
    select(b, ty, big, unit, r)
}

/// 1/(1 + e^{−x}), computed from e^{−|x|} so both tails keep their
/// relative accuracy.
pub fn sigmoid(b: &mut FunctionBuilder<'_>, ty: Type, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    let n = b.ins().fneg(ax);
    let e = exp(b, ty, n);
    let one = fconst(b, ty, 1.0);
    let d = b.ins().fadd(e, one);
    let s = b.ins().fdiv(one, d);
    let es = b.ins().fmul(e, s);
    let zero = fconst(b, ty, 0.0);
    let neg = b.ins().fcmp(FloatCC::LessThan, x, zero);
    select(b, ty, neg, es, s)
}

/// erf x: the Maclaurin series below |x| = 1, else 1 − erfc with the
/// Chebyshev fit of Numerical Recipes (fractional error below 1.2e-7).
pub fn erf(b: &mut FunctionBuilder<'_>, ty: Type, x: Value) -> Value {
    let ax = b.ins().fabs(x);
    // Series: 2/√π · Σ (−1)ⁿ x^{2n+1} / (n! (2n+1)), ten terms.
    let z = b.ins().fmul(x, x);
    let mut coef = Vec::new();
    let mut fact = 1.0f64;
    for n in 0..10 {
        if n > 0 {
            fact *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        coef.push((sign * std::f64::consts::FRAC_2_SQRT_PI / (fact * (2 * n + 1) as f64)) as f32);
    }
    coef.reverse();
    let p = horner(b, ty, z, &coef);
    let series = b.ins().fmul(p, x);
    // Tail: erfc(|x|) = t·exp(−x² + P(t)), t = 1/(1 + |x|/2).
    let one = fconst(b, ty, 1.0);
    let half = fconst(b, ty, 0.5);
    let d = b.ins().fma(ax, half, one);
    let t = b.ins().fdiv(one, d);
    let q = horner(
        b,
        ty,
        t,
        &[
            0.170_872_77,
            -0.822_152_23,
            1.488_515_9,
            -1.135_204,
            0.278_868_07,
            -0.186_288_06,
            0.096_784_18,
            0.374_091_96,
            1.000_023_7,
            -1.265_512_2,
        ],
    );
    let nz = b.ins().fneg(z);
    let arg = b.ins().fadd(nz, q);
    let e = exp(b, ty, arg);
    let erfc = b.ins().fmul(t, e);
    let tail = b.ins().fsub(one, erfc);
    let tail = copysign(b, ty, tail, x);
    let is_small = b.ins().fcmp(FloatCC::LessThan, ax, one);
    select(b, ty, is_small, series, tail)
}
