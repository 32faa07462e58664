//! The training commands end to end, through the `nnc` binary: train with
//! each data reader, log and plot, resume equality, NaN handling, Ctrl-C
//! and kill -9, eval, predict, sample, gradcheck, and the errors users see.
//!
//! Models and data are tiny so the whole file runs in seconds.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nnc::runtime::checkpoint::Checkpoint;

fn nnc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nnc"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env("NO_COLOR", "1");
    c
}

fn run(args: &[&str]) -> Output {
    nnc().args(args).output().expect("run nnc")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = run(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "nnc {args:?} failed: {err}\n{out}");
    out
}

/// A fresh temporary directory, removed on drop.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("nnc-cli-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn s(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path(name), text).unwrap();
        self.s(name)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const DIGITS: &str = "examples/mlp_digits.nn";

/// A small classifier for 8x8 digits, quick to train.
const SMALL: &str = "model small {\n  input x: [B, 64]\n  labels y: [B] classes 10\n  logits = x |> dense(32) |> relu |> dense(10)\n  loss = cross_entropy(logits, y)\n}\n\ntrain small {\n  data idx(images: \"IMAGES\", labels: \"LABELS\")\n  validation 0.2\n  optimizer adam(lr: 3e-3)\n  schedule cosine()\n  batch 50, epochs 4, seed 3\n}\n";

fn small(t: &Tmp) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits");
    let src = SMALL
        .replace(
            "IMAGES",
            &root.join("digits-images-idx3-ubyte").display().to_string(),
        )
        .replace(
            "LABELS",
            &root.join("digits-labels-idx1-ubyte").display().to_string(),
        );
    t.write("small.nn", &src)
}

fn jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn train_logs_plots_and_checkpoints() {
    let t = Tmp::new("train");
    let f = small(&t);
    let out = ok(&[
        "train",
        &f,
        "--threads",
        "1",
        "--out",
        &t.s("w.safetensors"),
        "--log",
        &t.s("m.jsonl"),
        "--plot",
        &t.s("c.svg"),
    ]);
    assert!(
        out.contains("training small (2,410 parameters) on idx("),
        "{out}"
    );
    assert!(out.contains("epoch 4/4  loss "), "{out}");
    assert!(out.contains("val_acc"), "{out}");
    assert!(out.contains("trained small: 4 epochs"), "{out}");
    let log = jsonl(&t.path("m.jsonl"));
    assert_eq!(log.len(), 4);
    assert_eq!(log[3]["epoch"], 4);
    assert!(log[3]["val_accuracy"].as_f64().unwrap() > 0.85, "{log:?}");
    let svg = std::fs::read_to_string(t.path("c.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("validation"));
    let c = Checkpoint::load(&t.path("w.safetensors")).unwrap();
    assert_eq!((c.epoch, c.batch_in_epoch, c.step), (4, 0, 4 * 29));
    assert_eq!(
        c.get("fc1.weight").map(|a| a.shape().to_vec()),
        Some(vec![32, 64])
    );
    assert!(
        c.optimizer
            .iter()
            .any(|(n, _)| n == "optim.fc1.weight.exp_avg")
    );
    // PNG too, and --quiet prints nothing.
    let o = run(&[
        "train",
        &f,
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &t.s("q.safetensors"),
        "--plot",
        &t.s("c.png"),
    ]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty(), "{}", text(&o).0);
    assert_eq!(&std::fs::read(t.path("c.png")).unwrap()[1..4], b"PNG");
    // A bad plot name is refused before training.
    let o = run(&["train", &f, "--plot", &t.s("c.gif")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains(".png or .svg"));
}

#[test]
fn every_reader_feeds_train() {
    let t = Tmp::new("readers");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits");
    let d = |n: &str| digits.join(n).display().to_string();
    // IDX pair and CSV (label first) from the bundled digits.
    let idx = format!(
        "{},{}",
        d("digits-images-idx3-ubyte"),
        d("digits-labels-idx1-ubyte")
    );
    for data in [idx.as_str(), &d("digits.csv")] {
        let out = ok(&[
            "train",
            DIGITS,
            "--data",
            data,
            "--epochs",
            "1",
            "--out",
            &t.s("a.safetensors"),
        ]);
        assert!(
            out.contains("1,438 samples, 359 for validation"),
            "{data}: {out}"
        );
    }
    // npy pair and safetensors, written here.
    let x: Vec<f32> = (0..40 * 64).map(|i| ((i * 7) % 13) as f32 / 13.0).collect();
    let y: Vec<i64> = (0..40).map(|i| i % 10).collect();
    {
        use ndarray_npy::WriteNpyExt;
        let xa = ndarray::Array2::from_shape_vec((40, 64), x.clone()).unwrap();
        let ya = ndarray::Array1::from(y.clone());
        xa.write_npy(std::fs::File::create(t.path("x.npy")).unwrap())
            .unwrap();
        ya.write_npy(std::fs::File::create(t.path("y.npy")).unwrap())
            .unwrap();
    }
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let yb: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    let st = safetensors::serialize(
        vec![
            (
                "x",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![40, 64], &xb)
                    .unwrap(),
            ),
            (
                "y",
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![40], &yb)
                    .unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    std::fs::write(t.path("d.safetensors"), st).unwrap();
    let npy = format!("{},{}", t.s("x.npy"), t.s("y.npy"));
    for data in [
        npy.as_str(),
        &t.s("d.safetensors"),
        &t.0.display().to_string(),
    ] {
        let out = ok(&[
            "train",
            DIGITS,
            "--data",
            data,
            "--epochs",
            "1",
            "--out",
            &t.s("b.safetensors"),
        ]);
        assert!(
            out.contains("32 samples, 8 for validation"),
            "{data}: {out}"
        );
    }
    // MNIST directory (a tiny model on the bundled test set).
    let m = t.write(
        "m.nn",
        "model m { input x: [B, 1, 28, 28]  labels y: [B] classes 10\n logits = x |> avgpool(4) |> flatten |> dense(10)\n loss = cross_entropy(logits, y) }\n train m { validation 0.5  batch 500 }",
    );
    let out = ok(&[
        "train",
        &m,
        "--data",
        "examples/data/mnist",
        "--epochs",
        "1",
        "--out",
        &t.s("c.safetensors"),
    ]);
    assert!(out.contains("5,000 samples, 5,000 for validation"), "{out}");
    // Text, for a character model.
    t.write("t.txt", &"the cat sat on the mat. ".repeat(40));
    let c = t.write(
        "c.nn",
        "model c { input x: [B, 8] classes 13  labels y: [B, 8] classes 13\n e = x |> embedding(8)\n h = recur t in 0..8 from zeros([B, 16]) { tanh((e[t] |> dense(16) as ih) + (h[t-1] |> dense(16, bias: false) as hh)) }\n loss = cross_entropy(h |> dense(13) as fc, y) }\n train c { validation 0.1  optimizer adam(lr: 0.01)  batch 16 }",
    );
    let out = ok(&[
        "train",
        &c,
        "--data",
        &t.s("t.txt"),
        "--epochs",
        "3",
        "--out",
        &t.s("t.safetensors"),
    ]);
    assert!(out.contains("epoch 3/3"), "{out}");
    let ck = Checkpoint::load(&t.path("t.safetensors")).unwrap();
    assert_eq!(ck.vocab.as_ref().map(Vec::len), Some(11));
    // Sampling from it uses the stored vocabulary.
    let s = ok(&[
        "sample",
        &c,
        "--weights",
        &t.s("t.safetensors"),
        "--length",
        "30",
        "--prime",
        "the ",
        "--seed",
        "1",
    ]);
    assert!(s.starts_with("the "), "{s}");
    assert_eq!(s.trim_end_matches('\n').chars().count(), 34, "{s:?}");
    assert!(s.chars().all(|ch| "the casonm.\n".contains(ch)), "{s:?}");
    let o = run(&[
        "sample",
        &c,
        "--weights",
        &t.s("t.safetensors"),
        "--prime",
        "xyz",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("not in the model's vocabulary"),
        "{}",
        text(&o).1
    );
}

#[test]
fn malformed_data_is_reported_with_the_file() {
    let t = Tmp::new("bad");
    let src = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits/digits-images-idx3-ubyte"),
    )
    .unwrap();
    std::fs::write(t.path("imgs"), &src[..1000]).unwrap();
    let labels =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits/digits-labels-idx1-ubyte");
    let data = format!("{},{}", t.s("imgs"), labels.display());
    let o = run(&[
        "train",
        DIGITS,
        "--data",
        &data,
        "--out",
        &t.s("w.safetensors"),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o).1;
    assert!(err.contains("imgs") && err.contains("truncated"), "{err}");
    t.write("bad.csv", "1,2,3\n4,5\n");
    let o = run(&["train", DIGITS, "--data", &t.s("bad.csv")]);
    assert!(text(&o).1.contains("bad.csv"), "{}", text(&o).1);
    // Data of the wrong shape for the model.
    t.write("narrow.csv", "1,0.5,0.25\n0,0.1,0.2\n");
    let o = run(&["train", DIGITS, "--data", &t.s("narrow.csv")]);
    let err = text(&o).1;
    assert!(err.contains("narrow.csv") && err.contains("[64]"), "{err}");
    // No data at all.
    let f = t.write("nodata.nn", "model m { input x: [B, 2]  labels y: [B] classes 2\n loss = cross_entropy(x |> dense(2), y) }");
    let o = run(&["train", &f]);
    assert!(
        text(&o).1.contains("has no training data"),
        "{}",
        text(&o).1
    );
}

fn comparable(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    v["seconds"] = serde_json::Value::Null;
    v["samples_per_sec"] = serde_json::Value::Null;
    v
}

#[test]
fn resumed_runs_equal_uninterrupted_ones() {
    let t = Tmp::new("resume");
    let f = small(&t);
    ok(&[
        "train",
        &f,
        "--threads",
        "1",
        "--out",
        &t.s("full.safetensors"),
        "--log",
        &t.s("full.jsonl"),
    ]);
    // Interrupted in the middle of epoch 2, resumed, interrupted at an epoch end, resumed.
    for (stop, resume) in [(Some("40"), false), (Some("87"), true), (None, true)] {
        let part = t.s("part.safetensors");
        let log = t.s("part.jsonl");
        let mut args = vec!["train", &f, "--threads", "1", "--out", &part];
        args.extend(["--log", &log]);
        if resume {
            args.extend(["--resume", &part]);
        }
        if let Some(s) = stop {
            args.extend(["--stop-after", s]);
        }
        let o = run(&args);
        assert!(o.status.success(), "{}", text(&o).1);
        if stop.is_some() {
            assert!(text(&o).1.contains("--resume"), "{}", text(&o).1);
        }
    }
    let a: Vec<_> = jsonl(&t.path("full.jsonl"))
        .iter()
        .map(comparable)
        .collect();
    let b: Vec<_> = jsonl(&t.path("part.jsonl"))
        .iter()
        .map(comparable)
        .collect();
    assert_eq!(a, b);
    let ca = Checkpoint::load(&t.path("full.safetensors")).unwrap();
    let cb = Checkpoint::load(&t.path("part.safetensors")).unwrap();
    assert_eq!(ca.params, cb.params);
    assert_eq!(ca.optimizer, cb.optimizer);
    assert_eq!(ca.step, cb.step);
    // A resumed run keeps its own epochs and learning rate, not the block's.
    let p2 = t.s("p2.safetensors");
    let o = run(&[
        "train",
        &f,
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--stop-after",
        "10",
        "--out",
        &p2,
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let out = ok(&["train", &f, "--resume", &p2, "--out", &p2]);
    assert!(
        out.contains("epoch 2/2") && !out.contains("epoch 3/"),
        "{out}"
    );
    let c = Checkpoint::load(&t.path("p2.safetensors")).unwrap();
    assert_eq!(c.extra.get("lr").map(String::as_str), Some("1e-2"));
    // Resuming a finished run has nothing to do.
    let out = ok(&[
        "train",
        &f,
        "--resume",
        &t.s("full.safetensors"),
        "--out",
        &t.s("x.safetensors"),
    ]);
    assert!(out.contains("nothing to do"), "{out}");
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint() {
    let t = Tmp::new("nan");
    let f = small(&t);
    ok(&["train", &f, "--epochs", "1", "--out", &t.s("w.safetensors")]);
    let before = std::fs::read(t.path("w.safetensors")).unwrap();
    let o = run(&[
        "train",
        &f,
        "--epochs",
        "3",
        "--lr",
        "1e30",
        "--resume",
        &t.s("w.safetensors"),
        "--out",
        &t.s("w.safetensors"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o).1;
    assert!(
        err.contains("the loss is") && err.contains("at step") && err.contains("batch"),
        "{err}"
    );
    assert!(err.contains("last good checkpoint"), "{err}");
    assert_eq!(std::fs::read(t.path("w.safetensors")).unwrap(), before);
}

#[test]
fn wrong_model_checkpoints_say_what_differs() {
    let t = Tmp::new("wrong");
    let f = small(&t);
    ok(&["train", &f, "--epochs", "1", "--out", &t.s("w.safetensors")]);
    let o = run(&["eval", DIGITS, "--weights", &t.s("w.safetensors")]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o).1;
    assert!(err.contains("does not fit the model `mlp_digits`"), "{err}");
    assert!(err.contains("written for the model `small`"), "{err}");
    assert!(
        err.contains("missing from the file (2): fc3.weight, fc3.bias"),
        "{err}"
    );
    assert!(
        err.contains("wrong shape: fc1.weight is [32, 64] in the file but [128, 64]"),
        "{err}"
    );
    // A truncated checkpoint.
    let bytes = std::fs::read(t.path("w.safetensors")).unwrap();
    std::fs::write(t.path("cut.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let o = run(&["eval", &f, "--weights", &t.s("cut.safetensors")]);
    assert!(text(&o).1.contains("truncated"), "{}", text(&o).1);
}

#[test]
fn eval_predict_and_gradcheck() {
    let t = Tmp::new("eval");
    let f = small(&t);
    ok(&["train", &f, "--out", &t.s("w.safetensors")]);
    let out = ok(&["eval", &f, "--weights", &t.s("w.safetensors")]);
    assert!(out.contains("validation split: 359 samples"), "{out}");
    assert!(
        out.contains("accuracy") && out.contains("confusion matrix"),
        "{out}"
    );
    assert!(out.contains("recall"), "{out}");
    let all = ok(&[
        "eval",
        &f,
        "--weights",
        &t.s("w.safetensors"),
        "--split",
        "all",
    ]);
    assert!(all.contains("1,797 samples"), "{all}");
    // Predict: CSV rows with their label column (ignored) and an 8x8 PNG.
    let csv = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits/digits.csv"),
    )
    .unwrap();
    let rows: Vec<String> = csv
        .lines()
        .take(3)
        .map(|l| {
            let mut c = l.split(',');
            let label = c.next().unwrap().to_string();
            std::iter::once(label)
                .chain(c.map(|v| (v.parse::<f32>().unwrap() / 255.0).to_string()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    t.write("rows.csv", &rows.join("\n"));
    let img = image::GrayImage::from_fn(16, 16, |x, _| {
        image::Luma([if (6..10).contains(&x) { 255 } else { 0 }])
    });
    img.save(t.path("one.png")).unwrap();
    let out = ok(&[
        "predict",
        &f,
        "--weights",
        &t.s("w.safetensors"),
        &t.s("rows.csv"),
        &t.s("one.png"),
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].contains("rows.csv row 1: class 0 ("), "{out}");
    assert!(lines[3].contains("one.png: class "), "{out}");
    assert!(lines[3].contains("top: "), "{out}");
    // Gradient check: passes at the default tolerance, fails at 0.
    let out = ok(&["gradcheck", DIGITS]);
    assert!(
        out.contains("fc1.weight") && out.contains("all 6 parameters within tolerance"),
        "{out}"
    );
    let out = ok(&["gradcheck", DIGITS, "--jit"]);
    assert!(
        out.contains("compiled (f32) against reference (f64)"),
        "{out}"
    );
    assert!(!out.contains("FAIL"), "{out}");
    let o = run(&["gradcheck", DIGITS, "--tolerance", "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).0.contains("FAIL"));
}

/// Starts a long training run and waits until it has written a checkpoint.
fn long_run(t: &Tmp, f: &str) -> std::process::Child {
    let child = nnc()
        .args([
            "train",
            f,
            "--epochs",
            "100000",
            "--threads",
            "1",
            "--out",
            &t.s("k.safetensors"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !t.path("k.safetensors").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no checkpoint after 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[cfg(unix)]
#[test]
fn kill_9_leaves_a_readable_checkpoint_and_resume_continues() {
    let t = Tmp::new("kill");
    let f = small(&t);
    let mut child = long_run(&t, &f);
    // Let it overwrite the checkpoint a few times, then kill it hard.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let c = Checkpoint::load(&t.path("k.safetensors")).expect("checkpoint readable after kill -9");
    assert!(c.epoch >= 1);
    // No temporary file is mistaken for the checkpoint; resume goes on.
    let out = ok(&[
        "train",
        &f,
        "--epochs",
        &(c.epoch + 1).to_string(),
        "--threads",
        "1",
        "--resume",
        &t.s("k.safetensors"),
        "--out",
        &t.s("k.safetensors"),
    ]);
    assert!(
        out.contains(&format!("epoch {}/{}", c.epoch + 1, c.epoch + 1)),
        "{out}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_and_exits_cleanly() {
    let t = Tmp::new("ctrlc");
    let f = small(&t);
    let child = long_run(&t, &f);
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("checkpoint saved to") && err.contains("--resume"),
        "{err}"
    );
    Checkpoint::load(&t.path("k.safetensors")).unwrap();
}
