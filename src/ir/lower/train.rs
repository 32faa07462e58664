//! Checking a `train` block: every setting, its arguments and their types.

use super::args::{self, Default as D, P, Ty, opt, req};
use super::value::{ArgValue, Value};
use crate::diag::{Diagnostic, Span};
use crate::ir::train::*;
use crate::syntax::ast::{self, ExprKind};

const SETTINGS: &[&str] = &[
    "data",
    "validation",
    "optimizer",
    "schedule",
    "clip",
    "batch",
    "epochs",
    "seed",
    "augment",
];

/// A setting's value: literals and calls only (no names, no tensors).
enum Lit {
    Value(Value<'static>),
    Call(ast::Ident, Vec<ArgValue<'static>>),
    List(Vec<(Lit, Span)>),
}

fn lit(e: &ast::Expr, diags: &mut Vec<Diagnostic>) -> Option<Lit> {
    Some(match &e.kind {
        ExprKind::Int(i) => Lit::Value(Value::Int(*i)),
        ExprKind::Float(f) => Lit::Value(Value::Float(*f)),
        ExprKind::Bool(b) => Lit::Value(Value::Bool(*b)),
        ExprKind::Str(s) => Lit::Value(Value::Str(s.clone())),
        ExprKind::Unary(ast::UnOp::Neg, x) => match lit(x, diags)? {
            Lit::Value(Value::Int(i)) => Lit::Value(Value::Int(-i)),
            Lit::Value(Value::Float(f)) => Lit::Value(Value::Float(-f)),
            _ => return bad(e, diags),
        },
        ExprKind::Name(n) => Lit::Call(
            ast::Ident {
                name: n.clone(),
                span: e.span,
            },
            Vec::new(),
        ),
        ExprKind::Call(callee, args) => {
            let ExprKind::Name(n) = &callee.kind else {
                return bad(e, diags);
            };
            let mut out = Vec::new();
            for a in args {
                match lit(&a.value, diags)? {
                    Lit::Value(v) => out.push(ArgValue {
                        name: a.name.clone(),
                        value: v,
                        span: a.value.span,
                    }),
                    _ => return bad(&a.value, diags),
                }
            }
            Lit::Call(
                ast::Ident {
                    name: n.clone(),
                    span: callee.span,
                },
                out,
            )
        }
        ExprKind::List(items) => {
            let mut out = Vec::new();
            for i in items {
                out.push((lit(i, diags)?, i.span));
            }
            Lit::List(out)
        }
        ExprKind::Error => return None,
        _ => return bad(e, diags),
    })
}

fn bad<T>(e: &ast::Expr, diags: &mut Vec<Diagnostic>) -> Option<T> {
    diags.push(
        Diagnostic::error(
            e.span,
            "a training setting is a number, a string or a call like `adam(lr: 1e-3)`",
        )
        .label("not a setting value"),
    );
    None
}

pub fn lower(t: &ast::TrainDef, diags: &mut Vec<Diagnostic>) -> Option<TrainConfig> {
    let mut cfg = TrainConfig::new(t.model.name.clone(), t.span);
    let mut seen: Vec<(&str, Span)> = Vec::new();
    let errors_before = diags.iter().filter(|d| d.is_error()).count();
    for s in &t.settings {
        let key = s.key.name.as_str();
        if !SETTINGS.contains(&key) {
            let mut d = Diagnostic::error(s.key.span, format!("`{key}` is not a training setting"))
                .label("unknown setting");
            d = match args::suggest(key, SETTINGS.iter().copied()) {
                Some(sug) => d.help(format!("did you mean `{sug}`?")),
                None => d.help(format!("settings are: {}", SETTINGS.join(", "))),
            };
            diags.push(d);
            continue;
        }
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            diags.push(
                Diagnostic::error(s.key.span, format!("`{key}` is set twice"))
                    .label("second setting")
                    .with(*first, "first set here"),
            );
            continue;
        }
        seen.push((key, s.key.span));
        let Some(v) = lit(&s.value, diags) else {
            continue;
        };
        let span = s.value.span;
        match key {
            "batch" => cfg.batch = count(&v, span, "batch", diags).unwrap_or(cfg.batch),
            "epochs" => cfg.epochs = count(&v, span, "epochs", diags).unwrap_or(cfg.epochs),
            "seed" => match &v {
                Lit::Value(x) if x.as_int().is_some_and(|i| i >= 0) => {
                    cfg.seed = x.as_int().unwrap_or(0) as u64
                }
                _ => expected(span, "seed", "a whole number of at least 0", &v, diags),
            },
            "data" => cfg.data = data_source(v, span, diags),
            "validation" => {
                cfg.validation = match v {
                    Lit::Value(ref x) => match x.as_f64() {
                        Some(f) if f > 0.0 && f < 1.0 => Some(Validation::Split(f)),
                        _ => {
                            expected(
                                span,
                                "validation",
                                "a fraction between 0 and 1, or a data source",
                                &v,
                                diags,
                            );
                            None
                        }
                    },
                    other => data_source(other, span, diags).map(Validation::Source),
                }
            }
            "optimizer" => {
                if let Some(o) = optimizer(v, span, diags) {
                    cfg.optimizer = o;
                }
            }
            "schedule" => {
                let mut cosine_at: Option<Span> = None;
                cfg.schedule.clear();
                for (l, s) in list(v, span) {
                    if let Some(c) = cosine_at {
                        diags.push(
                            Diagnostic::warning(s, "this schedule has no effect after `cosine`")
                                .label("ignored")
                                .with(c, "the cosine schedule sets the rate from here on")
                                .help("list it before `cosine`, or drop it"),
                        );
                    }
                    let parsed = schedule(l, s, diags);
                    if parsed.iter().any(|p| matches!(p, Schedule::Cosine { .. })) {
                        cosine_at.get_or_insert(s);
                    }
                    cfg.schedule.extend(parsed);
                }
            }
            "clip" => cfg.clip = clip(v, span, diags),
            "augment" => {
                cfg.augment = list(v, span)
                    .into_iter()
                    .filter_map(|(l, s)| augment(l, s, diags))
                    .collect()
            }
            _ => {}
        }
    }
    let errors_after = diags.iter().filter(|d| d.is_error()).count();
    (errors_after == errors_before).then_some(cfg)
}

fn list(v: Lit, span: Span) -> Vec<(Lit, Span)> {
    match v {
        Lit::List(items) => items,
        other => vec![(other, span)],
    }
}

fn expected(span: Span, what: &str, kind: &str, got: &Lit, diags: &mut Vec<Diagnostic>) {
    let got = match got {
        Lit::Value(v) => format!(", not `{v}`"),
        Lit::Call(name, _) => format!(", not `{}`", name.name),
        Lit::List(_) => ", not a list".to_string(),
    };
    diags.push(
        Diagnostic::error(span, format!("`{what}` must be {kind}{got}"))
            .label(format!("expected {kind}")),
    );
}

fn count(v: &Lit, span: Span, what: &str, diags: &mut Vec<Diagnostic>) -> Option<usize> {
    match v {
        Lit::Value(x) if x.as_int().is_some_and(|i| i >= 1) => x.as_int().map(|i| i as usize),
        _ => {
            expected(span, what, "a whole number of at least 1", v, diags);
            None
        }
    }
}

/// Binds a call's arguments against one of several named signatures.
fn call<'a>(
    v: Lit,
    span: Span,
    setting: &str,
    table: &'a [(&'static str, &'static [P])],
    diags: &mut Vec<Diagnostic>,
) -> Option<(&'a str, args::Bound<'static>, Span)> {
    let (name, argv) = match v {
        Lit::Call(n, a) => (n, a),
        _ => {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            diags.push(
                Diagnostic::error(
                    span,
                    format!("`{setting}` takes one of: {}", names.join(", ")),
                )
                .label("not a call"),
            );
            return None;
        }
    };
    let Some((n, sig)) = table.iter().find(|(n, _)| *n == name.name) else {
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        let mut d = Diagnostic::error(
            name.span,
            format!("`{}` is not a known {setting}", name.name),
        )
        .label(format!("unknown {setting}"));
        d = match args::suggest(&name.name, names.iter().copied()) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!("choose one of: {}", names.join(", "))),
        };
        diags.push(d);
        return None;
    };
    let bound = args::bind(n, sig, &argv, span, diags)?;
    Some((n, bound, span))
}

const WD: P = opt("weight_decay", Ty::NonNeg, D::Num(0.0));

fn optimizer(v: Lit, span: Span, diags: &mut Vec<Diagnostic>) -> Option<Optimizer> {
    const TABLE: &[(&str, &[P])] = &[
        (
            "sgd",
            &[
                opt("lr", Ty::Positive, D::Num(1e-3)),
                opt("momentum", Ty::NonNeg, D::Num(0.0)),
                opt("dampening", Ty::NonNeg, D::Num(0.0)),
                opt("nesterov", Ty::Bool, D::Bool(false)),
                WD,
            ],
        ),
        (
            "momentum",
            &[
                opt("lr", Ty::Positive, D::Num(1e-3)),
                opt("momentum", Ty::NonNeg, D::Num(0.9)),
                opt("dampening", Ty::NonNeg, D::Num(0.0)),
                WD,
            ],
        ),
        (
            "nesterov",
            &[
                opt("lr", Ty::Positive, D::Num(1e-3)),
                opt("momentum", Ty::Positive, D::Num(0.9)),
                WD,
            ],
        ),
        (
            "adagrad",
            &[
                opt("lr", Ty::Positive, D::Num(0.01)),
                opt("lr_decay", Ty::NonNeg, D::Num(0.0)),
                opt("initial_accumulator", Ty::NonNeg, D::Num(0.0)),
                opt("eps", Ty::Positive, D::Num(1e-10)),
                WD,
            ],
        ),
        (
            "rmsprop",
            &[
                opt("lr", Ty::Positive, D::Num(0.01)),
                opt("alpha", Ty::Prob, D::Num(0.99)),
                opt("eps", Ty::Positive, D::Num(1e-8)),
                opt("momentum", Ty::NonNeg, D::Num(0.0)),
                opt("centered", Ty::Bool, D::Bool(false)),
                WD,
            ],
        ),
        (
            "adam",
            &[
                opt("lr", Ty::Positive, D::Num(1e-3)),
                opt("beta1", Ty::Prob, D::Num(0.9)),
                opt("beta2", Ty::Prob, D::Num(0.999)),
                opt("eps", Ty::Positive, D::Num(1e-8)),
                opt("amsgrad", Ty::Bool, D::Bool(false)),
                WD,
            ],
        ),
        (
            "adamw",
            &[
                opt("lr", Ty::Positive, D::Num(1e-3)),
                opt("beta1", Ty::Prob, D::Num(0.9)),
                opt("beta2", Ty::Prob, D::Num(0.999)),
                opt("eps", Ty::Positive, D::Num(1e-8)),
                opt("amsgrad", Ty::Bool, D::Bool(false)),
                opt("weight_decay", Ty::NonNeg, D::Num(0.01)),
            ],
        ),
    ];
    let (name, b, _) = call(v, span, "optimizer", TABLE, diags)?;
    let kind = match name {
        "sgd" => OptimizerKind::Sgd {
            momentum: b.num("momentum"),
            dampening: b.num("dampening"),
            nesterov: b.bool("nesterov"),
        },
        "momentum" => OptimizerKind::Sgd {
            momentum: b.num("momentum"),
            dampening: b.num("dampening"),
            nesterov: false,
        },
        "nesterov" => OptimizerKind::Sgd {
            momentum: b.num("momentum"),
            dampening: 0.0,
            nesterov: true,
        },
        "adagrad" => OptimizerKind::Adagrad {
            lr_decay: b.num("lr_decay"),
            initial_accumulator: b.num("initial_accumulator"),
            eps: b.num("eps"),
        },
        "rmsprop" => OptimizerKind::RmsProp {
            alpha: b.num("alpha"),
            eps: b.num("eps"),
            momentum: b.num("momentum"),
            centered: b.bool("centered"),
        },
        "adam" => OptimizerKind::Adam {
            beta1: b.num("beta1"),
            beta2: b.num("beta2"),
            eps: b.num("eps"),
            amsgrad: b.bool("amsgrad"),
        },
        _ => OptimizerKind::AdamW {
            beta1: b.num("beta1"),
            beta2: b.num("beta2"),
            eps: b.num("eps"),
            amsgrad: b.bool("amsgrad"),
        },
    };
    if let OptimizerKind::Sgd {
        nesterov: true,
        momentum,
        dampening,
    } = kind
        && (momentum <= 0.0 || dampening != 0.0)
    {
        diags.push(
            Diagnostic::error(
                span,
                "Nesterov momentum needs a momentum above 0 and no dampening",
            )
            .label("invalid Nesterov settings"),
        );
        return None;
    }
    Some(Optimizer {
        kind,
        lr: b.num("lr"),
        weight_decay: b.num("weight_decay"),
    })
}

fn schedule(v: Lit, span: Span, diags: &mut Vec<Diagnostic>) -> Vec<Schedule> {
    const TABLE: &[(&str, &[P])] = &[
        (
            "step",
            &[
                req("every", Ty::Count, "steps between decays"),
                opt("gamma", Ty::Positive, D::Num(0.1)),
            ],
        ),
        (
            "exponential",
            &[req("gamma", Ty::Positive, "the factor per step")],
        ),
        (
            "cosine",
            &[
                opt("steps", Ty::Size, D::Int(0)),
                opt("min", Ty::NonNeg, D::Num(0.0)),
                opt("warmup", Ty::Size, D::Int(0)),
            ],
        ),
        (
            "warmup",
            &[
                req("steps", Ty::Count, "the length of the warm-up"),
                opt("start", Ty::Positive, D::Num(1.0 / 3.0)),
            ],
        ),
    ];
    let Some((name, b, _)) = call(v, span, "schedule", TABLE, diags) else {
        return Vec::new();
    };
    match name {
        "step" => vec![Schedule::Step {
            every: b.usize("every"),
            gamma: b.num("gamma"),
        }],
        "exponential" => vec![Schedule::Exponential {
            gamma: b.num("gamma"),
        }],
        "cosine" => {
            let mut out = Vec::new();
            let warm = b.usize("warmup");
            if warm > 0 {
                out.push(Schedule::Warmup {
                    steps: warm,
                    start: 1.0 / warm as f64,
                });
            }
            out.push(Schedule::Cosine {
                steps: b.usize("steps"),
                min: b.num("min"),
            });
            out
        }
        _ => vec![Schedule::Warmup {
            steps: b.usize("steps"),
            start: b.num("start"),
        }],
    }
}

fn clip(v: Lit, span: Span, diags: &mut Vec<Diagnostic>) -> Option<Clip> {
    const TABLE: &[(&str, &[P])] = &[
        (
            "norm",
            &[req("max", Ty::Positive, "the largest global gradient norm")],
        ),
        (
            "value",
            &[req("max", Ty::Positive, "the largest gradient element")],
        ),
    ];
    let (name, b, _) = call(v, span, "clip", TABLE, diags)?;
    Some(if name == "norm" {
        Clip::Norm(b.num("max"))
    } else {
        Clip::Value(b.num("max"))
    })
}

fn augment(v: Lit, span: Span, diags: &mut Vec<Diagnostic>) -> Option<Augment> {
    const TABLE: &[(&str, &[P])] = &[
        ("shift", &[req("pixels", Ty::Count, "the largest shift")]),
        (
            "crop",
            &[req("pad", Ty::Count, "the padding before a random crop")],
        ),
        ("flip", &[opt("p", Ty::Prob, D::Num(0.5))]),
        (
            "noise",
            &[req("std", Ty::Positive, "the standard deviation")],
        ),
    ];
    let (name, b, _) = call(v, span, "augmentation", TABLE, diags)?;
    Some(match name {
        "shift" => Augment::Shift(b.usize("pixels")),
        "crop" => Augment::Crop(b.usize("pad")),
        "flip" => Augment::Flip(b.num("p")),
        _ => Augment::Noise(b.num("std")),
    })
}

fn data_source(v: Lit, span: Span, diags: &mut Vec<Diagnostic>) -> Option<DataSource> {
    const TABLE: &[(&str, &[P])] = &[
        (
            "mnist",
            &[req("dir", Ty::Str, "the directory with the IDX files")],
        ),
        (
            "idx",
            &[
                req("images", Ty::Str, "the image file"),
                req("labels", Ty::Str, "the label file"),
            ],
        ),
        (
            "csv",
            &[
                req("path", Ty::Str, "the CSV file"),
                opt("label", Ty::Int, D::Int(0)),
                opt("header", Ty::Bool, D::Bool(false)),
            ],
        ),
        (
            "npy",
            &[
                req("x", Ty::Str, "the inputs"),
                req("y", Ty::Str, "the labels"),
            ],
        ),
        (
            "safetensors",
            &[
                req("path", Ty::Str, "the file"),
                opt("x", Ty::Str, D::Str("x")),
                opt("y", Ty::Str, D::Str("y")),
            ],
        ),
        (
            "text",
            &[
                req("path", Ty::Str, "the text file"),
                opt("seq", Ty::Count, D::Int(32)),
            ],
        ),
    ];
    let (name, b, _) = call(v, span, "data source", TABLE, diags)?;
    let s = |k: &str| b.str(k).unwrap_or_default().to_string();
    Some(match name {
        "mnist" => DataSource::Mnist { dir: s("dir") },
        "idx" => DataSource::Idx {
            images: s("images"),
            labels: s("labels"),
        },
        "csv" => DataSource::Csv {
            path: s("path"),
            label: b.int("label") as isize,
            header: b.bool("header"),
        },
        "npy" => DataSource::Npy {
            x: s("x"),
            y: s("y"),
        },
        "safetensors" => DataSource::Safetensors {
            path: s("path"),
            x: s("x"),
            y: s("y"),
        },
        _ => DataSource::Text {
            path: s("path"),
            seq: b.usize("seq"),
        },
    })
}
