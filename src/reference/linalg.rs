//! Matrix products with transposes and broadcast leading axes.

use ndarray::{Array2, ArrayD, Ix2, IxDyn, linalg::general_mat_mul};

use super::Real;

/// `a' @ b'` over the last two axes (transposed where asked), for every index
/// of the broadcast leading axes.
pub fn matmul<T: Real>(
    a: &ArrayD<T>,
    b: &ArrayD<T>,
    ta: bool,
    tb: bool,
    out_shape: &[usize],
) -> Result<ArrayD<T>, String> {
    let r = out_shape.len();
    let lead = &out_shape[..r - 2];
    let (m, n) = (out_shape[r - 2], out_shape[r - 1]);
    let l: usize = lead.iter().product();
    let operand = |x: &ArrayD<T>, t: bool| -> Result<Vec<Array2<T>>, String> {
        let xr = x.ndim();
        let (rows, cols) = (x.shape()[xr - 2], x.shape()[xr - 1]);
        let mut full = lead.to_vec();
        full.extend([rows, cols]);
        let b = x
            .broadcast(IxDyn(&full))
            .ok_or("leading axes do not broadcast")?;
        let flat = ArrayD::from_shape_vec(IxDyn(&[l, rows, cols]), b.iter().copied().collect())
            .map_err(|e| e.to_string())?;
        (0..l)
            .map(|i| {
                let mat = flat
                    .index_axis(ndarray::Axis(0), i)
                    .into_dimensionality::<Ix2>()
                    .map_err(|e| e.to_string())?;
                Ok(if t {
                    mat.t().to_owned()
                } else {
                    mat.to_owned()
                })
            })
            .collect()
    };
    let am = operand(a, ta)?;
    let bm = operand(b, tb)?;
    let mut out = Vec::with_capacity(l * m * n);
    for (x, y) in am.iter().zip(&bm) {
        let mut c = Array2::<T>::zeros((m, n));
        general_mat_mul(T::one(), x, y, T::zero(), &mut c);
        out.extend(c.iter().copied());
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), out).map_err(|e| e.to_string())
}
