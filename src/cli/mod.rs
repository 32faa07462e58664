//! The training-side commands of the `nnc` binary: train, eval, predict,
//! sample and gradcheck. Each parses its flags (clap) and calls the library
//! (`nnc::runtime::train`, `nnc::runtime::session`, `nnc::gradcheck`).

pub mod eval;
pub mod gradcheck;
pub mod plot;
pub mod predict;
pub mod sample;
pub mod train;

use std::path::Path;

use nnc::runtime::train::{LoadedModel, load_model};

/// Loads a model for a command, printing the checker's diagnostics;
/// `Err` carries the exit message for errors that are not diagnostics.
pub fn load(file: &Path, model: Option<&str>, color: bool) -> Result<LoadedModel, Option<String>> {
    match load_model(file, model) {
        Ok(m) => {
            if !m.report.diagnostics.is_empty() {
                eprint!("{}", m.report.render(color));
            }
            Ok(m)
        }
        Err(report) => {
            eprint!("{}", report.render(color));
            Err(None)
        }
    }
}

/// Threads to use: the flag, or every core.
pub fn threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
}

/// A percentage with one decimal.
pub fn pct(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// 12345 -> "12,345".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
