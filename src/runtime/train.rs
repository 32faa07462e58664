//! The training driver behind `nnc train`: epochs of seeded shuffled
//! mini-batches with augmentation, validation each epoch on the compiled
//! inference graph, a checkpoint every epoch and on interruption, exact
//! resumption, and a clean stop on a non-finite loss.
//!
//! The driver reports progress to an [`Observer`] (the command line draws
//! progress bars with it) and never prints.
//!
//! Every random draw is a function of the run's seed and its position:
//! epoch `e` shuffles with [`shuffle_seed`]`(seed, e)`, batch `b` of it is
//! augmented with [`augment_seed`]`(seed, e, b)`, and dropout at optimizer
//! step `s` uses [`crate::rng::step_seed`]`(seed, s)`. So a run resumed from
//! a checkpoint (which stores the seed, epoch, batch and step) draws exactly
//! what the uninterrupted run would have.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ndarray::ArrayD;
use serde_json::{Value, json};

use super::checkpoint::{self, Checkpoint, CheckpointError};
use super::data::augment::Augment;
use super::data::{Dataset, Tensor, split};
use super::executable::InputData;
use super::session::{Session, SessionError, recipe_of};
use super::source::{self, DataSpec, Splits};
use crate::diag::{Diagnostic, Report, Sources, Span};
use crate::ir::lower::LowerOptions;
use crate::ir::model::{InputKind, Mode, Model};
use crate::ir::ops::{Op, Unary};
use crate::ir::train::Augment as AugmentSpec;
use crate::ir::types::DType;

/// A model read from a `.nn` file, lowered for training and for inference.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: Model,
    pub infer: Model,
    /// The file's text, for the checkpoint's source hash.
    pub source: String,
    pub path: PathBuf,
    /// Warnings of the checker (errors make loading fail).
    pub report: Report,
}

impl LoadedModel {
    /// The directory relative paths of the `train` block start from.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// [`checkpoint::source_hash`] of the file.
    pub fn source_hash(&self) -> String {
        checkpoint::source_hash(&self.source)
    }
}

/// A report with one error and no source line (unreadable file).
pub fn plain_report(name: &str, message: String) -> Report {
    let mut sources = Sources::new();
    let id = sources.add(name, "");
    Report::new(
        Arc::new(sources),
        vec![Diagnostic::error(Span::new(id, 0, 0), message)],
    )
}

/// Reads, checks and lowers the model `name` (or the first) of a file, in
/// training and inference mode.
pub fn load_model(path: &Path, name: Option<&str>) -> Result<LoadedModel, Report> {
    let shown = path.display().to_string();
    let text = crate::syntax::Loader::load(&crate::syntax::FsLoader, path)
        .map_err(|e| plain_report(&shown, format!("cannot read {shown}: {e}")))?;
    load_source(&shown, &text, name)
}

/// Like [`load_model`] for source text; `name` is the file name used in
/// messages and for imports.
pub fn load_source(file: &str, text: &str, name: Option<&str>) -> Result<LoadedModel, Report> {
    let lower = |mode| {
        let opts = LowerOptions {
            mode,
            ..LowerOptions::default()
        };
        crate::frontend::check_source(file, text, &crate::syntax::FsLoader, &opts)
    };
    let train = lower(Mode::Train);
    let report = train.report();
    if train.has_errors() {
        return Err(report);
    }
    let pick = |c: &crate::frontend::Checked| c.model(name).cloned();
    let model = pick(&train).ok_or_else(|| {
        plain_report(
            file,
            match name {
                Some(n) => format!("{file} has no model `{n}`"),
                None => format!("{file} defines no model"),
            },
        )
    })?;
    let infer_checked = lower(Mode::Infer);
    if infer_checked.has_errors() {
        return Err(infer_checked.report());
    }
    let infer = pick(&infer_checked)
        .ok_or_else(|| plain_report(file, format!("{file}: the inference model is missing")))?;
    Ok(LoadedModel {
        model,
        infer,
        source: text.to_string(),
        path: PathBuf::from(file),
        report,
    })
}

/// What a model's first output is, for accuracy and predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Scores over `classes` along the last axis (softmax cross-entropy).
    Classes(usize),
    /// Probabilities from a sigmoid against 0/1 targets.
    Binary,
    /// Anything else: no accuracy.
    Regression,
}

/// What the model's output means, judged from its labels and last op.
pub fn task_of(model: &Model) -> Task {
    let labels = model.label_inputs().next();
    if let Some(c) = labels.and_then(|y| y.classes) {
        return Task::Classes(c);
    }
    let out = model.outputs.first().map(|(_, n)| *n);
    let sigmoid = out.is_some_and(|n| {
        matches!(
            model.graph.nodes.get(n.0 as usize).map(|n| &n.op),
            Some(Op::Unary(Unary::Sigmoid))
        )
    });
    if labels.is_some() && sigmoid {
        Task::Binary
    } else {
        Task::Regression
    }
}

/// Running sums of loss and accuracy over batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// Σ loss × samples.
    pub loss_sum: f64,
    pub samples: usize,
    pub correct: usize,
    /// Predictions scored for accuracy (samples × positions).
    pub scored: usize,
    /// Confusion counts `[true][predicted]` when requested.
    pub confusion: Option<Vec<Vec<usize>>>,
}

impl Tally {
    /// A tally that also counts a confusion matrix over `classes`.
    pub fn with_confusion(classes: usize) -> Tally {
        Tally {
            confusion: Some(vec![vec![0; classes]; classes]),
            ..Tally::default()
        }
    }

    pub fn loss(&self) -> f64 {
        if self.samples == 0 {
            f64::NAN
        } else {
            self.loss_sum / self.samples as f64
        }
    }

    pub fn accuracy(&self) -> Option<f64> {
        (self.scored > 0).then(|| self.correct as f64 / self.scored as f64)
    }

    /// Adds a batch: its mean loss, its `b` samples, the model's output and
    /// the labels.
    pub fn add(&mut self, loss: f32, b: usize, task: Task, output: Option<&[f32]>, y: &Tensor) {
        self.loss_sum += loss as f64 * b as f64;
        self.samples += b;
        let Some(out) = output else { return };
        match (task, y) {
            (Task::Classes(c), Tensor::I32(y)) if c > 0 && out.len() == y.len() * c => {
                for (row, &label) in out.chunks_exact(c).zip(y.iter()) {
                    let pred = argmax(row);
                    self.scored += 1;
                    if pred as i32 == label {
                        self.correct += 1;
                    }
                    if let Some(m) = &mut self.confusion
                        && let Some(r) = usize::try_from(label).ok().and_then(|l| m.get_mut(l))
                    {
                        r[pred] += 1;
                    }
                }
            }
            (Task::Binary, Tensor::F32(y)) if out.len() == y.len() => {
                for (&p, &t) in out.iter().zip(y.iter()) {
                    self.scored += 1;
                    if (p > 0.5) == (t > 0.5) {
                        self.correct += 1;
                    }
                }
            }
            _ => {}
        }
    }

    fn to_json(&self) -> Value {
        json!({"loss_sum": self.loss_sum, "samples": self.samples, "correct": self.correct, "scored": self.scored})
    }

    fn from_json(v: &Value) -> Tally {
        Tally {
            loss_sum: v["loss_sum"].as_f64().unwrap_or(0.0),
            samples: v["samples"].as_u64().unwrap_or(0) as usize,
            correct: v["correct"].as_u64().unwrap_or(0) as usize,
            scored: v["scored"].as_u64().unwrap_or(0) as usize,
            confusion: None,
        }
    }
}

/// The index of the largest value (the first of equals; NaN never wins).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Softmax of one row of scores.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|&v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// Contiguous input buffers for one batch, in the model's input order.
pub struct Feed {
    f32s: Vec<Vec<f32>>,
    i32s: Vec<Vec<i32>>,
    kinds: Vec<DType>,
}

impl Feed {
    /// Buffers for a model's inputs: `x` for the data input, `y` for the
    /// labels (a zero-filled dummy when `y` is `None`), `b` samples.
    pub fn new(model: &Model, x: &Tensor, y: Option<&Tensor>, b: usize) -> Feed {
        let mut feed = Feed {
            f32s: Vec::new(),
            i32s: Vec::new(),
            kinds: Vec::new(),
        };
        for inp in &model.inputs {
            let t = match inp.kind {
                InputKind::Data => Some(x),
                InputKind::Labels => y,
            };
            let n = inp.ty.shape.numel_at(b).unwrap_or(0);
            match inp.ty.dtype {
                DType::F32 => feed.f32s.push(match t {
                    Some(Tensor::F32(a)) => flat(a),
                    Some(Tensor::I32(a)) => a.iter().map(|&v| v as f32).collect(),
                    None => vec![0.0; n],
                }),
                DType::I32 => feed.i32s.push(match t {
                    Some(Tensor::I32(a)) => flat(a),
                    Some(Tensor::F32(a)) => a.iter().map(|&v| v as i32).collect(),
                    None => vec![0; n],
                }),
            }
            feed.kinds.push(inp.ty.dtype);
        }
        feed
    }

    /// The buffers as the session takes them.
    pub fn inputs(&self) -> Vec<InputData<'_>> {
        let (mut f, mut i) = (self.f32s.iter(), self.i32s.iter());
        self.kinds
            .iter()
            .filter_map(|k| match k {
                DType::F32 => f.next().map(|v| InputData::F32(v)),
                DType::I32 => i.next().map(|v| InputData::I32(v)),
            })
            .collect()
    }
}

fn flat<T: Clone>(a: &ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().cloned().collect(),
    }
}

/// The result of evaluating a model on a data set.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub samples: usize,
    /// `[true][predicted]` counts, for classifiers with `[N]` labels.
    pub confusion: Option<Vec<Vec<usize>>>,
}

/// Runs the compiled inference graph over `data` in batches of the
/// session's size (the last one smaller).
pub fn evaluate(
    session: &mut Session,
    data: &Dataset,
    confusion: bool,
) -> Result<Evaluation, SessionError> {
    let task = task_of(&session.infer_model);
    let mut tally = match task {
        Task::Classes(c) if confusion && data.y.shape().len() == 1 => Tally::with_confusion(c),
        _ => Tally::default(),
    };
    let n = data.len();
    let b = session.batch;
    let mut start = 0;
    while start < n {
        let end = (start + b).min(n);
        let (x, y) = (data.x.rows(start, end), data.y.rows(start, end));
        let feed = Feed::new(&session.infer_model, &x, Some(&y), end - start);
        let r = session.infer(&feed.inputs(), end - start)?;
        tally.add(
            r.loss,
            end - start,
            task,
            r.outputs.first().map(Vec::as_slice),
            &y,
        );
        start = end;
    }
    Ok(Evaluation {
        loss: tally.loss(),
        accuracy: tally.accuracy(),
        samples: tally.samples,
        confusion: tally.confusion,
    })
}

/// SplitMix64's finaliser: mixes a word into a well-spread one.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed of epoch `epoch`'s shuffle.
pub fn shuffle_seed(seed: u64, epoch: usize) -> u64 {
    mix(seed ^ mix(0x5348_5546 ^ epoch as u64))
}

/// The seed of the augmentation of batch `batch` of epoch `epoch`.
pub fn augment_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    mix(seed ^ mix(0x4155_4745 ^ mix(epoch as u64) ^ (batch as u64).rotate_left(32)))
}

/// The augmentation a `train` block asks for.
pub fn augment_of(specs: &[AugmentSpec]) -> Augment {
    let mut a = Augment::default();
    for s in specs {
        match *s {
            AugmentSpec::Shift(k) => a.shift = k,
            AugmentSpec::Crop(p) => a.crop = p,
            AugmentSpec::Flip(p) => a.flip = p,
            AugmentSpec::Noise(s) => a.noise = s as f32,
        }
    }
    a
}

/// Settings of a run; `None` means "as the train block says".
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    pub epochs: Option<usize>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    /// Threads for compiled code (default: all cores).
    pub threads: Option<usize>,
    /// Data instead of the train block's.
    pub data: Option<DataSpec>,
    /// Where checkpoints go (default: `<model file stem>.safetensors`).
    pub out: Option<PathBuf>,
    /// A checkpoint to continue from; its epochs, batch size, learning rate
    /// and seed are the defaults then.
    pub resume: Option<PathBuf>,
    /// Stop (as if interrupted) after this many optimizer steps in all.
    pub stop_after: Option<usize>,
}

/// The plan of a run, told to the observer before the first batch.
#[derive(Debug, Clone)]
pub struct Plan {
    pub model: String,
    pub data: String,
    pub train_samples: usize,
    pub validation_samples: usize,
    pub batch: usize,
    pub epochs: usize,
    pub batches_per_epoch: usize,
    pub threads: usize,
    pub optimizer: String,
    pub parameters: usize,
    pub out: PathBuf,
    /// Where a resumed run starts: (epoch, batch) 0-based.
    pub start: Option<(usize, usize)>,
}

/// Progress within an epoch.
#[derive(Debug, Clone)]
pub struct BatchProgress {
    /// 0-based epoch.
    pub epoch: usize,
    /// Batches of this epoch done (1-based count).
    pub batch: usize,
    pub batches: usize,
    pub step: usize,
    /// The epoch's mean loss so far.
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub samples_per_sec: f64,
}

/// The record of one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    pub step: usize,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f64,
    pub samples_per_sec: f64,
    pub seconds: f64,
}

impl EpochRecord {
    /// One JSON object (a line of `--log`).
    pub fn to_json(&self) -> Value {
        let num = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
        let opt = |v: Option<f64>| v.map_or(Value::Null, num);
        json!({
            "epoch": self.epoch,
            "step": self.step,
            "train_loss": num(self.train_loss),
            "train_accuracy": opt(self.train_accuracy),
            "val_loss": opt(self.val_loss),
            "val_accuracy": opt(self.val_accuracy),
            "lr": num(self.lr),
            "samples_per_sec": num(self.samples_per_sec),
            "seconds": num(self.seconds),
        })
    }

    fn from_json(v: &Value) -> EpochRecord {
        let f = |k: &str| v[k].as_f64();
        EpochRecord {
            epoch: v["epoch"].as_u64().unwrap_or(0) as usize,
            step: v["step"].as_u64().unwrap_or(0) as usize,
            train_loss: f("train_loss").unwrap_or(f64::NAN),
            train_accuracy: f("train_accuracy"),
            val_loss: f("val_loss"),
            val_accuracy: f("val_accuracy"),
            lr: f("lr").unwrap_or(f64::NAN),
            samples_per_sec: f("samples_per_sec").unwrap_or(0.0),
            seconds: f("seconds").unwrap_or(0.0),
        }
    }
}

/// Receives a run's progress. Every method has an empty default.
pub trait Observer {
    fn start(&mut self, _plan: &Plan) {}
    fn epoch_start(&mut self, _epoch: usize, _batches: usize, _done: usize) {}
    fn batch(&mut self, _p: &BatchProgress) {}
    fn validating(&mut self, _epoch: usize) {}
    fn epoch_end(&mut self, _r: &EpochRecord) {}
    fn checkpoint(&mut self, _path: &Path) {}
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// How a run ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Finished,
    /// Stopped by the stop flag (Ctrl-C) or `stop_after`; a checkpoint was saved.
    Interrupted,
    /// The checkpoint had already done every epoch.
    NothingToDo,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub ending: Ending,
    pub history: Vec<EpochRecord>,
    pub steps: usize,
    pub checkpoint: PathBuf,
    pub seconds: f64,
    pub train_samples: usize,
    pub validation_samples: usize,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The loss became NaN or infinite.
    #[error(
        "the loss is {loss} at step {step} (epoch {epoch}, batch {batch} of {batches}); training stopped. {}\nhelp: lower the learning rate (--lr) or clip gradients (`clip norm(1)` in the train block)",
        match checkpoint {
            Some((p, e)) => format!("The last good checkpoint, {} (epoch {e}), is kept.", p.display()),
            None => "No checkpoint was written (none was complete before this).".to_string(),
        }
    )]
    NonFinite {
        loss: f32,
        /// 1-based optimizer step.
        step: usize,
        /// 1-based epoch and batch.
        epoch: usize,
        batch: usize,
        batches: usize,
        checkpoint: Option<(PathBuf, usize)>,
    },
}

/// The default checkpoint path for a model file: its stem, `.safetensors`,
/// in the working directory.
pub fn default_out(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    PathBuf::from(format!("{stem}.safetensors"))
}

/// Trains `m` as its train block and `opts` say. `stop` is polled after
/// every batch (set it from a Ctrl-C handler): the run then saves a
/// checkpoint and returns [`Ending::Interrupted`].
pub fn train(
    m: &LoadedModel,
    opts: &TrainOptions,
    stop: &AtomicBool,
    obs: &mut dyn Observer,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let mut model = m.model.clone();
    let mut infer = m.infer.clone();
    let resume = match &opts.resume {
        Some(p) => {
            let c = Checkpoint::load(p)?.fit(&model, p)?;
            Some((p.clone(), c))
        }
        None => None,
    };
    // The seed: the checkpoint's when resuming (to draw what the first run
    // would have), else the flag's or the train block's.
    let block_seed = model.train.as_ref().map_or(0, |t| t.seed);
    let seed = match (&resume, opts.seed) {
        (Some((_, c)), s) => {
            if let Some(s) = s.filter(|&s| s != c.seed) {
                obs.note(&format!(
                    "--seed {s} ignored: the run being resumed used seed {}",
                    c.seed
                ));
            }
            c.seed
        }
        (None, Some(s)) => s,
        (None, None) => block_seed,
    };
    // A resumed run keeps the epochs, batch size and learning rate it was
    // started with, unless flags say otherwise.
    let saved = |key: &str| {
        resume
            .as_ref()
            .and_then(|(_, c)| c.extra.get(key))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let lr = opts.lr.or_else(|| saved("lr"));
    let saved_epochs = saved("epochs").map(|v| v as usize);
    let saved_batch = saved("batch").map(|v| v as usize);
    for mm in [&mut model, &mut infer] {
        let t = mm
            .train
            .get_or_insert_with(|| crate::ir::train::TrainConfig::new(mm.name.clone(), mm.span));
        t.seed = seed;
        if let Some(lr) = lr {
            t.optimizer.lr = lr;
        }
    }
    let cfg = model
        .train
        .clone()
        .unwrap_or_else(|| crate::ir::train::TrainConfig::new(model.name.clone(), model.span));
    let vocab = resume.as_ref().and_then(|(_, c)| c.vocab.clone());
    let Splits {
        train: data,
        validation,
        description,
    } = source::load(&model, &m.base_dir(), opts.data.as_ref(), vocab.as_deref())
        .map_err(RunError::Data)?;
    let batch = opts.batch.or(saved_batch).unwrap_or(cfg.batch).max(1);
    let epochs = opts.epochs.or(saved_epochs).unwrap_or(cfg.epochs);
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let n = data.len();
    let batches = n.div_ceil(batch);
    let mut recipe = recipe_of(&model, epochs.saturating_mul(batches));
    recipe.seed = seed;
    let mut session = Session::new(&model, infer, Some(recipe), batch, threads)?;
    let task = task_of(&model);
    let out = opts.out.clone().unwrap_or_else(|| default_out(&m.path));
    let mut history: Vec<EpochRecord> = Vec::new();
    let (mut start_epoch, mut start_batch) = (0, 0);
    let mut partial = Tally::default();
    let mut partial_seconds = 0.0;
    if let Some((p, c)) = &resume {
        if !c.source_hash.is_empty() && c.source_hash != m.source_hash() {
            obs.note(&format!(
                "{} changed since {} was written; its parameters still fit, so training continues",
                m.path.display(),
                p.display()
            ));
        }
        session.load_checkpoint(c, true)?;
        start_epoch = c.epoch as usize;
        start_batch = c.batch_in_epoch as usize;
        if let Some(h) = c.extra.get("history")
            && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(h)
        {
            history = items.iter().map(EpochRecord::from_json).collect();
        }
        if start_batch > 0 {
            let old_batch = c.extra.get("batch").and_then(|b| b.parse::<usize>().ok());
            if old_batch.is_some_and(|b| b != batch) {
                return Err(RunError::Data(format!(
                    "{} stopped in the middle of an epoch with batch size {}; resume it with the same --batch",
                    p.display(),
                    old_batch.unwrap_or(0)
                )));
            }
            if let Some(v) = c
                .extra
                .get("partial")
                .and_then(|s| serde_json::from_str::<Value>(s).ok())
            {
                partial = Tally::from_json(&v);
                partial_seconds = v["seconds"].as_f64().unwrap_or(0.0);
            }
        }
    }
    obs.start(&Plan {
        model: model.name.clone(),
        data: description,
        train_samples: n,
        validation_samples: validation.as_ref().map_or(0, Dataset::len),
        batch,
        epochs,
        batches_per_epoch: batches,
        threads,
        optimizer: cfg.optimizer.name().to_string(),
        parameters: model.param_count(),
        out: out.clone(),
        start: resume.as_ref().map(|_| (start_epoch, start_batch)),
    });
    let summary = |ending, history: Vec<EpochRecord>, session: &Session| Summary {
        ending,
        history,
        steps: session.step,
        checkpoint: out.clone(),
        seconds: started.elapsed().as_secs_f64(),
        train_samples: n,
        validation_samples: validation.as_ref().map_or(0, Dataset::len),
    };
    if start_epoch >= epochs {
        return Ok(summary(Ending::NothingToDo, history, &session));
    }
    let augment = augment_of(&cfg.augment);
    let images = data.x.shape().len() == 4 && matches!(data.x, Tensor::F32(_));
    if augment != Augment::default() && !images {
        obs.note(
            "augmentation is for image batches [B, C, H, W]; this data is not, so it is skipped",
        );
    }
    let vocab = data.vocab.clone();
    let save = |session: &Session,
                epoch: usize,
                batch_in_epoch: usize,
                history: &[EpochRecord],
                partial: Option<(&Tally, f64)>|
     -> Result<(), CheckpointError> {
        let mut c = session.to_checkpoint();
        c.source_hash = m.source_hash();
        c.epoch = epoch as u64;
        c.batch_in_epoch = batch_in_epoch as u64;
        c.seed = seed;
        c.vocab = vocab.clone();
        c.extra.insert("batch".into(), batch.to_string());
        c.extra.insert("epochs".into(), epochs.to_string());
        c.extra
            .insert("lr".into(), format!("{:e}", session.recipe.optimizer.lr));
        c.extra.insert(
            "history".into(),
            Value::Array(history.iter().map(EpochRecord::to_json).collect()).to_string(),
        );
        if let Some((t, secs)) = partial {
            let mut v = t.to_json();
            v["seconds"] = json!(secs);
            c.extra.insert("partial".into(), v.to_string());
        }
        c.save(&out)
    };
    let mut last_good: Option<(PathBuf, usize)> =
        resume.as_ref().map(|(p, c)| (p.clone(), c.epoch as usize));
    for epoch in start_epoch..epochs {
        let skip = if epoch == start_epoch { start_batch } else { 0 };
        obs.epoch_start(epoch, batches, skip);
        let order = split::permutation(n, shuffle_seed(seed, epoch));
        let mut tally = if epoch == start_epoch {
            std::mem::take(&mut partial)
        } else {
            Tally::default()
        };
        let epoch_started = Instant::now();
        let prior_seconds = if epoch == start_epoch {
            partial_seconds
        } else {
            0.0
        };
        let mut new_samples = 0usize;
        for (bi, rows) in order.chunks(batch).enumerate().skip(skip) {
            let b = rows.len();
            let mut x = data
                .x
                .select(rows)
                .map_err(|e| RunError::Data(e.to_string()))?;
            let y = data
                .y
                .select(rows)
                .map_err(|e| RunError::Data(e.to_string()))?;
            if images
                && augment != Augment::default()
                && let Tensor::F32(a) = &mut x
            {
                augment
                    .apply(a, augment_seed(seed, epoch, bi))
                    .map_err(|e| RunError::Data(e.to_string()))?;
            }
            let feed = Feed::new(&model, &x, Some(&y), b);
            let r = session.train_step(&feed.inputs(), b)?;
            if !r.loss.is_finite() {
                return Err(RunError::NonFinite {
                    loss: r.loss,
                    step: session.step,
                    epoch: epoch + 1,
                    batch: bi + 1,
                    batches,
                    checkpoint: last_good,
                });
            }
            tally.add(r.loss, b, task, r.output.as_deref(), &y);
            new_samples += b;
            let secs = epoch_started.elapsed().as_secs_f64();
            obs.batch(&BatchProgress {
                epoch,
                batch: bi + 1,
                batches,
                step: session.step,
                loss: tally.loss(),
                accuracy: tally.accuracy(),
                samples_per_sec: new_samples as f64 / secs.max(1e-9),
            });
            let limit = opts.stop_after.is_some_and(|s| session.step >= s);
            if (stop.load(Ordering::SeqCst) || limit) && bi + 1 < batches {
                save(
                    &session,
                    epoch,
                    bi + 1,
                    &history,
                    Some((&tally, prior_seconds + secs)),
                )?;
                obs.checkpoint(&out);
                return Ok(summary(Ending::Interrupted, history, &session));
            }
        }
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let (val_loss, val_accuracy) = match &validation {
            Some(v) => {
                obs.validating(epoch);
                let e = evaluate(&mut session, v, false)?;
                (Some(e.loss), e.accuracy)
            }
            None => (None, None),
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            step: session.step,
            train_loss: tally.loss(),
            train_accuracy: tally.accuracy(),
            val_loss,
            val_accuracy,
            lr: session.lr(),
            samples_per_sec: new_samples as f64 / train_seconds.max(1e-9),
            seconds: prior_seconds + epoch_started.elapsed().as_secs_f64(),
        };
        history.push(record.clone());
        save(&session, epoch + 1, 0, &history, None)?;
        last_good = Some((out.clone(), epoch + 1));
        obs.epoch_end(&record);
        obs.checkpoint(&out);
        let limit = opts.stop_after.is_some_and(|s| session.step >= s);
        if (stop.load(Ordering::SeqCst) || limit) && epoch + 1 < epochs {
            return Ok(summary(Ending::Interrupted, history, &session));
        }
    }
    Ok(summary(Ending::Finished, history, &session))
}

/// A session for a model with weights from a checkpoint (for eval,
/// predict and sample): the checkpoint must fit the model exactly.
pub fn session_with_weights(
    m: &LoadedModel,
    weights: &Path,
    batch: usize,
    threads: usize,
) -> Result<(Session, Checkpoint), RunError> {
    let c = Checkpoint::load(weights)?.fit(&m.model, weights)?;
    let mut s = Session::new(&m.model, m.infer.clone(), None, batch.max(1), threads)?;
    s.load_checkpoint(&c, false)?;
    Ok((s, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "model m { input x: [B, 1, 4, 4]  labels y: [B] classes 3\n logits = x |> flatten |> dense(8) |> relu |> dropout(0.1) |> dense(3)\n loss = cross_entropy(logits, y) }\n train m { validation 0.2  optimizer adam(lr: 0.03)  schedule cosine()  batch 7, epochs 3, seed 4  augment shift(1) }";

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nnc-train-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn opts(dir: &Path, name: &str) -> TrainOptions {
        TrainOptions {
            data: Some(DataSpec::Synthetic(60)),
            out: Some(dir.join(name)),
            threads: Some(1),
            ..TrainOptions::default()
        }
    }

    #[test]
    fn trains_validates_and_resumes_exactly() {
        let m = load_source("m.nn", SRC, None).unwrap();
        let d = tmp("resume");
        let stop = AtomicBool::new(false);
        let full = train(&m, &opts(&d, "full.safetensors"), &stop, &mut Silent).unwrap();
        assert_eq!(full.ending, Ending::Finished);
        assert_eq!(full.history.len(), 3);
        assert_eq!(full.train_samples, 48);
        assert_eq!(full.steps, 3 * 7);
        let (first, last) = (&full.history[0], &full.history[2]);
        assert!(last.val_loss < first.val_loss, "{first:?} {last:?}");
        // Interrupted mid-epoch (step 10 is batch 3 of epoch 2), then resumed.
        let mut o = opts(&d, "part.safetensors");
        o.stop_after = Some(10);
        let part = train(&m, &o, &stop, &mut Silent).unwrap();
        assert_eq!(part.ending, Ending::Interrupted);
        assert_eq!(part.steps, 10);
        let mut o = opts(&d, "part.safetensors");
        o.resume = Some(d.join("part.safetensors"));
        let rest = train(&m, &o, &stop, &mut Silent).unwrap();
        assert_eq!(rest.ending, Ending::Finished);
        assert_eq!(rest.history, {
            let mut h = full.history.clone();
            for (a, b) in h.iter_mut().zip(&rest.history) {
                a.seconds = b.seconds;
                a.samples_per_sec = b.samples_per_sec;
            }
            h
        });
        let a = Checkpoint::load(&d.join("full.safetensors")).unwrap();
        let b = Checkpoint::load(&d.join("part.safetensors")).unwrap();
        assert_eq!(a.params, b.params);
        assert_eq!(a.optimizer, b.optimizer);
        assert_eq!((b.epoch, b.batch_in_epoch, b.step), (3, 0, 21));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn non_finite_loss_stops_and_keeps_the_checkpoint() {
        let src = SRC
            .replace("adam(lr: 0.03)", "sgd(lr: 1e30)")
            .replace("augment shift(1)", "");
        let m = load_source("m.nn", &src, None).unwrap();
        let d = tmp("nan");
        let e = train(
            &m,
            &opts(&d, "n.safetensors"),
            &AtomicBool::new(false),
            &mut Silent,
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(matches!(e, RunError::NonFinite { epoch: 1, .. }), "{s}");
        assert!(s.contains("at step") && s.contains("batch"), "{s}");
        assert!(!d.join("n.safetensors").exists());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn tally_and_helpers() {
        let mut t = Tally::with_confusion(3);
        let y = Tensor::I32(ndarray::arr1(&[0, 2]).into_dyn());
        t.add(
            1.0,
            2,
            Task::Classes(3),
            Some(&[5.0, 1.0, 0.0, 0.0, 3.0, 1.0]),
            &y,
        );
        assert_eq!(t.accuracy(), Some(0.5));
        assert_eq!(t.confusion.as_ref().unwrap()[2][1], 1);
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        let p = softmax(&[0.0, 0.0]);
        assert!((p[0] - 0.5).abs() < 1e-6);
        assert_ne!(shuffle_seed(1, 0), shuffle_seed(1, 1));
        assert_ne!(augment_seed(1, 0, 1), augment_seed(1, 1, 0));
    }
}
