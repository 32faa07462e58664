//! File-based golden tests, shared by the harnesses in `tests/`: every
//! `DIR/NAME.nn` is run through a function and its output compared with
//! `DIR/NAME.EXT`. With `NNC_BLESS=1` the expected files are rewritten instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Runs `f(file name, text)` on every `.nn` file of `dir` and compares its
/// output with the file beside it with extension `ext`. `Err` from `f` is a
/// failure that blessing cannot accept. Panics once, listing every mismatch.
pub fn run(dir: &str, ext: &str, f: impl Fn(&str, &str) -> Result<String, String>) {
    let bless = std::env::var_os("NNC_BLESS").is_some_and(|v| v != "0" && !v.is_empty());
    let files = nn_files(Path::new(dir));
    assert!(!files.is_empty(), "no .nn files in {dir}");
    let mut failures = Vec::new();
    for path in &files {
        let name = path.to_string_lossy().replace('\\', "/");
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: cannot read: {e}"));
                continue;
            }
        };
        let actual = match f(&name, &text) {
            Ok(out) => out,
            Err(message) => {
                failures.push(format!("{name}: {message}"));
                continue;
            }
        };
        let expected_path = path.with_extension(ext);
        if bless {
            if let Err(e) = std::fs::write(&expected_path, &actual) {
                failures.push(format!("{}: cannot write: {e}", expected_path.display()));
            }
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => failures.push(format!(
                "{name}: output differs from {} (- expected, + actual):\n{}",
                expected_path.display(),
                diff(&expected, &actual)
            )),
            Err(_) => failures.push(format!(
                "{name}: no {} (run with NNC_BLESS=1 to create it); output:\n{actual}",
                expected_path.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} golden file(s) in {dir} failed:\n\n{}\n\nIf the new output is right, run with NNC_BLESS=1.",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

fn nn_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "nn"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A line diff (longest common subsequence), with two lines of context.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near_change = |k: usize| {
        let lo = k.saturating_sub(2);
        let hi = (k + 3).min(ops.len());
        ops[lo..hi].iter().any(|(c, _)| *c != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near_change(k) {
            if skipped {
                out.push_str("   ...\n");
                skipped = false;
            }
            let _ = writeln!(out, "{c}  {line}");
        } else {
            skipped = true;
        }
    }
    if expected.ends_with('\n') != actual.ends_with('\n') {
        out.push_str("   (the files differ in their final newline)\n");
    }
    out
}
