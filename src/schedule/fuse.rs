//! Fusion rules: which nodes run together in one loop.
//!
//! Walking the graph from its last node back, an elementwise node joins the
//! loop of its consumers when
//! 1. all its consumers that are not later than that loop's last node are in
//!    the loop (so every reader sees it computed), and
//! 2. its shape is the loop's iteration space (a smaller value broadcast into
//!    a bigger loop would be recomputed per element; it gets its own loop).
//!
//! A reduction starts a loop over its input's shape, so the elementwise chain
//! feeding it (and the reductions of the same input) share one pass. A value
//! is stored when anything outside its loop reads it.

use crate::ir::graph::{Graph, NodeId};
use crate::ir::ops::Op;

pub type GroupId = usize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not needed for any requested output.
    Dead,
    /// Input, parameter, state or body argument: read in place.
    Leaf,
    /// A constant or per-step scalar, computed inline where it is read.
    Inline,
    /// Reshape, transpose, slice or broadcast: a view of its input.
    View,
    /// Computed in a loop and only used there.
    Fused(GroupId),
    /// Computed in a loop and stored for later readers.
    Stored(GroupId),
    /// A reduction done by a loop; its result is stored.
    Reduced(GroupId),
    /// A kernel of its own (products, convolutions, pooling, softmax, ...).
    Anchor,
}

#[derive(Debug, Clone)]
pub struct Group {
    /// The last node of the loop: it is emitted when the schedule reaches it.
    pub root: NodeId,
    /// The iteration space (the shape at the scheduled batch size).
    pub dims: Vec<usize>,
    pub members: Vec<NodeId>,
}

fn is_elementwise(op: &Op) -> bool {
    matches!(
        op,
        Op::Unary(_) | Op::Binary(_) | Op::Where | Op::OneHot { .. } | Op::DropoutMask { .. }
    )
}

fn is_inline(op: &Op) -> bool {
    matches!(op, Op::Hyper(_) | Op::SizeOf { .. } | Op::StepFlag { .. })
}

/// Assigns a role to every node. `needed` marks live nodes; `stored` marks
/// nodes whose values are requested (they must be stored); `shape_of` gives
/// each node's shape at the scheduled batch.
pub fn assign(
    graph: &Graph,
    needed: &[bool],
    stored: &[bool],
    shape_of: &dyn Fn(NodeId) -> Vec<usize>,
) -> (Vec<Role>, Vec<Group>) {
    let n = graph.len();
    let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); n];
    for id in graph.ids() {
        if !needed[id.index()] {
            continue;
        }
        for &x in &graph.node(id).inputs {
            consumers[x.index()].push(id);
        }
    }
    let mut role = vec![Role::Dead; n];
    let mut groups: Vec<Group> = Vec::new();
    for i in (0..n).rev() {
        if !needed[i] {
            continue;
        }
        let id = NodeId(i as u32);
        let op = &graph.node(id).op;
        role[i] = match op {
            Op::Input { .. } | Op::Param(_) | Op::State(_) | Op::Arg(_) => Role::Leaf,
            _ if is_inline(op) => Role::Inline,
            Op::Fill { .. } => {
                // A constant read only by loops is inlined; anything else
                // (a product, a recurrence's initial state) needs it in memory.
                let all_loops = consumers[i].iter().all(|c| {
                    matches!(
                        role[c.index()],
                        Role::Fused(_) | Role::Stored(_) | Role::Reduced(_)
                    )
                });
                if all_loops && !stored[i] {
                    Role::Inline
                } else {
                    let g = groups.len();
                    groups.push(Group {
                        root: id,
                        dims: shape_of(id),
                        members: vec![id],
                    });
                    Role::Stored(g)
                }
            }
            Op::Reshape { .. } | Op::Transpose { .. } | Op::Slice { .. } | Op::Expand { .. } => {
                Role::View
            }
            Op::Reduce { .. } => {
                let g = groups.len();
                let input = graph.node(id).inputs[0];
                groups.push(Group {
                    root: id,
                    dims: shape_of(input),
                    members: vec![id],
                });
                Role::Reduced(g)
            }
            _ if is_elementwise(op) => {
                let dims = shape_of(id);
                let cs = &consumers[i];
                // The loop to join: one whose iteration space is this shape.
                let target = cs.iter().find_map(|c| match role[c.index()] {
                    Role::Fused(g) | Role::Stored(g) | Role::Reduced(g)
                        if groups[g].dims == dims =>
                    {
                        Some(g)
                    }
                    _ => None,
                });
                match target {
                    Some(g) => {
                        let root = groups[g].root;
                        let outside: Vec<&NodeId> = cs
                            .iter()
                            .filter(|c| !matches!(role[c.index()], Role::Fused(x) | Role::Stored(x) | Role::Reduced(x) if x == g))
                            .collect();
                        if outside.iter().all(|c| **c > root) {
                            groups[g].members.push(id);
                            if outside.is_empty() && !stored[i] {
                                Role::Fused(g)
                            } else {
                                Role::Stored(g)
                            }
                        } else {
                            new_group(&mut groups, id, dims)
                        }
                    }
                    None => new_group(&mut groups, id, dims),
                }
            }
            _ => Role::Anchor,
        };
    }
    for g in &mut groups {
        g.members.sort();
    }
    (role, groups)
}

fn new_group(groups: &mut Vec<Group>, id: NodeId, dims: Vec<usize>) -> Role {
    let g = groups.len();
    groups.push(Group {
        root: id,
        dims,
        members: vec![id],
    });
    Role::Stored(g)
}
