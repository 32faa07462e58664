//! Checking gradients by finite differences: the analytic gradient of every
//! parameter (from autodiff, run by the reference interpreter in f64) against
//! central differences of the loss.
//!
//! Per parameter it checks a few single elements and one random direction
//! through all of its elements, and reports the worst relative error
//! |analytic − numeric| / max(|analytic|, |numeric|, floor), where the floor
//! rises with the difference quotient's measured rounding noise when a check
//! is retried.

use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_pcg::Pcg64Mcg;

use crate::ir::build::BuildError;
use crate::ir::model::{InputKind, Model};
use crate::ir::optim;
use crate::ir::types::DType;
use crate::reference::{self, Feeds, Kinks, RefError};
use crate::runtime::executable::InputData;
use crate::runtime::params;

#[derive(Debug, Clone)]
pub struct Options {
    pub batch: usize,
    pub seed: u64,
    /// Step of the central difference.
    pub eps: f64,
    /// Single elements checked per parameter (besides the random direction).
    pub elements: usize,
    /// Gradients smaller than this count as this large when dividing. Central
    /// differences of an f64 loss near 1 with eps = 1e-6 carry rounding noise
    /// of about 1e-10, so below 1e-5 a relative error of 1e-5 means nothing;
    /// a wrong rule still shows, as an absolute error far above 1e-10.
    pub floor: f64,
    /// Relative error above which a check is retried with smaller steps
    /// (see [`check`]); the caller's pass/fail tolerance.
    pub tolerance: f64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            batch: 2,
            seed: 0,
            eps: 1e-6,
            elements: 3,
            floor: 1e-5,
            tolerance: 1e-4,
        }
    }
}

/// The result for one parameter.
#[derive(Debug, Clone)]
pub struct ParamCheck {
    pub name: String,
    pub worst: f64,
    /// Analytic and numeric values at the worst check.
    pub analytic: f64,
    pub numeric: f64,
    pub checks: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GradCheckError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Run(#[from] RefError),
}

/// Random inputs shaped for a model at a batch size: class indices for
/// class tensors, values in [0, 1) for float labels, standard normal data.
pub fn random_inputs(model: &Model, batch: usize, seed: u64) -> Vec<ArrayD<f64>> {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5eed);
    model
        .inputs
        .iter()
        .map(|i| {
            let shape = i.ty.shape.at(batch);
            let n: usize = shape.iter().product();
            let v: Vec<f64> = match (i.ty.dtype, i.kind) {
                (DType::I32, _) => {
                    let c = i.classes.unwrap_or(2).max(1);
                    (0..n).map(|_| rng.random_range(0..c) as f64).collect()
                }
                (DType::F32, InputKind::Labels) => (0..n).map(|_| rng.random::<f64>()).collect(),
                (DType::F32, InputKind::Data) => {
                    (0..n).map(|_| StandardNormal.sample(&mut rng)).collect()
                }
            };
            ArrayD::from_shape_vec(IxDyn(&shape), v)
                .unwrap_or_else(|_| ArrayD::zeros(IxDyn(&shape)))
        })
        .collect()
}

/// Inputs (from [`random_inputs`]) in the element types compiled code takes:
/// class indices as i32, everything else as f32.
pub struct TypedInputs {
    ints: Vec<Vec<i32>>,
    floats: Vec<Vec<f32>>,
    is_int: Vec<bool>,
}

impl TypedInputs {
    pub fn new(model: &Model, xs: &[ArrayD<f64>]) -> TypedInputs {
        TypedInputs {
            ints: xs
                .iter()
                .map(|a| a.iter().map(|&v| v as i32).collect())
                .collect(),
            floats: xs
                .iter()
                .map(|a| a.iter().map(|&v| v as f32).collect())
                .collect(),
            is_int: model
                .inputs
                .iter()
                .map(|i| i.ty.dtype == DType::I32)
                .collect(),
        }
    }

    /// One feed per model input, for `Executable::run` and the trainers.
    pub fn feeds(&self) -> Vec<InputData<'_>> {
        self.is_int
            .iter()
            .enumerate()
            .map(|(i, &int)| {
                if int {
                    InputData::I32(&self.ints[i])
                } else {
                    InputData::F32(&self.floats[i])
                }
            })
            .collect()
    }
}

/// Checks every parameter's gradient of `model`'s loss.
pub fn check(model: &Model, opts: &Options) -> Result<Vec<ParamCheck>, GradCheckError> {
    check_each(model, opts, |_| {})
}

/// Like [`check`], calling `each` with every parameter's result as soon as
/// it is known (a large model takes minutes).
pub fn check_each(
    model: &Model,
    opts: &Options,
    mut each: impl FnMut(&ParamCheck),
) -> Result<Vec<ParamCheck>, GradCheckError> {
    let (graph, loss, grads) = optim::gradients(model)?;
    let inputs = random_inputs(model, opts.batch, opts.seed);
    let mut params: Vec<ArrayD<f64>> = params::init(model, opts.seed);
    let states = params::init_states::<f64>(&model.states, opts.batch);
    let seed = crate::rng::step_seed(opts.seed, 0);
    let wanted: Vec<_> = grads.iter().flatten().copied().collect();
    let mut all = vec![loss];
    all.extend(&wanted);
    let values = {
        let feeds = Feeds {
            inputs: &inputs,
            params: &params,
            states: &states,
            hypers: &[],
            seed,
            batch: opts.batch,
            kinks: None,
        };
        reference::run(&graph, &feeds, &all)?
    };
    let mut analytic: Vec<Option<ArrayD<f64>>> = Vec::with_capacity(grads.len());
    let mut k = 1;
    for g in &grads {
        analytic.push(g.map(|_| {
            k += 1;
            values[k - 1].clone()
        }));
    }
    let kinks = Kinks::new();
    let run_loss = |params: &[ArrayD<f64>], kinks: Option<&Kinks<f64>>| -> Result<f64, RefError> {
        let feeds = Feeds {
            inputs: &inputs,
            params,
            states: &states,
            hypers: &[],
            seed,
            batch: opts.batch,
            kinks,
        };
        let v = reference::run(&model.graph, &feeds, &[loss])?;
        Ok(v[0].iter().next().copied().unwrap_or(f64::NAN))
    };
    let loss_at = |params: &[ArrayD<f64>]| run_loss(params, None);
    let base = loss_at(&params)?;
    // Every piecewise decision at θ, recorded for `frozen`.
    run_loss(&params, Some(&kinks))?;
    kinks.replay();
    let frozen = |params: &[ArrayD<f64>]| {
        kinks.replay();
        run_loss(params, Some(&kinks))
    };
    let mut rng = Pcg64Mcg::seed_from_u64(opts.seed ^ 0xd1ec);
    let mut out = Vec::new();
    for (i, p) in model.params.iter().enumerate() {
        let g = analytic[i]
            .clone()
            .unwrap_or_else(|| ArrayD::zeros(params[i].raw_dim()));
        let n = params[i].len();
        let mut report = ParamCheck {
            name: p.name.clone(),
            worst: 0.0,
            analytic: 0.0,
            numeric: 0.0,
            checks: 0,
        };
        // A relu, max or abs between θ − eps and θ + eps bends the loss, and
        // the central quotient across the bend is off by up to half the
        // jump. A wrong gradient is off at every step size, a bend only at
        // steps that reach it: a check that fails is retried with steps 10
        // and 100 times smaller, and the best agreement counts. In a large
        // network a bend can sit closer to θ than any usable step (VGG-16 at
        // 224x224 has ~15M ReLU and max-pool units; one within 1e-7 of its
        // switch point is expected), and then the central quotient averages
        // the slopes of both sides at every step. The one-sided quotients
        // of the same evaluations are also tried: the side without the bend
        // gives the slope at θ, as autodiff does. With bends on both sides
        // nearer than eps/100, the check is repeated on the loss with every
        // piecewise decision (relu, abs, max, min, comparisons, max
        // pooling) frozen as it was at θ (`reference::Kinks`): the smooth
        // piece autodiff differentiates. A wrong rule fails there too.
        //
        //
        // The frozen quotients also measure their own rounding noise, which
        // grows as 1/h: in a deep network the loss's own rounding makes the
        // quotient at eps uncertain by 1e-9..1e-8 absolute, far above the
        // 1e-10 `floor` assumes. The frozen loss is smooth, so its quotients
        // at eps, eps/10 and eps/100 differ by that noise alone, and a
        // difference within three standard deviations of it cannot be told
        // from zero: the floor of the frozen check at eps rises to
        // 3σ / tolerance. (Unfrozen quotients differ by bends too, which
        // would let a wrong gradient pass; they never raise the floor.)
        let measure = |a: f64,
                       params: &mut Vec<ArrayD<f64>>,
                       set: &dyn Fn(&mut Vec<ArrayD<f64>>, f64),
                       report: &mut ParamCheck|
         -> Result<(), RefError> {
            let steps = [opts.eps, opts.eps / 10.0, opts.eps / 100.0];
            // The loss at θ + h and θ − h, with θ restored after.
            let around = |params: &mut Vec<ArrayD<f64>>,
                          loss: &LossFn<'_>,
                          h: f64|
             -> Result<(f64, f64), RefError> {
                set(params, h);
                let up = loss(params)?;
                set(params, -h);
                let down = loss(params)?;
                set(params, 0.0);
                Ok((up, down))
            };
            let mut best = (f64::INFINITY, f64::NAN);
            let consider = |best: &mut (f64, f64), num: f64, floor: f64| {
                let err = error(a, num, floor);
                if err < best.0 || best.1.is_nan() {
                    *best = (err, num);
                }
            };
            for h in steps {
                let (up, down) = around(params, &loss_at, h)?;
                consider(&mut best, (up - down) / (2.0 * h), opts.floor);
                if best.0 <= opts.tolerance {
                    break;
                }
                consider(&mut best, (up - base) / h, opts.floor);
                consider(&mut best, (base - down) / h, opts.floor);
                if best.0 <= opts.tolerance {
                    break;
                }
            }
            // Bends on both sides closer than eps/100: the smooth piece
            // around θ, with every decision frozen as it was at θ.
            if best.0 > opts.tolerance {
                let mut quotients = Vec::with_capacity(steps.len());
                for h in steps {
                    let (up, down) = around(params, &frozen, h)?;
                    quotients.push((up - down) / (2.0 * h));
                }
                let sigma = rounding_noise(&quotients);
                for (i, &num) in quotients.iter().enumerate() {
                    let floor = if i == 0 && opts.tolerance > 0.0 {
                        opts.floor.max(3.0 * sigma / opts.tolerance)
                    } else {
                        opts.floor
                    };
                    consider(&mut best, num, floor);
                }
            }
            let (err, num) = best;
            report.checks += 1;
            if err > report.worst || err.is_nan() {
                report.worst = if err.is_nan() { f64::INFINITY } else { err };
                report.analytic = a;
                report.numeric = num;
            }
            Ok(())
        };
        // Single elements.
        let picks: Vec<usize> = if n <= opts.elements {
            (0..n).collect()
        } else {
            (0..opts.elements).map(|_| rng.random_range(0..n)).collect()
        };
        for idx in picks {
            let orig = flat(&params[i], idx);
            let set = |ps: &mut Vec<ArrayD<f64>>, h: f64| set_flat(&mut ps[i], idx, orig + h);
            measure(flat(&g, idx), &mut params, &set, &mut report)?;
        }
        // One random direction through every element.
        if n > 1 {
            let d: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
            let norm = d.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
            let d: Vec<f64> = d.iter().map(|x| x / norm).collect();
            let orig = params[i].clone();
            let set = |ps: &mut Vec<ArrayD<f64>>, h: f64| {
                let mut a = orig.clone();
                for (v, dv) in a.iter_mut().zip(&d) {
                    *v += h * dv;
                }
                ps[i] = a;
            };
            let a: f64 = g.iter().zip(&d).map(|(x, y)| x * y).sum();
            measure(a, &mut params, &set, &mut report)?;
        }
        each(&report);
        out.push(report);
    }
    Ok(out)
}

/// Element `i` in row-major order (parameters are contiguous: O(1)).
fn flat(a: &ArrayD<f64>, i: usize) -> f64 {
    match a.as_slice() {
        Some(s) => s.get(i).copied().unwrap_or(f64::NAN),
        None => a.iter().nth(i).copied().unwrap_or(f64::NAN),
    }
}

fn set_flat(a: &mut ArrayD<f64>, i: usize, v: f64) {
    let x = match a.as_slice_mut() {
        Some(s) => s.get_mut(i),
        None => a.iter_mut().nth(i),
    };
    if let Some(x) = x {
        *x = v;
    }
}

/// The loss as a function of the parameters.
type LossFn<'a> = dyn Fn(&[ArrayD<f64>]) -> Result<f64, RefError> + 'a;

/// |a − num| / max(|a|, |num|, floor).
fn error(a: f64, num: f64, floor: f64) -> f64 {
    (a - num).abs() / a.abs().max(num.abs()).max(floor)
}

/// The rounding noise (one standard deviation) of the first of the
/// quotients `q`, taken at steps eps, eps/10, eps/100: rounding noise grows
/// as 1/h, so quotients j and k differ by about σ·√(10^2j + 10^2k) when it
/// dominates. The median over pairs; 0 with one quotient. A step across a
/// bend inflates the pairs it is in, and the median damps it.
fn rounding_noise(q: &[f64]) -> f64 {
    let mut est = Vec::new();
    for j in 0..q.len() {
        for k in j + 1..q.len() {
            let scale = (100f64.powi(j as i32) + 100f64.powi(k as i32)).sqrt();
            est.push((q[j] - q[k]).abs() / scale);
        }
    }
    est.sort_by(f64::total_cmp);
    est.get(est.len() / 2)
        .copied()
        .filter(|v| v.is_finite())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::rounding_noise;

    #[test]
    fn rounding_noise_scales_with_the_step() {
        assert_eq!(rounding_noise(&[1.0]), 0.0);
        // Quotients at eps and eps/10 one unit apart: σ = 1/√101 at eps.
        assert!((rounding_noise(&[1.0, 2.0]) - 1.0 / 101f64.sqrt()).abs() < 1e-12);
        // A bend crossed at eps (3.0 where the others say 1.0): its jump of
        // 2 enters the estimate at 1/100 of its size, not in full.
        let s = rounding_noise(&[3.0, 1.0, 1.0 + 1e-3]);
        assert!(s < 0.021, "{s}");
    }
}
