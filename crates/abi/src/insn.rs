//! eBPF instruction encoding (RFC 9669): opcode classes and fields. Owned by the VM work; the
//! decoder, encoder and disassembler live here so the loader, interpreter and JIT agree.

/// Size of one instruction slot in bytes.
pub const INSN_SIZE: usize = 8;
