//! The checked contents of a `train` block: data, optimizer, schedule and the
//! rest of a training recipe. Defaults follow `torch.optim`.

use crate::diag::Span;

#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub model: String,
    pub data: Option<DataSource>,
    pub validation: Option<Validation>,
    pub optimizer: Optimizer,
    pub schedule: Vec<Schedule>,
    pub clip: Option<Clip>,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    pub augment: Vec<Augment>,
    pub span: Span,
}

impl TrainConfig {
    pub fn new(model: String, span: Span) -> TrainConfig {
        TrainConfig {
            model,
            data: None,
            validation: None,
            optimizer: Optimizer::default(),
            schedule: Vec::new(),
            clip: None,
            batch: 32,
            epochs: 1,
            seed: 0,
            augment: Vec::new(),
            span,
        }
    }
}

/// Where training data comes from. Paths are relative to the `.nn` file.
#[derive(Debug, Clone, PartialEq)]
pub enum DataSource {
    /// A directory with MNIST's IDX files (raw or gzip).
    Mnist { dir: String },
    /// IDX image and label files.
    Idx { images: String, labels: String },
    /// A CSV file: one label column and feature columns.
    Csv {
        path: String,
        label: isize,
        header: bool,
    },
    /// NumPy arrays for inputs and labels.
    Npy { x: String, y: String },
    /// Tensors named `x` and `y` (or as given) in a safetensors file.
    Safetensors { path: String, x: String, y: String },
    /// Plain text for character models: sequences of `seq` characters with
    /// the next character as the target.
    Text { path: String, seq: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Validation {
    /// A seeded, stratified (for class labels) fraction of the training data.
    Split(f64),
    /// A separate source.
    Source(DataSource),
}

#[derive(Debug, Clone, PartialEq)]
pub enum OptimizerKind {
    /// Plain, momentum and Nesterov SGD (`torch.optim.SGD`).
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    },
    Adagrad {
        lr_decay: f64,
        initial_accumulator: f64,
        eps: f64,
    },
    RmsProp {
        alpha: f64,
        eps: f64,
        momentum: f64,
        centered: bool,
    },
    Adam {
        beta1: f64,
        beta2: f64,
        eps: f64,
        amsgrad: bool,
    },
    /// Adam with decoupled weight decay (`torch.optim.AdamW`).
    AdamW {
        beta1: f64,
        beta2: f64,
        eps: f64,
        amsgrad: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
}

impl Default for Optimizer {
    fn default() -> Optimizer {
        Optimizer {
            kind: OptimizerKind::Sgd {
                momentum: 0.0,
                dampening: 0.0,
                nesterov: false,
            },
            lr: 1e-3,
            weight_decay: 0.0,
        }
    }
}

impl Optimizer {
    pub fn name(&self) -> &'static str {
        match self.kind {
            OptimizerKind::Sgd { nesterov: true, .. } => "nesterov",
            OptimizerKind::Sgd { momentum, .. } if momentum != 0.0 => "momentum",
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::Adagrad { .. } => "adagrad",
            OptimizerKind::RmsProp { .. } => "rmsprop",
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::AdamW { .. } => "adamw",
        }
    }
}

/// Learning-rate schedules, counted in optimizer steps. Several chain one
/// after another, as `torch.optim.lr_scheduler.SequentialLR` does, except
/// that `warmup` composes with the one that follows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Multiply by `gamma` every `every` steps (`StepLR`).
    Step { every: usize, gamma: f64 },
    /// Multiply by `gamma` every step (`ExponentialLR`).
    Exponential { gamma: f64 },
    /// Cosine from the base rate to `min` over `steps` steps (`CosineAnnealingLR`);
    /// `steps = 0` means the whole run.
    Cosine { steps: usize, min: f64 },
    /// Linear warm-up from `start` × the base rate over `steps` steps (`LinearLR`).
    Warmup { steps: usize, start: f64 },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Clip {
    /// Scale all gradients so their global L2 norm is at most this (`clip_grad_norm_`).
    Norm(f64),
    /// Clamp each gradient element to [-v, v] (`clip_grad_value_`).
    Value(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Augment {
    /// Random translation by up to this many pixels, zero-filled.
    Shift(usize),
    /// Random crop of the original size after zero padding by this many pixels.
    Crop(usize),
    /// Horizontal flip with probability p.
    Flip(f64),
    /// Additive gaussian noise with this standard deviation.
    Noise(f64),
}
