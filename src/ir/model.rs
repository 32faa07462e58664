//! A lowered model: its graph of primitives plus everything around it that the
//! later stages need — inputs, parameters and how to initialise them,
//! persistent state, the layer table for summaries, the loss and the training
//! configuration.

use super::graph::{Graph, LayerId, NodeId};
use super::ops::{ParamId, StateId};
use super::train::TrainConfig;
use super::types::{DType, Shape, TensorType};
use crate::diag::Span;

/// Which graph to build: dropout and batch norm differ between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Train,
    Infer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Fed to the model.
    Data,
    /// Targets, only needed by the loss.
    Labels,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub name: String,
    pub kind: InputKind,
    pub ty: TensorType,
    /// For class-index tensors: how many classes.
    pub classes: Option<usize>,
    pub node: NodeId,
    pub span: Span,
}

/// How a parameter starts, as PyTorch's default initialisers do it.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Uniform in [-bound, bound] (PyTorch's default for dense and conv
    /// weights and biases: bound = 1/sqrt(fan_in)).
    Uniform(f64),
    /// Normal with mean 0 and this standard deviation.
    Normal(f64),
    Constant(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The path name, as PyTorch's `state_dict` would have it: `layer1.0.conv1.weight`.
    pub name: String,
    pub shape: Shape,
    pub init: Init,
    pub node: NodeId,
    pub span: Span,
    pub layer: Option<LayerId>,
    /// Whether any node reads it (tied layers read it several times).
    pub uses: usize,
}

/// A persistent buffer that is not trained: batch-norm running statistics,
/// the carried state of a stateful recurrence.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub name: String,
    pub ty: TensorType,
    pub init: f64,
    pub node: NodeId,
    pub span: Span,
}

/// One row of `nnc summary`: a layer application or a block instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub path: String,
    /// `dense`, `conv2d`, or a block's name.
    pub kind: String,
    pub span: Span,
    pub parent: Option<LayerId>,
    /// The layer's result in the model's graph (`None` inside a recurrence body).
    pub output: Option<NodeId>,
    pub output_ty: Option<TensorType>,
    /// Parameters created by this layer itself (not its children).
    pub params: Vec<ParamId>,
    /// Applied again with the parameters of an earlier application.
    pub shared: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub span: Span,
    pub mode: Mode,
    pub graph: Graph,
    pub inputs: Vec<Input>,
    pub params: Vec<Param>,
    pub states: Vec<State>,
    /// New values of states after a forward pass (running statistics, carried
    /// recurrent state), applied after each training step.
    pub state_updates: Vec<(StateId, NodeId)>,
    pub layers: Vec<Layer>,
    /// Named tensors, for dumps and messages.
    pub names: Vec<(String, NodeId)>,
    /// What `forward`/`predict` return.
    pub outputs: Vec<(String, NodeId)>,
    pub loss: Option<NodeId>,
    pub train: Option<TrainConfig>,
}

impl Model {
    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.name == name)
    }

    pub fn param(&self, id: ParamId) -> &Param {
        &self.params[id.0 as usize]
    }

    pub fn data_inputs(&self) -> impl Iterator<Item = &Input> {
        self.inputs.iter().filter(|i| i.kind == InputKind::Data)
    }

    pub fn label_inputs(&self) -> impl Iterator<Item = &Input> {
        self.inputs.iter().filter(|i| i.kind == InputKind::Labels)
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.numel_at(1).unwrap_or(0))
            .sum()
    }

    /// The name given to a node, if any.
    pub fn name_of(&self, node: NodeId) -> Option<&str> {
        self.names
            .iter()
            .find(|(_, n)| *n == node)
            .map(|(s, _)| s.as_str())
    }

    /// Bytes of every forward tensor (not parameters) at a batch size.
    pub fn activation_bytes(&self, batch: usize) -> u128 {
        self.graph
            .nodes
            .iter()
            .filter(|n| !matches!(n.op, super::ops::Op::Param(_)))
            .filter_map(|n| n.ty.as_ref())
            .map(|t| t.shape.numel_at(batch).unwrap_or(usize::MAX) as u128 * dtype_bytes(t.dtype))
            .sum()
    }
}

pub fn dtype_bytes(d: DType) -> u128 {
    match d {
        DType::F32 | DType::I32 => 4,
    }
}
