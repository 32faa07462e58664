//! The scheduling pass: roles from [`super::fuse`], then one walk over the
//! graph emitting kernels in node order, then [`super::memory`] placement.

use std::collections::HashMap;

use super::fuse::{self, Group, Role};
use super::views;
use super::*;
use crate::ir::graph::{Graph, NodeId};
use crate::ir::ops::ParamId;
use crate::ir::ops::{Op, ReduceKind, StateId};
use crate::ir::types::DType;

mod adam;
mod anchors;
mod recur;
use anchors::anchor;
use recur::recur;

/// Where a requested value must end up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dest {
    /// A buffer of the arena, kept to the end of the step.
    Buffer,
    /// Overwrite a parameter in place (its update).
    Param(ParamId),
    /// Overwrite a persistent buffer in place.
    State(StateId),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output {
    pub node: NodeId,
    pub dest: Dest,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot schedule node %{node}: {message}")]
pub struct ScheduleError {
    pub node: u32,
    pub message: String,
}

fn err(node: NodeId, message: impl Into<String>) -> ScheduleError {
    ScheduleError {
        node: node.0,
        message: message.into(),
    }
}

/// Where parameters and states sit in their regions (elements).
#[derive(Debug, Clone)]
pub struct Layout {
    pub param_offsets: Vec<usize>,
    pub state_offsets: Vec<usize>,
    pub inputs: usize,
}

/// Fixed regions: arena, params, states, hypers, then one per input.
pub const ARENA: RegionId = 0;
pub const PARAMS: RegionId = 1;
pub const STATES: RegionId = 2;
pub const HYPERS: RegionId = 3;
pub const FIRST_INPUT: RegionId = 4;

/// A node's value during scheduling.
#[derive(Debug, Clone)]
enum Val {
    Mem(View),
    /// A constant, hyper-parameter or step flag: computed where read.
    Inline(LOp),
    /// Computed inside its loop only.
    Fused,
    /// A recurrence's results.
    Results(Vec<View>),
}

struct Planner<'l> {
    layout: &'l Layout,
    batch: usize,
    regions: Vec<Region>,
    /// Size (elements) of each buffer.
    buffers: Vec<usize>,
    /// (first step writing, last step reading) in the top-level step list.
    life: Vec<(usize, usize)>,
    /// Argmax buffers of max pooling, by the pooled tensor's node and the
    /// graph it is in (its address): shared by the forward and the gradient.
    argmax: HashMap<(usize, NodeId), BufId>,
}

impl Planner<'_> {
    fn buffer(&mut self, len: usize, at: usize) -> BufId {
        self.buffers.push(len.max(1));
        self.life.push((at, at));
        (self.buffers.len() - 1) as BufId
    }

    fn touch(&mut self, base: Base, at: usize) {
        if let Base::Buf(b) = base {
            let l = &mut self.life[b as usize];
            l.0 = l.0.min(at);
            l.1 = l.1.max(at);
        }
    }

    fn region(&mut self, r: Region) -> RegionId {
        self.regions.push(r);
        (self.regions.len() - 1) as RegionId
    }
}

/// Schedules `graph` at batch size `batch`, producing `outputs`.
pub fn schedule(
    graph: &Graph,
    outputs: &[Output],
    batch: usize,
    layout: &Layout,
) -> Result<Program, ScheduleError> {
    let mut regions = vec![
        Region::Arena,
        Region::Params,
        Region::States,
        Region::Hypers,
    ];
    regions.extend((0..layout.inputs).map(Region::Input));
    let mut p = Planner {
        layout,
        batch,
        regions,
        buffers: Vec::new(),
        life: Vec::new(),
        argmax: HashMap::new(),
    };
    let mut steps = Vec::new();
    let views = schedule_graph(&mut p, graph, outputs, &[], 0, &mut steps, None)?;
    // Requested buffers live to the end.
    for v in &views {
        if let Base::Buf(b) = v.base {
            p.life[b as usize].1 = usize::MAX;
        }
    }
    let naive_bytes = p.buffers.iter().sum::<usize>() * 4;
    let mut input_types = vec![None; layout.inputs];
    for n in &graph.nodes {
        if let (Op::Input { index }, Some(ty)) = (&n.op, &n.ty)
            && let Some(slot) = input_types.get_mut(*index)
        {
            *slot = Some(ty.dtype);
        }
    }
    let in_place = memory::in_place_candidates(&steps, &p.buffers);
    let (offsets, arena) = memory::place_with(&p.buffers, &p.life, &in_place);
    Ok(Program {
        regions: p.regions,
        steps,
        buffers: p.buffers,
        offsets,
        arena,
        outputs: views,
        naive_bytes,
        input_types,
    })
}

/// The view of a leaf argument of a recurrence body.
struct ArgView {
    view: View,
}

/// Schedules one graph (the model's, or a recurrence body) into `steps`.
/// `args` are the views of `Op::Arg` leaves; `outer_at` is the index of the
/// enclosing recurrence step in the top-level list (all buffers of a body
/// live during that one step).
fn schedule_graph(
    p: &mut Planner<'_>,
    graph: &Graph,
    outputs: &[Output],
    args: &[ArgView],
    depth: usize,
    steps: &mut Vec<Step>,
    outer_at: Option<usize>,
) -> Result<Vec<View>, ScheduleError> {
    let n = graph.len();
    let batch = p.batch;
    let shape_of =
        |id: NodeId| -> Vec<usize> { graph.ty(id).map(|t| t.shape.at(batch)).unwrap_or_default() };
    // Adam updates run as kernels of their own: their results are not
    // computed by loops, their gradients are stored for them.
    let fusions = if depth == 0 {
        adam::fusable(graph, outputs)
    } else {
        Vec::new()
    };
    let replaced = |x: NodeId| fusions.iter().any(|f| f.replaced.binary_search(&x).is_ok());
    // Live nodes: everything the outputs depend on.
    let mut needed = vec![false; n];
    let mut stored = vec![false; n];
    let roots = outputs
        .iter()
        .map(|o| o.node)
        .filter(|&x| !replaced(x))
        .chain(fusions.iter().map(|f| f.update.grad));
    for x in roots {
        needed[x.index()] = true;
        stored[x.index()] = true;
    }
    for i in (0..n).rev() {
        if needed[i] {
            for x in &graph.nodes[i].inputs {
                needed[x.index()] = true;
            }
        }
    }
    let (roles, groups) = fuse::assign(graph, &needed, &stored, &shape_of);
    let dest: HashMap<NodeId, Dest> = outputs.iter().map(|o| (o.node, o.dest)).collect();
    let mut vals: Vec<Option<Val>> = vec![None; n];
    // Deferred in-place writes: (temp view, destination view).
    let mut deferred: Vec<(View, View)> = Vec::new();
    let at = |steps: &Vec<Step>| outer_at.unwrap_or(steps.len());

    // Adam kernels wait for their last replaced node (every other reader
    // of the old values is earlier) and for their gradient's loop.
    let mut pending: Vec<&adam::Fusion> = fusions.iter().collect();
    for i in 0..n {
        let id = NodeId(i as u32);
        if !pending.is_empty() {
            pending = adam::emit_ready(p, graph, pending, Some(id), &vals, steps)?;
        }
        if !needed[i] {
            continue;
        }
        let node = graph.node(id);
        let ty = node.ty.as_ref().ok_or_else(|| err(id, "untyped node"))?;
        let shape = ty.shape.at(p.batch);
        let val = match (&roles[i], &node.op) {
            (Role::Leaf, Op::Input { index }) => Val::Mem(View::contiguous(
                Base::Region(FIRST_INPUT + *index as u32),
                &shape,
                ty.dtype,
            )),
            (Role::Leaf, Op::Param(pid)) => {
                let mut v = View::contiguous(Base::Region(PARAMS), &shape, DType::F32);
                v.offset = p.layout.param_offsets[pid.0 as usize] as isize;
                Val::Mem(v)
            }
            (Role::Leaf, Op::State(sid)) => {
                let mut v = View::contiguous(Base::Region(STATES), &shape, DType::F32);
                v.offset = p.layout.state_offsets[sid.0 as usize] as isize;
                Val::Mem(v)
            }
            (Role::Leaf, Op::Arg(k)) => Val::Mem(
                args.get(*k)
                    .ok_or_else(|| err(id, "argument out of range"))?
                    .view
                    .clone(),
            ),
            (Role::Inline, op) => Val::Inline(match op {
                Op::Fill { value, .. } => LOp::Const(*value as f32),
                Op::Hyper(h) => LOp::Hyper(*h),
                Op::StepFlag { every } => LOp::StepFlag {
                    every: *every,
                    depth,
                },
                Op::SizeOf { axes } => {
                    let s = shape_of(node.inputs[0]);
                    LOp::Const(axes.iter().map(|&a| s[a]).product::<usize>() as f32)
                }
                _ => return Err(err(id, "not an inline value")),
            }),
            (Role::View, op) => {
                let x = node.inputs[0];
                match vals[x.index()].clone() {
                    Some(Val::Inline(l)) => Val::Inline(l),
                    Some(Val::Mem(v)) => Val::Mem(view_op(p, op, &v, &shape, steps, outer_at, id)?),
                    _ => return Err(err(id, "view of a value not in memory")),
                }
            }
            (Role::Fused(_), _) => Val::Fused,
            (Role::Stored(g), _) | (Role::Reduced(g), _) => {
                let group = &groups[*g];
                if group.root == id {
                    let step_at = at(steps);
                    let lp = emit_loop(
                        p,
                        graph,
                        group,
                        &roles,
                        &vals,
                        &dest,
                        depth,
                        step_at,
                        &mut deferred,
                    )?;
                    // Record the stored values' views.
                    for (m, view) in lp.1 {
                        vals[m.index()] = Some(Val::Mem(view));
                    }
                    steps.push(Step::Loop(lp.0));
                    vals[i].clone().unwrap_or(Val::Fused)
                } else {
                    // Filled in when the root is emitted (stored members get
                    // their view then); nothing can read it before.
                    Val::Fused
                }
            }
            (Role::Anchor, op) => anchor(
                p, graph, id, op, &shape, ty.dtype, &vals, depth, steps, outer_at,
            )?,
            (Role::Dead, _) => continue,
            (role, op) => return Err(err(id, format!("{} cannot have role {role:?}", op.name()))),
        };
        if vals[i].is_none() {
            vals[i] = Some(val);
        }
    }
    if let Some(f) = adam::emit_ready(p, graph, pending, None, &vals, steps)?.first() {
        return Err(err(
            f.update.grad,
            "an Adam update's gradient was not computed",
        ));
    }
    // Requested values: copy into their destination when not already there.
    let mut out = Vec::new();
    for o in outputs {
        if replaced(o.node) {
            // Written in place by its Adam kernel.
            let v = dest_view(p, o.dest, &shape_of(o.node))
                .ok_or_else(|| err(o.node, "an Adam update's result has no place"))?;
            out.push(v);
            continue;
        }
        let v = match vals[o.node.index()].clone() {
            Some(Val::Mem(v)) => v,
            Some(Val::Inline(l)) => {
                // A constant output (rare): materialise it.
                let shape = shape_of(o.node);
                let at = at(steps);
                let b = p.buffer(shape.iter().product(), at);
                let v = View::contiguous(Base::Buf(b), &shape, DType::F32);
                steps.push(Step::Loop(Loop {
                    dims: shape.clone(),
                    ops: vec![l],
                    stores: vec![(0, views::access(&v, &shape))],
                    reduces: Vec::new(),
                    nodes: vec![o.node],
                }));
                v
            }
            _ => return Err(err(o.node, "a requested value was not computed")),
        };
        let target = dest_view(p, o.dest, &v.shape);
        match target {
            Some(t) if t != v => {
                let a = at(steps);
                p.touch(v.base, a);
                steps.push(Step::Copy {
                    from: v,
                    to: t.clone(),
                });
                out.push(t);
            }
            Some(t) => out.push(t),
            None => out.push(v),
        }
    }
    for (from, to) in deferred {
        let a = at(steps);
        p.touch(from.base, a);
        steps.push(Step::Copy { from, to });
    }
    Ok(out)
}

/// Where a parameter or persistent buffer is (`None` for an arena buffer).
fn dest_view(p: &Planner<'_>, dest: Dest, shape: &[usize]) -> Option<View> {
    let (region, offset) = match dest {
        Dest::Param(pid) => (PARAMS, p.layout.param_offsets[pid.0 as usize]),
        Dest::State(sid) => (STATES, p.layout.state_offsets[sid.0 as usize]),
        Dest::Buffer => return None,
    };
    let mut v = View::contiguous(Base::Region(region), shape, DType::F32);
    v.offset = offset as isize;
    Some(v)
}

/// The view a layout op gives, copying its input first when the view is
/// impossible (a reshape of a non-nesting strided view).
fn view_op(
    p: &mut Planner<'_>,
    op: &Op,
    v: &View,
    shape: &[usize],
    steps: &mut Vec<Step>,
    outer_at: Option<usize>,
    id: NodeId,
) -> Result<View, ScheduleError> {
    Ok(match op {
        Op::Transpose { perm } => views::transpose(v, perm),
        Op::Slice { axis, start, end } => views::slice(v, *axis, *start, *end),
        Op::Expand { .. } => views::expand(v, shape),
        Op::Reshape { .. } => match views::reshape(v, shape) {
            Some(r) => r,
            None => {
                let c = copy_contiguous(p, v, steps, outer_at, id);
                views::reshape(&c, shape).ok_or_else(|| err(id, "cannot reshape"))?
            }
        },
        _ => return Err(err(id, "not a layout op")),
    })
}

/// Copies a view into a fresh contiguous buffer.
fn copy_contiguous(
    p: &mut Planner<'_>,
    v: &View,
    steps: &mut Vec<Step>,
    outer_at: Option<usize>,
    id: NodeId,
) -> View {
    let at = outer_at.unwrap_or(steps.len());
    let b = p.buffer(v.numel(), at);
    let to = View::contiguous(Base::Buf(b), &v.shape, v.dtype);
    p.touch(v.base, at);
    steps.push(Step::Copy {
        from: v.clone(),
        to: to.clone(),
    });
    let _ = id;
    to
}

/// Makes a view contiguous (copying if needed).
fn contiguous(
    p: &mut Planner<'_>,
    v: View,
    steps: &mut Vec<Step>,
    outer_at: Option<usize>,
    id: NodeId,
) -> View {
    if v.is_contiguous() {
        v
    } else {
        copy_contiguous(p, &v, steps, outer_at, id)
    }
}

fn mem(vals: &[Option<Val>], x: NodeId) -> Result<View, ScheduleError> {
    match &vals[x.index()] {
        Some(Val::Mem(v)) => Ok(v.clone()),
        _ => Err(err(x, "needed in memory but not stored")),
    }
}

/// Emits the loop of a group. Returns it and the views of its stored values.
#[allow(clippy::too_many_arguments)]
fn emit_loop(
    p: &mut Planner<'_>,
    graph: &Graph,
    group: &Group,
    roles: &[Role],
    vals: &[Option<Val>],
    dest: &HashMap<NodeId, Dest>,
    depth: usize,
    at: usize,
    deferred: &mut Vec<(View, View)>,
) -> Result<(Loop, Vec<(NodeId, View)>), ScheduleError> {
    let dims = group.dims.clone();
    let mut ops: Vec<LOp> = Vec::new();
    let mut index: HashMap<NodeId, usize> = HashMap::new();
    let mut loads: HashMap<NodeId, usize> = HashMap::new();
    let mut stores = Vec::new();
    let mut reduces = Vec::new();
    let mut stored_views = Vec::new();
    let in_group = |x: NodeId| matches!(roles[x.index()], Role::Fused(g) | Role::Stored(g) | Role::Reduced(g) if group.members.contains(&x) && { let _ = g; true });
    // The value of an input inside the loop.
    let mut operand = |x: NodeId,
                       ops: &mut Vec<LOp>,
                       p: &mut Planner<'_>,
                       index: &HashMap<NodeId, usize>|
     -> Result<usize, ScheduleError> {
        if in_group(x) && !matches!(roles[x.index()], Role::Reduced(_)) {
            return index
                .get(&x)
                .copied()
                .ok_or_else(|| err(x, "used before computed in its loop"));
        }
        if let Some(&i) = loads.get(&x) {
            return Ok(i);
        }
        let op = match &vals[x.index()] {
            Some(Val::Inline(l)) => l.clone(),
            Some(Val::Mem(v)) => {
                p.touch(v.base, at);
                LOp::Load(views::access(v, &dims))
            }
            _ => return Err(err(x, "read before it is stored")),
        };
        ops.push(op);
        loads.insert(x, ops.len() - 1);
        Ok(ops.len() - 1)
    };
    for &m in &group.members {
        let node = graph.node(m);
        let mshape = graph.ty(m).map(|t| t.shape.at(p.batch)).unwrap_or_default();
        let v = match &node.op {
            Op::Unary(u) => {
                let a = operand(node.inputs[0], &mut ops, p, &index)?;
                ops.push(LOp::Unary(*u, a));
                ops.len() - 1
            }
            Op::Binary(b) => {
                let a = operand(node.inputs[0], &mut ops, p, &index)?;
                let c = operand(node.inputs[1], &mut ops, p, &index)?;
                ops.push(LOp::Binary(*b, a, c));
                ops.len() - 1
            }
            Op::Where => {
                let c = operand(node.inputs[0], &mut ops, p, &index)?;
                let a = operand(node.inputs[1], &mut ops, p, &index)?;
                let b = operand(node.inputs[2], &mut ops, p, &index)?;
                ops.push(LOp::Where(c, a, b));
                ops.len() - 1
            }
            Op::Fill { value, .. } => {
                ops.push(LOp::Const(*value as f32));
                ops.len() - 1
            }
            Op::DropoutMask {
                p: prob, stream, ..
            } => {
                ops.push(LOp::Mask {
                    p: *prob as f32,
                    stream: *stream,
                    index_strides: views::row_major(&mshape)
                        .iter()
                        .map(|&s| s as usize)
                        .collect(),
                    depth,
                });
                ops.len() - 1
            }
            Op::OneHot { .. } => {
                // labels [.., ] against the iteration index of the last axis.
                let lv = mem(vals, node.inputs[0])?;
                p.touch(lv.base, at);
                let mut strides = lv.strides.clone();
                strides.push(0);
                ops.push(LOp::Load(Access {
                    base: lv.base,
                    offset: lv.offset,
                    strides,
                    dtype: lv.dtype,
                }));
                let l = ops.len() - 1;
                ops.push(LOp::Iota(dims.len() - 1));
                let iota = ops.len() - 1;
                ops.push(LOp::Binary(crate::ir::ops::Binary::Eq, l, iota));
                ops.len() - 1
            }
            Op::Reduce { kind, axes, keep } => {
                let x = operand(node.inputs[0], &mut ops, p, &index)?;
                let out_shape = mshape.clone();
                let b = p.buffer(out_shape.iter().product(), at);
                let ov = View::contiguous(Base::Buf(b), &out_shape, DType::F32);
                // Strides over the loop dims: 0 along reduced axes.
                let mut strides = Vec::with_capacity(dims.len());
                let ostr = views::row_major(&out_shape);
                let mut k = 0;
                for d in 0..dims.len() {
                    if axes.contains(&d) {
                        strides.push(0);
                        if *keep {
                            k += 1;
                        }
                    } else {
                        strides.push(ostr[k]);
                        k += 1;
                    }
                }
                let count: usize = axes.iter().map(|&a| dims[a]).product();
                let (rk, scale) = match kind {
                    ReduceKind::Sum => (ReduceKind::Sum, 1.0),
                    ReduceKind::Mean => (ReduceKind::Sum, 1.0 / count.max(1) as f32),
                    ReduceKind::Max => (ReduceKind::Max, 1.0),
                };
                reduces.push(LReduce {
                    value: x,
                    kind: rk,
                    scale,
                    out: Access {
                        base: Base::Buf(b),
                        offset: 0,
                        strides,
                        dtype: DType::F32,
                    },
                });
                stored_views.push((m, ov));
                continue;
            }
            other => return Err(err(m, format!("{} cannot be fused", other.name()))),
        };
        index.insert(m, v);
        if matches!(roles[m.index()], Role::Stored(_)) {
            // Stored: into its destination when it has one (in-place update).
            let target = dest.get(&m).and_then(|&d| dest_view(p, d, &mshape));
            let view = match target {
                // In place only if no other node reads the destination later:
                // the destination is a leaf every reader of which precedes
                // this loop, or reads it elementwise within it.
                Some(t) if in_place_ok(graph, group, m, &t, p) => t,
                Some(t) => {
                    let b = p.buffer(mshape.iter().product(), at);
                    let v = View::contiguous(Base::Buf(b), &mshape, DType::F32);
                    deferred.push((v.clone(), t));
                    v
                }
                None => {
                    let b = p.buffer(mshape.iter().product(), at);
                    View::contiguous(Base::Buf(b), &mshape, DType::F32)
                }
            };
            stores.push((v, views::access(&view, &dims)));
            stored_views.push((m, view));
        }
    }
    Ok((
        Loop {
            dims,
            ops,
            stores,
            reduces,
            nodes: group.members.clone(),
        },
        stored_views,
    ))
}

/// Whether node `m` may be written straight over its destination: every
/// other reader of the destination's leaf must come before `m`'s loop, and
/// readers inside the loop must read element for element.
fn in_place_ok(graph: &Graph, group: &Group, m: NodeId, target: &View, p: &Planner<'_>) -> bool {
    let _ = p;
    for id in graph.ids() {
        let node = graph.node(id);
        let leaf_here = match (&node.op, target.base) {
            (Op::Param(pid), Base::Region(PARAMS)) => {
                p.layout.param_offsets[pid.0 as usize] as isize == target.offset
            }
            (Op::State(sid), Base::Region(STATES)) => {
                p.layout.state_offsets[sid.0 as usize] as isize == target.offset
            }
            _ => false,
        };
        if !leaf_here {
            continue;
        }
        for r in graph.ids() {
            if !graph.node(r).inputs.contains(&id) {
                continue;
            }
            if group.members.contains(&r) {
                // Read inside the writing loop: fine if shapes match (same element).
                if graph.ty(r).map(|t| &t.shape) != graph.ty(id).map(|t| &t.shape) {
                    return false;
                }
            } else if r > group.root || r > m {
                return false;
            }
        }
    }
    true
}
