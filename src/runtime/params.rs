//! Initial values of parameters and persistent state.
//!
//! Each parameter draws from its own generator, seeded by the run's seed and
//! the parameter's name, so adding a layer does not change the initial
//! weights of the others.

use ndarray::{ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};
use rand_pcg::Pcg64Mcg;

use crate::ir::model::{Init, Model, State};
use crate::reference::{Real, real};

/// FNV-1a: a stable hash of a name (the standard library's may change between releases).
fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A generator for the named tensor of a run.
pub fn generator(seed: u64, name: &str) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(seed ^ name_hash(name))
}

/// Draws one tensor.
pub fn draw<T: Real>(init: &Init, shape: &[usize], rng: &mut Pcg64Mcg) -> ArrayD<T> {
    let n: usize = shape.iter().product();
    let values: Vec<T> = match *init {
        Init::Constant(c) => vec![real(c); n],
        Init::Uniform(b) if b > 0.0 => (0..n).map(|_| real(rng.random_range(-b..b))).collect(),
        Init::Uniform(_) => vec![T::zero(); n],
        Init::Normal(s) => match Normal::new(0.0, s) {
            Ok(d) => (0..n).map(|_| real(d.sample(rng))).collect(),
            Err(_) => vec![T::zero(); n],
        },
    };
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
}

/// Initial values of every parameter of a model.
pub fn init<T: Real>(model: &Model, seed: u64) -> Vec<ArrayD<T>> {
    model
        .params
        .iter()
        .map(|p| {
            let mut rng = generator(seed, &p.name);
            draw(&p.init, &p.shape.at(1), &mut rng)
        })
        .collect()
}

/// Initial values of persistent buffers at a batch size.
pub fn init_states<T: Real>(states: &[State], batch: usize) -> Vec<ArrayD<T>> {
    states
        .iter()
        .map(|s| ArrayD::from_elem(IxDyn(&s.ty.shape.at(batch)), real(s.init)))
        .collect()
}
