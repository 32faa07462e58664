//! Learning-rate schedules and the per-step scalars of the training graph,
//! computed on the host exactly as `torch.optim.lr_scheduler` and
//! `torch.optim` compute them.

use crate::ir::optim::Hyper;
use crate::ir::train::{Optimizer, OptimizerKind, Schedule};

/// The learning rate of optimizer step `step` (0-based) in a run of `total`
/// steps: each schedule multiplies the base rate in turn (like
/// `ChainedScheduler`), except that a warm-up runs first and the schedules
/// after it start counting when it ends (like `SequentialLR`).
pub fn lr_at(base: f64, schedules: &[Schedule], step: usize, total: usize) -> f64 {
    let mut k = step;
    let mut remaining = total;
    let mut factor = 1.0;
    for s in schedules {
        match *s {
            Schedule::Warmup { steps, start } => {
                if k < steps {
                    // LinearLR(start_factor=start, end_factor=1, total_iters=steps)
                    return base * factor * (start + (1.0 - start) * k as f64 / steps as f64);
                }
                k -= steps;
                remaining = remaining.saturating_sub(steps);
            }
            Schedule::Step { every, gamma } => factor *= gamma.powi((k / every.max(1)) as i32),
            Schedule::Exponential { gamma } => factor *= gamma.powi(k as i32),
            Schedule::Cosine { steps, min } => {
                let t_max = if steps == 0 { remaining.max(1) } else { steps };
                let lr = base * factor;
                let cos = (std::f64::consts::PI * k as f64 / t_max as f64).cos();
                return min + (lr - min) * (1.0 + cos) / 2.0;
            }
        }
    }
    base * factor
}

/// Values of the training graph's hyper-parameter inputs at step `step`
/// (0-based), given that step's learning rate.
pub fn hyper_values(hypers: &[Hyper], opt: &Optimizer, step: usize, lr: f64) -> Vec<f64> {
    let t = (step + 1) as i32;
    hypers
        .iter()
        .map(|h| match h {
            Hyper::Lr => lr,
            Hyper::First => {
                if step == 0 {
                    1.0
                } else {
                    0.0
                }
            }
            Hyper::Bc1 | Hyper::Bc2 => {
                let (b1, b2) = match opt.kind {
                    OptimizerKind::Adam { beta1, beta2, .. }
                    | OptimizerKind::AdamW { beta1, beta2, .. } => (beta1, beta2),
                    _ => (0.0, 0.0),
                };
                let b = if *h == Hyper::Bc1 { b1 } else { b2 };
                1.0 - b.powi(t)
            }
            Hyper::AdagradLr => {
                let decay = match opt.kind {
                    OptimizerKind::Adagrad { lr_decay, .. } => lr_decay,
                    _ => 0.0,
                };
                lr / (1.0 + step as f64 * decay)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_and_exponential_decay() {
        let s = [Schedule::Step {
            every: 2,
            gamma: 0.5,
        }];
        let lrs: Vec<f64> = (0..5).map(|k| lr_at(1.0, &s, k, 5)).collect();
        assert_eq!(lrs, vec![1.0, 1.0, 0.5, 0.5, 0.25]);
        let e = [Schedule::Exponential { gamma: 0.9 }];
        assert!((lr_at(2.0, &e, 3, 10) - 2.0 * 0.729).abs() < 1e-15);
    }

    #[test]
    fn warmup_then_cosine() {
        let s = [
            Schedule::Warmup {
                steps: 4,
                start: 0.25,
            },
            Schedule::Cosine { steps: 0, min: 0.0 },
        ];
        assert_eq!(lr_at(1.0, &s, 0, 14), 0.25);
        assert!((lr_at(1.0, &s, 2, 14) - 0.625).abs() < 1e-15);
        // Cosine starts at the base rate when the warm-up ends, reaches min at the end.
        assert!((lr_at(1.0, &s, 4, 14) - 1.0).abs() < 1e-15);
        assert!((lr_at(1.0, &s, 9, 14) - 0.5).abs() < 1e-12);
        assert!(lr_at(1.0, &s, 14, 14).abs() < 1e-12);
    }
}
