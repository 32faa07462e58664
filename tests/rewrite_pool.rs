//! Max pooling moved before a per-channel bias and ReLU in the training
//! graph (`ir::rewrite::pool_before_relu`): the rewritten graph gives the
//! loss and every gradient of the graph as written, in the reference
//! interpreter (f64): the loss bit for bit, the gradients up to the order
//! of their sums.

use ndarray::ArrayD;
use nnc::frontend::check_source;
use nnc::gradcheck::random_inputs;
use nnc::ir::build::Builder;
use nnc::ir::model::Model;
use nnc::ir::ops::{Op, PoolKind, Unary};
use nnc::ir::{Graph, NodeId};
use nnc::reference::{Feeds, run};
use nnc::syntax::FsLoader;

fn model(src: &str) -> Model {
    let c = check_source("t.nn", src, &FsLoader, &Default::default());
    assert!(!c.has_errors(), "{}", c.report().render(false));
    c.models.into_iter().next().unwrap()
}

/// The model's loss and its gradients, differentiated as written.
fn as_written(m: &Model) -> (Graph, NodeId, Vec<Option<NodeId>>) {
    let mut graph = m.graph.clone();
    let n = graph.len();
    let loss = m.loss.unwrap();
    let params: Vec<NodeId> = m.params.iter().map(|p| p.node).collect();
    let mut b = Builder::new(&mut graph, "test");
    let one = b.scalar(1.0).unwrap();
    let grads = nnc::ir::autodiff::backprop(&mut b, n, &[(loss, one)], &params).unwrap();
    (graph, loss, grads)
}

/// Max pools that read a ReLU (none after the rewrite).
fn pools_of_relus(g: &Graph) -> usize {
    g.nodes
        .iter()
        .filter(|n| {
            matches!(
                n.op,
                Op::Pool {
                    kind: PoolKind::Max,
                    ..
                }
            ) && g.node(n.inputs[0]).op == Op::Unary(Unary::Relu)
        })
        .count()
}

fn values(
    g: &Graph,
    loss: NodeId,
    grads: &[Option<NodeId>],
    m: &Model,
    seed: u64,
) -> Vec<ArrayD<f64>> {
    let inputs = random_inputs(m, 3, seed);
    let params: Vec<ArrayD<f64>> = nnc::runtime::params::init(m, seed);
    let states = nnc::runtime::params::init_states::<f64>(&m.states, 3);
    let feeds = Feeds {
        inputs: &inputs,
        params: &params,
        states: &states,
        hypers: &[],
        seed: 1,
        batch: 3,
        kinks: None,
    };
    let mut wanted = vec![loss];
    wanted.extend(grads.iter().flatten());
    run(g, &feeds, &wanted).unwrap()
}

#[test]
fn pooling_before_bias_and_relu_keeps_loss_and_gradients() {
    // With and without a bias, 2-D and 1-D, a pool of stride 1 (windows
    // overlap), a bias added on the left, and a ReLU read twice (left alone).
    let src = "model m { input x: [B, 2, 9, 9]  input s: [B, 3, 12]  labels y: [B] classes 3\n \
         a = x |> conv2d(4, kernel: 3, pad: 1) |> relu |> maxpool(2)\n \
         b = x |> conv2d(3, kernel: 2, bias: false) |> relu |> maxpool(3, stride: 1)\n \
         c = s |> conv1d(5, kernel: 3) |> relu |> maxpool(2)\n \
         r = relu(x * 2.0 - 0.5)\n d = maxpool(r, 3) + maxpool(r, 2, stride: 3)\n \
         logits = concat(flatten(a), flatten(b), flatten(c), flatten(d), axis: 1) |> dense(3)\n \
         loss = cross_entropy(logits, y) }";
    let m = model(src);
    let (written, wl, wg) = as_written(&m);
    let (rewritten, rl, rg) = nnc::ir::optim::gradients(&m).unwrap();
    assert!(
        pools_of_relus(&written) >= 4,
        "the test model has the pattern"
    );
    assert_eq!(
        pools_of_relus(&rewritten),
        2,
        "all but the shared ReLU's pools move"
    );
    for seed in [1, 2, 3] {
        let a = values(&written, wl, &wg, &m, seed);
        let b = values(&rewritten, rl, &rg, &m, seed);
        assert_eq!(a.len(), b.len());
        // The loss is the same bits; a gradient summed over positions (a
        // bias's) adds the same terms in another order, so it may differ
        // by rounding: 1e-13 of its largest entry in f64 (a wrong
        // window or ReLU mask moves it by a whole term).
        assert_eq!(
            a[0].iter().next().map(|v| v.to_bits()),
            b[0].iter().next().map(|v| v.to_bits())
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate().skip(1) {
            assert_eq!(x.shape(), y.shape());
            let scale = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (u, v) in x.iter().zip(y) {
                assert!((u - v).abs() <= 1e-13 * scale, "gradient {i}: {u} vs {v}");
            }
        }
    }
}
