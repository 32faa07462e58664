//! Every example model and the five peer-comparison models: compile time,
//! step time (median of timed steps), GFLOP/s and training memory of the
//! compiled training step, at 1 thread and at all cores.
//!
//! cargo bench --bench models                 # everything (~2 minutes)
//! cargo bench --bench models -- lenet elman  # models whose file name contains a word
//!
//! Big models (VGG-16, ResNet-50, AlexNet, GoogLeNet) run at batch 8 with few
//! steps; the others at their train block's batch. The peer comparison, in
//! one run beside PyTorch and JAX, is bench/peers/bench.py (BENCHMARKS.md).

use std::path::{Path, PathBuf};

use nnc::ir::lower::LowerOptions;

/// Models too large to time at their training batch in a benchmark run.
const BIG: [&str; 4] = ["vgg16", "resnet50", "alexnet", "googlenet"];

fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["examples", "bench/models"] {
        let Ok(entries) = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)) else {
            continue;
        };
        let mut v: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "nn"))
            .collect();
        v.sort();
        out.extend(v);
    }
    out
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut threads = vec![1];
    if cores > 1 {
        threads.push(cores);
    }
    println!(
        "{:<28} {:>5} {:>3} {:>10} {:>11} {:>9} {:>7} {:>11}",
        "model", "batch", "thr", "compile ms", "step ms", "GFLOP/s", "% peak", "memory MiB"
    );
    for path in files() {
        let name = path.display().to_string();
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let checked = match nnc::frontend::check_file(&path, &LowerOptions::default()) {
            Ok(c) if !c.has_errors() => c,
            _ => {
                println!("{name}: does not check");
                continue;
            }
        };
        for model in &checked.models {
            if model.loss.is_none() {
                continue;
            }
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            let big = stem.as_deref().is_some_and(|s| BIG.contains(&s));
            let batch = if big {
                8
            } else {
                model.train.as_ref().map_or(32, |t| t.batch)
            };
            let steps = if big { 3 } else { 20 };
            let label = format!(
                "{}/{}",
                path.parent()
                    .and_then(|p| p.file_name())
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                model.name
            );
            for &t in &threads {
                let recipe = nnc::runtime::session::recipe_of(model, 1_000_000);
                match nnc::bench::bench(model, recipe, batch, t, 2, steps) {
                    Ok(r) => println!(
                        "{:<28} {:>5} {:>3} {:>10.1} {:>11.3} {:>9.1} {:>6.1}% {:>11.1}",
                        label,
                        batch,
                        t,
                        r.compile.as_secs_f64() * 1e3,
                        r.median.as_secs_f64() * 1e3,
                        r.gflops(),
                        100.0 * r.peak_fraction(),
                        r.memory() as f64 / (1 << 20) as f64
                    ),
                    Err(e) => println!("{label}: {e}"),
                }
            }
        }
    }
}
