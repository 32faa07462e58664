//! Plain text for character-level models.
//!
//! The text becomes a sequence of character indices into a vocabulary,
//! cut into non-overlapping windows of `T` characters: the input is a window
//! and the target is the same window shifted by one character.

use std::path::Path;

use ndarray::Array2;

use super::error::DataError;
use super::tensor::{Dataset, Tensor};

/// Reads `path` as UTF-8 text, naming the line, column and byte offset of
/// the first invalid byte if it is not.
pub fn read_utf8(path: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        let offset = e.utf8_error().valid_up_to();
        // The prefix is valid by construction; count lines and characters in it.
        let valid = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let line_start = valid.rfind('\n').map_or(0, |i| i + 1);
        DataError::NotUtf8 {
            file: path.to_path_buf(),
            line: valid.matches('\n').count() + 1,
            column: valid[line_start..].chars().count() + 1,
            offset,
            byte: bytes.get(offset).copied().unwrap_or(0),
        }
    })
}

/// The sorted distinct characters of `text`.
pub fn vocab_of(text: &str) -> Vec<char> {
    let mut v: Vec<char> = text.chars().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The index of each character of `text` in the sorted `vocab`, or the
/// first character that is not in it (with its 1-based line and column).
pub fn encode(text: &str, vocab: &[char]) -> Result<Vec<i32>, (char, usize, usize)> {
    let (mut line, mut column) = (1, 1);
    let mut out = Vec::with_capacity(text.len());
    for ch in text.chars() {
        match vocab.binary_search(&ch) {
            Ok(i) => out.push(i as i32),
            Err(_) => return Err((ch, line, column)),
        }
        if ch == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    Ok(out)
}

/// The characters at `indices` in `vocab`; indices out of range become `�`.
pub fn decode(indices: &[i32], vocab: &[char]) -> String {
    indices
        .iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .and_then(|i| vocab.get(i).copied())
                .unwrap_or(char::REPLACEMENT_CHARACTER)
        })
        .collect()
}

/// Reads a text file into sequences of `seq` characters.
///
/// The vocabulary is `vocab` if given (it is sorted and deduplicated
/// first), else the sorted distinct characters of the file. With `L`
/// characters there are `N = (L - 1) / seq` windows: `x` is `[N, seq]`
/// character indices starting at `0, seq, 2·seq, …` and `y` is `[N, seq]`
/// the indices of the next characters. `classes` is the vocabulary size.
pub fn read(path: &Path, seq: usize, vocab: Option<&[char]>) -> Result<Dataset, DataError> {
    if seq == 0 {
        return Err(DataError::InvalidArgument(
            "sequence length must be at least 1".into(),
        ));
    }
    let text = read_utf8(path)?;
    let vocab = match vocab {
        Some(v) => {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        }
        None => vocab_of(&text),
    };
    let ids = encode(&text, &vocab).map_err(|(ch, line, column)| DataError::UnknownChar {
        file: path.to_path_buf(),
        line,
        column,
        ch,
    })?;
    let n = ids.len().saturating_sub(1) / seq;
    if n == 0 {
        return Err(DataError::Empty {
            file: path.to_path_buf(),
            what: format!(
                "{} characters are too few for one sequence of {seq} plus its next character",
                ids.len()
            ),
        });
    }
    let x: Vec<i32> = ids[..n * seq].to_vec();
    let y: Vec<i32> = ids[1..=n * seq].to_vec();
    let shape_err = |e: ndarray::ShapeError| DataError::malformed(path, e.to_string());
    let x = Array2::from_shape_vec((n, seq), x).map_err(shape_err)?;
    let y = Array2::from_shape_vec((n, seq), y).map_err(shape_err)?;
    Ok(Dataset {
        x: Tensor::I32(x.into_dyn()),
        y: Tensor::I32(y.into_dyn()),
        classes: Some(vocab.len()),
        vocab: Some(vocab),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::data::testutil::TempDir;

    #[test]
    fn windows_and_next_chars() {
        let t = TempDir::new("text_ok");
        let p = t.write("t.txt", b"abcab\nc");
        let d = read(&p, 3, None).unwrap();
        assert_eq!(d.vocab.as_deref(), Some(&['\n', 'a', 'b', 'c'][..]));
        assert_eq!(d.classes, Some(4));
        assert_eq!(d.x.shape(), &[2, 3]);
        let x = d.x.as_i32().unwrap();
        let y = d.y.as_i32().unwrap();
        assert_eq!(x.as_slice().unwrap(), &[1, 2, 3, 1, 2, 0]);
        assert_eq!(y.as_slice().unwrap(), &[2, 3, 1, 2, 0, 3]);
        let v = d.vocab.unwrap();
        assert_eq!(decode(&[1, 2, 3, 0, 9], &v), "abc\n\u{fffd}");
    }

    #[test]
    fn given_vocabulary() {
        let t = TempDir::new("text_vocab");
        let p = t.write("t.txt", b"ba\nbz");
        let d = read(&p, 2, Some(&['b', 'a', 'z', 'q', '\n'])).unwrap();
        assert_eq!(d.classes, Some(5));
        assert_eq!(d.x.as_i32().unwrap().as_slice().unwrap(), &[2, 1, 0, 2]);
        let e = read(&p, 2, Some(&['a', 'b', '\n'])).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::UnknownChar {
                    line: 2,
                    column: 2,
                    ch: 'z',
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn errors() {
        let t = TempDir::new("text_bad");
        let p = t.write("u.txt", b"ok\nab\xc3(");
        let e = read(&p, 1, None).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::NotUtf8 {
                    line: 2,
                    column: 3,
                    offset: 5,
                    byte: 0xc3,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("u.txt:2:3"), "{e}");
        let p = t.write("s.txt", b"abc");
        assert!(matches!(read(&p, 3, None), Err(DataError::Empty { .. })));
        assert!(read(&p, 2, None).is_ok());
        assert!(matches!(
            read(&p, 0, None),
            Err(DataError::InvalidArgument(_))
        ));
    }
}
