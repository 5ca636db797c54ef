//! The user engine's loader: an [`ObjectSpec`] becomes a [`UserObject`] — every map created in
//! shared memory (or reused from a compatible `LIBBPF_PIN_BY_NAME` pin), data sections written
//! and `.rodata` frozen, every program checked by the VM into an [`Executable`] with its `lddw`
//! map references resolved.
//!
//! How `lddw` pseudo values are resolved (the values the helpers and the VM later recognise):
//!
//! | pseudo source | value |
//! | --- | --- |
//! | `BPF_PSEUDO_MAP_IDX` (5), map `i` | the map handle [`MAP_HANDLE_BASE`]` + i`: an address in no region, so a program cannot dereference it; helpers decode it |
//! | `BPF_PSEUDO_MAP_IDX_VALUE` (6), map `i`, offset `o` | a VM fixed region (`fixed_region_address(slot) + o`) that [`crate::Program`] lends each run: element 0 of the array map `i`, read-only for `BPF_F_RDONLY_PROG` maps such as `.rodata` |
//!
//! Architecture invariant: this module decides what exists (maps, programs); it never runs a
//! program. Several programs of one object share its `Arc`ed maps; several objects share a map
//! only through a pin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bpfmaps_abi::insn::pseudo;
use bpfmaps_abi::{map_flags, MapOps, MapType};
use bpfmaps_maps::{Access as MapAccess, Store, UserMap, ValueRef};
use bpfmaps_obj::{
    CoreReport, ExternKind, KernelConfig, MapKind, MapSpec, ObjectSpec, Pinning, ProgramKind,
    TargetBtf,
};
use bpfmaps_vm::memory::fixed_region_address;
use bpfmaps_vm::{Access, Config, Executable, HelperSet, PseudoResolver};

use crate::cpu::CpuSlots;
use crate::error::RuntimeError;
use crate::helpers::supported_helpers;
use crate::program::{Program, ProgramInner};
use crate::prune::prune;

/// Map handles: the value an `lddw` of map `i` loads is `MAP_HANDLE_BASE + i`. The upper half
/// selects a VM region index no run ever maps, so dereferencing a handle traps.
pub const MAP_HANDLE_BASE: u64 = 0xffff_fffe_0000_0000;

/// How to load an object on the user engine.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Directory of `LIBBPF_PIN_BY_NAME` pins (`DIR/MAP_NAME`); `None` means the user engine's
    /// pin root ([`bpfmaps_maps::pin_root`]). It must be on the pin root's file system.
    pub pin_dir: Option<PathBuf>,
    /// The VM configuration every program of the object runs with; `None` means
    /// [`Config::default`] (the context access is decided per program type).
    pub vm_config: Option<Config>,
    /// The BTF CO-RE relocations are resolved against (a raw BTF file or an ELF with `.BTF`, as
    /// libbpf's `btf_custom_path`); `None` means the running kernel's
    /// (`/sys/kernel/btf/vmlinux`). Only read when the object has CO-RE relocations.
    pub target_btf: Option<PathBuf>,
}

/// One map of a loaded object.
#[derive(Debug)]
pub struct LoadedMap {
    /// The map's name in the object (full name, as pins use it).
    pub name: String,
    /// The object's definition of it.
    pub spec: MapSpec,
    /// The shared-memory map.
    pub map: Arc<UserMap>,
    /// Where it is pinned by name, if it is.
    pub pin_path: Option<PathBuf>,
    /// True when it was reused from an existing pin rather than created.
    pub reused_pin: bool,
    /// For array maps: where element 0's value is (what map-value references point at).
    pub(crate) first_value: Option<ValueRef>,
    /// How programs may touch its values.
    pub(crate) program_access: Access,
}

/// Everything the programs of one object share: its maps, by index in the object's map list.
#[derive(Debug)]
pub(crate) struct SharedMaps {
    pub maps: Vec<LoadedMap>,
    pub possible_cpus: u32,
    pub store_root: PathBuf,
}

/// An object loaded on the user engine: its maps live, its programs checked and ready to run.
#[derive(Debug)]
pub struct UserObject {
    name: String,
    shared: Arc<SharedMaps>,
    programs: Vec<Program>,
}

fn map_error(name: &str) -> impl FnOnce(bpfmaps_maps::UserMapError) -> RuntimeError + '_ {
    move |source| RuntimeError::Map {
        map: name.to_owned(),
        source,
    }
}

fn setup_error<'a>(
    name: &'a str,
    what: &'static str,
) -> impl FnOnce(bpfmaps_abi::MapError) -> RuntimeError + 'a {
    move |e| RuntimeError::MapSetup {
        map: name.to_owned(),
        what,
        errno: e.errno().unwrap_or(bpfmaps_abi::Errno::EINVAL),
    }
}

/// Creates (or reuses from its pin) one map of the object.
fn load_map(
    store: &Store,
    pin_dir: &Path,
    spec: &MapSpec,
    cpus: u32,
) -> Result<LoadedMap, RuntimeError> {
    let def = spec.creation_def(cpus);
    let name = spec.name.as_str();
    let pin_path = spec.pin_path(pin_dir);
    let mut reused = None;
    if let Some(path) = &pin_path {
        if path.exists() {
            let map = UserMap::open_pinned_in(store, path, MapAccess::ReadWrite)
                .map_err(map_error(name))?;
            if let Some((field, expected, found)) = def.reuse_mismatch(&map.info()) {
                return Err(RuntimeError::PinnedMapMismatch {
                    map: name.to_owned(),
                    path: path.to_owned(),
                    field,
                    expected,
                    found,
                });
            }
            reused = Some(map);
        }
    }
    let reused_pin = reused.is_some();
    let map = match reused {
        Some(map) => map,
        None => {
            let map = UserMap::create_in(store, &def).map_err(map_error(name))?;
            if let Some(initial) = &spec.initial_value {
                map.update(&0u32.to_le_bytes(), initial, 0)
                    .map_err(setup_error(name, "writing the initial value"))?;
            }
            if spec.frozen {
                map.freeze().map_err(setup_error(name, "freezing"))?;
            }
            if let Some(path) = &pin_path {
                map.pin(path).map_err(map_error(name))?;
            }
            map
        }
    };
    let first_value = if matches!(def.map_type, MapType::Array) {
        map.helper_lookup(&0u32.to_le_bytes(), 0)
    } else {
        None
    };
    let read_only =
        spec.kind == MapKind::Rodata || def.map_flags & map_flags::BPF_F_RDONLY_PROG != 0;
    Ok(LoadedMap {
        name: name.to_owned(),
        spec: spec.clone(),
        map: Arc::new(map),
        pin_path,
        reused_pin,
        first_value,
        program_access: if read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        },
    })
}

/// Resolves one program's `lddw` pseudo values and records which maps its fixed regions lend.
struct Resolver<'a> {
    maps: &'a [LoadedMap],
    /// Map index of each fixed slot, in slot order.
    fixed: Vec<usize>,
}

impl PseudoResolver for Resolver<'_> {
    fn resolve(&mut self, _index: usize, kind: u8, imm_lo: i32, imm_hi: i32) -> Option<u64> {
        let map_index = usize::try_from(imm_lo).ok()?;
        let map = self.maps.get(map_index)?;
        match kind {
            pseudo::MAP_IDX => Some(MAP_HANDLE_BASE + map_index as u64),
            pseudo::MAP_IDX_VALUE => {
                let value = map.first_value?;
                let offset = u64::try_from(imm_hi).ok()?;
                if offset >= value.len as u64 {
                    return None;
                }
                let slot = match self.fixed.iter().position(|&m| m == map_index) {
                    Some(slot) => slot,
                    None => {
                        self.fixed.push(map_index);
                        self.fixed.len() - 1
                    }
                };
                Some(fixed_region_address(u32::try_from(slot).ok()?)? + offset)
            }
            _ => None,
        }
    }
}

/// The running kernel's BTF, parsed once per process (it cannot change while the kernel runs).
fn kernel_btf() -> Result<Arc<TargetBtf>, bpfmaps_obj::ObjError> {
    static KERNEL_BTF: std::sync::OnceLock<Arc<TargetBtf>> = std::sync::OnceLock::new();
    if let Some(btf) = KERNEL_BTF.get() {
        return Ok(btf.clone());
    }
    let btf = Arc::new(TargetBtf::from_kernel()?);
    Ok(KERNEL_BTF.get_or_init(|| btf).clone())
}

/// How an error names a call: `bpf_get_current_cgroup_id (80)`, `helper 9999`, or a kfunc.
fn describe_call(id: i32, kfunc: bool) -> String {
    if kfunc {
        return format!("a kernel function (BTF id {id})");
    }
    match u32::try_from(id)
        .ok()
        .and_then(bpfmaps_abi::helper::helper_name)
    {
        Some(name) => format!("bpf_{name} ({id})"),
        None => format!("helper {id}"),
    }
}

/// Explains each poisoned instruction of program `name` for the trap it raises if it runs.
fn add_poison_notes(mut exe: Executable, name: &str, report: &CoreReport) -> Executable {
    for o in report
        .relocations
        .iter()
        .filter(|o| o.poisoned && o.program == name)
    {
        let note = format!(
            "program `{name}` instruction {}: CO-RE relocation #{} ({} `{}`, {}) could not be \
             satisfied by the target BTF",
            o.insn_index,
            o.relocation_index,
            o.kind.name(),
            o.access,
            o.spec
        );
        exe = exe
            .with_poison_note(o.insn_index, note.clone())
            .with_poison_note(o.insn_index + 1, note);
    }
    exe
}

/// The context access a program type has: tracing contexts are read-only in the kernel.
fn context_access(kind: ProgramKind) -> Access {
    match kind {
        ProgramKind::Tracepoint
        | ProgramKind::RawTracepoint
        | ProgramKind::Kprobe
        | ProgramKind::Uprobe
        | ProgramKind::PerfEvent
        | ProgramKind::Tracing => Access::ReadOnly,
        _ => Access::ReadWrite,
    }
}

impl UserObject {
    /// Opens the object file at `path` and loads it.
    pub fn load_file(path: &Path, options: &LoadOptions) -> Result<UserObject, RuntimeError> {
        let spec = ObjectSpec::from_file(path)?;
        UserObject::load(spec, options)
    }

    /// Loads `spec` (globals already set with [`ObjectSpec::set_global`]): applies its CO-RE
    /// relocations against the target BTF (see [`LoadOptions::target_btf`]) unless already
    /// applied, creates its maps in the default user-engine store, then checks its programs.
    /// An instruction poisoned by an unsatisfiable relocation does not fail the load: it traps
    /// ([`bpfmaps_vm::Trap::Poisoned`], naming program, instruction and access string) if it runs.
    pub fn load(mut spec: ObjectSpec, options: &LoadOptions) -> Result<UserObject, RuntimeError> {
        let step = |step| move |source| RuntimeError::Prepare { step, source };
        if spec.needs_core() {
            let target = match &options.target_btf {
                Some(path) => TargetBtf::from_file(path).map(Arc::new),
                None => kernel_btf(),
            }
            .map_err(step("reading the target BTF"))?;
            spec.relocate_core(&target)
                .map_err(step("CO-RE relocation"))?;
        }
        if spec.needs_kconfig() {
            let config = KernelConfig::from_system(spec.needs_kernel_config())
                .map_err(step("reading the kernel configuration"))?;
            spec.fill_kconfig(&config)
                .map_err(step("filling .kconfig externs"))?;
        }
        // No kernel symbols here: every weak ksym is absent, a strong one refuses the object.
        spec.resolve_ksyms_absent()
            .map_err(step("resolving .ksyms externs"))?;
        let store = Store::default_root()?;
        let pin_dir = options
            .pin_dir
            .clone()
            .unwrap_or_else(|| store.root().to_owned());
        let cpus = bpfmaps_maps::possible_cpus();
        let mut maps = Vec::with_capacity(spec.maps.len());
        for map in &spec.maps {
            maps.push(load_map(&store, &pin_dir, map, cpus)?);
        }
        let slots = CpuSlots::for_root(store.root()).map_err(|source| RuntimeError::CpuSlots {
            root: store.root().to_owned(),
            source,
        })?;
        let helpers = HelperSet::new(supported_helpers().iter().copied());
        let mut programs = Vec::with_capacity(spec.programs.len());
        let mut prepared = Vec::with_capacity(spec.programs.len());
        for prog in &spec.programs {
            let mut resolver = Resolver {
                maps: &maps,
                fixed: Vec::new(),
            };
            let pruned = prune(&prog.instructions, &spec.maps, &helpers);
            if let Some(&(insn, id, kfunc)) = pruned.live_missing.first() {
                return Err(RuntimeError::UnsupportedHelper {
                    program: prog.name.clone(),
                    insn,
                    helper: describe_call(id, kfunc),
                });
            }
            let mut exe = Executable::new(&pruned.instructions, helpers.clone(), &mut resolver)
                .map_err(|source| RuntimeError::Program {
                    program: prog.name.clone(),
                    source,
                })?;
            if let Some(report) = spec.core_report() {
                exe = add_poison_notes(exe, &prog.name, report);
            }
            for (index, e) in spec.externs.iter().enumerate() {
                if !matches!(e.kind, ExternKind::Ksym { function: true, .. }) {
                    continue;
                }
                for site in e.sites.iter().filter(|s| s.call && s.program == prog.name) {
                    let note = format!(
                        "program `{}` instruction {}: call to weak kfunc `{}` (extern #{index}), \
                         absent on the user engine",
                        prog.name, site.insn_index, e.name
                    );
                    exe = exe.with_poison_note(site.insn_index, note);
                }
            }
            for dead in &pruned.dead {
                let note = format!(
                    "program `{}` instruction {}: {} was pruned at load as dead with the \
                     object's .rodata values",
                    prog.name,
                    dead.insn,
                    describe_call(dead.id, prog.instructions[dead.insn].src == 2)
                );
                exe = exe.with_poison_note(dead.insn, note);
            }
            let fixed = resolver.fixed;
            prepared.push((prog, exe, fixed));
        }
        let shared = Arc::new(SharedMaps {
            maps,
            possible_cpus: cpus,
            store_root: store.root().to_owned(),
        });
        for (prog, exe, fixed) in prepared {
            let mut config = options.vm_config.clone().unwrap_or_default();
            config.context_access = context_access(prog.kind);
            programs.push(Program::new(ProgramInner {
                name: prog.name.clone(),
                section: prog.section.clone(),
                kind: prog.kind,
                exe,
                fixed,
                shared: shared.clone(),
                config,
                slots,
            }));
        }
        Ok(UserObject {
            name: spec.name,
            shared,
            programs,
        })
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every program, in the object's order.
    pub fn programs(&self) -> &[Program] {
        &self.programs
    }

    /// The program named `name`.
    pub fn program(&self, name: &str) -> Result<&Program, RuntimeError> {
        self.programs
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| RuntimeError::NoSuchProgram(name.to_owned()))
    }

    /// Every map, in the object's order (declared maps, then data sections).
    pub fn maps(&self) -> &[LoadedMap] {
        &self.shared.maps
    }

    /// The map named `name` (full or 15-byte kernel name).
    pub fn map(&self, name: &str) -> Result<&LoadedMap, RuntimeError> {
        self.shared
            .maps
            .iter()
            .find(|m| m.name == name)
            .or_else(|| self.shared.maps.iter().find(|m| m.spec.def.name == name))
            .ok_or_else(|| RuntimeError::NoSuchMap(name.to_owned()))
    }

    /// Pins every declared map (not data sections) at `dir/NAME` and returns the paths; maps
    /// already pinned there by name are left as they are.
    pub fn pin_maps(&self, dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
        let mut paths = Vec::new();
        for map in self
            .shared
            .maps
            .iter()
            .filter(|m| !m.spec.kind.is_data_section())
        {
            let path = dir.join(&map.spec.def.name);
            if map.pin_path.as_deref() != Some(path.as_path()) {
                map.map.pin(&path).map_err(map_error(&map.name))?;
            }
            paths.push(path);
        }
        Ok(paths)
    }

    /// Whether the object's maps were pinned by name (any map has [`Pinning::ByName`]).
    pub fn has_pinned_maps(&self) -> bool {
        self.shared
            .maps
            .iter()
            .any(|m| m.spec.pinning == Pinning::ByName)
    }
}
