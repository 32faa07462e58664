//! Human-readable views of a checked model: the summary table and the graph drawing.

pub mod graph;
pub mod memory;
pub mod summary;
