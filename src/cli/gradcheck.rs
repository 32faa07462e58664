//! `nnc gradcheck FILE`: every parameter's gradient against central finite
//! differences (reference interpreter, f64).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct GradcheckArgs {
    /// The .nn file.
    pub file: PathBuf,
    #[arg(long)]
    pub model: Option<String>,
    /// Batch size of the random inputs.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Largest relative error accepted; above it the exit status is 1.
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f64,
    /// Step of the central difference.
    #[arg(long, default_value_t = 1e-6)]
    pub eps: f64,
}

pub fn run(a: GradcheckArgs, color: bool) -> Result<ExitCode, String> {
    let m = match super::load(&a.file, a.model.as_deref(), color) {
        Ok(m) => m,
        Err(None) => return Ok(ExitCode::from(1)),
        Err(Some(e)) => return Err(e),
    };
    if !(a.eps.is_finite() && a.eps > 0.0) {
        return Err(format!("--eps {} must be a positive number", a.eps));
    }
    let opts = nnc::gradcheck::Options {
        batch: a.batch.max(1),
        seed: a.seed,
        eps: a.eps,
        ..Default::default()
    };
    let results = nnc::gradcheck::check(&m.model, &opts).map_err(|e| e.to_string())?;
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!(
        "gradient check of {} (batch {}, f64, eps {:e}, tolerance {:e})",
        m.model.name, opts.batch, opts.eps, a.tolerance
    );
    println!(
        "  {:<width$}  {:>6}  {:>11}  {:>13}  {:>13}",
        "parameter", "checks", "worst error", "analytic", "numeric"
    );
    let mut failed = 0;
    for r in &results {
        let bad = r.worst.is_nan() || r.worst > a.tolerance;
        failed += usize::from(bad);
        println!(
            "  {:<width$}  {:>6}  {:>11.3e}  {:>13.6e}  {:>13.6e}{}",
            r.name,
            r.checks,
            r.worst,
            r.analytic,
            r.numeric,
            if bad { "  FAIL" } else { "" }
        );
    }
    if failed > 0 {
        println!(
            "{failed} of {} parameters exceed the tolerance",
            results.len()
        );
        Ok(ExitCode::from(1))
    } else {
        println!("all {} parameters within tolerance", results.len());
        Ok(ExitCode::SUCCESS)
    }
}
