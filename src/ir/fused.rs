//! Groups of nodes that together compute something a hand-written kernel
//! does faster than a generated loop. The nodes stay in the graph — the
//! reference interpreter evaluates them as usual, and stays the oracle — and
//! the scheduler may compute the group's results in one kernel instead.

use super::graph::NodeId;

/// One parameter's Adam or AdamW update as [`super::optim`] builds it (not
/// AMSGrad): with d = g + wd·p (Adam) or d = g and p₀ = p·(1 − lr·wd) (AdamW),
///
/// - m' = β₁·m + (1 − β₁)·d
/// - v' = β₂·v + (1 − β₂)·d²
/// - p' = p₀ − (m' / (√v'·(1/√bc₂) + eps))·(lr / bc₁)
///
/// each product and sum rounded to f32 in this order. Its square root and
/// division bound a generated loop, which Cranelift emits 4 lanes wide.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamUpdate {
    pub param: NodeId,
    pub grad: NodeId,
    pub exp_avg: NodeId,
    pub exp_avg_sq: NodeId,
    pub new_param: NodeId,
    pub new_exp_avg: NodeId,
    pub new_exp_avg_sq: NodeId,
    /// Indices of the step's hyper-parameters: lr, 1 − β₁ᵗ and 1 − β₂ᵗ.
    pub lr: usize,
    pub bc1: usize,
    pub bc2: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// AdamW: the decay shrinks the parameter instead of adding to d.
    pub decoupled: bool,
}
