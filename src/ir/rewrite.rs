//! Rewrites of a checked graph into cheaper equivalents, applied once after
//! lowering so every later stage (autodiff, the reference interpreter, the
//! JIT) sees the same graph — or, for [`pool_before_relu`], once on the
//! training graph before autodiff.
//!
//! `one_hot(x) @ W` — how the language writes a character input and how
//! `embedding` lowers — becomes `gather(W, x)`: the rows of W picked by the
//! indices. Its gradient is a scatter-add of the incoming rows instead of a
//! product with a one-hot matrix that is almost all zeros. Exact: a one-hot
//! row times W adds one row of W to zeros.

use super::graph::{Graph, NodeId};
use super::ops::{Binary, Op, PoolKind, Unary};
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

/// `maxpool(relu(z + b))` → `relu(maxpool(z) + b)` (and without the bias)
/// for a bias that is the same across each pooling window: the maximum of a
/// window moves through a non-decreasing map exactly (the same element
/// wins, ties to the same first one; a window all negative gives 0 and a
/// zero gradient both ways), so the values are the same bits and the
/// gradients the same, with the add and ReLU, and their gradients, on the
/// pooled elements only (a quarter for 2×2 windows).
///
/// Applied to the training graph only, so that the model's layers keep the
/// shapes they are written with; `keep` are nodes read from outside the
/// graph (the model's outputs), which keep their values.
pub fn pool_before_relu(graph: &mut Graph, keep: &[NodeId]) {
    let mut readers = vec![0usize; graph.len()];
    for n in &graph.nodes {
        for x in &n.inputs {
            readers[x.index()] += 1;
        }
    }
    for i in 0..graph.len() {
        let pool = NodeId(i as u32);
        let Some(plan) = pool_plan(graph, pool, &readers, keep) else {
            continue;
        };
        apply_pool_plan(graph, pool, plan);
    }
}

/// The nodes of one match: the ReLU, the add (if any) and its bias, and z.
struct PoolPlan {
    relu: NodeId,
    add: Option<(NodeId, NodeId)>,
    z: NodeId,
}

fn pool_plan(graph: &Graph, pool: NodeId, readers: &[usize], keep: &[NodeId]) -> Option<PoolPlan> {
    let n = graph.node(pool);
    let Op::Pool {
        kind: PoolKind::Max,
        window,
    } = &n.op
    else {
        return None;
    };
    if window.pad.iter().any(|&p| p != 0) {
        return None;
    }
    let private =
        |x: NodeId| readers[x.index()] == 1 && !keep.contains(&x) && !graph.outputs.contains(&x);
    let relu = *n.inputs.first()?;
    let r = graph.node(relu);
    if r.op != Op::Unary(Unary::Relu) || !private(relu) {
        return None;
    }
    let x = r.inputs[0];
    let rank = graph.ty(x)?.shape.rank();
    let spatial = window.kernel.len();
    let add = match (&graph.node(x).op, graph.node(x).inputs.as_slice()) {
        (Op::Binary(Binary::Add), &[u, v]) if private(x) => {
            // The bias: the operand whose shape is 1 along the pooled axes
            // (right-aligned) and no larger than z.
            let window_constant = |b: NodeId| {
                graph.ty(b).is_some_and(|t| {
                    let dims = t.shape.dims();
                    dims.len() <= rank
                        && dims.len() >= spatial
                        && dims[dims.len() - spatial..]
                            .iter()
                            .all(|d| d.known() == Some(1))
                })
            };
            let same = |a: NodeId| graph.ty(a).map(|t| &t.shape) == graph.ty(x).map(|t| &t.shape);
            if same(u) && window_constant(v) {
                Some((x, v, u))
            } else if same(v) && window_constant(u) {
                Some((x, u, v))
            } else {
                None
            }
        }
        _ => None,
    };
    Some(match add {
        Some((add, bias, z)) => PoolPlan {
            relu,
            add: Some((add, bias)),
            z,
        },
        None => PoolPlan {
            relu,
            add: None,
            z: x,
        },
    })
}

/// Reuses the matched nodes in their order (so the graph stays in
/// topological order and the pool's readers are untouched): the first
/// pools z, the next adds the bias, the pool's node applies the ReLU.
fn apply_pool_plan(graph: &mut Graph, pool: NodeId, plan: PoolPlan) {
    let pooled_ty = graph.node(pool).ty.clone();
    let pool_op = graph.node(pool).op.clone();
    let (pool_span, pool_layer) = (graph.node(pool).span, graph.node(pool).layer);
    let (relu_span, relu_layer) = (graph.node(plan.relu).span, graph.node(plan.relu).layer);
    let first = plan.add.map_or(plan.relu, |(a, _)| a);
    let set = |g: &mut Graph, id: NodeId, op: Op, inputs: Vec<NodeId>, span, layer| {
        let n = g.node_mut(id);
        n.op = op;
        n.inputs = inputs;
        n.ty = pooled_ty.clone();
        n.span = span;
        n.layer = layer;
    };
    let add_place = plan
        .add
        .map(|(a, _)| (graph.node(a).span, graph.node(a).layer));
    set(graph, first, pool_op, vec![plan.z], pool_span, pool_layer);
    let mut last = first;
    if let (Some((_, bias)), Some((span, layer))) = (plan.add, add_place) {
        set(
            graph,
            plan.relu,
            Op::Binary(Binary::Add),
            vec![first, bias],
            span,
            layer,
        );
        last = plan.relu;
    }
    set(
        graph,
        pool,
        Op::Unary(Unary::Relu),
        vec![last],
        relu_span,
        relu_layer,
    );
}
