//! Running models: data, parameters, checkpoints, training.

pub mod checkpoint;
pub mod data;
pub mod executable;
pub mod jit_trainer;
pub mod params;
pub mod programs;
pub mod reference_trainer;
pub mod schedule;
pub mod session;
pub mod source;
pub mod train;

/// The thread pool compiled code runs on, one per thread count, made once;
/// `None` when threads cannot be started (the caller's thread runs alone).
pub fn pool(threads: usize) -> Option<&'static rayon::ThreadPool> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static POOLS: OnceLock<Mutex<HashMap<usize, &'static rayon::ThreadPool>>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = match pools.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(p) = map.get(&threads) {
        return Some(p);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("nnc-{i}"))
        .build()
        .ok()?;
    let pool: &'static rayon::ThreadPool = Box::leak(Box::new(pool));
    map.insert(threads, pool);
    Some(pool)
}
