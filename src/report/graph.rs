//! `nnc graph`: the model as a Graphviz DOT graph, one box per top-level
//! layer (or per primitive op), and an SVG rendering of it.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;

use crate::ir::graph::NodeId;
use crate::ir::model::Model;
use crate::ir::ops::Op;

/// What a box of the drawing stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Unit {
    Layer(u32),
    Node(u32),
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// DOT source. With `ops`, one box per primitive op; otherwise one per
/// top-level layer, with tensors computed outside layers (`+`, inputs, the
/// loss) as their own boxes.
pub fn dot(model: &Model, ops: bool) -> String {
    let g = &model.graph;
    // The top-level layer of each node.
    let top = |l: u32| {
        let mut cur = l;
        while let Some(p) = model.layers[cur as usize].parent {
            cur = p.0;
        }
        cur
    };
    let unit_of = |id: NodeId| -> Option<Unit> {
        let n = g.node(id);
        if matches!(
            n.op,
            Op::Param(_) | Op::State(_) | Op::Fill { .. } | Op::SizeOf { .. }
        ) {
            return None;
        }
        match (ops, n.layer) {
            (false, Some(l)) => Some(Unit::Layer(top(l.0))),
            _ => Some(Unit::Node(id.0)),
        }
    };
    let mut units: BTreeSet<Unit> = BTreeSet::new();
    let mut edges: BTreeSet<(Unit, Unit)> = BTreeSet::new();
    let mut last_node: HashMap<Unit, NodeId> = HashMap::new();
    for id in g.ids() {
        let Some(u) = unit_of(id) else { continue };
        units.insert(u);
        last_node.insert(u, id);
        for &i in &g.node(id).inputs {
            if let Some(src) = unit_of(i)
                && src != u
            {
                edges.insert((src, u));
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&model.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, fontname=\"Helvetica\", fontsize=10];"
    );
    for u in &units {
        let (id, label, shape) = match *u {
            Unit::Layer(l) => {
                let layer = &model.layers[l as usize];
                let ty = layer
                    .output_ty
                    .as_ref()
                    .map_or_else(String::new, |t| t.shape.to_string());
                (
                    format!("l{l}"),
                    format!("{}\\n{}\\n{ty}", escape(&layer.path), escape(&layer.kind)),
                    "box",
                )
            }
            Unit::Node(n) => {
                let node = g.node(NodeId(n));
                let ty = node
                    .ty
                    .as_ref()
                    .map_or_else(String::new, |t| t.shape.to_string());
                let name = model.name_of(NodeId(n));
                let shape = match node.op {
                    Op::Input { .. } => "ellipse",
                    _ if Some(NodeId(n)) == model.loss => "doubleoctagon",
                    _ => "box",
                };
                let title = match (name, &node.op) {
                    (Some(nm), Op::Input { .. }) => escape(nm),
                    (Some(nm), op) => format!("{}\\n{}", escape(nm), op.name()),
                    (None, op) => op.name().to_string(),
                };
                (format!("n{n}"), format!("{title}\\n{ty}"), shape)
            }
        };
        let _ = writeln!(out, "  {id} [label=\"{label}\", shape={shape}];");
    }
    let name = |u: &Unit| match u {
        Unit::Layer(l) => format!("l{l}"),
        Unit::Node(n) => format!("n{n}"),
    };
    for (a, b) in &edges {
        let _ = writeln!(out, "  {} -> {};", name(a), name(b));
    }
    let _ = writeln!(out, "}}");
    out
}

/// Renders DOT source to SVG with the `layout-rs` crate (no Graphviz needed).
pub fn svg(dot: &str) -> Result<String, String> {
    use layout::backends::svg::SVGWriter;
    use layout::gv;
    let mut parser = gv::DotParser::new(dot);
    let ast = parser.process()?;
    // The renderer is third-party code drawing our own generated graph; a
    // failure in it is reported, not allowed to abort the program.
    std::panic::catch_unwind(|| {
        let mut builder = gv::GraphBuilder::new();
        builder.visit_graph(&ast);
        let mut vg = builder.get();
        let mut writer = SVGWriter::new();
        vg.do_it(false, false, false, &mut writer);
        writer.finalize()
    })
    .map_err(|_| "the SVG renderer failed on this graph; write a .dot file and render it with Graphviz instead".to_string())
}
