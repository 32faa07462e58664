//! Functions that rearrange or combine tensors: flatten, reshape, concat,
//! split, reductions, constructors.

use super::super::Lowerer;
use super::super::args::{Default as D, Ty, opt, req};
use super::super::value::{TRef, Value};
use super::act::axis_arg;
use super::{Apply, Builtin, x};
use crate::diag::Diagnostic;
use crate::ir::ops::{Binary, Op, ReduceKind};
use crate::ir::types::{Dim, Shape};

pub static TABLE: &[Builtin] = &[
    Builtin {
        name: "flatten",
        inputs: (1, Some(1)),
        sig: &[],
        prefix: Some("flatten"),
        lower: flatten,
        doc: "[B, d1, d2, ...] → [B, d1·d2·...]",
    },
    Builtin {
        name: "reshape",
        inputs: (1, Some(1)),
        sig: &[req(
            "shape",
            Ty::Any,
            "the new shape without the batch axis, e.g. [16, 5, 5]",
        )],
        prefix: Some("reshape"),
        lower: reshape,
        doc: "new shape for the same elements, given without the batch axis; one -1 is inferred",
    },
    Builtin {
        name: "concat",
        inputs: (1, None),
        sig: &[opt("axis", Ty::Int, D::Int(1))],
        prefix: Some("concat"),
        lower: concat,
        doc: "joins tensors along an axis (channels, axis 1, by default)",
    },
    Builtin {
        name: "add",
        inputs: (2, None),
        sig: &[],
        prefix: Some("add"),
        lower: |l, a| fold(l, a, Binary::Add),
        doc: "elementwise sum of several tensors",
    },
    Builtin {
        name: "multiply",
        inputs: (2, None),
        sig: &[],
        prefix: Some("multiply"),
        lower: |l, a| fold(l, a, Binary::Mul),
        doc: "elementwise product of several tensors",
    },
    Builtin {
        name: "maximum",
        inputs: (2, Some(2)),
        sig: &[],
        prefix: None,
        lower: |l, a| fold(l, a, Binary::Max),
        doc: "elementwise maximum",
    },
    Builtin {
        name: "minimum",
        inputs: (2, Some(2)),
        sig: &[],
        prefix: None,
        lower: |l, a| fold(l, a, Binary::Min),
        doc: "elementwise minimum",
    },
    Builtin {
        name: "where",
        inputs: (3, Some(3)),
        sig: &[],
        prefix: None,
        lower: |l, a| Value::Tensor(l.add(Op::Where, &a.inputs, a.span)),
        doc: "where(cond, a, b): a where cond is nonzero, else b",
    },
    Builtin {
        name: "split",
        inputs: (1, Some(1)),
        sig: &[
            req("parts", Ty::Count, "how many equal parts"),
            opt("axis", Ty::Int, D::Int(-1)),
        ],
        prefix: None,
        lower: split,
        doc: "cuts a tensor into equal parts along an axis (the last by default): `i, f, g, o = split(z, 4)`",
    },
    Builtin {
        name: "slice",
        inputs: (1, Some(1)),
        sig: &[
            req("start", Ty::Size, "the first index"),
            req("end", Ty::Count, "one past the last index"),
            opt("axis", Ty::Int, D::Int(-1)),
        ],
        prefix: None,
        lower: slice,
        doc: "the entries start..end along an axis (the last by default)",
    },
    Builtin {
        name: "mean",
        inputs: (1, Some(1)),
        sig: &[
            opt("axis", Ty::Any, D::Optional),
            opt("keep", Ty::Bool, D::Bool(false)),
        ],
        prefix: None,
        lower: |l, a| reduce(l, a, ReduceKind::Mean),
        doc: "mean over an axis, a list of axes, or everything",
    },
    Builtin {
        name: "sum",
        inputs: (1, Some(1)),
        sig: &[
            opt("axis", Ty::Any, D::Optional),
            opt("keep", Ty::Bool, D::Bool(false)),
        ],
        prefix: None,
        lower: |l, a| reduce(l, a, ReduceKind::Sum),
        doc: "sum over an axis, a list of axes, or everything",
    },
    Builtin {
        name: "max",
        inputs: (1, Some(1)),
        sig: &[
            opt("axis", Ty::Any, D::Optional),
            opt("keep", Ty::Bool, D::Bool(false)),
        ],
        prefix: None,
        lower: |l, a| reduce(l, a, ReduceKind::Max),
        doc: "maximum over an axis, a list of axes, or everything",
    },
    Builtin {
        name: "transpose",
        inputs: (1, Some(1)),
        sig: &[opt("perm", Ty::Any, D::Optional)],
        prefix: None,
        lower: transpose,
        doc: "permutes the axes (swaps the last two by default)",
    },
    Builtin {
        name: "last",
        inputs: (1, Some(1)),
        sig: &[],
        prefix: None,
        lower: last,
        doc: "the last time step of a sequence [B, T, ...] → [B, ...]",
    },
    Builtin {
        name: "one_hot",
        inputs: (1, Some(1)),
        sig: &[opt("classes", Ty::Count, D::Optional)],
        prefix: None,
        lower: one_hot,
        doc: "class indices → one-hot vectors (a new last axis)",
    },
    Builtin {
        name: "zeros",
        inputs: (0, Some(0)),
        sig: &[req("shape", Ty::Shape, "the shape, e.g. [B, 128]")],
        prefix: None,
        lower: |l, a| fill(l, a, 0.0),
        doc: "a tensor of zeros, e.g. the initial state of a recurrence",
    },
    Builtin {
        name: "ones",
        inputs: (0, Some(0)),
        sig: &[req("shape", Ty::Shape, "the shape, e.g. [B, 128]")],
        prefix: None,
        lower: |l, a| fill(l, a, 1.0),
        doc: "a tensor of ones",
    },
    Builtin {
        name: "full",
        inputs: (0, Some(0)),
        sig: &[
            req("shape", Ty::Shape, "the shape, e.g. [B, 128]"),
            req("value", Ty::Num, "the value of every element"),
        ],
        prefix: None,
        lower: |l, a| {
            let v = a.args.num("value");
            fill(l, a, v)
        },
        doc: "a tensor filled with one value",
    },
];

fn shape_of(l: &Lowerer<'_, '_>, t: TRef) -> Option<Shape> {
    l.ty(t).map(|t| t.shape.clone())
}

fn flatten<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(s) = shape_of(l, x(a)) else {
        return Value::Poison;
    };
    if s.rank() < 2 {
        return Value::Tensor(x(a));
    }
    let rest: Option<usize> = s.0[1..]
        .iter()
        .try_fold(1usize, |acc, d| d.known().and_then(|n| acc.checked_mul(n)));
    let Some(rest) = rest else {
        l.error(
            Diagnostic::error(a.span, format!("cannot flatten {s}")).label("batch axis inside"),
        );
        return Value::Poison;
    };
    let shape = Shape(vec![s.0[0], Dim::fixed(rest)]);
    Value::Tensor(l.add(Op::Reshape { shape }, &[x(a)], a.span))
}

fn reshape<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(s) = shape_of(l, x(a)) else {
        return Value::Poison;
    };
    let span = a.args.span("shape").unwrap_or(a.span);
    let items: Vec<i64> = match a.args.get("shape") {
        Some(Value::List(items)) if items.iter().all(|i| i.as_int().is_some()) => {
            items.iter().filter_map(Value::as_int).collect()
        }
        _ => {
            l.error(
                Diagnostic::error(span, "reshape takes the new shape without the batch axis, e.g. `reshape([16, 5, 5])`")
                    .label("not a list of whole numbers"),
            );
            return Value::Poison;
        }
    };
    let total: Option<usize> =
        s.0.split_first()
            .filter(|(first, _)| first.batch)
            .and_then(|(_, rest)| {
                rest.iter()
                    .try_fold(1usize, |acc, d| d.known().and_then(|n| acc.checked_mul(n)))
            });
    let Some(total) = total else {
        l.error(
            Diagnostic::error(
                a.span,
                format!("reshape keeps the batch axis first, but the input is {s}"),
            )
            .label("cannot reshape"),
        );
        return Value::Poison;
    };
    let inferred = items.iter().filter(|&&i| i == -1).count();
    if inferred > 1 || items.iter().any(|&i| i == 0 || i < -1) {
        l.error(
            Diagnostic::error(
                span,
                "sizes must be at least 1, with at most one -1 to infer",
            )
            .label("invalid size"),
        );
        return Value::Poison;
    }
    let Some(known) = items
        .iter()
        .filter(|&&i| i > 0)
        .try_fold(1usize, |acc, &i| acc.checked_mul(i as usize))
    else {
        l.error(
            Diagnostic::error(span, "this shape has far too many elements")
                .label("too large")
                .with(l.span_of(x(a)), l.origin_label(x(a))),
        );
        return Value::Poison;
    };
    let mut dims = vec![s.0[0]];
    for &i in &items {
        if i == -1 {
            if known == 0 || total % known != 0 {
                break;
            }
            dims.push(Dim::fixed(total / known));
        } else {
            dims.push(Dim::fixed(i as usize));
        }
    }
    let shape = Shape(dims);
    if shape.rank() != items.len() + 1 || shape.numel_parts() != s.numel_parts() {
        let shown: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        l.error(
            Diagnostic::error(
                span,
                format!(
                    "cannot reshape {s} into [B, {}]: {total} elements per item do not fit",
                    shown.join(", ")
                ),
            )
            .label("wrong number of elements")
            .with(l.span_of(x(a)), l.origin_label(x(a))),
        );
        return Value::Poison;
    }
    Value::Tensor(l.add(Op::Reshape { shape }, &[x(a)], a.span))
}

fn concat<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(axis) = axis_arg(l, a, x(a), "axis") else {
        return Value::Poison;
    };
    Value::Tensor(l.add(Op::Concat { axis }, &a.inputs, a.span))
}

fn fold<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>, op: Binary) -> Value<'p> {
    let mut acc = a.inputs[0];
    for &t in &a.inputs[1..] {
        acc = l.add(Op::Binary(op), &[acc, t], a.span);
    }
    Value::Tensor(acc)
}

fn split<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(axis) = axis_arg(l, a, x(a), "axis") else {
        return Value::Poison;
    };
    let Some(s) = shape_of(l, x(a)) else {
        return Value::Poison;
    };
    let parts = a.args.usize("parts");
    let n = s.0[axis].known().unwrap_or(0);
    if n == 0 || n % parts != 0 {
        l.error(
            Diagnostic::error(
                a.span,
                format!("cannot split {n} entries (axis {axis} of {s}) into {parts} equal parts"),
            )
            .label("does not divide"),
        );
        return Value::Poison;
    }
    if parts == 1 {
        // One part is the tensor itself, not a 1-tuple that `y = split(x, 1)` would trip on.
        return Value::Tensor(x(a));
    }
    let size = n / parts;
    let pieces = (0..parts)
        .map(|i| {
            Value::Tensor(l.add(
                Op::Slice {
                    axis,
                    start: i * size,
                    end: (i + 1) * size,
                },
                &[x(a)],
                a.span,
            ))
        })
        .collect();
    Value::Tuple(pieces)
}

fn slice<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(axis) = axis_arg(l, a, x(a), "axis") else {
        return Value::Poison;
    };
    let (start, end) = (a.args.usize("start"), a.args.usize("end"));
    Value::Tensor(l.add(Op::Slice { axis, start, end }, &[x(a)], a.span))
}

/// The axes a reduction names: one, a list, or (absent) all.
fn axes_arg(l: &mut Lowerer<'_, '_>, a: &Apply<'_>, rank: usize) -> Option<Vec<usize>> {
    let span = a.args.span("axis").unwrap_or(a.span);
    let raw: Vec<i64> = match a.args.get("axis") {
        None => return Some((0..rank).collect()),
        Some(Value::List(items)) => items.iter().filter_map(Value::as_int).collect(),
        Some(v) => v.as_int().into_iter().collect(),
    };
    let mut axes = Vec::new();
    for ax in raw {
        let norm = if ax < 0 { ax + rank as i64 } else { ax };
        if !(0..rank as i64).contains(&norm) {
            l.error(
                Diagnostic::error(
                    span,
                    format!("axis {ax} does not exist in a tensor of rank {rank}"),
                )
                .label("no such axis"),
            );
            return None;
        }
        if !axes.contains(&(norm as usize)) {
            axes.push(norm as usize);
        }
    }
    if axes.is_empty() {
        l.error(
            Diagnostic::error(span, "`axis` takes a whole number or a list of them")
                .label("not an axis"),
        );
        return None;
    }
    axes.sort_unstable();
    Some(axes)
}

fn reduce<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>, kind: ReduceKind) -> Value<'p> {
    let Some(s) = shape_of(l, x(a)) else {
        return Value::Poison;
    };
    let Some(axes) = axes_arg(l, a, s.rank()) else {
        return Value::Poison;
    };
    let keep = a.args.bool("keep");
    Value::Tensor(l.add(Op::Reduce { kind, axes, keep }, &[x(a)], a.span))
}

fn transpose<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some(s) = shape_of(l, x(a)) else {
        return Value::Poison;
    };
    let perm: Vec<usize> = match a.args.get("perm") {
        None => {
            if s.rank() < 2 {
                l.error(
                    Diagnostic::error(
                        a.span,
                        format!("transpose needs rank 2 or more, but the input is {s}"),
                    )
                    .label("rank below 2"),
                );
                return Value::Poison;
            }
            let mut p: Vec<usize> = (0..s.rank()).collect();
            p.swap(s.rank() - 2, s.rank() - 1);
            p
        }
        Some(Value::List(items)) => items
            .iter()
            .map(|i| i.as_int().unwrap_or(-1).max(0) as usize)
            .collect(),
        Some(_) => {
            let span = a.args.span("perm").unwrap_or(a.span);
            l.error(
                Diagnostic::error(span, "`perm` is a list of axes, e.g. [0, 2, 1]")
                    .label("not a list"),
            );
            return Value::Poison;
        }
    };
    Value::Tensor(l.add(Op::Transpose { perm }, &[x(a)], a.span))
}

fn last<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    l.time_step(
        x(a),
        -1,
        a.span,
        a.span,
        "`last(x)` takes the last time step",
    )
}

fn one_hot<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let classes = if a.args.has("classes") {
        Some(a.args.usize("classes"))
    } else {
        l.classes_of(x(a))
    };
    let Some(classes) = classes else {
        l.error(
            Diagnostic::error(a.span, "one_hot needs the number of classes")
                .label("unknown class count")
                .help("declare it on the input (`input x: [B, T] classes 65`) or write `one_hot(x, classes: 65)`"),
        );
        return Value::Poison;
    };
    Value::Tensor(l.add(Op::OneHot { classes }, &[x(a)], a.span))
}

fn fill<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>, value: f64) -> Value<'p> {
    let v = a.args.get("shape").cloned().unwrap_or(Value::Poison);
    let span = a.args.span("shape").unwrap_or(a.span);
    let Some(shape) = l.shape_value(&v, span, &[], true) else {
        return Value::Poison;
    };
    Value::Tensor(l.add(Op::Fill { value, shape }, &[], a.span))
}
