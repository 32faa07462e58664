//! Diagnostics: what went wrong, where in the source, and how to fix it.
//!
//! Every stage reports into a [`Diagnostic`] list instead of stopping at the first
//! problem, so one run shows every error of a file. Only [`Report::render`] turns
//! them into text (through `codespan-reporting`, the renderer rustc-style tools
//! use); plain rendering is deterministic, which makes messages golden-testable.

use std::fmt;
use std::sync::Arc;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;

/// Index of a file in [`Sources`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Span {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both (same file; otherwise `self`).
    pub fn to(self, other: Span) -> Span {
        if self.file != other.file {
            return self;
        }
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// The text of every file a program was read from, for rendering spans.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    files: Vec<SourceFile>,
}

#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl Sources {
    pub fn new() -> Sources {
        Sources::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push(SourceFile {
            name: name.into(),
            text: text.into(),
        });
        FileId(self.files.len() as u32 - 1)
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, f)| (FileId(i as u32), f))
    }

    /// The source text a span covers ("" if out of range).
    pub fn snippet(&self, span: Span) -> &str {
        self.get(span.file)
            .and_then(|f| f.text.get(span.start as usize..span.end as usize))
            .unwrap_or("")
    }

    /// 1-based line and column of the start of a span.
    pub fn line_col(&self, span: Span) -> (usize, usize) {
        let Some(file) = self.get(span.file) else {
            return (0, 0);
        };
        let upto = &file.text[..(span.start as usize).min(file.text.len())];
        let line = upto.matches('\n').count() + 1;
        let col = upto.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// A place in the source and what to say about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// One problem: a message in words, the place, other places that explain it,
/// and a likely fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub primary: Label,
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Error, span, message)
    }

    pub fn warning(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(Severity::Warning, span, message)
    }

    fn new(severity: Severity, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity,
            message: message.into(),
            primary: Label {
                span,
                message: String::new(),
            },
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// The text under the caret of the primary span.
    pub fn label(mut self, message: impl Into<String>) -> Diagnostic {
        self.primary.message = message.into();
        self
    }

    /// Another place that explains the problem ("this shape comes from here").
    pub fn with(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        // A secondary label on the primary span itself would only repeat it.
        if span != self.primary.span {
            self.secondary.push(Label {
                span,
                message: message.into(),
            });
        }
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Diagnostics with the sources they point into: the error type of every stage
/// that reads a `.nn` program.
#[derive(Debug, Clone)]
pub struct Report {
    pub sources: Arc<Sources>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    pub fn new(sources: Arc<Sources>, diagnostics: Vec<Diagnostic>) -> Report {
        Report {
            sources,
            diagnostics,
        }
    }

    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| d.is_error())
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.diagnostics.iter().filter(|d| !d.is_error())
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Renders every diagnostic like rustc does: message, `file:line:col`, the
    /// source line with a caret and labels, notes and `help:`. With `color`
    /// false the text is plain and stable, for logs and golden tests.
    pub fn render(&self, color: bool) -> String {
        let mut files = SimpleFiles::new();
        for (_, f) in self.sources.files() {
            files.add(f.name.clone(), f.text.clone());
        }
        let config = term::Config::default();
        let mut out = String::new();
        for d in &self.diagnostics {
            let cd = to_codespan(d, &self.sources);
            let rendered = if color {
                let mut buf = termcolor::Buffer::ansi();
                term::emit_to_write_style(&mut buf, &config, &files, &cd)
                    .map(|_| String::from_utf8_lossy(buf.as_slice()).into_owned())
            } else {
                term::emit_into_string(&config, &files, &cd)
            };
            match rendered {
                Ok(text) => out.push_str(&text),
                // A span outside its file is a bug of ours; still say what we know.
                Err(_) => out.push_str(&format!("{}: {}\n", severity_word(d.severity), d.message)),
            }
        }
        out
    }

    /// One line per error: `file:line:col: message`.
    pub fn short(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            let (line, col) = self.sources.line_col(d.primary.span);
            let name = self
                .sources
                .get(d.primary.span.file)
                .map_or("<unknown>", |f| f.name.as_str());
            out.push_str(&format!(
                "{name}:{line}:{col}: {}: {}\n",
                severity_word(d.severity),
                d.message
            ));
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render(false).trim_end())
    }
}

impl std::error::Error for Report {}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn to_codespan(d: &Diagnostic, sources: &Sources) -> cs::Diagnostic<usize> {
    let clamp = |span: Span| {
        let len = sources.get(span.file).map_or(0, |f| f.text.len());
        let start = (span.start as usize).min(len);
        let end = (span.end as usize).clamp(start, len);
        (span.file.0 as usize, start..end)
    };
    let (file, range) = clamp(d.primary.span);
    // Errors about a file as a whole (no model in it, cannot read it) carry
    // an empty source: a caret under an empty line would only confuse.
    let whole_file = sources
        .get(d.primary.span.file)
        .is_none_or(|f| f.text.is_empty());
    let mut labels = Vec::new();
    if !whole_file {
        labels.push(cs::Label::primary(file, range).with_message(&d.primary.message));
    }
    for l in &d.secondary {
        let (file, range) = clamp(l.span);
        labels.push(cs::Label::secondary(file, range).with_message(&l.message));
    }
    let mut notes = d.notes.clone();
    if let Some(h) = &d.help {
        notes.push(format!("help: {h}"));
    }
    let base = match d.severity {
        Severity::Error => cs::Diagnostic::error(),
        Severity::Warning => cs::Diagnostic::warning(),
    };
    base.with_message(&d.message)
        .with_labels(labels)
        .with_notes(notes)
}

/// A sink stages push diagnostics into as they go.
#[derive(Debug, Default)]
pub struct Sink {
    pub diagnostics: Vec<Diagnostic>,
}

impl Sink {
    pub fn push(&mut self, d: Diagnostic) {
        self.diagnostics.push(d);
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.is_error())
    }
}
