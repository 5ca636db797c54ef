//! [`Executable`]: a program that passed the load-time checks, pre-decoded for the interpreter.
//!
//! The checks reject, naming the instruction: undecodable slots (unknown opcodes, registers above
//! r10, reserved fields set), writes to r10, jumps outside the program or into the middle of an
//! `lddw`, calls to helpers the host does not provide, local calls outside the program, unresolved
//! `lddw` pseudo immediates (function references, `BPF_PSEUDO_FUNC`, are resolved here to
//! [`CALLBACK_BASE`]` + slot` after the same target checks as calls), and programs whose last instruction is neither `exit` nor a backward
//! unconditional jump. These are the structural checks that make the interpreter's dispatch
//! total; memory safety does not depend on them (every access is checked at run time by
//! [`Memory`](crate::memory::Memory)).
//!
//! Architecture invariant: an `Executable` is immutable and holds no per-run state, so one can be
//! shared by many [`Vm`](crate::Vm)s on many threads.

use std::collections::{BTreeMap, BTreeSet};

use bpfmaps_abi::insn::{self, CallTarget, Insn, RawInsn};

use crate::error::LoadError;
use crate::helper::{HelperSet, PseudoResolver};
use crate::memory::CALLBACK_BASE;

/// The most slots a program may have (the kernel's limit for privileged programs).
pub const MAX_SLOTS: usize = 1_000_000;

/// The helper id a loader writes in place of an instruction whose CO-RE relocation could not be
/// satisfied (libbpf's `0xbad2310`). Such a call is accepted at load, as the kernel's verifier
/// accepts it on a dead path, and traps with [`crate::Trap::Poisoned`] when it executes.
pub const POISONED_CALL_ID: i32 = 0x0bad_2310;

/// libbpf's base id for a call to a missing weak kfunc (`POISON_CALL_KFUNC_BASE`): ids from
/// here to `+ 0xffff` (one per extern) are accepted at load and trap when run, like
/// [`POISONED_CALL_ID`].
pub const POISONED_KFUNC_BASE: i32 = 2_002_000_000;

/// True for the ids a loader writes into poisoned calls.
pub fn is_poisoned_call(id: i32) -> bool {
    id == POISONED_CALL_ID || (POISONED_KFUNC_BASE..=POISONED_KFUNC_BASE + 0xffff).contains(&id)
}

/// The `src` the pre-decoded op of a poisoned call carries (no real call kind uses it).
pub(crate) const POISONED_SRC: u8 = 0x0f;

/// One pre-decoded slot. The interpreter dispatches on `code`, the raw opcode byte; immediates are
/// already sign-extended (`lddw` joined), branch and local-call targets already absolute. The JIT
/// compiles from the same table ([`Executable::ops`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Op {
    /// The raw opcode byte (0 on the second slot of an `lddw`, which is never executed).
    pub code: u8,
    /// Destination register.
    pub dst: u8,
    /// Source register (or call kind for `call`).
    pub src: u8,
    /// The offset field: memory offset, signed-division flag, sign-extension width.
    pub off: i16,
    /// Absolute target slot of a jump or local call.
    pub target: u32,
    /// The immediate, sign-extended to 64 bits; the full value for `lddw`.
    pub imm: u64,
}

/// A checked program, ready to run on any number of [`Vm`](crate::Vm)s.
#[derive(Clone, Debug)]
pub struct Executable {
    slots: Vec<RawInsn>,
    pub(crate) ops: Vec<Op>,
    helpers: HelperSet,
    /// Slots that `lddw` function references (`BPF_PSEUDO_FUNC`) name: the only valid callbacks.
    callbacks: BTreeSet<u32>,
    /// What the loader says about poisoned calls, by slot (shown when one traps).
    poison_notes: BTreeMap<usize, String>,
}

fn relative_target(index: usize, offset: i64) -> i64 {
    // Slot counts are at most MAX_SLOTS, so this never overflows an i64.
    index as i64 + 1 + offset
}

impl Executable {
    /// Checks `slots` against the helper set and resolves `lddw` pseudo immediates through
    /// `resolver`.
    pub fn new(
        slots: &[RawInsn],
        helpers: HelperSet,
        resolver: &mut dyn PseudoResolver,
    ) -> Result<Self, LoadError> {
        if slots.is_empty() {
            return Err(LoadError::Empty);
        }
        if slots.len() > MAX_SLOTS {
            return Err(LoadError::TooLong {
                len: slots.len(),
                max: MAX_SLOTS,
            });
        }
        let decoded = insn::decode_program(slots)
            .map_err(|(index, source)| LoadError::Decode { index, source })?;
        let mut lddw_tail = vec![false; slots.len()];
        for &(index, insn) in &decoded {
            if insn.slots() == 2 {
                lddw_tail[index + 1] = true;
            }
        }
        let check_target = |index: usize, target: i64| -> Result<u32, LoadError> {
            if target < 0 || target >= slots.len() as i64 {
                return Err(LoadError::JumpOutOfRange { index, target });
            }
            let target = target as usize;
            if lddw_tail[target] {
                return Err(LoadError::JumpIntoLddw { index, target });
            }
            Ok(target as u32)
        };

        let mut ops = vec![Op::default(); slots.len()];
        let mut callbacks = BTreeSet::new();
        for &(index, insn) in &decoded {
            if insn.written_register() == Some(insn::FRAME_POINTER) {
                return Err(LoadError::WriteToFramePointer { index });
            }
            let raw = slots[index];
            let mut op = Op {
                code: raw.code,
                dst: raw.dst,
                src: raw.src,
                off: raw.off,
                target: 0,
                imm: i64::from(raw.imm) as u64,
            };
            match insn {
                Insn::Ja { offset, .. } => {
                    op.target = check_target(index, relative_target(index, offset.into()))?;
                }
                Insn::Jump { offset, .. } => {
                    op.target = check_target(index, relative_target(index, offset.into()))?;
                }
                Insn::Call(CallTarget::Helper(id)) if is_poisoned_call(id) => op.src = POISONED_SRC,
                Insn::Call(CallTarget::Helper(id)) if id < 0 || !helpers.contains(id as u32) => {
                    return Err(LoadError::UnknownHelper {
                        index,
                        id: id.into(),
                    });
                }
                Insn::Call(CallTarget::Local(offset)) => {
                    let target = relative_target(index, offset.into());
                    op.target = check_target(index, target)
                        .map_err(|_| LoadError::CallOutOfRange { index, target })?;
                }
                Insn::Call(CallTarget::Kfunc(_)) => {
                    return Err(LoadError::Unsupported {
                        index,
                        what: "a kernel function call",
                    });
                }
                Insn::LoadImm64 {
                    pseudo,
                    imm_lo,
                    imm_hi,
                    ..
                } => {
                    op.imm = if pseudo == insn::pseudo::IMM64 {
                        Insn::imm64(imm_lo, imm_hi)
                    } else if pseudo == insn::pseudo::FUNC {
                        // A callback: a function of this program at a relative offset.
                        let target = relative_target(index, imm_lo.into());
                        let target = check_target(index, target)
                            .map_err(|_| LoadError::CallOutOfRange { index, target })?;
                        callbacks.insert(target);
                        CALLBACK_BASE + u64::from(target)
                    } else {
                        resolver.resolve(index, pseudo, imm_lo, imm_hi).ok_or(
                            LoadError::UnresolvedPseudo {
                                index,
                                pseudo,
                                imm: imm_lo,
                            },
                        )?
                    };
                    op.src = 0;
                }
                _ => {}
            }
            ops[index] = op;
        }

        let &(last_index, last) = decoded.last().ok_or(LoadError::Empty)?;
        let ends_well = match last {
            Insn::Exit => true,
            Insn::Ja { offset, .. } => offset < 0,
            _ => false,
        };
        if !ends_well {
            return Err(LoadError::NoExitAtEnd { index: last_index });
        }
        Ok(Executable {
            slots: slots.to_vec(),
            ops,
            helpers,
            callbacks,
            poison_notes: BTreeMap::new(),
        })
    }

    /// Attaches the loader's explanation of the poisoned call at `slot` (which relocation of
    /// which program), shown by [`crate::Trap::Poisoned`] if it runs.
    pub fn with_poison_note(mut self, slot: usize, note: String) -> Self {
        self.poison_notes.insert(slot, note);
        self
    }

    /// The loader's explanation of the poisoned call at `slot`, if any.
    pub fn poison_note(&self, slot: usize) -> Option<&str> {
        self.poison_notes.get(&slot).map(String::as_str)
    }

    /// Like [`Executable::new`] from the program's bytes (a multiple of 8).
    pub fn from_bytes(
        bytes: &[u8],
        helpers: HelperSet,
        resolver: &mut dyn PseudoResolver,
    ) -> Result<Self, LoadError> {
        let slots = insn::slots_from_bytes(bytes).map_err(|source| LoadError::Decode {
            index: bytes.len() / insn::INSN_SIZE,
            source,
        })?;
        Self::new(&slots, helpers, resolver)
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Always false: an executable has at least one instruction.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The program's slots as loaded (pseudo immediates unresolved).
    pub fn slots(&self) -> &[RawInsn] {
        &self.slots
    }

    /// The pre-decoded slots, one per slot (the second slot of an `lddw` is an [`Op`] with code
    /// 0 that is never executed), as the load-time checks left them.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The slots `lddw` function references name (the only valid callback entries), ascending.
    pub fn callback_slots(&self) -> impl Iterator<Item = usize> + '_ {
        self.callbacks.iter().map(|&slot| slot as usize)
    }

    /// The helper ids the program may call.
    pub fn helpers(&self) -> &HelperSet {
        &self.helpers
    }

    /// The slot of the callback function a `lddw` function reference loaded as `value`
    /// ([`CALLBACK_BASE`]` + slot`), or `None` when `value` is not such a reference.
    pub fn callback_target(&self, value: u64) -> Option<usize> {
        let slot = u32::try_from(value.checked_sub(CALLBACK_BASE)?).ok()?;
        self.callbacks.contains(&slot).then_some(slot as usize)
    }

    /// The program's listing, one `index: instruction` line per instruction.
    pub fn disassemble(&self) -> String {
        let mut out = String::new();
        let mut index = 0;
        while index < self.slots.len() {
            match insn::decode(&self.slots[index..]) {
                Ok(insn) => {
                    out.push_str(&format!("{index}: {}\n", insn::disassemble(&insn)));
                    index += insn.slots();
                }
                Err(_) => {
                    out.push_str(&format!("{index}: .invalid\n"));
                    index += 1;
                }
            }
        }
        out
    }
}
