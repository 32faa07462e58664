//! Layer paths: the names parameters get, as PyTorch's `state_dict` would
//! have them (`layer1.0.conv1.weight`).
//!
//! A layer is named by `as name`, by the name it is bound to, or else
//! automatically from its kind and a counter in its scope (`conv1`, `conv2`,
//! `fc1`, ...). Block instances and named `repeat`s open a scope; each
//! repetition is a scope named by its index, and a repetition whose body is a
//! single unnamed layer or block *is* that index (as in `nn.Sequential`).

use std::collections::{HashMap, HashSet};

use crate::diag::{Diagnostic, Span};
use crate::ir::graph::{LayerId, NodeId};
use crate::ir::model::{Layer, Model};
use crate::ir::ops::ParamId;
use crate::ir::types::TensorType;
use crate::syntax::ast;

#[derive(Debug, Default)]
pub struct Scope {
    segments: Vec<String>,
    /// Open layers, innermost last, with the segments to restore on exit and
    /// whether the layer re-applies a shared one.
    stack: Vec<(LayerId, Vec<String>, bool)>,
    counters: HashMap<(String, String), usize>,
    /// Counters while re-applying a shared layer: they replay the first application's names.
    reuse_counters: HashMap<(String, String), usize>,
    taken: HashSet<String>,
    params: HashMap<String, ParamId>,
    /// Name for the next layer opened (a repetition's index).
    pub pending_name: Option<String>,
    /// The tensor the loss was computed from, the default output.
    pub loss_prediction: Option<(String, NodeId)>,
}

impl Scope {
    pub fn path(&self) -> String {
        self.segments.join(".")
    }

    /// The full name of `local` inside the current scope.
    pub fn qualify(&self, local: &str) -> String {
        if self.segments.is_empty() {
            local.to_string()
        } else {
            format!("{}.{local}", self.path())
        }
    }

    pub fn current_layer(&self) -> Option<LayerId> {
        self.stack.last().map(|(id, _, _)| *id)
    }

    fn reusing(&self) -> bool {
        self.stack.iter().any(|(_, _, shared)| *shared)
    }

    /// When re-applying a shared layer, the existing parameter of that name.
    pub fn reuse_param(&self, name: &str) -> Option<ParamId> {
        if self.reusing() {
            self.params.get(name).copied()
        } else {
            None
        }
    }

    pub fn register_param(&mut self, name: String, id: ParamId) {
        self.params.insert(name, id);
    }

    /// Pushes a plain path segment (a repetition index) without a layer row.
    pub fn push_segment(&mut self, seg: String) {
        self.segments.push(seg);
    }

    pub fn pop_segment(&mut self) {
        self.segments.pop();
    }

    /// Opens a layer. `shared` is the path of an earlier application whose
    /// parameters this one reuses. Returns the layer's id and full path.
    pub fn enter(
        &mut self,
        model: &mut Model,
        kind: &str,
        prefix: &str,
        name: Option<&ast::Ident>,
        shared: Option<&str>,
        span: Span,
    ) -> Result<(LayerId, String), Box<Diagnostic>> {
        let saved = self.segments.clone();
        let pending = self.pending_name.take();
        if shared.is_some() {
            self.reuse_counters.clear();
        }
        let reusing = shared.is_some() || self.reusing();
        let path = if let Some(p) = shared {
            p.to_string()
        } else if let Some(n) = name {
            let base = match &pending {
                Some(index) => qualify(&self.segments, index),
                None => self.path(),
            };
            let path = if base.is_empty() {
                n.name.clone()
            } else {
                format!("{base}.{}", n.name)
            };
            if !self.taken.insert(path.clone()) && !reusing {
                let first = model.layers.iter().find(|l| l.path == path).map(|l| l.span);
                let mut d = Diagnostic::error(
                    n.span,
                    format!("the layer name `{path}` is already taken"),
                )
                .label("second layer with this name")
                .help("give each layer its own name; to share weights, apply the first layer again with `|> name`");
                if let Some(first) = first {
                    d = d.with(first, format!("the first layer named `{path}`"));
                }
                return Err(Box::new(d));
            }
            path
        } else if let Some(index) = pending {
            let path = qualify(&self.segments, &index);
            self.taken.insert(path.clone());
            path
        } else {
            let key = (self.path(), prefix.to_string());
            let counters = if reusing {
                &mut self.reuse_counters
            } else {
                &mut self.counters
            };
            let counter = counters.entry(key).or_insert(0);
            loop {
                *counter += 1;
                let candidate = qualify(&self.segments, &format!("{prefix}{counter}"));
                if self.taken.insert(candidate.clone()) || reusing {
                    break candidate;
                }
            }
        };
        let id = LayerId(model.layers.len() as u32);
        model.layers.push(Layer {
            path: path.clone(),
            kind: kind.to_string(),
            span,
            parent: self.current_layer(),
            output: None,
            output_ty: None,
            params: Vec::new(),
            shared: shared.is_some(),
        });
        self.segments = path.split('.').map(str::to_string).collect();
        self.stack.push((id, saved, shared.is_some()));
        Ok((id, path))
    }

    /// Closes the innermost layer, recording its output.
    pub fn exit(&mut self, model: &mut Model, output: Option<NodeId>, ty: Option<TensorType>) {
        if let Some((id, saved, _)) = self.stack.pop() {
            model.layers[id.0 as usize].output = output;
            model.layers[id.0 as usize].output_ty = ty;
            self.segments = saved;
        }
    }
}

fn qualify(segments: &[String], last: &str) -> String {
    if segments.is_empty() {
        last.to_string()
    } else {
        format!("{}.{last}", segments.join("."))
    }
}
