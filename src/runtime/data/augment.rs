//! Seeded image augmentation of `f32` batches `[B, C, H, W]`.
//!
//! Each function draws its random choices from the generator it is given,
//! so a generator seeded the same way (see [`super::split::rng`]) gives
//! the same augmented batch. [`Augment`] bundles them behind one seed.

use ndarray::{Array3, ArrayD, ArrayViewMut3, Axis, Ix4};
use rand::{Rng, RngExt};
use rand_distr::{Distribution, StandardNormal};

use super::error::{DataError, Shape};
use super::split::rng;

/// Checks that `x` is `[B, C, H, W]` and returns a 4-D view of it.
fn images(x: &mut ArrayD<f32>) -> Result<ndarray::ArrayViewMut4<'_, f32>, DataError> {
    let shape = x.shape().to_vec();
    x.view_mut().into_dimensionality::<Ix4>().map_err(|_| {
        DataError::InvalidArgument(format!(
            "image augmentation needs a batch of shape [B, C, H, W], not {}",
            Shape(&shape)
        ))
    })
}

/// Moves one image `[C, H, W]` by `dy` rows down and `dx` columns right,
/// filling the uncovered border with zeros.
fn translate(mut img: ArrayViewMut3<'_, f32>, dy: isize, dx: isize) {
    let src: Array3<f32> = img.to_owned();
    let (_, h, w) = src.dim();
    for ((c, i, j), v) in img.indexed_iter_mut() {
        let (si, sj) = (i as isize - dy, j as isize - dx);
        *v = if (0..h as isize).contains(&si) && (0..w as isize).contains(&sj) {
            src[[c, si as usize, sj as usize]]
        } else {
            0.0
        };
    }
}

/// Shifts each image by a random offset of up to `k` pixels in each
/// direction (uniform in `-k..=k`, independently for rows and columns),
/// filling with zeros.
pub fn shift<R: Rng + ?Sized>(x: &mut ArrayD<f32>, k: usize, rng: &mut R) -> Result<(), DataError> {
    let mut x = images(x)?;
    if k == 0 {
        return Ok(());
    }
    // Platform-independent draws: i64, not isize (larger shifts blank the image anyway).
    let k = k.min(1 << 30) as i64;
    for img in x.axis_iter_mut(Axis(0)) {
        let dy = rng.random_range(-k..=k) as isize;
        let dx = rng.random_range(-k..=k) as isize;
        translate(img, dy, dx);
    }
    Ok(())
}

/// Pads each image with `pad` zeros on every side, then crops a random
/// `H × W` window (top-left corner uniform in `0..=2·pad` each way).
pub fn crop<R: Rng + ?Sized>(
    x: &mut ArrayD<f32>,
    pad: usize,
    rng: &mut R,
) -> Result<(), DataError> {
    let mut x = images(x)?;
    if pad == 0 {
        return Ok(());
    }
    let pad = pad.min(1 << 30) as i64;
    for img in x.axis_iter_mut(Axis(0)) {
        let top = rng.random_range(0..=2 * pad);
        let left = rng.random_range(0..=2 * pad);
        // Output (i, j) is padded (i + top, j + left), i.e. input (i + top - pad, …).
        translate(img, (pad - top) as isize, (pad - left) as isize);
    }
    Ok(())
}

/// Mirrors each image left–right with probability `p`.
pub fn flip<R: Rng + ?Sized>(x: &mut ArrayD<f32>, p: f64, rng: &mut R) -> Result<(), DataError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(DataError::InvalidArgument(format!(
            "flip probability must be between 0 and 1, not {p}"
        )));
    }
    let mut x = images(x)?;
    for mut img in x.axis_iter_mut(Axis(0)) {
        if rng.random_bool(p) {
            img.invert_axis(Axis(2));
            let flipped = img.to_owned();
            img.invert_axis(Axis(2));
            img.assign(&flipped);
        }
    }
    Ok(())
}

/// Adds gaussian noise of standard deviation `std` to every value.
pub fn noise<R: Rng + ?Sized>(x: &mut ArrayD<f32>, std: f32, rng: &mut R) -> Result<(), DataError> {
    if !(std.is_finite() && std >= 0.0) {
        return Err(DataError::InvalidArgument(format!(
            "noise standard deviation must be a finite number ≥ 0, not {std}"
        )));
    }
    let mut x = images(x)?;
    if std == 0.0 {
        return Ok(());
    }
    for v in x.iter_mut() {
        let z: f32 = StandardNormal.sample(rng);
        *v += std * z;
    }
    Ok(())
}

/// A set of augmentations applied in a fixed order — shift, crop, flip,
/// noise — each skipped when its parameter is zero.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Augment {
    /// Largest random shift in pixels (see [`shift`]).
    pub shift: usize,
    /// Zero padding before a random crop (see [`crop`]).
    pub crop: usize,
    /// Probability of a horizontal flip (see [`flip`]).
    pub flip: f64,
    /// Standard deviation of additive gaussian noise (see [`noise`]).
    pub noise: f32,
}

impl Augment {
    /// Augments the batch `x` (`[B, C, H, W]`) in place, with all random
    /// choices drawn from `seed`: the same seed gives the same result.
    pub fn apply(&self, x: &mut ArrayD<f32>, seed: u64) -> Result<(), DataError> {
        images(x)?;
        let mut r = rng(seed);
        shift(x, self.shift, &mut r)?;
        crop(x, self.crop, &mut r)?;
        flip(x, self.flip, &mut r)?;
        noise(x, self.noise, &mut r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn batch() -> ArrayD<f32> {
        Array4::from_shape_fn((6, 2, 5, 5), |(b, c, h, w)| {
            (b * 1000 + c * 100 + h * 10 + w) as f32 + 1.0
        })
        .into_dyn()
    }

    #[test]
    fn translate_moves_and_fills_zero() {
        let mut img = Array3::from_shape_fn((1, 3, 3), |(_, i, j)| (i * 3 + j + 1) as f32);
        translate(img.view_mut(), 1, -1);
        assert_eq!(
            img.into_raw_vec_and_offset().0,
            vec![0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0]
        );
    }

    #[test]
    fn shift_is_seeded_and_bounded() {
        let x = batch();
        let mut a = x.clone();
        let mut b = x.clone();
        let mut c = x.clone();
        shift(&mut a, 2, &mut rng(1)).unwrap();
        shift(&mut b, 2, &mut rng(1)).unwrap();
        shift(&mut c, 2, &mut rng(2)).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, x);
        // Every surviving value moved by at most 2 rows and 2 columns.
        for ((bi, ci, i, j), &v) in a
            .clone()
            .into_dimensionality::<Ix4>()
            .unwrap()
            .indexed_iter()
        {
            if v != 0.0 {
                let v = v as usize - 1;
                assert_eq!((v / 1000, v / 100 % 10), (bi, ci));
                let (si, sj) = (v / 10 % 10, v % 10);
                assert!(si.abs_diff(i) <= 2 && sj.abs_diff(j) <= 2);
            }
        }
        // All channels of one image move together.
        let a4 = a.into_dimensionality::<Ix4>().unwrap();
        for bi in 0..6 {
            let z0 = a4
                .index_axis(Axis(0), bi)
                .index_axis(Axis(0), 0)
                .mapv(|v| v == 0.0);
            let z1 = a4
                .index_axis(Axis(0), bi)
                .index_axis(Axis(0), 1)
                .mapv(|v| v == 0.0);
            assert_eq!(z0, z1);
        }
    }

    #[test]
    fn crop_flip_noise() {
        let x = batch();
        let mut a = x.clone();
        crop(&mut a, 1, &mut rng(3)).unwrap();
        let mut b = x.clone();
        crop(&mut b, 1, &mut rng(3)).unwrap();
        assert_eq!(a, b);

        let mut f = x.clone();
        flip(&mut f, 1.0, &mut rng(0)).unwrap();
        assert_eq!(f[[0, 0, 0, 0]], x[[0, 0, 0, 4]]);
        assert_eq!(f[[3, 1, 2, 1]], x[[3, 1, 2, 3]]);
        let mut f = x.clone();
        flip(&mut f, 0.0, &mut rng(0)).unwrap();
        assert_eq!(f, x);
        let mut f = x.clone();
        flip(&mut f, 0.5, &mut rng(9)).unwrap();
        assert!(flip(&mut f, 1.5, &mut rng(9)).is_err());

        let mut n = ArrayD::<f32>::zeros(ndarray::IxDyn(&[4, 1, 50, 50]));
        noise(&mut n, 0.5, &mut rng(4)).unwrap();
        let sd = n.mapv(|v| v * v).mean().unwrap().sqrt();
        assert!((sd - 0.5).abs() < 0.02, "{sd}");
        assert!(noise(&mut n, -1.0, &mut rng(4)).is_err());

        let mut flat = ArrayD::<f32>::zeros(ndarray::IxDyn(&[4, 10]));
        assert!(shift(&mut flat, 1, &mut rng(0)).is_err());
    }

    #[test]
    fn augment_is_deterministic_per_seed() {
        let aug = Augment {
            shift: 1,
            crop: 1,
            flip: 0.5,
            noise: 0.1,
        };
        let x = batch();
        let (mut a, mut b, mut c) = (x.clone(), x.clone(), x.clone());
        aug.apply(&mut a, 11).unwrap();
        aug.apply(&mut b, 11).unwrap();
        aug.apply(&mut c, 12).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut d = x.clone();
        Augment::default().apply(&mut d, 5).unwrap();
        assert_eq!(d, x);
    }
}
