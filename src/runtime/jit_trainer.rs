//! Training with compiled code: the whole step — forward, loss, backward,
//! clipping and optimizer update — is one call into native code that updates
//! parameters and optimizer state in place.

use ndarray::{ArrayD, IxDyn};

use super::executable::{Aligned, CompileError, Executable, InputData};
use super::programs::training_outputs;
use super::reference_trainer::Recipe;
use super::{params, schedule as lr};
use crate::ir::build::BuildError;
use crate::ir::model::{Model, State};
use crate::ir::optim::{self, TrainGraph};
use crate::rng;
use crate::schedule::Layout;

/// Why a trainer could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("{0}")]
    Input(String),
}

/// Offsets of tensors packed one after another, each aligned to 64 bytes.
pub fn pack(lens: impl Iterator<Item = usize>) -> (Vec<usize>, usize) {
    let mut offsets = Vec::new();
    let mut top = 0;
    for n in lens {
        offsets.push(top);
        top += n.div_ceil(16) * 16;
    }
    (offsets, top)
}

/// A model's compiled training step with its parameters and states.
pub struct JitTrainer {
    pub train: TrainGraph,
    pub exe: Executable,
    pub params: Aligned,
    pub param_offsets: Vec<usize>,
    pub param_shapes: Vec<Vec<usize>>,
    pub states: Aligned,
    pub state_offsets: Vec<usize>,
    pub recipe: Recipe,
    pub batch: usize,
    pub threads: usize,
    pub step: usize,
    /// Autodiff, scheduling and code generation of the step.
    pub compile_time: std::time::Duration,
    hypers: Vec<f32>,
    /// Index of the first gradient output, when gradients are requested.
    grads_at: Option<usize>,
}

impl JitTrainer {
    /// Builds and compiles the training step of `model` at `batch`.
    pub fn new(
        model: &Model,
        recipe: Recipe,
        batch: usize,
        init: Option<Vec<ArrayD<f32>>>,
        threads: usize,
        with_grads: bool,
    ) -> Result<JitTrainer, TrainError> {
        JitTrainer::build(model, recipe, batch, init, threads, with_grads, false)
    }

    /// Like [`JitTrainer::new`]; with `profile`, every kernel is timed.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        model: &Model,
        recipe: Recipe,
        batch: usize,
        init: Option<Vec<ArrayD<f32>>>,
        threads: usize,
        with_grads: bool,
        profile: bool,
    ) -> Result<JitTrainer, TrainError> {
        let started = std::time::Instant::now();
        let train = optim::build(model, &recipe.optimizer, recipe.clip.as_ref())?;
        let autodiff = started.elapsed();
        let param_shapes: Vec<Vec<usize>> = model.params.iter().map(|p| p.shape.at(1)).collect();
        let (param_offsets, plen) = pack(param_shapes.iter().map(|s| s.iter().product()));
        let (state_offsets, slen) = pack(
            train
                .states
                .iter()
                .map(|s| s.ty.shape.numel_at(batch).unwrap_or(0)),
        );
        let grads: Vec<_> = if with_grads {
            train.grads.iter().flatten().copied().collect()
        } else {
            Vec::new()
        };
        // Gradients, when wanted, are read back as outputs 1, 2, ...
        let grads_at = with_grads.then_some(1);
        let outputs = training_outputs(&train, &grads);
        let layout = Layout {
            param_offsets: param_offsets.clone(),
            state_offsets: state_offsets.clone(),
            inputs: model.inputs.len(),
        };
        let input_lens = model
            .inputs
            .iter()
            .map(|i| i.ty.shape.numel_at(batch).unwrap_or(0))
            .collect();
        let exe =
            Executable::with_profile(&train.graph, &outputs, batch, &layout, input_lens, profile)?;
        let compile_time = autodiff + exe.compile_time;
        let mut params_buf = Aligned::zeros(plen);
        let init = init.unwrap_or_else(|| params::init(model, recipe.seed));
        for (i, a) in init.iter().enumerate() {
            let off = param_offsets[i];
            for (k, v) in a.iter().enumerate() {
                params_buf.as_mut_slice()[off + k] = *v;
            }
        }
        let mut states_buf = Aligned::zeros(slen);
        write_states(
            &train.states,
            &state_offsets,
            batch,
            states_buf.as_mut_slice(),
        );
        let hypers = vec![0.0; train.hypers.len()];
        Ok(JitTrainer {
            train,
            exe,
            params: params_buf,
            param_offsets,
            param_shapes,
            states: states_buf,
            state_offsets,
            recipe,
            batch,
            threads: threads.max(1),
            step: 0,
            compile_time,
            hypers,
            grads_at,
        })
    }

    /// One training step on a batch; returns the loss.
    pub fn step(&mut self, inputs: &[InputData<'_>]) -> Result<f32, TrainError> {
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
        let (params, states, hypers, exe) = (
            &mut self.params,
            &mut self.states,
            &self.hypers,
            &mut self.exe,
        );
        let result = exe.run(
            params.as_mut_slice(),
            states.as_mut_slice(),
            hypers,
            inputs,
            seed,
            threads,
            sizes,
        );
        result.map_err(TrainError::Input)?;
        self.step += 1;
        Ok(self
            .exe
            .output(0, self.params.as_slice(), self.states.as_slice())
            .first()
            .copied()
            .unwrap_or(f32::NAN))
    }

    /// Parameter `i` as an array.
    pub fn param(&self, i: usize) -> ArrayD<f32> {
        let shape = &self.param_shapes[i];
        let n: usize = shape.iter().product();
        let off = self.param_offsets[i];
        ArrayD::from_shape_vec(IxDyn(shape), self.params.as_slice()[off..off + n].to_vec())
            .unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
    }

    /// State `i` (model states, then optimizer slots) as a flat vector.
    pub fn state(&self, i: usize) -> Vec<f32> {
        let n = self.train.states[i]
            .ty
            .shape
            .numel_at(self.batch)
            .unwrap_or(0);
        let off = self.state_offsets[i];
        self.states.as_slice()[off..off + n].to_vec()
    }

    /// The gradient of parameter `i` from the last step (when requested).
    pub fn grad(&self, i: usize) -> Option<Vec<f32>> {
        let at = self.grads_at?;
        self.train.grads.get(i)?.as_ref()?;
        let k = self.train.grads[..i].iter().flatten().count();
        Some(
            self.exe
                .output(at + k, self.params.as_slice(), self.states.as_slice()),
        )
    }
}

/// Writes the initial values of states at their offsets.
pub fn write_states(states: &[State], offsets: &[usize], batch: usize, buf: &mut [f32]) {
    for (s, &off) in states.iter().zip(offsets) {
        let n = s.ty.shape.numel_at(batch).unwrap_or(0);
        buf[off..off + n].fill(s.init as f32);
    }
}
