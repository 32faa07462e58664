//! Adam updates as one kernel each: the nodes of an [`AdamUpdate`] the graph
//! marks are not scheduled; a [`Step::Adam`] reads the gradient and rewrites
//! the parameter and its moments in place instead.

use super::*;
use crate::ir::fused::AdamUpdate;

/// A marked update that may run as one kernel.
pub(super) struct Fusion {
    pub update: AdamUpdate,
    /// The nodes the kernel replaces.
    pub replaced: Vec<NodeId>,
    /// The last of them: the kernel runs where the schedule reaches it, after
    /// every other reader of the old parameter and moments.
    pub at: NodeId,
}

/// The marked updates of a top-level graph that can be fused: their results
/// are requested exactly as the parameter's and its moments' new values, and
/// nothing outside the update reads its intermediate values, or the old
/// parameter and moments after it.
pub(super) fn fusable(graph: &Graph, outputs: &[Output]) -> Vec<Fusion> {
    if graph.adam_updates.is_empty() {
        return Vec::new();
    }
    let mut readers: Vec<Vec<NodeId>> = vec![Vec::new(); graph.len()];
    for id in graph.ids() {
        for x in &graph.node(id).inputs {
            readers[x.index()].push(id);
        }
    }
    graph
        .adam_updates
        .iter()
        .filter_map(|u| fusion(graph, outputs, &readers, u))
        .collect()
}

fn fusion(
    graph: &Graph,
    outputs: &[Output],
    readers: &[Vec<NodeId>],
    u: &AdamUpdate,
) -> Option<Fusion> {
    let op = |id: NodeId| &graph.node(id).op;
    let (Op::Param(pid), Op::State(m), Op::State(v)) =
        (op(u.param), op(u.exp_avg), op(u.exp_avg_sq))
    else {
        return None;
    };
    let expected = [
        (u.new_param, Dest::Param(*pid)),
        (u.new_exp_avg, Dest::State(*m)),
        (u.new_exp_avg_sq, Dest::State(*v)),
    ];
    let shape = graph.ty(u.param).map(|t| &t.shape)?;
    let same = [u.grad, u.exp_avg, u.exp_avg_sq]
        .iter()
        .all(|&x| graph.ty(x).map(|t| &t.shape) == Some(shape));
    if !same || graph.ty(u.grad).map(|t| t.dtype) != Some(DType::F32) {
        return None;
    }
    // The nodes between the results and the update's inputs (constants and
    // hyper-parameters are read by the kernel itself).
    let bound = [u.param, u.grad, u.exp_avg, u.exp_avg_sq];
    let mut replaced = Vec::new();
    let mut stack: Vec<NodeId> = expected.iter().map(|e| e.0).collect();
    while let Some(x) = stack.pop() {
        if bound.contains(&x) || replaced.contains(&x) {
            continue;
        }
        match op(x) {
            Op::Fill { .. } | Op::Hyper(_) => continue,
            Op::Unary(_) | Op::Binary(_) => {}
            _ => return None,
        }
        replaced.push(x);
        stack.extend(graph.node(x).inputs.iter().copied());
    }
    replaced.sort();
    let at = *replaced.last()?;
    let outside = |r: &NodeId| replaced.binary_search(r).is_err();
    // Intermediate values are read only inside; the old values not later.
    let private = replaced
        .iter()
        .all(|x| !readers[x.index()].iter().any(outside));
    let old_first = [u.param, u.exp_avg, u.exp_avg_sq]
        .iter()
        .all(|x| readers[x.index()].iter().all(|r| !outside(r) || *r < at));
    // Requested only as the new parameter and moments, once each.
    let requested = outputs
        .iter()
        .filter(|o| !outside(&o.node))
        .map(|o| (o.node, o.dest))
        .collect::<Vec<_>>();
    let exact = requested.len() == expected.len() && expected.iter().all(|e| requested.contains(e));
    (private && old_first && exact).then(|| Fusion {
        update: u.clone(),
        replaced,
        at,
    })
}

/// Emits the kernels of `pending` that are due (their last replaced node is
/// at most `upto`; all when `None`) and whose gradient has been computed;
/// returns the others.
pub(super) fn emit_ready<'f>(
    p: &mut Planner<'_>,
    graph: &Graph,
    pending: Vec<&'f Fusion>,
    upto: Option<NodeId>,
    vals: &[Option<Val>],
    steps: &mut Vec<Step>,
) -> Result<Vec<&'f Fusion>, ScheduleError> {
    let mut rest = Vec::new();
    for f in pending {
        let due = upto.is_none_or(|u| f.at <= u);
        let ready = matches!(
            vals[f.update.grad.index()],
            Some(Val::Mem(_) | Val::Inline(_))
        );
        if due && ready {
            emit(p, graph, f, vals, steps)?;
        } else {
            rest.push(f);
        }
    }
    Ok(rest)
}

/// Emits the kernel of `f`; the gradient must have been computed.
fn emit(
    p: &mut Planner<'_>,
    graph: &Graph,
    f: &Fusion,
    vals: &[Option<Val>],
    steps: &mut Vec<Step>,
) -> Result<(), ScheduleError> {
    let u = &f.update;
    let grad = match &vals[u.grad.index()] {
        Some(Val::Mem(v)) => contiguous(p, v.clone(), steps, None, u.grad),
        Some(Val::Inline(l)) => {
            // A constant gradient (a parameter the loss reads linearly).
            let shape = graph
                .ty(u.grad)
                .map(|t| t.shape.at(p.batch))
                .unwrap_or_default();
            let b = p.buffer(shape.iter().product(), steps.len());
            let v = View::contiguous(Base::Buf(b), &shape, DType::F32);
            steps.push(Step::Loop(Loop {
                dims: shape.clone(),
                ops: vec![l.clone()],
                stores: vec![(0, views::access(&v, &shape))],
                reduces: Vec::new(),
                nodes: vec![u.grad],
            }));
            v
        }
        _ => {
            return Err(err(
                u.grad,
                "the gradient of an Adam update was not computed",
            ));
        }
    };
    // Where the parameter and its moments live (they are updated in place).
    let shape = grad.shape.clone();
    let leaf = |x: NodeId| {
        let dest = match graph.node(x).op {
            Op::Param(pid) => Dest::Param(pid),
            Op::State(sid) => Dest::State(sid),
            _ => Dest::Buffer,
        };
        dest_view(p, dest, &shape)
            .ok_or_else(|| err(x, "an Adam update's parameter or moment is not a leaf"))
    };
    let (param, exp_avg, exp_avg_sq) = (leaf(u.param)?, leaf(u.exp_avg)?, leaf(u.exp_avg_sq)?);
    p.touch(grad.base, steps.len());
    steps.push(Step::Adam(Adam {
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        update: u.clone(),
    }));
    Ok(())
}
