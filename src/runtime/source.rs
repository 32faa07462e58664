//! Where a training run's data comes from: the `train` block's `data` and
//! `validation` entries (paths relative to the `.nn` file), or a `--data`
//! override (paths relative to the working directory), read, split and
//! fitted to the model's input shapes.
//!
//! ```
//! use nnc::runtime::source::DataSpec;
//!
//! assert!(matches!(DataSpec::parse("synthetic:64"), Ok(DataSpec::Synthetic(64))));
//! assert!(matches!(DataSpec::parse("x.npy,y.npy"), Ok(DataSpec::Npy(..))));
//! assert!(DataSpec::parse("x.npy").is_err());
//! ```

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_pcg::Pcg64Mcg;

use super::data::{self, Dataset, Tensor, split};
use crate::ir::model::{Input, Model};
use crate::ir::train::{DataSource, Validation};
use crate::ir::types::DType;

/// A data source named on the command line (`--data`).
#[derive(Debug, Clone, PartialEq)]
pub enum DataSpec {
    /// An MNIST-style directory of IDX files.
    Mnist(PathBuf),
    /// IDX images and labels (`images,labels`).
    Idx(PathBuf, PathBuf),
    /// A CSV file, labels in the first column; a header line is detected.
    Csv(PathBuf),
    /// Two `.npy` files (`x.npy,y.npy`, or a directory holding both).
    Npy(PathBuf, PathBuf),
    /// A safetensors file with tensors `x` and `y`.
    Safetensors(PathBuf),
    /// A text file for character models (`.txt`); the window length is the
    /// model's.
    Text(PathBuf),
    /// Random, learnable data shaped for the model: `N` samples whose inputs
    /// are a fixed pattern per class plus noise. For trying a model without
    /// its data set.
    Synthetic(usize),
}

impl DataSpec {
    /// Reads a `--data` argument; the format comes from the file names.
    pub fn parse(s: &str) -> Result<DataSpec, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("synthetic") {
            let n =
                match rest.strip_prefix(':') {
                    None if rest.is_empty() => 1024,
                    Some(n) => n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("`{s}`: write synthetic:N with N a positive count")
                    })?,
                    None => return Err(format!("`{s}`: write synthetic or synthetic:N")),
                };
            return Ok(DataSpec::Synthetic(n));
        }
        let ext = |p: &str| {
            Path::new(p)
                .extension()
                .map(|e| e.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default()
        };
        if let Some((a, b)) = s.split_once(',') {
            let (a, b) = (a.trim(), b.trim());
            return Ok(if ext(a) == "npy" && ext(b) == "npy" {
                DataSpec::Npy(a.into(), b.into())
            } else {
                DataSpec::Idx(a.into(), b.into())
            });
        }
        let p = PathBuf::from(s);
        if p.is_dir() {
            let (x, y) = (p.join("x.npy"), p.join("y.npy"));
            return Ok(if x.is_file() && y.is_file() {
                DataSpec::Npy(x, y)
            } else {
                DataSpec::Mnist(p)
            });
        }
        match ext(s).as_str() {
            "csv" => Ok(DataSpec::Csv(p)),
            "safetensors" => Ok(DataSpec::Safetensors(p)),
            "txt" | "text" => Ok(DataSpec::Text(p)),
            "npy" => Err(format!(
                "`{s}`: a .npy file holds one array; give inputs and labels as --data x.npy,y.npy (or a directory with x.npy and y.npy)"
            )),
            _ => Err(format!(
                "cannot tell the format of `{s}`: use a directory of MNIST IDX files, images,labels (IDX), x.npy,y.npy, a .csv, .safetensors or .txt file, or synthetic[:N]"
            )),
        }
    }

    /// The equivalent `train` block source (`None` for synthetic data).
    pub fn source(&self, model: &Model) -> Option<DataSource> {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        Some(match self {
            DataSpec::Mnist(d) => DataSource::Mnist { dir: s(d) },
            DataSpec::Idx(a, b) => DataSource::Idx {
                images: s(a),
                labels: s(b),
            },
            DataSpec::Csv(p) => DataSource::Csv {
                path: s(p),
                label: 0,
                header: csv_has_header(p),
            },
            DataSpec::Npy(a, b) => DataSource::Npy { x: s(a), y: s(b) },
            DataSpec::Safetensors(p) => DataSource::Safetensors {
                path: s(p),
                x: "x".into(),
                y: "y".into(),
            },
            DataSpec::Text(p) => DataSource::Text {
                path: s(p),
                seq: sequence_length(model).unwrap_or(1),
            },
            DataSpec::Synthetic(_) => return None,
        })
    }
}

/// Whether the first line of a CSV file has a cell that is not a number.
fn csv_has_header(p: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(p) else {
        return false;
    };
    text.lines()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| {
            l.split(',')
                .any(|c| c.trim().trim_matches('"').parse::<f64>().is_err())
        })
}

/// The window length `T` of a character model (its input `[B, T]` of classes).
pub fn sequence_length(model: &Model) -> Option<usize> {
    let x = model.data_inputs().next()?;
    let s = x.ty.shape.at(1);
    (x.ty.dtype == DType::I32 && s.len() == 2).then(|| s[1])
}

/// A short description of a source, for messages.
pub fn describe(src: &DataSource) -> String {
    match src {
        DataSource::Mnist { dir } => format!("mnist({dir})"),
        DataSource::Idx { images, labels } => format!("idx({images}, {labels})"),
        DataSource::Csv { path, .. } => format!("csv({path})"),
        DataSource::Npy { x, y } => format!("npy({x}, {y})"),
        DataSource::Safetensors { path, .. } => format!("safetensors({path})"),
        DataSource::Text { path, seq } => format!("text({path}, seq: {seq})"),
    }
}

/// Reads a source; relative paths are taken from `base`.
pub fn read(
    src: &DataSource,
    base: &Path,
    vocab: Option<&[char]>,
) -> Result<(Dataset, PathBuf), String> {
    let at = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    let e = |e: data::DataError| e.to_string();
    Ok(match src {
        DataSource::Mnist { dir } => {
            let d = at(dir);
            (data::read_mnist(&d).map_err(e)?, d)
        }
        DataSource::Idx { images, labels } => {
            let (i, l) = (at(images), at(labels));
            (data::idx::read(&i, &l).map_err(e)?, i)
        }
        DataSource::Csv {
            path,
            label,
            header,
        } => {
            let p = at(path);
            (data::csv::read(&p, *label, *header).map_err(e)?, p)
        }
        DataSource::Npy { x, y } => {
            let (a, b) = (at(x), at(y));
            (data::npy::read(&a, &b).map_err(e)?, a)
        }
        DataSource::Safetensors { path, x, y } => {
            let p = at(path);
            (data::safetensor::read_named(&p, x, y).map_err(e)?, p)
        }
        DataSource::Text { path, seq } => {
            let p = at(path);
            (data::text::read(&p, *seq, vocab).map_err(e)?, p)
        }
    })
}

/// Training and validation data, fitted to a model.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub validation: Option<Dataset>,
    /// What was read, for messages (`mnist(examples/data/mnist)`).
    pub description: String,
}

/// Reads a model's data: `spec` if given, else the `train` block's `data`
/// (relative to `base`, the `.nn` file's directory); splits off the
/// validation part as the block's `validation` says (seeded and stratified
/// for class labels, the last part for text, whose neighbouring windows are
/// correlated), and fits both parts to the model's inputs. `vocab` fixes a
/// text model's vocabulary (from a checkpoint).
pub fn load(
    model: &Model,
    base: &Path,
    spec: Option<&DataSpec>,
    vocab: Option<&[char]>,
) -> Result<Splits, String> {
    let cfg = model.train.as_ref();
    let seed = cfg.map_or(0, |c| c.seed);
    let (all, path, description) = read_all(model, base, spec, vocab)?;
    let is_text = all.vocab.is_some();
    let (train, validation) = match cfg.and_then(|c| c.validation.as_ref()) {
        None => (all, None),
        Some(Validation::Split(f)) => {
            let (t, v) = if is_text {
                split::tail(&all, *f)
            } else {
                split::stratified(&all, *f, seed)
            }
            .map_err(|e| e.to_string())?;
            (t, (!v.is_empty()).then_some(v))
        }
        Some(Validation::Source(src)) => {
            let v_vocab = all.vocab.clone().or_else(|| vocab.map(<[char]>::to_vec));
            let (v, _) = read(src, base, v_vocab.as_deref())?;
            (all, Some(v))
        }
    };
    let train = fit(model, train, &path)?;
    let validation = validation.map(|v| fit(model, v, &path)).transpose()?;
    if train.is_empty() {
        return Err(format!("{description}: no training samples"));
    }
    Ok(Splits {
        train,
        validation,
        description,
    })
}

/// Reads a model's data (as [`load`]) without splitting or fitting it:
/// the data set, the file it came from and a description.
pub fn read_all(
    model: &Model,
    base: &Path,
    spec: Option<&DataSpec>,
    vocab: Option<&[char]>,
) -> Result<(Dataset, PathBuf, String), String> {
    let cfg = model.train.as_ref();
    let seed = cfg.map_or(0, |c| c.seed);
    Ok(match spec {
        Some(DataSpec::Synthetic(n)) => {
            let d = synthetic(model, *n, seed)?;
            (d, PathBuf::from("synthetic"), format!("synthetic({n})"))
        }
        Some(spec) => {
            let src = spec.source(model).ok_or("no data source")?;
            let cwd = PathBuf::from(".");
            let (d, p) = read(&src, &cwd, vocab)?;
            (d, p, describe(&src))
        }
        None => {
            let src = cfg.and_then(|c| c.data.as_ref()).ok_or_else(|| {
                format!(
                    "the model `{}` has no training data: add `data ...` to its train block, or give --data (e.g. --data synthetic)",
                    model.name
                )
            })?;
            let (d, p) = read(src, base, vocab)?;
            (d, p, describe(src))
        }
    })
}

fn single_input(model: &Model) -> Result<(&Input, Option<&Input>), String> {
    let data: Vec<&Input> = model.data_inputs().collect();
    let labels: Vec<&Input> = model.label_inputs().collect();
    match (data.as_slice(), labels.as_slice()) {
        ([x], []) => Ok((x, None)),
        ([x], [y]) => Ok((x, Some(y))),
        _ => Err(format!(
            "the model `{}` has {} data inputs and {} label inputs; nnc trains from one data source models with one input and at most one label input",
            model.name,
            data.len(),
            labels.len()
        )),
    }
}

/// Fits a data set to a model: reshapes samples of the right size,
/// converts element types, and checks shapes, classes and token ranges.
pub fn fit(model: &Model, mut d: Dataset, path: &Path) -> Result<Dataset, String> {
    let (x_in, y_in) = single_input(model)?;
    let x_sample = x_in.ty.shape.at(1)[1..].to_vec();
    if x_in.ty.dtype == DType::F32
        && let Tensor::I32(a) = &d.x
    {
        d.x = Tensor::F32(a.mapv(|v| v as f32));
    }
    if x_in.ty.dtype == DType::I32 && matches!(d.x, Tensor::F32(_)) {
        return Err(format!(
            "{}: the inputs are real numbers, but the model's input `{}` takes class (token) indices",
            path.display(),
            x_in.name
        ));
    }
    match y_in {
        Some(y_in) => {
            let y_sample = y_in.ty.shape.at(1)[1..].to_vec();
            if y_in.ty.dtype == DType::F32
                && y_in.classes.is_none()
                && let Tensor::I32(a) = &d.y
            {
                d.y = Tensor::F32(a.mapv(|v| v as f32));
                d.classes = None;
            }
            d = d
                .conform(path, &x_sample, &y_sample, y_in.classes)
                .map_err(|e| e.to_string())?;
        }
        None => {
            if d.x.sample_shape() != x_sample.as_slice()
                && let Some(x) = d.x.reshape_samples(&x_sample)
            {
                d.x = x;
            }
            if d.x.sample_shape() != x_sample.as_slice() {
                return Err(format!(
                    "{}: the inputs have per-sample shape {:?}, but the model's input `{}` expects {:?}",
                    path.display(),
                    d.x.sample_shape(),
                    x_in.name,
                    x_sample
                ));
            }
        }
    }
    if let (Some(c), Tensor::I32(a)) = (x_in.classes, &d.x)
        && let Some(bad) = a.iter().find(|&&v| v < 0 || v as usize >= c)
    {
        let why = match &d.vocab {
            Some(v) => format!(
                "the text has {} distinct characters but the model's input `{}` has classes {c}",
                v.len(),
                x_in.name
            ),
            None => format!("index {bad} is outside the model's classes 0..{c}"),
        };
        return Err(format!("{}: {why}", path.display()));
    }
    Ok(d)
}

/// `n` samples of learnable random data for a model: class `i % classes`
/// for sample `i`, inputs a fixed normal pattern per class plus noise (a
/// colour per channel for images, a value per feature otherwise; random
/// tokens for token inputs); float targets uniform in [0, 1).
pub fn synthetic(model: &Model, n: usize, seed: u64) -> Result<Dataset, String> {
    let (x_in, y_in) = single_input(model)?;
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5e7_7e71c);
    let classes = y_in.and_then(|y| y.classes);
    let x_shape = {
        let mut s = vec![n];
        s.extend_from_slice(&x_in.ty.shape.at(1)[1..]);
        s
    };
    let per: usize = x_shape[1..].iter().product();
    let labels: Vec<usize> = (0..n).map(|i| i % classes.unwrap_or(1).max(1)).collect();
    let bad = |e: ndarray::ShapeError| e.to_string();
    let x = if x_in.ty.dtype == DType::I32 {
        let c = x_in.classes.unwrap_or(2).max(1);
        let v: Vec<i32> = (0..n * per)
            .map(|_| rng.random_range(0..c) as i32)
            .collect();
        Tensor::I32(ArrayD::from_shape_vec(IxDyn(&x_shape), v).map_err(bad)?)
    } else {
        // Images [C, H, W] get one colour per class and channel, which
        // survives shifts, crops and flips; other inputs one value per feature.
        let image = x_shape.len() == 4;
        let plane = if image { x_shape[2] * x_shape[3] } else { 1 };
        let patterns: Vec<Vec<f32>> = (0..classes.unwrap_or(1).max(1))
            .map(|_| {
                let cells: Vec<f32> = (0..per / plane)
                    .map(|_| StandardNormal.sample(&mut rng))
                    .collect();
                (0..per).map(|i| cells[i / plane]).collect()
            })
            .collect();
        let mut v = Vec::with_capacity(n * per);
        for &c in &labels {
            for p in &patterns[c] {
                let noise: f32 = StandardNormal.sample(&mut rng);
                v.push(p + 0.5 * noise);
            }
        }
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(&x_shape), v).map_err(bad)?)
    };
    let y = match y_in {
        None => Tensor::F32(ArrayD::zeros(IxDyn(&[n]))),
        Some(y_in) => {
            let mut s = vec![n];
            s.extend_from_slice(&y_in.ty.shape.at(1)[1..]);
            let m: usize = s[1..].iter().product();
            match y_in.classes {
                Some(_) if y_in.ty.shape.rank() == 1 => Tensor::I32(
                    ArrayD::from_shape_vec(IxDyn(&s), labels.iter().map(|&l| l as i32).collect())
                        .map_err(bad)?,
                ),
                Some(c) => Tensor::I32(
                    ArrayD::from_shape_vec(
                        IxDyn(&s),
                        (0..n * m).map(|_| rng.random_range(0..c) as i32).collect(),
                    )
                    .map_err(bad)?,
                ),
                None => Tensor::F32(
                    ArrayD::from_shape_vec(IxDyn(&s), (0..n * m).map(|_| rng.random()).collect())
                        .map_err(bad)?,
                ),
            }
        }
    };
    Ok(Dataset {
        x,
        y,
        classes,
        vocab: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::check_source;
    use crate::syntax::FsLoader;

    fn model(src: &str) -> Model {
        let c = check_source("t.nn", src, &FsLoader, &Default::default());
        assert!(!c.has_errors(), "{}", c.report().render(false));
        c.models.into_iter().next().unwrap()
    }

    #[test]
    fn specs_parse() {
        assert_eq!(DataSpec::parse("synthetic"), Ok(DataSpec::Synthetic(1024)));
        assert!(DataSpec::parse("synthetic:0").is_err());
        assert_eq!(
            DataSpec::parse("a,b"),
            Ok(DataSpec::Idx("a".into(), "b".into()))
        );
        assert_eq!(DataSpec::parse("t.txt"), Ok(DataSpec::Text("t.txt".into())));
        assert!(
            DataSpec::parse("weird.bin")
                .unwrap_err()
                .contains("cannot tell")
        );
    }

    #[test]
    fn synthetic_data_fits_models() {
        let m = model(
            "model m { input x: [B, 1, 4, 4]  labels y: [B] classes 3\n logits = x |> flatten |> dense(3)\n loss = cross_entropy(logits, y) }\n train m { validation 0.25 }",
        );
        let s = load(&m, Path::new("."), Some(&DataSpec::Synthetic(40)), None).unwrap();
        assert_eq!(s.train.len(), 30);
        assert_eq!(s.validation.as_ref().map(Dataset::len), Some(10));
        assert_eq!(s.train.x.sample_shape(), &[1, 4, 4]);
        let t = model(
            "model t { input x: [B, 5] classes 7  labels y: [B, 5] classes 7\n logits = x |> embedding(4) |> dense(7)\n loss = cross_entropy(logits, y) }",
        );
        let d = synthetic(&t, 6, 1).unwrap();
        assert_eq!(d.x.shape(), &[6, 5]);
        assert_eq!(sequence_length(&t), Some(5));
    }

    #[test]
    fn missing_data_is_explained() {
        let m = model(
            "model m { input x: [B, 2]  labels y: [B] classes 2\n logits = x |> dense(2)\n loss = cross_entropy(logits, y) }",
        );
        let e = load(&m, Path::new("."), None, None).unwrap_err();
        assert!(e.contains("has no training data"), "{e}");
    }
}
