//! [`ObjectSpec`]: a libbpf-style object turned into kernel-independent parts — map
//! definitions ([`MapSpec`]), programs with linked, relocated instructions ([`ProgramSpec`]),
//! settable global variables ([`GlobalVar`]), the license and CO-RE records.
//!
//! Parsing runs in four steps: `elf::inspect` validates the ELF structure, `btf` validates
//! `.BTF`/`.BTF.ext`, aya-obj parses and links (inside a panic guard), and this module orders the
//! maps the libbpf way and rewrites every map reference to `BPF_PSEUDO_MAP_IDX` /
//! `BPF_PSEUDO_MAP_IDX_VALUE` with the map's index in [`ObjectSpec::maps`].
//!
//! Architecture invariant: nothing here knows about file descriptors, the kernel or the user
//! engine's maps. A map is an index into `maps`, never an fd.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use aya_obj::generated::bpf_insn;
use aya_obj::maps::PinningType;
use aya_obj::{Map as AyaMap, Object};
use bpfmaps_abi::insn::{pseudo, RawInsn, INSN_SIZE};
use bpfmaps_abi::{map_flags, MapDef, MapType};
use object::SymbolKind;

use crate::btf::{parse_btf_ext, BtfInfo, BtfTypeInfo, CoreRelocation, ValueKind};
use crate::co_re::types::Types;
use crate::co_re::{CoreReport, TargetBtf};
use crate::elf::{self, ElfFacts, SectionRole};
use crate::externs::{self, ExternKind, ExternSite, ExternSpec, KernelConfig};
use crate::insn::opcode;
use crate::{GlobalError, ObjError};

/// The kernel's limit on object names: 15 bytes plus the NUL (`BPF_OBJ_NAME_LEN` − 1).
pub const OBJ_NAME_MAX: usize = 15;
/// `BTF_VAR_STATIC`: a variable with internal linkage.
const BTF_VAR_STATIC: u32 = 0;
/// Size of a legacy `struct bpf_map_def` with the iproute2 `id` and `pinning` fields, as aya-obj
/// reads it; the `pinning` word sits at byte 24.
const LEGACY_PINNING_OFFSET: u64 = 24;

/// Where a map's definition came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    /// A BTF-defined map in `.maps`.
    Btf,
    /// A legacy `struct bpf_map_def` in `maps`.
    Legacy,
    /// A `.data` or `.data.*` section (one-element ARRAY).
    Data,
    /// A `.rodata` or `.rodata.*` section (one-element ARRAY, read-only for programs, frozen).
    Rodata,
    /// A `.bss` or `.bss.*` section (one-element ARRAY, zero-initialised).
    Bss,
    /// The `.kconfig` externs (one-element ARRAY, read-only for programs, frozen), filled by
    /// [`ObjectSpec::fill_kconfig`].
    Kconfig,
}

impl MapKind {
    /// True for the maps made from a data section.
    pub fn is_data_section(self) -> bool {
        matches!(
            self,
            MapKind::Data | MapKind::Rodata | MapKind::Bss | MapKind::Kconfig
        )
    }
}

/// How a map is pinned at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Not pinned.
    None,
    /// `LIBBPF_PIN_BY_NAME`: pinned at `<root>/<map name>` (root `/sys/fs/bpf` by default), and
    /// reused from there when a compatible map is already pinned.
    ByName,
}

/// One map of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// The map's full name: the variable name for `.maps`/`maps` definitions, libbpf's internal
    /// name (`<obj>.rodata`, `.data.custom`, ...) for data sections. Used for pin paths.
    pub name: String,
    /// The definition handed to map creation; `def.name` is `name` cut to the kernel's 15 bytes.
    pub def: MapDef,
    /// Where the definition came from.
    pub kind: MapKind,
    /// The ELF section that holds it (`.maps`, `maps`, `.rodata`, `.data.custom`, ...).
    pub section: String,
    /// Pinning requested by the definition.
    pub pinning: Pinning,
    /// `map_extra` (bloom filter hash count, arena address), 0 when absent.
    pub map_extra: u64,
    /// For data sections: the value of element 0 before load (`def.value_size` bytes), changed by
    /// [`ObjectSpec::set_global`]. `None` for other maps.
    pub initial_value: Option<Vec<u8>>,
    /// True when libbpf freezes the map after writing its initial value (`.rodata*`).
    pub frozen: bool,
    /// The key's BTF type, when the definition has one.
    pub key_type: Option<BtfTypeInfo>,
    /// The value's BTF type (a `DATASEC` for data sections), when the definition has one.
    pub value_type: Option<BtfTypeInfo>,
    /// The inner map of a map-in-map definition.
    pub inner: Option<MapDef>,
}

impl MapSpec {
    /// The pin path under `root` for maps pinned by name, `None` otherwise.
    pub fn pin_path(&self, root: &Path) -> Option<PathBuf> {
        match self.pinning {
            Pinning::ByName => Some(root.join(&self.name)),
            Pinning::None => None,
        }
    }

    /// The definition as map creation sees it on a machine with `possible_cpus` CPUs: a
    /// PERF_EVENT_ARRAY declared without `max_entries` gets one entry per possible CPU, as libbpf
    /// and aya do before creating it. Every other definition is returned unchanged.
    pub fn creation_def(&self, possible_cpus: u32) -> MapDef {
        let mut def = self.def.clone();
        def.max_entries = def.creation_max_entries(possible_cpus);
        def
    }
}

/// A program's type, from its section name (libbpf's `SEC()` conventions as aya-obj accepts
/// them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// `socket`: `BPF_PROG_TYPE_SOCKET_FILTER`.
    SocketFilter,
    /// `kprobe/`, `kretprobe/`: `BPF_PROG_TYPE_KPROBE`.
    Kprobe,
    /// `uprobe/`, `uretprobe/` (and `.s` variants): `BPF_PROG_TYPE_KPROBE` attached to user code.
    Uprobe,
    /// `classifier`: `BPF_PROG_TYPE_SCHED_CLS`.
    SchedClassifier,
    /// `tracepoint/<category>/<name>`, `tp/...`: `BPF_PROG_TYPE_TRACEPOINT`.
    Tracepoint,
    /// `xdp`, `xdp.frags`: `BPF_PROG_TYPE_XDP`.
    Xdp,
    /// `perf_event`: `BPF_PROG_TYPE_PERF_EVENT`.
    PerfEvent,
    /// `cgroup_skb/...`, `cgroup/skb`: `BPF_PROG_TYPE_CGROUP_SKB`.
    CgroupSkb,
    /// `raw_tracepoint/<name>`, `raw_tp/...`: `BPF_PROG_TYPE_RAW_TRACEPOINT`.
    RawTracepoint,
    /// `tp_btf/`, `fentry/`, `fexit/` (and `.s`): `BPF_PROG_TYPE_TRACING`.
    Tracing,
    /// `lsm/`, `lsm.s/`: `BPF_PROG_TYPE_LSM`.
    Lsm,
    /// Another section aya-obj accepts (sockops, sk_msg, cgroup/sock, ...).
    Other,
}

impl ProgramKind {
    /// The kind named by a section, from the part before the first `/`.
    pub fn from_section(section: &str) -> ProgramKind {
        let prefix = section.split('/').next().unwrap_or("");
        match prefix {
            "socket" => ProgramKind::SocketFilter,
            "kprobe" | "kretprobe" => ProgramKind::Kprobe,
            "uprobe" | "uprobe.s" | "uretprobe" | "uretprobe.s" => ProgramKind::Uprobe,
            "classifier" => ProgramKind::SchedClassifier,
            "tracepoint" | "tp" => ProgramKind::Tracepoint,
            "xdp" | "xdp.frags" => ProgramKind::Xdp,
            "perf_event" => ProgramKind::PerfEvent,
            "cgroup_skb" => ProgramKind::CgroupSkb,
            "cgroup" if section.starts_with("cgroup/skb") => ProgramKind::CgroupSkb,
            "raw_tracepoint" | "raw_tp" => ProgramKind::RawTracepoint,
            "tp_btf" | "fentry" | "fentry.s" | "fexit" | "fexit.s" => ProgramKind::Tracing,
            "lsm" | "lsm.s" => ProgramKind::Lsm,
            _ => ProgramKind::Other,
        }
    }

    /// The kernel's `enum bpf_prog_type` number, 0 (`UNSPEC`) for [`ProgramKind::Other`].
    pub fn prog_type(self) -> u32 {
        match self {
            ProgramKind::SocketFilter => 1,
            ProgramKind::Kprobe | ProgramKind::Uprobe => 2,
            ProgramKind::SchedClassifier => 3,
            ProgramKind::Tracepoint => 5,
            ProgramKind::Xdp => 6,
            ProgramKind::PerfEvent => 7,
            ProgramKind::CgroupSkb => 8,
            ProgramKind::RawTracepoint => 17,
            ProgramKind::Tracing => 26,
            ProgramKind::Lsm => 29,
            ProgramKind::Other => 0,
        }
    }
}

/// One map reference in a program's instructions, after relocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapReference {
    /// Index of the `lddw`'s first slot in [`ProgramSpec::instructions`].
    pub insn_index: usize,
    /// Index of the map in [`ObjectSpec::maps`].
    pub map_index: usize,
    /// For `BPF_PSEUDO_MAP_IDX_VALUE`: the byte offset inside the value; `None` for a map
    /// pointer (`BPF_PSEUDO_MAP_IDX`).
    pub value_offset: Option<u32>,
}

/// One program of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramSpec {
    /// The program's name (its function symbol).
    pub name: String,
    /// The ELF section name (`tracepoint/syscalls/sys_enter_openat`).
    pub section: String,
    /// The program type named by the section.
    pub kind: ProgramKind,
    /// The part of the section name after the first `/` (`syscalls/sys_enter_openat`), if any.
    pub attach_target: Option<String>,
    /// The instructions: the program's function followed by every bpf-to-bpf callee it reaches,
    /// calls patched to relative offsets, map references rewritten as `lddw` with
    /// `src = BPF_PSEUDO_MAP_IDX` (5) or `BPF_PSEUDO_MAP_IDX_VALUE` (6) and `imm` = map index
    /// (the value offset in the second slot's `imm`).
    pub instructions: Vec<RawInsn>,
    /// Every map reference of `instructions`, in instruction order.
    pub map_references: Vec<MapReference>,
    /// The object's license (`GPL`, `Dual BSD/GPL`, ...).
    pub license: String,
    /// CO-RE relocations recorded for this program's own function (those of linked
    /// subprograms are found through [`ProgramSpec::functions`]).
    /// [`ObjectSpec::relocate_core`] applies them.
    pub core_relocations: Vec<CoreRelocation>,
    /// Where each function linked into `instructions` came from, in instruction order: the
    /// program's own function first, then each bpf-to-bpf callee. Complete when the object has
    /// `.BTF.ext` function info (clang's `-g`); otherwise only the program's own function.
    pub functions: Vec<LinkedFunction>,
    /// `.BTF.ext` function info of `instructions` (callees included, offsets in instructions),
    /// as `BPF_PROG_LOAD` takes it: records of [`ProgramSpec::func_info_rec_size`] bytes.
    pub func_info: Vec<u8>,
    /// Size of one `func_info` record (0 without `.BTF.ext`).
    pub func_info_rec_size: u32,
    /// `.BTF.ext` line info of `instructions`, records of [`ProgramSpec::line_info_rec_size`].
    pub line_info: Vec<u8>,
    /// Size of one `line_info` record (0 without `.BTF.ext`).
    pub line_info_rec_size: u32,
}

/// One function linked into a program's instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedFunction {
    /// The function's name.
    pub name: String,
    /// The ELF section holding it (`.text`, or the program's section).
    pub section: String,
    /// Byte offset of its first instruction inside that section.
    pub section_offset: u64,
    /// Index of its first instruction in [`ProgramSpec::instructions`].
    pub insn_index: usize,
    /// Its number of instruction slots.
    pub insn_count: usize,
}

impl ProgramSpec {
    /// The instructions as contiguous little-endian bytecode.
    pub fn bytecode(&self) -> Vec<u8> {
        self.instructions
            .iter()
            .flat_map(|i| i.to_bytes())
            .collect()
    }
}

/// A global variable of a data section, settable before load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobalVar {
    /// The variable's name.
    pub name: String,
    /// The data map holding it (index into [`ObjectSpec::maps`]).
    pub map_index: usize,
    /// Its section (`.rodata`, `.data`, `.bss`, `.data.custom`).
    pub section: String,
    /// Byte offset inside the section (and so inside the map's value).
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
    /// The variable's C type (`volatile const __u32`).
    pub type_name: String,
    /// True for `static` variables (hidden from skeletons, still settable here).
    pub is_static: bool,
    /// What the variable holds, from its BTF type (for parsing a value given as text).
    pub value_kind: ValueKind,
}

/// A parsed object: maps, programs and globals, independent of any kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSpec {
    /// The object's name (the file name up to its first `.`, as libbpf takes it).
    pub name: String,
    /// The license string of the `license` section (`GPL` when absent, as aya-obj assumes).
    pub license: String,
    /// The `version` section, when present and not `0xFFFFFFFE`.
    pub kernel_version: Option<u32>,
    /// Every map, in libbpf's order: legacy `maps`, then `.maps` in BTF order, then data
    /// sections in section order. Program instructions refer to maps by index in this list.
    pub maps: Vec<MapSpec>,
    /// Every program, in section order, then by address.
    pub programs: Vec<ProgramSpec>,
    /// Global variables of all data sections.
    pub globals: Vec<GlobalVar>,
    /// Every CO-RE relocation record of `.BTF.ext`, in record order.
    pub core_relocations: Vec<CoreRelocation>,
    /// The object's raw `.BTF` section (the local types CO-RE records refer to), if any.
    pub btf: Option<Vec<u8>>,
    /// The `.kconfig` and `.ksyms` externs, in libbpf's order, with the instructions using them.
    pub externs: Vec<ExternSpec>,
    /// What [`ObjectSpec::relocate_core`] did, once it has run.
    core_report: Option<CoreReport>,
    /// The object's `.BTF` as a kernel loads it: `DATASEC` sizes and `VAR` offsets fixed up
    /// from the ELF, as libbpf does. `None` without `.BTF`, or when the fix-up failed (the
    /// object then loads without BTF, as libbpf falls back).
    pub kernel_btf: Option<Vec<u8>>,
}

/// The name libbpf gives an object opened from `path`: the file name up to its first `.`
/// (`bpf/obj/openat_counter.bpf.o` → `openat_counter`).
pub fn object_name_from_path(path: &Path) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    file.split('.').next().unwrap_or("").to_owned()
}

/// libbpf's name of the internal map for data section `section` of object `object_name`:
/// up to 8 bytes of the object name followed by the section name (at least 7 bytes reserved for
/// it), or the section name alone when it has a second `.` (`.rodata.str1.1`, `.data.custom`);
/// at most 15 bytes; characters other than alphanumerics, `_` and `.` become `_`.
pub fn internal_map_name(object_name: &str, section: &str) -> String {
    let obj = object_name.as_bytes();
    let sec = section.as_bytes();
    let sfx_len = sec.len().clamp(7, OBJ_NAME_MAX);
    let custom = sec.len() > 1 && sec[1..].contains(&b'.');
    let pfx_len = if custom {
        0
    } else {
        (OBJ_NAME_MAX - sfx_len).min(obj.len())
    };
    let mut name: Vec<u8> = obj[..pfx_len].to_vec();
    name.extend_from_slice(&sec[..sec.len().min(sfx_len)]);
    name.truncate(OBJ_NAME_MAX);
    name.iter()
        .map(|&b| {
            if bpfmaps_abi::is_obj_name_byte(b) {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect()
}

/// `name` cut to the kernel's 15 bytes (at a character boundary).
fn kernel_name(name: &str) -> String {
    let mut end = name.len().min(OBJ_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

/// Runs `f`, turning a panic inside aya-obj into [`ObjError::ParserPanicked`].
fn guarded<T>(stage: &'static str, f: impl FnOnce() -> T) -> Result<T, ObjError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_owned()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_owned()
        };
        ObjError::ParserPanicked { stage, message }
    })
}

/// An error with its chain of causes on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

fn to_raw(insn: &bpf_insn) -> RawInsn {
    RawInsn::new(
        insn.code,
        insn.dst_reg(),
        insn.src_reg(),
        insn.off,
        insn.imm,
    )
}

/// The aya-obj map and where it goes in our list.
struct Planned {
    aya_name: String,
    spec: MapSpec,
}

impl ObjectSpec {
    /// Reads and parses the object file at `path`; its name is derived from the file name.
    pub fn from_file(path: &Path) -> Result<ObjectSpec, ObjError> {
        let bytes = std::fs::read(path).map_err(|e| ObjError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        ObjectSpec::parse(&bytes, &object_name_from_path(path))
    }

    /// Parses an object file's bytes. `object_name` is used for data-section map names
    /// (`<object_name>.rodata`); see [`object_name_from_path`].
    pub fn parse(bytes: &[u8], object_name: &str) -> Result<ObjectSpec, ObjError> {
        let facts = elf::inspect(bytes)?;
        let btf = match facts.section_by_name(".BTF") {
            Some(s) => Some(BtfInfo::parse(&s.data)?),
            None => None,
        };
        let btf_bytes = facts.section_by_name(".BTF").map(|s| s.data.clone());
        let core_relocations = match (&btf, facts.section_by_name(".BTF.ext")) {
            (Some(btf), Some(ext)) => parse_btf_ext(&ext.data, btf)?,
            _ => Vec::new(),
        };
        check_legacy_defs(&facts)?;
        check_no_pseudo_loads(&facts)?;
        let local_types = match &btf_bytes {
            Some(b) if !facts.extern_relocations.is_empty() => {
                Some(Types::parse(b.clone(), ".BTF")?)
            }
            _ => None,
        };
        let mut extern_specs = externs::collect(&facts, local_types.as_ref())?;
        // A kfunc call is emitted as a bpf-to-bpf call to the extern; mark it a kfunc call
        // (src_reg 2) so the linker leaves it alone, as libbpf does.
        let patched;
        let bytes = if facts.extern_relocations.iter().any(|r| r.call) {
            let mut copy = bytes.to_vec();
            for r in facts.extern_relocations.iter().filter(|r| r.call) {
                let at = facts
                    .section(r.section)
                    .and_then(|s| s.file_offset)
                    .and_then(|o| o.checked_add(r.offset)?.checked_add(1))
                    .and_then(|o| usize::try_from(o).ok())
                    .filter(|&o| o < copy.len())
                    .ok_or_else(|| ObjError::BadRelocation {
                        section: facts
                            .section(r.section)
                            .map(|s| s.name.clone())
                            .unwrap_or_default(),
                        offset: r.offset,
                        reason: "kfunc call outside the file".to_owned(),
                    })?;
                copy[at] = (copy[at] & 0x0f) | (bpfmaps_abi::insn::call_kind::KFUNC << 4);
            }
            patched = copy;
            patched.as_slice()
        } else {
            bytes
        };

        let mut object = guarded("parse", || Object::parse(bytes))?.map_err(|e| match e {
            aya_obj::ParseError::InvalidProgramSection { section } => {
                ObjError::UnsupportedProgramSection { section }
            }
            other => ObjError::Parse {
                message: error_chain(&other),
            },
        })?;

        let planned = plan_maps(&object, &facts, btf.as_ref(), object_name)?;
        check_map_relocations(&object, &facts)?;

        let text_sections: HashSet<usize> = facts
            .sections
            .iter()
            .filter(|s| s.role == SectionRole::Text)
            .map(|s| s.index)
            .collect();
        let mut relocation_maps: Vec<(String, i32, AyaMap)> = Vec::new();
        for (index, plan) in planned.iter().enumerate() {
            let Some(map) = object.maps.get(&plan.aya_name) else {
                continue;
            };
            let fd = i32::try_from(index).map_err(|_| ObjError::BadMapDef {
                map: plan.spec.name.clone(),
                reason: "too many maps".to_owned(),
            })?;
            relocation_maps.push((plan.aya_name.clone(), fd, map.clone()));
        }
        guarded("relocate", || {
            object.relocate_maps(
                relocation_maps
                    .iter()
                    .map(|(name, fd, map)| (name.as_str(), *fd, map)),
                &text_sections,
            )
        })?
        .map_err(|e| ObjError::Relocation {
            program: String::new(),
            message: error_chain(&e),
        })?;
        guarded("relocate", || object.relocate_calls(&text_sections))?.map_err(|e| {
            ObjError::Relocation {
                program: String::new(),
                message: error_chain(&e),
            }
        })?;

        let mut maps: Vec<MapSpec> = planned.into_iter().map(|p| p.spec).collect();
        let license = object.license.to_string_lossy().into_owned();
        let mut programs = build_programs(
            &object,
            &facts,
            btf.as_ref(),
            &maps,
            &license,
            &core_relocations,
        )?;
        let globals = build_globals(&facts, btf.as_ref(), &maps)?;
        place_externs(
            &facts,
            btf.as_ref(),
            object_name,
            &mut extern_specs,
            &mut maps,
            &mut programs,
        )?;
        let kernel_btf = kernel_btf(&mut object);
        Ok(ObjectSpec {
            name: object_name.to_owned(),
            license,
            kernel_version: object.kernel_version,
            maps,
            programs,
            globals,
            core_relocations,
            btf: btf_bytes,
            externs: extern_specs,
            core_report: None,
            kernel_btf,
        })
    }

    /// True when the object carries CO-RE relocations not yet applied by
    /// [`ObjectSpec::relocate_core`]: its instructions still hold the offsets of the types it
    /// was compiled against.
    pub fn needs_core(&self) -> bool {
        !self.core_relocations.is_empty() && self.core_report.is_none()
    }

    /// True when the object has `CONFIG_*` externs, which need the kernel configuration
    /// ([`KernelConfig::from_system`] with `with_config`).
    pub fn needs_kernel_config(&self) -> bool {
        self.externs
            .iter()
            .any(|e| matches!(e.kind, ExternKind::Kconfig { .. }) && e.name.starts_with("CONFIG_"))
    }

    /// True when some `.kconfig` extern is not filled yet.
    pub fn needs_kconfig(&self) -> bool {
        self.externs
            .iter()
            .any(|e| matches!(e.kind, ExternKind::Kconfig { .. }) && !e.resolved)
    }

    /// Fills the `.kconfig` map's initial value as libbpf does: `LINUX_KERNEL_VERSION`,
    /// `LINUX_HAS_BPF_COOKIE`, `LINUX_HAS_SYSCALL_WRAPPER`, and `CONFIG_*` from
    /// `config.entries` (`y`/`m`/`n`, numbers, strings, by the extern's type). A weak extern
    /// with no value stays zero; a strong one is an error naming it, as is a value that does
    /// not fit its type, or an unknown `LINUX_*` name that is not weak.
    pub fn fill_kconfig(&mut self, config: &KernelConfig) -> Result<(), ObjError> {
        let Some(map_index) = self.maps.iter().position(|m| m.kind == MapKind::Kconfig) else {
            return Ok(());
        };
        let mut value = self.maps[map_index]
            .initial_value
            .clone()
            .unwrap_or_default();
        for e in &mut self.externs {
            let ExternKind::Kconfig {
                offset,
                size,
                value_type,
            } = e.kind
            else {
                continue;
            };
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(usize::try_from(size).unwrap_or(usize::MAX));
            let Some(slot) = value.get_mut(start..end) else {
                continue;
            };
            let number = match e.name.as_str() {
                "LINUX_KERNEL_VERSION" => {
                    if config.version == 0 {
                        return Err(ObjError::BadExtern {
                            name: e.name.clone(),
                            reason: "failed to get the kernel version".to_owned(),
                        });
                    }
                    Some(u64::from(config.version))
                }
                "LINUX_HAS_BPF_COOKIE" => Some(u64::from(config.has_bpf_cookie)),
                "LINUX_HAS_SYSCALL_WRAPPER" => Some(u64::from(config.has_syscall_wrapper)),
                _ => None,
            };
            if let Some(n) = number {
                externs::write_number(&e.name, value_type, slot, n)?;
                e.resolved = true;
            } else if e.name.starts_with("CONFIG_") {
                if let Some(v) = config.entries.as_ref().and_then(|m| m.get(&e.name)) {
                    externs::write_value(&e.name, value_type, slot, v)?;
                    e.resolved = true;
                }
            } else if !(e.name.starts_with("LINUX_") && e.weak) {
                return Err(ObjError::BadExtern {
                    name: e.name.clone(),
                    reason: "unrecognized virtual extern (only CONFIG_* and LINUX_* exist)"
                        .to_owned(),
                });
            }
            if !e.resolved && !e.weak {
                return Err(ObjError::BadExtern {
                    name: e.name.clone(),
                    reason: "strong extern not found in the kernel configuration (ESRCH)"
                        .to_owned(),
                });
            }
            // A weak extern without a value keeps its zero bytes and counts as handled.
            e.resolved = true;
        }
        self.maps[map_index].initial_value = Some(value);
        Ok(())
    }

    /// Resolves every `.ksyms` extern to "absent", for an engine without kernel symbols: an
    /// `lddw` of one loads 0 (`bpf_ksym_exists` is false) and a call to a kfunc is poisoned as
    /// libbpf poisons a missing weak kfunc (a call to helper [`crate::POISON_KFUNC_BASE`] +
    /// extern index, which fails only if it runs). A strong ksym is an error naming it.
    pub fn resolve_ksyms_absent(&mut self) -> Result<(), ObjError> {
        for (index, e) in self.externs.iter_mut().enumerate() {
            if !matches!(e.kind, ExternKind::Ksym { .. }) || e.resolved {
                continue;
            }
            if !e.weak {
                return Err(ObjError::BadExtern {
                    name: e.name.clone(),
                    reason: "strong kernel symbol (__ksym without __weak): this engine has no \
                             kernel symbols to resolve it against (ESRCH)"
                        .to_owned(),
                });
            }
            for site in &e.sites {
                let Some(p) = self.programs.iter_mut().find(|p| p.name == site.program) else {
                    continue;
                };
                if site.call {
                    if let Some(insn) = p.instructions.get_mut(site.insn_index) {
                        *insn = externs::poisoned_kfunc_call(index);
                    }
                } else if let Some(pair) =
                    p.instructions.get_mut(site.insn_index..site.insn_index + 2)
                {
                    pair[0].src = 0;
                    pair[0].imm = 0;
                    pair[1].imm = 0;
                }
            }
            e.resolved = true;
        }
        Ok(())
    }

    /// What [`ObjectSpec::relocate_core`] did, once it has run.
    pub fn core_report(&self) -> Option<&CoreReport> {
        self.core_report.as_ref()
    }

    /// Applies every CO-RE relocation against `target`, rewriting each program's instructions
    /// in place as libbpf does before load: offsets, sizes, existence and signedness of fields,
    /// bitfield shifts, type ids, existence, sizes and matches, enumerator existence and values.
    /// A relocation that cannot be satisfied poisons its instruction (see
    /// [`crate::POISON_HELPER_ID`]); the report lists every outcome. A no-op returning an empty
    /// report when [`ObjectSpec::needs_core`] is false.
    ///
    /// Errors ([`ObjError::CoreRelocation`]) are libbpf's load errors: a malformed access
    /// string, ambiguous candidates, an instruction whose compiled value is not the local one, a
    /// relocation on an instruction that cannot carry one.
    pub fn relocate_core(&mut self, target: &TargetBtf) -> Result<CoreReport, ObjError> {
        if !self.needs_core() {
            return Ok(self.core_report.clone().unwrap_or_default());
        }
        let report = crate::co_re::apply(self, target)?;
        self.core_report = Some(report.clone());
        Ok(report)
    }

    /// The map named `name` (its full name, or the 15-byte kernel name).
    pub fn map(&self, name: &str) -> Option<&MapSpec> {
        self.map_index(name).and_then(|i| self.maps.get(i))
    }

    /// The index in [`ObjectSpec::maps`] of the map named `name` (full or kernel name).
    pub fn map_index(&self, name: &str) -> Option<usize> {
        self.maps
            .iter()
            .position(|m| m.name == name)
            .or_else(|| self.maps.iter().position(|m| m.def.name == name))
    }

    /// The program named `name`.
    pub fn program(&self, name: &str) -> Option<&ProgramSpec> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// The programs of ELF section `section`.
    pub fn programs_in_section<'a>(
        &'a self,
        section: &'a str,
    ) -> impl Iterator<Item = &'a ProgramSpec> + 'a {
        self.programs.iter().filter(move |p| p.section == section)
    }

    /// The global variable named `name`.
    pub fn global(&self, name: &str) -> Option<&GlobalVar> {
        self.globals.iter().find(|g| g.name == name)
    }

    /// The current bytes of global `name` (its initial value, as set so far).
    pub fn global_value(&self, name: &str) -> Option<&[u8]> {
        let g = self.global(name)?;
        let value = self.maps.get(g.map_index)?.initial_value.as_deref()?;
        let start = usize::try_from(g.offset).ok()?;
        let end = start.checked_add(usize::try_from(g.size).ok()?)?;
        value.get(start..end)
    }

    /// Sets global `name` (typically a `const volatile` in `.rodata`) to `bytes` before load:
    /// the bytes are written into the initial value of its data map. `bytes` must have exactly
    /// the variable's size.
    pub fn set_global(&mut self, name: &str, bytes: &[u8]) -> Result<(), GlobalError> {
        let g = self.global(name).ok_or_else(|| GlobalError::Unknown {
            name: name.to_owned(),
        })?;
        let size = usize::try_from(g.size).unwrap_or(usize::MAX);
        if bytes.len() != size {
            return Err(GlobalError::SizeMismatch {
                name: name.to_owned(),
                expected: size,
                got: bytes.len(),
            });
        }
        let (map_index, offset) = (g.map_index, usize::try_from(g.offset).unwrap_or(usize::MAX));
        let slot = self
            .maps
            .get_mut(map_index)
            .and_then(|m| m.initial_value.as_mut())
            .and_then(|v| v.get_mut(offset..offset.saturating_add(size)))
            .ok_or_else(|| GlobalError::Unknown {
                name: name.to_owned(),
            })?;
        slot.copy_from_slice(bytes);
        Ok(())
    }
}

/// Adds the `.kconfig` map when the object has `.kconfig` externs, and finds every instruction
/// using an extern: a `.kconfig` `lddw` becomes a map-value reference into that map.
fn place_externs(
    facts: &ElfFacts,
    btf: Option<&BtfInfo>,
    object_name: &str,
    specs: &mut [ExternSpec],
    maps: &mut Vec<MapSpec>,
    programs: &mut [ProgramSpec],
) -> Result<(), ObjError> {
    if specs.is_empty() {
        return Ok(());
    }
    let size = externs::kconfig_size(specs);
    let kconfig_index = if size > 0 {
        let name = internal_map_name(object_name, ".kconfig");
        let value_type = btf
            .and_then(|b| b.datasec_id(".kconfig").and_then(|id| b.type_info(id)))
            .map(|mut t| {
                t.size = Some(size);
                t
            });
        maps.push(MapSpec {
            def: MapDef {
                map_type: MapType::Array,
                key_size: 4,
                value_size: size,
                max_entries: 1,
                map_flags: map_flags::BPF_F_RDONLY_PROG | map_flags::BPF_F_MMAPABLE,
                name: kernel_name(&name),
            },
            name,
            kind: MapKind::Kconfig,
            section: ".kconfig".to_owned(),
            pinning: Pinning::None,
            map_extra: 0,
            initial_value: Some(vec![0; usize::try_from(size).unwrap_or(0)]),
            frozen: true,
            key_type: None,
            value_type,
            inner: None,
        });
        Some(maps.len() - 1)
    } else {
        None
    };
    for r in &facts.extern_relocations {
        let Some(spec) = specs.iter_mut().find(|s| s.name == r.name) else {
            continue;
        };
        let section = facts
            .section(r.section)
            .map(|s| s.name.as_str())
            .unwrap_or("");
        for p in programs.iter_mut() {
            let Some(at) = p.functions.iter().find_map(|f| {
                let end = f.section_offset + (f.insn_count as u64) * INSN_SIZE as u64;
                (f.section == section && r.offset >= f.section_offset && r.offset < end).then(
                    || f.insn_index + ((r.offset - f.section_offset) / INSN_SIZE as u64) as usize,
                )
            }) else {
                continue;
            };
            if let (ExternKind::Kconfig { offset, .. }, Some(map_index)) =
                (&spec.kind, kconfig_index)
            {
                let (Some(first), Some(_)) = (p.instructions.get(at), p.instructions.get(at + 1))
                else {
                    continue;
                };
                if first.code != opcode::LDDW {
                    return Err(ObjError::BadRelocation {
                        section: section.to_owned(),
                        offset: r.offset,
                        reason: format!("`.kconfig` extern `{}` used by a non-lddw", spec.name),
                    });
                }
                p.instructions[at].src = pseudo::MAP_IDX_VALUE;
                p.instructions[at].imm = i32::try_from(map_index).unwrap_or(i32::MAX);
                p.instructions[at + 1].imm = i32::try_from(*offset).unwrap_or(i32::MAX);
                p.map_references.push(MapReference {
                    insn_index: at,
                    map_index,
                    value_offset: Some(*offset),
                });
                p.map_references.sort_by_key(|m| m.insn_index);
            }
            spec.sites.push(ExternSite {
                program: p.name.clone(),
                insn_index: at,
                call: r.call,
            });
        }
    }
    Ok(())
}

/// The object's BTF fixed up for the kernel (every BTF feature clang emits is taken as present:
/// nothing is sanitised away), or `None`.
fn kernel_btf(object: &mut Object) -> Option<Vec<u8>> {
    let all = aya_obj::btf::BtfFeatures::new(true, true, true, true, true, true, true, true);
    match guarded("btf fixup", || object.fixup_and_sanitize_btf(&all)) {
        Ok(Ok(Some(btf))) => Some(btf.to_bytes()),
        _ => None,
    }
}

/// aya-obj reads a legacy definition's `pinning` word straight into an enum with values 0 and 1;
/// any other value must be refused before it gets there.
fn check_legacy_defs(facts: &ElfFacts) -> Result<(), ObjError> {
    for section in facts
        .sections
        .iter()
        .filter(|s| s.role == SectionRole::LegacyMaps)
    {
        for sym in facts
            .symbols
            .iter()
            .filter(|s| s.section == Some(section.index))
        {
            if sym.size <= LEGACY_PINNING_OFFSET {
                continue;
            }
            let start = usize::try_from(sym.address.saturating_add(LEGACY_PINNING_OFFSET))
                .unwrap_or(usize::MAX);
            let avail = usize::try_from(sym.size - LEGACY_PINNING_OFFSET)
                .unwrap_or(usize::MAX)
                .min(4);
            let mut word = [0u8; 4];
            if let Some(bytes) = section.data.get(start..start.saturating_add(avail)) {
                word[..bytes.len()].copy_from_slice(bytes);
            }
            let pinning = u32::from_le_bytes(word);
            if pinning > 1 {
                return Err(ObjError::BadMapDef {
                    map: sym.name.clone(),
                    reason: format!("pinning {pinning} (only 0 = none and 1 = by name exist)"),
                });
            }
        }
    }
    Ok(())
}

/// A clang object never holds an already-resolved map load; one would be indistinguishable from
/// the loader's own rewrites, so it is refused.
fn check_no_pseudo_loads(facts: &ElfFacts) -> Result<(), ObjError> {
    for section in facts.sections.iter().filter(|s| s.role.is_code()) {
        let mut slots = section.data.chunks_exact(INSN_SIZE).enumerate();
        while let Some((i, slot)) = slots.next() {
            if slot[0] != opcode::LDDW {
                continue;
            }
            let src = slot[1] >> 4;
            if src != pseudo::IMM64 && src != pseudo::FUNC {
                return Err(ObjError::BadRelocation {
                    section: section.name.clone(),
                    offset: (i * INSN_SIZE) as u64,
                    reason: format!("lddw with src_reg {src} before relocation"),
                });
            }
            slots.next();
        }
    }
    Ok(())
}

/// Every relocation into a `maps`/`.maps` section must name a map's own symbol; aya-obj would
/// otherwise fall back to "some map of that section".
fn check_map_relocations(object: &Object, facts: &ElfFacts) -> Result<(), ObjError> {
    let map_symbols: HashSet<usize> = object
        .maps
        .values()
        .filter_map(AyaMap::symbol_index)
        .collect();
    for rel in &facts.relocations {
        let Some(sym) = facts.symbol(rel.symbol) else {
            continue;
        };
        let Some(target) = sym.section.and_then(|i| facts.section(i)) else {
            continue;
        };
        if matches!(target.role, SectionRole::LegacyMaps | SectionRole::BtfMaps)
            && !map_symbols.contains(&rel.symbol)
        {
            return Err(ObjError::BadRelocation {
                section: facts
                    .section(rel.section)
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                offset: rel.offset,
                reason: format!(
                    "reference into `{}` that is not a map (`{}`)",
                    target.name, sym.name
                ),
            });
        }
    }
    Ok(())
}

fn map_type_of(name: &str, raw: u32) -> Result<MapType, ObjError> {
    MapType::from_u32(raw).ok_or_else(|| ObjError::BadMapDef {
        map: name.to_owned(),
        reason: format!("unknown map type {raw}"),
    })
}

/// Orders aya-obj's maps the libbpf way and builds their specs.
fn plan_maps(
    object: &Object,
    facts: &ElfFacts,
    btf: Option<&BtfInfo>,
    object_name: &str,
) -> Result<Vec<Planned>, ObjError> {
    let mut planned = Vec::new();

    // Legacy maps, by address in their section.
    let mut legacy: Vec<(u64, &String, &AyaMap)> = object
        .maps
        .iter()
        .filter(|(_, m)| matches!(m, AyaMap::Legacy(l) if l.section_kind == aya_obj::EbpfSectionKind::Maps))
        .map(|(name, m)| {
            let addr = m.symbol_index().and_then(|i| facts.symbol(i)).map_or(u64::MAX, |s| s.address);
            (addr, name, m)
        })
        .collect();
    legacy.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, name, map) in legacy {
        planned.push(user_map(name, map, MapKind::Legacy, facts, btf)?);
    }

    // BTF maps, in the `.maps` DATASEC order (libbpf's), unknown ones last by name.
    let btf_order: Vec<String> = btf
        .and_then(|b| b.datasec_id(".maps").map(|id| b.datasec_vars(id)))
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let mut btf_maps: Vec<(usize, &String, &AyaMap)> = object
        .maps
        .iter()
        .filter(|(_, m)| matches!(m, AyaMap::Btf(_)))
        .map(|(name, m)| {
            (
                btf_order
                    .iter()
                    .position(|n| n == name)
                    .unwrap_or(usize::MAX),
                name,
                m,
            )
        })
        .collect();
    btf_maps.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    for (_, name, map) in btf_maps {
        planned.push(user_map(name, map, MapKind::Btf, facts, btf)?);
    }

    // Data sections, in section order; empty ones are skipped as libbpf does.
    for section in facts
        .sections
        .iter()
        .filter(|s| s.role.is_data() && s.size > 0)
    {
        let Some(map) = object.maps.get(&section.name) else {
            continue;
        };
        if map.section_index() != section.index {
            return Err(ObjError::BadSection {
                index: section.index,
                name: section.name.clone(),
                reason: "two data sections share this name".to_owned(),
            });
        }
        planned.push(data_map(object_name, section, map, btf)?);
    }
    Ok(planned)
}

fn user_map(
    name: &str,
    map: &AyaMap,
    kind: MapKind,
    facts: &ElfFacts,
    btf: Option<&BtfInfo>,
) -> Result<Planned, ObjError> {
    let map_type = map_type_of(name, map.map_type())?;
    let (key_type, value_type) = match (map, btf) {
        (AyaMap::Btf(m), Some(btf)) => (
            (m.def.btf_key_type_id != 0)
                .then(|| btf.type_info(m.def.btf_key_type_id))
                .flatten(),
            (m.def.btf_value_type_id != 0)
                .then(|| btf.type_info(m.def.btf_value_type_id))
                .flatten(),
        ),
        _ => (None, None),
    };
    let inner = match map.inner() {
        Some(inner) => Some(MapDef {
            map_type: map_type_of(name, inner.map_type())?,
            key_size: inner.key_size(),
            value_size: inner.value_size(),
            max_entries: inner.max_entries(),
            map_flags: inner.map_flags(),
            name: kernel_name(name),
        }),
        None => None,
    };
    let section = map
        .symbol_index()
        .and_then(|i| facts.symbol(i))
        .and_then(|s| s.section)
        .and_then(|i| facts.section(i))
        .map(|s| s.name.clone())
        .unwrap_or_default();
    Ok(Planned {
        aya_name: name.to_owned(),
        spec: MapSpec {
            name: name.to_owned(),
            def: MapDef {
                map_type,
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries: map.max_entries(),
                map_flags: map.map_flags(),
                name: kernel_name(name),
            },
            kind,
            section,
            pinning: match map.pinning() {
                PinningType::ByName => Pinning::ByName,
                PinningType::None => Pinning::None,
            },
            map_extra: map.map_extra(),
            initial_value: None,
            frozen: false,
            key_type,
            value_type,
            inner,
        },
    })
}

fn data_map(
    object_name: &str,
    section: &elf::SectionFact,
    map: &AyaMap,
    btf: Option<&BtfInfo>,
) -> Result<Planned, ObjError> {
    let kind = match section.role {
        SectionRole::Rodata => MapKind::Rodata,
        SectionRole::Bss => MapKind::Bss,
        _ => MapKind::Data,
    };
    let value_size = u32::try_from(section.size).map_err(|_| ObjError::BadSection {
        index: section.index,
        name: section.name.clone(),
        reason: "larger than 4 GiB".to_owned(),
    })?;
    let mut initial_value = if kind == MapKind::Bss {
        Vec::new()
    } else {
        map.data().to_vec()
    };
    initial_value.resize(usize::try_from(value_size).unwrap_or(0), 0);
    let datasec = btf.and_then(|b| b.datasec_id(&section.name).map(|id| (b, id)));
    // libbpf makes the map mmapable when the section has a variable with external linkage.
    let mut flags = if kind == MapKind::Rodata {
        map_flags::BPF_F_RDONLY_PROG
    } else {
        0
    };
    if let Some((b, id)) = datasec {
        if b.datasec_vars(id)
            .iter()
            .any(|v| v.linkage != BTF_VAR_STATIC)
        {
            flags |= map_flags::BPF_F_MMAPABLE;
        }
    }
    let name = internal_map_name(object_name, &section.name);
    Ok(Planned {
        aya_name: section.name.clone(),
        spec: MapSpec {
            def: MapDef {
                map_type: MapType::Array,
                key_size: 4,
                value_size,
                max_entries: 1,
                map_flags: flags,
                name: kernel_name(&name),
            },
            name,
            kind,
            section: section.name.clone(),
            pinning: Pinning::None,
            map_extra: 0,
            initial_value: Some(initial_value),
            frozen: kind == MapKind::Rodata,
            key_type: None,
            // clang leaves a DATASEC's size at 0 in object files; libbpf fixes it to the
            // section size, and so does this.
            value_type: datasec.and_then(|(b, id)| b.type_info(id)).map(|mut t| {
                t.size = Some(value_size);
                t
            }),
            inner: None,
        },
    })
}

/// Collects the programs with their linked instructions and rewrites map references by index.
fn build_programs(
    object: &Object,
    facts: &ElfFacts,
    btf: Option<&BtfInfo>,
    maps: &[MapSpec],
    license: &str,
    core: &[CoreRelocation],
) -> Result<Vec<ProgramSpec>, ObjError> {
    let mut order: Vec<(&String, &aya_obj::Program)> = object.programs.iter().collect();
    order.sort_by_key(|(name, p)| (p.section_index, p.address, (*name).clone()));
    let mut programs = Vec::new();
    for (name, program) in order {
        let function = object
            .functions
            .get(&program.function_key())
            .ok_or_else(|| ObjError::Relocation {
                program: name.clone(),
                message: "function not found".to_owned(),
            })?;
        let section = facts
            .section(program.section_index)
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let mut instructions: Vec<RawInsn> = function.instructions.iter().map(to_raw).collect();
        let map_references = rewrite_map_references(name, &mut instructions, maps)?;
        let size = facts
            .symbols
            .iter()
            .find(|s| {
                s.section == Some(program.section_index)
                    && s.address == program.address
                    && s.kind == SymbolKind::Text
            })
            .map_or(0, |s| s.size);
        let end = program.address.saturating_add(size);
        let core_relocations = core
            .iter()
            .filter(|r| {
                r.section == section
                    && u64::from(r.insn_offset) >= program.address
                    && u64::from(r.insn_offset) < end
            })
            .cloned()
            .collect();
        let functions = linked_functions(object, facts, btf, name, program, function, &section);
        programs.push(ProgramSpec {
            name: name.clone(),
            kind: ProgramKind::from_section(&section),
            attach_target: section.split_once('/').map(|(_, t)| t.to_owned()),
            section,
            instructions,
            map_references,
            license: license.to_owned(),
            core_relocations,
            functions,
            func_info: function.func_info.func_info_bytes(),
            func_info_rec_size: u32::try_from(function.func_info_rec_size).unwrap_or(0),
            line_info: function.line_info.line_info_bytes(),
            line_info_rec_size: u32::try_from(function.line_info_rec_size).unwrap_or(0),
        });
    }
    Ok(programs)
}

/// Where each function of a linked program came from. aya-obj appends every callee to the
/// program and records its function info at the callee's first instruction; the BTF `FUNC` named
/// there identifies the callee.
fn linked_functions(
    object: &Object,
    facts: &ElfFacts,
    btf: Option<&BtfInfo>,
    name: &str,
    program: &aya_obj::Program,
    linked: &aya_obj::Function,
    section: &str,
) -> Vec<LinkedFunction> {
    let total = linked.instructions.len();
    let mut starts: Vec<(usize, LinkedFunction)> = vec![(
        0,
        LinkedFunction {
            name: name.to_owned(),
            section: section.to_owned(),
            section_offset: program.address,
            insn_index: 0,
            insn_count: 0,
        },
    )];
    if let Some(btf) = btf {
        for info in &linked.func_info.func_info {
            let start = usize::try_from(info.insn_off).unwrap_or(usize::MAX);
            if start == 0 || start >= total || starts.iter().any(|(s, _)| *s == start) {
                continue;
            }
            let fname = btf.func_name(info.type_id);
            let mut found = object.functions.values().filter(|f| f.name == fname);
            let (Some(f), None) = (found.next(), found.next()) else {
                continue;
            };
            let Some(fsection) = facts.section(f.section_index.0) else {
                continue;
            };
            starts.push((
                start,
                LinkedFunction {
                    name: fname.to_owned(),
                    section: fsection.name.clone(),
                    section_offset: u64::try_from(f.section_offset).unwrap_or(u64::MAX),
                    insn_index: start,
                    insn_count: 0,
                },
            ));
        }
    }
    starts.sort_by_key(|(s, _)| *s);
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|(s, _)| *s)
        .chain(std::iter::once(total))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(|((start, mut f), end)| {
            f.insn_count = end - start;
            f
        })
        .collect()
}

/// Turns aya-obj's fd-style map loads (`imm` = our map index) into index-style ones.
fn rewrite_map_references(
    program: &str,
    instructions: &mut [RawInsn],
    maps: &[MapSpec],
) -> Result<Vec<MapReference>, ObjError> {
    let mut references = Vec::new();
    let mut i = 0;
    while i < instructions.len() {
        let insn = instructions[i];
        if insn.code != opcode::LDDW {
            i += 1;
            continue;
        }
        if insn.src == pseudo::MAP_FD || insn.src == pseudo::MAP_VALUE {
            let bad = |reason: String| ObjError::Relocation {
                program: program.to_owned(),
                message: reason,
            };
            let map_index = usize::try_from(insn.imm)
                .ok()
                .filter(|&m| m < maps.len())
                .ok_or_else(|| {
                    bad(format!(
                        "instruction {i}: map index {} out of range",
                        insn.imm
                    ))
                })?;
            let Some(second) = instructions.get(i + 1).copied() else {
                return Err(bad(format!(
                    "instruction {i}: lddw without its second slot"
                )));
            };
            let value_offset = if insn.src == pseudo::MAP_VALUE {
                let offset = u32::try_from(second.imm)
                    .ok()
                    .filter(|&o| o < maps[map_index].def.value_size)
                    .ok_or_else(|| {
                        bad(format!(
                            "instruction {i}: offset {} outside map `{}`'s {}-byte value",
                            second.imm, maps[map_index].name, maps[map_index].def.value_size
                        ))
                    })?;
                Some(offset)
            } else {
                None
            };
            instructions[i].src = if value_offset.is_some() {
                pseudo::MAP_IDX_VALUE
            } else {
                pseudo::MAP_IDX
            };
            references.push(MapReference {
                insn_index: i,
                map_index,
                value_offset,
            });
        }
        i += 2;
    }
    Ok(references)
}

/// Lists the variables of every data map, with offsets taken from the ELF symbols (clang leaves
/// BTF `DATASEC` offsets at 0 in object files; libbpf fixes them up the same way).
fn build_globals(
    facts: &ElfFacts,
    btf: Option<&BtfInfo>,
    maps: &[MapSpec],
) -> Result<Vec<GlobalVar>, ObjError> {
    let Some(btf) = btf else {
        return Ok(Vec::new());
    };
    let mut globals = Vec::new();
    for (map_index, map) in maps
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind.is_data_section())
    {
        let Some(section) = facts.section_by_name(&map.section) else {
            continue;
        };
        let Some(id) = btf.datasec_id(&map.section) else {
            continue;
        };
        for var in btf.datasec_vars(id) {
            let offset = facts
                .data_symbol(section.index, &var.name)
                .map_or(u64::from(var.offset), |s| s.address);
            let size = btf.type_size(var.type_id).unwrap_or(var.size);
            if offset
                .checked_add(u64::from(size))
                .is_none_or(|end| end > section.size)
            {
                return Err(ObjError::BadBtf {
                    section: ".BTF",
                    offset: 0,
                    reason: format!(
                        "variable `{}` ({offset}+{size}) lies outside section `{}` ({} bytes)",
                        var.name, map.section, section.size
                    ),
                });
            }
            globals.push(GlobalVar {
                name: var.name.clone(),
                map_index,
                section: map.section.clone(),
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
                size,
                type_name: btf.type_name(var.type_id),
                is_static: var.linkage == BTF_VAR_STATIC,
                value_kind: btf.value_kind(var.type_id),
            });
        }
    }
    Ok(globals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_map_names_follow_libbpf() {
        assert_eq!(
            internal_map_name("my_object_name", ".rodata"),
            "my_objec.rodata"
        );
        assert_eq!(internal_map_name("my_object_name", ".bss"), "my_objec.bss");
        assert_eq!(internal_map_name("maps_btf", ".data"), "maps_btf.data");
        assert_eq!(internal_map_name("abc", ".rodata"), "abc.rodata");
        assert_eq!(internal_map_name("x", ".rodata.str1.1"), ".rodata.str1.1");
        assert_eq!(internal_map_name("x", ".data.custom"), ".data.custom");
        assert_eq!(
            internal_map_name("x", ".data.a_very_long_name"),
            ".data.a_very_lo"
        );
        assert_eq!(internal_map_name("my-obj", ".data"), "my_obj.data");
    }

    #[test]
    fn object_name_stops_at_the_first_dot() {
        assert_eq!(
            object_name_from_path(Path::new("bpf/obj/openat_counter.bpf.o")),
            "openat_counter"
        );
        assert_eq!(object_name_from_path(Path::new("x.o")), "x");
    }

    #[test]
    fn program_kinds_from_sections() {
        assert_eq!(
            ProgramKind::from_section("tracepoint/syscalls/sys_enter_openat").prog_type(),
            5
        );
        assert_eq!(
            ProgramKind::from_section("raw_tp/sys_enter"),
            ProgramKind::RawTracepoint
        );
        assert_eq!(ProgramKind::from_section("socket").prog_type(), 1);
        assert_eq!(ProgramKind::from_section("xdp.frags"), ProgramKind::Xdp);
        assert_eq!(
            ProgramKind::from_section("cgroup/skb"),
            ProgramKind::CgroupSkb
        );
        assert_eq!(ProgramKind::from_section("sockops"), ProgramKind::Other);
    }
}
