//! IDX files, the format MNIST is distributed in, raw or gzip-compressed.
//!
//! An IDX file is a big-endian header — two zero bytes, a type code
//! (`0x08` = u8, `0x09` = i8, `0x0B` = i16, `0x0C` = i32, `0x0D` = f32,
//! `0x0E` = f64), the number of dimensions, then each dimension as a u32 —
//! followed by the values, row-major. Gzip files are recognised by their
//! first two bytes (`1f 8b`), whatever their name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use ndarray::{ArrayD, IxDyn};

use super::error::DataError;
use super::tensor::{Dataset, Tensor};

/// Element type of an IDX file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxType {
    /// `0x08`, unsigned byte.
    U8,
    /// `0x09`, signed byte.
    I8,
    /// `0x0B`, big-endian i16.
    I16,
    /// `0x0C`, big-endian i32.
    I32,
    /// `0x0D`, big-endian f32.
    F32,
    /// `0x0E`, big-endian f64.
    F64,
}

impl IdxType {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => IdxType::U8,
            0x09 => IdxType::I8,
            0x0B => IdxType::I16,
            0x0C => IdxType::I32,
            0x0D => IdxType::F32,
            0x0E => IdxType::F64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            IdxType::U8 | IdxType::I8 => 1,
            IdxType::I16 => 2,
            IdxType::I32 | IdxType::F32 => 4,
            IdxType::F64 => 8,
        }
    }
}

/// The raw content of an IDX file: element type, dimensions and the
/// big-endian element bytes (exactly `product(dims) * size` of them).
#[derive(Debug, Clone)]
pub struct IdxArray {
    /// Element type.
    pub dtype: IdxType,
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The element bytes, big-endian, row-major.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Every element converted to `f64`, in order.
    fn values_f64(&self) -> Vec<f64> {
        let d = &self.data;
        match self.dtype {
            IdxType::U8 => d.iter().map(|&b| f64::from(b)).collect(),
            IdxType::I8 => d.iter().map(|&b| f64::from(b as i8)).collect(),
            IdxType::I16 => d
                .chunks_exact(2)
                .map(|c| f64::from(i16::from_be_bytes([c[0], c[1]])))
                .collect(),
            IdxType::I32 => d
                .chunks_exact(4)
                .map(|c| f64::from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            IdxType::F32 => d
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
            IdxType::F64 => d
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_be_bytes(b)
                })
                .collect(),
        }
    }
}

/// Opens `path`, transparently decompressing gzip. Returns the reader and
/// whether it decompresses.
fn open(path: &Path) -> Result<(Box<dyn Read>, bool), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::new(file);
    let head = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((Box::new(MultiGzDecoder::new(reader)), true))
    } else {
        Ok((Box::new(reader), false))
    }
}

/// Reads as many bytes as are there, up to `buf.len()`; returns the count.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8], path: &Path, gz: bool) -> Result<usize, DataError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(path, e, gz)),
        }
    }
    Ok(filled)
}

fn read_error(path: &Path, e: std::io::Error, gz: bool) -> DataError {
    if gz {
        DataError::malformed(path, format!("corrupt or truncated gzip data ({e})"))
    } else {
        DataError::io(path, e)
    }
}

/// Reads any IDX file (raw or gzip) into its element type, dimensions and
/// bytes, checking the header and the size before allocating for the data.
pub fn read_array(path: &Path) -> Result<IdxArray, DataError> {
    let (mut r, gz) = open(path)?;
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut r, &mut magic, path, gz)?;
    if got < 4 {
        return Err(DataError::Truncated {
            file: path.to_path_buf(),
            expected: 4,
            actual: got as u64,
            decompressed: gz,
        });
    }
    let dtype = IdxType::from_code(magic[2]);
    let (Some(dtype), [0, 0, _, ndim @ 1..=16]) = (dtype, magic) else {
        return Err(DataError::BadMagic {
            file: path.to_path_buf(),
            found: format!("0x{:08x}", u32::from_be_bytes(magic)),
            expected: "an IDX header 0x0000TTDD (two zero bytes, a type code TT such as 08 \
                       for bytes, and 1 to 16 dimensions DD; MNIST images are 0x00000803, \
                       labels 0x00000801)"
                .into(),
        });
    };
    let ndim = usize::from(ndim);
    let header_len = 4 + 4 * ndim;
    let mut dim_bytes = vec![0u8; 4 * ndim];
    let got = read_up_to(&mut r, &mut dim_bytes, path, gz)?;
    if got < dim_bytes.len() {
        return Err(DataError::Truncated {
            file: path.to_path_buf(),
            expected: header_len as u64,
            actual: (4 + got) as u64,
            decompressed: gz,
        });
    }
    let dims: Vec<u64> = dim_bytes
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    let data_len = dims
        .iter()
        .try_fold(dtype.size() as u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= usize::MAX as u64 / 2)
        .ok_or_else(|| DataError::TooLarge {
            file: path.to_path_buf(),
            dims: dims.clone(),
        })?;
    let expected_total = header_len as u64 + data_len;
    if !gz {
        // For a plain file, compare with its size before reading anything.
        let actual = std::fs::metadata(path)
            .map_err(|e| DataError::io(path, e))?
            .len();
        check_size(path, expected_total, actual, false)?;
    }
    // Never trust the header with an allocation: grow with the data present.
    let mut data = Vec::with_capacity(data_len.min(1 << 26) as usize);
    (&mut r)
        .take(data_len + 1)
        .read_to_end(&mut data)
        .map_err(|e| read_error(path, e, gz))?;
    let actual = header_len as u64 + data.len() as u64;
    if actual > expected_total {
        // Count the surplus without holding it in memory.
        let rest =
            std::io::copy(&mut r, &mut std::io::sink()).map_err(|e| read_error(path, e, gz))?;
        check_size(path, expected_total, actual + rest, gz)?;
    }
    check_size(path, expected_total, actual, gz)?;
    Ok(IdxArray {
        dtype,
        dims: dims.iter().map(|&d| d as usize).collect(),
        data,
    })
}

fn check_size(path: &Path, expected: u64, actual: u64, gz: bool) -> Result<(), DataError> {
    if actual < expected {
        Err(DataError::Truncated {
            file: path.to_path_buf(),
            expected,
            actual,
            decompressed: gz,
        })
    } else if actual > expected {
        Err(DataError::TrailingData {
            file: path.to_path_buf(),
            expected,
            extra: actual - expected,
        })
    } else {
        Ok(())
    }
}

/// Reads an IDX image file as `f32`.
///
/// Bytes (`u8`) are scaled to `[0, 1]`; other types keep their values. A
/// 3-D file `[N, H, W]` becomes `[N, 1, H, W]` (one channel); other ranks
/// keep their shape.
pub fn read_images(path: &Path) -> Result<ArrayD<f32>, DataError> {
    let arr = read_array(path)?;
    let mut shape = arr.dims.clone();
    if shape.len() == 3 {
        shape.insert(1, 1);
    }
    let values: Vec<f32> = if arr.dtype == IdxType::U8 {
        arr.data.iter().map(|&b| f32::from(b) / 255.0).collect()
    } else {
        arr.values_f64().into_iter().map(|v| v as f32).collect()
    };
    ArrayD::from_shape_vec(IxDyn(&shape), values)
        .map_err(|e| DataError::malformed(path, format!("inconsistent dimensions: {e}")))
}

/// Reads a 1-D IDX label file (integer type) as `i32` class indices.
pub fn read_labels(path: &Path) -> Result<ArrayD<i32>, DataError> {
    let arr = read_array(path)?;
    if arr.dims.len() != 1 {
        return Err(DataError::malformed(
            path,
            format!(
                "a label file must have 1 dimension (magic 0x00000801) but this one has {} \
                 (is it an image file?)",
                arr.dims.len()
            ),
        ));
    }
    if matches!(arr.dtype, IdxType::F32 | IdxType::F64) {
        return Err(DataError::UnsupportedType {
            file: path.to_path_buf(),
            tensor: "the labels".into(),
            dtype: format!("{:?}", arr.dtype).to_lowercase(),
            supported: "an integer type: u8, i8, i16 or i32".into(),
        });
    }
    let values: Vec<i32> = arr.values_f64().into_iter().map(|v| v as i32).collect();
    ArrayD::from_shape_vec(IxDyn(&arr.dims), values)
        .map_err(|e| DataError::malformed(path, format!("inconsistent dimensions: {e}")))
}

/// Reads an image file and a label file into a [`Dataset`]: `x` is
/// `[N, 1, H, W]` in `[0, 1]` for MNIST-style files, `y` is `[N]` class
/// indices and `classes` is the largest label plus one.
pub fn read(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    let x = read_images(images)?;
    let y = read_labels(labels)?;
    let (n_x, n_y) = (x.shape()[0], y.len());
    if n_x != n_y {
        return Err(DataError::CountMismatch {
            inputs_file: images.to_path_buf(),
            inputs: n_x,
            labels_file: labels.to_path_buf(),
            labels: n_y,
        });
    }
    if n_x == 0 {
        return Err(DataError::Empty {
            file: images.to_path_buf(),
            what: "the file holds no images".into(),
        });
    }
    if let Some((i, &v)) = y.iter().enumerate().find(|&(_, &v)| v < 0) {
        return Err(DataError::LabelOutOfRange {
            file: labels.to_path_buf(),
            sample: i,
            label: i64::from(v),
            classes: y.iter().copied().max().map_or(0, |m| m.max(0) as usize + 1),
        });
    }
    let classes = y.iter().copied().max().map(|m| m as usize + 1);
    Ok(Dataset {
        x: Tensor::F32(x),
        y: Tensor::I32(y),
        classes,
        vocab: None,
    })
}

/// The image and label files of an MNIST-style directory, preferring the
/// training set (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`) and
/// falling back to the test set (`t10k-…`). Each name may end in `.gz`,
/// and `.idx3` may also be written with a dot (`train-images.idx3-ubyte`).
pub fn find_mnist(dir: &Path) -> Result<(PathBuf, PathBuf), DataError> {
    let mut looked_for = Vec::new();
    for set in ["train", "t10k"] {
        let images = find_one(dir, set, "images", "idx3", &mut looked_for);
        let labels = find_one(dir, set, "labels", "idx1", &mut looked_for);
        match (images, labels) {
            (Some(i), Some(l)) => return Ok((i, l)),
            (Some(i), None) | (None, Some(i)) => {
                return Err(DataError::MissingFile {
                    dir: dir.to_path_buf(),
                    what: format!(
                        "partner for {} (images and labels come in pairs)",
                        i.display()
                    ),
                    looked_for: looked_for.clone(),
                });
            }
            (None, None) => {}
        }
    }
    if !dir.is_dir() {
        return Err(DataError::io(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        ));
    }
    Err(DataError::MissingFile {
        dir: dir.to_path_buf(),
        what: "MNIST image and label files".into(),
        looked_for,
    })
}

fn find_one(
    dir: &Path,
    set: &str,
    kind: &str,
    idx: &str,
    looked_for: &mut Vec<String>,
) -> Option<PathBuf> {
    for sep in ["-", "."] {
        for ext in ["", ".gz"] {
            let name = format!("{set}-{kind}{sep}{idx}-ubyte{ext}");
            let path = dir.join(&name);
            looked_for.push(name);
            if path.is_file() {
                return Some(path);
            }
        }
    }
    None
}

/// Reads an MNIST-style directory (see [`find_mnist`]) into a [`Dataset`]
/// of `[N, 1, 28, 28]` images in `[0, 1]` and `[N]` labels, 10 classes.
pub fn read_mnist(dir: &Path) -> Result<Dataset, DataError> {
    let (images, labels) = find_mnist(dir)?;
    read(&images, &labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::data::testutil::TempDir;

    fn idx_bytes(code: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, code, dims.len() as u8];
        for d in dims {
            v.extend(d.to_be_bytes());
        }
        v.extend(data);
        v
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use flate2::Compression;
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_small_files_raw_and_gzip() {
        let t = TempDir::new("idx_small");
        let img = idx_bytes(8, &[2, 2, 3], &[0, 255, 51, 0, 0, 0, 1, 2, 3, 4, 5, 6]);
        let lab = idx_bytes(8, &[2], &[3, 7]);
        let (i, l) = (t.write("i", &img), t.write("l.gz", &gzip(&lab)));
        let d = read(&i, &l).unwrap();
        assert_eq!(d.x.shape(), &[2, 1, 2, 3]);
        let x = d.x.as_f32().unwrap();
        assert_eq!(x[[0, 0, 0, 1]], 1.0);
        assert!((x[[0, 0, 0, 2]] - 0.2).abs() < 1e-6);
        assert_eq!(d.y.as_i32().unwrap().as_slice().unwrap(), &[3, 7]);
        assert_eq!(d.classes, Some(8));
    }

    #[test]
    fn other_element_types() {
        let t = TempDir::new("idx_types");
        let mut data = Vec::new();
        for v in [1.5f32, -2.0] {
            data.extend(v.to_be_bytes());
        }
        let p = t.write("f", &idx_bytes(0x0D, &[2], &data));
        let a = read_images(&p).unwrap();
        assert_eq!(a.as_slice().unwrap(), &[1.5, -2.0]);
        assert!(matches!(
            read_labels(&p),
            Err(DataError::UnsupportedType { .. })
        ));
        let p = t.write("s", &idx_bytes(0x0B, &[2], &[0xff, 0xfe, 0, 9]));
        assert_eq!(read_labels(&p).unwrap().as_slice().unwrap(), &[-2, 9]);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let t = TempDir::new("idx_bad");
        let p = t.write("magic", b"\x12\x34\x08\x01\0\0\0\x01x");
        let e = read_array(&p).unwrap_err();
        assert!(matches!(e, DataError::BadMagic { .. }), "{e}");
        assert!(e.to_string().contains("0x12340801"), "{e}");

        let p = t.write("short", &[0, 0, 8]);
        assert!(matches!(read_array(&p), Err(DataError::Truncated { .. })));

        let p = t.write("dims", &[0, 0, 8, 3, 0, 0, 0, 1]);
        assert!(matches!(
            read_array(&p),
            Err(DataError::Truncated {
                expected: 16,
                actual: 8,
                ..
            })
        ));

        let p = t.write("trail", &idx_bytes(8, &[2], &[1, 2, 3]));
        assert!(matches!(
            read_array(&p),
            Err(DataError::TrailingData { extra: 1, .. })
        ));

        let p = t.write("trailgz", &gzip(&idx_bytes(8, &[2], &[1, 2, 3, 4])));
        assert!(matches!(
            read_array(&p),
            Err(DataError::TrailingData { extra: 2, .. })
        ));

        // 2^32-1 cubed bytes cannot be represented.
        let p = t.write("huge", &idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[]));
        assert!(matches!(read_array(&p), Err(DataError::TooLarge { .. })));
        // 10^12 bytes can be, but are not there: an error, not an allocation.
        let p = t.write("big", &idx_bytes(8, &[1_000_000, 1000, 1000], &[0; 10]));
        assert!(matches!(read_array(&p), Err(DataError::Truncated { .. })));
        let p = t.write(
            "biggz",
            &gzip(&idx_bytes(8, &[1_000_000, 1000, 1000], &[0; 10])),
        );
        assert!(matches!(
            read_array(&p),
            Err(DataError::Truncated {
                decompressed: true,
                ..
            })
        ));

        // A cut-off gzip stream.
        let z = gzip(&idx_bytes(8, &[100], &[7; 100]));
        let p = t.write("cutgz", &z[..z.len() / 2]);
        assert!(read_array(&p).is_err());

        // Labels given an image file.
        let p = t.write("img", &idx_bytes(8, &[1, 1, 1], &[0]));
        assert!(matches!(read_labels(&p), Err(DataError::Malformed { .. })));

        let e = read_array(&t.path("missing")).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
    }

    #[test]
    fn count_mismatch() {
        let t = TempDir::new("idx_count");
        let i = t.write("i", &idx_bytes(8, &[2, 1, 1], &[0, 0]));
        let l = t.write("l", &idx_bytes(8, &[3], &[0, 1, 2]));
        let e = read(&i, &l).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::CountMismatch {
                    inputs: 2,
                    labels: 3,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn finds_mnist_files() {
        let t = TempDir::new("idx_find");
        assert!(matches!(
            find_mnist(t.dir()),
            Err(DataError::MissingFile { .. })
        ));
        let img = t.write(
            "t10k-images-idx3-ubyte.gz",
            &gzip(&idx_bytes(8, &[1, 2, 2], &[0; 4])),
        );
        assert!(matches!(
            find_mnist(t.dir()),
            Err(DataError::MissingFile { .. })
        ));
        let lab = t.write("t10k-labels.idx1-ubyte", &idx_bytes(8, &[1], &[9]));
        assert_eq!(find_mnist(t.dir()).unwrap(), (img, lab));
        assert_eq!(read_mnist(t.dir()).unwrap().classes, Some(10));
    }
}
