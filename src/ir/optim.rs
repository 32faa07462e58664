//! The training graph: forward, loss, backward, gradient clipping and the
//! optimizer update of every parameter, all as IR — so one compiled function
//! can run a whole training step.
//!
//! Each optimizer follows `torch.optim`'s definition: the same defaults, the
//! same order of operations and the same placement of eps, so a run in
//! PyTorch gives the same numbers. Values that change from step to step
//! (learning rate, bias corrections) are [`Hyper`] scalars the runtime sets.

use super::autodiff::backprop;
use super::build::{BuildError, Builder, Result};
use super::fused::AdamUpdate;
use super::graph::{Graph, NodeId};
use super::model::{Model, State};
use super::ops::{Binary, Op, ParamId, StateId, Unary};
use super::train::{Clip, Optimizer, OptimizerKind};
use super::types::TensorType;

/// A per-step scalar input of the training graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hyper {
    /// The learning rate of this step, after the schedule.
    Lr,
    /// 1 on the first step, else 0 (SGD initialises its momentum buffer then).
    First,
    /// Adam's bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ.
    Bc1,
    Bc2,
    /// Adagrad's decayed rate lr / (1 + (t − 1)·lr_decay).
    AdagradLr,
}

/// A training step as one graph.
#[derive(Debug, Clone)]
pub struct TrainGraph {
    pub graph: Graph,
    pub loss: NodeId,
    /// The gradient of each parameter (after clipping), by `ParamId`.
    pub grads: Vec<Option<NodeId>>,
    /// New value of each parameter.
    pub param_updates: Vec<(ParamId, NodeId)>,
    /// Persistent buffers: the model's states, then optimizer slots.
    pub states: Vec<State>,
    /// New value of each persistent buffer.
    pub state_updates: Vec<(StateId, NodeId)>,
    /// What each `Op::Hyper(i)` stands for.
    pub hypers: Vec<Hyper>,
}

struct Ctx<'a, 'g> {
    b: Builder<'g>,
    states: &'a mut Vec<State>,
    updates: &'a mut Vec<(StateId, NodeId)>,
    hypers: &'a mut Vec<Hyper>,
}

impl Ctx<'_, '_> {
    fn hyper(&mut self, h: Hyper) -> Result<NodeId> {
        let i = match self.hypers.iter().position(|&x| x == h) {
            Some(i) => i,
            None => {
                self.hypers.push(h);
                self.hypers.len() - 1
            }
        };
        self.b.add(Op::Hyper(i), &[])
    }

    /// An optimizer buffer for a parameter, as PyTorch names it in its state
    /// (`exp_avg`, `momentum_buffer`, ...): returns its current value node and
    /// registers its new value later with [`Ctx::set`].
    /// Which hyper-parameter a node made by [`Ctx::hyper`] reads.
    fn hyper_index(&self, node: NodeId) -> Result<usize> {
        match self.b.graph.node(node).op {
            Op::Hyper(i) => Ok(i),
            _ => Err(BuildError {
                pass: "optimizer",
                op: "hyper",
                message: format!("node {node:?} is not a hyper-parameter"),
            }),
        }
    }

    fn slot(
        &mut self,
        param: &str,
        kind: &str,
        like: NodeId,
        init: f64,
    ) -> Result<(StateId, NodeId)> {
        let ty = self.b.ty(like)?.clone();
        let id = StateId(self.states.len() as u32);
        let node = self.b.leaf(Op::State(id), ty.clone());
        self.states.push(State {
            name: format!("optim.{param}.{kind}"),
            ty: TensorType::f32(ty.shape),
            init,
            node,
            span: self.b.span,
        });
        Ok((id, node))
    }

    fn set(&mut self, id: StateId, value: NodeId) {
        self.updates.push((id, value));
    }
}

/// The model's graph extended with the gradient of its loss with respect to
/// every parameter (by `ParamId`; `None` where the loss does not depend on it).
pub fn gradients(model: &Model) -> Result<(Graph, NodeId, Vec<Option<NodeId>>)> {
    let loss = model.loss.ok_or_else(|| BuildError {
        pass: "training",
        op: "loss",
        message: format!("the model `{}` has no loss", model.name),
    })?;
    let mut graph = model.graph.clone();
    let keep: Vec<NodeId> = (model.outputs.iter().map(|(_, n)| *n))
        .chain(model.state_updates.iter().map(|(_, n)| *n))
        .chain(model.loss)
        .collect();
    super::rewrite::pool_before_relu(&mut graph, &keep);
    let forward_len = graph.len();
    let param_nodes: Vec<NodeId> = model.params.iter().map(|p| p.node).collect();
    let mut b = Builder::new(&mut graph, "autodiff");
    let one = b.scalar(1.0)?;
    let grads = backprop(&mut b, forward_len, &[(loss, one)], &param_nodes)?;
    Ok((graph, loss, grads))
}

/// Builds the training graph of a model with a loss.
pub fn build(model: &Model, opt: &Optimizer, clip: Option<&Clip>) -> Result<TrainGraph> {
    let (mut graph, loss, mut grads) = gradients(model)?;
    let mut states = model.states.clone();
    let mut updates = model.state_updates.clone();
    let mut hypers = Vec::new();
    let mut b = Builder::new(&mut graph, "optimizer");
    if let Some(c) = clip {
        clip_grads(&mut b, &mut grads, c)?;
    }
    let mut ctx = Ctx {
        b,
        states: &mut states,
        updates: &mut updates,
        hypers: &mut hypers,
    };
    let mut param_updates = Vec::new();
    for (i, p) in model.params.iter().enumerate() {
        let Some(g) = grads[i] else { continue };
        ctx.b.span = p.span;
        ctx.b.layer = p.layer;
        let new = update(&mut ctx, opt, &p.name, p.node, g)?;
        param_updates.push((ParamId(i as u32), new));
    }
    Ok(TrainGraph {
        graph,
        loss,
        grads,
        param_updates,
        states,
        state_updates: updates,
        hypers,
    })
}

fn clip_grads(b: &mut Builder<'_>, grads: &mut [Option<NodeId>], clip: &Clip) -> Result<()> {
    match *clip {
        Clip::Value(v) => {
            let hi = b.scalar(v)?;
            let lo = b.scalar(-v)?;
            for g in grads.iter_mut().flatten() {
                let m = b.bin(Binary::Max, *g, lo)?;
                *g = b.bin(Binary::Min, m, hi)?;
            }
        }
        Clip::Norm(max) => {
            // torch.nn.utils.clip_grad_norm_: coef = min(max / (‖g‖ + 1e-6), 1).
            let mut total = None;
            for g in grads.iter().flatten() {
                let sq = b.mul(*g, *g)?;
                let s = b.sum_all(sq)?;
                total = Some(match total {
                    None => s,
                    Some(t) => b.add2(t, s)?,
                });
            }
            let Some(total) = total else { return Ok(()) };
            let norm = b.un(Unary::Sqrt, total)?;
            let eps = b.scalar(1e-6)?;
            let denom = b.add2(norm, eps)?;
            let m = b.scalar(max)?;
            let coef = b.div(m, denom)?;
            let one = b.scalar(1.0)?;
            let coef = b.bin(Binary::Min, coef, one)?;
            for g in grads.iter_mut().flatten() {
                *g = b.mul(*g, coef)?;
            }
        }
    }
    Ok(())
}

/// `g + wd·p`, PyTorch's (coupled) weight decay.
fn decayed(ctx: &mut Ctx<'_, '_>, wd: f64, p: NodeId, g: NodeId) -> Result<NodeId> {
    if wd == 0.0 {
        return Ok(g);
    }
    let d = ctx.b.scale(p, wd)?;
    ctx.b.add2(g, d)
}

/// `a·x + c·y` for constants a and c.
fn lin(ctx: &mut Ctx<'_, '_>, a: f64, x: NodeId, c: f64, y: NodeId) -> Result<NodeId> {
    let ax = ctx.b.scale(x, a)?;
    let cy = ctx.b.scale(y, c)?;
    ctx.b.add2(ax, cy)
}

/// The new value of parameter `p` with gradient `g`.
fn update(
    ctx: &mut Ctx<'_, '_>,
    opt: &Optimizer,
    name: &str,
    p: NodeId,
    g: NodeId,
) -> Result<NodeId> {
    let lr = ctx.hyper(Hyper::Lr)?;
    let wd = opt.weight_decay;
    match opt.kind {
        OptimizerKind::Sgd {
            momentum,
            dampening,
            nesterov,
        } => {
            let d = decayed(ctx, wd, p, g)?;
            let step = if momentum != 0.0 {
                // buf = d on the first step, else momentum·buf + (1 − dampening)·d.
                let (id, buf) = ctx.slot(name, "momentum_buffer", p, 0.0)?;
                let later = lin(ctx, momentum, buf, 1.0 - dampening, d)?;
                let first = ctx.hyper(Hyper::First)?;
                let nb = ctx.b.add(Op::Where, &[first, d, later])?;
                ctx.set(id, nb);
                if nesterov {
                    let m = ctx.b.scale(nb, momentum)?;
                    ctx.b.add2(d, m)?
                } else {
                    nb
                }
            } else {
                d
            };
            let s = ctx.b.mul(step, lr)?;
            ctx.b.sub(p, s)
        }
        OptimizerKind::Adagrad {
            initial_accumulator,
            eps,
            ..
        } => {
            let d = decayed(ctx, wd, p, g)?;
            let clr = ctx.hyper(Hyper::AdagradLr)?;
            let (id, sum) = ctx.slot(name, "sum", p, initial_accumulator)?;
            let d2 = ctx.b.mul(d, d)?;
            let ns = ctx.b.add2(sum, d2)?;
            ctx.set(id, ns);
            let sd = ctx.b.un(Unary::Sqrt, ns)?;
            let e = ctx.b.scalar(eps)?;
            let std = ctx.b.add2(sd, e)?;
            let q = ctx.b.div(d, std)?;
            let s = ctx.b.mul(q, clr)?;
            ctx.b.sub(p, s)
        }
        OptimizerKind::RmsProp {
            alpha,
            eps,
            momentum,
            centered,
        } => {
            let d = decayed(ctx, wd, p, g)?;
            let (id, sq) = ctx.slot(name, "square_avg", p, 0.0)?;
            let d2 = ctx.b.mul(d, d)?;
            let nsq = lin(ctx, alpha, sq, 1.0 - alpha, d2)?;
            ctx.set(id, nsq);
            let var = if centered {
                let (gid, ga) = ctx.slot(name, "grad_avg", p, 0.0)?;
                let nga = lin(ctx, alpha, ga, 1.0 - alpha, d)?;
                ctx.set(gid, nga);
                let ga2 = ctx.b.mul(nga, nga)?;
                ctx.b.sub(nsq, ga2)?
            } else {
                nsq
            };
            let sd = ctx.b.un(Unary::Sqrt, var)?;
            let e = ctx.b.scalar(eps)?;
            let avg = ctx.b.add2(sd, e)?;
            let q = ctx.b.div(d, avg)?;
            let step = if momentum > 0.0 {
                let (bid, buf) = ctx.slot(name, "momentum_buffer", p, 0.0)?;
                let m = ctx.b.scale(buf, momentum)?;
                let nb = ctx.b.add2(m, q)?;
                ctx.set(bid, nb);
                nb
            } else {
                q
            };
            let s = ctx.b.mul(step, lr)?;
            ctx.b.sub(p, s)
        }
        OptimizerKind::Adam {
            beta1,
            beta2,
            eps,
            amsgrad,
        }
        | OptimizerKind::AdamW {
            beta1,
            beta2,
            eps,
            amsgrad,
        } => {
            let decoupled = matches!(opt.kind, OptimizerKind::AdamW { .. });
            // AdamW shrinks the parameter first: p ← p·(1 − lr·wd).
            let (p0, d) = if decoupled {
                let p0 = if wd != 0.0 {
                    let lw = ctx.b.scale(lr, wd)?;
                    let one = ctx.b.scalar(1.0)?;
                    let f = ctx.b.sub(one, lw)?;
                    ctx.b.mul(p, f)?
                } else {
                    p
                };
                (p0, g)
            } else {
                (p, decayed(ctx, wd, p, g)?)
            };
            let (mid, m) = ctx.slot(name, "exp_avg", p, 0.0)?;
            let (vid, v) = ctx.slot(name, "exp_avg_sq", p, 0.0)?;
            let nm = lin(ctx, beta1, m, 1.0 - beta1, d)?;
            let d2 = ctx.b.mul(d, d)?;
            let nv = lin(ctx, beta2, v, 1.0 - beta2, d2)?;
            ctx.set(mid, nm);
            ctx.set(vid, nv);
            let vv = if amsgrad {
                let (xid, vmax) = ctx.slot(name, "max_exp_avg_sq", p, 0.0)?;
                let nx = ctx.b.bin(Binary::Max, vmax, nv)?;
                ctx.set(xid, nx);
                nx
            } else {
                nv
            };
            // denom = sqrt(v) / sqrt(1 − β₂ᵗ) + eps; p −= lr / (1 − β₁ᵗ) · m / denom
            let bc1 = ctx.hyper(Hyper::Bc1)?;
            let bc2 = ctx.hyper(Hyper::Bc2)?;
            // The per-element division by sqrt(1 − β₂ᵗ) is a product with
            // its reciprocal, computed once: f32x4 division and square root
            // bound this loop (within 1 ulp of PyTorch's formula).
            let sv = ctx.b.un(Unary::Sqrt, vv)?;
            let rb = ctx.b.un(Unary::Rsqrt, bc2)?;
            let q = ctx.b.mul(sv, rb)?;
            let e = ctx.b.scalar(eps)?;
            let denom = ctx.b.add2(q, e)?;
            let step_size = ctx.b.div(lr, bc1)?;
            let r = ctx.b.div(nm, denom)?;
            let s = ctx.b.mul(r, step_size)?;
            let new = ctx.b.sub(p0, s)?;
            // The same formula for the scheduler's fused kernel (jit/adam.rs,
            // which must follow every change made here).
            if !amsgrad {
                let (lr, bc1, bc2) = (
                    ctx.hyper_index(lr)?,
                    ctx.hyper_index(bc1)?,
                    ctx.hyper_index(bc2)?,
                );
                ctx.b.graph.adam_updates.push(AdamUpdate {
                    param: p,
                    grad: g,
                    exp_avg: m,
                    exp_avg_sq: v,
                    new_param: new,
                    new_exp_avg: nm,
                    new_exp_avg_sq: nv,
                    lr,
                    bc1,
                    bc2,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: wd,
                    decoupled,
                });
            }
            Ok(new)
        }
    }
}
