//! Source text → syntax tree, with the grammar in `grammar/nn.pest`.

use std::sync::LazyLock;

use pest::Parser as _;
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};

use super::ast::*;
use super::syntax_error::syntax_error;
use crate::diag::{Diagnostic, FileId, Span};

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/nn.pest"]
pub(super) struct NnParser;

/// Deeper nesting than this is refused before parsing: no real model needs it,
/// and it keeps every recursive pass far from the end of the stack.
pub const MAX_NESTING: usize = 200;
/// Longest operator chain in one expression (the tree depth of `a + a + ... + a`).
pub const MAX_EXPR_DEPTH: usize = 2000;

/// Operator precedence, loosest first. `|>` binds loosest so that
/// `x + y |> relu` is `relu(x + y)`.
static PRATT: LazyLock<PrattParser<Rule>> = LazyLock::new(|| {
    PrattParser::new()
        .op(Op::infix(Rule::pipe, Assoc::Left))
        .op(Op::infix(Rule::or, Assoc::Left))
        .op(Op::infix(Rule::and, Assoc::Left))
        .op(Op::prefix(Rule::not))
        .op(Op::infix(Rule::eq, Assoc::Left)
            | Op::infix(Rule::ne, Assoc::Left)
            | Op::infix(Rule::lt, Assoc::Left)
            | Op::infix(Rule::le, Assoc::Left)
            | Op::infix(Rule::gt, Assoc::Left)
            | Op::infix(Rule::ge, Assoc::Left))
        .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
        .op(Op::infix(Rule::mul, Assoc::Left) | Op::infix(Rule::div, Assoc::Left))
        .op(Op::infix(Rule::matmul, Assoc::Left))
        .op(Op::prefix(Rule::neg))
});

/// Parses one file. Syntax errors come back as diagnostics; the tree is only
/// returned when the file parsed.
pub fn parse_file(file: FileId, text: &str) -> Result<File, Vec<Diagnostic>> {
    if let Some(d) = check_nesting(file, text) {
        return Err(vec![d]);
    }
    let pairs = NnParser::parse(Rule::file, text).map_err(|e| {
        // Parse again with pest's detailed tracking, which names the literal
        // tokens (`)`, `}`) it expected. The switch is process-wide: the lock
        // keeps another thread's reparse from finding it off, and a plain
        // parse that finds it on is only slower, not different.
        let attempts = || {
            static DETAIL: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _guard = DETAIL
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pest::set_error_detail(true);
            let again = NnParser::parse(Rule::file, text);
            pest::set_error_detail(false);
            let a = again.err()?.parse_attempts()?;
            let tokens = a.expected_tokens().iter().map(|t| t.to_string()).collect();
            Some((a.max_position, tokens))
        };
        vec![syntax_error(file, text, e, attempts)]
    })?;
    let comments = comment_ranges(text);
    let mut b = Builder {
        file,
        errors: Vec::new(),
        comments: &comments,
    };
    let mut out = File::default();
    for pair in pairs.into_iter().flat_map(|p| p.into_inner()) {
        match pair.as_rule() {
            Rule::use_decl => out.uses.push(b.use_decl(pair)),
            Rule::block_def => out.blocks.push(b.block_def(pair)),
            Rule::model_def => out.models.push(b.model_def(pair)),
            Rule::train_def => out.trains.push(b.train_def(pair)),
            _ => {}
        }
    }
    if b.errors.is_empty() {
        Ok(out)
    } else {
        Err(b.errors)
    }
}

/// Refuses absurdly deep bracket nesting with a diagnostic instead of recursing.
fn check_nesting(file: FileId, text: &str) -> Option<Diagnostic> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut in_comment = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_comment {
            in_comment = c != b'\n';
        } else if in_string {
            match c {
                b'\\' => i += 1,
                b'"' | b'\n' => in_string = false,
                _ => {}
            }
        } else {
            match c {
                b'#' => in_comment = true,
                b'"' => in_string = true,
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(
                            Diagnostic::error(
                                Span::new(file, i, i + 1),
                                format!("brackets are nested more than {MAX_NESTING} deep"),
                            )
                            .label("nested too deeply")
                            .help("split the expression into named steps"),
                        );
                    }
                }
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

struct Builder<'c> {
    file: FileId,
    errors: Vec<Diagnostic>,
    /// The file's comments, to keep them out of spans.
    comments: &'c [(usize, usize)],
}

/// Child pairs of a rule, in order.
fn kids(pair: Pair<'_, Rule>) -> Pairs<'_, Rule> {
    pair.into_inner()
}

impl Builder<'_> {
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        // A rule that ends in an optional part (`if ... { } else { }`) also
        // covers the whitespace and comments pest skipped looking for it:
        // leave them out.
        let text = pair.as_str();
        let mut len = text.len();
        loop {
            len = text[..len]
                .trim_end_matches([' ', '\t', '\r', '\n', ';'])
                .len();
            let end = s.start() + len;
            let i = self.comments.partition_point(|&(start, _)| start < end);
            match i.checked_sub(1).map(|i| self.comments[i]) {
                Some((start, stop)) if end <= stop && start >= s.start() => {
                    len = start - s.start();
                }
                _ => break,
            }
        }
        Span::new(self.file, s.start(), s.start() + len)
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident {
            span: self.span(&pair),
            name: pair.as_str().to_string(),
        }
    }

    fn use_decl(&mut self, pair: Pair<'_, Rule>) -> Use {
        let span = self.span(&pair);
        let path = kids(pair)
            .find(|p| p.as_rule() == Rule::string)
            .map(|p| unescape(string_inner(p)))
            .unwrap_or_default();
        Use { path, span }
    }

    fn block_def(&mut self, pair: Pair<'_, Rule>) -> BlockDef {
        let span = self.span(&pair);
        let mut name = None;
        let mut params = Vec::new();
        let mut inputs = Vec::new();
        let mut body = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(p)),
                Rule::block_params => {
                    for bp in kids(p) {
                        let mut it = kids(bp);
                        let name = it.next().map(|n| self.ident(n));
                        let default = it.next().map(|e| self.expr(e));
                        if let Some(name) = name {
                            params.push(BlockParam { name, default });
                        }
                    }
                }
                Rule::block_inputs => inputs = kids(p).map(|i| self.ident(i)).collect(),
                Rule::body => body = Some(self.body(p)),
                _ => {}
            }
        }
        BlockDef {
            name: name.unwrap_or_else(|| missing(span)),
            params,
            inputs,
            body: body.unwrap_or_else(|| empty_body(span)),
            span,
        }
    }

    fn model_def(&mut self, pair: Pair<'_, Rule>) -> ModelDef {
        let span = self.span(&pair);
        let mut it = kids(pair).filter(|p| p.as_rule() != Rule::kw_model);
        let name = it.next().map_or_else(|| missing(span), |p| self.ident(p));
        let mut stmts = Vec::new();
        for p in it {
            match p.as_rule() {
                Rule::input_decl => {
                    for d in decl_items(p) {
                        stmts.push(Stmt::Input(self.decl(d)));
                    }
                }
                Rule::labels_decl => {
                    for d in decl_items(p) {
                        stmts.push(Stmt::Labels(self.decl(d)));
                    }
                }
                Rule::param_decl => {
                    for d in kids(p).filter(|d| d.as_rule() == Rule::param_item) {
                        stmts.push(Stmt::Param(self.param_item(d)));
                    }
                }
                Rule::output_decl => stmts.push(Stmt::Output(
                    kids(p)
                        .filter(|i| i.as_rule() == Rule::ident)
                        .map(|i| self.ident(i))
                        .collect(),
                )),
                Rule::assign => stmts.push(Stmt::Assign(self.assign(p))),
                _ => {}
            }
        }
        ModelDef { name, stmts, span }
    }

    fn decl(&mut self, pair: Pair<'_, Rule>) -> Decl {
        let span = self.span(&pair);
        let mut name = None;
        let mut shape = None;
        let mut classes = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(p)),
                Rule::list => shape = Some(self.primary(p)),
                Rule::expr => classes = Some(self.expr(p)),
                _ => {}
            }
        }
        Decl {
            name: name.unwrap_or_else(|| missing(span)),
            shape: shape.unwrap_or_else(|| error_expr(span)),
            classes,
            span,
        }
    }

    fn param_item(&mut self, pair: Pair<'_, Rule>) -> ParamDecl {
        let span = self.span(&pair);
        let mut name = None;
        let mut shape = None;
        let mut init = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(p)),
                Rule::list => shape = Some(self.primary(p)),
                Rule::term => init = Some(self.term(p)),
                _ => {}
            }
        }
        ParamDecl {
            name: name.unwrap_or_else(|| missing(span)),
            shape: shape.unwrap_or_else(|| error_expr(span)),
            init,
            span,
        }
    }

    fn train_def(&mut self, pair: Pair<'_, Rule>) -> TrainDef {
        let span = self.span(&pair);
        let mut it = kids(pair).filter(|p| p.as_rule() != Rule::kw_train);
        let model = it.next().map_or_else(|| missing(span), |p| self.ident(p));
        let settings = it
            .filter(|p| p.as_rule() == Rule::setting)
            .filter_map(|p| {
                let mut s = kids(p);
                let key = self.ident(s.next()?);
                let value = self.expr(s.next()?);
                Some(Setting { key, value })
            })
            .collect();
        TrainDef {
            model,
            settings,
            span,
        }
    }

    fn assign(&mut self, pair: Pair<'_, Rule>) -> Assign {
        let span = self.span(&pair);
        let mut targets = Vec::new();
        let mut value = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::targets => targets = kids(p).map(|i| self.ident(i)).collect(),
                Rule::expr => value = Some(self.expr(p)),
                _ => {}
            }
        }
        Assign {
            targets,
            value: value.unwrap_or_else(|| error_expr(span)),
            span,
        }
    }

    fn body(&mut self, pair: Pair<'_, Rule>) -> Body {
        let span = self.span(&pair);
        let mut stmts = Vec::new();
        let mut result = Vec::new();
        for p in kids(pair) {
            match p.as_rule() {
                Rule::assign => stmts.push(self.assign(p)),
                Rule::expr => result.push(self.expr(p)),
                _ => {}
            }
        }
        Body {
            stmts,
            result,
            span,
        }
    }

    fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let file = self.file;
        // The Pratt closures cannot borrow `self` mutably all at once; collect
        // diagnostics in a cell and merge them after.
        let errors = std::cell::RefCell::new(Vec::new());
        let builder = std::cell::RefCell::new(Builder {
            file,
            errors: Vec::new(),
            comments: self.comments,
        });
        let out = PRATT
            .map_primary(|p| builder.borrow_mut().term(p))
            .map_prefix(|op, rhs| {
                let s = op.as_span();
                let span = Span::new(file, s.start(), s.end()).to(rhs.span);
                let un = if op.as_rule() == Rule::neg {
                    UnOp::Neg
                } else {
                    UnOp::Not
                };
                deepen(
                    Expr {
                        kind: ExprKind::Unary(un, Box::new(rhs)),
                        span,
                    },
                    &errors,
                )
            })
            .map_infix(|lhs, op, rhs| {
                let span = lhs.span.to(rhs.span);
                let bin = match op.as_rule() {
                    Rule::pipe => BinOp::Pipe,
                    Rule::or => BinOp::Or,
                    Rule::and => BinOp::And,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    _ => BinOp::MatMul,
                };
                deepen(
                    Expr {
                        kind: ExprKind::Binary(bin, Box::new(lhs), Box::new(rhs)),
                        span,
                    },
                    &errors,
                )
            })
            .parse(pair.into_inner());
        self.errors.extend(builder.into_inner().errors);
        self.errors.extend(errors.into_inner());
        out
    }

    /// A primary with its postfixes: calls, `[t]`, `as name`, `.T`.
    fn term(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let mut it = kids(pair);
        let Some(first) = it.next() else {
            return error_expr(Span::default());
        };
        let mut e = self.primary(first);
        for post in it {
            let Some(p) = post.into_inner().next() else {
                continue;
            };
            let pspan = self.span(&p);
            let span = e.span.to(pspan);
            e = match p.as_rule() {
                Rule::call_args => {
                    let args = kids(p).map(|a| self.arg(a)).collect();
                    Expr {
                        kind: ExprKind::Call(Box::new(e), args),
                        span,
                    }
                }
                Rule::index => {
                    let i = kids(p).next().map(|x| self.expr(x));
                    Expr {
                        kind: ExprKind::Index(
                            Box::new(e),
                            Box::new(i.unwrap_or(error_expr(pspan))),
                        ),
                        span,
                    }
                }
                Rule::as_name => {
                    let path = kids(p)
                        .find(|x| x.as_rule() == Rule::path)
                        .map(|x| self.ident(x));
                    Expr {
                        kind: ExprKind::Named(Box::new(e), path.unwrap_or_else(|| missing(pspan))),
                        span,
                    }
                }
                _ => {
                    let f = kids(p).next().map(|x| self.ident(x));
                    Expr {
                        kind: ExprKind::Field(Box::new(e), f.unwrap_or_else(|| missing(pspan))),
                        span,
                    }
                }
            };
        }
        e
    }

    fn arg(&mut self, pair: Pair<'_, Rule>) -> Arg {
        let mut name = None;
        let mut value = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::ident => name = Some(self.ident(p)),
                _ => value = Some(self.expr(p)),
            }
        }
        Arg {
            value: value.unwrap_or_else(|| error_expr(Span::default())),
            name,
        }
    }

    fn primary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        // `primary` is silent in the grammar except as the explicit `!{}` wrapper.
        let pair = if pair.as_rule() == Rule::primary {
            match pair.into_inner().next() {
                Some(p) => p,
                None => return error_expr(Span::default()),
            }
        } else {
            pair
        };
        let span = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::int => match pair.as_str().parse::<i64>() {
                Ok(v) => ExprKind::Int(v),
                Err(_) => {
                    self.errors.push(
                        Diagnostic::error(span, "this number is too large")
                            .label("does not fit in 64 bits"),
                    );
                    ExprKind::Int(0)
                }
            },
            Rule::float => ExprKind::Float(pair.as_str().parse::<f64>().unwrap_or(f64::NAN)),
            Rule::string => ExprKind::Str(unescape(string_inner(pair))),
            Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
            Rule::ident => ExprKind::Name(pair.as_str().to_string()),
            Rule::list => ExprKind::List(kids(pair).map(|e| self.expr(e)).collect()),
            Rule::paren => {
                let mut items: Vec<Expr> = kids(pair).map(|e| self.expr(e)).collect();
                if items.len() == 1 {
                    return items.pop().unwrap_or_else(|| error_expr(span));
                }
                ExprKind::Tuple(items)
            }
            Rule::if_expr => return self.if_expr(pair),
            Rule::recur_expr => return self.recur(pair),
            Rule::repeat_expr => return self.repeat(pair),
            _ => return error_expr(span),
        };
        Expr { kind, span }
    }

    fn if_expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let mut cond = None;
        let mut then = None;
        let mut otherwise = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::expr => cond = Some(self.expr(p)),
                Rule::body if then.is_none() => then = Some(self.body(p)),
                Rule::body => otherwise = Some(self.body(p)),
                Rule::if_expr => {
                    // `else if`: wrap the nested `if` as a body of one expression.
                    let e = self.if_expr(p);
                    otherwise = Some(Body {
                        span: e.span,
                        stmts: Vec::new(),
                        result: vec![e],
                    });
                }
                _ => {}
            }
        }
        Expr {
            kind: ExprKind::If(
                Box::new(cond.unwrap_or_else(|| error_expr(span))),
                Box::new(then.unwrap_or_else(|| empty_body(span))),
                otherwise.map(Box::new),
            ),
            span,
        }
    }

    fn range(&mut self, pair: Pair<'_, Rule>) -> (Expr, Expr) {
        let span = self.span(&pair);
        let mut ends = kids(pair).map(|p| self.primary(p));
        let a = ends.next().unwrap_or_else(|| error_expr(span));
        let b = ends.next().unwrap_or_else(|| error_expr(span));
        (a, b)
    }

    fn recur(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let mut var = None;
        let mut range = None;
        let mut init = Vec::new();
        let mut stateful = false;
        let mut truncate = None;
        let mut body = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::ident => var = Some(self.ident(p)),
                Rule::range => range = Some(self.range(p)),
                Rule::recur_init => init = kids(p).map(|e| self.expr(e)).collect(),
                Rule::recur_option => {
                    for o in kids(p) {
                        match o.as_rule() {
                            Rule::stateful => stateful = true,
                            Rule::truncate => {
                                truncate = kids(o)
                                    .find(|t| t.as_rule() == Rule::term)
                                    .map(|t| self.term(t))
                            }
                            _ => {}
                        }
                    }
                }
                Rule::body => body = Some(self.body(p)),
                _ => {}
            }
        }
        let (start, end) = range.unwrap_or_else(|| (error_expr(span), error_expr(span)));
        Expr {
            kind: ExprKind::Recur(Box::new(Recur {
                var: var.unwrap_or_else(|| missing(span)),
                start,
                end,
                init,
                stateful,
                truncate,
                body: body.unwrap_or_else(|| empty_body(span)),
            })),
            span,
        }
    }

    fn repeat(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let span = self.span(&pair);
        let mut var = None;
        let mut start = None;
        let mut end = None;
        let mut body = None;
        for p in kids(pair) {
            match p.as_rule() {
                Rule::ident => var = Some(self.ident(p)),
                Rule::range => {
                    let (a, b) = self.range(p);
                    start = Some(a);
                    end = Some(b);
                }
                Rule::term => end = Some(self.term(p)),
                Rule::body => body = Some(self.body(p)),
                _ => {}
            }
        }
        Expr {
            kind: ExprKind::Repeat(Box::new(Repeat {
                var,
                start,
                end: end.unwrap_or_else(|| error_expr(span)),
                body: body.unwrap_or_else(|| empty_body(span)),
            })),
            span,
        }
    }
}

/// Refuses to grow one expression tree past [`MAX_EXPR_DEPTH`].
fn deepen(e: Expr, errors: &std::cell::RefCell<Vec<Diagnostic>>) -> Expr {
    let depth = expr_depth(&e);
    if depth > MAX_EXPR_DEPTH {
        let mut errs = errors.borrow_mut();
        if errs.is_empty() {
            errs.push(
                Diagnostic::error(
                    e.span,
                    format!("this expression has more than {MAX_EXPR_DEPTH} nested operators"),
                )
                .label("too long")
                .help("split it into named steps"),
            );
        }
        return error_expr(e.span);
    }
    e
}

/// Operator depth along the left and right spines only: children were already
/// checked when they were built, so this is cheap.
fn expr_depth(e: &Expr) -> usize {
    let mut best = 0;
    for (first_left, mut cur) in [(true, e), (false, e)] {
        let mut d = 0;
        loop {
            let next = match &cur.kind {
                ExprKind::Binary(_, l, r) => {
                    if first_left {
                        l
                    } else {
                        r
                    }
                }
                ExprKind::Unary(_, x) => x,
                _ => break,
            };
            d += 1;
            cur = next;
        }
        best = best.max(d);
    }
    best
}

/// Byte ranges of the comments of a file, in order.
fn comment_ranges(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut start = None;
    for (i, c) in text.char_indices() {
        if let Some(s) = start {
            if c == '\n' {
                out.push((s, i));
                start = None;
            }
        } else if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' || c == '\n' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '#' {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, text.len()));
    }
    out
}

fn decl_items(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    kids(pair).filter(|d| d.as_rule() == Rule::decl_item)
}

fn string_inner(pair: Pair<'_, Rule>) -> &str {
    pair.into_inner().next().map_or("", |p| p.as_str())
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn missing(span: Span) -> Ident {
    Ident {
        name: String::new(),
        span,
    }
}

fn error_expr(span: Span) -> Expr {
    Expr {
        kind: ExprKind::Error,
        span,
    }
}

fn empty_body(span: Span) -> Body {
    Body {
        stmts: Vec::new(),
        result: Vec::new(),
        span,
    }
}
