//! `nnc bench`: compile time, step time, achieved GFLOP/s and memory of a
//! model's compiled training step, on random data.

use std::time::{Duration, Instant};

use crate::gradcheck::random_inputs;
use crate::ir::model::Model;
use crate::ir::types::DType;
use crate::runtime::executable::InputData;
use crate::runtime::jit_trainer::{JitTrainer, TrainError};
use crate::runtime::reference_trainer::Recipe;

/// f32 peak of one core of the reference machine: 2 FMA pipes × 8 lanes ×
/// 2 flops × 2.9 GHz (see CRANELIFT.md).
pub const PEAK_GFLOPS_PER_CORE: f64 = 92.8;

#[derive(Debug, Clone)]
pub struct BenchResult {
    pub model: String,
    pub batch: usize,
    pub threads: usize,
    pub compile: Duration,
    pub kernels: usize,
    pub median: Duration,
    pub min: Duration,
    pub max: Duration,
    pub steps: usize,
    /// Floating-point operations of one training step.
    pub flops: f64,
    /// Bytes: arena, parameters, persistent state (incl. optimizer slots).
    pub arena_bytes: usize,
    pub param_bytes: usize,
    pub state_bytes: usize,
    /// Bytes all stored intermediate values would need without reuse.
    pub naive_bytes: usize,
}

impl BenchResult {
    pub fn gflops(&self) -> f64 {
        self.flops / self.median.as_secs_f64() / 1e9
    }

    pub fn peak_fraction(&self) -> f64 {
        self.gflops() / (PEAK_GFLOPS_PER_CORE * self.threads as f64)
    }

    pub fn memory(&self) -> usize {
        self.arena_bytes + self.param_bytes + self.state_bytes
    }
}

/// Compiles and times `steps` training steps after `warmup` ones.
pub fn bench(
    model: &Model,
    recipe: Recipe,
    batch: usize,
    threads: usize,
    warmup: usize,
    steps: usize,
) -> Result<BenchResult, TrainError> {
    let started = Instant::now();
    let mut t = JitTrainer::new(model, recipe, batch, None, threads, false)?;
    let compile = started.elapsed();
    let xs = random_inputs(model, batch, 1);
    let ints: Vec<Vec<i32>> = xs
        .iter()
        .map(|a| a.iter().map(|&v| v as i32).collect())
        .collect();
    let floats: Vec<Vec<f32>> = xs
        .iter()
        .map(|a| a.iter().map(|&v| v as f32).collect())
        .collect();
    let feeds: Vec<InputData> = model
        .inputs
        .iter()
        .enumerate()
        .map(|(i, inp)| {
            if inp.ty.dtype == DType::I32 {
                InputData::I32(&ints[i])
            } else {
                InputData::F32(&floats[i])
            }
        })
        .collect();
    for _ in 0..warmup {
        t.step(&feeds)?;
    }
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps.max(1) {
        let s = Instant::now();
        t.step(&feeds)?;
        times.push(s.elapsed());
    }
    times.sort();
    let flops = crate::report::summary::flops(&t.train.graph, batch) as f64;
    Ok(BenchResult {
        model: model.name.clone(),
        batch,
        threads,
        compile,
        kernels: t.exe.code.kernels,
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        steps: times.len(),
        flops,
        arena_bytes: t.exe.program.arena * 4,
        param_bytes: t.params.len() * 4,
        state_bytes: t.states.len() * 4,
        naive_bytes: t.exe.program.naive_bytes,
    })
}
