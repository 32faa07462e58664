//! `nnc bench`: compile time, step time, achieved GFLOP/s and memory of a
//! model's compiled training step, on random data.

use std::time::{Duration, Instant};

use crate::gradcheck::random_inputs;
use crate::ir::model::Model;
use crate::runtime::jit_trainer::{JitTrainer, TrainError};
use crate::runtime::reference_trainer::Recipe;

/// f32 peak of one core of the reference machine: 2 FMA pipes × 8 lanes ×
/// 2 flops × 2.9 GHz (see CRANELIFT.md); used where it cannot be measured.
pub const PEAK_GFLOPS_PER_CORE: f64 = 92.8;

/// The f32 peak of one core of this machine, measured with loops of
/// independent fused multiply-adds: 256-bit, and 512-bit where the CPU has
/// AVX-512 (the `gemm` crate's widest kernels use it; Zen 4 splits 512-bit
/// operations in two, Zen 5 does not, so only a measurement tells). Falls back
/// to [`PEAK_GFLOPS_PER_CORE`] without FMA.
pub fn measure_peak_gflops() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::jit::simd::{Avx2, Avx512, Simd};
        #[target_feature(enable = "avx2,fma")]
        fn chains_256(iters: u64) -> f32 {
            // SAFETY: the caller checked the features.
            unsafe { fma_chains::<Avx2>(iters) }
        }
        #[target_feature(enable = "avx512f")]
        fn chains_512(iters: u64) -> f32 {
            // SAFETY: as above.
            unsafe { fma_chains::<Avx512>(iters) }
        }
        if crate::jit::host::has_avx2() {
            // SAFETY: the features were detected.
            let avx2 = best_of_three(Avx2::L, |n| unsafe { chains_256(n) });
            if crate::jit::host::has_avx512() {
                // SAFETY: detected.
                return avx2.max(best_of_three(Avx512::L, |n| unsafe { chains_512(n) }));
            }
            return avx2;
        }
    }
    PEAK_GFLOPS_PER_CORE
}

/// Runs `chains(iters)` (twelve independent FMA chains of `lanes`-wide
/// vectors) three times and returns the best GFLOP/s.
#[cfg(target_arch = "x86_64")]
fn best_of_three(lanes: usize, chains: impl Fn(u64) -> f32) -> f64 {
    let iters = 2_000_000u64;
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = Instant::now();
        std::hint::black_box(chains(iters));
        let secs = start.elapsed().as_secs_f64();
        best = best.max((iters * 12 * lanes as u64 * 2) as f64 / secs / 1e9);
    }
    best
}

/// Twelve chains of `iters` dependent FMAs each; returns a lane of the
/// result so that none is optimised away.
///
/// # Safety
/// The host has the features of `S`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn fma_chains<S: crate::jit::simd::Simd>(iters: u64) -> f32 {
    // Distinct, opaque values: the compiler must keep twelve chains.
    let (a, b) = (
        std::hint::black_box(0.999_999f32),
        std::hint::black_box(1e-7f32),
    );
    unsafe {
        let (a, b) = (S::splat(&a), S::splat(&b));
        let mut acc: [S::V; 12] =
            std::array::from_fn(|i| S::splat(&std::hint::black_box(1.0 + i as f32 * 0.01)));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = S::fma(*x, a, b);
            }
        }
        let mut lanes = [0.0f32; 16];
        let mut sum = 0.0;
        for x in acc {
            S::store(lanes.as_mut_ptr(), x);
            sum += lanes[0];
        }
        sum
    }
}

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
    /// Measured f32 peak of one core (GFLOP/s).
    pub peak_per_core: f64,
}

impl BenchResult {
    pub fn gflops(&self) -> f64 {
        self.flops / self.median.as_secs_f64() / 1e9
    }

    /// Achieved GFLOP/s over the peak of the cores used.
    pub fn peak_fraction(&self) -> f64 {
        self.gflops() / (self.peak_per_core * self.threads as f64)
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
    bench_with(model, recipe, batch, threads, warmup, steps, false).map(|(r, _)| r)
}

/// Time per kernel: label, total time, calls.
pub type KernelTimes = Vec<(String, Duration, u64)>;

/// Like [`bench`]; with `profile`, also returns the time per kernel (most first).
pub fn bench_with(
    model: &Model,
    recipe: Recipe,
    batch: usize,
    threads: usize,
    warmup: usize,
    steps: usize,
    profile: bool,
) -> Result<(BenchResult, KernelTimes), TrainError> {
    let mut t = JitTrainer::build(model, recipe, batch, None, threads, false, profile)?;
    let compile = t.compile_time;
    let xs = random_inputs(model, batch, 1);
    let typed = crate::gradcheck::TypedInputs::new(model, &xs);
    let feeds = typed.feeds();
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
    let mut kernels: Vec<(String, Duration, u64)> = match &t.exe.profile {
        Some(p) => t
            .exe
            .code
            .labels
            .iter()
            .zip(&p.totals)
            .map(|(l, (d, n))| (l.clone(), *d, *n))
            .collect(),
        None => Vec::new(),
    };
    kernels.sort_by_key(|k| std::cmp::Reverse(k.1));
    let tg = &t.train;
    let roots: Vec<_> = std::iter::once(tg.loss)
        .chain(tg.param_updates.iter().map(|u| u.1))
        .chain(tg.state_updates.iter().map(|u| u.1))
        .collect();
    let flops = crate::report::summary::flops_from(&tg.graph, &roots, batch) as f64;
    Ok((
        BenchResult {
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
            peak_per_core: measure_peak_gflops(),
        },
        kernels,
    ))
}
