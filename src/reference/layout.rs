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
pub fn one_hot<T: Real>(x: &ArrayD<T>, classes: usize) -> ArrayD<T> {
    let mut shape = x.shape().to_vec();
    shape.push(classes);
    let mut out = ArrayD::zeros(IxDyn(&shape));
    for (row, &c) in out
        .lanes_mut(Axis(shape.len() - 1))
        .into_iter()
        .zip(x.iter())
    {
        let c = f64_of(c);
        if c >= 0.0 && c < classes as f64 && c.fract() == 0.0 {
            let mut row = row;
            row[c as usize] = T::one();
        }
    }
    out
}
