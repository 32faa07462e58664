//! What an expression evaluates to while a model is being lowered.
//!
//! Numbers, booleans, strings and lists are known when the model is built
//! (block arguments, kernel sizes, shapes); tensors are nodes of the graph
//! being built; layers are functions from tensors to tensors, applied by `|>`
//! or by a call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use super::layers::Builtin;
use crate::diag::Span;
use crate::ir::graph::NodeId;
use crate::syntax::ast;

/// A tensor: a node of the graph at recurrence depth `depth` (0 is the model's
/// graph, 1 the body of a recurrence in it, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TRef {
    pub depth: u32,
    pub node: NodeId,
}

#[derive(Debug, Clone)]
pub enum Value<'p> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value<'p>>),
    Tuple(Vec<Value<'p>>),
    /// The batch size `B`, inside shapes.
    Batch,
    Tensor(TRef),
    Layer(Rc<Callable<'p>>),
    /// The time variable of a recurrence, with an offset: `t`, `t - 1`.
    Time(i64),
    /// A recurrence state name inside its own body (`s` in `s[t-1]`).
    StateSeq(usize),
    /// Stands in for a value whose expression had an error (already reported).
    Poison,
}

impl Value<'_> {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Int(_) => "a whole number",
            Value::Float(_) => "a number",
            Value::Bool(_) => "true or false",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Batch => "the batch size B",
            Value::Tensor(_) => "a tensor",
            Value::Layer(_) => "a layer",
            Value::Time(_) => "the time step",
            Value::StateSeq(_) => "a recurrence state",
            Value::Poison => "an erroneous value",
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// A whole number, accepting floats that are exactly whole (`64 / 2`).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            _ => None,
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::List(items) | Value::Tuple(items) => {
                f.write_str("[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Batch => f.write_str("B"),
            other => f.write_str(other.kind()),
        }
    }
}

/// An argument as evaluated at a call site.
#[derive(Debug, Clone)]
pub struct ArgValue<'p> {
    pub name: Option<ast::Ident>,
    pub value: Value<'p>,
    pub span: Span,
}

/// A layer: something applied to tensors.
#[derive(Debug)]
pub struct Callable<'p> {
    pub kind: CallableKind<'p>,
    /// Arguments given so far (configuration, and extra tensors for layers
    /// with several inputs).
    pub args: Vec<ArgValue<'p>>,
    /// The layer's name: from `as name`, or the name it is bound to. A named
    /// layer applied twice shares its parameters.
    pub name: Option<ast::Ident>,
    /// Where the layer was written.
    pub span: Span,
    /// The path of its first application: applying the same layer again
    /// shares its parameters.
    pub applied: RefCell<Option<String>>,
}

impl<'p> Callable<'p> {
    pub fn new(kind: CallableKind<'p>, span: Span) -> Callable<'p> {
        Callable {
            kind,
            args: Vec::new(),
            name: None,
            span,
            applied: RefCell::new(None),
        }
    }

    /// A copy that is a new layer (no shared application yet).
    pub fn fresh(&self) -> Callable<'p> {
        Callable {
            kind: self.kind.clone(),
            args: self.args.clone(),
            name: self.name.clone(),
            span: self.span,
            applied: RefCell::new(None),
        }
    }

    /// How many tensor inputs make a call complete.
    pub fn arity(&self) -> usize {
        match &self.kind {
            CallableKind::Builtin(b) => b.inputs.0,
            CallableKind::Block(def) => def.inputs.len(),
            CallableKind::Compose(_) | CallableKind::Repeat { .. } => 1,
        }
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            CallableKind::Builtin(b) => format!("`{}`", b.name),
            CallableKind::Block(def) => format!("the block `{}`", def.name.name),
            CallableKind::Compose(_) => "this chain of layers".into(),
            CallableKind::Repeat { .. } => "this repeat".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum CallableKind<'p> {
    Builtin(&'static Builtin),
    Block(&'p ast::BlockDef),
    /// `a |> b` where `a` is a layer: apply `a`, then `b`.
    Compose(Vec<Rc<Callable<'p>>>),
    /// `repeat i in a..b { stage }`, evaluated in `env`.
    Repeat {
        var: Option<&'p ast::Ident>,
        start: i64,
        end: i64,
        body: &'p ast::Body,
        env: Env<'p>,
    },
}

/// One name bound in a scope.
#[derive(Debug, Clone)]
pub struct Binding<'p> {
    pub value: Value<'p>,
    pub span: Span,
}

/// Names visible in a model or block body. Blocks see only their own
/// arguments and names, never their caller's.
#[derive(Debug, Clone, Default)]
pub struct Env<'p> {
    pub vars: HashMap<String, Binding<'p>>,
}

impl<'p> Env<'p> {
    pub fn get(&self, name: &str) -> Option<&Binding<'p>> {
        self.vars.get(name)
    }
}
