//! The shape checker: one rule per primitive op.
//!
//! [`infer`] gives the type of an op's result from its inputs' types, or says in
//! words why they do not fit. The lowering calls it as it builds each node (the
//! parameters of a layer are sized from its input), and [`verify`] re-runs it
//! over a finished graph, so every later pass can be checked against the same
//! rules.

use super::graph::{Graph, NodeId};
use super::ops::{Binary, Op, RecurOp, Window};
use super::types::{DType, Dim, Shape, TensorType};

/// Why an op's inputs do not fit, in words, with the input to blame.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError {
    pub message: String,
    /// Label for the op's own span.
    pub label: String,
    /// Inputs whose origin explains the error.
    pub blame: Vec<usize>,
    pub help: Option<String>,
}

impl ShapeError {
    fn new(message: impl Into<String>) -> ShapeError {
        ShapeError {
            message: message.into(),
            label: String::new(),
            blame: Vec::new(),
            help: None,
        }
    }

    fn label(mut self, l: impl Into<String>) -> ShapeError {
        self.label = l.into();
        self
    }

    fn blame(mut self, inputs: &[usize]) -> ShapeError {
        self.blame = inputs.to_vec();
        self
    }

    fn help(mut self, h: impl Into<String>) -> ShapeError {
        self.help = Some(h.into());
        self
    }
}

type Result<T> = std::result::Result<T, ShapeError>;

/// The type of `op` applied to inputs of types `inputs`. `input_ops` are the ops
/// that produced the inputs (a recurrence's results are read through them).
pub fn infer(op: &Op, inputs: &[&TensorType], input_ops: &[&Op]) -> Result<TensorType> {
    let arity = |n: usize| -> Result<()> {
        if inputs.len() == n {
            Ok(())
        } else {
            Err(ShapeError::new(format!(
                "{} takes {n} input(s), not {}",
                op.name(),
                inputs.len()
            )))
        }
    };
    match op {
        Op::Input { .. } | Op::Param(_) | Op::State(_) | Op::Arg(_) => Err(ShapeError::new(
            "a leaf has a declared type and no shape rule",
        )),
        Op::Fill { shape, .. } => {
            arity(0)?;
            Ok(TensorType::f32(shape.clone()))
        }
        Op::DropoutMask { p, shape, .. } => {
            arity(0)?;
            if !(0.0..1.0).contains(p) {
                return Err(ShapeError::new(format!(
                    "dropout probability must be in [0, 1), not {p}"
                )));
            }
            Ok(TensorType::f32(shape.clone()))
        }
        Op::Hyper(_) | Op::StepFlag { .. } => {
            arity(0)?;
            Ok(TensorType::f32(Shape::scalar()))
        }
        Op::SizeOf { axes } => {
            arity(1)?;
            for &a in axes {
                if a >= inputs[0].shape.rank() {
                    return Err(axis_error(a, &inputs[0].shape));
                }
            }
            Ok(TensorType::f32(Shape::scalar()))
        }
        Op::Unary(_) => {
            arity(1)?;
            float(inputs[0], 0)?;
            Ok(inputs[0].clone())
        }
        Op::Binary(b) => {
            arity(2)?;
            float(inputs[0], 0)?;
            float(inputs[1], 1)?;
            let shape = broadcast(&inputs[0].shape, &inputs[1].shape).ok_or_else(|| {
                ShapeError::new(format!(
                    "cannot {} tensors of shapes {} and {}",
                    binary_verb(*b),
                    inputs[0].shape,
                    inputs[1].shape
                ))
                .label(broadcast_conflict(&inputs[0].shape, &inputs[1].shape))
                .blame(&[0, 1])
                .help("shapes must be equal or broadcast (from the right, each pair of dimensions equal or one of them 1); to join tensors of different sizes use `concat`, or project one with `dense` or a 1x1 `conv2d`")
            })?;
            Ok(TensorType::f32(shape))
        }
        Op::Where => {
            arity(3)?;
            for (i, t) in inputs.iter().enumerate() {
                float(t, i)?;
            }
            let s = broadcast(&inputs[0].shape, &inputs[1].shape)
                .and_then(|s| broadcast(&s, &inputs[2].shape))
                .ok_or_else(|| {
                    ShapeError::new(format!(
                        "cannot select between {} and {} with a condition of shape {}",
                        inputs[1].shape, inputs[2].shape, inputs[0].shape
                    ))
                    .label("the shapes do not broadcast")
                    .blame(&[0, 1, 2])
                })?;
            Ok(TensorType::f32(s))
        }
        Op::OneHot { classes } => {
            arity(1)?;
            if inputs[0].dtype != DType::I32 {
                return Err(ShapeError::new(
                    "one_hot takes class indices (declared with `classes N`)",
                )
                .label(format!("this is {} of numbers", inputs[0].shape))
                .blame(&[0]));
            }
            let mut dims = inputs[0].shape.0.clone();
            dims.push(Dim::fixed(*classes));
            Ok(TensorType::f32(Shape(dims)))
        }
        Op::Reshape { shape } => {
            arity(1)?;
            if inputs[0].shape.numel_parts() != shape.numel_parts() {
                return Err(ShapeError::new(format!(
                    "cannot reshape {} into {}: they hold different numbers of elements",
                    inputs[0].shape, shape
                ))
                .blame(&[0]));
            }
            Ok(TensorType {
                dtype: inputs[0].dtype,
                shape: shape.clone(),
            })
        }
        Op::Expand { shape } => {
            arity(1)?;
            match broadcast(&inputs[0].shape, shape) {
                Some(s) if &s == shape => Ok(TensorType {
                    dtype: inputs[0].dtype,
                    shape: shape.clone(),
                }),
                _ => Err(ShapeError::new(format!(
                    "cannot broadcast {} to {}",
                    inputs[0].shape, shape
                ))
                .blame(&[0])),
            }
        }
        Op::Transpose { perm } => {
            arity(1)?;
            let s = &inputs[0].shape;
            let mut seen = vec![false; s.rank()];
            if perm.len() != s.rank() {
                return Err(ShapeError::new(format!(
                    "a transpose of a rank-{} tensor needs {} axes, not {}",
                    s.rank(),
                    s.rank(),
                    perm.len()
                ))
                .blame(&[0]));
            }
            for &p in perm {
                if p >= s.rank() || seen[p] {
                    return Err(ShapeError::new(format!(
                        "{perm:?} is not a permutation of the axes of {s}"
                    )));
                }
                seen[p] = true;
            }
            Ok(TensorType {
                dtype: inputs[0].dtype,
                shape: Shape(perm.iter().map(|&p| s.0[p]).collect()),
            })
        }
        Op::Slice { axis, start, end } => {
            arity(1)?;
            let s = &inputs[0].shape;
            let d = fixed_axis(s, *axis, "slice")?;
            if start >= end || *end > d {
                return Err(ShapeError::new(format!(
                    "the range {start}..{end} is outside axis {axis} of {s}, which has {d} entries"
                ))
                .blame(&[0]));
            }
            let mut dims = s.0.clone();
            dims[*axis] = Dim::fixed(end - start);
            Ok(TensorType {
                dtype: inputs[0].dtype,
                shape: Shape(dims),
            })
        }
        Op::Pad {
            axis,
            before,
            after,
        } => {
            arity(1)?;
            let s = &inputs[0].shape;
            let d = fixed_axis(s, *axis, "pad")?;
            let mut dims = s.0.clone();
            dims[*axis] = Dim::fixed(d + before + after);
            Ok(TensorType {
                dtype: inputs[0].dtype,
                shape: Shape(dims),
            })
        }
        Op::Concat { axis } => concat(*axis, inputs),
        Op::Reduce { axes, keep, .. } => {
            arity(1)?;
            float(inputs[0], 0)?;
            let s = &inputs[0].shape;
            let mut dims = Vec::new();
            for (i, d) in s.0.iter().enumerate() {
                if axes.contains(&i) {
                    if *keep {
                        dims.push(Dim::fixed(1));
                    }
                } else {
                    dims.push(*d);
                }
            }
            if let Some(&a) = axes.iter().find(|&&a| a >= s.rank()) {
                return Err(axis_error(a, s));
            }
            Ok(TensorType::f32(Shape(dims)))
        }
        Op::Softmax { axis } | Op::LogSoftmax { axis } => {
            arity(1)?;
            float(inputs[0], 0)?;
            if *axis >= inputs[0].shape.rank() {
                return Err(axis_error(*axis, &inputs[0].shape));
            }
            Ok(inputs[0].clone())
        }
        Op::Gather => {
            arity(2)?;
            float(inputs[0], 0)?;
            if inputs[1].dtype != DType::I32 {
                return Err(ShapeError::new("gather takes class indices").blame(&[1]));
            }
            if inputs[0].shape.rank() != 2 {
                return Err(ShapeError::new(format!(
                    "gather reads rows of a matrix, not of {}",
                    inputs[0].shape
                ))
                .blame(&[0]));
            }
            let mut dims = inputs[1].shape.0.clone();
            dims.push(inputs[0].shape.0[1]);
            Ok(TensorType::f32(Shape(dims)))
        }
        Op::ScatterAdd { rows } => {
            arity(2)?;
            float(inputs[1], 1)?;
            let (idx, dy) = (&inputs[0].shape, &inputs[1].shape);
            if inputs[0].dtype != DType::I32
                || dy.rank() != idx.rank() + 1
                || dy.0[..idx.rank()] != idx.0[..]
            {
                return Err(ShapeError::new(format!(
                    "scatter_add needs class indices {idx} and rows {idx} with one more axis, not {dy}"
                ))
                .blame(&[0, 1]));
            }
            Ok(TensorType::f32(Shape(vec![
                Dim::fixed(*rows),
                dy.0[idx.rank()],
            ])))
        }
        Op::MatMul { ta, tb } => matmul(*ta, *tb, inputs),
        Op::Conv { window, groups } => {
            arity(2)?;
            conv(window, *groups, inputs[0], inputs[1])
        }
        Op::ConvGradInput {
            window,
            groups,
            spatial,
        } => {
            arity(2)?;
            let (dy, w) = (&inputs[0].shape, &inputs[1].shape);
            let c = w.dim(1).and_then(Dim::known).unwrap_or(0) * groups;
            let mut dims = vec![dy.0.first().copied().unwrap_or(Dim::B), Dim::fixed(c)];
            dims.extend(spatial.iter().map(|&n| Dim::fixed(n)));
            let x = TensorType::f32(Shape(dims));
            let y = conv(window, *groups, &x, inputs[1])?;
            if &y.shape != dy {
                return Err(ShapeError::new(format!(
                    "a convolution gradient of shape {dy} does not fit an input of shape {}",
                    x.shape
                )));
            }
            Ok(x)
        }
        Op::ConvGradWeight { window, groups } => {
            arity(2)?;
            let (x, dy) = (&inputs[0].shape, &inputs[1].shape);
            let o = dy.dim(1).and_then(Dim::known).unwrap_or(0);
            let c = x.dim(1).and_then(Dim::known).unwrap_or(0);
            if *groups == 0 || c % groups != 0 {
                return Err(ShapeError::new("groups must divide the input channels"));
            }
            let mut dims = vec![Dim::fixed(o), Dim::fixed(c / groups)];
            dims.extend(window.kernel.iter().map(|&k| Dim::fixed(k)));
            let w = TensorType::f32(Shape(dims));
            let y = conv(window, *groups, inputs[0], &w)?;
            if &y.shape != dy {
                return Err(ShapeError::new(format!(
                    "a convolution gradient of shape {dy} does not fit an input of shape {x}"
                )));
            }
            Ok(w)
        }
        Op::Pool { window, .. } => {
            arity(1)?;
            pool(window, inputs[0])
        }
        Op::PoolGrad { window, .. } => {
            arity(2)?;
            let y = pool(window, inputs[0])?;
            if y.shape != inputs[1].shape {
                return Err(ShapeError::new(format!(
                    "a pooling gradient of shape {} does not fit an output of shape {}",
                    inputs[1].shape, y.shape
                )));
            }
            Ok(inputs[0].clone())
        }
        Op::Recur(r) => recur(r, inputs),
        Op::Output { index } => {
            arity(1)?;
            let Some(Op::Recur(r)) = input_ops.first() else {
                return Err(ShapeError::new("output reads the result of a recurrence"));
            };
            recur_result(r, *index)
        }
    }
}

fn binary_verb(b: Binary) -> &'static str {
    match b {
        Binary::Add => "add",
        Binary::Sub => "subtract",
        Binary::Mul => "multiply",
        Binary::Div => "divide",
        _ => "compare",
    }
}

fn float(t: &TensorType, i: usize) -> Result<()> {
    if t.dtype == DType::F32 {
        Ok(())
    } else {
        Err(ShapeError::new("class indices cannot be used as numbers")
            .label("needs numbers, not class indices")
            .blame(&[i])
            .help("turn them into vectors with `one_hot(x)` or `embedding(dim)`"))
    }
}

fn axis_error(axis: usize, s: &Shape) -> ShapeError {
    ShapeError::new(format!(
        "axis {axis} does not exist in a tensor of shape {s} (rank {})",
        s.rank()
    ))
    .blame(&[0])
}

fn fixed_axis(s: &Shape, axis: usize, what: &str) -> Result<usize> {
    match s.0.get(axis) {
        None => Err(axis_error(axis, s)),
        Some(d) => d.known().ok_or_else(|| {
            ShapeError::new(format!("cannot {what} along the batch axis of {s}")).blame(&[0])
        }),
    }
}

/// NumPy broadcasting: align from the right; each pair equal, or one of them 1.
pub fn broadcast(a: &Shape, b: &Shape) -> Option<Shape> {
    let r = a.rank().max(b.rank());
    let mut dims = vec![Dim::fixed(1); r];
    for (i, out) in dims.iter_mut().enumerate() {
        let da = (i + a.rank()).checked_sub(r).map(|j| a.0[j]);
        let db = (i + b.rank()).checked_sub(r).map(|j| b.0[j]);
        *out = match (da, db) {
            (Some(x), None) | (None, Some(x)) => x,
            (Some(x), Some(y)) if x == y => x,
            (Some(x), Some(y)) if y == Dim::fixed(1) => x,
            (Some(x), Some(y)) if x == Dim::fixed(1) => y,
            _ => return None,
        };
    }
    Some(Shape(dims))
}

/// Where two shapes fail to broadcast, in words: "their last dimensions
/// differ (256 vs 128)".
fn broadcast_conflict(a: &Shape, b: &Shape) -> String {
    let r = a.rank().min(b.rank());
    for k in 1..=r {
        let (x, y) = (a.0[a.rank() - k], b.0[b.rank() - k]);
        if x != y && x != Dim::fixed(1) && y != Dim::fixed(1) {
            let which = match k {
                1 => "last dimensions".to_string(),
                2 => "second-to-last dimensions".to_string(),
                _ => format!("dimensions {} from the right", k),
            };
            return format!("their {which} differ ({x} vs {y})");
        }
    }
    format!("{a} and {b} do not broadcast")
}

fn concat(axis: usize, inputs: &[&TensorType]) -> Result<TensorType> {
    let Some(first) = inputs.first() else {
        return Err(ShapeError::new("concat needs at least one tensor"));
    };
    let r = first.shape.rank();
    if axis >= r {
        return Err(axis_error(axis, &first.shape));
    }
    let mut total = first.shape.0[axis];
    for (i, t) in inputs.iter().enumerate().skip(1) {
        let same_rest =
            t.shape.rank() == r && (0..r).all(|k| k == axis || t.shape.0[k] == first.shape.0[k]);
        if !same_rest || t.dtype != first.dtype {
            return Err(ShapeError::new(format!(
                "cannot concatenate {} and {} along axis {axis}: every other axis must match",
                first.shape, t.shape
            ))
            .label("shapes differ off the concatenation axis")
            .blame(&[0, i]));
        }
        let d = t.shape.0[axis];
        if d.batch != total.batch {
            return Err(ShapeError::new("cannot concatenate along the batch axis").blame(&[0, i]));
        }
        total.n += d.n;
    }
    let mut dims = first.shape.0.clone();
    dims[axis] = total;
    Ok(TensorType {
        dtype: first.dtype,
        shape: Shape(dims),
    })
}

fn matmul(ta: bool, tb: bool, inputs: &[&TensorType]) -> Result<TensorType> {
    if inputs.len() != 2 {
        return Err(ShapeError::new("matmul takes two inputs"));
    }
    float(inputs[0], 0)?;
    float(inputs[1], 1)?;
    let (a, b) = (&inputs[0].shape, &inputs[1].shape);
    if a.rank() < 2 || b.rank() < 2 {
        let (bad, i) = if a.rank() < 2 { (a, 0) } else { (b, 1) };
        return Err(ShapeError::new(format!(
            "matrix product needs tensors of rank 2 or more, but one operand is {bad}"
        ))
        .label(format!("rank {}", bad.rank()))
        .blame(&[i]));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, ka) = if ta {
        (a.0[ra - 1], a.0[ra - 2])
    } else {
        (a.0[ra - 2], a.0[ra - 1])
    };
    let (kb, n) = if tb {
        (b.0[rb - 1], b.0[rb - 2])
    } else {
        (b.0[rb - 2], b.0[rb - 1])
    };
    if ka != kb {
        let show = |s: &Shape, t: bool| {
            if t { format!("{s}ᵀ") } else { s.to_string() }
        };
        return Err(ShapeError::new(format!(
            "cannot multiply {} by {}: the inner dimensions {ka} and {kb} differ",
            show(a, ta),
            show(b, tb)
        ))
        .label(format!("{ka} ≠ {kb}"))
        .blame(&[0, 1]));
    }
    let lead = broadcast(
        &Shape(a.0[..ra - 2].to_vec()),
        &Shape(b.0[..rb - 2].to_vec()),
    )
    .ok_or_else(|| {
        ShapeError::new(format!(
            "cannot multiply {a} by {b}: their leading dimensions do not broadcast"
        ))
        .blame(&[0, 1])
    })?;
    let mut dims = lead.0;
    dims.push(m);
    dims.push(n);
    Ok(TensorType::f32(Shape(dims)))
}

/// Spatial output sizes of a window over `x [N, C, *S]`.
fn windowed(window: &Window, x: &Shape, what: &str) -> Result<Vec<Dim>> {
    let s = window.kernel.len();
    if x.rank() != s + 2 {
        let expected = match s {
            1 => "[B, channels, length]",
            2 => "[B, channels, height, width]",
            _ => "[B, channels, ...]",
        };
        return Err(ShapeError::new(format!(
            "{what} expects a rank-{} input {expected}, but got {x}",
            s + 2
        ))
        .label(format!("rank {}", x.rank()))
        .blame(&[0]));
    }
    let mut out = Vec::with_capacity(s);
    for i in 0..s {
        let Some(n) = x.0[2 + i].known() else {
            return Err(ShapeError::new(format!(
                "{what} cannot slide over the batch axis of {x}"
            )));
        };
        if window.stride[i] == 0 || window.kernel[i] == 0 || window.dilation[i] == 0 {
            return Err(ShapeError::new(format!(
                "{what}: kernel, stride and dilation must be at least 1"
            )));
        }
        match window.out_len(i, n) {
            Some(o) if o > 0 => out.push(Dim::fixed(o)),
            _ => {
                let span = window.dilation[i] * (window.kernel[i] - 1) + 1;
                return Err(ShapeError::new(format!(
                    "the {what} window ({span} wide) is larger than its input ({n} + 2×{} padding) along spatial axis {i} of {x}",
                    window.pad[i]
                ))
                .label("kernel larger than its input")
                .blame(&[0])
                .help("use a smaller kernel, add padding, or remove a pooling step before it"));
            }
        }
    }
    Ok(out)
}

fn conv(window: &Window, groups: usize, x: &TensorType, w: &TensorType) -> Result<TensorType> {
    float(x, 0)?;
    float(w, 1)?;
    let spatial = windowed(window, &x.shape, "convolution")?;
    let (xs, ws) = (&x.shape, &w.shape);
    let Some(c) = xs.0[1].known() else {
        return Err(ShapeError::new(format!(
            "the channel axis of {xs} cannot be the batch"
        )));
    };
    if groups == 0 || c % groups != 0 {
        return Err(ShapeError::new(format!(
            "{groups} groups do not divide the {c} input channels of {xs}"
        ))
        .label(format!("{c} channels"))
        .blame(&[0]));
    }
    let o = ws.0.first().and_then(|d| d.known()).unwrap_or(0);
    let expected_w = {
        let mut d = vec![Dim::fixed(o), Dim::fixed(c / groups)];
        d.extend(window.kernel.iter().map(|&k| Dim::fixed(k)));
        Shape(d)
    };
    if ws != &expected_w {
        return Err(ShapeError::new(format!(
            "a convolution of {xs} with {groups} group(s) needs a weight of shape {expected_w}, but this one is {ws}"
        ))
        .label("weight does not fit the input")
        .blame(&[0, 1]));
    }
    if o % groups != 0 {
        return Err(ShapeError::new(format!(
            "{groups} groups do not divide the {o} output channels"
        )));
    }
    let mut dims = vec![xs.0[0], Dim::fixed(o)];
    dims.extend(spatial);
    Ok(TensorType::f32(Shape(dims)))
}

fn pool(window: &Window, x: &TensorType) -> Result<TensorType> {
    float(x, 0)?;
    let spatial = windowed(window, &x.shape, "pooling")?;
    for i in 0..window.kernel.len() {
        if window.pad[i] * 2 > window.kernel[i] {
            return Err(ShapeError::new(format!(
                "pooling padding ({}) must be at most half the window ({})",
                window.pad[i], window.kernel[i]
            )));
        }
    }
    let mut dims = x.shape.0[..2].to_vec();
    dims.extend(spatial);
    Ok(TensorType::f32(Shape(dims)))
}

/// Inserts the time axis (axis 1) of length `steps`.
pub fn with_time(t: &TensorType, steps: usize) -> TensorType {
    let mut dims = t.shape.0.clone();
    dims.insert(1.min(dims.len()), Dim::fixed(steps));
    TensorType {
        dtype: t.dtype,
        shape: Shape(dims),
    }
}

/// Removes the time axis (axis 1).
pub fn without_time(t: &TensorType) -> Option<TensorType> {
    if t.shape.rank() < 2 {
        return None;
    }
    let mut dims = t.shape.0.clone();
    dims.remove(1);
    Some(TensorType {
        dtype: t.dtype,
        shape: Shape(dims),
    })
}

fn recur_result(r: &RecurOp, index: usize) -> Result<TensorType> {
    let body_ty = |i: usize| -> Result<TensorType> {
        r.body
            .outputs
            .get(i)
            .and_then(|&o| r.body.ty(o).cloned())
            .ok_or_else(|| ShapeError::new("the recurrence body has no such result"))
    };
    if index < r.n_step_out {
        Ok(with_time(&body_ty(r.n_state + index)?, r.steps))
    } else if index < r.n_step_out + r.n_state {
        body_ty(index - r.n_step_out)
    } else {
        Err(ShapeError::new(format!(
            "a recurrence has no result {index}"
        )))
    }
}

fn recur(r: &RecurOp, inputs: &[&TensorType]) -> Result<TensorType> {
    if inputs.len() < r.n_seq + r.n_state || r.body.outputs.len() != r.n_state + r.n_step_out {
        return Err(ShapeError::new("malformed recurrence"));
    }
    for (i, seq) in inputs[..r.n_seq].iter().enumerate() {
        if seq.shape.dim(1) != Some(Dim::fixed(r.steps)) {
            return Err(ShapeError::new(format!(
                "a sequence of shape {} does not have {} time steps on axis 1",
                seq.shape, r.steps
            ))
            .blame(&[i]));
        }
    }
    for s in 0..r.n_state {
        let init = inputs[r.n_seq + s];
        let next = r.body.ty(r.body.outputs[s]);
        if next.is_some_and(|n| n != init) {
            let next = next.map(|t| t.shape.to_string()).unwrap_or_default();
            return Err(ShapeError::new(format!(
                "the recurrence state starts as {} but one step turns it into {next}",
                init.shape
            ))
            .label("the state must keep its shape from step to step")
            .blame(&[r.n_seq + s]));
        }
    }
    Ok(TensorType::f32(Shape::scalar()))
}

/// Re-checks every node of a graph against the rules; returns the first node
/// whose recorded type disagrees with them. Run between passes in tests and
/// debug builds.
pub fn verify(graph: &Graph) -> std::result::Result<(), (NodeId, String)> {
    for id in graph.ids() {
        let node = graph.node(id);
        if let Op::Recur(r) = &node.op {
            verify(&r.body).map_err(|(n, e)| (id, format!("in recurrence body at {n:?}: {e}")))?;
        }
        let Some(ty) = &node.ty else { continue };
        if matches!(
            node.op,
            Op::Input { .. } | Op::Param(_) | Op::State(_) | Op::Arg(_)
        ) {
            continue;
        }
        let mut tys = Vec::new();
        let mut ops = Vec::new();
        for &i in &node.inputs {
            if i >= id {
                return Err((id, format!("input {i:?} is not defined before use")));
            }
            match graph.ty(i) {
                Some(t) => tys.push(t),
                None => return Err((id, format!("input {i:?} has no type"))),
            }
            ops.push(&graph.node(i).op);
        }
        match infer(&node.op, &tys, &ops) {
            Ok(t) if &t == ty => {}
            Ok(t) => {
                return Err((id, format!("recorded type {ty} but the rule gives {t}")));
            }
            Err(e) => return Err((id, e.message)),
        }
    }
    for o in &graph.outputs {
        if o.index() >= graph.len() {
            return Err((*o, "an output refers to no node".into()));
        }
    }
    Ok(())
}
