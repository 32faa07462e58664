//! `nnc eval FILE --weights W`: loss, accuracy and confusion matrix.

use std::path::PathBuf;
use std::process::ExitCode;

use nnc::runtime::source::{self, DataSpec};
use nnc::runtime::train::{self, Task};

use super::{pct, thousands};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The .nn file.
    pub file: PathBuf,
    /// A checkpoint written by `nnc train` (or a PyTorch state_dict in safetensors).
    #[arg(long, short)]
    pub weights: PathBuf,
    #[arg(long)]
    pub model: Option<String>,
    /// Data to evaluate on instead of the train block's (all of it; same forms as `nnc train --data`).
    #[arg(long)]
    pub data: Option<String>,
    /// Without --data: which part of the train block's data (the validation
    /// split is the one training never saw).
    #[arg(long, value_enum, default_value_t = Part::Validation)]
    pub split: Part,
    /// Samples per compiled call.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Validation,
    Train,
    All,
}

pub fn run(a: EvalArgs, color: bool) -> Result<ExitCode, String> {
    let m = match super::load(&a.file, a.model.as_deref(), color) {
        Ok(m) => m,
        Err(None) => return Ok(ExitCode::from(1)),
        Err(Some(e)) => return Err(e),
    };
    let (mut session, ckpt) =
        train::session_with_weights(&m, &a.weights, a.batch, super::threads(a.threads))
            .map_err(|e| e.to_string())?;
    let spec = a.data.as_deref().map(DataSpec::parse).transpose()?;
    let vocab = ckpt.vocab.as_deref();
    let (data, what) = if spec.is_some() || a.split == Part::All {
        let (d, path, desc) = source::read_all(&m.model, &m.base_dir(), spec.as_ref(), vocab)?;
        (source::fit(&m.model, d, &path)?, desc)
    } else {
        let s = source::load(&m.model, &m.base_dir(), None, vocab)?;
        match (a.split, s.validation) {
            (Part::Validation, Some(v)) => (v, format!("{}, validation split", s.description)),
            (Part::Validation, None) => {
                eprintln!(
                    "note: the train block has no validation split; evaluating on all its data"
                );
                (s.train, s.description)
            }
            _ => (s.train, format!("{}, training split", s.description)),
        }
    };
    let e = train::evaluate(&mut session, &data, true).map_err(|e| e.to_string())?;
    println!(
        "{} with {} on {}: {} samples",
        m.model.name,
        a.weights.display(),
        what,
        thousands(e.samples)
    );
    println!("  loss      {:.4}", e.loss);
    if let Some(acc) = e.accuracy {
        println!("  accuracy  {}", pct(acc));
    }
    if let (Some(cm), Task::Classes(c)) = (&e.confusion, train::task_of(&m.model)) {
        if c <= 20 {
            print_confusion(cm);
        } else {
            println!("  ({c} classes: confusion matrix not shown)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_confusion(cm: &[Vec<usize>]) {
    let width = cm
        .iter()
        .flatten()
        .map(|v| v.to_string().len())
        .max()
        .unwrap_or(1)
        .max(cm.len().to_string().len())
        .max(3);
    println!("confusion matrix (rows: true class, columns: predicted class):");
    let mut head = format!("{:>w$} ", "", w = width);
    for j in 0..cm.len() {
        head.push_str(&format!(" {j:>width$}"));
    }
    head.push_str("   recall");
    println!("{head}");
    for (i, row) in cm.iter().enumerate() {
        let mut line = format!("{i:>width$} ");
        for v in row {
            line.push_str(&format!(" {v:>width$}"));
        }
        let total: usize = row.iter().sum();
        if total > 0 {
            line.push_str(&format!("   {:>6}", pct(row[i] as f64 / total as f64)));
        }
        println!("{line}");
    }
}
