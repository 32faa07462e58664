//! The built-in layers and functions: one row each, with its signature and its
//! lowering to primitives. docs/language.md documents every row.

mod act;
mod loss;
mod nn;
mod tensor;

use super::Lowerer;
use super::args::{Bound, P};
use super::value::{TRef, Value};
use crate::diag::Span;

/// A call being lowered: its tensor inputs and bound arguments.
pub struct Apply<'p> {
    pub inputs: Vec<TRef>,
    pub args: Bound<'p>,
    /// Where the layer was written.
    pub span: Span,
}

pub type LowerFn = for<'p, 'b, 'c> fn(&'c mut Lowerer<'p, 'b>, &'c Apply<'p>) -> Value<'p>;

pub struct Builtin {
    pub name: &'static str,
    /// How many tensor inputs: at least `.0`, at most `.1` (`None`: any number).
    pub inputs: (usize, Option<usize>),
    pub sig: &'static [P],
    /// Prefix of automatic layer names (`fc` → `fc1`, `fc2`); `None` for plain
    /// functions, which are not rows of the summary.
    pub prefix: Option<&'static str>,
    pub lower: LowerFn,
    /// One line for `--help` and the docs.
    pub doc: &'static str,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Builtin({})", self.name)
    }
}

/// Every built-in, in documentation order.
pub fn all() -> impl Iterator<Item = &'static Builtin> {
    nn::TABLE
        .iter()
        .chain(act::TABLE)
        .chain(tensor::TABLE)
        .chain(loss::TABLE)
}

pub fn find(name: &str) -> Option<&'static Builtin> {
    all().find(|b| b.name == name)
}

/// Functions whose number arguments stand for scalar tensors (`maximum(x, 0)`).
pub fn numbers_are_tensors(b: &Builtin) -> bool {
    matches!(b.name, "maximum" | "minimum" | "where")
}

pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    all().map(|b| b.name)
}

/// One line per built-in: its signature and what it does (`nnc layers`).
pub fn reference() -> String {
    let mut out = String::new();
    for b in all() {
        let inputs = match b.inputs {
            (0, _) => String::new(),
            (1, Some(1)) => "x".to_string(),
            (n, Some(m)) if n == m => (1..=n)
                .map(|i| format!("x{i}"))
                .collect::<Vec<_>>()
                .join(", "),
            (n, _) => format!("x1, ..., x{n}+"),
        };
        let sig = super::args::signature_help(b.name, b.sig);
        let params = sig
            .trim_start_matches(&format!("`{}` takes (", b.name))
            .trim_end_matches(')')
            .to_string();
        let all: Vec<&str> = [inputs.as_str(), params.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect();
        out.push_str(&format!("{}({})\n    {}\n", b.name, all.join(", "), b.doc));
    }
    out
}

/// How a built-in is written, for help texts: `x |> dense(units, bias: true)`
/// or `add(x1, x2, ...)`, then what it does.
pub fn usage(b: &Builtin) -> String {
    let sig = super::args::signature_help(b.name, b.sig);
    let params = sig
        .trim_start_matches(&format!("`{}` takes (", b.name))
        .trim_end_matches(')')
        .to_string();
    let call = match b.inputs {
        (1, Some(1)) if params.is_empty() => format!("x |> {}", b.name),
        (1, Some(1)) => format!("x |> {}({params})", b.name),
        (n, max) => {
            let mut parts: Vec<String> = match n {
                0 => Vec::new(),
                1 => vec!["x".into()],
                _ => (1..=n).map(|i| format!("x{i}")).collect(),
            };
            if max.is_none() {
                parts.push("...".into());
            }
            if !params.is_empty() {
                parts.push(params);
            }
            format!("{}({})", b.name, parts.join(", "))
        }
    };
    format!("write `{call}`: {}", b.doc)
}

/// The one input of a single-input layer.
fn x(a: &Apply<'_>) -> TRef {
    a.inputs[0]
}
