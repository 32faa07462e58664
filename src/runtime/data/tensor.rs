//! [`Tensor`], an array of either element type nnc trains on, and
//! [`Dataset`], inputs paired with targets.

use std::path::Path;

use ndarray::{ArrayD, Axis, IxDyn};

use super::error::{DataError, Shape};

/// An n-dimensional array of `f32` (inputs, float targets) or `i32` (class
/// or token indices). The first axis, if any, indexes samples.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// Floating-point values.
    F32(ArrayD<f32>),
    /// Integer values: class labels or token indices.
    I32(ArrayD<i32>),
}

impl Tensor {
    /// The full shape, including the sample axis.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32(a) => a.shape(),
            Tensor::I32(a) => a.shape(),
        }
    }

    /// The number of samples: the length of the first axis (1 for a scalar).
    pub fn len(&self) -> usize {
        self.shape().first().copied().unwrap_or(1)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape of one sample: the shape without its first axis.
    pub fn sample_shape(&self) -> &[usize] {
        self.shape().get(1..).unwrap_or(&[])
    }

    /// `"f32"` or `"i32"`.
    pub fn dtype(&self) -> &'static str {
        match self {
            Tensor::F32(_) => "f32",
            Tensor::I32(_) => "i32",
        }
    }

    /// The `f32` array, if this is one.
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            Tensor::I32(_) => None,
        }
    }

    /// The `f32` array, mutably, if this is one.
    pub fn as_f32_mut(&mut self) -> Option<&mut ArrayD<f32>> {
        match self {
            Tensor::F32(a) => Some(a),
            Tensor::I32(_) => None,
        }
    }

    /// The `i32` array, if this is one.
    pub fn as_i32(&self) -> Option<&ArrayD<i32>> {
        match self {
            Tensor::I32(a) => Some(a),
            Tensor::F32(_) => None,
        }
    }

    /// The values as `f32` (integers converted), always a new array.
    pub fn to_f32(&self) -> ArrayD<f32> {
        match self {
            Tensor::F32(a) => a.clone(),
            Tensor::I32(a) => a.mapv(|v| v as f32),
        }
    }

    /// The samples at `rows`, in that order (rows may repeat).
    ///
    /// Returns [`DataError::InvalidArgument`] if an index is not below
    /// [`len`](Self::len) or the tensor is a scalar.
    pub fn select(&self, rows: &[usize]) -> Result<Tensor, DataError> {
        let n = self.len();
        if self.shape().is_empty() {
            return Err(DataError::InvalidArgument(
                "cannot select rows of a scalar".into(),
            ));
        }
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(DataError::InvalidArgument(format!(
                "row {bad} selected from a tensor of {n} rows"
            )));
        }
        Ok(match self {
            Tensor::F32(a) => Tensor::F32(a.select(Axis(0), rows)),
            Tensor::I32(a) => Tensor::I32(a.select(Axis(0), rows)),
        })
    }

    /// The same values with each sample reshaped to `sample` (row-major),
    /// e.g. `[N, 1, 8, 8]` to `[N, 64]`. Returns `None` if a sample does not
    /// have exactly that many elements.
    pub fn reshape_samples(&self, sample: &[usize]) -> Option<Tensor> {
        let have: usize = self.sample_shape().iter().product();
        let want = sample.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if self.shape().is_empty() || have != want {
            return None;
        }
        let mut shape = vec![self.len()];
        shape.extend_from_slice(sample);
        Some(match self {
            Tensor::F32(a) => Tensor::F32(
                a.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&shape))
                    .ok()?,
            ),
            Tensor::I32(a) => Tensor::I32(
                a.as_standard_layout()
                    .into_owned()
                    .into_shape_with_order(IxDyn(&shape))
                    .ok()?,
            ),
        })
    }

    /// The samples `start..end` (clamped to the length), as a new tensor.
    pub fn rows(&self, start: usize, end: usize) -> Tensor {
        let n = self.len();
        let end = end.min(n);
        let start = start.min(end);
        if self.shape().is_empty() {
            return self.clone();
        }
        let range = ndarray::Slice::from(start..end);
        match self {
            Tensor::F32(a) => Tensor::F32(a.slice_axis(Axis(0), range).to_owned()),
            Tensor::I32(a) => Tensor::I32(a.slice_axis(Axis(0), range).to_owned()),
        }
    }
}

/// One-hot encodes integer indices: shape `[..]` becomes `[.., classes]`.
///
/// Returns [`DataError::InvalidArgument`] if an index is negative or not
/// below `classes`.
pub fn one_hot(indices: &ArrayD<i32>, classes: usize) -> Result<ArrayD<f32>, DataError> {
    let mut shape = indices.shape().to_vec();
    shape.push(classes);
    let total = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::InvalidArgument("one-hot array too large".into()))?;
    let mut out = vec![0.0f32; total];
    for (i, &v) in indices.iter().enumerate() {
        let c = usize::try_from(v)
            .ok()
            .filter(|&c| c < classes)
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "index {v} is out of range for one-hot with {classes} classes"
                ))
            })?;
        out[i * classes + c] = 1.0;
    }
    ArrayD::from_shape_vec(IxDyn(&shape), out)
        .map_err(|e| DataError::InvalidArgument(format!("one-hot: {e}")))
}

/// A data set: inputs `x` and targets `y`, with the same number of samples.
///
/// - `x` is `[N, ...]`, usually `f32` (`i32` for token indices).
/// - `y` is `[N]` class indices (`i32`), `[N, ...]` float targets (`f32`),
///   or `[N, T]` next-token indices (`i32`).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Inputs, `[N, ...]`.
    pub x: Tensor,
    /// Targets, `[N, ...]`.
    pub y: Tensor,
    /// Number of classes when `y` holds class (or token) indices.
    pub classes: Option<usize>,
    /// The characters behind token indices, for text data.
    pub vocab: Option<Vec<char>>,
}

impl Dataset {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.x.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples at `rows`, in that order.
    ///
    /// Returns [`DataError::InvalidArgument`] if an index is out of range.
    pub fn select(&self, rows: &[usize]) -> Result<Dataset, DataError> {
        Ok(Dataset {
            x: self.x.select(rows)?,
            y: self.y.select(rows)?,
            classes: self.classes,
            vocab: self.vocab.clone(),
        })
    }

    /// How many samples each class has, if `y` holds `[N]` class labels.
    /// Labels out of range are not counted.
    pub fn class_counts(&self) -> Option<Vec<usize>> {
        let classes = self.classes?;
        let y = self.y.as_i32()?;
        if y.ndim() != 1 {
            return None;
        }
        let mut counts = vec![0usize; classes];
        for &v in y {
            if let Some(c) = usize::try_from(v).ok().and_then(|c| counts.get_mut(c)) {
                *c += 1;
            }
        }
        Some(counts)
    }

    /// Checks that `x` and `y` have the same number of samples and that
    /// integer targets lie in `0..classes`. `source` names where the data
    /// came from, for the error message.
    pub fn validate(&self, source: &Path) -> Result<(), DataError> {
        if self.x.len() != self.y.len() {
            return Err(DataError::CountMismatch {
                inputs_file: source.to_path_buf(),
                inputs: self.x.len(),
                labels_file: source.to_path_buf(),
                labels: self.y.len(),
            });
        }
        if let (Some(classes), Tensor::I32(y)) = (self.classes, &self.y) {
            let per_sample = y.len() / self.y.len().max(1);
            for (i, &v) in y.iter().enumerate() {
                if v < 0 || v as usize >= classes {
                    return Err(DataError::LabelOutOfRange {
                        file: source.to_path_buf(),
                        sample: i / per_sample.max(1),
                        label: i64::from(v),
                        classes,
                    });
                }
            }
        }
        Ok(())
    }

    /// Fits the data to a model: reshapes inputs and targets whose samples
    /// have the right number of elements but another shape (such as
    /// `[1, 8, 8]` images for a `[64]` input), then checks everything with
    /// [`check_model`](Self::check_model).
    pub fn conform(
        mut self,
        source: &Path,
        x_sample: &[usize],
        y_sample: &[usize],
        classes: Option<usize>,
    ) -> Result<Dataset, DataError> {
        if self.x.sample_shape() != x_sample
            && let Some(x) = self.x.reshape_samples(x_sample)
        {
            self.x = x;
        }
        if self.y.sample_shape() != y_sample
            && let Some(y) = self.y.reshape_samples(y_sample)
        {
            self.y = y;
        }
        self.check_model(source, x_sample, y_sample, classes)?;
        Ok(self)
    }

    /// Checks the data against what a model declares: the per-sample shapes
    /// of its input and its labels (without the batch axis), and, for class
    /// labels, its number of classes. `source` names the data for the error
    /// message.
    pub fn check_model(
        &self,
        source: &Path,
        x_sample: &[usize],
        y_sample: &[usize],
        classes: Option<usize>,
    ) -> Result<(), DataError> {
        if self.x.sample_shape() != x_sample {
            return Err(DataError::Shape {
                file: source.to_path_buf(),
                what: "the inputs have per-sample shape".into(),
                found: self.x.sample_shape().to_vec(),
                expected: format!("the model's input expects {}", Shape(x_sample)),
            });
        }
        if self.y.sample_shape() != y_sample {
            return Err(DataError::Shape {
                file: source.to_path_buf(),
                what: "the labels have per-sample shape".into(),
                found: self.y.sample_shape().to_vec(),
                expected: format!("the model's labels expect {}", Shape(y_sample)),
            });
        }
        if let Some(model_classes) = classes {
            let Tensor::I32(y) = &self.y else {
                return Err(DataError::malformed(
                    source,
                    format!(
                        "the labels are real numbers, but the model expects class indices 0..{model_classes}"
                    ),
                ));
            };
            if let Some((i, &v)) = y
                .iter()
                .enumerate()
                .find(|&(_, &v)| v < 0 || v as usize >= model_classes)
            {
                let per_sample = y.len() / self.y.len().max(1);
                return Err(DataError::LabelOutOfRange {
                    file: source.to_path_buf(),
                    sample: i / per_sample.max(1),
                    label: i64::from(v),
                    classes: model_classes,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, arr2};

    fn small() -> Dataset {
        Dataset {
            x: Tensor::F32(arr2(&[[0.0f32, 1.0], [2.0, 3.0], [4.0, 5.0]]).into_dyn()),
            y: Tensor::I32(arr1(&[0, 1, 1]).into_dyn()),
            classes: Some(2),
            vocab: None,
        }
    }

    #[test]
    fn shape_len_and_select() {
        let d = small();
        assert_eq!(d.x.shape(), &[3, 2]);
        assert_eq!(d.x.sample_shape(), &[2]);
        assert_eq!(d.len(), 3);
        let s = d.select(&[2, 0]).unwrap();
        assert_eq!(
            s.x,
            Tensor::F32(arr2(&[[4.0f32, 5.0], [0.0, 1.0]]).into_dyn())
        );
        assert_eq!(s.y, Tensor::I32(arr1(&[1, 0]).into_dyn()));
        assert!(d.select(&[3]).is_err());
        assert_eq!(d.x.rows(1, 10).len(), 2);
        assert_eq!(d.class_counts(), Some(vec![1, 2]));
    }

    #[test]
    fn validate_and_check_model() {
        let d = small();
        let p = Path::new("mem");
        d.validate(p).unwrap();
        d.check_model(p, &[2], &[], Some(2)).unwrap();
        let e = d.check_model(p, &[3], &[], Some(2)).unwrap_err();
        assert!(matches!(e, DataError::Shape { .. }), "{e}");
        let e = d.check_model(p, &[2], &[], Some(1)).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    sample: 1,
                    label: 1,
                    classes: 1,
                    ..
                }
            ),
            "{e}"
        );
        let mut bad = small();
        bad.y = Tensor::I32(arr1(&[0, 5, 1]).into_dyn());
        assert!(matches!(
            bad.validate(p),
            Err(DataError::LabelOutOfRange { sample: 1, .. })
        ));
        bad.y = Tensor::I32(arr1(&[0, 1]).into_dyn());
        assert!(matches!(
            bad.validate(p),
            Err(DataError::CountMismatch { .. })
        ));
    }

    #[test]
    fn conform_reshapes_when_sizes_match() {
        let d = Dataset {
            x: Tensor::F32(ndarray::Array4::<f32>::zeros((3, 1, 2, 2)).into_dyn()),
            y: Tensor::I32(arr1(&[0, 1, 1]).into_dyn()),
            classes: Some(2),
            vocab: None,
        };
        let p = Path::new("mem");
        let c = d.clone().conform(p, &[4], &[], Some(2)).unwrap();
        assert_eq!(c.x.shape(), &[3, 4]);
        let e = d.conform(p, &[5], &[], Some(2)).unwrap_err();
        assert!(e.to_string().contains("[1, 2, 2]"), "{e}");
    }

    #[test]
    fn one_hot_encodes() {
        let i = arr2(&[[0, 2], [1, 1]]).into_dyn();
        let o = one_hot(&i, 3).unwrap();
        assert_eq!(o.shape(), &[2, 2, 3]);
        assert_eq!(o[[0, 1, 2]], 1.0);
        assert_eq!(o.sum(), 4.0);
        assert!(one_hot(&i, 2).is_err());
    }
}
