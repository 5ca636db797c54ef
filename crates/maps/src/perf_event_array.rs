//! The user engine's `BPF_MAP_TYPE_PERF_EVENT_ARRAY`: an array of slots, each naming one
//! consumer-owned perf ring, with `bpf_perf_event_output`'s semantics (index checks, the
//! current-CPU rule, `PERF_RECORD_SAMPLE` / `PERF_RECORD_LOST` records, lost counting) and the
//! kernel's syscall side.
//!
//! Owns the map's slot table, the ring files ([`PerfRing`], the user engine's stand-in for a
//! `PERF_COUNT_SW_BPF_OUTPUT` perf event and its mmap), the producer side
//! ([`PerfEventArray::output`]) and the consumer's helpers ([`PerfBuffer`]). It does not own
//! the common header, locks, pinning or ids, nor the perf buffer consumer loop
//! (`bpfmaps_abi`'s consumer reads a [`PerfRing`] through [`PerfRingMemory`]).
//!
//! # How a consumer "opens" the per-CPU rings
//!
//! There are no perf fds in the user engine. A consumer does what libbpf's `perf_buffer__new`
//! does with perf events, with ring files instead:
//!
//! 1. [`PerfRing::create`]`(cpu, data_pages)` creates a ring file for one CPU, named
//!    `bpfmaps-perf-<64-bit random key in hex>` in `/dev/shm` (or the temp directory when there
//!    is no `/dev/shm`), mode 0600, and maps it. The ring gets a process-local *token*
//!    ([`PerfRing::token`]), this engine's analogue of the perf event fd.
//! 2. [`PerfEventArray::install`]`(index, &ring)` (or `MapOps::update(index, token)`) stores the
//!    ring's key in slot `index`, like `bpf_map_update_elem(map_fd, &cpu, &perf_fd)`.
//! 3. Producers in any process read the slot, open the ring file by its key (cached per open
//!    map) and append records; the consumer reads them through [`PerfRingMemory`] and sleeps in
//!    [`PerfBuffer::wait`] (a futex in the map header) until a producer wakes it.
//!
//! [`PerfBuffer::new`] does all of it for every possible CPU. Entry lifetime follows the
//! kernel: an entry belongs to the [`PerfEventArray`] handle (the "map file") that installed it
//! and is cleared when that handle is dropped or its process dies, unless the map was created
//! with `BPF_F_PRESERVE_ELEMS`. A ring file is reference-counted (its creator plus every slot
//! holding it) and unlinked when the count drops to zero; a process killed while holding
//! references leaves the file behind in `/dev/shm`.
//!
//! # Map file layout
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0 | 4096 | the common map header (`crate::header`); slot lock in header lock slot 0 |
//! | 1024 | 4 | (type state) wakeup sequence: the futex consumers sleep on |
//! | 1028 | 4 | (type state) number of sleeping consumers |
//! | 4096 | 16 × max_entries | slots: `u64 ring_key` (0 = empty), `u64 owner` = `pid << 32 \| handle serial` |
//!
//! # Ring file layout
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0 | 4096 | the perf mmap metadata page: `data_head` at 1024, `data_tail` at 1032, `data_offset` at 1040, `data_size` at 1048 (as `struct perf_event_mmap_page`) |
//! | 2048 | 8 | magic `b"BPFMPERF"` |
//! | 2056 | 4 | layout version (1) |
//! | 2060 | 4 | the ring's CPU |
//! | 2064 | 8 | lost sample count not yet reported (under the ring lock) |
//! | 2072 | 4 | reference count (creator + installed slots) |
//! | 2076 | 4 | `wakeup_events` (wake the consumer every N samples) |
//! | 2080 | 4 | samples since the last wakeup |
//! | 2088 | 8 | the ring's key (the `id` of `PERF_RECORD_LOST`) |
//! | 2096 | 4 | pid of the creating process while it holds its reference, 0 after it released it |
//! | 3072 | 64 | the ring's lock slot (`crate::lock`) |
//! | 4096 | `data_size` | data area (a power of two of pages), not double-mapped |

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bpfmaps_abi::consumer::{PerfBufConsumer, PerfWait};
use bpfmaps_abi::map_flags::{BPF_F_NUMA_NODE, BPF_F_PRESERVE_ELEMS, BPF_F_RDONLY, BPF_F_WRONLY};
use bpfmaps_abi::ringbuf::perf::{
    raw_size, DATA_HEAD_OFFSET, DATA_OFFSET_OFFSET, DATA_SIZE_OFFSET, DATA_TAIL_OFFSET,
    PERF_RECORD_LOST, PERF_RECORD_SAMPLE,
};
use bpfmaps_abi::update_flags::BPF_ANY;
use bpfmaps_abi::{
    check_sizes, Errno, MapDef, MapError, MapInfo, MapOps, MapResult, MapType, PerfRingMemory,
};

use crate::backend::{Backend, MapFile, Plan, StandaloneError};
use crate::header::{header_lock_offset, HeaderError, MapHeader, AREA_OFFSET, TYPE_STATE_OFFSET};
use crate::lock::{init_lock, lock, LockError};
use crate::region::{Region, RegionError};
use crate::ringbuf::shm;
use crate::ringbuf::{lookup_flags_known, no_spin_lock};
use crate::UserMapError;

/// `BPF_F_INDEX_MASK`: the low 32 bits of `bpf_perf_event_output`'s flags select the slot.
pub const BPF_F_INDEX_MASK: u64 = 0xffff_ffff;
/// `BPF_F_CURRENT_CPU`: use the slot of the CPU the program runs on.
pub const BPF_F_CURRENT_CPU: u64 = BPF_F_INDEX_MASK;
/// `header.misc` of the samples this engine writes: `PERF_RECORD_MISC_KERNEL`, what the kernel
/// writes for `bpf_perf_event_output` from a program (checked against the kernel by the tests).
pub const SAMPLE_MISC: u16 = 1;

const SLOT_SIZE: usize = 16;
const SLOT_LOCK: usize = 0;
const WAKE_SEQ_OFFSET: usize = TYPE_STATE_OFFSET;
const WAITERS_OFFSET: usize = TYPE_STATE_OFFSET + 4;

const RING_MAGIC: [u8; 8] = *b"BPFMPERF";
const RING_VERSION: u32 = 1;
const RING_MAGIC_OFFSET: usize = 2048;
const RING_VERSION_OFFSET: usize = 2056;
const RING_CPU_OFFSET: usize = 2060;
const RING_LOST_OFFSET: usize = 2064;
const RING_REFS_OFFSET: usize = 2072;
const RING_WAKEUP_EVENTS_OFFSET: usize = 2076;
const RING_SINCE_WAKEUP_OFFSET: usize = 2080;
const RING_KEY_OFFSET: usize = 2088;
const RING_CREATOR_OFFSET: usize = 2096;
const RING_LOCK_OFFSET: usize = 3072;
const RING_META_SIZE: usize = 4096;
const PERF_HEADER_SIZE: usize = 8;
const LOST_RECORD_SIZE: usize = 24;

/// Why a perf event array or ring could not be created, opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// The definition breaks the kernel's creation rules; the kernel would fail with this errno.
    #[error("perf event array definition refused: {0}")]
    Refused(Errno),
    /// Mapping a file failed.
    #[error("mapping a perf file: {0}")]
    Region(#[from] RegionError),
    /// A system call on a file failed.
    #[error("{call} failed: {source}")]
    Io {
        /// The failing call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The map file's header is not a valid map header.
    #[error("not a bpfmaps map file: {0}")]
    Header(#[from] HeaderError),
    /// The file is not a well-formed perf event array or ring.
    #[error("malformed perf file: {0}")]
    Malformed(String),
    /// Initialising or taking a shared lock failed.
    #[error("perf lock: {0}")]
    Lock(#[from] LockError),
}

impl From<StandaloneError> for PerfError {
    fn from(e: StandaloneError) -> PerfError {
        match e {
            StandaloneError::Io { call, source } => PerfError::Io { call, source },
            StandaloneError::Region(e) => PerfError::Region(e),
            StandaloneError::TooLarge { area_size } => PerfError::Io {
                call: "ftruncate",
                source: std::io::Error::other(format!("{area_size} bytes is too large")),
            },
        }
    }
}

/// Checks a perf event array definition against the kernel's creation rules (doc 5.1): key and
/// value size 4, `max_entries` non-zero, flags within `NUMA_NODE | RDONLY | WRONLY |
/// PRESERVE_ELEMS` and not both `RDONLY` and `WRONLY`, and a valid name; `EINVAL` otherwise.
pub fn check_def(def: &MapDef) -> Result<(), Errno> {
    let allowed = BPF_F_NUMA_NODE | BPF_F_RDONLY | BPF_F_WRONLY | BPF_F_PRESERVE_ELEMS;
    let both_access = def.map_flags & (BPF_F_RDONLY | BPF_F_WRONLY) == BPF_F_RDONLY | BPF_F_WRONLY;
    if def.map_type != MapType::PerfEventArray
        || !def.has_valid_name()
        || def.key_size != 4
        || def.value_size != 4
        || def.max_entries == 0
        || def.map_flags & !allowed != 0
        || both_access
    {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

/// The size of a perf event array's file: the header page and one 16-byte slot per entry.
pub fn file_size(max_entries: u32) -> u64 {
    AREA_OFFSET as u64 + SLOT_SIZE as u64 * u64::from(max_entries)
}

/// The [`crate::UserMap`] plan step: the kernel's creation rules ([`check_def`]) and the size of
/// the slot table.
pub fn plan(def: &MapDef, _cpus: u32) -> Result<Plan, Errno> {
    check_def(def)?;
    Ok(Plan {
        max_entries: def.max_entries,
        area_size: file_size(def.max_entries) - AREA_OFFSET as u64,
        hash_seed: 0,
    })
}

/// The [`crate::UserMap`] init step: the slot lock. Slots start empty in the fresh file.
pub fn init(file: &MapFile) -> Result<(), UserMapError> {
    init_lock(&file.region, header_lock_offset(SLOT_LOCK))?;
    Ok(())
}

/// The [`crate::UserMap`] open step: a [`PerfEventArray`] handle over the validated file.
pub fn open(file: Arc<MapFile>) -> Result<Box<dyn Backend>, UserMapError> {
    PerfEventArray::from_map_file(file)
        .map(|map| Box::new(map) as Box<dyn Backend>)
        .map_err(|e| UserMapError::Corrupt {
            path: "<perf event array>".into(),
            reason: e.to_string(),
        })
}

fn ring_dir() -> PathBuf {
    let shm_dir = PathBuf::from("/dev/shm");
    if shm_dir.is_dir() {
        shm_dir
    } else {
        std::env::temp_dir()
    }
}

fn ring_path(key: u64) -> PathBuf {
    ring_dir().join(format!("bpfmaps-perf-{key:016x}"))
}

/// One mapped ring file.
struct RingShared {
    region: Region,
    key: u64,
    cpu: u32,
    data_size: u64,
}

impl RingShared {
    fn head(&self) -> &AtomicU64 {
        self.region.atomic_u64(DATA_HEAD_OFFSET)
    }

    fn tail(&self) -> &AtomicU64 {
        self.region.atomic_u64(DATA_TAIL_OFFSET)
    }

    fn lost(&self) -> &AtomicU64 {
        self.region.atomic_u64(RING_LOST_OFFSET)
    }

    fn refs(&self) -> &AtomicU32 {
        self.region.atomic_u32(RING_REFS_OFFSET)
    }

    /// Opens the ring file of `key` (installed by some consumer) and validates it.
    fn open(key: u64) -> Result<RingShared, PerfError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(ring_path(key))
            .map_err(|source| PerfError::Io {
                call: "open",
                source,
            })?;
        let region = Region::map(file)?;
        if region.len() <= RING_META_SIZE {
            return Err(PerfError::Malformed("ring file too small".into()));
        }
        let mut magic = [0u8; 8];
        region.read(RING_MAGIC_OFFSET, &mut magic);
        let mut word = [0u8; 4];
        region.read(RING_VERSION_OFFSET, &mut word);
        if magic != RING_MAGIC || u32::from_le_bytes(word) != RING_VERSION {
            return Err(PerfError::Malformed("not a bpfmaps perf ring".into()));
        }
        let data_size = (region.len() - RING_META_SIZE) as u64;
        let recorded_size = region.atomic_u64(DATA_SIZE_OFFSET).load(Ordering::Acquire);
        let recorded_key = region.atomic_u64(RING_KEY_OFFSET).load(Ordering::Acquire);
        if !data_size.is_power_of_two() || recorded_size != data_size || recorded_key != key {
            return Err(PerfError::Malformed(
                "inconsistent perf ring metadata".into(),
            ));
        }
        let cpu = region.atomic_u32(RING_CPU_OFFSET).load(Ordering::Acquire);
        Ok(RingShared {
            region,
            key,
            cpu,
            data_size,
        })
    }

    /// Drops one reference; the last one unlinks the ring file. So does the last slot reference
    /// when the only one left is that of a creator process that died without releasing it.
    fn release(&self) {
        let left = self.refs().fetch_sub(1, Ordering::AcqRel).wrapping_sub(1);
        let creator = self
            .region
            .atomic_u32(RING_CREATOR_OFFSET)
            .load(Ordering::Acquire);
        if left == 0 || (left == 1 && creator != 0 && !shm::process_alive(creator)) {
            let _ = std::fs::remove_file(ring_path(self.key));
        }
    }

    /// Copies `bytes` to free-running position `pos`, wrapping at the end of the data area.
    fn put(&self, pos: u64, bytes: &[u8]) {
        let mask = self.data_size - 1;
        let start = (pos & mask) as usize;
        let first = bytes.len().min(self.data_size as usize - start);
        self.region.write(RING_META_SIZE + start, &bytes[..first]);
        if first < bytes.len() {
            self.region.write(RING_META_SIZE, &bytes[first..]);
        }
    }

    /// `perf_output_begin` + copy + `perf_output_end` for one `PERF_RECORD_SAMPLE` with a raw
    /// payload, preceded by a `PERF_RECORD_LOST` when samples were lost since the last success.
    /// Returns whether the consumer should be woken.
    fn write_sample(&self, data: &[u8]) -> Result<bool, Errno> {
        // `raw_size = round_up(len + 4, 8) - 4` (the abi's `raw_size`, in 64 bits here).
        let raw64 = (data.len() as u64 + 4).div_ceil(8) * 8 - 4;
        // `perf_event_header.size` is 16 bits: a larger record cannot be described.
        let sample_size16 =
            u16::try_from(PERF_HEADER_SIZE as u64 + 4 + raw64).map_err(|_| Errno::E2BIG)?;
        let sample_size = usize::from(sample_size16);
        let raw = raw64 as u32;
        debug_assert!(data.len() > u32::MAX as usize - 8 || raw == raw_size(data.len() as u32));
        let guard = lock(&self.region, RING_LOCK_OFFSET).map_err(|_| Errno::EBUSY)?;
        let head = self.head().load(Ordering::Relaxed);
        let tail = self.tail().load(Ordering::Acquire);
        let lost = self.lost().load(Ordering::Relaxed);
        let total = sample_size + if lost != 0 { LOST_RECORD_SIZE } else { 0 };
        // CIRC_SPACE(head, tail, size): the kernel always leaves at least one byte free.
        let space = tail.wrapping_sub(head).wrapping_sub(1) & (self.data_size - 1);
        if space < total as u64 {
            self.lost().store(lost.wrapping_add(1), Ordering::Relaxed);
            drop(guard);
            return Err(Errno::ENOSPC);
        }
        let mut pos = head;
        if lost != 0 {
            let mut rec = [0u8; LOST_RECORD_SIZE];
            rec[0..4].copy_from_slice(&PERF_RECORD_LOST.to_le_bytes());
            rec[6..8].copy_from_slice(&(LOST_RECORD_SIZE as u16).to_le_bytes());
            rec[8..16].copy_from_slice(&self.key.to_le_bytes());
            rec[16..24].copy_from_slice(&lost.to_le_bytes());
            self.put(pos, &rec);
            pos = pos.wrapping_add(LOST_RECORD_SIZE as u64);
            self.lost().store(0, Ordering::Relaxed);
        }
        let mut head_bytes = [0u8; PERF_HEADER_SIZE + 4];
        head_bytes[0..4].copy_from_slice(&PERF_RECORD_SAMPLE.to_le_bytes());
        head_bytes[4..6].copy_from_slice(&SAMPLE_MISC.to_le_bytes());
        head_bytes[6..8].copy_from_slice(&sample_size16.to_le_bytes());
        head_bytes[8..12].copy_from_slice(&raw.to_le_bytes());
        self.put(pos, &head_bytes);
        // The payload; the pad bytes up to `raw` keep stale ring contents, as in the kernel.
        self.put(pos.wrapping_add(head_bytes.len() as u64), data);
        self.head()
            .store(head.wrapping_add(total as u64), Ordering::Release);
        let every = self
            .region
            .atomic_u32(RING_WAKEUP_EVENTS_OFFSET)
            .load(Ordering::Relaxed)
            .max(1);
        let since = self.region.atomic_u32(RING_SINCE_WAKEUP_OFFSET);
        let count = since.load(Ordering::Relaxed).wrapping_add(1);
        let wake = count >= every;
        since.store(if wake { 0 } else { count }, Ordering::Relaxed);
        drop(guard);
        Ok(wake)
    }
}

/// The process's open rings by token (the analogue of the fd table), with the last token
/// handed out.
type RingRegistry = Mutex<(u32, HashMap<u32, Weak<RingShared>>)>;

fn ring_registry() -> &'static RingRegistry {
    static REGISTRY: OnceLock<RingRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new((0, HashMap::new())))
}

/// One CPU's perf ring, owned by the consumer that created it: the user engine's analogue of a
/// `PERF_COUNT_SW_BPF_OUTPUT` perf event opened for one CPU and its mmap. Implements
/// [`PerfRingMemory`] for the engine-neutral perf buffer consumer. Dropping it is closing the
/// perf fd: its token stops resolving and the file is unlinked once no slot holds it.
pub struct PerfRing {
    shared: Arc<RingShared>,
    token: u32,
}

impl std::fmt::Debug for PerfRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfRing")
            .field("cpu", &self.shared.cpu)
            .field("data_size", &self.shared.data_size)
            .field("token", &self.token)
            .finish()
    }
}

impl PerfRing {
    /// Creates a ring for `cpu` with `data_pages` data pages (a power of two, as libbpf
    /// requires; `EINVAL` otherwise) that wakes its consumer after every sample.
    pub fn create(cpu: u32, data_pages: u32) -> Result<PerfRing, PerfError> {
        Self::create_with_wakeup(cpu, data_pages, 1)
    }

    /// Like [`PerfRing::create`], waking the consumer every `wakeup_events` samples (the perf
    /// attribute of that name; 0 counts as 1).
    pub fn create_with_wakeup(
        cpu: u32,
        data_pages: u32,
        wakeup_events: u32,
    ) -> Result<PerfRing, PerfError> {
        if data_pages == 0 || !data_pages.is_power_of_two() {
            return Err(PerfError::Refused(Errno::EINVAL));
        }
        let page = shm::page_size() as u64;
        let data_size = u64::from(data_pages)
            .checked_mul(page)
            .filter(|s| *s <= 1 << 40)
            .ok_or(PerfError::Refused(Errno::EINVAL))?;
        let key = loop {
            let key = shm::random_u64().map_err(|source| PerfError::Io {
                call: "getrandom",
                source,
            })?;
            if key != 0 {
                break key;
            }
        };
        let path = ring_path(key);
        let file = shm::create_exclusive(&path).map_err(|source| PerfError::Io {
            call: "open",
            source,
        })?;
        let built = (|| {
            file.set_len(RING_META_SIZE as u64 + data_size)
                .map_err(|source| PerfError::Io {
                    call: "ftruncate",
                    source,
                })?;
            let region = Region::map(file)?;
            init_lock(&region, RING_LOCK_OFFSET)?;
            region.write(RING_MAGIC_OFFSET, &RING_MAGIC);
            region.write(RING_VERSION_OFFSET, &RING_VERSION.to_le_bytes());
            region
                .atomic_u32(RING_CPU_OFFSET)
                .store(cpu, Ordering::Relaxed);
            region
                .atomic_u32(RING_REFS_OFFSET)
                .store(1, Ordering::Relaxed);
            region
                .atomic_u32(RING_CREATOR_OFFSET)
                .store(shm::current_pid(), Ordering::Relaxed);
            region
                .atomic_u32(RING_WAKEUP_EVENTS_OFFSET)
                .store(wakeup_events.max(1), Ordering::Relaxed);
            region
                .atomic_u64(DATA_OFFSET_OFFSET)
                .store(RING_META_SIZE as u64, Ordering::Relaxed);
            region
                .atomic_u64(DATA_SIZE_OFFSET)
                .store(data_size, Ordering::Relaxed);
            region
                .atomic_u64(RING_KEY_OFFSET)
                .store(key, Ordering::Release);
            Ok::<_, PerfError>(region)
        })();
        let region = match built {
            Ok(region) => region,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let shared = Arc::new(RingShared {
            region,
            key,
            cpu,
            data_size,
        });
        let mut registry = ring_registry().lock().unwrap_or_else(|p| p.into_inner());
        registry.1.retain(|_, ring| ring.strong_count() > 0);
        let token = loop {
            registry.0 = registry.0.wrapping_add(1).max(1);
            if !registry.1.contains_key(&registry.0) {
                break registry.0;
            }
        };
        registry.1.insert(token, Arc::downgrade(&shared));
        Ok(PerfRing { shared, token })
    }

    /// The process-local token naming this ring, the value `MapOps::update` takes (the analogue
    /// of a perf event fd).
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The CPU the ring belongs to.
    pub fn cpu(&self) -> u32 {
        self.shared.cpu
    }

    /// Samples lost and not yet reported by a `PERF_RECORD_LOST`.
    pub fn pending_lost(&self) -> u64 {
        self.shared.lost().load(Ordering::Acquire)
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        let mut registry = ring_registry().lock().unwrap_or_else(|p| p.into_inner());
        registry.1.remove(&self.token);
        drop(registry);
        self.shared
            .region
            .atomic_u32(RING_CREATOR_OFFSET)
            .store(0, Ordering::Release);
        self.shared.release();
    }
}

impl PerfRingMemory for PerfRing {
    fn data_size(&self) -> u64 {
        self.shared.data_size
    }

    fn load_head(&self) -> u64 {
        self.shared.head().load(Ordering::Acquire)
    }

    fn load_tail(&self) -> u64 {
        self.shared.tail().load(Ordering::Acquire)
    }

    fn store_tail(&self, tail: u64) {
        self.shared.tail().store(tail, Ordering::Release);
    }

    fn copy_out(&self, pos: u64, out: &mut [u8]) {
        let size = self.shared.data_size as usize;
        let mut done = 0;
        while done < out.len() {
            let start = (pos.wrapping_add(done as u64) & (self.shared.data_size - 1)) as usize;
            let n = (out.len() - done).min(size - start);
            self.shared
                .region
                .read(RING_META_SIZE + start, &mut out[done..done + n]);
            done += n;
        }
    }
}

struct Inner {
    file: Arc<MapFile>,
    /// This handle's identity in slot owners: `pid << 32 | serial`.
    owner: u64,
    /// Rings this process opened, by key.
    rings: Mutex<HashMap<u64, Arc<RingShared>>>,
    /// This handle's own open file description of the map, holding a shared `flock`: how the
    /// last handle of an unpinned map knows it is the last (see `Drop`).
    presence: Option<File>,
}

impl Inner {
    fn region(&self) -> &Region {
        &self.file.region
    }

    fn header(&self) -> &MapHeader {
        &self.file.header
    }

    fn slot_key(&self, index: u32) -> &AtomicU64 {
        self.region()
            .atomic_u64(AREA_OFFSET + SLOT_SIZE * index as usize)
    }

    fn slot_owner(&self, index: u32) -> &AtomicU64 {
        self.region()
            .atomic_u64(AREA_OFFSET + SLOT_SIZE * index as usize + 8)
    }

    fn preserve(&self) -> bool {
        self.header().map_flags & BPF_F_PRESERVE_ELEMS != 0
    }

    fn wake_seq(&self) -> &AtomicU32 {
        self.region().atomic_u32(WAKE_SEQ_OFFSET)
    }

    fn waiters(&self) -> &AtomicU32 {
        self.region().atomic_u32(WAITERS_OFFSET)
    }

    /// The ring of `key`, opened (and cached) in this process.
    fn ring(&self, key: u64) -> Option<Arc<RingShared>> {
        let mut rings = self.rings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ring) = rings.get(&key) {
            return Some(Arc::clone(ring));
        }
        let ring = Arc::new(RingShared::open(key).ok()?);
        rings.insert(key, Arc::clone(&ring));
        Some(ring)
    }

    /// Empties slot `index` if it still holds `key` (called under the slot lock) and drops the
    /// slot's reference on the ring.
    fn clear_slot(&self, index: u32, key: u64) {
        if self
            .slot_key(index)
            .compare_exchange(key, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.slot_owner(index).store(0, Ordering::Release);
            if let Some(ring) = self.ring(key) {
                ring.release();
            }
            self.rings
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
    }

    /// The ring key in slot `index`, treating an entry whose installing process died as empty
    /// (the kernel clears entries when the installing map file is released) unless the map
    /// preserves its elements.
    fn live_slot(&self, index: u32) -> Option<u64> {
        let key = self.slot_key(index).load(Ordering::Acquire);
        if key == 0 {
            return None;
        }
        if !self.preserve() {
            let owner = self.slot_owner(index).load(Ordering::Acquire);
            let pid = (owner >> 32) as u32;
            if pid != (self.owner >> 32) as u32 && !shm::process_alive(pid) {
                if let Ok(guard) = lock(self.region(), header_lock_offset(SLOT_LOCK)) {
                    self.clear_slot(index, key);
                    drop(guard);
                }
                return None;
            }
        }
        Some(key)
    }

    fn wake(&self) {
        self.wake_seq().fetch_add(1, Ordering::SeqCst);
        if self.waiters().load(Ordering::SeqCst) != 0 {
            shm::futex_wake_all(self.wake_seq());
        }
    }

    /// Sleeps on the map's futex unless one of `rings` already has unread data. The sequence is
    /// read before the rings are checked, so a sample published after the check changes it and
    /// the futex does not sleep.
    fn wait(&self, rings: &[&RingShared], timeout: Option<Duration>) -> Result<(), Errno> {
        self.waiters().fetch_add(1, Ordering::SeqCst);
        let seq = self.wake_seq().load(Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let ready = rings
            .iter()
            .any(|r| r.head().load(Ordering::SeqCst) != r.tail().load(Ordering::SeqCst));
        let result = if ready {
            Ok(())
        } else {
            shm::futex_wait(self.wake_seq(), seq, timeout)
                .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))
        };
        self.waiters().fetch_sub(1, Ordering::SeqCst);
        result
    }
}

/// A new open file description of `file` (so its `flock` is independent of `file`'s).
fn reopen(file: &File) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Whether the map file is gone for good once this handle closes: not pinned (no name) and no
/// other handle, in any process, holding its shared `flock`.
fn last_handle_of_unpinned_map(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let unpinned = file.metadata().is_ok_and(|m| m.nlink() == 0);
    unpinned
        && reopen(file).is_ok_and(|probe| crate::lock::try_flock_exclusive(&probe).unwrap_or(false))
}

impl Drop for Inner {
    /// Closing the "map file": clear the entries this handle installed, unless preserved. When
    /// the map itself dies (the last handle of an unpinned map), every entry is released, so the
    /// rings' files go away as the kernel's perf events do when their map is freed.
    fn drop(&mut self) {
        drop(self.presence.take());
        let everything = last_handle_of_unpinned_map(self.region().file());
        if self.preserve() && !everything {
            return;
        }
        let Ok(guard) = lock(self.region(), header_lock_offset(SLOT_LOCK)) else {
            return;
        };
        for index in 0..self.header().max_entries {
            if everything || self.slot_owner(index).load(Ordering::Acquire) == self.owner {
                let key = self.slot_key(index).load(Ordering::Acquire);
                if key != 0 {
                    self.clear_slot(index, key);
                }
            }
        }
        drop(guard);
    }
}

fn next_handle_serial() -> u32 {
    static SERIAL: AtomicU32 = AtomicU32::new(0);
    SERIAL.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
}

/// A PERF_EVENT_ARRAY map in shared memory, as one open handle (the analogue of one map fd:
/// entries it installs are cleared when its last clone is dropped, unless the map has
/// `BPF_F_PRESERVE_ELEMS`).
#[derive(Clone)]
pub struct PerfEventArray {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PerfEventArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfEventArray")
            .field("name", &self.inner.header().name)
            .field("max_entries", &self.inner.header().max_entries)
            .finish_non_exhaustive()
    }
}

impl PerfEventArray {
    /// Creates a perf event array of definition `def` in an anonymous memory file.
    /// The same [`plan`] and slot lock as a map made through [`crate::UserMap`], without a
    /// registry entry.
    pub fn create(def: &MapDef) -> Result<PerfEventArray, PerfError> {
        let cpus = crate::possible_cpus();
        let plan = plan(def, cpus).map_err(PerfError::Refused)?;
        let map_file = MapFile::create_anonymous(def, &plan, cpus)?;
        init_lock(&map_file.region, header_lock_offset(SLOT_LOCK))?;
        Self::from_map_file(Arc::new(map_file))
    }

    /// Opens the perf event array stored in `file`: a new handle with its own entry lifetime.
    pub fn open(file: File) -> Result<PerfEventArray, PerfError> {
        let region = Region::map(file)?;
        let header = MapHeader::read(&region)?;
        Self::from_map_file(Arc::new(MapFile { region, header }))
    }

    /// A new handle over an opened map file whose header the caller validated: checks that it
    /// describes a valid perf event array whose slots fit the file.
    pub fn from_map_file(file: Arc<MapFile>) -> Result<PerfEventArray, PerfError> {
        let header = &file.header;
        let def = header.def();
        let expected = file_size(header.max_entries);
        if check_def(&def).is_err()
            || header.file_size != expected
            || file.region.len() as u64 != expected
        {
            return Err(PerfError::Malformed(format!(
                "invalid perf event array header {def:?}"
            )));
        }
        let owner = (u64::from(shm::current_pid()) << 32) | u64::from(next_handle_serial());
        // Best effort: without a presence lock the map only loses the "last handle" cleanup.
        let presence = reopen(file.region.file())
            .ok()
            .filter(|f| crate::lock::flock_shared(f).is_ok());
        Ok(PerfEventArray {
            inner: Arc::new(Inner {
                file,
                owner,
                rings: Mutex::new(HashMap::new()),
                presence,
            }),
        })
    }

    /// The file holding the map (for pinning and for passing to other processes).
    pub fn file(&self) -> &File {
        self.inner.region().file()
    }

    /// The whole-file region (common header, locks, slots).
    pub fn region(&self) -> &Region {
        self.inner.region()
    }

    /// Records the id the registry gave the map.
    pub fn set_id(&self, id: u32) {
        MapHeader::set_id(self.inner.region(), id);
    }

    /// `max_entries`.
    pub fn max_entries(&self) -> u32 {
        self.inner.header().max_entries
    }

    /// Installs `ring` in slot `index` (`bpf_map_update_elem(map, &index, &perf_fd, BPF_ANY)`):
    /// `E2BIG` when `index ≥ max_entries`. Replaces what the slot held.
    pub fn install(&self, index: u32, ring: &PerfRing) -> Result<(), Errno> {
        self.install_shared(index, &ring.shared)
    }

    fn install_shared(&self, index: u32, ring: &Arc<RingShared>) -> Result<(), Errno> {
        let inner = &*self.inner;
        if index >= inner.header().max_entries {
            return Err(Errno::E2BIG);
        }
        let guard =
            lock(inner.region(), header_lock_offset(SLOT_LOCK)).map_err(|_| Errno::EBUSY)?;
        ring.refs().fetch_add(1, Ordering::AcqRel);
        let old = inner.slot_key(index).load(Ordering::Acquire);
        if old != 0 {
            inner.clear_slot(index, old);
        }
        inner
            .rings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ring.key, Arc::clone(ring));
        inner
            .slot_owner(index)
            .store(inner.owner, Ordering::Release);
        inner.slot_key(index).store(ring.key, Ordering::Release);
        drop(guard);
        Ok(())
    }

    /// Empties slot `index` (`BPF_MAP_DELETE_ELEM`): `E2BIG` out of range, `ENOENT` when empty.
    pub fn remove(&self, index: u32) -> Result<(), Errno> {
        let inner = &*self.inner;
        if index >= inner.header().max_entries {
            return Err(Errno::E2BIG);
        }
        inner.live_slot(index).ok_or(Errno::ENOENT)?;
        let guard =
            lock(inner.region(), header_lock_offset(SLOT_LOCK)).map_err(|_| Errno::EBUSY)?;
        let current = inner.slot_key(index).load(Ordering::Acquire);
        let result = if current == 0 {
            Err(Errno::ENOENT)
        } else {
            inner.clear_slot(index, current);
            Ok(())
        };
        drop(guard);
        result
    }

    /// Whether slot `index` holds a live ring.
    pub fn is_installed(&self, index: u32) -> bool {
        index < self.inner.header().max_entries && self.inner.live_slot(index).is_some()
    }

    /// `bpf_perf_event_output(ctx, map, flags, data, size)` from a program running on
    /// `current_cpu`: `EINVAL` for flag bits above the index, `E2BIG` for an index (after
    /// `BPF_F_CURRENT_CPU`) ≥ max_entries, `ENOENT` for an empty slot, `EOPNOTSUPP` when the
    /// slot's ring belongs to another CPU, `ENOSPC` when the ring is full (the loss is counted
    /// and reported by a `PERF_RECORD_LOST` before the next sample that fits).
    pub fn output(&self, flags: u64, current_cpu: u32, data: &[u8]) -> Result<(), Errno> {
        let inner = &*self.inner;
        if flags & !BPF_F_INDEX_MASK != 0 {
            return Err(Errno::EINVAL);
        }
        let index = match flags & BPF_F_INDEX_MASK {
            BPF_F_CURRENT_CPU => current_cpu,
            // Masked to 32 bits above.
            index => index as u32,
        };
        if index >= inner.header().max_entries {
            return Err(Errno::E2BIG);
        }
        let key = inner.live_slot(index).ok_or(Errno::ENOENT)?;
        let ring = inner.ring(key).ok_or(Errno::ENOENT)?;
        if ring.cpu != current_cpu {
            return Err(Errno::EOPNOTSUPP);
        }
        if ring.write_sample(data)? {
            fence(Ordering::SeqCst);
            inner.wake();
        }
        Ok(())
    }

    /// Sleeps on the map's futex until a producer wakes consumers or `timeout` passes; returns at
    /// once when one of `rings` has unread data.
    pub fn wait(&self, rings: &[PerfRing], timeout: Option<Duration>) -> Result<(), Errno> {
        let shared: Vec<&RingShared> = rings.iter().map(|r| &*r.shared).collect();
        self.inner.wait(&shared, timeout)
    }

    /// Wakes every consumer sleeping on this map (for shutdown).
    pub fn wake_consumers(&self) {
        self.inner.wake();
    }

    fn frozen(&self) -> bool {
        MapHeader::frozen(self.inner.region())
    }

    fn write_allowed(&self) -> MapResult<()> {
        if self.frozen() {
            return Err(MapError::Errno(Errno::EPERM));
        }
        Ok(())
    }

    /// `bpf_fd_array_map_update_elem`: `EINVAL` unless `BPF_ANY`, `E2BIG` out of range,
    /// `EBADF` when the value is not the token of an open [`PerfRing`] of this process.
    fn update_slot(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        let index = self.index_of(key)?;
        if flags != BPF_ANY {
            return Err(MapError::Errno(Errno::EINVAL));
        }
        if index >= self.inner.header().max_entries {
            return Err(MapError::Errno(Errno::E2BIG));
        }
        let token = u32::from_le_bytes(value.try_into().map_err(|_| MapError::ValueSize {
            expected: 4,
            got: value.len(),
        })?);
        let ring = {
            let registry = ring_registry().lock().unwrap_or_else(|p| p.into_inner());
            registry.1.get(&token).and_then(Weak::upgrade)
        };
        let ring = ring.ok_or(MapError::Errno(Errno::EBADF))?;
        self.install_shared(index, &ring).map_err(MapError::Errno)
    }

    /// `array_map_get_next_key`: a missing or out-of-range key gives 0, the last index
    /// `ENOENT`.
    fn next_index(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        if next_key.len() != 4 {
            return Err(MapError::KeySize {
                expected: 4,
                got: next_key.len(),
            });
        }
        let max = self.inner.header().max_entries;
        let next = match key {
            None => 0,
            Some(key) => {
                let index = self.index_of(key)?;
                if index >= max {
                    0
                } else if index == max - 1 {
                    return Err(MapError::Errno(Errno::ENOENT));
                } else {
                    index + 1
                }
            }
        };
        next_key.copy_from_slice(&next.to_le_bytes());
        Ok(())
    }

    fn index_of(&self, key: &[u8]) -> MapResult<u32> {
        let bytes: [u8; 4] = key.try_into().map_err(|_| MapError::KeySize {
            expected: 4,
            got: key.len(),
        })?;
        Ok(u32::from_le_bytes(bytes))
    }
}

/// A consumer's set of rings on one perf event array, one per CPU, installed in the slots of
/// their CPUs: what libbpf's `perf_buffer__new` builds. Dropping it uninstalls nothing by itself;
/// the entries go away with the map handle that installed them (or stay, with
/// `BPF_F_PRESERVE_ELEMS`), as in the kernel.
#[derive(Debug)]
pub struct PerfBuffer {
    map: PerfEventArray,
    rings: Vec<PerfRing>,
}

impl PerfBuffer {
    /// Creates one ring of `data_pages` pages for each CPU `0..min(possible CPUs, max_entries)`
    /// and installs it in that CPU's slot of `map`.
    pub fn new(map: &PerfEventArray, data_pages: u32) -> Result<PerfBuffer, PerfError> {
        let cpus = map
            .inner
            .header()
            .possible_cpus
            .max(1)
            .min(map.max_entries());
        let mut rings = Vec::new();
        for cpu in 0..cpus {
            let ring = PerfRing::create(cpu, data_pages)?;
            map.install(cpu, &ring).map_err(PerfError::Refused)?;
            rings.push(ring);
        }
        Ok(PerfBuffer {
            map: map.clone(),
            rings,
        })
    }

    /// The rings, in CPU order.
    pub fn rings(&self) -> &[PerfRing] {
        &self.rings
    }

    /// Takes the rings out (for a consumer that owns them), keeping the map handle alive.
    pub fn into_parts(self) -> (PerfEventArray, Vec<PerfRing>) {
        (self.map, self.rings)
    }

    /// Sleeps until a producer wakes the consumer, `timeout` passes, or data is waiting.
    pub fn wait(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        self.map.wait(&self.rings, timeout)
    }

    /// The engine-neutral perf buffer consumer over these rings, woken through the map's futex.
    pub fn into_consumer(self) -> PerfBufConsumer<PerfRing, PerfWaiter> {
        let waiter = PerfWaiter {
            map: self.map,
            rings: self.rings.iter().map(|r| Arc::clone(&r.shared)).collect(),
        };
        let rings = self.rings.into_iter().map(|r| (r.cpu(), r)).collect();
        PerfBufConsumer::new(rings, waiter)
    }
}

/// The [`PerfWait`] of a user-engine perf buffer: sleeps on the map's futex, checking its rings
/// for unread data first. Holds the map handle, so the entries it installed stay while the
/// consumer lives.
pub struct PerfWaiter {
    map: PerfEventArray,
    rings: Vec<Arc<RingShared>>,
}

impl std::fmt::Debug for PerfWaiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfWaiter")
            .field("rings", &self.rings.len())
            .finish()
    }
}

impl PerfWait for PerfWaiter {
    fn wait(&self, timeout: Option<Duration>) -> Result<(), Errno> {
        let rings: Vec<&RingShared> = self.rings.iter().map(|r| &**r).collect();
        self.map.inner.wait(&rings, timeout)
    }
}

/// The syscall side (doc 5.2): update installs a ring by token (`EINVAL` unless `BPF_ANY`,
/// `E2BIG` out of range, `EBADF` for a token that names no open ring), lookup `ENOTSUPP`,
/// delete 0 / `ENOENT` / `E2BIG`, get_next_key as an array, batches `ENOTSUPP`.
impl MapOps for PerfEventArray {
    fn info(&self) -> MapInfo {
        self.inner.header().info(self.inner.region())
    }

    fn lookup(&self, key: &[u8], _value: &mut [u8], flags: u64) -> MapResult<()> {
        lookup_flags_known(flags)?;
        no_spin_lock(flags)?;
        self.index_of(key)?;
        Err(MapError::Errno(Errno::ENOTSUPP))
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        self.write_allowed()?;
        no_spin_lock(flags)?;
        check_sizes(&MapOps::info(self), Some(key), Some(value.len()))?;
        self.update_slot(key, value, flags)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        self.write_allowed()?;
        let index = self.index_of(key)?;
        self.remove(index).map_err(MapError::Errno)
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        self.next_index(key, next_key)
    }

    fn lookup_and_delete(&self, key: &[u8], _value: &mut [u8], flags: u64) -> MapResult<()> {
        lookup_flags_known(flags)?;
        self.write_allowed()?;
        no_spin_lock(flags)?;
        self.index_of(key)?;
        Err(MapError::Errno(Errno::ENOTSUPP))
    }

    crate::backend::unsupported_batch_ops!(write: write_allowed);

    /// `EPERM` when already frozen; otherwise freezes (no syscall write succeeds afterwards).
    fn freeze(&self) -> MapResult<()> {
        self.write_allowed()?;
        if !MapHeader::freeze(self.inner.region()) {
            return Err(MapError::Errno(Errno::EBUSY));
        }
        Ok(())
    }
}

/// The [`crate::UserMap`] backend: one `UserMap` is one handle, so entries it installs live as
/// long as it does (unless `BPF_F_PRESERVE_ELEMS`). `UserMap` has checked sizes, access, the
/// frozen state and the flags before these run.
impl Backend for PerfEventArray {
    fn lookup(&self, _key: &[u8], _value: &mut [u8]) -> MapResult<()> {
        Err(MapError::Errno(Errno::ENOTSUPP))
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        self.update_slot(key, value, flags)
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        let index = self.index_of(key)?;
        self.remove(index).map_err(MapError::Errno)
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        self.next_index(key, next_key)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
