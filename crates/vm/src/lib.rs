//! The user engine's eBPF virtual machine: load-time checks ([`Executable`]), a safe interpreter
//! of the whole ISA v4 ([`Vm`]), a virtual guest address space ([`Memory`]) and the host
//! interfaces for helpers ([`HelperHost`]) and `lddw` pseudo values ([`PseudoResolver`]).
//!
//! Safe by construction: a program only reaches memory through [`Memory`], whose regions (its
//! stack frames, its context, regions the host maps for it) sit at synthetic guest addresses; any
//! other access ends the run with a [`Trap`] naming the instruction and address. An instruction
//! budget ([`Config::instruction_budget`]) ends endless loops. The host process keeps running.
//!
//! ```
//! use bpfmaps_vm::{asm, Config, Executable, HelperSet, NoHelpers, NoPseudo, Vm};
//! let slots = asm::assemble("ldxb %r0, [%r1+1]\nadd %r0, 1\nexit").unwrap();
//! let exe = Executable::new(&slots, HelperSet::default(), &mut NoPseudo).unwrap();
//! let mut vm = Vm::new(Config::default());
//! assert_eq!(vm.run(&exe, &mut [7, 41], &mut NoHelpers), Ok(42));
//! ```
//!
//! Architecture invariant: this crate knows no map, helper meaning or file descriptor; it is
//! given helpers and memory by its host (the user engine), and it never turns a guest value into a
//! host pointer. No `unsafe` code.

#![forbid(unsafe_code)]

pub mod asm;
mod error;
mod helper;
mod interp;
pub mod memory;
mod program;

pub use error::{HelperError, LoadError, Trap};
pub use helper::{Callbacks, HelperHost, HelperSet, NoHelpers, NoPseudo, PseudoResolver};
pub use interp::{Config, Vm};
pub use memory::{Access, HostRegion, MemFault, Memory, Region, Window};
pub use program::{
    is_poisoned_call, Executable, Op, MAX_SLOTS, POISONED_CALL_ID, POISONED_KFUNC_BASE,
};
