//! A model's training step and inference pass, scheduled but not compiled:
//! the kernels `nnc ir --kernels` lists and the memory `nnc summary` reports.

use super::executable::CompileError;
use crate::ir::Model;
use crate::ir::graph::NodeId;
use crate::ir::optim::{self, TrainGraph};
use crate::schedule::{self, Dest, Layout, Output, Program};

use super::jit_trainer::{TrainError, pack};
use super::session::recipe_of;

/// A scheduled program with the persistent buffers it runs against.
pub struct Planned {
    pub program: Program,
    /// Parameter elements.
    pub params: usize,
    /// Elements of the model's own persistent buffers (batch-norm statistics).
    pub model_state: usize,
    /// Elements of optimizer slots (momentum, Adam moments).
    pub optimizer_state: usize,
}

impl Planned {
    /// Arena, parameters and persistent buffers, in bytes.
    pub fn total_bytes(&self) -> usize {
        (self.program.arena + self.params + self.model_state + self.optimizer_state) * 4
    }
}

/// The outputs of a training step: the loss, then `extra` (values the
/// caller reads back), then every parameter and persistent buffer written in
/// place.
pub fn training_outputs(t: &TrainGraph, extra: &[NodeId]) -> Vec<Output> {
    let mut outputs = vec![Output {
        node: t.loss,
        dest: Dest::Buffer,
    }];
    outputs.extend(extra.iter().map(|&node| Output {
        node,
        dest: Dest::Buffer,
    }));
    outputs.extend(t.param_updates.iter().map(|&(p, n)| Output {
        node: n,
        dest: Dest::Param(p),
    }));
    outputs.extend(t.state_updates.iter().map(|&(s, n)| Output {
        node: n,
        dest: Dest::State(s),
    }));
    outputs
}

fn param_offsets(model: &Model) -> (Vec<usize>, usize) {
    pack(model.params.iter().map(|p| p.shape.at(1).iter().product()))
}

/// Where parameters and persistent buffers of `state_lens` elements go.
fn layout(model: &Model, state_lens: &[usize]) -> (Layout, usize) {
    let (param_offsets, params) = param_offsets(model);
    let (state_offsets, _) = pack(state_lens.iter().copied());
    let layout = Layout {
        param_offsets,
        state_offsets,
        inputs: model.inputs.len(),
    };
    (layout, params)
}

/// The training step of `model` at `batch`, with its `train` block's
/// optimizer (or the default one).
pub fn training(model: &Model, batch: usize) -> Result<Planned, TrainError> {
    let recipe = recipe_of(model, 1);
    let train = optim::build(model, &recipe.optimizer, recipe.clip.as_ref())?;
    let lens: Vec<usize> = train
        .states
        .iter()
        .map(|s| s.ty.shape.numel_at(batch).unwrap_or(0))
        .collect();
    let (layout, params) = layout(model, &lens);
    let program = schedule::schedule(&train.graph, &training_outputs(&train, &[]), batch, &layout)
        .map_err(CompileError::from)?;
    let model_state: usize = lens[..model.states.len()].iter().sum();
    Ok(Planned {
        program,
        params,
        model_state,
        optimizer_state: lens.iter().sum::<usize>() - model_state,
    })
}

/// The inference pass of `model` (lowered in inference mode) at `batch`:
/// its outputs, without the loss.
pub fn inference(model: &Model, batch: usize) -> Result<Planned, CompileError> {
    let lens: Vec<usize> = model
        .states
        .iter()
        .map(|s| s.ty.shape.numel_at(batch).unwrap_or(0))
        .collect();
    let (layout, params) = layout(model, &lens);
    let outputs: Vec<Output> = model
        .outputs
        .iter()
        .map(|(_, n)| Output {
            node: *n,
            dest: Dest::Buffer,
        })
        .collect();
    let program = schedule::schedule(&model.graph, &outputs, batch, &layout)?;
    Ok(Planned {
        program,
        params,
        model_state: lens.iter().sum(),
        optimizer_state: 0,
    })
}
