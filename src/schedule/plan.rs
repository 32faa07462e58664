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
    // Live nodes: everything the outputs depend on.
    let mut needed = vec![false; n];
    let mut stored = vec![false; n];
    for o in outputs {
        needed[o.node.index()] = true;
        stored[o.node.index()] = true;
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

    for i in 0..n {
        if !needed[i] {
            continue;
        }
        let id = NodeId(i as u32);
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
    // Requested values: copy into their destination when not already there.
    let mut out = Vec::new();
    for o in outputs {
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
        let target = match o.dest {
            Dest::Buffer => None,
            Dest::Param(pid) => {
                let mut t = View::contiguous(Base::Region(PARAMS), &v.shape, DType::F32);
                t.offset = p.layout.param_offsets[pid.0 as usize] as isize;
                Some(t)
            }
            Dest::State(sid) => {
                let mut t = View::contiguous(Base::Region(STATES), &v.shape, DType::F32);
                t.offset = p.layout.state_offsets[sid.0 as usize] as isize;
                Some(t)
            }
        };
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
            let target = match dest.get(&m) {
                Some(Dest::Param(pid)) => {
                    let mut t = View::contiguous(Base::Region(PARAMS), &mshape, DType::F32);
                    t.offset = p.layout.param_offsets[pid.0 as usize] as isize;
                    Some(t)
                }
                Some(Dest::State(sid)) => {
                    let mut t = View::contiguous(Base::Region(STATES), &mshape, DType::F32);
                    t.offset = p.layout.state_offsets[sid.0 as usize] as isize;
                    Some(t)
                }
                _ => None,
            };
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

/// A product, convolution, pooling, softmax, concat, pad or recurrence.
#[allow(clippy::too_many_arguments)]
fn anchor(
    p: &mut Planner<'_>,
    graph: &Graph,
    id: NodeId,
    op: &Op,
    shape: &[usize],
    dtype: DType,
    vals: &[Option<Val>],
    depth: usize,
    steps: &mut Vec<Step>,
    outer_at: Option<usize>,
) -> Result<Val, ScheduleError> {
    let node = graph.node(id);
    let x = |i: usize| mem(vals, node.inputs[i]);
    let numel: usize = shape.iter().product();
    Ok(match op {
        Op::MatMul { ta, tb } => {
            let (a, b) = (x(0)?, x(1)?);
            let at = outer_at.unwrap_or(steps.len());
            let out = p.buffer(numel, at);
            let c = View::contiguous(Base::Buf(out), shape, DType::F32);
            let g = gemm(p, a, b, &c, *ta, *tb, steps, outer_at, id)?;
            let at = outer_at.unwrap_or(steps.len());
            p.touch(g.a.base, at);
            p.touch(g.b.base, at);
            p.touch(g.c.base, at);
            steps.push(Step::Gemm(g));
            Val::Mem(c)
        }
        Op::Gather | Op::ScatterAdd { .. } => {
            let scatter = matches!(op, Op::ScatterAdd { .. });
            let (idx, input) = if scatter {
                (x(0)?, contiguous(p, x(1)?, steps, outer_at, id))
            } else {
                (x(1)?, contiguous(p, x(0)?, steps, outer_at, id))
            };
            let at = outer_at.unwrap_or(steps.len());
            let out = View::contiguous(Base::Buf(p.buffer(numel, at)), shape, DType::F32);
            for v in [&idx, &input, &out] {
                p.touch(v.base, at);
            }
            let (table, rows) = if scatter {
                (out.clone(), input)
            } else {
                (input, out.clone())
            };
            steps.push(Step::Gather(Gather {
                scatter,
                idx,
                table,
                rows,
                node: id,
            }));
            Val::Mem(out)
        }
        Op::Conv { window, groups }
        | Op::ConvGradInput { window, groups, .. }
        | Op::ConvGradWeight { window, groups } => {
            let a = contiguous(p, x(0)?, steps, outer_at, id);
            let b = contiguous(p, x(1)?, steps, outer_at, id);
            let at = outer_at.unwrap_or(steps.len());
            let out = View::contiguous(Base::Buf(p.buffer(numel, at)), shape, DType::F32);
            let (kind, xv, wv, yv) = match op {
                Op::Conv { .. } => (ConvKind::Forward, a, b, out.clone()),
                Op::ConvGradInput { .. } => (ConvKind::GradInput, out.clone(), b, a),
                _ => (ConvKind::GradWeight, a, out.clone(), b),
            };
            let scratch_len = conv_scratch(&xv.shape, &wv.shape, &yv.shape, *groups);
            let scratch = Some(p.buffer(scratch_len, at));
            for v in [&xv, &wv, &yv] {
                p.touch(v.base, at);
            }
            steps.push(Step::Conv(Conv {
                kind,
                x: xv,
                w: wv,
                y: yv,
                window: window.clone(),
                groups: *groups,
                scratch,
                scratch_len,
                node: id,
            }));
            Val::Mem(out)
        }
        Op::Pool { kind, window } | Op::PoolGrad { kind, window } => {
            let grad = matches!(op, Op::PoolGrad { .. });
            let xv = contiguous(p, x(0)?, steps, outer_at, id);
            let at = outer_at.unwrap_or(steps.len());
            let out = View::contiguous(Base::Buf(p.buffer(numel, at)), shape, DType::F32);
            let (y, dx) = if grad {
                let dy = contiguous(p, x(1)?, steps, outer_at, id);
                (dy, Some(out.clone()))
            } else {
                (out.clone(), None)
            };
            // Max pooling whose gradient is also computed: the forward keeps
            // the argmax of every window so the gradient is a plain scatter.
            let key = (graph as *const Graph as usize, node.inputs[0]);
            let indices = if *kind != crate::ir::ops::PoolKind::Max {
                None
            } else if grad {
                p.argmax.get(&key).copied()
            } else {
                let has_grad = graph.nodes.iter().any(|n| {
                    matches!(&n.op, Op::PoolGrad { window: w, .. } if w == window)
                        && n.inputs.first() == Some(&node.inputs[0])
                });
                has_grad.then(|| {
                    let b = p.buffer(numel, at);
                    p.argmax.insert(key, b);
                    b
                })
            };
            let at = outer_at.unwrap_or(steps.len());
            p.touch(xv.base, at);
            p.touch(y.base, at);
            if let Some(b) = indices {
                p.touch(Base::Buf(b), at);
            }
            steps.push(Step::Pool(Pool {
                kind: *kind,
                grad,
                x: xv,
                y,
                dx,
                window: window.clone(),
                indices,
                node: id,
            }));
            Val::Mem(out)
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            // Three loops with the softmax axis innermost: the row maximum,
            // the sum of exp(x − max), then the result. The reductions run
            // along the innermost axis, in registers.
            let xv = x(0)?;
            let at = outer_at.unwrap_or(steps.len());
            let out = View::contiguous(Base::Buf(p.buffer(numel, at)), shape, DType::F32);
            let mut perm: Vec<usize> = (0..shape.len()).filter(|&d| d != *axis).collect();
            perm.push(*axis);
            let xt = views::transpose(&xv, &perm);
            let yt = views::transpose(&out, &perm);
            let dims = xt.shape.clone();
            let rank = dims.len();
            let rows: usize = dims[..rank - 1].iter().product();
            let row_buf = |p: &mut Planner<'_>| {
                let b = p.buffer(rows, at);
                let mut strides = views::row_major(&dims[..rank - 1]);
                strides.push(0);
                Access {
                    base: Base::Buf(b),
                    offset: 0,
                    strides,
                    dtype: DType::F32,
                }
            };
            let (m, sum) = (row_buf(p), row_buf(p));
            let xa = views::access(&xt, &dims);
            p.touch(xv.base, at);
            steps.push(Step::Loop(Loop {
                dims: dims.clone(),
                ops: vec![LOp::Load(xa.clone())],
                stores: Vec::new(),
                reduces: vec![LReduce {
                    value: 0,
                    kind: ReduceKind::Max,
                    scale: 1.0,
                    out: m.clone(),
                }],
                nodes: vec![id],
            }));
            use crate::ir::ops::{Binary, Unary};
            steps.push(Step::Loop(Loop {
                dims: dims.clone(),
                ops: vec![
                    LOp::Load(xa.clone()),
                    LOp::Load(m.clone()),
                    LOp::Binary(Binary::Sub, 0, 1),
                    LOp::Unary(Unary::Exp, 2),
                ],
                stores: Vec::new(),
                reduces: vec![LReduce {
                    value: 3,
                    kind: ReduceKind::Sum,
                    scale: 1.0,
                    out: sum.clone(),
                }],
                nodes: vec![id],
            }));
            let mut ops = vec![
                LOp::Load(xa),
                LOp::Load(m),
                LOp::Binary(Binary::Sub, 0, 1),
                LOp::Load(sum),
            ];
            if matches!(op, Op::LogSoftmax { .. }) {
                ops.push(LOp::Unary(Unary::Log, 3));
                ops.push(LOp::Binary(Binary::Sub, 2, 4));
            } else {
                ops.push(LOp::Unary(Unary::Exp, 2));
                ops.push(LOp::Binary(Binary::Div, 4, 3));
            }
            let last = ops.len() - 1;
            steps.push(Step::Loop(Loop {
                dims: dims.clone(),
                ops,
                stores: vec![(last, views::access(&yt, &dims))],
                reduces: Vec::new(),
                nodes: vec![id],
            }));
            Val::Mem(out)
        }
        Op::Concat { axis } => {
            let at = outer_at.unwrap_or(steps.len());
            let out = View::contiguous(Base::Buf(p.buffer(numel, at)), shape, dtype);
            let mut start = 0;
            for i in 0..node.inputs.len() {
                let v = x(i)?;
                let len = v.shape[*axis];
                let to = views::slice(&out, *axis, start, start + len);
                p.touch(v.base, at);
                steps.push(Step::Copy { from: v, to });
                start += len;
            }
            Val::Mem(out)
        }
        Op::Pad { axis, before, .. } => {
            let v = x(0)?;
            let at = outer_at.unwrap_or(steps.len());
            let out = View::contiguous(Base::Buf(p.buffer(numel, at)), shape, dtype);
            steps.push(Step::Loop(Loop {
                dims: shape.to_vec(),
                ops: vec![LOp::Const(0.0)],
                stores: vec![(0, views::access(&out, shape))],
                reduces: Vec::new(),
                nodes: vec![id],
            }));
            let to = views::slice(&out, *axis, *before, before + v.shape[*axis]);
            p.touch(v.base, at);
            steps.push(Step::Copy { from: v, to });
            Val::Mem(out)
        }
        Op::Recur(r) => recur(p, graph, id, r, vals, depth, steps, outer_at)?,
        Op::Output { index } => match &vals[node.inputs[0].index()] {
            Some(Val::Results(vs)) => Val::Mem(
                vs.get(*index)
                    .cloned()
                    .ok_or_else(|| err(id, "no such recurrence result"))?,
            ),
            _ => return Err(err(id, "output of something that is not a recurrence")),
        },
        other => return Err(err(id, format!("{} has no kernel", other.name()))),
    })
}

/// Scratch (elements) a convolution kernel may use for its column matrix:
/// one image's columns per group at a time.
fn conv_scratch(x: &[usize], w: &[usize], y: &[usize], groups: usize) -> usize {
    let cg = x.get(1).copied().unwrap_or(1) / groups.max(1);
    let k: usize = w[2..].iter().product();
    let out_spatial: usize = y[2..].iter().product();
    cg * k * out_spatial
}

/// A matrix product as one batched GEMM: leading axes flattened into a batch
/// (or into the rows of `a` when `b` is shared), copying an operand whose
/// leading axes cannot be flattened.
#[allow(clippy::too_many_arguments)]
fn gemm(
    p: &mut Planner<'_>,
    a: View,
    b: View,
    c: &View,
    ta: bool,
    tb: bool,
    steps: &mut Vec<Step>,
    outer_at: Option<usize>,
    id: NodeId,
) -> Result<Gemm, ScheduleError> {
    let r = c.shape.len();
    let lead: Vec<usize> = c.shape[..r - 2].to_vec();
    let (m, n) = (c.shape[r - 2], c.shape[r - 1]);
    let k = if ta {
        a.shape[a.shape.len() - 2]
    } else {
        a.shape[a.shape.len() - 1]
    };
    let l: usize = lead.iter().product();
    // An operand as (batch, rows, cols) with one batch stride.
    let mat = |p: &mut Planner<'_>,
               v: View,
               t: bool,
               steps: &mut Vec<Step>|
     -> Result<Mat, ScheduleError> {
        let vr = v.shape.len();
        let (rows, cols) = (v.shape[vr - 2], v.shape[vr - 1]);
        let mut full = lead.clone();
        full.extend([rows, cols]);
        let e = views::expand(&v, &full);
        let flat = match views::reshape(&e, &[l, rows, cols]) {
            Some(f) => f,
            None => {
                let c = copy_contiguous(p, &e, steps, outer_at, id);
                views::reshape(&c, &[l, rows, cols])
                    .ok_or_else(|| err(id, "cannot flatten a product operand"))?
            }
        };
        let (rs, cs) = if t {
            (flat.strides[2], flat.strides[1])
        } else {
            (flat.strides[1], flat.strides[2])
        };
        Ok(Mat {
            base: flat.base,
            offset: flat.offset,
            rs,
            cs,
            batch_stride: flat.strides[0],
        })
    };
    let am = mat(p, a.clone(), ta, steps)?;
    let mut bm = mat(p, b, tb, steps)?;
    // A column-major right operand (a dense layer's [out, in] weight in the
    // forward pass) halves the gemm crate's speed at mid-sized operands
    // (`cargo bench --bench gemm`: 62 vs 113 GFLOP/s at 128x256x512), and
    // costs less elsewhere (100 vs 110 at 128x512x784, 88 vs 102 at
    // 64x120x400). There it is copied row-major first (0.1 ms for MNIST's
    // 256x512 weight against 0.25 ms saved); where the loss is small the
    // copy costs more than it saves.
    if l == 1 && bm.rs == 1 && bm.cs != 1 && m >= 128 && (1 << 16..=1 << 18).contains(&(n * k)) {
        let at = outer_at.unwrap_or(steps.len());
        let from = View {
            base: bm.base,
            offset: bm.offset,
            shape: vec![k, n],
            strides: vec![bm.rs, bm.cs],
            dtype: DType::F32,
        };
        let to = View::contiguous(Base::Buf(p.buffer(k * n, at)), &[k, n], DType::F32);
        p.touch(from.base, at);
        steps.push(Step::Copy {
            from,
            to: to.clone(),
        });
        bm = Mat {
            base: to.base,
            offset: 0,
            rs: n as isize,
            cs: 1,
            batch_stride: 0,
        };
    }
    let cm = Mat {
        base: c.base,
        offset: c.offset,
        rs: n as isize,
        cs: 1,
        batch_stride: (m * n) as isize,
    };
    // A shared right operand: fold the batch into the rows of `a` and `c`
    // when `a`'s rows continue across batch items.
    if l > 1 && bm.batch_stride == 0 && am.batch_stride == am.rs * m as isize {
        return Ok(Gemm {
            m: m * l,
            n,
            k,
            batch: 1,
            a: Mat {
                batch_stride: 0,
                ..am
            },
            b: bm,
            c: Mat {
                batch_stride: 0,
                ..cm
            },
            accumulate: false,
            node: id,
        });
    }
    let _ = a;
    Ok(Gemm {
        m,
        n,
        k,
        batch: l,
        a: am,
        b: bm,
        c: cm,
        accumulate: false,
        node: id,
    })
}

/// A recurrence: ping-pong state buffers, stacked outputs, and the body
/// scheduled with its arguments as per-step regions.
#[allow(clippy::too_many_arguments)]
fn recur(
    p: &mut Planner<'_>,
    graph: &Graph,
    id: NodeId,
    r: &crate::ir::ops::RecurOp,
    vals: &[Option<Val>],
    depth: usize,
    steps: &mut Vec<Step>,
    outer_at: Option<usize>,
) -> Result<Val, ScheduleError> {
    let node = graph.node(id);
    let (ns, nst) = (r.n_seq, r.n_state);
    let inputs: Vec<View> = node
        .inputs
        .iter()
        .map(|&x| mem(vals, x))
        .collect::<Result<_, _>>()?;
    // A matrix the body only multiplies transposed (the backward pass's
    // dz·Wᵀ) is copied column-major once before the loop, so every step's
    // product reads it row-major (1.5x faster at 32x128x128).
    let flip = transposed_captures(r);
    let mut captures = Vec::new();
    for (c, v) in inputs[ns + nst..].iter().enumerate() {
        let v = if flip.contains(&(ns + nst + c)) {
            let at = outer_at.unwrap_or(steps.len());
            let b = p.buffer(v.numel(), at);
            let to = View {
                base: Base::Buf(b),
                offset: 0,
                shape: v.shape.clone(),
                strides: vec![1, v.shape[0] as isize],
                dtype: v.dtype,
            };
            p.touch(v.base, at);
            steps.push(Step::Copy {
                from: v.clone(),
                to: to.clone(),
            });
            to
        } else {
            v.clone()
        };
        captures.push((v, p.region(Region::Arg)));
    }
    let at = outer_at.unwrap_or(steps.len());
    // The loop reads the copies at its own step.
    for (v, _) in &captures {
        p.touch(v.base, at);
    }
    let mut args = Vec::new();
    let mut seq_args = Vec::new();
    for v in &inputs[..ns] {
        let region = p.region(Region::Arg);
        let time_stride = v.strides[1];
        let mut slice = views::slice(v, 1, 0, 1);
        slice.shape.remove(1);
        slice.strides.remove(1);
        let arg = View {
            base: Base::Region(region),
            offset: 0,
            ..slice
        };
        args.push(ArgView { view: arg });
        seq_args.push((region, v.clone(), time_stride));
    }
    let mut states = Vec::new();
    for v in &inputs[ns..ns + nst] {
        let region = p.region(Region::Arg);
        let next_region = p.region(Region::Arg);
        let len = v.numel();
        let b0 = p.buffer(len, at);
        let b1 = p.buffer(len, at);
        args.push(ArgView {
            view: View::contiguous(Base::Region(region), &v.shape, v.dtype),
        });
        states.push(RecurState {
            arg: region,
            next_region,
            init: v.clone(),
            buffers: [b0, b1],
            shape: v.shape.clone(),
        });
    }
    let mut capture_args = Vec::new();
    for (v, region) in captures {
        args.push(ArgView {
            view: View {
                base: Base::Region(region),
                offset: 0,
                ..v.clone()
            },
        });
        capture_args.push((region, v));
    }
    // Stacked per-step outputs [B, T, ...].
    let mut results = Vec::new();
    let mut step_outs = Vec::new();
    for k in 0..r.n_step_out {
        let o = r.body.outputs[nst + k];
        let ty = r.body.ty(o).ok_or_else(|| err(id, "untyped body output"))?;
        let mut shape = ty.shape.at(p.batch);
        shape.insert(1.min(shape.len()), r.steps);
        let b = p.buffer(shape.iter().product(), at);
        let stacked = View::contiguous(Base::Buf(b), &shape, DType::F32);
        let region = p.region(Region::Arg);
        let time_stride = stacked.strides[1];
        step_outs.push((region, stacked.clone(), time_stride));
        results.push(stacked);
    }
    // The body, producing its outputs, then copying them where they go.
    let outputs: Vec<Output> = r
        .body
        .outputs
        .iter()
        .map(|&node| Output {
            node,
            dest: Dest::Buffer,
        })
        .collect();
    let mut body = Vec::new();
    let outs = schedule_graph(p, &r.body, &outputs, &args, depth + 1, &mut body, Some(at))?;
    for (i, s) in states.iter().enumerate() {
        let to = View::contiguous(Base::Region(s.next_region), &s.shape, DType::F32);
        body.push(Step::Copy {
            from: outs[i].clone(),
            to,
        });
    }
    for (k, (region, stacked, _)) in step_outs.iter().enumerate() {
        let mut to = views::slice(stacked, 1, 0, 1);
        to.shape.remove(1);
        to.strides.remove(1);
        to.base = Base::Region(*region);
        to.offset = 0;
        body.push(Step::Copy {
            from: outs[nst + k].clone(),
            to,
        });
    }
    // Final states: the buffer the last step wrote.
    for s in &states {
        let last = s.buffers[r.steps % 2];
        results.push(View::contiguous(Base::Buf(last), &s.shape, DType::F32));
    }
    for v in &inputs {
        p.touch(v.base, at);
    }
    steps.push(Step::Recur(Box::new(Recur {
        steps: r.steps,
        reverse: r.reverse,
        seq_args,
        capture_args,
        states,
        step_outs,
        body,
        depth: depth + 1,
        node: id,
    })));
    Ok(Val::Results(results))
}

/// Body arguments (by index) of matrices the recurrence body uses only as
/// the transposed operand of products, counting live nodes only.
fn transposed_captures(r: &crate::ir::ops::RecurOp) -> Vec<usize> {
    let body = &r.body;
    let mut live = vec![false; body.len()];
    for o in &body.outputs {
        live[o.index()] = true;
    }
    for i in (0..body.len()).rev() {
        if live[i] {
            for x in &body.nodes[i].inputs {
                live[x.index()] = true;
            }
        }
    }
    let first_capture = r.n_seq + r.n_state;
    let mut out = Vec::new();
    for (i, n) in body.nodes.iter().enumerate() {
        let Op::Arg(k) = n.op else { continue };
        if k < first_capture
            || !live[i]
            || n.ty
                .as_ref()
                .is_none_or(|t| t.shape.rank() != 2 || t.shape.has_batch())
        {
            continue;
        }
        let me = NodeId(i as u32);
        let mut uses = 0;
        let mut transposed = 0;
        for (j, m) in body.nodes.iter().enumerate() {
            if !live[j] {
                continue;
            }
            for (slot, &x) in m.inputs.iter().enumerate() {
                if x != me {
                    continue;
                }
                uses += 1;
                if matches!(
                    (&m.op, slot),
                    (Op::MatMul { ta: true, .. }, 0) | (Op::MatMul { tb: true, .. }, 1)
                ) {
                    transposed += 1;
                }
            }
        }
        if body.outputs.contains(&me) {
            uses += 1;
        }
        if uses > 0 && uses == transposed {
            out.push(k);
        }
    }
    out
}
