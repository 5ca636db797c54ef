//! The VM's error values: [`LoadError`] (a program refused by the load-time checks, naming the
//! instruction), [`Trap`] (a run stopped, naming the instruction and, for memory faults, the
//! address) and [`HelperError`] (what a helper host reports back).
//!
//! Traps are values: a trap ends the run, never the host process.

use bpfmaps_abi::insn::DecodeError;

use crate::memory::MemFault;

/// Why a program was refused at load time. `index` is the slot index of the offending
/// instruction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The program has no instructions.
    #[error("empty program")]
    Empty,
    /// The program is longer than the configured maximum.
    #[error("program has {len} slots, more than the maximum {max}")]
    TooLong {
        /// Number of slots.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A slot does not decode (unknown opcode, register above r10, reserved field set).
    #[error("instruction {index}: {source}")]
    Decode {
        /// Slot index.
        index: usize,
        /// The decoder's reason.
        source: DecodeError,
    },
    /// The instruction writes the read-only frame pointer r10.
    #[error("instruction {index}: writes the read-only frame pointer r10")]
    WriteToFramePointer {
        /// Slot index.
        index: usize,
    },
    /// A jump's target is outside the program.
    #[error("instruction {index}: jump target {target} is outside the program")]
    JumpOutOfRange {
        /// Slot index.
        index: usize,
        /// The target slot.
        target: i64,
    },
    /// A jump lands on the second slot of an `lddw`.
    #[error("instruction {index}: jump target {target} is the middle of an lddw")]
    JumpIntoLddw {
        /// Slot index.
        index: usize,
        /// The target slot.
        target: usize,
    },
    /// A local call's target is outside the program or inside an `lddw`.
    #[error("instruction {index}: local call target {target} is not an instruction")]
    CallOutOfRange {
        /// Slot index.
        index: usize,
        /// The target slot.
        target: i64,
    },
    /// A call to a helper the host does not provide.
    #[error("instruction {index}: call to unknown helper {id}")]
    UnknownHelper {
        /// Slot index.
        index: usize,
        /// The helper id.
        id: i64,
    },
    /// An instruction the interpreter does not run (kernel function calls).
    #[error("instruction {index}: {what} is not supported")]
    Unsupported {
        /// Slot index.
        index: usize,
        /// What it is.
        what: &'static str,
    },
    /// An `lddw` pseudo immediate the loader's resolver could not resolve.
    #[error("instruction {index}: unresolved lddw pseudo source {pseudo} (imm {imm})")]
    UnresolvedPseudo {
        /// Slot index.
        index: usize,
        /// The pseudo kind (`src_reg`).
        pseudo: u8,
        /// The first slot's immediate.
        imm: i32,
    },
    /// The last instruction is neither `exit` nor an unconditional backward jump, so execution
    /// could fall off the end.
    #[error("instruction {index}: the program does not end in exit or a backward jump")]
    NoExitAtEnd {
        /// Slot index of the last instruction.
        index: usize,
    },
}

/// Why a helper call failed in a way that must stop the program (an errno result is a normal
/// return value instead).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// The helper touched guest memory it may not.
    #[error("{0}")]
    Memory(#[from] MemFault),
    /// An argument no verifier would have allowed (bad map handle, bad size).
    #[error("argument r{arg}: {reason}")]
    InvalidArgument {
        /// The argument register (1-5).
        arg: u8,
        /// Why.
        reason: &'static str,
    },
    /// The helper is known but the host cannot run it now.
    #[error("helper not available in this host")]
    Unavailable,
    /// A callback the helper ran (`bpf_loop`, `bpf_for_each_map_elem`) trapped: the run ends
    /// with that trap, which names the callback's instruction.
    #[error("{0}")]
    CallbackTrapped(Box<Trap>),
}

/// Why a run stopped without reaching the final `exit`. `pc` is the slot index of the
/// instruction that trapped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Trap {
    /// A load, store or atomic outside the regions the program may touch.
    #[error("instruction {pc}: {fault}")]
    Memory {
        /// Slot index.
        pc: usize,
        /// The access.
        fault: MemFault,
    },
    /// The instruction budget ran out (an endless or too long loop).
    #[error("instruction {pc}: instruction budget of {budget} exhausted")]
    BudgetExhausted {
        /// Slot index of the next instruction.
        pc: usize,
        /// The budget.
        budget: u64,
    },
    /// Local calls nested deeper than the configured maximum.
    #[error("instruction {pc}: call depth exceeds {max}")]
    CallDepthExceeded {
        /// Slot index.
        pc: usize,
        /// The maximum depth.
        max: usize,
    },
    /// `callx` named a helper the host does not provide.
    #[error("instruction {pc}: call to unknown helper {id}")]
    UnknownHelper {
        /// Slot index.
        pc: usize,
        /// The helper id in the register.
        id: u64,
    },
    /// The interpreter reached a slot that is not an instruction (cannot happen for a program
    /// that passed the load-time checks; kept as a value rather than a panic).
    #[error("instruction {pc}: not an executable instruction")]
    IllegalInstruction {
        /// Slot index.
        pc: usize,
    },
    /// The host's [`HelperHost::prepare`](crate::HelperHost::prepare) failed before the first
    /// instruction ran.
    #[error("preparing the run: {error}")]
    Prepare {
        /// The host's error.
        error: HelperError,
    },
    /// A poisoned instruction ran: a call a loader wrote where a CO-RE relocation could not be
    /// satisfied or a missing weak kfunc was called (see [`crate::is_poisoned_call`]).
    #[error("instruction {pc}: poisoned instruction ran: {note}")]
    Poisoned {
        /// Slot index.
        pc: usize,
        /// The loader's explanation (program, relocation, access string); may be empty.
        note: String,
    },
    /// A helper failed.
    #[error("instruction {pc}: helper {id}: {error}")]
    Helper {
        /// Slot index.
        pc: usize,
        /// The helper id.
        id: u32,
        /// The helper's error.
        error: HelperError,
    },
}

impl Trap {
    /// The slot index of the instruction that trapped (0 when the run failed before starting).
    pub fn pc(&self) -> usize {
        match *self {
            Trap::Prepare { .. } => 0,
            Trap::Memory { pc, .. }
            | Trap::BudgetExhausted { pc, .. }
            | Trap::CallDepthExceeded { pc, .. }
            | Trap::UnknownHelper { pc, .. }
            | Trap::IllegalInstruction { pc }
            | Trap::Poisoned { pc, .. }
            | Trap::Helper { pc, .. } => pc,
        }
    }
}
