//! `BPF_MAP_TYPE_CGROUP_ARRAY` on the user engine: an array of cgroup (v2) references, set from
//! user space with a cgroup directory fd, read by programs through
//! `bpf_current_task_under_cgroup`. Each slot holds the cgroup's id, which on the kernel is its
//! kernfs node id and so the inode number of its cgroup2 directory (0: empty slot).
//!
//! The kernel's rules (`fd_array_map_alloc_check`, `array_map_alloc_check`, `fd_array` ops):
//! key and value size 4, `max_entries` > 0, no `BPF_F_RDONLY_PROG`/`WRONLY_PROG`, no
//! `MMAPABLE`/`INNER_MAP`/`PRESERVE_ELEMS`, not both `RDONLY` and `WRONLY`: `EINVAL`. Update: flags other than `BPF_ANY` give
//! `EINVAL`, an index past the end `E2BIG`, a value that is not an fd of a cgroup2 directory
//! `EBADF`. Lookup from user space: `ENOTSUPP` (no `map_fd_sys_lookup_elem`), as are the batch
//! operations. Delete: `E2BIG` past the end, `ENOENT` for an empty slot. `get_next_key` as an
//! array's.

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bpfmaps_abi::map_flags::{
    BPF_F_NUMA_NODE, BPF_F_RDONLY, BPF_F_RDONLY_PROG, BPF_F_WRONLY, BPF_F_WRONLY_PROG,
};
use bpfmaps_abi::{Errno, MapDef, MapResult, MapType};

use crate::backend::{not_supported, Backend, MapFile, Plan};
use crate::header::AREA_OFFSET;
use crate::UserMapError;

/// Bytes per slot: the cgroup id.
const SLOT: usize = 8;

/// The kernel's creation checks for a cgroup array (`EINVAL` for every violation).
pub fn check_def(def: &MapDef) -> Result<(), Errno> {
    let allowed = BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY;
    let both_access = def.map_flags & (BPF_F_RDONLY | BPF_F_WRONLY) == BPF_F_RDONLY | BPF_F_WRONLY;
    if def.map_type != MapType::CgroupArray
        || !def.has_valid_name()
        || both_access
        || def.key_size != 4
        || def.value_size != 4
        || def.max_entries == 0
        || def.map_flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG) != 0
        || def.map_flags & !allowed != 0
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The [`crate::UserMap`] plan step.
pub fn plan(def: &MapDef, _cpus: u32) -> Result<Plan, Errno> {
    check_def(def)?;
    Ok(Plan {
        max_entries: def.max_entries,
        area_size: SLOT as u64 * u64::from(def.max_entries),
        hash_seed: 0,
    })
}

/// The [`crate::UserMap`] init step: a zeroed area is an array of empty slots.
pub fn init(file: &MapFile) -> Result<(), UserMapError> {
    CgroupArray::check_layout(file)
}

/// The [`crate::UserMap`] open step.
pub fn open(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    CgroupArray::check_layout(&file)?;
    Ok(Box::new(CgroupArray {
        max_entries: file.header.max_entries,
        file,
    }))
}

/// A cgroup array over its shared file.
#[derive(Debug)]
pub struct CgroupArray {
    file: Arc<MapFile>,
    max_entries: u32,
}

/// The cgroup2 mount points of this process (`/proc/self/mountinfo`).
pub fn cgroup2_mounts() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            (right.split_whitespace().next() == Some("cgroup2"))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .collect()
}

/// The id of the cgroup2 directory at `path` (its inode number), or `EBADF` when `path` is not a
/// directory of a cgroup2 mount.
pub fn cgroup_id_of_dir(path: &Path) -> Result<u64, Errno> {
    use std::os::unix::fs::MetadataExt;
    let on_cgroup2 = cgroup2_mounts().iter().any(|m| path.starts_with(m));
    let meta = std::fs::metadata(path).map_err(|_| Errno::EBADF)?;
    if !on_cgroup2 || !meta.is_dir() {
        return Err(Errno::EBADF);
    }
    Ok(meta.ino())
}

impl CgroupArray {
    fn check_layout(file: &MapFile) -> Result<(), UserMapError> {
        let h = &file.header;
        let end = (h.max_entries as usize)
            .checked_mul(SLOT)
            .and_then(|n| n.checked_add(AREA_OFFSET));
        if h.key_size != 4
            || h.value_size != 4
            || h.max_entries == 0
            || end.is_none_or(|e| e > file.region.len())
        {
            return Err(UserMapError::Corrupt {
                path: format!("map `{}`", h.name),
                reason: "bad cgroup array sizes in header".into(),
            });
        }
        Ok(())
    }

    fn index(key: &[u8]) -> u32 {
        u32::from_le_bytes([key[0], key[1], key[2], key[3]])
    }

    fn slot(&self, index: u32) -> &std::sync::atomic::AtomicU64 {
        self.file
            .region
            .atomic_u64(AREA_OFFSET + index as usize * SLOT)
    }

    /// The cgroup id at `index` (`None` when the slot is empty), `E2BIG` past the end: what
    /// `bpf_current_task_under_cgroup` reads.
    pub fn cgroup_id(&self, index: u32) -> Result<Option<u64>, Errno> {
        if index >= self.max_entries {
            return Err(Errno::E2BIG);
        }
        let id = self.slot(index).load(Ordering::Acquire);
        Ok((id != 0).then_some(id))
    }

    /// Sets slot `index` to the cgroup whose directory is `path` (the user-space update with an
    /// fd resolves the fd to its path first).
    pub fn set_path(&self, index: u32, path: &Path) -> MapResult<()> {
        if index >= self.max_entries {
            return Err(Errno::E2BIG.into());
        }
        let id = cgroup_id_of_dir(path)?;
        self.slot(index).store(id, Ordering::Release);
        Ok(())
    }
}

impl Backend for CgroupArray {
    fn lookup(&self, _key: &[u8], _value: &mut [u8]) -> MapResult<()> {
        not_supported()
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        if flags != 0 {
            return Err(Errno::EINVAL.into());
        }
        let index = Self::index(key);
        if index >= self.max_entries {
            return Err(Errno::E2BIG.into());
        }
        let fd = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        // The fd is one of the calling process's: its path names the directory.
        let path = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|_| Errno::EBADF)?;
        self.set_path(index, &path)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        let index = Self::index(key);
        if index >= self.max_entries {
            return Err(Errno::E2BIG.into());
        }
        match self.slot(index).swap(0, Ordering::AcqRel) {
            0 => Err(Errno::ENOENT.into()),
            _ => Ok(()),
        }
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        let next = match key.map(Self::index) {
            None => 0,
            Some(i) if i >= self.max_entries => 0,
            Some(i) if i == self.max_entries - 1 => return Err(Errno::ENOENT.into()),
            Some(i) => i + 1,
        };
        next_key[..4].copy_from_slice(&next.to_le_bytes());
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
