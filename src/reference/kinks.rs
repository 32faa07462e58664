//! Freezing the decisions of piecewise ops: which side of a relu, abs, max
//! or min each element took, what each comparison gave, and where each
//! max-pooling window's and max-reduction's maximum was.
//!
//! Recorded on one run and replayed on the next, they make the loss the
//! smooth piece that contains the recorded point — the function autodiff
//! differentiates. Finite differences of it check every gradient rule even
//! where a switch point lies closer to the point than any usable step (a
//! large ReLU network has millions of them; see `crate::gradcheck`).

use std::cell::{Cell, RefCell};

use ndarray::ArrayD;

use super::elementwise::{binary as eval_binary, reduce, select};
use super::{Real, conv, real};
use crate::ir::ops::{Binary, ReduceKind, Unary, Window};

#[derive(Debug)]
enum Decision<T> {
    /// 1 where the first branch was taken (or a comparison's result).
    Mask(ArrayD<T>),
    /// Flat indices of the chosen elements.
    Index(Vec<usize>),
}

/// The decisions of one run, in the order the ops ran.
#[derive(Debug)]
pub struct Kinks<T> {
    replaying: Cell<bool>,
    tape: RefCell<Vec<Decision<T>>>,
    cursor: Cell<usize>,
}

impl<T: Real> Default for Kinks<T> {
    fn default() -> Self {
        Kinks {
            replaying: Cell::new(false),
            tape: RefCell::new(Vec::new()),
            cursor: Cell::new(0),
        }
    }
}

/// A replay that does not follow the recorded run (another graph or shape).
#[derive(Debug)]
pub struct Mismatch;

impl<T: Real> Kinks<T> {
    /// An empty tape: the next run records.
    pub fn new() -> Kinks<T> {
        Kinks::default()
    }

    /// Every later run replays the recorded decisions from the start.
    pub fn replay(&self) {
        self.replaying.set(true);
        self.cursor.set(0);
    }

    fn next(&self) -> Result<std::cell::Ref<'_, Decision<T>>, Mismatch> {
        let i = self.cursor.get();
        self.cursor.set(i + 1);
        let tape = self.tape.borrow();
        if i < tape.len() {
            Ok(std::cell::Ref::map(tape, |t| &t[i]))
        } else {
            Err(Mismatch)
        }
    }

    /// A fresh decision when recording, the next recorded one when replaying.
    fn decide<V: Clone>(
        &self,
        fresh: impl FnOnce() -> V,
        wrap: fn(V) -> Decision<T>,
        unwrap: fn(&Decision<T>) -> Option<&V>,
    ) -> Result<V, Mismatch> {
        if !self.replaying.get() {
            let v = fresh();
            self.tape.borrow_mut().push(wrap(v.clone()));
            return Ok(v);
        }
        unwrap(&*self.next()?).cloned().ok_or(Mismatch)
    }

    fn mask(&self, fresh: impl FnOnce() -> ArrayD<T>) -> Result<ArrayD<T>, Mismatch> {
        self.decide(fresh, Decision::Mask, |d| match d {
            Decision::Mask(m) => Some(m),
            Decision::Index(_) => None,
        })
    }

    fn index(&self, fresh: impl FnOnce() -> Vec<usize>) -> Result<Vec<usize>, Mismatch> {
        self.decide(fresh, Decision::Index, |d| match d {
            Decision::Index(m) => Some(m),
            Decision::Mask(_) => None,
        })
    }
}

/// Whether an op is piecewise and handled here.
pub fn unary_kinks(u: Unary) -> bool {
    matches!(u, Unary::Relu | Unary::Abs)
}

pub fn binary_kinks(b: Binary) -> bool {
    !matches!(b, Binary::Add | Binary::Sub | Binary::Mul | Binary::Div)
}

pub fn unary<T: Real>(k: &Kinks<T>, u: Unary, x: &ArrayD<T>) -> Result<ArrayD<T>, Mismatch> {
    let shape = x.shape().to_vec();
    let zero = ArrayD::from_elem(ndarray::IxDyn(&[]), T::zero());
    match u {
        Unary::Relu => {
            let m = k.mask(|| x.mapv(|v| flag(v > T::zero())))?;
            check(&m, &shape)?;
            Ok(select(&m, x, &zero, &shape))
        }
        Unary::Abs => {
            // x · sign(x), sign(0) = 0: autodiff's slope at 0.
            let m = k.mask(|| x.mapv(|v| flag::<T>(v > T::zero()) - flag::<T>(v < T::zero())))?;
            check(&m, &shape)?;
            Ok(eval_binary(Binary::Mul, x, &m, &shape))
        }
        _ => Ok(x.mapv(|v| real(u.eval(super::f64_of(v))))),
    }
}

pub fn binary<T: Real>(
    k: &Kinks<T>,
    b: Binary,
    x: &ArrayD<T>,
    y: &ArrayD<T>,
    shape: &[usize],
) -> Result<ArrayD<T>, Mismatch> {
    let out = match b {
        Binary::Max | Binary::Min => {
            // Weight 1 on the winner, ½ on each side of a tie (autodiff
            // splits a tie's gradient in half, as PyTorch does).
            let wins = if b == Binary::Max {
                Binary::Gt
            } else {
                Binary::Lt
            };
            let w = k.mask(|| {
                let win = eval_binary(wins, x, y, shape);
                let tie = eval_binary(Binary::Eq, x, y, shape).mapv(|v| v * real(0.5));
                eval_binary(Binary::Add, &win, &tie, shape)
            })?;
            check(&w, shape)?;
            let from_x = eval_binary(Binary::Mul, x, &w, shape);
            let rest = w.mapv(|v| T::one() - v);
            let from_y = eval_binary(Binary::Mul, y, &rest, shape);
            eval_binary(Binary::Add, &from_x, &from_y, shape)
        }
        Binary::Add | Binary::Sub | Binary::Mul | Binary::Div => eval_binary(b, x, y, shape),
        // A comparison is its own decision.
        _ => k.mask(|| eval_binary(b, x, y, shape))?,
    };
    check(&out, shape)?;
    Ok(out)
}

pub fn max_pool<T: Real>(
    k: &Kinks<T>,
    x: &ArrayD<T>,
    window: &Window,
    shape: &[usize],
) -> Result<ArrayD<T>, Mismatch> {
    let at = k.index(|| conv::max_pool_argmax(x, window, shape))?;
    let n: usize = shape.iter().product();
    if at.len() != n {
        return Err(Mismatch);
    }
    let flat: Vec<T> = x.iter().copied().collect();
    let v = at
        .iter()
        .map(|&i| flat.get(i).copied().unwrap_or_else(T::neg_infinity))
        .collect();
    ArrayD::from_shape_vec(ndarray::IxDyn(shape), v).map_err(|_| Mismatch)
}

/// A max-reduction as the weighted sum it is at the recorded point: weight
/// 1/k on each of the k maxima of a lane (autodiff shares ties equally).
pub fn reduce_max<T: Real>(
    k: &Kinks<T>,
    x: &ArrayD<T>,
    axes: &[usize],
    keep: bool,
) -> Result<ArrayD<T>, Mismatch> {
    let shape = x.shape().to_vec();
    let w = k.mask(|| {
        let m = reduce(x, ReduceKind::Max, axes, true);
        let at = eval_binary(Binary::Eq, x, &m, &shape);
        let count = reduce(&at, ReduceKind::Sum, axes, true);
        eval_binary(Binary::Div, &at, &count, &shape)
    })?;
    check(&w, &shape)?;
    let picked = eval_binary(Binary::Mul, x, &w, &shape);
    Ok(reduce(&picked, ReduceKind::Sum, axes, keep))
}

fn flag<T: Real>(c: bool) -> T {
    if c { T::one() } else { T::zero() }
}

fn check<T>(a: &ArrayD<T>, shape: &[usize]) -> Result<(), Mismatch> {
    if a.shape() == shape {
        Ok(())
    } else {
        Err(Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn arr(v: &[f64]) -> ArrayD<f64> {
        ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.to_vec()).unwrap_or_default()
    }

    #[test]
    fn replayed_decisions_keep_the_recorded_piece() {
        let k = Kinks::new();
        let at = arr(&[1e-9, -1e-9, 2.0]);
        let r = unary(&k, Unary::Relu, &at).unwrap_or_default();
        assert_eq!(r, arr(&[1e-9, 0.0, 2.0]));
        let m = binary(&k, Binary::Max, &at, &arr(&[0.0, 0.0, 3.0]), &[3]).unwrap_or_default();
        assert_eq!(m, arr(&[1e-9, 0.0, 3.0]));
        k.replay();
        // Across both bends: the relu stays linear where it was on, zero
        // where it was off; the max keeps its side.
        let moved = arr(&[-1.0, 1.0, 5.0]);
        let r = unary(&k, Unary::Relu, &moved).unwrap_or_default();
        assert_eq!(r, arr(&[-1.0, 0.0, 5.0]));
        let m = binary(&k, Binary::Max, &moved, &arr(&[0.0, 0.0, 3.0]), &[3]).unwrap_or_default();
        assert_eq!(m, arr(&[-1.0, 0.0, 3.0]));
        // A max-reduction keeps the element it took.
        let k = Kinks::new();
        let _ = reduce_max(&k, &arr(&[1.0, 2.0, 2.0 - 1e-12]), &[0], false);
        k.replay();
        let r = reduce_max(&k, &arr(&[1.0, 0.0, 5.0]), &[0], false).unwrap_or_default();
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), vec![0.0]);
        // Max pooling keeps the element each window took.
        let k = Kinks::new();
        let w = Window {
            kernel: vec![2, 2],
            stride: vec![2, 2],
            pad: vec![0, 0],
            dilation: vec![1, 1],
            ceil: false,
        };
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![1.0, 2.0, 3.0, 4.0])
            .unwrap_or_default();
        let _ = max_pool(&k, &x, &w, &[1, 1, 1, 1]);
        k.replay();
        let moved = ArrayD::from_shape_vec(IxDyn(&[1, 1, 2, 2]), vec![9.0, 0.0, 0.0, -1.0])
            .unwrap_or_default();
        let y = max_pool(&k, &moved, &w, &[1, 1, 1, 1]).unwrap_or_default();
        assert_eq!(y.iter().copied().collect::<Vec<_>>(), vec![-1.0]);
        // A run that does not follow the recording is refused.
        assert!(unary(&k, Unary::Relu, &moved).is_err());
    }
}
