//! A compiled graph with its memory: the arena (allocated once), the region
//! table and the entry point that checks every argument before native code
//! runs.

use std::sync::Arc;

use crate::ir::graph::Graph;
use crate::ir::types::DType;
use crate::jit::{self, Compiled, Ctx, JitError};
use crate::schedule::{self, Layout, Output, Program, ScheduleError, View};

/// Memory aligned to 64 bytes, counted in f32 elements.
#[derive(Clone)]
pub struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl Aligned {
    pub fn zeros(len: usize) -> Aligned {
        Aligned {
            lines: vec![Line([0.0; 16]); len.div_ceil(16).max(1)],
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: Line is repr(C) of 16 f32s, so the lines are a contiguous f32 array.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const f32, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut f32, self.len) }
    }

    fn ptr(&mut self) -> *mut u8 {
        self.lines.as_mut_ptr() as *mut u8
    }
}

/// Why a graph could not be compiled.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error(transparent)]
    Jit(#[from] JitError),
}

/// An input buffer for one call: f32 or class indices.
#[derive(Debug, Clone, Copy)]
pub enum InputData<'a> {
    F32(&'a [f32]),
    I32(&'a [i32]),
}

impl InputData<'_> {
    fn len(&self) -> usize {
        match self {
            InputData::F32(s) => s.len(),
            InputData::I32(s) => s.len(),
        }
    }

    fn ptr(&self) -> *mut u8 {
        match self {
            InputData::F32(s) => s.as_ptr() as *mut u8,
            InputData::I32(s) => s.as_ptr() as *mut u8,
        }
    }
}

/// A graph compiled for one batch size, with its arena.
pub struct Executable {
    pub program: Arc<Program>,
    pub code: Arc<Compiled>,
    arena: Aligned,
    regions: Vec<*mut u8>,
    times: Vec<u32>,
    /// Expected element count of each input.
    pub input_lens: Vec<usize>,
    pub batch: usize,
    /// Kernel times, when compiled with profiling.
    pub profile: Option<Box<jit::Profile>>,
    /// Scheduling and code generation (not the arena's allocation).
    pub compile_time: std::time::Duration,
}

// SAFETY: the raw pointers in `regions` are only dereferenced during `run`,
// which takes `&mut self`; between calls they are stale and unused.
unsafe impl Send for Executable {}

impl Executable {
    /// Schedules and compiles `graph` for `batch`.
    pub fn new(
        graph: &Graph,
        outputs: &[Output],
        batch: usize,
        layout: &Layout,
        input_lens: Vec<usize>,
    ) -> Result<Executable, CompileError> {
        Executable::with_profile(graph, outputs, batch, layout, input_lens, false)
    }

    /// Like [`Executable::new`]; with `profile`, times every kernel (see [`Executable::profile`]).
    pub fn with_profile(
        graph: &Graph,
        outputs: &[Output],
        batch: usize,
        layout: &Layout,
        input_lens: Vec<usize>,
        profile: bool,
    ) -> Result<Executable, CompileError> {
        let started = std::time::Instant::now();
        let program = schedule::schedule(graph, outputs, batch, layout)?;
        let code = jit::compile(&program, profile)?;
        let compile_time = started.elapsed();
        let mut exe = Executable::from_parts(Arc::new(program), Arc::new(code), batch, input_lens);
        exe.compile_time = compile_time;
        Ok(exe)
    }

    pub fn from_parts(
        program: Arc<Program>,
        code: Arc<Compiled>,
        batch: usize,
        input_lens: Vec<usize>,
    ) -> Executable {
        let arena = Aligned::zeros(program.arena);
        let profile =
            (!code.labels.is_empty()).then(|| Box::new(jit::Profile::new(code.labels.len())));
        Executable {
            profile,
            compile_time: std::time::Duration::ZERO,
            regions: vec![std::ptr::null_mut(); code.regions],
            times: vec![0; code.max_depth + 1],
            arena,
            program,
            code,
            input_lens,
            batch,
        }
    }

    /// Runs the compiled step. Parameters, states and hypers are the
    /// caller's buffers; all lengths are checked before native code runs, as
    /// a wrong length would let it read or write outside them.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &mut self,
        params: &mut [f32],
        states: &mut [f32],
        hypers: &[f32],
        inputs: &[InputData<'_>],
        seed: u64,
        threads: usize,
        sizes: (usize, usize, usize),
    ) -> Result<(), String> {
        let (np, ns, nh) = sizes;
        if params.len() < np || states.len() < ns || hypers.len() < nh {
            return Err("parameter, state or hyper-parameter buffer too short".into());
        }
        self.check_inputs(inputs)?;
        self.regions[schedule::ARENA as usize] = self.arena.ptr();
        self.regions[schedule::PARAMS as usize] = params.as_mut_ptr() as *mut u8;
        self.regions[schedule::STATES as usize] = states.as_mut_ptr() as *mut u8;
        self.regions[schedule::HYPERS as usize] = hypers.as_ptr() as *mut u8;
        for (i, x) in inputs.iter().enumerate() {
            self.regions[schedule::FIRST_INPUT as usize + i] = x.ptr();
        }
        let profile = match &mut self.profile {
            Some(p) => {
                p.last = std::time::Instant::now();
                &mut **p as *mut jit::Profile
            }
            None => std::ptr::null_mut(),
        };
        // Threads only when some kernel splits; the step runs on the caller,
        // and a team of workers (`jit::team`) joins its parallel parts.
        let threads = if self.code.threaded {
            threads.max(1)
        } else {
            1
        };
        let ctx = Ctx {
            regions: self.regions.as_mut_ptr(),
            times: self.times.as_mut_ptr(),
            seed,
            threads,
            profile,
        };
        // SAFETY: every region the program addresses now points at a buffer of
        // the size it was scheduled for (arena allocated for the program,
        // parameters/states/hypers/inputs checked above); `ctx` outlives the
        // call, and every parallel part finishes before its kernel returns.
        unsafe { self.code.run(&ctx) };
        Ok(())
    }

    /// Checks the number and lengths of the inputs.
    pub fn check_inputs(&self, inputs: &[InputData<'_>]) -> Result<(), String> {
        if inputs.len() != self.input_lens.len() {
            return Err(format!(
                "expected {} inputs, got {}",
                self.input_lens.len(),
                inputs.len()
            ));
        }
        for (i, (x, &n)) in inputs.iter().zip(&self.input_lens).enumerate() {
            if x.len() != n {
                return Err(format!("input {i} has {} elements, expected {n}", x.len()));
            }
            // Class indices read as floats (or the reverse) would be garbage,
            // and an index out of range would address outside its table.
            let given = match x {
                InputData::F32(_) => DType::F32,
                InputData::I32(_) => DType::I32,
            };
            if let Some(Some(want)) = self.program.input_types.get(i)
                && *want != given
            {
                return Err(format!("input {i} holds {given} elements, expected {want}"));
            }
        }
        Ok(())
    }

    /// The values of requested output `i` after a run (row-major copy).
    pub fn output(&self, i: usize, params: &[f32], states: &[f32]) -> Vec<f32> {
        let v = &self.program.outputs[i];
        read_view(v, &self.program, self.arena.as_slice(), params, states)
    }
}

/// Reads a view out of the arena, parameters or states.
pub fn read_view(v: &View, p: &Program, arena: &[f32], params: &[f32], states: &[f32]) -> Vec<f32> {
    let (mem, base) = match v.base {
        schedule::Base::Buf(b) => (arena, p.offsets[b as usize] as isize),
        schedule::Base::Region(r) if r == schedule::PARAMS => (params, 0),
        schedule::Base::Region(r) if r == schedule::STATES => (states, 0),
        schedule::Base::Region(_) => (arena, 0),
    };
    schedule::views::offsets(&v.shape, &v.strides)
        .map(|off| {
            mem.get((base + v.offset + off) as usize)
                .copied()
                .unwrap_or(f32::NAN)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Span;
    use crate::ir::graph::Node;
    use crate::ir::ops::Op;
    use crate::ir::types::{Shape, TensorType};
    use crate::schedule::Dest;

    /// Class indices [4] → one-hot [4, 3].
    fn one_hot_exe() -> Executable {
        let mut g = Graph::new();
        let node = |op, inputs, ty| Node {
            op,
            inputs,
            ty: Some(ty),
            span: Span::default(),
            layer: None,
        };
        let x = g.push(node(
            Op::Input { index: 0 },
            vec![],
            TensorType::i32(Shape::fixed(&[4])),
        ));
        let y = g.push(node(
            Op::OneHot { classes: 3 },
            vec![x],
            TensorType::f32(Shape::fixed(&[4, 3])),
        ));
        let layout = Layout {
            param_offsets: vec![],
            state_offsets: vec![],
            inputs: 1,
        };
        let out = Output {
            node: y,
            dest: Dest::Buffer,
        };
        Executable::new(&g, &[out], 1, &layout, vec![4]).unwrap()
    }

    #[test]
    fn inputs_of_the_wrong_element_type_or_length_are_refused() {
        let mut exe = one_hot_exe();
        let mut run = |x: InputData<'_>| exe.run(&mut [], &mut [], &[], &[x], 0, 1, (0, 0, 0));
        let err = run(InputData::F32(&[0.0, 1.0, 2.0, 1.0])).unwrap_err();
        assert_eq!(err, "input 0 holds f32 elements, expected i32");
        let err = run(InputData::I32(&[0, 1, 2])).unwrap_err();
        assert_eq!(err, "input 0 has 3 elements, expected 4");
        run(InputData::I32(&[0, 1, 2, 1])).unwrap();
        let hot = exe.output(0, &[], &[]);
        assert_eq!(hot, [1., 0., 0., 0., 1., 0., 0., 0., 1., 0., 1., 0.]);
    }
}
