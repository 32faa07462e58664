//! The embedding API: read a `.nn` model, compile it, train and run it from
//! Rust with `ndarray` arrays in and out.
//!
//! ```
//! use ndarray::{Array1, Array2};
//!
//! let model = nnc::Model::from_source(
//!     "model xor { input x: [B, 2]  labels y: [B] classes 2\n\
//!      logits = x |> dense(16) |> tanh |> dense(2)\n\
//!      loss = cross_entropy(logits, y) }\n\
//!      train xor { optimizer adam(lr: 0.05) }",
//! )?;
//! let mut net = model.compile(&nnc::Options { batch: 4, threads: 1, ..Default::default() })?;
//! let x = Array2::from_shape_vec((4, 2), vec![0., 0., 0., 1., 1., 0., 1., 1.])?;
//! let y = Array1::from(vec![0, 1, 1, 0]);
//! let first = net.train_step(x.view(), y.view())?;
//! for _ in 0..300 {
//!     net.train_step(x.view(), y.view())?;
//! }
//! let logits = net.forward(x.view())?; // [4, 2]
//! let predicted: Vec<usize> = logits.outer_iter()
//!     .map(|r| if r[1] > r[0] { 1 } else { 0 })
//!     .collect();
//! assert_eq!(predicted, [0, 1, 1, 0]);
//! assert!(net.train_step(x.view(), y.view())? < first);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Every method checks its arguments (shapes, element types, class
//! ranges, names) and returns an [`Error`]; none panics on user input.

use std::path::Path;

use ndarray::{ArrayD, ArrayView, ArrayViewD, Dimension, IxDyn};

use crate::diag::Report;
use crate::ir;
use crate::ir::model::InputKind;
use crate::ir::types::DType;
use crate::runtime::checkpoint::{Checkpoint, CheckpointError};
use crate::runtime::data::{Dataset, Tensor};
use crate::runtime::executable::InputData;
use crate::runtime::session::{Session, SessionError, recipe_of};
use crate::runtime::source;
use crate::runtime::train::{self, Evaluation, LoadedModel};

/// Everything the embedding API can fail with. Every variant displays as
/// a message meant for a user.
///
/// ```
/// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
/// let mut net = m.compile(&nnc::Options { batch: 2, ..Default::default() })?;
/// let x = ndarray::Array2::<f32>::zeros((3, 64)); // three samples, batch is 2
/// match net.forward(x.view()) {
///     Err(nnc::Error::Input(msg)) => assert!(msg.contains("compiled for 1 to 2")),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model source has errors (rendered like the compiler does).
    #[error("{0}")]
    Source(Report),
    /// An argument does not fit the model.
    #[error("{0}")]
    Input(String),
    /// Compiling or running the model failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Reading, writing or applying a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Reading data failed.
    #[error("{0}")]
    Data(String),
}

/// The result type of the embedding API.
///
/// ```
/// fn train_one(net: &mut nnc::CompiledModel) -> nnc::api::Result<f32> {
///     let x = ndarray::Array2::<f32>::zeros((1, 64));
///     let y = ndarray::Array1::from(vec![3]);
///     net.train_step(x.view(), y.view())
/// }
/// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
/// assert!(train_one(&mut m.compile(&Default::default())?)?.is_finite());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub type Result<T> = std::result::Result<T, Error>;

/// A checked model from a `.nn` file: its training and inference graphs
/// and its `train` block.
///
/// ```
/// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
/// assert_eq!(m.name(), "mlp_digits");
/// assert_eq!(m.parameter_count(), 17_226);
/// # Ok::<(), nnc::diag::Report>(())
/// ```
#[derive(Debug, Clone)]
pub struct Model {
    loaded: LoadedModel,
}

impl Model {
    /// Reads and checks the first model of a `.nn` file. The error holds
    /// every diagnostic; `{}`-format it to show them with the source lines.
    ///
    /// ```
    /// let e = nnc::Model::from_file("no/such/file.nn").unwrap_err();
    /// assert!(e.to_string().contains("cannot read no/such/file.nn"));
    /// ```
    pub fn from_file(path: impl AsRef<Path>) -> std::result::Result<Model, Report> {
        Ok(Model {
            loaded: train::load_model(path.as_ref(), None)?,
        })
    }

    /// Reads and checks the model `name` of a `.nn` file.
    ///
    /// ```
    /// let m = nnc::Model::from_file_named("examples/lenet.nn", "lenet")?;
    /// assert_eq!(m.name(), "lenet");
    /// assert!(nnc::Model::from_file_named("examples/lenet.nn", "other").is_err());
    /// # Ok::<(), nnc::diag::Report>(())
    /// ```
    pub fn from_file_named(
        path: impl AsRef<Path>,
        name: &str,
    ) -> std::result::Result<Model, Report> {
        Ok(Model {
            loaded: train::load_model(path.as_ref(), Some(name))?,
        })
    }

    /// Checks source text (the first model in it; `use` paths are relative
    /// to the working directory).
    ///
    /// ```
    /// let e = nnc::Model::from_source("model m { input x: [B, 4]\n y = x |> dense(3) |> nosuch }").unwrap_err();
    /// assert!(e.to_string().contains("nosuch"));
    /// ```
    pub fn from_source(source: &str) -> std::result::Result<Model, Report> {
        Ok(Model {
            loaded: train::load_source("model.nn", source, None)?,
        })
    }

    /// The model's name.
    ///
    /// ```
    /// # let m = nnc::Model::from_source("model tiny { input x: [B, 2]  labels y: [B, 1]\n loss = mse(x |> dense(1), y) }")?;
    /// assert_eq!(m.name(), "tiny");
    /// # Ok::<(), nnc::diag::Report>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.loaded.model.name
    }

    /// Number of trainable scalars.
    ///
    /// ```
    /// # let m = nnc::Model::from_source("model tiny { input x: [B, 2]  labels y: [B, 1]\n loss = mse(x |> dense(1), y) }")?;
    /// assert_eq!(m.parameter_count(), 3);
    /// # Ok::<(), nnc::diag::Report>(())
    /// ```
    pub fn parameter_count(&self) -> usize {
        self.loaded.model.param_count()
    }

    /// The lowered training-mode IR (inputs, parameters, graph, train block).
    ///
    /// ```
    /// # let m = nnc::Model::from_source("model tiny { input x: [B, 2]  labels y: [B, 1]\n loss = mse(x |> dense(1), y) }")?;
    /// assert_eq!(m.ir().params[0].name, "fc1.weight");
    /// # Ok::<(), nnc::diag::Report>(())
    /// ```
    pub fn ir(&self) -> &ir::Model {
        &self.loaded.model
    }

    /// Warnings of the checker, if any (rendered as text).
    ///
    /// ```
    /// # let m = nnc::Model::from_source("model tiny { input x: [B, 2]  labels y: [B, 1]\n loss = mse(x |> dense(1), y) }")?;
    /// assert!(m.warnings().is_empty());
    /// # Ok::<(), nnc::diag::Report>(())
    /// ```
    pub fn warnings(&self) -> String {
        self.loaded.report.render(false)
    }

    /// The data of the model's `train` block (paths relative to the `.nn`
    /// file), split into training and validation parts as the block says,
    /// and fitted to the model's inputs.
    ///
    /// ```
    /// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// let (train, validation) = m.data()?;
    /// assert_eq!((train.len(), validation.map(|v| v.len())), (1438, Some(359)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data(&self) -> Result<(Dataset, Option<Dataset>)> {
        let s = source::load(&self.loaded.model, &self.loaded.base_dir(), None, None)
            .map_err(Error::Data)?;
        Ok((s.train, s.validation))
    }

    /// Compiles the training step and the inference graph for batches of up
    /// to `opts.batch` samples (code for each size is generated on first
    /// use). The optimizer, schedule and clipping come from the `train`
    /// block.
    ///
    /// ```
    /// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// let net = m.compile(&nnc::Options { batch: 64, ..Default::default() })?;
    /// assert_eq!(net.batch(), 64);
    /// assert!(m.compile(&nnc::Options { batch: 0, ..Default::default() }).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn compile(&self, opts: &Options) -> Result<CompiledModel> {
        let mut model = self.loaded.model.clone();
        let mut infer = self.loaded.infer.clone();
        for m in [&mut model, &mut infer] {
            if let Some(t) = &mut m.train {
                if let Some(s) = opts.seed {
                    t.seed = s;
                }
                if let Some(lr) = opts.lr {
                    t.optimizer.lr = lr;
                }
            }
        }
        let mut recipe = recipe_of(&model, opts.total_steps.unwrap_or(1));
        if let Some(s) = opts.seed {
            recipe.seed = s;
        }
        if let Some(lr) = opts.lr {
            recipe.optimizer.lr = lr;
        }
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let session = Session::new(&model, infer, Some(recipe), opts.batch, threads)?;
        Ok(CompiledModel {
            session,
            source_hash: self.loaded.source_hash(),
        })
    }
}

/// How to compile a model.
///
/// ```
/// let o = nnc::Options { batch: 128, ..Default::default() };
/// assert_eq!((o.batch, o.threads, o.seed), (128, 0, None));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// The largest batch; every call may pass from 1 to this many samples.
    pub batch: usize,
    /// Threads for compiled code; 0 means one per core.
    pub threads: usize,
    /// Seed of initialisation and dropout (default: the train block's).
    pub seed: Option<u64>,
    /// Learning rate (default: the train block's).
    pub lr: Option<f64>,
    /// Steps of the whole run, for schedules that span it (cosine).
    pub total_steps: Option<usize>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            batch: 32,
            threads: 0,
            seed: None,
            lr: None,
            total_steps: None,
        }
    }
}

/// An array the compiled model accepts as an input: an `ndarray` view of
/// `f32` (features, float targets) or `i32` (class or token indices), of
/// any dimension, or a data-set [`Tensor`].
///
/// ```
/// use nnc::AsInput;
/// let x = ndarray::Array2::<f32>::ones((2, 3));
/// let (shape, values) = x.view().values();
/// assert_eq!(shape, [2, 3]);
/// assert!(matches!(values, nnc::api::Values::F32(v) if v.len() == 6));
/// ```
pub trait AsInput {
    /// The shape and the values (copied to contiguous memory if needed).
    fn values(&self) -> (Vec<usize>, Values);
}

/// Contiguous values of an input, in row-major order.
///
/// ```
/// use nnc::AsInput;
/// let y = ndarray::Array1::from(vec![1i32, 0]);
/// assert!(matches!(y.view().values().1, nnc::api::Values::I32(v) if v == [1, 0]));
/// ```
#[derive(Debug, Clone)]
pub enum Values {
    /// Real numbers.
    F32(Vec<f32>),
    /// Class or token indices.
    I32(Vec<i32>),
}

impl<D: Dimension> AsInput for ArrayView<'_, f32, D> {
    fn values(&self) -> (Vec<usize>, Values) {
        let v = match self.as_slice() {
            Some(s) => s.to_vec(),
            None => self.iter().copied().collect(),
        };
        (self.shape().to_vec(), Values::F32(v))
    }
}

impl<D: Dimension> AsInput for ArrayView<'_, i32, D> {
    fn values(&self) -> (Vec<usize>, Values) {
        let v = match self.as_slice() {
            Some(s) => s.to_vec(),
            None => self.iter().copied().collect(),
        };
        (self.shape().to_vec(), Values::I32(v))
    }
}

impl AsInput for &Tensor {
    fn values(&self) -> (Vec<usize>, Values) {
        match self {
            Tensor::F32(a) => a.view().values(),
            Tensor::I32(a) => a.view().values(),
        }
    }
}

impl AsInput for Tensor {
    fn values(&self) -> (Vec<usize>, Values) {
        (&self).values()
    }
}

/// A compiled model: parameters, optimizer state and native code for
/// training steps and inference. It is `Send`: move it to another thread
/// to train there.
///
/// ```
/// fn is_send<T: Send>() {}
/// is_send::<nnc::CompiledModel>();
/// ```
pub struct CompiledModel {
    session: Session,
    source_hash: String,
}

impl std::fmt::Debug for CompiledModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledModel")
            .field("model", &self.session.model.name)
            .field("batch", &self.session.batch)
            .field("step", &self.session.step)
            .finish()
    }
}

fn bad(m: impl Into<String>) -> Error {
    Error::Input(m.into())
}

impl CompiledModel {
    /// The largest batch it was compiled for.
    ///
    /// ```
    /// # let net = nnc::Model::from_file("examples/mlp_digits.nn")?.compile(&nnc::Options { batch: 8, ..Default::default() })?;
    /// assert_eq!(net.batch(), 8);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn batch(&self) -> usize {
        self.session.batch
    }

    /// Optimizer steps taken so far.
    ///
    /// ```
    /// # let net = nnc::Model::from_file("examples/mlp_digits.nn")?.compile(&Default::default())?;
    /// assert_eq!(net.step(), 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn step(&self) -> usize {
        self.session.step
    }

    /// Checks one input array against the model input `i` and returns its
    /// batch size.
    fn batch_of(&self, m: &ir::Model, i: usize, shape: &[usize]) -> Result<usize> {
        let inp = &m.inputs[i];
        let want = inp.ty.shape.at(1);
        let b = shape.first().copied().unwrap_or(0);
        let ok = shape.len() == want.len() && shape[1..] == want[1..];
        if !ok {
            let mut expect = vec!["B".to_string()];
            expect.extend(want[1..].iter().map(|d| d.to_string()));
            return Err(bad(format!(
                "`{}` must have shape [{}], not {:?}",
                inp.name,
                expect.join(", "),
                shape
            )));
        }
        if b == 0 || b > self.session.batch {
            return Err(bad(format!(
                "`{}` holds {b} samples; this model was compiled for 1 to {} (Options::batch)",
                inp.name, self.session.batch
            )));
        }
        Ok(b)
    }

    fn feed(
        &self,
        m: &ir::Model,
        x: &dyn AsInput,
        y: Option<&dyn AsInput>,
    ) -> Result<(usize, Vec<Values>)> {
        let mut values = Vec::new();
        let mut batch = None;
        for (i, inp) in m.inputs.iter().enumerate() {
            let (shape, v) = match inp.kind {
                InputKind::Data => x.values(),
                InputKind::Labels => match y {
                    Some(y) => y.values(),
                    None => {
                        // Dummy labels for inference: valid class 0 / zeros.
                        let b = batch.unwrap_or(1);
                        let n = inp.ty.shape.numel_at(b).unwrap_or(0);
                        let mut s = inp.ty.shape.at(b);
                        if s.is_empty() {
                            s.push(1);
                        }
                        (
                            s,
                            match inp.ty.dtype {
                                DType::F32 => Values::F32(vec![0.0; n]),
                                DType::I32 => Values::I32(vec![0; n]),
                            },
                        )
                    }
                },
            };
            let b = self.batch_of(m, i, &shape)?;
            if let Some(prev) = batch
                && prev != b
            {
                return Err(bad(format!(
                    "`{}` holds {b} samples but the inputs before it hold {prev}",
                    inp.name
                )));
            }
            batch = Some(b);
            let v = match (inp.ty.dtype, v) {
                (DType::F32, Values::I32(v)) if inp.kind == InputKind::Labels => {
                    Values::F32(v.into_iter().map(|c| c as f32).collect())
                }
                (DType::F32, v @ Values::F32(_)) | (DType::I32, v @ Values::I32(_)) => v,
                (want, _) => {
                    return Err(bad(format!(
                        "`{}` takes {} values (use an array of {})",
                        inp.name,
                        want,
                        if want == DType::F32 { "f32" } else { "i32" }
                    )));
                }
            };
            values.push(v);
        }
        if m.inputs.iter().all(|i| i.kind != InputKind::Labels) && y.is_some() {
            return Err(bad(format!(
                "the model `{}` has no labels input; pass only x",
                m.name
            )));
        }
        Ok((batch.unwrap_or(0), values))
    }

    fn inputs(values: &[Values]) -> Vec<InputData<'_>> {
        values
            .iter()
            .map(|v| match v {
                Values::F32(v) => InputData::F32(v),
                Values::I32(v) => InputData::I32(v),
            })
            .collect()
    }

    /// One training step — forward, loss, backward, clipping, optimizer
    /// update — on a batch `x` (`[b, ...]`) with labels `y`; returns the
    /// loss before the update.
    ///
    /// ```
    /// use ndarray::{Array1, Array2};
    /// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// let mut net = m.compile(&nnc::Options { batch: 4, ..Default::default() })?;
    /// let x = Array2::<f32>::zeros((4, 64));
    /// let y = Array1::from(vec![0, 1, 2, 3]);
    /// let loss = net.train_step(x.view(), y.view())?;
    /// assert!(loss > 0.0);
    /// // Wrong shapes and out-of-range classes are errors, not panics.
    /// assert!(net.train_step(Array2::<f32>::zeros((4, 63)).view(), y.view()).is_err());
    /// assert!(net.train_step(x.view(), Array1::from(vec![0, 1, 2, 10]).view()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn train_step(&mut self, x: impl AsInput, y: impl AsInput) -> Result<f32> {
        let (b, values) = self.feed(&self.session.model, &x, Some(&y))?;
        Ok(self.session.train_step(&Self::inputs(&values), b)?.loss)
    }

    /// One training step for a model without labels (an autoencoder).
    ///
    /// ```
    /// let m = nnc::Model::from_source("model ae { input x: [B, 4]\n r = x |> dense(2) |> dense(4)\n loss = mse(r, x) }")?;
    /// let mut net = m.compile(&nnc::Options { batch: 2, ..Default::default() })?;
    /// let loss = net.train_step_unlabelled(ndarray::Array2::<f32>::ones((2, 4)).view())?;
    /// assert!(loss.is_finite());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn train_step_unlabelled(&mut self, x: impl AsInput) -> Result<f32> {
        let m = &self.session.model;
        if m.inputs.iter().any(|i| i.kind == InputKind::Labels) {
            return Err(bad(format!(
                "the model `{}` has labels; use train_step(x, y)",
                m.name
            )));
        }
        let (b, values) = self.feed(m, &x, None)?;
        Ok(self.session.train_step(&Self::inputs(&values), b)?.loss)
    }

    /// The model's first output (e.g. logits) for a batch, in inference
    /// mode (dropout off, batch norm on running statistics).
    ///
    /// ```
    /// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// let mut net = m.compile(&nnc::Options { batch: 16, ..Default::default() })?;
    /// let logits = net.forward(ndarray::Array2::<f32>::zeros((3, 64)).view())?;
    /// assert_eq!(logits.shape(), &[3, 10]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn forward(&mut self, x: impl AsInput) -> Result<ArrayD<f32>> {
        let m = &self.session.infer_model;
        let (_, node) = m
            .outputs
            .first()
            .ok_or_else(|| bad(format!("the model `{}` has no output", m.name)))?;
        let ty = m.graph.nodes[node.0 as usize]
            .ty
            .clone()
            .ok_or_else(|| bad("the output has no type"))?;
        let (b, values) = self.feed(m, &x, None)?;
        let r = self.session.infer(&Self::inputs(&values), b)?;
        let out = r.outputs.into_iter().next().unwrap_or_default();
        ArrayD::from_shape_vec(IxDyn(&ty.shape.at(b)), out).map_err(|e| bad(e.to_string()))
    }

    /// Loss and accuracy (for classifiers, with a confusion matrix) over a
    /// data set, in batches, in inference mode. The data is fitted to the
    /// model's input shapes first.
    ///
    /// ```
    /// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// let (_, val) = m.data()?;
    /// let mut net = m.compile(&nnc::Options { batch: 64, ..Default::default() })?;
    /// let e = net.evaluate(&val.unwrap())?;
    /// assert_eq!(e.samples, 359);
    /// assert!(e.accuracy.unwrap() < 0.5); // untrained
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation> {
        let d = source::fit(&self.session.model, data.clone(), Path::new("the data set"))
            .map_err(Error::Data)?;
        Ok(train::evaluate(&mut self.session, &d, true)?)
    }

    /// Every parameter by its PyTorch `state_dict` name, as views.
    ///
    /// ```
    /// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// let net = m.compile(&Default::default())?;
    /// let p = net.parameters();
    /// assert_eq!(p[0].0, "fc1.weight");
    /// assert_eq!(p[0].1.shape(), &[128, 64]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parameters(&self) -> Vec<(&str, ArrayViewD<'_, f32>)> {
        self.session
            .model
            .params
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.name.as_str(), self.session.param_view(i)?)))
            .collect()
    }

    /// One parameter by name.
    ///
    /// ```
    /// # let net = nnc::Model::from_file("examples/mlp_digits.nn")?.compile(&Default::default())?;
    /// assert_eq!(net.parameter("fc3.bias").unwrap().len(), 10);
    /// assert!(net.parameter("nope").is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parameter(&self, name: &str) -> Option<ArrayViewD<'_, f32>> {
        self.session.param_view(self.session.param_index(name)?)
    }

    /// Overwrites a parameter; the array must have its shape.
    ///
    /// ```
    /// use ndarray::Array1;
    /// # let mut net = nnc::Model::from_file("examples/mlp_digits.nn")?.compile(&Default::default())?;
    /// net.set_parameter("fc3.bias", Array1::<f32>::ones(10).view())?;
    /// assert_eq!(net.parameter("fc3.bias").unwrap()[[3]], 1.0);
    /// assert!(net.set_parameter("fc3.bias", Array1::<f32>::ones(9).view()).is_err());
    /// assert!(net.set_parameter("nope", Array1::<f32>::ones(9).view()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_parameter<D: Dimension>(
        &mut self,
        name: &str,
        values: ArrayView<'_, f32, D>,
    ) -> Result<()> {
        let i = self.session.param_index(name).ok_or_else(|| {
            let names: Vec<&str> = self
                .session
                .model
                .params
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            bad(format!(
                "the model has no parameter `{name}` (it has {})",
                names.join(", ")
            ))
        })?;
        Ok(self.session.set_param(i, &values.into_dyn())?)
    }

    /// Saves parameters, buffers, optimizer state and step as a checkpoint
    /// (safetensors, PyTorch `state_dict` names; written atomically).
    ///
    /// ```
    /// let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// let mut net = m.compile(&Default::default())?;
    /// let path = std::env::temp_dir().join(format!("nnc-doc-save-{}.safetensors", std::process::id()));
    /// net.save(&path)?;
    /// let mut other = m.compile(&nnc::Options { seed: Some(99), ..Default::default() })?;
    /// assert_ne!(other.parameter("fc1.weight"), net.parameter("fc1.weight"));
    /// other.load(&path)?;
    /// assert_eq!(other.parameter("fc1.weight"), net.parameter("fc1.weight"));
    /// # std::fs::remove_file(&path).ok();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let mut c = self.session.to_checkpoint();
        c.source_hash = self.source_hash.clone();
        Ok(c.save(path.as_ref())?)
    }

    /// Loads a checkpoint of this model: parameters and buffers, and the
    /// optimizer state and step when the file has them (a file with weights
    /// only, e.g. from PyTorch, loads too). A checkpoint of another model
    /// is an error naming the parameters that differ.
    ///
    /// ```
    /// # let m = nnc::Model::from_file("examples/mlp_digits.nn")?;
    /// # let mut net = m.compile(&Default::default())?;
    /// let e = net.load("examples/data/digits/no-such.safetensors").unwrap_err();
    /// assert!(e.to_string().contains("cannot read"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let c = Checkpoint::load(path)?.fit(&self.session.model, path)?;
        let with_optimizer = !c.optimizer.is_empty();
        self.session.load_checkpoint(&c, with_optimizer)?;
        Ok(())
    }
}
