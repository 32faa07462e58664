//! NumPy `.npy` files, one array per file.
//!
//! Element types `f32`, `f64`, `u8`, `i32` and `i64` (either byte order) are
//! read. The header is checked against the file's size before any data is
//! allocated.

use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::ReadNpyExt;
use ndarray_npy::npy::header::Header;

use super::error::DataError;
use super::tensor::{Dataset, Tensor};

/// An array as stored in a file, before conversion to a [`Tensor`].
pub(super) enum Raw {
    F32(ArrayD<f32>),
    F64(ArrayD<f64>),
    U8(ArrayD<u8>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
}

/// Element types [`Raw`] can hold, in words, for error messages.
pub(super) const SUPPORTED: &str = "f32, f64, u8, i32 or i64";

impl Raw {
    /// As inputs: floats and bytes become `f32` (values kept, bytes not
    /// scaled), `i32`/`i64` become `i32` (token indices).
    pub(super) fn into_inputs(self, file: &Path, name: &str) -> Result<Tensor, DataError> {
        Ok(match self {
            Raw::F32(a) => Tensor::F32(a),
            Raw::F64(a) => Tensor::F32(a.mapv(|v| v as f32)),
            Raw::U8(a) => Tensor::F32(a.mapv(f32::from)),
            Raw::I32(a) => Tensor::I32(a),
            Raw::I64(a) => Tensor::I32(narrow(a, file, name)?),
        })
    }

    /// As targets: floats become `f32` targets (no classes); integers become
    /// `i32` class indices with `classes` = largest + 1, and must not be
    /// negative.
    pub(super) fn into_targets(
        self,
        file: &Path,
        name: &str,
    ) -> Result<(Tensor, Option<usize>), DataError> {
        let y = match self {
            Raw::F32(a) => return Ok((Tensor::F32(a), None)),
            Raw::F64(a) => return Ok((Tensor::F32(a.mapv(|v| v as f32)), None)),
            Raw::U8(a) => a.mapv(i32::from),
            Raw::I32(a) => a,
            Raw::I64(a) => narrow(a, file, name)?,
        };
        let per_sample = y.len() / y.shape().first().copied().unwrap_or(1).max(1);
        let max = y.iter().copied().max().unwrap_or(-1);
        if let Some((i, &v)) = y.iter().enumerate().find(|&(_, &v)| v < 0) {
            return Err(DataError::LabelOutOfRange {
                file: file.to_path_buf(),
                sample: i / per_sample.max(1),
                label: i64::from(v),
                classes: max.max(0) as usize + 1,
            });
        }
        let classes = usize::try_from(max).ok().map(|m| m + 1);
        Ok((Tensor::I32(y), classes))
    }
}

/// Converts `i64` to `i32`, failing on values that do not fit.
fn narrow(a: ArrayD<i64>, file: &Path, name: &str) -> Result<ArrayD<i32>, DataError> {
    if let Some(v) = a.iter().find(|&&v| i32::try_from(v).is_err()) {
        return Err(DataError::malformed(
            file,
            format!("{name} holds the value {v}, which does not fit in a 32-bit integer"),
        ));
    }
    Ok(a.mapv(|v| v as i32))
}

/// Checks the magic string and the header length field, so that the
/// header parser never allocates more than the file holds.
fn check_prefix(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if !bytes.starts_with(MAGIC) {
        let found: String = bytes.iter().take(6).map(|b| format!("{b:02x}")).collect();
        return Err(DataError::BadMagic {
            file: path.to_path_buf(),
            found: format!("0x{found}"),
            expected: "a .npy file starting with \\x93NUMPY".into(),
        });
    }
    let (len_at, len_size) = match bytes.get(6) {
        Some(1) => (8, 2),
        Some(2 | 3) => (8, 4),
        Some(v) => {
            return Err(DataError::malformed(
                path,
                format!(".npy format version {v} is not supported (1, 2 or 3 are)"),
            ));
        }
        None => (8, 2),
    };
    let Some(len_bytes) = bytes.get(len_at..len_at + len_size) else {
        return Err(DataError::Truncated {
            file: path.to_path_buf(),
            expected: (len_at + len_size) as u64,
            actual: bytes.len() as u64,
            decompressed: false,
        });
    };
    let header_len = len_bytes
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let needed = (len_at + len_size) as u64 + header_len;
    if needed > bytes.len() as u64 {
        return Err(DataError::Truncated {
            file: path.to_path_buf(),
            expected: needed,
            actual: bytes.len() as u64,
            decompressed: false,
        });
    }
    Ok(())
}

/// Reads one `.npy` file in its stored element type.
pub(super) fn read_raw(path: &Path) -> Result<Raw, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    check_prefix(path, &bytes)?;
    let mut rest: &[u8] = &bytes;
    let header = Header::from_reader(&mut rest)
        .map_err(|e| DataError::malformed(path, format!("bad .npy header: {e}")))?;
    let descr = header.type_descriptor.to_string();
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let code = descr.trim_start_matches(['<', '>', '|', '=']);
    let size: u64 = match code {
        "f4" | "i4" => 4,
        "f8" | "i8" => 8,
        "u1" => 1,
        _ => {
            return Err(DataError::UnsupportedType {
                file: path.to_path_buf(),
                tensor: "the array".into(),
                dtype: descr.to_string(),
                supported: SUPPORTED.into(),
            });
        }
    };
    let data_len = header
        .shape
        .iter()
        .try_fold(size, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| DataError::TooLarge {
            file: path.to_path_buf(),
            dims: header.shape.iter().map(|&d| d as u64).collect(),
        })?;
    let header_len = (bytes.len() - rest.len()) as u64;
    let actual = rest.len() as u64;
    if actual < data_len {
        return Err(DataError::Truncated {
            file: path.to_path_buf(),
            expected: header_len + data_len,
            actual: bytes.len() as u64,
            decompressed: false,
        });
    }
    if actual > data_len {
        return Err(DataError::TrailingData {
            file: path.to_path_buf(),
            expected: header_len + data_len,
            extra: actual - data_len,
        });
    }
    let bad =
        |e: ndarray_npy::ReadNpyError| DataError::malformed(path, format!("bad .npy data: {e}"));
    let src: &[u8] = &bytes;
    Ok(match code {
        "f4" => Raw::F32(ArrayD::read_npy(src).map_err(bad)?),
        "f8" => Raw::F64(ArrayD::read_npy(src).map_err(bad)?),
        "u1" => Raw::U8(ArrayD::read_npy(src).map_err(bad)?),
        "i4" => Raw::I32(ArrayD::read_npy(src).map_err(bad)?),
        _ => Raw::I64(ArrayD::read_npy(src).map_err(bad)?),
    })
}

/// Reads one `.npy` file as input data: floats and bytes become `f32`
/// (bytes are not scaled), `i32`/`i64` become `i32`.
pub fn read_array(path: &Path) -> Result<Tensor, DataError> {
    read_raw(path)?.into_inputs(path, "the array")
}

/// Reads inputs from `x` and targets from `y` (two `.npy` files).
///
/// `x` converts as in [`read_array`]. Integer `y` becomes `[N]` (or
/// `[N, ...]`) class indices with `classes` = largest label + 1; float `y`
/// becomes `f32` targets without classes.
pub fn read(x: &Path, y: &Path) -> Result<Dataset, DataError> {
    let xs = read_array(x)?;
    let (ys, classes) = read_raw(y)?.into_targets(y, "the labels")?;
    pair(x, xs, y, ys, classes)
}

/// Pairs inputs with targets, checking they have the same sample count.
pub(super) fn pair(
    x_file: &Path,
    x: Tensor,
    y_file: &Path,
    y: Tensor,
    classes: Option<usize>,
) -> Result<Dataset, DataError> {
    for (file, t, what) in [(x_file, &x, "inputs"), (y_file, &y, "labels")] {
        if t.shape().is_empty() {
            return Err(DataError::Shape {
                file: file.to_path_buf(),
                what: format!("the {what} have shape"),
                found: vec![],
                expected: "a data set needs a first axis of samples".into(),
            });
        }
    }
    if x.len() != y.len() {
        return Err(DataError::CountMismatch {
            inputs_file: x_file.to_path_buf(),
            inputs: x.len(),
            labels_file: y_file.to_path_buf(),
            labels: y.len(),
        });
    }
    if x.is_empty() {
        return Err(DataError::Empty {
            file: x_file.to_path_buf(),
            what: "no samples".into(),
        });
    }
    Ok(Dataset {
        x,
        y,
        classes,
        vocab: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::data::testutil::TempDir;
    use ndarray::{arr1, arr2};
    use ndarray_npy::write_npy;

    /// A version 1.0 `.npy` file with header dictionary `dict`, padded to 64 bytes.
    fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut h = dict.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.bytes());
        b.extend(data);
        b
    }

    #[test]
    fn reads_types() {
        let t = TempDir::new("npy_ok");
        let (x, y) = (t.path("x.npy"), t.path("y.npy"));
        write_npy(&x, &arr2(&[[1.5f64, 2.0], [3.0, 4.0], [5.0, 6.0]])).unwrap();
        write_npy(&y, &arr1(&[0i64, 4, 2])).unwrap();
        let d = read(&x, &y).unwrap();
        assert_eq!(d.x.as_f32().unwrap()[[0, 0]], 1.5);
        assert_eq!(d.y.as_i32().unwrap().as_slice().unwrap(), &[0, 4, 2]);
        assert_eq!(d.classes, Some(5));

        write_npy(&x, &arr2(&[[255u8], [0], [7]])).unwrap();
        write_npy(&y, &arr1(&[0.5f32, 1.0, 2.0])).unwrap();
        let d = read(&x, &y).unwrap();
        assert_eq!(d.x.as_f32().unwrap()[[0, 0]], 255.0);
        assert_eq!(d.classes, None);
        assert!(d.y.as_f32().is_some());

        write_npy(&x, &arr2(&[[1i32, 2]])).unwrap();
        assert_eq!(read_array(&x).unwrap().dtype(), "i32");
    }

    #[test]
    fn malformed_files() {
        let t = TempDir::new("npy_bad");
        let (x, y) = (t.path("x.npy"), t.path("y.npy"));
        write_npy(&x, &arr2(&[[1.0f32, 2.0], [3.0, 4.0]])).unwrap();
        write_npy(&y, &arr1(&[0u8, 1, 2])).unwrap();
        assert!(matches!(
            read(&x, &y),
            Err(DataError::CountMismatch {
                inputs: 2,
                labels: 3,
                ..
            })
        ));
        write_npy(&y, &arr1(&[0i32, -1])).unwrap();
        assert!(matches!(
            read(&x, &y),
            Err(DataError::LabelOutOfRange {
                sample: 1,
                label: -1,
                ..
            })
        ));
        write_npy(&y, &arr1(&[0i64, 1 << 40])).unwrap();
        assert!(matches!(read(&x, &y), Err(DataError::Malformed { .. })));
        write_npy(&y, &arr1(&[0i16, 1])).unwrap();
        assert!(matches!(
            read(&x, &y),
            Err(DataError::UnsupportedType { .. })
        ));

        let full = std::fs::read(&x).unwrap();
        let p = t.write("cut.npy", &full[..full.len() - 3]);
        assert!(matches!(read_array(&p), Err(DataError::Truncated { .. })));
        let p = t.write("hdr.npy", &full[..20]);
        assert!(matches!(read_array(&p), Err(DataError::Truncated { .. })));
        let p = t.write("magic.npy", b"PK\x03\x04 not npy");
        assert!(matches!(read_array(&p), Err(DataError::BadMagic { .. })));

        // A header claiming a huge shape: an error, not an allocation.
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 2), }";
        let p = t.write("huge.npy", &npy_bytes(dict, &[0; 8]));
        let e = read_array(&p).unwrap_err();
        assert!(matches!(e, DataError::Truncated { .. }), "{e}");
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }";
        let p = t.write("huger.npy", &npy_bytes(dict, &[0; 8]));
        let e = read_array(&p).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { .. }), "{e}");
        // A header length field pointing past the end of the file.
        let mut b = npy_bytes(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[0; 4],
        );
        b[8] = 0xff;
        b[9] = 0xff;
        let p = t.write("hlen.npy", &b);
        assert!(matches!(read_array(&p), Err(DataError::Truncated { .. })));
        let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
        let p = t.write("trail.npy", &npy_bytes(dict, &[0; 12]));
        assert!(matches!(
            read_array(&p),
            Err(DataError::TrailingData { extra: 4, .. })
        ));
        let p = t.write("garbage.npy", &npy_bytes("{'descr': nonsense", &[]));
        assert!(matches!(read_array(&p), Err(DataError::Malformed { .. })));
    }
}
