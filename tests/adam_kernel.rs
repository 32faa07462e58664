//! The Adam kernel (`jit/adam.rs`) against the generated loop it replaces:
//! the same training graph compiled with its Adam updates fused and with
//! them left to the scheduler's loops gives the same parameters and moments,
//! bit for bit — the kernel rounds every operation as the loop does.

use nnc::frontend::check_source;
use nnc::gradcheck::{TypedInputs, random_inputs};
use nnc::ir::optim;
use nnc::ir::train::Optimizer;
use nnc::runtime::executable::Executable;
use nnc::runtime::jit_trainer::{pack, write_states};
use nnc::runtime::programs::training_outputs;
use nnc::runtime::schedule::hyper_values;
use nnc::schedule::Layout;
use nnc::syntax::FsLoader;

/// Parameters and persistent buffers after `steps` steps, with the Adam
/// updates fused or not.
fn train(src: &str, fused: bool, threads: usize, steps: usize) -> (Vec<f32>, Vec<f32>, usize) {
    let c = check_source("t.nn", src, &FsLoader, &Default::default());
    assert!(!c.has_errors(), "{}", c.report().render(false));
    let m = c.models.into_iter().next().unwrap();
    let opt: Optimizer = m.train.clone().unwrap().optimizer;
    let mut t = optim::build(&m, &opt, None).unwrap();
    let marked = t.graph.adam_updates.len();
    if !fused {
        t.graph.adam_updates.clear();
    }
    let batch = 16;
    let (param_offsets, plen) = pack(m.params.iter().map(|p| p.shape.at(1).iter().product()));
    let (state_offsets, slen) = pack(t.states.iter().map(|s| s.ty.shape.numel_at(batch).unwrap()));
    let layout = Layout {
        param_offsets: param_offsets.clone(),
        state_offsets: state_offsets.clone(),
        inputs: m.inputs.len(),
    };
    let lens = m
        .inputs
        .iter()
        .map(|i| i.ty.shape.numel_at(batch).unwrap())
        .collect();
    let outputs = training_outputs(&t, &[]);
    let mut exe = Executable::new(&t.graph, &outputs, batch, &layout, lens).unwrap();
    let mut params = vec![0.0f32; plen];
    for (i, a) in nnc::runtime::params::init::<f32>(&m, 7).iter().enumerate() {
        params[param_offsets[i]..][..a.len()].copy_from_slice(a.as_slice().unwrap());
    }
    let mut states = vec![0.0f32; slen];
    write_states(&t.states, &state_offsets, batch, &mut states);
    for step in 0..steps {
        let hypers: Vec<f32> = hyper_values(&t.hypers, &opt, step, opt.lr)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let xs = random_inputs(&m, batch, 50 + step as u64);
        let typed = TypedInputs::new(&m, &xs);
        let sizes = (params.len(), states.len(), hypers.len());
        exe.run(
            &mut params,
            &mut states,
            &hypers,
            &typed.feeds(),
            1,
            threads,
            sizes,
        )
        .unwrap();
    }
    (params, states, marked)
}

#[test]
fn fused_adam_gives_the_generated_loops_bits() {
    // A weight split across threads (130×140 > 2^14) with a tail, short
    // biases, each form of weight decay and non-default constants.
    for opt in [
        "adam(lr: 0.01)",
        "adam(lr: 0.003, weight_decay: 0.1)",
        "adamw(lr: 0.01, weight_decay: 0.05, beta1: 0.8, beta2: 0.99, eps: 1e-6)",
    ] {
        let src = format!(
            "model m {{ input x: [B, 140]  labels y: [B] classes 5\n \
             logits = x |> dense(130) |> tanh |> dense(5)\n \
             loss = cross_entropy(logits, y) }}\n train m {{ optimizer {opt} }}"
        );
        for threads in [1, 2] {
            let (p1, s1, marked) = train(&src, true, threads, 3);
            let (p0, s0, _) = train(&src, false, threads, 3);
            assert_eq!(marked, 4, "{opt}: every parameter's update is marked");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&p1) == bits(&p0),
                "{opt}, {threads} threads: parameters differ"
            );
            assert!(
                bits(&s1) == bits(&s0),
                "{opt}, {threads} threads: moments differ"
            );
        }
    }
}
