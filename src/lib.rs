//! nnc compiles `.nn` files — a small declarative language for neural
//! networks — into checked IR, and (in later stages) into native training code.
//!
//! ```
//! let src = "model mlp {\n  input x: [B, 4]\n  labels y: [B] classes 3\n  logits = x |> dense(8) |> relu |> dense(3)\n  loss = cross_entropy(logits, y)\n}\n";
//! let checked = nnc::frontend::check_source("mlp.nn", src, &nnc::syntax::FsLoader, &Default::default());
//! assert!(!checked.has_errors());
//! assert_eq!(checked.models[0].param_count(), 4 * 8 + 8 + 8 * 3 + 3);
//! ```

pub mod api;
pub mod bench;
pub mod diag;
pub mod frontend;
pub mod gradcheck;
pub mod ir;
pub mod jit;
pub mod reference;
pub mod report;
pub mod rng;

pub mod runtime;
pub mod schedule;
pub mod syntax;

pub use api::{AsInput, CompiledModel, Error, Model, Options};
