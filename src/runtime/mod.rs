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
