//! Adding nodes to a graph after lowering (autodiff, optimizers): every node's
//! type comes from the shape rules, and a rule that fails here is a bug of the
//! pass that built the node, reported as [`BuildError`].

use super::graph::{Graph, LayerId, Node, NodeId};
use super::ops::{Binary, Op, ReduceKind, Unary};
use super::shape;
use super::types::{Shape, TensorType};
use crate::diag::Span;

/// A pass built a node its shape rule rejects: an internal error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("internal error: {pass} built an invalid `{op}` node: {message}")]
pub struct BuildError {
    pub pass: &'static str,
    pub op: &'static str,
    pub message: String,
}

/// Appends typed nodes to a graph, tagging them with a span and layer.
pub struct Builder<'g> {
    pub graph: &'g mut Graph,
    pub pass: &'static str,
    pub span: Span,
    pub layer: Option<LayerId>,
}

pub type Result<T> = std::result::Result<T, BuildError>;

impl<'g> Builder<'g> {
    pub fn new(graph: &'g mut Graph, pass: &'static str) -> Builder<'g> {
        Builder {
            graph,
            pass,
            span: Span::default(),
            layer: None,
        }
    }

    pub fn ty(&self, id: NodeId) -> Result<&TensorType> {
        self.graph.ty(id).ok_or_else(|| BuildError {
            pass: self.pass,
            op: "?",
            message: format!("node {id:?} has no type"),
        })
    }

    pub fn shape(&self, id: NodeId) -> Result<Shape> {
        Ok(self.ty(id)?.shape.clone())
    }

    pub fn add(&mut self, op: Op, inputs: &[NodeId]) -> Result<NodeId> {
        let ty = {
            let tys = inputs
                .iter()
                .map(|&i| self.ty(i))
                .collect::<Result<Vec<_>>>()?;
            let ops: Vec<&Op> = inputs.iter().map(|&i| &self.graph.node(i).op).collect();
            shape::infer(&op, &tys, &ops).map_err(|e| BuildError {
                pass: self.pass,
                op: op.name(),
                message: e.message,
            })?
        };
        Ok(self.graph.push(Node {
            op,
            inputs: inputs.to_vec(),
            ty: Some(ty),
            span: self.span,
            layer: self.layer,
        }))
    }

    /// A leaf with a given type (arguments, hyper-parameters, state).
    pub fn leaf(&mut self, op: Op, ty: TensorType) -> NodeId {
        self.graph.push(Node {
            op,
            inputs: Vec::new(),
            ty: Some(ty),
            span: self.span,
            layer: self.layer,
        })
    }

    pub fn scalar(&mut self, v: f64) -> Result<NodeId> {
        self.add(
            Op::Fill {
                value: v,
                shape: Shape::scalar(),
            },
            &[],
        )
    }

    pub fn fill(&mut self, v: f64, shape: Shape) -> Result<NodeId> {
        self.add(Op::Fill { value: v, shape }, &[])
    }

    pub fn un(&mut self, u: Unary, a: NodeId) -> Result<NodeId> {
        self.add(Op::Unary(u), &[a])
    }

    pub fn bin(&mut self, b: Binary, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.add(Op::Binary(b), &[x, y])
    }

    pub fn add2(&mut self, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.bin(Binary::Add, x, y)
    }

    pub fn sub(&mut self, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.bin(Binary::Sub, x, y)
    }

    pub fn mul(&mut self, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.bin(Binary::Mul, x, y)
    }

    pub fn div(&mut self, x: NodeId, y: NodeId) -> Result<NodeId> {
        self.bin(Binary::Div, x, y)
    }

    /// x · c for a constant c.
    pub fn scale(&mut self, x: NodeId, c: f64) -> Result<NodeId> {
        let k = self.scalar(c)?;
        self.mul(x, k)
    }

    pub fn reshape(&mut self, x: NodeId, shape: Shape) -> Result<NodeId> {
        if self.shape(x)? == shape {
            return Ok(x);
        }
        self.add(Op::Reshape { shape }, &[x])
    }

    pub fn sum(&mut self, x: NodeId, axes: Vec<usize>, keep: bool) -> Result<NodeId> {
        if axes.is_empty() {
            return Ok(x);
        }
        self.add(
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes,
                keep,
            },
            &[x],
        )
    }

    /// The sum of every element: a scalar.
    pub fn sum_all(&mut self, x: NodeId) -> Result<NodeId> {
        let r = self.shape(x)?.rank();
        self.sum(x, (0..r).collect(), false)
    }

    /// Sums a gradient of a broadcast result back to the shape of the operand
    /// that was broadcast.
    pub fn unbroadcast(&mut self, g: NodeId, to: &Shape) -> Result<NodeId> {
        let gs = self.shape(g)?;
        if &gs == to {
            return Ok(g);
        }
        let extra = gs.rank().saturating_sub(to.rank());
        let mut axes: Vec<usize> = (0..extra).collect();
        for (i, d) in to.0.iter().enumerate() {
            if gs.0[extra + i] != *d {
                axes.push(extra + i);
            }
        }
        let summed = self.sum(g, axes, true)?;
        self.reshape(summed, to.clone())
    }

    /// Broadcasts `x` to `shape`.
    pub fn expand(&mut self, x: NodeId, shape: Shape) -> Result<NodeId> {
        if self.shape(x)? == shape {
            return Ok(x);
        }
        self.add(Op::Expand { shape }, &[x])
    }
}
