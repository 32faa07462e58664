//! Losses, chosen by the kind of output: softmax cross-entropy for classes,
//! binary cross-entropy for a sigmoid output, squared error for regression.
//! Each checks that its target fits its prediction, and reduces to the mean.

use super::super::Lowerer;
use super::super::value::{TRef, Value};
use super::{Apply, Builtin};
use crate::diag::{Diagnostic, Span};
use crate::ir::ops::{Binary, Op, ReduceKind, Unary};
use crate::ir::types::{DType, TensorType};

pub static TABLE: &[Builtin] = &[
    Builtin {
        name: "cross_entropy",
        inputs: (2, Some(2)),
        sig: &[],
        prefix: None,
        lower: cross_entropy,
        doc: "softmax cross-entropy of logits [B, ..., C] against class labels [B, ...] (or probabilities [B, ..., C]), averaged",
    },
    Builtin {
        name: "binary_cross_entropy",
        inputs: (2, Some(2)),
        sig: &[],
        prefix: None,
        lower: binary_cross_entropy,
        doc: "−(y·log p + (1−y)·log(1−p)) for probabilities p from a sigmoid, averaged",
    },
    Builtin {
        name: "bce_with_logits",
        inputs: (2, Some(2)),
        sig: &[],
        prefix: None,
        lower: bce_with_logits,
        doc: "binary cross-entropy of raw scores (sigmoid included, numerically stable), averaged",
    },
    Builtin {
        name: "mse",
        inputs: (2, Some(2)),
        sig: &[],
        prefix: None,
        lower: mse,
        doc: "mean squared error between a prediction and a target of the same shape",
    },
    Builtin {
        name: "l1",
        inputs: (2, Some(2)),
        sig: &[],
        prefix: None,
        lower: l1,
        doc: "mean absolute error between a prediction and a target of the same shape",
    },
];

fn bin(l: &mut Lowerer<'_, '_>, op: Binary, a: TRef, b: TRef, span: Span) -> TRef {
    l.add(Op::Binary(op), &[a, b], span)
}

/// The mean of every element of `t` (a scalar).
fn mean_all(l: &mut Lowerer<'_, '_>, t: TRef, span: Span) -> TRef {
    let rank = l.ty(t).map_or(0, |t| t.shape.rank());
    l.add(
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes: (0..rank).collect(),
            keep: false,
        },
        &[t],
        span,
    )
}

fn types(l: &Lowerer<'_, '_>, a: &Apply<'_>) -> Option<(TensorType, TensorType)> {
    Some((l.ty(a.inputs[0])?.clone(), l.ty(a.inputs[1])?.clone()))
}

/// Remembers what the loss was computed from: the model's default output.
fn note_prediction(l: &mut Lowerer<'_, '_>, t: TRef) {
    if t.depth == 0 && l.scope.loss_prediction.is_none() {
        let name = l.model.name_of(t.node).unwrap_or("output").to_string();
        l.scope.loss_prediction = Some((name, t.node));
    }
}

/// An error about a prediction/target pair, with both origins labelled.
fn mismatch(
    l: &mut Lowerer<'_, '_>,
    a: &Apply<'_>,
    message: String,
    label: &str,
    help: Option<String>,
) -> Value<'static> {
    let (p, y) = (a.inputs[0], a.inputs[1]);
    let mut d = Diagnostic::error(a.span, message)
        .label(label.to_string())
        .with(l.span_of(p), l.origin_label(p))
        .with(l.span_of(y), l.origin_label(y));
    if let Some(h) = help {
        d = d.help(h);
    }
    l.error(d);
    Value::Poison
}

fn cross_entropy<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    let Some((zt, yt)) = types(l, a) else {
        return Value::Poison;
    };
    let (z, y) = (a.inputs[0], a.inputs[1]);
    let span = a.span;
    if zt.dtype != DType::F32 || zt.shape.rank() < 2 {
        return mismatch(
            l,
            a,
            format!("cross_entropy takes scores [B, ..., classes] first, but gets {zt}"),
            "scores must have a class axis",
            Some("the first argument is the prediction (logits), the second the labels".into()),
        );
    }
    let classes = zt.shape.0.last().and_then(|d| d.known()).unwrap_or(0);
    if matches!(l.node(z).op, Op::Softmax { .. }) {
        let s = l.span_of(z);
        l.warn_once(
            Diagnostic::warning(
                s,
                "cross_entropy applies softmax itself, so its input should be raw scores",
            )
            .label("softmax applied twice")
            .with(span, "the loss")
            .help("remove this softmax (keep it only for predictions)"),
        );
    }
    note_prediction(l, z);
    let ls = l.add(
        Op::LogSoftmax {
            axis: zt.shape.rank() - 1,
        },
        &[z],
        span,
    );
    let picked = match yt.dtype {
        DType::I32 => {
            let expected = zt.shape.0[..zt.shape.rank() - 1].to_vec();
            if yt.shape.0 != expected {
                let expected = crate::ir::types::Shape(expected);
                return mismatch(
                    l,
                    a,
                    format!(
                        "scores of shape {} need labels of shape {expected}, but the labels are {}",
                        zt.shape, yt.shape
                    ),
                    "labels do not fit the scores",
                    Some("one class index per prediction: the labels drop the class axis of the scores".into()),
                );
            }
            if let Some(n) = l.classes_of(y)
                && n != classes
            {
                return mismatch(
                    l,
                    a,
                    format!("the scores have {classes} classes but the labels declare {n}"),
                    "class counts differ",
                    Some(format!("make the last layer produce {n} scores")),
                );
            }
            let oh = l.add(Op::OneHot { classes }, &[y], span);
            bin(l, Binary::Mul, ls, oh, span)
        }
        DType::F32 => {
            if yt.shape != zt.shape {
                return mismatch(
                    l,
                    a,
                    format!(
                        "cross_entropy with probability targets needs them shaped like the scores {}, but they are {}",
                        zt.shape, yt.shape
                    ),
                    "targets do not fit the scores",
                    Some("for class labels, declare them as `labels y: [B] classes N`".into()),
                );
            }
            bin(l, Binary::Mul, ls, y, span)
        }
    };
    // Sum over classes, mean over everything else, negated.
    let rank = zt.shape.rank();
    let per_item = l.add(
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![rank - 1],
            keep: false,
        },
        &[picked],
        span,
    );
    let m = mean_all(l, per_item, span);
    Value::Tensor(l.add(Op::Unary(Unary::Neg), &[m], span))
}

/// Checks a float target of the prediction's exact shape.
fn same_shape_target(l: &mut Lowerer<'_, '_>, a: &Apply<'_>, what: &str) -> bool {
    let Some((pt, yt)) = types(l, a) else {
        return false;
    };
    if yt.dtype == DType::I32 {
        let help = if what == "mse" || what == "l1" {
            "for class labels use `cross_entropy`; for regression declare the targets without `classes`"
        } else {
            "declare the targets without `classes`, as numbers 0 or 1: `labels y: [B, 1]`"
        };
        mismatch(
            l,
            a,
            format!("{what} needs numeric targets, but the labels are class indices"),
            "class indices",
            Some(help.into()),
        );
        return false;
    }
    if pt.shape != yt.shape {
        mismatch(
            l,
            a,
            format!(
                "{what} compares tensors of the same shape, but the prediction is {} and the target {}",
                pt.shape, yt.shape
            ),
            "shapes differ",
            Some("reshape one of them so they match; nnc does not broadcast losses".into()),
        );
        return false;
    }
    true
}

fn binary_cross_entropy<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    if !same_shape_target(l, a, "binary_cross_entropy") {
        return Value::Poison;
    }
    let (p, y) = (a.inputs[0], a.inputs[1]);
    let span = a.span;
    if !matches!(l.node(p).op, Op::Unary(Unary::Sigmoid)) {
        let s = l.span_of(p);
        l.warn_once(
            Diagnostic::warning(
                span,
                "binary_cross_entropy expects probabilities, but its input is not a sigmoid",
            )
            .label("input may leave [0, 1]")
            .with(s, "computed here")
            .help("end the model with `|> sigmoid`, or use `bce_with_logits` on the raw scores"),
        );
    }
    note_prediction(l, p);
    // PyTorch clamps each log at -100 so that p = 0 or 1 gives a finite loss.
    let floor = l.scalar(-100.0, span);
    let one = l.scalar(1.0, span);
    let lp = l.add(Op::Unary(Unary::Log), &[p], span);
    let lp = bin(l, Binary::Max, lp, floor, span);
    let q = bin(l, Binary::Sub, one, p, span);
    let lq = l.add(Op::Unary(Unary::Log), &[q], span);
    let lq = bin(l, Binary::Max, lq, floor, span);
    let ny = bin(l, Binary::Sub, one, y, span);
    let a1 = bin(l, Binary::Mul, y, lp, span);
    let a2 = bin(l, Binary::Mul, ny, lq, span);
    let s = bin(l, Binary::Add, a1, a2, span);
    let m = mean_all(l, s, span);
    Value::Tensor(l.add(Op::Unary(Unary::Neg), &[m], span))
}

fn bce_with_logits<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    if !same_shape_target(l, a, "bce_with_logits") {
        return Value::Poison;
    }
    let (z, y) = (a.inputs[0], a.inputs[1]);
    let span = a.span;
    if matches!(l.node(z).op, Op::Unary(Unary::Sigmoid)) {
        let s = l.span_of(z);
        l.warn_once(
            Diagnostic::warning(
                s,
                "bce_with_logits applies the sigmoid itself, so its input should be raw scores",
            )
            .label("sigmoid applied twice")
            .help("remove this sigmoid, or use `binary_cross_entropy`"),
        );
    }
    note_prediction(l, z);
    // max(z, 0) − z·y + log(1 + exp(−|z|))
    let zero = l.scalar(0.0, span);
    let one = l.scalar(1.0, span);
    let relu = bin(l, Binary::Max, z, zero, span);
    let zy = bin(l, Binary::Mul, z, y, span);
    let absz = l.add(Op::Unary(Unary::Abs), &[z], span);
    let neg = l.add(Op::Unary(Unary::Neg), &[absz], span);
    let e = l.add(Op::Unary(Unary::Exp), &[neg], span);
    let e1 = bin(l, Binary::Add, e, one, span);
    let lg = l.add(Op::Unary(Unary::Log), &[e1], span);
    let d = bin(l, Binary::Sub, relu, zy, span);
    let s = bin(l, Binary::Add, d, lg, span);
    Value::Tensor(mean_all(l, s, span))
}

fn mse<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    if !same_shape_target(l, a, "mse") {
        return Value::Poison;
    }
    note_prediction(l, a.inputs[0]);
    let d = bin(l, Binary::Sub, a.inputs[0], a.inputs[1], a.span);
    let sq = bin(l, Binary::Mul, d, d, a.span);
    Value::Tensor(mean_all(l, sq, a.span))
}

fn l1<'p>(l: &mut Lowerer<'p, '_>, a: &Apply<'p>) -> Value<'p> {
    if !same_shape_target(l, a, "l1") {
        return Value::Poison;
    }
    note_prediction(l, a.inputs[0]);
    let d = bin(l, Binary::Sub, a.inputs[0], a.inputs[1], a.span);
    let ad = l.add(Op::Unary(Unary::Abs), &[d], a.span);
    Value::Tensor(mean_all(l, ad, a.span))
}
