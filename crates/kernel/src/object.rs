//! [`KernelObject`]: a libbpf-style BPF object file (clang `-target bpf` output) loaded into the
//! kernel through aya: `const volatile` globals set before load, maps created from BTF `.maps`
//! and legacy `maps` definitions, `LIBBPF_PIN_BY_NAME` maps reused from their pins only after the
//! pinned map was checked against the definition (as libbpf does and aya does not, aya#837),
//! every program loaded, and the maps handed out as [`KernelMap`]s.
//!
//! It does not attach programs (that is [`crate::attach`]) and does not operate on map contents
//! (that is [`KernelMap`] and the abi's [`MapOps`]).
//!
//! A loaded object owns its maps and programs: dropping it closes them, so maps that are neither
//! pinned nor referenced elsewhere (a [`KernelMap`] from [`KernelObject::map`], an attached
//! program) disappear.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};
use aya::programs::{Program, ProgramError};
use aya::{Ebpf, EbpfError, EbpfLoader};
use aya_obj::maps::PinningType;
use aya_obj::EbpfSectionKind;
use bpfmaps_abi::{Errno, MapDef, MapOps, MapType};
use object::{Object as _, ObjectSection as _};

use crate::map::{possible_cpus, KernelMap};

/// Where `LIBBPF_PIN_BY_NAME` maps are pinned unless [`LoadConfig::pin_dir`] says otherwise
/// (libbpf's default too).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf";

/// The name of the `const volatile __u32` global bpfmaps' programs use to filter one process
/// (0 means every process).
pub const TARGET_TGID_GLOBAL: &str = "target_tgid";

/// How to load an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadConfig {
    /// Directory of `LIBBPF_PIN_BY_NAME` pins (`DIR/MAP_NAME`); `None` means [`DEFAULT_PIN_DIR`].
    /// It must exist and be on bpffs when the object has pinned maps.
    pub pin_dir: Option<PathBuf>,
    /// Values of `const volatile` globals (in `.rodata`), by symbol name, in the target's byte
    /// order. Each name must exist in the object.
    pub globals: BTreeMap<String, Vec<u8>>,
}

impl LoadConfig {
    /// This configuration with the global `name` set to `bytes`.
    pub fn with_global(mut self, name: &str, bytes: &[u8]) -> LoadConfig {
        self.globals.insert(name.to_owned(), bytes.to_vec());
        self
    }

    /// This configuration with [`TARGET_TGID_GLOBAL`] set to `tgid` (0: every process).
    pub fn with_target_tgid(self, tgid: u32) -> LoadConfig {
        self.with_global(TARGET_TGID_GLOBAL, &tgid.to_ne_bytes())
    }

    /// This configuration with `dir` as the pin directory.
    pub fn with_pin_dir(mut self, dir: impl Into<PathBuf>) -> LoadConfig {
        self.pin_dir = Some(dir.into());
        self
    }

    /// The pin directory in effect.
    pub fn effective_pin_dir(&self) -> &Path {
        self.pin_dir
            .as_deref()
            .unwrap_or_else(|| Path::new(DEFAULT_PIN_DIR))
    }
}

/// Where a map's definition came from in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapDefinitionKind {
    /// A BTF-defined map in `SEC(".maps")`.
    Btf,
    /// A legacy `struct bpf_map_def` in `SEC("maps")`.
    Legacy,
    /// The single-entry ARRAY holding `.data` globals.
    Data,
    /// The frozen single-entry ARRAY holding `.rodata` (`const volatile`) globals.
    Rodata,
    /// The single-entry ARRAY holding `.bss` globals.
    Bss,
}

impl MapDefinitionKind {
    /// True for the maps the loader makes for global variables rather than declared maps.
    pub fn is_global_data(self) -> bool {
        matches!(
            self,
            MapDefinitionKind::Data | MapDefinitionKind::Rodata | MapDefinitionKind::Bss
        )
    }
}

/// One map of a loaded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMap {
    /// The definition the map was created from, after the loader's adjustments (a perf event
    /// array's max_entries 0 becomes the number of possible CPUs, a ring buffer's size is
    /// rounded up to a power-of-two number of pages). `name` is the object's name for the map.
    pub def: MapDef,
    /// Where the definition came from.
    pub kind: MapDefinitionKind,
    /// The pin of a `LIBBPF_PIN_BY_NAME` map (`DIR/NAME`), `None` for other maps.
    pub pin_path: Option<PathBuf>,
    /// True when the map was not created but reused from an existing, compatible pin.
    pub reused_pin: bool,
    /// The kernel's id of the map.
    pub id: u32,
}

/// What kind of program a section holds, as far as bpfmaps loads and attaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    /// `tracepoint/CAT/NAME` or `tp/CAT/NAME`.
    TracePoint,
    /// `raw_tracepoint/NAME` or `raw_tp/NAME`.
    RawTracePoint,
    /// `kprobe/…` / `kretprobe/…` (loaded; this kernel has no kprobes to attach to).
    KProbe,
    /// `uprobe/…` / `uretprobe/…` (loaded, not attached by section name).
    UProbe,
    /// `socket` (loaded, not attached by section name).
    SocketFilter,
    /// `perf_event` (loaded, not attached by section name).
    PerfEvent,
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgramKind::TracePoint => "tracepoint",
            ProgramKind::RawTracePoint => "raw_tracepoint",
            ProgramKind::KProbe => "kprobe",
            ProgramKind::UProbe => "uprobe",
            ProgramKind::SocketFilter => "socket_filter",
            ProgramKind::PerfEvent => "perf_event",
        })
    }
}

/// One program of a loaded object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectProgram {
    /// The program's (function's) name.
    pub name: String,
    /// The ELF section it lives in, e.g. `tracepoint/syscalls/sys_enter_openat`.
    pub section: String,
    /// Its kind.
    pub kind: ProgramKind,
}

pub use bpfmaps_abi::PinnedMapField;

/// Why an object could not be opened, loaded or inspected.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a BPF object bpfmaps can load (bad ELF, bad BTF, bad map definition,
    /// unknown global, …).
    #[error("malformed BPF object: {0}")]
    Malformed(String),
    /// A pin exists for a `LIBBPF_PIN_BY_NAME` map but the pinned map differs from the object's
    /// definition; nothing was loaded.
    #[error(
        "pinned map {map:?} at {} does not match the object's definition: {field} is {found} \
         in the pin, {expected} in the object",
        path.display()
    )]
    PinnedMapMismatch {
        /// The map's name in the object.
        map: String,
        /// The pin.
        path: PathBuf,
        /// The first field that differs (checked in the order type, key size, value size,
        /// max_entries, flags).
        field: PinnedMapField,
        /// The object's value.
        expected: u32,
        /// The pinned map's value.
        found: u32,
    },
    /// A pin exists for a `LIBBPF_PIN_BY_NAME` map but it could not be opened as a map.
    #[error("cannot reuse the pin {} of map {map:?}: {source}", path.display())]
    PinnedMapUnusable {
        /// The map's name in the object.
        map: String,
        /// The pin.
        path: PathBuf,
        /// Why.
        source: crate::Error,
    },
    /// The kernel refused to create a map.
    #[error("creating map {map:?}: {errno}")]
    MapCreate {
        /// The map's name in the object.
        map: String,
        /// The kernel's errno.
        errno: Errno,
    },
    /// The verifier rejected a program.
    #[error("the verifier rejected program {program:?}: {errno}\n{log}")]
    Verifier {
        /// The program's name.
        program: String,
        /// The errno of `BPF_PROG_LOAD`.
        errno: Errno,
        /// The verifier's log.
        log: String,
    },
    /// The object has a program of a kind bpfmaps does not load.
    #[error("program {program:?} in section {section:?} is of a kind bpfmaps does not load")]
    UnsupportedProgram {
        /// The program's name.
        program: String,
        /// Its section.
        section: String,
    },
    /// Loading failed in aya for another reason.
    #[error("loading the object: {0}")]
    Load(#[source] Box<EbpfError>),
    /// A program operation failed in aya.
    #[error("program {program:?}: {source}")]
    Program {
        /// The program's name.
        program: String,
        /// aya's error.
        source: Box<ProgramError>,
    },
    /// The object has no map of this name.
    #[error("the object has no map named {0:?}")]
    NoSuchMap(String),
    /// A kernel-engine operation (dup, map info, pin) failed.
    #[error(transparent)]
    Kernel(#[from] crate::Error),
}

/// A BPF object loaded into the kernel: its maps created (or reused from pins) and every
/// program loaded, nothing attached yet.
pub struct KernelObject {
    ebpf: Ebpf,
    maps: BTreeMap<String, ObjectMap>,
    programs: BTreeMap<String, ObjectProgram>,
}

impl fmt::Debug for KernelObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelObject")
            .field("maps", &self.maps)
            .field("programs", &self.programs)
            .finish_non_exhaustive()
    }
}

impl KernelObject {
    /// Reads the object file at `path` and loads it (see [`KernelObject::load_bytes`]).
    pub fn load_file(path: &Path, config: &LoadConfig) -> Result<KernelObject, ObjectError> {
        let bytes = std::fs::read(path).map_err(|source| ObjectError::Read {
            path: path.to_owned(),
            source,
        })?;
        KernelObject::load_bytes(&bytes, config)
    }

    /// Loads the object in `bytes`: sets the globals of `config`, checks existing pins of
    /// `LIBBPF_PIN_BY_NAME` maps against their definitions, creates (or reuses) every map, and
    /// loads every program.
    ///
    /// The pin check and aya's reuse of the pin are two steps: a pin replaced in between by an
    /// incompatible map is not detected.
    pub fn load_bytes(bytes: &[u8], config: &LoadConfig) -> Result<KernelObject, ObjectError> {
        // ELF parsing reads structures in place and wants 8-byte alignment, which a caller's
        // slice need not have: copy into u64-aligned storage.
        let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
        let aligned_bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut aligned);
        aligned_bytes[..bytes.len()].copy_from_slice(bytes);
        let bytes: &[u8] = &aligned_bytes[..bytes.len()];

        let parsed =
            aya_obj::Object::parse(bytes).map_err(|e| ObjectError::Malformed(e.to_string()))?;
        let elf = object::File::parse(bytes).map_err(|e| ObjectError::Malformed(e.to_string()))?;
        let pin_dir = config.effective_pin_dir();
        let cpus = possible_cpus()?;

        let mut maps = BTreeMap::new();
        for (name, map) in &parsed.maps {
            let kind = match map.section_kind() {
                EbpfSectionKind::BtfMaps => MapDefinitionKind::Btf,
                EbpfSectionKind::Maps => MapDefinitionKind::Legacy,
                EbpfSectionKind::Data => MapDefinitionKind::Data,
                EbpfSectionKind::Rodata => MapDefinitionKind::Rodata,
                EbpfSectionKind::Bss => MapDefinitionKind::Bss,
                other => {
                    return Err(ObjectError::Malformed(format!(
                        "map {name:?} lives in an unexpected section kind {other:?}"
                    )))
                }
            };
            let def = effective_def(name, map, cpus)?;
            let pin_path = match map.pinning() {
                PinningType::ByName => Some(pin_dir.join(name)),
                PinningType::None => None,
            };
            let reused_pin = match &pin_path {
                Some(path) if path.exists() => {
                    check_pinned(name, path, &def)?;
                    true
                }
                _ => false,
            };
            maps.insert(
                name.clone(),
                ObjectMap {
                    def,
                    kind,
                    pin_path,
                    reused_pin,
                    id: 0,
                },
            );
        }

        let mut programs = BTreeMap::new();
        for (name, program) in &parsed.programs {
            let section = elf
                .section_by_index(object::SectionIndex(program.section_index))
                .and_then(|s| s.name().map(str::to_owned))
                .map_err(|e| ObjectError::Malformed(e.to_string()))?;
            programs.insert(name.clone(), section);
        }

        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for (name, value) in &config.globals {
            loader.override_global(name.as_str(), value.as_slice(), true);
        }
        let mut ebpf = loader.load(bytes).map_err(classify_load_error)?;

        for (name, entry) in maps.iter_mut() {
            let map = ebpf
                .map(name)
                .ok_or_else(|| ObjectError::NoSuchMap(name.clone()))?;
            entry.id = KernelMap::from_fd(dup_map_fd(map)?)?.id();
        }

        let mut described = BTreeMap::new();
        let mut names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
        names.sort();
        for name in names {
            let section = programs.get(&name).cloned().unwrap_or_default();
            let Some(program) = ebpf.program_mut(&name) else {
                continue;
            };
            let kind = load_program(&name, &section, program)?;
            described.insert(
                name.clone(),
                ObjectProgram {
                    name,
                    section,
                    kind,
                },
            );
        }

        Ok(KernelObject {
            ebpf,
            maps,
            programs: described,
        })
    }

    /// Every map of the object (declared maps and global-data maps), by name.
    pub fn maps(&self) -> impl Iterator<Item = &ObjectMap> {
        self.maps.values()
    }

    /// The declared maps only (BTF and legacy definitions), without global-data maps.
    pub fn declared_maps(&self) -> impl Iterator<Item = &ObjectMap> {
        self.maps.values().filter(|m| !m.kind.is_global_data())
    }

    /// The map named `name`, if the object has one.
    pub fn map_description(&self, name: &str) -> Option<&ObjectMap> {
        self.maps.get(name)
    }

    /// A new fd (a `dup` of the object's) of the map named `name`. It keeps the map alive after
    /// the object is dropped.
    pub fn map_fd(&self, name: &str) -> Result<OwnedFd, ObjectError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| ObjectError::NoSuchMap(name.to_owned()))?;
        dup_map_fd(map)
    }

    /// The map named `name` as a [`KernelMap`] (over its own `dup`ed fd).
    pub fn map(&self, name: &str) -> Result<KernelMap, ObjectError> {
        Ok(KernelMap::from_fd(self.map_fd(name)?)?)
    }

    /// Every program of the object, by name.
    pub fn programs(&self) -> impl Iterator<Item = &ObjectProgram> {
        self.programs.values()
    }

    /// The program named `name`, if the object has one.
    pub fn program(&self, name: &str) -> Option<&ObjectProgram> {
        self.programs.get(name)
    }

    /// Pins every declared map at `dir/NAME` (`dir` must exist on bpffs) and returns the paths.
    /// Maps that already have their pin there (reused or created `LIBBPF_PIN_BY_NAME` maps) are
    /// left as they are. Global-data maps are not pinned.
    pub fn pin_maps(&self, dir: &Path) -> Result<Vec<PathBuf>, ObjectError> {
        let mut paths = Vec::new();
        for map in self.declared_maps() {
            let path = dir.join(&map.def.name);
            if map.pin_path.as_deref() != Some(path.as_path()) {
                self.map(&map.def.name)?.pin(&path)?;
            }
            paths.push(path);
        }
        Ok(paths)
    }

    /// The aya object, for what this type does not cover (attachment uses it).
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// The definition a map is created with, after the adjustments aya (like libbpf) makes.
fn effective_def(name: &str, map: &aya_obj::Map, cpus: u32) -> Result<MapDef, ObjectError> {
    let map_type = MapType::from_u32(map.map_type()).ok_or_else(|| {
        ObjectError::Malformed(format!("map {name:?} has unknown type {}", map.map_type()))
    })?;
    let mut def = MapDef::new(
        map_type,
        map.key_size(),
        map.value_size(),
        map.max_entries(),
        map.map_flags(),
        name,
    );
    def.max_entries = def.creation_max_entries(cpus);
    if map_type == MapType::Ringbuf {
        def.value_size = 0;
        let page = u32::try_from(crate::sys::page_size()).unwrap_or(4096);
        def.max_entries = ringbuf_size(def.max_entries, page);
    }
    Ok(def)
}

/// A ring buffer's size rounded up to a power-of-two number of pages, as libbpf and aya do
/// (0 stays 0 for the kernel to reject).
fn ringbuf_size(declared: u32, page: u32) -> u32 {
    if declared == 0 || page == 0 {
        return declared;
    }
    let pages = declared.div_ceil(page).checked_next_power_of_two();
    pages.and_then(|p| p.checked_mul(page)).unwrap_or(declared)
}

/// Checks the map pinned at `path` against `def` the way libbpf's `map_is_reuse_compat` does.
fn check_pinned(name: &str, path: &Path, def: &MapDef) -> Result<(), ObjectError> {
    let pinned = KernelMap::from_pinned(path).map_err(|source| ObjectError::PinnedMapUnusable {
        map: name.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    if let Some((field, expected, found)) = def.reuse_mismatch(&pinned.info()) {
        return Err(ObjectError::PinnedMapMismatch {
            map: name.to_owned(),
            path: path.to_owned(),
            field,
            expected,
            found,
        });
    }
    Ok(())
}

/// Turns aya's load error into ours, naming map-creation errnos.
fn classify_load_error(error: EbpfError) -> ObjectError {
    match error {
        EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error }) => {
            ObjectError::MapCreate {
                map: name,
                errno: Errno(io_error.raw_os_error().unwrap_or(0)),
            }
        }
        EbpfError::ParseError(e) => ObjectError::Malformed(e.to_string()),
        EbpfError::BtfError(e) => ObjectError::Malformed(e.to_string()),
        other => ObjectError::Load(Box::new(other)),
    }
}

/// Loads one program and says what kind it is.
fn load_program(
    name: &str,
    section: &str,
    program: &mut Program,
) -> Result<ProgramKind, ObjectError> {
    let (kind, result) = match program {
        Program::TracePoint(p) => (ProgramKind::TracePoint, p.load()),
        Program::RawTracePoint(p) => (ProgramKind::RawTracePoint, p.load()),
        Program::KProbe(p) => (ProgramKind::KProbe, p.load()),
        Program::UProbe(p) => (ProgramKind::UProbe, p.load()),
        Program::SocketFilter(p) => (ProgramKind::SocketFilter, p.load()),
        Program::PerfEvent(p) => (ProgramKind::PerfEvent, p.load()),
        _ => {
            return Err(ObjectError::UnsupportedProgram {
                program: name.to_owned(),
                section: section.to_owned(),
            })
        }
    };
    match result {
        Ok(()) => Ok(kind),
        Err(ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => Err(ObjectError::Verifier {
            program: name.to_owned(),
            errno: Errno(io_error.raw_os_error().unwrap_or(0)),
            log: verifier_log.to_string(),
        }),
        Err(source) => Err(ObjectError::Program {
            program: name.to_owned(),
            source: Box::new(source),
        }),
    }
}

/// The aya map data behind any map variant.
fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(m)
        | Map::ArrayOfMaps(m)
        | Map::BloomFilter(m)
        | Map::CgroupArray(m)
        | Map::CgroupStorage(m)
        | Map::CgrpStorage(m)
        | Map::CpuMap(m)
        | Map::DevMap(m)
        | Map::DevMapHash(m)
        | Map::HashMap(m)
        | Map::HashOfMaps(m)
        | Map::InodeStorage(m)
        | Map::LpmTrie(m)
        | Map::LruHashMap(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuCgroupStorage(m)
        | Map::PerCpuHashMap(m)
        | Map::PerCpuLruHashMap(m)
        | Map::PerfEventArray(m)
        | Map::ProgramArray(m)
        | Map::Queue(m)
        | Map::ReusePortSockArray(m)
        | Map::RingBuf(m)
        | Map::SockHash(m)
        | Map::SockMap(m)
        | Map::SkStorage(m)
        | Map::Stack(m)
        | Map::StackTraceMap(m)
        | Map::Unsupported(m)
        | Map::XskMap(m) => m,
    }
}

/// A `dup` of the fd behind `map`.
fn dup_map_fd(map: &Map) -> Result<OwnedFd, ObjectError> {
    map_data(map)
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| {
            ObjectError::Kernel(crate::Error::Sys(crate::sys::SysError {
                call: "dup",
                errno: Errno(e.raw_os_error().unwrap_or(0)),
            }))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ringbuf_sizes_round_to_power_of_two_pages() {
        assert_eq!(ringbuf_size(0, 4096), 0);
        assert_eq!(ringbuf_size(1, 4096), 4096);
        assert_eq!(ringbuf_size(4096, 4096), 4096);
        assert_eq!(ringbuf_size(4097, 4096), 8192);
        assert_eq!(ringbuf_size(12288, 4096), 16384);
    }

    #[test]
    fn garbage_is_a_malformed_object() {
        let err = KernelObject::load_bytes(b"not an elf file", &LoadConfig::default()).unwrap_err();
        assert!(matches!(err, ObjectError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn target_tgid_config_sets_the_global() {
        let config = LoadConfig::default()
            .with_target_tgid(42)
            .with_pin_dir("/sys/fs/bpf/x");
        assert_eq!(
            config.globals.get(TARGET_TGID_GLOBAL),
            Some(&42u32.to_ne_bytes().to_vec())
        );
        assert_eq!(config.effective_pin_dir(), Path::new("/sys/fs/bpf/x"));
        assert_eq!(
            LoadConfig::default().effective_pin_dir(),
            Path::new(DEFAULT_PIN_DIR)
        );
    }
}
