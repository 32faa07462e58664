//! Checkpoints: a model's parameters, persistent buffers, optimizer state and
//! training position in one safetensors file that PyTorch reads as a
//! `state_dict`.
//!
//! The layout (see `docs/checkpoints.md`):
//!
//! - every parameter under its `state_dict` name (`conv1.weight`), `f32`, in
//!   PyTorch's layout;
//! - every persistent buffer under its name (`bn1.running_mean`), `f32`, and
//!   for each batch norm a `<bn>.num_batches_tracked` `i64` scalar, so that
//!   `load_state_dict(strict=True)` accepts the weights;
//! - optimizer slots as `optim.<param>.<slot>` with `torch.optim`'s slot
//!   names (`exp_avg`, `momentum_buffer`, ...), `f32`;
//! - the training position and provenance in the file's metadata: format,
//!   model name, hash of the model source, step, epoch, batch within the
//!   epoch, seed, vocabulary of text models, and free-form entries.
//!
//! Files are written to a temporary file in the same directory, synced to
//! disk and renamed over the target, so a crash at any moment leaves either
//! the old checkpoint or the new one, never a torn file.
//!
//! ```
//! use ndarray::ArrayD;
//! use nnc::runtime::checkpoint::Checkpoint;
//!
//! let dir = std::env::temp_dir().join(format!("nnc-doc-ckpt-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("w.safetensors");
//! let mut c = Checkpoint::new("mlp");
//! c.params.push(("fc1.weight".into(), ArrayD::zeros(ndarray::IxDyn(&[4, 3]))));
//! c.step = 10;
//! c.save(&path)?;
//! let back = Checkpoint::load(&path)?;
//! assert_eq!(back.params, c.params);
//! assert_eq!(back.step, 10);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::ir::model::Model;

/// The value of the `format` metadata entry of files nnc writes.
pub const FORMAT: &str = "nnc-checkpoint/1";

/// Names of optimizer slots start with this.
pub const OPTIM_PREFIX: &str = "optim.";

/// Batch-norm step counters (PyTorch buffers nnc does not use) end with this.
pub const NUM_BATCHES_TRACKED: &str = ".num_batches_tracked";

/// Everything that can go wrong reading, writing or applying a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("cannot {action} {}: {source}", file.display())]
    Io {
        /// "read" or "write".
        action: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable safetensors file.
    #[error("{}: not a valid checkpoint: {message}", file.display())]
    Corrupt { file: PathBuf, message: String },
    /// The file's tensors do not match the model's.
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    /// Something else about the content is wrong (a dtype, a value).
    #[error("{}: {message}", file.display())]
    Invalid { file: PathBuf, message: String },
}

/// How a checkpoint differs from the model it is applied to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub file: PathBuf,
    /// The model it was applied to.
    pub model: String,
    /// The model the file says it was written for.
    pub written_for: Option<String>,
    /// In the model, not in the file.
    pub missing: Vec<String>,
    /// In the file, not in the model.
    pub unexpected: Vec<String>,
    /// (name, shape in the file, shape in the model).
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mismatch_message(
            &self.file,
            &self.model,
            self.written_for.as_deref(),
            &self.missing,
            &self.unexpected,
            &self.misshaped,
        ))
    }
}

fn shape_str(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        let _ = write!(s, " and {} more", names.len() - SHOWN);
    }
    s
}

fn mismatch_message(
    file: &Path,
    model: &str,
    written_for: Option<&str>,
    missing: &[String],
    unexpected: &[String],
    misshaped: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut m = format!("{} does not fit the model `{model}`", file.display());
    if let Some(w) = written_for.filter(|w| *w != model) {
        let _ = write!(m, " (it was written for the model `{w}`)");
    }
    m.push(':');
    if !missing.is_empty() {
        let _ = write!(
            m,
            "\n  missing from the file ({}): {}",
            missing.len(),
            list(missing)
        );
    }
    if !unexpected.is_empty() {
        let _ = write!(
            m,
            "\n  not in the model ({}): {}",
            unexpected.len(),
            list(unexpected)
        );
    }
    for (name, file_shape, model_shape) in misshaped.iter().take(8) {
        let _ = write!(
            m,
            "\n  wrong shape: {name} is {} in the file but {} in the model",
            shape_str(file_shape),
            shape_str(model_shape)
        );
    }
    if misshaped.len() > 8 {
        let _ = write!(m, "\n  and {} more of the wrong shape", misshaped.len() - 8);
    }
    m
}

/// The contents of a checkpoint, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The model the weights belong to.
    pub model: String,
    /// A hash of the model's source text (see [`source_hash`]); empty if unknown.
    pub source_hash: String,
    /// Trainable parameters by `state_dict` name, in the model's order.
    pub params: Vec<(String, ArrayD<f32>)>,
    /// Persistent buffers (running statistics, carried recurrent state).
    pub states: Vec<(String, ArrayD<f32>)>,
    /// Optimizer slots, named `optim.<param>.<slot>`.
    pub optimizer: Vec<(String, ArrayD<f32>)>,
    /// Optimizer steps taken (also written as `num_batches_tracked`).
    pub step: u64,
    /// Epochs completed.
    pub epoch: u64,
    /// Batches of the current (incomplete) epoch already trained; 0 at an
    /// epoch boundary.
    pub batch_in_epoch: u64,
    /// The run's seed: with `epoch`, `batch_in_epoch` and `step` it fixes
    /// every later random draw (shuffle, augmentation, dropout).
    pub seed: u64,
    /// The characters of a text model's vocabulary, in index order.
    pub vocab: Option<Vec<char>>,
    /// Further metadata (training history, optimizer name, ...).
    pub extra: BTreeMap<String, String>,
}

impl Checkpoint {
    /// An empty checkpoint for the model `model`.
    pub fn new(model: &str) -> Checkpoint {
        Checkpoint {
            model: model.to_string(),
            source_hash: String::new(),
            params: Vec::new(),
            states: Vec::new(),
            optimizer: Vec::new(),
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            seed: 0,
            vocab: None,
            extra: BTreeMap::new(),
        }
    }

    /// The file's bytes in safetensors format.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let mut meta: HashMap<String, String> = HashMap::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("model".into(), self.model.clone());
        meta.insert("source_hash".into(), self.source_hash.clone());
        meta.insert("step".into(), self.step.to_string());
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("batch_in_epoch".into(), self.batch_in_epoch.to_string());
        meta.insert("seed".into(), self.seed.to_string());
        if let Some(v) = &self.vocab {
            meta.insert("vocab".into(), v.iter().collect());
        }
        for (k, v) in &self.extra {
            meta.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut blobs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, a) in self
            .params
            .iter()
            .chain(&self.states)
            .chain(&self.optimizer)
        {
            let bytes: Vec<u8> = a.iter().flat_map(|v| v.to_le_bytes()).collect();
            blobs.push((name.clone(), Dtype::F32, a.shape().to_vec(), bytes));
        }
        let tracked = (self.step as i64).to_le_bytes().to_vec();
        for (name, _) in &self.states {
            if let Some(bn) = name.strip_suffix(".running_mean") {
                blobs.push((
                    format!("{bn}{NUM_BATCHES_TRACKED}"),
                    Dtype::I64,
                    Vec::new(),
                    tracked.clone(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (name, ..) in &blobs {
            if !seen.insert(name.as_str()) {
                return Err(format!("two tensors are named `{name}`"));
            }
        }
        let views: Vec<(String, TensorView<'_>)> = blobs
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| format!("tensor `{name}`: {e}"))
            })
            .collect::<Result<_, _>>()?;
        safetensors::serialize(views, Some(meta)).map_err(|e| e.to_string())
    }

    /// Writes the checkpoint to `path` atomically: a temporary file in the
    /// same directory, synced, then renamed over `path`.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let bytes = self
            .to_bytes()
            .map_err(|message| CheckpointError::Invalid {
                file: path.to_path_buf(),
                message,
            })?;
        write_atomic(path, &bytes)
    }

    /// Reads a checkpoint. Files written by other tools (a PyTorch
    /// `state_dict` saved with `safetensors.torch.save_file`) load too:
    /// their tensors become parameters and buffers, sorted out when the
    /// checkpoint is applied to a model (see [`Checkpoint::fit`]).
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            action: "read",
            file: path.to_path_buf(),
            source,
        })?;
        Checkpoint::from_bytes(path, &bytes)
    }

    /// Parses the bytes of a checkpoint file; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        let corrupt = |message: String| CheckpointError::Corrupt {
            file: path.to_path_buf(),
            message,
        };
        if bytes.len() < 8 {
            return Err(corrupt(format!(
                "it has {} bytes, fewer than the 8 of a safetensors header length (empty or truncated file)",
                bytes.len()
            )));
        }
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&bytes[..8]);
        let header = u64::from_le_bytes(len8);
        if header > (bytes.len() as u64).saturating_sub(8) {
            return Err(corrupt(format!(
                "truncated or not a safetensors file: its header claims {header} bytes but the file has only {} after the length",
                bytes.len() - 8
            )));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(explain(&e)))?;
        let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(explain(&e)))?;
        let meta: HashMap<String, String> = metadata.metadata().clone().unwrap_or_default();
        let mut c = Checkpoint::new(meta.get("model").map_or("", String::as_str));
        c.source_hash = meta.get("source_hash").cloned().unwrap_or_default();
        let num = |key: &str| -> Result<u64, CheckpointError> {
            match meta.get(key) {
                None => Ok(0),
                Some(v) => v.parse().map_err(|_| CheckpointError::Invalid {
                    file: path.to_path_buf(),
                    message: format!("metadata `{key}` is `{v}`, not a whole number"),
                }),
            }
        };
        c.step = num("step")?;
        c.epoch = num("epoch")?;
        c.batch_in_epoch = num("batch_in_epoch")?;
        c.seed = num("seed")?;
        c.vocab = meta.get("vocab").map(|v| v.chars().collect());
        for (k, v) in &meta {
            if !matches!(
                k.as_str(),
                "format"
                    | "model"
                    | "source_hash"
                    | "step"
                    | "epoch"
                    | "batch_in_epoch"
                    | "seed"
                    | "vocab"
            ) {
                c.extra.insert(k.clone(), v.clone());
            }
        }
        // Tensors in file order (the order they were written in).
        let mut tensors: Vec<(String, TensorView<'_>)> = st.tensors();
        tensors
            .sort_by_key(|(name, _)| metadata.info(name).map_or(usize::MAX, |i| i.data_offsets.0));
        for (name, view) in tensors {
            if name.ends_with(NUM_BATCHES_TRACKED) {
                continue;
            }
            let a = to_f32(&view).map_err(|message| CheckpointError::Invalid {
                file: path.to_path_buf(),
                message: format!("tensor `{name}`: {message}"),
            })?;
            if name.starts_with(OPTIM_PREFIX) {
                c.optimizer.push((name, a));
            } else {
                // Sorted into parameters and buffers by `fit`; until then,
                // everything not optimizer state counts as a parameter.
                c.params.push((name, a));
            }
        }
        Ok(c)
    }

    /// A tensor of the checkpoint by name (parameter, buffer or optimizer slot).
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.params
            .iter()
            .chain(&self.states)
            .chain(&self.optimizer)
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Sorts the checkpoint's tensors into the model's parameters and
    /// persistent buffers, in the model's order, and checks that every one
    /// is present with the model's shape. `path` names the file in errors.
    ///
    /// Buffers whose shape has the batch axis (the carried state of a
    /// stateful recurrence) are allowed any batch size. Optimizer slots are
    /// not checked here (see [`Checkpoint::optimizer`]).
    pub fn fit(mut self, model: &Model, path: &Path) -> Result<Checkpoint, CheckpointError> {
        let mut by_name: HashMap<String, ArrayD<f32>> =
            self.params.drain(..).chain(self.states.drain(..)).collect();
        let (mut missing, mut misshaped) = (Vec::new(), Vec::new());
        let mut params = Vec::new();
        for p in &model.params {
            let want = p.shape.at(1);
            match by_name.remove(&p.name) {
                None => missing.push(p.name.clone()),
                Some(a) if a.shape() != want.as_slice() => {
                    misshaped.push((p.name.clone(), a.shape().to_vec(), want))
                }
                Some(a) => params.push((p.name.clone(), a)),
            }
        }
        let mut states = Vec::new();
        for s in &model.states {
            let dims = &s.ty.shape.0;
            let fits = |a: &ArrayD<f32>| {
                a.ndim() == dims.len()
                    && dims
                        .iter()
                        .zip(a.shape())
                        .all(|(d, &n)| d.batch || d.known() == Some(n))
            };
            match by_name.remove(&s.name) {
                None => missing.push(s.name.clone()),
                Some(a) if !fits(&a) => {
                    misshaped.push((s.name.clone(), a.shape().to_vec(), s.ty.shape.at(1)))
                }
                Some(a) => states.push((s.name.clone(), a)),
            }
        }
        let mut unexpected: Vec<String> = by_name.into_keys().collect();
        unexpected.sort();
        if !missing.is_empty() || !unexpected.is_empty() || !misshaped.is_empty() {
            return Err(CheckpointError::Mismatch(Box::new(Mismatch {
                file: path.to_path_buf(),
                model: model.name.clone(),
                written_for: (!self.model.is_empty()).then(|| self.model.clone()),
                missing,
                unexpected,
                misshaped,
            })));
        }
        self.params = params;
        self.states = states;
        Ok(self)
    }
}

/// Converts a stored tensor to `f32` (floats of any width, integers).
fn to_f32(view: &TensorView<'_>) -> Result<ArrayD<f32>, String> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => chunks::<4>(data).map(f32::from_le_bytes).collect(),
        Dtype::F64 => chunks::<8>(data)
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
        Dtype::F16 => chunks::<2>(data)
            .map(|b| f16_to_f32(u16::from_le_bytes(b)))
            .collect(),
        Dtype::BF16 => chunks::<2>(data)
            .map(|b| f32::from_bits((u16::from_le_bytes(b) as u32) << 16))
            .collect(),
        Dtype::I64 => chunks::<8>(data)
            .map(|b| i64::from_le_bytes(b) as f32)
            .collect(),
        Dtype::I32 => chunks::<4>(data)
            .map(|b| i32::from_le_bytes(b) as f32)
            .collect(),
        other => return Err(format!("unsupported element type {other:?}")),
    };
    ArrayD::from_shape_vec(IxDyn(view.shape()), values).map_err(|e| e.to_string())
}

fn chunks<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|c| {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        b
    })
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f32;
    match exp {
        0 => sign * frac * 2f32.powi(-24),
        31 if frac == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f32.powi(e - 15),
    }
}

/// A safetensors error in words, with a hint where the cause is likely.
fn explain(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::MetadataIncompleteBuffer | SafeTensorError::InvalidOffset(_) => {
            format!("{e}: the file is truncated or its header does not match its data")
        }
        SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength => {
            format!("{e}: the file is truncated or not a safetensors file")
        }
        SafeTensorError::InvalidHeader(_) | SafeTensorError::InvalidHeaderDeserialization(_) => {
            format!("{e}: not a safetensors file, or a corrupt one")
        }
        _ => e.to_string(),
    }
}

/// A stable hash of a model's source text (FNV-1a, 64 bits, hex).
pub fn source_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("fnv1a64:{h:016x}")
}

/// Writes `bytes` to `path` so that `path` holds either its old content or
/// all of the new one: temporary file in the same directory, `fsync`,
/// rename, `fsync` of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let io = |source: std::io::Error| CheckpointError::Io {
        action: "write",
        file: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .ok_or_else(|| io(std::io::Error::other("the path names no file")))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every platform can open a directory.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::check_source;
    use crate::syntax::FsLoader;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nnc-ckpt-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn model(src: &str) -> Model {
        let c = check_source("t.nn", src, &FsLoader, &Default::default());
        assert!(!c.has_errors(), "{}", c.report().render(false));
        c.models.into_iter().next().unwrap()
    }

    const BN: &str = "model m { input x: [B, 2, 4, 4]  labels y: [B] classes 3\n logits = x |> conv2d(4, kernel: 3) |> batchnorm as bn |> relu |> flatten |> dense(3) as fc\n loss = cross_entropy(logits, y) }";

    fn full(m: &Model) -> Checkpoint {
        let mut c = Checkpoint::new(&m.name);
        for p in &m.params {
            let s = p.shape.at(1);
            let n: usize = s.iter().product();
            c.params.push((
                p.name.clone(),
                ArrayD::from_shape_vec(IxDyn(&s), (0..n).map(|i| i as f32 * 0.5).collect())
                    .unwrap(),
            ));
        }
        for s in &m.states {
            c.states.push((
                s.name.clone(),
                ArrayD::from_elem(IxDyn(&s.ty.shape.at(1)), 2.0),
            ));
        }
        c.optimizer.push((
            "optim.fc.weight.exp_avg".into(),
            ArrayD::from_elem(IxDyn(&[3, 16]), 0.25),
        ));
        c.step = 42;
        c.epoch = 3;
        c.batch_in_epoch = 5;
        c.seed = 7;
        c.vocab = Some(vec!['\n', ' ', 'a', 'é']);
        c.source_hash = source_hash("model m {}");
        c.extra.insert("history".into(), "[]".into());
        c
    }

    #[test]
    fn round_trip_with_metadata_and_counters() {
        let m = model(BN);
        let c = full(&m);
        let d = tmp("rt");
        let p = d.join("c.safetensors");
        c.save(&p).unwrap();
        let back = Checkpoint::load(&p).unwrap().fit(&m, &p).unwrap();
        assert_eq!(back, c);
        // PyTorch's batch-norm counter is there, as an i64 scalar.
        let bytes = std::fs::read(&p).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("bn.num_batches_tracked").unwrap();
        assert_eq!(t.dtype(), Dtype::I64);
        assert!(t.shape().is_empty());
        assert_eq!(t.data(), &42i64.to_le_bytes());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn wrong_model_names_the_differences() {
        let m = model(BN);
        let other = model(
            "model o { input x: [B, 2, 4, 4]  labels y: [B] classes 5\n logits = x |> conv2d(4, kernel: 3) |> relu |> flatten |> dense(5) as fc\n loss = cross_entropy(logits, y) }",
        );
        let d = tmp("mm");
        let p = d.join("c.safetensors");
        full(&m).save(&p).unwrap();
        let e = Checkpoint::load(&p).unwrap().fit(&other, &p).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("does not fit the model `o`"), "{s}");
        assert!(s.contains("written for the model `m`"), "{s}");
        assert!(
            s.contains("not in the model (4): bn.bias, bn.running_mean"),
            "{s}"
        );
        assert!(
            s.contains("wrong shape: fc.weight is [3, 16] in the file but [5, 16] in the model"),
            "{s}"
        );
        let CheckpointError::Mismatch(m) = e else {
            panic!()
        };
        assert!(m.missing.is_empty());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn corrupt_and_truncated_files() {
        let m = model(BN);
        let d = tmp("bad");
        let p = d.join("c.safetensors");
        full(&m).save(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
            let q = d.join(format!("cut{cut}.safetensors"));
            std::fs::write(&q, &bytes[..cut]).unwrap();
            let e = Checkpoint::load(&q).unwrap_err();
            assert!(matches!(e, CheckpointError::Corrupt { .. }), "{cut}: {e}");
            let s = e.to_string();
            assert!(s.contains(&format!("cut{cut}.safetensors")), "{s}");
            assert!(s.contains("truncated"), "{cut}: {s}");
        }
        let q = d.join("text.safetensors");
        std::fs::write(&q, b"\x10\x00\x00\x00\x00\x00\x00\x00this is not json").unwrap();
        let e = Checkpoint::load(&q).unwrap_err();
        assert!(e.to_string().contains("not a safetensors file"), "{e}");
        let e = Checkpoint::load(&d.join("absent.safetensors")).unwrap_err();
        assert!(e.to_string().starts_with("cannot read"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn foreign_files_and_dtypes_load() {
        // A file as PyTorch writes it: no metadata, f64 and i64 tensors.
        let m = model(
            "model m { input x: [B, 2]  labels y: [B] classes 2\n logits = x |> dense(2) as fc\n loss = cross_entropy(logits, y) }",
        );
        let w: Vec<u8> = [1.0f64, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [0.5f32, -0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let bytes = safetensors::serialize(
            vec![
                (
                    "fc.weight",
                    TensorView::new(Dtype::F64, vec![2, 2], &w).unwrap(),
                ),
                ("fc.bias", TensorView::new(Dtype::F32, vec![2], &b).unwrap()),
            ],
            None,
        )
        .unwrap();
        let d = tmp("foreign");
        let p = d.join("torch.safetensors");
        std::fs::write(&p, bytes).unwrap();
        let c = Checkpoint::load(&p).unwrap().fit(&m, &p).unwrap();
        assert_eq!(c.params[0].0, "fc.weight");
        assert_eq!(
            c.params[0].1.iter().copied().collect::<Vec<_>>(),
            [1.0, 2.0, 3.0, 4.0]
        );
        assert_eq!(c.step, 0);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        std::fs::remove_dir_all(&d).ok();
    }
}
