//! The reference interpreter: runs any IR graph with ndarray, in f32 or f64,
//! one op at a time, written for clarity rather than speed. It is the oracle
//! every fast path is tested against, and is itself tested against finite
//! differences and PyTorch.

mod conv;
mod elementwise;
mod kinks;
mod layout;
mod linalg;

use ndarray::{ArrayD, Axis, IxDyn};
use num_traits::{Float, FromPrimitive, ToPrimitive};

use crate::ir::graph::{Graph, NodeId};
use crate::ir::ops::Op;
use crate::rng;

pub use kinks::Kinks;

/// The element types the interpreter runs in.
pub trait Real:
    Float
    + FromPrimitive
    + ToPrimitive
    + ndarray::LinalgScalar
    + std::fmt::Debug
    + std::fmt::Display
    + Send
    + Sync
    + 'static
{
}
impl Real for f32 {}
impl Real for f64 {}

pub(crate) fn real<T: Real>(v: f64) -> T {
    T::from_f64(v).unwrap_or_else(T::nan)
}

pub(crate) fn f64_of<T: Real>(v: T) -> f64 {
    v.to_f64().unwrap_or(f64::NAN)
}

/// Why a graph could not be run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RefError {
    #[error("input {index} has shape {got:?}, but the model expects {expected:?}")]
    InputShape {
        index: usize,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("{what} {index} is missing")]
    Missing { what: &'static str, index: usize },
    #[error("{what} {index} has shape {got:?}, but {expected:?} is expected")]
    FeedShape {
        what: &'static str,
        index: usize,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("internal error at node {node}: {message}")]
    Internal { node: u32, message: String },
}

/// Everything a graph reads from outside.
#[derive(Debug, Clone, Copy)]
pub struct Feeds<'a, T> {
    /// By input index (class indices as whole numbers).
    pub inputs: &'a [ArrayD<T>],
    pub params: &'a [ArrayD<T>],
    pub states: &'a [ArrayD<T>],
    pub hypers: &'a [f64],
    /// Seed of this step's dropout masks.
    pub seed: u64,
    pub batch: usize,
    /// Record or replay the decisions of piecewise ops (see [`Kinks`]).
    pub kinks: Option<&'a Kinks<T>>,
}

/// A node's value: one tensor, a fed tensor (input, parameter, state or body
/// argument, borrowed: copying every parameter per run would dominate the
/// run of a large model), or all results of a recurrence.
#[derive(Debug, Clone)]
enum Val<'v, T> {
    One(ArrayD<T>),
    Fed(&'v ArrayD<T>),
    Many(Vec<ArrayD<T>>),
}

/// Per-run context of a (sub)graph: body arguments and the time step.
struct Frame<'a, T> {
    args: &'a [ArrayD<T>],
    t: u32,
}

fn internal(node: NodeId, message: impl Into<String>) -> RefError {
    RefError::Internal {
        node: node.0,
        message: message.into(),
    }
}

fn replay_mismatch(node: NodeId) -> RefError {
    internal(node, "the recorded decisions do not fit this run")
}

/// Runs `graph` and returns the values of `wanted`, in order.
pub fn run<T: Real>(
    graph: &Graph,
    feeds: &Feeds<'_, T>,
    wanted: &[NodeId],
) -> Result<Vec<ArrayD<T>>, RefError> {
    let frame = Frame { args: &[], t: 0 };
    run_graph(graph, feeds, &frame, wanted)
}

fn run_graph<'v, T: Real>(
    graph: &Graph,
    feeds: &Feeds<'v, T>,
    frame: &Frame<'v, T>,
    wanted: &[NodeId],
) -> Result<Vec<ArrayD<T>>, RefError> {
    // Free each value after its last use: a training step of a large model
    // would not fit otherwise.
    let mut last_use = vec![0usize; graph.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for x in &n.inputs {
            last_use[x.index()] = i;
        }
    }
    for w in wanted {
        if let Some(l) = last_use.get_mut(w.index()) {
            *l = usize::MAX;
        }
    }
    let upto = wanted.iter().map(|w| w.index() + 1).max().unwrap_or(0);
    let mut vals: Vec<Option<Val<'v, T>>> = vec![None; graph.len()];
    for i in 0..upto.min(graph.len()) {
        let id = NodeId(i as u32);
        let node = graph.node(id);
        let ins: Vec<&Val<'v, T>> = node
            .inputs
            .iter()
            .map(|x| {
                vals[x.index()]
                    .as_ref()
                    .ok_or_else(|| internal(id, "input freed or not computed"))
            })
            .collect::<Result<_, _>>()?;
        let v = eval(graph, id, &ins, feeds, frame)?;
        vals[i] = Some(v);
        for x in &node.inputs {
            if last_use[x.index()] == i {
                vals[x.index()] = None;
            }
        }
    }
    wanted
        .iter()
        .map(|w| match vals.get(w.index()).and_then(|v| v.as_ref()) {
            Some(Val::One(a)) => Ok(a.clone()),
            Some(Val::Fed(a)) => Ok((*a).clone()),
            _ => Err(internal(*w, "a wanted value was not computed")),
        })
        .collect()
}

fn one<'a, T>(v: &'a Val<'_, T>, id: NodeId) -> Result<&'a ArrayD<T>, RefError> {
    match v {
        Val::One(a) => Ok(a),
        Val::Fed(a) => Ok(a),
        Val::Many(_) => Err(internal(id, "a recurrence used as a tensor")),
    }
}

fn check_feed<'v, T>(
    what: &'static str,
    index: usize,
    a: Option<&'v ArrayD<T>>,
    expected: Vec<usize>,
) -> Result<&'v ArrayD<T>, RefError> {
    let a = a.ok_or(RefError::Missing { what, index })?;
    if a.shape() != expected.as_slice() {
        return Err(if what == "input" {
            RefError::InputShape {
                index,
                expected,
                got: a.shape().to_vec(),
            }
        } else {
            RefError::FeedShape {
                what,
                index,
                expected,
                got: a.shape().to_vec(),
            }
        });
    }
    Ok(a)
}

fn eval<'v, T: Real>(
    graph: &Graph,
    id: NodeId,
    ins: &[&Val<'v, T>],
    feeds: &Feeds<'v, T>,
    frame: &Frame<'v, T>,
) -> Result<Val<'v, T>, RefError> {
    let node = graph.node(id);
    let ty = node
        .ty
        .as_ref()
        .ok_or_else(|| internal(id, "untyped node"))?;
    let shape = ty.shape.at(feeds.batch);
    let x = |i: usize| -> Result<&ArrayD<T>, RefError> {
        ins.get(i)
            .ok_or_else(|| internal(id, "missing input"))
            .and_then(|v| one(v, id))
    };
    let out = match &node.op {
        Op::Input { .. } | Op::Param(_) | Op::State(_) => {
            let (what, index, fed) = match &node.op {
                Op::Input { index } => ("input", *index, feeds.inputs),
                Op::Param(p) => ("parameter", p.0 as usize, feeds.params),
                Op::State(s) => ("state", s.0 as usize, feeds.states),
                _ => return Err(internal(id, "not a fed value")),
            };
            return Ok(Val::Fed(check_feed(what, index, fed.get(index), shape)?));
        }
        Op::Arg(i) => {
            let args: &'v [ArrayD<T>] = frame.args;
            return args
                .get(*i)
                .map(Val::Fed)
                .ok_or_else(|| internal(id, format!("argument {i} missing")));
        }
        Op::Fill { value, .. } => ArrayD::from_elem(IxDyn(&shape), real(*value)),
        Op::SizeOf { axes } => {
            let s = x(0)?.shape();
            let n: usize = axes.iter().map(|&a| s[a]).product();
            ArrayD::from_elem(IxDyn(&[]), real(n as f64))
        }
        Op::Hyper(i) => {
            let v = feeds.hypers.get(*i).copied().ok_or(RefError::Missing {
                what: "hyper-parameter",
                index: *i,
            })?;
            ArrayD::from_elem(IxDyn(&[]), real(v))
        }
        Op::StepFlag { every } => {
            let v = if *every > 0 && !(frame.t as usize).is_multiple_of(*every) {
                1.0
            } else {
                0.0
            };
            ArrayD::from_elem(IxDyn(&[]), real(v))
        }
        Op::DropoutMask { p, stream, .. } => {
            let key = rng::mask_key(feeds.seed, *stream, frame.t);
            let n: usize = shape.iter().product();
            let data: Vec<T> = (0..n)
                .map(|i| real(rng::keep_scale(key, i as u32, *p)))
                .collect();
            ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| internal(id, e.to_string()))?
        }
        Op::Unary(u) => match feeds.kinks {
            Some(k) if kinks::unary_kinks(*u) => {
                kinks::unary(k, *u, x(0)?).map_err(|_| replay_mismatch(id))?
            }
            _ => x(0)?.mapv(|v| real(u.eval(f64_of(v)))),
        },
        Op::Binary(b) => match feeds.kinks {
            Some(k) if kinks::binary_kinks(*b) => {
                kinks::binary(k, *b, x(0)?, x(1)?, &shape).map_err(|_| replay_mismatch(id))?
            }
            _ => elementwise::binary(*b, x(0)?, x(1)?, &shape),
        },
        Op::Where => elementwise::select(x(0)?, x(1)?, x(2)?, &shape),
        Op::OneHot { classes } => layout::one_hot(x(0)?, *classes),
        Op::Gather => layout::gather(x(0)?, x(1)?),
        Op::ScatterAdd { rows } => layout::scatter_add(x(0)?, x(1)?, *rows),
        Op::Reshape { .. } => layout::reshape(x(0)?, &shape).map_err(|e| internal(id, e))?,
        Op::Expand { .. } => x(0)?
            .broadcast(IxDyn(&shape))
            .ok_or_else(|| internal(id, "cannot broadcast"))?
            .to_owned(),
        Op::Transpose { perm } => x(0)?
            .clone()
            .permuted_axes(IxDyn(perm))
            .as_standard_layout()
            .into_owned(),
        Op::Slice { axis, start, end } => x(0)?
            .slice_axis(Axis(*axis), ndarray::Slice::from(*start..*end))
            .to_owned(),
        Op::Pad { axis, before, .. } => layout::pad(x(0)?, *axis, *before, &shape),
        Op::Concat { axis } => {
            let views: Vec<_> = (0..ins.len())
                .map(|i| x(i).map(|a| a.view()))
                .collect::<Result<_, _>>()?;
            ndarray::concatenate(Axis(*axis), &views).map_err(|e| internal(id, e.to_string()))?
        }
        Op::Reduce { kind, axes, keep } => match feeds.kinks {
            Some(k) if *kind == crate::ir::ops::ReduceKind::Max => {
                kinks::reduce_max(k, x(0)?, axes, *keep).map_err(|_| replay_mismatch(id))?
            }
            _ => elementwise::reduce(x(0)?, *kind, axes, *keep),
        },
        Op::Softmax { axis } => elementwise::softmax(x(0)?, *axis, false),
        Op::LogSoftmax { axis } => elementwise::softmax(x(0)?, *axis, true),
        Op::MatMul { ta, tb } => {
            linalg::matmul(x(0)?, x(1)?, *ta, *tb, &shape).map_err(|e| internal(id, e))?
        }
        Op::Conv { window, groups } => conv::conv(x(0)?, x(1)?, window, *groups, &shape),
        Op::ConvGradInput { window, groups, .. } => {
            conv::conv_grad_input(x(0)?, x(1)?, window, *groups, &shape)
        }
        Op::ConvGradWeight { window, groups } => {
            conv::conv_grad_weight(x(0)?, x(1)?, window, *groups, &shape)
        }
        Op::Pool { kind, window } => match feeds.kinks {
            Some(k) if *kind == crate::ir::ops::PoolKind::Max => {
                kinks::max_pool(k, x(0)?, window, &shape).map_err(|_| replay_mismatch(id))?
            }
            _ => conv::pool(x(0)?, *kind, window, &shape),
        },
        Op::PoolGrad { kind, window } => conv::pool_grad(x(0)?, x(1)?, *kind, window),
        Op::Recur(r) => {
            let inputs: Vec<&ArrayD<T>> = (0..ins.len()).map(x).collect::<Result<_, _>>()?;
            return recur(r, &inputs, feeds, id);
        }
        Op::Output { index } => match ins.first() {
            Some(Val::Many(vs)) => vs
                .get(*index)
                .cloned()
                .ok_or_else(|| internal(id, "no such result"))?,
            _ => return Err(internal(id, "output of something that is not a recurrence")),
        },
    };
    if out.shape() != shape.as_slice() {
        return Err(internal(
            id,
            format!(
                "{} produced shape {:?}, its type says {:?}",
                node.op.name(),
                out.shape(),
                shape
            ),
        ));
    }
    Ok(Val::One(out))
}

/// Runs a recurrence: one evaluation of the body per step, forwards or backwards.
fn recur<'v, T: Real>(
    r: &crate::ir::ops::RecurOp,
    inputs: &[&ArrayD<T>],
    feeds: &Feeds<'_, T>,
    id: NodeId,
) -> Result<Val<'v, T>, RefError> {
    let (ns, nst) = (r.n_seq, r.n_state);
    let mut states: Vec<ArrayD<T>> = inputs[ns..ns + nst].iter().map(|a| (*a).clone()).collect();
    let captures: Vec<ArrayD<T>> = inputs[ns + nst..].iter().map(|a| (*a).clone()).collect();
    let mut step_outs: Vec<Vec<ArrayD<T>>> = vec![Vec::with_capacity(r.steps); r.n_step_out];
    let order: Vec<usize> = if r.reverse {
        (0..r.steps).rev().collect()
    } else {
        (0..r.steps).collect()
    };
    for t in order {
        let mut args: Vec<ArrayD<T>> = Vec::with_capacity(inputs.len());
        for s in &inputs[..ns] {
            args.push(s.index_axis(Axis(1), t).to_owned());
        }
        args.extend(states.iter().cloned());
        args.extend(captures.iter().cloned());
        let frame = Frame {
            args: &args,
            t: t as u32,
        };
        let mut outs = run_graph(&r.body, feeds, &frame, &r.body.outputs)?;
        let step = outs.split_off(nst);
        states = outs;
        for (k, o) in step.into_iter().enumerate() {
            step_outs[k].push(o);
        }
    }
    let mut results = Vec::with_capacity(r.n_step_out + nst);
    for mut seq in step_outs {
        if r.reverse {
            seq.reverse();
        }
        let views: Vec<_> = seq.iter().map(|a| a.view()).collect();
        results.push(ndarray::stack(Axis(1), &views).map_err(|e| internal(id, e.to_string()))?);
    }
    results.extend(states);
    Ok(Val::Many(results))
}
