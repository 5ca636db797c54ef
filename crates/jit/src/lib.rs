//! A Cranelift JIT for the user engine: compiles a checked [`Executable`] to native code once
//! ([`JitProgram::compile`]) and runs it any number of times on [`JitVm`]s, with the
//! interpreter's semantics and safety promise.
//!
//! Guest addresses stay virtual, exactly as in the interpreter ([`bpfmaps_vm::memory`]): the
//! upper 32 bits of an address pick a region. Native code translates each access through a small
//! region table the host fills from [`Memory::window`](bpfmaps_vm::Memory::window) (base pointer,
//! readable and writable length per region) with an inline bounds and mode check; anything the
//! inline check does not admit (a region outside the table, a region backed by a
//! [`HostRegion`](bpfmaps_vm::HostRegion), an access out of bounds) takes a slow path into the
//! host, which performs it through [`Memory`](bpfmaps_vm::Memory)'s own checks or ends the run
//! with the same [`Trap`] the interpreter reports. The instruction budget is charged per basic
//! block and stops a run at the same instruction as the interpreter's. Local calls, helper calls
//! (through one `extern "C"` trampoline) and callbacks (`bpf_loop`, `bpf_for_each_map_elem`) are
//! compiled. `docs/ARCHITECTURE.md` lists exactly what is checked where.
//!
//! ```
//! use bpfmaps_jit::{JitProgram, JitVm};
//! use bpfmaps_vm::{asm, Config, Executable, HelperSet, NoHelpers, NoPseudo};
//! let slots = asm::assemble("ldxb %r0, [%r1+1]\nadd %r0, 1\nexit").unwrap();
//! let exe = Executable::new(&slots, HelperSet::default(), &mut NoPseudo).unwrap();
//! let program = JitProgram::compile(exe, Config::default()).unwrap();
//! let mut vm = JitVm::new();
//! assert_eq!(vm.run(&program, &mut [7, 41], &mut NoHelpers), Ok(42));
//! ```
//!
//! Architecture invariant: all of the project's JIT `unsafe` code is in this crate (the entry
//! call into generated code and the trampolines it calls back); the VM crate stays free of
//! `unsafe`. Tested on x86-64; other hosts get Cranelift's native ISA (aarch64 untested).

mod compile;
mod exec;

use std::time::Duration;

use bpfmaps_vm::{Config, Executable};

pub use compile::CompileError;
pub use exec::JitVm;

/// A program compiled to native code, with the executable and configuration it was compiled
/// for. Immutable and `Send + Sync`: compile once at load, run on any thread.
pub struct JitProgram {
    exe: Executable,
    config: Config,
    code: compile::Code,
    compile_time: Duration,
}

impl std::fmt::Debug for JitProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitProgram")
            .field("slots", &self.exe.len())
            .field("code_bytes", &self.code.size)
            .field("compile_time", &self.compile_time)
            .finish()
    }
}

impl JitProgram {
    /// Compiles `exe` for running with `config` (its stack size and call depth are compiled in;
    /// the instruction budget and context access are read at run time from the same config).
    pub fn compile(exe: Executable, config: Config) -> Result<JitProgram, CompileError> {
        let started = std::time::Instant::now();
        let code = compile::compile(&exe, &config)?;
        Ok(JitProgram {
            exe,
            config,
            code,
            compile_time: started.elapsed(),
        })
    }

    /// The executable it was compiled from.
    pub fn executable(&self) -> &Executable {
        &self.exe
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// How long [`JitProgram::compile`] took.
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Bytes of native code generated.
    pub fn code_size(&self) -> usize {
        self.code.size
    }
}
