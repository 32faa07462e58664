//! The one error type of the data layer.
//!
//! Every variant that comes from a file names that file and says, in words,
//! what is wrong with it, so that the message can be shown to a user as is.

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading, checking or transforming data.
///
/// Readers never panic on file content: a malformed file always ends up as
/// one of these variants.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}", file.display())]
    Io {
        /// The file or directory.
        file: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A directory lacks the files a reader looks for.
    #[error("{}: no {what} found (looked for {})", dir.display(), looked_for.join(", "))]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// What was wanted, e.g. "MNIST images".
        what: String,
        /// The file names tried.
        looked_for: Vec<String>,
    },

    /// The first bytes of the file are not those of the expected format.
    #[error("{}: wrong magic number {found}: expected {expected}", file.display())]
    BadMagic {
        /// The file.
        file: PathBuf,
        /// The bytes found, written in hex.
        found: String,
        /// What a file of the expected kind starts with.
        expected: String,
    },

    /// The file is shorter than its header says.
    #[error(
        "{}: truncated: its header describes {expected} bytes{} but it has only {actual}",
        file.display(),
        if *decompressed { " (after decompression)" } else { "" }
    )]
    Truncated {
        /// The file.
        file: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes actually present.
        actual: u64,
        /// Whether the sizes are of the decompressed (gzip) content.
        decompressed: bool,
    },

    /// The file is longer than its header says.
    #[error(
        "{}: {extra} unexpected bytes after the {expected} bytes its header describes",
        file.display()
    )]
    TrailingData {
        /// The file.
        file: PathBuf,
        /// Bytes the header implies.
        expected: u64,
        /// Bytes beyond that.
        extra: u64,
    },

    /// The header claims dimensions whose total size cannot be represented.
    #[error("{}: header claims dimensions {dims:?}, too large to be a real data set", file.display())]
    TooLarge {
        /// The file.
        file: PathBuf,
        /// The claimed dimensions.
        dims: Vec<u64>,
    },

    /// The inputs and the labels describe different numbers of samples.
    #[error(
        "{} has {inputs} samples but {} has {labels} labels; they must match",
        inputs_file.display(),
        labels_file.display()
    )]
    CountMismatch {
        /// Where the inputs come from.
        inputs_file: PathBuf,
        /// Number of inputs.
        inputs: usize,
        /// Where the labels come from.
        labels_file: PathBuf,
        /// Number of labels.
        labels: usize,
    },

    /// The file is not valid UTF-8 text.
    #[error(
        "{}:{line}:{column}: not UTF-8 text (invalid byte 0x{byte:02x} at byte offset {offset})",
        file.display()
    )]
    NotUtf8 {
        /// The file.
        file: PathBuf,
        /// 1-based line of the bad byte.
        line: usize,
        /// 1-based column (in characters) of the bad byte.
        column: usize,
        /// 0-based byte offset of the bad byte.
        offset: usize,
        /// The bad byte.
        byte: u8,
    },

    /// A class label is negative or not below the number of classes.
    #[error(
        "{}: label {label} of sample {sample} is out of range: labels must be in 0..{classes}",
        file.display()
    )]
    LabelOutOfRange {
        /// The file.
        file: PathBuf,
        /// 0-based sample index.
        sample: usize,
        /// The offending label.
        label: i64,
        /// The number of classes (labels must be below it).
        classes: usize,
    },

    /// A CSV cell that should hold a number does not.
    #[error("{}:{line}:{column}: `{text}` is not a finite number", file.display())]
    CsvNotANumber {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (in characters) where the cell starts.
        column: usize,
        /// The cell's text.
        text: String,
    },

    /// A CSV row has a different number of cells than the first row.
    #[error("{}:{line}: row has {found} cells but the first row has {expected}", file.display())]
    CsvRowLength {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// Cells in the first data row.
        expected: usize,
        /// Cells in this row.
        found: usize,
    },

    /// A character of a text file is not in the given vocabulary.
    #[error("{}:{line}:{column}: character {ch:?} is not in the vocabulary", file.display())]
    UnknownChar {
        /// The file.
        file: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column in characters.
        column: usize,
        /// The character.
        ch: char,
    },

    /// The file holds no samples (or too few for what was asked).
    #[error("{}: {what}", file.display())]
    Empty {
        /// The file.
        file: PathBuf,
        /// What is missing, e.g. "no data rows".
        what: String,
    },

    /// An element type the reader cannot convert.
    #[error("{}: {tensor} has element type {dtype}, which nnc cannot read (use {supported})", file.display())]
    UnsupportedType {
        /// The file.
        file: PathBuf,
        /// Which tensor, e.g. "x" or "the images".
        tensor: String,
        /// The type found.
        dtype: String,
        /// The types that work.
        supported: String,
    },

    /// A named tensor is not in a safetensors file.
    #[error("{}: no tensor named `{name}` (the file has: {})", file.display(), names_or_none(available))]
    MissingTensor {
        /// The file.
        file: PathBuf,
        /// The missing name.
        name: String,
        /// Names that are there.
        available: Vec<String>,
    },

    /// Data has a shape other than the model or the operation expects.
    #[error("{}: {what} {} but {expected}", file.display(), Shape(found))]
    Shape {
        /// The file (or directory) the data came from.
        file: PathBuf,
        /// What has the wrong shape, e.g. "the inputs have per-sample shape".
        what: String,
        /// The shape found.
        found: Vec<usize>,
        /// What was expected, in words, e.g. "the model expects [1, 28, 28]".
        expected: String,
    },

    /// Any other structural problem with a file, described in words.
    #[error("{}: {message}", file.display())]
    Malformed {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },

    /// An argument (not a file) is invalid, e.g. a validation fraction of 1.5.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl DataError {
    /// An I/O error on `file`.
    pub fn io(file: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            file: file.to_path_buf(),
            source,
        }
    }

    /// A structural problem with `file`, described by `message`.
    pub fn malformed(file: &Path, message: impl Into<String>) -> Self {
        DataError::Malformed {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }
}

fn names_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no tensors".to_string()
    } else {
        names.join(", ")
    }
}

/// Displays a shape as `[1, 28, 28]`.
pub(crate) struct Shape<'a>(pub &'a [usize]);

impl fmt::Display for Shape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_problem() {
        let e = DataError::Truncated {
            file: PathBuf::from("a/b.idx"),
            expected: 100,
            actual: 40,
            decompressed: true,
        };
        let s = e.to_string();
        assert!(s.contains("a/b.idx"), "{s}");
        assert!(s.contains("100") && s.contains("40"), "{s}");
        assert!(s.contains("decompression"), "{s}");

        let e = DataError::CsvNotANumber {
            file: PathBuf::from("d.csv"),
            line: 3,
            column: 7,
            text: "abc".into(),
        };
        assert_eq!(e.to_string(), "d.csv:3:7: `abc` is not a finite number");

        let e = DataError::Shape {
            file: PathBuf::from("m"),
            what: "the inputs have per-sample shape".into(),
            found: vec![1, 8, 8],
            expected: "the model expects [1, 28, 28]".into(),
        };
        assert_eq!(
            e.to_string(),
            "m: the inputs have per-sample shape [1, 8, 8] but the model expects [1, 28, 28]"
        );

        let e = DataError::MissingTensor {
            file: PathBuf::from("t.safetensors"),
            name: "x".into(),
            available: vec![],
        };
        assert!(e.to_string().contains("no tensors"));
    }
}
