//! `nnc train FILE`: trains a model on its data with a progress bar.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nnc::runtime::source::DataSpec;
use nnc::runtime::train::{
    self, BatchProgress, Ending, EpochRecord, Observer, Plan, RunError, TrainOptions,
};

use super::{pct, thousands};

/// Flags of `nnc train`; each overrides the model's `train` block.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// The .nn file.
    pub file: PathBuf,
    /// Which model of the file (default: the first).
    #[arg(long)]
    pub model: Option<String>,
    /// Passes over the training data.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Samples per optimizer step.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Base learning rate (schedules scale it).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Seed of initialisation, split, shuffling, augmentation and dropout.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Threads for the compiled code (default: all cores; 1 for bit-exact resumption).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Data instead of the train block's: an MNIST directory, IMAGES,LABELS
    /// (IDX), X.npy,Y.npy, a .csv (label first), .safetensors (x, y), .txt
    /// (characters), or synthetic[:N] (random learnable data).
    #[arg(long)]
    pub data: Option<String>,
    /// Checkpoint file, written every epoch and on exit (default: ./<file stem>.safetensors).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Continue the run saved in this checkpoint (with its epochs, batch
    /// size, learning rate and seed, unless flags say otherwise).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// No progress bars or epoch lines; errors only.
    #[arg(long, short)]
    pub quiet: bool,
    /// Append one JSON object per epoch to this file (JSON Lines).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Draw loss and accuracy per epoch to this .png or .svg file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Stop as if interrupted after this many optimizer steps (for testing resumption).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

struct Console {
    quiet: bool,
    bar: Option<ProgressBar>,
    epochs: usize,
    log: Option<(PathBuf, File)>,
    log_error: Option<String>,
    tty: bool,
}

impl Console {
    fn line(&self, s: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.suspend(|| println!("{s}")),
            None => println!("{s}"),
        }
    }
}

fn fmt_acc(a: Option<f64>) -> String {
    a.map_or_else(String::new, |a| format!("  acc {}", pct(a)))
}

impl Observer for Console {
    fn start(&mut self, p: &Plan) {
        self.epochs = p.epochs;
        let resumed = match p.start {
            Some((e, 0)) => format!(", resuming after epoch {e}"),
            Some((e, b)) => format!(", resuming in epoch {} at batch {}", e + 1, b + 1),
            None => String::new(),
        };
        self.line(&format!(
            "training {} ({} parameters) on {}: {} samples, {} for validation; batch {}, {} epochs of {} steps, {} on {} thread{}{resumed}",
            p.model,
            thousands(p.parameters),
            p.data,
            thousands(p.train_samples),
            thousands(p.validation_samples),
            p.batch,
            p.epochs,
            p.batches_per_epoch,
            p.optimizer,
            p.threads,
            if p.threads == 1 { "" } else { "s" },
        ));
    }

    fn epoch_start(&mut self, epoch: usize, batches: usize, done: usize) {
        if self.quiet || !self.tty {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:28.cyan/blue}] {pos}/{len} {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.epochs));
        bar.set_position(done as u64);
        bar.reset_eta();
        bar.enable_steady_tick(Duration::from_millis(250));
        self.bar = Some(bar);
    }

    fn batch(&mut self, p: &BatchProgress) {
        if let Some(b) = &self.bar {
            b.set_position(p.batch as u64);
            b.set_message(format!(
                "loss {:.4}{}  {:.0} samples/s",
                p.loss,
                fmt_acc(p.accuracy),
                p.samples_per_sec
            ));
        }
    }

    fn validating(&mut self, _epoch: usize) {
        if let Some(b) = &self.bar {
            b.set_message("validating…");
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        let val = match (r.val_loss, r.val_accuracy) {
            (Some(l), Some(a)) => format!("  val_loss {l:.4}  val_acc {}", pct(a)),
            (Some(l), None) => format!("  val_loss {l:.4}"),
            _ => String::new(),
        };
        self.line(&format!(
            "epoch {}/{}  loss {:.4}{}{val}  {:.0} samples/s  {:.1}s",
            r.epoch,
            self.epochs,
            r.train_loss,
            fmt_acc(r.train_accuracy),
            r.samples_per_sec,
            r.seconds
        ));
        if let Some((path, f)) = &mut self.log {
            let ok = writeln!(f, "{}", r.to_json()).and_then(|_| f.flush());
            if let Err(e) = ok {
                self.log_error
                    .get_or_insert(format!("cannot write {}: {e}", path.display()));
            }
        }
    }

    fn note(&mut self, message: &str) {
        if let Some(b) = &self.bar {
            b.suspend(|| eprintln!("note: {message}"));
        } else {
            eprintln!("note: {message}");
        }
    }
}

/// Runs `nnc train`.
pub fn run(a: TrainArgs, color: bool) -> Result<ExitCode, String> {
    let m = match super::load(&a.file, a.model.as_deref(), color) {
        Ok(m) => m,
        Err(None) => return Ok(ExitCode::from(1)),
        Err(Some(e)) => return Err(e),
    };
    let data = a.data.as_deref().map(DataSpec::parse).transpose()?;
    if let Some(p) = &a.plot {
        super::plot::check_extension(p)?;
    }
    let log = match &a.log {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(a.resume.is_some())
                .write(true)
                .truncate(a.resume.is_none())
                .open(p)
                .map_err(|e| format!("cannot write {}: {e}", p.display()))?;
            Some((p.clone(), f))
        }
        None => None,
    };
    let opts = TrainOptions {
        epochs: a.epochs,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        threads: a.threads,
        data,
        out: a.out.clone(),
        resume: a.resume.clone(),
        stop_after: a.stop_after,
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // A second Ctrl-C leaves at once; the first lets the batch finish and saves.
        let _ = ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\ninterrupted: finishing this batch and saving a checkpoint (Ctrl-C again to quit now)"
            );
        });
    }
    let mut console = Console {
        quiet: a.quiet,
        bar: None,
        epochs: 0,
        log,
        log_error: None,
        tty: std::io::stderr().is_terminal(),
    };
    let result = train::train(&m, &opts, &stop, &mut console);
    if let Some(b) = console.bar.take() {
        b.finish_and_clear();
    }
    if let Some(e) = &console.log_error {
        eprintln!("warning: {e}");
    }
    let s = match result {
        Ok(s) => s,
        Err(e @ RunError::NonFinite { .. }) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.to_string()),
    };
    if let Some(p) = &a.plot
        && !s.history.is_empty()
    {
        super::plot::draw(p, &m.model.name, &s.history)?;
        if !a.quiet {
            eprintln!("wrote {}", p.display());
        }
    }
    let file = a.file.display();
    match s.ending {
        Ending::NothingToDo => {
            println!(
                "{} already holds {} epochs of training; nothing to do (give --epochs above {})",
                opts.resume
                    .as_deref()
                    .map_or(file.to_string(), |p: &Path| p.display().to_string()),
                s.history.len(),
                s.history.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Ending::Interrupted => {
            eprintln!(
                "stopped after step {}; checkpoint saved to {}. Continue with: nnc train {file} --resume {}",
                s.steps,
                s.checkpoint.display(),
                s.checkpoint.display()
            );
            Ok(ExitCode::from(if stop.load(Ordering::SeqCst) {
                130
            } else {
                0
            }))
        }
        Ending::Finished => {
            if !a.quiet {
                print_summary(&m.model.name, &s);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_summary(model: &str, s: &train::Summary) {
    let Some(last) = s.history.last() else {
        return;
    };
    println!(
        "trained {model}: {} epochs, {} steps in {:.1}s",
        s.history.len(),
        thousands(s.steps),
        s.seconds
    );
    println!(
        "  final  train loss {:.4}{}",
        last.train_loss,
        last.train_accuracy
            .map_or_else(String::new, |a| format!(", accuracy {}", pct(a)))
    );
    if let Some(l) = last.val_loss {
        println!(
            "  final  validation loss {l:.4}{}",
            last.val_accuracy
                .map_or_else(String::new, |a| format!(", accuracy {}", pct(a)))
        );
        if let Some(best) = s
            .history
            .iter()
            .filter(|r| r.val_accuracy.is_some())
            .max_by(|a, b| {
                a.val_accuracy
                    .partial_cmp(&b.val_accuracy)
                    .unwrap_or(std::cmp::Ordering::Equal)
            })
            && let Some(acc) = best.val_accuracy
        {
            println!(
                "  best   validation accuracy {} (epoch {})",
                pct(acc),
                best.epoch
            );
        }
    }
    println!("  checkpoint {}", s.checkpoint.display());
}
