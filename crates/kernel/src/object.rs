//! [`KernelObject`]: a libbpf-style BPF object file (clang `-target bpf` output) loaded into the
//! kernel the way libbpf loads it, from `bpfmaps_obj`'s [`ObjectSpec`] through bpfmaps' own
//! bpf(2) layer ([`crate::sys`]):
//!
//! 1. the object's `.BTF`, with `DATASEC` sizes and `VAR` offsets fixed up from the ELF
//!    ([`ObjectSpec::kernel_btf`]), loaded with `BPF_BTF_LOAD` (a kernel that refuses it gets
//!    no BTF, as libbpf falls back, and the warning goes to the `log` crate);
//! 2. every map created in the object's order with `btf_fd` and its key/value type ids (none
//!    for the map types libbpf creates without them), global-data maps named the libbpf way
//!    (`<obj>.rodata`), their initial value written and `.rodata` frozen;
//!    `LIBBPF_PIN_BY_NAME` maps reused from their pins only after libbpf's compatibility check
//!    (type, key/value size, max_entries, flags), or pinned after creation;
//! 3. every program loaded with its map references patched from `BPF_PSEUDO_MAP_IDX(_VALUE)`
//!    to `BPF_PSEUDO_MAP_FD` / `BPF_PSEUDO_MAP_VALUE`, `prog_btf_fd`, func and line info,
//!    the license, `expected_attach_type`, and `attach_btf_id` for `tp_btf/`, `fentry/`,
//!    `fexit/` and `lsm/` (looked up in the running kernel's BTF). A verifier rejection
//!    carries the verifier's log.
//!
//! It does not attach programs (that is [`crate::attach`]) and does not operate on map contents
//! (that is [`KernelMap`] and the abi's [`MapOps`]).
//!
//! A loaded object owns its BTF, maps and programs: dropping it closes them, so maps that are
//! neither pinned nor referenced elsewhere (a [`KernelMap`] from [`KernelObject::map`], an
//! attached program) disappear.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use bpfmaps_abi::insn::{pseudo, RawInsn};
use bpfmaps_abi::{Errno, MapDef, MapOps, MapType};
use bpfmaps_obj::{MapKind, MapSpec, ObjectSpec, ProgramSpec};

use crate::btf::{vmlinux_type_id, BTF_KIND_FUNC, BTF_KIND_TYPEDEF};
use crate::map::{possible_cpus, KernelMap};
use crate::sys;

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
    /// The object's name for global-data map names (`<name>.rodata`) when loading from bytes
    /// ([`KernelObject::load_bytes`]); a file's name comes from its path. `None`: `bpf`.
    pub object_name: Option<String>,
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
    /// `perf_event` (attached to a sampling software event on every CPU).
    PerfEvent,
    /// `tp_btf/NAME`: a BTF-enabled raw tracepoint (`BPF_PROG_TYPE_TRACING`,
    /// `BPF_TRACE_RAW_TP`).
    TpBtf,
    /// `fentry/FUNC`, `fexit/FUNC` (`BPF_PROG_TYPE_TRACING` on a BPF trampoline).
    Trampoline,
    /// `lsm/HOOK` (`BPF_PROG_TYPE_LSM`).
    Lsm,
    /// Another program type the kernel loads (xdp, classifier, cgroup_skb, ...): loaded, never
    /// attached by bpfmaps.
    Other,
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
            ProgramKind::TpBtf => "tp_btf",
            ProgramKind::Trampoline => "tracing",
            ProgramKind::Lsm => "lsm",
            ProgramKind::Other => "other",
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
    /// The kernel's id of the loaded program.
    pub id: u32,
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
    /// Writing a global-data map's initial value, freezing it or pinning a map failed.
    #[error("setting up map {map:?}: {source}")]
    MapSetup {
        /// The map's name in the object.
        map: String,
        /// The failed call.
        source: crate::Error,
    },
    /// The verifier rejected a program (or `BPF_PROG_LOAD` failed otherwise).
    #[error("the verifier rejected program {program:?}: {errno}\n{log}")]
    Verifier {
        /// The program's name.
        program: String,
        /// The errno of `BPF_PROG_LOAD`.
        errno: Errno,
        /// The verifier's log, decoded lossily (never a panic on bytes that are not UTF-8).
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
    /// A `tp_btf/`, `fentry/`, `fexit/` or `lsm/` program's target is not in the running
    /// kernel's BTF.
    #[error(
        "program {program:?} in section {section:?}: the kernel's BTF has no {target} \
         (no such tracepoint or function on this kernel; `--skip {program}` loads the rest)"
    )]
    NoAttachTarget {
        /// The program's name.
        program: String,
        /// Its section.
        section: String,
        /// The BTF type looked up (`btf_trace_sched_switch`, `do_unlinkat`).
        target: String,
    },
    /// The kernel refused an `fentry`/`fexit` program: it has no BPF trampolines for it (this
    /// project's kernels refuse them with `EPERM`, libbpf's loads too).
    #[error(
        "program {program:?} in section {section:?}: this kernel refuses fentry/fexit programs \
         ({errno}: no BPF trampolines here, libbpf gets the same); use a tp_btf or raw_tp \
         program instead, or `--skip {program}` to load the rest"
    )]
    TrampolineRefused {
        /// The program's name.
        program: String,
        /// Its section.
        section: String,
        /// The errno of `BPF_PROG_LOAD`.
        errno: Errno,
    },
    /// The object has no map of this name.
    #[error("the object has no map named {0:?}")]
    NoSuchMap(String),
    /// A kernel-engine operation (dup, map info, pin) failed.
    #[error(transparent)]
    Kernel(#[from] crate::Error),
}

/// A BPF object loaded into the kernel: its BTF loaded, its maps created (or reused from pins)
/// and every program loaded, nothing attached yet.
pub struct KernelObject {
    btf: Option<OwnedFd>,
    /// By the map's kernel name (`def.name`).
    maps: BTreeMap<String, LoadedMap>,
    programs: BTreeMap<String, LoadedProgram>,
}

struct LoadedMap {
    desc: ObjectMap,
    /// The object's full name for the map (the pin name).
    full_name: String,
    fd: OwnedFd,
}

struct LoadedProgram {
    desc: ObjectProgram,
    fd: OwnedFd,
}

impl fmt::Debug for KernelObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelObject")
            .field("btf", &self.btf.is_some())
            .field(
                "maps",
                &self.maps.values().map(|m| &m.desc).collect::<Vec<_>>(),
            )
            .field(
                "programs",
                &self.programs.values().map(|p| &p.desc).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// The default object name for [`KernelObject::load_bytes`].
const DEFAULT_OBJECT_NAME: &str = "bpf";

impl KernelObject {
    /// Reads the object file at `path` and loads it (see [`KernelObject::load_spec`]); the
    /// object's name (for `<obj>.rodata`) is the file name up to its first `.`, as libbpf takes
    /// it.
    pub fn load_file(path: &Path, config: &LoadConfig) -> Result<KernelObject, ObjectError> {
        let bytes = std::fs::read(path).map_err(|source| ObjectError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = bpfmaps_obj::object_name_from_path(path);
        let spec =
            ObjectSpec::parse(&bytes, &name).map_err(|e| ObjectError::Malformed(e.to_string()))?;
        KernelObject::load_spec(&spec, config)
    }

    /// Parses and loads the object in `bytes` (named [`LoadConfig::object_name`]).
    pub fn load_bytes(bytes: &[u8], config: &LoadConfig) -> Result<KernelObject, ObjectError> {
        let name = config.object_name.as_deref().unwrap_or(DEFAULT_OBJECT_NAME);
        let spec =
            ObjectSpec::parse(bytes, name).map_err(|e| ObjectError::Malformed(e.to_string()))?;
        KernelObject::load_spec(&spec, config)
    }

    /// Loads a parsed object: sets the globals of `config`, checks existing pins of
    /// `LIBBPF_PIN_BY_NAME` maps against their definitions (before anything is created),
    /// loads the BTF, creates (or reuses) every map, and loads every program of `spec` (a
    /// program removed from `spec.programs` is not loaded: libbpf's autoload off).
    ///
    /// The pin check and the reuse of the pin are two steps: a pin replaced in between by an
    /// incompatible map is not detected.
    pub fn load_spec(spec: &ObjectSpec, config: &LoadConfig) -> Result<KernelObject, ObjectError> {
        let mut spec = spec.clone();
        for (name, value) in &config.globals {
            spec.set_global(name, value)
                .map_err(|e| ObjectError::Malformed(e.to_string()))?;
        }
        prepare_externs_and_core(&mut spec)?;
        let pin_dir = config.effective_pin_dir();
        let cpus = possible_cpus()?;

        // Every pin is checked before anything is created, so a mismatch loads nothing.
        let mut plans = Vec::with_capacity(spec.maps.len());
        for map in &spec.maps {
            let def = effective_def(map, cpus);
            let pin_path = map.pin_path(pin_dir);
            let reuse = match &pin_path {
                Some(path) if path.exists() => Some(check_pinned(&map.name, path, &def)?),
                _ => None,
            };
            plans.push((def, pin_path, reuse));
        }

        let btf = match &spec.kernel_btf {
            Some(blob) => match sys::btf_load(blob) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    log::warn!("the kernel refused the object's BTF, loading without it: {e}");
                    None
                }
            },
            None => None,
        };

        let mut maps = BTreeMap::new();
        let mut fds_by_index: Vec<i32> = Vec::with_capacity(spec.maps.len());
        for (map, (def, pin_path, reuse)) in spec.maps.iter().zip(plans) {
            let reused_pin = reuse.is_some();
            let fd = match reuse {
                Some(pinned) => pinned.into_fd(),
                None => create_map(map, &def, btf.as_ref().map(|b| b.as_fd()))?,
            };
            if !reused_pin {
                populate_data_map(map, fd.as_fd())?;
                if let Some(path) = &pin_path {
                    sys::obj_pin(fd.as_fd(), path).map_err(|e| ObjectError::MapSetup {
                        map: map.name.clone(),
                        source: e.into(),
                    })?;
                }
            }
            fds_by_index.push(std::os::fd::AsRawFd::as_raw_fd(&fd));
            let id = sys::map_info(fd.as_fd())
                .map_err(|e| ObjectError::Kernel(e.into()))?
                .id;
            maps.insert(
                def.name.clone(),
                LoadedMap {
                    desc: ObjectMap {
                        def,
                        kind: definition_kind(map.kind),
                        pin_path,
                        reused_pin,
                        id,
                    },
                    full_name: map.name.clone(),
                    fd,
                },
            );
        }

        let mut programs = BTreeMap::new();
        for program in &spec.programs {
            let loaded = load_program(&spec, program, &fds_by_index, btf.as_ref())?;
            programs.insert(program.name.clone(), loaded);
        }

        Ok(KernelObject {
            btf,
            maps,
            programs,
        })
    }

    /// Every map of the object (declared maps and global-data maps), by name.
    pub fn maps(&self) -> impl Iterator<Item = &ObjectMap> {
        self.maps.values().map(|m| &m.desc)
    }

    /// The declared maps only (BTF and legacy definitions), without global-data maps.
    pub fn declared_maps(&self) -> impl Iterator<Item = &ObjectMap> {
        self.maps().filter(|m| !m.kind.is_global_data())
    }

    fn loaded_map(&self, name: &str) -> Option<&LoadedMap> {
        self.maps
            .get(name)
            .or_else(|| self.maps.values().find(|m| m.full_name == name))
    }

    /// The map named `name` (its kernel name, or the object's full name), if the object has one.
    pub fn map_description(&self, name: &str) -> Option<&ObjectMap> {
        self.loaded_map(name).map(|m| &m.desc)
    }

    /// A new fd (a `dup` of the object's) of the map named `name`. It keeps the map alive after
    /// the object is dropped.
    pub fn map_fd(&self, name: &str) -> Result<OwnedFd, ObjectError> {
        let map = self
            .loaded_map(name)
            .ok_or_else(|| ObjectError::NoSuchMap(name.to_owned()))?;
        dup(map.fd.as_fd())
    }

    /// The map named `name` as a [`KernelMap`] (over its own `dup`ed fd).
    pub fn map(&self, name: &str) -> Result<KernelMap, ObjectError> {
        Ok(KernelMap::from_fd(self.map_fd(name)?)?)
    }

    /// Every program of the object, by name.
    pub fn programs(&self) -> impl Iterator<Item = &ObjectProgram> {
        self.programs.values().map(|p| &p.desc)
    }

    /// The program named `name`, if the object has one.
    pub fn program(&self, name: &str) -> Option<&ObjectProgram> {
        self.programs.get(name).map(|p| &p.desc)
    }

    /// The fd of the loaded program `name` (for `BPF_PROG_TEST_RUN`, attaching, info).
    pub fn program_fd(&self, name: &str) -> Option<BorrowedFd<'_>> {
        self.programs.get(name).map(|p| p.fd.as_fd())
    }

    /// The fd of the object's BTF in the kernel, `None` when it has none (or the kernel refused
    /// it).
    pub fn btf_fd(&self) -> Option<BorrowedFd<'_>> {
        self.btf.as_ref().map(|b| b.as_fd())
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
}

fn definition_kind(kind: MapKind) -> MapDefinitionKind {
    match kind {
        MapKind::Btf => MapDefinitionKind::Btf,
        MapKind::Legacy => MapDefinitionKind::Legacy,
        MapKind::Data => MapDefinitionKind::Data,
        MapKind::Rodata => MapDefinitionKind::Rodata,
        MapKind::Bss => MapDefinitionKind::Bss,
        MapKind::Kconfig => MapDefinitionKind::Rodata,
    }
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, ObjectError> {
    fd.try_clone_to_owned().map_err(|e| {
        ObjectError::Kernel(crate::Error::Sys(sys::SysError {
            call: "dup",
            errno: Errno(e.raw_os_error().unwrap_or(0)),
        }))
    })
}

/// The definition a map is created with, after the adjustments libbpf makes: a perf event
/// array without max_entries gets one per possible CPU, a ring buffer's size is rounded up to
/// a power-of-two number of pages.
fn effective_def(map: &MapSpec, cpus: u32) -> MapDef {
    let mut def = map.creation_def(cpus);
    if def.map_type == MapType::Ringbuf {
        def.value_size = 0;
        let page = u32::try_from(sys::page_size()).unwrap_or(4096);
        def.max_entries = ringbuf_size(def.max_entries, page);
    }
    def
}

/// A ring buffer's size rounded up to a power-of-two number of pages, as libbpf does (0 stays
/// 0 for the kernel to reject).
fn ringbuf_size(declared: u32, page: u32) -> u32 {
    if declared == 0 || page == 0 {
        return declared;
    }
    let pages = declared.div_ceil(page).checked_next_power_of_two();
    pages.and_then(|p| p.checked_mul(page)).unwrap_or(declared)
}

/// Checks the map pinned at `path` against `def` the way libbpf's `map_is_reuse_compat` does,
/// and returns it for reuse.
fn check_pinned(name: &str, path: &Path, def: &MapDef) -> Result<KernelMap, ObjectError> {
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
    Ok(pinned)
}

/// True for the map types libbpf creates without BTF key/value ids (their values are fds,
/// ids or raw samples the kernel does not describe by type).
fn takes_no_btf_types(map_type: MapType) -> bool {
    matches!(
        map_type,
        MapType::PerfEventArray
            | MapType::CgroupArray
            | MapType::StackTrace
            | MapType::ArrayOfMaps
            | MapType::HashOfMaps
            | MapType::Devmap
            | MapType::DevmapHash
            | MapType::Cpumap
            | MapType::Xskmap
            | MapType::Sockmap
            | MapType::Sockhash
            | MapType::Queue
            | MapType::Stack
            | MapType::Ringbuf
            | MapType::UserRingbuf
    )
}

/// Creates one map: with the object's BTF and the definition's key/value type ids where libbpf
/// gives them (a data section's value type is its `DATASEC`), retried without BTF when the
/// kernel refuses the map with them, as libbpf retries. A map-in-map gets a temporary inner map
/// made from its inner definition.
fn create_map(
    map: &MapSpec,
    def: &MapDef,
    btf: Option<BorrowedFd<'_>>,
) -> Result<OwnedFd, ObjectError> {
    let create_error = |errno| ObjectError::MapCreate {
        map: map.name.clone(),
        errno,
    };
    let inner = match &map.inner {
        Some(inner_def) => Some(
            sys::map_create(&sys::MapCreate {
                map_type: inner_def.map_type.as_u32(),
                key_size: inner_def.key_size,
                value_size: inner_def.value_size,
                max_entries: inner_def.max_entries,
                map_flags: inner_def.map_flags,
                name: &inner_def.name,
                ..Default::default()
            })
            .map_err(|e| create_error(e.errno))?,
        ),
        None => None,
    };
    let (key_id, value_id) = if btf.is_none() || takes_no_btf_types(def.map_type) {
        (0, 0)
    } else {
        (
            map.key_type.as_ref().map_or(0, |t| t.id),
            map.value_type.as_ref().map_or(0, |t| t.id),
        )
    };
    let params = sys::MapCreate {
        map_type: def.map_type.as_u32(),
        key_size: def.key_size,
        value_size: def.value_size,
        max_entries: def.max_entries,
        map_flags: def.map_flags,
        name: &def.name,
        map_extra: map.map_extra,
        btf_fd: if value_id != 0 { btf } else { None },
        btf_key_type_id: if value_id != 0 { key_id } else { 0 },
        btf_value_type_id: value_id,
        inner_map_fd: inner.as_ref().map(|f| f.as_fd()),
    };
    match sys::map_create(&params) {
        Ok(fd) => Ok(fd),
        Err(first) if params.btf_value_type_id != 0 => {
            let plain = sys::MapCreate {
                btf_fd: None,
                btf_key_type_id: 0,
                btf_value_type_id: 0,
                ..params
            };
            sys::map_create(&plain).map_err(|_| create_error(first.errno))
        }
        Err(e) => Err(create_error(e.errno)),
    }
}

/// Writes a data section's initial value into element 0 and freezes `.rodata`, as libbpf does
/// right after creating the map.
fn populate_data_map(map: &MapSpec, fd: BorrowedFd<'_>) -> Result<(), ObjectError> {
    let Some(value) = &map.initial_value else {
        return Ok(());
    };
    let setup_error = |e: sys::SysError| ObjectError::MapSetup {
        map: map.name.clone(),
        source: e.into(),
    };
    sys::map_update_elem(fd, &0u32.to_ne_bytes(), value, 0).map_err(setup_error)?;
    if map.frozen {
        sys::map_freeze(fd).map_err(setup_error)?;
    }
    Ok(())
}

/// `BPF_TRACE_RAW_TP`, `BPF_TRACE_FENTRY`, `BPF_TRACE_FEXIT`, `BPF_LSM_MAC`.
const BPF_TRACE_RAW_TP: u32 = 23;
const BPF_TRACE_FENTRY: u32 = 24;
const BPF_TRACE_FEXIT: u32 = 25;
const BPF_LSM_MAC: u32 = 27;

/// The kind bpfmaps gives a section, and for tracing programs the expected attach type and
/// the kernel BTF type (name, kind) to attach to.
fn classify(section: &str) -> (ProgramKind, Option<(u32, String, u32)>) {
    let (prefix, rest) = section.split_once('/').unwrap_or((section, ""));
    match prefix {
        "tracepoint" | "tp" => (ProgramKind::TracePoint, None),
        "raw_tracepoint" | "raw_tp" => (ProgramKind::RawTracePoint, None),
        "kprobe" | "kretprobe" => (ProgramKind::KProbe, None),
        "uprobe" | "uretprobe" | "uprobe.s" | "uretprobe.s" => (ProgramKind::UProbe, None),
        "socket" => (ProgramKind::SocketFilter, None),
        "perf_event" => (ProgramKind::PerfEvent, None),
        "tp_btf" => (
            ProgramKind::TpBtf,
            Some((
                BPF_TRACE_RAW_TP,
                format!("btf_trace_{rest}"),
                BTF_KIND_TYPEDEF,
            )),
        ),
        "fentry" | "fentry.s" => (
            ProgramKind::Trampoline,
            Some((BPF_TRACE_FENTRY, rest.to_owned(), BTF_KIND_FUNC)),
        ),
        "fexit" | "fexit.s" => (
            ProgramKind::Trampoline,
            Some((BPF_TRACE_FEXIT, rest.to_owned(), BTF_KIND_FUNC)),
        ),
        "lsm" | "lsm.s" => (
            ProgramKind::Lsm,
            Some((BPF_LSM_MAC, format!("bpf_lsm_{rest}"), BTF_KIND_FUNC)),
        ),
        _ => (ProgramKind::Other, None),
    }
}

/// The program's instructions with every map reference patched to the created maps' fds:
/// `BPF_PSEUDO_MAP_IDX` → `BPF_PSEUDO_MAP_FD`, `BPF_PSEUDO_MAP_IDX_VALUE` →
/// `BPF_PSEUDO_MAP_VALUE` (the value offset stays in the second slot).
fn patched_bytecode(program: &ProgramSpec, fds: &[i32]) -> Result<Vec<u8>, ObjectError> {
    let mut insns: Vec<RawInsn> = program.instructions.clone();
    for reference in &program.map_references {
        let fd = *fds.get(reference.map_index).ok_or_else(|| {
            ObjectError::Malformed(format!(
                "program {:?} refers to map index {}, the object has {} maps",
                program.name,
                reference.map_index,
                fds.len()
            ))
        })?;
        let insn = insns.get_mut(reference.insn_index).ok_or_else(|| {
            ObjectError::Malformed(format!(
                "program {:?}: map reference at instruction {} past the end",
                program.name, reference.insn_index
            ))
        })?;
        insn.src = match insn.src {
            pseudo::MAP_IDX => pseudo::MAP_FD,
            pseudo::MAP_IDX_VALUE => pseudo::MAP_VALUE,
            other => other,
        };
        insn.imm = fd;
    }
    Ok(insns.iter().flat_map(|i| i.to_bytes()).collect())
}

/// Loads one program.
fn load_program(
    spec: &ObjectSpec,
    program: &ProgramSpec,
    fds: &[i32],
    btf: Option<&OwnedFd>,
) -> Result<LoadedProgram, ObjectError> {
    let (kind, tracing) = classify(&program.section);
    let prog_type = program.kind.prog_type();
    if prog_type == 0 {
        return Err(ObjectError::UnsupportedProgram {
            program: program.name.clone(),
            section: program.section.clone(),
        });
    }
    let (expected_attach_type, attach_btf_id) = match tracing {
        Some((attach_type, target, btf_kind)) => {
            let id =
                vmlinux_type_id(&target, btf_kind)?.ok_or_else(|| ObjectError::NoAttachTarget {
                    program: program.name.clone(),
                    section: program.section.clone(),
                    target: target.clone(),
                })?;
            (attach_type, id)
        }
        None => (0, 0),
    };
    let bytecode = patched_bytecode(program, fds)?;
    let fd = sys::prog_load(&sys::ProgLoad {
        prog_type,
        expected_attach_type,
        insns: &bytecode,
        license: &spec.license,
        name: &program.name,
        kern_version: spec.kernel_version.unwrap_or(0),
        btf_fd: btf.map(|b| b.as_fd()),
        func_info: &program.func_info,
        func_info_rec_size: program.func_info_rec_size,
        line_info: &program.line_info,
        line_info_rec_size: program.line_info_rec_size,
        attach_btf_id,
    })
    .map_err(|e| {
        if kind == ProgramKind::Trampoline && e.errno == Errno::EPERM {
            ObjectError::TrampolineRefused {
                program: program.name.clone(),
                section: program.section.clone(),
                errno: e.errno,
            }
        } else {
            ObjectError::Verifier {
                program: program.name.clone(),
                errno: e.errno,
                log: e.log,
            }
        }
    })?;
    let (info, _, _) = sys::prog_info(fd.as_fd()).map_err(|e| ObjectError::Kernel(e.into()))?;
    Ok(LoadedProgram {
        desc: ObjectProgram {
            name: program.name.clone(),
            section: program.section.clone(),
            kind,
            id: info.id,
        },
        fd,
    })
}

/// Applies what libbpf applies before creating anything: CO-RE relocations against the running
/// kernel's BTF, `.kconfig` values from this system, and `.ksyms` externs. Kernel symbols are not
/// resolved to BTF ids yet: every weak ksym is taken as absent (a strong one refuses the object),
/// see `docs/limits.md`.
fn prepare_externs_and_core(spec: &mut ObjectSpec) -> Result<(), ObjectError> {
    let malformed =
        |what: &str, e: bpfmaps_obj::ObjError| ObjectError::Malformed(format!("{what}: {e}"));
    if spec.needs_core() {
        let target = bpfmaps_obj::TargetBtf::from_kernel()
            .map_err(|e| malformed("reading the kernel BTF", e))?;
        spec.relocate_core(&target)
            .map_err(|e| malformed("CO-RE relocation", e))?;
    }
    if spec.needs_kconfig() {
        let config = bpfmaps_obj::KernelConfig::from_system(spec.needs_kernel_config())
            .map_err(|e| malformed("reading the kernel configuration", e))?;
        spec.fill_kconfig(&config)
            .map_err(|e| malformed("filling .kconfig externs", e))?;
    }
    spec.resolve_ksyms_absent()
        .map_err(|e| malformed("resolving .ksyms externs", e))
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
