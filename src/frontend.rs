//! The front end in one call: read, parse, lower and check every model of a
//! file, collecting every diagnostic.

use std::path::Path;
use std::sync::Arc;

use crate::diag::{Diagnostic, Report, Sources};
use crate::ir::Model;
use crate::ir::lower::{self, Blocks, LowerOptions};
use crate::syntax::{FsLoader, Loader, Program};

/// The result of checking a file: its models (lowered even when some have
/// errors, for tools that want to show what they can) and all diagnostics.
#[derive(Debug, Clone)]
pub struct Checked {
    pub sources: Arc<Sources>,
    pub models: Vec<Model>,
    pub diagnostics: Vec<Diagnostic>,
    /// Number of blocks defined across the program.
    pub blocks: usize,
}

impl Checked {
    pub fn report(&self) -> Report {
        Report::new(self.sources.clone(), self.diagnostics.clone())
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// The model called `name`, or the only/first one when `name` is `None`.
    pub fn model(&self, name: Option<&str>) -> Option<&Model> {
        match name {
            Some(n) => self.models.iter().find(|m| m.name == n),
            None => self.models.first(),
        }
    }

    /// The checked models, or the report when there is any error.
    pub fn into_result(self) -> Result<(Vec<Model>, Report), Report> {
        let report = self.report();
        if self.has_errors() {
            Err(report)
        } else {
            Ok((self.models, report))
        }
    }
}

/// Stack for the front end's thread: its passes recurse over the syntax
/// tree, and deep (but legal) nesting must not overflow the caller's stack.
const FRONTEND_STACK: usize = 256 << 20;

/// Checks source text as the file `name` (imports are read with `loader`,
/// relative to `name`).
pub fn check_source(name: &str, text: &str, loader: &dyn Loader, opts: &LowerOptions) -> Checked {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("nnc-frontend".into())
            .stack_size(FRONTEND_STACK)
            .spawn_scoped(s, || check_here(name, text, loader, opts));
        match handle.map(|h| h.join()) {
            Ok(Ok(checked)) => checked,
            // Could not start a thread, or it panicked: report it rather than crash.
            Ok(Err(_)) | Err(_) => internal_failure(name, text),
        }
    })
}

/// Reads and checks a file.
pub fn check_file(path: &Path, opts: &LowerOptions) -> std::io::Result<Checked> {
    let text = FsLoader.load(path)?;
    Ok(check_source(
        &path.display().to_string(),
        &text,
        &FsLoader,
        opts,
    ))
}

fn internal_failure(name: &str, text: &str) -> Checked {
    let mut sources = Sources::new();
    let id = sources.add(name, text);
    Checked {
        sources: Arc::new(sources),
        models: Vec::new(),
        diagnostics: vec![Diagnostic::error(
            crate::diag::Span::new(id, 0, 0),
            "internal error: the checker failed on this file; please report it",
        )],
        blocks: 0,
    }
}

fn check_here(name: &str, text: &str, loader: &dyn Loader, opts: &LowerOptions) -> Checked {
    let (program, mut diagnostics) = Program::parse(name, text, loader);
    let mut models = Vec::new();
    let mut blocks = 0;
    if diagnostics.iter().all(|d| !d.is_error()) {
        let table = Blocks::collect(&program, &mut diagnostics);
        blocks = table.names().count();
        if let Some(main) = program.main_file() {
            for (i, m) in main.models.iter().enumerate() {
                if let Some(prev) = main.models[..i].iter().find(|p| p.name.name == m.name.name) {
                    diagnostics.push(
                        Diagnostic::error(
                            m.name.span,
                            format!("the model `{}` is defined twice", m.name.name),
                        )
                        .label("second definition")
                        .with(prev.name.span, "first defined here"),
                    );
                    continue;
                }
                let trains: Vec<_> = main
                    .trains
                    .iter()
                    .filter(|t| t.model.name == m.name.name)
                    .collect();
                if let [_, second, ..] = trains.as_slice() {
                    diagnostics.push(
                        Diagnostic::error(
                            second.model.span,
                            format!("the model `{}` has two train blocks", m.name.name),
                        )
                        .label("second train block")
                        .with(trains[0].model.span, "first one"),
                    );
                }
                let (model, diags) = lower::lower_model(&table, m, trains.first().copied(), opts);
                diagnostics.extend(diags);
                models.push(model);
            }
            for t in &main.trains {
                if !main.models.iter().any(|m| m.name.name == t.model.name) {
                    let mut d = Diagnostic::error(
                        t.model.span,
                        format!("there is no model `{}` to train", t.model.name),
                    )
                    .label("unknown model");
                    if let Some(s) = lower::suggest_name(
                        &t.model.name,
                        main.models.iter().map(|m| m.name.name.as_str()),
                    ) {
                        d = d.help(format!("did you mean `{s}`?"));
                    }
                    diagnostics.push(d);
                }
            }
        }
    }
    // Errors first, then warnings; each group in source order.
    diagnostics.sort_by_key(|d| (!d.is_error(), d.primary.span.file, d.primary.span.start));
    Checked {
        sources: Arc::new(program.sources),
        models,
        diagnostics,
        blocks,
    }
}
