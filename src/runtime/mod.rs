//! Running models: data, parameters, checkpoints, training.

pub mod data;
pub mod params;
pub mod reference_trainer;
pub mod schedule;
