//! The IR: a graph of primitive tensor ops with static shapes, the centre of
//! the compiler. The front end ([`lower`]) only produces it; autodiff,
//! the reference interpreter and the JIT only consume it.

pub mod autodiff;
pub mod build;
pub mod dump;
pub mod fused;
pub mod graph;
pub mod lower;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rewrite;
pub mod shape;
pub mod train;
pub mod types;

pub use graph::{Graph, LayerId, Node, NodeId};
pub use model::{Init, Input, InputKind, Layer, Mode, Model, Param, State};
pub use ops::{Binary, Op, ParamId, PoolKind, RecurOp, ReduceKind, StateId, Unary, Window};
pub use types::{DType, Dim, Shape, TensorType};
