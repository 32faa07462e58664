//! Reverse-mode automatic differentiation as a pass over the IR.
//!
//! [`backprop`] walks the forward part of a graph from last node to first,
//! summing the gradient contributions each node receives and handing them to
//! its inputs through the local rule of its op ([`rules::vjp`]). Gradient
//! nodes are appended to the same graph, so the result is one graph holding
//! forward and backward. Recurrences are differentiated through time by
//! [`recur`], which builds a reverse loop rather than unrolling.

mod recur;
mod rules;

use std::collections::HashMap;

use super::build::{Builder, Result};
use super::graph::NodeId;
use super::ops::Op;

/// Gradients of `seeds` (pairs of a node and the gradient flowing into it)
/// with respect to `wanted`, over the nodes `0..forward_len` of the builder's
/// graph. Returns one entry per wanted node: `None` when the seeds do not
/// depend on it.
pub fn backprop(
    b: &mut Builder<'_>,
    forward_len: usize,
    seeds: &[(NodeId, NodeId)],
    wanted: &[NodeId],
) -> Result<Vec<Option<NodeId>>> {
    Ok(backprop_with(b, forward_len, seeds, wanted, &HashMap::new())?.wanted)
}

/// The result of [`backprop_with`].
pub struct Gradients {
    /// The gradient of each wanted node.
    pub wanted: Vec<Option<NodeId>>,
    /// The total gradient flowing into every forward node (where computed).
    pub totals: Vec<Option<NodeId>>,
}

/// Like [`backprop`], reading the value of node `n` as `subst[n]` wherever a
/// local rule needs it (a saved value instead of a recomputed one).
pub fn backprop_with(
    b: &mut Builder<'_>,
    forward_len: usize,
    seeds: &[(NodeId, NodeId)],
    wanted: &[NodeId],
    subst: &HashMap<NodeId, NodeId>,
) -> Result<Gradients> {
    // Which nodes lie on a path from a wanted node: only they get gradients.
    let mut requires = vec![false; forward_len];
    for &w in wanted {
        if w.index() < forward_len {
            requires[w.index()] = true;
        }
    }
    for i in 0..forward_len {
        if !requires[i] {
            let n = &b.graph.nodes[i];
            requires[i] = differentiable(&n.op) && n.inputs.iter().any(|x| requires[x.index()]);
        }
    }
    let mut parts: Vec<Vec<NodeId>> = vec![Vec::new(); forward_len];
    for &(n, g) in seeds {
        if n.index() < forward_len {
            parts[n.index()].push(g);
        }
    }
    // Gradients of a recurrence's results arrive through its Output nodes.
    let mut recur_parts: HashMap<NodeId, HashMap<usize, NodeId>> = HashMap::new();
    let mut total: Vec<Option<NodeId>> = vec![None; forward_len];
    for i in (0..forward_len).rev() {
        let id = NodeId(i as u32);
        let node = b.graph.nodes[i].clone();
        if !requires[i] {
            continue;
        }
        let g = match parts[i].as_slice() {
            [] => None,
            [one] => Some(*one),
            many => {
                let mut acc = many[0];
                for &p in &many[1..] {
                    acc = b.add2(acc, p)?;
                }
                Some(acc)
            }
        };
        b.span = node.span;
        b.layer = node.layer;
        match &node.op {
            Op::Output { index } => {
                if let Some(g) = g {
                    recur_parts
                        .entry(node.inputs[0])
                        .or_default()
                        .insert(*index, g);
                }
            }
            Op::Recur(r) => {
                let grads = recur_parts.remove(&id).unwrap_or_default();
                if grads.is_empty() {
                    continue;
                }
                let need: Vec<bool> = node.inputs.iter().map(|x| requires[x.index()]).collect();
                let ins = recur::vjp(b, r, &node.inputs, id, &grads, &need)?;
                for (x, gx) in node.inputs.iter().zip(ins) {
                    if let Some(gx) = gx {
                        parts[x.index()].push(gx);
                    }
                }
            }
            _ => {
                let Some(g) = g else { continue };
                total[i] = Some(g);
                let need: Vec<bool> = node.inputs.iter().map(|x| requires[x.index()]).collect();
                if !need.iter().any(|&n| n) {
                    continue;
                }
                let mut local = node.clone();
                for x in &mut local.inputs {
                    if let Some(&v) = subst.get(x) {
                        *x = v;
                    }
                }
                let y = subst.get(&id).copied().unwrap_or(id);
                let ins = rules::vjp(b, &local, y, g, &need)?;
                for (x, gx) in node.inputs.iter().zip(ins) {
                    if let Some(gx) = gx {
                        parts[x.index()].push(gx);
                    }
                }
            }
        }
    }
    // Leaves (parameters, arguments) have no rule: their total is the sum of parts.
    let mut out = Vec::with_capacity(wanted.len());
    for &w in wanted {
        let i = w.index();
        if i >= forward_len {
            out.push(None);
            continue;
        }
        let g = match total[i] {
            Some(g) => Some(g),
            None => match parts[i].as_slice() {
                [] => None,
                [one] => Some(*one),
                many => {
                    let mut acc = many[0];
                    for &p in &many[1..] {
                        acc = b.add2(acc, p)?;
                    }
                    Some(acc)
                }
            },
        };
        out.push(g);
    }
    Ok(Gradients {
        wanted: out,
        totals: total,
    })
}

/// Whether gradients flow through an op at all.
fn differentiable(op: &Op) -> bool {
    !matches!(
        op,
        Op::Input { .. }
            | Op::Param(_)
            | Op::State(_)
            | Op::Arg(_)
            | Op::Fill { .. }
            | Op::SizeOf { .. }
            | Op::DropoutMask { .. }
            | Op::Hyper(_)
            | Op::StepFlag { .. }
            | Op::OneHot { .. }
    )
}
