//! The `nnc` command line. Thin: every command calls the library.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

use nnc::frontend::{self, Checked};
use nnc::ir::lower::LowerOptions;
use nnc::runtime::programs;

#[derive(Parser)]
#[command(name = "nnc", version, about = "A compiler for .nn neural network files", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Never colour diagnostics (also when NO_COLOR is set or output is not a terminal).
    #[arg(long, global = true)]
    no_color: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on its data with a progress bar; checkpoints every epoch.
    ///
    /// Example: nnc train examples/lenet.nn --epochs 3 --plot curves.png
    Train(cli::train::TrainArgs),
    /// Loss, accuracy and confusion matrix of trained weights.
    ///
    /// Example: nnc eval examples/lenet.nn --weights lenet.safetensors
    Eval(cli::eval::EvalArgs),
    /// Classes and probabilities for images, CSV rows or arrays.
    ///
    /// Example: nnc predict examples/lenet.nn --weights lenet.safetensors digit.png
    Predict(cli::predict::PredictArgs),
    /// Generate text with a trained character model.
    ///
    /// Example: nnc sample examples/char_rnn.nn --weights char_rnn.safetensors --prime "ROMEO:"
    Sample(cli::sample::SampleArgs),
    /// Check every parameter's gradient against finite differences (f64);
    /// exit status 1 if any is off by more than the tolerance.
    ///
    /// Example: nnc gradcheck examples/mlp_digits.nn
    Gradcheck(cli::gradcheck::GradcheckArgs),
    /// Parse and shape-check files; errors point at the source.
    ///
    /// Exit status: 0 when every file is valid, 1 when any has an error,
    /// 2 when a file cannot be read.
    ///
    /// Example: nnc check examples/lenet.nn examples/resnet18.nn
    Check {
        /// The .nn files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print warnings (they are printed by default; this flag is kept for scripts).
        #[arg(long, hide = true)]
        warnings: bool,
        #[command(flatten)]
        limits: Limits,
    },
    /// A layer table: output shapes, parameter counts, FLOPs and memory.
    ///
    /// Example: nnc summary examples/resnet18.nn --batch 32
    Summary {
        file: PathBuf,
        /// Which model of the file (default: the first).
        #[arg(long)]
        model: Option<String>,
        /// Batch size for the memory column (default: the train block's, or 1).
        #[arg(long)]
        batch: Option<usize>,
        /// Show every nested layer, not only the top two levels.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        limits: Limits,
    },
    /// Draw the model as a graph: Graphviz DOT, or SVG when `dot` is installed.
    ///
    /// Example: nnc graph examples/resnet18.nn -o resnet18.svg
    Graph {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        /// Output file: .dot for Graphviz source, .svg to render it with Graphviz's `dot`.
        #[arg(short, long)]
        output: PathBuf,
        /// One node per primitive op instead of one per layer.
        #[arg(long)]
        ops: bool,
        #[command(flatten)]
        limits: Limits,
    },
    /// Time the compiled training step: compile time, step time, GFLOP/s,
    /// percent of the machine's peak and memory, on random data.
    ///
    /// Example: nnc bench examples/lenet.nn --batch 64 --threads 1
    Bench {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        /// Batch size (default: the train block's, or 32).
        #[arg(long)]
        batch: Option<usize>,
        /// Threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed steps.
        #[arg(long, default_value_t = 30)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Time every kernel and list the most expensive ones.
        #[arg(long)]
        profile: bool,
        #[command(flatten)]
        limits: Limits,
    },
    /// List the built-in layers and functions with their arguments.
    ///
    /// Example: nnc layers
    Layers,
    /// Print the lowered IR (primitive ops with shapes).
    ///
    /// Example: nnc ir examples/mlp_digits.nn
    Ir {
        file: PathBuf,
        #[arg(long)]
        model: Option<String>,
        /// The inference graph (dropout off, batch norm on running statistics).
        #[arg(long)]
        infer: bool,
        /// The scheduled kernels of the training step (with --infer: of the
        /// inference pass) and the arena they share, instead of the IR.
        #[arg(long)]
        kernels: bool,
        /// Batch size the kernels are scheduled for (default: the train block's, or 32).
        #[arg(long)]
        batch: Option<usize>,
        #[command(flatten)]
        limits: Limits,
    },
}

#[derive(clap::Args)]
struct Limits {
    /// Refuse models whose tensors need more memory than this many GiB.
    #[arg(long, default_value_t = 16.0)]
    memory_limit: f64,
}

impl Limits {
    fn options(&self, infer: bool) -> LowerOptions {
        LowerOptions {
            mode: if infer {
                nnc::ir::Mode::Infer
            } else {
                nnc::ir::Mode::Train
            },
            memory_limit: (self.memory_limit.max(0.0) * (1u64 << 30) as f64) as u64,
            ..LowerOptions::default()
        }
    }
}

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing into a closed pipe (`nnc summary FILE
    // | head`) would panic; a command-line tool should just stop.
    #[cfg(unix)]
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let color =
        !cli.no_color && std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal();
    match run(cli.command, color) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Checks a file, printing its diagnostics to stderr; `None` when it has errors.
fn load(path: &Path, opts: &LowerOptions, color: bool) -> Result<Option<Checked>, String> {
    let checked = frontend::check_file(path, opts)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let report = checked.report();
    if !report.diagnostics.is_empty() {
        eprint!("{}", report.render(color));
    }
    Ok((!checked.has_errors()).then_some(checked))
}

fn pick<'a>(
    checked: &'a Checked,
    name: Option<&str>,
    file: &Path,
) -> Result<&'a nnc::ir::Model, String> {
    checked.model(name).ok_or_else(|| match name {
        Some(n) => format!("{} has no model `{n}`", file.display()),
        None => format!("{} defines no model", file.display()),
    })
}

/// The most expensive kernels of a profiled run, per step.
fn print_profile(kernels: &nnc::bench::KernelTimes, runs: usize) {
    let total: f64 = kernels.iter().map(|k| k.1.as_secs_f64()).sum();
    println!("  kernels (per step, most expensive first):");
    for (label, d, n) in kernels.iter().take(25) {
        println!(
            "  {:>9.3} ms {:>5.1} % {:>6}x  {}",
            d.as_secs_f64() * 1e3 / runs as f64,
            100.0 * d.as_secs_f64() / total.max(1e-12),
            n / runs as u64,
            label.trim_start()
        );
    }
    // Totals by kind of kernel ("conv GradWeight", "gemm", "loop", ...).
    let mut kinds: Vec<(String, f64, u64)> = Vec::new();
    for (label, d, n) in kernels {
        let words: Vec<&str> = label.split_whitespace().take(2).collect();
        let kind = match words.as_slice() {
            ["conv", k, ..] => format!("conv {k}"),
            [w, ..] => w.trim_end_matches(':').to_string(),
            [] => "?".to_string(),
        };
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => {
                k.1 += d.as_secs_f64();
                k.2 += n;
            }
            None => kinds.push((kind, d.as_secs_f64(), *n)),
        }
    }
    kinds.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("  by kind:");
    for (kind, d, n) in kinds {
        println!(
            "  {:>9.3} ms {:>5.1} % {:>6}x  {kind}",
            d * 1e3 / runs as f64,
            100.0 * d / total.max(1e-12),
            n / runs as u64,
        );
    }
}

fn run(cmd: Command, color: bool) -> Result<ExitCode, String> {
    match cmd {
        Command::Train(a) => cli::train::run(a, color),
        Command::Eval(a) => cli::eval::run(a, color),
        Command::Predict(a) => cli::predict::run(a, color),
        Command::Sample(a) => cli::sample::run(a, color),
        Command::Gradcheck(a) => cli::gradcheck::run(a, color),
        Command::Check { files, limits, .. } => {
            let opts = limits.options(false);
            let mut any_invalid = false;
            let mut any_unreadable = false;
            for f in &files {
                match load(f, &opts, color) {
                    Ok(Some(c)) => {
                        let names: Vec<&str> = c.models.iter().map(|m| m.name.as_str()).collect();
                        let what = if names.is_empty() {
                            format!("{} block(s), no model", c.blocks)
                        } else {
                            format!("model {}", names.join(", "))
                        };
                        println!("{}: ok ({what})", f.display());
                    }
                    Ok(None) => {
                        println!("{}: invalid", f.display());
                        any_invalid = true;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        any_unreadable = true;
                    }
                }
            }
            Ok(if any_unreadable {
                ExitCode::from(2)
            } else if any_invalid {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Bench {
            file,
            model,
            batch,
            threads,
            steps,
            warmup,
            json,
            profile,
            limits,
        } => {
            let Some(c) = load(&file, &limits.options(false), color)? else {
                return Ok(ExitCode::from(1));
            };
            let m = pick(&c, model.as_deref(), &file)?;
            let cfg = m.train.clone().unwrap_or_else(|| {
                nnc::ir::train::TrainConfig::new(m.name.clone(), Default::default())
            });
            let batch = batch
                .unwrap_or(if m.train.is_some() { cfg.batch } else { 32 })
                .max(1);
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
                .max(1);
            let recipe = nnc::runtime::reference_trainer::Recipe {
                optimizer: cfg.optimizer.clone(),
                schedule: cfg.schedule.clone(),
                clip: cfg.clip.clone(),
                total_steps: 1_000_000,
                seed: cfg.seed,
            };
            let (r, kernels) =
                nnc::bench::bench_with(m, recipe, batch, threads, warmup, steps, profile)
                    .map_err(|e| e.to_string())?;
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            if json {
                println!(
                    "{{\"model\":\"{}\",\"batch\":{},\"threads\":{},\"compile_ms\":{:.2},\"median_ms\":{:.4},\"min_ms\":{:.4},\"max_ms\":{:.4},\"gflops\":{:.2},\"peak_fraction\":{:.4},\"memory_bytes\":{},\"naive_bytes\":{}}}",
                    r.model,
                    r.batch,
                    r.threads,
                    ms(r.compile),
                    ms(r.median),
                    ms(r.min),
                    ms(r.max),
                    r.gflops(),
                    r.peak_fraction(),
                    r.memory(),
                    r.naive_bytes + r.param_bytes + r.state_bytes
                );
            } else {
                println!(
                    "model {} — batch {}, {} thread(s)",
                    r.model, r.batch, r.threads
                );
                println!(
                    "  compile      {:>10.1} ms ({} kernels)",
                    ms(r.compile),
                    r.kernels
                );
                println!(
                    "  step median  {:>10.3} ms  (min {:.3}, max {:.3}, {} steps)",
                    ms(r.median),
                    ms(r.min),
                    ms(r.max),
                    r.steps
                );
                println!(
                    "  throughput   {:>10.2} GFLOP/s ({:.1} % of {:.0} GFLOP/s peak)",
                    r.gflops(),
                    100.0 * r.peak_fraction(),
                    r.peak_per_core * r.threads as f64
                );
                println!("  work         {:>10.1} MFLOP per step", r.flops / 1e6);
                println!(
                    "  memory       {:>10} (arena {}, parameters {}, state {}); without reuse {}",
                    nnc::ir::lower::human_bytes(r.memory() as u128),
                    nnc::ir::lower::human_bytes(r.arena_bytes as u128),
                    nnc::ir::lower::human_bytes(r.param_bytes as u128),
                    nnc::ir::lower::human_bytes(r.state_bytes as u128),
                    nnc::ir::lower::human_bytes(
                        (r.naive_bytes + r.param_bytes + r.state_bytes) as u128
                    )
                );
                if profile {
                    print_profile(&kernels, r.steps + warmup);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Layers => {
            print!("{}", nnc::ir::lower::builtin_reference());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ir {
            file,
            model,
            infer,
            kernels,
            batch,
            limits,
        } => {
            let Some(c) = load(&file, &limits.options(infer), color)? else {
                return Ok(ExitCode::from(1));
            };
            let m = pick(&c, model.as_deref(), &file)?;
            if !kernels {
                print!("{}", nnc::ir::dump::dump(m));
                return Ok(ExitCode::SUCCESS);
            }
            let batch = batch
                .or_else(|| m.train.as_ref().map(|t| t.batch))
                .unwrap_or(32)
                .max(1);
            let planned = if infer {
                programs::inference(m, batch).map_err(|e| e.to_string())?
            } else {
                if m.loss.is_none() {
                    return Err(format!(
                        "the model `{}` has no loss, so it has no training step; use --infer",
                        m.name
                    ));
                }
                programs::training(m, batch).map_err(|e| e.to_string())?
            };
            print!("{}", nnc::schedule::listing(&planned.program));
            Ok(ExitCode::SUCCESS)
        }
        Command::Summary {
            file,
            model,
            batch,
            all,
            limits,
        } => {
            let Some(c) = load(&file, &limits.options(false), color)? else {
                return Ok(ExitCode::from(1));
            };
            let m = pick(&c, model.as_deref(), &file)?;
            let batch = batch
                .or_else(|| m.train.as_ref().map(|t| t.batch))
                .unwrap_or(1)
                .max(1);
            let depth = if all { usize::MAX } else { 2 };
            print!("{}", nnc::report::summary::summary(m, batch, depth));
            // The memory plan needs the inference graph too; its diagnostics
            // were printed with the training one's.
            let train = m.loss.and_then(|_| programs::training(m, batch).ok());
            let infer_checked = frontend::check_file(&file, &limits.options(true)).ok();
            let infer = infer_checked
                .as_ref()
                .filter(|c| !c.has_errors())
                .and_then(|c| c.model(model.as_deref()))
                .and_then(|im| programs::inference(im, batch).ok());
            print!(
                "{}",
                nnc::report::memory::report(train.as_ref(), infer.as_ref(), batch)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            file,
            model,
            output,
            ops,
            limits,
        } => {
            let Some(c) = load(&file, &limits.options(false), color)? else {
                return Ok(ExitCode::from(1));
            };
            let m = pick(&c, model.as_deref(), &file)?;
            let dot = nnc::report::graph::dot(m, ops);
            let svg = output
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
            let text = if svg {
                nnc::report::graph::svg(&dot)?
            } else {
                dot
            };
            std::fs::write(&output, text)
                .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
            if svg {
                eprintln!("wrote {} (rendered with layout-rs)", output.display());
            } else {
                eprintln!(
                    "wrote {} (Graphviz DOT; render with `dot -Tsvg`)",
                    output.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
