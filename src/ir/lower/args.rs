//! Binding call arguments to a signature: positional and `name: value`
//! arguments, defaults, and a type check of each, with messages that name the
//! argument and suggest the closest real name for a misspelt one.

use std::collections::HashMap;

use super::value::{ArgValue, Value};
use crate::diag::{Diagnostic, Span};

/// What an argument must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    /// A whole number ≥ 1.
    Count,
    /// A whole number ≥ 0.
    Size,
    /// Any whole number (axes may be negative).
    Int,
    /// Any number.
    Num,
    /// A number ≥ 0.
    NonNeg,
    /// A number > 0.
    Positive,
    /// A probability in [0, 1).
    Prob,
    Bool,
    Str,
    /// A size per spatial axis: one whole number ≥ 1 for all, or a list.
    Sizes,
    /// Like `Sizes`, but ≥ 0 (padding); the string "same" is allowed too.
    Padding,
    /// A list of whole numbers, possibly with `B` first (a shape).
    Shape,
    /// Anything (checked by the caller).
    Any,
}

impl Ty {
    fn describe(self) -> &'static str {
        match self {
            Ty::Count => "a whole number of at least 1",
            Ty::Size => "a whole number of at least 0",
            Ty::Int => "a whole number",
            Ty::Num => "a number",
            Ty::NonNeg => "a number of at least 0",
            Ty::Positive => "a number greater than 0",
            Ty::Prob => "a probability in [0, 1)",
            Ty::Bool => "true or false",
            Ty::Str => "a string",
            Ty::Sizes => "a whole number of at least 1, or a list of them",
            Ty::Padding => "a whole number of at least 0, a list of them, or \"same\"",
            Ty::Shape => "a shape like [B, 128]",
            Ty::Any => "a value",
        }
    }

    fn accepts(self, v: &Value<'_>) -> bool {
        let int = v.as_int();
        let num = v.as_f64();
        match self {
            Ty::Count => int.is_some_and(|i| i >= 1),
            Ty::Size => int.is_some_and(|i| i >= 0),
            Ty::Int => int.is_some(),
            Ty::Num => num.is_some(),
            Ty::NonNeg => num.is_some_and(|x| x >= 0.0),
            Ty::Positive => num.is_some_and(|x| x > 0.0),
            Ty::Prob => num.is_some_and(|x| (0.0..1.0).contains(&x)),
            Ty::Bool => matches!(v, Value::Bool(_)),
            Ty::Str => matches!(v, Value::Str(_)),
            Ty::Sizes => match v {
                Value::List(items) => {
                    !items.is_empty() && items.iter().all(|i| i.as_int().is_some_and(|i| i >= 1))
                }
                _ => int.is_some_and(|i| i >= 1),
            },
            Ty::Padding => match v {
                Value::List(items) => {
                    !items.is_empty() && items.iter().all(|i| i.as_int().is_some_and(|i| i >= 0))
                }
                Value::Str(s) => s == "same" || s == "valid",
                _ => int.is_some_and(|i| i >= 0),
            },
            Ty::Shape => match v {
                Value::List(items) => items
                    .iter()
                    .all(|i| matches!(i, Value::Batch) || i.as_int().is_some()),
                _ => false,
            },
            Ty::Any => true,
        }
    }
}

/// A default, or `Required`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Default {
    Required,
    /// Absent unless given.
    Optional,
    Int(i64),
    Num(f64),
    Bool(bool),
    Str(&'static str),
}

/// One parameter of a signature.
#[derive(Debug, Clone, Copy)]
pub struct P {
    pub name: &'static str,
    pub ty: Ty,
    pub default: Default,
    /// Shown when a required argument is missing.
    pub about: &'static str,
}

pub const fn req(name: &'static str, ty: Ty, about: &'static str) -> P {
    P {
        name,
        ty,
        default: Default::Required,
        about,
    }
}

pub const fn opt(name: &'static str, ty: Ty, default: Default) -> P {
    P {
        name,
        ty,
        default,
        about: "",
    }
}

/// Arguments after binding: every parameter of the signature with a value,
/// except optional ones that were not given.
#[derive(Debug, Clone, Default)]
pub struct Bound<'p> {
    values: HashMap<&'static str, (Value<'p>, Span)>,
}

impl<'p> Bound<'p> {
    pub fn get(&self, name: &str) -> Option<&Value<'p>> {
        self.values.get(name).map(|(v, _)| v)
    }

    pub fn span(&self, name: &str) -> Option<Span> {
        self.values.get(name).map(|(_, s)| *s)
    }

    pub fn has(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn int(&self, name: &str) -> i64 {
        self.get(name).and_then(Value::as_int).unwrap_or(0)
    }

    pub fn usize(&self, name: &str) -> usize {
        self.int(name).max(0) as usize
    }

    pub fn num(&self, name: &str) -> f64 {
        self.get(name).and_then(Value::as_f64).unwrap_or(0.0)
    }

    pub fn bool(&self, name: &str) -> bool {
        matches!(self.get(name), Some(Value::Bool(true)))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A per-axis size list of length `n` (a single number is repeated).
    pub fn sizes(&self, name: &str, n: usize) -> Option<Vec<usize>> {
        match self.get(name)? {
            Value::List(items) => {
                let v: Vec<usize> = items
                    .iter()
                    .map(|i| i.as_int().unwrap_or(0).max(0) as usize)
                    .collect();
                (v.len() == n).then_some(v)
            }
            v => Some(vec![v.as_int().unwrap_or(0).max(0) as usize; n]),
        }
    }
}

/// Binds `args` (no tensors among them) to `sig` for the function `what`.
/// Problems are pushed to `diags`; the result holds what could be bound.
pub fn bind<'p>(
    what: &str,
    sig: &[P],
    args: &[ArgValue<'p>],
    call_span: Span,
    diags: &mut Vec<Diagnostic>,
) -> Option<Bound<'p>> {
    let mut bound = Bound::default();
    let mut ok = true;
    let mut positional = 0;
    for a in args {
        let p = match &a.name {
            None => {
                let p = sig.get(positional);
                positional += 1;
                match p {
                    Some(p) => p,
                    None => {
                        diags.push(
                            Diagnostic::error(a.span, format!("too many arguments for `{what}`"))
                                .label("unexpected argument")
                                .help(signature_help(what, sig)),
                        );
                        ok = false;
                        continue;
                    }
                }
            }
            Some(n) => match sig.iter().find(|p| p.name == n.name) {
                Some(p) => p,
                None => {
                    let mut d = Diagnostic::error(
                        n.span,
                        format!("`{what}` has no argument named `{}`", n.name),
                    )
                    .label("unknown argument");
                    d = match suggest(&n.name, sig.iter().map(|p| p.name)) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help(signature_help(what, sig)),
                    };
                    diags.push(d);
                    ok = false;
                    continue;
                }
            },
        };
        if bound.values.contains_key(p.name) {
            diags.push(
                Diagnostic::error(a.span, format!("`{}` is given twice", p.name))
                    .label("second value"),
            );
            ok = false;
            continue;
        }
        if matches!(a.value, Value::Poison) {
            ok = false;
            continue;
        }
        if !p.ty.accepts(&a.value) {
            diags.push(
                Diagnostic::error(
                    a.span,
                    format!(
                        "`{}` of `{what}` must be {}, not {}",
                        p.name,
                        p.ty.describe(),
                        shown(&a.value)
                    ),
                )
                .label(format!("expected {}", p.ty.describe())),
            );
            ok = false;
            continue;
        }
        bound.values.insert(p.name, (a.value.clone(), a.span));
    }
    for p in sig {
        if bound.values.contains_key(p.name) {
            continue;
        }
        let v = match p.default {
            Default::Required => {
                if ok {
                    let about = if p.about.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", p.about)
                    };
                    diags.push(
                        Diagnostic::error(
                            call_span,
                            format!("`{what}` needs the argument `{}`{about}", p.name),
                        )
                        .label(format!("`{}` missing", p.name))
                        .help(signature_help(what, sig)),
                    );
                }
                ok = false;
                continue;
            }
            Default::Optional => continue,
            Default::Int(i) => Value::Int(i),
            Default::Num(x) => Value::Float(x),
            Default::Bool(b) => Value::Bool(b),
            Default::Str(s) => Value::Str(s.to_string()),
        };
        bound.values.insert(p.name, (v, call_span));
    }
    ok.then_some(bound)
}

fn shown(v: &Value<'_>) -> String {
    match v {
        Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Str(_) | Value::List(_) => {
            format!("`{v}`")
        }
        other => other.kind().to_string(),
    }
}

/// `dense(units, bias = true)`: a reminder of the signature.
pub fn signature_help(what: &str, sig: &[P]) -> String {
    let params: Vec<String> = sig
        .iter()
        .map(|p| match p.default {
            Default::Required => p.name.to_string(),
            Default::Optional => format!("{}: ...", p.name),
            Default::Int(i) => format!("{}: {i}", p.name),
            Default::Num(x) if x != 0.0 && x.abs() < 1e-3 => format!("{}: {x:e}", p.name),
            Default::Num(x) => format!("{}: {x}", p.name),
            Default::Bool(b) => format!("{}: {b}", p.name),
            Default::Str(s) => format!("{}: {s:?}", p.name),
        })
        .collect();
    format!("`{what}` takes ({})", params.join(", "))
}

/// The closest known name to a misspelt one, if it is close enough to be a typo.
pub fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(&str, usize)> = None;
    for k in known {
        let d = strsim::damerau_levenshtein(name, k);
        let limit = (name.chars().count().max(k.chars().count()) / 3).max(1);
        let close = d <= limit || (name.len() >= 3 && k.starts_with(name));
        if close && best.is_none_or(|(_, bd)| d < bd) {
            best = Some((k, d));
        }
    }
    best.map(|(k, _)| k)
}
