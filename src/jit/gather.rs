//! Gathering table rows by class index (`one_hot(x) @ W` after
//! [`crate::ir::rewrite`]) and its gradient, the scatter-add of rows into a
//! zeroed table. Each row is a contiguous run of `width` floats, so both are
//! copies or adds of whole rows; an index outside the table (the caller's
//! data is not trusted) picks a zero row or adds nothing.

use super::Ctx;
use super::helpers::Loc;
use crate::schedule::views::offsets;

#[derive(Debug, Clone)]
pub struct GatherDesc {
    pub scatter: bool,
    /// Rows of the table (V) and floats per row (D).
    pub table_rows: usize,
    pub width: usize,
    /// The indices' shape and strides (elements), enumerated row-major.
    pub dims: Vec<usize>,
    pub strides: Vec<isize>,
    pub idx: Loc,
    pub table: Loc,
    pub rows: Loc,
}

/// # Safety
/// Called by generated code with a live context and a descriptor it owns;
/// the scheduler made `table` [V, D] and `rows` [n, D] contiguous buffers
/// and `idx` a view of n i32 indices.
pub unsafe extern "C" fn nnc_gather(ctx: *const Ctx, d: *const GatherDesc) {
    unsafe {
        let d = &*d;
        let idx = d.idx.ptr(ctx) as *const i32;
        let n: usize = d.dims.iter().product();
        let table = std::slice::from_raw_parts_mut(d.table.ptr(ctx), d.table_rows * d.width);
        let rows = std::slice::from_raw_parts_mut(d.rows.ptr(ctx), n * d.width);
        if d.scatter {
            table.fill(0.0);
        }
        for (r, off) in offsets(&d.dims, &d.strides).enumerate() {
            let row = &mut rows[r * d.width..(r + 1) * d.width];
            let c = *idx.offset(off);
            let hit = usize::try_from(c).ok().filter(|&c| c < d.table_rows);
            match (hit, d.scatter) {
                (Some(c), false) => row.copy_from_slice(&table[c * d.width..(c + 1) * d.width]),
                (None, false) => row.fill(0.0),
                (Some(c), true) => {
                    for (t, &g) in table[c * d.width..(c + 1) * d.width].iter_mut().zip(&*row) {
                        *t += g;
                    }
                }
                (None, true) => {}
            }
        }
    }
}
