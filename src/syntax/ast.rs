//! The syntax tree of a `.nn` file: what the user wrote, with a span on every node.
//!
//! Nothing here is resolved or checked; `ir::lower` gives it meaning.

use crate::diag::Span;

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One parsed file.
#[derive(Debug, Clone, Default)]
pub struct File {
    pub uses: Vec<Use>,
    pub blocks: Vec<BlockDef>,
    pub models: Vec<ModelDef>,
    pub trains: Vec<TrainDef>,
}

/// `use "other.nn"`
#[derive(Debug, Clone)]
pub struct Use {
    pub path: String,
    pub span: Span,
}

/// `block basic(ch, stride = 1)(x) { ... }`
#[derive(Debug, Clone)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<BlockParam>,
    pub inputs: Vec<Ident>,
    pub body: Body,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct BlockParam {
    pub name: Ident,
    pub default: Option<Expr>,
}

/// `model lenet { ... }`
#[derive(Debug, Clone)]
pub struct ModelDef {
    pub name: Ident,
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum Stmt {
    /// `input x: [B, 784]` or `input t: [B, 32] classes 65`
    Input(Decl),
    /// `labels y: [B] classes 10` or `labels t: [B, 1]`
    Labels(Decl),
    /// `param W: [784, 128] init normal(0.01)`
    Param(ParamDecl),
    /// `output logits`
    Output(Vec<Ident>),
    /// `h = x |> dense(128)` or `h, c = recur ...`
    Assign(Assign),
}

/// A declared input or labels tensor.
#[derive(Debug, Clone)]
pub struct Decl {
    pub name: Ident,
    pub shape: Expr,
    pub classes: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct ParamDecl {
    pub name: Ident,
    pub shape: Expr,
    pub init: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Assign {
    pub targets: Vec<Ident>,
    pub value: Expr,
    pub span: Span,
}

/// Statements, then the value: the last expression(s).
#[derive(Debug, Clone)]
pub struct Body {
    pub stmts: Vec<Assign>,
    pub result: Vec<Expr>,
    pub span: Span,
}

/// `train lenet { optimizer adam(lr: 1e-3)  batch 64 }`
#[derive(Debug, Clone)]
pub struct TrainDef {
    pub model: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
}

#[derive(Debug, Clone)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Pipe,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Pipe => "|>",
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

/// An argument of a call: positional, or `name: value`.
#[derive(Debug, Clone)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

#[derive(Debug, Clone)]
pub enum ExprKind {
    /// Stands in for a part that failed to parse (already reported).
    Error,
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    Name(String),
    List(Vec<Expr>),
    Tuple(Vec<Expr>),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `f(a, b, key: c)`; the callee is usually a name, or a call for `f(a)(x)`.
    Call(Box<Expr>, Vec<Arg>),
    /// `x[t]`, `s[t-1]`: a time step of a sequence.
    Index(Box<Expr>, Box<Expr>),
    /// `conv2d(6, kernel: 5) as conv1`: names a layer.
    Named(Box<Expr>, Ident),
    /// `W.T`
    Field(Box<Expr>, Ident),
    If(Box<Expr>, Box<Body>, Option<Box<Body>>),
    Recur(Box<Recur>),
    Repeat(Box<Repeat>),
}

/// `recur t in 0..T from init [stateful] [truncate k] { body }`
#[derive(Debug, Clone)]
pub struct Recur {
    pub var: Ident,
    pub start: Expr,
    pub end: Expr,
    pub init: Vec<Expr>,
    pub stateful: bool,
    pub truncate: Option<Expr>,
    pub body: Body,
}

/// `repeat 3 { stage }` or `repeat i in 0..n { stage }`
#[derive(Debug, Clone)]
pub struct Repeat {
    pub var: Option<Ident>,
    pub start: Option<Expr>,
    pub end: Expr,
    pub body: Body,
}
