//! A program: a main file and every file it imports with `use`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ast::File;
use super::parse_file;
use crate::diag::{Diagnostic, FileId, Sources, Span};

/// Files larger than this are refused: no model needs them, and it bounds
/// the work a stray input can cause.
pub const MAX_FILE_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Default)]
pub struct Program {
    pub sources: Sources,
    /// Parsed files; the first is the main file.
    pub files: Vec<(FileId, File)>,
}

/// Reads a source file by path; tests give an in-memory one.
pub trait Loader: Sync {
    fn load(&self, path: &Path) -> std::io::Result<String>;
}

/// Reads from the file system.
pub struct FsLoader;

impl Loader for FsLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        use std::io::Read;
        // Read at most one byte past the limit: `use "/dev/zero"` must end
        // in an error, not fill the memory.
        let mut bytes = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20),
            ));
        }
        String::from_utf8(bytes).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is not UTF-8 text",
            )
        })
    }
}

impl Program {
    /// Parses `text` as the main file `name`, then follows its `use`s
    /// (relative to `name`'s directory) with `loader`. All syntax errors of all
    /// files are returned together.
    pub fn parse(name: &str, text: &str, loader: &dyn Loader) -> (Program, Vec<Diagnostic>) {
        let mut program = Program::default();
        let mut diags = Vec::new();
        let mut seen: HashMap<PathBuf, FileId> = HashMap::new();
        let main_path = PathBuf::from(name);
        let main_id = program.sources.add(name, text);
        seen.insert(normalise(&main_path), main_id);
        let mut queue = vec![(main_id, main_path)];
        while let Some((id, path)) = queue.pop() {
            let text = program
                .sources
                .get(id)
                .map(|f| f.text.clone())
                .unwrap_or_default();
            if text.len() > MAX_FILE_BYTES {
                diags.push(Diagnostic::error(
                    Span::new(id, 0, 0),
                    format!("this file is larger than {} MiB", MAX_FILE_BYTES >> 20),
                ));
                continue;
            }
            let file = match parse_file(id, &text) {
                Ok(f) => f,
                Err(errs) => {
                    diags.extend(errs);
                    continue;
                }
            };
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            for u in &file.uses {
                let target = dir.join(&u.path);
                let key = normalise(&target);
                if seen.contains_key(&key) {
                    continue;
                }
                match loader.load(&target) {
                    Ok(text) => {
                        let uid = program.sources.add(target.display().to_string(), text);
                        seen.insert(key, uid);
                        queue.push((uid, target));
                    }
                    Err(e) => diags.push(
                        Diagnostic::error(
                            u.span,
                            format!("cannot read `{}`: {}", u.path, io_reason(&e)),
                        )
                        .label("imported here")
                        .note(format!("looked for {}", target.display()))
                        .help("paths in `use` are relative to the file that imports them"),
                    ),
                }
            }
            program.files.push((id, file));
        }
        program.files.sort_by_key(|(id, _)| *id);
        (program, diags)
    }

    pub fn main_file(&self) -> Option<&File> {
        self.files
            .iter()
            .find(|(id, _)| *id == FileId(0))
            .map(|(_, f)| f)
    }
}

/// Why a file could not be read, in words (no OS error numbers).
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::NotFound => "there is no such file".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        ErrorKind::IsADirectory => "it is a directory".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_string(),
                None => s,
            }
        }
    }
}

/// A path key for "already imported": lexical normalisation, no file system access.
fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}
