//! Every primitive, forward and backward, compiled against the reference
//! interpreter on randomised shapes: one training step of a small model
//! built around the op gives the same loss, gradients and updated weights.
//!
//! Tolerance: both sides compute in f32; they differ by summation order (the
//! products are blocked differently) and by the polynomial elementary
//! functions (≤ 5 ulp, tests/jit_math.rs). For sums of at most a few hundred
//! terms that is below 1e-5 relative; 1e-4 leaves room, while a wrong rule
//! or a wrong index is off by O(1).

use ndarray::ArrayD;
use nnc::frontend::check_source;
use nnc::gradcheck::{TypedInputs, random_inputs};
use nnc::runtime::jit_trainer::JitTrainer;
use nnc::runtime::reference_trainer::{Recipe, ReferenceTrainer};
use nnc::syntax::FsLoader;
use proptest::prelude::*;

const TOL: f64 = 1e-4;

fn rel(a: &[f32], b: &[f32]) -> f64 {
    rel_above(a, b, 0.0)
}

/// The largest difference relative to b's largest entry, or to `floor` if
/// that is larger.
fn rel_above(a: &[f32], b: &[f32], floor: f64) -> f64 {
    let scale = b
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs() as f64))
        .max(floor)
        .max(1e-20);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
        / scale
}

/// A gradient that cancels (a bias's Σ dy over positions of both signs) has
/// an f32 rounding error of the size of its terms, not of its value: one
/// step of a 1×1 then 3×3 convolution gave conv1.weight 0.223 and
/// conv1.bias −6.32e-5 with the interpreter, −6.321e-5 compiled (1.8e-4
/// relative, 5e-8 of the weight's). Gradients are judged against at least
/// this fraction of the model's largest gradient entry.
const CANCELLED: f64 = 1e-3;

/// One SGD step of `src` (a model with a loss) compiled and interpreted.
fn agree(src: &str, batch: usize) -> Result<(), TestCaseError> {
    agree_on(src, batch, 1)
}

/// [`agree`] with the compiled step on `threads` threads.
fn agree_on(src: &str, batch: usize, threads: usize) -> Result<(), TestCaseError> {
    let c = check_source("op.nn", src, &FsLoader, &Default::default());
    if c.has_errors() {
        return Err(TestCaseError::fail(format!(
            "{}\n{src}",
            c.report().render(false)
        )));
    }
    let m = &c.models[0];
    let recipe = Recipe {
        optimizer: nnc::ir::train::Optimizer {
            lr: 0.1,
            ..Default::default()
        },
        schedule: vec![],
        clip: None,
        total_steps: 1,
        seed: 1,
    };
    let init: Vec<ArrayD<f32>> = nnc::runtime::params::init(m, 7);
    let mut r = ReferenceTrainer::<f32>::new(m, recipe.clone(), batch, Some(init.clone()))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut j = JitTrainer::new(m, recipe, batch, Some(init), threads, true)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let xs = random_inputs(m, batch, 9);
    let x32: Vec<ArrayD<f32>> = xs.iter().map(|a| a.mapv(|v| v as f32)).collect();
    let typed = TypedInputs::new(m, &xs);
    let feeds = typed.feeds();
    let out = r
        .step(&x32)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let loss = j
        .step(&feeds)
        .map_err(|e| TestCaseError::fail(e.to_string()))? as f64;
    prop_assert!(
        (loss - out.loss).abs() <= TOL * out.loss.abs().max(1.0),
        "loss {loss} vs {}\n{src}",
        out.loss
    );
    let largest = out
        .grads
        .iter()
        .flatten()
        .flat_map(|g| g.iter())
        .fold(0.0f64, |m, v| m.max(v.abs() as f64));
    for (i, p) in m.params.iter().enumerate() {
        if let (Some(gj), Some(gr)) = (j.grad(i), out.grads[i].as_ref()) {
            let gr: Vec<f32> = gr.iter().copied().collect();
            let e = rel_above(&gj, &gr, CANCELLED * largest);
            prop_assert!(e <= TOL, "gradient of {}: error {e:.2e}\n{src}", p.name);
        }
        let pj: Vec<f32> = j.param(i).iter().copied().collect();
        let pr: Vec<f32> = r.params[i].iter().copied().collect();
        prop_assert!(rel(&pj, &pr) <= TOL, "updated {}\n{src}", p.name);
    }
    Ok(())
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    /// conv2d with any kernel, stride, padding, dilation and groups, forward
    /// and both gradients (a first convolution makes the input gradient needed).
    #[test]
    fn conv2d(n in 1usize..3, cg in 1usize..4, og in 1usize..4, groups in 1usize..3, h in 5usize..10, w in 5usize..10,
              k in 1usize..4, s in 1usize..3, p in 0usize..2, d in 1usize..3) {
        let c = cg * groups;
        prop_assume!(d * (k - 1) < h + 2 * p && d * (k - 1) < w + 2 * p);
        let src = format!("model m {{ input x: [B, {c}, {h}, {w}]  labels y: [B] classes 2\n \
            h1 = x |> conv2d({c}, kernel: 1)\n h2 = h1 |> conv2d({o}, kernel: {k}, stride: {s}, pad: {p}, dilation: {d}, groups: {groups})\n \
            loss = mean(h2 * h2) + cross_entropy(h2 |> global_avgpool |> dense(2), y) }}", o = og * groups);
        agree(&src, n)?;
    }

    /// Same-size 3×3 convolutions on maps large enough for the shifted
    /// products (17 outputs and more) or the direct kernels (up to 16).
    #[test]
    fn conv2d_large_maps(c in 8usize..12, o in 1usize..20, h in 23usize..27) {
        let src = format!("model m {{ input x: [B, {c}, {h}, {h}]  labels y: [B] classes 2\n \
            h1 = x |> conv2d({c}, kernel: 1) |> conv2d({o}, kernel: 3, pad: 1) |> relu |> conv2d(2, kernel: 5, pad: 2)\n \
            loss = mean(h1 * h1) + cross_entropy(h1 |> global_avgpool, y) }}");
        // (The squares keep the last bias's gradient away from zero: with
        // cross-entropy alone it is Σ (p − y) over two samples and two
        // classes, which can cancel to where f32 summation order alone gives
        // 2e-4 relative, whichever convolution method runs.)
        agree(&src, 2)?;
    }

    /// Stride-1 convolutions with up to 17 output channels (the direct
    /// kernels: vectorised over positions up to 8 channels, over channels
    /// up to 16), any kernel and padding, on 1 or 2 threads (per-thread
    /// weight-gradient partials).
    #[test]
    fn conv2d_few_channels(n in 1usize..4, c in 1usize..18, o in 1usize..18, h in 5usize..17, w in 5usize..17,
                           k in 1usize..6, p in 0usize..3, threads in 1usize..3) {
        prop_assume!(k <= h + 2 * p && k <= w + 2 * p);
        let src = format!("model m {{ input x: [B, {c}, {h}, {w}]  labels y: [B] classes 2\n \
            h1 = x |> conv2d({c}, kernel: 1)\n h2 = h1 |> conv2d({o}, kernel: {k}, pad: {p})\n \
            loss = mean(h2 * h2) + cross_entropy(h2 |> global_avgpool |> dense(2), y) }}");
        agree_on(&src, n, threads)?;
    }

    /// Strided convolutions on rows long enough for the whole-vector
    /// stride-2 gather and scatter of im2col (8 outputs and more).
    #[test]
    fn conv2d_strided_wide(c in 1usize..5, o in 1usize..5, h in 3usize..9, w in 17usize..45,
                           k in 1usize..4, s in 2usize..4, p in 0usize..2, threads in 1usize..3) {
        prop_assume!(k <= h + 2 * p && k <= w + 2 * p);
        let src = format!("model m {{ input x: [B, {c}, {h}, {w}]  labels y: [B] classes 2\n \
            h1 = x |> conv2d({c}, kernel: 1)\n h2 = h1 |> conv2d({o}, kernel: {k}, stride: {s}, pad: {p})\n \
            loss = mean(h2 * h2) + cross_entropy(h2 |> global_avgpool |> dense(2), y) }}");
        agree_on(&src, 2, threads)?;
    }

    /// 3×3 stride-1 convolutions with at least 8 channels on each side (the
    /// Winograd path), any padding up to 2 and odd or even maps, down to a
    /// single tile and up to maps that a block holds only part of, on 1 or
    /// 2 threads.
    #[test]
    fn conv2d_winograd(n in 1usize..4, c in 8usize..20, o in 8usize..20, h in 1usize..14, w in prop_oneof![1usize..14, 40usize..60],
                       p in 0usize..3, threads in 1usize..3) {
        prop_assume!(3 <= h + 2 * p && 3 <= w + 2 * p);
        let src = format!("model m {{ input x: [B, {c}, {h}, {w}]  labels y: [B] classes 2\n \
            h1 = x |> conv2d({c}, kernel: 1)\n h2 = h1 |> conv2d({o}, kernel: 3, pad: {p})\n \
            loss = mean(h2 * h2) + cross_entropy(h2 |> global_avgpool |> dense(2), y) }}");
        agree_on(&src, n, threads)?;
    }

    #[test]
    fn conv1d(c in 1usize..4, o in 1usize..4, l in 4usize..12, k in 1usize..4, s in 1usize..3, p in 0usize..2) {
        prop_assume!(k <= l + 2 * p);
        let src = format!("model m {{ input x: [B, {c}, {l}]  labels y: [B, {o}]\n \
            h = x |> conv1d({c}, kernel: 1) |> conv1d({o}, kernel: {k}, stride: {s}, pad: {p})\n \
            loss = mse(h |> global_avgpool, y) }}");
        agree(&src, 2)?;
    }

    /// Max and average pooling with padding, strides and ceil mode.
    #[test]
    fn pooling(max in any::<bool>(), k in 1usize..4, s in 1usize..3, p in 0usize..2, ceil in any::<bool>(), h in 4usize..9) {
        prop_assume!(2 * p <= k);
        let kind = if max { "maxpool" } else { "avgpool" };
        let src = format!("model m {{ input x: [B, 2, {h}, {h}]  labels y: [B] classes 2\n \
            h1 = x |> conv2d(3, kernel: 1) |> {kind}({k}, stride: {s}, pad: {p}, ceil: {ceil})\n \
            loss = cross_entropy(h1 |> flatten |> dense(2), y) }}");
        agree(&src, 2)?;
    }

    /// Batched products with transposes and broadcast leading axes.
    #[test]
    fn matmul(t in 1usize..4, k in 1usize..6, n in 1usize..6, ta in any::<bool>()) {
        let w = if ta { "W.T" } else { "W" };
        let shape = if ta { format!("[{n}, {k}]") } else { format!("[{k}, {n}]") };
        let src = format!("model m {{ input x: [B, {t}, {k}]  labels y: [B, {t}, {n}]\n param W: {shape}\n \
            h = (x |> dense({k})) @ {w}\n loss = mse(h, y) }}");
        agree(&src, 3)?;
    }

    /// Elementwise ops with broadcasting, reductions and softmax on any axis.
    #[test]
    fn elementwise_and_reductions(a in 1usize..5, b in 1usize..5, axis in 0usize..3, op in 0usize..6) {
        let f = ["x1 + x2", "x1 - x2", "x1 * x2", "x1 / (x2 * x2 + 1)", "maximum(x1, x2)", "where(x1 > x2, x1, x2 * 0.5)"][op];
        let src = format!("model m {{ input x: [B, {a}, {b}]  labels y: [B, {a}, {b}]\n \
            x1 = x |> dense({b})\n x2 = mean(x, axis: 1, keep: true) |> dense({b})\n e = {f}\n \
            r = sum(e, axis: {axis}, keep: true) + max(e, axis: {axis}, keep: true)\n \
            s = softmax(e, axis: {axis}) + log_softmax(e * 0.5, axis: {axis})\n \
            loss = mse(e + r * s, y) }}");
        agree(&src, 2)?;
    }

    /// Layout ops: concat, split, slice, transpose, reshape.
    #[test]
    fn layout(a in 1usize..4, b in 2usize..5, parts in 2usize..3) {
        let w = b * parts;
        let src = format!("model m {{ input x: [B, {a}, {w}]  labels y: [B, {w}, {a}]\n \
            h = x |> dense({w})\n first = split(h, {parts})\n \
            c = concat(h, slice(h, 0, {b}), axis: 2) |> transpose\n \
            r = reshape(reshape(c, [{n}]) |> dense({n}), [{wb}, {a}])\n \
            loss = mse(slice(r, 0, {w}, axis: 1), y) + mean(c) + mean(first) }}",
            wb = w + b, n = (w + b) * a);
        let src = src.replace("first = split", "first, _rest = split");
        agree(&src, 2)?;
    }
}

/// `one_hot(x) @ U` becomes a row gather (its gradient a scatter-add), at
/// the top level and inside a recurrence; the compiled kernels agree with
/// the reference and the rewrite really happened.
#[test]
fn one_hot_products_gather_rows() {
    for (v, h, t) in [(3, 4, 2), (7, 5, 3), (11, 9, 4)] {
        let src = format!(
            "model m {{ input x: [B, {t}] classes {v}  labels y: [B, {t}] classes {v}\n \
             param U: [{v}, {h}], W: [{h}, {h}]\n \
             oh = one_hot(x)\n \
             s = recur t in 0..{t} from zeros([B, {h}]) {{ tanh(oh[t] @ U + s[t-1] @ W) }}\n \
             e = x |> embedding({h})\n \
             loss = cross_entropy((s + e + oh @ U) |> dense({v}), y) }}"
        );
        let c = check_source("op.nn", &src, &FsLoader, &Default::default());
        assert!(!c.has_errors(), "{}", c.report().render(false));
        let gathers = |g: &nnc::ir::Graph| {
            g.nodes
                .iter()
                .filter(|n| n.op == nnc::ir::Op::Gather)
                .count()
        };
        let top = gathers(&c.models[0].graph);
        let inner: usize = c.models[0]
            .graph
            .nodes
            .iter()
            .filter_map(|n| match &n.op {
                nnc::ir::Op::Recur(r) => Some(gathers(&r.body)),
                _ => None,
            })
            .sum();
        assert_eq!((top, inner), (2, 1), "{src}");
        agree(&src, 3).unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A dense layer's [out, in] weight copied row-major before its product
/// (the rule applies from 128 rows and 2^16 weights on): same step as the
/// reference.
#[test]
fn transposed_weights_copied_before_the_product() {
    let src = "model m { input x: [B, 320]  labels y: [B] classes 5\n \
               loss = cross_entropy(x |> dense(272) |> relu |> dense(5), y) }";
    agree(src, 130).unwrap_or_else(|e| panic!("{e}"));
    let c = check_source("op.nn", src, &FsLoader, &Default::default());
    let planned =
        nnc::runtime::programs::training(&c.models[0], 130).unwrap_or_else(|e| panic!("{e}"));
    let kernels = nnc::schedule::listing(&planned.program);
    assert!(kernels.contains("copy [320, 272]"), "{kernels}");
}
