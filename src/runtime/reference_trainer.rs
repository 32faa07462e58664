//! Training with the reference interpreter: the oracle for the compiled
//! trainer, and a way to train any model, slowly, in f32 or f64.

use ndarray::ArrayD;

use crate::ir::build::BuildError;
use crate::ir::model::Model;
use crate::ir::ops::StateId;
use crate::ir::optim::{self, TrainGraph};
use crate::ir::train::{Clip, Optimizer, Schedule};
use crate::reference::{self, Feeds, Real, RefError, f64_of};
use crate::rng;
use crate::runtime::{params, schedule};

/// The recipe of a training run, as a `train` block gives it.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub optimizer: Optimizer,
    pub schedule: Vec<Schedule>,
    pub clip: Option<Clip>,
    /// Steps in the whole run (for schedules that span it).
    pub total_steps: usize,
    pub seed: u64,
}

/// A model's training graph with its parameters, states and step counter.
#[derive(Debug, Clone)]
pub struct ReferenceTrainer<T> {
    pub train: TrainGraph,
    pub params: Vec<ArrayD<T>>,
    pub states: Vec<ArrayD<T>>,
    pub recipe: Recipe,
    pub batch: usize,
    /// Optimizer steps taken so far.
    pub step: usize,
}

/// One step's results.
#[derive(Debug, Clone)]
pub struct StepOutput<T> {
    pub loss: f64,
    /// Gradients (after clipping) by parameter index.
    pub grads: Vec<Option<ArrayD<T>>>,
}

impl<T: Real> ReferenceTrainer<T> {
    /// Builds the training graph; parameters start from `params` (or the
    /// seeded default initialisation), states from their initial values.
    pub fn new(
        model: &Model,
        recipe: Recipe,
        batch: usize,
        params: Option<Vec<ArrayD<T>>>,
    ) -> Result<Self, BuildError> {
        let train = optim::build(model, &recipe.optimizer, recipe.clip.as_ref())?;
        let params = params.unwrap_or_else(|| params::init(model, recipe.seed));
        let states = params::init_states(&train.states, batch);
        Ok(ReferenceTrainer {
            train,
            params,
            states,
            recipe,
            batch,
            step: 0,
        })
    }

    fn hypers(&self) -> Vec<f64> {
        let lr = schedule::lr_at(
            self.recipe.optimizer.lr,
            &self.recipe.schedule,
            self.step,
            self.recipe.total_steps,
        );
        schedule::hyper_values(&self.train.hypers, &self.recipe.optimizer, self.step, lr)
    }

    /// Runs one training step on a batch (inputs in the model's input order)
    /// and applies the updates.
    pub fn step(&mut self, inputs: &[ArrayD<T>]) -> Result<StepOutput<T>, RefError> {
        let hypers = self.hypers();
        let tg = &self.train;
        let mut wanted = vec![tg.loss];
        let grad_nodes: Vec<_> = tg.grads.iter().flatten().copied().collect();
        wanted.extend(&grad_nodes);
        wanted.extend(tg.param_updates.iter().map(|(_, n)| *n));
        wanted.extend(tg.state_updates.iter().map(|(_, n)| *n));
        let feeds = Feeds {
            inputs,
            params: &self.params,
            states: &self.states,
            hypers: &hypers,
            seed: rng::step_seed(self.recipe.seed, self.step as u64),
            batch: self.batch,
            kinks: None,
        };
        let mut values = reference::run(&tg.graph, &feeds, &wanted)?.into_iter();
        let loss = values.next().map_or(f64::NAN, |l| {
            l.iter().next().copied().map_or(f64::NAN, f64_of)
        });
        let mut grads = Vec::with_capacity(tg.grads.len());
        for g in &tg.grads {
            grads.push(match g {
                Some(_) => values.next(),
                None => None,
            });
        }
        let new_params: Vec<_> = values.by_ref().take(tg.param_updates.len()).collect();
        let new_states: Vec<_> = values.collect();
        for ((p, _), v) in tg.param_updates.iter().zip(new_params) {
            self.params[p.0 as usize] = v;
        }
        let updates: Vec<StateId> = tg.state_updates.iter().map(|(s, _)| *s).collect();
        for (s, v) in updates.into_iter().zip(new_states) {
            self.states[s.0 as usize] = v;
        }
        self.step += 1;
        Ok(StepOutput { loss, grads })
    }
}
