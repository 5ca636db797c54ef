//! Locks that survive the death of their owner: robust, process-shared pthread mutexes living in a
//! map's shared memory, and `flock` on map files (which the registry uses to know which processes
//! still hold a map open).
//!
//! Owns the crate's only `unsafe` outside `region.rs`. It knows nothing about what a lock protects:
//! when a lock's previous owner died while holding it, [`LockGuard::previous_owner_died`] says so
//! and the *caller* repairs the data the lock protects.
//!
//! # Lock slots
//!
//! A lock occupies one [`LOCK_SLOT_SIZE`]-byte, 64-aligned slot of a region, holding a glibc
//! `pthread_mutex_t` (40 bytes on x86-64) initialised `PTHREAD_PROCESS_SHARED` and
//! `PTHREAD_MUTEX_ROBUST`. A slot must be initialised once with [`init_lock`] by the creator of the
//! file before any other process can see the file, and never moved. The mutex is
//! address-independent, so processes mapping the file at different addresses share it.
//!
//! # Dead owners
//!
//! glibc registers every robust mutex a thread holds on that thread's kernel robust list; when the
//! thread dies (also by SIGKILL) the kernel marks the mutex `FUTEX_OWNER_DIED` and wakes a waiter.
//! [`lock`] then gets `EOWNERDEAD`, immediately marks the mutex consistent again and returns a
//! guard whose [`LockGuard::previous_owner_died`] is true. Marking consistent before the repair is
//! safe: if the repairing process dies too, the next locker sees `EOWNERDEAD` again.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use crate::region::Region;

/// Bytes reserved for one lock in shared memory (one cache line).
pub const LOCK_SLOT_SIZE: usize = 64;

const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= LOCK_SLOT_SIZE);
const _: () = assert!(std::mem::align_of::<libc::pthread_mutex_t>() <= LOCK_SLOT_SIZE);

/// Why a lock could not be initialised or taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// A pthread call failed with this error number.
    #[error("{call} failed with error {errno}")]
    Pthread {
        /// The call (`pthread_mutex_lock`, ...).
        call: &'static str,
        /// Its return value (an errno).
        errno: i32,
    },
}

fn check(call: &'static str, rc: i32) -> Result<(), LockError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(LockError::Pthread { call, errno: rc })
    }
}

#[inline]
fn mutex_ptr(region: &Region, off: usize) -> *mut libc::pthread_mutex_t {
    region
        .ptr_at(off, LOCK_SLOT_SIZE, LOCK_SLOT_SIZE)
        .cast::<libc::pthread_mutex_t>()
}

/// Initialises the lock slot at `off` (64-aligned) as a robust, process-shared mutex.
///
/// Call once, while no other process or thread can reach the slot (before the file is published).
pub fn init_lock(region: &Region, off: usize) -> Result<(), LockError> {
    let mutex = mutex_ptr(region, off);
    let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
    // SAFETY: `attr` is a local we own; pthread_mutexattr_init initialises it.
    check("pthread_mutexattr_init", unsafe {
        libc::pthread_mutexattr_init(attr.as_mut_ptr())
    })?;
    // SAFETY: `attr` was initialised above; the setters only write into it.
    let set = unsafe {
        let shared =
            libc::pthread_mutexattr_setpshared(attr.as_mut_ptr(), libc::PTHREAD_PROCESS_SHARED);
        if shared != 0 {
            shared
        } else {
            libc::pthread_mutexattr_setrobust(attr.as_mut_ptr(), libc::PTHREAD_MUTEX_ROBUST)
        }
    };
    let init = if set == 0 {
        // SAFETY: `mutex` points at LOCK_SLOT_SIZE in-bounds, suitably aligned bytes of the
        // mapping (checked by `ptr_at`), which nobody else uses yet (the caller's contract);
        // `attr` is initialised.
        unsafe { libc::pthread_mutex_init(mutex, attr.as_ptr()) }
    } else {
        set
    };
    // SAFETY: `attr` is initialised and no longer needed.
    unsafe { libc::pthread_mutexattr_destroy(attr.as_mut_ptr()) };
    check("pthread_mutexattr_set*/pthread_mutex_init", init)
}

/// A held lock; unlocks when dropped.
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'r> {
    region: &'r Region,
    off: usize,
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
        let mutex = mutex_ptr(self.region, self.off);
        // SAFETY: this thread holds the mutex (the guard exists only after a successful lock),
        // and the slot is in bounds of the still-borrowed region.
        unsafe {
            libc::pthread_mutex_unlock(mutex);
        }
    }
}

/// Takes the lock in the slot at `off`, blocking. A dead previous owner is reported through
/// [`LockGuard::previous_owner_died`], never as an error.
#[inline]
pub fn lock(region: &Region, off: usize) -> Result<LockGuard<'_>, LockError> {
    let mutex = mutex_ptr(region, off);
    // SAFETY: `mutex` is an initialised process-shared mutex (the slot's contract) inside the
    // mapping, which outlives the returned guard through the borrow of `region`.
    let rc = unsafe { libc::pthread_mutex_lock(mutex) };
    match rc {
        0 => Ok(LockGuard {
            region,
            off,
            owner_died: false,
        }),
        libc::EOWNERDEAD => {
            // SAFETY: we hold the mutex after EOWNERDEAD; marking it consistent is the documented
            // way to make it usable again.
            let consistent = unsafe { libc::pthread_mutex_consistent(mutex) };
            let guard = LockGuard {
                region,
                off,
                owner_died: true,
            };
            check("pthread_mutex_consistent", consistent)?;
            Ok(guard)
        }
        errno => Err(LockError::Pthread {
            call: "pthread_mutex_lock",
            errno,
        }),
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
}
