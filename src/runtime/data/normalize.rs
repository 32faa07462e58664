//! Normalisation of `f32` inputs: scaling, and standardisation with
//! statistics computed on the training part only.

use ndarray::{ArrayD, Axis, IxDyn};

use super::error::DataError;

/// Multiplies every value by `factor` (e.g. `1.0 / 255.0` for raw pixels).
pub fn scale(x: &mut ArrayD<f32>, factor: f32) {
    x.mapv_inplace(|v| v * factor);
}

/// Over which values a mean and standard deviation are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One mean and one deviation for all values.
    Global,
    /// One per feature: per position of a sample (over the sample axis).
    PerFeature,
    /// One per channel: axis 1 of `[N, C, ...]` images.
    PerChannel,
}

/// A fitted standardisation `(x - mean) / std`.
///
/// `mean` and `std` have the shape of one sample for
/// [`Mode::PerFeature`], `[C, 1, …]` for [`Mode::PerChannel`] and `[]` for
/// [`Mode::Global`], so that they broadcast against a batch without its
/// sample axis. Deviations below `1e-6` (constant features such as blank
/// image corners) are replaced by 1, so no value is divided by zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardize {
    /// The means.
    pub mean: ArrayD<f32>,
    /// The standard deviations (population, never below `1e-6`).
    pub std: ArrayD<f32>,
}

impl Standardize {
    /// Computes statistics on `x` (`[N, ...]`, typically the training part).
    pub fn fit(x: &ArrayD<f32>, mode: Mode) -> Result<Standardize, DataError> {
        if x.ndim() == 0 || x.shape()[0] == 0 {
            return Err(DataError::InvalidArgument(
                "cannot compute statistics of an empty array".into(),
            ));
        }
        let x64 = x.mapv(f64::from);
        let (mean, var) = match mode {
            Mode::Global => {
                let n = x64.len() as f64;
                let m = x64.sum() / n;
                let v = x64.mapv(|a| (a - m) * (a - m)).sum() / n;
                (
                    ArrayD::from_elem(IxDyn(&[]), m),
                    ArrayD::from_elem(IxDyn(&[]), v),
                )
            }
            Mode::PerFeature => {
                let m = x64.mean_axis(Axis(0)).ok_or_else(empty)?;
                let v = (&x64 - &m)
                    .mapv(|a| a * a)
                    .mean_axis(Axis(0))
                    .ok_or_else(empty)?;
                (m, v)
            }
            Mode::PerChannel => {
                if x.ndim() < 2 {
                    return Err(DataError::InvalidArgument(format!(
                        "per-channel statistics need [N, C, ...] data, not {} dimensions",
                        x.ndim()
                    )));
                }
                // Move channels first, flatten everything else.
                let c = x.shape()[1];
                let mut ch = x64.view();
                ch.swap_axes(0, 1);
                let flat = ch
                    .as_standard_layout()
                    .into_owned()
                    .into_shape_with_order((c, x64.len() / c))
                    .map_err(|e| DataError::InvalidArgument(e.to_string()))?;
                let m = flat.mean_axis(Axis(1)).ok_or_else(empty)?;
                let v = (&flat - &m.view().insert_axis(Axis(1)))
                    .mapv(|a| a * a)
                    .mean_axis(Axis(1))
                    .ok_or_else(empty)?;
                let mut shape = vec![c];
                shape.extend(std::iter::repeat_n(1, x.ndim() - 2));
                let reshape = |a: ndarray::Array1<f64>| {
                    a.into_shape_with_order(IxDyn(&shape))
                        .map_err(|e| DataError::InvalidArgument(e.to_string()))
                };
                (reshape(m)?, reshape(v)?)
            }
        };
        Ok(Standardize {
            mean: mean.mapv(|v| v as f32),
            std: var.mapv(|v| {
                let s = v.sqrt() as f32;
                if s < 1e-6 { 1.0 } else { s }
            }),
        })
    }

    /// Applies `(x - mean) / std` to every sample of `x` (`[N, ...]`).
    ///
    /// Returns [`DataError::InvalidArgument`] if a sample's shape does not
    /// match the one the statistics were fitted on.
    pub fn apply(&self, x: &mut ArrayD<f32>) -> Result<(), DataError> {
        let n_stat = self.mean.ndim();
        let fits = x.ndim() >= 1
            && (n_stat == 0 || x.ndim() - 1 == n_stat)
            && x.shape()[1..1 + n_stat]
                .iter()
                .zip(self.mean.shape())
                .all(|(&a, &b)| a == b || b == 1);
        if !fits {
            return Err(DataError::InvalidArgument(format!(
                "normalisation statistics of shape {:?} do not fit data of shape {:?}",
                self.mean.shape(),
                x.shape()
            )));
        }
        for mut sample in x.axis_iter_mut(Axis(0)) {
            let mut target = sample.view_mut();
            let (mean, std) = (&self.mean, &self.std);
            ndarray::Zip::from(&mut target)
                .and_broadcast(mean)
                .and_broadcast(std)
                .for_each(|v, &m, &s| *v = (*v - m) / s);
        }
        Ok(())
    }
}

fn empty() -> DataError {
    DataError::InvalidArgument("cannot compute statistics of an empty array".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array4, arr2};

    #[test]
    fn per_feature_and_global() {
        let x = arr2(&[[1.0f32, 5.0], [3.0, 5.0]]).into_dyn();
        let s = Standardize::fit(&x, Mode::PerFeature).unwrap();
        assert_eq!(s.mean.as_slice().unwrap(), &[2.0, 5.0]);
        assert_eq!(s.std.as_slice().unwrap(), &[1.0, 1.0]); // constant feature → 1
        let mut y = x.clone();
        s.apply(&mut y).unwrap();
        assert_eq!(y, arr2(&[[-1.0f32, 0.0], [1.0, 0.0]]).into_dyn());

        let g = Standardize::fit(&x, Mode::Global).unwrap();
        assert_eq!(g.mean[[]], 3.5);
        let mut y = x.clone();
        g.apply(&mut y).unwrap();
        assert!((y.mean().unwrap()).abs() < 1e-6);
        assert!(((y.mapv(|v| v * v).mean().unwrap()) - 1.0).abs() < 1e-5);

        let mut wrong = arr2(&[[1.0f32, 2.0, 3.0]]).into_dyn();
        assert!(s.apply(&mut wrong).is_err());
        let mut s2 = x.clone();
        scale(&mut s2, 0.5);
        assert_eq!(s2[[1, 0]], 1.5);
    }

    #[test]
    fn per_channel() {
        let x =
            Array4::from_shape_fn((4, 2, 3, 3), |(n, c, h, _)| (c * 10 + n + h) as f32).into_dyn();
        let s = Standardize::fit(&x, Mode::PerChannel).unwrap();
        assert_eq!(s.mean.shape(), &[2, 1, 1]);
        assert!((s.mean[[1, 0, 0]] - 12.5).abs() < 1e-5);
        let mut y = x.clone();
        s.apply(&mut y).unwrap();
        for c in 0..2 {
            let ch = y.index_axis(Axis(1), c);
            assert!(ch.mean().unwrap().abs() < 1e-5);
        }
    }
}
