//! Accuracy of the generated elementwise functions against the standard
//! library (computed in f64, rounded to f32): the maximum error in units in
//! the last place over a dense sweep of each function's useful range.

use nnc::diag::Span;
use nnc::ir::graph::{Graph, Node};
use nnc::ir::ops::{Op, Unary};
use nnc::ir::types::{Shape, TensorType};
use nnc::runtime::executable::{Executable, InputData};
use nnc::schedule::{Dest, Layout, Output};

/// Runs `f` on every element through compiled code.
fn jit(u: Unary, xs: &[f32]) -> Vec<f32> {
    let n = xs.len();
    let mut g = Graph::new();
    let ty = TensorType::f32(Shape::fixed(&[n]));
    let x = g.push(Node {
        op: Op::Input { index: 0 },
        inputs: vec![],
        ty: Some(ty.clone()),
        span: Span::default(),
        layer: None,
    });
    let y = g.push(Node {
        op: Op::Unary(u),
        inputs: vec![x],
        ty: Some(ty),
        span: Span::default(),
        layer: None,
    });
    let layout = Layout {
        param_offsets: vec![],
        state_offsets: vec![],
        inputs: 1,
    };
    let mut exe = Executable::new(
        &g,
        &[Output {
            node: y,
            dest: Dest::Buffer,
        }],
        1,
        &layout,
        vec![n],
    )
    .unwrap();
    exe.run(
        &mut [],
        &mut [],
        &[],
        &[InputData::F32(xs)],
        0,
        1,
        (0, 0, 0),
    )
    .unwrap();
    exe.output(0, &[], &[])
}

/// Distance in representable f32 values.
fn ulps(a: f32, b: f32) -> u64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0;
    }
    if !a.is_finite() || !b.is_finite() {
        return u64::MAX;
    }
    let key = |v: f32| {
        let i = v.to_bits() as i32;
        if i < 0 {
            i64::from(i32::MIN) - i64::from(i)
        } else {
            i64::from(i)
        }
    };
    (key(a) - key(b)).unsigned_abs()
}

fn sweep(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32)
        .collect()
}

/// Worst error in ulps (and where), ignoring results below `floor` in
/// magnitude (there an absolute error is what matters, checked separately).
fn worst(u: Unary, xs: &[f32], exact: impl Fn(f64) -> f64, floor: f64) -> (u64, f32) {
    let ys = jit(u, xs);
    let mut w = (0, 0.0);
    for (&x, &y) in xs.iter().zip(&ys) {
        let e = exact(x as f64);
        if e.abs() < floor {
            assert!((y as f64 - e).abs() < 1e-7, "{u:?}({x}) = {y}, exact {e}");
            continue;
        }
        let d = ulps(y, e as f32);
        if d > w.0 {
            w = (d, x);
        }
    }
    println!("{u:?}: max {} ulp (at x = {})", w.0, w.1);
    w
}

#[test]
fn exp_within_2_ulp() {
    let (u, _) = worst(Unary::Exp, &sweep(-87.0, 88.0, 200_003), f64::exp, 0.0);
    assert!(u <= 2);
}

#[test]
fn log_within_2_ulp() {
    let mut xs = sweep(1e-6, 10.0, 100_003);
    xs.extend(sweep(10.0, 1e30, 10_003));
    let (u, _) = worst(Unary::Log, &xs, f64::ln, 1e-30);
    assert!(u <= 2);
}

/// A rational approximation (Eigen's and XLA's): measured at most 5 ulp.
#[test]
fn tanh_within_6_ulp() {
    let (u, _) = worst(Unary::Tanh, &sweep(-10.0, 10.0, 200_003), f64::tanh, 0.0);
    assert!(u <= 6);
}

#[test]
fn sigmoid_within_4_ulp() {
    let (u, _) = worst(
        Unary::Sigmoid,
        &sweep(-30.0, 30.0, 200_003),
        |x| 1.0 / (1.0 + (-x).exp()),
        0.0,
    );
    assert!(u <= 4);
}

#[test]
fn erf_within_3_ulp() {
    let (u, _) = worst(Unary::Erf, &sweep(-5.0, 5.0, 200_003), libm::erf, 1e-6);
    assert!(u <= 3);
}

#[test]
fn special_values() {
    let xs = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 100.0, -100.0];
    let e = jit(Unary::Exp, &xs);
    assert_eq!(&e[..4], &[1.0, 1.0, f32::INFINITY, 0.0]);
    let l = jit(Unary::Log, &[0.0, -1.0, f32::INFINITY, 1.0]);
    assert_eq!(l[0], f32::NEG_INFINITY);
    assert!(l[1].is_nan());
    assert_eq!(l[2], f32::INFINITY);
    assert_eq!(l[3], 0.0);
    let t = jit(Unary::Tanh, &xs);
    assert_eq!(&t[..], &[0.0, -0.0, 1.0, -1.0, 1.0, -1.0]);
}
