//! A graph of primitive ops in an arena: nodes refer to their inputs by
//! [`NodeId`], and are stored in creation order, which is a topological order.

use super::fused::AdamUpdate;
use super::ops::Op;
use super::types::TensorType;
use crate::diag::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Index of a layer in [`super::Model::layers`]: which layer a node belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(pub u32);

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<NodeId>,
    /// `None` when the shape could not be inferred (an error was reported).
    pub ty: Option<TensorType>,
    /// Where in the source the node came from.
    pub span: Span,
    pub layer: Option<LayerId>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    /// Values the graph produces (a recurrence body's next states and per-step
    /// outputs; unused at the top level, where the model names its outputs).
    pub outputs: Vec<NodeId>,
    /// Adam updates a scheduler may run as one kernel each (see [`AdamUpdate`]).
    pub adam_updates: Vec<AdamUpdate>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    pub fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        NodeId(self.nodes.len() as u32 - 1)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.nodes[id.index()]
    }

    pub fn ty(&self, id: NodeId) -> Option<&TensorType> {
        self.nodes.get(id.index()).and_then(|n| n.ty.as_ref())
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = NodeId> + use<> {
        (0..self.nodes.len() as u32).map(NodeId)
    }

    /// How many times each node is used as an input (or output).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut uses = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for i in &n.inputs {
                uses[i.index()] += 1;
            }
        }
        for o in &self.outputs {
            uses[o.index()] += 1;
        }
        uses
    }
}
