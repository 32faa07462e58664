//! Seeded shuffles and train/validation splits.
//!
//! Every random choice comes from [`rand_pcg::Pcg64Mcg`] seeded with a
//! `u64`, so the same seed gives the same result on every machine.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_pcg::Pcg64Mcg;

use super::error::DataError;
use super::tensor::{Dataset, Tensor};

/// The random number generator of the data layer, seeded.
pub fn rng(seed: u64) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(seed)
}

/// A seeded random permutation of `0..n`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    p.shuffle(&mut rng(seed));
    p
}

/// The data set with its samples in a seeded random order.
pub fn shuffle(data: &Dataset, seed: u64) -> Result<Dataset, DataError> {
    data.select(&permutation(data.len(), seed))
}

fn check_fraction(val_fraction: f64) -> Result<(), DataError> {
    if (0.0..1.0).contains(&val_fraction) {
        Ok(())
    } else {
        Err(DataError::InvalidArgument(format!(
            "validation fraction must be at least 0 and below 1, not {val_fraction}"
        )))
    }
}

/// Splits into the first `n_train` samples and the rest.
pub fn at(data: &Dataset, n_train: usize) -> Result<(Dataset, Dataset), DataError> {
    if n_train > data.len() {
        return Err(DataError::InvalidArgument(format!(
            "cannot take {n_train} training samples from {}",
            data.len()
        )));
    }
    let train: Vec<usize> = (0..n_train).collect();
    let val: Vec<usize> = (n_train..data.len()).collect();
    Ok((data.select(&train)?, data.select(&val)?))
}

/// Splits off the last `round(N · val_fraction)` samples for validation,
/// keeping order (for sequences, where neighbours are correlated).
pub fn tail(data: &Dataset, val_fraction: f64) -> Result<(Dataset, Dataset), DataError> {
    check_fraction(val_fraction)?;
    let n_val = (data.len() as f64 * val_fraction).round() as usize;
    at(data, data.len() - n_val.min(data.len()))
}

/// A seeded random split: `round(N · val_fraction)` samples go to
/// validation, the rest to training. Both keep the original order.
pub fn random(
    data: &Dataset,
    val_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    check_fraction(val_fraction)?;
    let perm = permutation(data.len(), seed);
    let n_val = (data.len() as f64 * val_fraction).round() as usize;
    let mut val = perm[..n_val.min(perm.len())].to_vec();
    let mut train = perm[n_val.min(perm.len())..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    Ok((data.select(&train)?, data.select(&val)?))
}

/// A seeded stratified split for `[N]` class labels: each class gives the
/// same fraction of its samples to validation (to within one sample), and
/// the validation set has `round(N · val_fraction)` samples in all. Both
/// parts keep the original order.
///
/// Data without `[N]` class labels is split as by [`random`].
pub fn stratified(
    data: &Dataset,
    val_fraction: f64,
    seed: u64,
) -> Result<(Dataset, Dataset), DataError> {
    check_fraction(val_fraction)?;
    let (Some(classes), Tensor::I32(y)) = (data.classes, &data.y) else {
        return random(data, val_fraction, seed);
    };
    if y.ndim() != 1 {
        return random(data, val_fraction, seed);
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &c) in y.iter().enumerate() {
        let slot = usize::try_from(c)
            .ok()
            .and_then(|c| by_class.get_mut(c))
            .ok_or_else(|| {
                DataError::InvalidArgument(format!(
                    "label {c} of sample {i} is outside 0..{classes}"
                ))
            })?;
        slot.push(i);
    }
    // Largest-remainder apportionment of the validation count over classes.
    let n_val = (data.len() as f64 * val_fraction).round() as usize;
    let quotas: Vec<f64> = by_class
        .iter()
        .map(|c| c.len() as f64 * val_fraction)
        .collect();
    let mut take: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut order: Vec<usize> = (0..classes).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (quotas[a] - quotas[a].floor(), quotas[b] - quotas[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut missing = n_val.saturating_sub(take.iter().sum());
    for &c in order.iter().cycle().take(classes * 2) {
        if missing == 0 {
            break;
        }
        if take[c] < by_class[c].len() {
            take[c] += 1;
            missing -= 1;
        }
    }
    let mut rng = rng(seed);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (members, &k) in by_class.iter_mut().zip(&take) {
        members.shuffle(&mut rng);
        val.extend_from_slice(&members[..k]);
        train.extend_from_slice(&members[k..]);
    }
    val.sort_unstable();
    train.sort_unstable();
    Ok((data.select(&train)?, data.select(&val)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    fn labelled(counts: &[usize]) -> Dataset {
        let y: Vec<i32> = counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c as i32, n))
            .collect();
        let n = y.len();
        Dataset {
            x: Tensor::F32(Array2::from_shape_fn((n, 1), |(i, _)| i as f32).into_dyn()),
            y: Tensor::I32(Array1::from(y).into_dyn()),
            classes: Some(counts.len()),
            vocab: None,
        }
    }

    #[test]
    fn permutation_is_seeded() {
        assert_eq!(permutation(50, 1), permutation(50, 1));
        assert_ne!(permutation(50, 1), permutation(50, 2));
        let mut p = permutation(50, 3);
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn stratified_keeps_proportions() {
        let d = labelled(&[100, 50, 10, 3]);
        let (tr, va) = stratified(&d, 0.2, 7).unwrap();
        assert_eq!(va.len(), 33); // round(163 * 0.2)
        assert_eq!(tr.len() + va.len(), d.len());
        let vc = va.class_counts().unwrap();
        assert_eq!(&vc[..3], &[20, 10, 2]);
        assert!(vc[3] <= 1);
        // No sample in both parts.
        let tx = tr.x.as_f32().unwrap();
        let vx = va.x.as_f32().unwrap();
        assert!(vx.iter().all(|v| !tx.iter().any(|t| t == v)));
        assert_eq!(stratified(&d, 0.2, 7).unwrap(), (tr.clone(), va.clone()));
        assert_ne!(stratified(&d, 0.2, 8).unwrap().1, va);
    }

    #[test]
    fn other_splits() {
        let d = labelled(&[5, 5]);
        let (tr, va) = tail(&d, 0.3).unwrap();
        assert_eq!((tr.len(), va.len()), (7, 3));
        assert_eq!(va.x.as_f32().unwrap()[[0, 0]], 7.0);
        let (tr, va) = random(&d, 0.5, 1).unwrap();
        assert_eq!((tr.len(), va.len()), (5, 5));
        assert!(stratified(&d, 1.0, 1).is_err());
        assert!(stratified(&d, -0.1, 1).is_err());
        assert!(at(&d, 11).is_err());
        let s = shuffle(&d, 4).unwrap();
        assert_eq!(s.len(), 10);
        assert_ne!(s, d);
        assert_eq!(s, shuffle(&d, 4).unwrap());
        let (tr, va) = stratified(&d, 0.0, 1).unwrap();
        assert_eq!((tr.len(), va.len()), (10, 0));
    }
}
