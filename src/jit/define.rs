//! Machine code for the generated functions, compiled on every core.
//!
//! Building a function's CLIF is cheap; Cranelift's optimisation, register
//! allocation and emission are not (ResNet-50's training step has ~900
//! kernels). Functions are therefore collected as they are built and
//! compiled together at the end, in parallel, each in its own context, then
//! handed to the module as finished bytes with their relocations.

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Function;
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::{CodegenError, Context};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Module, ModuleReloc};
use rayon::prelude::*;

use super::{JitError, jerr};

/// Functions built but not yet compiled.
pub struct Pending {
    funcs: Vec<(FuncId, Function)>,
    /// NNC_DUMP_CLIF=1 prints every function before compilation (debugging).
    dump: bool,
}

impl Default for Pending {
    fn default() -> Pending {
        Pending {
            funcs: Vec::new(),
            dump: std::env::var_os("NNC_DUMP_CLIF").is_some(),
        }
    }
}

impl Pending {
    /// Takes the function built in `ctx` (leaving the context ready for the next).
    pub fn push(&mut self, module: &mut JITModule, id: FuncId, ctx: &mut Context) {
        if self.dump {
            eprintln!("{}", ctx.func.display());
        }
        self.funcs
            .push((id, std::mem::replace(&mut ctx.func, Function::new())));
        module.clear_context(ctx);
    }

    /// Compiles every pending function and defines it in `module`.
    pub fn define_all(self, module: &mut JITModule) -> Result<(), JitError> {
        let asm = std::env::var_os("NNC_DUMP_ASM").is_some();
        let isa = module.isa();
        let compiled: Vec<Result<Machine, JitError>> = self
            .funcs
            .into_par_iter()
            .map(|(id, func)| compile(isa, id, func, asm))
            .collect();
        for m in compiled {
            let m = m?;
            module
                .define_function_bytes(m.id, m.alignment, &m.bytes, &m.relocs)
                .map_err(jerr)?;
        }
        Ok(())
    }
}

/// One function's machine code.
struct Machine {
    id: FuncId,
    alignment: u64,
    bytes: Vec<u8>,
    relocs: Vec<ModuleReloc>,
}

/// Compiles one function; verifier errors are printed with the code.
fn compile(
    isa: &dyn TargetIsa,
    id: FuncId,
    func: Function,
    asm: bool,
) -> Result<Machine, JitError> {
    let mut ctx = Context::for_function(func);
    ctx.set_disasm(asm);
    if let Err(e) = ctx.compile(isa, &mut ControlPlane::default()) {
        return Err(match e.inner {
            CodegenError::Verifier(errors) => JitError(
                cranelift_codegen::print_errors::pretty_verifier_error(e.func, None, errors),
            ),
            other => jerr(other),
        });
    }
    let code = ctx
        .compiled_code()
        .ok_or_else(|| JitError("Cranelift returned no code".into()))?;
    if asm && let Some(text) = &code.vcode {
        eprintln!("{text}");
    }
    Ok(Machine {
        id,
        alignment: code.buffer.alignment as u64,
        bytes: code.code_buffer().to_vec(),
        relocs: code
            .buffer
            .relocs()
            .iter()
            .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id))
            .collect(),
    })
}
