//! The compiled training step against the reference interpreter: the same
//! model, weights and batches give the same losses and parameters.

use ndarray::ArrayD;
use nnc::frontend::check_source;
use nnc::gradcheck::{TypedInputs, random_inputs};
use nnc::ir::model::Model;
use nnc::runtime::executable::InputData;
use nnc::runtime::jit_trainer::JitTrainer;
use nnc::runtime::reference_trainer::{Recipe, ReferenceTrainer};
use nnc::syntax::FsLoader;

fn model(src: &str) -> Model {
    let c = check_source("t.nn", src, &FsLoader, &Default::default());
    assert!(!c.has_errors(), "{}", c.report().render(false));
    c.models.into_iter().next().unwrap()
}

fn recipe(model: &Model) -> Recipe {
    let t = model.train.clone().unwrap_or_else(|| {
        nnc::ir::train::TrainConfig::new(model.name.clone(), Default::default())
    });
    Recipe {
        optimizer: t.optimizer,
        schedule: t.schedule,
        clip: t.clip,
        total_steps: 20,
        seed: 3,
    }
}

/// Normwise relative error: max |a − b| / max |b|.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let scale = b
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs() as f64))
        .max(1e-30);
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
        / scale
}

/// Runs `steps` steps of JIT and reference on the same random batches.
fn compare(src: &str, batch: usize, steps: usize, tol: f64) {
    let m = model(src);
    let r = recipe(&m);
    compare_model(&m, r, batch, steps, tol, 1);
}

fn compare_model(m: &Model, r: Recipe, batch: usize, steps: usize, tol: f64, threads: usize) {
    let m = m.clone();
    let init: Vec<ArrayD<f32>> = nnc::runtime::params::init(&m, 5);
    let mut reference =
        ReferenceTrainer::<f32>::new(&m, r.clone(), batch, Some(init.clone())).unwrap();
    let mut jit =
        JitTrainer::new(&m, r, batch, Some(init), threads, false).unwrap_or_else(|e| panic!("{e}"));
    for s in 0..steps {
        let xs64 = random_inputs(&m, batch, 100 + s as u64);
        let xs32: Vec<ArrayD<f32>> = xs64.iter().map(|a| a.mapv(|v| v as f32)).collect();
        let typed = TypedInputs::new(&m, &xs64);
        let feeds = typed.feeds();
        let lr = reference.step(&xs32).unwrap().loss;
        let lj = jit.step(&feeds).unwrap() as f64;
        assert!(
            (lr - lj).abs() <= tol * lr.abs().max(1.0),
            "step {s}: loss reference {lr} jit {lj}"
        );
    }
    for (i, p) in m.params.iter().enumerate() {
        let a: Vec<f32> = jit.param(i).iter().copied().collect();
        let b: Vec<f32> = reference.params[i].iter().copied().collect();
        let e = rel(&a, &b);
        assert!(e <= tol, "{}: relative error {e:.3e}", p.name);
    }
}

#[test]
fn mlp_with_adam() {
    compare(
        "model m { input x: [B, 12]  labels y: [B] classes 5\n logits = x |> dense(16) |> relu |> dense(5)\n loss = cross_entropy(logits, y) }\n train m { optimizer adam(lr: 0.01) }",
        8,
        5,
        1e-4,
    );
}

/// Adam and AdamW run as kernels of their own (8 lanes, split across
/// threads from 2^14 elements): with each form of weight decay, a weight of
/// 131×129 elements (split, with a tail of 3 beyond whole vectors) and
/// biases shorter than a vector, at one and two threads. The kernel rounds
/// like the interpreter (src/jit/adam.rs checks its vectors bit for bit
/// against that formula), so only the gradients' summation order differs;
/// Adam turns those 1e-7 differences into up to 1.1e-5 here (as much with
/// the generated loop), hence the tolerance of the other Adam tests.
#[test]
fn fused_adam_updates_match_the_reference() {
    for opt in [
        "adam(lr: 0.01)",
        "adam(lr: 0.01, weight_decay: 0.1)",
        "adamw(lr: 0.01, weight_decay: 0.1)",
        "adamw(lr: 0.01, weight_decay: 0.0, beta1: 0.8, beta2: 0.99, eps: 1e-6)",
    ] {
        let m = model(&format!(
            "model m {{ input x: [B, 129]  labels y: [B] classes 5\n \
             logits = x |> dense(131) |> tanh |> dense(5)\n \
             loss = cross_entropy(logits, y) }}\n train m {{ optimizer {opt} }}"
        ));
        for threads in [1, 2] {
            compare_model(&m, recipe(&m), 6, 4, 1e-4, threads);
        }
    }
}

/// Gradients that are sums (a weight used twice, once transposed) and
/// scaled by norm clipping, into Adam kernels, at one and two threads.
#[test]
fn fused_adam_with_tied_weights_and_clipping() {
    let m = model(
        "model m { input x: [B, 40]  labels y: [B] classes 4\n \
         param W: [40, 24]  param b: [24] init zeros, c: [40] init zeros\n \
         code = tanh(x @ W + b)\n recon = tanh(code @ W.T + c)\n \
         enc = dense(12)\n a = code |> enc |> relu\n z = enc(code * 0.5)\n \
         loss = mse(recon, x) + cross_entropy(a + z |> dense(4), y) }\n \
         train m { optimizer adamw(lr: 0.01, weight_decay: 0.01)  clip norm(0.5) }",
    );
    for threads in [1, 2] {
        compare_model(&m, recipe(&m), 5, 3, 1e-4, threads);
    }
}

/// A gradient that is a broadcast constant (copied into a buffer for the
/// Adam kernel) and one that the loss reads linearly.
#[test]
fn fused_adam_with_constant_gradients() {
    compare(
        "model m { input x: [B, 6]  param b: [6] init normal(0.1)\n \
         loss = mean(x |> dense(3)) + sum(b) }\n train m { optimizer adam(lr: 0.01) }",
        5,
        3,
        1e-5,
    );
}

#[test]
fn convnet_with_batchnorm_pooling_and_momentum() {
    compare(
        "model m { input x: [B, 2, 10, 10]  labels y: [B] classes 3\n \
         h = x |> conv2d(4, kernel: 3, pad: 1) |> batchnorm |> relu |> maxpool(2)\n \
         h2 = h |> conv2d(6, kernel: 3, stride: 2, pad: 1, groups: 2) |> avgpool(2, stride: 1, pad: 1, ceil: true)\n \
         logits = h2 |> flatten |> dense(3)\n loss = cross_entropy(logits, y) }\n \
         train m { optimizer momentum(lr: 0.05, momentum: 0.9, weight_decay: 0.01) }",
        4,
        4,
        1e-4,
    );
}

#[test]
fn activations_losses_and_rmsprop_with_clipping() {
    compare(
        "model m { input x: [B, 6]  labels y: [B, 3]\n \
         h = x |> dense(8) |> leaky_relu(0.1) |> dense(8) |> elu |> dense(8) |> gelu |> dense(8) |> silu\n \
         h2 = h |> dense(8) |> softplus |> dense(8) |> tanh |> dense(8) |> prelu(per_channel: true) |> layernorm\n \
         p = h2 |> dense(3) |> sigmoid\n loss = binary_cross_entropy(p, y) + mse(p, y) * 0.5 + l1(p, y) }\n \
         train m { optimizer rmsprop(lr: 0.01, momentum: 0.5, centered: true)  clip norm(0.5) }",
        5,
        4,
        1e-4,
    );
}

/// Products above the split threshold (2^20 multiply-adds), convolutions and
/// a large momentum update, run on two threads: each thread's share of the work must
/// land where one thread would have put it.
#[test]
fn split_kernels_on_two_threads_match_the_reference() {
    let m = model(
        "model m { input x: [B, 3, 12, 12]  labels y: [B] classes 10\n \
         h = x |> conv2d(8, kernel: 3, pad: 1) |> relu |> maxpool(2) |> conv2d(16, kernel: 3, stride: 2, pad: 1)\n \
         logits = h |> flatten |> dense(520) |> relu |> dense(530) |> relu |> dense(10)\n \
         loss = cross_entropy(logits, y) }\n train m { optimizer momentum(lr: 0.05) }",
    );
    let r = recipe(&m);
    compare_model(&m, r, 8, 3, 1e-4, 2);
}

/// A dense layer whose weight is too large to copy row-major (600×440 >
/// 2^18) at a batch of 32 computes its output column-major and then turns
/// it row-major; below 32 rows it does not. The next weight (440×200) is
/// copied row-major; at a batch of 80 both copies are large enough to be
/// split across two threads.
#[test]
fn large_dense_layers_with_turned_outputs_match_the_reference() {
    let m = model(
        "model m { input x: [B, 600]  labels y: [B] classes 7\n \
         logits = x |> dense(440) |> relu |> dense(200) |> relu |> dense(7)\n \
         loss = cross_entropy(logits, y) }\n train m { optimizer sgd(lr: 0.1) }",
    );
    for (batch, threads) in [(32, 1), (33, 2), (31, 1), (80, 2)] {
        compare_model(&m, recipe(&m), batch, 2, 1e-4, threads);
    }
}

/// A bias gradient summed over a batch of 128 (every dimension but the
/// innermost folded) is cut into column blocks that the threads share; the
/// dropout mask before it is indexed through the cut.
#[test]
fn bias_gradients_cut_into_column_blocks_match_the_reference() {
    let m = model(
        "model m { input x: [B, 40]  labels y: [B] classes 5\n \
         logits = x |> dense(512) |> relu |> dropout(0.3) |> dense(5)\n \
         loss = cross_entropy(logits, y) }\n train m { optimizer sgd(lr: 0.1) }",
    );
    for threads in [1, 2] {
        compare_model(&m, recipe(&m), 128, 2, 1e-4, threads);
    }
}

/// A convolution's bias gradient (a reduction over the batch and the map)
/// is cut into blocks of channels that the threads share, each walking its
/// block image by image; the dropout mask after the first layer is indexed
/// through the cut. The second layer's 5 channels have no even cut and
/// stay whole.
#[test]
fn convolution_bias_gradients_cut_into_channel_blocks_match_the_reference() {
    let m = model(
        "model m { input x: [B, 3, 16, 16]  labels y: [B] classes 4\n \
         h = x |> conv2d(6, kernel: 3, pad: 1) |> relu |> dropout(0.2)\n \
         logits = h |> conv2d(5, kernel: 3, pad: 1) |> relu |> global_avgpool |> flatten |> dense(4)\n \
         loss = cross_entropy(logits, y) }\n train m { optimizer sgd(lr: 0.1) }",
    );
    for threads in [1, 2] {
        compare_model(&m, recipe(&m), 40, 2, 1e-4, threads);
    }
}

/// Stride-1 convolutions on at least 512 positions and 8 channels per group
/// take the shifted-product path (one product per tap): square and
/// rectangular kernels, padding and none, groups, channel counts that are
/// not multiples of the kernels' tiles, at one and two threads.
#[test]
fn shifted_convolutions_match_the_reference() {
    let m = model(
        "model m { input x: [B, 8, 24, 25]  labels y: [B] classes 3\n \
         h = x |> conv2d(9, kernel: 3, pad: 1) |> relu |> conv2d(16, kernel: [3, 5], pad: [1, 2]) |> tanh\n \
         logits = h |> conv2d(6, kernel: 3, groups: 2) |> global_avgpool |> flatten |> dense(3)\n \
         loss = cross_entropy(logits, y) }\n train m { optimizer momentum(lr: 0.05) }",
    );
    for threads in [1, 2] {
        compare_model(&m, recipe(&m), 2, 3, 1e-4, threads);
    }
}

#[test]
fn dropout_masks_match_the_reference() {
    compare(
        "model m { input x: [B, 9]  labels y: [B] classes 4\n logits = x |> dense(12) |> relu |> dropout(0.4) |> dense(4)\n loss = cross_entropy(logits, y) }\n train m { optimizer sgd(lr: 0.1) }",
        6,
        3,
        1e-4,
    );
}

#[test]
fn elman_rnn_through_time_with_adagrad() {
    compare(
        "model m { input x: [B, 5, 3]  labels y: [B, 5] classes 3\n \
         param U: [3, 4], W: [4, 4], V: [4, 3], b: [4] init normal(0.1), c: [3] init normal(0.1)\n \
         s = recur t in 0..5 from zeros([B, 4]) { tanh(x[t] @ U + s[t-1] @ W + b) }\n \
         loss = cross_entropy(s @ V + c, y) }\n \
         train m { optimizer adagrad(lr: 0.1, lr_decay: 0.01) }",
        3,
        4,
        1e-4,
    );
}

#[test]
fn lstm_truncated_and_stateful() {
    compare(
        "model m { input x: [B, 6] classes 7  labels y: [B, 6] classes 7\n \
         param Wx: [8, 16], Wh: [4, 16], b: [16] init normal(0.1)\n \
         e = x |> embedding(8)\n \
         h, c = recur t in 0..6 from zeros([B, 4]), zeros([B, 4]) stateful truncate 2 {\n \
           i, f, g, o = split(e[t] @ Wx + h[t-1] @ Wh + b, 4)\n \
           c2 = sigmoid(f) * c[t-1] + sigmoid(i) * tanh(g)\n \
           sigmoid(o) * tanh(c2), c2\n }\n \
         loss = cross_entropy(h |> dense(7), y) }\n \
         train m { optimizer adamw(lr: 0.01, amsgrad: true)  schedule [warmup(steps: 2), cosine(steps: 5)] }",
        3,
        5,
        1e-4,
    );
}

#[test]
fn concat_split_transpose_and_reductions() {
    compare(
        "model m { input x: [B, 4, 6]  labels y: [B, 4]\n \
         a, b = split(x, 2)\n c = concat(b, a, axis: 2) |> transpose\n \
         d = mean(c, axis: 1) + sum(c, axis: 1) * 0.5 - max(c, axis: 1)\n \
         e = slice(x, 1, 5) |> softmax\n \
         loss = mse(d |> dense(4), y) + mean(e * e) }\n \
         train m { optimizer nesterov(lr: 0.05, momentum: 0.8)  clip value(0.1) }",
        3,
        3,
        1e-4,
    );
}

/// Loads an example file.
fn example(name: &str) -> String {
    std::fs::read_to_string(format!("{}/examples/{name}.nn", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The example models: 20 steps compiled and interpreted agree.
///
/// With momentum SGD: Adam and RMSprop divide each gradient by its own
/// running magnitude, so where a gradient is within rounding of zero (a
/// one-hot row seen once, a cancelling sum) an f32 difference of 1e-9 moves
/// that weight by up to lr — measured 2e-3 relative on Elman's U after the
/// first step, for losses that agree to 1e-7. Those optimizers are checked
/// step by step above and against PyTorch in tests/pytorch_fixtures.rs.
#[test]
fn examples_train_the_same_compiled_and_interpreted() {
    for name in [
        "mlp_digits",
        "lenet",
        "elman",
        "gru",
        "lstm",
        "features",
        "autoencoder",
        "cnn_digits",
        "char_rnn",
    ] {
        let src = example(name);
        let src = src.replace(
            "use \"blocks.nn\"",
            &format!("use \"{}/examples/blocks.nn\"", env!("CARGO_MANIFEST_DIR")),
        );
        let mut m = model(&src);
        let mut r = recipe(&m);
        r.optimizer = nnc::ir::train::Optimizer {
            kind: nnc::ir::train::OptimizerKind::Sgd {
                momentum: 0.9,
                dampening: 0.0,
                nesterov: false,
            },
            lr: 0.01,
            weight_decay: 1e-4,
        };
        m.train = None;
        compare_model(&m, r, 2, 20, 1e-4, 1);
    }
}

/// One thread gives the same weights run to run (dropout included).
#[test]
fn one_thread_is_deterministic() {
    let src = "model m { input x: [B, 9]  labels y: [B] classes 4\n logits = x |> dense(12) |> relu |> dropout(0.3) |> dense(4)\n loss = cross_entropy(logits, y) }\n train m { optimizer adam(lr: 0.01) }";
    let run = || {
        let m = model(src);
        let r = recipe(&m);
        let mut jit = JitTrainer::new(&m, r, 4, None, 1, false).unwrap();
        let xs = random_inputs(&m, 4, 1);
        let floats: Vec<f32> = xs[0].iter().map(|&v| v as f32).collect();
        let ints: Vec<i32> = xs[1].iter().map(|&v| v as i32).collect();
        let losses: Vec<f32> = (0..5)
            .map(|_| {
                jit.step(&[InputData::F32(&floats), InputData::I32(&ints)])
                    .unwrap()
            })
            .collect();
        (losses, jit.params.as_slice().to_vec())
    };
    let (a, b) = (run(), run());
    assert_eq!(
        a.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.0.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert!(
        a.1.iter()
            .zip(&b.1)
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
}
