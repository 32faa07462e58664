//! `nnc summary`: a layer table like Keras' `summary()` or torchinfo — layer
//! path, kind, output shape, parameters — and totals: trainable parameters,
//! forward FLOPs per sample, memory.

use std::fmt::Write;

use crate::ir::graph::{Graph, LayerId};
use crate::ir::lower::human_bytes;
use crate::ir::model::{Layer, Model};
use crate::ir::ops::Op;

/// Forward floating-point operations of a graph per batch item: 2 per
/// multiply-add in products and convolutions, 1 per element elsewhere.
pub fn flops(g: &Graph, batch: usize) -> u128 {
    let mut total: u128 = 0;
    for n in &g.nodes {
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
            Op::Recur(r) => flops(&r.body, batch) * r.steps as u128,
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
        format!("{x}")
    }
}

/// Parameters of a layer and all layers inside it (shared applications count 0).
fn subtree_params(model: &Model, id: LayerId, children: &[Vec<LayerId>]) -> usize {
    let l = &model.layers[id.0 as usize];
    let own: usize = l
        .params
        .iter()
        .map(|p| model.param(*p).shape.numel_at(1).unwrap_or(0))
        .sum();
    own + children[id.0 as usize]
        .iter()
        .map(|c| subtree_params(model, *c, children))
        .sum::<usize>()
}

/// The summary table. `depth` limits how deep nested layers are listed.
pub fn summary(model: &Model, batch: usize, depth: usize) -> String {
    let mut children: Vec<Vec<LayerId>> = vec![Vec::new(); model.layers.len()];
    let mut roots = Vec::new();
    for (i, l) in model.layers.iter().enumerate() {
        let id = LayerId(i as u32);
        match l.parent {
            Some(p) => children[p.0 as usize].push(id),
            None => roots.push(id),
        }
    }
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    fn walk(
        model: &Model,
        id: LayerId,
        level: usize,
        depth: usize,
        children: &[Vec<LayerId>],
        rows: &mut Vec<(String, String, String, String)>,
    ) {
        let l: &Layer = &model.layers[id.0 as usize];
        let params = subtree_params(model, id, children);
        let shape = l
            .output_ty
            .as_ref()
            .map_or_else(|| "-".into(), |t| t.shape.to_string());
        let kind = if l.shared {
            format!("{} (shared)", l.kind)
        } else {
            l.kind.clone()
        };
        rows.push((
            format!("{}{}", "  ".repeat(level), l.path),
            kind,
            shape,
            group(params),
        ));
        if level + 1 < depth {
            for c in &children[id.0 as usize] {
                walk(model, *c, level + 1, depth, children, rows);
            }
        }
    }
    for r in &roots {
        walk(model, *r, 0, depth, &children, &mut rows);
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
