//! Locks that survive the death of their owner: owner-stamped spin locks living in a map's shared
//! memory, and `flock` on map files (which the registry uses to know which processes still hold a
//! map open).
//!
//! Owns the crate's only `unsafe` outside `region.rs` and `ringbuf/shm.rs`. It knows nothing about
//! what a lock protects: when a lock's previous owner died while holding it,
//! [`LockGuard::previous_owner_died`] says so and the *caller* repairs the data the lock protects.
//!
//! # Lock slots
//!
//! A lock occupies the first 8 bytes of one [`LOCK_SLOT_SIZE`]-byte, 64-aligned slot of a region
//! (the rest of the slot belongs to the caller, who typically keeps the data the lock guards most
//! often there, on the same cache line):
//!
//! | offset | size | content |
//! |---|---|---|
//! | 0 | 4 | owner: the kernel thread id (`gettid`) of the holder, 0 when free |
//! | 4 | 4 | owner stamp: the low 32 bits of the holder thread's start time (field 22 of `/proc/<tid>/stat`, clock ticks since boot), 0 while unknown |
//! | 8 | 8 | zero (reserved) |
//!
//! All zeros is a free lock, so a fresh file needs no initialisation ([`init_lock`] only zeroes
//! the lock's 16 bytes). Nothing in a slot is an address, so processes mapping the file at different
//! addresses share it.
//!
//! # Taking and releasing
//!
//! Taking is one compare-and-swap of the owner word from 0 to the caller's thread id, then a plain
//! store of its stamp; releasing is a plain store of 0 to the stamp, then a release store of 0 to
//! the owner word. The uncontended cost is one locked instruction, against three for a glibc
//! robust mutex (which also keeps a per-thread kernel robust list). A waiter spins briefly, then
//! yields, then sleeps with a growing pause (up to 1 ms): critical sections here are short and
//! bounded, as the kernel's bucket spin locks are.
//!
//! # Dead owners
//!
//! The owner word names a thread, so a waiter can ask the kernel whether it still exists. After
//! [`CHECK_AFTER`] of waiting, and then every [`CHECK_EVERY`], a waiter checks the owner: no such
//! thread (`kill(tid, 0)` fails with `ESRCH`), a dead or zombie one (state `X` or `Z` in
//! `/proc/<tid>/stat`), or a live thread whose start time differs from the stamp (the id was
//! reused) means the owner died holding the lock. The waiter then takes the lock over with one compare-and-swap from the dead owner's id to
//! its own, and its guard reports [`LockGuard::previous_owner_died`]. Only one waiter can win that
//! swap, so exactly one repairs. A stamp of 0 (the owner died between its compare-and-swap and its
//! stamp store, or `/proc` is missing) leaves the existence and zombie tests; without `/proc`
//! only the existence test remains, which still never takes a live owner for dead.
//!
//! Architecture invariant: processes that share a map share a PID namespace (thread ids are
//! compared across processes). A stopped (`SIGSTOP`) owner is alive: its lock waits for it, as a
//! robust mutex would.
//!
//! # fork
//!
//! A thread's id and stamp are cached in thread-local storage. A `pthread_atfork` child handler
//! clears the cache, so a forked child never takes a lock under its parent's thread id.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use crate::region::Region;

/// Bytes reserved for one lock slot in shared memory (one cache line). The lock itself uses the
/// first [`LOCK_WORDS_SIZE`] bytes; the rest is the caller's.
pub const LOCK_SLOT_SIZE: usize = 64;

/// Bytes of a lock slot the lock itself uses or reserves (owner word, stamp, reserved).
pub const LOCK_WORDS_SIZE: usize = 16;

const OWNER: usize = 0;
const STAMP: usize = 4;

/// How long a waiter waits before it first checks whether the owner is alive.
pub const CHECK_AFTER: Duration = Duration::from_millis(2);
/// How often a waiter checks the owner again while it keeps waiting.
pub const CHECK_EVERY: Duration = Duration::from_millis(20);
/// Busy-wait iterations before a waiter starts yielding the CPU.
const SPINS: u32 = 128;
/// `sched_yield` iterations before a waiter starts sleeping.
const YIELDS: u32 = 64;
/// The longest pause of a sleeping waiter.
const MAX_PAUSE: Duration = Duration::from_millis(1);

/// Why a lock could not be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// The calling thread already holds the lock: taking it again would wait forever.
    #[error("the calling thread already holds this lock (EDEADLK)")]
    Deadlock,
}

/// The calling thread as a lock owner.
#[derive(Clone, Copy)]
struct Owner {
    tid: u32,
    stamp: u32,
}

thread_local! {
    /// This thread's id and stamp, once computed; `None` in a new thread and after `fork`.
    static CURRENT: Cell<Option<Owner>> = const { Cell::new(None) };
}

static ATFORK: Once = Once::new();

extern "C" fn forget_owner_in_child() {
    CURRENT.with(|current| current.set(None));
}

#[inline]
fn current_owner() -> Owner {
    match CURRENT.with(Cell::get) {
        Some(owner) => owner,
        None => first_lock_in_thread(),
    }
}

/// Computes and caches the calling thread's owner identity (once per thread, and again after
/// `fork`).
#[cold]
fn first_lock_in_thread() -> Owner {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only writes a thread-local cell of the one thread
        // a forked child has; pthread_atfork has no other preconditions. A failure (ENOMEM)
        // is ignored: it cannot happen at this size, and would only leave the cache stale in
        // children that take locks without exec.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_owner_in_child));
        }
    });
    let tid = crate::region::thread_id();
    let stamp = std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .map_or(0, |(_, start)| start as u32);
    let owner = Owner { tid, stamp };
    CURRENT.with(|current| current.set(Some(owner)));
    owner
}

/// The state letter and start time (field 22) of a `/proc/<tid>/stat` line. The command name
/// (field 2) is in parentheses and may itself contain spaces and parentheses, so fields are
/// counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // `rest` starts at field 3 (state); the start time is field 22.
    let start = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

/// True when the thread `tid` that took a lock (with start-time stamp `stamp`, 0 when unknown)
/// no longer exists.
///
/// Existence is asked of the kernel with `kill(tid, 0)` (which finds any thread id, and answers
/// `EPERM`, not `ESRCH`, for another user's thread), so a missing or restricted `/proc`
/// (`hidepid`) never makes a live owner look dead. `/proc/<tid>/stat` then tells a zombie from a
/// running thread, and a reused id from the owner by its start time.
fn owner_is_dead(tid: u32, stamp: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(tid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the target exists; it has no memory-safety
    // preconditions.
    if unsafe { libc::kill(pid, 0) } != 0
        && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
    {
        Some((state, start)) => {
            matches!(state, 'X' | 'x' | 'Z') || (stamp != 0 && start as u32 != stamp)
        }
        None => false,
    }
}

/// Initialises the lock slot at `off` (64-aligned): a free lock is all zeros.
///
/// Call once, while no other process or thread can reach the slot (before the file is published).
pub fn init_lock(region: &Region, off: usize) -> Result<(), LockError> {
    region.fill(off, LOCK_WORDS_SIZE, 0);
    Ok(())
}

/// A held lock; unlocks when dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'r> {
    owner: &'r AtomicU32,
    stamp: &'r AtomicU32,
    owner_died: bool,
}

impl LockGuard<'_> {
    /// True when the previous owner died holding the lock: the data it protects may be in the
    /// middle of an update and must be checked or repaired before use.
    pub fn previous_owner_died(&self) -> bool {
        self.owner_died
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.stamp.store(0, Ordering::Relaxed);
        self.owner.store(0, Ordering::Release);
    }
}

/// Takes the lock in the slot at `off`, blocking. A dead previous owner is reported through
/// [`LockGuard::previous_owner_died`], never as an error.
#[inline]
pub fn lock(region: &Region, off: usize) -> Result<LockGuard<'_>, LockError> {
    let words = region.atomic_u32_slice(off, 2);
    lock_words(&words[OWNER / 4], &words[STAMP / 4])
}

/// [`lock`] for a caller that already holds the slot's first two words (owner, stamp) as
/// atomics, from a slice it bounds-checked once for a whole operation.
#[inline]
pub fn lock_words<'r>(
    owner: &'r AtomicU32,
    stamp: &'r AtomicU32,
) -> Result<LockGuard<'r>, LockError> {
    let me = current_owner();
    match take_from(owner, stamp, me, 0) {
        Some(guard) => Ok(guard),
        None => lock_contended(owner, stamp, me),
    }
}

/// Takes the lock if its owner word still holds `expected` (0: free; a dead owner's id: taking
/// it over), stamping it with `me`.
#[inline(always)]
fn take_from<'r>(
    owner: &'r AtomicU32,
    stamp: &'r AtomicU32,
    me: Owner,
    expected: u32,
) -> Option<LockGuard<'r>> {
    owner
        .compare_exchange(expected, me.tid, Ordering::Acquire, Ordering::Relaxed)
        .ok()?;
    stamp.store(me.stamp, Ordering::Relaxed);
    Some(LockGuard {
        owner,
        stamp,
        owner_died: expected != 0,
    })
}

/// The waiting part of [`lock`]: spin, yield, sleep, and check the owner now and then.
#[cold]
fn lock_contended<'r>(
    owner: &'r AtomicU32,
    stamp: &'r AtomicU32,
    me: Owner,
) -> Result<LockGuard<'r>, LockError> {
    let started = Instant::now();
    let mut next_check = CHECK_AFTER;
    let mut rounds = 0u32;
    let mut pause = Duration::from_micros(10);
    loop {
        let current = owner.load(Ordering::Relaxed);
        if current == 0 {
            if let Some(guard) = take_from(owner, stamp, me, 0) {
                return Ok(guard);
            }
            continue;
        }
        if current == me.tid {
            return Err(LockError::Deadlock);
        }
        rounds = rounds.saturating_add(1);
        if rounds < SPINS {
            std::hint::spin_loop();
            continue;
        }
        if started.elapsed() >= next_check {
            next_check = started.elapsed() + CHECK_EVERY;
            if owner_is_dead(current, stamp.load(Ordering::Relaxed)) {
                if let Some(guard) = take_from(owner, stamp, me, current) {
                    return Ok(guard);
                }
            }
        }
        if rounds < SPINS + YIELDS {
            std::thread::yield_now();
        } else {
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }
}

/// Takes a shared `flock` on `file`: "this process has the map open". Released by the kernel when
/// the file (its open file description) is closed, also when the process dies.
pub fn flock_shared(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_SH)
}

/// Tries to take an exclusive `flock` on `file` without blocking; `Ok(false)` when another open
/// file description holds a lock on it.
pub fn try_flock_exclusive(file: &File) -> io::Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
}

fn flock(file: &File, op: i32) -> io::Result<()> {
    loop {
        // SAFETY: flock on a valid open fd has no memory-safety preconditions.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::create_memfd;

    #[test]
    fn two_mappings_exclude_each_other() {
        let file = create_memfd(4096).unwrap();
        let other = Region::map(file.try_clone().unwrap()).unwrap();
        let region = Region::map(file).unwrap();
        init_lock(&region, 128).unwrap();
        let guard = lock(&region, 128).unwrap();
        assert!(!guard.previous_owner_died());
        assert_eq!(
            region.atomic_u32(128).load(Ordering::Relaxed),
            crate::region::thread_id()
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let g = lock(&other, 128).unwrap();
                tx.send(g.previous_owner_died()).unwrap();
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(rx.try_recv().is_err(), "the second locker must wait");
            drop(guard);
            assert!(!rx.recv().unwrap());
        });
        assert_eq!(region.atomic_u32(128).load(Ordering::Relaxed), 0);
        assert_eq!(region.atomic_u32(132).load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_thread_that_exits_holding_the_lock_is_noticed() {
        let region = Region::map(create_memfd(4096).unwrap()).unwrap();
        init_lock(&region, 0).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| std::mem::forget(lock(&region, 0).unwrap()));
        });
        let guard = lock(&region, 0).unwrap();
        assert!(guard.previous_owner_died());
        drop(guard);
        assert!(!lock(&region, 0).unwrap().previous_owner_died());
    }

    #[test]
    fn taking_a_held_lock_again_from_the_same_thread_is_a_deadlock_error() {
        let region = Region::map(create_memfd(4096).unwrap()).unwrap();
        let guard = lock(&region, 64).unwrap();
        assert_eq!(lock(&region, 64).unwrap_err(), LockError::Deadlock);
        drop(guard);
        assert!(lock(&region, 64).is_ok());
    }

    #[test]
    fn a_reused_thread_id_with_another_start_time_is_a_dead_owner() {
        // A live thread (this one) whose stamp does not match is not the owner that took the
        // lock; with the right stamp, or an unknown one, it is.
        let me = current_owner();
        assert!(me.stamp != 0, "/proc/thread-self/stat gives a start time");
        assert!(!owner_is_dead(me.tid, me.stamp));
        assert!(!owner_is_dead(me.tid, 0));
        assert!(owner_is_dead(me.tid, me.stamp.wrapping_add(1)));
        // A thread id no thread has (above the kernel's PID_MAX_LIMIT).
        assert!(owner_is_dead(4_194_305, 0));
    }

    #[test]
    fn stat_lines_parse_past_command_names_with_parentheses() {
        let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1 2 3";
        assert_eq!(parse_stat(line), Some(('S', 123_456)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_lock_held_by_an_unreaped_dead_process_is_taken_over() {
        // The child dies holding the lock and stays a zombie (not waited for) while the parent
        // takes the lock: its thread id still exists in /proc, in state Z.
        let region = Region::map(create_memfd(4096).unwrap()).unwrap();
        current_owner();
        // SAFETY: the child only takes a lock (atomics on shared memory) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            std::mem::forget(lock(&region, 0));
            // SAFETY: _exit ends the child at once, the lock still held.
            unsafe { libc::_exit(0) };
        }
        let child = u32::try_from(pid).unwrap();
        while region.atomic_u32(0).load(Ordering::Acquire) != child {
            std::thread::yield_now();
        }
        // Wait (without reaping) until the child is a zombie.
        let stat = format!("/proc/{pid}/stat");
        let is_zombie = || {
            std::fs::read_to_string(&stat)
                .ok()
                .and_then(|s| parse_stat(&s))
                .map(|(state, _)| state)
                == Some('Z')
        };
        while !is_zombie() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let started = Instant::now();
        let guard = lock(&region, 0).unwrap();
        assert!(guard.previous_owner_died());
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(guard);
        let mut status = 0;
        // SAFETY: reaps the child forked above; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    }

    #[test]
    fn a_forked_child_takes_locks_under_its_own_thread_id() {
        let region = Region::map(create_memfd(4096).unwrap()).unwrap();
        let parent_tid = current_owner().tid;
        // SAFETY: the child only takes and drops a lock (atomics on shared memory, a /proc read
        // through std) and then leaves with _exit, without running the parent's destructors.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let guard = lock(&region, 0);
            let ok = guard.is_ok()
                && region.atomic_u32(0).load(Ordering::Relaxed) != parent_tid
                && region.atomic_u32(0).load(Ordering::Relaxed) == crate::region::thread_id();
            drop(guard);
            // SAFETY: _exit ends the child at once; nothing of the parent's is unwound.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
}
