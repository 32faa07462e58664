//! The `nnc` binary as a user runs it: `nnc check` exits 0 for a valid file,
//! 1 for an invalid one, 2 when a file cannot be read, and never 101 (a
//! panic), whatever the input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn nnc(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("cannot run nnc: {e}"),
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch file of this test's own, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, contents: &[u8]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("nnc-cli-check-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, contents) {
            panic!("cannot write {}: {e}", path.display());
        }
        Scratch(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const VALID: &str = "model mlp {\n  input x: [B, 4]\n  labels y: [B] classes 3\n  logits = x |> dense(8) |> relu |> dense(3)\n  loss = cross_entropy(logits, y)\n}\n";

#[test]
fn a_valid_file_exits_0() {
    let f = Scratch::new("valid.nn", VALID.as_bytes());
    let o = nnc(&["check", f.path()]);
    assert_eq!(code(&o), 0, "stderr:\n{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("ok"), "{}", text(&o.stdout));
}

#[test]
fn an_invalid_file_exits_1_with_its_diagnostic() {
    let o = nnc(&["check", "tests/invalid/add_shape_mismatch.nn"]);
    assert_eq!(code(&o), 1, "stderr:\n{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("cannot add tensors of shapes [B, 256] and [B, 128]"),
        "{err}"
    );
    assert!(
        err.contains("tests/invalid/add_shape_mismatch.nn:6:9"),
        "{err}"
    );
    // Plain text when NO_COLOR is set.
    assert!(!err.contains('\u{1b}'), "{err}");
}

#[test]
fn a_missing_file_exits_2() {
    let o = nnc(&["check", "tests/invalid/there_is_no_such_file.nn"]);
    assert_eq!(code(&o), 2, "stderr:\n{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("there_is_no_such_file.nn"));
}

#[test]
fn a_missing_file_among_others_still_exits_2() {
    let f = Scratch::new("valid2.nn", VALID.as_bytes());
    let o = nnc(&[
        "check",
        f.path(),
        "tests/invalid/add_shape_mismatch.nn",
        "tests/invalid/there_is_no_such_file.nn",
    ]);
    assert_eq!(code(&o), 2, "stderr:\n{}", text(&o.stderr));
}

#[test]
fn no_bad_input_makes_it_panic() {
    let cases: &[(&str, &[u8])] = &[
        ("empty.nn", b""),
        ("binary.nn", &[0xff, 0xfe, 0x00, 0x80, b'(', 0xc3]),
        ("nul.nn", b"model m {\0}"),
        ("deep.nn", &[b'('; 100_000]),
        (
            "garbage.nn",
            b"}}}} model ((( [B, -1] |> |> @@ \"unterminated",
        ),
        (
            "imports.nn",
            b"use \"/dev/zero\"\nuse \".\"\nuse \"missing.nn\"\n",
        ),
        (
            "cycle.nn",
            b"model m {\n  input x: [B, 4]\n  a = b\n  b = a\n  output a\n}\n",
        ),
    ];
    for (name, contents) in cases {
        let f = Scratch::new(name, contents);
        for cmd in ["check", "summary", "ir"] {
            let o = nnc(&[cmd, f.path()]);
            let c = code(&o);
            // 0 is fine too: an empty file is a valid file without a model.
            assert!(
                (0..=2).contains(&c),
                "`nnc {cmd} {name}` exited with {c}; stderr:\n{}",
                text(&o.stderr)
            );
        }
    }
}

#[test]
fn a_directory_is_not_a_file() {
    let o = nnc(&["check", "tests"]);
    assert_eq!(code(&o), 2, "stderr:\n{}", text(&o.stderr));
}

#[test]
fn a_file_without_a_model_says_so_without_pointing_at_a_line() {
    let s = Scratch::new(
        "only_blocks.nn",
        b"# blocks only\nblock b()(x) { x |> relu }\n",
    );
    let path = s.0.display().to_string();
    for cmd in ["gradcheck", "train"] {
        let o = nnc(&[cmd, &path]);
        assert_eq!(code(&o), 1, "nnc {cmd}");
        assert_eq!(
            text(&o.stderr).trim_end(),
            format!("error: {path} defines no model"),
            "nnc {cmd}"
        );
    }
}

#[test]
fn a_closed_output_pipe_ends_it_without_a_panic() {
    use std::io::Read;
    // The IR of ResNet-50 is far larger than a pipe's buffer.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/resnet50.nn");
    let mut child = match Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["ir", example])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run nnc: {e}"),
    };
    let mut head = [0u8; 100];
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_exact(&mut head);
    } // dropping stdout closes the pipe, like `| head`
    let o = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("nnc did not finish: {e}"),
    };
    assert_ne!(o.status.code(), Some(101), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("panicked"), "{}", text(&o.stderr));
}
