//! Mini-batches over a [`Dataset`].

use super::error::DataError;
use super::split::permutation;
use super::tensor::{Dataset, Tensor};

/// An iterator over mini-batches `(x, y)` of a data set, in order or in a
/// seeded random order. Every batch has `batch` samples except possibly the
/// last, which holds the remainder (unless [`drop_last`](Self::drop_last)).
#[derive(Debug)]
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Option<Vec<usize>>,
    batch: usize,
    next: usize,
    end: usize,
}

impl<'a> Batches<'a> {
    /// Batches of `batch` samples in the data set's order.
    ///
    /// Returns [`DataError::InvalidArgument`] if `batch` is 0.
    pub fn new(data: &'a Dataset, batch: usize) -> Result<Batches<'a>, DataError> {
        if batch == 0 {
            return Err(DataError::InvalidArgument(
                "batch size must be at least 1".into(),
            ));
        }
        Ok(Batches {
            data,
            order: None,
            batch,
            next: 0,
            end: data.len(),
        })
    }

    /// Batches of `batch` samples in a random order drawn from `seed` (use
    /// a different seed each epoch, e.g. `seed + epoch`).
    pub fn shuffled(data: &'a Dataset, batch: usize, seed: u64) -> Result<Batches<'a>, DataError> {
        let mut b = Batches::new(data, batch)?;
        b.order = Some(permutation(data.len(), seed));
        Ok(b)
    }

    /// Leaves out a last batch smaller than the batch size.
    pub fn drop_last(mut self) -> Batches<'a> {
        self.end -= self.end % self.batch;
        self
    }
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<(Tensor, Tensor)> {
        if self.next >= self.end {
            return None;
        }
        let stop = (self.next + self.batch).min(self.end);
        let item = match &self.order {
            None => (
                self.data.x.rows(self.next, stop),
                self.data.y.rows(self.next, stop),
            ),
            Some(order) => {
                let rows = &order[self.next..stop];
                // The permutation's indices are all below the length.
                (
                    self.data.x.select(rows).ok()?,
                    self.data.y.select(rows).ok()?,
                )
            }
        };
        self.next = stop;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = (self.end - self.next).div_ceil(self.batch);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    fn data(n: usize) -> Dataset {
        Dataset {
            x: Tensor::F32(Array2::from_shape_fn((n, 2), |(i, j)| (i * 2 + j) as f32).into_dyn()),
            y: Tensor::I32(Array1::from_shape_fn(n, |i| i as i32).into_dyn()),
            classes: Some(n),
            vocab: None,
        }
    }

    #[test]
    fn in_order_with_partial_last() {
        let d = data(10);
        let b: Vec<_> = Batches::new(&d, 4).unwrap().collect();
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].0.shape(), &[4, 2]);
        assert_eq!(b[2].0.shape(), &[2, 2]);
        assert_eq!(b[2].1.as_i32().unwrap().as_slice().unwrap(), &[8, 9]);
        assert_eq!(Batches::new(&d, 4).unwrap().len(), 3);
        assert_eq!(Batches::new(&d, 4).unwrap().drop_last().count(), 2);
        assert_eq!(Batches::new(&d, 20).unwrap().count(), 1);
        assert!(Batches::new(&d, 0).is_err());
    }

    #[test]
    fn shuffled_covers_everything_once() {
        let d = data(10);
        let mut seen: Vec<i32> = Batches::shuffled(&d, 3, 5)
            .unwrap()
            .flat_map(|(x, y)| {
                let x = x.as_f32().unwrap().clone();
                let y = y.as_i32().unwrap().clone();
                // Inputs stay paired with their labels.
                for (r, &l) in y.iter().enumerate() {
                    assert_eq!(x[[r, 0]], (l * 2) as f32);
                }
                y.into_iter()
            })
            .collect();
        let again: Vec<_> = Batches::shuffled(&d, 3, 5).unwrap().collect();
        let other: Vec<_> = Batches::shuffled(&d, 3, 6).unwrap().collect();
        assert_eq!(
            again,
            Batches::shuffled(&d, 3, 5).unwrap().collect::<Vec<_>>()
        );
        assert_ne!(again, other);
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }
}
