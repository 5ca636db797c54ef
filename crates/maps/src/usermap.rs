//! [`UserMap`]: one open user-engine map (the user engine's "map fd"), implementing the syscall
//! layer of bpf(2) — access modes, frozen maps, flag checks that precede the map type — over a
//! type [`Backend`], plus creation, pinning, ids and listing.
//!
//! Owns the dispatch from [`MapType`] to the type modules (`plan_backend`, `open_backend`). It does
//! not know any type's layout.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bpfmaps_abi::map_flags::{BPF_F_RDONLY, BPF_F_WRONLY};
use bpfmaps_abi::update_flags::BPF_F_LOCK;
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapInfo, MapOps, MapResult, MapType};

use crate::backend::{Backend, MapFile, Plan, ValueRef};
use crate::header::{MapHeader, AREA_OFFSET};
use crate::region::{create_unnamed_file, link_file, Region, RegionError};
use crate::store::{Store, StoreError};
use crate::{array, cgroup_array, hash, lru, perf_event_array, ringbuf, stack_trace};

/// The largest map file the engine creates (64 GiB, sparse). Bigger definitions fail with
/// `ENOMEM`, as a kernel allocation of that size would.
pub const MAX_FILE_SIZE: u64 = 64 << 30;

/// How an open map may be used from user space, like the `f_mode` of a map fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Lookups and updates.
    ReadWrite,
    /// Lookups only (`BPF_F_RDONLY`): writes give `EPERM`.
    ReadOnly,
    /// Updates only (`BPF_F_WRONLY`): reads give `EPERM`.
    WriteOnly,
}

impl Access {
    fn can_read(self) -> bool {
        self != Access::WriteOnly
    }

    fn can_write(self) -> bool {
        self != Access::ReadOnly
    }

    /// The access a `BPF_F_RDONLY`/`BPF_F_WRONLY` flag word asks for; `EINVAL` for both.
    pub fn from_flags(flags: u32) -> Result<Access, Errno> {
        match (flags & BPF_F_RDONLY != 0, flags & BPF_F_WRONLY != 0) {
            (true, true) => Err(Errno::EINVAL),
            (true, false) => Ok(Access::ReadOnly),
            (false, true) => Ok(Access::WriteOnly),
            (false, false) => Ok(Access::ReadWrite),
        }
    }
}

/// Why a user-engine map could not be created, opened or pinned.
#[derive(Debug, thiserror::Error)]
pub enum UserMapError {
    /// The definition is refused with the errno the kernel gives for it.
    #[error("map `{name}` ({map_type}): creation refused: {errno}")]
    Create {
        /// The map's name.
        name: String,
        /// The map type.
        map_type: MapType,
        /// The kernel's errno for this definition.
        errno: Errno,
    },
    /// The map type is valid but the user engine does not implement it (yet).
    #[error("map type {0} is not implemented by the user engine")]
    Unsupported(MapType),
    /// Mapping the file failed.
    #[error("map file {path}: {source}")]
    Region {
        /// The file (or `<unnamed>`).
        path: String,
        /// What failed.
        #[source]
        source: RegionError,
    },
    /// The file is not a valid map file.
    #[error("{path}: {source}")]
    Header {
        /// The file.
        path: String,
        /// What is wrong.
        #[source]
        source: crate::header::HeaderError,
    },
    /// A file exists but its contents do not fit the layout its header describes.
    #[error("{path}: corrupt map file: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The pin root or registry failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed with this errno (pin exists, no such pin, ...), as bpf(2) would say.
    #[error("{op} {path}: {errno}")]
    Errno {
        /// The operation.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The errno.
        errno: Errno,
    },
    /// Lock initialisation failed.
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
}

impl UserMapError {
    /// The errno this failure corresponds to, when it has one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            UserMapError::Create { errno, .. } | UserMapError::Errno { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Reads the number of possible CPUs from `/sys/devices/system/cpu/possible` (1 if unreadable).
pub fn possible_cpus() -> u32 {
    std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| bpfmaps_abi::cpus::count_from_cpu_list(&s))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
}

fn plan_backend(def: &MapDef, cpus: u32) -> Result<Plan, UserMapError> {
    let refuse = |errno| UserMapError::Create {
        name: def.name.clone(),
        map_type: def.map_type,
        errno,
    };
    match def.map_type {
        MapType::Hash | MapType::PercpuHash => hash::plan(def, cpus).map_err(refuse),
        MapType::Array | MapType::PercpuArray => array::plan(def, cpus).map_err(refuse),
        MapType::LruHash | MapType::LruPercpuHash => lru::plan(def, cpus).map_err(refuse),
        MapType::StackTrace => stack_trace::plan(def, cpus).map_err(refuse),
        MapType::Ringbuf => ringbuf::plan(def, cpus).map_err(refuse),
        MapType::PerfEventArray => perf_event_array::plan(def, cpus).map_err(refuse),
        MapType::CgroupArray => cgroup_array::plan(def, cpus).map_err(refuse),
        _ => Err(refuse(Errno::EINVAL)),
    }
}

fn init_backend(file: &MapFile) -> Result<(), UserMapError> {
    match file.header.map_type {
        MapType::Hash | MapType::PercpuHash => hash::init(file),
        MapType::Array | MapType::PercpuArray => array::init(file),
        MapType::LruHash | MapType::LruPercpuHash => lru::init(file),
        MapType::StackTrace => stack_trace::init(file),
        MapType::Ringbuf => ringbuf::init(file),
        MapType::PerfEventArray => perf_event_array::init(file),
        MapType::CgroupArray => cgroup_array::init(file),
        other => Err(UserMapError::Unsupported(other)),
    }
}

fn open_backend(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    match file.header.map_type {
        MapType::Hash | MapType::PercpuHash => hash::open(file),
        MapType::Array | MapType::PercpuArray => array::open(file),
        MapType::LruHash | MapType::LruPercpuHash => lru::open(file),
        MapType::StackTrace => stack_trace::open(file),
        MapType::Ringbuf => ringbuf::open(file),
        MapType::PerfEventArray => perf_event_array::open(file),
        MapType::CgroupArray => cgroup_array::open(file),
        other => Err(UserMapError::Unsupported(other)),
    }
}

/// One open user-engine map.
///
/// Dropping it closes this process's hold on the map; an unpinned map whose last holder (in any
/// process) closes it is removed from the registry (see [`crate::store`]).
pub struct UserMap {
    file: Arc<MapFile>,
    backend: Box<dyn Backend>,
    access: Access,
    store: Store,
    id: u32,
    /// [`MapInfo::user_value_size`], computed once (the header's fixed fields never change).
    user_value_size: usize,
}

impl std::fmt::Debug for UserMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserMap")
            .field("id", &self.id)
            .field("header", &self.file.header)
            .field("access", &self.access)
            .finish()
    }
}

impl UserMap {
    /// Creates a map in the default store ([`crate::pin_root`]).
    pub fn create(def: &MapDef) -> Result<UserMap, UserMapError> {
        UserMap::create_in(&Store::default_root()?, def)
    }

    /// Creates a map of definition `def` in `store`: validates it with the kernel's rules and
    /// errnos, creates an unnamed file in the store's file system, lays out the map and gives it
    /// an id. The map has the access `def.map_flags` asks for (`BPF_F_RDONLY`/`WRONLY`).
    pub fn create_in(store: &Store, def: &MapDef) -> Result<UserMap, UserMapError> {
        let refuse = |errno| UserMapError::Create {
            name: def.name.clone(),
            map_type: def.map_type,
            errno,
        };
        if !def.has_valid_name() {
            return Err(refuse(Errno::EINVAL));
        }
        let access = Access::from_flags(def.map_flags).map_err(refuse)?;
        let cpus = possible_cpus();
        let plan = plan_backend(def, cpus)?;
        let file_size = (AREA_OFFSET as u64)
            .checked_add(plan.area_size)
            .filter(|&s| s <= MAX_FILE_SIZE)
            .ok_or_else(|| refuse(Errno::ENOMEM))?;
        // An unnamed O_TMPFILE file in the pin root's file system: it can get its registry entry
        // and pins by linking. (A memfd could not be linked, so there is no memfd fallback:
        // file systems without O_TMPFILE report EOPNOTSUPP here.)
        let file =
            create_unnamed_file(store.root(), file_size).map_err(|e| UserMapError::Errno {
                op: "create map file in",
                path: store.root().to_owned(),
                errno: io_errno(&e),
            })?;
        let region = Region::map(file).map_err(|source| UserMapError::Region {
            path: "<unnamed>".into(),
            source,
        })?;
        let header = MapHeader::new(def, plan.max_entries, cpus, plan.hash_seed, file_size);
        header.write(&region);
        let map_file = MapFile { region, header };
        init_backend(&map_file)?;
        let id = store.register(map_file.region.file())?;
        MapHeader::set_id(&map_file.region, id);
        UserMap::assemble(store, map_file, access, id)
    }

    /// A handle over a map file whose header is written and validated: opens its backend.
    fn assemble(
        store: &Store,
        file: MapFile,
        access: Access,
        id: u32,
    ) -> Result<UserMap, UserMapError> {
        let file = Arc::new(file);
        let backend = open_backend(file.clone())?;
        let user_value_size = file.header.info(&file.region).user_value_size();
        Ok(UserMap {
            file,
            backend,
            access,
            store: store.clone(),
            id,
            user_value_size,
        })
    }

    fn from_file(
        store: &Store,
        file: File,
        path: &Path,
        access: Access,
    ) -> Result<UserMap, UserMapError> {
        let shown = path.display().to_string();
        let region = Region::map(file).map_err(|source| UserMapError::Region {
            path: shown.clone(),
            source,
        })?;
        let header = MapHeader::read(&region).map_err(|source| UserMapError::Header {
            path: shown,
            source,
        })?;
        let id = MapHeader::id(&region);
        UserMap::assemble(store, MapFile { region, header }, access, id)
    }

    /// Opens a pinned map (a file created by [`UserMap::pin`]) with the given access, in the
    /// default store.
    pub fn open_pinned(path: &Path, access: Access) -> Result<UserMap, UserMapError> {
        UserMap::open_pinned_in(&Store::default_root()?, path, access)
    }

    /// Opens the pinned map at `path` whose registry is `store`. `ENOENT` when there is no such
    /// pin.
    pub fn open_pinned_in(
        store: &Store,
        path: &Path,
        access: Access,
    ) -> Result<UserMap, UserMapError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| UserMapError::Errno {
                op: "open pinned map",
                path: path.to_owned(),
                errno: io_errno(&e),
            })?;
        crate::lock::flock_shared(&file).map_err(|e| UserMapError::Errno {
            op: "flock",
            path: path.to_owned(),
            errno: io_errno(&e),
        })?;
        UserMap::from_file(store, file, path, access)
    }

    /// Opens live map `id` of the default store (read-write). `ENOENT` when no live map has it.
    pub fn from_id(id: u32) -> Result<UserMap, UserMapError> {
        UserMap::from_id_in(&Store::default_root()?, id)
    }

    /// Opens live map `id` of `store` (read-write), like `BPF_MAP_GET_FD_BY_ID`.
    pub fn from_id_in(store: &Store, id: u32) -> Result<UserMap, UserMapError> {
        let path = store.entry_path(id);
        match store.open_id(id)? {
            Some(file) => UserMap::from_file(store, file, &path, Access::ReadWrite),
            None => Err(UserMapError::Errno {
                op: "open map id",
                path,
                errno: Errno::ENOENT,
            }),
        }
    }

    /// Pins the map at `path`: a new name for the map file (mode 0600), which keeps the map and
    /// its data alive after every process closed it, until the pin is removed (`unlink`).
    ///
    /// Like `BPF_OBJ_PIN`: `EEXIST` when `path` exists, `ENOENT` when its directory is missing,
    /// `EPERM` when the last component contains a `.` (reserved), `EXDEV` when `path` is on another
    /// file system than the pin root.
    pub fn pin(&self, path: &Path) -> Result<(), UserMapError> {
        let errno = |errno| UserMapError::Errno {
            op: "pin",
            path: path.to_owned(),
            errno,
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| errno(Errno::EINVAL))?;
        if name.contains('.') {
            return Err(errno(Errno::EPERM));
        }
        link_file(self.file.region.file(), path).map_err(|e| errno(io_errno(&e)))
    }

    /// The map's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The access this handle has.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The map's shared region (for the interpreter: value offsets are relative to its base).
    pub fn region(&self) -> &Region {
        &self.file.region
    }

    /// The type implementation, for type-specific APIs (`as_any().downcast_ref()`).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    fn check_key(&self, key: &[u8]) -> MapResult<()> {
        let key_size = self.file.header.key_size as usize;
        if key.is_empty() && key_size != 0 {
            // An absent key pointer: the kernel's copy from NULL faults.
            return Err(MapError::Errno(Errno::EFAULT));
        }
        if !key.is_empty() && key_size == 0 {
            // A key pointer for a map without keys (ring buffer): EINVAL.
            return Err(MapError::Errno(Errno::EINVAL));
        }
        if key.len() != key_size && !key.is_empty() {
            return Err(MapError::KeySize {
                expected: key_size,
                got: key.len(),
            });
        }
        Ok(())
    }

    fn info_fixed(&self) -> MapInfo {
        let mut info = self.file.header.info(&self.file.region);
        info.id = self.id;
        info
    }

    fn value_size(&self) -> usize {
        self.user_value_size
    }

    fn check_value(&self, len: usize) -> MapResult<()> {
        let expected = self.value_size();
        if len != expected {
            return Err(MapError::ValueSize { expected, got: len });
        }
        Ok(())
    }

    fn require_read(&self) -> MapResult<()> {
        if self.access.can_read() {
            Ok(())
        } else {
            Err(MapError::Errno(Errno::EPERM))
        }
    }

    /// Write access as `map_get_sys_perms` computes it: the handle's mode, minus writes once the
    /// map is frozen.
    fn require_write(&self) -> MapResult<()> {
        if self.access.can_write() && !MapHeader::frozen(&self.file.region) {
            Ok(())
        } else {
            Err(MapError::Errno(Errno::EPERM))
        }
    }

    /// Helper-side lookup for a program running on `cpu`: where the value is, `None` for a
    /// missing key (the helper's NULL). See [`Backend::helper_lookup`].
    pub fn helper_lookup(&self, key: &[u8], cpu: u32) -> Option<ValueRef> {
        self.backend.helper_lookup(key, cpu)
    }

    /// Helper-side update from `cpu`; `value` is one value_size slot. Returns the errno the
    /// helper would return negated.
    pub fn helper_update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: u32,
    ) -> Result<(), Errno> {
        self.backend.helper_update(key, value, flags, cpu)
    }

    /// Helper-side delete.
    pub fn helper_delete(&self, key: &[u8]) -> Result<(), Errno> {
        self.backend.helper_delete(key)
    }

    /// Helper `bpf_for_each_map_elem` from `cpu`.
    pub fn for_each(
        &self,
        cpu: u32,
        callback: &mut dyn FnMut(&[u8], ValueRef) -> bool,
    ) -> Result<u32, Errno> {
        self.backend.for_each(cpu, callback)
    }
}

impl Drop for UserMap {
    fn drop(&mut self) {
        // Collect the map when this was its last holder and it has no pin. Errors only mean the
        // entry stays until the next `list`, which collects it again.
        let entry = self.store.entry_path(self.id);
        let _ = self.store.collect_if_dead(self.file.region.file(), &entry);
    }
}

impl MapOps for UserMap {
    fn info(&self) -> MapInfo {
        self.info_fixed()
    }

    fn lookup(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()> {
        self.check_key(key)?;
        self.check_value(value.len())?;
        if flags & !BPF_F_LOCK != 0 {
            return Err(Errno::EINVAL.into());
        }
        self.require_read()?;
        if flags & BPF_F_LOCK != 0 {
            return Err(Errno::EINVAL.into());
        }
        self.backend.lookup(key, value)
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        self.check_key(key)?;
        self.check_value(value.len())?;
        self.require_write()?;
        if flags & BPF_F_LOCK != 0 {
            return Err(Errno::EINVAL.into());
        }
        self.backend.update(key, value, flags)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        self.check_key(key)?;
        self.require_write()?;
        self.backend.delete(key)
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        let key_size = self.file.header.key_size as usize;
        for len in key.map(<[u8]>::len).into_iter().chain([next_key.len()]) {
            if len != key_size {
                return Err(MapError::KeySize {
                    expected: key_size,
                    got: len,
                });
            }
        }
        self.require_read()?;
        self.backend.get_next_key(key, next_key)
    }

    fn lookup_and_delete(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()> {
        self.check_key(key)?;
        self.check_value(value.len())?;
        if flags & !BPF_F_LOCK != 0 {
            return Err(Errno::EINVAL.into());
        }
        self.require_write()?;
        self.require_read()?;
        if flags & BPF_F_LOCK != 0 {
            return Err(Errno::EINVAL.into());
        }
        self.backend.lookup_and_delete(key, value)
    }

    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.require_read()?;
        self.backend
            .lookup_batch(in_batch, out_batch, buffers, elem_flags, flags)
    }

    fn lookup_and_delete_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.require_read()?;
        self.require_write()?;
        self.backend
            .lookup_and_delete_batch(in_batch, out_batch, buffers, elem_flags, flags)
    }

    fn update_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        _flags: u64,
    ) -> MapResult<()> {
        self.require_write()?;
        self.backend.update_batch(buffers, elem_flags)
    }

    fn delete_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        _flags: u64,
    ) -> MapResult<()> {
        self.require_write()?;
        self.backend.delete_batch(buffers, elem_flags)
    }

    fn freeze(&self) -> MapResult<()> {
        // A second freeze finds the write permission gone: EPERM, as in the kernel.
        self.require_write()?;
        if MapHeader::freeze(&self.file.region) {
            Ok(())
        } else {
            Err(Errno::EPERM.into())
        }
    }
}

/// One live user-engine map as [`list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedMap {
    /// The map's description (its id included).
    pub info: MapInfo,
    /// The engine that owns it: always `"user"` here.
    pub engine: &'static str,
}

/// Every live map of `store`, ascending by id (collecting maps nobody holds any more).
pub fn list_in(store: &Store) -> Result<Vec<ListedMap>, UserMapError> {
    let mut maps = Vec::new();
    for id in store.live_ids()? {
        match UserMap::from_id_in(store, id) {
            Ok(map) => maps.push(ListedMap {
                info: map.info(),
                engine: "user",
            }),
            // Gone between the scan and the open, or a foreign file in the registry: skip it.
            Err(UserMapError::Errno {
                errno: Errno::ENOENT,
                ..
            })
            | Err(UserMapError::Header { .. })
            | Err(UserMapError::Corrupt { .. })
            | Err(UserMapError::Unsupported(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(maps)
}

/// Every live map of the default store.
pub fn list() -> Result<Vec<ListedMap>, UserMapError> {
    list_in(&Store::default_root()?)
}

/// Creates a map in the default store; see [`UserMap::create_in`].
pub fn create(def: &MapDef) -> Result<UserMap, UserMapError> {
    UserMap::create(def)
}

/// Finds live maps named `name` in `store` (like bpftool's `name NAME`), ascending by id.
pub fn find_by_name_in(store: &Store, name: &str) -> Result<Vec<ListedMap>, UserMapError> {
    Ok(list_in(store)?
        .into_iter()
        .filter(|m| m.info.name == name)
        .collect())
}
