//! The matrix products of the benchmark models, through the `gemm` crate as
//! nnc's generated code calls it, in GFLOP/s at 1 thread: where a model's
//! step time goes when its products are slow.
//!
//! cargo bench --bench gemm

use std::time::Instant;

/// Row-major c[m×n] = a·b with a [m×k] (transposed: stored [k×m]) and
/// b [k×n] (transposed: stored [n×k]).
fn product(m: usize, n: usize, k: usize, ta: bool, tb: bool, cold: bool) -> f64 {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let run = |c: &mut [f32]| unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
    let flop = 2.0 * (m * n * k) as f64;
    let reps = ((2e9 / flop) as usize).clamp(3, 2000);
    run(&mut c);
    // A training step runs other kernels between products: with `cold`,
    // 16 MB are streamed before each product, as an optimizer pass does.
    let mut other = if cold {
        vec![1.0f32; 4 << 20]
    } else {
        Vec::new()
    };
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps.min(200) {
        for v in other.iter_mut() {
            *v = v.mul_add(0.999, 0.001);
        }
        let t = Instant::now();
        run(&mut c);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    flop / times[times.len() / 2] / 1e9
}

fn main() {
    let peak = nnc::bench::measure_peak_gflops();
    println!("single-core f32 FMA peak: {peak:.1} GFLOP/s");
    println!(
        "{:<34} {:>8} {:>7} {:>8}",
        "product (m×n×k)", "GFLOP/s", "% peak", "cold"
    );
    let shapes: &[(&str, usize, usize, usize, bool, bool)] = &[
        ("mnist fwd x·W1", 128, 512, 784, false, false),
        ("mnist fwd h1·W2", 128, 256, 512, false, false),
        ("mnist fwd x·W1ᵀ ([out, in] W)", 128, 512, 784, false, true),
        ("mnist fwd h1·W2ᵀ ([out, in] W)", 128, 256, 512, false, true),
        ("mnist dW1 = xᵀ·dh1", 784, 512, 128, true, false),
        ("mnist dh1 = dh2·W2ᵀ", 128, 512, 256, false, true),
        ("mnist dW2 = h1ᵀ·dh2", 512, 256, 128, true, false),
        ("digits fwd", 32, 128, 64, false, false),
        ("digits fwd x·W1ᵀ", 32, 128, 64, false, true),
        ("lenet fc1 x·Wᵀ", 64, 120, 400, false, true),
        ("lenet fc1 x·W", 64, 120, 400, false, false),
        ("elman step s·W", 32, 128, 128, false, false),
        ("elman back step dz·Wᵀ", 32, 128, 128, false, true),
        ("elman dW (all steps)", 128, 128, 1024, true, false),
        (
            "resnet 3x3 16ch tap (whole batch)",
            32768,
            16,
            16,
            false,
            true,
        ),
        ("resnet im2col 16ch per image", 1024, 16, 144, false, true),
        ("resnet im2col 64ch per image", 64, 64, 576, false, true),
    ];
    for &(name, m, n, k, ta, tb) in shapes {
        let g = product(m, n, k, ta, tb, false);
        let cold = product(m, n, k, ta, tb, true);
        println!(
            "{:<34} {:>8.1} {:>6.0}% {:>8.1}   {m}×{n}×{k}",
            name,
            g,
            100.0 * g / peak,
            cold
        );
    }
}
