//! The user engine's `BPF_MAP_TYPE_RINGBUF`: the kernel's ring buffer (`kernel/bpf/ringbuf.c`)
//! in a shared-memory file, laid out so the engine-neutral consumer of `bpfmaps_abi` reads it
//! exactly like a kernel ring buffer's mmap.
//!
//! Owns the ring's file layout, its producer side (reserve, submit, discard, output, query with
//! the kernel's rules and adaptive wakeup), the consumer's view ([`RingBufView`], an
//! implementation of [`RingBufMemory`] that sleeps on a futex) and the syscall side
//! ([`MapOps`]: everything `ENOTSUPP` or `EINVAL`, as in the kernel). It does not own the common
//! map header, locks, pinning or ids (`crate::header`, `crate::lock`, `crate::region`), nor the
//! consumer loop (`bpfmaps_abi`'s consumer).
//!
//! # File layout
//!
//! `P` is the page size (4096 on x86-64); `size` is `max_entries`, a power of two and a
//! multiple of `P`.
//!
//! | file offset | size | contents |
//! |---|---|---|
//! | 0 | `P` | the common map header page (`crate::header`); ring bookkeeping in its type state, the reservation lock in header lock slot 0 |
//! | `P` | `P` | consumer page: `consumer_pos: u64` at 0, the only word consumers write |
//! | `2P` | `P` | producer page: `producer_pos: u64` at 0, written by producers only |
//! | `3P` | `size` | data pages |
//!
//! Type state words (offsets from the start of the file):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 1024 | 8 | `pending_pos`: the oldest position that may still be BUSY (kernel's `pending_pos`), under the lock |
//! | 1088 | 4 | wakeup sequence: the futex word consumers sleep on; producers increment it to wake them |
//! | 1092 | 4 | number of consumers sleeping or about to sleep (producers skip `FUTEX_WAKE` at 0) |
//! | 1152 | 4 | number of live consumer views, the analogue of the kernel's writable mmaps (`freeze` says `EBUSY`) |
//! | 1280 | 48 × 16 | outstanding reservations: `u64 owner` (`pid << 32 \| tid`, 0 = free), `u64 pos` |
//!
//! Every process maps the file once whole (for the header and lock) and once as the kernel maps
//! a ring buffer for user space: the consumer page, the producer page and the data pages, with the
//! data pages mapped a second time right behind themselves, so a record that wraps around the end
//! is contiguous. Record headers carry the kernel's `pg_off` (the record's page number counted
//! from the start of the file, which is `3 + offset / P` as in the kernel, whose bookkeeping page
//! plays the part of our header page).
//!
//! # Concurrency
//!
//! Producers in any number of threads and processes reserve under the header lock (`crate::lock`) (a
//! producer killed while holding it is noticed by the next one; `producer_pos` is published last
//! and `pending_pos` is recomputed, so the only repair is freeing a reservation-table entry the
//! dead owner made for a record it never published),
//! write their payload outside the lock and commit by atomically clearing the BUSY bit, exactly
//! as the kernel does. A consumer sleeps on the wakeup futex; a producer wakes it only as the
//! kernel would (`BPF_RB_FORCE_WAKEUP`, or by default when the consumer has caught up to the
//! committed record, never with `BPF_RB_NO_WAKEUP`).
//!
//! # Dead producers
//!
//! In the kernel a reservation is always submitted or discarded (the verifier sees to it); here a
//! producer process can be killed between `reserve` and `submit`, leaving a BUSY record that
//! would stop every consumer and, once the ring wraps, every producer. Each reservation is
//! therefore recorded (under the lock) in a table of outstanding reservations, and cleared
//! after its commit. When a reservation fails because of a BUSY record, and when a consumer
//! waits on a BUSY record (it re-checks every 100 ms instead of sleeping indefinitely), the
//! table is scanned: a BUSY record owned by a process that no longer exists is discarded (BUSY
//! cleared, DISCARD set), exactly what its producer could have done, and consumers are woken.
//! A reservation that finds the table full (more than 48 outstanding) is not tracked and
//! cannot be recovered.

pub(crate) mod shm;

use std::fs::File;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bpfmaps_abi::map_flags::BPF_F_NUMA_NODE;
use bpfmaps_abi::ringbuf::{
    record_span, BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
    BPF_RB_PROD_POS, BPF_RB_RING_SIZE, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT,
    BPF_RINGBUF_HDR_SZ,
};
use bpfmaps_abi::update_flags::BPF_F_LOCK;
use bpfmaps_abi::{Errno, MapDef, MapError, MapInfo, MapOps, MapResult, MapType, RingBufMemory};

use crate::backend::{Backend, MapFile, Plan, StandaloneError};
use crate::header::{header_lock_offset, HeaderError, MapHeader, AREA_OFFSET, TYPE_STATE_OFFSET};
use crate::lock::{init_lock, lock, LockError};
use crate::region::{Region, RegionError};
use crate::UserMapError;
use shm::Mapping;

/// The largest payload `reserve` considers at all (`RINGBUF_MAX_RECORD_SZ`, `UINT_MAX / 4`).
pub const MAX_RECORD_SIZE: u64 = (u32::MAX / 4) as u64;

const PENDING_POS_OFFSET: usize = TYPE_STATE_OFFSET;
const WAKE_SEQ_OFFSET: usize = TYPE_STATE_OFFSET + 64;
const WAITERS_OFFSET: usize = TYPE_STATE_OFFSET + 68;
const VIEWS_OFFSET: usize = TYPE_STATE_OFFSET + 128;
const RESERVE_LOCK_SLOT: usize = 0;
const RESERVATIONS_OFFSET: usize = TYPE_STATE_OFFSET + 256;
/// Outstanding reservations the ring tracks for dead-producer recovery.
const RESERVATION_SLOTS: usize = 48;
const RESERVATION_SIZE: usize = 16;
/// How long a consumer waiting on a BUSY record sleeps before it checks for a dead producer.
const BUSY_RECHECK: Duration = Duration::from_millis(100);

/// Why a ring buffer could not be created, opened or used.
#[derive(Debug, thiserror::Error)]
pub enum RingBufError {
    /// The definition breaks the kernel's creation rules; the kernel would fail with this errno.
    #[error("ring buffer definition refused: {0}")]
    Refused(Errno),
    /// Mapping the file failed.
    #[error("mapping the ring buffer file: {0}")]
    Region(#[from] RegionError),
    /// A system call on the file failed.
    #[error("{call} on the ring buffer file failed: {source}")]
    Io {
        /// The failing call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file's header is not a valid map header.
    #[error("not a bpfmaps map file: {0}")]
    Header(#[from] HeaderError),
    /// The file is a valid map file but not a well-formed ring buffer.
    #[error("not a ring buffer file: {0}")]
    NotRingBuf(String),
    /// Initialising or taking the shared lock failed.
    #[error("ring buffer lock: {0}")]
    Lock(#[from] LockError),
    /// The handle does not name a reserved (BUSY) record of this ring.
    #[error("no reserved record with its payload at ring offset {0}")]
    NotReserved(u64),
    /// A data-area access outside the (double-mapped) data.
    #[error("access of {len} bytes at data offset {offset} is outside twice the data size")]
    OutsideData {
        /// Offset into the data area.
        offset: u64,
        /// Length of the access.
        len: u64,
    },
    /// A payload access outside the reserved record.
    #[error("access of {len} bytes at {at} is outside the {size}-byte record")]
    OutsideRecord {
        /// Offset into the payload.
        at: u64,
        /// Length of the access.
        len: u64,
        /// Payload size of the record.
        size: u32,
    },
}

impl From<StandaloneError> for RingBufError {
    fn from(e: StandaloneError) -> RingBufError {
        match e {
            StandaloneError::Io { call, source } => RingBufError::Io { call, source },
            StandaloneError::Region(e) => RingBufError::Region(e),
            StandaloneError::TooLarge { area_size } => RingBufError::Io {
                call: "ftruncate",
                source: std::io::Error::other(format!("{area_size} bytes is too large")),
            },
        }
    }
}

impl RingBufError {
    /// The errno the kernel would give for this failure, when it is a kernel rule.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            RingBufError::Refused(e) => Some(*e),
            _ => None,
        }
    }
}

/// A reserved record: the offset of its payload in the ring mapping (see
/// [`RingBuf::ring_base`]) and its payload size. Obtained from [`RingBuf::reserve`] or
/// [`RingBuf::handle_at`], consumed by [`RingBuf::submit`] or [`RingBuf::discard`].
#[derive(Debug, PartialEq, Eq)]
pub struct RecordHandle {
    payload_offset: u64,
    size: u32,
}

impl RecordHandle {
    /// Offset of the payload from the start of the ring mapping ([`RingBuf::ring_base`]):
    /// `2 × page + (pos mod size) + 8`.
    pub fn payload_offset(&self) -> u64 {
        self.payload_offset
    }

    /// The payload size asked for at reservation.
    pub fn size(&self) -> u32 {
        self.size
    }
}

/// Checks a ring buffer definition against the kernel's creation rules (doc 4.1): type RINGBUF,
/// key and value size 0, `max_entries` a power of two and a multiple of the page size, no flag
/// but `BPF_F_NUMA_NODE`, and a valid name. Every violation is `EINVAL`, as in the kernel.
pub fn check_def(def: &MapDef) -> Result<(), Errno> {
    let page = shm::page_size() as u64;
    let size = u64::from(def.max_entries);
    if def.map_type != MapType::Ringbuf
        || !def.has_valid_name()
        || def.map_flags & !BPF_F_NUMA_NODE != 0
        || def.key_size != 0
        || def.value_size != 0
        || !size.is_power_of_two()
        || size % page != 0
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The size of the file of a ring buffer with `data_size` data bytes: three pages plus the data.
pub fn file_size(data_size: u32) -> u64 {
    3 * shm::page_size() as u64 + u64::from(data_size)
}

/// This thread's identity in the reservation table: `pid << 32 | tid`, computed once per
/// thread (two system calls that would otherwise double the cost of a reservation). A process
/// that forks and produces from the child's inherited thread records the parent's identity.
fn guard_owner() -> u64 {
    thread_local! {
        static OWNER: u64 =
            (u64::from(shm::current_pid()) << 32) | u64::from(crate::region::thread_id());
    }
    OWNER.with(|owner| *owner)
}

/// The [`crate::UserMap`] plan step: the kernel's creation rules ([`check_def`]) and the size of
/// the area after the header page (consumer page, producer page, data).
pub fn plan(def: &MapDef, _cpus: u32) -> Result<Plan, Errno> {
    check_def(def)?;
    Ok(Plan {
        max_entries: def.max_entries,
        area_size: file_size(def.max_entries) - AREA_OFFSET as u64,
        hash_seed: 0,
    })
}

/// The [`crate::UserMap`] init step: the reservation lock. Positions and bookkeeping start at
/// zero in the fresh file.
pub fn init(file: &MapFile) -> Result<(), UserMapError> {
    init_lock(&file.region, header_lock_offset(RESERVE_LOCK_SLOT))?;
    Ok(())
}

/// The [`crate::UserMap`] open step: a [`RingBuf`] backend over the validated file.
pub fn open(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    RingBuf::from_map_file(file)
        .map(|rb| Box::new(rb) as Box<dyn Backend>)
        .map_err(|e| UserMapError::Corrupt {
            path: "<ring buffer>".into(),
            reason: e.to_string(),
        })
}

struct Inner {
    file: Arc<MapFile>,
    ring: Mapping,
    page: usize,
    data_size: u64,
}

/// The ring mapping's layout: consumer page at 0, producer page at `page`, data at `2 × page`.
impl Inner {
    fn region(&self) -> &Region {
        &self.file.region
    }

    fn header(&self) -> &MapHeader {
        &self.file.header
    }

    fn mask(&self) -> u64 {
        self.data_size - 1
    }

    fn data_offset(&self) -> usize {
        2 * self.page
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        self.ring.atomic_u64(0)
    }

    fn producer_pos(&self) -> &AtomicU64 {
        self.ring.atomic_u64(self.page)
    }

    fn pending_pos(&self) -> &AtomicU64 {
        self.region().atomic_u64(PENDING_POS_OFFSET)
    }

    fn wake_seq(&self) -> &AtomicU32 {
        self.region().atomic_u32(WAKE_SEQ_OFFSET)
    }

    fn waiters(&self) -> &AtomicU32 {
        self.region().atomic_u32(WAITERS_OFFSET)
    }

    fn views(&self) -> &AtomicU32 {
        self.region().atomic_u32(VIEWS_OFFSET)
    }

    fn reservation_owner(&self, slot: usize) -> &AtomicU64 {
        self.region()
            .atomic_u64(RESERVATIONS_OFFSET + slot * RESERVATION_SIZE)
    }

    fn reservation_pos(&self, slot: usize) -> &AtomicU64 {
        self.region()
            .atomic_u64(RESERVATIONS_OFFSET + slot * RESERVATION_SIZE + 8)
    }

    /// Records the reservation at `pos` for `owner` (called under the lock). Untracked when the
    /// table is full.
    fn track(&self, owner: u64, pos: u64) {
        let start = (owner as u32 as usize) % RESERVATION_SLOTS;
        for i in 0..RESERVATION_SLOTS {
            let slot = (start + i) % RESERVATION_SLOTS;
            if self.reservation_owner(slot).load(Ordering::Acquire) == 0 {
                self.reservation_pos(slot).store(pos, Ordering::Relaxed);
                self.reservation_owner(slot).store(owner, Ordering::Release);
                return;
            }
        }
    }

    /// Forgets the committed reservation whose record header is at data offset `rec_off`.
    fn untrack(&self, owner: u64, rec_off: u64) {
        let start = (owner as u32 as usize) % RESERVATION_SLOTS;
        let pid = owner >> 32;
        for i in 0..RESERVATION_SLOTS {
            let slot = (start + i) % RESERVATION_SLOTS;
            let who = self.reservation_owner(slot).load(Ordering::Acquire);
            if who != 0
                && who >> 32 == pid
                && self.reservation_pos(slot).load(Ordering::Relaxed) & self.mask() == rec_off
            {
                let _ = self.reservation_owner(slot).compare_exchange(
                    who,
                    0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                return;
            }
        }
    }

    /// Discards the BUSY records of producers that died, frees stale table entries (called under
    /// the lock). With `unpublished_only`, only entries at or past `producer_pos` are freed: what
    /// a lock owner that died inside `reserve` may have left. Returns whether a record was
    /// discarded.
    fn reclaim_dead(&self, unpublished_only: bool) -> bool {
        let cons = self.consumer_pos().load(Ordering::Acquire);
        let prod = self.producer_pos().load(Ordering::Acquire);
        let mut discarded = false;
        for slot in 0..RESERVATION_SLOTS {
            let owner = self.reservation_owner(slot).load(Ordering::Acquire);
            if owner == 0 || shm::process_alive((owner >> 32) as u32) {
                continue;
            }
            let pos = self.reservation_pos(slot).load(Ordering::Relaxed);
            if unpublished_only && pos < prod {
                continue;
            }
            // A BUSY record in [cons, prod) is the dead producer's: the ring cannot wrap past a
            // BUSY record, so nobody else reserved that position since.
            if pos >= cons && pos < prod {
                let word = self.len_word(pos);
                let current = word.load(Ordering::Acquire);
                if current & BPF_RINGBUF_BUSY_BIT != 0 {
                    let new = (current & !BPF_RINGBUF_BUSY_BIT) | BPF_RINGBUF_DISCARD_BIT;
                    discarded |= word
                        .compare_exchange(current, new, Ordering::SeqCst, Ordering::Relaxed)
                        .is_ok();
                }
            }
            self.reservation_owner(slot).store(0, Ordering::Release);
        }
        discarded
    }

    /// Under the lock, [`Inner::reclaim_dead`] then a wakeup when a record was discarded.
    fn recover(&self) -> bool {
        let Ok(guard) = lock(self.region(), header_lock_offset(RESERVE_LOCK_SLOT)) else {
            return false;
        };
        let discarded = self.reclaim_dead(false);
        drop(guard);
        if discarded {
            self.wake();
        }
        discarded
    }

    /// Offset in the ring mapping of the header of the record at free-running position `pos`.
    fn header_offset(&self, pos: u64) -> usize {
        // `pos & mask` < data_size, which fits usize because the data is mapped.
        self.data_offset() + (pos & self.mask()) as usize
    }

    fn len_word(&self, pos: u64) -> &AtomicU32 {
        self.ring.atomic_u32(self.header_offset(pos))
    }

    /// True when the consumer has something to read now: data is published and the record at
    /// the consumer position is committed (not BUSY).
    fn consumable(&self) -> bool {
        let cons = self.consumer_pos().load(Ordering::SeqCst);
        let prod = self.producer_pos().load(Ordering::SeqCst);
        cons != prod && self.len_word(cons).load(Ordering::SeqCst) & BPF_RINGBUF_BUSY_BIT == 0
    }

    fn wake(&self) {
        self.wake_seq().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) != 0 {
            shm::futex_wake_all(self.wake_seq());
        }
    }

    /// True when the record at the consumer position is published but still BUSY.
    fn busy_at_consumer(&self) -> bool {
        let cons = self.consumer_pos().load(Ordering::SeqCst);
        let prod = self.producer_pos().load(Ordering::SeqCst);
        cons != prod && self.len_word(cons).load(Ordering::SeqCst) & BPF_RINGBUF_BUSY_BIT != 0
    }

    fn wait(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        // A BUSY record at the consumer position may belong to a dead producer: discard it
        // then, and otherwise sleep in bounded steps to notice such a death later.
        let busy = self.busy_at_consumer();
        if busy && self.recover() {
            return Ok(());
        }
        let timeout = if busy {
            Some(timeout.map_or(BUSY_RECHECK, |t| t.min(BUSY_RECHECK)))
        } else {
            timeout
        };
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let seq = self.wake_seq().load(Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let result = if self.consumable() {
            Ok(())
        } else {
            shm::futex_wait(self.wake_seq(), seq, timeout)
                .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))
        };
        self.waiters().fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// A RINGBUF map in shared memory: the producer API used by the interpreter's helpers and the
/// syscall side. Cheap to clone (clones share one mapping).
#[derive(Clone)]
pub struct RingBuf {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RingBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBuf")
            .field("name", &self.inner.header().name)
            .field("data_size", &self.inner.data_size)
            .finish_non_exhaustive()
    }
}

impl RingBuf {
    /// Creates a ring buffer of definition `def` in an anonymous memory file (not pinnable).
    /// The same [`plan`] and reservation lock as a map made through [`crate::UserMap`], without
    /// a registry entry.
    pub fn create(def: &MapDef) -> Result<RingBuf, RingBufError> {
        let cpus = crate::possible_cpus();
        let plan = plan(def, cpus).map_err(RingBufError::Refused)?;
        let map_file = MapFile::create_anonymous(def, &plan, cpus)?;
        init_lock(&map_file.region, header_lock_offset(RESERVE_LOCK_SLOT))?;
        Self::from_map_file(Arc::new(map_file))
    }

    /// Opens the ring buffer stored in `file` (a pinned map, or a file passed from another
    /// process) after validating its header and layout.
    pub fn open(file: File) -> Result<RingBuf, RingBufError> {
        let region = Region::map(file)?;
        let header = MapHeader::read(&region)?;
        Self::from_map_file(Arc::new(MapFile { region, header }))
    }

    /// A ring buffer over an opened map file whose header was validated by the caller: checks
    /// that the header describes a valid ring buffer whose layout fits the file, then maps the
    /// ring (consumer page, producer page, data twice).
    pub fn from_map_file(file: Arc<MapFile>) -> Result<RingBuf, RingBufError> {
        let header = &file.header;
        let def = header.def();
        if check_def(&def).is_err() {
            return Err(RingBufError::NotRingBuf(format!(
                "invalid ring buffer header {def:?}"
            )));
        }
        let expected = file_size(header.max_entries);
        if header.file_size != expected || file.region.len() as u64 != expected {
            return Err(RingBufError::NotRingBuf(format!(
                "file is {} bytes, a {}-byte ring needs {expected}",
                file.region.len(),
                header.max_entries,
            )));
        }
        let page = shm::page_size();
        let data_size = u64::from(header.max_entries);
        let ring = Mapping::ring(
            file.region.file(),
            page,
            file.region.len(),
            header.max_entries as usize,
            true,
        )
        .map_err(|source| RingBufError::Io {
            call: "mmap",
            source,
        })?;
        Ok(RingBuf {
            inner: Arc::new(Inner {
                file,
                ring,
                page,
                data_size,
            }),
        })
    }

    /// The file holding the map (for pinning and for passing to other processes).
    pub fn file(&self) -> &File {
        self.inner.region().file()
    }

    /// The whole-file region (common header, locks).
    pub fn region(&self) -> &Region {
        self.inner.region()
    }

    /// Records the id the registry gave the map.
    pub fn set_id(&self, id: u32) {
        MapHeader::set_id(self.inner.region(), id);
    }

    /// The data size in bytes (`max_entries`).
    pub fn data_size(&self) -> u64 {
        self.inner.data_size
    }

    /// Address of the ring mapping in this process: the consumer page, then the producer page,
    /// then the data pages twice. [`RecordHandle::payload_offset`] is relative to it. For the
    /// interpreter, which hands reserved records to programs as pointers.
    pub fn ring_base(&self) -> NonNull<u8> {
        self.inner.ring.base()
    }

    /// Length of the ring mapping: `2 × page + 2 × data_size`.
    pub fn ring_len(&self) -> usize {
        self.inner.ring.len()
    }

    /// `bpf_ringbuf_reserve(map, size, flags)`: reserves a record with a `size`-byte payload and
    /// returns its handle, or `None` exactly when the kernel returns NULL: `flags != 0`,
    /// `size > UINT_MAX / 4`, a record larger than the ring, or no room (the new producer
    /// position would be more than `size − 1` bytes ahead of the consumer position or of the
    /// oldest record still BUSY). The record header says BUSY until it is submitted or
    /// discarded; the payload bytes keep whatever the ring held before.
    pub fn reserve(&self, size: u64, flags: u64) -> Option<RecordHandle> {
        let inner = &*self.inner;
        if flags != 0 || size > MAX_RECORD_SIZE {
            return None;
        }
        // `size` ≤ UINT_MAX / 4, so it fits u32 and the span cannot overflow.
        let size32 = u32::try_from(size).ok()?;
        let span = record_span(size32);
        if span > inner.data_size {
            return None;
        }
        let mask = inner.mask();
        let cons_pos = inner.consumer_pos().load(Ordering::Acquire);
        let guard = lock(inner.region(), header_lock_offset(RESERVE_LOCK_SLOT)).ok()?;
        if guard.previous_owner_died() {
            // The dead owner may have tracked a reservation it never published.
            inner.reclaim_dead(true);
        }
        let prod_pos = inner.producer_pos().load(Ordering::Relaxed);
        let new_prod_pos = prod_pos.wrapping_add(span);
        let mut reclaimed = false;
        loop {
            // `pending_pos` is a cache of a scan: after a dead lock owner it is still a valid
            // lower bound, so no repair is needed beyond clamping it to `prod_pos`.
            let mut pend_pos = inner.pending_pos().load(Ordering::Relaxed).min(prod_pos);
            while pend_pos < prod_pos {
                let word = inner.len_word(pend_pos).load(Ordering::Acquire);
                if word & BPF_RINGBUF_BUSY_BIT != 0 {
                    break;
                }
                pend_pos = pend_pos.wrapping_add(record_span(word & !BPF_RINGBUF_DISCARD_BIT));
            }
            let pend_pos = pend_pos.min(prod_pos);
            inner.pending_pos().store(pend_pos, Ordering::Relaxed);
            if new_prod_pos.wrapping_sub(cons_pos) > mask {
                drop(guard);
                return None;
            }
            if new_prod_pos.wrapping_sub(pend_pos) <= mask {
                break;
            }
            // Blocked by a BUSY record: if its producer died, discard it and look again once.
            if reclaimed || !inner.reclaim_dead(false) {
                drop(guard);
                return None;
            }
            reclaimed = true;
        }
        inner.track(guard_owner(), prod_pos);
        let header_offset = inner.header_offset(prod_pos);
        let pg_off = u32::try_from((inner.page + header_offset) / inner.page).unwrap_or(u32::MAX);
        inner
            .ring
            .atomic_u32(header_offset + 4)
            .store(pg_off, Ordering::Relaxed);
        inner
            .ring
            .atomic_u32(header_offset)
            .store(size32 | BPF_RINGBUF_BUSY_BIT, Ordering::Relaxed);
        inner.producer_pos().store(new_prod_pos, Ordering::Release);
        drop(guard);
        if reclaimed {
            inner.wake();
        }
        Some(RecordHandle {
            payload_offset: (header_offset + BPF_RINGBUF_HDR_SZ as usize) as u64,
            size: size32,
        })
    }

    /// The handle of the reserved record whose payload starts at `payload_offset` of the ring
    /// mapping (what a program passes back to `bpf_ringbuf_submit`), or `None` when no BUSY
    /// record starts there.
    pub fn handle_at(&self, payload_offset: u64) -> Option<RecordHandle> {
        let inner = &*self.inner;
        let data = inner.data_offset() as u64;
        let header = payload_offset.checked_sub(u64::from(BPF_RINGBUF_HDR_SZ))?;
        if header < data || header - data >= inner.data_size || header % 8 != 0 {
            return None;
        }
        let word = inner
            .ring
            .atomic_u32(usize::try_from(header).ok()?)
            .load(Ordering::Acquire);
        if word & BPF_RINGBUF_BUSY_BIT == 0 {
            return None;
        }
        Some(RecordHandle {
            payload_offset,
            size: word & !(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT),
        })
    }

    /// Writes `bytes` into the payload of a reserved record at `at`.
    pub fn write_payload(
        &self,
        handle: &RecordHandle,
        at: u64,
        bytes: &[u8],
    ) -> Result<(), RingBufError> {
        self.inner
            .ring
            .write(payload_offset(handle, at, bytes.len())?, bytes);
        Ok(())
    }

    /// Reads the payload of a reserved record at `at` into `out`.
    pub fn read_payload(
        &self,
        handle: &RecordHandle,
        at: u64,
        out: &mut [u8],
    ) -> Result<(), RingBufError> {
        self.inner
            .ring
            .read(payload_offset(handle, at, out.len())?, out);
        Ok(())
    }

    /// `bpf_ringbuf_submit(sample, flags)`: commits the record (clears BUSY atomically) and
    /// wakes sleeping consumers as the kernel would. Like the kernel, `flags` bits other than the
    /// wakeup flags are ignored.
    pub fn submit(&self, handle: RecordHandle, flags: u64) -> Result<(), RingBufError> {
        self.commit(handle, flags, false)
    }

    /// `bpf_ringbuf_discard(sample, flags)`: like [`RingBuf::submit`], with the DISCARD bit set
    /// so consumers skip the record.
    pub fn discard(&self, handle: RecordHandle, flags: u64) -> Result<(), RingBufError> {
        self.commit(handle, flags, true)
    }

    fn commit(&self, handle: RecordHandle, flags: u64, discard: bool) -> Result<(), RingBufError> {
        let inner = &*self.inner;
        let checked = self
            .handle_at(handle.payload_offset)
            .ok_or(RingBufError::NotReserved(handle.payload_offset))?;
        let header_offset = (checked.payload_offset - u64::from(BPF_RINGBUF_HDR_SZ)) as usize;
        let word = inner.ring.atomic_u32(header_offset);
        let current = word.load(Ordering::Acquire);
        let mut new = current & !BPF_RINGBUF_BUSY_BIT;
        if discard {
            new |= BPF_RINGBUF_DISCARD_BIT;
        }
        word.swap(new, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let rec_pos = (header_offset - inner.data_offset()) as u64;
        // After the commit: a crash in between leaves a stale entry, which recovery frees.
        inner.untrack(guard_owner(), rec_pos);
        let cons_pos = inner.consumer_pos().load(Ordering::SeqCst) & inner.mask();
        if flags & BPF_RB_FORCE_WAKEUP != 0
            || (cons_pos == rec_pos && flags & BPF_RB_NO_WAKEUP == 0)
        {
            inner.wake();
        }
        Ok(())
    }

    /// `bpf_ringbuf_output(map, data, size, flags)`: reserve, copy, submit. `EINVAL` for flags
    /// other than the wakeup flags, `EAGAIN` when the record does not fit.
    pub fn output(&self, data: &[u8], flags: u64) -> Result<(), Errno> {
        if flags & !(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP) != 0 {
            return Err(Errno::EINVAL);
        }
        let handle = self.reserve(data.len() as u64, 0).ok_or(Errno::EAGAIN)?;
        self.write_payload(&handle, 0, data)
            .map_err(|_| Errno::EINVAL)?;
        self.submit(handle, flags).map_err(|_| Errno::EINVAL)
    }

    /// Copies `out.len()` bytes of the data area starting at data offset `offset` (which may run
    /// past the end into the second mapping, up to twice the data size): what a kernel ring's
    /// user-space mapping shows at `2 × page + offset`.
    pub fn read_data(&self, offset: u64, out: &mut [u8]) -> Result<(), RingBufError> {
        let inner = &*self.inner;
        let len = out.len() as u64;
        if offset
            .checked_add(len)
            .is_none_or(|end| end > 2 * inner.data_size)
        {
            return Err(RingBufError::OutsideRecord {
                at: offset,
                len,
                size: 0,
            });
        }
        inner.ring.read(inner.data_offset() + offset as usize, out);
        Ok(())
    }

    /// `bpf_ringbuf_query(map, selector)`: available data, ring size, consumer position,
    /// producer position; 0 for any other selector.
    pub fn query(&self, selector: u64) -> u64 {
        let inner = &*self.inner;
        match selector {
            BPF_RB_AVAIL_DATA => {
                let cons = inner.consumer_pos().load(Ordering::Acquire);
                let prod = inner.producer_pos().load(Ordering::Acquire);
                prod.wrapping_sub(cons)
            }
            BPF_RB_RING_SIZE => inner.data_size,
            BPF_RB_CONS_POS => inner.consumer_pos().load(Ordering::Acquire),
            BPF_RB_PROD_POS => inner.producer_pos().load(Ordering::Acquire),
            _ => 0,
        }
    }

    /// How many wakeups producers have issued so far (the futex sequence, wrapping): lets tests
    /// and tools observe the adaptive wakeup rule without timing.
    pub fn wakeups(&self) -> u32 {
        self.inner.wake_seq().load(Ordering::SeqCst)
    }

    /// Wakes every consumer sleeping on this ring, whatever the positions say (for shutdown).
    pub fn wake_consumers(&self) {
        self.inner.wake();
    }

    /// A consumer's view of the ring, for the engine-neutral ring buffer consumer. Like the
    /// kernel's writable mmap of the consumer page it is refused with `EPERM` once the map is
    /// frozen, and while it lives `freeze` fails with `EBUSY`.
    pub fn consumer(&self) -> Result<RingBufView, Errno> {
        let inner = &*self.inner;
        inner.views().fetch_add(1, Ordering::SeqCst);
        if MapHeader::frozen(inner.region()) {
            inner.views().fetch_sub(1, Ordering::SeqCst);
            return Err(Errno::EPERM);
        }
        Ok(RingBufView {
            inner: Arc::clone(&self.inner),
        })
    }
}

/// The consumer's view of a [`RingBuf`]: the kernel's user-space mapping (consumer page,
/// producer page, data twice) plus a futex to sleep on. Implements [`RingBufMemory`], so the
/// same consumer reads this ring and a kernel one.
pub struct RingBufView {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RingBufView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingBufView")
            .field("data_size", &self.inner.data_size)
            .finish()
    }
}

impl Drop for RingBufView {
    fn drop(&mut self) {
        self.inner.views().fetch_sub(1, Ordering::SeqCst);
    }
}

impl RingBufMemory for RingBufView {
    fn data_size(&self) -> u64 {
        self.inner.data_size
    }

    fn load_consumer_pos(&self) -> u64 {
        self.inner.consumer_pos().load(Ordering::Acquire)
    }

    fn store_consumer_pos(&self, pos: u64) {
        self.inner.consumer_pos().store(pos, Ordering::Release);
    }

    fn load_producer_pos(&self) -> u64 {
        self.inner.producer_pos().load(Ordering::Acquire)
    }

    fn load_len_word(&self, pos: u64) -> u32 {
        self.inner.len_word(pos).load(Ordering::Acquire)
    }

    fn payload(&self, pos: u64, len: u32) -> &[u8] {
        // A length word from shared memory is untrusted: clamp it to the largest payload.
        let max = self.inner.data_size - u64::from(BPF_RINGBUF_HDR_SZ);
        let len = u64::from(len).min(max) as usize;
        self.inner.ring.bytes(
            self.inner.header_offset(pos) + BPF_RINGBUF_HDR_SZ as usize,
            len,
        )
    }

    /// Sleeps on the ring's futex until a producer wakes consumers or `timeout` passes. Returns
    /// at once when a committed record waits at the consumer position. A BUSY record there does
    /// not count: its commit wakes us (the adaptive rule), so the consumer never spins on it.
    fn wait(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        self.inner.wait(timeout)
    }
}

fn syscall_key(key: &[u8]) -> MapResult<()> {
    if key.is_empty() {
        Err(MapError::Errno(Errno::ENOTSUPP))
    } else {
        Err(MapError::Errno(Errno::EINVAL))
    }
}

/// The kernel's first check of lookup flags: only `BPF_F_LOCK` is a known bit.
pub(crate) fn lookup_flags_known(flags: u64) -> MapResult<()> {
    if flags & !BPF_F_LOCK != 0 {
        return Err(MapError::Errno(Errno::EINVAL));
    }
    Ok(())
}

/// The kernel's later check: `BPF_F_LOCK` on a map without a spin lock (never one here).
pub(crate) fn no_spin_lock(flags: u64) -> MapResult<()> {
    if flags & BPF_F_LOCK != 0 {
        return Err(MapError::Errno(Errno::EINVAL));
    }
    Ok(())
}

impl RingBuf {
    fn frozen(&self) -> bool {
        MapHeader::frozen(self.inner.region())
    }

    fn write_allowed(&self) -> MapResult<()> {
        if self.frozen() {
            return Err(MapError::Errno(Errno::EPERM));
        }
        Ok(())
    }
}

/// The syscall side (doc 4.4): a NULL key gives `ENOTSUPP`, any key `EINVAL` (the key size is
/// 0), batches `ENOTSUPP`; syscall writes to a frozen map `EPERM` first, as the kernel checks
/// the fd's write permission before anything else.
impl MapOps for RingBuf {
    fn info(&self) -> MapInfo {
        self.inner.header().info(self.inner.region())
    }

    fn lookup(&self, key: &[u8], _value: &mut [u8], flags: u64) -> MapResult<()> {
        lookup_flags_known(flags)?;
        no_spin_lock(flags)?;
        syscall_key(key)
    }

    fn update(&self, key: &[u8], _value: &[u8], flags: u64) -> MapResult<()> {
        self.write_allowed()?;
        no_spin_lock(flags)?;
        syscall_key(key)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        self.write_allowed()?;
        syscall_key(key)
    }

    fn get_next_key(&self, key: Option<&[u8]>, _next_key: &mut [u8]) -> MapResult<()> {
        syscall_key(key.unwrap_or(&[]))
    }

    fn lookup_and_delete(&self, key: &[u8], _value: &mut [u8], flags: u64) -> MapResult<()> {
        lookup_flags_known(flags)?;
        self.write_allowed()?;
        no_spin_lock(flags)?;
        syscall_key(key)
    }

    crate::backend::unsupported_batch_ops!(write: write_allowed);

    /// `EPERM` when already frozen (the write permission is gone), `EBUSY` while a consumer view
    /// (the analogue of a writable mmap) exists.
    fn freeze(&self) -> MapResult<()> {
        self.write_allowed()?;
        if self.inner.views().load(Ordering::SeqCst) != 0 {
            return Err(MapError::Errno(Errno::EBUSY));
        }
        if !MapHeader::freeze(self.inner.region()) {
            return Err(MapError::Errno(Errno::EBUSY));
        }
        Ok(())
    }
}

/// The [`crate::UserMap`] backend. `UserMap` has already checked buffer sizes, access, the frozen
/// state and the flags; what is left is the ring buffer's `map_ops`, which has no element
/// operations: a NULL key gives `ENOTSUPP`, any other `EINVAL`.
impl Backend for RingBuf {
    fn lookup(&self, key: &[u8], _value: &mut [u8]) -> MapResult<()> {
        syscall_key(key)
    }

    fn update(&self, key: &[u8], _value: &[u8], _flags: u64) -> MapResult<()> {
        syscall_key(key)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        syscall_key(key)
    }

    fn get_next_key(&self, key: Option<&[u8]>, _next_key: &mut [u8]) -> MapResult<()> {
        syscall_key(key.unwrap_or(&[]))
    }

    fn lookup_and_delete(&self, key: &[u8], _value: &mut [u8]) -> MapResult<()> {
        syscall_key(key)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The mapping offset of `len` payload bytes at `at` in the reserved record `handle`;
/// `OutsideRecord` when they do not lie inside its payload. The payload lies inside the
/// double-mapped data (span ≤ data size), so the offset fits the mapping, which checks it again.
fn payload_offset(handle: &RecordHandle, at: u64, len: usize) -> Result<usize, RingBufError> {
    let len = len as u64;
    if at
        .checked_add(len)
        .is_none_or(|end| end > u64::from(handle.size))
    {
        return Err(RingBufError::OutsideRecord {
            at,
            len,
            size: handle.size,
        });
    }
    usize::try_from(handle.payload_offset + at)
        .map_err(|_| RingBufError::NotReserved(handle.payload_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(size: u32) -> MapDef {
        MapDef {
            map_type: MapType::Ringbuf,
            key_size: 0,
            value_size: 0,
            max_entries: size,
            map_flags: 0,
            name: "rb".into(),
        }
    }

    #[test]
    fn pending_pos_blocks_a_reservation_more_than_size_minus_one_ahead_of_a_busy_record() {
        let rb = RingBuf::create(&def(4096)).unwrap();
        let view = rb.consumer().unwrap();
        // A BUSY record at 0, then fill and consume everything after it.
        let busy = rb.reserve(8, 0).unwrap();
        let rest = rb.reserve(4096 - 16 - 16, 0).unwrap();
        rb.submit(rest, 0).unwrap();
        view.store_consumer_pos(4096 - 16);
        // Against the consumer alone 24 bytes would fit; the BUSY record at 0 forbids it.
        assert!(rb.reserve(8, 0).is_none());
        rb.submit(busy, 0).unwrap();
        assert!(rb.reserve(8, 0).is_some());
    }

    #[test]
    fn handles_are_validated() {
        let rb = RingBuf::create(&def(4096)).unwrap();
        let h = rb.reserve(8, 0).unwrap();
        let off = h.payload_offset();
        assert_eq!(off, 2 * 4096 + 8);
        rb.submit(h, 0).unwrap();
        assert!(rb.handle_at(off).is_none());
        assert!(matches!(
            rb.submit(
                RecordHandle {
                    payload_offset: off,
                    size: 8
                },
                0
            ),
            Err(RingBufError::NotReserved(_))
        ));
        assert!(rb.handle_at(3).is_none());
        assert!(rb.handle_at(u64::MAX).is_none());
    }
}
