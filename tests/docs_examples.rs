//! Every ```nn code block of docs/language.md is a whole `.nn` file that
//! checks: without errors or warnings, or, after a line `<!-- warns -->`,
//! without errors but with a warning. A block after a line `<!-- invalid -->`
//! must have an error; when a ```text block follows it, that is the rendered
//! diagnostic, exactly as `nnc check bad.nn` prints it.
//!
//! Valid blocks are checked as if they were files in `examples/`, so
//! `use "blocks.nn"` finds `examples/blocks.nn`. And every built-in of
//! `nnc layers` is mentioned.

use std::path::Path;

use nnc::frontend::check_source;
use nnc::ir::lower::LowerOptions;
use nnc::syntax::FsLoader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Clean,
    Warns,
    Invalid,
}

#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    text: String,
    /// The last non-blank line before the fence.
    before: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut last_text = String::new();
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        match &mut open {
            Some(b) => {
                if trimmed == "```" {
                    out.push(open.take().expect("open block"));
                    last_text.clear();
                } else {
                    b.text.push_str(line);
                    b.text.push('\n');
                }
            }
            None => {
                if let Some(lang) = trimmed.strip_prefix("```") {
                    open = Some(Block {
                        line: i + 1,
                        lang: lang.trim().to_string(),
                        text: String::new(),
                        before: last_text.clone(),
                    });
                } else if !trimmed.is_empty() {
                    last_text = trimmed.to_string();
                }
            }
        }
    }
    assert!(
        open.is_none(),
        "docs/language.md has an unclosed code block"
    );
    out
}

#[test]
fn every_nn_block_of_the_language_reference_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/language.md"))
        .expect("docs/language.md is readable");
    let all = blocks(&doc);
    let mut failures = Vec::new();
    let mut counts = [0usize; 3];
    for (k, b) in all.iter().enumerate() {
        if b.lang != "nn" {
            continue;
        }
        let expect = match b.before.as_str() {
            "<!-- invalid -->" => Expect::Invalid,
            "<!-- warns -->" => Expect::Warns,
            _ => Expect::Clean,
        };
        counts[expect as usize] += 1;
        let name = match expect {
            Expect::Invalid => "bad.nn".to_string(),
            _ => root
                .join("examples")
                .join(format!("language-md-line-{}.nn", b.line))
                .display()
                .to_string(),
        };
        let checked = check_source(&name, &b.text, &FsLoader, &LowerOptions::default());
        let report = checked.report();
        let rendered = report.render(false);
        let errors = report.errors().count();
        let warnings = report.warnings().count();
        let at = format!("docs/language.md:{}", b.line);
        match expect {
            Expect::Clean if errors + warnings > 0 => failures.push(format!(
                "{at}: expected a clean check, got:\n{rendered}\n(mark the block `<!-- invalid -->` or `<!-- warns -->` if that is intended)"
            )),
            Expect::Warns if errors > 0 || warnings == 0 => failures.push(format!(
                "{at}: expected warnings and no error, got {errors} error(s), {warnings} warning(s):\n{rendered}"
            )),
            Expect::Invalid if errors == 0 => failures.push(format!(
                "{at}: marked invalid, but it checks without errors"
            )),
            Expect::Invalid => {
                // The rendered diagnostic shown after the block, if any.
                if let Some(next) = all.get(k + 1).filter(|n| n.lang == "text")
                    && next.text.trim_start().starts_with("error")
                    && next.text.trim_end() != rendered.trim_end()
                {
                    failures.push(format!(
                        "{at}: the diagnostic shown at docs/language.md:{} differs from what nnc prints now:\n{rendered}",
                        next.line
                    ));
                }
            }
            _ => {}
        }
    }
    assert!(
        counts[Expect::Clean as usize] >= 30,
        "only {} valid ```nn blocks found in docs/language.md",
        counts[Expect::Clean as usize]
    );
    assert!(
        counts[Expect::Invalid as usize] >= 1,
        "no `<!-- invalid -->` block found: the diagnostics section shows one"
    );
    assert!(
        failures.is_empty(),
        "{} code block(s) of docs/language.md fail:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Every built-in layer and function (`nnc layers`) is documented.
#[test]
fn every_builtin_is_in_the_language_reference() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/language.md"))
        .expect("docs/language.md is readable");
    let missing: Vec<&str> = nnc::ir::lower::builtin_names()
        .filter(|name| {
            !(doc.contains(&format!("`{name}`"))
                || doc.contains(&format!("`{name}("))
                || doc.contains(&format!(", {name}`"))
                || doc.contains(&format!("`{name},")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/language.md does not mention: {}",
        missing.join(", ")
    );
}
