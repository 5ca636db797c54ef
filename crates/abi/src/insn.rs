//! eBPF instruction encoding (RFC 9669, ISA v4): the raw 8-byte slot ([`RawInsn`]), the opcode
//! constants, a strict decoder into the typed [`Insn`], its encoder, and a disassembler printing
//! the syntax of the bpf_conformance suite (`mov %r0, 1`, `ldxdw %r0, [%r1+2]`, `lock fetch add
//! [%r10-8], %r1`).
//!
//! Owned by the VM work; the loader, interpreter and a later JIT share it so they agree on what a
//! program means. It does not know about helpers, maps or memory: it only says what each slot
//! encodes and rejects encodings the ISA does not define (unknown opcodes, registers above r10,
//! non-zero reserved fields, as the kernel verifier does).
//!
//! Slot layout (little-endian, as on every host bpfmaps supports):
//!
//! | byte | field |
//! | ---- | ----- |
//! | 0    | opcode: class (bits 0-2) and class-specific fields |
//! | 1    | `dst_reg` (low nibble), `src_reg` (high nibble) |
//! | 2-3  | signed 16-bit offset |
//! | 4-7  | signed 32-bit immediate |
//!
//! `lddw` (`0x18`) takes two slots: the second has opcode 0 and carries the upper 32 bits of the
//! immediate.
//!
//! ```
//! use bpfmaps_abi::insn::{decode_program, disassemble, RawInsn};
//! let prog = [RawInsn::new(0xb7, 0, 0, 0, 7), RawInsn::new(0x95, 0, 0, 0, 0)];
//! let insns = decode_program(&prog).unwrap();
//! assert_eq!(disassemble(&insns[0].1), "mov %r0, 7");
//! ```

use std::fmt;

/// Size of one instruction slot in bytes.
pub const INSN_SIZE: usize = 8;

/// Number of general registers: r0-r9 plus the read-only frame pointer r10.
pub const REG_COUNT: usize = 11;

/// The read-only frame pointer register.
pub const FRAME_POINTER: u8 = 10;

/// Instruction classes (opcode bits 0-2).
pub mod class {
    /// Non-standard loads (`lddw`, legacy packet loads).
    pub const LD: u8 = 0x00;
    /// Loads into a register.
    pub const LDX: u8 = 0x01;
    /// Stores of an immediate.
    pub const ST: u8 = 0x02;
    /// Stores of a register, and atomics.
    pub const STX: u8 = 0x03;
    /// 32-bit arithmetic.
    pub const ALU: u8 = 0x04;
    /// 64-bit jumps, calls and exit.
    pub const JMP: u8 = 0x05;
    /// 32-bit jumps.
    pub const JMP32: u8 = 0x06;
    /// 64-bit arithmetic.
    pub const ALU64: u8 = 0x07;
}

/// The source bit of arithmetic and jump opcodes (bit 3).
pub mod source {
    /// The operand is the immediate.
    pub const K: u8 = 0x00;
    /// The operand is `src_reg`.
    pub const X: u8 = 0x08;
}

/// Arithmetic operations (opcode bits 4-7 of the ALU classes).
pub mod alu_op {
    /// `dst += src`.
    pub const ADD: u8 = 0x00;
    /// `dst -= src`.
    pub const SUB: u8 = 0x10;
    /// `dst *= src`.
    pub const MUL: u8 = 0x20;
    /// `dst /= src` (signed with offset 1).
    pub const DIV: u8 = 0x30;
    /// `dst |= src`.
    pub const OR: u8 = 0x40;
    /// `dst &= src`.
    pub const AND: u8 = 0x50;
    /// `dst <<= src`.
    pub const LSH: u8 = 0x60;
    /// `dst >>= src` (logical).
    pub const RSH: u8 = 0x70;
    /// `dst = -dst`.
    pub const NEG: u8 = 0x80;
    /// `dst %= src` (signed with offset 1).
    pub const MOD: u8 = 0x90;
    /// `dst ^= src`.
    pub const XOR: u8 = 0xa0;
    /// `dst = src` (sign-extending with offset 8, 16, 32).
    pub const MOV: u8 = 0xb0;
    /// `dst >>= src` (arithmetic).
    pub const ARSH: u8 = 0xc0;
    /// Byte swaps.
    pub const END: u8 = 0xd0;
}

/// Jump operations (opcode bits 4-7 of the jump classes).
pub mod jmp_op {
    /// Unconditional jump.
    pub const JA: u8 = 0x00;
    /// `==`.
    pub const JEQ: u8 = 0x10;
    /// Unsigned `>`.
    pub const JGT: u8 = 0x20;
    /// Unsigned `>=`.
    pub const JGE: u8 = 0x30;
    /// `dst & src != 0`.
    pub const JSET: u8 = 0x40;
    /// `!=`.
    pub const JNE: u8 = 0x50;
    /// Signed `>`.
    pub const JSGT: u8 = 0x60;
    /// Signed `>=`.
    pub const JSGE: u8 = 0x70;
    /// Function call.
    pub const CALL: u8 = 0x80;
    /// Return.
    pub const EXIT: u8 = 0x90;
    /// Unsigned `<`.
    pub const JLT: u8 = 0xa0;
    /// Unsigned `<=`.
    pub const JLE: u8 = 0xb0;
    /// Signed `<`.
    pub const JSLT: u8 = 0xc0;
    /// Signed `<=`.
    pub const JSLE: u8 = 0xd0;
}

/// Access sizes of load and store opcodes (bits 3-4).
pub mod size {
    /// 4 bytes.
    pub const W: u8 = 0x00;
    /// 2 bytes.
    pub const H: u8 = 0x08;
    /// 1 byte.
    pub const B: u8 = 0x10;
    /// 8 bytes.
    pub const DW: u8 = 0x18;
}

/// Modes of load and store opcodes (bits 5-7).
pub mod mode {
    /// 64-bit immediate (`lddw`).
    pub const IMM: u8 = 0x00;
    /// Legacy packet access, absolute.
    pub const ABS: u8 = 0x20;
    /// Legacy packet access, indirect.
    pub const IND: u8 = 0x40;
    /// Regular memory access.
    pub const MEM: u8 = 0x60;
    /// Sign-extending load.
    pub const MEMSX: u8 = 0x80;
    /// Atomic operation.
    pub const ATOMIC: u8 = 0xc0;
}

/// Atomic operation codes carried in the immediate of `STX | ATOMIC`.
pub mod atomic_op {
    /// Set on the operations that return the old value.
    pub const FETCH: i32 = 0x01;
    /// Atomic add.
    pub const ADD: i32 = 0x00;
    /// Atomic or.
    pub const OR: i32 = 0x40;
    /// Atomic and.
    pub const AND: i32 = 0x50;
    /// Atomic xor.
    pub const XOR: i32 = 0xa0;
    /// Exchange (always fetches).
    pub const XCHG: i32 = 0xe0 | FETCH;
    /// Compare and exchange with r0 (always fetches).
    pub const CMPXCHG: i32 = 0xf0 | FETCH;
}

/// `src_reg` values of `lddw` (what the immediate means, resolved by a loader).
pub mod pseudo {
    /// Plain 64-bit immediate.
    pub const IMM64: u8 = 0;
    /// `BPF_PSEUDO_MAP_FD`: the immediate is a map (fd, or index before relocation).
    pub const MAP_FD: u8 = 1;
    /// `BPF_PSEUDO_MAP_VALUE`: address of a map's value plus the second slot's immediate.
    pub const MAP_VALUE: u8 = 2;
    /// `BPF_PSEUDO_BTF_ID`: a kernel variable.
    pub const BTF_ID: u8 = 3;
    /// `BPF_PSEUDO_FUNC`: address of a local function.
    pub const FUNC: u8 = 4;
    /// `BPF_PSEUDO_MAP_IDX`: map by index in `fd_array`.
    pub const MAP_IDX: u8 = 5;
    /// `BPF_PSEUDO_MAP_IDX_VALUE`: map value by index in `fd_array`.
    pub const MAP_IDX_VALUE: u8 = 6;
}

/// `src_reg` values of `call`.
pub mod call_kind {
    /// A helper by its static id.
    pub const HELPER: u8 = 0;
    /// `BPF_PSEUDO_CALL`: a local (bpf-to-bpf) function at a relative offset.
    pub const LOCAL: u8 = 1;
    /// `BPF_PSEUDO_KFUNC_CALL`: a kernel function by BTF id.
    pub const KFUNC: u8 = 2;
}

/// One raw 8-byte instruction slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RawInsn {
    /// The opcode byte.
    pub code: u8,
    /// Destination register field (4 bits).
    pub dst: u8,
    /// Source register field (4 bits).
    pub src: u8,
    /// Signed 16-bit offset.
    pub off: i16,
    /// Signed 32-bit immediate.
    pub imm: i32,
}

impl RawInsn {
    /// A slot from its fields (`dst` and `src` are masked to 4 bits when encoded).
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Self {
        RawInsn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// Decodes the 8 little-endian bytes of one slot.
    pub fn from_bytes(bytes: [u8; INSN_SIZE]) -> Self {
        RawInsn {
            code: bytes[0],
            dst: bytes[1] & 0x0f,
            src: bytes[1] >> 4,
            off: i16::from_le_bytes([bytes[2], bytes[3]]),
            imm: i32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        }
    }

    /// Encodes the slot as 8 little-endian bytes.
    pub fn to_bytes(self) -> [u8; INSN_SIZE] {
        let off = self.off.to_le_bytes();
        let imm = self.imm.to_le_bytes();
        [
            self.code,
            (self.dst & 0x0f) | ((self.src & 0x0f) << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }

    /// The opcode's class (bits 0-2).
    pub const fn class(self) -> u8 {
        self.code & 0x07
    }
}

/// Splits a byte string into slots. Fails when the length is not a multiple of 8.
pub fn slots_from_bytes(bytes: &[u8]) -> Result<Vec<RawInsn>, DecodeError> {
    if !bytes.len().is_multiple_of(INSN_SIZE) {
        return Err(DecodeError::TrailingBytes { len: bytes.len() });
    }
    Ok(bytes
        .chunks_exact(INSN_SIZE)
        .map(|chunk| {
            let mut slot = [0u8; INSN_SIZE];
            slot.copy_from_slice(chunk);
            RawInsn::from_bytes(slot)
        })
        .collect())
}

/// Joins slots into a byte string.
pub fn slots_to_bytes(slots: &[RawInsn]) -> Vec<u8> {
    slots.iter().flat_map(|slot| slot.to_bytes()).collect()
}

/// Why a slot does not encode an ISA v4 instruction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The opcode byte is not defined (or its class/mode/size combination is not).
    #[error("unknown opcode {code:#04x}")]
    UnknownOpcode {
        /// The opcode byte.
        code: u8,
    },
    /// A register field names a register above r10.
    #[error("invalid register r{reg}")]
    BadRegister {
        /// The register number.
        reg: u8,
    },
    /// A field this opcode does not use is not zero.
    #[error("opcode {code:#04x} uses reserved field {field} (value {value})")]
    ReservedField {
        /// The opcode byte.
        code: u8,
        /// Which field: `"dst"`, `"src"`, `"off"` or `"imm"`.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A field takes a value outside its defined set (byte-swap width, atomic op, sign-extension
    /// width, `lddw` pseudo source, call kind).
    #[error("opcode {code:#04x} has invalid {field} {value}")]
    InvalidField {
        /// The opcode byte.
        code: u8,
        /// Which field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// `lddw` is the last slot, or its second slot is not a valid continuation.
    #[error("lddw is not followed by a valid second slot")]
    IncompleteLddw,
    /// A byte string whose length is not a multiple of 8.
    #[error("program length {len} is not a multiple of 8")]
    TrailingBytes {
        /// The length in bytes.
        len: usize,
    },
}

/// Operand width of arithmetic and jumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Width {
    /// 32-bit (`ALU`, `JMP32`): the upper half of the result is zeroed, comparisons use the low
    /// halves.
    W32,
    /// 64-bit (`ALU64`, `JMP`).
    W64,
}

/// A register or an immediate operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A register number (0-10).
    Reg(u8),
    /// A signed 32-bit immediate.
    Imm(i32),
}

/// Binary arithmetic operations (including the signed division forms).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AluOp {
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// Unsigned division; by zero gives 0.
    Div,
    /// Signed division (offset 1); by zero gives 0.
    SDiv,
    /// `|`.
    Or,
    /// `&`.
    And,
    /// Left shift (count masked to the width).
    Lsh,
    /// Logical right shift.
    Rsh,
    /// Unsigned modulo; by zero leaves dst unchanged.
    Mod,
    /// Signed modulo (offset 1), sign of the dividend; by zero leaves dst unchanged.
    SMod,
    /// `^`.
    Xor,
    /// Move.
    Mov,
    /// Arithmetic right shift.
    Arsh,
}

/// Byte-swap kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endian {
    /// `le16/32/64`: convert to little endian (truncation on a little-endian host).
    Le,
    /// `be16/32/64`: convert to big endian.
    Be,
    /// `bswap16/32/64` (ALU64): unconditional swap.
    Swap,
}

/// Conditional jump operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JmpCond {
    /// `==`.
    Eq,
    /// Unsigned `>`.
    Gt,
    /// Unsigned `>=`.
    Ge,
    /// `&` non-zero.
    Set,
    /// `!=`.
    Ne,
    /// Signed `>`.
    Sgt,
    /// Signed `>=`.
    Sge,
    /// Unsigned `<`.
    Lt,
    /// Unsigned `<=`.
    Le,
    /// Signed `<`.
    Slt,
    /// Signed `<=`.
    Sle,
}

/// Atomic read-modify-write operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AtomicOp {
    /// Add; with `fetch` the old value goes to src.
    Add {
        /// Whether the old value is returned in src.
        fetch: bool,
    },
    /// Or.
    Or {
        /// Whether the old value is returned in src.
        fetch: bool,
    },
    /// And.
    And {
        /// Whether the old value is returned in src.
        fetch: bool,
    },
    /// Xor.
    Xor {
        /// Whether the old value is returned in src.
        fetch: bool,
    },
    /// Exchange: src gets the old value.
    Xchg,
    /// Compare with r0 and exchange with src; r0 gets the old value.
    Cmpxchg,
}

/// What a `call` calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallTarget {
    /// A helper by static id.
    Helper(i32),
    /// A local function at `pc + 1 + offset`.
    Local(i32),
    /// A kernel function by BTF id.
    Kfunc(i32),
    /// `callx`: a helper whose id is in the register.
    Reg(u8),
}

/// One decoded ISA v4 instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Insn {
    /// Binary arithmetic `dst op= src`.
    Alu {
        /// Operand width.
        width: Width,
        /// Operation.
        op: AluOp,
        /// Destination register.
        dst: u8,
        /// Second operand.
        src: Operand,
    },
    /// `dst = -dst`.
    Neg {
        /// Operand width.
        width: Width,
        /// Destination register.
        dst: u8,
    },
    /// Sign-extending move (`movsx`): the low `bits` of src, sign-extended.
    MovSx {
        /// Operand width of the result.
        width: Width,
        /// Source width in bits: 8, 16 or 32 (32 only for 64-bit width).
        bits: u8,
        /// Destination register.
        dst: u8,
        /// Source register.
        src: u8,
    },
    /// Byte swap of the low `bits` (16, 32, 64) of dst; the rest is zeroed.
    End {
        /// Kind of swap.
        kind: Endian,
        /// Width in bits.
        bits: u8,
        /// Destination register.
        dst: u8,
    },
    /// `dst = *(size *)(src + off)`, zero- or sign-extended.
    Load {
        /// Access size in bytes (1, 2, 4, 8).
        size: u8,
        /// Whether the value is sign-extended (`ldxs*`).
        signed: bool,
        /// Destination register.
        dst: u8,
        /// Base register.
        src: u8,
        /// Offset.
        off: i16,
    },
    /// `*(size *)(dst + off) = src` (immediate or register).
    Store {
        /// Access size in bytes.
        size: u8,
        /// Base register.
        dst: u8,
        /// Offset.
        off: i16,
        /// Value stored.
        src: Operand,
    },
    /// Atomic operation on `*(size *)(dst + off)` with src.
    Atomic {
        /// Access size in bytes (4 or 8).
        size: u8,
        /// Operation.
        op: AtomicOp,
        /// Base register.
        dst: u8,
        /// Operand register.
        src: u8,
        /// Offset.
        off: i16,
    },
    /// `lddw`: a 64-bit immediate, or a pseudo value for the loader to resolve.
    LoadImm64 {
        /// Destination register.
        dst: u8,
        /// The pseudo source kind (`pseudo::*`), 0 for a plain immediate.
        pseudo: u8,
        /// First slot's immediate.
        imm_lo: i32,
        /// Second slot's immediate.
        imm_hi: i32,
    },
    /// Unconditional jump to `pc + 1 + offset` (`ja` with a 16-bit offset, `ja32`/`gotol` with
    /// a 32-bit one).
    Ja {
        /// Whether the offset was in the immediate (`JMP32 | JA`).
        long: bool,
        /// Relative offset in slots.
        offset: i32,
    },
    /// Conditional jump to `pc + 1 + offset`.
    Jump {
        /// Comparison width.
        width: Width,
        /// Comparison.
        cond: JmpCond,
        /// Left operand register.
        dst: u8,
        /// Right operand.
        src: Operand,
        /// Relative offset in slots.
        offset: i16,
    },
    /// A call.
    Call(CallTarget),
    /// Return from the function (r0 is the result).
    Exit,
}

impl Insn {
    /// Number of slots the instruction occupies (2 for `lddw`, else 1).
    pub fn slots(&self) -> usize {
        match self {
            Insn::LoadImm64 { .. } => 2,
            _ => 1,
        }
    }

    /// The register this instruction writes, if any (atomic fetches write their source, compare
    /// and exchange writes r0, calls write r0-r5 and are not reported).
    pub fn written_register(&self) -> Option<u8> {
        match *self {
            Insn::Alu { dst, .. }
            | Insn::Neg { dst, .. }
            | Insn::MovSx { dst, .. }
            | Insn::End { dst, .. }
            | Insn::Load { dst, .. }
            | Insn::LoadImm64 { dst, .. } => Some(dst),
            Insn::Atomic { op, src, .. } => match op {
                AtomicOp::Add { fetch: true }
                | AtomicOp::Or { fetch: true }
                | AtomicOp::And { fetch: true }
                | AtomicOp::Xor { fetch: true }
                | AtomicOp::Xchg => Some(src),
                AtomicOp::Cmpxchg => Some(0),
                _ => None,
            },
            _ => None,
        }
    }

    /// The 64-bit immediate of `lddw` (both halves joined).
    pub fn imm64(imm_lo: i32, imm_hi: i32) -> u64 {
        u64::from(imm_lo as u32) | (u64::from(imm_hi as u32) << 32)
    }
}

fn check_reg(reg: u8) -> Result<u8, DecodeError> {
    if reg as usize >= REG_COUNT {
        Err(DecodeError::BadRegister { reg })
    } else {
        Ok(reg)
    }
}

fn reserved(raw: RawInsn, field: &'static str, value: i64) -> Result<(), DecodeError> {
    if value != 0 {
        Err(DecodeError::ReservedField {
            code: raw.code,
            field,
            value,
        })
    } else {
        Ok(())
    }
}

fn size_bytes(code: u8) -> u8 {
    match code & 0x18 {
        size::W => 4,
        size::H => 2,
        size::B => 1,
        _ => 8,
    }
}

fn size_code(bytes: u8) -> u8 {
    match bytes {
        4 => size::W,
        2 => size::H,
        1 => size::B,
        _ => size::DW,
    }
}

/// Decodes the instruction starting at `slots[0]` (reading `slots[1]` for `lddw`).
pub fn decode(slots: &[RawInsn]) -> Result<Insn, DecodeError> {
    let Some(&raw) = slots.first() else {
        return Err(DecodeError::IncompleteLddw);
    };
    let unknown = DecodeError::UnknownOpcode { code: raw.code };
    match raw.class() {
        class::ALU | class::ALU64 => decode_alu(raw),
        class::JMP | class::JMP32 => decode_jmp(raw),
        class::LD => {
            if raw.code != (class::LD | mode::IMM | size::DW) {
                return Err(unknown);
            }
            let dst = check_reg(raw.dst)?;
            reserved(raw, "off", raw.off.into())?;
            if raw.src > pseudo::MAP_IDX_VALUE {
                return Err(DecodeError::InvalidField {
                    code: raw.code,
                    field: "src",
                    value: raw.src.into(),
                });
            }
            let next = slots.get(1).ok_or(DecodeError::IncompleteLddw)?;
            if next.code != 0 || next.dst != 0 || next.src != 0 || next.off != 0 {
                return Err(DecodeError::IncompleteLddw);
            }
            Ok(Insn::LoadImm64 {
                dst,
                pseudo: raw.src,
                imm_lo: raw.imm,
                imm_hi: next.imm,
            })
        }
        class::LDX => {
            let signed = match raw.code & 0xe0 {
                mode::MEM => false,
                mode::MEMSX if raw.code & 0x18 != size::DW => true,
                _ => return Err(unknown),
            };
            let dst = check_reg(raw.dst)?;
            let src = check_reg(raw.src)?;
            reserved(raw, "imm", raw.imm.into())?;
            Ok(Insn::Load {
                size: size_bytes(raw.code),
                signed,
                dst,
                src,
                off: raw.off,
            })
        }
        class::ST => {
            if raw.code & 0xe0 != mode::MEM {
                return Err(unknown);
            }
            let dst = check_reg(raw.dst)?;
            reserved(raw, "src", raw.src.into())?;
            Ok(Insn::Store {
                size: size_bytes(raw.code),
                dst,
                off: raw.off,
                src: Operand::Imm(raw.imm),
            })
        }
        class::STX => {
            let dst = check_reg(raw.dst)?;
            let src = check_reg(raw.src)?;
            match raw.code & 0xe0 {
                mode::MEM => {
                    reserved(raw, "imm", raw.imm.into())?;
                    Ok(Insn::Store {
                        size: size_bytes(raw.code),
                        dst,
                        off: raw.off,
                        src: Operand::Reg(src),
                    })
                }
                mode::ATOMIC => {
                    let size = size_bytes(raw.code);
                    if size != 4 && size != 8 {
                        return Err(unknown);
                    }
                    let fetch = raw.imm & atomic_op::FETCH != 0;
                    let op = match raw.imm {
                        atomic_op::XCHG => AtomicOp::Xchg,
                        atomic_op::CMPXCHG => AtomicOp::Cmpxchg,
                        imm => match imm & !atomic_op::FETCH {
                            atomic_op::ADD => AtomicOp::Add { fetch },
                            atomic_op::OR => AtomicOp::Or { fetch },
                            atomic_op::AND => AtomicOp::And { fetch },
                            atomic_op::XOR => AtomicOp::Xor { fetch },
                            _ => {
                                return Err(DecodeError::InvalidField {
                                    code: raw.code,
                                    field: "imm",
                                    value: raw.imm.into(),
                                })
                            }
                        },
                    };
                    Ok(Insn::Atomic {
                        size,
                        op,
                        dst,
                        src,
                        off: raw.off,
                    })
                }
                _ => Err(unknown),
            }
        }
        _ => Err(unknown),
    }
}

fn decode_alu(raw: RawInsn) -> Result<Insn, DecodeError> {
    let width = if raw.class() == class::ALU64 {
        Width::W64
    } else {
        Width::W32
    };
    let is_reg = raw.code & source::X != 0;
    let dst = check_reg(raw.dst)?;
    let op_bits = raw.code & 0xf0;
    let operand = |raw: RawInsn| -> Result<Operand, DecodeError> {
        if is_reg {
            reserved(raw, "imm", raw.imm.into())?;
            Ok(Operand::Reg(check_reg(raw.src)?))
        } else {
            reserved(raw, "src", raw.src.into())?;
            Ok(Operand::Imm(raw.imm))
        }
    };
    let invalid_off = |raw: RawInsn| DecodeError::InvalidField {
        code: raw.code,
        field: "off",
        value: raw.off.into(),
    };
    match op_bits {
        alu_op::NEG => {
            if is_reg {
                return Err(DecodeError::UnknownOpcode { code: raw.code });
            }
            reserved(raw, "src", raw.src.into())?;
            reserved(raw, "off", raw.off.into())?;
            reserved(raw, "imm", raw.imm.into())?;
            Ok(Insn::Neg { width, dst })
        }
        alu_op::END => {
            reserved(raw, "src", raw.src.into())?;
            reserved(raw, "off", raw.off.into())?;
            let kind = match (width, is_reg) {
                (Width::W32, false) => Endian::Le,
                (Width::W32, true) => Endian::Be,
                (Width::W64, false) => Endian::Swap,
                (Width::W64, true) => return Err(DecodeError::UnknownOpcode { code: raw.code }),
            };
            let bits = match raw.imm {
                16 | 32 | 64 => raw.imm as u8,
                _ => {
                    return Err(DecodeError::InvalidField {
                        code: raw.code,
                        field: "imm",
                        value: raw.imm.into(),
                    })
                }
            };
            Ok(Insn::End { kind, bits, dst })
        }
        alu_op::MOV => {
            let src = operand(raw)?;
            match (raw.off, src) {
                (0, src) => Ok(Insn::Alu {
                    width,
                    op: AluOp::Mov,
                    dst,
                    src,
                }),
                (8 | 16, Operand::Reg(src)) => Ok(Insn::MovSx {
                    width,
                    bits: raw.off as u8,
                    dst,
                    src,
                }),
                (32, Operand::Reg(src)) if width == Width::W64 => Ok(Insn::MovSx {
                    width,
                    bits: 32,
                    dst,
                    src,
                }),
                _ => Err(invalid_off(raw)),
            }
        }
        alu_op::DIV | alu_op::MOD => {
            let src = operand(raw)?;
            let signed = match raw.off {
                0 => false,
                1 => true,
                _ => return Err(invalid_off(raw)),
            };
            let op = match (op_bits, signed) {
                (alu_op::DIV, false) => AluOp::Div,
                (alu_op::DIV, true) => AluOp::SDiv,
                (_, false) => AluOp::Mod,
                (_, true) => AluOp::SMod,
            };
            Ok(Insn::Alu {
                width,
                op,
                dst,
                src,
            })
        }
        _ => {
            let op = match op_bits {
                alu_op::ADD => AluOp::Add,
                alu_op::SUB => AluOp::Sub,
                alu_op::MUL => AluOp::Mul,
                alu_op::OR => AluOp::Or,
                alu_op::AND => AluOp::And,
                alu_op::LSH => AluOp::Lsh,
                alu_op::RSH => AluOp::Rsh,
                alu_op::XOR => AluOp::Xor,
                alu_op::ARSH => AluOp::Arsh,
                _ => return Err(DecodeError::UnknownOpcode { code: raw.code }),
            };
            let src = operand(raw)?;
            reserved(raw, "off", raw.off.into())?;
            Ok(Insn::Alu {
                width,
                op,
                dst,
                src,
            })
        }
    }
}

fn decode_jmp(raw: RawInsn) -> Result<Insn, DecodeError> {
    let width = if raw.class() == class::JMP {
        Width::W64
    } else {
        Width::W32
    };
    let is_reg = raw.code & source::X != 0;
    let unknown = DecodeError::UnknownOpcode { code: raw.code };
    let cond = match raw.code & 0xf0 {
        jmp_op::JA => {
            if is_reg {
                return Err(unknown);
            }
            reserved(raw, "dst", raw.dst.into())?;
            reserved(raw, "src", raw.src.into())?;
            return if width == Width::W64 {
                reserved(raw, "imm", raw.imm.into())?;
                Ok(Insn::Ja {
                    long: false,
                    offset: raw.off.into(),
                })
            } else {
                reserved(raw, "off", raw.off.into())?;
                Ok(Insn::Ja {
                    long: true,
                    offset: raw.imm,
                })
            };
        }
        jmp_op::CALL => {
            if width == Width::W32 {
                return Err(unknown);
            }
            reserved(raw, "off", raw.off.into())?;
            if is_reg {
                reserved(raw, "src", raw.src.into())?;
                reserved(raw, "imm", raw.imm.into())?;
                return Ok(Insn::Call(CallTarget::Reg(check_reg(raw.dst)?)));
            }
            reserved(raw, "dst", raw.dst.into())?;
            return match raw.src {
                call_kind::HELPER => Ok(Insn::Call(CallTarget::Helper(raw.imm))),
                call_kind::LOCAL => Ok(Insn::Call(CallTarget::Local(raw.imm))),
                call_kind::KFUNC => Ok(Insn::Call(CallTarget::Kfunc(raw.imm))),
                other => Err(DecodeError::InvalidField {
                    code: raw.code,
                    field: "src",
                    value: other.into(),
                }),
            };
        }
        jmp_op::EXIT => {
            if width == Width::W32 || is_reg {
                return Err(unknown);
            }
            reserved(raw, "dst", raw.dst.into())?;
            reserved(raw, "src", raw.src.into())?;
            reserved(raw, "off", raw.off.into())?;
            reserved(raw, "imm", raw.imm.into())?;
            return Ok(Insn::Exit);
        }
        jmp_op::JEQ => JmpCond::Eq,
        jmp_op::JGT => JmpCond::Gt,
        jmp_op::JGE => JmpCond::Ge,
        jmp_op::JSET => JmpCond::Set,
        jmp_op::JNE => JmpCond::Ne,
        jmp_op::JSGT => JmpCond::Sgt,
        jmp_op::JSGE => JmpCond::Sge,
        jmp_op::JLT => JmpCond::Lt,
        jmp_op::JLE => JmpCond::Le,
        jmp_op::JSLT => JmpCond::Slt,
        jmp_op::JSLE => JmpCond::Sle,
        _ => return Err(unknown),
    };
    let dst = check_reg(raw.dst)?;
    let src = if is_reg {
        reserved(raw, "imm", raw.imm.into())?;
        Operand::Reg(check_reg(raw.src)?)
    } else {
        reserved(raw, "src", raw.src.into())?;
        Operand::Imm(raw.imm)
    };
    Ok(Insn::Jump {
        width,
        cond,
        dst,
        src,
        offset: raw.off,
    })
}

/// Decodes a whole program: each instruction with the index of its first slot.
pub fn decode_program(slots: &[RawInsn]) -> Result<Vec<(usize, Insn)>, (usize, DecodeError)> {
    let mut out = Vec::with_capacity(slots.len());
    let mut index = 0;
    while index < slots.len() {
        let insn = decode(&slots[index..]).map_err(|err| (index, err))?;
        out.push((index, insn));
        index += insn.slots();
    }
    Ok(out)
}

fn alu_code(op: AluOp) -> (u8, i16) {
    match op {
        AluOp::Add => (alu_op::ADD, 0),
        AluOp::Sub => (alu_op::SUB, 0),
        AluOp::Mul => (alu_op::MUL, 0),
        AluOp::Div => (alu_op::DIV, 0),
        AluOp::SDiv => (alu_op::DIV, 1),
        AluOp::Or => (alu_op::OR, 0),
        AluOp::And => (alu_op::AND, 0),
        AluOp::Lsh => (alu_op::LSH, 0),
        AluOp::Rsh => (alu_op::RSH, 0),
        AluOp::Mod => (alu_op::MOD, 0),
        AluOp::SMod => (alu_op::MOD, 1),
        AluOp::Xor => (alu_op::XOR, 0),
        AluOp::Mov => (alu_op::MOV, 0),
        AluOp::Arsh => (alu_op::ARSH, 0),
    }
}

fn cond_code(cond: JmpCond) -> u8 {
    match cond {
        JmpCond::Eq => jmp_op::JEQ,
        JmpCond::Gt => jmp_op::JGT,
        JmpCond::Ge => jmp_op::JGE,
        JmpCond::Set => jmp_op::JSET,
        JmpCond::Ne => jmp_op::JNE,
        JmpCond::Sgt => jmp_op::JSGT,
        JmpCond::Sge => jmp_op::JSGE,
        JmpCond::Lt => jmp_op::JLT,
        JmpCond::Le => jmp_op::JLE,
        JmpCond::Slt => jmp_op::JSLT,
        JmpCond::Sle => jmp_op::JSLE,
    }
}

fn width_class(width: Width, c32: u8, c64: u8) -> u8 {
    match width {
        Width::W32 => c32,
        Width::W64 => c64,
    }
}

/// Encodes an instruction into its slots (one, or two for `lddw`). `decode(&encode(i)) == i`
/// for every instruction `decode` returns.
pub fn encode(insn: &Insn) -> Vec<RawInsn> {
    let one = |code, dst, src, off, imm| vec![RawInsn::new(code, dst, src, off, imm)];
    let operand = |src: Operand| match src {
        Operand::Reg(reg) => (source::X, reg, 0),
        Operand::Imm(imm) => (source::K, 0, imm),
    };
    match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            let (op, off) = alu_code(op);
            let (x, src, imm) = operand(src);
            one(
                width_class(width, class::ALU, class::ALU64) | op | x,
                dst,
                src,
                off,
                imm,
            )
        }
        Insn::Neg { width, dst } => one(
            width_class(width, class::ALU, class::ALU64) | alu_op::NEG,
            dst,
            0,
            0,
            0,
        ),
        Insn::MovSx {
            width,
            bits,
            dst,
            src,
        } => one(
            width_class(width, class::ALU, class::ALU64) | alu_op::MOV | source::X,
            dst,
            src,
            bits.into(),
            0,
        ),
        Insn::End { kind, bits, dst } => {
            let code = match kind {
                Endian::Le => class::ALU | alu_op::END | source::K,
                Endian::Be => class::ALU | alu_op::END | source::X,
                Endian::Swap => class::ALU64 | alu_op::END | source::K,
            };
            one(code, dst, 0, 0, bits.into())
        }
        Insn::Load {
            size,
            signed,
            dst,
            src,
            off,
        } => {
            let mode = if signed { mode::MEMSX } else { mode::MEM };
            one(class::LDX | mode | size_code(size), dst, src, off, 0)
        }
        Insn::Store {
            size,
            dst,
            off,
            src: Operand::Imm(imm),
        } => one(class::ST | mode::MEM | size_code(size), dst, 0, off, imm),
        Insn::Store {
            size,
            dst,
            off,
            src: Operand::Reg(src),
        } => one(class::STX | mode::MEM | size_code(size), dst, src, off, 0),
        Insn::Atomic {
            size,
            op,
            dst,
            src,
            off,
        } => {
            let f = |fetch: bool| if fetch { atomic_op::FETCH } else { 0 };
            let imm = match op {
                AtomicOp::Add { fetch } => atomic_op::ADD | f(fetch),
                AtomicOp::Or { fetch } => atomic_op::OR | f(fetch),
                AtomicOp::And { fetch } => atomic_op::AND | f(fetch),
                AtomicOp::Xor { fetch } => atomic_op::XOR | f(fetch),
                AtomicOp::Xchg => atomic_op::XCHG,
                AtomicOp::Cmpxchg => atomic_op::CMPXCHG,
            };
            one(
                class::STX | mode::ATOMIC | size_code(size),
                dst,
                src,
                off,
                imm,
            )
        }
        Insn::LoadImm64 {
            dst,
            pseudo,
            imm_lo,
            imm_hi,
        } => vec![
            RawInsn::new(class::LD | mode::IMM | size::DW, dst, pseudo, 0, imm_lo),
            RawInsn::new(0, 0, 0, 0, imm_hi),
        ],
        Insn::Ja {
            long: false,
            offset,
        } => one(class::JMP | jmp_op::JA, 0, 0, offset as i16, 0),
        Insn::Ja { long: true, offset } => one(class::JMP32 | jmp_op::JA, 0, 0, 0, offset),
        Insn::Jump {
            width,
            cond,
            dst,
            src,
            offset,
        } => {
            let (x, src, imm) = operand(src);
            one(
                width_class(width, class::JMP32, class::JMP) | cond_code(cond) | x,
                dst,
                src,
                offset,
                imm,
            )
        }
        Insn::Call(target) => match target {
            CallTarget::Helper(id) => one(class::JMP | jmp_op::CALL, 0, call_kind::HELPER, 0, id),
            CallTarget::Local(off) => one(class::JMP | jmp_op::CALL, 0, call_kind::LOCAL, 0, off),
            CallTarget::Kfunc(id) => one(class::JMP | jmp_op::CALL, 0, call_kind::KFUNC, 0, id),
            CallTarget::Reg(reg) => one(class::JMP | jmp_op::CALL | source::X, reg, 0, 0, 0),
        },
        Insn::Exit => one(class::JMP | jmp_op::EXIT, 0, 0, 0, 0),
    }
}

/// Encodes a sequence of instructions into slots.
pub fn encode_program(insns: &[Insn]) -> Vec<RawInsn> {
    insns.iter().flat_map(encode).collect()
}

/// The mnemonic of an arithmetic operation as the conformance syntax spells it (64-bit form).
pub fn alu_mnemonic(op: AluOp) -> &'static str {
    match op {
        AluOp::Add => "add",
        AluOp::Sub => "sub",
        AluOp::Mul => "mul",
        AluOp::Div => "div",
        AluOp::SDiv => "sdiv",
        AluOp::Or => "or",
        AluOp::And => "and",
        AluOp::Lsh => "lsh",
        AluOp::Rsh => "rsh",
        AluOp::Mod => "mod",
        AluOp::SMod => "smod",
        AluOp::Xor => "xor",
        AluOp::Mov => "mov",
        AluOp::Arsh => "arsh",
    }
}

/// The mnemonic of a jump condition as the conformance syntax spells it (64-bit form).
pub fn jmp_mnemonic(cond: JmpCond) -> &'static str {
    match cond {
        JmpCond::Eq => "jeq",
        JmpCond::Gt => "jgt",
        JmpCond::Ge => "jge",
        JmpCond::Set => "jset",
        JmpCond::Ne => "jne",
        JmpCond::Sgt => "jsgt",
        JmpCond::Sge => "jsge",
        JmpCond::Lt => "jlt",
        JmpCond::Le => "jle",
        JmpCond::Slt => "jslt",
        JmpCond::Sle => "jsle",
    }
}

/// Size suffix of loads and stores: `b`, `h`, `w`, `dw`.
pub fn size_suffix(size: u8) -> &'static str {
    match size {
        1 => "b",
        2 => "h",
        4 => "w",
        _ => "dw",
    }
}

struct Mem(u8, i16);

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            0 => write!(f, "[%r{}]", self.0),
            off if off < 0 => write!(f, "[%r{}-{}]", self.0, -i32::from(off)),
            off => write!(f, "[%r{}+{}]", self.0, off),
        }
    }
}

fn w32(width: Width) -> &'static str {
    match width {
        Width::W32 => "32",
        Width::W64 => "",
    }
}

fn operand_text(src: Operand) -> String {
    match src {
        Operand::Reg(reg) => format!("%r{reg}"),
        Operand::Imm(imm) => imm.to_string(),
    }
}

fn rel(offset: i32) -> String {
    if offset < 0 {
        offset.to_string()
    } else {
        format!("+{offset}")
    }
}

/// Prints one instruction in the conformance suite's assembly syntax. Jump and local-call
/// targets are printed as relative offsets (`+3`, `-2`); `lddw` pseudo forms print the
/// pseudo kind (`lddw %r1, map_fd 3`) since they have no conformance syntax.
pub fn disassemble(insn: &Insn) -> String {
    match *insn {
        Insn::Alu {
            width,
            op,
            dst,
            src,
        } => {
            format!(
                "{}{} %r{dst}, {}",
                alu_mnemonic(op),
                w32(width),
                operand_text(src)
            )
        }
        Insn::Neg { width, dst } => format!("neg{} %r{dst}", w32(width)),
        Insn::MovSx {
            width,
            bits,
            dst,
            src,
        } => {
            let to = match width {
                Width::W32 => 32,
                Width::W64 => 64,
            };
            format!("movsx{bits}{to} %r{dst}, %r{src}")
        }
        Insn::End { kind, bits, dst } => {
            let name = match kind {
                Endian::Le => "le",
                Endian::Be => "be",
                Endian::Swap => "bswap",
            };
            format!("{name}{bits} %r{dst}")
        }
        Insn::Load {
            size,
            signed,
            dst,
            src,
            off,
        } => {
            let s = if signed { "s" } else { "" };
            format!("ldx{s}{} %r{dst}, {}", size_suffix(size), Mem(src, off))
        }
        Insn::Store {
            size,
            dst,
            off,
            src: Operand::Imm(imm),
        } => {
            format!("st{} {}, {imm}", size_suffix(size), Mem(dst, off))
        }
        Insn::Store {
            size,
            dst,
            off,
            src: Operand::Reg(src),
        } => {
            format!("stx{} {}, %r{src}", size_suffix(size), Mem(dst, off))
        }
        Insn::Atomic {
            size,
            op,
            dst,
            src,
            off,
        } => {
            let suffix = if size == 4 { "32" } else { "" };
            let (fetch, name) = match op {
                AtomicOp::Add { fetch } => (fetch, "add"),
                AtomicOp::Or { fetch } => (fetch, "or"),
                AtomicOp::And { fetch } => (fetch, "and"),
                AtomicOp::Xor { fetch } => (fetch, "xor"),
                AtomicOp::Xchg => (false, "xchg"),
                AtomicOp::Cmpxchg => (false, "cmpxchg"),
            };
            let fetch = if fetch { "fetch " } else { "" };
            format!("lock {fetch}{name}{suffix} {}, %r{src}", Mem(dst, off))
        }
        Insn::LoadImm64 {
            dst,
            pseudo,
            imm_lo,
            imm_hi,
        } => {
            let value = Insn::imm64(imm_lo, imm_hi);
            match pseudo {
                pseudo::IMM64 => format!("lddw %r{dst}, {value:#x}"),
                pseudo::MAP_FD => format!("lddw %r{dst}, map_fd {imm_lo}"),
                pseudo::MAP_VALUE => format!("lddw %r{dst}, map_value {imm_lo}+{imm_hi}"),
                other => format!("lddw %r{dst}, pseudo{other} {value:#x}"),
            }
        }
        Insn::Ja {
            long: false,
            offset,
        } => format!("ja {}", rel(offset)),
        Insn::Ja { long: true, offset } => format!("ja32 {}", rel(offset)),
        Insn::Jump {
            width,
            cond,
            dst,
            src,
            offset,
        } => format!(
            "{}{} %r{dst}, {}, {}",
            jmp_mnemonic(cond),
            w32(width),
            operand_text(src),
            rel(offset.into())
        ),
        Insn::Call(CallTarget::Helper(id)) => format!("call {id}"),
        Insn::Call(CallTarget::Local(offset)) => format!("call local {}", rel(offset)),
        Insn::Call(CallTarget::Kfunc(id)) => format!("call kfunc {id}"),
        Insn::Call(CallTarget::Reg(reg)) => format!("call %r{reg}"),
        Insn::Exit => "exit".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(insn: Insn) {
        let slots = encode(&insn);
        assert_eq!(decode(&slots), Ok(insn), "{}", disassemble(&insn));
        let bytes = slots_to_bytes(&slots);
        assert_eq!(slots_from_bytes(&bytes).unwrap(), slots);
    }

    #[test]
    fn encode_decode_roundtrip_covers_every_form() {
        for width in [Width::W32, Width::W64] {
            for op in [
                AluOp::Add,
                AluOp::Sub,
                AluOp::Mul,
                AluOp::Div,
                AluOp::SDiv,
                AluOp::Or,
                AluOp::And,
                AluOp::Lsh,
                AluOp::Rsh,
                AluOp::Mod,
                AluOp::SMod,
                AluOp::Xor,
                AluOp::Mov,
                AluOp::Arsh,
            ] {
                roundtrip(Insn::Alu {
                    width,
                    op,
                    dst: 3,
                    src: Operand::Imm(-7),
                });
                roundtrip(Insn::Alu {
                    width,
                    op,
                    dst: 3,
                    src: Operand::Reg(9),
                });
            }
            roundtrip(Insn::Neg { width, dst: 1 });
            roundtrip(Insn::MovSx {
                width,
                bits: 8,
                dst: 1,
                src: 2,
            });
            roundtrip(Insn::Jump {
                width,
                cond: JmpCond::Sle,
                dst: 1,
                src: Operand::Imm(5),
                offset: -3,
            });
        }
        roundtrip(Insn::MovSx {
            width: Width::W64,
            bits: 32,
            dst: 1,
            src: 2,
        });
        for kind in [Endian::Le, Endian::Be, Endian::Swap] {
            roundtrip(Insn::End {
                kind,
                bits: 32,
                dst: 4,
            });
        }
        for size in [1, 2, 4, 8] {
            roundtrip(Insn::Load {
                size,
                signed: false,
                dst: 0,
                src: 1,
                off: -8,
            });
            roundtrip(Insn::Store {
                size,
                dst: 10,
                off: -8,
                src: Operand::Imm(3),
            });
            roundtrip(Insn::Store {
                size,
                dst: 10,
                off: -8,
                src: Operand::Reg(3),
            });
        }
        roundtrip(Insn::Load {
            size: 4,
            signed: true,
            dst: 0,
            src: 1,
            off: 2,
        });
        for op in [
            AtomicOp::Add { fetch: true },
            AtomicOp::Xor { fetch: false },
            AtomicOp::Xchg,
        ] {
            roundtrip(Insn::Atomic {
                size: 4,
                op,
                dst: 10,
                src: 1,
                off: -4,
            });
            roundtrip(Insn::Atomic {
                size: 8,
                op: AtomicOp::Cmpxchg,
                dst: 10,
                src: 1,
                off: -8,
            });
        }
        roundtrip(Insn::LoadImm64 {
            dst: 1,
            pseudo: 2,
            imm_lo: -1,
            imm_hi: 9,
        });
        roundtrip(Insn::Ja {
            long: false,
            offset: -1,
        });
        roundtrip(Insn::Ja {
            long: true,
            offset: 70000,
        });
        roundtrip(Insn::Call(CallTarget::Helper(1)));
        roundtrip(Insn::Call(CallTarget::Local(-4)));
        roundtrip(Insn::Call(CallTarget::Reg(2)));
        roundtrip(Insn::Exit);
    }

    #[test]
    fn strict_decoder_rejects_reserved_fields_and_bad_registers() {
        let exit = RawInsn::new(0x95, 0, 0, 0, 0);
        assert!(matches!(
            decode(&[RawInsn::new(0x07, 0, 0, 1, 1)]),
            Err(DecodeError::ReservedField { field: "off", .. })
        ));
        assert!(matches!(
            decode(&[RawInsn::new(0x95, 0, 0, 0, 1)]),
            Err(DecodeError::ReservedField { field: "imm", .. })
        ));
        assert_eq!(
            decode(&[RawInsn::new(0xb7, 11, 0, 0, 0)]),
            Err(DecodeError::BadRegister { reg: 11 })
        );
        assert_eq!(
            decode(&[RawInsn::new(0xff, 0, 0, 0, 0)]),
            Err(DecodeError::UnknownOpcode { code: 0xff })
        );
        assert_eq!(
            decode(&[RawInsn::new(0x18, 0, 0, 0, 0)]),
            Err(DecodeError::IncompleteLddw)
        );
        assert_eq!(
            decode(&[RawInsn::new(0x18, 0, 0, 0, 0), exit]),
            Err(DecodeError::IncompleteLddw)
        );
        assert_eq!(decode(&[exit]), Ok(Insn::Exit));
    }

    #[test]
    fn raw_slot_layout_is_little_endian_with_nibble_registers() {
        let raw = RawInsn::new(0x18, 1, 2, -2, 0x5566_7788);
        assert_eq!(
            raw.to_bytes(),
            [0x18, 0x21, 0xfe, 0xff, 0x88, 0x77, 0x66, 0x55]
        );
        assert_eq!(RawInsn::from_bytes(raw.to_bytes()), raw);
    }

    #[test]
    fn disassembly_uses_conformance_syntax() {
        let cases = [
            (
                Insn::Load {
                    size: 8,
                    signed: false,
                    dst: 0,
                    src: 1,
                    off: 2,
                },
                "ldxdw %r0, [%r1+2]",
            ),
            (
                Insn::Atomic {
                    size: 4,
                    op: AtomicOp::Add { fetch: true },
                    dst: 10,
                    src: 1,
                    off: -4,
                },
                "lock fetch add32 [%r10-4], %r1",
            ),
            (
                Insn::Store {
                    size: 1,
                    dst: 10,
                    off: -1,
                    src: Operand::Imm(-128),
                },
                "stb [%r10-1], -128",
            ),
            (
                Insn::LoadImm64 {
                    dst: 0,
                    pseudo: 0,
                    imm_lo: 0x5566_7788,
                    imm_hi: 0x1122_3344,
                },
                "lddw %r0, 0x1122334455667788",
            ),
            (
                Insn::Jump {
                    width: Width::W32,
                    cond: JmpCond::Ne,
                    dst: 2,
                    src: Operand::Reg(3),
                    offset: 4,
                },
                "jne32 %r2, %r3, +4",
            ),
            (
                Insn::MovSx {
                    width: Width::W32,
                    bits: 16,
                    dst: 4,
                    src: 3,
                },
                "movsx1632 %r4, %r3",
            ),
            (
                Insn::End {
                    kind: Endian::Swap,
                    bits: 16,
                    dst: 0,
                },
                "bswap16 %r0",
            ),
            (Insn::Exit, "exit"),
        ];
        for (insn, text) in cases {
            assert_eq!(disassemble(&insn), text);
        }
    }
}
