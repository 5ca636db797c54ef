//! `BPF_MAP_TYPE_STACK_TRACE` in shared memory (`kernel/bpf/stackmap.c`): stack ids are
//! `jhash2(ips, nr * 2, 0) & (n_buckets - 1)`, each bucket holds at most one stack, and only
//! `max_entries` stack elements exist for `roundup_pow_of_two(max_entries)` buckets.
//!
//! Owns the stack map type ([`StackTraceMap`]): creation rules ([`plan`]), the area's layout
//! ([`init`], [`open`]), the syscall side as a [`Backend`] (lookup zero-fills, update `EINVAL`,
//! delete `E2BIG`/`ENOENT`, get_next_key in id order, lookup-and-delete, no batch operations),
//! and the helper side [`StackTraceMap::get_stackid`], which takes an already captured stack
//! (capturing the calling thread's stack is the interpreter's job). It does not own the map
//! file's header, ids or permission checks ([`crate::UserMap`] does).
//!
//! # Layout (version 1), offsets from the area's start ([`AREA_OFFSET`], 64-aligned)
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 64 | lock slot ([`crate::lock`]) guarding everything below |
//! | 64 | 4 | magic `STK1` ([`STACK_MAGIC`]) |
//! | 68 | 4 | number of elements on the free stack |
//! | 72 | 56 | reserved, zero |
//! | 128 | 4 × n_buckets | per bucket: 1 + the index of the element it holds, 0 when empty |
//! | … | 4 × max_entries | the free stack: element indices, the top at `count - 1` |
//! | … (8-aligned) | (8 + value_size) × max_entries | elements: `u32` hash, `u32` number of entries, then `value_size` bytes of entries |
//!
//! An element is filled completely while it is off every bucket and free stack, then published by
//! one store of its bucket word. When a process dies holding the lock, the next locker rebuilds
//! the free stack from the buckets (every element no bucket holds is free).
//!
//! # Build ids
//!
//! With `BPF_F_STACK_BUILD_ID` an entry is a 32-byte `struct bpf_stack_build_id` (`s32 status`,
//! 20 bytes of build id, `u64` ip at offset 24). The user engine has no build-id resolution: it
//! stores every frame as `BPF_STACK_BUILD_ID_IP` with the raw ip, which is what the kernel stores
//! for frames it cannot resolve.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bpfmaps_abi::map_type::stackid_flags;
use bpfmaps_abi::{map_flags, Errno, MapDef, MapInfo, MapOps, MapResult, MapType};

use crate::backend::{Backend, MapFile, Plan};
use crate::header::{MapHeader, AREA_OFFSET};
use crate::lock::{self, LockGuard, LOCK_SLOT_SIZE};
use crate::region::Region;
use crate::UserMapError;

/// "STK1" little-endian: marks an initialised stack trace area of layout version 1.
pub const STACK_MAGIC: u32 = u32::from_le_bytes(*b"STK1");

/// `kernel.perf_event_max_stack`'s default, used when the sysctl cannot be read.
pub const DEFAULT_MAX_STACK: u32 = 127;

/// Size of one build-id entry (`struct bpf_stack_build_id`).
pub const BUILD_ID_ENTRY_SIZE: u32 = 32;

/// `BPF_STACK_BUILD_ID_IP`: the entry holds a raw ip, no build id.
pub const BPF_STACK_BUILD_ID_IP: i32 = 2;

/// Flags a stack trace map accepts at creation (`STACK_CREATE_FLAG_MASK`).
const CREATE_FLAGS: u32 = map_flags::BPF_F_NUMA_NODE
    | map_flags::BPF_F_RDONLY
    | map_flags::BPF_F_WRONLY
    | map_flags::BPF_F_STACK_BUILD_ID;

/// Flags `bpf_get_stackid` accepts.
const STACKID_FLAGS: u64 = stackid_flags::BPF_F_SKIP_FIELD_MASK
    | stackid_flags::BPF_F_USER_STACK
    | stackid_flags::BPF_F_FAST_STACK_CMP
    | stackid_flags::BPF_F_REUSE_STACKID;

/// The kernel's `kernel.perf_event_max_stack` (the deepest stack a map value may hold).
pub fn perf_event_max_stack() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_STACK)
}

/// Checks a stack trace map definition the way `stack_map_alloc` does, in its order, with
/// `max_stack` as `kernel.perf_event_max_stack`.
pub fn check_definition(def: &MapDef, max_stack: u32) -> Result<(), Errno> {
    if def.map_type != MapType::StackTrace {
        return Err(Errno::EINVAL);
    }
    let flags = def.map_flags;
    if flags & map_flags::BPF_F_RDONLY != 0 && flags & map_flags::BPF_F_WRONLY != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & !CREATE_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    let value_size = def.value_size;
    if def.max_entries == 0 || def.key_size != 4 || value_size < 8 || !value_size.is_multiple_of(8)
    {
        return Err(Errno::EINVAL);
    }
    if flags & map_flags::BPF_F_STACK_BUILD_ID != 0 {
        if !value_size.is_multiple_of(BUILD_ID_ENTRY_SIZE)
            || value_size / BUILD_ID_ENTRY_SIZE > max_stack
        {
            return Err(Errno::EINVAL);
        }
    } else if value_size / 8 > max_stack {
        return Err(Errno::EINVAL);
    }
    if def.max_entries > 1 << 31 {
        return Err(Errno::E2BIG);
    }
    Ok(())
}

/// Byte offsets of a stack trace area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackLayout {
    /// Number of buckets: `roundup_pow_of_two(max_entries)`.
    pub n_buckets: u32,
    /// Number of stack elements: `max_entries`.
    pub elements: u32,
    /// Bytes of entries per element (the map's value_size).
    pub value_size: u32,
    /// Bytes of one stack entry: 8, or 32 with build ids.
    pub entry_size: u32,
    /// Offset of the area (its lock slot).
    pub base: usize,
    buckets: usize,
    free: usize,
    elems: usize,
    elem_stride: usize,
    /// Total bytes of the area.
    pub size: usize,
}

impl StackLayout {
    /// The layout of a map of `def` (already checked) at `base`.
    pub fn new(def: &MapDef, base: usize) -> Result<StackLayout, Errno> {
        let overflow = Errno::ENOMEM;
        let n_buckets = def
            .max_entries
            .checked_next_power_of_two()
            .ok_or(Errno::E2BIG)?;
        let entry_size = if def.map_flags & map_flags::BPF_F_STACK_BUILD_ID != 0 {
            BUILD_ID_ENTRY_SIZE
        } else {
            8
        };
        let buckets = base.checked_add(128).ok_or(overflow)?;
        let free = (n_buckets as usize)
            .checked_mul(4)
            .and_then(|b| buckets.checked_add(b))
            .ok_or(overflow)?;
        let elems = (def.max_entries as usize)
            .checked_mul(4)
            .and_then(|b| free.checked_add(b))
            .and_then(|e| e.checked_next_multiple_of(8))
            .ok_or(overflow)?;
        let elem_stride = (def.value_size as usize).checked_add(8).ok_or(overflow)?;
        let end = elem_stride
            .checked_mul(def.max_entries as usize)
            .and_then(|b| elems.checked_add(b))
            .and_then(|e| e.checked_next_multiple_of(64))
            .ok_or(overflow)?;
        Ok(StackLayout {
            n_buckets,
            elements: def.max_entries,
            value_size: def.value_size,
            entry_size,
            base,
            buckets,
            free,
            elems,
            elem_stride,
            size: end - base,
        })
    }

    fn magic_at(&self) -> usize {
        self.base + LOCK_SLOT_SIZE
    }
    fn free_count_at(&self) -> usize {
        self.base + LOCK_SLOT_SIZE + 4
    }
    fn bucket_at(&self, id: u32) -> usize {
        self.buckets + 4 * id as usize
    }
    fn free_at(&self, slot: u32) -> usize {
        self.free + 4 * slot as usize
    }
    fn elem_at(&self, elem: u32) -> usize {
        self.elems + self.elem_stride * elem as usize
    }
    fn data_at(&self, elem: u32) -> usize {
        self.elem_at(elem) + 8
    }
}

/// The plan step: checks `def` with the kernel's rules and sizes the area.
pub fn plan(def: &MapDef, _possible_cpus: u32) -> Result<Plan, Errno> {
    check_definition(def, perf_event_max_stack())?;
    let layout = StackLayout::new(def, AREA_OFFSET)?;
    Ok(Plan {
        max_entries: def.max_entries,
        area_size: layout.size as u64,
        hash_seed: 0,
    })
}

fn def_of(header: &MapHeader) -> MapDef {
    MapDef {
        map_type: header.map_type,
        key_size: header.key_size,
        value_size: header.value_size,
        max_entries: header.max_entries,
        map_flags: header.map_flags,
        name: header.name.clone(),
    }
}

fn corrupt(file: &MapFile, reason: impl Into<String>) -> UserMapError {
    UserMapError::Corrupt {
        path: format!("<stack_trace map {}>", file.header.name),
        reason: reason.into(),
    }
}

fn layout_of(file: &MapFile) -> Result<StackLayout, UserMapError> {
    let def = def_of(&file.header);
    // The max-stack limit applied at creation; an opener only needs the shape to be sane.
    check_definition(&def, u32::MAX)
        .map_err(|e| corrupt(file, format!("header describes an invalid stack map: {e}")))?;
    let layout = StackLayout::new(&def, AREA_OFFSET).map_err(|e| corrupt(file, e.to_string()))?;
    if AREA_OFFSET + layout.size > file.region.len() {
        return Err(corrupt(
            file,
            format!("the stack area needs {} bytes", layout.size),
        ));
    }
    Ok(layout)
}

/// The init step: lock, empty buckets and every element on the free stack.
pub fn init(file: &MapFile) -> Result<(), UserMapError> {
    let layout = layout_of(file)?;
    let region = &file.region;
    lock::init_lock(region, layout.base)?;
    for slot in 0..layout.elements {
        // The top of the stack (popped first) is element 0.
        region
            .atomic_u32(layout.free_at(slot))
            .store(layout.elements - 1 - slot, Ordering::Relaxed);
    }
    region
        .atomic_u32(layout.free_count_at())
        .store(layout.elements, Ordering::Relaxed);
    region
        .atomic_u32(layout.magic_at())
        .store(STACK_MAGIC, Ordering::Release);
    Ok(())
}

/// The open step: the [`Backend`] of an initialised stack trace map file.
pub fn open(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    Ok(Box::new(StackTraceMap::open(file)?))
}

/// A stack trace map in a map file.
#[derive(Debug)]
pub struct StackTraceMap {
    file: Arc<MapFile>,
    layout: StackLayout,
    max_stack: u32,
}

/// A view of the area while its lock is held.
struct Locked<'a> {
    region: &'a Region,
    layout: &'a StackLayout,
    _guard: LockGuard<'a>,
}

impl Locked<'_> {
    fn load(&self, off: usize) -> u32 {
        self.region.atomic_u32(off).load(Ordering::Relaxed)
    }

    fn store(&self, off: usize, value: u32) {
        self.region.atomic_u32(off).store(value, Ordering::Relaxed)
    }

    /// The element bucket `id` holds (validated against the layout).
    fn bucket(&self, id: u32) -> Option<u32> {
        let raw = self.load(self.layout.bucket_at(id));
        raw.checked_sub(1).filter(|&e| e < self.layout.elements)
    }

    fn set_bucket(&self, id: u32, elem: Option<u32>) {
        self.store(self.layout.bucket_at(id), elem.map_or(0, |e| e + 1))
    }

    fn pop_free(&self) -> Option<u32> {
        let count = self
            .load(self.layout.free_count_at())
            .min(self.layout.elements);
        let top = count.checked_sub(1)?;
        let elem = self.load(self.layout.free_at(top));
        self.store(self.layout.free_count_at(), top);
        (elem < self.layout.elements).then_some(elem)
    }

    fn push_free(&self, elem: u32) {
        let count = self
            .load(self.layout.free_count_at())
            .min(self.layout.elements);
        if count < self.layout.elements {
            self.store(self.layout.free_at(count), elem);
            self.store(self.layout.free_count_at(), count + 1);
        }
    }

    fn nr(&self, elem: u32) -> u32 {
        let max = self.layout.value_size / self.layout.entry_size;
        self.load(self.layout.elem_at(elem) + 4).min(max)
    }

    fn hash(&self, elem: u32) -> u32 {
        self.load(self.layout.elem_at(elem))
    }

    /// Rebuilds the free stack from the buckets after an owner died mid-operation.
    fn repair(&self) {
        let mut held = vec![false; self.layout.elements as usize];
        for id in 0..self.layout.n_buckets {
            if let Some(elem) = self.bucket(id) {
                if held[elem as usize] {
                    self.set_bucket(id, None);
                } else {
                    held[elem as usize] = true;
                }
            } else {
                self.set_bucket(id, None);
            }
        }
        let mut count = 0;
        for elem in (0..self.layout.elements).rev() {
            if !held[elem as usize] {
                self.store(self.layout.free_at(count), elem);
                count += 1;
            }
        }
        self.store(self.layout.free_count_at(), count);
    }
}

impl StackTraceMap {
    /// Opens the stack trace map in `file` (created by [`init`], possibly by another process).
    pub fn open(file: Arc<MapFile>) -> Result<StackTraceMap, UserMapError> {
        let layout = layout_of(&file)?;
        if file
            .region
            .atomic_u32(layout.magic_at())
            .load(Ordering::Acquire)
            != STACK_MAGIC
        {
            return Err(corrupt(&file, "the stack area is not initialised"));
        }
        Ok(StackTraceMap {
            file,
            layout,
            max_stack: perf_event_max_stack(),
        })
    }

    /// Creates a standalone map of `def` in an anonymous memory file (memfd), with id 0 and no
    /// registry entry: for tests and tools. Its [`MapOps`] applies the syscall layer's rules
    /// itself (sizes, flags, `BPF_F_RDONLY`/`WRONLY`, frozen).
    pub fn create_anonymous(def: &MapDef) -> Result<StackTraceMap, Errno> {
        let plan = plan(def, 1)?;
        let file = MapFile::create_anonymous(def, &plan, 1).map_err(|_| Errno::ENOMEM)?;
        init(&file).map_err(|e| e.errno().unwrap_or(Errno::ENOMEM))?;
        StackTraceMap::open(Arc::new(file)).map_err(|e| e.errno().unwrap_or(Errno::EINVAL))
    }

    /// The region holding the map.
    pub fn region(&self) -> &Region {
        &self.file.region
    }

    /// The area's layout.
    pub fn layout(&self) -> &StackLayout {
        &self.layout
    }

    /// Number of elements not holding a stack.
    pub fn free_elements(&self) -> Result<u32, Errno> {
        let locked = self.lock()?;
        Ok(locked.load(self.layout.free_count_at()))
    }

    fn lock(&self) -> Result<Locked<'_>, Errno> {
        let region = &self.file.region;
        let guard = lock::lock(region, self.layout.base).map_err(|_| Errno::EBUSY)?;
        let died = guard.previous_owner_died();
        let locked = Locked {
            region,
            layout: &self.layout,
            _guard: guard,
        };
        if died {
            locked.repair();
        }
        Ok(locked)
    }

    /// The entries an element of this map stores for `ips`: the raw ips, or build-id entries
    /// with status `BPF_STACK_BUILD_ID_IP`.
    fn encode(&self, ips: &[u64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ips.len() * self.layout.entry_size as usize);
        for &ip in ips {
            if self.layout.entry_size == BUILD_ID_ENTRY_SIZE {
                out.extend_from_slice(&BPF_STACK_BUILD_ID_IP.to_le_bytes());
                out.extend_from_slice(&[0u8; 20]);
            }
            out.extend_from_slice(&ip.to_le_bytes());
        }
        out
    }

    /// `bpf_get_stackid` with the stack already captured: `ips` is the whole captured stack,
    /// innermost frame first, of which the low 8 bits of `flags` skip that many frames. Returns
    /// the stack id, or the errno the helper returns negated:
    ///
    /// * `EINVAL`: a flag other than skip, `BPF_F_USER_STACK`, `BPF_F_FAST_STACK_CMP`,
    ///   `BPF_F_REUSE_STACKID`;
    /// * `EFAULT`: nothing left after skipping;
    /// * `EEXIST`: the id's bucket holds a different stack and `BPF_F_REUSE_STACKID` is not set;
    /// * `ENOMEM`: a new stack needs an element and all `max_entries` are in use.
    ///
    /// The stack is truncated to `value_size / entry_size + skip` frames (at most
    /// `perf_event_max_stack`), as the kernel's capture is.
    pub fn get_stackid(&self, ips: &[u64], flags: u64) -> Result<u32, Errno> {
        if flags & !STACKID_FLAGS != 0 {
            return Err(Errno::EINVAL);
        }
        let skip = (flags & stackid_flags::BPF_F_SKIP_FIELD_MASK) as usize;
        let max_depth = ((self.layout.value_size / self.layout.entry_size) as usize + skip)
            .min(self.max_stack as usize);
        let captured = &ips[..ips.len().min(max_depth)];
        if captured.len() <= skip {
            return Err(Errno::EFAULT);
        }
        let trace = &captured[skip..];
        let nr = trace.len() as u32;
        let mut raw = Vec::with_capacity(trace.len() * 8);
        for ip in trace {
            raw.extend_from_slice(&ip.to_le_bytes());
        }
        let hash = crate::jhash::jhash2(&raw, 0);
        let id = hash & (self.layout.n_buckets - 1);
        let region = &self.file.region;
        let locked = self.lock()?;
        let bucket = locked.bucket(id);
        let hash_matches = bucket.is_some_and(|e| locked.hash(e) == hash);
        if hash_matches && flags & stackid_flags::BPF_F_FAST_STACK_CMP != 0 {
            return Ok(id);
        }
        let data = self.encode(trace);
        let same = |elem: u32| {
            locked.nr(elem) == nr && region.bytes_equal(self.layout.data_at(elem), &data)
        };
        let new_elem = if self.layout.entry_size == BUILD_ID_ENTRY_SIZE {
            // Build-id maps pop an element before the slow compare.
            let elem = locked.pop_free().ok_or(Errno::ENOMEM)?;
            if hash_matches && bucket.is_some_and(same) {
                locked.push_free(elem);
                return Ok(id);
            }
            if bucket.is_some() && flags & stackid_flags::BPF_F_REUSE_STACKID == 0 {
                locked.push_free(elem);
                return Err(Errno::EEXIST);
            }
            elem
        } else {
            if hash_matches && bucket.is_some_and(same) {
                return Ok(id);
            }
            if bucket.is_some() && flags & stackid_flags::BPF_F_REUSE_STACKID == 0 {
                return Err(Errno::EEXIST);
            }
            locked.pop_free().ok_or(Errno::ENOMEM)?
        };
        region.write(self.layout.data_at(new_elem), &data);
        locked.store(self.layout.elem_at(new_elem), hash);
        locked.store(self.layout.elem_at(new_elem) + 4, nr);
        locked.set_bucket(id, Some(new_elem));
        if let Some(old) = bucket {
            locked.push_free(old);
        }
        Ok(id)
    }

    fn key_id(key: &[u8]) -> Result<u32, Errno> {
        match key {
            &[a, b, c, d] => Ok(u32::from_ne_bytes([a, b, c, d])),
            _ => Err(Errno::EINVAL),
        }
    }

    /// `bpf_stackmap_extract`: copies the stack of `key`'s id, zero-filling the rest of the value,
    /// and removes it when `delete`.
    fn extract(&self, key: &[u8], value: &mut [u8], delete: bool) -> MapResult<()> {
        let id = Self::key_id(key)?;
        if id >= self.layout.n_buckets {
            return Err(Errno::ENOENT.into());
        }
        let locked = self.lock()?;
        let elem = locked.bucket(id).ok_or(Errno::ENOENT)?;
        let len = ((locked.nr(elem) * self.layout.entry_size) as usize).min(value.len());
        self.file
            .region
            .read(self.layout.data_at(elem), &mut value[..len]);
        value[len..].fill(0);
        if delete {
            locked.set_bucket(id, None);
            locked.push_free(elem);
        }
        Ok(())
    }

    /// The user-space value size the syscall-side checks expect.
    fn standalone_value_size(&self) -> usize {
        self.layout.value_size as usize
    }

    crate::backend::standalone_syscall_checks!();
}

impl Backend for StackTraceMap {
    fn lookup(&self, key: &[u8], value: &mut [u8]) -> MapResult<()> {
        self.extract(key, value, false)
    }

    fn update(&self, _key: &[u8], _value: &[u8], _flags: u64) -> MapResult<()> {
        Err(Errno::EINVAL.into())
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        let id = Self::key_id(key)?;
        if id >= self.layout.n_buckets {
            return Err(Errno::E2BIG.into());
        }
        let locked = self.lock()?;
        let elem = locked.bucket(id).ok_or(Errno::ENOENT)?;
        locked.set_bucket(id, None);
        locked.push_free(elem);
        Ok(())
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        let locked = self.lock()?;
        let mut id = match key {
            None => 0,
            Some(key) => {
                let id = Self::key_id(key)?;
                if id >= self.layout.n_buckets || locked.bucket(id).is_none() {
                    0
                } else {
                    id + 1
                }
            }
        };
        while id < self.layout.n_buckets && locked.bucket(id).is_none() {
            id += 1;
        }
        if id >= self.layout.n_buckets {
            return Err(Errno::ENOENT.into());
        }
        next_key.copy_from_slice(&id.to_ne_bytes());
        Ok(())
    }

    fn lookup_and_delete(&self, key: &[u8], value: &mut [u8]) -> MapResult<()> {
        self.extract(key, value, true)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl MapOps for StackTraceMap {
    fn info(&self) -> MapInfo {
        self.file.header.info(&self.file.region)
    }

    crate::backend::standalone_elem_ops!();

    crate::backend::unsupported_batch_ops!(read: check_read, write: check_write);

    fn freeze(&self) -> MapResult<()> {
        self.check_write()?;
        if MapHeader::freeze(&self.file.region) {
            Ok(())
        } else {
            Err(Errno::EPERM.into())
        }
    }
}
