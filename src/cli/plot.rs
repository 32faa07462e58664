//! `--plot`: training and validation loss and accuracy per epoch, as PNG
//! or SVG (plotters; text in the bundled DejaVu Sans).

use std::path::Path;
use std::sync::Once;

use nnc::runtime::train::EpochRecord;
use plotters::coord::Shift;
use plotters::prelude::*;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Refuses a file name that is neither `.png` nor `.svg`, before training.
pub fn check_extension(path: &Path) -> Result<(), String> {
    match ext(path).as_str() {
        "png" | "svg" => Ok(()),
        _ => Err(format!(
            "--plot {}: the file name must end in .png or .svg",
            path.display()
        )),
    }
}

fn ext(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Draws the curves of `history` to `path`.
pub fn draw(path: &Path, model: &str, history: &[EpochRecord]) -> Result<(), String> {
    check_extension(path)?;
    register_font();
    let size = (1000, 420);
    let err = |e: String| format!("cannot draw {}: {e}", path.display());
    if ext(path) == "svg" {
        let root = SVGBackend::new(path, size).into_drawing_area();
        panels(&root, model, history).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))
    } else {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        panels(&root, model, history).map_err(err)?;
        root.present().map_err(|e| err(e.to_string()))
    }
}

type Series = Vec<(f64, f64)>;

fn panels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    model: &str,
    h: &[EpochRecord],
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let pick = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Series {
        h.iter()
            .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v)))
            .collect()
    };
    let train_loss = pick(&|r| Some(r.train_loss));
    let val_loss = pick(&|r| r.val_loss);
    let train_acc = pick(&|r| r.train_accuracy.map(|a| 100.0 * a));
    let val_acc = pick(&|r| r.val_accuracy.map(|a| 100.0 * a));
    let has_acc = !train_acc.is_empty() || !val_acc.is_empty();
    let areas = if has_acc {
        root.split_evenly((1, 2))
    } else {
        vec![root.clone()]
    };
    chart(
        &areas[0],
        &format!("{model}: loss"),
        "loss",
        &train_loss,
        &val_loss,
    )?;
    if has_acc {
        chart(
            &areas[1],
            &format!("{model}: accuracy"),
            "accuracy (%)",
            &train_acc,
            &val_acc,
        )?;
    }
    Ok(())
}

fn chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_label: &str,
    train: &Series,
    val: &Series,
) -> Result<(), String> {
    let all = train.iter().chain(val);
    let x_max = all.clone().map(|p| p.0).fold(1.0f64, f64::max);
    let (mut lo, mut hi) = all
        .map(|p| p.1)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut c = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(
            if x_max > 1.0 { 1.0..x_max } else { 0.5..1.5 },
            (lo - pad)..(hi + pad),
        )
        .map_err(e)?;
    c.configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_label)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    let blue = RGBColor(31, 119, 180);
    let orange = RGBColor(255, 127, 14);
    if !train.is_empty() {
        c.draw_series(LineSeries::new(train.iter().copied(), blue.stroke_width(2)))
            .map_err(e)?
            .label("training")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(2))
            });
    }
    if !val.is_empty() {
        c.draw_series(LineSeries::new(val.iter().copied(), orange.stroke_width(2)))
            .map_err(e)?
            .label("validation")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], orange.stroke_width(2))
            });
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(e)?;
    Ok(())
}
