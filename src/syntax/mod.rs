//! The front end's first half: `.nn` text → syntax tree ([`ast`]).

pub mod ast;
mod parse;
mod syntax_error;

pub mod program;

pub use parse::{MAX_EXPR_DEPTH, MAX_NESTING, parse_file};
pub use program::{FsLoader, Loader, Program};
