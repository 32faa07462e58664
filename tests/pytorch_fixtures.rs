//! Training steps of the reference interpreter agree with PyTorch.
//!
//! Each `tests/fixtures/<case>.safetensors` was written by
//! `tests/fixtures/make_fixtures.py` (run by hand; see its header) from a
//! hand-written PyTorch twin of `tests/fixtures/<case>.nn`. It holds the
//! initial weights, a batch, the loss and every gradient at those weights,
//! and for each run (an optimizer with weight decay and a learning-rate
//! schedule, some with gradient clipping) the loss and learning rate of 3
//! steps and the weights and batch-norm statistics after them — once with
//! torch in float64 and once in float32. The metadata gives each run as the
//! body of an nnc `train` block, so both sides read the same recipe.
//!
//! Here each case is rebuilt from its `.nn` file plus that `train` block, its
//! weights are set from the fixture and [`ReferenceTrainer`] runs the same 3
//! steps in f64 and in f32.
//!
//! Every tensor is compared by its normwise relative error
//! `max|nnc − torch| / max|torch|`, within [`F64_TOL`] and [`F32_TOL`]:
//!
//! - f64: both sides compute the same formulas in double precision, in
//!   different orders (summation order of matrix products, convolutions,
//!   reductions; `lerp` against `β·m + (1−β)·g`). Those differences are a few
//!   units in the 16th digit per operation; through the few dozen operations
//!   of a forward/backward pass and 3 updates they stay below 1e-12 in
//!   practice, so 1e-5 is a loose bound that still rejects any difference of
//!   formula (a wrong bias correction, momentum rule, weight decay, schedule
//!   or gradient changes results in the 3rd digit or earlier).
//! - f32: unit roundoff is 6e-8, and sums of up to a few thousand terms
//!   (a convolution's gradient of its weight sums over batch and pixels) plus
//!   divisions by small `sqrt(v) + eps` in adaptive optimizers amplify
//!   rounding to around 1e-6; 1e-4 keeps a margin of two orders of magnitude
//!   over that and stays far below what a wrong formula gives.
//!
//! In f64 the update itself (weights after 3 steps minus initial weights) is
//! compared too, at the same tolerance: a small learning rate makes the new
//! weights close to the old ones, and the update shows a wrong step that the
//! weights alone would hide. (In f32 that difference cancels too many digits
//! to be compared at 1e-4.)

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};

use nnc::frontend::check_source;
use nnc::ir::lower::LowerOptions;
use nnc::ir::train::Optimizer;
use nnc::ir::{Init, Model};
use nnc::reference::Real;
use nnc::runtime::reference_trainer::{Recipe, ReferenceTrainer};
use nnc::runtime::schedule::lr_at;
use nnc::syntax::FsLoader;

/// Normwise relative tolerance with torch in float64 (see the module docs).
const F64_TOL: f64 = 1e-5;
/// Normwise relative tolerance with torch in float32 (see the module docs).
const F32_TOL: f64 = 1e-4;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A tensor read from a fixture, widened to f64.
#[derive(Debug, Clone)]
struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// A fixture file: its tensors by name and its metadata.
struct Fixture {
    case: String,
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Fixture {
    fn load(case: &str) -> Fixture {
        let path = fixtures_dir().join(format!("{case}.safetensors"));
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .unwrap_or_else(|e| panic!("{}: bad safetensors header: {e}", path.display()));
        let meta = header.metadata().clone().unwrap_or_default();
        let st = SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{}: bad safetensors file: {e}", path.display()));
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f64> = match view.dtype() {
                Dtype::F64 => raw
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                Dtype::I64 => raw
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                d => panic!("{case}: tensor {name} has unexpected dtype {d:?}"),
            };
            let shape = view.shape().to_vec();
            assert_eq!(
                shape.iter().product::<usize>(),
                data.len(),
                "{case}: {name}"
            );
            tensors.insert(name, Tensor { shape, data });
        }
        Fixture {
            case: case.to_string(),
            tensors,
            meta,
        }
    }

    fn get(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("{}: the fixture has no tensor `{name}`", self.case))
    }

    fn meta(&self, key: &str) -> &str {
        self.meta
            .get(key)
            .unwrap_or_else(|| panic!("{}: the fixture has no metadata `{key}`", self.case))
    }

    fn array<T: Real>(&self, name: &str) -> ArrayD<T> {
        let t = self.get(name);
        let data = t.data.iter().map(|&v| T::from_f64(v).unwrap()).collect();
        ArrayD::from_shape_vec(IxDyn(&t.shape), data).unwrap()
    }

    /// The `.nn` source of the case, with a `train` block for a run (or none).
    fn source(&self, run: Option<&str>) -> String {
        let file = fixtures_dir().join(self.meta("model"));
        let mut src = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        if let Some(run) = run {
            let body = self.meta(&format!("run.{run}"));
            write!(src, "\ntrain {} {{\n  {body}\n}}\n", self.case).unwrap();
        }
        src
    }

    /// The checked model of the case (dropout layers off, as in the torch twin).
    fn model(&self, run: Option<&str>) -> Model {
        let name = fixtures_dir().join(self.meta("model"));
        let opts = LowerOptions {
            dropout: false,
            ..Default::default()
        };
        let checked = check_source(
            &name.display().to_string(),
            &self.source(run),
            &FsLoader,
            &opts,
        );
        if checked.has_errors() {
            panic!(
                "{} (run {run:?}) does not check:\n{}",
                self.case,
                checked.report().render(false)
            );
        }
        checked
            .model(Some(&self.case))
            .unwrap_or_else(|| panic!("no model `{}` in {}", self.case, name.display()))
            .clone()
    }
}

/// How far a tensor of nnc's is from torch's.
#[derive(Debug, Clone, Copy)]
struct Diff {
    /// Normwise relative error `max|a − b| / max|b|` (absolute when b is all zero).
    err: f64,
    /// The element with the largest difference: flat index, nnc's and torch's value.
    at: usize,
    ours: f64,
    theirs: f64,
}

impl Diff {
    fn scalar(ours: f64, theirs: f64) -> Diff {
        let d = (ours - theirs).abs();
        Diff {
            err: if theirs != 0.0 { d / theirs.abs() } else { d },
            at: 0,
            ours,
            theirs,
        }
    }
}

fn rel_err<T: Real>(a: &ArrayD<T>, b: &Tensor) -> Diff {
    assert_eq!(a.shape(), b.shape.as_slice(), "shapes differ");
    let mut worst = Diff {
        err: 0.0,
        at: 0,
        ours: 0.0,
        theirs: 0.0,
    };
    let mut diff = -1.0f64;
    let mut scale = 0.0f64;
    for (i, (x, &y)) in a.iter().zip(&b.data).enumerate() {
        let x = x.to_f64().unwrap_or(f64::NAN);
        let d = if x.is_finite() {
            (x - y).abs()
        } else {
            f64::INFINITY
        };
        if d > diff {
            diff = d;
            worst = Diff {
                err: 0.0,
                at: i,
                ours: x,
                theirs: y,
            };
        }
        scale = scale.max(y.abs());
    }
    worst.err = if scale > 0.0 {
        diff.max(0.0) / scale
    } else {
        diff.max(0.0)
    };
    worst
}

/// The error of an update: `(a − a0)` against `(b − b0)`.
fn rel_err_update<T: Real>(a: &ArrayD<T>, a0: &ArrayD<T>, b: &Tensor, b0: &Tensor) -> Diff {
    let delta: Vec<f64> = b.data.iter().zip(&b0.data).map(|(x, y)| x - y).collect();
    rel_err(
        &(a - a0),
        &Tensor {
            shape: b.shape.clone(),
            data: delta,
        },
    )
}

/// Every comparison of one case, for the report and the verdict.
#[derive(Default)]
struct Results {
    /// (what, error) in the order compared.
    rows: Vec<(String, f64)>,
    failures: Vec<String>,
}

impl Results {
    fn check(&mut self, what: String, d: Diff, tol: f64) {
        // NaN fails too.
        if d.err.is_nan() || d.err > tol {
            self.failures.push(format!(
                "{what}: relative error {:.3e} > {tol:e}; largest difference at element {}: \
                 nnc {:e}, torch {:e}",
                d.err, d.at, d.ours, d.theirs
            ));
        }
        self.rows.push((what, d.err));
    }

    /// The worst error among rows whose name starts with `prefix`.
    fn worst(&self, prefix: &str) -> (f64, &str) {
        self.rows
            .iter()
            .filter(|(w, _)| w.starts_with(prefix))
            .fold(
                (0.0, ""),
                |acc, (w, e)| {
                    if *e > acc.0 { (*e, w.as_str()) } else { acc }
                },
            )
    }
}

fn inputs<T: Real>(fx: &Fixture, model: &Model) -> Vec<ArrayD<T>> {
    model
        .inputs
        .iter()
        .map(|i| fx.array(&format!("input.{}", i.name)))
        .collect()
}

fn initial_params<T: Real>(fx: &Fixture, model: &Model) -> Vec<ArrayD<T>> {
    // Every parameter of the fixture is one of the model's, and the reverse.
    let inits = fx.tensors.keys().filter(|k| k.starts_with("init.")).count();
    assert_eq!(
        inits,
        model.params.len(),
        "{}: the fixture and the model have different parameters",
        fx.case
    );
    model
        .params
        .iter()
        .map(|p| {
            let a: ArrayD<T> = fx.array(&format!("init.{}", p.name));
            assert_eq!(
                a.shape(),
                p.shape.at(1).as_slice(),
                "{}: {}",
                fx.case,
                p.name
            );
            a
        })
        .collect()
}

/// Loss and gradients at the initial weights.
fn check_gradients<T: Real>(fx: &Fixture, prec: &str, tol: f64, res: &mut Results) {
    let model = fx.model(None);
    let batch = fx.get("input.x").shape[0];
    let recipe = Recipe {
        optimizer: Optimizer::default(),
        schedule: Vec::new(),
        clip: None,
        total_steps: 1,
        seed: 0,
    };
    let params = initial_params::<T>(fx, &model);
    let mut tr = ReferenceTrainer::<T>::new(&model, recipe, batch, Some(params))
        .unwrap_or_else(|e| panic!("{}: cannot build the training graph: {e:?}", fx.case));
    let out = tr
        .step(&inputs::<T>(fx, &model))
        .unwrap_or_else(|e| panic!("{}: the step failed: {e}", fx.case));
    let want = fx.get(&format!("{prec}.loss")).data[0];
    res.check(format!("{prec} loss"), Diff::scalar(out.loss, want), tol);
    for (p, g) in model.params.iter().zip(&out.grads) {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no gradient for {}", fx.case, p.name));
        let err = rel_err(g, fx.get(&format!("{prec}.grad.{}", p.name)));
        res.check(format!("{prec} grad {}", p.name), err, tol);
    }
}

/// One optimizer run: 3 steps, then weights and running statistics.
fn check_run<T: Real>(fx: &Fixture, prec: &str, run: &str, tol: f64, res: &mut Results) {
    let model = fx.model(Some(run));
    let train = model
        .train
        .clone()
        .unwrap_or_else(|| panic!("{}: run {run} has no train block", fx.case));
    let steps: usize = fx.meta("steps").parse().unwrap();
    let total_steps: usize = fx.meta("total_steps").parse().unwrap();
    let batch = fx.get("input.x").shape[0];

    // The schedule: nnc's learning rate of each step is torch's.
    let lrs = &fx.get(&format!("{prec}.{run}.lrs")).data;
    for (k, &want) in lrs.iter().enumerate() {
        let got = lr_at(train.optimizer.lr, &train.schedule, k, total_steps);
        res.check(
            format!("{prec} {run} lr of step {k}"),
            Diff::scalar(got, want),
            1e-12,
        );
    }

    let recipe = Recipe {
        optimizer: train.optimizer.clone(),
        schedule: train.schedule.clone(),
        clip: train.clip.clone(),
        total_steps,
        seed: train.seed,
    };
    let params = initial_params::<T>(fx, &model);
    let mut tr = ReferenceTrainer::<T>::new(&model, recipe, batch, Some(params.clone()))
        .unwrap_or_else(|e| panic!("{}: cannot build the training graph: {e:?}", fx.case));
    let xs = inputs::<T>(fx, &model);
    let losses = &fx.get(&format!("{prec}.{run}.losses")).data;
    for (k, &want) in losses.iter().enumerate().take(steps) {
        let out = tr
            .step(&xs)
            .unwrap_or_else(|e| panic!("{}: step {k} of {run} failed: {e}", fx.case));
        res.check(
            format!("{prec} {run} loss of step {k}"),
            Diff::scalar(out.loss, want),
            tol,
        );
    }
    for (i, p) in model.params.iter().enumerate() {
        let want = fx.get(&format!("{prec}.{run}.param.{}", p.name));
        let err = rel_err(&tr.params[i], want);
        res.check(format!("{prec} {run} param {}", p.name), err, tol);
        if prec == "f64" {
            let init = fx.get(&format!("init.{}", p.name));
            let err = rel_err_update(&tr.params[i], &params[i], want, init);
            res.check(format!("{prec} {run} update {}", p.name), err, tol);
        }
    }
    // Model states (batch-norm running statistics) come first among the
    // trainer's states, optimizer slots after them.
    let prefix = format!("{prec}.{run}.state.");
    let n_states = fx.tensors.keys().filter(|k| k.starts_with(&prefix)).count();
    assert_eq!(n_states, model.states.len(), "{}: states differ", fx.case);
    for (i, s) in model.states.iter().enumerate() {
        let want = fx.get(&format!("{prefix}{}", s.name));
        let err = rel_err(&tr.states[i], want);
        res.check(format!("{prec} {run} state {}", s.name), err, tol);
    }
}

fn check_case(case: &str) {
    let fx = Fixture::load(case);
    let runs: Vec<String> = fx.meta("runs").split(',').map(str::to_string).collect();
    let mut res = Results::default();
    check_gradients::<f64>(&fx, "f64", F64_TOL, &mut res);
    check_gradients::<f32>(&fx, "f32", F32_TOL, &mut res);
    for run in &runs {
        check_run::<f64>(&fx, "f64", run, F64_TOL, &mut res);
        check_run::<f32>(&fx, "f32", run, F32_TOL, &mut res);
    }
    // A summary line per precision and kind (run with --nocapture to see it).
    let mut summary = format!("{case}:");
    for prec in ["f64", "f32"] {
        for kind in ["loss", "grad"] {
            let (e, _) = res.worst(&format!("{prec} {kind}"));
            write!(summary, " {prec} {kind} {e:.1e},").unwrap();
        }
        let worst = runs
            .iter()
            .map(|r| res.worst(&format!("{prec} {r} ")))
            .fold((0.0, ""), |a, b| if b.0 > a.0 { b } else { a });
        write!(summary, " {prec} runs {:.1e} ({}),", worst.0, worst.1).unwrap();
    }
    println!("{}", summary.trim_end_matches(','));
    assert!(
        res.failures.is_empty(),
        "{case}: {} comparisons with PyTorch fail; the first: {}\nall:\n{}",
        res.failures.len(),
        res.failures[0],
        res.failures.join("\n")
    );
}

/// nnc's default initialisation of every layer parameter of a case is the
/// law PyTorch draws from by default (`init.<name>` holds torch's draws, or
/// `default.<name>` where the fixture perturbed a constant), and nnc's own
/// seeded draws follow that law and are reproducible. Explicit `param`s have
/// no PyTorch counterpart (their twins in the script are written to match).
fn check_default_init(case: &str) {
    let fx = Fixture::load(case);
    let model = fx.model(None);
    let ours = nnc::runtime::params::init::<f64>(&model, 7);
    assert_eq!(
        ours,
        nnc::runtime::params::init::<f64>(&model, 7),
        "{case}: initialisation is not reproducible"
    );
    for (p, drawn) in model.params.iter().zip(&ours) {
        if p.layer.is_none() {
            continue;
        }
        let torch = fx
            .tensors
            .get(&format!("default.{}", p.name))
            .unwrap_or_else(|| fx.get(&format!("init.{}", p.name)));
        let drawn: Vec<f64> = drawn.iter().copied().collect();
        for (who, v) in [("torch", &torch.data), ("nnc", &drawn)] {
            let n = v.len() as f64;
            match p.init {
                Init::Constant(c) => assert!(
                    v.iter().all(|&x| x == c),
                    "{case}: {}: nnc starts at {c}, {who} does not",
                    p.name
                ),
                Init::Uniform(b) => {
                    // Every value within the bound; with enough values, the
                    // largest close to it (a bound 25% too large fails with
                    // probability below 0.8^100 = 2e-10).
                    let max = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                    assert!(
                        max <= b * (1.0 + 1e-6),
                        "{case}: {}: {who} draws {max} outside nnc's bound {b}",
                        p.name
                    );
                    if v.len() >= 100 {
                        assert!(
                            max >= 0.8 * b,
                            "{case}: {}: {who}'s largest draw {max} is far inside nnc's bound {b}",
                            p.name
                        );
                    }
                }
                Init::Normal(sd) => {
                    let mean = v.iter().sum::<f64>() / n;
                    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
                    assert!(
                        v.len() >= 50 && (var.sqrt() / sd - 1.0).abs() < 0.3,
                        "{case}: {}: {who}'s draws have standard deviation {}, nnc's law {sd}",
                        p.name,
                        var.sqrt()
                    );
                }
            }
        }
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check_case(stringify!($name));
            }
        )*

        mod default_init {
            $(
                #[test]
                fn $name() {
                    super::check_default_init(stringify!($name));
                }
            )*
        }

        /// Every fixture file in tests/fixtures has a test above.
        #[test]
        fn every_fixture_is_tested() {
            let known = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "safetensors") {
                    let stem = path.file_stem().unwrap().to_string_lossy().to_string();
                    assert!(known.contains(&stem.as_str()), "no test for fixture {stem}");
                }
            }
        }
    };
}

cases!(
    mlp_digits,
    lenet,
    resnet_mini_bn,
    elman,
    elman_truncated,
    lstm,
    mlp_dropout,
    groupconv_prelu,
    binary_bce,
    regression_mse,
);
