//! Lowering: syntax tree → IR. Blocks are expanded, names resolved, layers
//! turned into primitives with their parameters, and every node's shape
//! inferred by the rules of [`crate::ir::shape`] as it is built (a layer's
//! parameters are sized from its input). Errors are collected, not thrown:
//! a node whose shape cannot be known is "poisoned" and silences the errors
//! that would only follow from it, so one run reports every real problem.

mod args;
mod expr;
mod layers;
mod order;
mod recur;
mod scope;
mod train;
mod value;

use std::collections::{HashMap, HashSet};

use crate::diag::{Diagnostic, Span};
use crate::ir::graph::{Graph, Node, NodeId};
use crate::ir::model::{Init, Input, InputKind, Mode, Model, Param, State};
use crate::ir::ops::{Op, ParamId, StateId};
use crate::ir::shape;
use crate::ir::types::{Dim, Shape, TensorType};
use crate::syntax::ast;
use crate::syntax::program::Program;

pub use layers::{builtin_names, reference as builtin_reference};

/// The closest known name to a misspelt one.
pub fn suggest_name<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    args::suggest(name, known)
}
use value::{Env, TRef, Value};

/// How to lower.
#[derive(Debug, Clone)]
pub struct LowerOptions {
    pub mode: Mode,
    /// Refuse models whose forward tensors need more bytes than this at the
    /// training batch size.
    pub memory_limit: u64,
    /// Build dropout into the training graph (off: dropout layers are the
    /// identity, e.g. to compare gradients with another framework).
    pub dropout: bool,
}

impl Default for LowerOptions {
    fn default() -> LowerOptions {
        LowerOptions {
            mode: Mode::Train,
            memory_limit: 16 << 30,
            dropout: true,
        }
    }
}

/// Blocks are expanded inline; a block that calls itself deeper than this is refused.
const MAX_BLOCK_DEPTH: usize = 64;
/// Most layer applications and operations one model may take to build: far
/// beyond any real network, and it keeps `repeat 10000 { repeat 10000 { .. } }`
/// from running for minutes.
const MAX_WORK: usize = 1 << 18;
/// Largest number of elements one tensor may have per batch item.
const MAX_ELEMENTS: usize = 1 << 40;

/// The blocks of a program by name, and the problems found collecting them.
pub struct Blocks<'p> {
    map: HashMap<&'p str, &'p ast::BlockDef>,
}

impl<'p> Blocks<'p> {
    pub fn collect(program: &'p Program, diags: &mut Vec<Diagnostic>) -> Blocks<'p> {
        let mut map: HashMap<&'p str, &'p ast::BlockDef> = HashMap::new();
        for (_, file) in &program.files {
            for b in &file.blocks {
                if let Some(prev) = map.get(b.name.name.as_str()) {
                    diags.push(
                        Diagnostic::error(
                            b.name.span,
                            format!("the block `{}` is defined twice", b.name.name),
                        )
                        .label("second definition")
                        .with(prev.name.span, "first defined here"),
                    );
                    continue;
                }
                if layers::find(&b.name.name).is_some() {
                    diags.push(
                        Diagnostic::error(
                            b.name.span,
                            format!(
                                "`{}` is a built-in layer; a block cannot take its name",
                                b.name.name
                            ),
                        )
                        .label("built-in name")
                        .help("choose another name for the block"),
                    );
                    continue;
                }
                map.insert(&b.name.name, b);
            }
        }
        Blocks { map }
    }

    pub fn get(&self, name: &str) -> Option<&'p ast::BlockDef> {
        self.map.get(name).copied()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().copied()
    }
}

/// Lowers one model (and its `train` block, if the file has one).
pub fn lower_model<'p>(
    blocks: &Blocks<'p>,
    def: &'p ast::ModelDef,
    train: Option<&'p ast::TrainDef>,
    opts: &LowerOptions,
) -> (Model, Vec<Diagnostic>) {
    let mut l = Lowerer::new(blocks, def, opts.mode);
    l.dropout = opts.dropout;
    l.lower_body(def);
    if let Some(t) = train {
        l.model.train = train::lower(t, &mut l.diags);
    }
    l.finish(opts);
    if !l.diags.iter().any(Diagnostic::is_error) {
        l.diags.append(&mut l.unused);
        crate::ir::rewrite::one_hot_products(&mut l.model.graph);
    }
    for d in &mut l.diags {
        shorten_block_trace(d);
    }
    (l.model, l.diags)
}

/// A recurrence body being built: its graph and where its arguments come from.
struct Frame {
    graph: Graph,
    /// Argument nodes in the order they were met, with their kind.
    args: Vec<(ArgKind, NodeId)>,
    /// Outer tensors read in the body, by outer ref: their argument node.
    captured: HashMap<TRef, NodeId>,
    /// Sequences sliced at `t`: outer ref → argument node.
    sliced: HashMap<TRef, NodeId>,
    /// Offset of the first step (`recur t in a..b` reads x[a + step]).
    start: i64,
    steps: usize,
    state_args: Vec<NodeId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    Seq(TRef),
    State,
    Capture(TRef),
}

pub(crate) struct Lowerer<'p, 'b> {
    blocks: &'b Blocks<'p>,
    model: Model,
    diags: Vec<Diagnostic>,
    mode: Mode,
    /// Whether dropout layers drop (see [`LowerOptions::dropout`]).
    dropout: bool,
    env: Env<'p>,
    /// Names looked up at least once, by the span of their definition.
    used: HashSet<Span>,
    frames: Vec<Frame>,
    scope: scope::Scope,
    block_depth: usize,
    /// The blocks being expanded, outermost first.
    open_blocks: Vec<&'p ast::BlockDef>,
    /// The bodies being lowered, for "used before it is defined".
    pending: Vec<order::Pending<'p>>,
    dropout_streams: u32,
    /// Spans already warned about (a block instantiated twice warns once).
    warned: HashSet<Span>,
    /// "never used" warnings, kept until the model is known to have no error.
    unused: Vec<Diagnostic>,
    /// Where the layer being lowered is applied (`b |> enc`), and where each
    /// parameter's layer was first applied: a shared layer applied to an
    /// input of another shape is reported at the second application.
    apply_site: Option<Span>,
    param_sites: HashMap<String, Span>,
    /// Layer applications and operations so far (see [`MAX_WORK`]), and
    /// whether going past it has been reported.
    work: usize,
    over_budget: bool,
}

impl<'p, 'b> Lowerer<'p, 'b> {
    fn new(blocks: &'b Blocks<'p>, def: &ast::ModelDef, mode: Mode) -> Lowerer<'p, 'b> {
        Lowerer {
            blocks,
            model: Model {
                name: def.name.name.clone(),
                span: def.name.span,
                mode,
                graph: Graph::new(),
                inputs: Vec::new(),
                params: Vec::new(),
                states: Vec::new(),
                state_updates: Vec::new(),
                layers: Vec::new(),
                names: Vec::new(),
                outputs: Vec::new(),
                loss: None,
                train: None,
            },
            diags: Vec::new(),
            mode,
            dropout: true,
            env: Env::default(),
            used: HashSet::new(),
            frames: Vec::new(),
            scope: scope::Scope::default(),
            block_depth: 0,
            open_blocks: Vec::new(),
            pending: Vec::new(),
            dropout_streams: 0,
            warned: HashSet::new(),
            unused: Vec::new(),
            apply_site: None,
            param_sites: HashMap::new(),
            work: 0,
            over_budget: false,
        }
    }

    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// Counts one layer application; `false` (reported once) when the model
    /// has grown past [`MAX_WORK`].
    fn spend(&mut self, span: Span) -> bool {
        self.work += 1;
        if self.work <= MAX_WORK {
            return true;
        }
        if !self.over_budget {
            self.over_budget = true;
            self.error(
                Diagnostic::error(
                    span,
                    format!("the model grows past {MAX_WORK} layers and operations here"),
                )
                .label("too large to build")
                .help("check the counts of `repeat` and blocks that use other blocks"),
            );
        }
        false
    }

    fn warn_once(&mut self, d: Diagnostic) {
        if self.warned.insert(d.primary.span) {
            self.diags.push(d);
        }
    }

    /// "never used" warnings wait for the end of the model: an error makes
    /// the names its expression read look unused, so they are only shown
    /// when the model has no error.
    fn warn_unused_once(&mut self, d: Diagnostic) {
        if self.warned.insert(d.primary.span) {
            self.unused.push(d);
        }
    }

    // ------------------------------------------------------------ graph access

    fn depth(&self) -> u32 {
        self.frames.len() as u32
    }

    fn graph_at(&mut self, depth: u32) -> &mut Graph {
        if depth == 0 {
            &mut self.model.graph
        } else {
            &mut self.frames[depth as usize - 1].graph
        }
    }

    fn graph_ref(&self, depth: u32) -> &Graph {
        if depth == 0 {
            &self.model.graph
        } else {
            &self.frames[depth as usize - 1].graph
        }
    }

    fn node(&self, t: TRef) -> &Node {
        self.graph_ref(t.depth).node(t.node)
    }

    pub(crate) fn ty(&self, t: TRef) -> Option<&TensorType> {
        self.node(t).ty.as_ref()
    }

    fn span_of(&self, t: TRef) -> Span {
        self.node(t).span
    }

    /// Makes an outer tensor usable at the current depth, capturing it into
    /// each recurrence body in between.
    fn import(&mut self, t: TRef) -> TRef {
        self.import_to(t, self.depth())
    }

    /// Makes a tensor usable at recurrence depth `target`.
    fn import_to(&mut self, t: TRef, target: u32) -> TRef {
        let mut cur = t;
        while cur.depth < target {
            let inner = cur.depth + 1;
            let frame = &self.frames[inner as usize - 1];
            if let Some(&arg) = frame.captured.get(&cur) {
                cur = TRef {
                    depth: inner,
                    node: arg,
                };
                continue;
            }
            let ty = self.ty(cur).cloned();
            let span = self.span_of(cur);
            let frame = &mut self.frames[inner as usize - 1];
            let arg = frame.graph.push(Node {
                op: Op::Arg(0),
                inputs: Vec::new(),
                ty,
                span,
                layer: None,
            });
            frame.args.push((ArgKind::Capture(cur), arg));
            frame.captured.insert(cur, arg);
            cur = TRef {
                depth: inner,
                node: arg,
            };
        }
        cur
    }

    /// Adds a node with no inputs and a known type at the current depth.
    fn leaf(&mut self, op: Op, ty: Option<TensorType>, span: Span) -> TRef {
        let depth = self.depth();
        let layer = self.scope.current_layer();
        let node = self.graph_at(depth).push(Node {
            op,
            inputs: Vec::new(),
            ty,
            span,
            layer,
        });
        TRef { depth, node }
    }

    /// Adds an op node, inferring its type. Shape errors are reported here with
    /// the op's span and the origins of the inputs to blame.
    pub(crate) fn add(&mut self, op: Op, inputs: &[TRef], span: Span) -> TRef {
        self.work += 1;
        let inputs: Vec<TRef> = inputs.iter().map(|&t| self.import(t)).collect();
        let depth = self.depth();
        let ty = {
            let g = self.graph_ref(depth);
            let tys: Option<Vec<&TensorType>> =
                inputs.iter().map(|t| g.node(t.node).ty.as_ref()).collect();
            let ops: Vec<&Op> = inputs.iter().map(|t| &g.node(t.node).op).collect();
            tys.map(|tys| shape::infer(&op, &tys, &ops))
        };
        let ty = match ty {
            None => None,
            Some(Ok(t)) => self.check_size(t, span),
            Some(Err(e)) => {
                let mut d = Diagnostic::error(span, e.message).label(e.label);
                for &i in &e.blame {
                    if let Some(&t) = inputs.get(i) {
                        d = d.with(self.span_of(t), self.origin_label(t));
                    }
                }
                if let Some(h) = e.help {
                    d = d.help(h);
                }
                self.error(d);
                None
            }
        };
        let layer = self.scope.current_layer();
        let node = self.graph_at(depth).push(Node {
            op,
            inputs: inputs.iter().map(|t| t.node).collect(),
            ty,
            span,
            layer,
        });
        TRef { depth, node }
    }

    /// "x is ", "this is " — how a secondary label introduces a tensor.
    fn describe_origin(&self, t: TRef) -> String {
        if t.depth == 0
            && let Some(name) = self.model.name_of(t.node)
        {
            return format!("`{name}` is ");
        }
        "this is ".to_string()
    }

    /// "`x` is [B, 784]", "`y` is [B] (class indices)": a secondary label
    /// saying what a tensor is, at the place it comes from.
    pub(crate) fn origin_label(&self, t: TRef) -> String {
        let what = self.describe_origin(t);
        match self.ty(t) {
            Some(ty) if ty.dtype == crate::ir::types::DType::I32 => {
                format!("{what}{} (class indices)", ty.shape)
            }
            Some(ty) => format!("{what}{}", ty.shape),
            None => format!("{what}unknown"),
        }
    }

    /// Refuses a tensor with more elements per batch item than any machine
    /// holds; `what` names it ("a tensor", "the parameter `fc1.weight`").
    fn check_size(&mut self, t: TensorType, span: Span) -> Option<TensorType> {
        self.check_size_of(t, span, "a tensor")
    }

    fn check_size_of(&mut self, t: TensorType, span: Span, what: &str) -> Option<TensorType> {
        match t.shape.numel_parts() {
            Some((n, _)) if n <= MAX_ELEMENTS => Some(t),
            _ => {
                let per_item = if t.shape.has_batch() {
                    " per batch item"
                } else {
                    ""
                };
                self.error(
                    Diagnostic::error(
                        span,
                        format!("{what} of shape {} is too large to exist", t.shape),
                    )
                    .label(format!("more than 2^40 elements{per_item}"))
                    .help("no machine holds a tensor this size; check the sizes for a typo"),
                );
                None
            }
        }
    }

    /// A scalar constant at the current depth.
    fn scalar(&mut self, v: f64, span: Span) -> TRef {
        self.add(
            Op::Fill {
                value: v,
                shape: Shape::scalar(),
            },
            &[],
            span,
        )
    }

    // ------------------------------------------------------------ parameters

    /// Creates (or, for a shared layer applied again, finds) the parameter
    /// `local` of the current layer.
    fn param(&mut self, local: &str, shape: Shape, init: Init, span: Span) -> TRef {
        let name = self.scope.qualify(local);
        if let Some(existing) = self.scope.reuse_param(&name) {
            let p = &mut self.model.params[existing.0 as usize];
            p.uses += 1;
            let (node, pshape, pspan) = (p.node, p.shape.clone(), p.span);
            if pshape != shape {
                let here = self.apply_site.unwrap_or(span);
                let first = self.param_sites.get(&name).copied().unwrap_or(pspan);
                let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l);
                self.error(
                    Diagnostic::error(
                        here,
                        format!("the shared layer `{layer}` is applied to an input of another shape"),
                    )
                    .label(format!("this input needs `{name}` to be {shape}"))
                    .with(first, format!("first applied here, making `{name}` {pshape}"))
                    .help("a layer applied twice shares its weights, so its inputs must have the same shape; for a layer of its own, write the layer again instead of its name"),
                );
                // The result is unknown; what follows from it is not reported.
                let node = self.model.graph.push(Node {
                    op: Op::Param(existing),
                    inputs: Vec::new(),
                    ty: None,
                    span,
                    layer: self.scope.current_layer(),
                });
                return TRef { depth: 0, node };
            }
            return TRef { depth: 0, node };
        }
        if let Some(site) = self.apply_site {
            self.param_sites.insert(name.clone(), site);
        }
        let id = ParamId(self.model.params.len() as u32);
        // A parameter too large to exist is reported and poisons what uses it.
        let ty = self.check_size_of(
            TensorType::f32(shape.clone()),
            span,
            &format!("the parameter `{name}`"),
        );
        let node = self.model.graph.push(Node {
            op: Op::Param(id),
            inputs: Vec::new(),
            ty,
            span,
            layer: self.scope.current_layer(),
        });
        self.scope.register_param(name.clone(), id);
        self.model.params.push(Param {
            name,
            shape,
            init,
            node,
            span,
            layer: self.scope.current_layer(),
            uses: 1,
        });
        if let Some(l) = self.scope.current_layer() {
            self.model.layers[l.0 as usize].params.push(id);
        }
        TRef { depth: 0, node }
    }

    /// A persistent buffer (running statistics, carried state) at the top level.
    fn state(&mut self, local: &str, ty: TensorType, init: f64, span: Span) -> (StateId, TRef) {
        let name = self.scope.qualify(local);
        let id = StateId(self.model.states.len() as u32);
        let node = self.model.graph.push(Node {
            op: Op::State(id),
            inputs: Vec::new(),
            ty: Some(ty.clone()),
            span,
            layer: self.scope.current_layer(),
        });
        self.model.states.push(State {
            name,
            ty,
            init,
            node,
            span,
        });
        (id, TRef { depth: 0, node })
    }

    // ------------------------------------------------------------ names

    /// Binds a name in the current scope; a second binding is an error.
    fn bind(&mut self, name: &ast::Ident, value: Value<'p>) {
        if name.name.is_empty() {
            return;
        }
        if let Some(prev) = self.env.get(&name.name) {
            let prev_span = prev.span;
            let prev_kind = prev.value.kind();
            let layer_clash =
                matches!(prev.value, Value::Layer(_)) != matches!(value, Value::Layer(_));
            let d = if layer_clash {
                // `h = x |> dense(4) as h`: `as` names the layer, `=` the tensor.
                Diagnostic::error(
                    name.span,
                    format!("`{}` names both a layer and a tensor", name.name),
                )
                .label(format!("defined here as {}", value.kind()))
                .with(prev_span, format!("and here as {prev_kind}"))
                .help(
                    "`layer as name` makes the name a layer (to share its weights with `|> name`); \
                     give the layer and the tensor different names",
                )
            } else {
                Diagnostic::error(name.span, format!("`{}` is defined twice", name.name))
                    .label("second definition")
                    .with(prev_span, "first defined here")
                    .help("every name is defined once; give the new value another name")
            };
            self.error(d);
            // Later uses of an ambiguous name would only repeat the error.
            if let Some(b) = self.env.vars.get_mut(&name.name) {
                b.value = Value::Poison;
            }
            return;
        }
        if name.name == "B" {
            self.error(
                Diagnostic::error(name.span, "`B` is the batch size and cannot be redefined")
                    .label("reserved name"),
            );
            return;
        }
        if let Value::Tensor(t) = &value
            && t.depth == 0
            && self.block_depth == 0
        {
            self.model.names.push((name.name.clone(), t.node));
        }
        self.env.vars.insert(
            name.name.clone(),
            value::Binding {
                value,
                span: name.span,
            },
        );
    }

    /// A declaration that failed (already reported) still defines its name,
    /// as an erroneous value, so its uses add no "not defined" errors.
    fn bind_if_missing(&mut self, name: &ast::Ident) {
        if !self.env.vars.contains_key(&name.name) {
            self.bind(name, Value::Poison);
        }
    }

    /// Looks a name up and marks it used.
    fn lookup(&mut self, name: &str) -> Option<Value<'p>> {
        let b = self.env.get(name)?;
        self.used.insert(b.span);
        Some(b.value.clone())
    }

    /// Warns about names of the current scope that were never used.
    fn warn_unused(&mut self, keep: &[&str]) {
        let mut unused: Vec<(String, Span, &'static str)> = self
            .env
            .vars
            .iter()
            .filter(|(n, b)| !self.used.contains(&b.span) && !keep.contains(&n.as_str()))
            .filter(|(n, _)| !n.starts_with('_'))
            .filter_map(|(n, b)| {
                let what = match &b.value {
                    Value::Tensor(t) => {
                        if t.depth == 0 && matches!(self.model.graph.node(t.node).op, Op::Param(_))
                        {
                            "parameter"
                        } else if t.depth == 0
                            && matches!(self.model.graph.node(t.node).op, Op::Input { .. })
                        {
                            "input"
                        } else {
                            "tensor"
                        }
                    }
                    _ => return None,
                };
                Some((n.clone(), b.span, what))
            })
            .collect();
        unused.sort_by_key(|(_, s, _)| (s.file, s.start));
        for (name, span, what) in unused {
            self.warn_unused_once(
                Diagnostic::warning(span, format!("the {what} `{name}` is never used"))
                    .label("defined here")
                    .help("remove it, or start its name with `_` to keep it without this warning"),
            );
        }
    }

    // ------------------------------------------------------------ the model

    fn lower_body(&mut self, def: &'p ast::ModelDef) {
        let mut output_names: Vec<&'p ast::Ident> = Vec::new();
        let defs = def
            .stmts
            .iter()
            .flat_map(|s| match s {
                ast::Stmt::Input(d) | ast::Stmt::Labels(d) => vec![order::Def::decl(&d.name)],
                ast::Stmt::Param(p) => vec![order::Def::decl(&p.name)],
                ast::Stmt::Assign(a) => vec![order::Def::assign(a)],
                ast::Stmt::Output(_) => Vec::new(),
            })
            .collect();
        self.open_body(defs, false);
        for stmt in &def.stmts {
            if !matches!(stmt, ast::Stmt::Output(_)) {
                self.start_stmt();
            }
            match stmt {
                ast::Stmt::Input(d) => {
                    self.declare_input(d, InputKind::Data);
                    self.bind_if_missing(&d.name);
                }
                ast::Stmt::Labels(d) => {
                    self.declare_input(d, InputKind::Labels);
                    self.bind_if_missing(&d.name);
                }
                ast::Stmt::Param(p) => {
                    self.declare_param(p);
                    self.bind_if_missing(&p.name);
                }
                ast::Stmt::Output(names) => output_names.extend(names),
                ast::Stmt::Assign(a) => self.assign(a),
            }
        }
        self.close_body();
        for name in output_names {
            match self.lookup(&name.name) {
                Some(Value::Tensor(t)) => self.model.outputs.push((name.name.clone(), t.node)),
                Some(Value::Poison) => {}
                Some(other) => self.error(
                    Diagnostic::error(
                        name.span,
                        format!(
                            "an output must be a tensor, but `{}` is {}",
                            name.name,
                            other.kind()
                        ),
                    )
                    .label("not a tensor"),
                ),
                None => self.unknown_name(&name.name, name.span),
            }
        }
        if let Some(b) = self.env.get("loss").cloned() {
            self.used.insert(b.span);
            match b.value {
                Value::Tensor(t) => self.set_loss(t, b.span),
                Value::Poison => {}
                other => self.error(
                    Diagnostic::error(
                        b.span,
                        format!("the loss must be a tensor, not {}", other.kind()),
                    )
                    .label("defined here"),
                ),
            }
        }
        if self.model.outputs.is_empty() {
            // Without `output`, predict returns what the loss was computed from,
            // or else the last tensor defined.
            let fallback = self
                .model
                .names
                .iter()
                .rev()
                .find(|(n, id)| {
                    n != "loss"
                        && !matches!(
                            self.model.graph.node(*id).op,
                            Op::Input { .. } | Op::Param(_)
                        )
                })
                .cloned();
            if let Some((name, node)) = self.scope.loss_prediction.take().or(fallback) {
                self.model.outputs.push((name, node));
            }
        }
        let outputs: Vec<String> = self.model.outputs.iter().map(|(n, _)| n.clone()).collect();
        let mut keep: Vec<&str> = outputs.iter().map(String::as_str).collect();
        keep.push("loss");
        self.warn_unused(&keep);
    }

    fn set_loss(&mut self, t: TRef, span: Span) {
        let Some(ty) = self.ty(t).cloned() else {
            return;
        };
        if ty.shape.rank() != 0 {
            self.error(
                Diagnostic::error(
                    span,
                    format!(
                        "the loss must be a single number, but it has shape {}",
                        ty.shape
                    ),
                )
                .label("not a scalar")
                .with(self.span_of(t), "computed here")
                .help(
                    "average it with `mean(...)`, or use a loss function such as `cross_entropy`",
                ),
            );
            return;
        }
        self.model.loss = Some(t.node);
    }

    fn declare_input(&mut self, d: &'p ast::Decl, kind: InputKind) {
        let shape_v = self.eval(&d.shape);
        let Some(shape) = self.shape_value(&shape_v, d.shape.span, &item_spans(&d.shape), true)
        else {
            return;
        };
        if shape.0.first() != Some(&Dim::B) || shape.0.iter().skip(1).any(|d| d.batch) {
            let what = if kind == InputKind::Data {
                "an input"
            } else {
                "labels"
            };
            let batches = shape.0.iter().filter(|d| d.batch).count();
            let (message, label) = if batches > 1 {
                (
                    format!("only the first dimension of {what} can be the batch size `B`"),
                    "`B` appears more than once",
                )
            } else if batches == 1 {
                (
                    format!("the first dimension of {what} must be the batch size `B`"),
                    "`B` is not first",
                )
            } else {
                (
                    format!("the first dimension of {what} must be the batch size `B`"),
                    "no batch dimension",
                )
            };
            let mut fixed = vec!["B".to_string()];
            fixed.extend(shape.0.iter().filter(|d| !d.batch).map(|d| d.to_string()));
            self.error(
                Diagnostic::error(d.shape.span, message)
                    .label(label)
                    .help(format!("write [{}]", fixed.join(", "))),
            );
            return;
        }
        if self
            .check_size(TensorType::f32(shape.clone()), d.shape.span)
            .is_none()
        {
            return;
        }
        let classes = match &d.classes {
            None => None,
            Some(e) => {
                let v = self.eval(e);
                match v.as_int() {
                    Some(c) if c >= 2 => Some(c as usize),
                    _ => {
                        if !matches!(v, Value::Poison) {
                            self.error(
                                Diagnostic::error(
                                    e.span,
                                    format!("the number of classes must be a whole number of at least 2, not {v}"),
                                )
                                .label("not a class count"),
                            );
                        }
                        return;
                    }
                }
            }
        };
        let ty = if classes.is_some() {
            TensorType::i32(shape)
        } else {
            TensorType::f32(shape)
        };
        let index = self.model.inputs.len();
        let t = self.leaf(Op::Input { index }, Some(ty.clone()), d.name.span);
        self.model.inputs.push(Input {
            name: d.name.name.clone(),
            kind,
            ty,
            classes,
            node: t.node,
            span: d.name.span,
        });
        self.bind(&d.name, Value::Tensor(t));
    }

    fn declare_param(&mut self, p: &'p ast::ParamDecl) {
        let shape_v = self.eval(&p.shape);
        let Some(shape) = self.shape_value(&shape_v, p.shape.span, &item_spans(&p.shape), false)
        else {
            return;
        };
        let init = match &p.init {
            None => {
                let fan_in = shape.0.first().map_or(1, |d| d.n.max(1));
                Init::Uniform(1.0 / (fan_in as f64).sqrt())
            }
            Some(e) => match self.init_value(e, &shape) {
                Some(i) => i,
                None => return,
            },
        };
        let t = self.param(&p.name.name, shape, init, p.name.span);
        // An explicit parameter is "used" by the graph only through its name.
        if let Some(param) = self.model.params.last_mut() {
            param.uses = 0;
        }
        self.bind(&p.name, Value::Tensor(t));
    }

    /// `init normal(0.01)`, `init zeros`, ...
    fn init_value(&mut self, e: &'p ast::Expr, shape: &Shape) -> Option<Init> {
        const INITS: &[(&str, usize)] = &[
            ("zeros", 0),
            ("ones", 0),
            ("constant", 1),
            ("uniform", 1),
            ("normal", 1),
            ("xavier", 0),
            ("kaiming", 0),
        ];
        const HELP: &str = "initialisers are zeros, ones, constant(v), uniform(bound), normal(std), xavier and kaiming";
        let (name, name_span, args): (&str, Span, Vec<(Value<'p>, Span)>) = match &e.kind {
            ast::ExprKind::Name(n) => (n, e.span, Vec::new()),
            ast::ExprKind::Call(callee, args) => match &callee.kind {
                ast::ExprKind::Name(n) => (
                    n,
                    callee.span,
                    args.iter()
                        .map(|a| (self.eval(&a.value), a.value.span))
                        .collect(),
                ),
                _ => ("", e.span, Vec::new()),
            },
            _ => ("", e.span, Vec::new()),
        };
        let Some(&(_, arity)) = INITS.iter().find(|(n, _)| *n == name) else {
            let mut d = if name.is_empty() {
                Diagnostic::error(e.span, "expected an initialiser such as `normal(0.01)`")
                    .label("not an initialiser")
            } else {
                Diagnostic::error(name_span, format!("`{name}` is not an initialiser"))
                    .label("unknown initialiser")
            };
            d = match args::suggest(name, INITS.iter().map(|(n, _)| *n)) {
                Some(s) if !name.is_empty() => d.help(format!("did you mean `{s}`? {HELP}")),
                _ => d.help(HELP),
            };
            self.error(d);
            return None;
        };
        if args.iter().any(|(v, _)| matches!(v, Value::Poison)) {
            return None;
        }
        if args.len() != arity {
            let what = if arity == 0 {
                "no argument".to_string()
            } else {
                "one number".to_string()
            };
            self.error(
                Diagnostic::error(
                    e.span,
                    format!("`{name}` takes {what}, but is given {}", args.len()),
                )
                .label("wrong number of arguments")
                .help(HELP),
            );
            return None;
        }
        let num = match args.first() {
            None => 0.0,
            Some((v, span)) => match v.as_f64() {
                Some(x) if name == "constant" || x >= 0.0 => x,
                Some(x) => {
                    let what = if name == "normal" {
                        "standard deviation"
                    } else {
                        "bound"
                    };
                    self.error(
                        Diagnostic::error(
                            *span,
                            format!("the {what} of `{name}` must be at least 0, not {x}"),
                        )
                        .label("negative"),
                    );
                    return None;
                }
                None => {
                    self.error(
                        Diagnostic::error(
                            *span,
                            format!("`{name}` takes a number, not {}", v.kind()),
                        )
                        .label("not a number"),
                    );
                    return None;
                }
            },
        };
        let fan_in = shape.0.first().map_or(1, |d| d.n.max(1)) as f64;
        let fan_out = shape.0.get(1).map_or(1, |d| d.n.max(1)) as f64;
        Some(match name {
            "zeros" => Init::Constant(0.0),
            "ones" => Init::Constant(1.0),
            "constant" => Init::Constant(num),
            "uniform" => Init::Uniform(num),
            "normal" => Init::Normal(num),
            "xavier" => Init::Uniform((6.0 / (fan_in + fan_out)).sqrt()),
            _ => Init::Uniform((6.0 / fan_in).sqrt()),
        })
    }

    /// A shape value: a list of whole numbers ≥ 1, with `B` allowed when
    /// `batch` is set.
    fn shape_value(
        &mut self,
        v: &Value<'p>,
        span: Span,
        item_spans: &[Span],
        batch: bool,
    ) -> Option<Shape> {
        let items = match v {
            Value::List(items) => items,
            Value::Poison => return None,
            other => {
                self.error(
                    Diagnostic::error(
                        span,
                        format!("expected a shape like [B, 128], not {}", other.kind()),
                    )
                    .label("not a shape"),
                );
                return None;
            }
        };
        let mut dims = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let at = item_spans.get(i).copied().unwrap_or(span);
            match item {
                Value::Poison => return None,
                Value::Batch if batch => dims.push(Dim::B),
                Value::Batch => {
                    self.error(
                        Diagnostic::error(
                            at,
                            "a parameter's shape cannot depend on the batch size",
                        )
                        .label("the batch size")
                        .help("parameters are shared by every item of a batch; give fixed sizes"),
                    );
                    return None;
                }
                v => match v.as_int() {
                    Some(n) if n >= 1 => dims.push(Dim::fixed(n as usize)),
                    Some(n) => {
                        let what = if n == 0 { "zero" } else { "negative" };
                        self.error(
                            Diagnostic::error(
                                at,
                                format!("a dimension must be at least 1, but this one is {n}"),
                            )
                            .label(format!("{what} size")),
                        );
                        return None;
                    }
                    None => {
                        self.error(
                            Diagnostic::error(
                                at,
                                format!("a dimension must be a whole number, not {}", v.kind()),
                            )
                            .label("not a size"),
                        );
                        return None;
                    }
                },
            }
        }
        Some(Shape(dims))
    }

    fn assign(&mut self, a: &'p ast::Assign) {
        if let ast::ExprKind::Recur(r) = &a.value.kind {
            let values = self.recur(r, &a.targets, a.value.span);
            for (t, v) in a.targets.iter().zip(values) {
                self.bind(t, v);
            }
            return;
        }
        let v = self.eval(&a.value);
        if a.targets.len() == 1 {
            let v = self.name_layer(v, &a.targets[0]);
            self.bind(&a.targets[0], v);
            return;
        }
        match v {
            Value::Tuple(items) if items.len() == a.targets.len() => {
                for (t, v) in a.targets.iter().zip(items) {
                    self.bind(t, v);
                }
            }
            Value::Poison => {
                for t in &a.targets {
                    self.bind(t, Value::Poison);
                }
            }
            other => {
                let n = match &other {
                    Value::Tuple(items) => items.len(),
                    _ => 1,
                };
                self.error(
                    Diagnostic::error(
                        a.value.span,
                        format!(
                            "{} names are assigned, but this gives {n} value(s)",
                            a.targets.len()
                        ),
                    )
                    .label(format!("{n} value(s)")),
                );
                for t in &a.targets {
                    self.bind(t, Value::Poison);
                }
            }
        }
    }

    /// A layer bound to a name takes that name: `enc = dense(64)` makes the
    /// layer `enc`, and every `x |> enc` shares its weights.
    fn name_layer(&self, v: Value<'p>, name: &ast::Ident) -> Value<'p> {
        match v {
            Value::Layer(c) if c.name.is_none() => {
                let mut c = c.fresh();
                c.name = Some(name.clone());
                Value::Layer(std::rc::Rc::new(c))
            }
            other => other,
        }
    }

    fn unknown_name(&mut self, name: &str, span: Span) {
        if self.explain_undefined(name, span) {
            return;
        }
        let mut known: Vec<String> = self.env.vars.keys().cloned().collect();
        known.extend(self.blocks.names().map(str::to_string));
        known.extend(builtin_names().map(str::to_string));
        let mut d =
            Diagnostic::error(span, format!("`{name}` is not defined")).label("unknown name");
        if let Some(s) = args::suggest(name, known.iter().map(String::as_str)) {
            d = d.help(format!("did you mean `{s}`?"));
        }
        self.error(d);
    }

    // ------------------------------------------------------------ wrap-up

    fn finish(&mut self, opts: &LowerOptions) {
        if self.diags.iter().any(|d| d.is_error()) {
            return;
        }
        let batch = self.model.train.as_ref().map_or(1, |t| t.batch);
        let bytes = self.model.activation_bytes(batch)
            + self
                .model
                .params
                .iter()
                .map(|p| p.shape.numel_at(1).unwrap_or(0) as u128 * 4)
                .sum::<u128>();
        if bytes > opts.memory_limit as u128 {
            let largest = self
                .model
                .graph
                .nodes
                .iter()
                .filter(|n| n.ty.is_some())
                .max_by_key(|n| {
                    n.ty.as_ref()
                        .and_then(|t| t.shape.numel_at(batch))
                        .unwrap_or(0)
                });
            let mut d = Diagnostic::error(
                self.model.span,
                format!(
                    "the model needs {} for its tensors at batch {batch}, more than the limit of {}",
                    human_bytes(bytes),
                    human_bytes(opts.memory_limit as u128)
                ),
            )
            .label("too large")
            .help("use a smaller batch, fewer or narrower layers, or raise the limit with --memory-limit");
            if let Some(n) = largest
                && let Some(t) = &n.ty
            {
                let b = t.shape.numel_at(batch).unwrap_or(0) as u128 * 4;
                d = d.with(
                    n.span,
                    format!(
                        "the largest tensor, {} ({}), is made here",
                        t.shape,
                        human_bytes(b)
                    ),
                );
            }
            self.error(d);
        }
        if cfg!(debug_assertions)
            && let Err((node, e)) = shape::verify(&self.model.graph)
        {
            self.error(Diagnostic::error(
                self.model.graph.node(node).span,
                format!("internal error: the lowered graph fails verification: {e}"),
            ));
        }
    }
}

/// An error deep inside nested blocks carries one "in this use of" label per
/// level; past a few, keep the outermost two and the innermost two.
fn shorten_block_trace(d: &mut Diagnostic) {
    const KEEP: usize = 2;
    let is_use = |l: &crate::diag::Label| l.message.starts_with("in this use of `");
    let uses: Vec<usize> = (0..d.secondary.len())
        .filter(|&i| is_use(&d.secondary[i]))
        .collect();
    if uses.len() <= 2 * KEEP + 1 {
        return;
    }
    let dropped: Vec<usize> = uses[KEEP..uses.len() - KEEP].to_vec();
    let mut i = 0;
    d.secondary.retain(|_| {
        let keep = !dropped.contains(&i);
        i += 1;
        keep
    });
    d.notes.push(format!(
        "the error is {} block uses deep; {} of them are not shown",
        uses.len(),
        dropped.len()
    ));
}

/// The spans of the items of a list expression (`[B, 784]`).
fn item_spans(e: &ast::Expr) -> Vec<Span> {
    match &e.kind {
        ast::ExprKind::List(items) => items.iter().map(|i| i.span).collect(),
        _ => Vec::new(),
    }
}

pub fn human_bytes(b: u128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
