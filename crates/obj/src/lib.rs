//! The user engine's object loader: a libbpf-style BPF object (what `clang -target bpf` emits)
//! turned into an [`ObjectSpec`] without a kernel.
//!
//! What it produces:
//! - **maps** ([`MapSpec`]) from BTF `.maps` and legacy `maps` definitions, and from `.data*`,
//!   `.rodata*` and `.bss*` sections as one-element ARRAY maps named the libbpf way
//!   (`<obj>.rodata`, `.data.custom`), with an abi [`bpfmaps_abi::MapDef`], pinning, the
//!   section's initial bytes and BTF key/value type names;
//! - **globals** ([`GlobalVar`]): variables of the data sections, settable by name before load
//!   ([`ObjectSpec::set_global`]), typically `const volatile` configuration in `.rodata`;
//! - **programs** ([`ProgramSpec`]) by name and section, with bpf-to-bpf calls linked and every
//!   map reference rewritten as an `lddw` with `src_reg = BPF_PSEUDO_MAP_IDX` (5) or
//!   `BPF_PSEUDO_MAP_IDX_VALUE` (6) and `imm` = index into [`ObjectSpec::maps`];
//! - the license, and the CO-RE relocation records (which the user engine does not need: it runs
//!   instructions against the object's own type layout).
//!
//! aya-obj does the parsing and linking; this crate validates the ELF and BTF first so that bad
//! input becomes an [`ObjError`] naming what and where, never a panic (a panic guard around
//! aya-obj catches anything the validation misses and reports [`ObjError::ParserPanicked`]).
//!
//! Architecture invariant: no file descriptors, no syscalls, no knowledge of either engine's
//! maps. A map is an index into [`ObjectSpec::maps`].
//!
//! ```no_run
//! use bpfmaps_obj::ObjectSpec;
//! let mut spec = ObjectSpec::from_file("bpf/obj/openat_counter.bpf.o".as_ref())?;
//! spec.set_global("target_tgid", &1234u32.to_le_bytes())?;
//! for map in &spec.maps {
//!     println!("{} {} key {} value {}", map.name, map.def.map_type, map.def.key_size, map.def.value_size);
//! }
//! let prog = &spec.programs[0];
//! println!("{} in {}: {} instructions", prog.name, prog.section, prog.instructions.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod btf;
pub mod btf_value;
mod co_re;
mod elf;
mod error;
mod externs;
mod insn;
mod spec;
mod tuning;

pub use btf::{BtfKind, BtfTypeInfo, CoreRelocation, ValueKind};
pub use co_re::{poisoned, CoreKind, CoreOutcome, CoreReport, TargetBtf, POISON_HELPER_ID};
pub use error::{CoreFailure, GlobalError, ObjError};
pub use externs::{
    kernel_version_code, libbpf_kernel_version, parse_kernel_config, ExternKind, ExternSite,
    ExternSpec, KconfigType, KernelConfig, POISON_KFUNC_BASE,
};
pub use spec::{
    internal_map_name, object_name_from_path, GlobalVar, LinkedFunction, MapKind, MapReference,
    MapSpec, ObjectSpec, Pinning, ProgramKind, ProgramSpec, OBJ_NAME_MAX,
};
pub use tuning::{MapTuneError, UnknownProgram};
