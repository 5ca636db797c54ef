//! CO-RE ("compile once, run everywhere") relocation, engine-independent: the instructions of
//! every program rewritten for a target BTF exactly as libbpf rewrites them before load.
//!
//! - [`TargetBtf`]: the BTF relocated against (the running kernel's, or a file);
//! - [`crate::ObjectSpec::relocate_core`]: applies every `.BTF.ext` CO-RE record to every
//!   program that holds the instruction (a subprogram linked into two programs is patched in
//!   both), returning a [`CoreReport`];
//! - a relocation that cannot be satisfied (a field or enumerator absent from the target) does
//!   not fail the load: its instruction is *poisoned*, replaced by a call to helper
//!   [`POISON_HELPER_ID`], so the program fails only if that path runs. The kernel's verifier
//!   refuses such a call on a live path; the user engine traps when it executes one, naming the
//!   relocation ([`CoreReport::poisoned_at`]).
//!
//! The rules are libbpf's: candidates are target types of a compatible kind whose name equals
//! the local name up to a `___flavor` suffix (looked for in vmlinux first, then kernel modules),
//! fields are matched by name through anonymous members, several candidates must agree or the
//! load fails as ambiguous, the compiled value of the instruction is checked before it is
//! replaced, and a load or store whose field changed size is resized when that is safe.

mod relocate;
mod target;
pub(crate) mod types;

pub use relocate::{poisoned, POISON_HELPER_ID};
pub use target::TargetBtf;

pub(crate) use relocate::{patch, resolve, CandidateCache};

/// `enum bpf_core_relo_kind`: what a relocation computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CoreKind {
    /// 0: a field's byte offset (`BPF_CORE_FIELD_BYTE_OFFSET`).
    FieldByteOffset,
    /// 1: a field's byte size.
    FieldByteSize,
    /// 2: whether a field exists (1 or 0).
    FieldExists,
    /// 3: whether a field is signed.
    FieldSigned,
    /// 4: the left shift that brings a bitfield's top bit to bit 63 of a u64.
    FieldLshiftU64,
    /// 5: the right shift that then brings it down to bit 0.
    FieldRshiftU64,
    /// 6: the type's id in the object's own BTF.
    TypeIdLocal,
    /// 7: the type's id in the target BTF (0 when absent).
    TypeIdTarget,
    /// 8: whether the type exists in the target.
    TypeExists,
    /// 9: the type's size in the target.
    TypeSize,
    /// 10: whether an enumerator exists in the target.
    EnumvalExists,
    /// 11: an enumerator's value in the target.
    EnumvalValue,
    /// 12: whether the type "matches" the target (`bpf_core_type_matches`).
    TypeMatches,
}

impl CoreKind {
    /// The kind numbered `n` in `enum bpf_core_relo_kind`.
    pub fn from_u32(n: u32) -> Option<CoreKind> {
        use CoreKind::*;
        Some(match n {
            0 => FieldByteOffset,
            1 => FieldByteSize,
            2 => FieldExists,
            3 => FieldSigned,
            4 => FieldLshiftU64,
            5 => FieldRshiftU64,
            6 => TypeIdLocal,
            7 => TypeIdTarget,
            8 => TypeExists,
            9 => TypeSize,
            10 => EnumvalExists,
            11 => EnumvalValue,
            12 => TypeMatches,
            _ => return None,
        })
    }

    /// libbpf's short name of the kind (`byte_off`, `field_exists`, ...).
    pub fn name(self) -> &'static str {
        use CoreKind::*;
        match self {
            FieldByteOffset => "byte_off",
            FieldByteSize => "byte_sz",
            FieldExists => "field_exists",
            FieldSigned => "signed",
            FieldLshiftU64 => "lshift_u64",
            FieldRshiftU64 => "rshift_u64",
            TypeIdLocal => "local_type_id",
            TypeIdTarget => "target_type_id",
            TypeExists => "type_exists",
            TypeSize => "type_size",
            EnumvalExists => "enumval_exists",
            EnumvalValue => "enumval_value",
            TypeMatches => "type_matches",
        }
    }

    pub(crate) fn is_field_based(self) -> bool {
        use CoreKind::*;
        matches!(
            self,
            FieldByteOffset
                | FieldByteSize
                | FieldExists
                | FieldSigned
                | FieldLshiftU64
                | FieldRshiftU64
        )
    }

    pub(crate) fn is_type_based(self) -> bool {
        use CoreKind::*;
        matches!(
            self,
            TypeIdLocal | TypeIdTarget | TypeExists | TypeSize | TypeMatches
        )
    }

    pub(crate) fn is_enumval_based(self) -> bool {
        matches!(self, CoreKind::EnumvalExists | CoreKind::EnumvalValue)
    }
}

/// What one relocation did to one program's instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreOutcome {
    /// The program whose instructions were changed.
    pub program: String,
    /// Index of the relocated instruction in [`crate::ProgramSpec::instructions`].
    pub insn_index: usize,
    /// The relocation's index among the CO-RE records of its ELF section (libbpf's `relo #N`).
    pub relocation_index: usize,
    /// The relocation kind.
    pub kind: CoreKind,
    /// The raw access string (`0:1:2`).
    pub access: String,
    /// The access in local terms (`[12] struct task_struct.real_parent (0:57) @ bit 19264`).
    pub spec: String,
    /// The value the instruction held before (what the compiler wrote).
    pub old_value: u64,
    /// The value written for the target; meaningless when poisoned.
    pub new_value: u64,
    /// True when the relocation could not be satisfied and the instruction was poisoned.
    pub poisoned: bool,
}

/// Every relocation applied by [`crate::ObjectSpec::relocate_core`], in record order, one entry
/// per (program, instruction).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreReport {
    /// The outcomes.
    pub relocations: Vec<CoreOutcome>,
}

impl CoreReport {
    /// The poisoned relocation at instruction `insn_index` of program `program`, if any.
    pub fn poisoned_at(&self, program: &str, insn_index: usize) -> Option<&CoreOutcome> {
        self.relocations.iter().find(|o| {
            o.poisoned
                && o.program == program
                && (o.insn_index == insn_index || o.insn_index + 1 == insn_index)
        })
    }

    /// How many instructions were poisoned.
    pub fn poisoned_count(&self) -> usize {
        self.relocations.iter().filter(|o| o.poisoned).count()
    }
}

/// Applies every CO-RE record of `spec` against `target` (see
/// [`crate::ObjectSpec::relocate_core`]).
pub(crate) fn apply(
    spec: &mut crate::ObjectSpec,
    target: &TargetBtf,
) -> Result<CoreReport, crate::ObjError> {
    use crate::ObjError;
    let btf_bytes = spec.btf.clone().ok_or_else(|| ObjError::BadBtf {
        section: ".BTF",
        offset: 0,
        reason: "the object has CO-RE relocations but no .BTF section".to_owned(),
    })?;
    let local = types::Types::parse(btf_bytes, ".BTF")?;
    let mut cache = CandidateCache::new(target);
    let mut report = CoreReport::default();
    let records = spec.core_relocations.clone();
    let mut per_section: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for record in records.iter() {
        // libbpf numbers relocations within their section (`relo #N`).
        let counter = per_section.entry(record.section.as_str()).or_insert(0);
        let index = *counter;
        *counter += 1;
        // Every (program, instruction) holding this record's instruction.
        let mut sites: Vec<(usize, usize)> = Vec::new();
        for (p, program) in spec.programs.iter().enumerate() {
            for f in &program.functions {
                let start = f.section_offset;
                let end = start.saturating_add((f.insn_count as u64).saturating_mul(8));
                let off = u64::from(record.insn_offset);
                if f.section == record.section && off >= start && off < end {
                    let err = |reason: String| {
                        ObjError::CoreRelocation(Box::new(crate::CoreFailure {
                            program: program.name.clone(),
                            index,
                            insn: f.insn_index,
                            kind: CoreKind::from_u32(record.kind)
                                .map_or("unknown", CoreKind::name)
                                .to_owned(),
                            access: record.access.clone(),
                            type_id: record.type_id,
                            type_name: local.type_name(record.type_id).to_owned(),
                            reason,
                        }))
                    };
                    if (off - start) % 8 != 0 {
                        return Err(err(format!(
                            "instruction offset {off:#x} is not a multiple of 8"
                        )));
                    }
                    sites.push((
                        p,
                        f.insn_index + usize::try_from((off - start) / 8).unwrap_or(0),
                    ));
                }
            }
        }
        // A record of a function no program links is ignored, as libbpf ignores it.
        let Some(&(first_prog, first_insn)) = sites.first() else {
            continue;
        };
        let names: Vec<String> = spec.programs.iter().map(|p| p.name.clone()).collect();
        let error_at = |prog: usize, insn: usize, reason: String| {
            ObjError::CoreRelocation(Box::new(crate::CoreFailure {
                program: names[prog].clone(),
                index,
                insn,
                kind: CoreKind::from_u32(record.kind)
                    .map_or("unknown", CoreKind::name)
                    .to_owned(),
                access: record.access.clone(),
                type_id: record.type_id,
                type_name: local.type_name(record.type_id).to_owned(),
                reason,
            }))
        };
        let kind_ = CoreKind::from_u32(record.kind).ok_or_else(|| {
            error_at(
                first_prog,
                first_insn,
                format!("unrecognized CO-RE relocation kind {}", record.kind),
            )
        })?;
        let (described, res) = resolve(&local, record.type_id, &record.access, kind_, &mut cache)
            .map_err(|e| error_at(first_prog, first_insn, e))?;
        for (p, insn) in sites {
            let (poisoned, old_value) = patch(&mut spec.programs[p].instructions, insn, &res)
                .map_err(|e| error_at(p, insn, e))?;
            report.relocations.push(CoreOutcome {
                program: spec.programs[p].name.clone(),
                insn_index: insn,
                relocation_index: index,
                kind: kind_,
                access: record.access.clone(),
                spec: described.clone(),
                old_value,
                new_value: res.new_val,
                poisoned,
            });
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
