//! No input makes the front end panic, hang or overflow the stack: random
//! bytes, soups of the language's tokens, random programs that parse, and
//! mutated copies of every `.nn` file in `tests/` and `examples/` all come
//! back as models or diagnostics. The front end runs on the test thread, as a
//! user's program would call it (`check_source` starts its own thread); a
//! watchdog aborts the run if one input takes too long.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use nnc::frontend::{Checked, check_source};
use nnc::ir::lower::LowerOptions;
use nnc::syntax::Loader;
use proptest::prelude::*;
use proptest::test_runner::Config;

/// Far more than any input here needs, even in a debug build.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// Serves the corpus from memory, so `use` works in mutated files without
/// reading whatever path a mutation makes up.
struct MemLoader(HashMap<PathBuf, String>);

impl Loader for MemLoader {
    fn load(&self, path: &Path) -> std::io::Result<String> {
        self.0.get(&normalise(path)).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "not in the test corpus")
        })
    }
}

fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Every `.nn` file under `tests/` and `examples/`, by path.
static CORPUS: LazyLock<Vec<(String, String)>> = LazyLock::new(|| {
    let mut files = Vec::new();
    for dir in ["tests", "examples"] {
        collect(Path::new(dir), &mut files);
    }
    files.sort();
    files
});

static LOADER: LazyLock<MemLoader> = LazyLock::new(|| {
    MemLoader(
        CORPUS
            .iter()
            .map(|(p, t)| (normalise(Path::new(p)), t.clone()))
            .collect(),
    )
});

fn collect(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|x| x == "nn")
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            out.push((path.to_string_lossy().replace('\\', "/"), text));
        }
    }
}

/// Checks `text` as the file `name` on this thread, under a watchdog; fails
/// if the checker reports an internal error (a caught panic).
fn check(name: &str, text: &str) -> Checked {
    let (done, wait) = mpsc::channel::<()>();
    let preview: String = text.chars().take(300).collect();
    let what = name.to_string();
    let watchdog = std::thread::spawn(move || {
        if let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(TIME_LIMIT) {
            eprintln!(
                "the front end took more than {TIME_LIMIT:?} on {what}; the input begins:\n{preview}"
            );
            std::process::abort();
        }
    });
    let checked = check_source(name, text, &*LOADER, &LowerOptions::default());
    let _ = done.send(());
    let _ = watchdog.join();
    // What a user sees must be producible too.
    let rendered = checked.report().render(false);
    let _ = checked.report().short();
    assert!(
        !rendered.contains("internal error"),
        "internal error on {name}:\n{rendered}\ninput:\n{}",
        text.chars().take(2000).collect::<String>()
    );
    if !checked.has_errors() {
        for m in &checked.models {
            let _ = nnc::ir::dump::dump(m);
        }
    }
    checked
}

// ---------------------------------------------------------------- strategies

/// Tokens of the language, and near misses.
const TOKENS: &[&str] = &[
    "model",
    "block",
    "train",
    "use",
    "if",
    "else",
    "recur",
    "repeat",
    "in",
    "from",
    "as",
    "true",
    "false",
    "and",
    "or",
    "not",
    "input",
    "labels",
    "param",
    "output",
    "classes",
    "init",
    "stateful",
    "truncate",
    "x",
    "y",
    "h",
    "s",
    "t",
    "B",
    "W",
    "loss",
    "m",
    "blk",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    ";",
    "=",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "+",
    "-",
    "*",
    "/",
    "@",
    "|>",
    ".",
    "..",
    ".T",
    "0",
    "1",
    "2",
    "3",
    "-1",
    "10",
    "784",
    "0.5",
    "1e-3",
    "1e400",
    "99999999999999999999",
    "\"a.nn\"",
    "\"same\"",
    "\"",
    "#",
    "\n",
    "x[t]",
    "s[t-1]",
    "[B, 4]",
    "[B, 1, 8, 8]",
    "zeros([B, 4])",
    "dense",
    "conv2d",
    "maxpool",
    "relu",
    "softmax",
    "cross_entropy",
    "mse",
    "flatten",
    "reshape",
    "concat",
    "split",
    "dropout",
    "batchnorm",
    "embedding",
    "kernel:",
    "stride:",
    "pad:",
    "groups:",
    "axis:",
    "adam",
    "sgd",
    "batch",
    "epochs",
    "optimizer",
    "schedule",
    "é",
    "\t",
    "$",
];

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..200).prop_map(|t| t.join(" "))
}

/// Values for layer arguments, good and bad.
const ARGS: &[&str] = &[
    "1",
    "2",
    "3",
    "4",
    "8",
    "0",
    "-1",
    "2.5",
    "0.5",
    "1",
    "true",
    "false",
    "\"same\"",
    "\"valid\"",
    "[2, 2]",
    "[1]",
    "[B, 4]",
    "x",
    "B",
    "kernel: 3",
    "kernel: 9",
    "stride: 0",
    "stride: 2",
    "pad: 1",
    "pad: \"same\"",
    "groups: 2",
    "axis: -1",
    "axis: 5",
    "bias: false",
    "p: 1",
    "units: 4",
    "dim: 3",
    "parts: 2",
    "classes: 3",
];

const LAYERS: &[&str] = &[
    "dense",
    "conv1d",
    "conv2d",
    "maxpool",
    "avgpool",
    "global_avgpool",
    "dropout",
    "batchnorm",
    "layernorm",
    "embedding",
    "relu",
    "sigmoid",
    "tanh",
    "leaky_relu",
    "prelu",
    "elu",
    "gelu",
    "silu",
    "softplus",
    "softmax",
    "log_softmax",
    "flatten",
    "reshape",
    "concat",
    "add",
    "multiply",
    "split",
    "slice",
    "mean",
    "sum",
    "max",
    "transpose",
    "last",
    "one_hot",
    "identity",
    "blk",
    "nope",
];

/// Layers written as they usually are, so that most random programs get
/// past the first error and into the shape rules.
const GOOD_LAYERS: &[&str] = &[
    "dense(4)",
    "dense(3, bias: false)",
    "conv1d(2, kernel: 3, pad: 1)",
    "conv2d(2, kernel: 3)",
    "conv2d(4, kernel: 3, stride: 2, pad: \"same\")",
    "conv2d(4, kernel: 1, groups: 2)",
    "maxpool(2)",
    "avgpool(2, stride: 1)",
    "global_avgpool",
    "dropout(0.5)",
    "batchnorm",
    "layernorm",
    "relu",
    "sigmoid",
    "tanh",
    "leaky_relu(alpha: 0.1)",
    "prelu",
    "prelu(per_channel: true)",
    "elu",
    "gelu",
    "silu",
    "softplus",
    "softmax",
    "log_softmax(axis: 1)",
    "flatten",
    "reshape([-1])",
    "reshape([2, -1])",
    "mean(axis: 1)",
    "sum(axis: -1, keep: true)",
    "transpose",
    "last",
    "identity",
    "blk",
    "blk(n: 3)",
    "repeat 2 { relu }",
    "repeat i in 0..2 { dense(4 + i) }",
    "embedding(3)",
    "one_hot(classes: 3)",
];

const GOOD_SHAPES: &[&str] = &["[B, 4]", "[B, 6, 4]", "[B, 2, 8, 8]", "[B, 3, 10]", "[B]"];
const BAD_SHAPES: &[&str] = &["[4, B]", "[B, 0]", "[B, -2]", "4"];

fn shape() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        9 => prop::sample::select(GOOD_SHAPES),
        1 => prop::sample::select(BAD_SHAPES),
    ]
}

/// A program that usually parses: random layers with random arguments on
/// random inputs, so the checker's rules (not only the parser) are exercised.
fn random_program() -> impl Strategy<Value = String> {
    let odd_layer = (
        prop::sample::select(LAYERS),
        prop::collection::vec(prop::sample::select(ARGS), 0..3),
        any::<bool>(),
    )
        .prop_map(|(name, args, call)| {
            if call || !args.is_empty() {
                format!("{name}({})", args.join(", "))
            } else {
                name.to_string()
            }
        });
    let layer = prop_oneof![
        4 => prop::sample::select(GOOD_LAYERS).prop_map(str::to_string),
        1 => odd_layer,
    ];
    let stmt = (
        any::<prop::sample::Index>(),
        prop::collection::vec(layer, 1..4),
        prop::sample::select(&["", "", "", " + x", " * 2", " - x", " @ x"][..]),
    );
    (
        shape(),
        shape(),
        prop::collection::vec(stmt, 1..6),
        prop::sample::select(
            &[
                "",
                "loss = cross_entropy(h0, y)",
                "loss = cross_entropy(h1, y)",
                "loss = mse(h0, x)",
                "loss = mean(h0)",
                "loss = binary_cross_entropy(sigmoid(h0), y)",
            ][..],
        ),
        any::<bool>(),
    )
        .prop_map(|(xs, ys, stmts, loss, classes)| {
            let classes = if classes { " classes 4" } else { "" };
            let mut p = String::from("block blk(n = 2)(a) {\n  a |> dense(n) |> relu\n}\n");
            p.push_str(&format!(
                "model m {{\n  input x: {xs}\n  labels y: {ys}{classes}\n"
            ));
            for (i, (src, layers, tail)) in stmts.iter().enumerate() {
                // Read `x` or an earlier statement.
                let src = match src.index(i + 1) {
                    0 => "x".to_string(),
                    k => format!("h{}", k - 1),
                };
                let chain = format!("{src} |> {}", layers.join(" |> "));
                if tail.is_empty() {
                    p.push_str(&format!("  h{i} = {chain}\n"));
                } else {
                    p.push_str(&format!("  h{i} = ({chain}){tail}\n"));
                }
            }
            p.push_str(&format!("  {loss}\n}}\n"));
            p
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Duplicate(usize, usize),
    Swap(usize, usize, usize),
    Insert(usize, &'static str),
    DeleteToken(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = any::<prop::sample::Index>();
    prop_oneof![
        (at.clone(), 1..40usize).prop_map(|(i, n)| Mutation::Delete(i.index(1 << 20), n)),
        (at.clone(), 1..80usize).prop_map(|(i, n)| Mutation::Duplicate(i.index(1 << 20), n)),
        (at.clone(), at.clone(), 1..30usize).prop_map(|(i, j, n)| Mutation::Swap(
            i.index(1 << 20),
            j.index(1 << 20),
            n
        )),
        (at.clone(), prop::sample::select(TOKENS))
            .prop_map(|(i, t)| Mutation::Insert(i.index(1 << 20), t)),
        at.prop_map(|i| Mutation::DeleteToken(i.index(1 << 20))),
    ]
}

/// Applies a mutation to the bytes of a file; offsets wrap around its length.
fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        if let Mutation::Insert(_, t) = m {
            bytes.extend_from_slice(t.as_bytes());
        }
        return;
    }
    let clamp = |i: usize, n: usize| {
        let i = i % len;
        (i, (i + n).min(len))
    };
    match *m {
        Mutation::Delete(i, n) => {
            let (a, b) = clamp(i, n);
            bytes.drain(a..b);
        }
        Mutation::Duplicate(i, n) => {
            let (a, b) = clamp(i, n);
            let copy = bytes[a..b].to_vec();
            bytes.splice(b..b, copy);
        }
        Mutation::Swap(i, j, n) => {
            let (a, b) = clamp(i.min(j), n);
            let (c, d) = clamp(i.max(j), n);
            if b <= c {
                let first = bytes[a..b].to_vec();
                let second = bytes[c..d].to_vec();
                bytes.splice(c..d, first);
                bytes.splice(a..b, second);
            }
        }
        Mutation::Insert(i, t) => {
            let i = i % (len + 1);
            bytes.splice(i..i, t.bytes().chain(std::iter::once(b' ')));
        }
        Mutation::DeleteToken(i) => {
            // The word or punctuation run that contains byte i.
            let i = i % len;
            let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
            let kind = word(bytes[i]);
            let mut a = i;
            while a > 0 && word(bytes[a - 1]) == kind && !bytes[a - 1].is_ascii_whitespace() {
                a -= 1;
            }
            let mut b = i + 1;
            while b < len && word(bytes[b]) == kind && !bytes[b].is_ascii_whitespace() {
                b += 1;
            }
            bytes.drain(a..b);
        }
    }
}

fn corpus_file() -> impl Strategy<Value = usize> {
    let n = CORPUS.len().max(1);
    0..n
}

/// `NNC_FUZZ_SCALE=20 cargo test --release --test no_panic` runs twenty
/// times as many cases, for a longer hunt than the default quick run.
fn config(cases: u32) -> Config {
    let scale = std::env::var("NNC_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    Config {
        cases: cases.saturating_mul(scale),
        // Shrinking re-runs the front end many times; a failure is already
        // reported with its input.
        max_shrink_iters: 64,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        check("random.nn", &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn random_printable_text(text in "[ -~\n\t]{0,1500}") {
        check("printable.nn", &text);
    }

    #[test]
    fn token_soups(text in token_soup()) {
        check("soup.nn", &text);
        check("soup_model.nn", &format!("model m {{\n  input x: [B, 4]\n{text}\n}}\n"));
    }

    #[test]
    fn random_programs(text in random_program()) {
        let c = check("program.nn", &text);
        if std::env::var_os("NNC_FUZZ_STATS").is_some() {
            eprintln!("{}", c.diagnostics.iter().find(|d| d.is_error()).map_or("OK".to_string(), |d| d.message.chars().take(40).collect()));
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn mutated_corpus_files(
        file in corpus_file(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let Some((name, text)) = CORPUS.get(file) else {
            return Ok(());
        };
        let mut bytes = text.clone().into_bytes();
        for m in &mutations {
            mutate(&mut bytes, m);
        }
        check(name, &String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn the_corpus_is_there() {
    assert!(
        CORPUS.len() >= 40,
        "expected the .nn files of tests/ (and examples/), found {}",
        CORPUS.len()
    );
    for (name, text) in CORPUS.iter() {
        check(name, text);
    }
}

// ---------------------------------------------------------------- deep nesting

fn model_with(expr: &str) -> String {
    format!("model m {{\n  input x: [B, 4]\n  h = {expr}\n  output h\n}}\n")
}

fn errors_of(c: &Checked) -> Vec<String> {
    c.diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(|d| d.message.clone())
        .collect()
}

#[test]
fn ten_thousand_parentheses() {
    let n = 10_000;
    let c = check(
        "parens.nn",
        &model_with(&format!("{}x{}", "(".repeat(n), ")".repeat(n))),
    );
    assert!(
        errors_of(&c).iter().any(|m| m.contains("nested more than")),
        "{:?}",
        errors_of(&c)
    );
}

#[test]
fn a_hundred_thousand_minus_signs() {
    let c = check(
        "minus.nn",
        &model_with(&format!("{}x", "-".repeat(100_000))),
    );
    assert!(c.has_errors());
}

#[test]
fn a_hundred_thousand_term_sum() {
    let mut e = String::from("x");
    for _ in 0..100_000 {
        e.push_str(" + x");
    }
    let c = check("sum.nn", &model_with(&e));
    assert!(c.has_errors());
}

#[test]
fn a_sum_just_within_the_limit_checks() {
    let mut e = String::from("x");
    for _ in 0..1_500 {
        e.push_str(" + x");
    }
    let c = check("sum.nn", &model_with(&e));
    assert!(!c.has_errors(), "{}", c.report().render(false));
}

#[test]
fn ten_thousand_chained_else_ifs() {
    let mut p = String::from("block pick(k)(x) {\n  if k == 0 { x }");
    for i in 1..=10_000 {
        p.push_str(&format!(" else if k == {i} {{ x |> relu }}"));
    }
    p.push_str(" else { x }\n}\n");
    p.push_str("model m {\n  input x: [B, 4]\n  h = x |> pick(9999)\n  output h\n}\n");
    // Either it checks, or it is refused with a diagnostic: never a crash.
    check("elseif.nn", &p);
}

#[test]
fn a_thousand_nested_blocks() {
    let mut p = String::new();
    for i in 0..1_000 {
        p.push_str(&format!("block b{i}()(x) {{ x |> b{} }}\n", i + 1));
    }
    p.push_str("block b1000()(x) { x |> relu }\n");
    p.push_str("model m {\n  input x: [B, 4]\n  h = x |> b0\n  output h\n}\n");
    let c = check("blocks.nn", &p);
    assert!(
        errors_of(&c).iter().any(|m| m.contains("nested more than")),
        "{:?}",
        errors_of(&c)
    );
}

#[test]
fn a_block_that_uses_itself() {
    let p = "block f(n)(x) { x |> f(n + 1) }\nmodel m {\n  input x: [B, 4]\n  h = x |> f(0)\n  output h\n}\n";
    let c = check("self.nn", p);
    assert!(c.has_errors());
}

#[test]
fn a_thousand_nested_repeats() {
    let n = 1_000;
    let e = format!("x |> {}relu{}", "repeat 2 { ".repeat(n), " }".repeat(n));
    check("repeats.nn", &model_with(&e));
}

#[test]
fn a_hundred_million_layers_are_refused() {
    let c = check(
        "repeats.nn",
        &model_with("x |> repeat 10000 { repeat 10000 { relu } }"),
    );
    assert!(
        errors_of(&c).iter().any(|m| m.contains("grows past")),
        "{:?}",
        errors_of(&c)
    );
}

#[test]
fn huge_sizes_are_refused_not_overflowed() {
    for expr in [
        "x |> reshape([4611686018427387904, 4611686018427387904, -1])",
        "x |> reshape([2, 2]) |> conv2d(1, kernel: [4294967296, 4294967296])",
        "x |> reshape([2, 2]) |> conv1d(1, kernel: 3, pad: 9000000000000000000)",
        "x |> reshape([2, 2]) |> maxpool(9223372036854775807)",
        "x |> dense(9223372036854775807)",
        "x |> one_hot(classes: 4611686018427387904)",
        "zeros([B, 1000000000000000, 1000000000000000])",
        "x |> mean(axis: -9223372036854775808)",
        "x[-9223372036854775808]",
        "(9223372036854775807 + 1) * x",
    ] {
        let c = check("huge.nn", &model_with(expr));
        assert!(c.has_errors(), "{expr} checked without error");
    }
}

#[test]
fn long_lines_and_many_statements() {
    let mut p = String::from("model m {\n  input x: [B, 4]\n  h0 = x\n");
    for i in 1..5_000 {
        p.push_str(&format!("  h{i} = h{} |> relu\n", i - 1));
    }
    p.push_str("  output h4999\n}\n");
    let c = check("long.nn", &p);
    assert!(!c.has_errors(), "{}", c.report().render(false));
}
