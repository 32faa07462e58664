//! Layers with parameters or state: dense, convolution, pooling, dropout,
//! normalisation, embedding. Parameters are laid out and initialised as
//! PyTorch's modules do (dense weight `[out, in]`, conv weight
//! `[out, in/groups, *kernel]`, uniform ±1/sqrt(fan_in)).

use super::super::Lowerer;
use super::super::args::{Default as D, P, Ty, opt, req};
use super::super::value::{TRef, Value};
use super::{Apply, Builtin, x};
use crate::diag::Diagnostic;
use crate::ir::model::{Init, Mode};
use crate::ir::ops::{Binary, Op, PoolKind, ReduceKind, Unary, Window};
use crate::ir::types::{Shape, TensorType};

const CONV: &[P] = &[
    req("filters", Ty::Count, "the number of output channels"),
    req("kernel", Ty::Sizes, "the kernel size"),
    opt("stride", Ty::Sizes, D::Int(1)),
    opt("pad", Ty::Padding, D::Int(0)),
    opt("dilation", Ty::Sizes, D::Int(1)),
    opt("groups", Ty::Count, D::Int(1)),
    opt("bias", Ty::Bool, D::Bool(true)),
];

const POOL: &[P] = &[
    req("kernel", Ty::Sizes, "the window size"),
    opt("stride", Ty::Sizes, D::Optional),
    opt("pad", Ty::Padding, D::Int(0)),
    opt("ceil", Ty::Bool, D::Bool(false)),
];

pub static TABLE: &[Builtin] = &[
    Builtin {
        name: "dense",
        inputs: (1, Some(1)),
        sig: &[
            req("units", Ty::Count, "the number of outputs"),
            opt("bias", Ty::Bool, D::Bool(true)),
        ],
        prefix: Some("fc"),
        lower: dense,
        doc: "fully connected layer on the last axis: x @ weightᵀ + bias",
    },
    Builtin {
        name: "conv1d",
        inputs: (1, Some(1)),
        sig: CONV,
        prefix: Some("conv"),
        lower: conv1d,
        doc: "1-D convolution of [B, C, L]",
    },
    Builtin {
        name: "conv2d",
        inputs: (1, Some(1)),
        sig: CONV,
        prefix: Some("conv"),
        lower: conv2d,
        doc: "2-D convolution of [B, C, H, W]",
    },
    Builtin {
        name: "maxpool",
        inputs: (1, Some(1)),
        sig: POOL,
        prefix: Some("pool"),
        lower: maxpool,
        doc: "max pooling of [B, C, L] or [B, C, H, W]; stride defaults to the window",
    },
    Builtin {
        name: "avgpool",
        inputs: (1, Some(1)),
        sig: POOL,
        prefix: Some("pool"),
        lower: avgpool,
        doc: "average pooling (padding counted, as PyTorch); stride defaults to the window",
    },
    Builtin {
        name: "global_avgpool",
        inputs: (1, Some(1)),
        sig: &[],
        prefix: Some("pool"),
        lower: global_avgpool,
        doc: "mean over all spatial axes: [B, C, ...] → [B, C]",
    },
    Builtin {
        name: "global_maxpool",
        inputs: (1, Some(1)),
        sig: &[],
        prefix: Some("pool"),
        lower: global_maxpool,
        doc: "max over all spatial axes: [B, C, ...] → [B, C]",
    },
    Builtin {
        name: "dropout",
        inputs: (1, Some(1)),
        sig: &[req("p", Ty::Prob, "the probability of dropping a unit")],
        prefix: Some("dropout"),
        lower: dropout,
        doc: "zeroes each unit with probability p while training, scaling the rest by 1/(1-p); identity in inference",
    },
    Builtin {
        name: "batchnorm",
        inputs: (1, Some(1)),
        sig: &[
            opt("momentum", Ty::Prob, D::Num(0.1)),
            opt("eps", Ty::Positive, D::Num(1e-5)),
        ],
        prefix: Some("bn"),
        lower: batchnorm,
        doc: "batch normalisation over every axis but the channels (axis 1); running statistics in inference",
    },
    Builtin {
        name: "layernorm",
        inputs: (1, Some(1)),
        sig: &[opt("eps", Ty::Positive, D::Num(1e-5))],
        prefix: Some("ln"),
        lower: layernorm,
        doc: "normalisation over the last axis, with a learned scale and shift",
    },
    Builtin {
        name: "embedding",
        inputs: (1, Some(1)),
        sig: &[req("dim", Ty::Count, "the size of each embedding vector")],
        prefix: Some("embed"),
        lower: embedding,
        doc: "a learned vector per class index: [B, ...] classes V → [B, ..., dim]",
    },
];

fn input_shape<'p>(l: &Lowerer<'p, '_>, t: TRef) -> Option<Shape> {
    l.ty(t).map(|t| t.shape.clone())
}

/// Reports a layer applied to an input of the wrong rank.
fn wrong_input(
    l: &mut Lowerer<'_, '_>,
    a: &Apply<'_>,
    message: String,
    help: Option<String>,
) -> Value<'static> {
    let t = x(a);
    let shape = l.ty(t).map(|t| t.shape.to_string()).unwrap_or_default();
    let mut d = Diagnostic::error(a.span, message)
        .label(format!("applied to {shape}"))
        .with(l.span_of(t), l.origin_label(t));
    if let Some(h) = help {
        d = d.help(h);
    }
    l.error(d);
    Value::Poison
}

fn dense<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(s) = input_shape(l, x(a)) else {
        return Value::Poison;
    };
    if s.rank() < 2 || s.rank() > 3 {
        let help = (s.rank() > 3)
            .then(|| "insert `flatten` before `dense`: `|> flatten |> dense(...)`".to_string());
        return wrong_input(
            l,
            a,
            format!("dense expects [B, features] or [B, T, features], but its input is {s}"),
            help,
        );
    }
    let Some(fan_in) = s.0.last().and_then(|d| d.known()) else {
        return wrong_input(
            l,
            a,
            format!("dense cannot mix the batch axis of {s}"),
            None,
        );
    };
    let units = a.args.usize("units");
    let bound = 1.0 / (fan_in as f64).sqrt();
    let w = l.param(
        "weight",
        Shape::fixed(&[units, fan_in]),
        Init::Uniform(bound),
        a.span,
    );
    let mut y = l.add(
        Op::MatMul {
            ta: false,
            tb: true,
        },
        &[x(a), w],
        a.span,
    );
    if a.args.bool("bias") {
        let b = l.param("bias", Shape::fixed(&[units]), Init::Uniform(bound), a.span);
        y = l.add(Op::Binary(Binary::Add), &[y, b], a.span);
    }
    Value::Tensor(y)
}

fn conv1d<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    conv(l, a, 1)
}

fn conv2d<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    conv(l, a, 2)
}

/// Per-axis sizes of argument `name`, or an error if the list has the wrong length.
fn sizes(l: &mut Lowerer<'_, '_>, a: &Apply<'_>, name: &str, nd: usize) -> Option<Vec<usize>> {
    let v = a.args.sizes(name, nd);
    let span = a.args.span(name).unwrap_or(a.span);
    match v {
        None => {
            l.error(
                Diagnostic::error(
                    span,
                    format!("`{name}` needs {nd} size(s), one per spatial axis"),
                )
                .label("wrong number of sizes"),
            );
            None
        }
        Some(v) if v.iter().any(|&n| n > MAX_WINDOW) => {
            l.error(
                Diagnostic::error(
                    span,
                    format!("`{name}` is larger than {MAX_WINDOW}, far more than any input"),
                )
                .label("too large"),
            );
            None
        }
        Some(v) => Some(v),
    }
}

/// Largest kernel, stride, dilation or padding accepted: window arithmetic
/// stays far from overflow, and no real input is this long.
const MAX_WINDOW: usize = 1 << 24;

/// Padding per axis; "same" keeps the size at stride 1.
fn padding(
    l: &mut Lowerer<'_, '_>,
    a: &Apply<'_>,
    nd: usize,
    kernel: &[usize],
    dilation: &[usize],
    stride: &[usize],
) -> Option<Vec<usize>> {
    match a.args.str("pad") {
        Some("valid") => Some(vec![0; nd]),
        Some(_) => {
            let span = a.args.span("pad").unwrap_or(a.span);
            if stride.iter().any(|&s| s != 1) {
                l.error(
                    Diagnostic::error(span, "`pad: \"same\"` needs stride 1")
                        .label("strided")
                        .help("give the padding as a number"),
                );
                return None;
            }
            let mut out = Vec::new();
            for i in 0..nd {
                let total = dilation[i] * (kernel[i] - 1);
                if !total.is_multiple_of(2) {
                    l.error(
                        Diagnostic::error(
                            span,
                            format!(
                                "`pad: \"same\"` needs an odd kernel, but it is {}",
                                kernel[i]
                            ),
                        )
                        .label("even kernel")
                        .help("give the padding as a number"),
                    );
                    return None;
                }
                out.push(total / 2);
            }
            Some(out)
        }
        None => sizes(l, a, "pad", nd),
    }
}

fn conv<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>, nd: usize) -> Value<'p> {
    let Some(s) = input_shape(l, x(a)) else {
        return Value::Poison;
    };
    let name = if nd == 1 { "conv1d" } else { "conv2d" };
    if s.rank() != nd + 2 {
        let layout = if nd == 1 {
            "[B, channels, length]"
        } else {
            "[B, channels, height, width]"
        };
        let help = match (nd, s.rank()) {
            (2, 2) => {
                let f = s.0[1].n;
                let r = (f as f64).sqrt().round() as usize;
                Some(if r * r == f {
                    format!("reshape it to an image first: `|> reshape([1, {r}, {r}])`")
                } else {
                    "reshape it to [B, channels, height, width] first".to_string()
                })
            }
            (2, 3) => Some(format!(
                "add a channel axis: `|> reshape([1, {}, {}])`",
                s.0[1], s.0[2]
            )),
            (1, 2) => Some(format!("add a channel axis: `|> reshape([1, {}])`", s.0[1])),
            _ => None,
        };
        return wrong_input(
            l,
            a,
            format!("{name} expects {layout}, but its input is {s}"),
            help,
        );
    }
    let Some(c) = s.0[1].known() else {
        return Value::Poison;
    };
    let filters = a.args.usize("filters");
    let groups = a.args.usize("groups");
    if !c.is_multiple_of(groups) || !filters.is_multiple_of(groups) {
        let span = a.args.span("groups").unwrap_or(a.span);
        let (what, n) = if !c.is_multiple_of(groups) {
            ("input", c)
        } else {
            ("output", filters)
        };
        let t = x(a);
        l.error(
            Diagnostic::error(
                span,
                format!("{groups} groups do not divide the {n} {what} channels"),
            )
            .label("groups must divide both channel counts")
            .with(l.span_of(t), format!("the input has {c} channels")),
        );
        return Value::Poison;
    }
    let (Some(kernel), Some(stride), Some(dilation)) = (
        sizes(l, a, "kernel", nd),
        sizes(l, a, "stride", nd),
        sizes(l, a, "dilation", nd),
    ) else {
        return Value::Poison;
    };
    let Some(pad) = padding(l, a, nd, &kernel, &dilation, &stride) else {
        return Value::Poison;
    };
    let fan_in = kernel
        .iter()
        .fold(c / groups, |acc, &k| acc.saturating_mul(k))
        .max(1);
    let bound = 1.0 / (fan_in as f64).sqrt();
    let mut wshape = vec![filters, c / groups];
    wshape.extend(&kernel);
    let w = l.param(
        "weight",
        Shape::fixed(&wshape),
        Init::Uniform(bound),
        a.span,
    );
    let window = Window {
        kernel,
        stride,
        pad,
        dilation,
        ceil: false,
    };
    let mut y = l.add(Op::Conv { window, groups }, &[x(a), w], a.span);
    if a.args.bool("bias") {
        let b = l.param(
            "bias",
            Shape::fixed(&[filters]),
            Init::Uniform(bound),
            a.span,
        );
        let mut bshape = vec![filters];
        bshape.extend(std::iter::repeat_n(1, nd));
        let b = l.add(
            Op::Reshape {
                shape: Shape::fixed(&bshape),
            },
            &[b],
            a.span,
        );
        y = l.add(Op::Binary(Binary::Add), &[y, b], a.span);
    }
    Value::Tensor(y)
}

fn maxpool<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    pool(l, a, PoolKind::Max)
}

fn avgpool<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    pool(l, a, PoolKind::Avg)
}

fn pool<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>, kind: PoolKind) -> Value<'p> {
    let Some(s) = input_shape(l, x(a)) else {
        return Value::Poison;
    };
    let name = if kind == PoolKind::Max {
        "maxpool"
    } else {
        "avgpool"
    };
    if s.rank() != 3 && s.rank() != 4 {
        let help = (s.rank() == 2)
            .then(|| "pool before `flatten`, while the tensor still has spatial axes".to_string());
        return wrong_input(
            l,
            a,
            format!("{name} expects [B, C, length] or [B, C, height, width], but its input is {s}"),
            help,
        );
    }
    let nd = s.rank() - 2;
    let Some(kernel) = sizes(l, a, "kernel", nd) else {
        return Value::Poison;
    };
    let stride = if a.args.has("stride") {
        match sizes(l, a, "stride", nd) {
            Some(s) => s,
            None => return Value::Poison,
        }
    } else {
        kernel.clone()
    };
    let Some(pad) = padding(l, a, nd, &kernel, &vec![1; nd], &stride) else {
        return Value::Poison;
    };
    let window = Window {
        kernel,
        stride,
        pad,
        dilation: vec![1; nd],
        ceil: a.args.bool("ceil"),
    };
    Value::Tensor(l.add(Op::Pool { kind, window }, &[x(a)], a.span))
}

fn global_pool<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>, kind: ReduceKind) -> Value<'p> {
    let Some(s) = input_shape(l, x(a)) else {
        return Value::Poison;
    };
    if s.rank() < 3 {
        return wrong_input(
            l,
            a,
            format!("global pooling expects [B, C, ...spatial], but its input is {s}"),
            Some("pool before `flatten`, while the tensor still has spatial axes".into()),
        );
    }
    let axes = (2..s.rank()).collect();
    Value::Tensor(l.add(
        Op::Reduce {
            kind,
            axes,
            keep: false,
        },
        &[x(a)],
        a.span,
    ))
}

fn global_avgpool<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    global_pool(l, a, ReduceKind::Mean)
}

fn global_maxpool<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    global_pool(l, a, ReduceKind::Max)
}

fn dropout<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let p = a.args.num("p");
    if l.mode == Mode::Infer || p == 0.0 || !l.dropout {
        return Value::Tensor(x(a));
    }
    let Some(shape) = input_shape(l, x(a)) else {
        return Value::Poison;
    };
    let stream = l.dropout_streams;
    l.dropout_streams += 1;
    let mask = l.add(Op::DropoutMask { p, stream, shape }, &[], a.span);
    Value::Tensor(l.add(Op::Binary(Binary::Mul), &[x(a), mask], a.span))
}

/// Normalises `x` over `axes` with mean and (biased) variance `var`; returns
/// `(x - mean) / sqrt(var + eps)`.
fn normalise<'p>(
    l: &mut Lowerer<'p, '_>,
    a: &Apply<'p>,
    axes: &[usize],
    eps: f64,
) -> (TRef, TRef, TRef) {
    let span = a.span;
    let mean = l.add(
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes: axes.to_vec(),
            keep: true,
        },
        &[x(a)],
        span,
    );
    let xc = l.add(Op::Binary(Binary::Sub), &[x(a), mean], span);
    let sq = l.add(Op::Binary(Binary::Mul), &[xc, xc], span);
    let var = l.add(
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes: axes.to_vec(),
            keep: true,
        },
        &[sq],
        span,
    );
    let e = l.scalar(eps, span);
    let ve = l.add(Op::Binary(Binary::Add), &[var, e], span);
    let inv = l.add(Op::Unary(Unary::Rsqrt), &[ve], span);
    let xhat = l.add(Op::Binary(Binary::Mul), &[xc, inv], span);
    (xhat, mean, var)
}

fn batchnorm<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(s) = input_shape(l, x(a)) else {
        return Value::Poison;
    };
    if s.rank() < 2 {
        return wrong_input(
            l,
            a,
            format!("batchnorm expects [B, C, ...], but its input is {s}"),
            None,
        );
    }
    if l.depth() > 0 {
        l.error(
            Diagnostic::error(a.span, "batchnorm cannot be used inside a recurrence")
                .label("inside `recur`")
                .help("use `layernorm`, which keeps no running statistics"),
        );
        return Value::Poison;
    }
    let Some(c) = s.0[1].known() else {
        return Value::Poison;
    };
    let span = a.span;
    let eps = a.args.num("eps");
    let momentum = a.args.num("momentum");
    let axes: Vec<usize> = std::iter::once(0).chain(2..s.rank()).collect();
    let mut bshape = vec![1, c];
    bshape.extend(std::iter::repeat_n(1, s.rank() - 2));
    let bshape = Shape::fixed(&bshape);
    let cshape = Shape::fixed(&[c]);
    let gamma = l.param("weight", cshape.clone(), Init::Constant(1.0), span);
    let beta = l.param("bias", cshape.clone(), Init::Constant(0.0), span);
    let (rm_id, rm) = l.state("running_mean", TensorType::f32(cshape.clone()), 0.0, span);
    let (rv_id, rv) = l.state("running_var", TensorType::f32(cshape.clone()), 1.0, span);
    let g = l.add(
        Op::Reshape {
            shape: bshape.clone(),
        },
        &[gamma],
        span,
    );
    let b = l.add(
        Op::Reshape {
            shape: bshape.clone(),
        },
        &[beta],
        span,
    );
    let xhat = if l.mode == Mode::Train {
        let (xhat, mean, var) = normalise(l, a, &axes, eps);
        // Running statistics, as PyTorch keeps them (unbiased variance).
        let n = l.add(Op::SizeOf { axes: axes.clone() }, &[x(a)], span);
        let one = l.scalar(1.0, span);
        let n1 = l.add(Op::Binary(Binary::Sub), &[n, one], span);
        let corr = l.add(Op::Binary(Binary::Div), &[n, n1], span);
        let keep = l.scalar(1.0 - momentum, span);
        let take = l.scalar(momentum, span);
        let mean_c = l.add(
            Op::Reshape {
                shape: cshape.clone(),
            },
            &[mean],
            span,
        );
        let var_c = l.add(
            Op::Reshape {
                shape: cshape.clone(),
            },
            &[var],
            span,
        );
        let unbiased = l.add(Op::Binary(Binary::Mul), &[var_c, corr], span);
        for (id, old, new) in [(rm_id, rm, mean_c), (rv_id, rv, unbiased)] {
            let kept = l.add(Op::Binary(Binary::Mul), &[old, keep], span);
            let taken = l.add(Op::Binary(Binary::Mul), &[new, take], span);
            let upd = l.add(Op::Binary(Binary::Add), &[kept, taken], span);
            l.model.state_updates.push((id, upd.node));
        }
        xhat
    } else {
        let m = l.add(
            Op::Reshape {
                shape: bshape.clone(),
            },
            &[rm],
            span,
        );
        let v = l.add(
            Op::Reshape {
                shape: bshape.clone(),
            },
            &[rv],
            span,
        );
        let xc = l.add(Op::Binary(Binary::Sub), &[x(a), m], span);
        let e = l.scalar(eps, span);
        let ve = l.add(Op::Binary(Binary::Add), &[v, e], span);
        let inv = l.add(Op::Unary(Unary::Rsqrt), &[ve], span);
        l.add(Op::Binary(Binary::Mul), &[xc, inv], span)
    };
    let scaled = l.add(Op::Binary(Binary::Mul), &[xhat, g], span);
    Value::Tensor(l.add(Op::Binary(Binary::Add), &[scaled, b], span))
}

fn layernorm<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(s) = input_shape(l, x(a)) else {
        return Value::Poison;
    };
    let Some(f) = s.0.last().and_then(|d| d.known()).filter(|_| s.rank() >= 2) else {
        return wrong_input(
            l,
            a,
            format!("layernorm expects [B, ..., features], but its input is {s}"),
            None,
        );
    };
    let span = a.span;
    let eps = a.args.num("eps");
    let w = l.param("weight", Shape::fixed(&[f]), Init::Constant(1.0), span);
    let b = l.param("bias", Shape::fixed(&[f]), Init::Constant(0.0), span);
    let (xhat, _, _) = normalise(l, a, &[s.rank() - 1], eps);
    let scaled = l.add(Op::Binary(Binary::Mul), &[xhat, w], span);
    Value::Tensor(l.add(Op::Binary(Binary::Add), &[scaled, b], span))
}

fn embedding<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let t = x(a);
    let Some(classes) = l.classes_of(t) else {
        return wrong_input(
            l,
            a,
            "embedding looks up class indices, but its input is not a tensor of class indices"
                .into(),
            Some(
                "declare the input with its number of classes: `input x: [B, T] classes 65`".into(),
            ),
        );
    };
    let dim = a.args.usize("dim");
    let w = l.param(
        "weight",
        Shape::fixed(&[classes, dim]),
        Init::Normal(1.0),
        a.span,
    );
    let oh = l.add(Op::OneHot { classes }, &[t], a.span);
    Value::Tensor(l.add(
        Op::MatMul {
            ta: false,
            tb: false,
        },
        &[oh, w],
        a.span,
    ))
}
