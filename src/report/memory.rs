//! Memory of the planned training step and inference pass, for `nnc summary`.

use std::fmt::Write;

use crate::ir::lower::human_bytes;
use crate::runtime::programs::Planned;

fn bytes(elements: usize) -> String {
    human_bytes(elements as u128 * 4)
}

/// Training and inference memory from the memory plan, beside what every
/// activation and gradient would take without buffer reuse.
pub fn report(train: Option<&Planned>, infer: Option<&Planned>, batch: usize) -> String {
    let mut out = String::new();
    if let Some(t) = train {
        let _ = writeln!(
            out,
            "Training memory at batch {batch}:  {} = arena {} + parameters {} + optimizer state {}{}",
            human_bytes(t.total_bytes() as u128),
            bytes(t.program.arena),
            bytes(t.params),
            bytes(t.optimizer_state),
            if t.model_state > 0 {
                format!(" + buffers {}", bytes(t.model_state))
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "  without the plan: {} of activations, gradients and workspace (arena reuse saves {:.0}%)",
            human_bytes(t.program.naive_bytes as u128),
            saving(t)
        );
    }
    if let Some(i) = infer {
        let _ = writeln!(
            out,
            "Inference memory at batch {batch}: {} = arena {} + parameters {}{}",
            human_bytes(i.total_bytes() as u128),
            bytes(i.program.arena),
            bytes(i.params),
            if i.model_state > 0 {
                format!(" + buffers {}", bytes(i.model_state))
            } else {
                String::new()
            }
        );
    }
    out
}

fn saving(p: &Planned) -> f64 {
    let naive = p.program.naive_bytes as f64;
    if naive == 0.0 {
        0.0
    } else {
        100.0 * (1.0 - (p.program.arena * 4) as f64 / naive)
    }
}
