//! Finite-difference checks of the autodiff pass, one small model per group
//! of primitives, run by the reference interpreter in f64.

use nnc::frontend::check_source;
use nnc::gradcheck::{self, Options};
use nnc::syntax::FsLoader;

/// Central differences in f64 with eps 1e-6 agree with exact gradients to
/// about 1e-8 relative on smooth functions; 1e-5 leaves room for curvature
/// without hiding a wrong rule (those are off by O(1)).
const TOL: f64 = 1e-5;

fn check(src: &str) {
    let checked = check_source("test.nn", src, &FsLoader, &Default::default());
    if checked.has_errors() {
        panic!("{}", checked.report().render(false));
    }
    let model = &checked.models[0];
    let opts = Options {
        batch: 3,
        seed: 11,
        tolerance: TOL,
        ..Default::default()
    };
    let report = gradcheck::check(model, &opts).unwrap_or_else(|e| panic!("{e}"));
    let bad: Vec<String> = report
        .iter()
        .filter(|r| r.worst.is_nan() || r.worst > TOL)
        .map(|r| {
            format!(
                "{}: worst {:.3e} (analytic {}, numeric {})",
                r.name, r.worst, r.analytic, r.numeric
            )
        })
        .collect();
    assert!(bad.is_empty(), "gradient mismatches:\n{}", bad.join("\n"));
    assert!(report.iter().all(|r| r.checks > 0));
}

#[test]
fn dense_relu_cross_entropy() {
    check(
        "model m { input x: [B, 5]  labels y: [B] classes 4\n logits = x |> dense(7) |> relu |> dense(4)\n loss = cross_entropy(logits, y) }",
    );
}

#[test]
fn activations() {
    check(
        "model m { input x: [B, 6]  labels y: [B, 3]\n \
         h = x |> dense(8) |> leaky_relu(0.1) |> dense(8) |> elu |> dense(8) |> gelu |> dense(8) |> silu\n \
         h2 = h |> dense(8) |> softplus |> dense(8) |> tanh |> dense(8) |> prelu |> dense(8) |> gelu(approximate: \"tanh\")\n \
         p = h2 |> dense(3) |> sigmoid\n loss = binary_cross_entropy(p, y) }",
    );
}

#[test]
fn conv_pool_batchnorm() {
    check(
        "model m { input x: [B, 2, 9, 9]  labels y: [B] classes 3\n \
         h = x |> conv2d(4, kernel: 3, pad: 1) |> batchnorm |> relu |> maxpool(2, ceil: true)\n \
         h2 = h |> conv2d(6, kernel: 3, stride: 2, dilation: 1, pad: 1, groups: 2) |> avgpool(2, stride: 1, pad: 1)\n \
         logits = h2 |> flatten |> dense(3)\n loss = cross_entropy(logits, y) }",
    );
}

#[test]
fn conv1d_dilated_and_global_pools() {
    check(
        "model m { input x: [B, 3, 12]  labels y: [B, 4]\n \
         h = x |> conv1d(4, kernel: 3, dilation: 2, pad: 2) |> tanh |> conv1d(4, kernel: 2, stride: 2)\n \
         a = h |> global_avgpool\n b = h |> global_maxpool\n \
         loss = mse(a + b, y) }",
    );
}

#[test]
fn tensor_functions() {
    check(
        "model m { input x: [B, 4, 6]  labels y: [B, 4]\n \
         a, b = split(x, 2)\n c = concat(b, a, axis: 2) |> transpose\n \
         d = mean(c, axis: 1) + sum(c, axis: 1) * 0.5 - max(c, axis: 1)\n \
         e = slice(x, 1, 5) |> layernorm |> softmax\n \
         loss = l1(d |> dense(4), y) + mean(e * e) }",
    );
}

#[test]
fn bce_with_logits_and_where() {
    check(
        "model m { input x: [B, 5]  labels y: [B, 2]\n \
         z = x |> dense(2)\n w = where(z > 0, z * 2, z / 3)\n \
         loss = bce_with_logits(w + maximum(z, 0.5) - minimum(z, 0.1), y) }",
    );
}

#[test]
fn elman_rnn_through_time() {
    check(
        "model m { input x: [B, 5, 3]  labels y: [B, 5] classes 3\n \
         param U: [3, 4], W: [4, 4], V: [4, 3], b: [4] init normal(0.1), c: [3] init normal(0.1)\n \
         s = recur t in 0..5 from zeros([B, 4]) { tanh(x[t] @ U + s[t-1] @ W + b) }\n \
         loss = cross_entropy(s @ V + c, y) }",
    );
}

#[test]
fn truncated_bptt_matches_finite_differences_of_detached_model() {
    // With truncate 2 the gradient is not the full one: check it against the
    // recurrence written with an explicit cut instead (two 2-step halves + 1).
    let checked = check_source(
        "t.nn",
        "model m { input x: [B, 4, 3]  labels y: [B, 4] classes 3\n \
         param U: [3, 4], W: [4, 4], V: [4, 3]\n \
         s = recur t in 0..4 from zeros([B, 4]) truncate 2 { tanh(x[t] @ U + s[t-1] @ W) }\n \
         loss = cross_entropy(s @ V, y) }",
        &FsLoader,
        &Default::default(),
    );
    assert!(!checked.has_errors(), "{}", checked.report().render(false));
    let report = gradcheck::check(&checked.models[0], &Options::default()).unwrap();
    // V's gradient does not depend on truncation; W's does.
    let v = report.iter().find(|r| r.name == "V").unwrap();
    assert!(v.worst <= TOL, "{v:?}");
    let w = report.iter().find(|r| r.name == "W").unwrap();
    assert!(
        w.worst > 1e-3,
        "truncation should change W's gradient: {w:?}"
    );
}

#[test]
fn lstm_cell_in_the_language() {
    check(
        "model m { input x: [B, 4, 3]  labels y: [B] classes 2\n \
         param Wx: [3, 16], Wh: [4, 16], b: [16] init normal(0.1)\n \
         h, c = recur t in 0..4 from zeros([B, 4]), zeros([B, 4]) {\n \
           i, f, g, o = split(x[t] @ Wx + h[t-1] @ Wh + b, 4)\n \
           c2 = sigmoid(f) * c[t-1] + sigmoid(i) * tanh(g)\n \
           h2 = sigmoid(o) * tanh(c2)\n \
           h2, c2\n }\n \
         loss = cross_entropy(last(h) |> dense(2), y) }",
    );
}

#[test]
fn dropout_uses_one_mask_forward_and_backward() {
    check(
        "model m { input x: [B, 6]  labels y: [B] classes 3\n logits = x |> dense(10) |> relu |> dropout(0.5) |> dense(3)\n loss = cross_entropy(logits, y) }",
    );
}

#[test]
fn embedding_and_tied_weights() {
    check(
        "model m { input t: [B, 3] classes 7  labels y: [B, 3] classes 7\n \
         enc = dense(5)\n e = t |> embedding(5) |> enc |> tanh |> enc\n \
         loss = cross_entropy(e |> dense(7), y) }",
    );
}

#[test]
fn one_hot_sequence_through_time() {
    // Rewritten to a row gather inside the loop; U's gradient is a
    // scatter-add over all steps after it.
    check(
        "model m { input x: [B, 4] classes 5  labels y: [B, 4] classes 5\n \
         param U: [5, 3], W: [3, 3], V: [3, 5]\n \
         h = one_hot(x)\n \
         s = recur t in 0..4 from zeros([B, 3]) { tanh(h[t] @ U + s[t-1] @ W) }\n \
         loss = cross_entropy(s @ V + h @ U @ V, y) }",
    );
}

#[test]
fn bends_on_both_sides_closer_than_any_step() {
    // At b = 0 the loss bends at b = -1e-9 and at b = 2e-9: every central
    // and one-sided quotient down to eps/100 crosses a bend, and only the
    // check with the decisions frozen at b = 0 sees the slope 3 - 1 = 2.
    check(
        "model m { input x: [B, 2]  labels y: [B, 1]\n \
         param b: [1] init zeros\n \
         loss = mse(x |> dense(1), y) + 3 * sum(relu(b + 1e-9)) + sum(relu(2e-9 - b)) }",
    );
}

#[test]
fn a_bend_near_theta_does_not_hide_a_wrong_gradient() {
    // Truncated BPTT makes b's gradient differ from the full one by ~15 %;
    // a relu bend 3e-7 from θ makes the unfrozen quotients disagree. Their
    // disagreement once raised the error's floor until b passed (2.8e-5).
    let checked = check_source(
        "t.nn",
        "model m { input x: [B, 4, 3]  labels y: [B, 4] classes 3\n \
         param U: [3, 4], W: [4, 4], V: [4, 3]\n param b: [4] init zeros\n \
         s = recur t in 0..4 from zeros([B, 4]) truncate 2 { tanh(x[t] @ U + s[t-1] @ W + b) }\n \
         loss = cross_entropy(s @ V, y) + 10 * sum(relu(b - 3e-7)) }",
        &FsLoader,
        &Default::default(),
    );
    assert!(!checked.has_errors(), "{}", checked.report().render(false));
    let report = gradcheck::check(&checked.models[0], &Options::default()).unwrap();
    let b = report.iter().find(|r| r.name == "b").unwrap();
    assert!(b.worst > 1e-2, "the truncated gradient of b passed: {b:?}");
}
