//! Memory planning: every stored value gets a place in one arena, allocated
//! once; values whose lifetimes do not overlap share space.
//!
//! Two placements are tried and the smaller arena kept: a linear scan in
//! order of first write (buffers whose last reader has run free their
//! block; each new buffer takes the smallest free block that fits), and
//! greedy by size (largest buffer first, at the lowest offset free of every
//! placed buffer live at the same time). Neither wins on every graph: the
//! scan suits chains, greedy-by-size the forward/backward pyramids of deep
//! models. Blocks are aligned to 64 bytes.

use super::{Base, BufId, Step, views};

/// Alignment of every buffer, in 4-byte elements (64 bytes: a cache line).
const ALIGN: usize = 16;

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Places buffers of `sizes` (elements) with lifetimes `life` = (first
/// step, last step); returns each buffer's offset and the arena size. Two
/// buffers share space only if one's last step is before the other's first.
pub fn place(sizes: &[usize], life: &[(usize, usize)]) -> (Vec<usize>, usize) {
    place_with(sizes, life, &[])
}

/// Buffer pairs (a, b) a top-level elementwise loop may compute in place:
/// its only reads of `a` are at exactly the element it writes of `b`, which
/// is contiguous and as large as `a`. Sharing is legal when that loop is both
/// `a`'s last reader and `b`'s first writer (checked by [`place_with`]).
pub fn in_place_candidates(steps: &[Step], sizes: &[usize]) -> Vec<(usize, BufId, BufId)> {
    let mut out = Vec::new();
    for (t, s) in steps.iter().enumerate() {
        if let Step::Recur(r) = s {
            recur_candidates(t, r, sizes, &mut out);
            continue;
        }
        let Step::Loop(l) = s else { continue };
        let dense = views::row_major(&l.dims);
        let n: usize = l.dims.iter().product();
        for (_, st) in &l.stores {
            let Base::Buf(b) = st.base else { continue };
            if st.offset != 0 || st.strides != dense || sizes[b as usize] != n {
                continue;
            }
            let loads = |a: BufId| {
                l.ops.iter().filter_map(move |o| match o {
                    super::LOp::Load(acc) if acc.base == Base::Buf(a) => Some(acc),
                    _ => None,
                })
            };
            let reads = |a: BufId| l.reduces.iter().all(|r| r.out.base != Base::Buf(a));
            for a in l.ops.iter().filter_map(|o| match o {
                super::LOp::Load(acc) => match acc.base {
                    Base::Buf(a) if a != b => Some(a),
                    _ => None,
                },
                _ => None,
            }) {
                let same = loads(a).all(|acc| {
                    acc.offset == st.offset && acc.strides == st.strides && acc.dtype == st.dtype
                });
                if same && reads(a) && sizes[a as usize] == n {
                    out.push((t, a, b));
                }
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// A recurrence may write a per-step output over a per-step input laid out
/// the same way: at step t the body reads slice t of the input, and the
/// output's slice t is written by the body's final copies, after every read;
/// no other step touches slice t.
fn recur_candidates(
    t: usize,
    r: &super::Recur,
    sizes: &[usize],
    out: &mut Vec<(usize, BufId, BufId)>,
) {
    for (_, v_in, ts_in) in &r.seq_args {
        let Base::Buf(a) = v_in.base else { continue };
        for (_, v_out, ts_out) in &r.step_outs {
            let Base::Buf(b) = v_out.base else { continue };
            let same = a != b
                && ts_in == ts_out
                && v_in.offset == v_out.offset
                && v_in.shape == v_out.shape
                && v_in.strides == v_out.strides
                && v_in.dtype == v_out.dtype
                && sizes[a as usize] == sizes[b as usize];
            if same {
                out.push((t, a, b));
            }
        }
    }
}

/// Like [`place`], with in-place pairs `(step, a, b)`: where `a` is last read
/// and `b` first written at `step`, both get one block.
pub fn place_with(
    sizes: &[usize],
    life: &[(usize, usize)],
    pairs: &[(usize, BufId, BufId)],
) -> (Vec<usize>, usize) {
    // Union the legal pairs, each buffer aliased at most once each way.
    let n = sizes.len();
    let mut group: Vec<usize> = (0..n).collect();
    let mut merged_from = vec![false; n];
    let mut merged_into = vec![false; n];
    fn root(group: &mut [usize], mut i: usize) -> usize {
        while group[i] != i {
            group[i] = group[group[i]];
            i = group[i];
        }
        i
    }
    for &(t, a, b) in pairs {
        let (a, b) = (a as usize, b as usize);
        if life[a].1 == t && life[b].0 == t && !merged_from[a] && !merged_into[b] {
            let (ra, rb) = (root(&mut group, a), root(&mut group, b));
            if ra != rb {
                group[rb] = ra;
                merged_from[a] = true;
                merged_into[b] = true;
            }
        }
    }
    let roots: Vec<usize> = (0..n).map(|i| root(&mut group, i)).collect();
    let mut index = vec![usize::MAX; n];
    let (mut gsizes, mut glife) = (Vec::new(), Vec::new());
    for i in 0..n {
        let r = roots[i];
        if index[r] == usize::MAX {
            index[r] = gsizes.len();
            gsizes.push(0);
            glife.push(life[i]);
        }
        let g = index[r];
        gsizes[g] = gsizes[g].max(sizes[i]);
        glife[g] = (glife[g].0.min(life[i].0), glife[g].1.max(life[i].1));
    }
    let (goff, top) = place_groups(&gsizes, &glife);
    ((0..n).map(|i| goff[index[roots[i]]]).collect(), top)
}

fn place_groups(sizes: &[usize], life: &[(usize, usize)]) -> (Vec<usize>, usize) {
    let scan = linear_scan(sizes, life);
    let greedy = greedy_by_size(sizes, life);
    if greedy.1 < scan.1 { greedy } else { scan }
}

fn greedy_by_size(sizes: &[usize], life: &[(usize, usize)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&b| (std::cmp::Reverse(sizes[b]), life[b].0));
    let mut offsets = vec![0usize; sizes.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut top = 0usize;
    for b in order {
        let len = align(sizes[b]);
        // Blocks of placed buffers live at the same time, by offset.
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| life[p].0 <= life[b].1 && life[b].0 <= life[p].1)
            .map(|&p| (offsets[p], align(sizes[p])))
            .collect();
        busy.sort_unstable();
        let mut off = 0;
        for (o, l) in busy {
            if o >= off + len {
                break;
            }
            off = off.max(o + l);
        }
        offsets[b] = off;
        top = top.max(off + len);
        placed.push(b);
    }
    (offsets, top)
}

fn linear_scan(sizes: &[usize], life: &[(usize, usize)]) -> (Vec<usize>, usize) {
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

    fn check(sizes: &[usize], life: &[(usize, usize)], (off, top): (Vec<usize>, usize)) {
        for i in 0..sizes.len() {
            assert!(off[i] + align(sizes[i]) <= top);
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
    }

    #[test]
    fn buffers_live_at_once_never_share_bytes() {
        let sizes = [100, 50, 200, 30, 100, 64];
        let life = [(0, 2), (1, 1), (2, 4), (3, 5), (5, 6), (6, 7)];
        check(&sizes, &life, linear_scan(&sizes, &life));
        check(&sizes, &life, greedy_by_size(&sizes, &life));
        let (_, top) = place(&sizes, &life);
        // Reuse happened: less than the sum.
        assert!(top < sizes.iter().map(|&s| align(s)).sum::<usize>());
    }

    #[test]
    fn random_lifetimes_never_share_bytes() {
        // A fixed LCG: many shapes of interval graph, reproducibly.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |m: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % m
        };
        for _ in 0..200 {
            let n = 1 + next(40);
            let sizes: Vec<usize> = (0..n).map(|_| 1 + next(500)).collect();
            let life: Vec<(usize, usize)> = (0..n)
                .map(|_| {
                    let a = next(30);
                    (a, a + next(10))
                })
                .collect();
            check(&sizes, &life, linear_scan(&sizes, &life));
            check(&sizes, &life, greedy_by_size(&sizes, &life));
            let peak = (0..40)
                .map(|t| {
                    (0..n)
                        .filter(|&b| life[b].0 <= t && t <= life[b].1)
                        .map(|b| align(sizes[b]))
                        .sum::<usize>()
                })
                .max()
                .unwrap_or(0);
            assert!(place(&sizes, &life).1 >= peak);
        }
    }

    #[test]
    fn in_place_pairs_share_a_block_only_when_legal() {
        // 0 is last read at step 1, where 1 is first written: one block.
        let sizes = [64, 64, 64];
        let life = [(0, 1), (1, 2), (1, 3)];
        let (off, top) = place_with(&sizes, &life, &[(1, 0, 1)]);
        assert_eq!(off[0], off[1]);
        assert_eq!(top, 128);
        // 2 is written at step 1 too, but 0 is read again later: no sharing.
        let life = [(0, 2), (1, 2), (1, 3)];
        let (off, _) = place_with(&sizes, &life, &[(1, 0, 1)]);
        assert_ne!(off[0], off[1]);
    }
}
