//! Runs a command and fires user-engine programs on its syscall tracepoints, without privilege.
//!
//! Programs in `tracepoint/syscalls/sys_enter_NAME`, `tracepoint/syscalls/sys_exit_NAME` and
//! `tracepoint/raw_syscalls/sys_enter|sys_exit` sections (and the `tp/` spellings) are attached
//! to a [`Tracer`] ([`Tracer::attach`]); [`Tracer::run`] starts the command under a seccomp
//! filter that stops only the syscalls some program wants ([`filter`]), follows it, its threads
//! and descendants with ptrace, and runs the programs at each stop on a context laid out as the
//! kernel's tracepoint record ([`layout`]) for the stopped task ([`task::TracedTask`]: ids,
//! comm, uid/gid, CPU, memory and stack are the traced task's).
//!
//! ```no_run
//! use bpfmaps_obj::ObjectSpec;
//! use bpfmaps_runtime::{LoadOptions, UserObject};
//! use bpfmaps_tracer::Tracer;
//!
//! let spec = ObjectSpec::from_file("bpf/obj/openat_counter.bpf.o".as_ref())?;
//! let object = UserObject::load(spec, &LoadOptions::default())?;
//! let mut tracer = Tracer::new();
//! tracer.attach(object.program("count_openat")?.clone())?;
//! let outcome = tracer.run(&["ls".into(), "/".into()])?;
//! println!("ls exited with {}", outcome.status.shell_code());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: the only crate that uses ptrace and seccomp; it knows no map and no
//! kernel BPF object (programs come loaded from `bpfmaps-runtime`).

mod filter;
pub mod layout;
mod point;
mod syscall_table;
pub mod task;
mod tracer;

use std::path::PathBuf;

use bpfmaps_abi::Errno;

pub use point::{syscall_number, TracePoint};
pub use tracer::{
    CommandStatus, StartCallback, TraceOutcome, TraceStats, Tracer, TrapCallback, TrapReport,
};

/// Why a program could not be attached or a command not traced.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The section names a syscall tracepoint this kernel (or the built-in table) lacks.
    #[error("no such syscall tracepoint: {0}")]
    NoSuchTracepoint(String),
    /// The program is not in a syscall tracepoint section.
    #[error("program {program:?} (section {section:?}) is not a syscall tracepoint program; the user engine attaches tracepoint/syscalls/sys_enter_NAME, sys_exit_NAME and tracepoint/raw_syscalls/sys_enter, sys_exit")]
    NotSyscallTracepoint {
        /// The program.
        program: String,
        /// Its section.
        section: String,
    },
    /// A tracefs format file could not be parsed.
    #[error("cannot parse the tracepoint format {0}")]
    BadFormat(PathBuf),
    /// No command was given.
    #[error("no command to run")]
    EmptyCommand,
    /// An argument contains a NUL byte.
    #[error("a command argument contains a NUL byte")]
    NulInArgument,
    /// The command could not be started.
    #[error("cannot run `{command}`: {step} failed: {errno}")]
    Spawn {
        /// The command.
        command: String,
        /// The failing step.
        step: &'static str,
        /// Why.
        errno: Errno,
    },
    /// A ptrace request failed.
    #[error("{op} failed: {errno}")]
    Ptrace {
        /// The request.
        op: &'static str,
        /// Why.
        errno: Errno,
    },
    /// Another system call failed.
    #[error("{op} failed: {errno}")]
    Os {
        /// The call.
        op: &'static str,
        /// Why.
        errno: Errno,
    },
    /// The tracer supports x86_64 only for now.
    #[error("tracing syscalls on the user engine is implemented for x86_64 only, not {0}")]
    UnsupportedArch(&'static str),
}
