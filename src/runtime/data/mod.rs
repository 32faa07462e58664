//! Data sets: readers for the formats nnc trains from, splits, batches,
//! normalisation and augmentation.
//!
//! Every reader returns a [`Dataset`] — inputs `x` and targets `y` as
//! [`Tensor`]s — or a [`DataError`] that names the file and says what is
//! wrong with it. Readers never panic on file content, and check sizes
//! claimed by a header against the data actually present before
//! allocating.
//!
//! | format | reader |
//! | --- | --- |
//! | IDX (MNIST), raw or gzip | [`idx::read`], [`read_mnist`] |
//! | CSV of numbers | [`csv::read`] |
//! | NumPy `.npy` | [`npy::read`] |
//! | safetensors | [`safetensor::read`], [`safetensor::read_named`] |
//! | plain text (characters) | [`text::read`] |
//!
//! ```no_run
//! use std::path::Path;
//! use nnc::runtime::data::{self, batch::Batches, split};
//!
//! let all = data::read_mnist(Path::new("examples/data/mnist"))?;
//! let (train, val) = split::stratified(&all, 0.2, 7)?;
//! for (x, y) in Batches::shuffled(&train, 64, 7)? {
//!     assert_eq!(x.shape()[1..], [1, 28, 28]);
//!     # let _ = y;
//! }
//! # let _ = val;
//! # Ok::<(), data::DataError>(())
//! ```

pub mod augment;
pub mod batch;
pub mod csv;
pub mod error;
pub mod idx;
pub mod normalize;
pub mod npy;
pub mod safetensor;
pub mod split;
pub mod tensor;
pub mod text;

#[cfg(test)]
mod testutil;

use std::path::Path;

pub use error::DataError;
pub use tensor::{Dataset, Tensor};

/// Reads an MNIST-style directory: the training files
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`) if present, else
/// the test files (`t10k-…`); each may be gzip-compressed (`.gz`).
///
/// The result has `x` `[N, 1, 28, 28]` in `[0, 1]`, `y` `[N]` and
/// `classes` 10. See [`idx::find_mnist`].
pub fn read_mnist(dir: &Path) -> Result<Dataset, DataError> {
    idx::read_mnist(dir)
}
