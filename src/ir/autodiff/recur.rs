//! Backpropagation through time: the gradient of a recurrence is another
//! recurrence, run from the last step to the first.
//!
//! Its body re-runs one forward step from the saved previous state (the
//! forward pass keeps every state, as its stacked result) and differentiates
//! it. It carries the gradient of the state back in time and accumulates the
//! gradients of the loop-invariant captures (the shared weights U, W, ...).
//! Truncated BPTT zeroes the carried gradient where the state was cut.

use std::collections::HashMap;

use super::backprop;
use crate::ir::build::{BuildError, Builder, Result};
use crate::ir::graph::{Graph, Node, NodeId};
use crate::ir::ops::{Op, RecurOp};
use crate::ir::types::{Dim, Shape, TensorType};

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
    let caps_needed: Vec<usize> = (0..ncap).filter(|&c| need[ns + nst + c]).collect();
    let seqs_needed: Vec<usize> = (0..ns).filter(|&k| need[k]).collect();

    // ---- the backward body
    let mut body = Graph::new();
    let arg_ty = |b: &Builder<'_>, n: NodeId| -> Result<TensorType> { Ok(b.ty(n)?.clone()) };
    let slice_ty = |t: TensorType| -> Result<TensorType> {
        crate::ir::shape::without_time(&t)
            .ok_or_else(|| unsupported("a sequence without a time axis"))
    };
    let mut args: Vec<(NodeId, TensorType)> = Vec::new();
    // Sequence arguments: x_k, previous states, output gradients.
    for &x in &inputs[..ns] {
        args.push((x, slice_ty(arg_ty(b, x)?)?));
    }
    for &p in prev.iter().chain(&gout) {
        args.push((p, slice_ty(arg_ty(b, p)?)?));
    }
    let n_seq = args.len();
    // States: carried state gradients, then capture accumulators.
    for &g in &gfinal {
        args.push((g, arg_ty(b, g)?));
    }
    for &c in &caps_needed {
        let cap = inputs[ns + nst + c];
        let z = b.fill(0.0, b.shape(cap)?)?;
        args.push((z, arg_ty(b, cap)?));
    }
    let n_state = nst + caps_needed.len();
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
    let lambda_arg = |i: usize| arg_nodes[n_seq + i];
    let acc_arg = |j: usize| arg_nodes[n_seq + nst + j];
    let cap_arg = |c: usize| arg_nodes[n_seq + n_state + c];

    // Re-run one forward step on the saved previous state.
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
    wanted.extend(caps_needed.iter().map(|&c| cap_arg(c)));
    let got = backprop(&mut bb, forward_len, &seeds, &wanted)?;
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
    for (j, _) in caps_needed.iter().enumerate() {
        let acc = acc_arg(j);
        outputs.push(match got[nst + seqs_needed.len() + j] {
            Some(g) => bb.add2(acc, g)?,
            None => acc,
        });
    }
    for (j, &k) in seqs_needed.iter().enumerate() {
        outputs.push(match got[nst + j] {
            Some(g) => g,
            None => bb.fill(0.0, bb.shape(x_arg(k))?)?,
        });
    }
    body.outputs = outputs;

    let back = RecurOp {
        steps,
        n_seq,
        n_state,
        n_step_out: seqs_needed.len(),
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
    let finals = seqs_needed.len();
    for i in 0..nst {
        if need[ns + i] {
            result[ns + i] = Some(b.add(Op::Output { index: finals + i }, &[rid])?);
        }
    }
    for (j, &c) in caps_needed.iter().enumerate() {
        result[ns + nst + c] = Some(b.add(
            Op::Output {
                index: finals + nst + j,
            },
            &[rid],
        )?);
    }
    Ok(result)
}
