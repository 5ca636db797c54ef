//! The few instruction facts the loader needs to find relocation sites: the opcodes of `lddw`
//! and `call`, and the `src_reg` of a bpf-to-bpf call. Decoding and checking the instruction set
//! is the VM's business (`bpfmaps_abi::insn`); this module only names bytes.

pub(crate) use bpfmaps_abi::insn::INSN_SIZE;

/// Opcodes the loader looks at.
pub(crate) mod opcode {
    /// `BPF_LD | BPF_IMM | BPF_DW`: the first slot of a 64-bit immediate load.
    pub(crate) const LDDW: u8 = class::LD | mode::IMM | size::DW;
    /// `BPF_JMP | BPF_CALL`.
    pub(crate) const CALL: u8 = class::JMP | jmp_op::CALL;

    use bpfmaps_abi::insn::{class, jmp_op, mode, size};
}

/// `src_reg` of a call to a bpf-to-bpf function (`BPF_PSEUDO_CALL`).
pub(crate) const SRC_PSEUDO_CALL: u8 = bpfmaps_abi::insn::call_kind::LOCAL;
