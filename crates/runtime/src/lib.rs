//! The user engine's program runtime: it loads the same libbpf-style objects the kernel engine
//! loads and runs their programs in this process, on the safe interpreter of `bpfmaps-vm`, over
//! the shared-memory maps of `bpfmaps-maps`.
//!
//! - [`UserObject`] ([`loader`]): an object's maps created (or reused from `LIBBPF_PIN_BY_NAME`
//!   pins after the same compatibility check as the kernel engine's: type, key and value
//!   size, max_entries, flags), data sections written, `.rodata`
//!   frozen, programs checked with their map references resolved.
//! - [`Program`] ([`program`]): invoke a program on a context buffer from any thread and get r0
//!   back; [`Program::test_run`] is the user engine's `BPF_PROG_TEST_RUN`.
//! - [`Task`] ([`task`]): the traced task an invocation of [`Program::run_for_task`] reports
//!   and reads, instead of the calling thread.
//! - [`helpers`]: the BPF helpers with the kernel's return values and errnos.
//! - [`cpu`]: the CPU slots invocations own (exclusive across processes sharing a pin root), which
//!   per-CPU maps and `get_smp_processor_id` see.
//! - [`trace`]: `bpf_trace_printk`'s format and trace pipe.
//! - [`task`]: the current-task helpers that have no task struct behind them
//!   (`get_current_task(_btf)`'s opaque handle, `get_stack`).
//!
//! ```no_run
//! use bpfmaps_runtime::{LoadOptions, UserObject};
//! use bpfmaps_obj::ObjectSpec;
//!
//! let mut spec = ObjectSpec::from_file("bpf/obj/array_counter.bpf.o".as_ref())?;
//! spec.set_global("target_tgid", &0u32.to_ne_bytes())?;
//! let object = UserObject::load(spec, &LoadOptions::default())?;
//! let mut ctx = [0u8; 64]; // a sys_enter tracepoint context: args[0] at offset 16
//! ctx[16] = 3;
//! let r0 = object.program("count_getpgid")?.run(&mut ctx)?;
//! assert_eq!(r0, 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture invariant: the runtime never hands the guest a host pointer; everything a program
//! touches is a VM region (its stack and context, map values and ring buffer records lent through
//! the maps crate's checked accessors). It knows no file descriptor and no kernel.

pub mod cpu;
mod error;
pub mod helpers;
mod lent;
pub mod loader;
pub mod program;
mod prune;
pub mod task;
pub mod trace;

pub use error::{PinField, RuntimeError};
pub use loader::{LoadOptions, LoadedMap, UserObject, MAP_HANDLE_BASE};
pub use program::{Program, TestRunResult};
pub use task::{Task, TASK_HANDLE_BASE};
