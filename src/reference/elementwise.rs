//! Elementwise ops with NumPy broadcasting, reductions and softmax.

use ndarray::{ArrayD, Axis, IxDyn, Zip};

use super::{Real, f64_of, real};
use crate::ir::ops::{Binary, ReduceKind};

pub fn binary<T: Real>(op: Binary, a: &ArrayD<T>, b: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    let mut out = ArrayD::zeros(IxDyn(shape));
    let (Some(a), Some(b)) = (a.broadcast(IxDyn(shape)), b.broadcast(IxDyn(shape))) else {
        return out.mapv(|_: T| T::nan());
    };
    Zip::from(&mut out)
        .and(&a)
        .and(&b)
        .for_each(|o, &x, &y| *o = real(op.eval(f64_of(x), f64_of(y))));
    out
}

pub fn select<T: Real>(c: &ArrayD<T>, a: &ArrayD<T>, b: &ArrayD<T>, shape: &[usize]) -> ArrayD<T> {
    let mut out = ArrayD::zeros(IxDyn(shape));
    let (Some(c), Some(a), Some(b)) = (
        c.broadcast(IxDyn(shape)),
        a.broadcast(IxDyn(shape)),
        b.broadcast(IxDyn(shape)),
    ) else {
        return out.mapv(|_: T| T::nan());
    };
    Zip::from(&mut out)
        .and(&c)
        .and(&a)
        .and(&b)
        .for_each(|o, &c, &x, &y| *o = if c != T::zero() { x } else { y });
    out
}

pub fn reduce<T: Real>(x: &ArrayD<T>, kind: ReduceKind, axes: &[usize], keep: bool) -> ArrayD<T> {
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let count: usize = sorted.iter().map(|&a| x.shape()[a]).product();
    let mut out = x.clone();
    for &a in sorted.iter().rev() {
        out = match kind {
            ReduceKind::Sum | ReduceKind::Mean => out.sum_axis(Axis(a)),
            ReduceKind::Max => out.fold_axis(Axis(a), T::neg_infinity(), |m, &v| {
                if v > *m || v.is_nan() { v } else { *m }
            }),
        };
    }
    if kind == ReduceKind::Mean {
        let n: T = real(count as f64);
        out.mapv_inplace(|v| v / n);
    }
    if keep {
        for &a in &sorted {
            out = out.insert_axis(Axis(a));
        }
    }
    out
}

/// Softmax (or log-softmax) along an axis, shifted by the maximum for stability.
pub fn softmax<T: Real>(x: &ArrayD<T>, axis: usize, log: bool) -> ArrayD<T> {
    let mut out = x.clone();
    for mut lane in out.lanes_mut(Axis(axis)) {
        let m = lane
            .iter()
            .fold(T::neg_infinity(), |m, &v| if v > m { v } else { m });
        let sum = lane.iter().fold(T::zero(), |s, &v| s + (v - m).exp());
        let ls = sum.ln();
        for v in lane.iter_mut() {
            *v = if log {
                *v - m - ls
            } else {
                (*v - m).exp() / sum
            };
        }
    }
    out
}
