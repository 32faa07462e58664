//! Rewrites of a checked graph into cheaper equivalents, applied once after
//! lowering so every later stage (autodiff, the reference interpreter, the
//! JIT) sees the same graph.
//!
//! `one_hot(x) @ W` — how the language writes a character input and how
//! `embedding` lowers — becomes `gather(W, x)`: the rows of W picked by the
//! indices. Its gradient is a scatter-add of the incoming rows instead of a
//! product with a one-hot matrix that is almost all zeros. Exact: a one-hot
//! row times W adds one row of W to zeros.

use super::graph::{Graph, NodeId};
use super::ops::Op;
use super::shape::without_time;

/// Rewrites every product of a one-hot matrix with a weight matrix in
/// `graph` and its recurrence bodies.
pub fn one_hot_products(graph: &mut Graph) {
    for i in 0..graph.len() {
        let id = NodeId(i as u32);
        if let Op::Recur(r) = &mut graph.nodes[i].op {
            one_hot_products(&mut r.body);
        }
        gather_product(graph, id);
        gather_sequences(graph, id);
    }
}

/// The class indices a one-hot node encodes.
fn one_hot_of(graph: &Graph, id: NodeId) -> Option<NodeId> {
    let n = graph.node(id);
    match n.op {
        Op::OneHot { .. } => n.inputs.first().copied(),
        _ => None,
    }
}

fn is_matrix(graph: &Graph, id: NodeId) -> bool {
    graph.ty(id).is_some_and(|t| t.shape.rank() == 2)
}

/// `one_hot(x) @ W` → `gather(W, x)` for a matrix W.
fn gather_product(graph: &mut Graph, id: NodeId) {
    let n = graph.node(id);
    let (
        Op::MatMul {
            ta: false,
            tb: false,
        },
        [a, w],
    ) = (&n.op, n.inputs.as_slice())
    else {
        return;
    };
    let (a, w) = (*a, *w);
    if let Some(x) = one_hot_of(graph, a)
        && is_matrix(graph, w)
    {
        let n = graph.node_mut(id);
        n.op = Op::Gather;
        n.inputs = vec![w, x];
    }
}

/// A recurrence over a one-hot sequence whose every use in the body is
/// `h[t] @ W`: the recurrence reads the indices instead, and each product
/// becomes `gather(W, x[t])`.
fn gather_sequences(graph: &mut Graph, id: NodeId) {
    let Op::Recur(r) = &graph.node(id).op else {
        return;
    };
    let inputs = graph.node(id).inputs.clone();
    let mut plans = Vec::new();
    for (k, &seq) in inputs.iter().enumerate().take(r.n_seq) {
        let Some(x) = one_hot_of(graph, seq) else {
            continue;
        };
        let Some(slice_ty) = graph.ty(x).and_then(without_time) else {
            continue;
        };
        let Some(arg) = r.body.nodes.iter().position(|n| n.op == Op::Arg(k)) else {
            continue;
        };
        let arg = NodeId(arg as u32);
        if r.body.outputs.contains(&arg) {
            continue;
        }
        let mut products = Vec::new();
        let mut only_products = true;
        for (j, n) in r.body.nodes.iter().enumerate() {
            if !n.inputs.contains(&arg) {
                continue;
            }
            match (&n.op, n.inputs.as_slice()) {
                (
                    Op::MatMul {
                        ta: false,
                        tb: false,
                    },
                    [a, w],
                ) if *a == arg && *w != arg && is_matrix(&r.body, *w) => {
                    products.push(NodeId(j as u32));
                }
                _ => only_products = false,
            }
        }
        if only_products && !products.is_empty() {
            plans.push((k, x, slice_ty, arg, products));
        }
    }
    if plans.is_empty() {
        return;
    }
    for (k, x, slice_ty, arg, products) in plans {
        graph.node_mut(id).inputs[k] = x;
        let Op::Recur(r) = &mut graph.node_mut(id).op else {
            return;
        };
        r.body.node_mut(arg).ty = Some(slice_ty);
        for p in products {
            let n = r.body.node_mut(p);
            let w = n.inputs[1];
            n.op = Op::Gather;
            n.inputs = vec![w, arg];
        }
    }
}
