//! `nnc sample FILE --weights W`: text from a character model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use ndarray::{ArrayD, IxDyn};
use nnc::runtime::data::{Tensor, text};
use nnc::runtime::source;
use nnc::runtime::train::{self, Feed};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    /// The .nn file of a character model (input [B, T] of classes).
    pub file: PathBuf,
    /// A checkpoint written by `nnc train` on text (it holds the vocabulary).
    #[arg(long, short)]
    pub weights: PathBuf,
    #[arg(long)]
    pub model: Option<String>,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    pub length: usize,
    /// Below 1 sharper and more repetitive, above 1 more varied; 0 always takes the likeliest.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Text to start from (printed first).
    #[arg(long, default_value = "")]
    pub prime: String,
    /// Seed of the draws (default: a new one each run).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: SampleArgs, color: bool) -> Result<ExitCode, String> {
    let m = match super::load(&a.file, a.model.as_deref(), color) {
        Ok(m) => m,
        Err(None) => return Ok(ExitCode::from(1)),
        Err(Some(e)) => return Err(e),
    };
    if !(a.temperature.is_finite() && a.temperature >= 0.0) {
        return Err(format!(
            "--temperature {} must be a number ≥ 0",
            a.temperature
        ));
    }
    let t = source::sequence_length(&m.model).ok_or_else(|| {
        format!(
            "the model `{}` is not a character model: its input is not [B, T] of classes",
            m.model.name
        )
    })?;
    let (mut session, ckpt) =
        train::session_with_weights(&m, &a.weights, 1, super::threads(a.threads))
            .map_err(|e| e.to_string())?;
    let vocab = ckpt.vocab.clone().ok_or_else(|| {
        format!(
            "{} has no vocabulary: it was not written by `nnc train` on text data",
            a.weights.display()
        )
    })?;
    let mut ids: Vec<i32> = text::encode(&a.prime, &vocab).map_err(|(ch, line, col)| {
        format!("--prime: the character {ch:?} (line {line}, column {col}) is not in the model's vocabulary")
    })?;
    if ids.is_empty() {
        ids.push(vocab.binary_search(&'\n').map_or(0, |i| i as i32));
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{}", a.prime);
    for _ in 0..a.length {
        // The model reads windows of T characters from a zero state, as in
        // training: the last T characters, left-aligned.
        let start = ids.len().saturating_sub(t);
        let ctx = &ids[start..];
        let mut window = ctx.to_vec();
        window.resize(t, 0);
        let x =
            Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[1, t]), window).map_err(|e| e.to_string())?);
        let feed = Feed::new(&session.infer_model, &x, None, 1);
        let r = session
            .infer(&feed.inputs(), 1)
            .map_err(|e| e.to_string())?;
        let logits = r.outputs.first().ok_or("the model has no output")?;
        let c = logits.len() / t;
        let row = &logits[(ctx.len() - 1) * c..ctx.len() * c];
        let next = draw(row, a.temperature, &mut rng);
        ids.push(next as i32);
        let _ = write!(out, "{}", text::decode(&[next as i32], &vocab));
        let _ = out.flush();
    }
    let _ = writeln!(out);
    Ok(ExitCode::SUCCESS)
}

/// Draws an index from softmax(logits / temperature); argmax at 0.
fn draw(logits: &[f32], temperature: f64, rng: &mut Pcg64Mcg) -> usize {
    if temperature == 0.0 {
        return train::argmax(logits);
    }
    let scaled: Vec<f32> = logits
        .iter()
        .map(|&v| (v as f64 / temperature) as f32)
        .collect();
    let p = train::softmax(&scaled);
    let u: f32 = rng.random();
    let mut acc = 0.0;
    for (i, &q) in p.iter().enumerate() {
        acc += q;
        if u < acc {
            return i;
        }
    }
    p.len().saturating_sub(1)
}
