//! The local gradient of every primitive: given the gradient `g` of a node's
//! result, the gradient of each of its inputs. One match arm per op.

use crate::ir::build::{BuildError, Builder, Result};
use crate::ir::graph::{Node, NodeId};
use crate::ir::ops::{Binary, Op, ReduceKind, Unary};
use crate::ir::types::{Dim, Shape};

/// Gradients of `node`'s inputs (`None` where not needed or not defined).
/// `need[i]` says whether input `i` needs one; `y` is the node itself.
pub fn vjp(
    b: &mut Builder<'_>,
    node: &Node,
    y: NodeId,
    g: NodeId,
    need: &[bool],
) -> Result<Vec<Option<NodeId>>> {
    let x = |i: usize| node.inputs[i];
    let mut out: Vec<Option<NodeId>> = vec![None; node.inputs.len()];
    match &node.op {
        Op::Unary(u) => {
            let dx = unary(b, *u, x(0), y, g)?;
            out[0] = dx;
        }
        Op::Binary(op) => {
            let (ga, gb) = binary(b, *op, x(0), x(1), y, g, need)?;
            out[0] = ga;
            out[1] = gb;
        }
        Op::Where => {
            let zero = b.scalar(0.0)?;
            if need[1] {
                let ga = b.add(Op::Where, &[x(0), g, zero])?;
                let s = b.shape(x(1))?;
                out[1] = Some(b.unbroadcast(ga, &s)?);
            }
            if need[2] {
                let gb = b.add(Op::Where, &[x(0), zero, g])?;
                let s = b.shape(x(2))?;
                out[2] = Some(b.unbroadcast(gb, &s)?);
            }
        }
        Op::Reshape { .. } => {
            let s = b.shape(x(0))?;
            out[0] = Some(b.reshape(g, s)?);
        }
        Op::Expand { .. } => {
            let s = b.shape(x(0))?;
            out[0] = Some(b.unbroadcast(g, &s)?);
        }
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inv[p] = i;
            }
            out[0] = Some(b.add(Op::Transpose { perm: inv }, &[g])?);
        }
        Op::Slice { axis, start, end } => {
            let n = b.shape(x(0))?.0[*axis].n;
            out[0] = Some(b.add(
                Op::Pad {
                    axis: *axis,
                    before: *start,
                    after: n - end,
                },
                &[g],
            )?);
        }
        Op::Pad { axis, before, .. } => {
            let n = b.shape(x(0))?.0[*axis].n;
            out[0] = Some(b.add(
                Op::Slice {
                    axis: *axis,
                    start: *before,
                    end: before + n,
                },
                &[g],
            )?);
        }
        Op::Concat { axis } => {
            let mut start = 0;
            for (i, &inp) in node.inputs.iter().enumerate() {
                let n = b.shape(inp)?.0[*axis].n;
                if need[i] {
                    out[i] = Some(b.add(
                        Op::Slice {
                            axis: *axis,
                            start,
                            end: start + n,
                        },
                        &[g],
                    )?);
                }
                start += n;
            }
        }
        Op::Reduce { kind, axes, keep } => {
            let xs = b.shape(x(0))?;
            let kept = kept_shape(&xs, axes);
            let gk = if *keep {
                g
            } else {
                b.reshape(g, kept.clone())?
            };
            let ge = b.expand(gk, xs.clone())?;
            out[0] = Some(match kind {
                ReduceKind::Sum => ge,
                ReduceKind::Mean => {
                    let n = b.add(Op::SizeOf { axes: axes.clone() }, &[x(0)])?;
                    b.div(ge, n)?
                }
                ReduceKind::Max => {
                    // Ties share the gradient equally.
                    let yk = if *keep { y } else { b.reshape(y, kept)? };
                    let ye = b.expand(yk, xs)?;
                    let mask = b.bin(Binary::Eq, x(0), ye)?;
                    let count = b.sum(mask, axes.clone(), true)?;
                    let share = b.div(mask, count)?;
                    b.mul(ge, share)?
                }
            });
        }
        Op::Softmax { axis } => {
            // y · (g − Σ g·y)
            let gy = b.mul(g, y)?;
            let s = b.sum(gy, vec![*axis], true)?;
            let d = b.sub(g, s)?;
            out[0] = Some(b.mul(y, d)?);
        }
        Op::LogSoftmax { axis } => {
            // g − exp(y) · Σ g
            let s = b.sum(g, vec![*axis], true)?;
            let p = b.un(Unary::Exp, y)?;
            let ps = b.mul(p, s)?;
            out[0] = Some(b.sub(g, ps)?);
        }
        Op::Gather => {
            // Each gathered row's gradient goes back to the row it came from.
            if need[0] {
                let rows = b.shape(x(0))?.0[0].n;
                out[0] = Some(b.add(Op::ScatterAdd { rows }, &[x(1), g])?);
            }
        }
        Op::ScatterAdd { .. } => {
            if need[1] {
                out[1] = Some(b.add(Op::Gather, &[g, x(0)])?);
            }
        }
        Op::MatMul { ta, tb } => {
            let (ga, gb) = matmul(b, *ta, *tb, x(0), x(1), g, need)?;
            out[0] = ga;
            out[1] = gb;
        }
        Op::Conv { window, groups } => {
            let xs = b.shape(x(0))?;
            if need[0] {
                let spatial = xs.0[2..].iter().map(|d| d.n).collect();
                out[0] = Some(b.add(
                    Op::ConvGradInput {
                        window: window.clone(),
                        groups: *groups,
                        spatial,
                    },
                    &[g, x(1)],
                )?);
            }
            if need[1] {
                out[1] = Some(b.add(
                    Op::ConvGradWeight {
                        window: window.clone(),
                        groups: *groups,
                    },
                    &[x(0), g],
                )?);
            }
        }
        Op::Pool { kind, window } => {
            out[0] = Some(b.add(
                Op::PoolGrad {
                    kind: *kind,
                    window: window.clone(),
                },
                &[x(0), g],
            )?);
        }
        // No gradient flows into these (constants, indices, masks, leaves).
        Op::Input { .. }
        | Op::Param(_)
        | Op::State(_)
        | Op::Arg(_)
        | Op::Fill { .. }
        | Op::SizeOf { .. }
        | Op::DropoutMask { .. }
        | Op::StepFlag { .. }
        | Op::Hyper(_)
        | Op::OneHot { .. } => {}
        Op::ConvGradInput { .. } | Op::ConvGradWeight { .. } | Op::PoolGrad { .. } => {
            return Err(BuildError {
                pass: "autodiff",
                op: node.op.name(),
                message: "second derivatives are not supported".into(),
            });
        }
        Op::Recur(_) | Op::Output { .. } => {
            return Err(BuildError {
                pass: "autodiff",
                op: node.op.name(),
                message: "recurrences are differentiated by the BPTT pass".into(),
            });
        }
    }
    for (i, o) in out.iter_mut().enumerate() {
        if !need.get(i).copied().unwrap_or(false) {
            *o = None;
        }
    }
    Ok(out)
}

/// The shape of `x` with the reduced axes kept as 1.
fn kept_shape(xs: &Shape, axes: &[usize]) -> Shape {
    Shape(
        xs.0.iter()
            .enumerate()
            .map(|(i, d)| if axes.contains(&i) { Dim::fixed(1) } else { *d })
            .collect(),
    )
}

fn unary(b: &mut Builder<'_>, u: Unary, x: NodeId, y: NodeId, g: NodeId) -> Result<Option<NodeId>> {
    Ok(Some(match u {
        Unary::Neg => b.un(Unary::Neg, g)?,
        Unary::Exp => b.mul(g, y)?,
        Unary::Log => b.div(g, x)?,
        Unary::Sqrt => {
            let t = b.div(g, y)?;
            b.scale(t, 0.5)?
        }
        Unary::Rsqrt => {
            // d/dx x^-1/2 = -1/2 · y³
            let y2 = b.mul(y, y)?;
            let y3 = b.mul(y2, y)?;
            let t = b.mul(g, y3)?;
            b.scale(t, -0.5)?
        }
        Unary::Recip => {
            let y2 = b.mul(y, y)?;
            let t = b.mul(g, y2)?;
            b.un(Unary::Neg, t)?
        }
        Unary::Abs => {
            let zero = b.scalar(0.0)?;
            let pos = b.bin(Binary::Gt, x, zero)?;
            let neg = b.bin(Binary::Lt, x, zero)?;
            let sign = b.sub(pos, neg)?;
            b.mul(g, sign)?
        }
        Unary::Tanh => {
            let y2 = b.mul(y, y)?;
            let one = b.scalar(1.0)?;
            let d = b.sub(one, y2)?;
            b.mul(g, d)?
        }
        Unary::Sigmoid => {
            let one = b.scalar(1.0)?;
            let q = b.sub(one, y)?;
            let d = b.mul(y, q)?;
            b.mul(g, d)?
        }
        Unary::Relu => {
            // From the output: relu(x) > 0 exactly when x > 0, and the output
            // is usually stored anyway, so no mask or input is kept.
            let s = b.un(Unary::Step, y)?;
            b.mul(g, s)?
        }
        Unary::Erf => {
            // 2/√π · exp(−x²)
            let x2 = b.mul(x, x)?;
            let n = b.un(Unary::Neg, x2)?;
            let e = b.un(Unary::Exp, n)?;
            let d = b.scale(e, std::f64::consts::FRAC_2_SQRT_PI)?;
            b.mul(g, d)?
        }
        Unary::Step => return Ok(None),
    }))
}

#[allow(clippy::too_many_arguments)]
fn binary(
    b: &mut Builder<'_>,
    op: Binary,
    x0: NodeId,
    x1: NodeId,
    y: NodeId,
    g: NodeId,
    need: &[bool],
) -> Result<(Option<NodeId>, Option<NodeId>)> {
    let (sa, sb) = (b.shape(x0)?, b.shape(x1)?);
    let (ga, gb) = match op {
        Binary::Add => (Some(g), Some(g)),
        Binary::Sub => (
            Some(g),
            if need[1] {
                Some(b.un(Unary::Neg, g)?)
            } else {
                None
            },
        ),
        Binary::Mul => (
            if need[0] { Some(b.mul(g, x1)?) } else { None },
            if need[1] { Some(b.mul(g, x0)?) } else { None },
        ),
        Binary::Div => (
            if need[0] { Some(b.div(g, x1)?) } else { None },
            if need[1] {
                // −g · y / b
                let t = b.mul(g, y)?;
                let t = b.div(t, x1)?;
                Some(b.un(Unary::Neg, t)?)
            } else {
                None
            },
        ),
        Binary::Max | Binary::Min => {
            // As PyTorch's maximum/minimum: the larger (smaller) operand takes
            // the gradient, ties split it in half.
            let wins = if op == Binary::Max {
                Binary::Gt
            } else {
                Binary::Lt
            };
            let eq = b.bin(Binary::Eq, x0, x1)?;
            let half = b.scale(eq, 0.5)?;
            let mut pick = |first: NodeId, second: NodeId| -> Result<NodeId> {
                let w = b.bin(wins, first, second)?;
                let m = b.add2(w, half)?;
                b.mul(g, m)
            };
            (
                if need[0] { Some(pick(x0, x1)?) } else { None },
                if need[1] { Some(pick(x1, x0)?) } else { None },
            )
        }
        Binary::Gt | Binary::Ge | Binary::Lt | Binary::Le | Binary::Eq => (None, None),
    };
    let ga = match ga {
        Some(t) if need[0] => Some(b.unbroadcast(t, &sa)?),
        _ => None,
    };
    let gb = match gb {
        Some(t) if need[1] => Some(b.unbroadcast(t, &sb)?),
        _ => None,
    };
    Ok((ga, gb))
}

/// y = A' @ B' with A' = Aᵀ if ta, B' = Bᵀ if tb:
/// dA' = g @ B'ᵀ and dB' = A'ᵀ @ g, transposed back where needed. A 2-D
/// operand shared across leading axes gets the sum over them, computed as one
/// product over the flattened leading axes.
fn matmul(
    b: &mut Builder<'_>,
    ta: bool,
    tb: bool,
    a: NodeId,
    bm: NodeId,
    g: NodeId,
    need: &[bool],
) -> Result<(Option<NodeId>, Option<NodeId>)> {
    let (sa, sb) = (b.shape(a)?, b.shape(bm)?);
    let ga = if need[0] {
        let d = if ta {
            b.add(Op::MatMul { ta: tb, tb: true }, &[bm, g])?
        } else {
            b.add(Op::MatMul { ta: false, tb: !tb }, &[g, bm])?
        };
        Some(b.unbroadcast(d, &sa)?)
    } else {
        None
    };
    let gb = if need[1] {
        let d = if sb.rank() == 2 && sa.rank() > 2 && !ta {
            shared_rhs_grad(b, g, a, tb)?
        } else if tb {
            b.add(Op::MatMul { ta: true, tb: ta }, &[g, a])?
        } else {
            b.add(Op::MatMul { ta: !ta, tb: false }, &[a, g])?
        };
        Some(b.unbroadcast(d, &sb)?)
    } else {
        None
    };
    Ok((ga, gb))
}

/// Gradient of a 2-D right operand W used by a batched left operand A
/// [..., M, K]: flatten the leading axes of A and of g [..., M, N] into rows and
/// contract them in one product, instead of a product per batch item and a sum.
pub(super) fn shared_rhs_grad(
    b: &mut Builder<'_>,
    g: NodeId,
    a: NodeId,
    tb: bool,
) -> Result<NodeId> {
    let gs = b.shape(g)?;
    let rows = |s: &Shape| -> Shape {
        let r = s.rank();
        let mut lead = Dim::fixed(1);
        for d in &s.0[..r - 1] {
            lead = Dim {
                n: lead.n * d.n,
                batch: lead.batch || d.batch,
            };
        }
        Shape(vec![lead, s.0[r - 1]])
    };
    // Two batch axes cannot be merged into one dimension of the form n·B:
    // fall back to batched products, summed by the caller.
    if gs.0[..gs.rank() - 1].iter().filter(|d| d.batch).count() > 1 {
        return if tb {
            b.add(
                Op::MatMul {
                    ta: true,
                    tb: false,
                },
                &[g, a],
            )
        } else {
            b.add(
                Op::MatMul {
                    ta: true,
                    tb: false,
                },
                &[a, g],
            )
        };
    }
    let as_ = b.shape(a)?;
    let g2 = b.reshape(g, rows(&gs))?;
    let a2 = b.reshape(a, rows(&as_))?;
    if tb {
        // y = A @ Wᵀ: dW = gᵀ A
        b.add(
            Op::MatMul {
                ta: true,
                tb: false,
            },
            &[g2, a2],
        )
    } else {
        // y = A @ W: dW = Aᵀ g
        b.add(
            Op::MatMul {
                ta: true,
                tb: false,
            },
            &[a2, g2],
        )
    }
}
