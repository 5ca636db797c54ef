//! The byte-level map interface both engines implement: [`MapOps`], with [`MapInfo`] describing a
//! map and [`MapError`] saying why an operation failed.
//!
//! Architecture invariant: this trait is engine-neutral. It speaks the bpf(2) syscall's semantics
//! (a key is `key_size` bytes, a user-space value is [`MapInfo::user_value_size`] bytes, results
//! are errnos), so the kernel engine wraps a map fd and the user engine implements the table
//! itself, and every caller (CLI, typed layer, differential tests) works on both unchanged.

use crate::cpus::percpu_stride;
use crate::{Errno, MapType};

/// A map definition: what a program's object declares and what map creation takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// The map type.
    pub map_type: MapType,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes (one CPU's slot for per-CPU maps).
    pub value_size: u32,
    /// Maximum number of entries (data size in bytes for a ring buffer).
    pub max_entries: u32,
    /// Creation flags (`map_flags`).
    pub map_flags: u32,
    /// The map's name (the kernel keeps at most 15 bytes).
    pub name: String,
}

/// True for a byte the kernel accepts in an object name (`bpf_obj_name_cpy`): `[A-Za-z0-9_.]`.
pub fn is_obj_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'.'
}

/// A field in which a pinned map differs from the object definition that would reuse it,
/// checked in libbpf's `map_is_reuse_compat` order by [`MapDef::reuse_mismatch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinnedMapField {
    /// The map type (values are kernel type numbers).
    MapType,
    /// The key size.
    KeySize,
    /// The value size.
    ValueSize,
    /// `max_entries`.
    MaxEntries,
    /// `map_flags`.
    MapFlags,
}

impl std::fmt::Display for PinnedMapField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PinnedMapField::MapType => "map type",
            PinnedMapField::KeySize => "key size",
            PinnedMapField::ValueSize => "value size",
            PinnedMapField::MaxEntries => "max_entries",
            PinnedMapField::MapFlags => "map flags",
        })
    }
}

impl MapDef {
    /// The first field, in libbpf's `map_is_reuse_compat` order, in which the pinned map `found`
    /// differs from this definition, with this definition's value and the pinned map's; `None`
    /// when the pinned map can be reused.
    pub fn reuse_mismatch(&self, found: &MapInfo) -> Option<(PinnedMapField, u32, u32)> {
        [
            (
                PinnedMapField::MapType,
                self.map_type.as_u32(),
                found.map_type.as_u32(),
            ),
            (PinnedMapField::KeySize, self.key_size, found.key_size),
            (PinnedMapField::ValueSize, self.value_size, found.value_size),
            (
                PinnedMapField::MaxEntries,
                self.max_entries,
                found.max_entries,
            ),
            (PinnedMapField::MapFlags, self.map_flags, found.map_flags),
        ]
        .into_iter()
        .find(|(_, wanted, pinned)| wanted != pinned)
    }

    /// `max_entries` as map creation uses it on a machine with `possible_cpus` CPUs: a
    /// PERF_EVENT_ARRAY declared without it gets one entry per possible CPU, as libbpf and aya
    /// do before creating it; every other value is unchanged.
    pub fn creation_max_entries(&self, possible_cpus: u32) -> u32 {
        if self.map_type == MapType::PerfEventArray && self.max_entries == 0 {
            possible_cpus
        } else {
            self.max_entries
        }
    }

    /// True when the name is one the kernel accepts at creation (`bpf_obj_name_cpy`): at most
    /// 15 bytes, all of them [`is_obj_name_byte`].
    pub fn has_valid_name(&self) -> bool {
        self.name.len() <= 15 && self.name.bytes().all(is_obj_name_byte)
    }

    /// A definition of `map_type` with these sizes, `max_entries` and `map_flags`, named `name`.
    pub fn new(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
        name: &str,
    ) -> MapDef {
        MapDef {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags,
            name: name.to_owned(),
        }
    }
}

/// What a map is: its definition plus the identity the engine gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapInfo {
    /// The map type.
    pub map_type: MapType,
    /// Map id: the kernel's id, or the user engine's own id space.
    pub id: u32,
    /// Key size in bytes (0 for ring buffers).
    pub key_size: u32,
    /// Value size in bytes as declared (one CPU's slot for per-CPU maps).
    pub value_size: u32,
    /// Maximum number of entries as the engine reports it (rounded the kernel's way).
    pub max_entries: u32,
    /// Creation flags (`map_flags`).
    pub map_flags: u32,
    /// The map's name, at most 15 bytes.
    pub name: String,
    /// Number of possible CPUs the per-CPU layout uses.
    pub possible_cpus: u32,
    /// The BTF id of the map's BTF object, 0 when it has none.
    pub btf_id: u32,
    /// True when the map is frozen (no further syscall writes).
    pub frozen: bool,
}

impl MapInfo {
    /// The size of a batch cursor for this map: 4 (a bucket index) for hash maps, `key_size`
    /// for the generic (array) path.
    pub fn batch_cursor_size(&self) -> usize {
        if self.map_type.is_hash() {
            4
        } else {
            self.key_size as usize
        }
    }

    /// Size of the value buffer user space passes to lookup and update: for per-CPU maps
    /// `round_up(value_size, 8) × possible_cpus`, for a perf event array 4 (an fd), otherwise
    /// `value_size`.
    pub fn user_value_size(&self) -> usize {
        if self.map_type.is_percpu() {
            percpu_stride(self.value_size as usize) * self.possible_cpus as usize
        } else {
            self.value_size as usize
        }
    }
}

/// Why a map operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The engine refused the operation with this errno, as bpf(2) would.
    #[error("{0}")]
    Errno(Errno),
    /// The caller passed a key of the wrong length; nothing was sent to the engine.
    #[error("wrong key size: the map's keys are {expected} bytes, got {got}")]
    KeySize {
        /// The map's key size.
        expected: usize,
        /// The length passed.
        got: usize,
    },
    /// The caller passed a value buffer of the wrong length; nothing was sent to the engine.
    #[error("wrong value size: the map's values are {expected} bytes, got {got}")]
    ValueSize {
        /// The user-space value size ([`MapInfo::user_value_size`]).
        expected: usize,
        /// The length passed.
        got: usize,
    },
}

impl MapError {
    /// The errno, when the engine itself refused.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MapError::Errno(e) => Some(*e),
            _ => None,
        }
    }
}

impl From<Errno> for MapError {
    fn from(e: Errno) -> Self {
        MapError::Errno(e)
    }
}

/// The result of a map operation.
pub type MapResult<T> = Result<T, MapError>;

/// Buffers of a batch operation, as `attr.batch` carries them.
///
/// `keys` holds `count × key_size` bytes and `values` `count × user_value_size` bytes. `count`
/// is in/out exactly as in the kernel: on entry the capacity, on return the number processed,
/// also when the call fails (for example `ENOENT` at the end of a lookup batch).
#[derive(Debug)]
pub struct BatchBuffers<'a> {
    /// The keys (read for update and delete, written for lookups).
    pub keys: &'a mut [u8],
    /// The values (read for update, written for lookups; unused by delete).
    pub values: &'a mut [u8],
    /// Elements requested on entry, processed on return.
    pub count: u32,
}

impl BatchBuffers<'_> {
    /// Checks that `keys` holds `count` keys of `key_size` bytes and `values` holds `count`
    /// values of `value_size` bytes (0 for a delete batch, which reads no values).
    pub fn check_room(&self, key_size: usize, value_size: usize) -> MapResult<()> {
        let count = self.count as usize;
        let keys_needed = count.saturating_mul(key_size);
        if self.keys.len() < keys_needed {
            return Err(MapError::KeySize {
                expected: keys_needed,
                got: self.keys.len(),
            });
        }
        let values_needed = count.saturating_mul(value_size);
        if self.values.len() < values_needed {
            return Err(MapError::ValueSize {
                expected: values_needed,
                got: self.values.len(),
            });
        }
        Ok(())
    }
}

/// The byte-level operations of a map, with bpf(2) semantics, implemented by both engines.
///
/// Keys and values are the raw bytes user space sees. Every method checks buffer lengths before it
/// reaches the engine and returns [`MapError::KeySize`] / [`MapError::ValueSize`] when they are off,
/// except where the kernel itself defines the behaviour of an absent key (an empty `key` slice is
/// passed to the kernel as a NULL pointer).
pub trait MapOps: Send + Sync {
    /// Describes the map.
    fn info(&self) -> MapInfo;

    /// `BPF_MAP_LOOKUP_ELEM`: copies the value of `key` into `value`.
    fn lookup(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()>;

    /// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY`, `BPF_NOEXIST` or `BPF_EXIST` (and `BPF_F_LOCK`).
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()>;

    /// `BPF_MAP_DELETE_ELEM`.
    fn delete(&self, key: &[u8]) -> MapResult<()>;

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (or the first key when `key` is `None`) into
    /// `next_key`. `ENOENT` after the last key.
    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()>;

    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`: copies the value of `key` and removes it.
    fn lookup_and_delete(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()>;

    /// `BPF_MAP_LOOKUP_BATCH`. `in_batch` is the opaque cursor from a previous call (`None` to
    /// start); the next cursor is written to `out_batch`, whose length the engine defines
    /// ([`MapOps::batch_cursor_size`]). `buffers.count` is updated even on error.
    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()>;

    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`: like [`MapOps::lookup_batch`], removing what it returns.
    fn lookup_and_delete_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()>;

    /// `BPF_MAP_UPDATE_BATCH`: updates `buffers.count` elements in order, stopping at the first
    /// error; `buffers.count` becomes the number that succeeded.
    fn update_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()>;

    /// `BPF_MAP_DELETE_BATCH`: deletes `buffers.count` keys in order, stopping at the first
    /// error; `buffers.count` becomes the number that succeeded.
    fn delete_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()>;

    /// `BPF_MAP_FREEZE`: no syscall write succeeds afterwards (`EPERM`).
    fn freeze(&self) -> MapResult<()>;

    /// The size of a batch cursor: 4 (a bucket index) for hash maps, `key_size` for the generic
    /// (array) path.
    fn batch_cursor_size(&self) -> usize {
        self.info().batch_cursor_size()
    }
}

/// Checks that `key` and `value` have the lengths `info` calls for.
pub fn check_sizes(info: &MapInfo, key: Option<&[u8]>, value: Option<usize>) -> MapResult<()> {
    if let Some(key) = key {
        if key.len() != info.key_size as usize && !(key.is_empty() && info.key_size == 0) {
            return Err(MapError::KeySize {
                expected: info.key_size as usize,
                got: key.len(),
            });
        }
    }
    if let Some(len) = value {
        let expected = info.user_value_size();
        if len != expected {
            return Err(MapError::ValueSize { expected, got: len });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(map_type: MapType, value_size: u32) -> MapInfo {
        MapInfo {
            map_type,
            id: 1,
            key_size: 4,
            value_size,
            max_entries: 8,
            map_flags: 0,
            name: "m".into(),
            possible_cpus: 3,
            btf_id: 0,
            frozen: false,
        }
    }

    #[test]
    fn percpu_user_value_size_is_stride_times_cpus() {
        assert_eq!(info(MapType::PercpuHash, 4).user_value_size(), 24);
        assert_eq!(info(MapType::Hash, 4).user_value_size(), 4);
    }

    #[test]
    fn wrong_sizes_are_reported_before_the_engine() {
        let i = info(MapType::Hash, 8);
        assert_eq!(
            check_sizes(&i, Some(&[0; 2]), None),
            Err(MapError::KeySize {
                expected: 4,
                got: 2
            })
        );
        assert_eq!(
            check_sizes(&i, Some(&[0; 4]), Some(4)),
            Err(MapError::ValueSize {
                expected: 8,
                got: 4
            })
        );
        assert_eq!(check_sizes(&i, Some(&[0; 4]), Some(8)), Ok(()));
    }
}
