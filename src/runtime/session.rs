//! A model compiled for training and inference at every batch size up to a
//! maximum: one set of parameters, persistent buffers and optimizer state,
//! shared by the compiled training step and the compiled inference graph.
//!
//! Code is compiled per batch size, lazily, and cached: the full batch once,
//! the smaller last batch of an epoch once more. Nothing falls back to the
//! reference interpreter.
//!
//! ```
//! use nnc::runtime::executable::InputData;
//! use nnc::runtime::session::Session;
//!
//! let src = "model m { input x: [B, 4]  labels y: [B] classes 3\n logits = x |> dense(3)\n loss = cross_entropy(logits, y) }\n train m { optimizer sgd(lr: 0.1) }";
//! let check = |mode| {
//!     let opts = nnc::ir::lower::LowerOptions { mode, ..Default::default() };
//!     nnc::frontend::check_source("m.nn", src, &nnc::syntax::FsLoader, &opts).models.remove(0)
//! };
//! let (train, infer) = (check(nnc::ir::Mode::Train), check(nnc::ir::Mode::Infer));
//! let mut s = Session::new(&train, infer, None, 8, 1)?;
//! let x = vec![0.5f32; 8 * 4];
//! let y = vec![1i32; 8];
//! let first = s.train_step(&[InputData::F32(&x), InputData::I32(&y)], 8)?.loss;
//! for _ in 0..20 {
//!     s.train_step(&[InputData::F32(&x), InputData::I32(&y)], 8)?;
//! }
//! // A smaller batch compiles its own code and shares the weights.
//! let out = s.infer(&[InputData::F32(&x[..4 * 3]), InputData::I32(&y[..3])], 3)?;
//! assert!(out.loss < first);
//! assert_eq!(out.outputs[0].len(), 3 * 3);
//! # Ok::<(), nnc::runtime::session::SessionError>(())
//! ```

use crate::runtime::programs::training_outputs;
use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};

use super::checkpoint::Checkpoint;
use super::executable::{Aligned, CompileError, Executable, InputData};
use super::jit_trainer::{pack, write_states};
use super::reference_trainer::Recipe;
use super::{params, schedule as lr};
use crate::ir::build::BuildError;
use crate::ir::model::Model;
use crate::ir::optim::{self, TrainGraph};
use crate::ir::train::TrainConfig;
use crate::ir::types::DType;
use crate::rng;
use crate::schedule::{self, Dest, Layout, Output};

/// Why a model could not be compiled or run.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot build the training graph: {0}")]
    Build(#[from] BuildError),
    #[error("cannot compile: {0}")]
    Compile(#[from] CompileError),
    /// The arguments do not fit the model (shapes, batch size, names).
    #[error("{0}")]
    Input(String),
    /// A batch size that needs more memory than the machine has.
    #[error("{0}")]
    Memory(String),
}

fn input_err(m: impl Into<String>) -> SessionError {
    SessionError::Input(m.into())
}

/// The result of one training step.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub loss: f32,
    /// The model's first output (e.g. logits) for this batch, row-major,
    /// when the session tracks outputs.
    pub output: Option<Vec<f32>>,
}

/// The result of running the inference graph on one batch.
#[derive(Debug, Clone)]
pub struct InferResult {
    /// The loss against the labels given (meaningless if they were dummies).
    pub loss: f32,
    /// Every output of the model, row-major, in the model's order.
    pub outputs: Vec<Vec<f32>>,
}

/// A model's training and inference code, parameters and state.
pub struct Session {
    /// The model in training mode.
    pub model: Model,
    /// The same model in inference mode (dropout off, batch norm on running statistics).
    pub infer_model: Model,
    pub train: TrainGraph,
    pub recipe: Recipe,
    /// The largest batch size; every call may use any size from 1 to this.
    pub batch: usize,
    pub threads: usize,
    /// Optimizer steps taken.
    pub step: usize,
    params: Aligned,
    param_offsets: Vec<usize>,
    param_shapes: Vec<Vec<usize>>,
    states: Aligned,
    state_offsets: Vec<usize>,
    infer_state_offsets: Vec<usize>,
    hypers: Vec<f32>,
    track_output: bool,
    train_exes: HashMap<usize, Executable>,
    infer_exes: HashMap<usize, Executable>,
}

/// The recipe of a model's `train` block (or the defaults), with a seed.
pub fn recipe_of(model: &Model, total_steps: usize) -> Recipe {
    let t = model
        .train
        .clone()
        .unwrap_or_else(|| TrainConfig::new(model.name.clone(), Default::default()));
    Recipe {
        optimizer: t.optimizer,
        schedule: t.schedule,
        clip: t.clip,
        total_steps: total_steps.max(1),
        seed: t.seed,
    }
}

/// Bytes of memory the system can still give, if it says (Linux).
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Session {
    /// Builds the training graph of `model` (lowered in training mode)
    /// with `recipe` (or the recipe of its `train` block), and takes
    /// `infer_model`, the same source lowered in inference mode
    /// ([`Mode::Infer`](crate::ir::Mode)), for evaluation and prediction.
    /// Parameters start from the seeded default initialisation. Nothing is
    /// compiled until the first call at a batch size.
    pub fn new(
        model: &Model,
        infer_model: Model,
        recipe: Option<Recipe>,
        batch: usize,
        threads: usize,
    ) -> Result<Session, SessionError> {
        if batch == 0 {
            return Err(input_err("the batch size must be at least 1"));
        }
        if model.loss.is_none() {
            return Err(input_err(format!(
                "the model `{}` has no loss, so it cannot be trained or evaluated",
                model.name
            )));
        }
        let recipe = recipe.unwrap_or_else(|| recipe_of(model, 1));
        check_memory(model, batch)?;
        let train = optim::build(model, &recipe.optimizer, recipe.clip.as_ref())?;
        let param_shapes: Vec<Vec<usize>> = model.params.iter().map(|p| p.shape.at(1)).collect();
        let (param_offsets, plen) = pack(param_shapes.iter().map(|s| s.iter().product()));
        let (state_offsets, slen) = pack(
            train
                .states
                .iter()
                .map(|s| s.ty.shape.numel_at(batch).unwrap_or(0)),
        );
        let mut infer_state_offsets = Vec::new();
        for s in &infer_model.states {
            let i = train
                .states
                .iter()
                .position(|t| t.name == s.name)
                .ok_or_else(|| {
                    input_err(format!(
                        "the inference model has a buffer `{}` the training model lacks",
                        s.name
                    ))
                })?;
            infer_state_offsets.push(state_offsets[i]);
        }
        let mut params_buf = Aligned::zeros(plen);
        for (i, a) in params::init::<f32>(model, recipe.seed).iter().enumerate() {
            let off = param_offsets[i];
            for (k, v) in a.iter().enumerate() {
                params_buf.as_mut_slice()[off + k] = *v;
            }
        }
        let mut states = Aligned::zeros(slen);
        write_states(&train.states, &state_offsets, batch, states.as_mut_slice());
        let hypers = vec![0.0; train.hypers.len()];
        Ok(Session {
            model: model.clone(),
            infer_model,
            train,
            recipe,
            batch,
            threads: threads.max(1),
            step: 0,
            params: params_buf,
            param_offsets,
            param_shapes,
            states,
            state_offsets,
            infer_state_offsets,
            hypers,
            track_output: !model.outputs.is_empty(),
            train_exes: HashMap::new(),
            infer_exes: HashMap::new(),
        })
    }

    /// Whether training steps also return the model's first output (for
    /// accuracy). On by default when the model has an output; turn off
    /// before the first step to save the copy.
    pub fn set_track_output(&mut self, on: bool) {
        if on != self.track_output {
            self.track_output = on && !self.model.outputs.is_empty();
            self.train_exes.clear();
        }
    }

    fn layout(&self, states: Vec<usize>, inputs: usize) -> Layout {
        Layout {
            param_offsets: self.param_offsets.clone(),
            state_offsets: states,
            inputs,
        }
    }

    fn check_batch(&self, b: usize) -> Result<(), SessionError> {
        if b == 0 || b > self.batch {
            return Err(input_err(format!(
                "batch of {b} samples: this model was compiled for batches of 1 to {}",
                self.batch
            )));
        }
        Ok(())
    }

    fn compile_train(&mut self, b: usize) -> Result<(), SessionError> {
        if self.train_exes.contains_key(&b) {
            return Ok(());
        }
        let t = &self.train;
        // The model's first output (for accuracy) is read back as output 1.
        let tracked: Vec<_> = self
            .model
            .outputs
            .first()
            .filter(|_| self.track_output)
            .map(|(_, node)| *node)
            .into_iter()
            .collect();
        let outputs = training_outputs(t, &tracked);
        let layout = self.layout(self.state_offsets.clone(), self.model.inputs.len());
        let lens = input_lens(&self.model, b);
        let program =
            schedule::schedule(&t.graph, &outputs, b, &layout).map_err(CompileError::from)?;
        self.check_arena(program.arena, b, "training step")?;
        let exe = Executable::new(&t.graph, &outputs, b, &layout, lens)?;
        self.train_exes.insert(b, exe);
        Ok(())
    }

    fn compile_infer(&mut self, b: usize) -> Result<(), SessionError> {
        if self.infer_exes.contains_key(&b) {
            return Ok(());
        }
        let m = &self.infer_model;
        let mut outputs = Vec::new();
        if let Some(l) = m.loss {
            outputs.push(Output {
                node: l,
                dest: Dest::Buffer,
            });
        }
        outputs.extend(m.outputs.iter().map(|(_, n)| Output {
            node: *n,
            dest: Dest::Buffer,
        }));
        let layout = self.layout(self.infer_state_offsets.clone(), m.inputs.len());
        let lens = input_lens(m, b);
        let program =
            schedule::schedule(&m.graph, &outputs, b, &layout).map_err(CompileError::from)?;
        self.check_arena(program.arena, b, "inference")?;
        let exe = Executable::new(&m.graph, &outputs, b, &layout, lens)?;
        self.infer_exes.insert(b, exe);
        Ok(())
    }

    fn check_arena(&self, elements: usize, b: usize, what: &str) -> Result<(), SessionError> {
        let need = elements as u64 * 4 + (self.params.len() + self.states.len()) as u64 * 4;
        if let Some(avail) = available_memory()
            && need > avail
        {
            return Err(SessionError::Memory(format!(
                "the {what} of `{}` at batch {b} needs {} of memory, but only {} is available; use a smaller batch (--batch)",
                self.model.name,
                crate::ir::lower::human_bytes(need as u128),
                crate::ir::lower::human_bytes(avail as u128)
            )));
        }
        Ok(())
    }

    /// One training step on a batch of `b` samples (inputs in the model's
    /// order: data inputs, then labels): forward, backward and update.
    pub fn train_step(
        &mut self,
        inputs: &[InputData<'_>],
        b: usize,
    ) -> Result<StepResult, SessionError> {
        self.check_batch(b)?;
        check_inputs(&self.model, inputs, b)?;
        self.compile_train(b)?;
        let lr_now = lr::lr_at(
            self.recipe.optimizer.lr,
            &self.recipe.schedule,
            self.step,
            self.recipe.total_steps,
        );
        let h = lr::hyper_values(
            &self.train.hypers,
            &self.recipe.optimizer,
            self.step,
            lr_now,
        );
        for (d, v) in self.hypers.iter_mut().zip(h) {
            *d = v as f32;
        }
        let seed = rng::step_seed(self.recipe.seed, self.step as u64);
        let sizes = (self.params.len(), self.states.len(), self.hypers.len());
        let threads = self.threads;
        let exe = self
            .train_exes
            .get_mut(&b)
            .ok_or_else(|| input_err("internal error: no code for this batch size"))?;
        let (params, states, hypers) = (&mut self.params, &mut self.states, &self.hypers);
        exe.run(
            params.as_mut_slice(),
            states.as_mut_slice(),
            hypers,
            inputs,
            seed,
            threads,
            sizes,
        )
        .map_err(SessionError::Input)?;
        self.step += 1;
        let exe = &self.train_exes[&b];
        let (p, s) = (self.params.as_slice(), self.states.as_slice());
        let loss = exe.output(0, p, s).first().copied().unwrap_or(f32::NAN);
        let output =
            (self.track_output && exe.program.outputs.len() > 1 && !self.model.outputs.is_empty())
                .then(|| exe.output(1, p, s));
        Ok(StepResult { loss, output })
    }

    /// The inference graph on a batch of `b` samples. Models without labels
    /// among their inputs take data inputs only; for the others pass labels
    /// too (any valid values when only the outputs are wanted).
    pub fn infer(
        &mut self,
        inputs: &[InputData<'_>],
        b: usize,
    ) -> Result<InferResult, SessionError> {
        self.check_batch(b)?;
        check_inputs(&self.infer_model, inputs, b)?;
        self.compile_infer(b)?;
        let threads = self.threads;
        let seed = rng::step_seed(self.recipe.seed, self.step as u64);
        let sizes = (self.params.len(), self.states.len(), 0);
        let exe = self
            .infer_exes
            .get_mut(&b)
            .ok_or_else(|| input_err("internal error: no code for this batch size"))?;
        let (params, states) = (&mut self.params, &mut self.states);
        exe.run(
            params.as_mut_slice(),
            states.as_mut_slice(),
            &[],
            inputs,
            seed,
            threads,
            sizes,
        )
        .map_err(SessionError::Input)?;
        let exe = &self.infer_exes[&b];
        let (p, s) = (self.params.as_slice(), self.states.as_slice());
        let has_loss = self.infer_model.loss.is_some();
        let loss = if has_loss {
            exe.output(0, p, s).first().copied().unwrap_or(f32::NAN)
        } else {
            f32::NAN
        };
        let first = usize::from(has_loss);
        let outputs = (0..self.infer_model.outputs.len())
            .map(|i| exe.output(first + i, p, s))
            .collect();
        Ok(InferResult { loss, outputs })
    }

    /// Batch sizes with compiled training code (for tests and reports).
    pub fn compiled_batches(&self) -> (Vec<usize>, Vec<usize>) {
        let mut t: Vec<usize> = self.train_exes.keys().copied().collect();
        let mut i: Vec<usize> = self.infer_exes.keys().copied().collect();
        t.sort_unstable();
        i.sort_unstable();
        (t, i)
    }

    /// The learning rate the next step will use.
    pub fn lr(&self) -> f64 {
        lr::lr_at(
            self.recipe.optimizer.lr,
            &self.recipe.schedule,
            self.step,
            self.recipe.total_steps,
        )
    }

    /// Parameter `i` (in the model's order) as an array.
    pub fn param(&self, i: usize) -> Option<ArrayD<f32>> {
        let shape = self.param_shapes.get(i)?;
        let n: usize = shape.iter().product();
        let off = self.param_offsets[i];
        ArrayD::from_shape_vec(IxDyn(shape), self.params.as_slice()[off..off + n].to_vec()).ok()
    }

    /// Parameter `i` as a view into the session's buffer.
    pub fn param_view(&self, i: usize) -> Option<ndarray::ArrayViewD<'_, f32>> {
        let shape = self.param_shapes.get(i)?;
        let n: usize = shape.iter().product();
        let off = self.param_offsets[i];
        ndarray::ArrayViewD::from_shape(IxDyn(shape), &self.params.as_slice()[off..off + n]).ok()
    }

    /// Overwrites parameter `i`; the shape must be the parameter's.
    pub fn set_param(
        &mut self,
        i: usize,
        values: &ndarray::ArrayViewD<'_, f32>,
    ) -> Result<(), SessionError> {
        let p = self
            .model
            .params
            .get(i)
            .ok_or_else(|| input_err(format!("there is no parameter number {i}")))?;
        let shape = &self.param_shapes[i];
        if values.shape() != shape.as_slice() {
            return Err(input_err(format!(
                "parameter `{}` has shape {:?}, not {:?}",
                p.name,
                shape,
                values.shape()
            )));
        }
        let off = self.param_offsets[i];
        for (d, v) in self.params.as_mut_slice()[off..]
            .iter_mut()
            .zip(values.iter())
        {
            *d = *v;
        }
        Ok(())
    }

    fn state_len(&self, i: usize) -> usize {
        self.train.states[i]
            .ty
            .shape
            .numel_at(self.batch)
            .unwrap_or(0)
    }

    /// Persistent buffer `i` (model states, then optimizer slots) at the
    /// session's batch size.
    pub fn state(&self, i: usize) -> Option<ArrayD<f32>> {
        let s = self.train.states.get(i)?;
        let n = self.state_len(i);
        let off = self.state_offsets[i];
        ArrayD::from_shape_vec(
            IxDyn(&s.ty.shape.at(self.batch)),
            self.states.as_slice()[off..off + n].to_vec(),
        )
        .ok()
    }

    /// Overwrites persistent buffer `i`. A buffer with a batch axis takes
    /// any batch size: its first rows are set and the rest reset.
    pub fn set_state(&mut self, i: usize, values: &ArrayD<f32>) -> Result<(), SessionError> {
        let s = self
            .train
            .states
            .get(i)
            .ok_or_else(|| input_err(format!("there is no buffer number {i}")))?
            .clone();
        let n = self.state_len(i);
        let off = self.state_offsets[i];
        let dims = &s.ty.shape.0;
        let fits = values.ndim() == dims.len()
            && dims
                .iter()
                .zip(values.shape())
                .all(|(d, &v)| if d.batch { true } else { d.n == v });
        if !fits {
            return Err(input_err(format!(
                "buffer `{}` has shape {}, not {:?}",
                s.name,
                s.ty.shape,
                values.shape()
            )));
        }
        let slot = &mut self.states.as_mut_slice()[off..off + n];
        slot.fill(s.init as f32);
        for (d, v) in slot.iter_mut().zip(values.iter()) {
            *d = *v;
        }
        Ok(())
    }

    /// Index of the parameter called `name`.
    pub fn param_index(&self, name: &str) -> Option<usize> {
        self.model.params.iter().position(|p| p.name == name)
    }

    /// The parameters, buffers, optimizer state and step as a checkpoint
    /// (training position and metadata left for the caller to fill in).
    pub fn to_checkpoint(&self) -> Checkpoint {
        let mut c = Checkpoint::new(&self.model.name);
        for (i, p) in self.model.params.iter().enumerate() {
            if let Some(a) = self.param(i) {
                c.params.push((p.name.clone(), a));
            }
        }
        let n_model = self.model.states.len();
        for (i, s) in self.train.states.iter().enumerate() {
            if let Some(a) = self.state(i) {
                if i < n_model {
                    c.states.push((s.name.clone(), a));
                } else {
                    c.optimizer.push((s.name.clone(), a));
                }
            }
        }
        c.step = self.step as u64;
        c.seed = self.recipe.seed;
        c.extra
            .insert("optimizer".into(), self.recipe.optimizer.name().into());
        c
    }

    /// Loads a checkpoint already fitted to the model (see
    /// [`Checkpoint::fit`]). With `optimizer`, optimizer slots and the step
    /// counter are restored too (to resume training): slots missing from
    /// the file are an error then, since training would not continue as it
    /// would have.
    pub fn load_checkpoint(&mut self, c: &Checkpoint, optimizer: bool) -> Result<(), SessionError> {
        for (name, a) in &c.params {
            let i = self
                .param_index(name)
                .ok_or_else(|| input_err(format!("the model has no parameter `{name}`")))?;
            self.set_param(i, &a.view())?;
        }
        for (name, a) in &c.states {
            let i = self
                .train
                .states
                .iter()
                .position(|s| &s.name == name)
                .ok_or_else(|| input_err(format!("the model has no buffer `{name}`")))?;
            self.set_state(i, a)?;
        }
        if optimizer {
            let n_model = self.model.states.len();
            let mut missing = Vec::new();
            for i in n_model..self.train.states.len() {
                let name = self.train.states[i].name.clone();
                match c.optimizer.iter().find(|(n, _)| *n == name) {
                    Some((_, a)) => self.set_state(i, a)?,
                    None => missing.push(name),
                }
            }
            if !missing.is_empty() {
                return Err(input_err(format!(
                    "the checkpoint has no optimizer state for {} ({} slots missing, e.g. `{}`): was it written with another optimizer (this run uses {})?",
                    self.recipe.optimizer.name(),
                    missing.len(),
                    missing[0],
                    self.recipe.optimizer.name()
                )));
            }
            self.step = c.step as usize;
        }
        Ok(())
    }
}

/// Element counts of a model's inputs at batch `b`.
fn input_lens(m: &Model, b: usize) -> Vec<usize> {
    m.inputs
        .iter()
        .map(|i| i.ty.shape.numel_at(b).unwrap_or(0))
        .collect()
}

/// Checks number, types and lengths of inputs before any native code runs.
fn check_inputs(m: &Model, inputs: &[InputData<'_>], b: usize) -> Result<(), SessionError> {
    if inputs.len() != m.inputs.len() {
        let names: Vec<&str> = m.inputs.iter().map(|i| i.name.as_str()).collect();
        return Err(input_err(format!(
            "the model `{}` takes {} inputs ({}), not {}",
            m.name,
            m.inputs.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    for (inp, x) in m.inputs.iter().zip(inputs) {
        let want = inp.ty.shape.numel_at(b).unwrap_or(0);
        let (len, dtype) = match x {
            InputData::F32(s) => (s.len(), DType::F32),
            InputData::I32(s) => (s.len(), DType::I32),
        };
        if dtype != inp.ty.dtype {
            return Err(input_err(format!(
                "input `{}` takes {} values, not {dtype}",
                inp.name, inp.ty.dtype
            )));
        }
        if len != want {
            return Err(input_err(format!(
                "input `{}` of shape {} at batch {b} needs {want} values, got {len}",
                inp.name, inp.ty.shape
            )));
        }
        if let (InputData::I32(s), Some(c)) = (x, inp.classes)
            && let Some(bad) = s.iter().find(|&&v| v < 0 || v as usize >= c)
        {
            return Err(input_err(format!(
                "input `{}` holds class index {bad}, outside 0..{c}",
                inp.name
            )));
        }
    }
    Ok(())
}

/// Refuses a batch size whose tensors cannot fit in memory, before
/// anything is allocated or even scheduled.
pub fn check_memory(model: &Model, batch: usize) -> Result<(), SessionError> {
    // The training step keeps about the forward activations and their
    // gradients; the scheduled arena is checked exactly later.
    let need = model.activation_bytes(batch).saturating_mul(2);
    let avail = available_memory().map_or(u128::MAX, u128::from);
    let limit = avail.min(1u128 << 46);
    if need > limit {
        return Err(SessionError::Memory(format!(
            "batch {batch} is too large for `{}`: its training step needs about {} of memory, but {} {}; use a smaller batch (--batch)",
            model.name,
            crate::ir::lower::human_bytes(need),
            crate::ir::lower::human_bytes(limit),
            if limit == avail {
                "is available"
            } else {
                "is the most nnc will use"
            }
        )));
    }
    Ok(())
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

    fn session(src: &str, batch: usize) -> Result<Session, SessionError> {
        let opts = crate::ir::lower::LowerOptions {
            mode: crate::ir::Mode::Infer,
            ..Default::default()
        };
        let infer = check_source("t.nn", src, &FsLoader, &opts).models.remove(0);
        Session::new(&model(src), infer, None, batch, 1)
    }

    const MLP: &str = "model m { input x: [B, 3]  labels y: [B] classes 2\n logits = x |> dense(4) |> batchnorm |> relu |> dense(2)\n loss = cross_entropy(logits, y) }\n train m { optimizer adam(lr: 0.05) }";

    #[test]
    fn partial_batches_share_weights_and_match_the_reference() {
        // No batch norm here: the bias before it has a zero gradient, which
        // Adam turns into rounding noise of either sign.
        let src = MLP.replace("|> batchnorm ", "");
        let m = model(&src);
        let mut s = session(&src, 4).unwrap();
        let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.37).sin()).collect();
        let y = vec![0, 1, 1, 0];
        s.train_step(&[InputData::F32(&x), InputData::I32(&y)], 4)
            .unwrap();
        // Last partial batch of 3, with its own code.
        let r = s
            .train_step(&[InputData::F32(&x[..9]), InputData::I32(&y[..3])], 3)
            .unwrap();
        assert!(r.loss.is_finite());
        assert_eq!(r.output.as_ref().map(Vec::len), Some(3 * 2));
        assert_eq!(s.compiled_batches().0, vec![3, 4]);
        // The reference interpreter on the same batches agrees.
        let mut reference = crate::runtime::reference_trainer::ReferenceTrainer::<f32>::new(
            &m,
            s.recipe.clone(),
            4,
            None,
        )
        .unwrap();
        let a =
            |v: &[f32], shape: &[usize]| ArrayD::from_shape_vec(IxDyn(shape), v.to_vec()).unwrap();
        let ai = |v: &[i32]| {
            ArrayD::from_shape_vec(IxDyn(&[v.len()]), v.iter().map(|&c| c as f32).collect())
                .unwrap()
        };
        reference.step(&[a(&x, &[4, 3]), ai(&y)]).unwrap();
        reference.batch = 3;
        let l = reference
            .step(&[a(&x[..9], &[3, 3]), ai(&y[..3])])
            .unwrap()
            .loss;
        assert!((l - r.loss as f64).abs() < 1e-4, "{l} vs {}", r.loss);
        for i in 0..m.params.len() {
            let j = s.param(i).unwrap();
            let d = (&j - &reference.params[i])
                .mapv(f32::abs)
                .fold(0.0f32, |m, &v| m.max(v));
            assert!(d < 1e-4, "{}: {d}", m.params[i].name);
        }
    }

    #[test]
    fn inputs_are_checked() {
        let mut s = session(MLP, 4).unwrap();
        let x = vec![0.0f32; 12];
        let e = s
            .train_step(&[InputData::F32(&x), InputData::I32(&[0, 1, 2, 0])], 4)
            .unwrap_err();
        assert!(e.to_string().contains("class index 2"), "{e}");
        let e = s
            .train_step(&[InputData::F32(&x[..5]), InputData::I32(&[0; 4])], 4)
            .unwrap_err();
        assert!(e.to_string().contains("needs 12 values, got 5"), "{e}");
        let e = s.infer(&[InputData::F32(&x)], 4).unwrap_err();
        assert!(e.to_string().contains("takes 2 inputs"), "{e}");
        let e = s
            .infer(&[InputData::F32(&x), InputData::I32(&[0; 4])], 5)
            .unwrap_err();
        assert!(e.to_string().contains("batches of 1 to 4"), "{e}");
    }

    #[test]
    fn too_large_batches_are_refused_before_allocation() {
        let e = session(MLP, usize::MAX / 8).err().unwrap();
        assert!(matches!(e, SessionError::Memory(_)), "{e}");
        assert!(e.to_string().contains("use a smaller batch"), "{e}");
    }

    #[test]
    fn checkpoint_round_trip_restores_training_exactly() {
        let x: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).cos()).collect();
        let y = vec![1, 1, 0, 0];
        let feed = [InputData::F32(&x), InputData::I32(&y)];
        let mut a = session(MLP, 4).unwrap();
        a.train_step(&feed, 4).unwrap();
        let c = a.to_checkpoint();
        let mut b = session(MLP, 4).unwrap();
        b.load_checkpoint(&c, true).unwrap();
        assert_eq!(b.step, 1);
        let la = a.train_step(&feed, 4).unwrap().loss;
        let lb = b.train_step(&feed, 4).unwrap().loss;
        assert_eq!(la.to_bits(), lb.to_bits());
        assert_eq!(a.param(0), b.param(0));
    }
}
