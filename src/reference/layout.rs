//! Ops that move elements: reshape, pad, one-hot.

use ndarray::{ArrayD, Axis, IxDyn};

use super::{Real, f64_of};

pub fn reshape<T: Real>(x: &ArrayD<T>, shape: &[usize]) -> Result<ArrayD<T>, String> {
    let data: Vec<T> = x.iter().copied().collect();
    ArrayD::from_shape_vec(IxDyn(shape), data).map_err(|e| e.to_string())
}

pub fn pad<T: Real>(x: &ArrayD<T>, axis: usize, before: usize, shape: &[usize]) -> ArrayD<T> {
    let mut out = ArrayD::zeros(IxDyn(shape));
    let n = x.shape()[axis];
    out.slice_axis_mut(Axis(axis), ndarray::Slice::from(before..before + n))
        .assign(x);
    out
}

/// Class indices (stored as whole numbers) → one-hot vectors on a new last
/// axis; an index outside [0, classes) gives a row of zeros.
/// The class index a value stands for, if it is one of `0..n`.
fn class_index<T: Real>(c: T, n: usize) -> Option<usize> {
    let c = f64_of(c);
    (c >= 0.0 && c < n as f64 && c.fract() == 0.0).then_some(c as usize)
}

/// Row `idx` of `table` [V, D] for every index: `[*idx, D]`, zero rows for
/// indices outside 0..V (as `one_hot(idx) @ table`).
pub fn gather<T: Real>(table: &ArrayD<T>, idx: &ArrayD<T>) -> ArrayD<T> {
    let (v, d) = (table.shape()[0], table.shape()[1]);
    let mut shape = idx.shape().to_vec();
    shape.push(d);
    let mut out = ArrayD::zeros(IxDyn(&shape));
    for (mut row, &c) in out
        .lanes_mut(Axis(shape.len() - 1))
        .into_iter()
        .zip(idx.iter())
    {
        if let Some(c) = class_index(c, v) {
            row.assign(&table.index_axis(Axis(0), c));
        }
    }
    out
}

/// The rows of `dy` [*idx, D] summed into rows `idx` of a `[rows, D]` zero
/// table (the gradient of [`gather`]).
pub fn scatter_add<T: Real>(idx: &ArrayD<T>, dy: &ArrayD<T>, rows: usize) -> ArrayD<T> {
    let d = dy.shape()[dy.ndim() - 1];
    let mut out = ArrayD::zeros(IxDyn(&[rows, d]));
    for (row, &c) in dy.lanes(Axis(dy.ndim() - 1)).into_iter().zip(idx.iter()) {
        if let Some(c) = class_index(c, rows) {
            for (t, &v) in out.index_axis_mut(Axis(0), c).iter_mut().zip(row.iter()) {
                *t = *t + v;
            }
        }
    }
    out
}

pub fn one_hot<T: Real>(x: &ArrayD<T>, classes: usize) -> ArrayD<T> {
    let mut shape = x.shape().to_vec();
    shape.push(classes);
    let mut out = ArrayD::zeros(IxDyn(&shape));
    for (row, &c) in out
        .lanes_mut(Axis(shape.len() - 1))
        .into_iter()
        .zip(x.iter())
    {
        if let Some(c) = class_index(c, classes) {
            let mut row = row;
            row[c] = T::one();
        }
    }
    out
}
