//! Native code for a scheduled program, with Cranelift.
//!
//! Every loop kernel becomes a function `fn(ctx, start, end)`; the schedule's
//! sequence becomes orchestration functions that call kernels directly, call
//! runtime helpers ([`helpers`]: matrix products, convolutions, pooling,
//! softmax) with descriptors fixed at compile time, and run recurrences as
//! native loops that re-point the body's argument regions at each step. The
//! orchestration is split into functions of a bounded number of steps: one
//! huge function would compile superlinearly slower.

pub mod adam;
pub mod conv;
pub mod conv_direct;
pub mod conv_shift;
#[cfg(target_arch = "x86_64")]
pub mod conv_winograd;
mod define;
pub mod gather;
pub mod gemm;
pub mod helpers;
pub mod host;
#[cfg(target_arch = "x86_64")]
mod lanes;
pub mod loops;
pub mod math;
pub mod pool;
pub(crate) mod simd;
pub mod team;
pub mod transpose;

use std::time::{Duration, Instant};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, BlockArg, InstBuilder, MemFlagsData, Signature, UserFuncName, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};

use self::gemm::GemmDesc;
use crate::ir::types::DType;
use crate::schedule::{self, Base, LOp, Loop, Program, Step, View};
use gather::GatherDesc;
use helpers::{ConvDesc, FillDesc, Loc, SoftmaxDesc};
use pool::PoolDesc;
use transpose::TransposeDesc;

/// The context every generated function receives.
#[repr(C)]
pub struct Ctx {
    /// Base pointers, one per region of the program.
    pub regions: *mut *mut u8,
    /// The time step of each recurrence depth.
    pub times: *mut u32,
    /// Seed of this step's dropout masks.
    pub seed: u64,
    /// Threads the helpers may use.
    pub threads: usize,
    /// Time per kernel when compiled with profiling (else null).
    pub profile: *mut Profile,
}

/// Time spent in each kernel, when profiling.
#[derive(Debug, Clone)]
pub struct Profile {
    pub last: std::time::Instant,
    /// Total time and calls per kernel label.
    pub totals: Vec<(Duration, u64)>,
}

impl Profile {
    pub fn new(kernels: usize) -> Profile {
        Profile {
            last: std::time::Instant::now(),
            totals: vec![(Duration::ZERO, 0); kernels],
        }
    }
}

/// Charges the time since the last mark to kernel `id`.
///
/// # Safety
/// Called by generated code with a live context.
unsafe extern "C" fn nnc_mark(ctx: *const Ctx, id: i64) {
    unsafe {
        let p = (*ctx).profile;
        if p.is_null() {
            return;
        }
        let now = std::time::Instant::now();
        let prof = &mut *p;
        if let Some(t) = prof.totals.get_mut(id as usize) {
            t.0 += now - prof.last;
            t.1 += 1;
        }
        prof.last = now;
    }
}

pub const HYPERS: u32 = schedule::HYPERS;

/// Why code generation failed (a bug, or an unsupported host).
#[derive(Debug, Clone, thiserror::Error)]
#[error("code generation failed: {0}")]
pub struct JitError(pub String);

fn jerr(e: impl std::fmt::Display) -> JitError {
    JitError(e.to_string())
}

/// A compiled program: native functions and the descriptors they point at.
pub struct Compiled {
    _module: JITModule,
    step: unsafe extern "C" fn(*const Ctx),
    // Descriptors are referenced by address from the generated code: boxed,
    // never moved, dropped with the code.
    _descs: Descs,
    pub regions: usize,
    pub max_depth: usize,
    pub compile_time: Duration,
    pub kernels: usize,
    /// What each profiled kernel is (when compiled with profiling).
    pub labels: Vec<String>,
    /// Whether any kernel is large enough to split across threads; when
    /// none is, a step runs on the caller's thread alone, sparing the
    /// hand-off to the pool (microseconds, a fifth of a small MLP's step).
    pub threaded: bool,
}

// SAFETY: the generated code and descriptors are immutable after compilation;
// all mutable state lives in the context passed to `run`.
unsafe impl Send for Compiled {}
unsafe impl Sync for Compiled {}

/// Boxed so that each keeps its address while the vectors grow: the
/// generated code holds those addresses.
#[derive(Default)]
#[allow(clippy::vec_box)]
struct Descs {
    adam: Vec<Box<adam::AdamDesc>>,
    gemm: Vec<Box<GemmDesc>>,
    conv: Vec<Box<ConvDesc>>,
    pool: Vec<Box<PoolDesc>>,
    gather: Vec<Box<GatherDesc>>,
    transpose: Vec<Box<TransposeDesc>>,
    softmax: Vec<Box<SoftmaxDesc>>,
    fill: Vec<Box<FillDesc>>,
}

impl Compiled {
    /// Runs the step.
    ///
    /// # Safety
    /// `ctx` must point at a context whose region table covers every region
    /// of the program with buffers of the sizes the program was scheduled
    /// for, and whose times table has `max_depth + 1` entries.
    pub unsafe fn run(&self, ctx: *const Ctx) {
        unsafe { (self.step)(ctx) }
    }
}

/// Steps per orchestration function.
const CHUNK: usize = 48;

struct Gen {
    module: JITModule,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    env: loops::Env,
    descs: Descs,
    helpers: Helpers,
    next_name: u32,
    kernels: usize,
    max_depth: usize,
    profile: bool,
    labels: Vec<String>,
    threaded: bool,
    pending: define::Pending,
}

struct Helpers {
    adam: FuncId,
    gemm: FuncId,
    conv: FuncId,
    pool: FuncId,
    gather: FuncId,
    transpose: FuncId,
    softmax: FuncId,
    fill: FuncId,
    parallel: FuncId,
    mark: FuncId,
}

fn isa() -> Result<std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>, JitError> {
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(jerr)?;
    flags.set("is_pic", "false").map_err(jerr)?;
    flags.set("use_colocated_libcalls", "false").map_err(jerr)?;
    let verify = if cfg!(debug_assertions) {
        "true"
    } else {
        "false"
    };
    flags.set("enable_verifier", verify).map_err(jerr)?;
    let builder = cranelift_native::builder().map_err(jerr)?;
    builder.finish(settings::Flags::new(flags)).map_err(jerr)
}

/// Compiles a scheduled program; with `profile`, every kernel is timed.
pub fn compile(program: &Program, profile: bool) -> Result<Compiled, JitError> {
    let started = Instant::now();
    let mut jb = JITBuilder::with_isa(isa()?, default_libcall_names());
    jb.symbol("nnc_adam", adam::nnc_adam as *const u8);
    jb.symbol("nnc_gemm", gemm::nnc_gemm as *const u8);
    jb.symbol("nnc_conv", conv::nnc_conv as *const u8);
    jb.symbol("nnc_pool", pool::nnc_pool as *const u8);
    jb.symbol("nnc_gather", gather::nnc_gather as *const u8);
    jb.symbol("nnc_transpose", transpose::nnc_transpose as *const u8);
    jb.symbol("nnc_softmax", helpers::nnc_softmax as *const u8);
    jb.symbol("nnc_fill", helpers::nnc_fill as *const u8);
    jb.symbol("nnc_parallel", helpers::nnc_parallel as *const u8);
    jb.symbol("nnc_mark", nnc_mark as *const u8);
    let mut module = JITModule::new(jb);
    let ptr = module.target_config().pointer_type();
    let sig2 = {
        let mut s = module.make_signature();
        s.params.push(AbiParam::new(ptr));
        s.params.push(AbiParam::new(ptr));
        s
    };
    let sig4 = {
        let mut s = module.make_signature();
        for _ in 0..4 {
            s.params.push(AbiParam::new(types::I64));
        }
        s
    };
    let declare = |m: &mut JITModule, name: &str, sig: &Signature| {
        m.declare_function(name, Linkage::Import, sig).map_err(jerr)
    };
    let helpers = Helpers {
        adam: declare(&mut module, "nnc_adam", &sig2)?,
        gemm: declare(&mut module, "nnc_gemm", &sig2)?,
        conv: declare(&mut module, "nnc_conv", &sig2)?,
        pool: declare(&mut module, "nnc_pool", &sig2)?,
        gather: declare(&mut module, "nnc_gather", &sig2)?,
        transpose: declare(&mut module, "nnc_transpose", &sig2)?,
        softmax: declare(&mut module, "nnc_softmax", &sig2)?,
        fill: declare(&mut module, "nnc_fill", &sig2)?,
        parallel: declare(&mut module, "nnc_parallel", &sig4)?,
        mark: declare(&mut module, "nnc_mark", &sig2)?,
    };
    let env = loops::Env {
        buf_base: program
            .offsets
            .iter()
            .map(|&o| (schedule::ARENA, o as isize))
            .collect(),
        hypers_region: HYPERS,
    };
    let mut g = Gen {
        ctx: module.make_context(),
        module,
        fctx: FunctionBuilderContext::new(),
        env,
        descs: Descs::default(),
        helpers,
        next_name: 0,
        kernels: 0,
        max_depth: 0,
        profile,
        labels: Vec::new(),
        threaded: false,
        pending: define::Pending::default(),
    };
    let top = g.steps_fn(&program.steps, 0)?;
    std::mem::take(&mut g.pending).define_all(&mut g.module)?;
    g.module.finalize_definitions().map_err(jerr)?;
    let code = g.module.get_finalized_function(top);
    // SAFETY: `top` was defined with the signature fn(ctx).
    let step: unsafe extern "C" fn(*const Ctx) = unsafe { std::mem::transmute(code) };
    Ok(Compiled {
        _module: g.module,
        step,
        _descs: g.descs,
        regions: program.regions.len(),
        max_depth: g.max_depth,
        compile_time: started.elapsed(),
        kernels: g.kernels,
        labels: g.labels,
        threaded: g.threaded,
    })
}

impl Gen {
    fn name(&mut self, prefix: &str) -> String {
        self.next_name += 1;
        format!("{prefix}{}", self.next_name)
    }

    fn loc(&self, base: Base, offset: isize) -> Loc {
        let (region, extra) = match base {
            Base::Region(r) => (r, 0),
            Base::Buf(b) => self.env.buf_base[b as usize],
        };
        Loc {
            region,
            offset: (offset + extra) as i64 * 4,
        }
    }

    /// Compiles a loop kernel; returns its id and outer extent.
    fn loop_fn(&mut self, lp: &Loop) -> Result<(FuncId, i64, bool, i64), JitError> {
        let pre = loops::prepare(lp, &self.env);
        let mut sig = self.module.make_signature();
        for _ in 0..3 {
            sig.params.push(AbiParam::new(types::I64));
        }
        let name = self.name("k");
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(jerr)?;
        self.ctx.func.signature = sig;
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());
        {
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let p = b.block_params(entry).to_vec();
            loops::emit(&mut b, lp, &pre, p[0], p[1], p[2]);
            b.seal_all_blocks();
            b.finalize(self.module.target_config());
        }
        self.pending.push(&mut self.module, id, &mut self.ctx);
        self.kernels += 1;
        let outer = pre.dims.first().copied().unwrap_or(1) as i64;
        let work: i64 = pre.dims.iter().product::<usize>() as i64 * (lp.ops.len() as i64 + 1);
        Ok((id, outer, pre.parallel, work))
    }

    /// Compiles a list of steps into orchestration functions; returns the
    /// function that runs them all.
    fn steps_fn(&mut self, steps: &[Step], depth: usize) -> Result<FuncId, JitError> {
        self.max_depth = self.max_depth.max(depth);
        // Compile kernels and nested bodies first: a function body is built
        // in one context at a time.
        let mut calls: Vec<Call> = Vec::new();
        for s in steps {
            calls.push(self.prepare_step(s, depth)?);
            if self.profile && !matches!(s, Step::Recur(_)) {
                self.labels.push(format!("{}{s}", "  ".repeat(depth)));
                calls.push(Call::Mark(self.labels.len() - 1));
            }
        }
        let mut parts = Vec::new();
        for chunk in calls.chunks(CHUNK) {
            parts.push(self.orchestrate(chunk)?);
        }
        if parts.len() == 1 {
            return Ok(parts[0]);
        }
        let calls: Vec<Call> = parts.into_iter().map(Call::Sub).collect();
        self.orchestrate(&calls)
    }

    fn prepare_step(&mut self, s: &Step, _depth: usize) -> Result<Call, JitError> {
        Ok(match s {
            Step::Loop(lp) => {
                let fills: Vec<usize> = lp
                    .reduces
                    .iter()
                    .map(|r| {
                        let loc = self.loc(r.out.base, r.out.offset);
                        let len = reduce_len(lp, r);
                        let value = if r.kind == crate::ir::ops::ReduceKind::Max {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        };
                        self.descs.fill.push(Box::new(FillDesc {
                            at: loc,
                            len,
                            value,
                        }));
                        desc_addr(self.descs.fill.last().map(|b| &**b))
                    })
                    .collect();
                let (f, outer, parallel, work) = self.loop_fn(lp)?;
                self.threaded |= parallel && helpers::loop_splits(work, outer);
                Call::Loop {
                    f,
                    outer,
                    parallel,
                    work,
                    fills,
                }
            }
            Step::Copy { from, to } if transpose::is_transposing(from, to) => {
                self.threaded |= transpose::splits(from.numel());
                let d = TransposeDesc {
                    rows: from.shape[0],
                    cols: from.shape[1],
                    from: self.loc(from.base, from.offset),
                    from_strides: [from.strides[0], from.strides[1]],
                    to: self.loc(to.base, to.offset),
                    to_strides: [to.strides[0], to.strides[1]],
                };
                self.descs.transpose.push(Box::new(d));
                Call::Helper(
                    self.helpers.transpose,
                    desc_addr(self.descs.transpose.last().map(|b| &**b)),
                )
            }
            Step::Copy { from, to } => {
                let lp = copy_loop(from, to);
                let (f, outer, parallel, work) = self.loop_fn(&lp)?;
                self.threaded |= parallel && helpers::loop_splits(work, outer);
                Call::Loop {
                    f,
                    outer,
                    parallel,
                    work,
                    fills: Vec::new(),
                }
            }
            Step::Gemm(gm) => {
                self.threaded |= gemm::gemm_splits(gm.m * gm.n * gm.k);
                let d = GemmDesc {
                    m: gm.m,
                    n: gm.n,
                    k: gm.k,
                    batch: gm.batch,
                    a: self.loc(gm.a.base, gm.a.offset),
                    a_rs: gm.a.rs,
                    a_cs: gm.a.cs,
                    a_bs: gm.a.batch_stride,
                    b: self.loc(gm.b.base, gm.b.offset),
                    b_rs: gm.b.rs,
                    b_cs: gm.b.cs,
                    b_bs: gm.b.batch_stride,
                    c: self.loc(gm.c.base, gm.c.offset),
                    c_rs: gm.c.rs,
                    c_cs: gm.c.cs,
                    c_bs: gm.c.batch_stride,
                    accumulate: gm.accumulate,
                };
                self.descs.gemm.push(Box::new(d));
                Call::Helper(
                    self.helpers.gemm,
                    desc_addr(self.descs.gemm.last().map(|b| &**b)),
                )
            }
            Step::Conv(c) => {
                self.threaded = true;
                let mut d =
                    ConvDesc::from_window(&c.window, &c.x.shape, &c.w.shape, &c.y.shape, c.groups);
                d.kind = match c.kind {
                    schedule::ConvKind::Forward => 0,
                    schedule::ConvKind::GradInput => 1,
                    schedule::ConvKind::GradWeight => 2,
                };
                d.x = self.loc(c.x.base, c.x.offset);
                d.wt = self.loc(c.w.base, c.w.offset);
                d.y = self.loc(c.y.base, c.y.offset);
                d.scratch = match c.scratch {
                    Some(b) => self.loc(Base::Buf(b), 0),
                    None => d.x,
                };
                self.descs.conv.push(Box::new(d));
                Call::Helper(
                    self.helpers.conv,
                    desc_addr(self.descs.conv.last().map(|b| &**b)),
                )
            }
            Step::Pool(pl) => {
                self.threaded = true;
                let mut d = PoolDesc::new(pl.kind, pl.grad, &pl.window, &pl.x.shape, &pl.y.shape);
                d.x = self.loc(pl.x.base, pl.x.offset);
                d.y = self.loc(pl.y.base, pl.y.offset);
                if let Some(dx) = &pl.dx {
                    d.dx = self.loc(dx.base, dx.offset);
                }
                d.indices = pl.indices.map(|b| self.loc(Base::Buf(b), 0));
                self.descs.pool.push(Box::new(d));
                Call::Helper(
                    self.helpers.pool,
                    desc_addr(self.descs.pool.last().map(|b| &**b)),
                )
            }
            Step::Gather(g) => {
                let d = GatherDesc {
                    scatter: g.scatter,
                    table_rows: g.table.shape.first().copied().unwrap_or(0),
                    width: g.table.shape.get(1).copied().unwrap_or(0),
                    dims: g.idx.shape.clone(),
                    strides: g.idx.strides.clone(),
                    idx: self.loc(g.idx.base, g.idx.offset),
                    table: self.loc(g.table.base, g.table.offset),
                    rows: self.loc(g.rows.base, g.rows.offset),
                };
                self.descs.gather.push(Box::new(d));
                Call::Helper(
                    self.helpers.gather,
                    desc_addr(self.descs.gather.last().map(|b| &**b)),
                )
            }
            Step::Softmax(sm) => {
                let d = SoftmaxDesc {
                    log: sm.log,
                    dims: sm.dims.clone(),
                    x: self.loc(sm.x.base, sm.x.offset),
                    x_strides: sm.x.strides.clone(),
                    y: self.loc(sm.y.base, sm.y.offset),
                    y_strides: sm.y.strides.clone(),
                };
                self.descs.softmax.push(Box::new(d));
                Call::Helper(
                    self.helpers.softmax,
                    desc_addr(self.descs.softmax.last().map(|b| &**b)),
                )
            }
            Step::Adam(a) => {
                let n = a.param.numel();
                self.threaded |= n >= adam::SPLIT;
                let u = &a.update;
                self.descs.adam.push(Box::new(adam::AdamDesc {
                    n,
                    param: self.loc(a.param.base, a.param.offset),
                    grad: self.loc(a.grad.base, a.grad.offset),
                    exp_avg: self.loc(a.exp_avg.base, a.exp_avg.offset),
                    exp_avg_sq: self.loc(a.exp_avg_sq.base, a.exp_avg_sq.offset),
                    consts: adam::Consts::of(u),
                    lr: u.lr,
                    bc1: u.bc1,
                    bc2: u.bc2,
                }));
                Call::Helper(
                    self.helpers.adam,
                    desc_addr(self.descs.adam.last().map(|b| &**b)),
                )
            }
            Step::Recur(r) => {
                let mut init = Vec::new();
                for s in &r.states {
                    let to = View::contiguous(Base::Buf(s.buffers[0]), &s.shape, DType::F32);
                    let (f, outer, parallel, work) = self.loop_fn(&copy_loop(&s.init, &to))?;
                    self.threaded |= parallel && helpers::loop_splits(work, outer);
                    init.push(Call::Loop {
                        f,
                        outer,
                        parallel,
                        work,
                        fills: Vec::new(),
                    });
                }
                let body = self.steps_fn(&r.body, r.depth)?;
                Call::Recur {
                    recur: r.clone(),
                    init,
                    body,
                }
            }
        })
    }

    /// One orchestration function calling `calls` in order.
    fn orchestrate(&mut self, calls: &[Call]) -> Result<FuncId, JitError> {
        let mut sig = self.module.make_signature();
        sig.params.push(AbiParam::new(types::I64));
        let name = self.name("s");
        let id = self
            .module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(jerr)?;
        self.ctx.func.signature = sig;
        self.ctx.func.name = UserFuncName::user(0, id.as_u32());

        let env_buf = self.env.buf_base.clone();
        let frontend = self.module.target_config();
        {
            let module = &mut self.module;
            let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let ctx = b.block_params(entry)[0];
            for c in calls {
                emit_call(&mut b, module, &self.helpers, c, ctx, &env_buf)?;
            }
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(frontend);
        }
        self.pending.push(&mut self.module, id, &mut self.ctx);
        Ok(id)
    }
}

/// What an orchestration function does for one step.
enum Call {
    Loop {
        f: FuncId,
        outer: i64,
        parallel: bool,
        work: i64,
        fills: Vec<usize>,
    },
    Helper(FuncId, usize),
    Sub(FuncId),
    /// Profiling: charge the time since the last mark to this label.
    Mark(usize),
    Recur {
        recur: Box<schedule::Recur>,
        init: Vec<Call>,
        body: FuncId,
    },
}

fn desc_addr<T>(b: Option<&T>) -> usize {
    b.map_or(0, |b| b as *const T as usize)
}

/// Elements of a reduction's output (the product of the loop dims it does not reduce).
fn reduce_len(lp: &Loop, r: &schedule::LReduce) -> usize {
    lp.dims
        .iter()
        .zip(&r.out.strides)
        .filter(|(_, s)| **s != 0)
        .map(|(d, _)| *d)
        .product()
}

/// A copy as a loop kernel.
fn copy_loop(from: &View, to: &View) -> Loop {
    Loop {
        dims: to.shape.clone(),
        ops: vec![LOp::Load(schedule::views::access(from, &to.shape))],
        stores: vec![(0, schedule::views::access(to, &to.shape))],
        reduces: Vec::new(),
        nodes: Vec::new(),
    }
}

fn flags() -> MemFlagsData {
    MemFlagsData::trusted()
}

fn emit_call(
    b: &mut FunctionBuilder<'_>,
    module: &mut JITModule,
    h: &Helpers,
    c: &Call,
    ctx: cranelift_codegen::ir::Value,
    buf_base: &[(u32, isize)],
) -> Result<(), JitError> {
    match c {
        Call::Loop {
            f,
            outer,
            parallel,
            work,
            fills,
        } => {
            for &d in fills {
                let fr = module.declare_func_in_func(h.fill, b.func);
                let dv = b.ins().iconst(types::I64, d as i64);
                b.ins().call(fr, &[ctx, dv]);
            }
            let n = b.ins().iconst(types::I64, *outer);
            if *parallel && *work >= 1 << 16 {
                let fr = module.declare_func_in_func(*f, b.func);
                let addr = b.ins().func_addr(types::I64, fr);
                let par = module.declare_func_in_func(h.parallel, b.func);
                let w = b.ins().iconst(types::I64, *work);
                b.ins().call(par, &[ctx, addr, n, w]);
            } else {
                let fr = module.declare_func_in_func(*f, b.func);
                let zero = b.ins().iconst(types::I64, 0);
                b.ins().call(fr, &[ctx, zero, n]);
            }
        }
        Call::Helper(f, d) => {
            let fr = module.declare_func_in_func(*f, b.func);
            let dv = b.ins().iconst(types::I64, *d as i64);
            b.ins().call(fr, &[ctx, dv]);
        }
        Call::Sub(f) => {
            let fr = module.declare_func_in_func(*f, b.func);
            b.ins().call(fr, &[ctx]);
        }
        Call::Mark(id) => {
            let fr = module.declare_func_in_func(h.mark, b.func);
            let v = b.ins().iconst(types::I64, *id as i64);
            b.ins().call(fr, &[ctx, v]);
        }
        Call::Recur { recur, init, body } => {
            for i in init {
                emit_call(b, module, h, i, ctx, buf_base)?;
            }
            let regions = b.ins().load(types::I64, flags(), ctx, loops::CTX_REGIONS);
            let times = b.ins().load(types::I64, flags(), ctx, loops::CTX_TIMES);
            let addr = |b: &mut FunctionBuilder<'_>, base: Base, offset: isize| {
                let (region, extra) = match base {
                    Base::Region(r) => (r, 0),
                    Base::Buf(bf) => buf_base[bf as usize],
                };
                let p = b
                    .ins()
                    .load(types::I64, flags(), regions, region as i32 * 8);
                b.ins().iadd_imm_s(p, (offset + extra) as i64 * 4)
            };
            let set = |b: &mut FunctionBuilder<'_>, region: u32, v| {
                b.ins().store(flags(), v, regions, region as i32 * 8);
            };
            // Captures do not move.
            for (region, v) in &recur.capture_args {
                let p = addr(b, v.base, v.offset);
                set(b, *region, p);
            }
            let steps = recur.steps as i64;
            let head = b.create_block();
            let exit = b.create_block();
            b.append_block_param(head, types::I64);
            let zero = b.ins().iconst(types::I64, 0);
            b.ins().jump(head, &[BlockArg::Value(zero)]);
            b.switch_to_block(head);
            let k = b.block_params(head)[0];
            let t = if recur.reverse {
                let last = b.ins().iconst(types::I64, steps - 1);
                b.ins().isub(last, k)
            } else {
                k
            };
            let t32 = b.ins().ireduce(types::I32, t);
            b.ins().store(flags(), t32, times, recur.depth as i32 * 4);
            for (region, v, stride) in &recur.seq_args {
                let p = addr(b, v.base, v.offset);
                let off = b.ins().imul_imm_s(t, *stride as i64 * 4);
                let p = b.ins().iadd(p, off);
                set(b, *region, p);
            }
            for (region, v, stride) in &recur.step_outs {
                let p = addr(b, v.base, v.offset);
                let off = b.ins().imul_imm_s(t, *stride as i64 * 4);
                let p = b.ins().iadd(p, off);
                set(b, *region, p);
            }
            // Ping-pong: iteration k reads buffers[k % 2], writes the other.
            let odd = b.ins().band_imm_u(k, 1);
            for s in &recur.states {
                let b0 = addr(b, Base::Buf(s.buffers[0]), 0);
                let b1 = addr(b, Base::Buf(s.buffers[1]), 0);
                let cur = b.ins().select(odd, b1, b0);
                let next = b.ins().select(odd, b0, b1);
                set(b, s.arg, cur);
                set(b, s.next_region, next);
            }
            let fr = module.declare_func_in_func(*body, b.func);
            b.ins().call(fr, &[ctx]);
            let next = b.ins().iadd_imm_s(k, 1);
            let more = b.ins().icmp_imm_s(IntCC::SignedLessThan, next, steps);
            b.ins()
                .brif(more, head, &[BlockArg::Value(next)], exit, &[]);
            b.switch_to_block(exit);
        }
    }
    Ok(())
}
