//! The primitive operations of the IR.
//!
//! Layers (dense, conv2d, batchnorm, lstm cells written in the language, ...) are
//! lowered to these early, so every later stage — shape rules (`shape.rs`),
//! gradients, the reference interpreter and code generation — is written once
//! per primitive. Each op's doc says its inputs, in order.

use std::fmt;

use super::graph::Graph;
use super::types::Shape;

/// Index of a trainable parameter in [`super::Model::params`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u32);

/// Index of a persistent non-trainable buffer (batch-norm running statistics,
/// the carried state of a stateful recurrence) in [`super::Model::states`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StateId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unary {
    Neg,
    Exp,
    Log,
    Sqrt,
    /// 1 / sqrt(x)
    Rsqrt,
    Recip,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    Erf,
    /// 1 where x > 0, else 0: the derivative of relu.
    Step,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// Comparisons give 1.0 or 0.0.
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    /// Average with the padding counted (PyTorch's default `count_include_pad`).
    Avg,
}

/// Geometry shared by convolution and pooling: one entry per spatial axis.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub stride: Vec<usize>,
    pub pad: Vec<usize>,
    pub dilation: Vec<usize>,
    /// Pooling only: round the output size up (PyTorch's `ceil_mode`).
    pub ceil: bool,
}

impl Window {
    /// Output length along spatial axis `i` for input length `n`, or `None`
    /// when the window does not fit.
    pub fn out_len(&self, i: usize, n: usize) -> Option<usize> {
        let span = self.dilation[i] * (self.kernel[i] - 1) + 1;
        let padded = n + 2 * self.pad[i];
        if padded < span || self.stride[i] == 0 {
            return None;
        }
        let steps = padded - span;
        let mut out = steps / self.stride[i] + 1;
        if self.ceil && !steps.is_multiple_of(self.stride[i]) {
            // PyTorch: the last window must start inside the input or left padding.
            if (out) * self.stride[i] < n + self.pad[i] {
                out += 1;
            }
        }
        Some(out)
    }
}

/// A loop over time: `body` runs once per step, reading one time slice of each
/// sequence input, the previous states and the loop-invariant captures.
///
/// Node inputs, in order: `n_seq` sequences `[B, T, ...]`, `n_state` initial
/// states, then captures. The body's `Arg(i)` leaves follow the same order
/// (a sequence argument is one time slice, without the time axis). The body's
/// outputs are the `n_state` next states, then `n_step_out` per-step outputs.
/// The node's results, read with [`Op::Output`]: the per-step outputs stacked
/// along axis 1, then the final states.
#[derive(Debug, Clone, PartialEq)]
pub struct RecurOp {
    pub steps: usize,
    pub n_seq: usize,
    pub n_state: usize,
    pub n_step_out: usize,
    pub body: Graph,
    /// Run the steps from last to first (the backward pass of a recurrence).
    pub reverse: bool,
    /// Truncated BPTT: no gradient flows through the state across a multiple of k steps.
    pub truncate: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    // ---- leaves
    /// A data input or labels tensor fed by the caller.
    Input {
        index: usize,
    },
    Param(ParamId),
    State(StateId),
    /// A body argument of a recurrence (see [`RecurOp`]).
    Arg(usize),
    /// A tensor filled with one value.
    Fill {
        value: f64,
        shape: Shape,
    },
    /// The number of elements of the input over `axes`, as an f32 scalar
    /// (depends on the batch size, so it is not a constant).
    SizeOf {
        axes: Vec<usize>,
    },
    /// 0 with probability p, else 1/(1-p): a dropout mask, fresh every
    /// training step; `stream` tells masks of one step apart.
    DropoutMask {
        p: f64,
        stream: u32,
        shape: Shape,
    },

    /// A scalar the caller sets before each step: learning rate, bias
    /// corrections (see `crate::ir::optim::Hyper`).
    Hyper(usize),
    /// Inside a recurrence body: 1.0 at step t when t is not a multiple of
    /// `every`, else 0.0 (truncated backpropagation through time cuts there).
    StepFlag {
        every: usize,
    },

    // ---- elementwise, with NumPy broadcasting
    Unary(Unary),
    Binary(Binary),
    /// `(cond, a, b)`: a where cond != 0, else b.
    Where,
    /// `(labels)`: i32 class indices to a one-hot f32 tensor with a trailing axis.
    OneHot {
        classes: usize,
    },

    // ---- layout
    /// `(x)`: same elements, another shape.
    Reshape {
        shape: Shape,
    },
    /// `(x)`: broadcasts to a shape.
    Expand {
        shape: Shape,
    },
    Transpose {
        perm: Vec<usize>,
    },
    Slice {
        axis: usize,
        start: usize,
        end: usize,
    },
    /// `(x)`: zeros before and after along an axis (the gradient of `Slice`).
    Pad {
        axis: usize,
        before: usize,
        after: usize,
    },
    Concat {
        axis: usize,
    },

    // ---- reductions
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keep: bool,
    },
    Softmax {
        axis: usize,
    },
    LogSoftmax {
        axis: usize,
    },

    // ---- indexing
    /// `(table [V, D], idx [*] i32)` → `[*, D]`: row `idx` of the table for
    /// every index, a zero row where it is outside 0..V. The same as
    /// `one_hot(idx) @ table`, without the one-hot tensor or the product.
    Gather,
    /// `(idx [*] i32, dy [*, D])` → `[rows, D]`: every `dy` row added into
    /// row `idx` of a zero table (the gradient of [`Op::Gather`]); indices
    /// outside 0..rows add nothing.
    ScatterAdd {
        rows: usize,
    },

    // ---- contractions
    /// `(a, b)`: `a @ b` over the last two axes, transposing either first;
    /// leading axes broadcast (a 2-D `b` is shared by every leading index of `a`).
    MatMul {
        ta: bool,
        tb: bool,
    },
    /// `(x [N, C, *S], w [O, C/groups, *K])` → `[N, O, *S']`.
    Conv {
        window: Window,
        groups: usize,
    },
    /// `(dy, w)` → dx; `spatial` is the convolution input's spatial size,
    /// which strides make impossible to recover from `dy`.
    ConvGradInput {
        window: Window,
        groups: usize,
        spatial: Vec<usize>,
    },
    /// `(x, dy)` → dw, shaped like the weight.
    ConvGradWeight {
        window: Window,
        groups: usize,
    },
    /// `(x [N, C, *S])` → `[N, C, *S']`.
    Pool {
        kind: PoolKind,
        window: Window,
    },
    /// `(x, dy)` → dx: max pooling routes each gradient to its window's first
    /// maximum, average pooling spreads it evenly.
    PoolGrad {
        kind: PoolKind,
        window: Window,
    },

    // ---- control flow
    Recur(Box<RecurOp>),
    /// `(recur)`: result `index` of a recurrence.
    Output {
        index: usize,
    },
}

impl Op {
    /// The op's name in IR dumps.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param(_) => "param",
            Op::State(_) => "state",
            Op::Arg(_) => "arg",
            Op::Fill { .. } => "fill",
            Op::SizeOf { .. } => "size_of",
            Op::DropoutMask { .. } => "dropout_mask",
            Op::Hyper(_) => "hyper",
            Op::StepFlag { .. } => "step_flag",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Where => "where",
            Op::OneHot { .. } => "one_hot",
            Op::Reshape { .. } => "reshape",
            Op::Expand { .. } => "expand",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Pad { .. } => "pad",
            Op::Concat { .. } => "concat",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Sum => "sum",
                ReduceKind::Mean => "mean",
                ReduceKind::Max => "reduce_max",
            },
            Op::Softmax { .. } => "softmax",
            Op::LogSoftmax { .. } => "log_softmax",
            Op::Gather => "gather",
            Op::ScatterAdd { .. } => "scatter_add",
            Op::MatMul { .. } => "matmul",
            Op::Conv { .. } => "conv",
            Op::ConvGradInput { .. } => "conv_grad_input",
            Op::ConvGradWeight { .. } => "conv_grad_weight",
            Op::Pool { kind, .. } => match kind {
                PoolKind::Max => "maxpool",
                PoolKind::Avg => "avgpool",
            },
            Op::PoolGrad { kind, .. } => match kind {
                PoolKind::Max => "maxpool_grad",
                PoolKind::Avg => "avgpool_grad",
            },
            Op::Recur(_) => "recur",
            Op::Output { .. } => "output",
        }
    }

    /// Whether the op is a pure function of its inputs applied elementwise
    /// (the fusible kind).
    pub fn is_elementwise(&self) -> bool {
        matches!(self, Op::Unary(_) | Op::Binary(_) | Op::Where)
    }
}

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Neg => "neg",
            Unary::Exp => "exp",
            Unary::Log => "log",
            Unary::Sqrt => "sqrt",
            Unary::Rsqrt => "rsqrt",
            Unary::Recip => "recip",
            Unary::Abs => "abs",
            Unary::Tanh => "tanh",
            Unary::Sigmoid => "sigmoid",
            Unary::Relu => "relu",
            Unary::Erf => "erf",
            Unary::Step => "step",
        }
    }

    /// The scalar function, in f64 (the reference semantics).
    pub fn eval(self, x: f64) -> f64 {
        match self {
            Unary::Neg => -x,
            Unary::Exp => x.exp(),
            Unary::Log => x.ln(),
            Unary::Sqrt => x.sqrt(),
            Unary::Rsqrt => 1.0 / x.sqrt(),
            Unary::Recip => 1.0 / x,
            Unary::Abs => x.abs(),
            Unary::Tanh => x.tanh(),
            Unary::Sigmoid => sigmoid(x),
            Unary::Relu => {
                if x > 0.0 {
                    x
                } else {
                    0.0
                }
            }
            Unary::Erf => erf(x),
            Unary::Step => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The error function (the `libm` crate's port of the standard C library's).
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
            Binary::Max => "max",
            Binary::Min => "min",
            Binary::Gt => "gt",
            Binary::Ge => "ge",
            Binary::Lt => "lt",
            Binary::Le => "le",
            Binary::Eq => "eq",
        }
    }

    pub fn eval(self, a: f64, b: f64) -> f64 {
        let flag = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Max => {
                if a.is_nan() || a >= b {
                    a
                } else {
                    b
                }
            }
            Binary::Min => {
                if a.is_nan() || a <= b {
                    a
                } else {
                    b
                }
            }
            Binary::Gt => flag(a > b),
            Binary::Ge => flag(a >= b),
            Binary::Lt => flag(a < b),
            Binary::Le => flag(a <= b),
            Binary::Eq => flag(a == b),
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kernel={:?} stride={:?} pad={:?} dilation={:?}",
            self.kernel, self.stride, self.pad, self.dilation
        )?;
        if self.ceil {
            f.write_str(" ceil")?;
        }
        Ok(())
    }
}

/// Attributes of an op for IR dumps (empty when it has none).
pub fn attrs(op: &Op) -> String {
    match op {
        Op::Fill { value, .. } => format!("value={value}"),
        Op::SizeOf { axes } => format!("axes={axes:?}"),
        Op::DropoutMask { p, stream, .. } => format!("p={p} stream={stream}"),
        Op::Hyper(i) => format!("{i}"),
        Op::StepFlag { every } => format!("every={every}"),
        Op::OneHot { classes } => format!("classes={classes}"),
        Op::ScatterAdd { rows } => format!("rows={rows}"),
        Op::Transpose { perm } => format!("perm={perm:?}"),
        Op::Slice { axis, start, end } => format!("axis={axis} {start}..{end}"),
        Op::Pad {
            axis,
            before,
            after,
        } => format!("axis={axis} before={before} after={after}"),
        Op::Concat { axis } => format!("axis={axis}"),
        Op::Reduce { axes, keep, .. } => {
            format!("axes={axes:?}{}", if *keep { " keep" } else { "" })
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => format!("axis={axis}"),
        Op::MatMul { ta, tb } => match (ta, tb) {
            (false, false) => String::new(),
            (true, false) => "ta".into(),
            (false, true) => "tb".into(),
            (true, true) => "ta tb".into(),
        },
        Op::Conv { window, groups }
        | Op::ConvGradInput { window, groups, .. }
        | Op::ConvGradWeight { window, groups } => {
            let mut s = window.to_string();
            if *groups != 1 {
                s.push_str(&format!(" groups={groups}"));
            }
            s
        }
        Op::Pool { window, .. } | Op::PoolGrad { window, .. } => window.to_string(),
        Op::Recur(r) => {
            let mut s = format!(
                "steps={} seq={} state={} step_out={}",
                r.steps, r.n_seq, r.n_state, r.n_step_out
            );
            if r.reverse {
                s.push_str(" reverse");
            }
            if let Some(k) = r.truncate {
                s.push_str(&format!(" truncate={k}"));
            }
            s
        }
        Op::Output { index } => format!("{index}"),
        _ => String::new(),
    }
}
