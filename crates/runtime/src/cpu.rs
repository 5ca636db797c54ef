//! CPU slots: a program invocation owns one of the possible CPUs' slots for its whole run, alone,
//! as a BPF program owns its CPU (migration disabled) in the kernel. That is what makes per-CPU
//! map values safe to update without atomics, and what `bpf_get_smp_processor_id` returns.
//!
//! # Exclusivity across processes
//!
//! The slots of a pin root ([`CpuSlots::for_root`]) are shared by every process using that root:
//! slot `n` is the file `<pin root>/.cpus/<n>` (empty; mode 0600), and owning the slot means
//! holding an exclusive `flock` on it. A process opens each slot file once and keeps it open;
//! the kernel releases a dead process's flocks, so a killed process never keeps a slot.
//!
//! Within a process, a slot is first claimed in memory (a mutex-protected busy flag per slot and
//! a condition variable), so threads of one process never contend on the flock (which belongs to
//! the process's open file description and would not exclude them from one another). Taking a
//! slot is therefore: claim a locally free slot — the one of the CPU the thread runs on when it
//! is free, else the lowest free one — then `flock(LOCK_EX | LOCK_NB)` it; when another process
//! holds it, the next locally free slot is tried; when every locally free slot is held elsewhere,
//! the thread blocks in `flock(LOCK_EX)` on the first one it claimed. When every slot is busy in
//! the process, it waits on the condition variable. Releasing is `flock(LOCK_UN)`, then clearing
//! the flag and waking one waiter.
//!
//! [`CpuSlots::new`] makes a process-local set (no files), for tests and embedders without a
//! pin root.
//!
//! Limits: a child made by `fork` without `exec` shares the parent's open file descriptions and
//! so its flocks; it must not run programs on slots the parent holds. Should `flock` fail with
//! anything but `EINTR` (e.g. `ENOLCK`), the invocation runs with in-process exclusivity only and
//! [`CpuSlots::lock_failures`] counts it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Name of the slot directory under the pin root.
pub const CPU_SLOT_DIR: &str = ".cpus";

/// A set of CPU slots, each free or owned by one invocation.
#[derive(Debug)]
pub struct CpuSlots {
    busy: Mutex<Vec<bool>>,
    freed: Condvar,
    /// One open lock file per slot when the slots are system-wide; empty when process-local.
    files: Vec<File>,
    /// The slot directory, for system-wide slots.
    dir: Option<PathBuf>,
    lock_failures: AtomicU64,
}

/// An owned CPU slot; dropping it frees the slot and wakes one waiter.
#[derive(Debug)]
pub struct CpuSlot<'a> {
    slots: &'a CpuSlots,
    cpu: u32,
}

impl CpuSlot<'_> {
    /// The CPU number this slot stands for.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }
}

impl Drop for CpuSlot<'_> {
    fn drop(&mut self) {
        let index = self.cpu as usize;
        if self.slots.file_lock(index, libc::LOCK_UN).is_err() {
            // Unlocking an open file we locked cannot fail but with EINTR-like transients;
            // closing is not an option (the file is shared by the process), so count it.
            self.slots.lock_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.slots.unclaim(index);
    }
}

/// The CPU the calling thread runs on now, if the OS says.
fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// Outcome of a non-blocking attempt on a slot file.
enum TryLock {
    Taken,
    HeldElsewhere,
}

impl CpuSlots {
    /// `count` free process-local slots (at least one): exclusive between threads of this
    /// process only.
    pub fn new(count: u32) -> CpuSlots {
        CpuSlots {
            busy: Mutex::new(vec![false; count.max(1) as usize]),
            freed: Condvar::new(),
            files: Vec::new(),
            dir: None,
            lock_failures: AtomicU64::new(0),
        }
    }

    /// `count` slots (at least one) shared by every process using `root`: opens (creating when
    /// missing) `root/.cpus/0` .. `root/.cpus/<count - 1>`.
    pub fn system_wide(root: &Path, count: u32) -> io::Result<CpuSlots> {
        let dir = root.join(CPU_SLOT_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let count = count.max(1);
        let mut files = Vec::with_capacity(count as usize);
        for cpu in 0..count {
            let path = dir.join(cpu.to_string());
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            files.push(file);
        }
        Ok(CpuSlots {
            busy: Mutex::new(vec![false; count as usize]),
            freed: Condvar::new(),
            files,
            dir: Some(dir),
            lock_failures: AtomicU64::new(0),
        })
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
        // The vector was built from a u32 count.
        self.lock().len() as u32
    }

    /// The slot files' directory, when the slots are system-wide.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// How many times a slot file's `flock` failed unexpectedly (the invocation then ran with
    /// in-process exclusivity only).
    pub fn lock_failures(&self) -> u64 {
        self.lock_failures.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<bool>> {
        // A poisoned lock only means a holder panicked between two plain bool writes: the
        // vector is still consistent.
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unclaim(&self, index: usize) {
        let mut busy = self.lock();
        if let Some(slot) = busy.get_mut(index) {
            *slot = false;
        }
        drop(busy);
        self.freed.notify_one();
    }

    /// `flock(operation)` on slot `index`'s file, retrying on EINTR; `Ok` for process-local
    /// slots.
    fn file_lock(&self, index: usize, operation: i32) -> io::Result<()> {
        let Some(file) = self.files.get(index) else {
            return Ok(());
        };
        loop {
            // SAFETY: the descriptor is open for as long as `self` lives; flock only changes
            // the lock state of its open file description.
            let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Tries to take slot `index`'s file lock without blocking.
    fn try_file_lock(&self, index: usize) -> TryLock {
        match self.file_lock(index, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => TryLock::Taken,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => TryLock::HeldElsewhere,
            Err(_) => {
                self.lock_failures.fetch_add(1, Ordering::Relaxed);
                TryLock::Taken
            }
        }
    }

    /// Blocks until slot `index`'s file lock is taken.
    fn wait_file_lock(&self, index: usize) {
        if self.file_lock(index, libc::LOCK_EX).is_err() {
            self.lock_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A locally free slot not in `skip`, preferring the CPU the thread runs on.
    fn pick(busy: &[bool], skip: &[usize]) -> Option<usize> {
        let free = |i: usize| busy.get(i) == Some(&false) && !skip.contains(&i);
        if let Some(cpu) = current_cpu().map(|c| c as usize) {
            if free(cpu) {
                return Some(cpu);
            }
        }
        (0..busy.len()).find(|&i| free(i))
    }

    /// Takes a free slot, waiting while all are busy (in this process or elsewhere).
    pub fn acquire(&self) -> CpuSlot<'_> {
        // Slots claimed locally this round whose file lock another process held.
        let mut held_elsewhere: Vec<usize> = Vec::new();
        loop {
            let mut busy = self.lock();
            let index = loop {
                if let Some(index) = Self::pick(&busy, &held_elsewhere) {
                    break Some(index);
                }
                if !held_elsewhere.is_empty() {
                    break None;
                }
                busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
            };
            let Some(index) = index else {
                // Every slot free here is held by other processes: wait on the first of them
                // (if it is still free here).
                let first = held_elsewhere[0];
                if busy[first] {
                    held_elsewhere.clear();
                    continue;
                }
                busy[first] = true;
                drop(busy);
                self.wait_file_lock(first);
                return CpuSlot {
                    slots: self,
                    cpu: first as u32,
                };
            };
            busy[index] = true;
            drop(busy);
            match self.try_file_lock(index) {
                TryLock::Taken => {
                    return CpuSlot {
                        slots: self,
                        cpu: index as u32,
                    }
                }
                TryLock::HeldElsewhere => {
                    self.unclaim(index);
                    held_elsewhere.push(index);
                }
            }
        }
    }

    /// Takes slot `cpu` (waiting while it is busy, in this process or elsewhere); `None` when
    /// there is no such slot.
    pub fn acquire_cpu(&self, cpu: u32) -> Option<CpuSlot<'_>> {
        let mut busy = self.lock();
        let index = cpu as usize;
        busy.get(index)?;
        while busy[index] {
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy[index] = true;
        drop(busy);
        self.wait_file_lock(index);
        Some(CpuSlot { slots: self, cpu })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

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
            std::thread::sleep(std::time::Duration::from_millis(50));
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
        assert_eq!(slots.lock_failures(), 0);
    }

    #[test]
    fn process_local_slots_are_exclusive_and_waiters_get_freed_slots() {
        exclusive_and_waiters_get_freed_slots(&CpuSlots::new(2));
    }

    #[test]
    fn system_wide_slots_are_exclusive_and_waiters_get_freed_slots() {
        let root = std::env::temp_dir().join(format!("bpfmaps-cpu-unit-{}", std::process::id()));
        let slots = CpuSlots::system_wide(&root, 2).expect("slot files");
        assert_eq!(slots.dir(), Some(root.join(CPU_SLOT_DIR).as_path()));
        assert!(root.join(".cpus/1").is_file());
        exclusive_and_waiters_get_freed_slots(&slots);
        // A second open file description (as another process has) sees slot 0 held while it is.
        let other = CpuSlots::system_wide(&root, 2).expect("slot files");
        let held = slots.acquire_cpu(0).expect("slot 0");
        assert_eq!(other.acquire().cpu(), 1);
        assert!(matches!(other.try_file_lock(0), TryLock::HeldElsewhere));
        drop(held);
        assert!(matches!(other.try_file_lock(0), TryLock::Taken));
        let _ = std::fs::remove_dir_all(&root);
    }
}
