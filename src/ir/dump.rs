//! A stable text form of a lowered model, for `nnc ir` and golden tests.

use std::fmt::Write;

use super::graph::Graph;
use super::model::{Init, InputKind, Model};
use super::ops::{self, Op};

/// The whole model: declarations, then one line per node.
pub fn dump(model: &Model) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "model {}", model.name);
    for i in &model.inputs {
        let kind = match i.kind {
            InputKind::Data => "input",
            InputKind::Labels => "labels",
        };
        let classes = i
            .classes
            .map(|c| format!(" classes {c}"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {kind} {}: {}{classes}", i.name, i.ty);
    }
    for p in &model.params {
        let init = match p.init {
            Init::Uniform(b) => format!("uniform({})", round(b)),
            Init::Normal(s) => format!("normal({})", round(s)),
            Init::Constant(c) => format!("constant({c})"),
        };
        let _ = writeln!(out, "  param {}: {} {init}", p.name, p.shape);
    }
    for s in &model.states {
        let _ = writeln!(out, "  state {}: {} = {}", s.name, s.ty, s.init);
    }
    graph(&mut out, model, &model.graph, 1);
    if let Some(l) = model.loss {
        let _ = writeln!(out, "  loss = %{}", l.0);
    }
    for (name, node) in &model.outputs {
        let _ = writeln!(out, "  output {name} = %{}", node.0);
    }
    for (s, node) in &model.state_updates {
        let _ = writeln!(
            out,
            "  update {} = %{}",
            model.states[s.0 as usize].name, node.0
        );
    }
    out
}

/// Six significant digits: enough to read, stable across platforms.
fn round(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn graph(out: &mut String, model: &Model, g: &Graph, depth: usize) {
    let pad = "  ".repeat(depth);
    for id in g.ids() {
        let n = g.node(id);
        let mut line = format!("{pad}%{} = {}", id.0, n.op.name());
        match &n.op {
            Op::Input { index } => {
                let _ = write!(line, " {}", model.inputs[*index].name);
            }
            Op::Param(p) => {
                let _ = write!(line, " {}", model.params[p.0 as usize].name);
            }
            Op::State(s) => {
                let _ = write!(line, " {}", model.states[s.0 as usize].name);
            }
            Op::Arg(i) => {
                let _ = write!(line, " {i}");
            }
            _ => {}
        }
        let ins: Vec<String> = n.inputs.iter().map(|i| format!("%{}", i.0)).collect();
        if !ins.is_empty() {
            let _ = write!(line, " {}", ins.join(", "));
        }
        let attrs = ops::attrs(&n.op);
        if !attrs.is_empty() {
            let _ = write!(line, " {attrs}");
        }
        if let Op::Recur(r) = &n.op {
            let _ = writeln!(out, "{line} {{");
            graph(out, model, &r.body, depth + 1);
            let outs: Vec<String> = r.body.outputs.iter().map(|o| format!("%{}", o.0)).collect();
            let _ = writeln!(out, "{pad}  yield {}", outs.join(", "));
            line = format!("{pad}}}");
        }
        let ty =
            n.ty.as_ref()
                .map_or_else(|| "?".to_string(), |t| t.to_string());
        let _ = write!(line, " : {ty}");
        let mut notes = Vec::new();
        if depth == 1
            && let Some(name) = model.name_of(id)
        {
            notes.push(name.to_string());
        }
        if let Some(l) = n.layer {
            notes.push(format!("@{}", model.layers[l.0 as usize].path));
        }
        if !notes.is_empty() {
            let _ = write!(line, "  # {}", notes.join(" "));
        }
        let _ = writeln!(out, "{line}");
    }
}
