//! `nnc summary` accounts for every parameter: the top-level rows of every
//! example's table add up to its total (explicit `param`s and recurrences
//! included), and the tables of a recurrent and a convolutional example match
//! golden files (`NNC_BLESS=1` rewrites them).

use std::path::{Path, PathBuf};

use nnc::frontend::check_file;
use nnc::ir::Model;
use nnc::ir::lower::LowerOptions;
use nnc::report::summary::summary;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    files.sort();
    files
}

fn models(path: &Path) -> Vec<Model> {
    let checked = check_file(path, &LowerOptions::default())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    match checked.into_result() {
        Ok((models, _)) => models,
        Err(report) => panic!("{} has errors:\n{}", path.display(), report.render(false)),
    }
}

/// The table as `nnc summary` prints it: the training batch (or 1), two levels.
fn table(m: &Model, depth: usize) -> String {
    let batch = m.train.as_ref().map_or(1, |t| t.batch);
    summary(m, batch, depth)
}

fn number(s: &str) -> usize {
    s.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {s:?}"))
}

/// The rows of a table (between the header's rule and the closing rule), as
/// (indentation level, the row's text, its parameter count).
fn rows(table: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = table.lines().collect();
    let rules: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with('─'))
        .collect();
    assert!(rules.len() >= 3, "no table in:\n{table}");
    lines[rules[1] + 1..rules[2]]
        .iter()
        .map(|l| {
            let indent = l.len() - l.trim_start().len();
            let params = l.split_whitespace().last().unwrap_or("");
            (indent / 2, l.to_string(), number(params))
        })
        .collect()
}

fn total(table: &str) -> usize {
    let line = table
        .lines()
        .find(|l| l.starts_with("Trainable parameters:"))
        .unwrap_or_else(|| panic!("no total in:\n{table}"));
    number(
        line.trim_start_matches("Trainable parameters:")
            .split_whitespace()
            .next()
            .unwrap_or(""),
    )
}

#[test]
fn top_level_rows_add_up_to_the_total() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in examples() {
        for m in models(&path) {
            for depth in [2, usize::MAX] {
                let t = table(&m, depth);
                let top: usize = rows(&t)
                    .iter()
                    .filter(|(level, _, _)| *level == 0)
                    .map(|(_, _, p)| p)
                    .sum();
                let total = total(&t);
                assert_eq!(total, m.param_count(), "{}: the total line", m.name);
                if top != total {
                    failures.push(format!(
                        "{} ({}): top-level rows add up to {top}, the total is {total}:\n{t}",
                        m.name,
                        path.display()
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} models checked");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A row that has rows under it counts exactly their parameters, plus its own
/// (a layer's weights, a `param`); a recurrence has none of its own.
#[test]
fn nested_rows_add_up_to_their_parent() {
    for path in examples() {
        for m in models(&path) {
            let t = table(&m, usize::MAX);
            let rows = rows(&t);
            for (i, (level, text, params)) in rows.iter().enumerate() {
                let children: Vec<usize> = rows[i + 1..]
                    .iter()
                    .take_while(|(l, _, _)| l > level)
                    .filter(|(l, _, _)| *l == level + 1)
                    .map(|(_, _, p)| *p)
                    .collect();
                if children.is_empty() {
                    continue;
                }
                let sum: usize = children.iter().sum();
                if text.split_whitespace().any(|w| w == "recur") {
                    assert_eq!(sum, *params, "{}: recurrence row {text:?}\n{t}", m.name);
                } else {
                    assert!(sum <= *params, "{}: row {text:?}\n{t}", m.name);
                }
            }
        }
    }
}

#[test]
fn recurrences_and_params_are_rows() {
    let m = &models(&root().join("examples/lstm.nn"))[0];
    let t = table(m, 2);
    let rows = rows(&t);
    let find = |name: &str| {
        rows.iter()
            .find(|(l, text, _)| *l == 0 && text.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no top-level row {name}:\n{t}"))
    };
    assert!(find("Wx").1.contains("param"), "{t}");
    assert!(find("Wx").1.contains("[64, 512]"), "{t}");
    let states = rows
        .iter()
        .find(|(_, text, _)| text.starts_with("h, c "))
        .unwrap_or_else(|| panic!("no row for the recurrence `h, c`:\n{t}"));
    assert!(
        states.1.contains("recur") && states.1.contains("[B, 64, 128], [B, 64, 128]"),
        "{t}"
    );
    // The gates computed inside the step are listed under the recurrence.
    assert!(
        rows.iter()
            .any(|(l, text, _)| *l == 1 && text.contains("sigmoid")),
        "{t}"
    );
}

fn golden(example: &str) {
    let m = &models(&root().join("examples").join(format!("{example}.nn")))[0];
    let actual = table(m, 2);
    let expected_path = root()
        .join("tests/summaries")
        .join(format!("{example}.txt"));
    if std::env::var_os("NNC_BLESS").is_some_and(|v| v != "0" && !v.is_empty()) {
        std::fs::create_dir_all(expected_path.parent().expect("a directory"))
            .expect("can create tests/summaries");
        std::fs::write(&expected_path, &actual).expect("can write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
        panic!(
            "no {} (run with NNC_BLESS=1 to create it); output:\n{actual}",
            expected_path.display()
        )
    });
    assert!(
        expected == actual,
        "the summary of examples/{example}.nn differs from {}\n--- expected\n{expected}\n--- actual\n{actual}\nIf the new output is right, run with NNC_BLESS=1.",
        expected_path.display()
    );
}

#[test]
fn golden_elman() {
    golden("elman");
}

#[test]
fn golden_lenet() {
    golden("lenet");
}
