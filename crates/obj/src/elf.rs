//! ELF-level facts and validation, read with the `object` crate before aya-obj sees the bytes.
//!
//! aya-obj trusts symbol addresses, sizes and relocation offsets and indexes slices with them, so
//! a hostile or damaged object could make it panic. This module checks everything aya-obj will
//! index (sections, symbols, relocations of code sections, instructions under a relocation) and
//! reports problems as [`ObjError`]s naming the section, symbol and offset. It also keeps the
//! facts aya-obj does not expose: section names by index, symbol addresses, relocation targets.
//!
//! It does not interpret map definitions or BTF; see `btf.rs` and `spec.rs`.

use object::{
    Architecture, BinaryFormat, Object as _, ObjectKind, ObjectSection as _, ObjectSymbol as _,
    RelocationFlags, RelocationTarget, SectionKind, SymbolKind, SymbolSection,
};

use crate::insn::{opcode, INSN_SIZE, SRC_PSEUDO_CALL};
use crate::ObjError;

/// `R_BPF_64_64`: the 64-bit immediate of an `lddw` (map and data references).
const R_BPF_64_64: u32 = 1;
/// `R_BPF_64_32`: the 32-bit immediate of a call.
const R_BPF_64_32: u32 = 10;
/// The largest data section accepted: `KMALLOC_MAX_SIZE` on x86-64, above which the kernel
/// refuses an ARRAY map's value size with `E2BIG`. Also keeps a damaged `.bss` size from
/// allocating gigabytes.
const MAX_DATA_SECTION: u64 = 4 << 20;

/// What a section is to the loader, by the rules aya-obj applies (name prefix, then code flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SectionRole {
    /// A program section (executable, not `.text`).
    Program,
    /// `.text*`: bpf-to-bpf subprograms.
    Text,
    /// `maps*`: legacy map definitions.
    LegacyMaps,
    /// `.maps*`: BTF map definitions.
    BtfMaps,
    /// `.data*`.
    Data,
    /// `.rodata*`.
    Rodata,
    /// `.bss*`.
    Bss,
    /// `license*`.
    License,
    /// `.BTF`.
    Btf,
    /// `.BTF.ext`.
    BtfExt,
    /// Anything else (debug info, relocation tables, `version`).
    Other,
}

impl SectionRole {
    fn classify(name: &str, kind: SectionKind, size: u64) -> SectionRole {
        if name.starts_with("license") {
            SectionRole::License
        } else if name.starts_with("version") {
            SectionRole::Other
        } else if name.starts_with("maps") {
            SectionRole::LegacyMaps
        } else if name.starts_with(".maps") {
            SectionRole::BtfMaps
        } else if name.starts_with(".text") {
            SectionRole::Text
        } else if name.starts_with(".bss") {
            SectionRole::Bss
        } else if name.starts_with(".data") {
            SectionRole::Data
        } else if name.starts_with(".rodata") {
            SectionRole::Rodata
        } else if name == ".BTF" {
            SectionRole::Btf
        } else if name == ".BTF.ext" {
            SectionRole::BtfExt
        } else if kind == SectionKind::Text && size > 0 {
            SectionRole::Program
        } else {
            SectionRole::Other
        }
    }

    /// True for sections holding instructions.
    pub(crate) fn is_code(self) -> bool {
        matches!(self, SectionRole::Program | SectionRole::Text)
    }

    /// True for the sections that become data maps (`.data*`, `.rodata*`, `.bss*`).
    pub(crate) fn is_data(self) -> bool {
        matches!(
            self,
            SectionRole::Data | SectionRole::Rodata | SectionRole::Bss
        )
    }
}

/// One section.
#[derive(Clone, Debug)]
pub(crate) struct SectionFact {
    /// ELF section index.
    pub index: usize,
    /// Section name.
    pub name: String,
    /// What the loader makes of it.
    pub role: SectionRole,
    /// Size in bytes (for `.bss`, the size of the zeroed area).
    pub size: u64,
    /// Contents (empty for `SHT_NOBITS`); kept only for code, BTF and data sections.
    pub data: Vec<u8>,
    /// Where the contents start in the file (`None` for `SHT_NOBITS`).
    pub file_offset: Option<u64>,
}

/// One symbol.
#[derive(Clone, Debug)]
pub(crate) struct SymbolFact {
    /// Symbol table index.
    pub index: usize,
    /// Name (may be empty).
    pub name: String,
    /// Section index for defined symbols.
    pub section: Option<usize>,
    /// Offset inside the section.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// `object`'s symbol kind.
    pub kind: SymbolKind,
    /// `STB_WEAK` binding.
    pub weak: bool,
}

/// A relocation of a code section against an extern symbol (a `.kconfig` or `.ksyms` extern,
/// or something no loader can resolve; `spec` decides which).
#[derive(Clone, Debug)]
pub(crate) struct ExternReloc {
    /// The code section it patches.
    pub section: usize,
    /// Byte offset of the patched instruction.
    pub offset: u64,
    /// The extern symbol's name.
    pub name: String,
    /// True for a call (`R_BPF_64_32` on `call`), false for an `lddw` (`R_BPF_64_64`).
    pub call: bool,
}

/// One relocation of a code section.
#[derive(Clone, Debug)]
pub(crate) struct RelocFact {
    /// The code section it patches.
    pub section: usize,
    /// Byte offset of the patched instruction.
    pub offset: u64,
    /// Symbol table index of the target.
    pub symbol: usize,
}

/// The validated ELF facts of one object.
#[derive(Clone, Debug)]
pub(crate) struct ElfFacts {
    /// Sections by position; `sections[i].index` is the ELF index.
    pub sections: Vec<SectionFact>,
    /// Symbols by position.
    pub symbols: Vec<SymbolFact>,
    /// Relocations of code sections.
    pub relocations: Vec<RelocFact>,
    /// Relocations of code sections against extern symbols, checked for shape only.
    pub extern_relocations: Vec<ExternReloc>,
}

impl ElfFacts {
    /// The section with ELF index `index`.
    pub(crate) fn section(&self, index: usize) -> Option<&SectionFact> {
        self.sections.iter().find(|s| s.index == index)
    }

    /// The section named `name`.
    pub(crate) fn section_by_name(&self, name: &str) -> Option<&SectionFact> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// The symbol with table index `index`.
    pub(crate) fn symbol(&self, index: usize) -> Option<&SymbolFact> {
        self.symbols.iter().find(|s| s.index == index)
    }

    /// The defined data symbol named `name` in section `section`.
    pub(crate) fn data_symbol(&self, section: usize, name: &str) -> Option<&SymbolFact> {
        self.symbols
            .iter()
            .find(|s| s.section == Some(section) && s.name == name && s.kind == SymbolKind::Data)
    }
}

fn section_error(index: usize, name: &str, reason: impl Into<String>) -> ObjError {
    ObjError::BadSection {
        index,
        name: name.to_owned(),
        reason: reason.into(),
    }
}

fn symbol_error(index: usize, name: &str, reason: impl Into<String>) -> ObjError {
    ObjError::BadSymbol {
        index,
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// Reads and validates the ELF structure of `bytes`.
pub(crate) fn inspect(bytes: &[u8]) -> Result<ElfFacts, ObjError> {
    let file = object::File::parse(bytes).map_err(|e| ObjError::Elf {
        reason: e.to_string(),
    })?;
    if file.format() != BinaryFormat::Elf {
        return Err(ObjError::NotBpf {
            reason: format!("{:?} file, not ELF", file.format()),
        });
    }
    if file.architecture() != Architecture::Bpf {
        return Err(ObjError::NotBpf {
            reason: format!("machine is {:?}, not BPF (EM_BPF 247)", file.architecture()),
        });
    }
    if !file.is_64() || !file.is_little_endian() {
        return Err(ObjError::NotBpf {
            reason: "only little-endian 64-bit objects are supported".to_owned(),
        });
    }
    if file.kind() != ObjectKind::Relocatable {
        return Err(ObjError::NotBpf {
            reason: format!(
                "{:?} file, expected a relocatable object (ET_REL)",
                file.kind()
            ),
        });
    }

    let mut sections = Vec::new();
    for section in file.sections() {
        let index = section.index().0;
        let name = section
            .name()
            .map_err(|e| section_error(index, "", format!("unreadable name: {e}")))?
            .to_owned();
        let role = SectionRole::classify(&name, section.kind(), section.size());
        let keep = role.is_code()
            || role.is_data()
            || matches!(
                role,
                SectionRole::Btf
                    | SectionRole::BtfExt
                    | SectionRole::LegacyMaps
                    | SectionRole::BtfMaps
            );
        // aya-obj reads every section's contents; an unreadable one must fail here.
        let data = section
            .data()
            .map_err(|e| section_error(index, &name, format!("unreadable contents: {e}")))?;
        if role != SectionRole::Other && section.address() != 0 {
            return Err(section_error(
                index,
                &name,
                format!(
                    "address {:#x} in a relocatable object (must be 0)",
                    section.address()
                ),
            ));
        }
        if role.is_code() && !section.size().is_multiple_of(INSN_SIZE as u64) {
            return Err(section_error(
                index,
                &name,
                format!("code size {} is not a multiple of 8", section.size()),
            ));
        }
        if role != SectionRole::Bss
            && (data.len() as u64) < section.size()
            && role != SectionRole::Other
        {
            return Err(section_error(
                index,
                &name,
                "contents shorter than the section size",
            ));
        }
        if role.is_data() && section.size() > MAX_DATA_SECTION {
            return Err(section_error(
                index,
                &name,
                format!(
                    "{} bytes exceeds the kernel's array value limit of {MAX_DATA_SECTION} (E2BIG)",
                    section.size()
                ),
            ));
        }
        sections.push(SectionFact {
            index,
            name,
            role,
            size: section.size(),
            data: if keep { data.to_vec() } else { Vec::new() },
            file_offset: section.file_range().map(|(offset, _)| offset),
        });
    }

    let mut symbols = Vec::new();
    for symbol in file.symbols() {
        let index = symbol.index().0;
        let name = symbol
            .name()
            .map_err(|e| symbol_error(index, "", format!("unreadable name: {e}")))?
            .to_owned();
        let section = match symbol.section() {
            SymbolSection::Section(i) => Some(i.0),
            _ => None,
        };
        if let Some(si) = section {
            let Some(sec) = sections.iter().find(|s| s.index == si) else {
                return Err(symbol_error(
                    index,
                    &name,
                    format!("section index {si} does not exist"),
                ));
            };
            let end = symbol.address().checked_add(symbol.size());
            if sec.role != SectionRole::Other && end.is_none_or(|end| end > sec.size) {
                return Err(symbol_error(
                    index,
                    &name,
                    format!(
                        "range {:#x}+{:#x} runs past section `{}` ({} bytes)",
                        symbol.address(),
                        symbol.size(),
                        sec.name,
                        sec.size
                    ),
                ));
            }
            if sec.role.is_code()
                && symbol.kind() == SymbolKind::Text
                && (!symbol.address().is_multiple_of(INSN_SIZE as u64)
                    || !symbol.size().is_multiple_of(INSN_SIZE as u64))
            {
                return Err(symbol_error(
                    index,
                    &name,
                    "function not aligned to instructions",
                ));
            }
        }
        symbols.push(SymbolFact {
            index,
            name,
            section,
            address: symbol.address(),
            size: symbol.size(),
            kind: symbol.kind(),
            weak: symbol.is_weak(),
        });
    }

    let mut facts = ElfFacts {
        sections,
        symbols,
        relocations: Vec::new(),
        extern_relocations: Vec::new(),
    };
    for section in file.sections() {
        let index = section.index().0;
        let Some(fact) = facts.section(index) else {
            continue;
        };
        if !fact.role.is_code() {
            continue;
        }
        let name = fact.name.clone();
        for (offset, reloc) in section.relocations() {
            let bad = |reason: String| ObjError::BadRelocation {
                section: name.clone(),
                offset,
                reason,
            };
            let RelocationTarget::Symbol(symbol) = reloc.target() else {
                return Err(bad("target is not a symbol".to_owned()));
            };
            let r_type = match reloc.flags() {
                RelocationFlags::Elf { r_type } => r_type,
                other => return Err(bad(format!("unexpected relocation flags {other:?}"))),
            };
            facts.relocations.push(RelocFact {
                section: index,
                offset,
                symbol: symbol.0,
            });
            match check_relocation(&facts, index, offset, symbol.0, r_type) {
                Ok(()) => {}
                Err(RelocProblem::Extern(symbol)) => {
                    let insn = facts
                        .section(index)
                        .and_then(|f| f.data.get(usize::try_from(offset).unwrap_or(usize::MAX)..))
                        .and_then(|d| d.get(..2 * INSN_SIZE).or_else(|| d.get(..INSN_SIZE)))
                        .map(<[u8]>::to_vec);
                    let call = match (r_type, insn) {
                        (R_BPF_64_32, Some(ref i)) if i[0] == opcode::CALL => true,
                        (R_BPF_64_64, Some(ref i))
                            if i[0] == opcode::LDDW && i.len() == 2 * INSN_SIZE =>
                        {
                            false
                        }
                        _ => {
                            return Err(bad(format!(
                                "relocation type {r_type} against extern `{symbol}` is not on a call or lddw"
                            )))
                        }
                    };
                    facts.extern_relocations.push(ExternReloc {
                        section: index,
                        offset,
                        name: symbol,
                        call,
                    });
                }
                Err(RelocProblem::Bad(reason)) => return Err(bad(reason)),
            }
        }
        check_calls(&facts, index)?;
    }
    Ok(facts)
}

fn read_insn(code: &[u8], offset: u64) -> Option<[u8; INSN_SIZE]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(INSN_SIZE)?;
    code.get(start..end)?.try_into().ok()
}

fn imm_of(insn: &[u8; INSN_SIZE]) -> i32 {
    i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]])
}

/// Why a relocation cannot be applied.
enum RelocProblem {
    /// The target symbol is not defined in this object.
    Extern(String),
    /// Anything else.
    Bad(String),
}

/// Checks one relocation of code section `section` so that aya-obj can apply it safely.
fn check_relocation(
    facts: &ElfFacts,
    section: usize,
    offset: u64,
    symbol: usize,
    r_type: u32,
) -> Result<(), RelocProblem> {
    let Some(code) = facts.section(section) else {
        return Err(RelocProblem::Bad("relocated section vanished".to_owned()));
    };
    if !offset.is_multiple_of(INSN_SIZE as u64) {
        return Err(RelocProblem::Bad(
            "offset is not on an instruction boundary".to_owned(),
        ));
    }
    let Some(insn) = read_insn(&code.data, offset) else {
        return Err(RelocProblem::Bad(format!(
            "offset past the end of the section ({} bytes)",
            code.size
        )));
    };
    let Some(sym) = facts.symbol(symbol) else {
        return Err(RelocProblem::Bad(format!(
            "symbol #{symbol} does not exist"
        )));
    };
    let Some(target_section) = sym.section.and_then(|i| facts.section(i)) else {
        return Err(RelocProblem::Extern(sym.name.clone()));
    };
    match r_type {
        R_BPF_64_64 => {
            if insn[0] != opcode::LDDW {
                return Err(RelocProblem::Bad(format!(
                    "64-bit relocation on opcode {:#04x}, not lddw",
                    insn[0]
                )));
            }
            // The second slot must exist inside every function that contains the first.
            let second_end = offset.saturating_add(2 * INSN_SIZE as u64);
            if second_end > code.size {
                return Err(RelocProblem::Bad(
                    "lddw is missing its second slot".to_owned(),
                ));
            }
            let cut = facts.symbols.iter().any(|f| {
                f.section == Some(section)
                    && f.kind == SymbolKind::Text
                    && f.address <= offset
                    && offset < f.address.saturating_add(f.size)
                    && second_end > f.address.saturating_add(f.size)
            });
            if cut {
                return Err(RelocProblem::Bad(
                    "lddw is split across the end of its function".to_owned(),
                ));
            }
            if target_section.role.is_data() {
                let sum = i64::from(imm_of(&insn))
                    .checked_add(i64::try_from(sym.address).unwrap_or(i64::MAX));
                if sum.is_none_or(|s| i32::try_from(s).is_err()) {
                    return Err(RelocProblem::Bad(format!(
                        "data offset of `{}` does not fit in 32 bits",
                        sym.name
                    )));
                }
            }
            if target_section.role.is_code() && sym.kind == SymbolKind::Section {
                // aya-obj computes the function address as `symbol + imm`.
                let target = i64::try_from(sym.address)
                    .ok()
                    .and_then(|a| a.checked_add(i64::from(imm_of(&insn))));
                if target.is_none_or(|t| t < 0 || t as u64 >= target_section.size) {
                    return Err(RelocProblem::Bad(format!(
                        "function reference outside `{}`",
                        target_section.name
                    )));
                }
            }
            if target_section.role.is_code()
                && !matches!(sym.kind, SymbolKind::Text | SymbolKind::Section)
            {
                return Err(RelocProblem::Bad(format!(
                    "code reference to `{}` of kind {:?}",
                    sym.name, sym.kind
                )));
            }
        }
        R_BPF_64_32 => {
            if insn[0] != opcode::CALL || (insn[1] >> 4) != SRC_PSEUDO_CALL {
                return Err(RelocProblem::Bad(format!(
                    "32-bit relocation on opcode {:#04x}, not a bpf-to-bpf call",
                    insn[0]
                )));
            }
            if !target_section.role.is_code() {
                return Err(RelocProblem::Bad(format!(
                    "call to `{}` outside a code section",
                    sym.name
                )));
            }
            if !matches!(sym.kind, SymbolKind::Text | SymbolKind::Section) {
                return Err(RelocProblem::Bad(format!(
                    "call to `{}` of kind {:?}",
                    sym.name, sym.kind
                )));
            }
            if sym.kind == SymbolKind::Section {
                // aya-obj computes the callee address as `symbol + (imm + 1) * 8`.
                let target = i64::try_from(sym.address).ok().and_then(|a| {
                    let slots = i64::from(imm_of(&insn)).checked_add(1)?;
                    a.checked_add(slots.checked_mul(INSN_SIZE as i64)?)
                });
                if target.is_none_or(|t| t < 0 || t as u64 >= target_section.size) {
                    return Err(RelocProblem::Bad(format!(
                        "call target outside `{}`",
                        target_section.name
                    )));
                }
            }
        }
        other => {
            return Err(RelocProblem::Bad(format!(
                "unsupported relocation type {other}"
            )))
        }
    }
    Ok(())
}

/// Checks every bpf-to-bpf call of code section `section`: its immediate must not overflow when
/// aya-obj computes the callee address.
fn check_calls(facts: &ElfFacts, section: usize) -> Result<(), ObjError> {
    let Some(code) = facts.section(section) else {
        return Ok(());
    };
    for (i, chunk) in code.data.chunks_exact(INSN_SIZE).enumerate() {
        if chunk[0] == opcode::CALL && (chunk[1] >> 4) == SRC_PSEUDO_CALL {
            let imm = i32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if imm == i32::MAX || imm == i32::MIN {
                return Err(ObjError::BadRelocation {
                    section: code.name.clone(),
                    offset: (i * INSN_SIZE) as u64,
                    reason: format!("call offset {imm} out of range"),
                });
            }
        }
    }
    Ok(())
}
