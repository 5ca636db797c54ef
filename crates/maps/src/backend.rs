//! The contract between [`crate::UserMap`] and the module implementing one map type, and the
//! kernel's generic batch paths that several types share.
//!
//! # How a map type plugs in
//!
//! A type module provides three things, wired up in `crate::usermap::plan_backend` and
//! `crate::usermap::open_backend` (one `match` arm each):
//!
//! 1. **plan**: validate a [`MapDef`] exactly as the kernel's `map_alloc_check`/`map_alloc` would
//!    (returning the kernel's errno) and size the type's area: a [`Plan`].
//! 2. **init**: lay out the area of a fresh, zero-filled file whose header is already written
//!    (initialise lock slots with [`crate::lock::init_lock`], write the type state). Runs before any
//!    other process can reach the file.
//! 3. **open**: build a [`Backend`] over a [`MapFile`] whose header was validated, re-deriving the
//!    layout from the header (never trusting offsets stored in the area) and checking it fits the
//!    file.
//!
//! [`crate::UserMap`] does the syscall layer (buffer sizes, `RDONLY`/`WRONLY` access, frozen maps,
//! `BPF_F_LOCK` on maps without a spin lock, the lookup flags check) before calling a [`Backend`],
//! so a backend implements only what the kernel's `map_ops` would. Unsupported operations keep the
//! default methods, which return `ENOTSUPP` (524) like a missing `map_ops` entry.

use std::any::Any;
use std::io;
use std::sync::Arc;

use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapResult};

use crate::header::{MapHeader, AREA_OFFSET};
use crate::region::{create_memfd, Region, RegionError};

/// An opened map file: the mapping and its validated header.
#[derive(Debug)]
pub struct MapFile {
    /// The shared mapping of the whole file.
    pub region: Region,
    /// The validated fixed header fields.
    pub header: MapHeader,
}

/// Why a standalone map file (one made outside the registry) could not be laid out.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// Creating the file failed.
    #[error("{call} failed: {source}")]
    Io {
        /// The call that failed (`memfd_create`).
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Mapping the file failed.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// `AREA_OFFSET + area_size` overflows.
    #[error("a map area of {area_size} bytes does not fit a file")]
    TooLarge {
        /// The type's area size.
        area_size: u64,
    },
}

impl MapFile {
    /// Lays out a standalone map of `def` (id 0, no registry entry) in a new anonymous memory
    /// file (memfd) sized by `plan`: maps it and writes the header. The type's area is left
    /// zeroed for the type's own `init`.
    pub fn create_anonymous(
        def: &MapDef,
        plan: &Plan,
        possible_cpus: u32,
    ) -> Result<MapFile, StandaloneError> {
        let file_size =
            (AREA_OFFSET as u64)
                .checked_add(plan.area_size)
                .ok_or(StandaloneError::TooLarge {
                    area_size: plan.area_size,
                })?;
        let memfd = create_memfd(file_size).map_err(|source| StandaloneError::Io {
            call: "memfd_create",
            source,
        })?;
        let region = Region::map(memfd)?;
        let header = MapHeader::new(
            def,
            plan.max_entries,
            possible_cpus,
            plan.hash_seed,
            file_size,
        );
        header.write(&region);
        Ok(MapFile { region, header })
    }
}

/// What map creation needs to know about a type, decided by its `plan` step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// max_entries as the map reports it (after the kernel's rounding, e.g. NO_COMMON_LRU).
    pub max_entries: u32,
    /// Bytes of the type's area (after the header page).
    pub area_size: u64,
    /// The hash seed to record in the header (0 for types without one).
    pub hash_seed: u32,
}

/// The location of a value inside the map's region, as the program side sees it.
///
/// The value lives at `region.base_ptr() + offset` for `len` bytes, for as long as the map is
/// open. For per-CPU maps it is one CPU's slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueRef {
    /// Byte offset of the value in the map's region.
    pub offset: usize,
    /// Length of the value in bytes (the map's value_size).
    pub len: usize,
}

/// The `ENOTSUPP` (524) result of an operation a map type does not have.
pub fn not_supported<T>() -> MapResult<T> {
    Err(MapError::Errno(Errno::ENOTSUPP))
}

/// A map type's implementation: the kernel's `map_ops` for one map, over shared memory.
///
/// Syscall-side methods take user-space buffers of checked sizes (see the module docs); helper-side
/// methods are what the interpreter calls for a program running as CPU `cpu`.
pub trait Backend: Send + Sync {
    /// `map_lookup_elem` from user space: copy the value (all CPUs' slots for per-CPU maps).
    fn lookup(&self, key: &[u8], value: &mut [u8]) -> MapResult<()>;

    /// `map_update_elem` from user space with the raw `flags`.
    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()>;

    /// `map_delete_elem`.
    fn delete(&self, key: &[u8]) -> MapResult<()>;

    /// `map_get_next_key`.
    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()>;

    /// `map_lookup_and_delete_elem` (flags already checked to be 0).
    fn lookup_and_delete(&self, _key: &[u8], _value: &mut [u8]) -> MapResult<()> {
        not_supported()
    }

    /// `map_lookup_batch`.
    fn lookup_batch(
        &self,
        _in_batch: Option<&[u8]>,
        _out_batch: &mut [u8],
        _buffers: &mut BatchBuffers<'_>,
        _elem_flags: u64,
        _flags: u64,
    ) -> MapResult<()> {
        not_supported()
    }

    /// `map_lookup_and_delete_batch`.
    fn lookup_and_delete_batch(
        &self,
        _in_batch: Option<&[u8]>,
        _out_batch: &mut [u8],
        _buffers: &mut BatchBuffers<'_>,
        _elem_flags: u64,
        _flags: u64,
    ) -> MapResult<()> {
        not_supported()
    }

    /// `map_update_batch`.
    fn update_batch(&self, _buffers: &mut BatchBuffers<'_>, _elem_flags: u64) -> MapResult<()> {
        not_supported()
    }

    /// `map_delete_batch`.
    fn delete_batch(&self, _buffers: &mut BatchBuffers<'_>, _elem_flags: u64) -> MapResult<()> {
        not_supported()
    }

    /// Helper `bpf_map_lookup_elem` from a program on CPU `cpu`: where the value is (this CPU's
    /// slot for per-CPU maps), `None` for a missing key (the helper's NULL).
    fn helper_lookup(&self, _key: &[u8], _cpu: u32) -> Option<ValueRef> {
        None
    }

    /// Helper `bpf_map_update_elem` from CPU `cpu`: `value` is one value_size slot.
    fn helper_update(
        &self,
        _key: &[u8],
        _value: &[u8],
        _flags: u64,
        _cpu: u32,
    ) -> Result<(), Errno> {
        Err(Errno::ENOTSUPP)
    }

    /// Helper `bpf_map_delete_elem`.
    fn helper_delete(&self, _key: &[u8]) -> Result<(), Errno> {
        Err(Errno::ENOTSUPP)
    }

    /// Helper `bpf_for_each_map_elem` from CPU `cpu`: calls `callback(key, value)` for each
    /// element in iteration order until it returns false; returns the number of calls.
    fn for_each(
        &self,
        _cpu: u32,
        _callback: &mut dyn FnMut(&[u8], ValueRef) -> bool,
    ) -> Result<u32, Errno> {
        Err(Errno::ENOTSUPP)
    }

    /// The backend as `Any`, for type-specific APIs (ring buffer reserve, perf output, ...).
    fn as_any(&self) -> &dyn Any;
}

/// The kernel's `elem_flags` check shared by every batch path: only 0 or `BPF_F_LOCK`, and
/// `BPF_F_LOCK` needs a spin lock in the value, which user-engine maps never have; so anything
/// but 0 is `EINVAL`.
pub fn check_batch_elem_flags(elem_flags: u64) -> MapResult<()> {
    if elem_flags != 0 {
        return Err(MapError::Errno(Errno::EINVAL));
    }
    Ok(())
}

/// The common start of the hash tables' bucket-based lookup batches (`HASH`, `PERCPU_HASH`, the
/// LRU types; kernel doc section 8): checks the flags, the room in `buffers` for their `count`
/// elements and the 4-byte cursors, and returns the bucket to start from (0 without `in_batch`).
/// `None` means there is nothing to do (`count` is 0). `buffers.count` is 0 on return, ready to
/// count what the batch copies; a cursor at or past `n_buckets` is `ENOENT`, as in the kernel.
pub fn start_bucket_batch(
    in_batch: Option<&[u8]>,
    out_batch: &[u8],
    buffers: &mut BatchBuffers<'_>,
    sizes: (usize, usize),
    n_buckets: u32,
    elem_flags: u64,
    flags: u64,
) -> MapResult<Option<u32>> {
    check_batch_elem_flags(elem_flags)?;
    if flags != 0 {
        return Err(Errno::EINVAL.into());
    }
    if buffers.count == 0 {
        return Ok(None);
    }
    buffers.check_room(sizes.0, sizes.1)?;
    if out_batch.len() < 4 {
        return Err(MapError::KeySize {
            expected: 4,
            got: out_batch.len(),
        });
    }
    buffers.count = 0;
    let bucket = match in_batch {
        Some(&[a, b, c, d, ..]) => u32::from_ne_bytes([a, b, c, d]),
        Some(short) => {
            return Err(MapError::KeySize {
                expected: 4,
                got: short.len(),
            })
        }
        None => 0,
    };
    if bucket >= n_buckets {
        return Err(Errno::ENOENT.into());
    }
    Ok(Some(bucket))
}

fn batch_slices<'b>(
    buffers: &'b mut BatchBuffers<'_>,
    key_size: usize,
    value_size: usize,
) -> MapResult<(&'b mut [u8], &'b mut [u8], u32)> {
    buffers.check_room(key_size, value_size)?;
    let count = buffers.count;
    let keys_needed = count as usize * key_size;
    let values_needed = count as usize * value_size;
    Ok((
        &mut buffers.keys[..keys_needed],
        &mut buffers.values[..values_needed],
        count,
    ))
}

/// The kernel's `generic_map_lookup_batch`: walks with get_next_key from the key in `in_batch`,
/// copies up to `count` elements, writes the last key returned to `out_batch` (only when at least
/// one element was copied) and ends with `ENOENT` when the walk ran off the end.
pub fn generic_lookup_batch(
    backend: &dyn Backend,
    key_size: usize,
    value_size: usize,
    in_batch: Option<&[u8]>,
    out_batch: &mut [u8],
    buffers: &mut BatchBuffers<'_>,
    elem_flags: u64,
) -> MapResult<()> {
    check_batch_elem_flags(elem_flags)?;
    if buffers.count == 0 {
        return Ok(());
    }
    if let Some(prev) = in_batch {
        if prev.len() != key_size {
            return Err(MapError::KeySize {
                expected: key_size,
                got: prev.len(),
            });
        }
    }
    if out_batch.len() < key_size {
        return Err(MapError::KeySize {
            expected: key_size,
            got: out_batch.len(),
        });
    }
    let (keys, values, max_count) = batch_slices(buffers, key_size, value_size)?;
    let mut prev: Option<Vec<u8>> = in_batch.map(<[u8]>::to_vec);
    let mut key = vec![0u8; key_size];
    let mut copied = 0u32;
    let mut result = Ok(());
    let mut retries = 3u32;
    while copied < max_count {
        if let Err(e) = backend.get_next_key(prev.as_deref(), &mut key) {
            result = Err(e);
            break;
        }
        let at = copied as usize;
        match backend.lookup(&key, &mut values[at * value_size..(at + 1) * value_size]) {
            Ok(()) => {}
            Err(MapError::Errno(Errno::ENOENT)) if retries > 0 => {
                retries -= 1;
                continue;
            }
            Err(MapError::Errno(Errno::ENOENT)) => {
                result = Err(MapError::Errno(Errno::EINTR));
                break;
            }
            Err(e) => {
                buffers.count = 0;
                return Err(e);
            }
        }
        keys[at * key_size..(at + 1) * key_size].copy_from_slice(&key);
        prev = Some(key.clone());
        retries = 3;
        copied += 1;
    }
    buffers.count = copied;
    if copied > 0 {
        if let Some(last) = &prev {
            out_batch[..key_size].copy_from_slice(last);
        }
    }
    result
}

/// The kernel's `generic_map_update_batch`: `BPF_ANY` updates in order, stopping at the first
/// error; `count` becomes the number that succeeded.
pub fn generic_update_batch(
    backend: &dyn Backend,
    key_size: usize,
    value_size: usize,
    buffers: &mut BatchBuffers<'_>,
    elem_flags: u64,
) -> MapResult<()> {
    check_batch_elem_flags(elem_flags)?;
    if buffers.count == 0 {
        return Ok(());
    }
    let (keys, values, max_count) = batch_slices(buffers, key_size, value_size)?;
    let mut done = 0u32;
    let mut result = Ok(());
    for i in 0..max_count as usize {
        let key = &keys[i * key_size..(i + 1) * key_size];
        let value = &values[i * value_size..(i + 1) * value_size];
        if let Err(e) = backend.update(key, value, elem_flags) {
            result = Err(e);
            break;
        }
        done += 1;
    }
    buffers.count = done;
    result
}

/// The kernel's `generic_map_delete_batch`: deletes in order, stopping at the first error;
/// `count` becomes the number that succeeded.
pub fn generic_delete_batch(
    backend: &dyn Backend,
    key_size: usize,
    buffers: &mut BatchBuffers<'_>,
    elem_flags: u64,
) -> MapResult<()> {
    check_batch_elem_flags(elem_flags)?;
    if buffers.count == 0 {
        return Ok(());
    }
    let (keys, _, max_count) = batch_slices(buffers, key_size, 0)?;
    let mut done = 0u32;
    let mut result = Ok(());
    for i in 0..max_count as usize {
        if let Err(e) = backend.delete(&keys[i * key_size..(i + 1) * key_size]) {
            result = Err(e);
            break;
        }
        done += 1;
    }
    buffers.count = done;
    result
}

/// The signature of a type's plan step (see the module docs).
pub type PlanFn = fn(&MapDef, u32) -> Result<Plan, Errno>;

/// The signature of a type's init step.
pub type InitFn = fn(&MapFile) -> Result<(), crate::UserMapError>;

/// The signature of a type's open step.
pub type OpenFn = fn(Arc<MapFile>) -> Result<Box<dyn Backend>, crate::UserMapError>;

/// The syscall layer's checks of a standalone map (one used through its own [`MapOps`] rather
/// than a [`crate::UserMap`]): buffer lengths (as [`bpfmaps_abi::check_sizes`], without building a
/// `MapInfo` on the hot path), `EPERM` for writes to a `BPF_F_RDONLY` or frozen map and for reads
/// of a `BPF_F_WRONLY` one. Expands, inside the type's inherent `impl`, to `check_lengths`,
/// `check_write` and `check_read`; the type has `file: Arc<MapFile>` and a
/// `fn standalone_value_size(&self) -> usize`.
macro_rules! standalone_syscall_checks {
    () => {
        fn check_lengths(
            &self,
            key: Option<&[u8]>,
            value: Option<usize>,
        ) -> ::bpfmaps_abi::MapResult<()> {
            let key_size = self.file.header.key_size as usize;
            if let Some(key) = key {
                if key.len() != key_size {
                    return Err(::bpfmaps_abi::MapError::KeySize {
                        expected: key_size,
                        got: key.len(),
                    });
                }
            }
            if let Some(len) = value {
                let expected = self.standalone_value_size();
                if len != expected {
                    return Err(::bpfmaps_abi::MapError::ValueSize { expected, got: len });
                }
            }
            Ok(())
        }

        fn check_write(&self) -> ::bpfmaps_abi::MapResult<()> {
            if self.file.header.map_flags & ::bpfmaps_abi::map_flags::BPF_F_RDONLY != 0
                || $crate::header::MapHeader::frozen(&self.file.region)
            {
                return Err(::bpfmaps_abi::Errno::EPERM.into());
            }
            Ok(())
        }

        fn check_read(&self) -> ::bpfmaps_abi::MapResult<()> {
            if self.file.header.map_flags & ::bpfmaps_abi::map_flags::BPF_F_WRONLY != 0 {
                return Err(::bpfmaps_abi::Errno::EPERM.into());
            }
            Ok(())
        }
    };
}
pub(crate) use standalone_syscall_checks;

/// The element operations of a standalone map's [`MapOps`] (lookup, update, delete,
/// get_next_key, lookup_and_delete): the checks of [`standalone_syscall_checks`] in the kernel's
/// order (lengths, then bad lookup flags, then access, then `BPF_F_LOCK`, which no standalone map
/// supports), then the type's [`Backend`]. Used inside an `impl MapOps for ...` block.
macro_rules! standalone_elem_ops {
    () => {
        fn lookup(&self, key: &[u8], value: &mut [u8], flags: u64) -> ::bpfmaps_abi::MapResult<()> {
            self.check_lengths(Some(key), Some(value.len()))?;
            if flags & !::bpfmaps_abi::update_flags::BPF_F_LOCK != 0 {
                return Err(::bpfmaps_abi::Errno::EINVAL.into());
            }
            self.check_read()?;
            if flags != 0 {
                return Err(::bpfmaps_abi::Errno::EINVAL.into());
            }
            $crate::backend::Backend::lookup(self, key, value)
        }

        fn update(&self, key: &[u8], value: &[u8], flags: u64) -> ::bpfmaps_abi::MapResult<()> {
            self.check_lengths(Some(key), Some(value.len()))?;
            self.check_write()?;
            if flags & ::bpfmaps_abi::update_flags::BPF_F_LOCK != 0 {
                return Err(::bpfmaps_abi::Errno::EINVAL.into());
            }
            $crate::backend::Backend::update(self, key, value, flags)
        }

        fn delete(&self, key: &[u8]) -> ::bpfmaps_abi::MapResult<()> {
            self.check_lengths(Some(key), None)?;
            self.check_write()?;
            $crate::backend::Backend::delete(self, key)
        }

        fn get_next_key(
            &self,
            key: Option<&[u8]>,
            next_key: &mut [u8],
        ) -> ::bpfmaps_abi::MapResult<()> {
            self.check_lengths(key, None)?;
            self.check_lengths(Some(next_key), None)?;
            self.check_read()?;
            $crate::backend::Backend::get_next_key(self, key, next_key)
        }

        fn lookup_and_delete(
            &self,
            key: &[u8],
            value: &mut [u8],
            flags: u64,
        ) -> ::bpfmaps_abi::MapResult<()> {
            self.check_lengths(Some(key), Some(value.len()))?;
            if flags & !::bpfmaps_abi::update_flags::BPF_F_LOCK != 0 {
                return Err(::bpfmaps_abi::Errno::EINVAL.into());
            }
            self.check_write()?;
            self.check_read()?;
            if flags != 0 {
                return Err(::bpfmaps_abi::Errno::EINVAL.into());
            }
            $crate::backend::Backend::lookup_and_delete(self, key, value)
        }
    };
}
pub(crate) use standalone_elem_ops;

/// Writes [`bpfmaps_abi::MapOps`]'s four batch operations for a map type the kernel gives no
/// batch support (`ENOTSUPP`, 524), after the access checks the syscall layer makes first:
/// `read` (a method returning `MapResult<()>`, optional) before the lookups, `write` before the
/// operations that change the map. Used inside an `impl MapOps for ...` block.
macro_rules! unsupported_batch_ops {
    (write: $write:ident) => {
        $crate::backend::unsupported_batch_ops!(@ops [] [$write]);
    };
    (read: $read:ident, write: $write:ident) => {
        $crate::backend::unsupported_batch_ops!(@ops [$read] [$write]);
    };
    (@ops [$($read:ident)?] [$write:ident]) => {
        fn lookup_batch(
            &self,
            _in_batch: Option<&[u8]>,
            _out_batch: &mut [u8],
            _buffers: &mut ::bpfmaps_abi::BatchBuffers<'_>,
            _elem_flags: u64,
            _flags: u64,
        ) -> ::bpfmaps_abi::MapResult<()> {
            $(self.$read()?;)?
            Err(::bpfmaps_abi::MapError::Errno(::bpfmaps_abi::Errno::ENOTSUPP))
        }

        fn lookup_and_delete_batch(
            &self,
            _in_batch: Option<&[u8]>,
            _out_batch: &mut [u8],
            _buffers: &mut ::bpfmaps_abi::BatchBuffers<'_>,
            _elem_flags: u64,
            _flags: u64,
        ) -> ::bpfmaps_abi::MapResult<()> {
            $(self.$read()?;)?
            self.$write()?;
            Err(::bpfmaps_abi::MapError::Errno(::bpfmaps_abi::Errno::ENOTSUPP))
        }

        fn update_batch(
            &self,
            _buffers: &mut ::bpfmaps_abi::BatchBuffers<'_>,
            _elem_flags: u64,
            _flags: u64,
        ) -> ::bpfmaps_abi::MapResult<()> {
            self.$write()?;
            Err(::bpfmaps_abi::MapError::Errno(::bpfmaps_abi::Errno::ENOTSUPP))
        }

        fn delete_batch(
            &self,
            _buffers: &mut ::bpfmaps_abi::BatchBuffers<'_>,
            _elem_flags: u64,
            _flags: u64,
        ) -> ::bpfmaps_abi::MapResult<()> {
            self.$write()?;
            Err(::bpfmaps_abi::MapError::Errno(::bpfmaps_abi::Errno::ENOTSUPP))
        }
    };
}
pub(crate) use unsupported_batch_ops;
