//! View algebra: layout ops as strides over an existing buffer.

use super::{Access, View};

/// Row-major strides of a shape.
pub fn row_major(shape: &[usize]) -> Vec<isize> {
    let mut s = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i] as isize;
    }
    s
}

/// The element offsets of a strided tensor, in row-major order.
pub fn offsets<'a>(shape: &'a [usize], strides: &'a [isize]) -> impl Iterator<Item = isize> + 'a {
    let n: usize = shape.iter().product();
    let mut at = vec![0usize; shape.len()];
    (0..n).map(move |_| {
        let off = at.iter().zip(strides).map(|(&i, &s)| i as isize * s).sum();
        for k in (0..at.len()).rev() {
            at[k] += 1;
            if at[k] < shape[k] {
                break;
            }
            at[k] = 0;
        }
        off
    })
}

pub fn transpose(v: &View, perm: &[usize]) -> View {
    View {
        base: v.base,
        offset: v.offset,
        shape: perm.iter().map(|&p| v.shape[p]).collect(),
        strides: perm.iter().map(|&p| v.strides[p]).collect(),
        dtype: v.dtype,
    }
}

pub fn slice(v: &View, axis: usize, start: usize, end: usize) -> View {
    let mut out = v.clone();
    out.offset += start as isize * v.strides[axis];
    out.shape[axis] = end - start;
    out
}

/// Broadcasts to `shape` (NumPy rules): new leading axes and axes of size 1
/// get stride 0.
pub fn expand(v: &View, shape: &[usize]) -> View {
    let extra = shape.len() - v.shape.len();
    let mut strides = vec![0isize; shape.len()];
    for (i, s) in strides.iter_mut().enumerate().skip(extra) {
        let j = i - extra;
        *s = if v.shape[j] == shape[i] {
            v.strides[j]
        } else {
            0
        };
    }
    View {
        base: v.base,
        offset: v.offset,
        shape: shape.to_vec(),
        strides,
        dtype: v.dtype,
    }
}

/// The same elements with another shape, when expressible as strides: always
/// for row-major views, and for views whose merged/split axes are contiguous
/// with each other. `None` means a copy is needed first.
pub fn reshape(v: &View, shape: &[usize]) -> Option<View> {
    if v.is_contiguous() {
        return Some(View {
            base: v.base,
            offset: v.offset,
            shape: shape.to_vec(),
            strides: row_major(shape),
            dtype: v.dtype,
        });
    }
    // NumPy's no-copy reshape: match groups of old and new axes with equal
    // element counts; the old axes of a group must nest (be contiguous with
    // each other). Size-1 axes are left out and get stride 0.
    let (od, os): (Vec<usize>, Vec<isize>) = v
        .shape
        .iter()
        .zip(&v.strides)
        .filter(|(n, _)| **n != 1)
        .map(|(n, s)| (*n, *s))
        .unzip();
    let keep: Vec<usize> = (0..shape.len()).filter(|&i| shape[i] != 1).collect();
    let nd: Vec<usize> = keep.iter().map(|&i| shape[i]).collect();
    if od.iter().product::<usize>() != nd.iter().product::<usize>() {
        return None;
    }
    let mut ns = vec![0isize; nd.len()];
    let (mut oi, mut ni) = (0usize, 0usize);
    while oi < od.len() && ni < nd.len() {
        let (mut oj, mut nj) = (oi + 1, ni + 1);
        let (mut op, mut np) = (od[oi], nd[ni]);
        while op != np {
            if np < op {
                np *= *nd.get(nj)?;
                nj += 1;
            } else {
                op *= *od.get(oj)?;
                oj += 1;
            }
        }
        for k in oi..oj - 1 {
            if os[k] != od[k + 1] as isize * os[k + 1] {
                return None;
            }
        }
        ns[nj - 1] = os[oj - 1];
        for k in (ni + 1..nj).rev() {
            ns[k - 1] = ns[k] * nd[k] as isize;
        }
        oi = oj;
        ni = nj;
    }
    let mut strides = vec![0isize; shape.len()];
    for (k, &i) in keep.iter().enumerate() {
        strides[i] = ns[k];
    }
    Some(View {
        base: v.base,
        offset: v.offset,
        shape: shape.to_vec(),
        strides,
        dtype: v.dtype,
    })
}

/// Reads a view inside a loop over `dims`: broadcast from the right.
pub fn access(v: &View, dims: &[usize]) -> Access {
    let e = expand(v, dims);
    Access {
        base: e.base,
        offset: e.offset,
        strides: e.strides,
        dtype: e.dtype,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::types::DType;
    use crate::schedule::Base;

    fn v(shape: &[usize]) -> View {
        View::contiguous(Base::Region(0), shape, DType::F32)
    }

    #[test]
    fn transpose_then_reshape_needs_a_copy_only_when_axes_cross() {
        let t = transpose(&v(&[2, 3, 4]), &[0, 2, 1]);
        assert!(reshape(&t, &[2, 12]).is_none());
        // Merging the leading axes of a transposed-last-two view is fine.
        let t2 = transpose(&v(&[4, 5]), &[1, 0]);
        let r = reshape(&t2, &[5, 4, 1]).unwrap();
        assert_eq!(r.strides, vec![1, 5, 0]);
    }

    #[test]
    fn slice_offsets_and_expand_zero_strides() {
        let s = slice(&v(&[2, 6]), 1, 2, 5);
        assert_eq!(
            (s.offset, s.shape.clone(), s.strides.clone()),
            (2, vec![2, 3], vec![6, 1])
        );
        let e = expand(&v(&[1, 3]), &[4, 2, 3]);
        assert_eq!(e.strides, vec![0, 0, 1]);
    }

    #[test]
    fn reshape_of_strided_rows() {
        // Rows of a [B, T, H] buffer taken at one t: [B, H] with row stride T·H.
        let full = v(&[2, 5, 3]);
        let step = slice(&full, 1, 1, 2);
        let r = reshape(&step, &[2, 3]).unwrap();
        assert_eq!(r.strides, vec![15, 1]);
        assert_eq!(r.offset, 3);
    }
}
