//! Running models: data, parameters, checkpoints, training.

pub mod data;
pub mod params;
