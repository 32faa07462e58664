//! Data sets stored as two tensors of a `.safetensors` file.

use std::path::Path;

use ::safetensors::{Dtype, SafeTensors};
use ndarray::{ArrayD, IxDyn};

use super::error::DataError;
use super::npy::{Raw, SUPPORTED, pair};
use super::tensor::{Dataset, Tensor};

/// Reads a data set from the tensors named `x` and `y` of a safetensors file.
pub fn read(path: &Path) -> Result<Dataset, DataError> {
    read_named(path, "x", "y")
}

/// Reads a data set from the tensors `x_name` (inputs) and `y_name`
/// (targets) of a safetensors file.
///
/// Inputs: floats and `u8` become `f32` (bytes are not scaled), `i32`/`i64`
/// become `i32`. Targets: integers become class indices with `classes` =
/// largest + 1, floats become `f32` targets.
pub fn read_named(path: &Path, x_name: &str, y_name: &str) -> Result<Dataset, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| DataError::malformed(path, format!("not a valid safetensors file: {e}")))?;
    let x = raw(path, &st, x_name)?.into_inputs(path, x_name)?;
    let (y, classes) = raw(path, &st, y_name)?.into_targets(path, y_name)?;
    pair(path, x, path, y, classes)
}

/// Reads the tensor `name` of a safetensors file as input data.
pub fn read_tensor(path: &Path, name: &str) -> Result<Tensor, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| DataError::malformed(path, format!("not a valid safetensors file: {e}")))?;
    raw(path, &st, name)?.into_inputs(path, name)
}

/// Decodes little-endian elements of `N` bytes.
fn le<const N: usize, T>(data: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

fn raw(path: &Path, st: &SafeTensors<'_>, name: &str) -> Result<Raw, DataError> {
    let view = st.tensor(name).map_err(|_| {
        let mut available: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        available.sort();
        DataError::MissingTensor {
            file: path.to_path_buf(),
            name: name.to_string(),
            available,
        }
    })?;
    let shape = IxDyn(view.shape());
    let data = view.data();
    let bad = |e: ndarray::ShapeError| {
        DataError::malformed(
            path,
            format!("tensor `{name}`: data does not match its shape ({e})"),
        )
    };
    Ok(match view.dtype() {
        Dtype::F32 => {
            Raw::F32(ArrayD::from_shape_vec(shape, le(data, f32::from_le_bytes)).map_err(bad)?)
        }
        Dtype::F64 => {
            Raw::F64(ArrayD::from_shape_vec(shape, le(data, f64::from_le_bytes)).map_err(bad)?)
        }
        Dtype::U8 => Raw::U8(ArrayD::from_shape_vec(shape, data.to_vec()).map_err(bad)?),
        Dtype::I32 => {
            Raw::I32(ArrayD::from_shape_vec(shape, le(data, i32::from_le_bytes)).map_err(bad)?)
        }
        Dtype::I64 => {
            Raw::I64(ArrayD::from_shape_vec(shape, le(data, i64::from_le_bytes)).map_err(bad)?)
        }
        other => {
            return Err(DataError::UnsupportedType {
                file: path.to_path_buf(),
                tensor: format!("tensor `{name}`"),
                dtype: format!("{other:?}"),
                supported: SUPPORTED.into(),
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::data::testutil::TempDir;
    use ::safetensors::tensor::TensorView;

    fn file(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        ::safetensors::serialize(views, None).unwrap()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_named_tensors() {
        let t = TempDir::new("st_ok");
        let b = file(&[
            ("x", Dtype::F32, vec![2, 2], f32s(&[1.0, 2.0, 3.0, 4.0])),
            (
                "y",
                Dtype::I64,
                vec![2],
                [1i64, 3].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            ("t", Dtype::F32, vec![2], f32s(&[0.5, 0.25])),
        ]);
        let p = t.write("d.safetensors", &b);
        let d = read(&p).unwrap();
        assert_eq!(d.x.as_f32().unwrap()[[1, 0]], 3.0);
        assert_eq!(d.y.as_i32().unwrap().as_slice().unwrap(), &[1, 3]);
        assert_eq!(d.classes, Some(4));
        let d = read_named(&p, "x", "t").unwrap();
        assert_eq!(d.classes, None);
        assert_eq!(d.y.as_f32().unwrap().as_slice().unwrap(), &[0.5, 0.25]);
    }

    #[test]
    fn malformed() {
        let t = TempDir::new("st_bad");
        let b = file(&[
            ("x", Dtype::F32, vec![3], f32s(&[1.0, 2.0, 3.0])),
            ("y", Dtype::U8, vec![2], vec![0, 1]),
            ("h", Dtype::F16, vec![1], vec![0, 0]),
        ]);
        let p = t.write("d.safetensors", &b);
        assert!(matches!(
            read(&p),
            Err(DataError::CountMismatch {
                inputs: 3,
                labels: 2,
                ..
            })
        ));
        let e = read_named(&p, "images", "y").unwrap_err();
        assert!(e.to_string().contains("h, x, y"), "{e}");
        assert!(matches!(
            read_named(&p, "h", "y"),
            Err(DataError::UnsupportedType { .. })
        ));
        let p = t.write("cut.safetensors", &b[..b.len() - 1]);
        assert!(matches!(read(&p), Err(DataError::Malformed { .. })));
        let p = t.write("junk.safetensors", &[0xff; 16]);
        assert!(matches!(read(&p), Err(DataError::Malformed { .. })));
    }
}
