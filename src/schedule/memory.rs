//! Memory planning: every stored value gets a place in one arena, allocated
//! once; values whose lifetimes do not overlap share space.
//!
//! A linear scan in order of first write: buffers whose last reader has run
//! free their block, and each new buffer takes the smallest free block that
//! fits (best fit), or grows the arena. Blocks are aligned to 64 bytes.

/// Alignment of every buffer, in 4-byte elements (64 bytes: a cache line).
const ALIGN: usize = 16;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Places buffers of `sizes` (elements) with lifetimes `life` = (first
/// step, last step); returns each buffer's offset and the arena size. Two
/// buffers share space only if one's last step is before the other's first.
pub fn place(sizes: &[usize], life: &[(usize, usize)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&b| (life[b].0, std::cmp::Reverse(sizes[b])));
    let mut offsets = vec![0usize; sizes.len()];
    // Free blocks (offset, len), kept sorted by offset and merged.
    let mut free: Vec<(usize, usize)> = Vec::new();
    // Live buffers: (last step, offset, len).
    let mut live: Vec<(usize, usize, usize)> = Vec::new();
    let mut top = 0usize;
    for b in order {
        let start = life[b].0;
        // Release everything whose last reader ran before this write.
        let mut k = 0;
        while k < live.len() {
            if live[k].0 < start {
                let (_, off, len) = live.swap_remove(k);
                release(&mut free, off, len);
            } else {
                k += 1;
            }
        }
        let len = align(sizes[b]);
        let fit = free
            .iter()
            .enumerate()
            .filter(|(_, (_, l))| *l >= len)
            .min_by_key(|(_, (_, l))| *l)
            .map(|(i, _)| i);
        let off = match fit {
            Some(i) => {
                let (off, l) = free[i];
                if l == len {
                    free.remove(i);
                } else {
                    free[i] = (off + len, l - len);
                }
                off
            }
            None => {
                // Grow, reusing a free block that ends at the top.
                match free.last() {
                    Some(&(off, l)) if off + l == top => {
                        free.pop();
                        top = off + len;
                        off
                    }
                    _ => {
                        let off = top;
                        top += len;
                        off
                    }
                }
            }
        };
        offsets[b] = off;
        live.push((life[b].1, off, len));
    }
    (offsets, top)
}

fn release(free: &mut Vec<(usize, usize)>, off: usize, len: usize) {
    let i = free.partition_point(|&(o, _)| o < off);
    free.insert(i, (off, len));
    // Merge with the next and previous blocks when adjacent.
    if i + 1 < free.len() && free[i].0 + free[i].1 == free[i + 1].0 {
        free[i].1 += free[i + 1].1;
        free.remove(i + 1);
    }
    if i > 0 && free[i - 1].0 + free[i - 1].1 == free[i].0 {
        free[i - 1].1 += free[i].1;
        free.remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
        a.0 < b.0 + b.1 && b.0 < a.0 + a.1
    }

    #[test]
    fn buffers_live_at_once_never_share_bytes() {
        let sizes = [100, 50, 200, 30, 100, 64];
        let life = [(0, 2), (1, 1), (2, 4), (3, 5), (5, 6), (6, 7)];
        let (off, top) = place(&sizes, &life);
        for i in 0..sizes.len() {
            for j in i + 1..sizes.len() {
                let together = life[i].0 <= life[j].1 && life[j].0 <= life[i].1;
                if together {
                    assert!(
                        !overlaps((off[i], align(sizes[i])), (off[j], align(sizes[j]))),
                        "{i} and {j}"
                    );
                }
            }
        }
        // Reuse happened: less than the sum.
        assert!(top < sizes.iter().map(|&s| align(s)).sum::<usize>());
    }
}
