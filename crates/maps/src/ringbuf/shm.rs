//! OS plumbing of the ring buffer and perf event array maps that the crate's `region` and `lock`
//! modules do not offer: the ring buffer's double mapping of its data pages ([`Mapping::ring`]),
//! the process-shared futex consumers sleep on, named ring files, liveness checks and randomness.
//!
//! This is the only module of the ring buffer and perf event array code with `unsafe` in it.
//! Everything it hands out is bounds-checked against the mapping; shared memory is treated as
//! untrusted: callers get offsets, atomics and copies, never plain references into bytes another
//! process may write (the one exception, [`Mapping::bytes`], documents its protocol). Header
//! words and locks go through `crate::region::Region` and `crate::lock` like every other map.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// The system page size (4096 on x86-64).
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| s.is_power_of_two())
        .unwrap_or(4096)
}

/// 64 random bits from the kernel (`getrandom`), used to name ring files.
pub(crate) fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is 8 writable bytes.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != 8 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(bytes))
}

/// Whether the process `pid` still exists (`kill(pid, 0)` does not say `ESRCH`).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// The calling process's id.
pub(crate) fn current_pid() -> u32 {
    std::process::id()
}

/// A `MAP_SHARED` mapping of (part of) a file, unmapped on drop.
///
/// With [`Mapping::ring`], the range `[data_offset, file_len)` of the file is mapped a second
/// time right after the first mapping of the whole file, so bytes at mapping offset
/// `file_len + i` are the same memory as `data_offset + i`.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through atomics or copies whose
// synchronisation the callers' protocols define, so moving or sharing the handle between threads
// is sound.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only offers atomics and copies.
unsafe impl Sync for Mapping {}

fn prot(writable: bool) -> libc::c_int {
    if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    }
}

impl Mapping {
    /// Maps the bytes `[start, file_len)` of `file`, then its last `data_len` bytes (which
    /// start at the page-aligned `file_len - data_len`) once more immediately after, inside one
    /// reserved address range, so a ring's data area appears twice back to back: mapping offset
    /// `file_len - start + i` is the same memory as `file_len - start - data_len + i`.
    pub(crate) fn ring(
        file: &File,
        start: usize,
        file_len: usize,
        data_len: usize,
        writable: bool,
    ) -> io::Result<Mapping> {
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "bad ring mapping sizes");
        let head_len = file_len.checked_sub(start).ok_or_else(invalid)?;
        if data_len == 0 || data_len > head_len {
            return Err(invalid());
        }
        let total = head_len.checked_add(data_len).ok_or_else(invalid)?;
        let start_off = libc::off_t::try_from(start).map_err(|_| invalid())?;
        let data_off = libc::off_t::try_from(file_len - data_len).map_err(|_| invalid())?;
        // SAFETY: reserving fresh address space (PROT_NONE, anonymous, kernel-chosen address)
        // cannot alias Rust memory.
        let reserved = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if reserved == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(reserved.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        // From here on the reservation is owned by `mapping`, which unmaps all of it on drop,
        // also on the error paths below.
        let mapping = Mapping { base, len: total };
        // SAFETY: MAP_FIXED replaces the first `head_len` bytes of the reservation, which we own
        // exclusively and nothing references yet.
        let first = unsafe {
            libc::mmap(
                reserved,
                head_len,
                prot(writable),
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                start_off,
            )
        };
        if first == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the second MAP_FIXED mapping covers [base + head_len, base + total), the rest
        // of our reservation, which nothing references yet.
        let second = unsafe {
            libc::mmap(
                base.as_ptr().add(head_len).cast(),
                data_len,
                prot(writable),
                libc::MAP_SHARED | libc::MAP_FIXED,
                file.as_raw_fd(),
                data_off,
            )
        };
        if second == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(mapping)
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Address of the first byte (for callers that hand raw pointers to an interpreter).
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    fn check(&self, offset: usize, len: usize, align: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len) && offset.is_multiple_of(align),
            "shared-memory access out of bounds or misaligned: offset {offset}, len {len}, mapping {}",
            self.len
        );
    }

    /// The 8-byte atomic at `offset` (8-aligned, in bounds; checked, panics otherwise because
    /// every caller passes offsets derived from the validated layout).
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: in bounds and 8-aligned (the base is page-aligned); AtomicU64 has the layout of
        // u64 and may alias memory other processes access atomically.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// The 4-byte atomic at `offset` (4-aligned, in bounds).
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: in bounds and 4-aligned; AtomicU32 has the layout of u32.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Copies `out.len()` bytes from `offset`.
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        self.check(offset, out.len(), 1);
        // SAFETY: the source range is in bounds of the mapping and cannot overlap `out`, which
        // is Rust-owned memory. The protocols guarantee no concurrent writer of these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                out.as_mut_ptr(),
                out.len(),
            )
        }
    }

    /// Copies `bytes` to `offset`. Panics on a read-only mapping is avoided by callers, which
    /// only write through writable mappings.
    pub(crate) fn write(&self, offset: usize, bytes: &[u8]) {
        self.check(offset, bytes.len(), 1);
        // SAFETY: the destination range is in bounds of a writable mapping (callers only write
        // through writable ones) and cannot overlap `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.base.as_ptr().add(offset),
                bytes.len(),
            )
        }
    }

    /// A shared view of `len` bytes at `offset`.
    ///
    /// Only for ranges the caller's protocol freezes while the borrow lives: a committed ring
    /// buffer record, which no producer touches until the consumer position passes it.
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        self.check(offset, len, 1);
        // SAFETY: in bounds; per the documented protocol nobody writes the range while the
        // returned borrow (tied to `self`) lives.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(offset), len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own [base, base + len) (one mmap call, or one reservation overlaid by
        // MAP_FIXED mappings) and nothing borrows it any more.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Sleeps while the shared futex word still holds `expected`, at most `timeout`.
///
/// Returns `Ok` when woken, when the word changed, on a timeout and on a signal; an error only
/// for an unexpected failure. The futex is process-shared (no `FUTEX_PRIVATE_FLAG`), so a
/// waker in another process that maps the same file wakes it.
pub(crate) fn futex_wait(
    word: &AtomicU32,
    expected: u32,
    timeout: Option<Duration>,
) -> io::Result<()> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 in shared memory; `ts_ptr` is null or points to a
    // timespec living across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            0usize,
            0u32,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::ETIMEDOUT) | Some(libc::EINTR) => Ok(()),
        _ => Err(err),
    }
}

/// Wakes every waiter sleeping on the shared futex word.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE only reads its address.
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

/// Opens or creates a named file for a perf ring, mode 0600.
pub(crate) fn create_exclusive(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}
