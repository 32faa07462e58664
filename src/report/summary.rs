//! `nnc summary`: a layer table like Keras' `summary()` or torchinfo — layer
//! path, kind, output shape, parameters — and totals: trainable parameters,
//! forward FLOPs per sample, memory.

use std::fmt::Write;

use crate::ir::graph::{Graph, LayerId, NodeId};
use crate::ir::lower::human_bytes;
use crate::ir::model::{Layer, Model};
use crate::ir::ops::{Op, ParamId, RecurOp};

/// Forward floating-point operations of a graph per batch item: 2 per
/// multiply-add in products and convolutions, 1 per element elsewhere.
pub fn flops(g: &Graph, batch: usize) -> u128 {
    let all: Vec<NodeId> = (0..g.nodes.len() as u32).map(NodeId).collect();
    flops_from(g, &all, batch)
}

/// Like [`flops`], counting only the nodes `roots` depend on: a training
/// graph holds nodes autodiff built but nothing reads (the forward step a
/// reverse recurrence replays, kept only where a local rule needs it).
pub fn flops_from(g: &Graph, roots: &[NodeId], batch: usize) -> u128 {
    let mut live = vec![false; g.nodes.len()];
    let mut stack: Vec<NodeId> = roots.to_vec();
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut live[id.index()], true) {
            continue;
        }
        stack.extend(g.node(id).inputs.iter().copied());
    }
    let mut total: u128 = 0;
    for (n, _) in g.nodes.iter().zip(&live).filter(|(_, l)| **l) {
        let Some(ty) = &n.ty else { continue };
        let out = ty.shape.numel_at(batch).unwrap_or(0) as u128;
        let input = |i: usize| {
            n.inputs
                .get(i)
                .and_then(|&id| g.ty(id))
                .map(|t| t.shape.at(batch))
                .unwrap_or_default()
        };
        total += match &n.op {
            Op::MatMul { ta, .. } => {
                let a = input(0);
                let k = if *ta {
                    a.get(a.len().wrapping_sub(2))
                } else {
                    a.last()
                };
                2 * out * k.copied().unwrap_or(0) as u128
            }
            Op::Conv { .. } => {
                // Multiply-adds per output: the weight's C/groups·kh·kw.
                let w = input(1);
                2 * out * w.iter().skip(1).product::<usize>() as u128
            }
            Op::ConvGradInput { .. } => {
                // As many multiply-adds as the forward convolution: the
                // incoming gradient's elements times C/groups·kh·kw.
                let (dy, w) = (input(0), input(1));
                2 * dy.iter().product::<usize>() as u128
                    * w.iter().skip(1).product::<usize>() as u128
            }
            Op::ConvGradWeight { .. } => {
                let dy = input(1);
                2 * dy.iter().product::<usize>() as u128
                    * ty.shape.at(batch).iter().skip(1).product::<usize>() as u128
            }
            Op::PoolGrad { window, .. } => {
                input(1).iter().product::<usize>() as u128
                    * window.kernel.iter().product::<usize>() as u128
            }
            Op::Pool { window, .. } => out * window.kernel.iter().product::<usize>() as u128,
            Op::Reduce { .. } | Op::Softmax { .. } | Op::LogSoftmax { .. } => {
                input(0).iter().product::<usize>() as u128
            }
            Op::Unary(_) | Op::Binary(_) | Op::Where => out,
            Op::Recur(r) => flops_from(&r.body, &r.body.outputs, batch) * r.steps as u128,
            _ => 0,
        };
    }
    total
}

fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn si(x: u128) -> String {
    let v = x as f64;
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} k", v / 1e3)
    } else {
        format!("{x} ")
    }
}

/// A row of the table: a layer (or block instance), a recurrence, or an
/// explicit `param`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    Layer(LayerId),
    Recur(usize),
    Param(ParamId),
}

/// A recurrence found in the model's graph or in another recurrence's body.
struct Recur<'m> {
    /// The graph that holds the `Recur` node (0: the model's graph).
    graph: usize,
    node: NodeId,
    op: &'m RecurOp,
}

/// Every graph of the model: its own (index 0) and each recurrence body, with
/// the recurrences that own them.
struct Graphs<'m> {
    graphs: Vec<&'m Graph>,
    /// How many recurrences deep each graph is.
    depth: Vec<usize>,
    /// The recurrence whose body each graph is (`None` for the model's graph).
    owner: Vec<Option<usize>>,
    recurs: Vec<Recur<'m>>,
}

impl<'m> Graphs<'m> {
    fn new(model: &'m Model) -> Graphs<'m> {
        let mut g = Graphs {
            graphs: vec![&model.graph],
            depth: vec![0],
            owner: vec![None],
            recurs: Vec::new(),
        };
        g.scan(0);
        g
    }

    fn scan(&mut self, gi: usize) {
        let graph = self.graphs[gi];
        for (i, n) in graph.nodes.iter().enumerate() {
            if let Op::Recur(r) = &n.op {
                let body = self.graphs.len();
                self.graphs.push(&r.body);
                self.depth.push(self.depth[gi] + 1);
                self.owner.push(Some(self.recurs.len()));
                self.recurs.push(Recur {
                    graph: gi,
                    node: NodeId(i as u32),
                    op: r,
                });
                self.scan(body);
            }
        }
    }
}

/// The rows of a model as a tree: layers (with the layers of a recurrence
/// body under their recurrence), recurrences and explicit parameters, each
/// list of children in the order the model builds them.
struct Tree {
    roots: Vec<Row>,
    layer_children: Vec<Vec<Row>>,
    recur_children: Vec<Vec<Row>>,
}

impl Tree {
    fn children(&self, r: Row) -> &[Row] {
        match r {
            Row::Layer(id) => &self.layer_children[id.0 as usize],
            Row::Recur(i) => &self.recur_children[i],
            Row::Param(_) => &[],
        }
    }
}

/// Rows under one parent, each with the node that orders it.
type Siblings = Vec<(u32, Row)>;

fn tree(model: &Model, g: &Graphs<'_>) -> Tree {
    let n = model.layers.len();
    // The graph each layer runs in, and the first node it adds there. Its
    // parameters live in the model's graph wherever it runs: a layer seen in
    // a recurrence body runs there.
    let mut home: Vec<Option<usize>> = vec![None; n];
    let mut key: Vec<Option<u32>> = vec![None; n];
    for (gi, graph) in g.graphs.iter().enumerate() {
        for (i, node) in graph.nodes.iter().enumerate() {
            let Some(l) = node.layer else { continue };
            let l = l.0 as usize;
            // Nodes come in creation order: the first one seen in the
            // deepest graph is where the layer starts.
            if l < n && home[l].is_none_or(|h| g.depth[gi] > g.depth[h]) {
                home[l] = Some(gi);
                key[l] = Some(i as u32);
            }
        }
    }
    // A block instance has no nodes of its own: it runs where its layers run.
    // Parents come before their children in `layers`.
    for i in (0..n).rev() {
        if let Some(p) = model.layers[i].parent {
            let p = p.0 as usize;
            if home[p].is_none() {
                home[p] = home[i];
            }
            if home[p] == home[i] && key[i].is_some() {
                key[p] = match key[p] {
                    Some(k) => key[i].map(|c| c.min(k)),
                    None => key[i],
                };
            }
        }
    }
    // A layer that added no node at all (dropout with p = 0): where its
    // parent, or the layer before it, runs.
    for i in 0..n {
        if home[i].is_none() {
            let l = &model.layers[i];
            home[i] = match (l.parent, l.output) {
                (Some(p), _) => home[p.0 as usize],
                (None, Some(_)) => Some(0),
                (None, None) if i > 0 => home[i - 1],
                _ => None,
            };
        }
    }
    let home: Vec<usize> = home.into_iter().map(|h| h.unwrap_or(0)).collect();

    // Each row's parent, and its position among its siblings.
    let mut items: Vec<(Option<Row>, Row, Option<u32>)> = Vec::new();
    for (i, l) in model.layers.iter().enumerate() {
        let parent = match l.parent {
            Some(p) if home[p.0 as usize] == home[i] => Some(Row::Layer(p)),
            _ => g.owner[home[i]].map(Row::Recur),
        };
        items.push((parent, Row::Layer(LayerId(i as u32)), key[i]));
    }
    for (ri, r) in g.recurs.iter().enumerate() {
        let layer = g.graphs[r.graph].node(r.node).layer;
        let parent = match layer {
            Some(p) if home.get(p.0 as usize) == Some(&r.graph) => Some(Row::Layer(p)),
            _ => g.owner[r.graph].map(Row::Recur),
        };
        items.push((parent, Row::Recur(ri), Some(r.node.0)));
    }
    for (i, p) in model.params.iter().enumerate() {
        if p.layer.is_none() {
            items.push((None, Row::Param(ParamId(i as u32)), Some(p.node.0)));
        }
    }
    let mut t = Tree {
        roots: Vec::new(),
        layer_children: vec![Vec::new(); n],
        recur_children: vec![Vec::new(); g.recurs.len()],
    };
    // Each parent's children, with their position keys.
    let mut lists: Vec<(Option<Row>, Siblings)> = Vec::new();
    for (parent, row, k) in items {
        let i = match lists.iter().position(|(p, _)| *p == parent) {
            Some(i) => i,
            None => {
                lists.push((parent, Vec::new()));
                lists.len() - 1
            }
        };
        let list = &mut lists[i].1;
        // A row without a node of its own follows the row before it.
        let k = k.or_else(|| list.last().map(|(k, _)| *k)).unwrap_or(0);
        list.push((k, row));
    }
    for (parent, mut list) in lists {
        list.sort_by_key(|(k, _)| *k);
        let rows = list.into_iter().map(|(_, r)| r).collect();
        match parent {
            None => t.roots = rows,
            Some(Row::Layer(id)) => t.layer_children[id.0 as usize] = rows,
            Some(Row::Recur(i)) => t.recur_children[i] = rows,
            Some(Row::Param(_)) => {}
        }
    }
    t
}

/// Parameters of a row and every row inside it (a shared application counts 0).
fn subtree_params(model: &Model, t: &Tree, row: Row) -> usize {
    let numel = |p: ParamId| model.param(p).shape.numel_at(1).unwrap_or(0);
    let own: usize = match row {
        Row::Layer(id) => model.layers[id.0 as usize]
            .params
            .iter()
            .map(|p| numel(*p))
            .sum(),
        Row::Param(p) => numel(p),
        Row::Recur(_) => 0,
    };
    own + t
        .children(row)
        .iter()
        .map(|c| subtree_params(model, t, *c))
        .sum::<usize>()
}

/// The name, kind and output shape of a row.
fn describe(
    model: &Model,
    g: &Graphs<'_>,
    t: &Tree,
    row: Row,
    parent: Option<&str>,
) -> (String, String, String) {
    match row {
        Row::Layer(id) => {
            let l: &Layer = &model.layers[id.0 as usize];
            let shape = l
                .output_ty
                .as_ref()
                .map_or_else(|| "-".into(), |t| t.shape.to_string());
            let kind = if l.shared {
                format!("{} (shared)", l.kind)
            } else {
                l.kind.clone()
            };
            (l.path.clone(), kind, shape)
        }
        Row::Param(p) => {
            let p = model.param(p);
            (p.name.clone(), "param".into(), p.shape.to_string())
        }
        Row::Recur(ri) => {
            let r = &g.recurs[ri];
            let graph = g.graphs[r.graph];
            // The state sequences are the recurrence's outputs 0..n_state.
            let mut states: Vec<(usize, NodeId)> = graph
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| match n.op {
                    Op::Output { index }
                        if index < r.op.n_state && n.inputs.first() == Some(&r.node) =>
                    {
                        Some((index, NodeId(i as u32)))
                    }
                    _ => None,
                })
                .collect();
            states.sort_by_key(|(i, _)| *i);
            states.dedup_by_key(|(i, _)| *i);
            let shapes: Vec<String> = states
                .iter()
                .map(|(_, n)| {
                    graph
                        .ty(*n)
                        .map_or_else(|| "-".into(), |t| t.shape.to_string())
                })
                .collect();
            // A recurrence of the model itself is named by its states; one
            // inside a block (whose names are local) by a counter.
            let top = r.graph == 0 && graph.node(r.node).layer.is_none();
            let names: Option<Vec<&str>> = top
                .then(|| states.iter().map(|(_, n)| model.name_of(*n)).collect())
                .flatten();
            let local = match names {
                Some(names) if !names.is_empty() => names.join(", "),
                _ => {
                    // recur1, recur2, ... among the recurrences of one parent.
                    let siblings = match parent_of(t, row) {
                        Some(p) => t.children(p),
                        None => &t.roots[..],
                    };
                    let k = siblings
                        .iter()
                        .filter(|s| matches!(s, Row::Recur(_)))
                        .position(|s| *s == row)
                        .unwrap_or(0);
                    format!("recur{}", k + 1)
                }
            };
            let path = match parent {
                Some(p) if !p.is_empty() => format!("{p}.{local}"),
                _ => local,
            };
            (path, "recur".into(), shapes.join(", "))
        }
    }
}

fn parent_of(t: &Tree, row: Row) -> Option<Row> {
    let n = t.layer_children.len();
    (0..n)
        .map(|i| Row::Layer(LayerId(i as u32)))
        .chain((0..t.recur_children.len()).map(Row::Recur))
        .find(|p| t.children(*p).contains(&row))
}

/// The summary table. `depth` limits how deep nested layers are listed.
///
/// Every parameter is in exactly one top-level row: explicit `param`s are
/// rows of their own, layers count their own parameters and those of the
/// layers inside them, and a recurrence (`recur`) counts the layers of its
/// body, listed under it with their per-step output shapes.
pub fn summary(model: &Model, batch: usize, depth: usize) -> String {
    let g = Graphs::new(model);
    let t = tree(model, &g);
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    #[allow(clippy::too_many_arguments)]
    fn walk(
        model: &Model,
        g: &Graphs<'_>,
        t: &Tree,
        row: Row,
        parent: Option<&str>,
        level: usize,
        depth: usize,
        rows: &mut Vec<(String, String, String, String)>,
    ) {
        let (path, kind, shape) = describe(model, g, t, row, parent);
        rows.push((
            format!("{}{}", "  ".repeat(level), path),
            kind,
            shape,
            group(subtree_params(model, t, row)),
        ));
        if level + 1 < depth {
            // Layers carry their full path; a recurrence's is its own.
            let prefix = match row {
                Row::Layer(id) => model.layers[id.0 as usize].path.clone(),
                Row::Recur(_) => parent.unwrap_or("").to_string(),
                Row::Param(_) => String::new(),
            };
            for c in t.children(row) {
                walk(model, g, t, *c, Some(&prefix), level + 1, depth, rows);
            }
        }
    }
    for r in &t.roots {
        walk(model, &g, &t, *r, None, 0, depth, &mut rows);
    }
    let header = (
        "Layer".to_string(),
        "Kind".to_string(),
        "Output shape".to_string(),
        "Params".to_string(),
    );
    let w0 = rows
        .iter()
        .map(|r| r.0.chars().count())
        .chain([header.0.len()])
        .max()
        .unwrap_or(5);
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .chain([header.1.len()])
        .max()
        .unwrap_or(4);
    let w2 = rows
        .iter()
        .map(|r| r.2.chars().count())
        .chain([header.2.len()])
        .max()
        .unwrap_or(12);
    let w3 = rows
        .iter()
        .map(|r| r.3.len())
        .chain([header.3.len(), 10])
        .max()
        .unwrap_or(6);
    let width = w0 + w1 + w2 + w3 + 6;
    let rule = "─".repeat(width);
    let mut out = String::new();
    let _ = writeln!(out, "Model: {}", model.name);
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
        header.0, header.1, header.2, header.3
    );
    let _ = writeln!(out, "{rule}");
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
            r.0, r.1, r.2, r.3
        );
    }
    let _ = writeln!(out, "{rule}");
    let params = model.param_count();
    let state: usize = model
        .states
        .iter()
        .map(|s| s.ty.shape.numel_at(batch).unwrap_or(0))
        .sum();
    let flops = flops(&model.graph, 1);
    let act = model.activation_bytes(batch);
    let _ = writeln!(
        out,
        "Trainable parameters:   {} ({})",
        group(params),
        human_bytes(params as u128 * 4)
    );
    if state > 0 {
        let _ = writeln!(
            out,
            "Non-trainable state:    {} ({})",
            group(state),
            human_bytes(state as u128 * 4)
        );
    }
    let _ = writeln!(out, "Forward FLOPs / sample: {}FLOP", si(flops));
    let _ = writeln!(
        out,
        "Activations at batch {batch}: {} (every forward tensor, before memory planning)",
        human_bytes(act)
    );
    out
}
