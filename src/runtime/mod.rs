//! Running models: data, parameters, checkpoints, training.

pub mod data;
