//! Kernels of their own: products, convolutions, pooling, softmax, gathers,
//! concatenation, padding and recurrences.

use super::*;

/// A product, convolution, pooling, softmax, concat, pad or recurrence.
#[allow(clippy::too_many_arguments)]
pub(super) fn anchor(
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
            let k = if *ta {
                a.shape[a.shape.len() - 2]
            } else {
                a.shape[a.shape.len() - 1]
            };
            let flipped = flips_output(shape, k, &b, *tb);
            // The product into a column-major copy of the output, then
            // turned row-major (see `flips_output`).
            let cc = if flipped {
                let t = p.buffer(numel, at);
                let mut v = View::contiguous(Base::Buf(t), shape, DType::F32);
                v.strides = vec![1, shape[0] as isize];
                v
            } else {
                c.clone()
            };
            let g = gemm(p, a, b, &cc, *ta, *tb, steps, outer_at, id)?;
            let at = outer_at.unwrap_or(steps.len());
            p.touch(g.a.base, at);
            p.touch(g.b.base, at);
            p.touch(g.c.base, at);
            steps.push(Step::Gemm(g));
            if flipped {
                let at = outer_at.unwrap_or(steps.len());
                p.touch(cc.base, at);
                p.touch(c.base, at);
                steps.push(Step::Copy {
                    from: cc,
                    to: c.clone(),
                });
            }
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

/// Whether the product `a @ bᵀ` (m×n over k) with a dense layer's [out, in]
/// weight `b`, too large for `gemm` to copy it row-major first, is computed
/// into a column-major output that is then turned row-major: the gemm
/// crate's packing then transposes the m×k input instead of the n×k weight.
/// MNIST's first layer (128×512 over 784, `nnc bench --profile`): 1.13–1.20
/// ms, against 0.95–0.98 plus 0.023–0.027 to turn the output. With a
/// weight small enough to copy, the copy wins (MNIST's second layer: 0.32 +
/// 0.036 ms, against 0.43 + 0.008 flipped).
fn flips_output(shape: &[usize], k: usize, b: &View, tb: bool) -> bool {
    if shape.len() != 2 || !tb || b.shape.len() != 2 || b.strides[1] != 1 {
        return false;
    }
    let (m, n) = (shape[0], shape[1]);
    m >= 32 && m < k && n * k > 1 << 18
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
    // (`cargo bench --bench gemm`: 62 vs 113 GFLOP/s at 128x256x512, 74 vs
    // 109 at 32x128x64), and costs less elsewhere (100 vs 110 at
    // 128x512x784, 88 vs 102 at 64x120x400). Up to 2^18 elements it is
    // copied row-major first (8x8 AVX2 blocks: MNIST's 256x512 weight in
    // 0.036 ms against 0.25 ms saved; the digits MLP's step 0.046 -> 0.043
    // ms); MNIST's 784x512 weight takes 0.148 ms to copy, as long as the
    // copy saves, so larger weights turn the output instead (`flips_output`).
    let copies = m >= 32 && (1 << 12..=1 << 18).contains(&(n * k));
    if l == 1 && bm.rs == 1 && bm.cs != 1 && copies {
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
        rs: c.strides[r - 2],
        cs: c.strides[r - 1],
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
