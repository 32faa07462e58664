//! `nnc ir --kernels` and the memory lines of `nnc summary`: the scheduled
//! program as a user inspects it.

use std::process::Command;

fn nnc(args: &[&str]) -> (i32, String, String) {
    let out = match Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run nnc: {e}"),
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number after `label` in `text`, in bytes ("1.5 MiB" → 1572864).
fn bytes_after(text: &str, label: &str) -> f64 {
    let Some(at) = text.find(label) else {
        panic!("no `{label}` in:\n{text}")
    };
    let mut words = text[at + label.len()..].split_whitespace();
    let value: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    let unit = match words.next() {
        Some("B") => 1.0,
        Some("KiB") => 1024.0,
        Some("MiB") => 1024.0 * 1024.0,
        Some("GiB") => 1024.0 * 1024.0 * 1024.0,
        u => panic!("unit {u:?} after `{label}`"),
    };
    value * unit
}

#[test]
fn kernels_of_the_training_step_are_listed_with_the_arena() {
    let (code, out, err) = nnc(&["ir", "--kernels", "examples/mlp_digits.nn"]);
    assert_eq!(code, 0, "{err}");
    // The forward product of the first layer at the train block's batch (32),
    // the products of the backward pass, and Adam updates in kernels of
    // their own (one per parameter).
    assert!(out.contains("gemm 32x128x64"), "{out}");
    assert!(out.contains("gemm 64x128x32"), "{out}");
    assert!(out.contains("adam [128, 64]"), "{out}");
    assert_eq!(out.matches("adam [").count(), 6, "{out}");
    assert!(
        out.lines().last().is_some_and(|l| l.starts_with("arena: ")),
        "{out}"
    );
}

#[test]
fn inference_kernels_follow_batch() {
    let (code, out, err) = nnc(&[
        "ir",
        "--kernels",
        "--infer",
        "--batch",
        "5",
        "examples/lenet.nn",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("conv Forward [5, 1, 28, 28]→[5, 6, 28, 28]"),
        "{out}"
    );
    // No backward pass at inference.
    assert!(!out.contains("Grad"), "{out}");
}

#[test]
fn kernels_of_a_model_without_loss_need_infer() {
    let dir = std::env::temp_dir().join(format!("nnc-cli-plan-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("noloss.nn");
    if let Err(e) = std::fs::write(&file, "model m { input x: [B, 4]\n y = x |> dense(2) }\n") {
        panic!("{e}");
    }
    let path = file.to_string_lossy().into_owned();
    let (code, _, err) = nnc(&["ir", "--kernels", &path]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--infer"), "{err}");
    let (code, out, err) = nnc(&["ir", "--kernels", "--infer", &path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("gemm"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn summary_reports_planned_memory_below_the_naive_sum() {
    let (code, out, err) = nnc(&["summary", "examples/lenet.nn"]);
    assert_eq!(code, 0, "{err}");
    let train = bytes_after(&out, "Training memory at batch 64:");
    let arena = bytes_after(&out, "= arena");
    let naive = bytes_after(&out, "without the plan:");
    let infer = bytes_after(&out, "Inference memory at batch 64:");
    // Parameters (241 KiB) and Adam's two moments come on top of the arena.
    assert!(train > arena + 3.0 * 241.0 * 1024.0 * 0.99, "{out}");
    // Reuse by liveness and in-place updates save more than 40% of LeNet's
    // activations and gradients (48%: 3.1 of 6.0 MiB, with its bias and
    // ReLU after the pooling, which leaves fewer tensors to reuse).
    assert!(arena < naive * 0.6, "{out}");
    assert!(infer < train, "{out}");
}
