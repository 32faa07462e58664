//! Scheduling: a graph becomes a straight list of kernels over one memory
//! arena.
//!
//! - Layout ops (reshape, transpose, slice, broadcast) become *views*: strides
//!   over an existing buffer, no copy.
//! - Elementwise ops fuse into [`Loop`] kernels: one pass over an iteration
//!   space computing a small expression DAG, with the reductions that follow
//!   (bias gradients, sums of losses) done in the same pass. A value is stored
//!   only when something outside its loop needs it.
//! - Matrix products, convolutions, pooling and softmax are anchors with
//!   kernels of their own; recurrences are loops over a scheduled body.
//! - Adam updates the optimizer marked ([`crate::ir::fused`]) run as one
//!   kernel each, which reads the stored gradient.
//! - [`memory`] then places every stored value in one arena, reusing space by
//!   liveness.
//!
//! The rules are few and generic (see [`fuse`]); nothing here knows a model.

pub mod fuse;
pub mod memory;
mod plan;
pub mod views;

use std::fmt;

use crate::ir::fused::AdamUpdate;
use crate::ir::graph::{Graph, NodeId};
use crate::ir::ops::{Binary, PoolKind, ReduceKind, Unary, Window};
use crate::ir::types::DType;

pub use plan::{
    ARENA, Dest, FIRST_INPUT, HYPERS, Layout, Output, PARAMS, STATES, ScheduleError, schedule,
};

/// A base pointer the generated code reads from its context table.
pub type RegionId = u32;

/// What a region points at.
#[derive(Debug, Clone, PartialEq)]
pub enum Region {
    /// Scratch memory for stored values, planned by [`memory`].
    Arena,
    /// Parameters, in `ParamId` order, contiguous.
    Params,
    /// Persistent buffers (running statistics, optimizer slots), in `StateId` order.
    States,
    /// Per-step scalars (`Op::Hyper`).
    Hypers,
    /// The caller's input `i`.
    Input(usize),
    /// A recurrence body's argument, re-pointed at every step.
    Arg,
}

/// A buffer of the arena before placement.
pub type BufId = u32;

/// Where a tensor's element 0 is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Base {
    Buf(BufId),
    Region(RegionId),
}

/// A strided tensor in memory: element (i₀, i₁, ...) is at
/// base + offset + Σ iₖ·stridesₖ (in 4-byte elements).
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub base: Base,
    pub offset: isize,
    pub shape: Vec<usize>,
    pub strides: Vec<isize>,
    pub dtype: DType,
}

impl View {
    /// A fresh row-major tensor at the start of `base`.
    pub fn contiguous(base: Base, shape: &[usize], dtype: DType) -> View {
        View {
            base,
            offset: 0,
            strides: views::row_major(shape),
            shape: shape.to_vec(),
            dtype,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_contiguous(&self) -> bool {
        self.strides == views::row_major(&self.shape)
    }
}

/// A memory access of a loop: base + offset + Σ iₖ·stridesₖ over the loop's
/// dimensions (stride 0 where the tensor is broadcast or reduced).
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub base: Base,
    pub offset: isize,
    pub strides: Vec<isize>,
    pub dtype: DType,
}

/// One value of a loop body, in SSA order.
#[derive(Debug, Clone, PartialEq)]
pub enum LOp {
    Load(Access),
    Const(f32),
    Hyper(usize),
    /// The index along a loop dimension, as a number (for one-hot).
    Iota(usize),
    Unary(Unary, usize),
    Binary(Binary, usize, usize),
    Where(usize, usize, usize),
    /// A dropout mask value; the element index is Σ iₖ·index_stridesₖ and
    /// the time step is that of recurrence depth `depth` (0 outside).
    Mask {
        p: f32,
        stream: u32,
        index_strides: Vec<usize>,
        depth: usize,
    },
    /// 1 when the time step of recurrence depth `depth` is not a multiple of
    /// `every`, else 0 (truncated BPTT).
    StepFlag {
        every: usize,
        depth: usize,
    },
}

/// A reduction computed in the loop: `out` has stride 0 along reduced dims.
#[derive(Debug, Clone, PartialEq)]
pub struct LReduce {
    pub value: usize,
    /// Sum or Max (a mean is a sum with `scale` = 1/n).
    pub kind: ReduceKind,
    pub scale: f32,
    pub out: Access,
}

/// A fused elementwise kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Loop {
    pub dims: Vec<usize>,
    pub ops: Vec<LOp>,
    pub stores: Vec<(usize, Access)>,
    pub reduces: Vec<LReduce>,
    /// The IR nodes computed here, for `nnc ir --kernels`.
    pub nodes: Vec<NodeId>,
}

/// A matrix for a product: element (r, c) of batch item b is at
/// base + offset + b·batch_stride + r·rs + c·cs.
#[derive(Debug, Clone, PartialEq)]
pub struct Mat {
    pub base: Base,
    pub offset: isize,
    pub rs: isize,
    pub cs: isize,
    pub batch_stride: isize,
}

/// `c = a @ b` (or `c += a @ b`), `batch` times.
#[derive(Debug, Clone, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a: Mat,
    pub b: Mat,
    pub c: Mat,
    pub accumulate: bool,
    pub node: NodeId,
}

/// Which convolution computation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    Forward,
    GradInput,
    GradWeight,
}

/// A convolution (or one of its gradients) over contiguous tensors, by
/// im2col and matrix products; `x` is the convolution's input, `w` its
/// weight, `y` its output (whichever two are read, the third is written).
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub kind: ConvKind,
    pub x: View,
    pub w: View,
    pub y: View,
    pub window: Window,
    pub groups: usize,
    /// Scratch for the column matrix.
    pub scratch: Option<BufId>,
    pub scratch_len: usize,
    pub node: NodeId,
}

/// Pooling or its gradient over contiguous tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub grad: bool,
    pub x: View,
    /// The output (forward) or the incoming gradient (backward).
    pub y: View,
    /// The input gradient (backward only).
    pub dx: Option<View>,
    pub window: Window,
    /// Max pooling: where each window's maximum is (plane-local index),
    /// written by the forward kernel and read by its gradient.
    pub indices: Option<BufId>,
    pub node: NodeId,
}

/// Rows of a `[V, D]` table picked by class indices (`gather`), or rows
/// added into the zeroed table (`scatter_add`, the gradient). Indices
/// outside 0..V pick a zero row, or add nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct Gather {
    pub scatter: bool,
    /// The indices, any shape and strides; row r of `rows` belongs to the
    /// r-th index in row-major order.
    pub idx: View,
    /// `[V, D]`, contiguous: read by gather, written by scatter.
    pub table: View,
    /// `[n, D]` (the indices' shape plus D), contiguous: written by gather,
    /// read by scatter.
    pub rows: View,
    pub node: NodeId,
}

/// Softmax or log-softmax of `rows` lanes of `len` elements.
#[derive(Debug, Clone, PartialEq)]
pub struct Softmax {
    pub log: bool,
    pub rows: usize,
    pub len: usize,
    /// Element (r, i): offset + r_outer·... — rows are enumerated by `row_dims`.
    pub x: Access,
    pub y: Access,
    /// Loop dims: the row dims then the softmax axis last.
    pub dims: Vec<usize>,
    pub node: NodeId,
}

/// A recurrence: a loop over time running a scheduled body.
#[derive(Debug, Clone, PartialEq)]
pub struct Recur {
    pub steps: usize,
    pub reverse: bool,
    /// Per-step argument pointers: region `arg` points at `view` advanced by
    /// t·`time_stride` (sequence slices), or at `view` itself (captures).
    pub seq_args: Vec<(RegionId, View, isize)>,
    pub capture_args: Vec<(RegionId, View)>,
    /// States: the argument region, two ping-pong buffers, the initial value.
    pub states: Vec<RecurState>,
    /// Per-step outputs: the region the body's copy writes to, pointed at
    /// `stacked` advanced by t·time_stride.
    pub step_outs: Vec<(RegionId, View, isize)>,
    /// The body's kernels, ending with the copies of next states and step
    /// outputs into their regions.
    pub body: Vec<Step>,
    /// Recurrence depth of the body (1 for a recurrence in the model).
    pub depth: usize,
    pub node: NodeId,
}

/// A recurrence state: at step t the argument region points at
/// `buffers[t % 2]`, the body's next value is copied to `buffers[(t+1) % 2]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecurState {
    pub arg: RegionId,
    /// Region the body's copy writes to: `buffers[(t+1) % 2]`.
    pub next_region: RegionId,
    pub init: View,
    pub buffers: [BufId; 2],
    pub shape: Vec<usize>,
}

/// One parameter's Adam update in place (see [`AdamUpdate`]): reads `grad`,
/// rewrites `param`, `exp_avg` and `exp_avg_sq`, all contiguous and of one
/// shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    pub param: View,
    pub grad: View,
    pub exp_avg: View,
    pub exp_avg_sq: View,
    pub update: AdamUpdate,
}

/// One kernel of a schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Loop(Loop),
    Gemm(Gemm),
    Conv(Conv),
    Pool(Pool),
    Softmax(Softmax),
    Gather(Gather),
    Recur(Box<Recur>),
    Adam(Adam),
    /// Copies a tensor (same shape), e.g. into a recurrence's state buffer.
    Copy {
        from: View,
        to: View,
    },
}

/// A scheduled graph: its kernels, buffers and where requested values are.
#[derive(Debug, Clone)]
pub struct Program {
    pub regions: Vec<Region>,
    pub steps: Vec<Step>,
    /// Size (elements) of every arena buffer, by `BufId`.
    pub buffers: Vec<usize>,
    /// Placement of each buffer in the arena (elements), by `BufId`.
    pub offsets: Vec<usize>,
    /// Arena size in elements.
    pub arena: usize,
    /// Where each requested output ended up.
    pub outputs: Vec<View>,
    /// Bytes all stored values would need without reuse (for reports).
    pub naive_bytes: usize,
    /// Element type of each input region, where the graph reads it.
    pub input_types: Vec<Option<crate::ir::types::DType>>,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Loop(l) => write!(
                f,
                "loop {:?}: {} ops, {} stores, {} reductions (nodes {})",
                l.dims,
                l.ops.len(),
                l.stores.len(),
                l.reduces.len(),
                l.nodes
                    .iter()
                    .map(|n| format!("%{}", n.0))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Step::Gemm(g) => write!(
                f,
                "gemm {}x{}x{}{}{} (%{})",
                g.m,
                g.n,
                g.k,
                if g.batch > 1 {
                    format!(" ×{}", g.batch)
                } else {
                    String::new()
                },
                if g.accumulate { " +=" } else { "" },
                g.node.0
            ),
            Step::Conv(c) => write!(
                f,
                "conv {:?} {:?}→{:?} (%{})",
                c.kind, c.x.shape, c.y.shape, c.node.0
            ),
            Step::Pool(p) => write!(
                f,
                "{}pool{} {:?} (%{})",
                if p.kind == PoolKind::Max {
                    "max"
                } else {
                    "avg"
                },
                if p.grad { " grad" } else { "" },
                p.x.shape,
                p.node.0
            ),
            Step::Softmax(s) => write!(
                f,
                "{} {}x{} (%{})",
                if s.log { "log_softmax" } else { "softmax" },
                s.rows,
                s.len,
                s.node.0
            ),
            Step::Gather(g) => write!(
                f,
                "{} {}x{} (%{})",
                if g.scatter { "scatter_add" } else { "gather" },
                g.rows.numel() / g.table.shape.get(1).copied().unwrap_or(1).max(1),
                g.table.shape.get(1).copied().unwrap_or(1),
                g.node.0
            ),
            Step::Recur(r) => write!(
                f,
                "recur {} steps{}, {} body kernels (%{})",
                r.steps,
                if r.reverse { " reverse" } else { "" },
                r.body.len(),
                r.node.0
            ),
            Step::Adam(a) => write!(
                f,
                "adam{} {:?} (%{})",
                if a.update.decoupled { "w" } else { "" },
                a.param.shape,
                a.update.new_param.0
            ),
            Step::Copy { from, to } => write!(f, "copy {:?} → {:?}", from.shape, to.shape),
        }
    }
}

/// A readable listing of a program's kernels (`nnc ir --kernels`).
pub fn listing(p: &Program) -> String {
    fn walk(out: &mut String, steps: &[Step], depth: usize) {
        for (i, s) in steps.iter().enumerate() {
            out.push_str(&format!("{}k{i}: {s}\n", "  ".repeat(depth)));
            if let Step::Recur(r) = s {
                walk(out, &r.body, depth + 1);
            }
        }
    }
    let mut out = String::new();
    walk(&mut out, &p.steps, 0);
    out.push_str(&format!(
        "arena: {} bytes ({} buffers; {} bytes without reuse)\n",
        p.arena * 4,
        p.buffers.len(),
        p.naive_bytes
    ));
    out
}

/// The graph a program was scheduled from, with the requested values.
pub struct Request<'g> {
    pub graph: &'g Graph,
    pub outputs: Vec<Output>,
}
