//! `nnc predict FILE --weights W INPUT...`: classes and probabilities for
//! images (PNG, JPEG, BMP), CSV rows, `.npy` arrays or IDX image files.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::{ArrayD, IxDyn};
use nnc::ir::types::DType;
use nnc::runtime::data::{self, Tensor};
use nnc::runtime::train::{self, Feed, Task};

use super::pct;

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// The .nn file.
    pub file: PathBuf,
    /// A checkpoint written by `nnc train`.
    #[arg(long, short)]
    pub weights: PathBuf,
    /// Images (.png, .jpg, .bmp: resized to the model's input, scaled to
    /// [0, 1]), .csv files (one sample per row; a row with one value more
    /// than the model takes has its first value, a label, ignored), .npy
    /// arrays [N, ...] or IDX image files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[arg(long)]
    pub model: Option<String>,
    /// How many of the most likely classes to show.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// Invert grey levels of images (for dark digits on a light background;
    /// MNIST digits are light on dark).
    #[arg(long)]
    pub invert: bool,
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: PredictArgs, color: bool) -> Result<ExitCode, String> {
    let m = match super::load(&a.file, a.model.as_deref(), color) {
        Ok(m) => m,
        Err(None) => return Ok(ExitCode::from(1)),
        Err(Some(e)) => return Err(e),
    };
    let x_in = m
        .infer
        .data_inputs()
        .next()
        .ok_or_else(|| format!("the model `{}` has no data input", m.model.name))?
        .clone();
    if x_in.ty.dtype != DType::F32 {
        return Err(format!(
            "the model `{}` takes token indices; use `nnc sample` for text models",
            m.model.name
        ));
    }
    let sample: Vec<usize> = x_in.ty.shape.at(1)[1..].to_vec();
    let per: usize = sample.iter().product();
    // Every sample of every input, with a label for printing.
    let mut rows: Vec<(String, Vec<f32>)> = Vec::new();
    for path in &a.inputs {
        read_input(path, &sample, per, a.invert, &mut rows)?;
    }
    if rows.is_empty() {
        return Err("no samples in the inputs".into());
    }
    let batch = rows.len().min(256);
    let (mut session, _) =
        train::session_with_weights(&m, &a.weights, batch, super::threads(a.threads))
            .map_err(|e| e.to_string())?;
    let task = train::task_of(&m.model);
    for chunk in rows.chunks(batch) {
        let b = chunk.len();
        let mut shape = vec![b];
        shape.extend_from_slice(&sample);
        let flat: Vec<f32> = chunk.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let x =
            Tensor::F32(ArrayD::from_shape_vec(IxDyn(&shape), flat).map_err(|e| e.to_string())?);
        let feed = Feed::new(&session.infer_model, &x, None, b);
        let r = session
            .infer(&feed.inputs(), b)
            .map_err(|e| e.to_string())?;
        let out = r.outputs.first().cloned().unwrap_or_default();
        let k = out.len() / b.max(1);
        for ((name, _), o) in chunk.iter().zip(out.chunks(k.max(1))) {
            println!("{name}: {}", describe(task, o, a.top));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(task: Task, o: &[f32], top: usize) -> String {
    match task {
        Task::Classes(c) if o.len() == c => {
            let p = train::softmax(o);
            let mut idx: Vec<usize> = (0..c).collect();
            idx.sort_by(|&i, &j| p[j].total_cmp(&p[i]));
            let best = idx[0];
            let others: Vec<String> = idx
                .iter()
                .take(top.max(1))
                .map(|&i| format!("{i} {}", pct(p[i] as f64)))
                .collect();
            format!(
                "class {best} ({})  top: {}",
                pct(p[best] as f64),
                others.join(", ")
            )
        }
        Task::Binary => o
            .iter()
            .map(|&p| format!("{} (p = {p:.4})", u8::from(p > 0.5)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => {
            let vals: Vec<String> = o.iter().take(16).map(|v| format!("{v:.4}")).collect();
            format!(
                "[{}{}]",
                vals.join(", "),
                if o.len() > 16 { ", …" } else { "" }
            )
        }
    }
}

fn read_input(
    path: &Path,
    sample: &[usize],
    per: usize,
    invert: bool,
    rows: &mut Vec<(String, Vec<f32>)>,
) -> Result<(), String> {
    let name = path.display().to_string();
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" | "jpg" | "jpeg" | "bmp" => {
            rows.push((name, image_sample(path, sample, invert)?));
            Ok(())
        }
        "csv" => {
            let text = data::text::read_utf8(path).map_err(|e| e.to_string())?;
            let mut n = 0;
            for (i, line) in text.lines().enumerate() {
                let cells: Vec<&str> = line
                    .split(',')
                    .map(|c| c.trim().trim_matches('"'))
                    .collect();
                if line.trim().is_empty() {
                    continue;
                }
                let vals: Result<Vec<f32>, _> = cells.iter().map(|c| c.parse::<f32>()).collect();
                let Ok(vals) = vals else {
                    if n == 0 {
                        continue; // a header line
                    }
                    return Err(format!("{name}:{}: a cell is not a number", i + 1));
                };
                let vals = match vals.len() {
                    l if l == per => vals,
                    l if l == per + 1 => vals[1..].to_vec(),
                    l => {
                        return Err(format!(
                            "{name}:{}: {l} values, but the model takes {per} per sample",
                            i + 1
                        ));
                    }
                };
                n += 1;
                rows.push((format!("{name} row {n}"), vals));
            }
            Ok(())
        }
        _ => {
            let t = if ext == "npy" {
                data::npy::read_array(path).map_err(|e| e.to_string())?
            } else {
                Tensor::F32(data::idx::read_images(path).map_err(|e| e.to_string())?)
            };
            let a = t.to_f32();
            let n = a.shape().first().copied().unwrap_or(0);
            if n == 0 || a.len() != n * per {
                return Err(format!(
                    "{name}: an array of shape {:?} does not hold samples of {per} values ({sample:?})",
                    a.shape()
                ));
            }
            let flat: Vec<f32> = a.iter().copied().collect();
            for (i, s) in flat.chunks(per).enumerate() {
                rows.push((format!("{name}[{i}]"), s.to_vec()));
            }
            Ok(())
        }
    }
}

/// An image as one sample `[C, H, W]` (or a flat vector of `H·W` for an
/// MLP input), grey or RGB by the model's channels, values in [0, 1].
fn image_sample(path: &Path, sample: &[usize], invert: bool) -> Result<Vec<f32>, String> {
    let img = image::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (c, h, w) = match *sample {
        [c, h, w] => (c, h, w),
        [n] => {
            let side = (n as f64).sqrt().round() as usize;
            if side * side != n {
                return Err(format!(
                    "the model takes {n} values per sample, which is not a square image"
                ));
            }
            (1, side, side)
        }
        _ => {
            return Err(format!(
                "the model's input {sample:?} is not an image [C, H, W]"
            ));
        }
    };
    let img = img.resize_exact(w as u32, h as u32, image::imageops::FilterType::Triangle);
    let mut out = Vec::with_capacity(c * h * w);
    let flip = |v: f32| if invert { 1.0 - v } else { v };
    match c {
        1 => {
            let g = img.to_luma8();
            out.extend(g.pixels().map(|p| flip(p.0[0] as f32 / 255.0)));
        }
        3 => {
            let rgb = img.to_rgb8();
            for ch in 0..3 {
                out.extend(rgb.pixels().map(|p| flip(p.0[ch] as f32 / 255.0)));
            }
        }
        _ => {
            return Err(format!(
                "the model's images have {c} channels; images have 1 or 3"
            ));
        }
    }
    Ok(out)
}
