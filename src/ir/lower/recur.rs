//! Recurrence: `s = recur t in 0..T from s0 { f(x[t], s[t-1]) }` becomes one
//! `Recur` node whose body graph runs once per step — a loop, never a copy per
//! step, so code size does not grow with T.

use std::collections::HashMap;

use super::value::{Binding, TRef, Value};
use super::{ArgKind, Frame, Lowerer};
use crate::diag::{Diagnostic, Span};
use crate::ir::graph::{Graph, Node};
use crate::ir::ops::{Op, RecurOp};
use crate::ir::shape;
use crate::ir::types::TensorType;
use crate::syntax::ast;

/// Longest recurrence accepted (steps are a loop, but a typo like 0..1000000
/// deserves a word).
const MAX_STEPS: i64 = 1 << 20;

impl<'p> Lowerer<'p, '_> {
    /// Lowers a recurrence assigned to `targets`; returns one value per target.
    pub(super) fn recur(
        &mut self,
        r: &'p ast::Recur,
        targets: &[ast::Ident],
        span: Span,
    ) -> Vec<Value<'p>> {
        let poison = vec![Value::Poison; targets.len()];
        let start_v = self.eval(&r.start);
        let end_v = self.eval(&r.end);
        let (Some(start), Some(end)) = (
            self.int_value(&start_v, r.start.span, "the first step"),
            self.int_value(&end_v, r.end.span, "the last step"),
        ) else {
            return poison;
        };
        let range = r.start.span.to(r.end.span);
        let problem = if start < 0 {
            Some((
                format!("a recurrence starts at step 0 or later, not {start}"),
                "negative start",
            ))
        } else if end <= start {
            Some((
                format!("the range {start}..{end} of this recurrence has no steps"),
                "empty range",
            ))
        } else if end - start > MAX_STEPS {
            Some((
                format!(
                    "a recurrence runs at most {MAX_STEPS} steps, but {start}..{end} has {}",
                    end - start
                ),
                "too many steps",
            ))
        } else {
            None
        };
        if let Some((message, label)) = problem {
            self.error(
                Diagnostic::error(range, message).label(label).help(
                    "write the steps as `recur t in 0..T`, with T the length of the sequence",
                ),
            );
            return poison;
        }
        let steps = (end - start) as usize;
        if r.init.len() != targets.len() {
            let names = match (targets.first(), targets.last()) {
                (Some(a), Some(b)) => a.span.to(b.span),
                _ => span,
            };
            let inits = match (r.init.first(), r.init.last()) {
                (Some(a), Some(b)) => a.span.to(b.span),
                _ => span,
            };
            let plural = |n: usize, what: &str| {
                if n == 1 {
                    format!("1 {what}")
                } else {
                    format!("{n} {what}s")
                }
            };
            self.error(
                Diagnostic::error(
                    names,
                    format!(
                        "this recurrence has {} but {}",
                        plural(targets.len(), "state name"),
                        plural(r.init.len(), "initial value")
                    ),
                )
                .label(plural(targets.len(), "state"))
                .with(inits, plural(r.init.len(), "initial value"))
                .help("give one initial value after `from` for each name, in the same order: `h, c = recur t in 0..T from h0, c0 { ... }`"),
            );
            return poison;
        }
        let truncate = match &r.truncate {
            None => None,
            Some(e) => {
                let v = self.eval(e);
                match v.as_int() {
                    Some(k) if k >= 1 => Some(k as usize),
                    _ => {
                        self.error(
                            Diagnostic::error(
                                e.span,
                                "`truncate` takes a whole number of steps, at least 1",
                            )
                            .label("not a step count"),
                        );
                        return poison;
                    }
                }
            }
        };
        let mut inits = Vec::new();
        for e in &r.init {
            match self.eval(e) {
                Value::Tensor(t) => inits.push((t, e.span)),
                Value::Poison => return poison,
                other => {
                    self.error(
                        Diagnostic::error(
                            e.span,
                            format!("an initial state must be a tensor, not {}", other.kind()),
                        )
                        .label("not a tensor")
                        .help("start from zeros, e.g. `from zeros([B, 128])`"),
                    );
                    return poison;
                }
            }
        }
        let init_tys: Vec<TensorType> =
            match inits.iter().map(|(t, _)| self.ty(*t).cloned()).collect() {
                Some(v) => v,
                None => return poison,
            };
        // Stateful: the state is carried from one batch to the next in a buffer.
        let mut carried = Vec::new();
        if r.stateful {
            for (i, ((t, espan), ty)) in inits.iter_mut().zip(&init_tys).enumerate() {
                let fill = match &self.node(*t).op {
                    Op::Fill { value, .. } if t.depth == self.depth() => Some(*value),
                    _ => None,
                };
                let Some(value) = fill else {
                    self.error(
                        Diagnostic::error(*espan, "a stateful recurrence starts from a constant, such as `zeros([B, 128])`")
                            .label("not a constant")
                            .help("the carried state replaces it after the first batch"),
                    );
                    return poison;
                };
                let (sid, node) = self.state(
                    &format!("{}_state", targets[i].name),
                    ty.clone(),
                    value,
                    *espan,
                );
                carried.push(sid);
                *t = node;
            }
        }

        // Build the body in a frame of its own.
        let mut frame = Frame {
            graph: Graph::new(),
            args: Vec::new(),
            captured: HashMap::new(),
            sliced: HashMap::new(),
            start,
            steps,
            state_args: Vec::new(),
        };
        for (ty, (_, espan)) in init_tys.iter().zip(&inits) {
            let node = frame.graph.push(Node {
                op: Op::Arg(0),
                inputs: Vec::new(),
                ty: Some(ty.clone()),
                span: *espan,
                layer: None,
            });
            frame.args.push((ArgKind::State, node));
            frame.state_args.push(node);
        }
        self.frames.push(frame);
        let saved = self.env.clone();
        self.env.vars.insert(
            r.var.name.clone(),
            Binding {
                value: Value::Time(0),
                span: r.var.span,
            },
        );
        self.used.insert(r.var.span);
        for (i, t) in targets.iter().enumerate() {
            self.env.vars.insert(
                t.name.clone(),
                Binding {
                    value: Value::StateSeq(i),
                    span: t.span,
                },
            );
        }
        let result = self.eval_body(&r.body, false);
        let inner_env = std::mem::replace(&mut self.env, saved);
        let mut local = inner_env.clone();
        local.vars.retain(|n, _| {
            !self.env.vars.contains_key(n)
                && n != &r.var.name
                && !targets.iter().any(|t| &t.name == n)
        });
        self.warn_new_names(local);

        let results: Vec<Value<'p>> = match result {
            Value::Tuple(items) => items,
            v => vec![v],
        };
        let depth = self.depth();
        let mut outs = Vec::new();
        let mut ok = results.len() == targets.len();
        if !ok {
            self.error(
                Diagnostic::error(
                    r.body.span,
                    format!(
                        "the step gives {} value(s), but the recurrence has {} state(s)",
                        results.len(),
                        targets.len()
                    ),
                )
                .label("one value per state"),
            );
        }
        for (i, v) in results.iter().enumerate().take(targets.len()) {
            let rspan = r
                .body
                .result
                .get(i)
                .or(r.body.result.first())
                .map_or(r.body.span, |e| e.span);
            match v {
                Value::Tensor(t) => {
                    let t = self.import(*t);
                    let ty = self.ty(t).cloned();
                    if let Some(ty) = &ty
                        && ty != &init_tys[i]
                    {
                        self.error(
                            Diagnostic::error(
                                rspan,
                                format!(
                                    "the state `{}` starts as {} but one step turns it into {}",
                                    targets[i].name, init_tys[i].shape, ty.shape
                                ),
                            )
                            .label(format!("this is {}", ty.shape))
                            .with(
                                inits[i].1,
                                format!("the state starts as {}", init_tys[i].shape),
                            )
                            .help("a recurrence state must keep its shape from step to step"),
                        );
                        ok = false;
                    }
                    if ty.is_none() {
                        ok = false;
                    }
                    outs.push(t.node);
                }
                Value::Poison => ok = false,
                other => {
                    self.error(
                        Diagnostic::error(
                            rspan,
                            format!("a step must give a tensor, not {}", other.kind()),
                        )
                        .label("not a tensor"),
                    );
                    ok = false;
                }
            }
        }
        let frame = self.frames.pop();
        let Some(mut frame) = frame.filter(|_| ok) else {
            return poison;
        };
        debug_assert_eq!(depth, self.depth() + 1);

        // Arguments in their final order: sequences, states, captures.
        let mut order: Vec<(ArgKind, crate::ir::graph::NodeId)> = Vec::new();
        order.extend(
            frame
                .args
                .iter()
                .filter(|(k, _)| matches!(k, ArgKind::Seq(_))),
        );
        order.extend(
            frame
                .args
                .iter()
                .filter(|(k, _)| matches!(k, ArgKind::State)),
        );
        order.extend(
            frame
                .args
                .iter()
                .filter(|(k, _)| matches!(k, ArgKind::Capture(_))),
        );
        let mut inputs = Vec::new();
        let mut n_seq = 0;
        for (i, (kind, node)) in order.iter().enumerate() {
            frame.graph.node_mut(*node).op = Op::Arg(i);
            match kind {
                ArgKind::Seq(outer) => {
                    n_seq += 1;
                    let full = self
                        .ty(*outer)
                        .and_then(|t| t.shape.dim(1))
                        .and_then(|d| d.known());
                    let seq = if full == Some(steps) {
                        *outer
                    } else {
                        self.add(
                            Op::Slice {
                                axis: 1,
                                start: start as usize,
                                end: end as usize,
                            },
                            &[*outer],
                            span,
                        )
                    };
                    inputs.push(seq);
                }
                ArgKind::State => {}
                ArgKind::Capture(outer) => inputs.push(*outer),
            }
        }
        // States go after the sequences.
        let states: Vec<TRef> = inits.iter().map(|(t, _)| *t).collect();
        let tail = inputs.split_off(n_seq);
        inputs.extend(states);
        inputs.extend(tail);
        let n_state = targets.len();
        frame.graph.outputs = outs.iter().chain(outs.iter()).copied().collect();
        let op = Op::Recur(Box::new(RecurOp {
            steps,
            n_seq,
            n_state,
            n_step_out: n_state,
            body: frame.graph,
            reverse: false,
            truncate,
        }));
        let node = self.add(op, &inputs, span);
        let mut values = Vec::new();
        for (i, target) in targets.iter().enumerate() {
            let seq = self.add(Op::Output { index: i }, &[node], target.span);
            values.push(Value::Tensor(seq));
        }
        for (i, sid) in carried.into_iter().enumerate() {
            let last = self.add(Op::Output { index: n_state + i }, &[node], span);
            self.model.state_updates.push((sid, last.node));
        }
        values
    }

    fn warn_new_names(&mut self, local: super::value::Env<'p>) {
        let outer = std::mem::replace(&mut self.env, local);
        self.warn_unused(&[]);
        self.env = outer;
    }

    /// `x[t]`, `x[t-1]`, `s[t-1]` inside a recurrence body.
    pub(super) fn time_index(
        &mut self,
        base: Value<'p>,
        k: i64,
        bspan: Span,
        span: Span,
    ) -> Value<'p> {
        let depth = self.depth();
        if depth == 0 {
            self.error(
                Diagnostic::error(span, "the time step is only known inside a recurrence")
                    .label("outside `recur`"),
            );
            return Value::Poison;
        }
        match base {
            Value::StateSeq(i) => {
                if k != -1 {
                    self.error(
                        Diagnostic::error(
                            span,
                            format!(
                                "a state is read at the previous step, `[t-1]`, not `[t{k:+}]`"
                            ),
                        )
                        .label("only t-1 is kept")
                        .help("to look further back, carry the older value as another state"),
                    );
                    return Value::Poison;
                }
                let node = self.frames[depth as usize - 1].state_args[i];
                Value::Tensor(TRef { depth, node })
            }
            Value::Tensor(x) => {
                if x.depth == depth {
                    self.error(
                        Diagnostic::error(
                            bspan,
                            "only a sequence from outside the recurrence can be read at `[t]`",
                        )
                        .label("computed inside the step"),
                    );
                    return Value::Poison;
                }
                if k != 0 {
                    self.error(
                        Diagnostic::error(
                            span,
                            format!(
                                "a sequence is read at the current step, `[t]`, not `[t{k:+}]`"
                            ),
                        )
                        .label("only the current step")
                        .help("to use an earlier input, carry it as a state"),
                    );
                    return Value::Poison;
                }
                // The sequence lives in the graph that holds the recurrence.
                let outer = self.import_to(x, depth - 1);
                let Some(ty) = self.ty(outer).cloned() else {
                    return Value::Poison;
                };
                let frame = &self.frames[depth as usize - 1];
                let needed = frame.start as usize + frame.steps;
                let have = ty.shape.dim(1).and_then(|d| d.known());
                if ty.shape.rank() < 2 || have.is_none_or(|h| h < needed) {
                    let what = match have {
                        Some(h) if ty.shape.rank() >= 2 => {
                            format!("its {h} steps (axis 1 of {})", ty.shape)
                        }
                        _ => format!("a tensor of shape {}", ty.shape),
                    };
                    self.error(
                        Diagnostic::error(
                            span,
                            format!(
                                "the recurrence reads steps up to {}, beyond {what}",
                                needed - 1
                            ),
                        )
                        .label("sequence too short")
                        .with(self.span_of(outer), format!("this is {}", ty.shape))
                        .help("sequences are [B, T, ...] with time on axis 1"),
                    );
                    return Value::Poison;
                }
                if let Some(&node) = frame.sliced.get(&outer) {
                    return Value::Tensor(TRef { depth, node });
                }
                let slice_ty = shape::without_time(&ty);
                let espan = self.span_of(outer);
                let frame = &mut self.frames[depth as usize - 1];
                let node = frame.graph.push(Node {
                    op: Op::Arg(0),
                    inputs: Vec::new(),
                    ty: slice_ty,
                    span: espan,
                    layer: None,
                });
                frame.args.push((ArgKind::Seq(outer), node));
                frame.sliced.insert(outer, node);
                Value::Tensor(TRef { depth, node })
            }
            Value::Poison => Value::Poison,
            other => {
                self.error(
                    Diagnostic::error(
                        bspan,
                        format!(
                            "only sequences can be read at a time step, and this is {}",
                            other.kind()
                        ),
                    )
                    .label("not a sequence"),
                );
                Value::Poison
            }
        }
    }

    /// How many classes a class-index tensor has, following slices back to
    /// the declared input.
    pub(super) fn classes_of(&self, t: TRef) -> Option<usize> {
        let node = self.node(t);
        match &node.op {
            Op::Input { index } => self.model.inputs.get(*index).and_then(|i| i.classes),
            Op::Arg(_) if t.depth > 0 => {
                let frame = &self.frames[t.depth as usize - 1];
                frame
                    .args
                    .iter()
                    .find(|(_, n)| *n == t.node)
                    .and_then(|(k, _)| match k {
                        ArgKind::Seq(o) | ArgKind::Capture(o) => self.classes_of(*o),
                        ArgKind::State => None,
                    })
            }
            Op::Slice { .. } | Op::Reshape { .. } | Op::Transpose { .. } => {
                node.inputs.first().and_then(|&i| {
                    self.classes_of(TRef {
                        depth: t.depth,
                        node: i,
                    })
                })
            }
            _ => None,
        }
    }
}
