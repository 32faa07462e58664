//! Activations and elementwise functions, written in primitives.

use super::super::Lowerer;
use super::super::args::{Default as D, Ty, opt};
use super::super::value::{TRef, Value};
use super::{Apply, Builtin, x};
use crate::diag::{Diagnostic, Span};
use crate::ir::model::Init;
use crate::ir::ops::{Binary, Op, Unary};
use crate::ir::types::Shape;

macro_rules! unary_layer {
    ($name:literal, $op:ident, $prefix:expr, $doc:literal) => {
        Builtin {
            name: $name,
            inputs: (1, Some(1)),
            sig: &[],
            prefix: $prefix,
            lower: |l, a| Value::Tensor(l.add(Op::Unary(Unary::$op), &[x(a)], a.span)),
            doc: $doc,
        }
    };
}

pub static TABLE: &[Builtin] = &[
    unary_layer!("relu", Relu, Some("relu"), "max(x, 0)"),
    unary_layer!("sigmoid", Sigmoid, Some("sigmoid"), "1 / (1 + exp(-x))"),
    unary_layer!("tanh", Tanh, Some("tanh"), "hyperbolic tangent"),
    Builtin {
        name: "leaky_relu",
        inputs: (1, Some(1)),
        sig: &[opt("alpha", Ty::Num, D::Num(0.01))],
        prefix: Some("relu"),
        lower: leaky_relu,
        doc: "x if x > 0, else alpha·x (the generalised ReLU)",
    },
    Builtin {
        name: "prelu",
        inputs: (1, Some(1)),
        sig: &[
            opt("per_channel", Ty::Bool, D::Bool(false)),
            opt("init", Ty::Num, D::Num(0.25)),
        ],
        prefix: Some("prelu"),
        lower: prelu,
        doc: "leaky ReLU whose slope is learned: one for all units, or one per channel (axis 1)",
    },
    Builtin {
        name: "elu",
        inputs: (1, Some(1)),
        sig: &[opt("alpha", Ty::Num, D::Num(1.0))],
        prefix: Some("elu"),
        lower: elu,
        doc: "x if x > 0, else alpha·(exp(x) − 1)",
    },
    Builtin {
        name: "gelu",
        inputs: (1, Some(1)),
        sig: &[opt("approximate", Ty::Str, D::Str("none"))],
        prefix: Some("gelu"),
        lower: gelu,
        doc: "x·Φ(x); approximate: \"tanh\" for the tanh formula",
    },
    Builtin {
        name: "silu",
        inputs: (1, Some(1)),
        sig: &[],
        prefix: Some("silu"),
        lower: silu,
        doc: "x·sigmoid(x) (swish)",
    },
    Builtin {
        name: "softplus",
        inputs: (1, Some(1)),
        sig: &[
            opt("beta", Ty::Positive, D::Num(1.0)),
            opt("threshold", Ty::Num, D::Num(20.0)),
        ],
        prefix: Some("softplus"),
        lower: softplus,
        doc: "log(1 + exp(beta·x)) / beta, linear above the threshold",
    },
    Builtin {
        name: "softmax",
        inputs: (1, Some(1)),
        sig: &[opt("axis", Ty::Int, D::Int(-1))],
        prefix: Some("softmax"),
        lower: softmax,
        doc: "exp(x) / sum(exp(x)) along an axis (the last by default)",
    },
    Builtin {
        name: "log_softmax",
        inputs: (1, Some(1)),
        sig: &[opt("axis", Ty::Int, D::Int(-1))],
        prefix: Some("softmax"),
        lower: log_softmax,
        doc: "log(softmax(x)), computed stably",
    },
    Builtin {
        name: "identity",
        inputs: (1, Some(1)),
        sig: &[],
        prefix: None,
        lower: |_, a| Value::Tensor(x(a)),
        doc: "returns its input (useful in conditionals)",
    },
    unary_layer!("exp", Exp, None, "elementwise e^x"),
    unary_layer!("log", Log, None, "elementwise natural logarithm"),
    unary_layer!("sqrt", Sqrt, None, "elementwise square root"),
    unary_layer!("abs", Abs, None, "elementwise absolute value"),
];

fn bin<'p>(l: &mut Lowerer<'p, '_>, op: Binary, a: TRef, b: TRef, span: Span) -> TRef {
    l.add(Op::Binary(op), &[a, b], span)
}

fn un<'p>(l: &mut Lowerer<'p, '_>, op: Unary, a: TRef, span: Span) -> TRef {
    l.add(Op::Unary(op), &[a], span)
}

/// `where(x > 0, x, neg)`: the derivative at 0 is the negative side's, as PyTorch's.
fn positive_or<'p>(l: &mut Lowerer<'p, '_>, x: TRef, neg: TRef, span: Span) -> TRef {
    let zero = l.scalar(0.0, span);
    let pos = bin(l, Binary::Gt, x, zero, span);
    l.add(Op::Where, &[pos, x, neg], span)
}

fn leaky_relu<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let alpha = l.scalar(a.args.num("alpha"), a.span);
    let neg = bin(l, Binary::Mul, x(a), alpha, a.span);
    Value::Tensor(positive_or(l, x(a), neg, a.span))
}

fn prelu<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(s) = l.ty(x(a)).map(|t| t.shape.clone()) else {
        return Value::Poison;
    };
    let span = a.span;
    let init = Init::Constant(a.args.num("init"));
    let alpha = if a.args.bool("per_channel") {
        let Some(c) = s.dim(1).and_then(|d| d.known()).filter(|_| s.rank() >= 2) else {
            l.error(
                Diagnostic::error(
                    span,
                    format!("a per-channel prelu needs channels on axis 1, but its input is {s}"),
                )
                .label("no channel axis"),
            );
            return Value::Poison;
        };
        let w = l.param("weight", Shape::fixed(&[c]), init, span);
        let mut b = vec![c];
        b.extend(std::iter::repeat_n(1, s.rank() - 2));
        l.add(
            Op::Reshape {
                shape: Shape::fixed(&b),
            },
            &[w],
            span,
        )
    } else {
        l.param("weight", Shape::fixed(&[1]), init, span)
    };
    let neg = bin(l, Binary::Mul, x(a), alpha, span);
    Value::Tensor(positive_or(l, x(a), neg, span))
}

fn elu<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let span = a.span;
    // exp of min(x, 0): the unused branch must not overflow, or its gradient
    // (0 · inf) would be NaN.
    let zero = l.scalar(0.0, span);
    let low = bin(l, Binary::Min, x(a), zero, span);
    let e = un(l, Unary::Exp, low, span);
    let one = l.scalar(1.0, span);
    let em1 = bin(l, Binary::Sub, e, one, span);
    let alpha = l.scalar(a.args.num("alpha"), span);
    let neg = bin(l, Binary::Mul, em1, alpha, span);
    Value::Tensor(positive_or(l, x(a), neg, span))
}

fn gelu<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let span = a.span;
    let xi = x(a);
    let inner = match a.args.str("approximate") {
        Some("none") => {
            let c = l.scalar(std::f64::consts::FRAC_1_SQRT_2, span);
            let z = bin(l, Binary::Mul, xi, c, span);
            un(l, Unary::Erf, z, span)
        }
        Some("tanh") => {
            let x2 = bin(l, Binary::Mul, xi, xi, span);
            let x3 = bin(l, Binary::Mul, x2, xi, span);
            let k = l.scalar(0.044715, span);
            let kx3 = bin(l, Binary::Mul, x3, k, span);
            let sum = bin(l, Binary::Add, xi, kx3, span);
            let c = l.scalar((2.0 / std::f64::consts::PI).sqrt(), span);
            let z = bin(l, Binary::Mul, sum, c, span);
            un(l, Unary::Tanh, z, span)
        }
        _ => {
            let span = a.args.span("approximate").unwrap_or(span);
            l.error(
                Diagnostic::error(span, "`approximate` of gelu is \"none\" or \"tanh\"")
                    .label("unknown approximation"),
            );
            return Value::Poison;
        }
    };
    let one = l.scalar(1.0, span);
    let half = l.scalar(0.5, span);
    let s = bin(l, Binary::Add, inner, one, span);
    let hx = bin(l, Binary::Mul, xi, half, span);
    Value::Tensor(bin(l, Binary::Mul, hx, s, span))
}

fn silu<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let s = un(l, Unary::Sigmoid, x(a), a.span);
    Value::Tensor(bin(l, Binary::Mul, x(a), s, a.span))
}

fn softplus<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let span = a.span;
    let beta = l.scalar(a.args.num("beta"), span);
    let threshold = l.scalar(a.args.num("threshold"), span);
    let bx = bin(l, Binary::Mul, x(a), beta, span);
    // Clamp before exp so the branch not taken cannot overflow.
    let clamped = bin(l, Binary::Min, bx, threshold, span);
    let e = un(l, Unary::Exp, clamped, span);
    let one = l.scalar(1.0, span);
    let e1 = bin(l, Binary::Add, e, one, span);
    let lg = un(l, Unary::Log, e1, span);
    let soft = bin(l, Binary::Div, lg, beta, span);
    let above = bin(l, Binary::Gt, bx, threshold, span);
    Value::Tensor(l.add(Op::Where, &[above, x(a), soft], span))
}

/// Normalises a possibly negative axis argument against the input's rank.
pub(super) fn axis_arg(
    l: &mut Lowerer<'_, '_>,
    a: &Apply<'_>,
    t: TRef,
    name: &str,
) -> Option<usize> {
    let s = l.ty(t)?.shape.clone();
    let axis = a.args.int(name);
    match s.axis(axis as isize) {
        Some(ax) => Some(ax),
        None => {
            let span = a.args.span(name).unwrap_or(a.span);
            let r = s.rank() as i64;
            l.error(
                Diagnostic::error(
                    span,
                    format!("axis {axis} does not exist in a tensor of shape {s}"),
                )
                .label(format!("no axis {axis}"))
                .with(l.span_of(t), l.origin_label(t))
                .help(format!(
                    "a rank-{r} tensor has axes 0 to {} (or -{r} to -1 counting from the end)",
                    r - 1
                )),
            );
            None
        }
    }
}

fn softmax<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    match axis_arg(l, a, x(a), "axis") {
        Some(axis) => Value::Tensor(l.add(Op::Softmax { axis }, &[x(a)], a.span)),
        None => Value::Poison,
    }
}

fn log_softmax<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    match axis_arg(l, a, x(a), "axis") {
        Some(axis) => Value::Tensor(l.add(Op::LogSoftmax { axis }, &[x(a)], a.span)),
        None => Value::Poison,
    }
}
