//! CPU slots: a program invocation owns one of the possible CPUs' slots for its whole run, alone,
//! as a BPF program owns its CPU (migration disabled) in the kernel. That is what makes per-CPU
//! map values safe to update without atomics, and what `bpf_get_smp_processor_id` returns.
//!
//! Owns the slot file's layout and the few pthread and futex calls on it, the robust mutexes'
//! initialisation included (`init_robust_mutex`); the mapping comes from `bpfmaps_maps::region`.
//!
//! # Exclusivity across processes
//!
//! The slots of a pin root ([`CpuSlots::for_root`]) are shared by every process using that root
//! through one small file, `<pin root>/.cpus/slots` (mode 0600), mapped `MAP_SHARED`. Slot `n` is
//! a robust, process-shared pthread mutex in that file; owning the slot means holding the mutex.
//! Taking and releasing a free slot is one atomic compare-and-swap each in user space: no system
//! call unless somebody waits.
//!
//! Taking any slot ([`CpuSlots::acquire`]): `pthread_mutex_trylock` on every slot, starting with
//! the CPU the thread runs on. When all are busy, the thread registers as a sleeper in the file
//! header, tries all slots again, and sleeps on the header's release counter (a process-shared
//! futex) until a release bumps it; then it tries again. A release unlocks the mutex and, only
//! when the sleeper count is not zero, bumps the counter and wakes the sleepers. Both sides put a
//! sequentially consistent fence between their write (sleeper count, unlock) and their read
//! (slots, sleeper count), so either the sleeper sees the free slot or the releaser sees the
//! sleeper: no wake-up is lost. Sleeps are also bounded ([`SLEEP_LIMIT`]) as a safety net.
//! Taking one given slot ([`CpuSlots::acquire_cpu`]) blocks in `pthread_mutex_lock` on it.
//!
//! # Dead owners
//!
//! A mutex owned by a thread that dies (also by `SIGKILL`) is handed to the next locker with
//! `EOWNERDEAD` (glibc's robust list, processed by the kernel at thread exit); the slot is then
//! marked consistent and used normally, and [`CpuSlots::recovered_slots`] counts it. The per-CPU
//! values the dead invocation was updating may be left half-written (a torn value, or an
//! increment lost or kept), much as a kernel program's per-CPU update can be seen half-done by a
//! program interrupting it on the same CPU: the slot protects the *run*, not the map's contents.
//! A thread blocked on that very slot ([`CpuSlots::acquire_cpu`]) is woken by the kernel; a thread
//! waiting for any slot notices the dead owner's slot within [`SLEEP_LIMIT`]. A process killed
//! while *sleeping* for a slot leaves the sleeper count one too high: nothing is lost, but every
//! later release under that pin root pays one `futex` wake system call until the pin root's
//! `.cpus/slots` is removed.
//!
//! # Layout of `.cpus/slots` (native endianness)
//!
//! | offset            | size | field                                                   |
//! |-------------------|------|---------------------------------------------------------|
//! | 0                 | 4    | magic [`SLOT_FILE_MAGIC`]                               |
//! | 4                 | 4    | layout version [`SLOT_FILE_VERSION`]                    |
//! | 8                 | 4    | slot count `n`                                          |
//! | 12                | 4    | size of one lock slot (64)                              |
//! | 16                | 4    | release counter (futex word sleepers wait on)           |
//! | 20                | 4    | sleeper count                                           |
//! | 24                | 40   | zero                                                    |
//! | 64 + 64·i         | 64   | slot `i`: a robust, process-shared `pthread_mutex_t`    |
//!
//! The file is made race-free: created unnamed (`O_TMPFILE`) in `.cpus`, sized, every mutex
//! initialised and the header written, and only then linked to `.cpus/slots`. A process that loses
//! the race to link (`EEXIST`) drops its copy and maps the winner's. An existing file is checked
//! (magic, version, count, length) before use.
//!
//! [`CpuSlots::new`] makes a process-local set (the same layout in an unnamed memory file), for
//! tests and embedders without a pin root.
//!
//! Limits: a slot belongs to the *thread* that took it, so a [`CpuSlot`] cannot be sent to
//! another thread (it is `!Send`). A thread taking a slot it already holds through
//! [`CpuSlots::acquire_cpu`] waits forever, as a nested invocation on a busy CPU would. Should a
//! pthread call fail with an unexpected error, the invocation runs without exclusivity and
//! [`CpuSlots::lock_failures`] counts it. A child made by `fork` is a different thread: it never
//! shares its parent's slots.

use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bpfmaps_maps::region::{self, Region};

/// Name of the slot directory under the pin root.
pub const CPU_SLOT_DIR: &str = ".cpus";

/// Name of the slot file inside [`CPU_SLOT_DIR`].
pub const CPU_SLOT_FILE: &str = "slots";

/// First word of a slot file ("BPCS" read as a little-endian word).
pub const SLOT_FILE_MAGIC: u32 = u32::from_le_bytes(*b"BPCS");

/// Layout version of the slot file.
pub const SLOT_FILE_VERSION: u32 = 1;

/// The longest a thread waiting for any slot sleeps before it looks at the slots again even
/// without a wake-up. A slot whose owner dies is freed without a wake-up, so this also bounds
/// how long such a waiter takes to notice it.
pub const SLEEP_LIMIT: Duration = Duration::from_millis(20);

/// Bytes of the header before slot 0 (one cache line).
const HEADER_SIZE: usize = 64;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = 4;
const COUNT_OFFSET: usize = 8;
const SLOT_SIZE_OFFSET: usize = 12;
const RELEASES_OFFSET: usize = 16;
const SLEEPERS_OFFSET: usize = 20;

/// The largest slot count a file may declare (far above any machine's possible CPUs).
const MAX_SLOTS: u32 = 1 << 16;

/// Bytes of one slot: a glibc `pthread_mutex_t` (40 bytes on x86-64) in a cache line of its own.
const LOCK_SLOT_SIZE: usize = 64;

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= LOCK_SLOT_SIZE);

/// Initialises the slot at `off` as a robust, process-shared mutex. Only for a file no other
/// process or thread can reach yet.
fn init_robust_mutex(region: &Region, off: usize) -> io::Result<()> {
    let mutex = region
        .ptr_at(off, LOCK_SLOT_SIZE, LOCK_SLOT_SIZE)
        .cast::<libc::pthread_mutex_t>();
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is a local we own; pthread_mutexattr_init initialises it.
    let rc = unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `attr` was initialised above; the setters only write into it, and
    // pthread_mutex_init writes the LOCK_SLOT_SIZE in-bounds, aligned bytes of the mapping at
    // `mutex` (checked by `ptr_at`), which nobody else can reach yet (the caller's contract).
    let rc = unsafe {
        let mut rc =
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        if rc == 0 {
            rc = libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST);
        }
        if rc == 0 {
            rc = libc::pthread_mutex_init(mutex, attr.as_ptr());
        }
        libc::pthread_mutexattr_destroy(attr.as_mut_ptr());
        rc
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Byte offset of slot `index`'s mutex.
fn slot_offset(index: usize) -> usize {
    HEADER_SIZE + index * LOCK_SLOT_SIZE
}

/// Length of a slot file with `count` slots.
fn file_len(count: u32) -> usize {
    slot_offset(count as usize)
}

/// A set of CPU slots, each free or owned by one invocation.
#[derive(Debug)]
pub struct CpuSlots {
    /// The slot file (or the process-local memory file), mapped shared.
    region: Region,
    count: u32,
    /// The slot directory, for system-wide slots.
    dir: Option<PathBuf>,
    lock_failures: AtomicU64,
    recovered: AtomicU64,
}

/// An owned CPU slot; dropping it frees the slot and wakes the threads waiting for any slot.
///
/// Not `Send`: the slot's mutex belongs to the thread that took it and only that thread can
/// release it.
#[derive(Debug)]
pub struct CpuSlot<'a> {
    slots: &'a CpuSlots,
    cpu: u32,
    /// False when locking failed unexpectedly and the run goes on without the mutex.
    held: bool,
    not_send: PhantomData<*const ()>,
}

impl CpuSlot<'_> {
    /// The CPU number this slot stands for.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }
}

impl Drop for CpuSlot<'_> {
    fn drop(&mut self) {
        if self.held {
            self.slots.release(self.cpu as usize);
        }
    }
}

/// Outcome of a non-blocking attempt on one slot.
enum TryLock {
    /// The mutex is ours (taken over from a dead owner, too: see `recovered`).
    Taken,
    /// Somebody else holds it.
    Busy,
    /// An unexpected pthread error (counted in `lock_failures`).
    Failed,
}

fn invalid(path: &Path, what: String) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {what}", path.display()),
    )
}

impl CpuSlots {
    /// `count` free process-local slots (at least one): exclusive between threads of this
    /// process only.
    ///
    /// # Panics
    ///
    /// When the process cannot make or map a memory file of `64 × (count + 1)` bytes (out of
    /// file descriptors or memory).
    pub fn new(count: u32) -> CpuSlots {
        let count = count.clamp(1, MAX_SLOTS);
        // A memory file of a few KiB, initialised by us alone: failure here means the process
        // is out of file descriptors or memory, where nothing useful can go on.
        let region = region::create_memfd(file_len(count) as u64)
            .map_err(|e| e.to_string())
            .and_then(|file| Region::map(file).map_err(|e| e.to_string()))
            .and_then(|region| {
                Self::initialise(&region, count)
                    .map(|()| region)
                    .map_err(|e| e.to_string())
            })
            .unwrap_or_else(|e| panic!("cannot make {count} process-local CPU slots: {e}"));
        CpuSlots::from_region(region, count, None)
    }

    fn from_region(region: Region, count: u32, dir: Option<PathBuf>) -> CpuSlots {
        CpuSlots {
            region,
            count,
            dir,
            lock_failures: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
        }
    }

    /// Writes a fresh slot file's header and initialises every slot's mutex. Only for a file no
    /// other process or thread can reach yet.
    fn initialise(region: &Region, count: u32) -> io::Result<()> {
        for index in 0..count as usize {
            init_robust_mutex(region, slot_offset(index))?;
        }
        region.write(VERSION_OFFSET, &SLOT_FILE_VERSION.to_ne_bytes());
        region.write(COUNT_OFFSET, &count.to_ne_bytes());
        region.write(SLOT_SIZE_OFFSET, &(LOCK_SLOT_SIZE as u32).to_ne_bytes());
        region.write(MAGIC_OFFSET, &SLOT_FILE_MAGIC.to_ne_bytes());
        Ok(())
    }

    /// Checks an existing slot file's header against what this process expects.
    fn validate(region: &Region, count: u32, path: &Path) -> io::Result<()> {
        let word = |off: usize| {
            let mut bytes = [0u8; 4];
            region.read(off, &mut bytes);
            u32::from_ne_bytes(bytes)
        };
        if region.len() < HEADER_SIZE || word(MAGIC_OFFSET) != SLOT_FILE_MAGIC {
            return Err(invalid(path, "not a CPU slot file".to_owned()));
        }
        if word(VERSION_OFFSET) != SLOT_FILE_VERSION
            || word(SLOT_SIZE_OFFSET) != LOCK_SLOT_SIZE as u32
        {
            return Err(invalid(
                path,
                format!(
                    "CPU slot file version {} (slot size {}), expected {} ({})",
                    word(VERSION_OFFSET),
                    word(SLOT_SIZE_OFFSET),
                    SLOT_FILE_VERSION,
                    LOCK_SLOT_SIZE
                ),
            ));
        }
        let found = word(COUNT_OFFSET);
        if found != count {
            return Err(invalid(
                path,
                format!("{found} CPU slots, this process needs {count}"),
            ));
        }
        if region.len() != file_len(count) {
            return Err(invalid(
                path,
                format!(
                    "{} bytes, {count} slots need {}",
                    region.len(),
                    file_len(count)
                ),
            ));
        }
        Ok(())
    }

    /// `count` slots (at least one) shared by every process using `root`: maps
    /// `root/.cpus/slots`, creating it (race-free) when missing.
    pub fn system_wide(root: &Path, count: u32) -> io::Result<CpuSlots> {
        let count = count.clamp(1, MAX_SLOTS);
        let dir = root.join(CPU_SLOT_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let path = dir.join(CPU_SLOT_FILE);
        let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        loop {
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
            {
                Ok(file) => {
                    let region = Region::map(file).map_err(|e| invalid(&path, e.to_string()))?;
                    Self::validate(&region, count, &path)?;
                    return Ok(CpuSlots::from_region(region, count, Some(dir)));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(with_path(e)),
            }
            let file =
                region::create_unnamed_file(&dir, file_len(count) as u64).map_err(with_path)?;
            let region = Region::map(file).map_err(|e| invalid(&path, e.to_string()))?;
            Self::initialise(&region, count).map_err(with_path)?;
            match region::link_file(region.file(), &path) {
                Ok(()) => return Ok(CpuSlots::from_region(region, count, Some(dir))),
                // Another process published its file first: use that one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(with_path(e)),
            }
        }
    }

    /// The system-wide slots of pin root `root`, over the machine's possible CPUs: one set per
    /// root per process, made on first use and kept for the life of the process.
    pub fn for_root(root: &Path) -> io::Result<&'static CpuSlots> {
        static BY_ROOT: Mutex<Vec<(PathBuf, &'static CpuSlots)>> = Mutex::new(Vec::new());
        let mut by_root = BY_ROOT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, slots)) = by_root.iter().find(|(r, _)| r == root) {
            return Ok(slots);
        }
        let slots = CpuSlots::system_wide(root, bpfmaps_maps::possible_cpus())?;
        // One small allocation per pin root for the whole process: leaked on purpose so
        // programs can hold a `&'static` without reference counting on every run.
        let slots: &'static CpuSlots = Box::leak(Box::new(slots));
        by_root.push((root.to_owned(), slots));
        Ok(slots)
    }

    /// Number of slots.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The slot file's directory, when the slots are system-wide.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// How many times a slot's mutex failed with an unexpected error (the invocation then ran
    /// without exclusivity), or a futex sleep failed.
    pub fn lock_failures(&self) -> u64 {
        self.lock_failures.load(Ordering::Relaxed)
    }

    /// How many slots this process took over from an owner that died holding them.
    pub fn recovered_slots(&self) -> u64 {
        self.recovered.load(Ordering::Relaxed)
    }

    fn mutex(&self, index: usize) -> *mut libc::pthread_mutex_t {
        self.region
            .ptr_at(slot_offset(index), LOCK_SLOT_SIZE, LOCK_SLOT_SIZE)
            .cast::<libc::pthread_mutex_t>()
    }

    fn releases(&self) -> &AtomicU32 {
        self.region.atomic_u32(RELEASES_OFFSET)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.region.atomic_u32(SLEEPERS_OFFSET)
    }

    fn slot(&self, index: usize, held: bool) -> CpuSlot<'_> {
        CpuSlot {
            slots: self,
            // `index` is below `count`, a u32.
            cpu: index as u32,
            held,
            not_send: PhantomData,
        }
    }

    /// After `EOWNERDEAD`: makes the mutex usable again and counts the recovery.
    fn make_consistent(&self, index: usize) -> bool {
        // SAFETY: the calling thread holds slot `index`'s mutex (just returned EOWNERDEAD), an
        // initialised process-shared robust mutex inside the live mapping.
        let rc = unsafe { libc::pthread_mutex_consistent(self.mutex(index)) };
        if rc == 0 {
            self.recovered.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.lock_failures.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    fn try_lock(&self, index: usize) -> TryLock {
        // SAFETY: slot `index` (< count, checked by the file's validation and `ptr_at`) holds a
        // robust process-shared mutex initialised before the file was published; the mapping
        // lives as long as `self`.
        let rc = unsafe { libc::pthread_mutex_trylock(self.mutex(index)) };
        match rc {
            0 => TryLock::Taken,
            libc::EBUSY => TryLock::Busy,
            libc::EOWNERDEAD => {
                if self.make_consistent(index) {
                    TryLock::Taken
                } else {
                    self.unlock(index);
                    TryLock::Failed
                }
            }
            _ => {
                self.lock_failures.fetch_add(1, Ordering::Relaxed);
                TryLock::Failed
            }
        }
    }

    /// Blocks until slot `index`'s mutex is ours; false on an unexpected error (counted).
    fn lock_blocking(&self, index: usize) -> bool {
        // SAFETY: as in `try_lock`.
        let rc = unsafe { libc::pthread_mutex_lock(self.mutex(index)) };
        match rc {
            0 => true,
            libc::EOWNERDEAD => {
                if self.make_consistent(index) {
                    true
                } else {
                    self.unlock(index);
                    false
                }
            }
            _ => {
                self.lock_failures.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn unlock(&self, index: usize) {
        // SAFETY: the calling thread holds slot `index`'s mutex (a `CpuSlot` is `!Send` and only
        // made after a successful lock); the mutex lives in the mapping owned by `self`.
        let rc = unsafe { libc::pthread_mutex_unlock(self.mutex(index)) };
        if rc != 0 {
            self.lock_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frees slot `index` and wakes the threads waiting for any slot, if there are some.
    fn release(&self, index: usize) {
        self.unlock(index);
        // Pairs with the fence in `acquire_waiting`: either a sleeper's retry sees this unlock,
        // or this load sees the sleeper.
        fence(Ordering::SeqCst);
        if self.sleepers().load(Ordering::SeqCst) != 0 {
            self.releases().fetch_add(1, Ordering::SeqCst);
            futex_wake_all(self.releases());
        }
    }

    /// One non-blocking pass over every slot, starting at `start`.
    fn try_each(&self, start: usize) -> Option<CpuSlot<'_>> {
        let count = self.count as usize;
        let mut failed = None;
        for step in 0..count {
            let index = (start + step) % count;
            match self.try_lock(index) {
                TryLock::Taken => return Some(self.slot(index, true)),
                TryLock::Busy => {}
                TryLock::Failed => failed = failed.or(Some(index)),
            }
        }
        // A slot whose mutex is broken runs without exclusivity rather than never.
        failed.map(|index| self.slot(index, false))
    }

    /// Takes a free slot, waiting while all are busy (in this process or elsewhere).
    pub fn acquire(&self) -> CpuSlot<'_> {
        let start = region::current_cpu().map_or(0, |cpu| cpu as usize % self.count as usize);
        match self.try_each(start) {
            Some(slot) => slot,
            None => self.acquire_waiting(start),
        }
    }

    /// The slow path of [`CpuSlots::acquire`]: every slot was busy.
    fn acquire_waiting(&self, start: usize) -> CpuSlot<'_> {
        self.sleepers().fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `release`.
        fence(Ordering::SeqCst);
        let slot = loop {
            let seen = self.releases().load(Ordering::SeqCst);
            if let Some(slot) = self.try_each(start) {
                break slot;
            }
            if futex_wait(self.releases(), seen, SLEEP_LIMIT).is_err() {
                self.lock_failures.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_micros(100));
            }
        };
        self.sleepers().fetch_sub(1, Ordering::SeqCst);
        slot
    }

    /// Takes slot `cpu` (waiting while it is busy, in this process or elsewhere); `None` when
    /// there is no such slot.
    pub fn acquire_cpu(&self, cpu: u32) -> Option<CpuSlot<'_>> {
        if cpu >= self.count {
            return None;
        }
        let index = cpu as usize;
        let held = self.lock_blocking(index);
        Some(self.slot(index, held))
    }
}

/// Sleeps while the process-shared futex word `word` still holds `expected`, at most `timeout`.
/// A wake-up, a changed word, a timeout and a signal are all `Ok`.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> io::Result<()> {
    let limit = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `word` is an aligned u32 of the live mapping; `limit` outlives the call; FUTEX_WAIT
    // (shared, as the word is in a file other processes map) only reads both.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &limit as *const libc::timespec,
            0usize,
            0u32,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::ETIMEDOUT | libc::EINTR) => Ok(()),
        _ => Err(err),
    }
}

/// Wakes every thread (in any process) sleeping on the futex word `word`.
fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is an aligned u32 of the live mapping; FUTEX_WAKE only uses its address.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            0usize,
            0usize,
            0u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exclusive_and_waiters_get_freed_slots(slots: &CpuSlots) {
        let a = slots.acquire();
        let b = slots.acquire();
        assert_ne!(a.cpu(), b.cpu());
        let inside = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let c = slots.acquire();
                inside.store(c.cpu() + 1, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(inside.load(Ordering::SeqCst), 0, "all slots were busy");
            let freed = a.cpu();
            drop(a);
            while inside.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            assert_eq!(inside.load(Ordering::SeqCst), freed + 1);
        });
        drop(b);
        assert!(slots.acquire_cpu(2).is_none());
        assert_eq!(slots.acquire_cpu(1).map(|s| s.cpu()), Some(1));
        assert_eq!(slots.sleepers().load(Ordering::SeqCst), 0);
        assert_eq!(slots.lock_failures(), 0);
        assert_eq!(slots.recovered_slots(), 0);
    }

    #[test]
    fn process_local_slots_are_exclusive_and_waiters_get_freed_slots() {
        exclusive_and_waiters_get_freed_slots(&CpuSlots::new(2));
    }

    #[test]
    fn system_wide_slots_are_exclusive_and_waiters_get_freed_slots() {
        let root = std::env::temp_dir().join(format!("bpfmaps-cpu-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let slots = CpuSlots::system_wide(&root, 2).expect("slot file");
        assert_eq!(slots.dir(), Some(root.join(CPU_SLOT_DIR).as_path()));
        let path = root.join(CPU_SLOT_DIR).join(CPU_SLOT_FILE);
        assert_eq!(
            std::fs::metadata(&path).expect("slot file").len(),
            file_len(2) as u64
        );
        exclusive_and_waiters_get_freed_slots(&slots);
        // A second mapping (as another process has) sees slot 0 held while it is.
        let other = CpuSlots::system_wide(&root, 2).expect("slot file");
        let held = slots.acquire_cpu(0).expect("slot 0");
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(other.acquire().cpu(), 1);
                assert!(matches!(other.try_lock(0), TryLock::Busy));
            });
        });
        drop(held);
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(matches!(other.try_lock(0), TryLock::Taken));
                assert_eq!(other.recovered_slots(), 0);
                other.unlock(0);
            });
        });
        // A different slot count for the same pin root is refused.
        let err = CpuSlots::system_wide(&root, 3).expect_err("count mismatch");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_slot_whose_owner_thread_exited_is_recovered() {
        let slots = CpuSlots::new(1);
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(slots.acquire_cpu(0).expect("slot 0")));
        });
        assert_eq!(slots.acquire().cpu(), 0);
        assert_eq!(slots.recovered_slots(), 1);
        assert_eq!(slots.acquire_cpu(0).map(|s| s.cpu()), Some(0));
        assert_eq!(slots.recovered_slots(), 1);
        assert_eq!(slots.lock_failures(), 0);
    }

    #[test]
    fn racing_creators_share_one_file_and_threads_never_share_a_slot() {
        let root = std::env::temp_dir().join(format!("bpfmaps-cpu-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let sets: Vec<CpuSlots> = std::thread::scope(|s| {
            let makers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| CpuSlots::system_wide(&root, 2).expect("slot file")))
                .collect();
            makers
                .into_iter()
                .map(|m| m.join().expect("maker"))
                .collect()
        });
        // Every set maps the same mutexes: a slot never has two holders at once.
        let holders = [AtomicU32::new(0), AtomicU32::new(0)];
        std::thread::scope(|s| {
            for set in &sets {
                let holders = &holders;
                s.spawn(move || {
                    for _ in 0..2_000 {
                        let slot = set.acquire();
                        let inside = &holders[slot.cpu() as usize];
                        assert_eq!(inside.swap(1, Ordering::SeqCst), 0, "slot shared");
                        std::hint::spin_loop();
                        inside.store(0, Ordering::SeqCst);
                    }
                });
            }
        });
        for set in &sets {
            assert_eq!(set.lock_failures(), 0);
            assert_eq!(set.sleepers().load(Ordering::SeqCst), 0);
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}
