//! Tensor types: an element type and a static shape whose dimensions are numbers
//! or multiples of the batch size `B`, which stays symbolic until compile time.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// Class indices (labels, tokens).
    I32,
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
        })
    }
}

/// One dimension: `n`, or `n * B` when `batch` is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dim {
    pub n: usize,
    pub batch: bool,
}

impl Dim {
    pub const B: Dim = Dim { n: 1, batch: true };

    pub const fn fixed(n: usize) -> Dim {
        Dim { n, batch: false }
    }

    /// The number of elements along this dimension for a concrete batch size.
    pub fn at(self, batch: usize) -> usize {
        if self.batch {
            self.n.saturating_mul(batch)
        } else {
            self.n
        }
    }

    /// The size when it does not depend on the batch.
    pub fn known(self) -> Option<usize> {
        (!self.batch).then_some(self.n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.batch, self.n) {
            (false, n) => write!(f, "{n}"),
            (true, 1) => f.write_str("B"),
            (true, n) => write!(f, "B*{n}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn new(dims: Vec<Dim>) -> Shape {
        Shape(dims)
    }

    pub fn fixed(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&n| Dim::fixed(n)).collect())
    }

    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Dimension `axis`, counting from the end when negative.
    pub fn dim(&self, axis: isize) -> Option<Dim> {
        let i = self.axis(axis)?;
        self.0.get(i).copied()
    }

    /// Normalises a possibly negative axis.
    pub fn axis(&self, axis: isize) -> Option<usize> {
        let r = self.rank() as isize;
        let a = if axis < 0 { axis + r } else { axis };
        (0..r).contains(&a).then_some(a as usize)
    }

    /// Number of elements as `(n, batch_power)`: `n * B^power`; `None` on overflow.
    pub fn numel_parts(&self) -> Option<(usize, u32)> {
        let mut n: usize = 1;
        let mut p = 0;
        for d in &self.0 {
            n = n.checked_mul(d.n)?;
            p += d.batch as u32;
        }
        Some((n, p))
    }

    /// Number of elements for a concrete batch size; `None` on overflow.
    pub fn numel_at(&self, batch: usize) -> Option<usize> {
        self.0
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(d.at(batch)))
    }

    /// Concrete dimensions for a batch size.
    pub fn at(&self, batch: usize) -> Vec<usize> {
        self.0.iter().map(|d| d.at(batch)).collect()
    }

    pub fn has_batch(&self) -> bool {
        self.0.iter().any(|d| d.batch)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn f32(shape: Shape) -> TensorType {
        TensorType {
            dtype: DType::F32,
            shape,
        }
    }

    pub fn i32(shape: Shape) -> TensorType {
        TensorType {
            dtype: DType::I32,
            shape,
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.dtype {
            DType::F32 => write!(f, "{}", self.shape),
            DType::I32 => write!(f, "{} i32", self.shape),
        }
    }
}
