//! `BPF_MAP_TYPE_LRU_HASH` and `BPF_MAP_TYPE_LRU_PERCPU_HASH` in shared memory, with the kernel's
//! LRU algorithm (common LRU with per-CPU local lists, or `BPF_F_NO_COMMON_LRU` per-CPU lists),
//! so that the same operations evict the same keys as on the kernel.
//!
//! Owns the LRU map type ([`LruHashMap`]): creation rules ([`plan`]), the area's initialisation
//! ([`init`]) and the kernel's `map_ops` for these types as a [`Backend`] ([`open`]), including
//! the helper-side operations a program uses ([`Backend::helper_lookup`], which sets a node's
//! reference bit as an update that replaces a key does, while syscall lookups never do;
//! `helper_update`, `helper_delete`). The list algorithm lives in
//! `lru/table.rs`, the byte layout of the area in `lru/layout.rs`. It does not own the map file's
//! header, pinning, ids or the syscall-side permission checks ([`crate::UserMap`] does); for
//! tests and tools [`LruHashMap::create_anonymous`] makes a standalone map whose [`MapOps`]
//! applies the same syscall rules itself.
//!
//! # Which CPU an operation runs on
//!
//! The kernel takes a node from the *calling CPU's* lists. Helper-side operations take the CPU
//! explicitly (the CPU slot the program invocation owns). Syscall-side operations use the CPU the
//! calling thread is running on (`sched_getcpu`), like the kernel; tests that compare victims with
//! the kernel pin their thread to CPU 0 for both engines.
//!
//! # Concurrency and crashes
//!
//! One process-shared lock ([`crate::lock`], in the first 64 bytes of the area) guards the whole
//! area; the
//! kernel uses a global LRU lock, per-CPU local-list locks and bucket locks, and one lock gives the
//! same results for any sequence of whole operations. Elements become visible in one step: a new
//! element is written completely into a free node before one store links it at its bucket's head;
//! a replaced element is unlinked by one store after its replacement is linked. When a process
//! dies holding the lock, the next locker rebuilds every LRU list from the hash chains
//! (`Table::repair`), so no update that returned is lost and no node is leaked.
//!
//! # Deviations
//!
//! `BPF_F_ZERO_SEED` is accepted without a capability check (the kernel asks for CAP_SYS_ADMIN).
//! `ENOMEM` from a busy bucket lock cannot happen (one lock). Per-CPU padding bytes written by a
//! program's update are left as they were (the kernel copies `round_up(value_size, 8)` bytes from
//! the program's buffer).

mod layout;
mod table;

use std::any::Any;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;

use bpfmaps_abi::{
    map_flags, update_flags, BatchBuffers, Errno, MapDef, MapError, MapInfo, MapOps, MapResult,
    MapType,
};

pub use layout::{LruLayout, LruShape, NodeType, LRU_MAGIC};
pub use table::{
    target_free, Corrupt, LruCensus, LOCAL_FREE_TARGET, NR_SCANS, PERCPU_FREE_TARGET,
    PERCPU_NR_SCANS,
};

use crate::backend::{generic_delete_batch, generic_update_batch, start_bucket_batch};
use crate::backend::{Backend, MapFile, Plan, ValueRef};
use crate::header::{MapHeader, AREA_OFFSET};
use crate::lock::{self, LockGuard};
use crate::region::Region;
use crate::UserMapError;
use table::Table;

/// Flags an LRU hash map accepts at creation (`HTAB_CREATE_FLAG_MASK`).
const CREATE_FLAGS: u32 = map_flags::BPF_F_NO_PREALLOC
    | map_flags::BPF_F_NO_COMMON_LRU
    | map_flags::BPF_F_NUMA_NODE
    | map_flags::BPF_F_RDONLY
    | map_flags::BPF_F_WRONLY
    | map_flags::BPF_F_RDONLY_PROG
    | map_flags::BPF_F_WRONLY_PROG
    | map_flags::BPF_F_ZERO_SEED;

/// `KMALLOC_MAX_SIZE` on x86-64 (4 MiB) minus `sizeof(struct htab_elem)` (48): key plus value
/// must stay below it.
const MAX_KEY_PLUS_VALUE: u64 = (4 << 20) - 48;
/// `PCPU_MIN_UNIT_SIZE`: the largest per-CPU value slot.
const MAX_PERCPU_SLOT: u64 = 32768;

/// Checks an LRU hash map definition the way the kernel's `map_create` and
/// `htab_map_alloc_check`/`htab_map_alloc` do, in their order, and returns the shape of the map
/// (with `NO_COMMON_LRU`'s rounding of `max_entries` applied).
pub fn check_definition(def: &MapDef, possible_cpus: u32) -> Result<LruShape, Errno> {
    let flags = def.map_flags;
    let percpu_values = match def.map_type {
        MapType::LruHash => false,
        MapType::LruPercpuHash => true,
        _ => return Err(Errno::EINVAL),
    };
    if flags & map_flags::BPF_F_RDONLY != 0 && flags & map_flags::BPF_F_WRONLY != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & !CREATE_FLAGS != 0
        || (flags & map_flags::BPF_F_RDONLY_PROG != 0 && flags & map_flags::BPF_F_WRONLY_PROG != 0)
    {
        return Err(Errno::EINVAL);
    }
    let percpu_lru = flags & map_flags::BPF_F_NO_COMMON_LRU != 0;
    if flags & map_flags::BPF_F_NO_PREALLOC != 0 {
        return Err(Errno::ENOTSUPP);
    }
    if flags & map_flags::BPF_F_NUMA_NODE != 0 && (percpu_values || percpu_lru) {
        return Err(Errno::EINVAL);
    }
    if def.max_entries == 0 || def.key_size == 0 || def.value_size == 0 {
        return Err(Errno::EINVAL);
    }
    if u64::from(def.key_size) + u64::from(def.value_size) >= MAX_KEY_PLUS_VALUE {
        return Err(Errno::E2BIG);
    }
    if percpu_values && u64::from(def.value_size).div_ceil(8) * 8 > MAX_PERCPU_SLOT {
        return Err(Errno::E2BIG);
    }
    let cpus = possible_cpus.max(1);
    let mut nodes = def.max_entries;
    if percpu_lru {
        nodes = match def.max_entries.checked_next_multiple_of(cpus) {
            Some(up) => up,
            None => def.max_entries / cpus * cpus,
        };
    }
    // The bucket array must fit in u32 bytes (16-byte buckets): at most 2^27 entries.
    if nodes > 1 << 31 || nodes.next_power_of_two() > u32::MAX / 16 {
        return Err(Errno::E2BIG);
    }
    Ok(LruShape {
        key_size: def.key_size,
        value_size: def.value_size,
        nodes,
        cpus,
        percpu_lru,
        percpu_values,
    })
}

/// The CPU the calling thread runs on, reduced modulo `cpus` (0 when unknown): the CPU whose
/// lists a syscall-side update uses.
pub fn current_cpu(cpus: u32) -> u32 {
    crate::region::current_cpu().map_or(0, |c| table::reduce_cpu(c, cpus))
}

/// How many lock-free attempts a syscall lookup makes before it takes the lock.
const OPTIMISTIC_TRIES: u32 = 64;

/// The largest value a syscall lookup copies lock-free (through a stack scratch buffer); larger
/// values are read under the lock.
const OPTIMISTIC_VALUE_MAX: usize = 256;

/// The map lock held by a writer, with the sequence counter odd; dropping it makes the counter
/// even again (before the lock is released: `Drop` runs before the fields drop).
struct WriteGuard<'r> {
    lock: LockGuard<'r>,
    seq: &'r AtomicU32,
    /// The odd value this holder stored.
    odd: u32,
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.seq.store(self.odd.wrapping_add(1), Ordering::Release);
    }
}

/// A random 32-bit hash seed (the kernel's `get_random_u32`), from std's randomly keyed hasher.
fn random_seed() -> u32 {
    let bits = RandomState::new().hash_one(std::process::id());
    (bits ^ (bits >> 32)) as u32
}

/// The plan step: checks `def` with the kernel's rules and sizes the area.
pub fn plan(def: &MapDef, possible_cpus: u32) -> Result<Plan, Errno> {
    let shape = check_definition(def, possible_cpus)?;
    let nodes = shape.nodes;
    let layout = LruLayout::new(shape, AREA_OFFSET)?;
    let hash_seed = if def.map_flags & map_flags::BPF_F_ZERO_SEED != 0 {
        0
    } else {
        random_seed()
    };
    Ok(Plan {
        max_entries: nodes,
        area_size: layout.size as u64,
        hash_seed,
    })
}

fn corrupt(file: &MapFile, reason: impl Into<String>) -> UserMapError {
    UserMapError::Corrupt {
        path: format!("<{} map {}>", file.header.map_type, file.header.name),
        reason: reason.into(),
    }
}

/// The layout a map file's header describes, checked against the file.
fn layout_of(file: &MapFile) -> Result<LruLayout, UserMapError> {
    let h = &file.header;
    let def = MapDef {
        map_type: h.map_type,
        key_size: h.key_size,
        value_size: h.value_size,
        max_entries: h.max_entries,
        map_flags: h.map_flags,
        name: h.name.clone(),
    };
    let shape = check_definition(&def, h.possible_cpus)
        .map_err(|e| corrupt(file, format!("header describes an invalid LRU map: {e}")))?;
    if shape.nodes != h.max_entries {
        return Err(corrupt(
            file,
            "max_entries is not a multiple of the CPU count",
        ));
    }
    let layout = LruLayout::new(shape, AREA_OFFSET).map_err(|e| corrupt(file, e.to_string()))?;
    if AREA_OFFSET + layout.size > file.region.len() {
        return Err(corrupt(
            file,
            format!("the LRU area needs {} bytes", layout.size),
        ));
    }
    Ok(layout)
}

/// The init step: lays out a fresh, zeroed area (lock, lists, empty table).
pub fn init(file: &MapFile) -> Result<(), UserMapError> {
    let layout = layout_of(file)?;
    lock::init_lock(&file.region, layout.base)?;
    Table::new(&file.region, &layout)
        .populate()
        .map_err(|e| corrupt(file, e.to_string()))?;
    file.region
        .atomic_u32(layout.magic_at())
        .store(LRU_MAGIC, Ordering::Release);
    Ok(())
}

/// The open step: the [`Backend`] of an initialised LRU map file.
pub fn open(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    Ok(Box::new(LruHashMap::open(file)?))
}

/// Where an update's value comes from.
#[derive(Clone, Copy)]
enum ValueSource<'v> {
    /// The syscall side: the whole user-space value (every CPU's slot for per-CPU maps).
    User(&'v [u8]),
    /// A program on `cpu`: one `value_size` value for that CPU's slot.
    Program(&'v [u8], u32),
}

/// An LRU hash map (`LRU_HASH` or `LRU_PERCPU_HASH`) in a map file.
#[derive(Debug)]
pub struct LruHashMap {
    file: Arc<MapFile>,
    layout: LruLayout,
}

impl LruHashMap {
    /// Opens the LRU map in `file` (created by [`init`], possibly by another process).
    pub fn open(file: Arc<MapFile>) -> Result<LruHashMap, UserMapError> {
        let layout = layout_of(&file)?;
        if file
            .region
            .atomic_u32(layout.magic_at())
            .load(Ordering::Acquire)
            != LRU_MAGIC
        {
            return Err(corrupt(&file, "the LRU area is not initialised"));
        }
        Ok(LruHashMap { file, layout })
    }

    /// Creates a standalone map of `def` in an anonymous memory file (memfd), with id 0 and no
    /// registry entry: for tests, benchmarks and tools. Its [`MapOps`] applies the syscall
    /// layer's rules itself (sizes, flags, `BPF_F_RDONLY`/`WRONLY` from `def.map_flags`, frozen).
    pub fn create_anonymous(def: &MapDef, possible_cpus: u32) -> Result<LruHashMap, Errno> {
        let plan = plan(def, possible_cpus)?;
        let file =
            MapFile::create_anonymous(def, &plan, possible_cpus).map_err(|_| Errno::ENOMEM)?;
        init(&file).map_err(|e| e.errno().unwrap_or(Errno::ENOMEM))?;
        LruHashMap::open(Arc::new(file)).map_err(|e| e.errno().unwrap_or(Errno::EINVAL))
    }

    /// The region holding the map (for turning [`ValueRef`] offsets into addresses).
    pub fn region(&self) -> &Region {
        &self.file.region
    }

    /// The byte layout of the map's area.
    pub fn layout(&self) -> &LruLayout {
        &self.layout
    }

    /// The common LRU's refill batch for this map (`target_free`).
    pub fn target_free(&self) -> u32 {
        target_free(self.layout.shape.nodes, self.layout.shape.cpus)
    }

    fn region_ref(&self) -> &Region {
        &self.file.region
    }

    #[inline(always)]
    fn hash(&self, key: &[u8]) -> u32 {
        crate::jhash::htab_hash(key, self.file.header.hash_seed)
    }

    fn seq(&self) -> &AtomicU32 {
        self.region_ref().atomic_u32(self.layout.seq_at())
    }

    /// Takes the map lock and makes the sequence counter odd until the guard drops, so
    /// lock-free readers ([`LruHashMap::read_optimistic`]) retry around every change. Repairs
    /// the lists first when the previous holder died.
    #[inline(always)]
    fn lock(&self) -> Result<(WriteGuard<'_>, Table<'_>), Errno> {
        let lock = lock::lock(self.region_ref(), self.layout.base).map_err(|_| Errno::EBUSY)?;
        let seq = self.seq();
        // Only the lock holder writes the counter, so plain stores suffice. An odd value means
        // the previous holder died inside its section: skip past it to the next odd value.
        let current = seq.load(Ordering::Relaxed);
        let odd = if current & 1 == 1 {
            current.wrapping_add(2)
        } else {
            current.wrapping_add(1)
        };
        seq.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        let guard = WriteGuard { lock, seq, odd };
        let table = Table::new(self.region_ref(), &self.layout);
        if guard.lock.previous_owner_died() {
            table.repair()?;
        }
        Ok((guard, table))
    }

    /// Runs `read` on the table without the lock (as the kernel's lookups run under RCU),
    /// validated by the sequence counter; `None` when writers kept interfering for
    /// [`OPTIMISTIC_TRIES`] attempts (the caller then takes the lock). A result computed while
    /// a writer was active is discarded, so `read` may see a half-changed table: it must only
    /// read, through bounds-checked accessors, and copy nothing out before validation.
    fn read_optimistic<R>(&self, mut read: impl FnMut(&Table<'_>) -> R) -> Option<R> {
        let seq = self.seq();
        let table = Table::new(self.region_ref(), &self.layout);
        for _ in 0..OPTIMISTIC_TRIES {
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let result = read(&table);
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return Some(result);
            }
        }
        None
    }

    fn key_size(&self) -> usize {
        self.layout.shape.key_size as usize
    }

    fn user_value_size(&self) -> usize {
        if self.layout.shape.percpu_values {
            self.layout.slot_stride * self.layout.shape.cpus as usize
        } else {
            self.layout.shape.value_size as usize
        }
    }

    fn copy_out(&self, node: u32, out: &mut [u8]) {
        // Per-CPU values are contiguous slots of `slot_stride` bytes, padding included, exactly
        // the user-space layout; plain values are `value_size` bytes.
        self.region_ref().read(self.layout.value_at(node), out);
    }

    fn slot_at(&self, node: u32, cpu: u32) -> usize {
        self.layout.value_at(node) + self.layout.slot_stride * cpu as usize
    }

    /// The update of `htab_lru_map_update_elem` / `__htab_lru_percpu_map_update_elem`.
    fn update_elem(
        &self,
        key: &[u8],
        value: ValueSource<'_>,
        flags: u64,
        cpu: u32,
    ) -> Result<(), Errno> {
        if flags > update_flags::BPF_EXIST {
            return Err(Errno::EINVAL);
        }
        let hash = self.hash(key);
        let region = self.region_ref();
        let (_guard, table) = self.lock()?;
        let shape = &self.layout.shape;
        if shape.percpu_values {
            // LRU_PERCPU skips the node allocation for BPF_EXIST and updates in place.
            let fresh = if flags != update_flags::BPF_EXIST {
                let node = table.pop_free(hash, cpu)?.ok_or(Errno::ENOMEM)?;
                region.write(self.layout.key_at(node), key);
                Some(node)
            } else {
                None
            };
            let old = table.find(hash, key)?;
            if let Err(e) = check_flags(old.is_some(), flags) {
                if let Some(node) = fresh {
                    table.push_free(node)?;
                }
                return Err(e);
            }
            match (old, fresh) {
                (Some(old), fresh) => {
                    table.set_ref(old);
                    match value {
                        ValueSource::User(all) => region.write(self.layout.value_at(old), all),
                        ValueSource::Program(one, cpu) => region.write(self.slot_at(old, cpu), one),
                    }
                    if let Some(node) = fresh {
                        table.push_free(node)?;
                    }
                }
                (None, Some(node)) => {
                    match value {
                        ValueSource::User(all) => region.write(self.layout.value_at(node), all),
                        ValueSource::Program(one, cpu) => {
                            for slot in 0..shape.cpus {
                                if slot == cpu {
                                    region.write(self.slot_at(node, slot), one);
                                } else {
                                    region.fill(
                                        self.slot_at(node, slot),
                                        shape.value_size as usize,
                                        0,
                                    );
                                }
                            }
                        }
                    }
                    table.link_head(node);
                }
                (None, None) => return Err(Errno::ENOENT),
            }
            return Ok(());
        }
        // The node is taken before the bucket is searched: a failing update can still evict.
        let node = table.pop_free(hash, cpu)?.ok_or(Errno::ENOMEM)?;
        table.write_bytes(self.layout.key_at(node), key);
        let bytes = match value {
            ValueSource::User(v) | ValueSource::Program(v, _) => v,
        };
        table.write_bytes(self.layout.value_at(node), bytes);
        let old = table.find(hash, key)?;
        if let Err(e) = check_flags(old.is_some(), flags) {
            table.push_free(node)?;
            return Err(e);
        }
        table.link_head(node);
        if let Some(old) = old {
            table.set_ref(node);
            table.unlink(old)?;
            table.push_free(old)?;
        }
        Ok(())
    }

    fn delete_elem(&self, key: &[u8]) -> Result<(), Errno> {
        let hash = self.hash(key);
        let (_guard, table) = self.lock()?;
        let node = table.find(hash, key)?.ok_or(Errno::ENOENT)?;
        table.unlink(node)?;
        table.push_free(node)?;
        Ok(())
    }

    /// How many times the lists were rebuilt because a lock holder died (diagnostics).
    pub fn repairs(&self) -> u32 {
        self.region_ref()
            .atomic_u32(self.layout.repairs_at())
            .load(Ordering::Acquire)
    }

    /// Checks every structural invariant of the lists and the table (under the lock) and counts
    /// the nodes on each kind of list. For tests and map checking tools.
    pub fn census(&self) -> Result<LruCensus, String> {
        let (_guard, table) = self.lock().map_err(|e| e.to_string())?;
        table.check()
    }

    /// The keys in the table, in `get_next_key` order (bucket order, newest first in a bucket),
    /// without touching reference bits. Empty when the map cannot be locked or is corrupt.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.try_keys().unwrap_or_default()
    }

    /// [`LruHashMap::keys`], failing with `EFAULT` on a corrupt table.
    fn try_keys(&self) -> Result<Vec<Vec<u8>>, Errno> {
        let mut out = Vec::new();
        let (_guard, table) = self.lock()?;
        for bucket in 0..self.layout.n_buckets {
            let mut cur = table.bucket_first(bucket)?;
            let mut steps = 0;
            while let Some(node) = cur {
                table.chain_step(&mut steps)?;
                let mut key = vec![0u8; self.key_size()];
                self.region_ref().read(self.layout.key_at(node), &mut key);
                out.push(key);
                cur = table.chain_next(node)?;
            }
        }
        Ok(out)
    }

    /// The hash table's bucket-based lookup batch (`__htab_map_lookup_and_delete_batch`).
    fn batch_read(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
        delete: bool,
    ) -> MapResult<()> {
        let key_size = self.key_size();
        let value_size = self.user_value_size();
        let max = buffers.count as usize;
        let Some(mut bucket) = start_bucket_batch(
            in_batch,
            out_batch,
            buffers,
            (key_size, value_size),
            self.layout.n_buckets,
            elem_flags,
            flags,
        )?
        else {
            return Ok(());
        };
        let region = self.region_ref();
        let (_guard, table) = self.lock()?;
        let mut total = 0usize;
        let mut result = Ok(());
        let mut nodes = Vec::new();
        loop {
            nodes.clear();
            let mut cur = table.bucket_first(bucket)?;
            let mut steps = 0;
            while let Some(node) = cur {
                table.chain_step(&mut steps)?;
                nodes.push(node);
                cur = table.chain_next(node)?;
            }
            if nodes.len() > max - total {
                if total == 0 {
                    result = Err(Errno::ENOSPC);
                }
                break;
            }
            for (i, &node) in nodes.iter().enumerate() {
                let slot = total + i;
                region.read(
                    self.layout.key_at(node),
                    &mut buffers.keys[slot * key_size..][..key_size],
                );
                self.copy_out(node, &mut buffers.values[slot * value_size..][..value_size]);
            }
            if delete {
                // The kernel unlinks under the bucket lock, then frees last-unlinked first.
                for &node in &nodes {
                    table.unlink(node)?;
                }
                for &node in nodes.iter().rev() {
                    table.push_free(node)?;
                }
            }
            total += nodes.len();
            bucket += 1;
            if bucket >= self.layout.n_buckets {
                result = Err(Errno::ENOENT);
                break;
            }
        }
        out_batch[..4].copy_from_slice(&bucket.to_ne_bytes());
        buffers.count = total as u32;
        result.map_err(MapError::from)
    }

    /// The user-space value size the syscall-side checks expect.
    fn standalone_value_size(&self) -> usize {
        self.user_value_size()
    }

    crate::backend::standalone_syscall_checks!();
}

/// `check_flags` of `hashtab.c`: `EEXIST` for `BPF_NOEXIST` on an existing key, `ENOENT` for
/// `BPF_EXIST` on a missing one.
fn check_flags(exists: bool, flags: u64) -> Result<(), Errno> {
    let mode = flags & !update_flags::BPF_F_LOCK;
    if exists && mode == update_flags::BPF_NOEXIST {
        return Err(Errno::EEXIST);
    }
    if !exists && mode == update_flags::BPF_EXIST {
        return Err(Errno::ENOENT);
    }
    Ok(())
}

impl Backend for LruHashMap {
    fn lookup(&self, key: &[u8], value: &mut [u8]) -> MapResult<()> {
        // The syscall lookup (`htab_lru_map_lookup_elem_sys`) does not set the reference bit,
        // so it only reads: lock-free, into a scratch copy that counts only once validated.
        let hash = self.hash(key);
        let mut scratch = [0u8; OPTIMISTIC_VALUE_MAX];
        if let Some(copy) = scratch.get_mut(..value.len()) {
            let found = self.read_optimistic(|table| {
                let node = table.find(hash, key)?;
                if let Some(node) = node {
                    self.copy_out(node, copy);
                }
                Ok::<_, Corrupt>(node)
            });
            if let Some(found) = found {
                found?.ok_or(Errno::ENOENT)?;
                value.copy_from_slice(copy);
                return Ok(());
            }
        }
        let (_guard, table) = self.lock()?;
        let node = table.find(hash, key)?.ok_or(Errno::ENOENT)?;
        self.copy_out(node, value);
        Ok(())
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        let cpu = current_cpu(self.layout.shape.cpus);
        Ok(self.update_elem(key, ValueSource::User(value), flags, cpu)?)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        Ok(self.delete_elem(key)?)
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        let region = self.region_ref();
        let (_guard, table) = self.lock()?;
        let mut bucket = 0;
        if let Some(key) = key {
            let hash = self.hash(key);
            if let Some(node) = table.find(hash, key)? {
                if let Some(next) = table.chain_next(node)? {
                    region.read(self.layout.key_at(next), next_key);
                    return Ok(());
                }
                bucket = (hash & (self.layout.n_buckets - 1)) + 1;
            }
        }
        while bucket < self.layout.n_buckets {
            if let Some(node) = table.bucket_first(bucket)? {
                region.read(self.layout.key_at(node), next_key);
                return Ok(());
            }
            bucket += 1;
        }
        Err(Errno::ENOENT.into())
    }

    fn lookup_and_delete(&self, key: &[u8], value: &mut [u8]) -> MapResult<()> {
        let hash = self.hash(key);
        let (_guard, table) = self.lock()?;
        let node = table.find(hash, key)?.ok_or(Errno::ENOENT)?;
        self.copy_out(node, value);
        table.unlink(node)?;
        table.push_free(node)?;
        Ok(())
    }

    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.batch_read(in_batch, out_batch, buffers, elem_flags, flags, false)
    }

    fn lookup_and_delete_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.batch_read(in_batch, out_batch, buffers, elem_flags, flags, true)
    }

    fn update_batch(&self, buffers: &mut BatchBuffers<'_>, elem_flags: u64) -> MapResult<()> {
        generic_update_batch(
            self,
            self.key_size(),
            self.user_value_size(),
            buffers,
            elem_flags,
        )
    }

    fn delete_batch(&self, buffers: &mut BatchBuffers<'_>, elem_flags: u64) -> MapResult<()> {
        generic_delete_batch(self, self.key_size(), buffers, elem_flags)
    }

    /// A program's `bpf_map_lookup_elem` on `cpu`: sets the element's reference bit and returns
    /// where its value is (`cpu`'s slot for per-CPU maps). The value stays valid memory for the
    /// map's life; its contents belong to the key until the element is deleted or evicted, as in
    /// the kernel.
    fn helper_lookup(&self, key: &[u8], cpu: u32) -> Option<ValueRef> {
        if key.len() != self.key_size() {
            return None;
        }
        let hash = self.hash(key);
        let (_guard, table) = self.lock().ok()?;
        // A corrupt table reads as "not found": a helper has no error channel.
        let node = table.find(hash, key).ok()??;
        table.set_ref(node);
        let offset = if self.layout.shape.percpu_values {
            self.slot_at(node, cpu % self.layout.shape.cpus)
        } else {
            self.layout.value_at(node)
        };
        Some(ValueRef {
            offset,
            len: self.layout.shape.value_size as usize,
        })
    }

    /// A program's `bpf_map_update_elem` on `cpu` with a `value_size`-byte value. For per-CPU
    /// maps a new key gets `value` in `cpu`'s slot and zeros in the others; an existing key
    /// changes only `cpu`'s slot.
    fn helper_update(&self, key: &[u8], value: &[u8], flags: u64, cpu: u32) -> Result<(), Errno> {
        if key.len() != self.key_size() || value.len() != self.layout.shape.value_size as usize {
            return Err(Errno::EINVAL);
        }
        let cpu = cpu % self.layout.shape.cpus;
        self.update_elem(key, ValueSource::Program(value, cpu), flags, cpu)
    }

    fn helper_delete(&self, key: &[u8]) -> Result<(), Errno> {
        if key.len() != self.key_size() {
            return Err(Errno::EINVAL);
        }
        self.delete_elem(key)
    }

    fn for_each(
        &self,
        cpu: u32,
        callback: &mut dyn FnMut(&[u8], ValueRef) -> bool,
    ) -> Result<u32, Errno> {
        // Like the kernel's `bpf_for_each_hash_elem`: bucket order, no reference bits set. The
        // lock is not held across the callback (it may call back into the map).
        let mut calls = 0;
        for key in self.try_keys()? {
            let hash = self.hash(&key);
            let found = {
                let (_guard, table) = self.lock()?;
                table.find(hash, &key)?
            };
            let Some(node) = found else { continue };
            let offset = if self.layout.shape.percpu_values {
                self.slot_at(node, cpu % self.layout.shape.cpus)
            } else {
                self.layout.value_at(node)
            };
            calls += 1;
            if !callback(
                &key,
                ValueRef {
                    offset,
                    len: self.layout.shape.value_size as usize,
                },
            ) {
                break;
            }
        }
        Ok(calls)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl MapOps for LruHashMap {
    fn info(&self) -> MapInfo {
        self.file.header.info(self.region_ref())
    }

    crate::backend::standalone_elem_ops!();

    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.check_read()?;
        Backend::lookup_batch(self, in_batch, out_batch, buffers, elem_flags, flags)
    }

    fn lookup_and_delete_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.check_read()?;
        self.check_write()?;
        Backend::lookup_and_delete_batch(self, in_batch, out_batch, buffers, elem_flags, flags)
    }

    fn update_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        _flags: u64,
    ) -> MapResult<()> {
        self.check_write()?;
        Backend::update_batch(self, buffers, elem_flags)
    }

    fn delete_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        _flags: u64,
    ) -> MapResult<()> {
        self.check_write()?;
        Backend::delete_batch(self, buffers, elem_flags)
    }

    fn freeze(&self) -> MapResult<()> {
        self.check_write()?;
        if MapHeader::freeze(self.region_ref()) {
            Ok(())
        } else {
            Err(Errno::EPERM.into())
        }
    }
}
