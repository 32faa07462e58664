//! Code for fused loop kernels: f32x4 over the innermost dimension with a
//! scalar tail, loads that do not move along it hoisted out of it, and
//! reductions kept in registers when they run along it.
//!
//! A kernel is `fn(ctx, start, end)`: it runs the outermost dimension from
//! `start` to `end`, so the runtime can split it across threads.

use std::collections::HashMap;

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

use super::math;
use crate::ir::ops::{Binary, ReduceKind, Unary};
use crate::ir::types::DType;
use crate::schedule::{LOp, Loop, RegionId};

/// Where the generated code finds things in its context.
pub struct Env {
    /// (region, offset in elements) of each arena buffer.
    pub buf_base: Vec<(RegionId, isize)>,
    pub hypers_region: RegionId,
}

/// A memory access resolved to a region, a byte offset and byte strides.
#[derive(Debug, Clone)]
struct Acc {
    region: RegionId,
    offset: i64,
    strides: Vec<i64>,
    int: bool,
}

/// Context layout (see `super::Ctx`): regions table, times table, seed.
pub const CTX_REGIONS: i32 = 0;
pub const CTX_TIMES: i32 = 8;
pub const CTX_SEED: i32 = 16;

fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

fn resolve(
    env: &Env,
    base: crate::schedule::Base,
    offset: isize,
    strides: &[isize],
    dtype: DType,
) -> Acc {
    let (region, extra) = match base {
        crate::schedule::Base::Region(r) => (r, 0),
        crate::schedule::Base::Buf(b) => env.buf_base[b as usize],
    };
    Acc {
        region,
        offset: (offset + extra) as i64 * 4,
        strides: strides.iter().map(|&s| s as i64 * 4).collect(),
        int: dtype == DType::I32,
    }
}

/// A loop after merging dimensions that every access walks contiguously.
pub struct Prepared {
    pub dims: Vec<usize>,
    loads: HashMap<usize, Acc>,
    stores: Vec<(usize, Acc)>,
    reduces: Vec<(usize, ReduceKind, f32, Acc)>,
    masks: HashMap<usize, Vec<i64>>,
    iota: HashMap<usize, usize>,
    /// Whether threads may split the outermost dimension.
    pub parallel: bool,
}

/// Applies `f` to the strides of every access and mask index of a loop.
fn for_each_strides(
    loads: &mut HashMap<usize, Acc>,
    stores: &mut [(usize, Acc)],
    reduces: &mut [(usize, ReduceKind, f32, Acc)],
    masks: &mut HashMap<usize, Vec<i64>>,
    f: impl Fn(&mut Vec<i64>),
) {
    loads.values_mut().for_each(|a| f(&mut a.strides));
    stores.iter_mut().for_each(|(_, a)| f(&mut a.strides));
    reduces
        .iter_mut()
        .for_each(|(_, _, _, a)| f(&mut a.strides));
    masks.values_mut().for_each(&f);
}

/// Resolves and simplifies a loop: dimensions are merged where every access
/// (and every mask index) steps through them as one.
pub fn prepare(lp: &Loop, env: &Env) -> Prepared {
    let mut loads = HashMap::new();
    let mut masks = HashMap::new();
    let mut iota = HashMap::new();
    for (i, op) in lp.ops.iter().enumerate() {
        match op {
            LOp::Load(a) => {
                loads.insert(i, resolve(env, a.base, a.offset, &a.strides, a.dtype));
            }
            LOp::Mask { index_strides, .. } => {
                masks.insert(
                    i,
                    index_strides.iter().map(|&s| s as i64).collect::<Vec<_>>(),
                );
            }
            LOp::Iota(d) => {
                iota.insert(i, *d);
            }
            _ => {}
        }
    }
    let mut stores: Vec<(usize, Acc)> = lp
        .stores
        .iter()
        .map(|(v, a)| (*v, resolve(env, a.base, a.offset, &a.strides, a.dtype)))
        .collect();
    let mut reduces: Vec<(usize, ReduceKind, f32, Acc)> = lp
        .reduces
        .iter()
        .map(|r| {
            (
                r.value,
                r.kind,
                r.scale,
                resolve(env, r.out.base, r.out.offset, &r.out.strides, r.out.dtype),
            )
        })
        .collect();
    // Merge dim d into d+1 where all strides nest and no iota reads either.
    let mut dims: Vec<usize> = lp.dims.clone();
    let mut d = 0;
    while d + 1 < dims.len() {
        let n1 = dims[d + 1] as i64;
        let nests = |s: &[i64]| s[d] == s[d + 1] * n1;
        let ok = loads.values().all(|a: &Acc| nests(&a.strides))
            && stores.iter().all(|(_, a)| nests(&a.strides))
            && reduces.iter().all(|(_, _, _, a)| nests(&a.strides))
            && masks.values().all(|s: &Vec<i64>| nests(s))
            && iota.values().all(|&k| k != d && k != d + 1);
        if ok {
            dims[d] *= dims[d + 1];
            dims.remove(d + 1);
            for_each_strides(&mut loads, &mut stores, &mut reduces, &mut masks, |s| {
                s.remove(d);
            });
            for k in iota.values_mut() {
                if *k > d {
                    *k -= 1;
                }
            }
        } else {
            d += 1;
        }
    }
    // A reduction over the outermost dimension (a convolution's bias
    // gradient sums over the batch) keeps threads from splitting it; then
    // the next dimension, if even, is cut into two blocks that go
    // outermost, if no reduction folds it and the loop is large enough to
    // split. Each thread still walks its block of channels image by image,
    // through memory in order, and each output adds its terms in the same
    // order. (With the channels outermost, a 32×32 map's 4 KiB rows a batch
    // apart, ResNet-mini's bias-gradient loops took 0.19–0.23 ms at 1
    // thread; in two blocks 0.10–0.14, in four 0.13–0.17.)
    let folds = |reduces: &[(usize, ReduceKind, f32, Acc)], d: usize| {
        reduces.iter().any(|(_, _, _, a)| a.strides[d] == 0)
    };
    let work = dims.iter().product::<usize>() as i64 * (lp.ops.len() as i64 + 1);
    let parts = 2;
    if dims.len() >= 3
        && folds(&reduces, 0)
        && !folds(&reduces, 1)
        && iota.values().all(|&k| k != 1)
        && dims[1].is_multiple_of(parts)
        && super::helpers::loop_splits(work, parts as i64)
    {
        let inner = dims[1] / parts;
        dims[1] = inner;
        dims.insert(0, parts);
        for_each_strides(&mut loads, &mut stores, &mut reduces, &mut masks, |s| {
            let block = s[1] * inner as i64;
            s.insert(0, block);
        });
        for k in iota.values_mut() {
            *k += 1;
        }
    }
    // A reduction over every dimension but the innermost (a dense layer's
    // bias gradient sums over the batch) leaves none to split: then the
    // innermost is cut into blocks that become the outermost dimension,
    // when the loop is large enough to be split. Each output still adds its
    // terms in the same order. (MNIST's [128, 512] bias-gradient loop: the
    // step at 2 threads 1.795 → 1.749 ms; alone at 1 thread the loop takes
    // 0.014 instead of 0.010 ms, the smallest cut, in 2.)
    let last = dims.len().saturating_sub(1);
    let n = dims.last().copied().unwrap_or(0);
    let cut_at = [2usize, 4, 8]
        .into_iter()
        .find(|&p| n % p == 0 && n / p >= 16 && (n / p) % 4 == 0);
    if dims.len() >= 2
        && folds(&reduces, 0)
        && !folds(&reduces, last)
        && iota.values().all(|&k| k != last)
        && let Some(parts) = cut_at
        && super::helpers::loop_splits(work, parts as i64)
    {
        let inner = dims[last] / parts;
        dims[last] = inner;
        dims.insert(0, parts);
        for_each_strides(&mut loads, &mut stores, &mut reduces, &mut masks, |s| {
            let block = s[last] * inner as i64;
            s.insert(0, block);
        });
        for k in iota.values_mut() {
            *k += 1;
        }
    }
    // Threads may split dim 0 unless a reduction folds it (two threads
    // would add into the same element).
    let parallel = !dims.is_empty() && reduces.iter().all(|(_, _, _, a)| a.strides[0] != 0);
    Prepared {
        dims,
        loads,
        stores,
        reduces,
        masks,
        iota,
        parallel,
    }
}

/// Per-kernel values computed once at entry.
struct Entry {
    bases: HashMap<RegionId, Value>,
    hypers: HashMap<usize, Value>,
    flags: HashMap<(usize, usize), Value>,
    keys: HashMap<(u32, usize), Value>,
}

/// Emits the body of a loop kernel into a function `fn(ctx, start, end)`
/// whose entry block is current and whose parameters are given.
pub fn emit(
    b: &mut FunctionBuilder<'_>,
    lp: &Loop,
    pre: &Prepared,
    ctx: Value,
    start: Value,
    end: Value,
) {
    let regions = b.ins().load(types::I64, flags(), ctx, CTX_REGIONS);
    let mut entry = Entry {
        bases: HashMap::new(),
        hypers: HashMap::new(),
        flags: HashMap::new(),
        keys: HashMap::new(),
    };
    let mut region_ids: Vec<RegionId> = pre
        .loads
        .values()
        .map(|a| a.region)
        .chain(pre.stores.iter().map(|(_, a)| a.region))
        .chain(pre.reduces.iter().map(|(_, _, _, a)| a.region))
        .collect();
    region_ids.sort_unstable();
    region_ids.dedup();
    for r in region_ids {
        let v = b.ins().load(types::I64, flags(), regions, (r as i32) * 8);
        entry.bases.insert(r, v);
    }
    for op in &lp.ops {
        match op {
            LOp::Hyper(h) if !entry.hypers.contains_key(h) => {
                let hyp = b
                    .ins()
                    .load(types::I64, flags(), regions, (super::HYPERS as i32) * 8);
                let v = b.ins().load(types::F32, flags(), hyp, (*h as i32) * 4);
                entry.hypers.insert(*h, v);
            }
            LOp::StepFlag { every, depth } if !entry.flags.contains_key(&(*every, *depth)) => {
                let t = time(b, ctx, *depth);
                let e = b.ins().iconst(types::I32, *every as i64);
                let r = b.ins().urem(t, e);
                let z = b.ins().iconst(types::I32, 0);
                let nz = b.ins().icmp(IntCC::NotEqual, r, z);
                let one = b.ins().f32const(1.0);
                let zero = b.ins().f32const(0.0);
                let v = b.ins().select(nz, one, zero);
                entry.flags.insert((*every, *depth), v);
            }
            LOp::Mask { stream, depth, .. } if !entry.keys.contains_key(&(*stream, *depth)) => {
                let key = mask_key(b, ctx, *stream, *depth);
                entry.keys.insert((*stream, *depth), key);
            }
            _ => {}
        }
    }
    let rank = pre.dims.len();
    if rank == 0 {
        // A single element (scalar results such as a loss).
        let idx: Vec<Value> = Vec::new();
        let ptrs = outer_pointers(b, pre, &entry, &idx);
        let j = b.ins().iconst(types::I64, 0);
        let mut accs = init_accs(b, pre, types::F32);
        body(
            b,
            lp,
            pre,
            &entry,
            &ptrs,
            &idx,
            j,
            types::F32,
            &mut accs,
            &Hoisted::new(),
        );
        finish_accs(b, pre, &ptrs, accs, None);
        b.ins().return_(&[]);
        return;
    }
    let mut idx = Vec::new();
    nest(b, lp, pre, &entry, 0, &mut idx, start, end);
    b.ins().return_(&[]);
}

/// Loops over dimension `d` (the range [start, end) for dimension 0) and,
/// inside, the dimensions after it. Leaves the builder after the loop.
#[allow(clippy::too_many_arguments)]
fn nest(
    b: &mut FunctionBuilder<'_>,
    lp: &Loop,
    pre: &Prepared,
    entry: &Entry,
    d: usize,
    idx: &mut Vec<Value>,
    start: Value,
    end: Value,
) {
    let rank = pre.dims.len();
    let (lo, hi) = if d == 0 {
        (start, end)
    } else {
        (
            b.ins().iconst(types::I64, 0),
            b.ins().iconst(types::I64, pre.dims[d] as i64),
        )
    };
    if d == rank - 1 {
        inner(b, lp, pre, entry, idx, lo, hi);
        return;
    }
    let head = b.create_block();
    let exit = b.create_block();
    b.append_block_param(head, types::I64);
    let nonempty = b.ins().icmp(IntCC::SignedLessThan, lo, hi);
    b.ins()
        .brif(nonempty, head, &[BlockArg::Value(lo)], exit, &[]);
    b.switch_to_block(head);
    let i = b.block_params(head)[0];
    idx.push(i);
    nest(b, lp, pre, entry, d + 1, idx, start, end);
    idx.pop();
    let next = b.ins().iadd_imm_s(i, 1);
    let more = b.ins().icmp(IntCC::SignedLessThan, next, hi);
    b.ins()
        .brif(more, head, &[BlockArg::Value(next)], exit, &[]);
    b.switch_to_block(exit);
}

/// The time step of recurrence depth `depth` (0 outside any).
fn time(b: &mut FunctionBuilder<'_>, ctx: Value, depth: usize) -> Value {
    let times = b.ins().load(types::I64, flags(), ctx, CTX_TIMES);
    b.ins().load(types::I32, flags(), times, (depth as i32) * 4)
}

/// `hash32` of `crate::rng`, on I32 or I32X4.
fn hash32(b: &mut FunctionBuilder<'_>, v: Value) -> Value {
    let ty = b.func.dfg.value_type(v);
    let k = |b: &mut FunctionBuilder<'_>, c: i64| {
        let s = b.ins().iconst(types::I32, c);
        if ty.is_vector() {
            b.ins().splat(ty, s)
        } else {
            s
        }
    };
    let s = b.ins().ushr_imm_u(v, 16);
    let v = b.ins().bxor(v, s);
    let c1 = k(b, 0x7feb_352d);
    let v = b.ins().imul(v, c1);
    let s = b.ins().ushr_imm_u(v, 15);
    let v = b.ins().bxor(v, s);
    let c2 = k(b, 0x846c_a68bu32 as i32 as i64);
    let v = b.ins().imul(v, c2);
    let s = b.ins().ushr_imm_u(v, 16);
    b.ins().bxor(v, s)
}

/// `mask_key` of `crate::rng`: from the step seed, the stream and the time.
fn mask_key(b: &mut FunctionBuilder<'_>, ctx: Value, stream: u32, depth: usize) -> Value {
    let t = time(b, ctx, depth);
    let c = b.ins().iconst(types::I32, 0x9e37_79b9u32 as i32 as i64);
    let k = b.ins().bxor(t, c);
    let k = hash32(b, k);
    let s = b.ins().iconst(types::I32, stream as i32 as i64);
    let k = b.ins().bxor(k, s);
    let k = hash32(b, k);
    let seed = b.ins().load(types::I64, flags(), ctx, CTX_SEED);
    let lo = b.ins().ireduce(types::I32, seed);
    let k = b.ins().bxor(k, lo);
    let k = hash32(b, k);
    let hi64 = b.ins().ushr_imm_u(seed, 32);
    let hi = b.ins().ireduce(types::I32, hi64);
    let k = b.ins().bxor(k, hi);
    hash32(b, k)
}

/// Byte address of each access at the start of the innermost dimension.
fn outer_pointers(
    b: &mut FunctionBuilder<'_>,
    pre: &Prepared,
    entry: &Entry,
    idx: &[Value],
) -> HashMap<(u8, usize), Value> {
    let mut out = HashMap::new();
    let at = |b: &mut FunctionBuilder<'_>, a: &Acc| -> Value {
        let mut p = b.ins().iadd_imm_s(entry.bases[&a.region], a.offset);
        for (d, &i) in idx.iter().enumerate() {
            if a.strides[d] != 0 {
                let s = b.ins().imul_imm_s(i, a.strides[d]);
                p = b.ins().iadd(p, s);
            }
        }
        p
    };
    for (&k, a) in &pre.loads {
        let p = at(b, a);
        out.insert((0, k), p);
    }
    for (k, (_, a)) in pre.stores.iter().enumerate() {
        let p = at(b, a);
        out.insert((1, k), p);
    }
    for (k, (_, _, _, a)) in pre.reduces.iter().enumerate() {
        let p = at(b, a);
        out.insert((2, k), p);
    }
    out
}

/// The innermost dimension over [lo, hi): f32x4 steps while four elements
/// remain, then scalars. Row reductions ride along as block parameters.
fn inner(
    b: &mut FunctionBuilder<'_>,
    lp: &Loop,
    pre: &Prepared,
    entry: &Entry,
    idx: &[Value],
    lo: Value,
    hi: Value,
) {
    let rank = pre.dims.len();
    let ptrs = outer_pointers(b, pre, entry, idx);
    let inner_stride = |a: &Acc| a.strides[rank - 1];
    let vectorizable = pre.dims[rank - 1] >= 4
        && pre.loads.values().all(|a| matches!(inner_stride(a), 0 | 4))
        && pre.stores.iter().all(|(_, a)| inner_stride(a) == 4)
        && pre
            .reduces
            .iter()
            .all(|(_, _, _, a)| matches!(inner_stride(a), 0 | 4));
    let hoisted = hoist(b, pre, &ptrs, vectorizable);
    let mut scalar_accs;
    let mut from = lo;
    if vectorizable {
        let mut accs = init_accs(b, pre, types::F32X4);
        // Unrolled while 16 elements remain (4 for heavy bodies, whose
        // registers would spill), then one vector at a time.
        let unroll = if lp.ops.len() <= 40 { 4 } else { 2 };
        let args = VectorLoop {
            lp,
            pre,
            entry,
            ptrs: &ptrs,
            hoisted: &hoisted,
            idx,
        };
        (from, accs) = args.emit(b, from, hi, accs, unroll);
        (from, accs) = args.emit(b, from, hi, accs, 1);
        // Horizontal reduction of the vector accumulators into scalars.
        scalar_accs = accs
            .iter()
            .zip(pre.reduces.iter().filter(|r| inner_stride(&r.3) == 0))
            .map(|(&v, r)| hreduce(b, v, r.1))
            .collect::<Vec<_>>();
    } else {
        scalar_accs = init_accs(b, pre, types::F32);
    }
    // Scalars: the tail, or the whole dimension when not vectorised.
    let head = b.create_block();
    let done = b.create_block();
    b.append_block_param(head, types::I64);
    for _ in &scalar_accs {
        b.append_block_param(head, types::F32);
        b.append_block_param(done, types::F32);
    }
    let nonempty = b.ins().icmp(IntCC::SignedLessThan, from, hi);
    let mut args = vec![BlockArg::Value(from)];
    args.extend(scalar_accs.iter().map(|a| BlockArg::Value(*a)));
    let leave0: Vec<BlockArg> = scalar_accs.iter().map(|a| BlockArg::Value(*a)).collect();
    b.ins().brif(nonempty, head, &args, done, &leave0);
    b.switch_to_block(head);
    let j = b.block_params(head)[0];
    let mut cur: Vec<Value> = b.block_params(head)[1..].to_vec();
    body(
        b,
        lp,
        pre,
        entry,
        &ptrs,
        idx,
        j,
        types::F32,
        &mut cur,
        &hoisted,
    );
    let next = b.ins().iadd_imm_s(j, 1);
    let more = b.ins().icmp(IntCC::SignedLessThan, next, hi);
    let mut again = vec![BlockArg::Value(next)];
    again.extend(cur.iter().map(|v| BlockArg::Value(*v)));
    let leave: Vec<BlockArg> = cur.iter().map(|v| BlockArg::Value(*v)).collect();
    b.ins().brif(more, head, &again, done, &leave);
    b.switch_to_block(done);
    scalar_accs = b.block_params(done).to_vec();
    finish_accs(b, pre, &ptrs, scalar_accs, Some(rank - 1));
}

/// Loads that do not move along the innermost dimension, done once before
/// it: (scalar, splat) by op index.
type Hoisted = HashMap<usize, (Value, Value)>;

fn hoist(
    b: &mut FunctionBuilder<'_>,
    pre: &Prepared,
    ptrs: &HashMap<(u8, usize), Value>,
    vector: bool,
) -> Hoisted {
    let rank = pre.dims.len();
    let mut out = Hoisted::new();
    let mut loads: Vec<(&usize, &Acc)> = pre.loads.iter().collect();
    loads.sort_by_key(|l| *l.0);
    for (&i, a) in loads {
        if a.strides[rank - 1] != 0 {
            continue;
        }
        let p = ptrs[&(0, i)];
        let scalar = if a.int {
            let v = b.ins().load(types::I32, flags(), p, 0);
            b.ins().fcvt_from_sint(types::F32, v)
        } else {
            b.ins().load(types::F32, flags().with_readonly(), p, 0)
        };
        let splat = if vector {
            b.ins().splat(types::F32X4, scalar)
        } else {
            scalar
        };
        out.insert(i, (scalar, splat));
    }
    out
}

/// What the vector loops of one innermost dimension share.
struct VectorLoop<'a> {
    lp: &'a Loop,
    pre: &'a Prepared,
    entry: &'a Entry,
    ptrs: &'a HashMap<(u8, usize), Value>,
    hoisted: &'a Hoisted,
    idx: &'a [Value],
}

impl VectorLoop<'_> {
    /// f32x4 steps, `unroll` per iteration, from `from` while 4·`unroll`
    /// elements remain before `hi`; returns where it stopped and the
    /// accumulators.
    ///
    /// Sums along the row keep one accumulator per unrolled step, added
    /// together after the loop: with one, every step waited for the
    /// previous add (ResNet-mini's bias-gradient loops over 32×32 maps took
    /// 0.19–0.26 ms instead of ~0.05 for an elementwise loop of that size).
    /// Maxima keep one, so that ties and NaNs resolve in scan order.
    fn emit(
        &self,
        b: &mut FunctionBuilder<'_>,
        from: Value,
        hi: Value,
        accs: Vec<Value>,
        unroll: i64,
    ) -> (Value, Vec<Value>) {
        let width = 4 * unroll;
        let rank = self.pre.dims.len();
        let kinds: Vec<ReduceKind> = self
            .pre
            .reduces
            .iter()
            .filter(|r| r.3.strides[rank - 1] == 0)
            .map(|r| r.1)
            .collect();
        let n = accs.len();
        let slots = if kinds.iter().all(|&k| k != ReduceKind::Max) {
            unroll as usize
        } else {
            1
        };
        let mut start = accs;
        for _ in 1..slots {
            start.extend(kinds.iter().map(|_| math::fconst(b, types::F32X4, 0.0)));
        }
        let head = b.create_block();
        let done = b.create_block();
        b.append_block_param(head, types::I64);
        b.append_block_param(done, types::I64);
        for _ in &start {
            b.append_block_param(head, types::F32X4);
            b.append_block_param(done, types::F32X4);
        }
        let first_end = b.ins().iadd_imm_s(from, width);
        let enter = b.ins().icmp(IntCC::SignedLessThanOrEqual, first_end, hi);
        let mut args = vec![BlockArg::Value(from)];
        args.extend(start.iter().map(|a| BlockArg::Value(*a)));
        b.ins().brif(enter, head, &args, done, &args);
        b.switch_to_block(head);
        let j = b.block_params(head)[0];
        let mut cur: Vec<Value> = b.block_params(head)[1..].to_vec();
        for u in 0..unroll {
            let ju = if u == 0 {
                j
            } else {
                b.ins().iadd_imm_s(j, 4 * u)
            };
            let slot = u as usize % slots;
            body(
                b,
                self.lp,
                self.pre,
                self.entry,
                self.ptrs,
                self.idx,
                ju,
                types::F32X4,
                &mut cur[slot * n..(slot + 1) * n],
                self.hoisted,
            );
        }
        let next = b.ins().iadd_imm_s(j, width);
        let next_end = b.ins().iadd_imm_s(j, 2 * width);
        let more = b.ins().icmp(IntCC::SignedLessThanOrEqual, next_end, hi);
        let mut again = vec![BlockArg::Value(next)];
        again.extend(cur.iter().map(|v| BlockArg::Value(*v)));
        b.ins().brif(more, head, &again, done, &again);
        b.switch_to_block(done);
        let params = b.block_params(done).to_vec();
        let slot_accs = &params[1..];
        let merged = (0..n)
            .map(|k| {
                (1..slots).fold(slot_accs[k], |acc, s| {
                    combine(b, kinds[k], acc, slot_accs[s * n + k])
                })
            })
            .collect();
        (params[0], merged)
    }
}

/// Initial accumulators of the reductions along the innermost dimension.
fn init_accs(b: &mut FunctionBuilder<'_>, pre: &Prepared, ty: Type) -> Vec<Value> {
    let rank = pre.dims.len();
    pre.reduces
        .iter()
        .filter(|r| rank == 0 || r.3.strides[rank - 1] == 0)
        .map(|r| match r.1 {
            ReduceKind::Max => math::fconst(b, ty, f32::NEG_INFINITY),
            _ => math::fconst(b, ty, 0.0),
        })
        .collect()
}

fn hreduce(b: &mut FunctionBuilder<'_>, v: Value, kind: ReduceKind) -> Value {
    let mut acc = b.ins().extractlane(v, 0);
    for l in 1..4u8 {
        let x = b.ins().extractlane(v, l);
        acc = combine(b, kind, acc, x);
    }
    acc
}

fn combine(b: &mut FunctionBuilder<'_>, kind: ReduceKind, a: Value, x: Value) -> Value {
    match kind {
        ReduceKind::Max => {
            let gt = b.ins().fcmp(FloatCC::GreaterThan, x, a);
            let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
            let take = b.ins().bor(gt, nan);
            let ty = b.func.dfg.value_type(a);
            math::select(b, ty, take, x, a)
        }
        _ => b.ins().fadd(a, x),
    }
}

/// Adds the row accumulators into their outputs (out = out ⊕ acc).
fn finish_accs(
    b: &mut FunctionBuilder<'_>,
    pre: &Prepared,
    ptrs: &HashMap<(u8, usize), Value>,
    accs: Vec<Value>,
    inner: Option<usize>,
) {
    let mut it = accs.into_iter();
    for (k, r) in pre.reduces.iter().enumerate() {
        let row = inner.is_none_or(|d| r.3.strides[d] == 0);
        if !row {
            continue;
        }
        let Some(acc) = it.next() else { return };
        let p = ptrs[&(2, k)];
        let old = b.ins().load(types::F32, flags(), p, 0);
        let new = combine(b, r.1, old, acc);
        b.ins().store(flags(), new, p, 0);
    }
}

/// One element (or four) of the loop body at innermost index `j`.
#[allow(clippy::too_many_arguments)]
fn body(
    b: &mut FunctionBuilder<'_>,
    lp: &Loop,
    pre: &Prepared,
    entry: &Entry,
    ptrs: &HashMap<(u8, usize), Value>,
    idx: &[Value],
    j: Value,
    ty: Type,
    accs: &mut [Value],
    hoisted: &Hoisted,
) {
    let rank = pre.dims.len();
    let vector = ty.is_vector();
    let at = |b: &mut FunctionBuilder<'_>, base: Value, stride: i64| -> Value {
        if stride == 0 {
            base
        } else {
            let off = b.ins().imul_imm_s(j, stride);
            b.ins().iadd(base, off)
        }
    };
    let mut vals: Vec<Value> = Vec::with_capacity(lp.ops.len());
    for (i, op) in lp.ops.iter().enumerate() {
        let v = match op {
            LOp::Load(_) if hoisted.contains_key(&i) => {
                let (scalar, splat) = hoisted[&i];
                if vector { splat } else { scalar }
            }
            LOp::Load(_) => {
                let a = &pre.loads[&i];
                let stride = if rank == 0 { 0 } else { a.strides[rank - 1] };
                let p = at(b, ptrs[&(0, i)], stride);
                if a.int {
                    if vector && stride != 0 {
                        let v = b.ins().load(types::I32X4, flags(), p, 0);
                        b.ins().fcvt_from_sint(types::F32X4, v)
                    } else {
                        let v = b.ins().load(types::I32, flags(), p, 0);
                        let f = b.ins().fcvt_from_sint(types::F32, v);
                        if vector { b.ins().splat(ty, f) } else { f }
                    }
                } else if vector && stride != 0 {
                    b.ins().load(types::F32X4, flags(), p, 0)
                } else {
                    let v = b.ins().load(types::F32, flags().with_readonly(), p, 0);
                    if vector { b.ins().splat(ty, v) } else { v }
                }
            }
            LOp::Const(c) => math::fconst(b, ty, *c),
            LOp::Hyper(h) => {
                let v = entry.hypers[h];
                if vector { b.ins().splat(ty, v) } else { v }
            }
            LOp::StepFlag { every, depth } => {
                let v = entry.flags[&(*every, *depth)];
                if vector { b.ins().splat(ty, v) } else { v }
            }
            LOp::Iota(_) => {
                let d = pre.iota[&i];
                let i = if d == rank - 1 { j } else { idx[d] };
                let i32v = b.ins().ireduce(types::I32, i);
                if vector {
                    let s = b.ins().splat(types::I32X4, i32v);
                    let lanes = lane_offsets(b, 1);
                    let s = b.ins().iadd(s, lanes);
                    b.ins().fcvt_from_sint(types::F32X4, s)
                } else {
                    b.ins().fcvt_from_sint(types::F32, i32v)
                }
            }
            LOp::Mask {
                p, stream, depth, ..
            } => {
                let strides = &pre.masks[&i];
                let mut index = b.ins().iconst(types::I64, 0);
                for (d, &iv) in idx.iter().enumerate() {
                    if strides[d] != 0 {
                        let s = b.ins().imul_imm_s(iv, strides[d]);
                        index = b.ins().iadd(index, s);
                    }
                }
                let inner_s = if rank == 0 { 0 } else { strides[rank - 1] };
                let js = b.ins().imul_imm_s(j, inner_s);
                let index = b.ins().iadd(index, js);
                let index = b.ins().ireduce(types::I32, index);
                let key = entry.keys[&(*stream, *depth)];
                let (index, key) = if vector {
                    let s = b.ins().splat(types::I32X4, index);
                    let lanes = lane_offsets(b, inner_s);
                    (b.ins().iadd(s, lanes), b.ins().splat(types::I32X4, key))
                } else {
                    (index, key)
                };
                let h = hash32(b, index);
                let h = b.ins().bxor(key, h);
                let h = hash32(b, h);
                let h = b.ins().ushr_imm_u(h, 8);
                let u = b.ins().fcvt_from_uint(ty, h);
                let scale = math::fconst(b, ty, 1.0 / 16_777_216.0);
                let u = b.ins().fmul(u, scale);
                let pv = math::fconst(b, ty, *p);
                let drop = b.ins().fcmp(FloatCC::LessThan, u, pv);
                let zero = math::fconst(b, ty, 0.0);
                let keep = math::fconst(b, ty, (1.0 / (1.0 - *p as f64)) as f32);
                math::select(b, ty, drop, zero, keep)
            }
            LOp::Unary(u, x) => unary(b, ty, *u, vals[*x]),
            LOp::Binary(op, x, y) => binary(b, ty, *op, vals[*x], vals[*y]),
            LOp::Where(c, x, y) => {
                let zero = math::fconst(b, ty, 0.0);
                let nz = b.ins().fcmp(FloatCC::NotEqual, vals[*c], zero);
                math::select(b, ty, nz, vals[*x], vals[*y])
            }
        };
        vals.push(v);
    }
    for (k, (v, a)) in pre.stores.iter().enumerate() {
        let stride = if rank == 0 { 0 } else { a.strides[rank - 1] };
        let p = at(b, ptrs[&(1, k)], stride);
        b.ins().store(flags(), vals[*v], p, 0);
    }
    let mut acc_i = 0;
    for (k, (v, kind, scale, a)) in pre.reduces.iter().enumerate() {
        let x = if *scale != 1.0 {
            let s = math::fconst(b, ty, *scale);
            b.ins().fmul(vals[*v], s)
        } else {
            vals[*v]
        };
        let stride = if rank == 0 { 0 } else { a.strides[rank - 1] };
        if rank == 0 || stride == 0 {
            accs[acc_i] = combine(b, *kind, accs[acc_i], x);
            acc_i += 1;
        } else {
            let p = at(b, ptrs[&(2, k)], stride);
            let old = b.ins().load(ty, flags(), p, 0);
            let new = combine(b, *kind, old, x);
            b.ins().store(flags(), new, p, 0);
        }
    }
}

/// [0, s, 2s, 3s] as i32x4.
fn lane_offsets(b: &mut FunctionBuilder<'_>, s: i64) -> Value {
    let z = b.ins().iconst(types::I32, 0);
    let mut v = b.ins().splat(types::I32X4, z);
    for l in 1..4u8 {
        let c = b.ins().iconst(types::I32, s * l as i64);
        v = b.ins().insertlane(v, c, l);
    }
    v
}

fn unary(b: &mut FunctionBuilder<'_>, ty: Type, u: Unary, x: Value) -> Value {
    match u {
        Unary::Neg => b.ins().fneg(x),
        Unary::Exp => math::exp(b, ty, x),
        Unary::Log => math::log(b, ty, x),
        Unary::Sqrt => b.ins().sqrt(x),
        Unary::Rsqrt => {
            let s = b.ins().sqrt(x);
            let one = math::fconst(b, ty, 1.0);
            b.ins().fdiv(one, s)
        }
        Unary::Recip => {
            let one = math::fconst(b, ty, 1.0);
            b.ins().fdiv(one, x)
        }
        Unary::Abs => b.ins().fabs(x),
        Unary::Tanh => math::tanh(b, ty, x),
        Unary::Sigmoid => math::sigmoid(b, ty, x),
        Unary::Relu => {
            // A compare and select: one max instruction, unlike fmax.
            let zero = math::fconst(b, ty, 0.0);
            let gt = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
            math::select(b, ty, gt, x, zero)
        }
        Unary::Erf => math::erf(b, ty, x),
        Unary::Step => {
            let zero = math::fconst(b, ty, 0.0);
            let one = math::fconst(b, ty, 1.0);
            let gt = b.ins().fcmp(FloatCC::GreaterThan, x, zero);
            math::select(b, ty, gt, one, zero)
        }
    }
}

fn binary(b: &mut FunctionBuilder<'_>, ty: Type, op: Binary, x: Value, y: Value) -> Value {
    let flag = |b: &mut FunctionBuilder<'_>, cc: FloatCC| {
        let c = b.ins().fcmp(cc, x, y);
        let one = math::fconst(b, ty, 1.0);
        let zero = math::fconst(b, ty, 0.0);
        math::select(b, ty, c, one, zero)
    };
    match op {
        Binary::Add => b.ins().fadd(x, y),
        Binary::Sub => b.ins().fsub(x, y),
        Binary::Mul => b.ins().fmul(x, y),
        Binary::Div => b.ins().fdiv(x, y),
        Binary::Max => {
            let lt = b.ins().fcmp(FloatCC::LessThan, x, y);
            math::select(b, ty, lt, y, x)
        }
        Binary::Min => {
            let gt = b.ins().fcmp(FloatCC::GreaterThan, x, y);
            math::select(b, ty, gt, y, x)
        }
        Binary::Gt => flag(b, FloatCC::GreaterThan),
        Binary::Ge => flag(b, FloatCC::GreaterThanOrEqual),
        Binary::Lt => flag(b, FloatCC::LessThan),
        Binary::Le => flag(b, FloatCC::LessThanOrEqual),
        Binary::Eq => flag(b, FloatCC::Equal),
    }
}
