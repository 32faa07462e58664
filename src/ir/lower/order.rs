//! Definition order: a name is usable from the statement after the one that
//! defines it. When a name is not found, the statements still to come say
//! why: it is defined later (use before definition), it is the name being
//! defined (a value defined from itself), or its later definition leads back
//! to this statement (a cycle). A model is a graph without cycles; feedback
//! over time is written with `recur`.

use std::collections::HashSet;

use super::Lowerer;
use crate::diag::{Diagnostic, Span};
use crate::syntax::ast::{self, ExprKind};

/// A statement of a body: the names it defines and the value it reads.
#[derive(Debug, Clone)]
pub(super) struct Def<'p> {
    pub targets: Vec<&'p ast::Ident>,
    pub value: Option<&'p ast::Expr>,
}

impl<'p> Def<'p> {
    pub fn assign(a: &'p ast::Assign) -> Def<'p> {
        Def {
            targets: a.targets.iter().collect(),
            value: Some(&a.value),
        }
    }

    /// `input x: ...`, `param W: ...`: a name without a value to read.
    pub fn decl(name: &'p ast::Ident) -> Def<'p> {
        Def {
            targets: vec![name],
            value: None,
        }
    }
}

/// The statements of one body being lowered.
#[derive(Debug)]
pub(super) struct Pending<'p> {
    stmts: Vec<Def<'p>>,
    /// How many have started: the current one is `stmts[started - 1]`.
    started: usize,
    /// A block body sees none of its caller's names.
    barrier: bool,
}

impl<'p> Lowerer<'p, '_> {
    /// Registers `stmts` as the body being lowered, before running them.
    pub(super) fn open_body(&mut self, stmts: Vec<Def<'p>>, barrier: bool) {
        self.pending.push(Pending {
            stmts,
            started: 0,
            barrier,
        });
    }

    pub(super) fn close_body(&mut self) {
        self.pending.pop();
    }

    /// Marks the next statement of the innermost body as started.
    pub(super) fn start_stmt(&mut self) {
        if let Some(p) = self.pending.last_mut() {
            p.started += 1;
        }
    }

    /// Statements of the innermost body, run in order.
    pub(super) fn run_stmts(&mut self, stmts: &'p [ast::Assign], barrier: bool) {
        self.open_body(stmts.iter().map(Def::assign).collect(), barrier);
        for s in stmts {
            self.start_stmt();
            self.assign(s);
        }
        self.close_body();
    }

    /// Explains a name that is not (yet) defined by the statements around
    /// it; `false` when they do not define it at all.
    pub(super) fn explain_undefined(&mut self, name: &str, span: Span) -> bool {
        let mut found = None;
        for frame in self.pending.iter().rev() {
            let current = frame
                .started
                .checked_sub(1)
                .and_then(|i| frame.stmts.get(i));
            if let Some(cur) = current
                && let Some(t) = cur.targets.iter().find(|t| t.name == name)
            {
                found = Some(Undefined::Itself(t.span));
                break;
            }
            let later = &frame.stmts[frame.started.min(frame.stmts.len())..];
            if let Some((def, t)) = later
                .iter()
                .find_map(|a| a.targets.iter().find(|t| t.name == name).map(|t| (a, t)))
            {
                let cycle = current.and_then(|cur| {
                    let targets: Vec<&str> = cur.targets.iter().map(|t| t.name.as_str()).collect();
                    cycle_back(def, later, &targets)
                });
                found = Some(match cycle {
                    Some(path) => Undefined::Cycle(t.span, path),
                    None => Undefined::Later(t.span),
                });
                break;
            }
            if frame.barrier {
                break;
            }
        }
        let Some(found) = found else {
            return false;
        };
        let d = match found {
            Undefined::Itself(def) => {
                Diagnostic::error(span, format!("`{name}` is used in its own definition"))
                    .label(format!("`{name}` has no value yet"))
                    .with(def, format!("`{name}` is being defined here"))
                    .help("a model is a graph without loops; to feed a value back step by step, write a recurrence: `s = recur t in 0..T from s0 { ... s[t-1] ... }`")
            }
            Undefined::Later(def) => {
                Diagnostic::error(span, format!("`{name}` is used before it is defined"))
                    .label("used here")
                    .with(def, "defined later, here")
                    .help(format!("move the definition of `{name}` above this line"))
            }
            Undefined::Cycle(def, path) => {
                let mut names = vec![name.to_string()];
                names.extend(path.iter().filter(|n| n.as_str() != name).cloned());
                let message = match names.as_slice() {
                    [a, b] => format!("`{b}` and `{a}` are defined in terms of each other"),
                    many => {
                        let (last, rest) = many.split_last().unwrap_or((&names[0], &[]));
                        let rest: Vec<String> = rest.iter().map(|n| format!("`{n}`")).collect();
                        format!("{} and `{last}` form a cycle", rest.join(", "))
                    }
                };
                let back = path.get(1).cloned().unwrap_or_default();
                Diagnostic::error(span, message)
                    .label(format!("`{name}` is defined later, from `{back}`"))
                    .with(def, format!("`{name}` is defined here"))
                    .help("a model is a graph without cycles; to feed a value back over time, write a recurrence with `recur`")
            }
        };
        self.error(d);
        true
    }
}

enum Undefined {
    /// The name of the statement being lowered.
    Itself(Span),
    /// Defined by a later statement.
    Later(Span),
    /// Defined later from names that lead back to the current statement:
    /// the names along the way, ending with the current statement's target.
    Cycle(Span, Vec<String>),
}

/// Whether `def` (a later statement) depends, through later statements, on
/// one of `targets`; the chain of names from `def`'s target to it.
fn cycle_back(def: &Def<'_>, later: &[Def<'_>], targets: &[&str]) -> Option<Vec<String>> {
    let mut seen = HashSet::new();
    let mut stack: Vec<(&Def<'_>, Vec<String>)> = vec![(def, Vec::new())];
    while let Some((a, path)) = stack.pop() {
        let mut names = Vec::new();
        if let Some(v) = a.value {
            mentions(v, &mut names);
        }
        for n in names {
            let mut p = path.clone();
            if let Some(t) = a.targets.first() {
                p.push(t.name.clone());
            }
            if targets.contains(&n) {
                p.push(n.to_string());
                return Some(p);
            }
            if seen.insert(n)
                && let Some(next) = later.iter().find(|l| l.targets.iter().any(|t| t.name == n))
            {
                stack.push((next, p));
            }
        }
    }
    None
}

/// Every name an expression reads (a conservative, syntactic view).
fn mentions<'e>(e: &'e ast::Expr, out: &mut Vec<&'e str>) {
    match &e.kind {
        ExprKind::Name(n) => out.push(n),
        ExprKind::Error
        | ExprKind::Int(_)
        | ExprKind::Float(_)
        | ExprKind::Bool(_)
        | ExprKind::Str(_) => {}
        ExprKind::List(items) | ExprKind::Tuple(items) => {
            for i in items {
                mentions(i, out);
            }
        }
        ExprKind::Unary(_, x) | ExprKind::Named(x, _) | ExprKind::Field(x, _) => mentions(x, out),
        ExprKind::Binary(_, a, b) | ExprKind::Index(a, b) => {
            mentions(a, out);
            mentions(b, out);
        }
        ExprKind::Call(f, args) => {
            mentions(f, out);
            for a in args {
                mentions(&a.value, out);
            }
        }
        ExprKind::If(c, then, otherwise) => {
            mentions(c, out);
            body_mentions(then, out);
            if let Some(b) = otherwise {
                body_mentions(b, out);
            }
        }
        ExprKind::Recur(r) => {
            mentions(&r.start, out);
            mentions(&r.end, out);
            for i in &r.init {
                mentions(i, out);
            }
            body_mentions(&r.body, out);
        }
        ExprKind::Repeat(r) => {
            if let Some(s) = &r.start {
                mentions(s, out);
            }
            mentions(&r.end, out);
            body_mentions(&r.body, out);
        }
    }
}

fn body_mentions<'e>(b: &'e ast::Body, out: &mut Vec<&'e str>) {
    for s in &b.stmts {
        mentions(&s.value, out);
    }
    for r in &b.result {
        mentions(r, out);
    }
}
