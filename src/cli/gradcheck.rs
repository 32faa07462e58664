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
    /// Also compare the compiled (JIT, f32) gradients with the reference
    /// interpreter's (f64) on the same batch.
    #[arg(long)]
    pub jit: bool,
    /// Largest normwise relative difference accepted for --jit.
    #[arg(long, default_value_t = 1e-3)]
    pub jit_tolerance: f64,
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
        tolerance: a.tolerance,
        ..Default::default()
    };
    let width = m
        .model
        .params
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    println!(
        "gradient check of {} (batch {}, f64, eps {:e}, tolerance {:e}; failures retried at eps/10, eps/100 and one-sided)",
        m.model.name, opts.batch, opts.eps, a.tolerance
    );
    println!(
        "  {:<width$}  {:>6}  {:>11}  {:>13}  {:>13}",
        "parameter", "checks", "worst error", "analytic", "numeric"
    );
    let mut failed = 0;
    // Each row as soon as its parameter is checked: large models take minutes.
    let results = nnc::gradcheck::check_each(&m.model, &opts, |r| {
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
        let _ = std::io::Write::flush(&mut std::io::stdout());
    })
    .map_err(|e| e.to_string())?;
    if failed > 0 {
        println!(
            "{failed} of {} parameters exceed the tolerance",
            results.len()
        );
    } else {
        println!("all {} parameters within tolerance", results.len());
    }
    if a.jit {
        failed += jit_check(&m.model, &opts, a.jit_tolerance)?;
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Compiled gradients against the reference interpreter's, parameter by
/// parameter: max |jit − reference| / max |reference|. Returns the number
/// of parameters above `tol`.
fn jit_check(
    model: &nnc::ir::Model,
    opts: &nnc::gradcheck::Options,
    tol: f64,
) -> Result<usize, String> {
    use nnc::runtime::jit_trainer::JitTrainer;
    use nnc::runtime::reference_trainer::ReferenceTrainer;
    let recipe = nnc::runtime::session::recipe_of(model, 1);
    let init64: Vec<ndarray::ArrayD<f64>> = nnc::runtime::params::init(model, opts.seed);
    let init32 = init64.iter().map(|a| a.mapv(|v| v as f32)).collect();
    let mut reference =
        ReferenceTrainer::<f64>::new(model, recipe.clone(), opts.batch, Some(init64))
            .map_err(|e| e.to_string())?;
    let mut jit = JitTrainer::new(model, recipe, opts.batch, Some(init32), 1, true)
        .map_err(|e| e.to_string())?;
    let xs = nnc::gradcheck::random_inputs(model, opts.batch, opts.seed);
    let typed = nnc::gradcheck::TypedInputs::new(model, &xs);
    let feeds = typed.feeds();
    let r = reference.step(&xs).map_err(|e| e.to_string())?;
    jit.step(&feeds).map_err(|e| e.to_string())?;
    println!("compiled (f32) against reference (f64) gradients, tolerance {tol:e}");
    let mut failed = 0;
    for (i, p) in model.params.iter().enumerate() {
        let (Some(g), Some(j)) = (r.grads.get(i).and_then(|g| g.as_ref()), jit.grad(i)) else {
            continue;
        };
        let scale = g.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        let diff = g
            .iter()
            .zip(&j)
            .fold(0.0f64, |m, (a, b)| m.max((a - *b as f64).abs()));
        let err = diff / scale;
        let bad = err.is_nan() || err > tol;
        failed += usize::from(bad);
        println!(
            "  {:<30} {err:>11.3e}{}",
            p.name,
            if bad { "  FAIL" } else { "" }
        );
    }
    Ok(failed)
}
