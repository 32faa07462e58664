//! The examples trained with their default recipes reach the accuracy the
//! README promises. Slow (minutes): run with
//! `cargo test --release --test acceptance -- --ignored`.

use std::path::PathBuf;
use std::process::Command;

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nnc-accept-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Trains an example with its default recipe (plus `extra` flags) and
/// returns the last epoch's record of `--log`.
fn train(example: &str, extra: &[&str], dir: &std::path::Path) -> serde_json::Value {
    let log = dir.join("log.jsonl");
    let out = dir.join("w.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["train", example, "--quiet", "--log"])
        .arg(&log)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{example}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let last = text.lines().last().unwrap();
    eprintln!("{example}: {last}");
    serde_json::from_str(last).unwrap()
}

#[test]
#[ignore = "trains LeNet for 20 epochs (about a minute in release)"]
fn lenet_reaches_97_5_percent_on_mnist() {
    let d = tmp("lenet");
    let r = train("examples/lenet.nn", &[], &d);
    let acc = r["val_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.975, "validation accuracy {acc}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
#[ignore = "trains the digits MLP (seconds in release)"]
fn digits_mlp_reaches_95_percent() {
    let d = tmp("digits");
    let r = train("examples/mlp_digits.nn", &[], &d);
    let acc = r["val_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "validation accuracy {acc}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
#[ignore = "trains the character RNN for an epoch (about a minute in release)"]
fn char_rnn_gets_below_2_nats_and_samples_words() {
    let d = tmp("char");
    let r = train("examples/char_rnn.nn", &[], &d);
    let loss = r["val_loss"].as_f64().unwrap();
    assert!(loss < 2.0, "validation loss {loss}");
    let o = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["sample", "examples/char_rnn.nn", "--weights"])
        .arg(d.join("w.safetensors"))
        .args(["--length", "600", "--seed", "3", "--temperature", "0.6"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    eprintln!("{text}");
    let common = [" the ", " and ", " to ", " of ", " I ", " you ", " my "];
    let found = common.iter().filter(|w| text.contains(*w)).count();
    assert!(found >= 3, "few English words in: {text}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
#[ignore = "trains ResNet-mini on synthetic images (a few minutes)"]
fn resnet_mini_trains_on_synthetic_images() {
    let d = tmp("resnet");
    let r = train(
        "examples/resnet_mini.nn",
        &["--data", "synthetic:512", "--epochs", "2", "--lr", "0.01"],
        &d,
    );
    assert!(r["train_loss"].as_f64().unwrap().is_finite());
    std::fs::remove_dir_all(&d).ok();
}
