//! Comma-separated numbers: one sample per line, one column of labels.
//!
//! Cells may be surrounded by spaces and by double quotes; blank lines are
//! skipped. Every cell must be a finite number.

use std::path::Path;

use ndarray::{Array1, Array2};

use super::error::DataError;
use super::tensor::{Dataset, Tensor};
use super::text::read_utf8;

/// Reads a CSV file of numbers into a [`Dataset`].
///
/// - `label_col` picks the label column: `0` is the first, `-1` the last.
/// - `header`: whether the first line holds column names (it is skipped).
///
/// `x` is `[N, F]` `f32` (all other columns, in order). If every label is a
/// non-negative integer, `y` is `[N]` `i32` and `classes` is the largest
/// label plus one; otherwise `y` is `[N]` `f32` targets and `classes` is
/// `None`.
pub fn read(path: &Path, label_col: isize, header: bool) -> Result<Dataset, DataError> {
    let text = read_utf8(path)?;
    let mut features: Vec<f32> = Vec::new();
    let mut labels: Vec<f64> = Vec::new();
    let mut width: Option<(usize, usize)> = None; // (cells per row, label index)
    let mut cells = Vec::new();
    for (i, line) in text.lines().enumerate().skip(usize::from(header)) {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        cells.clear();
        parse_row(path, line, line_no, &mut cells)?;
        let (n, label) = match width {
            Some(w) => w,
            None => {
                let w = (cells.len(), label_index(path, label_col, cells.len())?);
                width = Some(w);
                w
            }
        };
        if cells.len() != n {
            return Err(DataError::CsvRowLength {
                file: path.to_path_buf(),
                line: line_no,
                expected: n,
                found: cells.len(),
            });
        }
        for (j, &v) in cells.iter().enumerate() {
            if j == label {
                labels.push(v);
            } else {
                features.push(v as f32);
            }
        }
    }
    let Some((n_cells, _)) = width else {
        return Err(DataError::Empty {
            file: path.to_path_buf(),
            what: "no data rows".into(),
        });
    };
    let rows = labels.len();
    let x = Array2::from_shape_vec((rows, n_cells - 1), features)
        .map_err(|e| DataError::malformed(path, format!("inconsistent rows: {e}")))?;
    let is_class = labels
        .iter()
        .all(|&v| v >= 0.0 && v.fract() == 0.0 && v <= f64::from(i32::MAX - 1));
    let (y, classes) = if is_class {
        let y: Array1<i32> = labels.iter().map(|&v| v as i32).collect();
        let classes = y.iter().copied().max().map(|m| m as usize + 1);
        (Tensor::I32(y.into_dyn()), classes)
    } else {
        let y: Array1<f32> = labels.iter().map(|&v| v as f32).collect();
        (Tensor::F32(y.into_dyn()), None)
    };
    Ok(Dataset {
        x: Tensor::F32(x.into_dyn()),
        y,
        classes,
        vocab: None,
    })
}

/// Turns a possibly negative column number into an index into `n` cells.
fn label_index(path: &Path, label_col: isize, n: usize) -> Result<usize, DataError> {
    let idx = if label_col < 0 {
        n.checked_sub(label_col.unsigned_abs())
    } else {
        Some(label_col.unsigned_abs()).filter(|&i| i < n)
    };
    match idx {
        Some(i) if n >= 2 => Ok(i),
        Some(_) => Err(DataError::malformed(
            path,
            format!("rows have {n} cell; need a label column and at least one feature column"),
        )),
        None => Err(DataError::malformed(
            path,
            format!("label column {label_col} does not exist: rows have {n} cells"),
        )),
    }
}

/// Parses the cells of one line, reporting the first non-number with its
/// 1-based line and character column.
fn parse_row(path: &Path, line: &str, line_no: usize, out: &mut Vec<f64>) -> Result<(), DataError> {
    let mut column = 1; // character column where the current cell starts
    for cell in line.split(',') {
        let lead = cell.len() - cell.trim_start().len();
        let trimmed = cell.trim();
        let unquoted = trimmed
            .strip_prefix('"')
            .and_then(|c| c.strip_suffix('"'))
            .unwrap_or(trimmed)
            .trim();
        match unquoted.parse::<f64>() {
            Ok(v) if v.is_finite() => out.push(v),
            _ => {
                return Err(DataError::CsvNotANumber {
                    file: path.to_path_buf(),
                    line: line_no,
                    column: column + cell[..lead].chars().count(),
                    text: trimmed.to_string(),
                });
            }
        }
        column += cell.chars().count() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::data::testutil::TempDir;

    #[test]
    fn reads_classes_with_header_and_negative_column() {
        let t = TempDir::new("csv_ok");
        let p = t.write("a.csv", b"a,b,label\r\n1, 2.5,0\n3,4,\"2\"\n\n");
        let d = read(&p, -1, true).unwrap();
        assert_eq!(d.x.shape(), &[2, 2]);
        assert_eq!(d.x.as_f32().unwrap()[[0, 1]], 2.5);
        assert_eq!(d.y.as_i32().unwrap().as_slice().unwrap(), &[0, 2]);
        assert_eq!(d.classes, Some(3));
        let d = read(&p, 0, true).unwrap();
        assert_eq!(d.y.as_i32().unwrap().as_slice().unwrap(), &[1, 3]);
        assert_eq!(d.x.as_f32().unwrap()[[1, 1]], 2.0);
    }

    #[test]
    fn real_targets_stay_float() {
        let t = TempDir::new("csv_reg");
        let p = t.write("r.csv", b"1,0.5\n2,-1\n");
        let d = read(&p, 1, false).unwrap();
        assert_eq!(d.y.as_f32().unwrap().as_slice().unwrap(), &[0.5, -1.0]);
        assert_eq!(d.classes, None);
    }

    #[test]
    fn bad_cells_and_rows() {
        let t = TempDir::new("csv_bad");
        let p = t.write("b.csv", "1,2,3\n4,  x5,6\n".as_bytes());
        let e = read(&p, 0, false).unwrap_err();
        assert!(
            matches!(&e, DataError::CsvNotANumber { line: 2, column: 5, text, .. } if text == "x5"),
            "{e}"
        );
        assert!(e.to_string().contains("b.csv:2:5"), "{e}");

        let p = t.write("n.csv", b"1,nan\n");
        assert!(matches!(
            read(&p, 0, false),
            Err(DataError::CsvNotANumber { column: 3, .. })
        ));

        let p = t.write("e.csv", b"1,2\n3,\n");
        assert!(matches!(
            read(&p, 0, false),
            Err(DataError::CsvNotANumber {
                line: 2,
                column: 3,
                ..
            })
        ));

        let p = t.write("r.csv", b"1,2,3\n4,5\n");
        assert!(matches!(
            read(&p, 0, false),
            Err(DataError::CsvRowLength {
                line: 2,
                expected: 3,
                found: 2,
                ..
            })
        ));

        let p = t.write("c.csv", b"1,2\n");
        assert!(matches!(
            read(&p, 2, false),
            Err(DataError::Malformed { .. })
        ));
        assert!(matches!(
            read(&p, -3, false),
            Err(DataError::Malformed { .. })
        ));

        let p = t.write("h.csv", b"a,b\n");
        assert!(matches!(read(&p, 0, true), Err(DataError::Empty { .. })));

        let p = t.write("u.csv", b"1,2\n\xff,3\n");
        assert!(matches!(
            read(&p, 0, false),
            Err(DataError::NotUtf8 { line: 2, .. })
        ));
    }
}
