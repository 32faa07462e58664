//! Backpropagation through time: the gradient of a recurrence is another
//! recurrence, run from the last step to the first.
//!
//! Its body re-runs one forward step from the saved previous state (the
//! forward pass keeps every state, as its stacked result) and differentiates
//! it. It carries the gradient of the state back in time and accumulates the
//! gradients of the loop-invariant captures (the shared weights U, W, ...).
//! Truncated BPTT zeroes the carried gradient where the state was cut.

use std::collections::HashMap;

use crate::ir::build::{BuildError, Builder, Result};
use crate::ir::graph::{Graph, Node, NodeId};
use crate::ir::ops::{Op, RecurOp};
use crate::ir::types::{Dim, Shape, TensorType};

/// How a capture is used by one node of a recurrence body.
#[derive(Debug, Clone, Copy)]
enum Use {
    /// `a @ C` (or `a @ Cᵀ`) with `a` the per-step argument `lhs_arg`.
    Product { lhs_arg: usize, tb: bool },
    /// `v ± C` with C broadcast.
    Sum { negate: bool },
    /// `gather(C, idx)` with `idx` the per-step sequence argument `idx_arg`.
    Gather { idx_arg: usize },
}

fn unsupported(message: &str) -> BuildError {
    BuildError {
        pass: "autodiff",
        op: "recur",
        message: message.to_string(),
    }
}

/// Inserts the time axis of length 1: [B, ...] → [B, 1, ...].
fn one_step(s: &Shape) -> Shape {
    let mut d = s.0.clone();
    d.insert(1.min(d.len()), Dim::fixed(1));
    Shape(d)
}

/// Gradients of a recurrence's inputs (sequences, initial states, captures)
/// given gradients of its results by index.
pub fn vjp(
    b: &mut Builder<'_>,
    r: &RecurOp,
    inputs: &[NodeId],
    id: NodeId,
    grads: &HashMap<usize, NodeId>,
    need: &[bool],
) -> Result<Vec<Option<NodeId>>> {
    let (ns, nst) = (r.n_seq, r.n_state);
    let ncap = inputs.len() - ns - nst;
    if r.n_step_out != nst || (0..nst).any(|i| r.body.outputs[nst + i] != r.body.outputs[i]) {
        return Err(unsupported(
            "only recurrences whose per-step outputs are their states can be differentiated",
        ));
    }
    let steps = r.steps;
    // Saved states: the stacked results; previous states shift them by one.
    let mut prev = Vec::new();
    let mut gout = Vec::new();
    let mut gfinal = Vec::new();
    for i in 0..nst {
        let stacked = b.add(Op::Output { index: i }, &[id])?;
        let init = inputs[ns + i];
        let init_shape = b.shape(init)?;
        let first = b.reshape(init, one_step(&init_shape))?;
        let p = if steps > 1 {
            let head = b.add(
                Op::Slice {
                    axis: 1,
                    start: 0,
                    end: steps - 1,
                },
                &[stacked],
            )?;
            b.add(Op::Concat { axis: 1 }, &[first, head])?
        } else {
            first
        };
        prev.push(p);
        let stacked_shape = b.shape(stacked)?;
        gout.push(match grads.get(&i) {
            Some(&g) => g,
            None => b.fill(0.0, stacked_shape)?,
        });
        gfinal.push(match grads.get(&(r.n_step_out + i)) {
            Some(&g) => g,
            None => b.fill(0.0, init_shape)?,
        });
    }
    // The stacked states themselves: the value of each step's next state,
    // read instead of recomputing it.
    let mut cur = Vec::new();
    for i in 0..nst {
        cur.push(b.add(Op::Output { index: i }, &[id])?);
    }
    let caps_needed: Vec<usize> = (0..ncap).filter(|&c| need[ns + nst + c]).collect();
    let seqs_needed: Vec<usize> = (0..ns).filter(|&k| need[k]).collect();
    // Captures whose every use is a product with a per-step operand (x[t],
    // s[t-1]) or a broadcast sum: their gradients are one batched product
    // after the loop, from the per-step gradients of those uses.
    let cap_arg_index = |c: usize| ns + nst + c;
    let batchable = |c: usize| -> Option<Vec<(NodeId, Use)>> {
        let arg = r
            .body
            .nodes
            .iter()
            .position(|n| n.op == Op::Arg(cap_arg_index(c)))?;
        let arg = NodeId(arg as u32);
        // Only batch-free captures (weights): a per-sample capture summed over
        // time would mix the batch and time axes.
        if r.body.ty(arg).is_none_or(|t| t.shape.has_batch()) {
            return None;
        }
        let mut uses = Vec::new();
        for (i, n) in r.body.nodes.iter().enumerate() {
            for (slot, &x) in n.inputs.iter().enumerate() {
                if x != arg {
                    continue;
                }
                let other = n.inputs.get(1 - slot.min(1)).copied();
                let per_step = |o: NodeId| match r.body.node(o).op {
                    Op::Arg(k) if k < ns + nst => Some(k),
                    _ => None,
                };
                let u = match (&n.op, slot) {
                    (Op::MatMul { ta: false, tb }, 1) => {
                        let k = other.and_then(per_step)?;
                        let cap_rank = r.body.ty(arg).map_or(0, |t| t.shape.rank());
                        let lhs_rank = r.body.ty(other?).map_or(0, |t| t.shape.rank());
                        if cap_rank != 2 || lhs_rank != 2 {
                            return None;
                        }
                        Use::Product {
                            lhs_arg: k,
                            tb: *tb,
                        }
                    }
                    (Op::Gather, 0) => match other.and_then(per_step) {
                        Some(k) if k < ns => Use::Gather { idx_arg: k },
                        _ => return None,
                    },
                    (Op::Binary(crate::ir::ops::Binary::Add), _) => Use::Sum { negate: false },
                    (Op::Binary(crate::ir::ops::Binary::Sub), s) => Use::Sum { negate: s == 1 },
                    _ => return None,
                };
                uses.push((NodeId(i as u32), u));
            }
        }
        Some(uses)
    };
    let mut batched: Vec<(usize, Vec<(NodeId, Use)>)> = Vec::new();
    let mut looped: Vec<usize> = Vec::new();
    for &c in &caps_needed {
        match batchable(c) {
            Some(uses) if !uses.is_empty() => batched.push((c, uses)),
            _ => looped.push(c),
        }
    }

    // ---- the backward body
    let mut body = Graph::new();
    let arg_ty = |b: &Builder<'_>, n: NodeId| -> Result<TensorType> { Ok(b.ty(n)?.clone()) };
    let slice_ty = |t: TensorType| -> Result<TensorType> {
        crate::ir::shape::without_time(&t)
            .ok_or_else(|| unsupported("a sequence without a time axis"))
    };
    let mut args: Vec<(NodeId, TensorType)> = Vec::new();
    // Sequence arguments: x_k, previous states, output gradients, current states.
    for &x in &inputs[..ns] {
        args.push((x, slice_ty(arg_ty(b, x)?)?));
    }
    for &p in prev.iter().chain(&gout).chain(&cur) {
        args.push((p, slice_ty(arg_ty(b, p)?)?));
    }
    let n_seq = args.len();
    // States: carried state gradients, then accumulators of the captures
    // that are summed inside the loop.
    for &g in &gfinal {
        args.push((g, arg_ty(b, g)?));
    }
    for &c in &looped {
        let cap = inputs[ns + nst + c];
        let z = b.fill(0.0, b.shape(cap)?)?;
        args.push((z, arg_ty(b, cap)?));
    }
    let n_state = nst + looped.len();
    for &cap in &inputs[ns + nst..] {
        args.push((cap, arg_ty(b, cap)?));
    }
    let arg_nodes: Vec<NodeId> = args
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| {
            body.push(Node {
                op: Op::Arg(i),
                inputs: Vec::new(),
                ty: Some(ty.clone()),
                span: b.span,
                layer: b.layer,
            })
        })
        .collect();
    let x_arg = |k: usize| arg_nodes[k];
    let p_arg = |i: usize| arg_nodes[ns + i];
    let gout_arg = |i: usize| arg_nodes[ns + nst + i];
    let cur_arg = |i: usize| arg_nodes[ns + 2 * nst + i];
    let lambda_arg = |i: usize| arg_nodes[n_seq + i];
    let acc_arg = |j: usize| arg_nodes[n_seq + nst + j];
    let cap_arg = |c: usize| arg_nodes[n_seq + n_state + c];

    // One forward step on the saved previous state; only what the local
    // rules need survives (the rest is never scheduled).
    let mut map: Vec<NodeId> = Vec::with_capacity(r.body.len());
    for node in &r.body.nodes {
        let new = match node.op {
            Op::Arg(k) if k < ns => x_arg(k),
            Op::Arg(k) if k < ns + nst => p_arg(k - ns),
            Op::Arg(k) => cap_arg(k - ns - nst),
            _ => body.push(Node {
                op: node.op.clone(),
                inputs: node.inputs.iter().map(|i| map[i.index()]).collect(),
                ty: node.ty.clone(),
                span: node.span,
                layer: node.layer,
            }),
        };
        map.push(new);
    }
    let forward_len = body.len();
    let next: Vec<NodeId> = (0..nst).map(|i| map[r.body.outputs[i].index()]).collect();
    // Each next state's value is the saved one.
    let mut subst = HashMap::new();
    for (i, &n) in next.iter().enumerate() {
        if !matches!(body.node(n).op, Op::Arg(_)) {
            subst.insert(n, cur_arg(i));
        }
    }
    let outer_span = (b.span, b.layer);
    let mut bb = Builder::new(&mut body, "autodiff");
    bb.span = outer_span.0;
    bb.layer = outer_span.1;
    // The state's gradient: carried from the next step plus this step's output.
    let mut seeds = Vec::new();
    for (i, &n) in next.iter().enumerate() {
        let a = bb.add2(lambda_arg(i), gout_arg(i))?;
        seeds.push((n, a));
    }
    let mut wanted: Vec<NodeId> = (0..nst).map(p_arg).collect();
    wanted.extend(seqs_needed.iter().map(|&k| x_arg(k)));
    wanted.extend(looped.iter().map(|&c| cap_arg(c)));
    let use_nodes: Vec<NodeId> = batched
        .iter()
        .flat_map(|(_, uses)| uses.iter().map(|(n, _)| map[n.index()]))
        .collect();
    wanted.extend(&use_nodes);
    let grads = super::backprop_with(&mut bb, forward_len, &seeds, &wanted, &subst)?;
    let got = grads.wanted;
    let mut outputs = Vec::new();
    for (i, got_i) in got.iter().enumerate().take(nst) {
        let g = match *got_i {
            Some(g) => g,
            None => bb.fill(0.0, bb.shape(p_arg(i))?)?,
        };
        let g = match r.truncate {
            Some(every) => {
                let keep = bb.add(Op::StepFlag { every }, &[])?;
                bb.mul(g, keep)?
            }
            None => g,
        };
        outputs.push(g);
    }
    for (j, _) in looped.iter().enumerate() {
        let acc = acc_arg(j);
        outputs.push(match got[nst + seqs_needed.len() + j] {
            Some(g) => bb.add2(acc, g)?,
            None => acc,
        });
    }
    // Per-step outputs: input gradients, then the gradients of the uses of
    // batched captures.
    for (j, &k) in seqs_needed.iter().enumerate() {
        outputs.push(match got[nst + j] {
            Some(g) => g,
            None => bb.fill(0.0, bb.shape(x_arg(k))?)?,
        });
    }
    // Uses whose gradients are one node (x·U, s·W and the bias sum of one
    // pre-activation all receive dz) share one stacked output.
    let mut use_out: Vec<usize> = Vec::with_capacity(use_nodes.len());
    let first_use_out = outputs.len();
    for &u in &use_nodes {
        let g = match grads.totals.get(u.index()).copied().flatten() {
            Some(g) => g,
            None => bb.fill(0.0, bb.shape(u)?)?,
        };
        let at = match outputs[first_use_out..].iter().position(|&o| o == g) {
            Some(i) => i,
            None => {
                outputs.push(g);
                outputs.len() - 1 - first_use_out
            }
        };
        use_out.push(seqs_needed.len() + at);
    }
    body.outputs = outputs;

    let n_step_out = body.outputs.len() - nst - looped.len();
    let back = RecurOp {
        steps,
        n_seq,
        n_state,
        n_step_out,
        body,
        reverse: true,
        truncate: None,
    };
    let outer: Vec<NodeId> = args.iter().map(|(n, _)| *n).collect();
    let rid = b.add(Op::Recur(Box::new(back)), &outer)?;
    let mut result = vec![None; inputs.len()];
    for (j, &k) in seqs_needed.iter().enumerate() {
        result[k] = Some(b.add(Op::Output { index: j }, &[rid])?);
    }
    for i in 0..nst {
        if need[ns + i] {
            result[ns + i] = Some(b.add(
                Op::Output {
                    index: n_step_out + i,
                },
                &[rid],
            )?);
        }
    }
    for (j, &c) in looped.iter().enumerate() {
        result[ns + nst + c] = Some(b.add(
            Op::Output {
                index: n_step_out + nst + j,
            },
            &[rid],
        )?);
    }
    // Batched captures: one product (or sum) over all steps at once.
    let mut k = 0;
    for (c, uses) in &batched {
        let cap = inputs[ns + nst + c];
        let cap_shape = b.shape(cap)?;
        let mut total: Option<NodeId> = None;
        for (_, u) in uses {
            let dy = b.add(Op::Output { index: use_out[k] }, &[rid])?;
            k += 1;
            let part = match *u {
                Use::Product { lhs_arg, tb } => {
                    // The stacked operand: the input sequence or the previous states.
                    let a = if lhs_arg < ns {
                        inputs[lhs_arg]
                    } else {
                        prev[lhs_arg - ns]
                    };
                    let g = super::rules::shared_rhs_grad(b, dy, a, tb)?;
                    b.unbroadcast(g, &cap_shape)?
                }
                Use::Gather { idx_arg } => {
                    let rows = cap_shape.0[0].n;
                    b.add(Op::ScatterAdd { rows }, &[inputs[idx_arg], dy])?
                }
                Use::Sum { negate } => {
                    let g = b.unbroadcast(dy, &cap_shape)?;
                    if negate {
                        b.un(crate::ir::ops::Unary::Neg, g)?
                    } else {
                        g
                    }
                }
            };
            total = Some(match total {
                None => part,
                Some(t) => b.add2(t, part)?,
            });
        }
        result[ns + nst + c] = total;
    }
    Ok(result)
}
