//! [`KernelMap`]: a kernel map behind an owned fd, implementing the engine-neutral
//! [`MapOps`] with exactly the bpf(2) semantics, plus creating, opening (by id, pinned path,
//! name or fd), pinning, describing and listing kernel maps.
//!
//! It does not interpret values (per-CPU summing and typed access live above, in `bpfmaps`), and
//! it never second-guesses the kernel: flags pass through untouched, so every errno is the
//! kernel's own. Only buffer lengths are checked before a call, because a wrong length would make
//! the kernel read or write past a Rust buffer.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use bpfmaps_abi::cpus::count_from_cpu_list;
use bpfmaps_abi::{
    check_sizes, BatchBuffers, MapDef, MapError, MapInfo, MapOps, MapResult, MapType,
};

use crate::sys::{self, BatchCall, BatchCmd, SysError};

pub use crate::error::Error;

/// The file listing the possible CPUs.
const POSSIBLE_CPUS_PATH: &str = "/sys/devices/system/cpu/possible";

/// The number of possible CPUs (`num_possible_cpus()`), read once from
/// `/sys/devices/system/cpu/possible`. Per-CPU values have this many slots.
pub fn possible_cpus() -> Result<u32, Error> {
    static CACHE: OnceLock<u32> = OnceLock::new();
    if let Some(n) = CACHE.get() {
        return Ok(*n);
    }
    let text = std::fs::read_to_string(POSSIBLE_CPUS_PATH).map_err(|source| Error::Io {
        path: POSSIBLE_CPUS_PATH.into(),
        source,
    })?;
    let count = count_from_cpu_list(&text)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| Error::CpuList(text.clone()))?;
    Ok(*CACHE.get_or_init(|| count))
}

/// The access mode of a map fd, as `BPF_OBJ_GET` / `BPF_MAP_GET_FD_BY_ID` request it. A
/// read-only fd gets `EPERM` on writes, a write-only fd `EPERM` on reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Read and write (`file_flags` 0).
    #[default]
    ReadWrite,
    /// `BPF_F_RDONLY`.
    ReadOnly,
    /// `BPF_F_WRONLY`.
    WriteOnly,
}

impl Access {
    /// The `file_flags` / `open_flags` bits for this mode.
    pub fn file_flags(self) -> u32 {
        match self {
            Access::ReadWrite => 0,
            Access::ReadOnly => sys::BPF_F_RDONLY,
            Access::WriteOnly => sys::BPF_F_WRONLY,
        }
    }
}

/// A kernel map: an owned fd plus the [`MapInfo`] read when it was opened.
///
/// The info is a snapshot except for [`MapInfo::frozen`], which [`MapOps::info`] re-reads from
/// `/proc/self/fdinfo` each time (the kernel reports it nowhere else).
#[derive(Debug)]
pub struct KernelMap {
    fd: OwnedFd,
    info: MapInfo,
    access: Access,
}

impl KernelMap {
    /// `BPF_MAP_CREATE` from `def`. Nothing is validated here: the kernel decides (names,
    /// sizes, flags), and its errno comes back in [`Error::Sys`].
    pub fn create(def: &MapDef) -> Result<KernelMap, Error> {
        let fd = sys::map_create(&sys::MapCreate {
            map_type: def.map_type.as_u32(),
            key_size: def.key_size,
            value_size: def.value_size,
            max_entries: def.max_entries,
            map_flags: def.map_flags,
            name: &def.name,
            ..Default::default()
        })?;
        KernelMap::from_fd_with_access(fd, Access::ReadWrite)
    }

    /// Opens the map with kernel id `id` (read-write).
    pub fn from_id(id: u32) -> Result<KernelMap, Error> {
        KernelMap::from_id_with_access(id, Access::ReadWrite)
    }

    /// Opens the map with kernel id `id` with the given access mode.
    pub fn from_id_with_access(id: u32, access: Access) -> Result<KernelMap, Error> {
        let fd = sys::map_get_fd_by_id(id, access.file_flags())?;
        KernelMap::from_fd_with_access(fd, access)
    }

    /// Opens the map pinned at `path` read-write (`BPF_OBJ_GET`).
    pub fn from_pinned(path: &Path) -> Result<KernelMap, Error> {
        KernelMap::from_pinned_with_access(path, Access::ReadWrite)
    }

    /// Opens the map pinned at `path` with the given access mode (`BPF_OBJ_GET` with
    /// `BPF_F_RDONLY` / `BPF_F_WRONLY`).
    pub fn from_pinned_with_access(path: &Path, access: Access) -> Result<KernelMap, Error> {
        let fd = sys::obj_get(path, access.file_flags())?;
        KernelMap::from_fd_with_access(fd, access)
    }

    /// Opens the first map (in id order) named `name`. When several maps share the name, the
    /// first is returned and a warning is logged; see [`find_map_ids_by_name`] for all of them.
    pub fn from_name(name: &str) -> Result<KernelMap, Error> {
        let ids = find_map_ids_by_name(name)?;
        match ids.as_slice() {
            [] => Err(Error::NoSuchName(name.to_owned())),
            [first, rest @ ..] => {
                if !rest.is_empty() {
                    log::warn!(
                        "{} kernel maps are named {name:?} (ids {ids:?}); using id {first}",
                        ids.len()
                    );
                }
                KernelMap::from_id(*first)
            }
        }
    }

    /// Wraps a map fd opened read-write elsewhere (for example by the object loader).
    pub fn from_fd(fd: OwnedFd) -> Result<KernelMap, Error> {
        KernelMap::from_fd_with_access(fd, Access::ReadWrite)
    }

    /// Wraps a map fd opened with `access`.
    pub fn from_fd_with_access(fd: OwnedFd, access: Access) -> Result<KernelMap, Error> {
        let info = read_info(fd.as_fd())?;
        Ok(KernelMap { fd, info, access })
    }

    /// A second handle on the same open file (`dup`): the same map, and, for a perf event array,
    /// the same installing file, so entries stay while either handle lives.
    pub fn try_clone(&self) -> Result<KernelMap, Error> {
        let fd = self.fd.try_clone().map_err(|e| SysError {
            call: "dup",
            errno: bpfmaps_abi::Errno(e.raw_os_error().unwrap_or(0)),
        })?;
        Ok(KernelMap {
            fd,
            info: self.info.clone(),
            access: self.access,
        })
    }

    /// `BPF_OBJ_PIN` at `path`, which must be on bpffs (`EPERM` otherwise).
    pub fn pin(&self, path: &Path) -> Result<(), Error> {
        sys::obj_pin(self.fd.as_fd(), path)?;
        Ok(())
    }

    /// The map fd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The map fd, owned: the map lives as long as it does.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// The access mode this fd was opened with.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The map's kernel id.
    pub fn id(&self) -> u32 {
        self.info.id
    }

    /// The map's type.
    pub fn map_type(&self) -> MapType {
        self.info.map_type
    }

    /// The BTF type ids of key and value (`(btf_id, key_type_id, value_type_id)`), all 0 when the
    /// map has no BTF.
    pub fn btf_ids(&self) -> Result<(u32, u32, u32), Error> {
        let raw = sys::map_info(self.fd.as_fd())?;
        Ok((raw.btf_id, raw.btf_key_type_id, raw.btf_value_type_id))
    }

    /// The info read when the map was opened, without touching the kernel ([`MapOps::info`]
    /// also re-reads `frozen` from fdinfo, which costs a file read).
    pub fn cached_info(&self) -> &MapInfo {
        &self.info
    }

    /// Re-reads the info from the kernel (`BPF_OBJ_GET_INFO_BY_FD` and fdinfo).
    pub fn refresh_info(&mut self) -> Result<&MapInfo, Error> {
        self.info = read_info(self.fd.as_fd())?;
        Ok(&self.info)
    }

    /// Fails with `ValueSize`/`KeySize` unless the batch buffers hold `count` elements.
    fn check_batch(&self, buffers: &BatchBuffers<'_>, with_values: bool) -> MapResult<()> {
        let value_size = if with_values {
            self.info.user_value_size()
        } else {
            0
        };
        buffers.check_room(self.info.key_size as usize, value_size)
    }

    fn check_cursors(&self, in_batch: Option<&[u8]>, out_batch: &[u8]) -> MapResult<()> {
        let size = self.batch_cursor_size();
        if let Some(cursor) = in_batch {
            if cursor.len() < size {
                return Err(MapError::KeySize {
                    expected: size,
                    got: cursor.len(),
                });
            }
        }
        if out_batch.len() < size {
            return Err(MapError::KeySize {
                expected: size,
                got: out_batch.len(),
            });
        }
        Ok(())
    }

    fn run_batch(
        &self,
        command: BatchCmd,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        let mut call = BatchCall {
            in_batch,
            out_batch,
            keys: &mut *buffers.keys,
            values: &mut *buffers.values,
            count: buffers.count,
            elem_flags,
            flags,
        };
        let result = sys::map_batch(self.fd.as_fd(), command, &mut call);
        buffers.count = call.count;
        result.map_err(to_map_error)
    }
}

fn to_map_error(e: SysError) -> MapError {
    MapError::Errno(e.errno)
}

/// Whether `/proc/self/fdinfo/<fd>` says the map is frozen (`false` when the line is absent).
fn read_frozen(fd: BorrowedFd<'_>) -> bool {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("frozen:").map(|v| v.trim() == "1"))
        })
        .unwrap_or(false)
}

fn read_info(fd: BorrowedFd<'_>) -> Result<MapInfo, Error> {
    let raw = sys::map_info(fd)?;
    let map_type = MapType::from_u32(raw.map_type).ok_or(Error::UnknownMapType(raw.map_type))?;
    let name_len = raw
        .name
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(raw.name.len());
    Ok(MapInfo {
        map_type,
        id: raw.id,
        key_size: raw.key_size,
        value_size: raw.value_size,
        max_entries: raw.max_entries,
        map_flags: raw.map_flags,
        name: String::from_utf8_lossy(&raw.name[..name_len]).into_owned(),
        possible_cpus: possible_cpus()?,
        btf_id: raw.btf_id,
        frozen: read_frozen(fd),
    })
}

/// Every map id on the system in ascending order (`BPF_MAP_GET_NEXT_ID` walk).
pub fn list_map_ids() -> Result<Vec<u32>, Error> {
    let mut ids = Vec::new();
    let mut current = 0;
    while let Some(next) = sys::map_get_next_id(current)? {
        ids.push(next);
        current = next;
    }
    Ok(ids)
}

/// The info of every map on the system in id order. Maps that vanish during the walk (`ENOENT`
/// when opening by id) are skipped.
pub fn list_maps() -> Result<Vec<MapInfo>, Error> {
    let mut out = Vec::new();
    for id in list_map_ids()? {
        match sys::map_get_fd_by_id(id, 0) {
            Ok(fd) => out.push(read_info(fd.as_fd())?),
            Err(e) if e.errno == bpfmaps_abi::Errno::ENOENT => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// The ids of every map named `name`, in id order.
pub fn find_map_ids_by_name(name: &str) -> Result<Vec<u32>, Error> {
    Ok(list_maps()?
        .into_iter()
        .filter(|i| i.name == name)
        .map(|i| i.id)
        .collect())
}

impl MapOps for KernelMap {
    fn info(&self) -> MapInfo {
        let mut info = self.info.clone();
        info.frozen = read_frozen(self.fd.as_fd());
        info
    }

    fn lookup(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()> {
        check_sizes(&self.info, Some(key), Some(value.len()))?;
        sys::map_lookup_elem(self.fd.as_fd(), key, value, flags).map_err(to_map_error)
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        check_sizes(&self.info, Some(key), Some(value.len()))?;
        sys::map_update_elem(self.fd.as_fd(), key, value, flags).map_err(to_map_error)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        check_sizes(&self.info, Some(key), None)?;
        sys::map_delete_elem(self.fd.as_fd(), key).map_err(to_map_error)
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        check_sizes(&self.info, key, None)?;
        if next_key.len() != self.info.key_size as usize {
            return Err(MapError::KeySize {
                expected: self.info.key_size as usize,
                got: next_key.len(),
            });
        }
        sys::map_get_next_key(self.fd.as_fd(), key, next_key).map_err(to_map_error)
    }

    fn lookup_and_delete(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()> {
        check_sizes(&self.info, Some(key), Some(value.len()))?;
        sys::map_lookup_and_delete_elem(self.fd.as_fd(), key, value, flags).map_err(to_map_error)
    }

    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.check_cursors(in_batch, out_batch)?;
        self.check_batch(buffers, true)?;
        self.run_batch(
            BatchCmd::Lookup,
            in_batch,
            out_batch,
            buffers,
            elem_flags,
            flags,
        )
    }

    fn lookup_and_delete_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.check_cursors(in_batch, out_batch)?;
        self.check_batch(buffers, true)?;
        self.run_batch(
            BatchCmd::LookupAndDelete,
            in_batch,
            out_batch,
            buffers,
            elem_flags,
            flags,
        )
    }

    fn update_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.check_batch(buffers, true)?;
        self.run_batch(BatchCmd::Update, None, &mut [], buffers, elem_flags, flags)
    }

    fn delete_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.check_batch(buffers, false)?;
        let mut no_values: [u8; 0] = [];
        let mut keys_only = BatchBuffers {
            keys: &mut *buffers.keys,
            values: &mut no_values,
            count: buffers.count,
        };
        let result = self.run_batch(
            BatchCmd::Delete,
            None,
            &mut [],
            &mut keys_only,
            elem_flags,
            flags,
        );
        buffers.count = keys_only.count;
        result
    }

    fn batch_cursor_size(&self) -> usize {
        // The cached info: the trait's default calls `info()`, which reads fdinfo (about 20 µs)
        // on every batch call.
        self.info.batch_cursor_size()
    }

    fn freeze(&self) -> MapResult<()> {
        sys::map_freeze(self.fd.as_fd()).map_err(to_map_error)
    }
}
