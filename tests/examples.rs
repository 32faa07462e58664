//! The example zoo in `examples/`: every file checks cleanly, every model has
//! its published parameter count, and the torchvision models name their
//! parameters as torchvision's `state_dict` does.

use std::path::{Path, PathBuf};

use nnc::frontend::{Checked, check_file};
use nnc::ir::Model;
use nnc::ir::lower::LowerOptions;
use nnc::ir::model::Mode;

/// Every model of the zoo: file, model name, trainable parameters.
const COUNTS: &[(&str, &str, usize)] = &[
    // Published architectures.
    ("lenet.nn", "lenet", 61_706),
    ("alexnet.nn", "alexnet", 60_965_224),
    ("vgg16.nn", "vgg16", 138_357_544),
    ("googlenet.nn", "googlenet", 6_624_904),
    ("resnet18.nn", "resnet18", 11_689_512),
    ("resnet50.nn", "resnet50", 25_557_032),
    // Recurrent networks written with `recur`.
    ("elman.nn", "elman", 33_217),
    ("lstm.nn", "lstm", 111_873),
    ("gru.nn", "gru", 61_962),
    ("char_rnn.nn", "char_rnn", 234_369),
    // Small trainable examples and feature tours.
    ("mlp_digits.nn", "mlp_digits", 17_226),
    ("mlp_mnist.nn", "mlp_mnist", 535_818),
    ("cnn_digits.nn", "cnn_digits", 24_058),
    ("resnet_mini.nn", "resnet_mini", 174_698),
    ("autoencoder.nn", "autoencoder", 51_024),
    ("features.nn", "features", 11_685),
];

/// Examples that come with a `train` block.
const TRAINABLE: &[&str] = &[
    "lenet",
    "elman",
    "lstm",
    "gru",
    "char_rnn",
    "mlp_digits",
    "mlp_mnist",
    "cnn_digits",
    "resnet_mini",
    "autoencoder",
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ is readable")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "nn"))
        .collect();
    files.sort();
    files
}

fn check(path: &Path, mode: Mode) -> Checked {
    let opts = LowerOptions {
        mode,
        ..Default::default()
    };
    check_file(path, &opts).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn model(file: &str, name: &str) -> Model {
    let checked = check(&examples_dir().join(file), Mode::Train);
    assert!(
        checked.diagnostics.is_empty(),
        "{file}:\n{}",
        checked.report().render(false)
    );
    checked
        .model(Some(name))
        .unwrap_or_else(|| panic!("{file} has no model `{name}`"))
        .clone()
}

#[test]
fn every_example_checks_without_errors_or_warnings() {
    let files = example_files();
    assert!(files.len() >= COUNTS.len(), "examples/ is missing files");
    for path in &files {
        for mode in [Mode::Train, Mode::Infer] {
            let checked = check(path, mode);
            assert!(
                checked.diagnostics.is_empty(),
                "{} ({mode:?}):\n{}",
                path.display(),
                checked.report().render(false)
            );
        }
    }
}

#[test]
fn every_model_is_in_the_table() {
    for path in example_files() {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for m in &check(&path, Mode::Train).models {
            assert!(
                COUNTS.iter().any(|(f, n, _)| *f == file && *n == m.name),
                "{file}: model `{}` has no expected parameter count in COUNTS",
                m.name
            );
        }
    }
}

#[test]
fn parameter_counts_match_the_published_ones() {
    for &(file, name, expected) in COUNTS {
        assert_eq!(
            model(file, name).param_count(),
            expected,
            "{file}: parameter count of `{name}`"
        );
    }
}

#[test]
fn trainable_examples_have_a_train_block() {
    for &(file, name, _) in COUNTS {
        let has_train = model(file, name).train.is_some();
        assert_eq!(
            has_train,
            TRAINABLE.contains(&name),
            "{file}: `train {name}` block present: {has_train}"
        );
    }
}

fn param_names(file: &str, name: &str) -> Vec<String> {
    let mut names: Vec<String> = model(file, name)
        .params
        .iter()
        .map(|p| p.name.clone())
        .collect();
    names.sort();
    names
}

fn conv_bn(out: &mut Vec<String>, conv: &str, bn: &str) {
    out.push(format!("{conv}.weight"));
    out.push(format!("{bn}.weight"));
    out.push(format!("{bn}.bias"));
}

/// The trainable entries of torchvision's `resnetNN().state_dict()`.
fn torchvision_resnet(blocks: [usize; 4], convs_per_block: usize) -> Vec<String> {
    let mut out = Vec::new();
    conv_bn(&mut out, "conv1", "bn1");
    for (stage, &n) in blocks.iter().enumerate() {
        for b in 0..n {
            let p = format!("layer{}.{b}", stage + 1);
            for c in 1..=convs_per_block {
                conv_bn(&mut out, &format!("{p}.conv{c}"), &format!("{p}.bn{c}"));
            }
            // Bottleneck stages all project in their first block; basic ones
            // only where the resolution changes.
            if b == 0 && (stage > 0 || convs_per_block == 3) {
                conv_bn(
                    &mut out,
                    &format!("{p}.downsample.0"),
                    &format!("{p}.downsample.1"),
                );
            }
        }
    }
    out.push("fc.weight".into());
    out.push("fc.bias".into());
    out.sort();
    out
}

/// The trainable entries of torchvision's `googlenet(aux_logits=False).state_dict()`.
fn torchvision_googlenet() -> Vec<String> {
    let mut out = Vec::new();
    let basic = |out: &mut Vec<String>, p: String| {
        conv_bn(out, &format!("{p}.conv"), &format!("{p}.bn"));
    };
    for c in ["conv1", "conv2", "conv3"] {
        basic(&mut out, c.into());
    }
    for i in ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"] {
        let p = format!("inception{i}");
        for b in [
            "branch1",
            "branch2.0",
            "branch2.1",
            "branch3.0",
            "branch3.1",
            "branch4.1",
        ] {
            basic(&mut out, format!("{p}.{b}"));
        }
    }
    out.push("fc.weight".into());
    out.push("fc.bias".into());
    out.sort();
    out
}

#[test]
fn resnets_are_named_as_in_torchvision() {
    assert_eq!(
        param_names("resnet18.nn", "resnet18"),
        torchvision_resnet([2, 2, 2, 2], 2)
    );
    assert_eq!(
        param_names("resnet50.nn", "resnet50"),
        torchvision_resnet([3, 4, 6, 3], 3)
    );
}

#[test]
fn googlenet_is_named_as_in_torchvision() {
    assert_eq!(
        param_names("googlenet.nn", "googlenet"),
        torchvision_googlenet()
    );
}
