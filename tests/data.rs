//! The data layer on the real bundled data (`examples/data`) and on
//! malformed files written to a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ndarray::{Axis, Ix4};
use nnc::runtime::data::augment::{self, Augment};
use nnc::runtime::data::batch::Batches;
use nnc::runtime::data::normalize::{Mode, Standardize};
use nnc::runtime::data::{self, DataError, Dataset, Tensor, csv, idx, npy, split, text};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data")
}

fn digits_idx() -> Dataset {
    let d = data_dir().join("digits");
    idx::read(
        &d.join("digits-images-idx3-ubyte"),
        &d.join("digits-labels-idx1-ubyte"),
    )
    .unwrap()
}

/// A fresh temporary directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("nnc-tests-data-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------- readers

#[test]
fn digits_idx_shapes_values_and_classes() {
    let d = digits_idx();
    assert_eq!(d.x.shape(), &[1797, 1, 8, 8]);
    assert_eq!(d.y.shape(), &[1797]);
    assert_eq!(d.classes, Some(10));
    let x = d.x.as_f32().unwrap();
    // First row of the first image: 0, 0, 80, 207, 143, 16, 0, 0 (of 255).
    let row: Vec<f32> = (0..8).map(|j| x[[0, 0, 0, j]] * 255.0).collect();
    let want = [0.0, 0.0, 80.0, 207.0, 143.0, 16.0, 0.0, 0.0];
    for (a, b) in row.iter().zip(want) {
        assert!((a - b).abs() < 1e-3, "{row:?}");
    }
    assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    let y = d.y.as_i32().unwrap();
    assert_eq!(
        &y.as_slice().unwrap()[..10],
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    );
    assert_eq!(
        d.class_counts().unwrap(),
        vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    );
}

#[test]
fn digits_csv_matches_idx() {
    let c = csv::read(&data_dir().join("digits/digits.csv"), 0, false).unwrap();
    assert_eq!(c.x.shape(), &[1797, 64]);
    assert_eq!(c.classes, Some(10));
    let i = digits_idx();
    assert_eq!(c.y, i.y);
    let ix = i.x.reshape_samples(&[64]).unwrap().to_f32() * 255.0;
    let cx = c.x.as_f32().unwrap();
    assert!(ix.iter().zip(cx).all(|(a, b)| (a - b).abs() < 1e-3));
    // The IDX images fit a flat [64] input after reshaping.
    let conformed = i
        .conform(Path::new("digits"), &[64], &[], Some(10))
        .unwrap();
    assert_eq!(conformed.x.shape(), &[1797, 64]);
}

#[test]
fn mnist_test_set() {
    let d = data::read_mnist(&data_dir().join("mnist")).unwrap();
    assert_eq!(d.x.shape(), &[10000, 1, 28, 28]);
    assert_eq!(d.classes, Some(10));
    let y = d.y.as_i32().unwrap();
    assert_eq!(
        &y.as_slice().unwrap()[..10],
        &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    );
    assert_eq!(y[9999], 6);
    assert_eq!(
        d.class_counts().unwrap(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let x = d.x.as_f32().unwrap();
    // The first image (a 7): pixel sum 18454/255, first ink at row 7, column 6 = 84.
    let first: f32 = x.index_axis(Axis(0), 0).sum();
    assert!((first - 18454.0 / 255.0).abs() < 1e-2, "{first}");
    assert!((x[[0, 0, 7, 6]] - 84.0 / 255.0).abs() < 1e-6);
    assert_eq!(x[[0, 0, 7, 5]], 0.0);
    assert!(x.iter().all(|&v| (0.0..=1.0).contains(&v)));
    d.check_model(Path::new("mnist"), &[1, 28, 28], &[], Some(10))
        .unwrap();
}

#[test]
fn mnist_split_8000_2000_stratified() {
    let d = data::read_mnist(&data_dir().join("mnist")).unwrap();
    let (train, val) = split::stratified(&d, 0.2, 7).unwrap();
    assert_eq!((train.len(), val.len()), (8000, 2000));
    let all = d.class_counts().unwrap();
    let vc = val.class_counts().unwrap();
    for (a, v) in all.iter().zip(&vc) {
        let share = *a as f64 * 0.2;
        assert!((*v as f64 - share).abs() <= 1.0, "{all:?} {vc:?}");
    }
    let again = split::stratified(&d, 0.2, 7).unwrap();
    assert_eq!(again.1.y, val.y);
    assert_eq!(again.1.x, val.x);
    let other = split::stratified(&d, 0.2, 8).unwrap();
    assert_ne!(other.1.x, val.x);
}

#[test]
fn digits_split_80_20() {
    let d = digits_idx();
    let (train, val) = split::stratified(&d, 0.2, 3).unwrap();
    assert_eq!((train.len(), val.len()), (1438, 359));
    let all = d.class_counts().unwrap();
    let vc = val.class_counts().unwrap();
    for (a, v) in all.iter().zip(&vc) {
        assert!((*v as f64 - *a as f64 * 0.2).abs() <= 1.0, "{all:?} {vc:?}");
    }
    let tc = train.class_counts().unwrap();
    assert!(
        all.iter()
            .zip(&vc)
            .zip(&tc)
            .all(|((a, v), t)| a == &(v + t))
    );
}

#[test]
fn tiny_shakespeare_sequences() {
    let path = data_dir().join("text/tinyshakespeare.txt");
    let d = text::read(&path, 32, None).unwrap();
    assert_eq!(d.x.shape(), &[34856, 32]);
    assert_eq!(d.y.shape(), &[34856, 32]);
    assert_eq!(d.classes, Some(65));
    let vocab = d.vocab.clone().unwrap();
    assert_eq!((vocab[0], vocab[1], vocab[64]), ('\n', ' ', 'z'));
    let x = d.x.as_i32().unwrap();
    let y = d.y.as_i32().unwrap();
    let first: Vec<i32> = x.index_axis(Axis(0), 0).iter().copied().collect();
    assert_eq!(&text::decode(&first, &vocab)[..15], "First Citizen:\n");
    for t in 0..31 {
        assert_eq!(y[[0, t]], x[[0, t + 1]]);
        assert_eq!(y[[5, t]], x[[5, t + 1]]);
    }
    assert_eq!(y[[0, 31]], x[[1, 0]]);
    assert!(x.iter().chain(y.iter()).all(|&v| (0..65).contains(&v)));
    let (train, val) = split::tail(&d, 0.1).unwrap();
    assert_eq!((train.len(), val.len()), (31370, 3486));

    let d64 = text::read(&path, 64, None).unwrap();
    let (train, val) = split::tail(&d64, 0.1).unwrap();
    assert_eq!((train.len(), val.len()), (15685, 1743));
    // A given vocabulary gives the same indices.
    let again = text::read(&path, 64, Some(&vocab)).unwrap();
    assert_eq!(again.x, d64.x);
}

#[test]
fn npy_and_safetensors_round_trip_real_data() {
    let t = Tmp::new("roundtrip");
    let d = digits_idx();
    let (xp, yp) = (t.0.join("x.npy"), t.0.join("y.npy"));
    ndarray_npy::write_npy(&xp, d.x.as_f32().unwrap()).unwrap();
    let y64 = d.y.as_i32().unwrap().mapv(i64::from);
    ndarray_npy::write_npy(&yp, &y64).unwrap();
    let back = npy::read(&xp, &yp).unwrap();
    assert_eq!(back, d);

    let xb: Vec<u8> =
        d.x.as_f32()
            .unwrap()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
    let yb: Vec<u8> = d.y.as_i32().unwrap().iter().map(|&v| v as u8).collect();
    let views = vec![
        (
            "images",
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                d.x.shape().to_vec(),
                &xb,
            )
            .unwrap(),
        ),
        (
            "labels",
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![1797], &yb).unwrap(),
        ),
    ];
    let p = t.write(
        "d.safetensors",
        &safetensors::serialize(views, None).unwrap(),
    );
    let back = data::safetensor::read_named(&p, "images", "labels").unwrap();
    assert_eq!(back, d);
    assert!(matches!(
        data::safetensor::read(&p),
        Err(DataError::MissingTensor { .. })
    ));
}

// ------------------------------------------------------- malformed files

#[test]
fn truncated_idx() {
    let t = Tmp::new("trunc");
    let real = std::fs::read(data_dir().join("digits/digits-images-idx3-ubyte")).unwrap();
    let p = t.write("cut-idx3-ubyte", &real[..100_000]);
    let e = idx::read_images(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 115_024,
                actual: 100_000,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("cut-idx3-ubyte") && msg.contains("truncated"),
        "{msg}"
    );

    // A gzip file whose decompressed content is cut short.
    let real_gz = std::fs::read(data_dir().join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    let p = t.write("labels.gz", &real_gz[..real_gz.len() / 2]);
    assert!(idx::read_labels(&p).is_err());
}

#[test]
fn wrong_magic() {
    let t = Tmp::new("magic");
    let csv = data_dir().join("digits/digits.csv");
    let e = idx::read_images(&csv).unwrap_err();
    assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("digits.csv"));
    // An image file given as labels.
    let img = data_dir().join("digits/digits-images-idx3-ubyte");
    let e = idx::read(&img, &img).unwrap_err();
    assert!(e.to_string().contains("1 dimension"), "{e}");
    let p = t.write("x.npy", b"not numpy at all");
    assert!(matches!(
        npy::read_array(&p),
        Err(DataError::BadMagic { .. })
    ));
}

#[test]
fn count_mismatch_between_images_and_labels() {
    let e = idx::read(
        &data_dir().join("digits/digits-images-idx3-ubyte"),
        &data_dir().join("mnist/t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            DataError::CountMismatch {
                inputs: 1797,
                labels: 10000,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn bad_csv_cell() {
    let t = Tmp::new("csv");
    let real = std::fs::read_to_string(data_dir().join("digits/digits.csv")).unwrap();
    let mut lines: Vec<String> = real.lines().map(str::to_string).collect();
    lines[41] = lines[41].replacen(",0,", ",0x,", 1);
    let col = lines[41].find("0x").unwrap() + 1;
    let p = t.write("digits.csv", lines.join("\n").as_bytes());
    let e = csv::read(&p, 0, false).unwrap_err();
    assert!(
        matches!(&e, DataError::CsvNotANumber { line: 42, column, text, .. } if *column == col && text == "0x"),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("digits.csv:42:{col}")),
        "{e}"
    );
}

#[test]
fn non_utf8_text() {
    let t = Tmp::new("utf8");
    let p = t.write("t.txt", b"To be, or not\nto \xe9tre");
    let e = text::read(&p, 4, None).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::NotUtf8 {
                line: 2,
                column: 4,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("not UTF-8"), "{e}");
}

#[test]
fn huge_claimed_dimensions() {
    let t = Tmp::new("huge");
    // 10^12 images of 1x1 claimed by a 24-byte file.
    let mut b = vec![0, 0, 8, 3];
    for d in [1_000_000_000u32, 1000, 1] {
        b.extend(d.to_be_bytes());
    }
    b.extend([0u8; 8]);
    let p = t.write("huge-idx3-ubyte", &b);
    let e = idx::read_images(&p).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::Truncated {
                expected: 1_000_000_000_016,
                ..
            }
        ),
        "{e}"
    );
    // The same, gzip-compressed: decompression stops at the real data.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &b).unwrap();
    let p = t.write("huge.gz", &gz.finish().unwrap());
    assert!(matches!(
        idx::read_images(&p),
        Err(DataError::Truncated {
            decompressed: true,
            ..
        })
    ));
    // Labels claiming u32::MAX entries.
    let mut l = vec![0, 0, 8, 1];
    l.extend(u32::MAX.to_be_bytes());
    let p = t.write("labels", &l);
    assert!(matches!(
        idx::read_labels(&p),
        Err(DataError::Truncated { .. })
    ));
}

#[test]
fn wrong_shape_for_the_model() {
    let d = digits_idx();
    let e = d
        .clone()
        .conform(
            Path::new("examples/data/digits"),
            &[1, 28, 28],
            &[],
            Some(10),
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("[1, 8, 8]") && msg.contains("[1, 28, 28]"),
        "{msg}"
    );
    let e = d
        .check_model(Path::new("d"), &[1, 8, 8], &[], Some(5))
        .unwrap_err();
    assert!(
        matches!(e, DataError::LabelOutOfRange { classes: 5, .. }),
        "{e}"
    );
}

// ------------------------------------------- shuffles, batches, augmentation

#[test]
fn shuffles_and_batches_are_reproducible() {
    let d = digits_idx();
    let a = split::shuffle(&d, 1).unwrap();
    assert_eq!(a, split::shuffle(&d, 1).unwrap());
    assert_ne!(a, split::shuffle(&d, 2).unwrap());
    assert_eq!(a.class_counts(), d.class_counts());

    let batches: Vec<(Tensor, Tensor)> = Batches::shuffled(&d, 64, 9).unwrap().collect();
    assert_eq!(batches.len(), 29); // 28 full + one of 5
    assert_eq!(batches[28].0.shape(), &[5, 1, 8, 8]);
    assert_eq!(batches[28].1.shape(), &[5]);
    let again: Vec<(Tensor, Tensor)> = Batches::shuffled(&d, 64, 9).unwrap().collect();
    assert_eq!(batches, again);
    let total: usize = batches.iter().map(|(x, _)| x.len()).sum();
    assert_eq!(total, 1797);
}

#[test]
fn augmentation_is_reproducible_per_seed() {
    let d = data::read_mnist(&data_dir().join("mnist")).unwrap();
    let (x, _) = Batches::new(&d, 16).unwrap().next().unwrap();
    let x = x.as_f32().unwrap().clone();
    let aug = Augment {
        shift: 2,
        crop: 2,
        flip: 0.5,
        noise: 0.05,
    };
    let (mut a, mut b, mut c) = (x.clone(), x.clone(), x.clone());
    aug.apply(&mut a, 7).unwrap();
    aug.apply(&mut b, 7).unwrap();
    aug.apply(&mut c, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.shape(), x.shape());

    // A shift keeps the ink of a centred digit (MNIST has a 4-pixel margin).
    let mut s = x.clone();
    augment::shift(&mut s, 2, &mut split::rng(3)).unwrap();
    let s4 = s.clone().into_dimensionality::<Ix4>().unwrap();
    let x4 = x.clone().into_dimensionality::<Ix4>().unwrap();
    for i in 0..16 {
        let (before, after) = (
            x4.index_axis(Axis(0), i).sum(),
            s4.index_axis(Axis(0), i).sum(),
        );
        assert!(
            (before - after).abs() < 1e-3,
            "image {i}: {before} vs {after}"
        );
    }
    assert_ne!(s, x);
}

#[test]
fn normalisation_uses_training_statistics() {
    let d = digits_idx();
    let (train, val) = split::stratified(&d, 0.2, 1).unwrap();
    let stats = Standardize::fit(train.x.as_f32().unwrap(), Mode::Global).unwrap();
    let mut tx = train.x.as_f32().unwrap().clone();
    stats.apply(&mut tx).unwrap();
    assert!(tx.mean().unwrap().abs() < 1e-4);
    let mut vx = val.x.as_f32().unwrap().clone();
    stats.apply(&mut vx).unwrap();
    assert!(vx.mean().unwrap().abs() < 0.1);
    let per = Standardize::fit(train.x.as_f32().unwrap(), Mode::PerFeature).unwrap();
    assert_eq!(per.mean.shape(), &[1, 8, 8]);
    let mut tx = train.x.as_f32().unwrap().clone();
    per.apply(&mut tx).unwrap();
    let m = tx.mean_axis(Axis(0)).unwrap();
    assert!(m.iter().all(|v| v.abs() < 1e-4));
}
