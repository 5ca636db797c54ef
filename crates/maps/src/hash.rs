//! HASH and PERCPU_HASH maps in shared memory: the kernel's bucket structure (`n_buckets =
//! roundup_pow_of_two(max_entries)`, `jhash`/`jhash2` with a per-map seed, new elements at the
//! bucket head), a preallocated element pool with a free list, and crash recovery.
//!
//! Owns the hash area layout and every hash-map rule of the kernel doc (sections 2.1–2.4, 8). Does
//! not handle LRU types (`lru.rs`).
//!
//! # Area layout
//!
//! Derived from the header alone (`n_buckets`, `n_stripes`, element size), never stored:
//!
//! | where | what |
//! |---|---|
//! | type state +0 (u64, atomic) | free-list head: tag << 32 \| (element index + 1), 0 = empty |
//! | type state +8 (u32, atomic) | number of keys in the map |
//! | type state +12 (u32, atomic) | bump: elements with index < bump were handed out at least once |
//! | type state +16 (u32, atomic) | needs-recovery flag |
//! | type state +20 (u32, atomic) | number of recoveries run (diagnostics) |
//! | area + 0 | `n_buckets` u32 bucket heads (element index + 1, 0 = empty), padded to 64 |
//! | then | `n_stripes` 64-byte stripe slots; bucket `b` belongs to stripe `b & (n_stripes - 1)` (`n_stripes` is a power of two). A slot is the stripe's lock (bytes 0..16, [`crate::lock`]), its sequence counter (u32 at 48) and its spare element (u32 at 56: element index + 1, 0 = none) |
//! | then | `n_elems = max_entries + n_stripes` elements of `elem_size` bytes |
//!
//! An element is `next: u32` (index + 1 of the next element in its bucket or in the free list),
//! `hash: u32`, the key padded to 8 bytes, then the value: `round_up(value_size, 8)` bytes, or for
//! PERCPU_HASH `round_up(value_size, 8) × possible_cpus` bytes in CPU order (the user-space layout).
//!
//! Because links are indices + 1 and a fresh file is all zeros, a new map needs no initialisation
//! beyond its locks; elements come from the free list when it is not empty, else from the bump
//! counter.
//!
//! # Concurrency and crashes
//!
//! Every change to a bucket holds its stripe lock, and the stripe's sequence counter is odd while
//! the lock is held. Lookups (syscall and helper) first read without the lock and keep the result
//! only when the counter was even and unchanged across the read (a seqlock; walks are bounded and
//! links validated, so racing with a writer only costs a retry), and take the lock after
//! 64 failed attempts. `count`, `bump` and the free list are lock-free: `count`
//! is claimed by one atomic update, elements are popped and pushed by compare-and-swap on a
//! tagged head (the tag defeats ABA), and every pool operation happens while the caller holds a
//! stripe lock. Each change becomes visible in one atomic store:
//!
//! * insert: the element is taken from the pool and filled while unreachable, then published by
//!   storing the bucket head;
//! * replace (HASH): the new element is published at the head (from then on lookups see the new
//!   value), then the old one is unlinked by one store and returned to the pool. Like the
//!   kernel's per-CPU `extra_elems`, each stripe keeps one spare element (read and written only
//!   under the stripe lock): a replace takes the new element from the spare when there is one
//!   (emptying the slot first) and parks the old one there when the slot is empty, so a
//!   steady stream of replaces needs no free-list operation;
//! * delete: one store unlinks the element, then it is returned to the pool;
//! * the free list is a stack: push writes the element's link and then swaps the head; pop swaps
//!   the head.
//!
//! A process killed between those steps can leave a leaked element, a wrong count or (between
//! publishing a replacement and unlinking the old element) the old element behind the new one in
//! the same bucket, and its stripe's counter odd. Whoever next takes a lock whose owner died sets
//! the needs-recovery flag; the next operation then takes every stripe lock (so no live process is
//! between taking an element and publishing it) and rebuilds: walks all buckets (cutting invalid links),
//! drops any older duplicate of a key, recounts the keys, empties every stripe's spare slot and
//! rebuilds the free list from the elements that are not reachable, and makes every sequence counter even. An update that
//! returned success was already published, so it survives.
//!
//! # Program-side value lifetime
//!
//! [`Backend::helper_lookup`] returns the offset of the value inside the element. Elements are never
//! freed to the OS, so that memory stays valid while the map lives. As in the kernel's preallocated
//! hash maps, a deleted or replaced element returns to the pool and may be reused for another key:
//! a program holding the value of a key that is concurrently deleted can see another key's value
//! later. The user engine guarantees exactly what the kernel does: valid memory, not a stable key.

use std::any::Any;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use bpfmaps_abi::cpus::percpu_stride;
use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::update_flags::{BPF_EXIST, BPF_NOEXIST};
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapResult, MapType};

use crate::backend::{
    generic_delete_batch, generic_update_batch, start_bucket_batch, Backend, MapFile, Plan,
    ValueRef,
};
use crate::header::{AREA_OFFSET, TYPE_STATE_OFFSET};
use crate::jhash::htab_hash;
use crate::lock::{init_lock, lock, lock_words, LockError, LockGuard, LOCK_SLOT_SIZE};
use crate::region::{read_words, words_equal, write_words};

/// A held stripe lock whose sequence counter is odd while held: optimistic readers of the
/// stripe's buckets retry until it is released.
struct BucketGuard<'r> {
    _lock: LockGuard<'r>,
    seq: &'r AtomicU32,
}

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        // Even again: publishes every change made under the lock to validated readers. Runs
        // before the lock itself is released (fields drop after this body). Only the holder of
        // the stripe lock writes the counter, so a plain load and store (no locked
        // read-modify-write) is enough.
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Release);
    }
}
use crate::UserMapError;

const FREE_HEAD: usize = TYPE_STATE_OFFSET;
const COUNT: usize = TYPE_STATE_OFFSET + 8;
const BUMP: usize = TYPE_STATE_OFFSET + 12;
const NEEDS_RECOVERY: usize = TYPE_STATE_OFFSET + 16;
const RECOVERIES: usize = TYPE_STATE_OFFSET + 20;
/// Offset of a stripe's sequence counter inside its lock slot (after the lock's 16 bytes).
const STRIPE_SEQ: usize = 48;
/// Offset of a stripe's spare element (index + 1, 0 = none) inside its lock slot.
const STRIPE_SPARE: usize = 56;
/// Optimistic read attempts before a lookup takes the stripe lock.
const OPTIMISTIC_TRIES: u32 = 64;
const ELEM_HEADER: usize = 8;
/// Most bucket lock stripes a map gets.
const MAX_STRIPES: u32 = 256;
/// KMALLOC_MAX_SIZE on x86-64 (4 MiB) minus sizeof(struct htab_elem) (48).
const KEY_VALUE_LIMIT: u64 = (4 << 20) - 48;
/// PCPU_MIN_UNIT_SIZE.
const PCPU_MIN_UNIT_SIZE: usize = 32768;

const HTAB_CREATE_FLAG_MASK: u32 = BPF_F_NO_PREALLOC
    | BPF_F_NO_COMMON_LRU
    | BPF_F_NUMA_NODE
    | BPF_F_RDONLY
    | BPF_F_WRONLY
    | BPF_F_RDONLY_PROG
    | BPF_F_WRONLY_PROG
    | BPF_F_ZERO_SEED;

fn round8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// The hash area layout of a map, derived from its header.
#[derive(Clone, Copy, Debug)]
struct Layout {
    key_size: usize,
    value_size: usize,
    percpu: bool,
    cpus: usize,
    slot_stride: usize,
    key_stride: usize,
    max_entries: u32,
    seed: u32,
    n_buckets: u32,
    n_stripes: u32,
    n_elems: u32,
    elem_size: usize,
    buckets_off: usize,
    stripes_off: usize,
    elems_off: usize,
    end: u64,
    /// Word indices from `TYPE_STATE_OFFSET` ([`Words`]): bucket heads, stripe slots, elements.
    heads_w: usize,
    stripes_w: usize,
    elems_w: usize,
    /// Words per element, and the value's first word inside an element.
    elem_words: usize,
    value_w: usize,
    /// Words from `TYPE_STATE_OFFSET` to `end`.
    words_len: usize,
}

impl Layout {
    fn new(
        map_type: MapType,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        cpus: u32,
        seed: u32,
    ) -> Option<Layout> {
        let percpu = map_type == MapType::PercpuHash;
        let n_buckets = max_entries.checked_next_power_of_two()?;
        let n_stripes = n_buckets.min(MAX_STRIPES);
        let key_stride = round8(u64::from(key_size));
        let slot_stride = round8(u64::from(value_size));
        let value_len = if percpu {
            slot_stride.checked_mul(u64::from(cpus))?
        } else {
            slot_stride
        };
        let elem_size = (ELEM_HEADER as u64)
            .checked_add(key_stride)?
            .checked_add(value_len)?;
        let n_elems = max_entries.checked_add(n_stripes)?;
        let buckets_off = AREA_OFFSET as u64;
        let stripes_off = buckets_off + (u64::from(n_buckets) * 4).div_ceil(64) * 64;
        let elems_off = stripes_off + u64::from(n_stripes) * LOCK_SLOT_SIZE as u64;
        let end = elems_off.checked_add(u64::from(n_elems).checked_mul(elem_size)?)?;
        Some(Layout {
            key_size: key_size as usize,
            value_size: value_size as usize,
            percpu,
            cpus: cpus as usize,
            slot_stride: usize::try_from(slot_stride).ok()?,
            key_stride: usize::try_from(key_stride).ok()?,
            max_entries,
            seed,
            n_buckets,
            n_stripes,
            n_elems,
            elem_size: usize::try_from(elem_size).ok()?,
            buckets_off: usize::try_from(buckets_off).ok()?,
            stripes_off: usize::try_from(stripes_off).ok()?,
            elems_off: usize::try_from(elems_off).ok()?,
            end,
            heads_w: (usize::try_from(buckets_off).ok()? - TYPE_STATE_OFFSET) / 4,
            stripes_w: (usize::try_from(stripes_off).ok()? - TYPE_STATE_OFFSET) / 4,
            elems_w: (usize::try_from(elems_off).ok()? - TYPE_STATE_OFFSET) / 4,
            elem_words: usize::try_from(elem_size / 4).ok()?,
            value_w: (ELEM_HEADER + usize::try_from(key_stride).ok()?) / 4,
            words_len: usize::try_from((end - TYPE_STATE_OFFSET as u64) / 4).ok()?,
        })
    }

    /// Bytes of a value as user space sees it.
    fn user_value_len(&self) -> usize {
        if self.percpu {
            self.slot_stride * self.cpus
        } else {
            self.value_size
        }
    }

    fn bucket_off(&self, bucket: u32) -> usize {
        self.buckets_off + bucket as usize * 4
    }

    fn stripe_off(&self, bucket: u32) -> usize {
        self.stripes_off + (bucket & (self.n_stripes - 1)) as usize * LOCK_SLOT_SIZE
    }

    fn elem_off(&self, idx: u32) -> usize {
        self.elems_off + idx as usize * self.elem_size
    }

    fn key_off(&self, idx: u32) -> usize {
        self.elem_off(idx) + ELEM_HEADER
    }

    fn value_off(&self, idx: u32) -> usize {
        self.key_off(idx) + self.key_stride
    }

    fn bucket_of(&self, hash: u32) -> u32 {
        hash & (self.n_buckets - 1)
    }
}

/// Validates a HASH / PERCPU_HASH definition with the kernel's `htab_map_alloc_check` and
/// `htab_map_alloc` rules, and sizes its area.
pub fn plan(def: &MapDef, cpus: u32) -> Result<Plan, Errno> {
    let flags = def.map_flags;
    let percpu = def.map_type == MapType::PercpuHash;
    if flags & BPF_F_ZERO_SEED != 0 && crate::region::effective_uid() != 0 {
        return Err(Errno::EPERM);
    }
    if flags & !HTAB_CREATE_FLAG_MASK != 0
        || flags & (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)
            == (BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG)
    {
        return Err(Errno::EINVAL);
    }
    if flags & BPF_F_NO_COMMON_LRU != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & BPF_F_NUMA_NODE != 0 && percpu {
        return Err(Errno::EINVAL);
    }
    if def.max_entries == 0 || def.key_size == 0 || def.value_size == 0 {
        return Err(Errno::EINVAL);
    }
    if u64::from(def.key_size) + u64::from(def.value_size) >= KEY_VALUE_LIMIT {
        return Err(Errno::E2BIG);
    }
    if percpu && percpu_stride(def.value_size as usize) > PCPU_MIN_UNIT_SIZE {
        return Err(Errno::E2BIG);
    }
    if def.max_entries > 1 << 31 {
        return Err(Errno::E2BIG);
    }
    if def.max_entries.next_power_of_two() > u32::MAX / 16 {
        return Err(Errno::E2BIG);
    }
    let seed = if flags & BPF_F_ZERO_SEED != 0 {
        0
    } else {
        random_seed()
    };
    let layout = Layout::new(
        def.map_type,
        def.key_size,
        def.value_size,
        def.max_entries,
        cpus,
        seed,
    )
    .ok_or(Errno::ENOMEM)?;
    Ok(Plan {
        max_entries: def.max_entries,
        area_size: layout.end - AREA_OFFSET as u64,
        hash_seed: seed,
    })
}

/// A per-map random seed, as `get_random_u32()` gives the kernel's maps.
fn random_seed() -> u32 {
    let mut bytes = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut bytes).is_ok() {
            return u32::from_le_bytes(bytes);
        }
    }
    // No /dev/urandom: mix the clock and pid (never security-relevant here).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

fn layout_of(file: &MapFile) -> Result<Layout, UserMapError> {
    let h = &file.header;
    let corrupt = |reason: String| UserMapError::Corrupt {
        path: format!("map `{}`", h.name),
        reason,
    };
    let layout = Layout::new(
        h.map_type,
        h.key_size,
        h.value_size,
        h.max_entries,
        h.possible_cpus,
        h.hash_seed,
    )
    .ok_or_else(|| corrupt("hash layout overflows".into()))?;
    if h.max_entries == 0 || h.key_size == 0 || h.value_size == 0 || h.possible_cpus == 0 {
        return Err(corrupt("zero size in header".into()));
    }
    if layout.end != h.file_size {
        return Err(corrupt(format!(
            "hash layout needs {} bytes, file has {}",
            layout.end, h.file_size
        )));
    }
    Ok(layout)
}

/// Initialises a fresh hash map file: the free-list lock and the stripe locks.
pub fn init(file: &MapFile) -> Result<(), UserMapError> {
    let layout = layout_of(file)?;
    for stripe in 0..layout.n_stripes {
        init_lock(&file.region, layout.stripe_off(stripe))?;
    }
    Ok(())
}

/// Opens the hash backend of a validated map file.
pub fn open(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    let layout = layout_of(&file)?;
    Ok(Box::new(HashMap { file, layout }))
}

/// A HASH or PERCPU_HASH map over its shared file.
#[derive(Debug)]
pub struct HashMap {
    file: Arc<MapFile>,
    layout: Layout,
}

/// Where a key was found in its bucket.
#[derive(Clone, Copy, Debug)]
struct Found {
    /// The element before it in the bucket, `None` when it is the head.
    prev: Option<u32>,
    /// The element.
    idx: u32,
}

/// The map's type state and hash area as 4-byte atomic words, bounds-checked once per operation
/// by [`HashMap::words`]: every access after that is one slice index (one comparison) instead of
/// a full offset check. Word indices come from the layout and from links validated against it, so
/// an out-of-range index is a bug and panics like any slice index.
#[derive(Clone, Copy)]
struct Words<'r> {
    /// Words from `TYPE_STATE_OFFSET` to the end of the elements.
    all: &'r [AtomicU32],
    l: &'r Layout,
}

/// Words per stripe slot.
const STRIPE_WORDS: usize = LOCK_SLOT_SIZE / 4;

impl<'r> Words<'r> {
    #[inline]
    fn at(&self, word: usize) -> &'r AtomicU32 {
        &self.all[word]
    }

    #[inline]
    fn needs_recovery(&self) -> bool {
        self.at((NEEDS_RECOVERY - TYPE_STATE_OFFSET) / 4)
            .load(Ordering::Acquire)
            != 0
    }

    #[inline]
    fn head(&self, bucket: u32) -> &'r AtomicU32 {
        self.at(self.l.heads_w + bucket as usize)
    }

    #[inline]
    fn stripe_word(&self, bucket: u32, byte: usize) -> &'r AtomicU32 {
        let stripe = (bucket & (self.l.n_stripes - 1)) as usize;
        self.at(self.l.stripes_w + stripe * STRIPE_WORDS + byte / 4)
    }

    #[inline]
    fn seq(&self, bucket: u32) -> &'r AtomicU32 {
        self.stripe_word(bucket, STRIPE_SEQ)
    }

    #[inline]
    fn spare(&self, bucket: u32) -> &'r AtomicU32 {
        self.stripe_word(bucket, STRIPE_SPARE)
    }

    /// Element `idx`'s first word.
    #[inline]
    fn elem(&self, idx: u32) -> usize {
        self.l.elems_w + idx as usize * self.l.elem_words
    }

    /// Element `idx`'s link to the next element (index + 1, 0 = end).
    #[inline]
    fn next(&self, idx: u32) -> &'r AtomicU32 {
        self.at(self.elem(idx))
    }

    /// Element `idx`'s key hash.
    #[inline]
    fn hash(&self, idx: u32) -> &'r AtomicU32 {
        self.at(self.elem(idx) + 1)
    }

    /// The element words from `first` holding `len` bytes, one slice index for all of them.
    #[inline]
    fn span(&self, first: usize, len: usize) -> &'r [AtomicU32] {
        &self.all[first..first + len.div_ceil(4)]
    }

    /// True when element `idx` holds `key` (`key_size` bytes).
    #[inline(always)]
    fn key_equals(&self, idx: u32, key: &[u8]) -> bool {
        words_equal(self.span(self.elem(idx) + ELEM_HEADER / 4, key.len()), key)
    }

    /// Writes `data` into the words from `first`, keeping the bytes of a partial last word that
    /// lie beyond `data`.
    #[inline(always)]
    fn write(&self, first: usize, data: &[u8]) {
        write_words(self.span(first, data.len()), data);
    }

    /// Reads `out.len()` bytes from the words from `first`.
    #[inline(always)]
    fn read(&self, first: usize, out: &mut [u8]) {
        read_words(self.span(first, out.len()), out);
    }

    /// The first word of element `idx`'s key.
    #[inline]
    fn key_word(&self, idx: u32) -> usize {
        self.elem(idx) + ELEM_HEADER / 4
    }

    /// The first word of element `idx`'s value (of CPU `cpu`'s slot for per-CPU values).
    #[inline]
    fn value_word(&self, idx: u32, cpu: u32) -> usize {
        self.elem(idx) + self.l.value_w + cpu as usize * (self.l.slot_stride / 4)
    }
}

fn lock_errno(_: LockError) -> Errno {
    // A lock that cannot be taken at all (not a dead owner, which is handled): report it the way
    // 6.15+ kernels report a bucket lock that cannot be acquired.
    Errno::EDEADLK
}

impl HashMap {
    fn region(&self) -> &crate::region::Region {
        &self.file.region
    }

    /// The map's words for one operation (one bounds check).
    #[inline]
    fn words(&self) -> Words<'_> {
        Words {
            all: self
                .region()
                .atomic_u32_slice(TYPE_STATE_OFFSET, self.layout.words_len),
            l: &self.layout,
        }
    }

    fn load(&self, off: usize) -> u32 {
        self.region().atomic_u32(off).load(Ordering::Acquire)
    }

    fn store(&self, off: usize, value: u32) {
        self.region()
            .atomic_u32(off)
            .store(value, Ordering::Release)
    }

    fn stripe_seq(&self, bucket: u32) -> &AtomicU32 {
        self.region()
            .atomic_u32(self.layout.stripe_off(bucket) + STRIPE_SEQ)
    }

    fn spare_off(&self, bucket: u32) -> usize {
        self.layout.stripe_off(bucket) + STRIPE_SPARE
    }

    /// Takes the spare element of `bucket`'s stripe (stripe lock held), emptying the slot before
    /// the element is used, so a crash can only leak it (recovery returns it to the pool).
    #[inline(always)]
    fn take_spare(&self, w: &Words<'_>, bucket: u32) -> Option<u32> {
        let spare = w.spare(bucket);
        let idx = self.link_index(spare.load(Ordering::Acquire))?;
        spare.store(0, Ordering::Release);
        Some(idx)
    }

    /// Parks the unreachable element `idx` as the spare of `bucket`'s stripe when its slot is
    /// empty (stripe lock held), else returns it to the pool.
    #[inline(always)]
    fn release_replaced(&self, w: &Words<'_>, bucket: u32, idx: u32) -> Result<(), Errno> {
        let spare = w.spare(bucket);
        if spare.load(Ordering::Acquire) == 0 {
            spare.store(idx + 1, Ordering::Release);
            Ok(())
        } else {
            self.free(idx, false)
        }
    }

    fn free_head(&self) -> &AtomicU64 {
        self.region().atomic_u64(FREE_HEAD)
    }

    fn needs_recovery(&self) -> bool {
        self.load(NEEDS_RECOVERY) != 0
    }

    fn flag_recovery(&self) {
        self.store(NEEDS_RECOVERY, 1);
    }

    #[inline(always)]
    fn hash(&self, key: &[u8]) -> u32 {
        htab_hash(key, self.layout.seed)
    }

    fn next_of(&self, idx: u32) -> u32 {
        self.load(self.layout.elem_off(idx))
    }

    fn set_next(&self, idx: u32, link: u32) {
        self.store(self.layout.elem_off(idx), link);
    }

    /// Index of a link (index + 1), or `None` for the end or an invalid link (which flags recovery).
    #[inline(always)]
    fn link_index(&self, link: u32) -> Option<u32> {
        self.link_index_mode(link, true)
    }

    /// [`Self::link_index`]; `strict` is false for optimistic (unlocked) reads, where a strange
    /// link only means the read raced with a writer and will be retried.
    #[inline(always)]
    fn link_index_mode(&self, link: u32, strict: bool) -> Option<u32> {
        if link == 0 {
            None
        } else if link > self.layout.n_elems {
            if strict {
                self.flag_recovery();
            }
            None
        } else {
            Some(link - 1)
        }
    }

    /// Takes bucket `bucket`'s stripe lock, first running recovery when it is due. A dead previous
    /// owner flags recovery and restarts, so the caller always gets a consistent bucket.
    fn lock_bucket(&self, bucket: u32) -> Result<BucketGuard<'_>, Errno> {
        self.lock_bucket_with(&self.words(), bucket)
    }

    /// [`Self::lock_bucket`] with the operation's word views.
    #[inline(always)]
    fn lock_bucket_with<'r>(
        &'r self,
        w: &Words<'r>,
        bucket: u32,
    ) -> Result<BucketGuard<'r>, Errno> {
        loop {
            if w.needs_recovery() {
                self.recover()?;
            }
            let guard = lock_words(w.stripe_word(bucket, 0), w.stripe_word(bucket, 4))
                .map_err(lock_errno)?;
            if guard.previous_owner_died() {
                self.flag_recovery();
                drop(guard);
                continue;
            }
            if w.needs_recovery() {
                drop(guard);
                continue;
            }
            // Readers that started before see the counter change and retry. Only the lock holder
            // writes the counter: a plain load and store suffices.
            let seq = w.seq(bucket);
            seq.store(
                seq.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
            fence(Ordering::Release);
            return Ok(BucketGuard { _lock: guard, seq });
        }
    }

    /// Runs `read` on `bucket` without its lock, validated by the stripe's sequence counter
    /// (retrying when a writer interfered), falling back to the lock after
    /// [`OPTIMISTIC_TRIES`]. `read` gets `strict = false` when unlocked.
    fn read_bucket<R>(
        &self,
        w: &Words<'_>,
        bucket: u32,
        mut read: impl FnMut(bool) -> R,
    ) -> Result<R, Errno> {
        if !w.needs_recovery() {
            let seq = w.seq(bucket);
            for _ in 0..OPTIMISTIC_TRIES {
                let before = seq.load(Ordering::Acquire);
                if before & 1 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                let result = read(false);
                fence(Ordering::Acquire);
                if seq.load(Ordering::Relaxed) == before {
                    return Ok(result);
                }
            }
        }
        let _guard = self.lock_bucket_with(w, bucket)?;
        Ok(read(true))
    }

    /// Finds `key` in `bucket` (stripe lock held).
    fn find(&self, bucket: u32, hash: u32, key: &[u8]) -> Option<Found> {
        self.find_mode(&self.words(), bucket, hash, key, true)
    }

    /// [`Self::find`]; with `strict` false (no lock held) the walk tolerates racing writers.
    #[inline(always)]
    fn find_mode(
        &self,
        w: &Words<'_>,
        bucket: u32,
        hash: u32,
        key: &[u8],
        strict: bool,
    ) -> Option<Found> {
        let mut prev = None;
        let mut link = w.head(bucket).load(Ordering::Acquire);
        let mut steps = 0u32;
        while let Some(idx) = self.link_index_mode(link, strict) {
            steps += 1;
            if steps > self.layout.n_elems {
                if strict {
                    self.flag_recovery();
                }
                return None;
            }
            if w.hash(idx).load(Ordering::Acquire) == hash && w.key_equals(idx, key) {
                return Some(Found { prev, idx });
            }
            prev = Some(idx);
            link = w.next(idx).load(Ordering::Acquire);
        }
        None
    }

    /// The elements of `bucket` in list order (stripe lock held).
    fn bucket_elements(&self, bucket: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut link = self.load(self.layout.bucket_off(bucket));
        while let Some(idx) = self.link_index(link) {
            if out.len() as u32 >= self.layout.n_elems {
                self.flag_recovery();
                break;
            }
            out.push(idx);
            link = self.next_of(idx);
        }
        out
    }

    /// Takes an element from the pool (bucket lock held). `new_key` counts it as a new key and
    /// fails with `E2BIG` when the map is full. Lock-free: the count is claimed with one atomic
    /// update, the element by one compare-and-swap of the tagged free-list head (the tag defeats
    /// ABA) or of the bump counter.
    fn alloc(&self, new_key: bool) -> Result<u32, Errno> {
        let count = self.region().atomic_u32(COUNT);
        let max = self.layout.max_entries;
        if new_key
            && count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                    (c < max).then_some(c + 1)
                })
                .is_err()
        {
            return Err(Errno::E2BIG);
        }
        let head = self.free_head();
        loop {
            let current = head.load(Ordering::Acquire);
            let link = current as u32;
            let tag = (current >> 32) as u32;
            if let Some(idx) = self.link_index(link) {
                let next = self.next_of(idx);
                let next = if next > self.layout.n_elems { 0 } else { next };
                let new = (u64::from(tag.wrapping_add(1)) << 32) | u64::from(next);
                if head
                    .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Ok(idx);
                }
                continue;
            }
            let bump = self.region().atomic_u32(BUMP);
            let n_elems = self.layout.n_elems;
            match bump.fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < n_elems).then_some(b + 1)
            }) {
                Ok(idx) => return Ok(idx),
                Err(_) => {
                    // Only reachable when elements leaked in a crash: recovery returns them.
                    if new_key {
                        self.uncount();
                    }
                    self.flag_recovery();
                    return Err(Errno::E2BIG);
                }
            }
        }
    }

    fn uncount(&self) {
        let _ = self.region().atomic_u32(COUNT).fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            |c| Some(c.saturating_sub(1)),
        );
    }

    /// Returns an unreachable element to the pool (push on the tagged free-list head); `was_key`
    /// uncounts a key.
    fn free(&self, idx: u32, was_key: bool) -> Result<(), Errno> {
        let head = self.free_head();
        loop {
            let current = head.load(Ordering::Acquire);
            self.set_next(idx, current as u32);
            let tag = (current >> 32) as u32;
            let new = (u64::from(tag.wrapping_add(1)) << 32) | u64::from(idx + 1);
            if head
                .compare_exchange(current, new, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
        }
        if was_key {
            self.uncount();
        }
        Ok(())
    }

    /// Unlinks `found` from `bucket` with one store.
    #[inline(always)]
    fn unlink(&self, w: &Words<'_>, bucket: u32, found: Found) {
        let next = w.next(found.idx).load(Ordering::Acquire);
        match found.prev {
            Some(prev) => w.next(prev).store(next, Ordering::Release),
            None => w.head(bucket).store(next, Ordering::Release),
        }
    }

    /// Fills element `idx` (unreachable) with `hash`, `key` and `next`.
    #[inline(always)]
    fn prepare(&self, w: &Words<'_>, idx: u32, hash: u32, key: &[u8], next: u32) {
        w.next(idx).store(next, Ordering::Release);
        w.hash(idx).store(hash, Ordering::Release);
        w.write(w.key_word(idx), key);
    }

    fn copy_value_out(&self, w: &Words<'_>, idx: u32, out: &mut [u8]) {
        w.read(
            w.value_word(idx, 0),
            &mut out[..self.layout.user_value_len()],
        );
    }

    fn write_user_value(&self, w: &Words<'_>, idx: u32, value: &[u8]) {
        w.write(w.value_word(idx, 0), &value[..self.layout.user_value_len()]);
    }

    fn slot_off(&self, idx: u32, cpu: u32) -> usize {
        self.layout.value_off(idx) + cpu as usize * self.layout.slot_stride
    }

    /// Writes one CPU's slot; `zero_others` clears every other slot (helper insert of a new key).
    fn write_slot(&self, w: &Words<'_>, idx: u32, cpu: u32, value: &[u8], zero_others: bool) {
        let l = &self.layout;
        if zero_others {
            self.region()
                .fill(l.value_off(idx), l.slot_stride * l.cpus, 0);
        }
        w.write(w.value_word(idx, cpu), &value[..l.value_size]);
    }

    /// Update shared by the syscall and helper paths. `cpu` is `None` for the syscall (all slots
    /// from the user buffer) and the program's CPU for the helper (one slot).
    fn update_inner(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        cpu: Option<u32>,
    ) -> Result<(), Errno> {
        let l = &self.layout;
        // Beyond ANY/NOEXIST/EXIST only BPF_F_LOCK exists, and it needs a spin lock in the
        // value, which user-engine maps never have: EINVAL, like any unknown flag.
        if flags > BPF_EXIST {
            return Err(Errno::EINVAL);
        }
        if let Some(cpu) = cpu {
            if cpu as usize >= l.cpus {
                return Err(Errno::EINVAL);
            }
        }
        let hash = self.hash(key);
        let bucket = l.bucket_of(hash);
        let w = self.words();
        let _guard = self.lock_bucket_with(&w, bucket)?;
        let found = self.find_mode(&w, bucket, hash, key, true);
        match (found, flags) {
            (Some(_), BPF_NOEXIST) => return Err(Errno::EEXIST),
            (None, BPF_EXIST) => return Err(Errno::ENOENT),
            _ => {}
        }
        let head = w.head(bucket);
        match found {
            Some(found) if l.percpu => {
                // PERCPU_HASH updates an existing element in place; the key does not move.
                match cpu {
                    Some(cpu) => self.write_slot(&w, found.idx, cpu, value, false),
                    None => self.write_user_value(&w, found.idx, value),
                }
            }
            Some(old) => {
                // HASH replaces: publish a fresh element at the head, then unlink the old one.
                // When the old element is the head, one store does both.
                let new = match self.take_spare(&w, bucket) {
                    Some(spare) => spare,
                    None => self.alloc(false)?,
                };
                let next = match old.prev {
                    None => w.next(old.idx).load(Ordering::Acquire),
                    Some(_) => head.load(Ordering::Acquire),
                };
                self.prepare(&w, new, hash, key, next);
                w.write(w.value_word(new, 0), &value[..l.value_size]);
                head.store(new + 1, Ordering::Release);
                if old.prev.is_some() {
                    self.unlink(&w, bucket, old);
                }
                self.release_replaced(&w, bucket, old.idx)?;
            }
            None => {
                let new = self.alloc(true)?;
                self.prepare(&w, new, hash, key, head.load(Ordering::Acquire));
                match (l.percpu, cpu) {
                    (true, Some(cpu)) => self.write_slot(&w, new, cpu, value, true),
                    (true, None) => self.write_user_value(&w, new, value),
                    (false, _) => w.write(w.value_word(new, 0), &value[..l.value_size]),
                }
                head.store(new + 1, Ordering::Release);
            }
        }
        Ok(())
    }

    fn delete_inner(&self, key: &[u8], value: Option<&mut [u8]>) -> Result<(), Errno> {
        let hash = self.hash(key);
        let bucket = self.layout.bucket_of(hash);
        let w = self.words();
        let _guard = self.lock_bucket_with(&w, bucket)?;
        let found = self
            .find_mode(&w, bucket, hash, key, true)
            .ok_or(Errno::ENOENT)?;
        if let Some(value) = value {
            self.copy_value_out(&w, found.idx, value);
        }
        self.unlink(&w, bucket, found);
        self.free(found.idx, true)
    }

    /// Rebuilds the map after a crash (see the module docs). Takes every lock.
    fn recover(&self) -> Result<(), Errno> {
        let l = self.layout;
        let mut guards = Vec::with_capacity(l.n_stripes as usize);
        for stripe in 0..l.n_stripes {
            guards.push(lock(self.region(), l.stripe_off(stripe)).map_err(lock_errno)?);
        }
        if !self.needs_recovery() {
            return Ok(());
        }
        // Odd sequence counters keep optimistic readers off the buckets while they are rebuilt.
        for stripe in 0..l.n_stripes {
            let seq = self.stripe_seq(stripe);
            if seq.load(Ordering::Relaxed) & 1 == 0 {
                seq.fetch_add(1, Ordering::Relaxed);
            }
        }
        fence(Ordering::Release);
        let mut reachable = vec![false; l.n_elems as usize];
        let mut count = 0u32;
        let mut highest = 0u32;
        let mut key = vec![0u8; l.key_size];
        for bucket in 0..l.n_buckets {
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut prev: Option<u32> = None;
            let mut link = self.load(l.bucket_off(bucket));
            loop {
                let valid = link != 0 && link <= l.n_elems && !reachable[(link - 1) as usize];
                if !valid {
                    if link != 0 {
                        // Invalid or cross-linked: cut the list here.
                        match prev {
                            Some(p) => self.set_next(p, 0),
                            None => self.store(l.bucket_off(bucket), 0),
                        }
                    }
                    break;
                }
                let idx = link - 1;
                let next = self.next_of(idx);
                self.region().read(l.key_off(idx), &mut key);
                if seen.contains(&key) {
                    // An older duplicate left by a replacement that died before unlinking it.
                    match prev {
                        Some(p) => self.set_next(p, next),
                        None => self.store(l.bucket_off(bucket), next),
                    }
                } else {
                    seen.push(key.clone());
                    reachable[idx as usize] = true;
                    count += 1;
                    highest = highest.max(idx + 1);
                    prev = Some(idx);
                }
                link = next;
            }
        }
        // Spare elements are unreachable: they go back to the free list with the leaked ones.
        for stripe in 0..l.n_stripes {
            self.store(self.spare_off(stripe), 0);
        }
        let bump = self.load(BUMP).min(l.n_elems).max(highest);
        let mut head = 0u32;
        for idx in (0..bump).rev() {
            if !reachable[idx as usize] {
                self.set_next(idx, head);
                head = idx + 1;
            }
        }
        let tag = (self.free_head().load(Ordering::Acquire) >> 32) as u32;
        self.free_head().store(
            (u64::from(tag.wrapping_add(1)) << 32) | u64::from(head),
            Ordering::Release,
        );
        self.store(BUMP, bump);
        self.store(COUNT, count);
        self.store(NEEDS_RECOVERY, 0);
        self.store(RECOVERIES, self.load(RECOVERIES).wrapping_add(1));
        for stripe in 0..l.n_stripes {
            self.stripe_seq(stripe).fetch_add(1, Ordering::Release);
        }
        drop(guards);
        Ok(())
    }

    /// The bucket-based `LOOKUP_BATCH` / `LOOKUP_AND_DELETE_BATCH` (kernel doc section 8).
    fn batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
        delete: bool,
    ) -> MapResult<()> {
        let l = self.layout;
        let vlen = l.user_value_len();
        let max_count = buffers.count;
        let Some(mut batch) = start_bucket_batch(
            in_batch,
            out_batch,
            buffers,
            (l.key_size, vlen),
            l.n_buckets,
            elem_flags,
            flags,
        )?
        else {
            return Ok(());
        };
        let mut total = 0u32;
        let mut result = Ok(());
        loop {
            let guard = self.lock_bucket(batch)?;
            let elems = self.bucket_elements(batch);
            let cnt = elems.len() as u32;
            if cnt > max_count - total {
                if total == 0 {
                    result = Err(Errno::ENOSPC.into());
                }
                drop(guard);
                break;
            }
            for (i, &idx) in elems.iter().enumerate() {
                let at = total as usize + i;
                self.region().read(
                    l.key_off(idx),
                    &mut buffers.keys[at * l.key_size..(at + 1) * l.key_size],
                );
                self.copy_value_out(
                    &self.words(),
                    idx,
                    &mut buffers.values[at * vlen..(at + 1) * vlen],
                );
            }
            if delete && cnt > 0 {
                // One store unlinks the whole bucket; the elements go back to the pool after
                // the bucket lock is released, as in the kernel.
                self.store(l.bucket_off(batch), 0);
            }
            drop(guard);
            if delete {
                for &idx in &elems {
                    self.free(idx, true)?;
                }
            }
            total += cnt;
            batch += 1;
            if batch >= l.n_buckets {
                result = Err(Errno::ENOENT.into());
                break;
            }
        }
        out_batch[..4].copy_from_slice(&batch.to_le_bytes());
        buffers.count = total;
        result
    }

    /// The number of keys in the map.
    pub fn len(&self) -> u32 {
        self.load(COUNT)
    }

    /// True when the map has no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset of the stripe lock guarding `key`'s bucket (for tests that kill a process
    /// holding it, and for diagnostics).
    pub fn stripe_lock_offset(&self, key: &[u8]) -> usize {
        self.layout
            .stripe_off(self.layout.bucket_of(self.hash(key)))
    }

    /// How many crash recoveries this map has run (see the module docs).
    pub fn recoveries(&self) -> u32 {
        self.load(RECOVERIES)
    }

    /// The number of buckets (`roundup_pow_of_two(max_entries)`).
    pub fn n_buckets(&self) -> u32 {
        self.layout.n_buckets
    }

    /// Checks the structure without changing it: every bucket list is valid and acyclic, keys
    /// sit in their own bucket without duplicates, the count matches, and every element is either
    /// reachable, a stripe's spare or on the free list, exactly once. Returns a description of the first problem.
    /// Runs under every lock; for tests and diagnostics.
    pub fn check_consistency(&self) -> Result<(), String> {
        let l = self.layout;
        let mut guards = Vec::new();
        loop {
            if self.needs_recovery() {
                self.recover()
                    .map_err(|e| format!("recovery failed: {e}"))?;
            }
            let mut owner_died = false;
            for stripe in 0..l.n_stripes {
                let guard = lock(self.region(), l.stripe_off(stripe)).map_err(|e| e.to_string())?;
                owner_died |= guard.previous_owner_died();
                guards.push(guard);
            }
            if !owner_died && !self.needs_recovery() {
                break;
            }
            // A dead owner may have left work half done: repair first, then check.
            self.flag_recovery();
            guards.clear();
        }
        let mut state = vec![0u8; l.n_elems as usize];
        let mut count = 0u32;
        let mut key = vec![0u8; l.key_size];
        for bucket in 0..l.n_buckets {
            let mut seen: Vec<Vec<u8>> = Vec::new();
            let mut link = self.load(l.bucket_off(bucket));
            while link != 0 {
                if link > l.n_elems {
                    return Err(format!("bucket {bucket}: invalid link {link}"));
                }
                let idx = link - 1;
                if state[idx as usize] != 0 {
                    return Err(format!("bucket {bucket}: element {idx} reached twice"));
                }
                state[idx as usize] = 1;
                self.region().read(l.key_off(idx), &mut key);
                if l.bucket_of(self.hash(&key)) != bucket {
                    return Err(format!("element {idx} is in bucket {bucket}, not its own"));
                }
                if seen.contains(&key) {
                    return Err(format!("bucket {bucket}: duplicate key {key:?}"));
                }
                seen.push(key.clone());
                count += 1;
                link = self.next_of(idx);
            }
        }
        if count != self.load(COUNT) {
            return Err(format!(
                "count says {} but {count} keys are linked",
                self.load(COUNT)
            ));
        }
        let bump = self.load(BUMP);
        for stripe in 0..l.n_stripes {
            let link = self.load(self.spare_off(stripe));
            if link == 0 {
                continue;
            }
            if link > bump {
                return Err(format!(
                    "stripe {stripe}: spare link {link} beyond bump {bump}"
                ));
            }
            let idx = link - 1;
            if state[idx as usize] != 0 {
                return Err(format!(
                    "element {idx} is a spare and also linked or spare twice"
                ));
            }
            state[idx as usize] = 3;
        }
        let mut link = self.free_head().load(Ordering::Acquire) as u32;
        while link != 0 {
            if link > bump {
                return Err(format!("free list link {link} beyond bump {bump}"));
            }
            let idx = link - 1;
            if state[idx as usize] != 0 {
                return Err(format!(
                    "element {idx} free and also linked, spare or free twice"
                ));
            }
            state[idx as usize] = 2;
            link = self.next_of(idx);
        }
        if let Some(idx) = (0..bump).find(|&i| state[i as usize] == 0) {
            return Err(format!("element {idx} leaked"));
        }
        Ok(())
    }
}

impl Backend for HashMap {
    fn lookup(&self, key: &[u8], value: &mut [u8]) -> MapResult<()> {
        let hash = self.hash(key);
        let bucket = self.layout.bucket_of(hash);
        let w = self.words();
        let found = self.read_bucket(&w, bucket, |strict| {
            let found = self.find_mode(&w, bucket, hash, key, strict);
            if let Some(found) = found {
                self.copy_value_out(&w, found.idx, value);
            }
            found.is_some()
        })?;
        if found {
            Ok(())
        } else {
            Err(Errno::ENOENT.into())
        }
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        Ok(self.update_inner(key, value, flags, None)?)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        Ok(self.delete_inner(key, None)?)
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        let l = &self.layout;
        let mut start = 0;
        if let Some(key) = key {
            let hash = self.hash(key);
            let bucket = l.bucket_of(hash);
            let _guard = self.lock_bucket(bucket)?;
            if let Some(found) = self.find(bucket, hash, key) {
                if let Some(next) = self.link_index(self.next_of(found.idx)) {
                    self.region()
                        .read(l.key_off(next), &mut next_key[..l.key_size]);
                    return Ok(());
                }
                start = bucket + 1;
            }
        }
        for bucket in start..l.n_buckets {
            if self.load(l.bucket_off(bucket)) == 0 {
                continue;
            }
            let _guard = self.lock_bucket(bucket)?;
            if let Some(head) = self.link_index(self.load(l.bucket_off(bucket))) {
                self.region()
                    .read(l.key_off(head), &mut next_key[..l.key_size]);
                return Ok(());
            }
        }
        Err(Errno::ENOENT.into())
    }

    fn lookup_and_delete(&self, key: &[u8], value: &mut [u8]) -> MapResult<()> {
        Ok(self.delete_inner(key, Some(value))?)
    }

    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.batch(in_batch, out_batch, buffers, elem_flags, flags, false)
    }

    fn lookup_and_delete_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.batch(in_batch, out_batch, buffers, elem_flags, flags, true)
    }

    fn update_batch(&self, buffers: &mut BatchBuffers<'_>, elem_flags: u64) -> MapResult<()> {
        generic_update_batch(
            self,
            self.layout.key_size,
            self.layout.user_value_len(),
            buffers,
            elem_flags,
        )
    }

    fn delete_batch(&self, buffers: &mut BatchBuffers<'_>, elem_flags: u64) -> MapResult<()> {
        generic_delete_batch(self, self.layout.key_size, buffers, elem_flags)
    }

    fn helper_lookup(&self, key: &[u8], cpu: u32) -> Option<ValueRef> {
        let l = &self.layout;
        if key.len() != l.key_size || (l.percpu && cpu as usize >= l.cpus) {
            return None;
        }
        let hash = self.hash(key);
        let bucket = l.bucket_of(hash);
        let w = self.words();
        let found = self
            .read_bucket(&w, bucket, |strict| {
                self.find_mode(&w, bucket, hash, key, strict)
            })
            .ok()??;
        let offset = if l.percpu {
            self.slot_off(found.idx, cpu)
        } else {
            l.value_off(found.idx)
        };
        Some(ValueRef {
            offset,
            len: l.value_size,
        })
    }

    fn helper_update(&self, key: &[u8], value: &[u8], flags: u64, cpu: u32) -> Result<(), Errno> {
        if key.len() != self.layout.key_size || value.len() < self.layout.value_size {
            return Err(Errno::EINVAL);
        }
        self.update_inner(key, value, flags, Some(cpu))
    }

    fn helper_delete(&self, key: &[u8]) -> Result<(), Errno> {
        if key.len() != self.layout.key_size {
            return Err(Errno::EINVAL);
        }
        self.delete_inner(key, None)
    }

    fn for_each(
        &self,
        cpu: u32,
        callback: &mut dyn FnMut(&[u8], ValueRef) -> bool,
    ) -> Result<u32, Errno> {
        let l = &self.layout;
        if l.percpu && cpu as usize >= l.cpus {
            return Err(Errno::EINVAL);
        }
        let mut calls = 0u32;
        let mut key = vec![0u8; l.key_size];
        for bucket in 0..l.n_buckets {
            if self.load(l.bucket_off(bucket)) == 0 {
                continue;
            }
            // Snapshot the bucket under its lock, then call back without it (the callback may
            // update or delete elements of this map, as a program's callback may).
            let elems = {
                let _guard = self.lock_bucket(bucket)?;
                self.bucket_elements(bucket)
            };
            for idx in elems {
                self.region().read(l.key_off(idx), &mut key);
                let offset = if l.percpu {
                    self.slot_off(idx, cpu)
                } else {
                    l.value_off(idx)
                };
                calls += 1;
                if !callback(
                    &key,
                    ValueRef {
                        offset,
                        len: l.value_size,
                    },
                ) {
                    return Ok(calls);
                }
            }
        }
        Ok(calls)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
