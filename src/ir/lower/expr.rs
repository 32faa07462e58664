//! Evaluating expressions: numbers are computed, tensors become graph nodes,
//! layers are applied by `|>` or by a call.

use std::rc::Rc;

use super::Lowerer;
use super::args;
use super::layers;
use super::value::{ArgValue, Callable, CallableKind, Env, TRef, Value};
use crate::diag::{Diagnostic, Span};
use crate::ir::ops::{Binary, Op, Unary};
use crate::syntax::ast::{self, BinOp, ExprKind, UnOp};

/// Blocks may nest (a block's body uses other blocks); this bounds recursion
/// through blocks that call themselves.
const MAX_BLOCK_DEPTH: usize = super::MAX_BLOCK_DEPTH;

impl<'p> Lowerer<'p, '_> {
    pub(super) fn eval(&mut self, e: &'p ast::Expr) -> Value<'p> {
        match &e.kind {
            ExprKind::Error => Value::Poison,
            ExprKind::Int(i) => Value::Int(*i),
            ExprKind::Float(f) => Value::Float(*f),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Name(n) => self.resolve(n, e.span),
            ExprKind::List(items) => Value::List(items.iter().map(|i| self.eval(i)).collect()),
            ExprKind::Tuple(items) => Value::Tuple(items.iter().map(|i| self.eval(i)).collect()),
            ExprKind::Unary(op, x) => {
                let v = self.eval(x);
                self.unary(*op, v, e.span)
            }
            ExprKind::Binary(BinOp::Pipe, lhs, rhs) => {
                let v = self.eval(lhs);
                self.pipe(v, rhs, e.span)
            }
            ExprKind::Binary(op, a, b) => {
                let va = self.eval(a);
                let vb = self.eval(b);
                self.binary(*op, va, vb, a.span, b.span, e.span)
            }
            ExprKind::Call(callee, args) => self.call(callee, args, e.span),
            ExprKind::Index(base, index) => {
                let b = self.eval(base);
                let i = self.eval(index);
                self.index(b, i, base.span, index.span, e.span)
            }
            ExprKind::Named(..) | ExprKind::Repeat(_) => match self.stage(e) {
                Some(c) => Value::Layer(c),
                None => Value::Poison,
            },
            ExprKind::Field(base, field) => {
                let b = self.eval(base);
                self.field(b, field, e.span)
            }
            ExprKind::If(cond, then, otherwise) => {
                let c = self.eval(cond);
                match c {
                    Value::Bool(true) => self.eval_body_child(then),
                    Value::Bool(false) => match otherwise {
                        Some(b) => self.eval_body_child(b),
                        None => {
                            self.error(
                                Diagnostic::error(
                                    e.span,
                                    "the condition of this `if` is false, and it has no `else` to give a value",
                                )
                                .label("no `else` branch")
                                .with(cond.span, "false here")
                                .help("add `else { ... }` with the value to use when the condition is false"),
                            );
                            Value::Poison
                        }
                    },
                    Value::Poison => Value::Poison,
                    Value::Tensor(_) => {
                        self.error(
                            Diagnostic::error(
                                cond.span,
                                "an `if` chooses while the model is built, so its condition cannot be a tensor",
                            )
                            .label("a tensor")
                            .help("to choose element by element, use `where(cond, a, b)`"),
                        );
                        Value::Poison
                    }
                    other => {
                        self.error(
                            Diagnostic::error(
                                cond.span,
                                format!(
                                    "the condition must be true or false, not {}",
                                    other.kind()
                                ),
                            )
                            .label("not a condition"),
                        );
                        Value::Poison
                    }
                }
            }
            ExprKind::Recur(_) => {
                self.error(
                    Diagnostic::error(
                        e.span,
                        "a recurrence must be assigned to names for its states",
                    )
                    .label("not assigned")
                    .help("write `s = recur t in 0..T from ... { ... }`"),
                );
                Value::Poison
            }
        }
    }

    /// A name: a local, a block, or a built-in.
    fn resolve(&mut self, name: &str, span: Span) -> Value<'p> {
        self.resolve_as(name, span, false)
    }

    /// A name where a layer is expected (after `|>`, or called): an unknown
    /// one is reported as an unknown layer.
    fn resolve_layer(&mut self, name: &str, span: Span) -> Value<'p> {
        self.resolve_as(name, span, true)
    }

    fn resolve_as(&mut self, name: &str, span: Span, layer: bool) -> Value<'p> {
        if let Some(v) = self.lookup(name) {
            return v;
        }
        if name == "B" {
            return Value::Batch;
        }
        if let Some(def) = self.blocks.get(name) {
            return Value::Layer(Rc::new(Callable::new(CallableKind::Block(def), span)));
        }
        if let Some(b) = layers::find(name) {
            return Value::Layer(Rc::new(Callable::new(CallableKind::Builtin(b), span)));
        }
        if layer {
            self.unknown_layer(name, span);
        } else {
            self.unknown_name(name, span);
        }
        Value::Poison
    }

    fn unknown_layer(&mut self, name: &str, span: Span) {
        if self.explain_undefined(name, span) {
            return;
        }
        let mut known: Vec<String> = self
            .env
            .vars
            .iter()
            .filter(|(_, b)| matches!(b.value, Value::Layer(_)))
            .map(|(n, _)| n.clone())
            .collect();
        known.extend(self.blocks.names().map(str::to_string));
        known.extend(layers::builtin_names().map(str::to_string));
        let mut d = Diagnostic::error(
            span,
            format!("there is no layer, block or function called `{name}`"),
        )
        .label("unknown layer or function");
        d = match args::suggest(name, known.iter().map(String::as_str)) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help("`nnc layers` lists the built-in layers and functions"),
        };
        self.error(d);
    }

    /// Evaluates a body in a copy of the current scope: its names stay inside.
    fn eval_body_child(&mut self, body: &'p ast::Body) -> Value<'p> {
        let saved = self.env.clone();
        let v = self.eval_body(body, false);
        let inner = std::mem::replace(&mut self.env, saved);
        self.warn_unused_new(&inner);
        v
    }

    /// Statements, then the result (several results make a tuple). A
    /// `barrier` body (a block's) sees none of its caller's names.
    pub(super) fn eval_body(&mut self, body: &'p ast::Body, barrier: bool) -> Value<'p> {
        self.run_stmts(&body.stmts, barrier);
        match body.result.as_slice() {
            [] => Value::Poison,
            [one] => self.eval(one),
            many => Value::Tuple(many.iter().map(|e| self.eval(e)).collect()),
        }
    }

    /// Warns about tensors defined in `inner` but not in the current scope and never used.
    fn warn_unused_new(&mut self, inner: &Env<'p>) {
        let outer = std::mem::replace(&mut self.env, inner.clone());
        let keep: Vec<String> = outer.vars.keys().cloned().collect();
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        self.warn_unused(&keep);
        self.env = outer;
    }

    fn eval_args(&mut self, args: &'p [ast::Arg]) -> Vec<ArgValue<'p>> {
        args.iter()
            .map(|a| ArgValue {
                name: a.name.clone(),
                value: self.eval(&a.value),
                span: a.value.span,
            })
            .collect()
    }

    // ------------------------------------------------------------ layers

    /// An expression after `|>`: a layer, not yet applied.
    pub(super) fn stage(&mut self, e: &'p ast::Expr) -> Option<Rc<Callable<'p>>> {
        match &e.kind {
            ExprKind::Call(callee, args) => {
                let base = self.stage(callee)?;
                let args = self.eval_args(args);
                if args.is_empty() {
                    return Some(base);
                }
                let mut c = base.fresh();
                c.args.extend(args);
                c.span = e.span;
                Some(Rc::new(c))
            }
            ExprKind::Named(inner, name) => {
                let base = self.stage(inner)?;
                let mut c = base.fresh();
                c.name = Some(name.clone());
                c.span = inner.span;
                let c = Rc::new(c);
                // A second layer with a taken name is reported once, as a
                // layer name (where it is applied), not also as a name.
                let layer_named = matches!(
                    self.env.get(&name.name).map(|b| &b.value),
                    Some(Value::Layer(_))
                );
                if !name.name.contains('.') && !layer_named {
                    self.bind(name, Value::Layer(c.clone()));
                    // Naming a layer is a use of the name.
                    self.used.insert(name.span);
                }
                Some(c)
            }
            ExprKind::Repeat(r) => self.repeat_callable(r, e.span),
            ExprKind::Binary(BinOp::Pipe, a, b) => {
                let first = self.stage(a)?;
                let second = self.stage(b)?;
                Some(Rc::new(Callable::new(
                    CallableKind::Compose(vec![first, second]),
                    e.span,
                )))
            }
            ExprKind::Name(n) => match self.resolve_layer(n, e.span) {
                Value::Layer(c) => Some(c),
                Value::Poison => None,
                other => self.not_a_layer(e, other),
            },
            _ => match self.eval(e) {
                Value::Layer(c) => Some(c),
                Value::Poison => None,
                other => self.not_a_layer(e, other),
            },
        }
    }

    fn not_a_layer(&mut self, e: &ast::Expr, v: Value<'p>) -> Option<Rc<Callable<'p>>> {
        let mut d = Diagnostic::error(
            e.span,
            format!("only a layer can follow `|>`, but this is {}", v.kind()),
        )
        .label("not a layer");
        if matches!(v, Value::Tensor(_)) {
            d = d.help(
                "to combine two tensors use an operator such as `+`, or a layer such as `concat(a, b)`",
            );
        }
        self.error(d);
        None
    }

    fn repeat_callable(&mut self, r: &'p ast::Repeat, span: Span) -> Option<Rc<Callable<'p>>> {
        let start = match &r.start {
            Some(s) => {
                let v = self.eval(s);
                self.int_value(&v, s.span, "the start of a repeat")?
            }
            None => 0,
        };
        let end_v = self.eval(&r.end);
        let end = self.int_value(&end_v, r.end.span, "a repeat count")?;
        if end < start {
            let d = match &r.start {
                Some(s) => Diagnostic::error(
                    s.span.to(r.end.span),
                    format!("the range {start}..{end} of this repeat runs backwards"),
                )
                .label("ends before it starts"),
                None => Diagnostic::error(
                    r.end.span,
                    format!("a repeat count cannot be negative, but this one is {end}"),
                )
                .label("negative count"),
            };
            self.error(d);
            return None;
        }
        if end - start > 10_000 {
            self.error(
                Diagnostic::error(r.end.span, "a repeat is limited to 10000 repetitions")
                    .label("too many"),
            );
            return None;
        }
        Some(Rc::new(Callable::new(
            CallableKind::Repeat {
                var: r.var.as_ref(),
                start,
                end,
                body: &r.body,
                env: self.env.clone(),
            },
            span,
        )))
    }

    pub(super) fn int_value(&mut self, v: &Value<'p>, span: Span, what: &str) -> Option<i64> {
        match v.as_int() {
            Some(i) => Some(i),
            None => {
                if !matches!(v, Value::Poison) {
                    self.error(
                        Diagnostic::error(
                            span,
                            format!("{what} must be a whole number, not {}", v.kind()),
                        )
                        .label("not a whole number"),
                    );
                }
                None
            }
        }
    }

    fn pipe(&mut self, lhs: Value<'p>, rhs: &'p ast::Expr, span: Span) -> Value<'p> {
        let Some(stage) = self.stage(rhs) else {
            return Value::Poison;
        };
        if matches!(lhs, Value::Poison) {
            // The input is unknown, but the layer's own arguments can still
            // be wrong: say so now rather than in the next run.
            self.check_config(&stage);
            return Value::Poison;
        }
        match lhs {
            Value::Tensor(t) => self.apply(&stage, vec![t], rhs.span),
            Value::Tuple(items) if items.iter().all(|v| matches!(v, Value::Tensor(_))) => {
                let inputs = items
                    .iter()
                    .filter_map(|v| match v {
                        Value::Tensor(t) => Some(*t),
                        _ => None,
                    })
                    .collect();
                self.apply(&stage, inputs, rhs.span)
            }
            Value::Layer(first) => Value::Layer(Rc::new(Callable::new(
                CallableKind::Compose(vec![first, stage]),
                span,
            ))),
            Value::Poison => Value::Poison,
            other => {
                self.error(
                    Diagnostic::error(
                        span,
                        format!(
                            "`|>` feeds a tensor into a layer, but its left side is {}",
                            other.kind()
                        ),
                    )
                    .label("not a tensor"),
                );
                Value::Poison
            }
        }
    }

    fn call(&mut self, callee: &'p ast::Expr, args: &'p [ast::Arg], span: Span) -> Value<'p> {
        let f = match &callee.kind {
            ExprKind::Name(n) => self.resolve_layer(n, callee.span),
            _ => self.eval(callee),
        };
        let c = match f {
            Value::Layer(c) => c,
            Value::Poison => return Value::Poison,
            other => {
                self.error(
                    Diagnostic::error(
                        callee.span,
                        format!("this is {}, which cannot be called", other.kind()),
                    )
                    .label("not a layer or function"),
                );
                return Value::Poison;
            }
        };
        let args = self.eval_args(args);
        if args.iter().any(|a| matches!(a.value, Value::Poison)) {
            return Value::Poison;
        }
        let tensors = args
            .iter()
            .filter(|a| matches!(a.value, Value::Tensor(_)) && a.name.is_none())
            .count();
        let only_tensors = tensors == args.len();
        // `enc(x)` applies the layer `enc` itself (shared weights); extra
        // configuration makes a new layer.
        let callable = if only_tensors && tensors > 0 {
            c
        } else {
            let mut fresh = c.fresh();
            fresh.args.extend(
                args.iter()
                    .filter(|a| !(only_tensors && matches!(a.value, Value::Tensor(_))))
                    .cloned(),
            );
            fresh.span = span;
            Rc::new(fresh)
        };
        let has_tensors = callable
            .args
            .iter()
            .any(|a| matches!(a.value, Value::Tensor(_)));
        if only_tensors && tensors > 0 {
            let inputs = args
                .iter()
                .filter_map(|a| match a.value {
                    Value::Tensor(t) => Some(t),
                    _ => None,
                })
                .collect();
            return self.apply(&callable, inputs, span);
        }
        if has_tensors || callable.arity() == 0 {
            return self.apply(&callable, Vec::new(), span);
        }
        Value::Layer(callable)
    }

    /// Checks the configuration arguments of a layer that will not be applied.
    fn check_config(&mut self, c: &Rc<Callable<'p>>) {
        match &c.kind {
            CallableKind::Builtin(b) => {
                let config: Vec<ArgValue<'p>> = c
                    .args
                    .iter()
                    .filter(|a| a.name.is_some() || !matches!(a.value, Value::Tensor(_)))
                    .cloned()
                    .collect();
                let mut diags = Vec::new();
                let _ = args::bind(b.name, b.sig, &config, c.span, &mut diags);
                // A shared layer may already have been reported where it
                // was first applied.
                for d in diags {
                    let known = self
                        .diags
                        .iter()
                        .any(|e| e.primary.span == d.primary.span && e.message == d.message);
                    if !known {
                        self.error(d);
                    }
                }
            }
            CallableKind::Compose(parts) => {
                for p in parts {
                    self.check_config(p);
                }
            }
            CallableKind::Block(_) | CallableKind::Repeat { .. } => {}
        }
    }

    /// Applies a layer to tensors. Tensor arguments given at the call site
    /// follow the piped ones.
    pub(super) fn apply(
        &mut self,
        c: &Rc<Callable<'p>>,
        mut inputs: Vec<TRef>,
        span: Span,
    ) -> Value<'p> {
        if !self.spend(span) {
            return Value::Poison;
        }
        let mut config = Vec::new();
        // Elementwise functions take numbers where tensors go: `maximum(x, 0)`.
        let numbers_are_tensors =
            matches!(&c.kind, CallableKind::Builtin(b) if layers::numbers_are_tensors(b));
        for a in &c.args {
            match &a.value {
                Value::Tensor(t) if a.name.is_none() => inputs.push(*t),
                Value::Int(_) | Value::Float(_) if numbers_are_tensors && a.name.is_none() => {
                    let v = a.value.as_f64().unwrap_or(0.0);
                    inputs.push(self.scalar(v, a.span));
                }
                _ => config.push(a.clone()),
            }
        }
        match &c.kind {
            CallableKind::Builtin(b) => self.apply_builtin(b, c, inputs, config, span),
            CallableKind::Block(def) => self.apply_block(def, c, inputs, config, span),
            CallableKind::Compose(parts) => {
                let first_diag = self.diags.len();
                let layer = self.open_group(c, "sequence", "seq", span);
                let mut cur = Value::Tuple(inputs.into_iter().map(Value::Tensor).collect());
                for p in parts {
                    cur = match cur {
                        Value::Tensor(t) => self.apply(p, vec![t], span),
                        Value::Tuple(items) => {
                            let ts = items
                                .into_iter()
                                .filter_map(|v| match v {
                                    Value::Tensor(t) => Some(t),
                                    _ => None,
                                })
                                .collect();
                            self.apply(p, ts, span)
                        }
                        other => other,
                    };
                    if matches!(cur, Value::Poison) {
                        break;
                    }
                }
                self.close_group(layer, &cur);
                let _ = first_diag;
                cur
            }
            CallableKind::Repeat {
                var,
                start,
                end,
                body,
                env,
            } => {
                if config.iter().any(|a| a.name.is_some()) || !config.is_empty() {
                    self.error(
                        Diagnostic::error(span, "a repeat takes no arguments")
                            .label("unexpected arguments"),
                    );
                    return Value::Poison;
                }
                let [input] = inputs.as_slice() else {
                    self.error(
                        Diagnostic::error(
                            span,
                            format!("a repeat takes one tensor, but gets {}", inputs.len()),
                        )
                        .label("wrong number of inputs"),
                    );
                    return Value::Poison;
                };
                let layer = self.open_group(c, "repeat", "seq", c.span);
                let single = body.stmts.is_empty()
                    && body.result.len() == 1
                    && !matches!(body.result[0].kind, ExprKind::Binary(BinOp::Pipe, ..));
                let mut cur = Value::Tensor(*input);
                for i in *start..*end {
                    let mut local = env.clone();
                    if let Some(v) = var {
                        local.vars.insert(
                            v.name.clone(),
                            super::value::Binding {
                                value: Value::Int(i),
                                span: v.span,
                            },
                        );
                        self.used.insert(v.span);
                    }
                    let saved = std::mem::replace(&mut self.env, local);
                    let index = (i - start).to_string();
                    if single {
                        self.scope.pending_name = Some(index);
                    } else {
                        self.scope.push_segment(index);
                    }
                    self.run_stmts(&body.stmts, false);
                    cur = match (&cur, body.result.as_slice()) {
                        (Value::Tensor(t), [stage]) => {
                            let t = *t;
                            match self.stage(stage) {
                                Some(s) => self.apply(&s, vec![t], stage.span),
                                None => Value::Poison,
                            }
                        }
                        (Value::Tensor(_), _) => {
                            self.error(
                                Diagnostic::error(
                                    body.span,
                                    "the body of a repeat is one layer or chain of layers",
                                )
                                .label("expected one stage"),
                            );
                            Value::Poison
                        }
                        _ => Value::Poison,
                    };
                    self.scope.pending_name = None;
                    if !single {
                        self.scope.pop_segment();
                    }
                    self.env = saved;
                    if matches!(cur, Value::Poison) {
                        break;
                    }
                }
                self.close_group(layer, &cur);
                cur
            }
        }
    }

    /// Opens a layer scope for a named chain or repeat (unnamed chains add no
    /// level, so their layers are named as if written inline).
    fn open_group(
        &mut self,
        c: &Rc<Callable<'p>>,
        kind: &str,
        prefix: &str,
        span: Span,
    ) -> Option<crate::ir::graph::LayerId> {
        let always = matches!(c.kind, CallableKind::Repeat { .. });
        if c.name.is_none() && c.applied.borrow().is_none() && !always {
            return None;
        }
        let _ = span;
        self.enter_layer(c, kind, prefix)
    }

    /// Opens the layer scope of an application of `c`: under its name, or the
    /// path of its first application when it is applied again (shared weights).
    fn enter_layer(
        &mut self,
        c: &Rc<Callable<'p>>,
        kind: &str,
        prefix: &str,
    ) -> Option<crate::ir::graph::LayerId> {
        let shared = c.applied.borrow().clone();
        let entered = self.scope.enter(
            &mut self.model,
            kind,
            prefix,
            c.name.as_ref(),
            shared.as_deref(),
            c.span,
        );
        match entered {
            Ok((id, path)) => {
                if shared.is_none() && c.name.is_some() {
                    *c.applied.borrow_mut() = Some(path);
                }
                Some(id)
            }
            Err(d) => {
                self.error(*d);
                None
            }
        }
    }

    fn close_group(&mut self, layer: Option<crate::ir::graph::LayerId>, out: &Value<'p>) {
        if layer.is_some() {
            let (node, ty) = self.layer_output(out);
            self.scope.exit(&mut self.model, node, ty);
        }
    }

    pub(super) fn layer_output(
        &self,
        out: &Value<'p>,
    ) -> (
        Option<crate::ir::graph::NodeId>,
        Option<crate::ir::types::TensorType>,
    ) {
        match out {
            Value::Tensor(t) => ((t.depth == 0).then_some(t.node), self.ty(*t).cloned()),
            _ => (None, None),
        }
    }

    fn apply_builtin(
        &mut self,
        b: &'static layers::Builtin,
        c: &Rc<Callable<'p>>,
        inputs: Vec<TRef>,
        config: Vec<ArgValue<'p>>,
        span: Span,
    ) -> Value<'p> {
        let (min, max) = b.inputs;
        if inputs.len() < min || max.is_some_and(|m| inputs.len() > m) {
            let wanted = match max {
                Some(m) if m == min => format!("{min}"),
                Some(m) => format!("{min} to {m}"),
                None => format!("at least {min}"),
            };
            self.error(
                Diagnostic::error(
                    span,
                    format!(
                        "{} takes {wanted} tensor input(s), but gets {}",
                        c.describe(),
                        inputs.len()
                    ),
                )
                .label("wrong number of tensors")
                .help(layers::usage(b)),
            );
            return Value::Poison;
        }
        let Some(bound) = args::bind(b.name, b.sig, &config, c.span, &mut self.diags) else {
            return Value::Poison;
        };
        if inputs.iter().any(|t| self.ty(*t).is_none()) {
            return Value::Poison;
        }
        let layer = match b.prefix {
            None => None,
            Some(prefix) => match self.enter_layer(c, b.name, prefix) {
                Some(id) => Some(id),
                None => return Value::Poison,
            },
        };
        let site = self.apply_site.replace(span);
        let out = (b.lower)(
            self,
            &layers::Apply {
                inputs,
                args: bound,
                span: c.span,
            },
        );
        self.apply_site = site;
        if layer.is_some() {
            let (node, ty) = self.layer_output(&out);
            self.scope.exit(&mut self.model, node, ty);
        }
        out
    }

    fn apply_block(
        &mut self,
        def: &'p ast::BlockDef,
        c: &Rc<Callable<'p>>,
        inputs: Vec<TRef>,
        config: Vec<ArgValue<'p>>,
        span: Span,
    ) -> Value<'p> {
        let name = &def.name.name;
        if self.block_depth >= MAX_BLOCK_DEPTH {
            let recursive = self.open_blocks.iter().any(|b| std::ptr::eq(*b, def));
            let d = if recursive {
                Diagnostic::error(
                    span,
                    format!("the block `{name}` uses itself without end"),
                )
                .label(format!("`{name}` uses itself here, {MAX_BLOCK_DEPTH} levels deep"))
                .with(def.name.span, format!("`{name}` is defined here"))
                .help(format!("a block that uses itself needs a base case on its arguments, e.g. `if depth == 0 {{ x }} else {{ x |> {name}(depth - 1) }}`"))
            } else {
                Diagnostic::error(
                    span,
                    format!("blocks are nested more than {MAX_BLOCK_DEPTH} deep here"),
                )
                .label("too deep")
                .with(def.name.span, format!("`{name}` is defined here"))
                .help(format!("blocks may use other blocks up to {MAX_BLOCK_DEPTH} levels deep; to stack many layers, use `repeat`"))
            };
            self.error(d);
            return Value::Poison;
        }
        if inputs.len() != def.inputs.len() {
            let names: Vec<&str> = def.inputs.iter().map(|i| i.name.as_str()).collect();
            self.error(
                Diagnostic::error(
                    span,
                    format!(
                        "the block `{name}` takes {} tensor input(s) ({}), but gets {}",
                        def.inputs.len(),
                        names.join(", "),
                        inputs.len()
                    ),
                )
                .label("wrong number of tensors")
                .with(def.name.span, "defined here")
                .help(match names.as_slice() {
                    [one] => format!("feed it one tensor: `{one} |> {name}(...)`"),
                    many => format!(
                        "feed it {} tensors, in order: `({}) |> {name}(...)`",
                        many.len(),
                        many.join(", ")
                    ),
                }),
            );
            return Value::Poison;
        }
        if inputs.iter().any(|t| self.ty(*t).is_none()) {
            return Value::Poison;
        }
        // Bind the arguments in a fresh scope: a block sees only its own names.
        let saved_env = std::mem::take(&mut self.env);
        let mut given: Vec<Option<ArgValue<'p>>> = vec![None; def.params.len()];
        let mut ok = true;
        let mut positional = 0;
        for a in config {
            let slot = match &a.name {
                None => {
                    let i = positional;
                    positional += 1;
                    if i >= def.params.len() {
                        self.error(
                            Diagnostic::error(
                                a.span,
                                format!("too many arguments for the block `{name}`"),
                            )
                            .label("unexpected argument")
                            .with(def.name.span, "defined here"),
                        );
                        ok = false;
                        continue;
                    }
                    i
                }
                Some(n) => match def.params.iter().position(|p| p.name.name == n.name) {
                    Some(i) => i,
                    None => {
                        let mut d = Diagnostic::error(
                            n.span,
                            format!("the block `{name}` has no argument named `{}`", n.name),
                        )
                        .label("unknown argument")
                        .with(def.name.span, "defined here");
                        if let Some(s) =
                            args::suggest(&n.name, def.params.iter().map(|p| p.name.name.as_str()))
                        {
                            d = d.help(format!("did you mean `{s}`?"));
                        }
                        self.error(d);
                        ok = false;
                        continue;
                    }
                },
            };
            if given[slot].is_some() {
                self.error(
                    Diagnostic::error(
                        a.span,
                        format!("`{}` is given twice", def.params[slot].name.name),
                    )
                    .label("second value"),
                );
                ok = false;
                continue;
            }
            given[slot] = Some(a);
        }
        for (p, g) in def.params.iter().zip(given) {
            let value = match (g, &p.default) {
                (Some(a), _) => a.value,
                (None, Some(d)) => self.eval(d),
                (None, None) => {
                    self.error(
                        Diagnostic::error(
                            span,
                            format!("the block `{name}` needs the argument `{}`", p.name.name),
                        )
                        .label(format!("`{}` missing", p.name.name))
                        .with(p.name.span, "declared here without a default"),
                    );
                    ok = false;
                    Value::Poison
                }
            };
            self.env.vars.insert(
                p.name.name.clone(),
                super::value::Binding {
                    value,
                    span: p.name.span,
                },
            );
        }
        if !ok {
            self.env = saved_env;
            return Value::Poison;
        }
        for (i, t) in def.inputs.iter().zip(&inputs) {
            self.env.vars.insert(
                i.name.clone(),
                super::value::Binding {
                    value: Value::Tensor(*t),
                    span: i.span,
                },
            );
        }
        if self.enter_layer(c, name, name).is_none() {
            self.env = saved_env;
            return Value::Poison;
        }
        let first_diag = self.diags.len();
        self.block_depth += 1;
        self.open_blocks.push(def);
        let out = self.eval_body(&def.body, true);
        self.open_blocks.pop();
        self.block_depth -= 1;
        self.warn_unused(&[]);
        // Errors inside a block point into its body; say which use of it failed.
        let label = crate::diag::Label {
            span,
            message: format!("in this use of `{name}`"),
        };
        for d in &mut self.diags[first_diag..] {
            // A block that uses itself fails at every level, at one place.
            if d.is_error() && d.primary.span != span && !d.secondary.contains(&label) {
                d.secondary.push(label.clone());
            }
        }
        let (node, ty) = self.layer_output(&out);
        self.scope.exit(&mut self.model, node, ty);
        self.env = saved_env;
        out
    }

    // ------------------------------------------------------------ operators

    fn unary(&mut self, op: UnOp, v: Value<'p>, span: Span) -> Value<'p> {
        match (op, v) {
            (_, Value::Poison) => Value::Poison,
            (UnOp::Neg, Value::Int(i)) => Value::Int(i.wrapping_neg()),
            (UnOp::Neg, Value::Float(f)) => Value::Float(-f),
            (UnOp::Neg, Value::Tensor(t)) => {
                Value::Tensor(self.add(Op::Unary(Unary::Neg), &[t], span))
            }
            (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
            (op, other) => {
                let what = if op == UnOp::Neg {
                    "negate"
                } else {
                    "apply `not` to"
                };
                self.error(
                    Diagnostic::error(span, format!("cannot {what} {}", other.kind()))
                        .label("here"),
                );
                Value::Poison
            }
        }
    }

    /// Turns a number into a scalar tensor; tensors pass through.
    fn as_tensor(&mut self, v: &Value<'p>, span: Span) -> Option<TRef> {
        match v {
            Value::Tensor(t) => Some(*t),
            Value::Int(_) | Value::Float(_) => Some(self.scalar(v.as_f64().unwrap_or(0.0), span)),
            _ => None,
        }
    }

    fn binary(
        &mut self,
        op: BinOp,
        a: Value<'p>,
        b: Value<'p>,
        sa: Span,
        sb: Span,
        span: Span,
    ) -> Value<'p> {
        use Value::*;
        if matches!(a, Poison) || matches!(b, Poison) {
            return Poison;
        }
        // Numbers and flags, known while building.
        match (&a, &b) {
            (Int(x), Int(y)) => {
                let (x, y) = (*x, *y);
                let v = match op {
                    BinOp::Add => x.checked_add(y).map(Int),
                    BinOp::Sub => x.checked_sub(y).map(Int),
                    BinOp::Mul => x.checked_mul(y).map(Int),
                    BinOp::Div if y == 0 => {
                        self.error(Diagnostic::error(sb, "division by zero").label("zero"));
                        return Poison;
                    }
                    BinOp::Div => Some(Float(x as f64 / y as f64)),
                    _ => Some(compare(op, x as f64, y as f64).map_or(Poison, Bool)),
                };
                return v.unwrap_or_else(|| {
                    self.error(
                        Diagnostic::error(span, "this arithmetic overflows").label("too large"),
                    );
                    Poison
                });
            }
            (Int(_) | Float(_), Int(_) | Float(_)) => {
                let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                return match op {
                    BinOp::Add => Float(x + y),
                    BinOp::Sub => Float(x - y),
                    BinOp::Mul => Float(x * y),
                    BinOp::Div => Float(x / y),
                    _ => compare(op, x, y).map_or(Poison, Bool),
                };
            }
            (Bool(x), Bool(y)) => {
                let v = match op {
                    BinOp::And => Some(*x && *y),
                    BinOp::Or => Some(*x || *y),
                    BinOp::Eq => Some(x == y),
                    BinOp::Ne => Some(x != y),
                    _ => None,
                };
                if let Some(v) = v {
                    return Bool(v);
                }
            }
            (Str(x), Str(y)) if matches!(op, BinOp::Eq | BinOp::Ne) => {
                return Bool((x == y) == (op == BinOp::Eq));
            }
            (Time(k), Int(j)) if matches!(op, BinOp::Add | BinOp::Sub) => {
                return Time(if op == BinOp::Add { k + j } else { k - j });
            }
            _ => {}
        }
        let tensor_op = match op {
            BinOp::Add => Some(Binary::Add),
            BinOp::Sub => Some(Binary::Sub),
            BinOp::Mul => Some(Binary::Mul),
            BinOp::Div => Some(Binary::Div),
            BinOp::Gt => Some(Binary::Gt),
            BinOp::Ge => Some(Binary::Ge),
            BinOp::Lt => Some(Binary::Lt),
            BinOp::Le => Some(Binary::Le),
            BinOp::Eq => Some(Binary::Eq),
            _ => None,
        };
        let any_tensor = matches!(a, Tensor(_)) || matches!(b, Tensor(_));
        if any_tensor
            && op == BinOp::MatMul
            && let (Tensor(x), Tensor(y)) = (&a, &b)
        {
            return Tensor(self.add(
                Op::MatMul {
                    ta: false,
                    tb: false,
                },
                &[*x, *y],
                span,
            ));
        }
        if any_tensor && let Some(bop) = tensor_op {
            let x = self.as_tensor(&a, sa);
            let y = self.as_tensor(&b, sb);
            if let (Some(x), Some(y)) = (x, y) {
                return Tensor(self.add(Op::Binary(bop), &[x, y], span));
            }
        }
        let mut d = Diagnostic::error(
            span,
            format!(
                "cannot apply `{}` to {} and {}",
                op.symbol(),
                a.kind(),
                b.kind()
            ),
        )
        .label("unsupported operands");
        if op == BinOp::MatMul {
            d = d.help("`@` multiplies two tensors; scale by a number with `*`");
        } else if let (Layer(c), other) | (other, Layer(c)) = (&a, &b) {
            let layer = match &c.kind {
                CallableKind::Builtin(b) => b.name.to_string(),
                CallableKind::Block(def) => def.name.name.clone(),
                _ => "layer".to_string(),
            };
            let sym = op.symbol();
            let rhs = match other {
                Int(i) => i.to_string(),
                Float(f) => f.to_string(),
                _ => "y".to_string(),
            };
            d = d.help(format!(
                "apply the layer to a tensor first; `|>` binds more loosely than `{sym}`, so `x |> {layer} {sym} {rhs}` means `x |> ({layer} {sym} {rhs})`: write `(x |> {layer}) {sym} {rhs}`"
            ));
        }
        self.error(d);
        Poison
    }

    fn field(&mut self, base: Value<'p>, field: &ast::Ident, span: Span) -> Value<'p> {
        match (&base, field.name.as_str()) {
            (Value::Poison, _) => Value::Poison,
            (Value::Tensor(t), "T") => {
                let t = *t;
                match self.ty(t).map(|t| t.shape.rank()) {
                    Some(r) if r >= 2 => {
                        let mut perm: Vec<usize> = (0..r).collect();
                        perm.swap(r - 2, r - 1);
                        Value::Tensor(self.add(Op::Transpose { perm }, &[t], span))
                    }
                    Some(r) => {
                        self.error(
                            Diagnostic::error(
                                span,
                                format!(
                                    "`.T` swaps the last two axes, but this tensor has rank {r}"
                                ),
                            )
                            .label("rank below 2"),
                        );
                        Value::Poison
                    }
                    None => Value::Poison,
                }
            }
            _ => {
                self.error(
                    Diagnostic::error(
                        field.span,
                        format!("{} has no field `{}`", base.kind(), field.name),
                    )
                    .label("unknown field")
                    .help("tensors have `.T`, the transpose of their last two axes"),
                );
                Value::Poison
            }
        }
    }

    /// `x[t]`, `s[t-1]` inside a recurrence; `s[k]` (a time step) elsewhere.
    fn index(
        &mut self,
        base: Value<'p>,
        index: Value<'p>,
        bspan: Span,
        ispan: Span,
        span: Span,
    ) -> Value<'p> {
        match (&base, &index) {
            (Value::Poison, _) | (_, Value::Poison) => Value::Poison,
            (_, Value::Time(k)) => self.time_index(base.clone(), *k, bspan, span),
            (Value::Tensor(t), Value::Int(k)) => {
                let t = *t;
                self.time_step(t, *k, ispan, span, "`x[k]` takes time step k")
            }
            (Value::StateSeq(_), _) => {
                self.error(
                    Diagnostic::error(
                        span,
                        "inside its recurrence, a state can only be read as `s[t-1]`",
                    )
                    .label("not the previous step"),
                );
                Value::Poison
            }
            (Value::Tensor(_), other) => {
                self.error(
                    Diagnostic::error(
                        ispan,
                        format!(
                            "a time index must be a whole number or the loop variable, not {}",
                            other.kind()
                        ),
                    )
                    .label("not a time step"),
                );
                Value::Poison
            }
            (other, _) => {
                self.error(
                    Diagnostic::error(
                        bspan,
                        format!(
                            "only sequences can be indexed, and this is {}",
                            other.kind()
                        ),
                    )
                    .label("not a tensor"),
                );
                Value::Poison
            }
        }
    }

    /// Time step `k` (negative counts from the end) of a sequence `[B, T, ...]`.
    /// Time step `k` (negative: from the end) of a sequence; `what` says in
    /// the error which construct asked for it.
    pub(super) fn time_step(
        &mut self,
        t: TRef,
        k: i64,
        ispan: Span,
        span: Span,
        what: &str,
    ) -> Value<'p> {
        let Some(ty) = self.ty(t).cloned() else {
            return Value::Poison;
        };
        let Some(steps) = ty.shape.dim(1).and_then(|d| d.known()) else {
            self.error(
                Diagnostic::error(
                    span,
                    format!("{what} of a sequence [B, T, ...], but this is {}", ty.shape),
                )
                .label("not a sequence"),
            );
            return Value::Poison;
        };
        let i = if k < 0 { k + steps as i64 } else { k };
        if !(0..steps as i64).contains(&i) {
            self.error(
                Diagnostic::error(
                    ispan,
                    format!("time step {k} is outside a sequence of {steps} steps"),
                )
                .label("out of range"),
            );
            return Value::Poison;
        }
        let i = i as usize;
        let sliced = self.add(
            Op::Slice {
                axis: 1,
                start: i,
                end: i + 1,
            },
            &[t],
            span,
        );
        let Some(out) = crate::ir::shape::without_time(&ty) else {
            return Value::Poison;
        };
        Value::Tensor(self.add(Op::Reshape { shape: out.shape }, &[sliced], span))
    }
}

fn compare(op: BinOp, x: f64, y: f64) -> Option<bool> {
    Some(match op {
        BinOp::Eq => x == y,
        BinOp::Ne => x != y,
        BinOp::Lt => x < y,
        BinOp::Le => x <= y,
        BinOp::Gt => x > y,
        BinOp::Ge => x >= y,
        _ => return None,
    })
}
