//! The shared-memory region of one map: a file mapped `MAP_SHARED`, read and written only through
//! offsets, volatile copies and atomics, plus the few file-system calls std does not offer
//! (unnamed `O_TMPFILE`/memfd files and linking such a file to a path).
//!
//! Owns every `unsafe` of the crate except the lock code (`lock.rs`) and the ring buffer's double
//! mapping and futex calls (`ringbuf/shm.rs`). It does not know any map
//! layout: callers pass offsets and lengths, and an offset outside the mapping is a bug in the
//! caller, reported by a panic with the offending numbers (never undefined behaviour).
//!
//! Architecture invariant: no Rust reference to plain bytes of the mapping ever exists, because
//! other processes may change them at any moment. Data goes in and out by copies
//! ([`Region::read`], [`Region::write`]); words that several parties change concurrently are
//! reached as atomics ([`Region::atomic_u32`], [`Region::atomic_u64`]), whose shared references are
//! sound by construction. Offsets that come *out of* shared memory (list links, indices) must be
//! validated by the caller against its layout before they are used here.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Errors from creating or mapping a region.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// The call that failed (`mmap`, `ftruncate`, ...).
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is empty or larger than the address space allows.
    #[error("cannot map a file of {len} bytes")]
    BadLength {
        /// The file length.
        len: u64,
    },
}

/// A whole file mapped read-write and `MAP_SHARED`.
///
/// Every process that maps the same file sees the same bytes. The mapping lives until the
/// `Region` is dropped; the file stays open as long as the region does.
#[derive(Debug)]
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    file: File,
}

// SAFETY: the region is plain shared memory; all access goes through copies and atomics, which
// are valid from any thread. The raw pointer is only an address of that memory.
unsafe impl Send for Region {}
// SAFETY: as above: no method hands out references to non-atomic bytes, so concurrent use from
// several threads cannot create aliasing `&mut` or data races on Rust-visible objects.
unsafe impl Sync for Region {}

impl Region {
    /// Maps the whole of `file` (its current length) read-write and shared.
    pub fn map(file: File) -> Result<Region, RegionError> {
        let len64 = file
            .metadata()
            .map_err(|source| RegionError::Sys {
                call: "fstat",
                source,
            })?
            .len();
        let len = usize::try_from(len64).map_err(|_| RegionError::BadLength { len: len64 })?;
        if len == 0 {
            return Err(RegionError::BadLength { len: len64 });
        }
        // SAFETY: mmap with a null hint, a valid fd and a non-zero length has no preconditions on
        // our memory; the result is checked for MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(RegionError::Sys {
                call: "mmap",
                source: io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(RegionError::BadLength { len: len64 })?;
        Ok(Region { base, len, file })
    }

    /// The mapping's length in bytes (the file's length when it was mapped).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the mapping is empty (never, for a mapped region).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file behind the mapping.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The address of the mapping in this process. Valid while `self` lives; for the interpreter,
    /// which turns value offsets into guest pointers. Dereferencing it is the caller's `unsafe`.
    pub fn base_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    #[inline]
    fn check(&self, off: usize, len: usize, align: usize) {
        let end = off.checked_add(len);
        if !(end.is_some_and(|e| e <= self.len) && off.is_multiple_of(align)) {
            self.out_of_bounds(off, len, align);
        }
    }

    /// The panic of a failed [`Self::check`], kept out of line so the check itself stays small.
    #[cold]
    #[inline(never)]
    fn out_of_bounds(&self, off: usize, len: usize, align: usize) -> ! {
        panic!(
            "region access out of bounds or misaligned: offset {off} length {len} align {align} \
             in a mapping of {} bytes",
            self.len
        );
    }

    /// Copies `out.len()` bytes at `off` into `out`, with volatile loads (8, then 4 bytes at a time
    /// where aligned), so a concurrent writer can tear the copy but never make it undefined.
    #[inline]
    pub fn read(&self, off: usize, out: &mut [u8]) {
        self.check(off, out.len(), 1);
        let mut i = 0;
        let src = self.base.as_ptr().wrapping_add(off);
        if (src as usize).is_multiple_of(8) {
            while i + 8 <= out.len() {
                // SAFETY: `check` proved [off, off+len) lies in the mapping; src+i is 8-aligned
                // because src is and i is a multiple of 8.
                let word = unsafe { std::ptr::read_volatile(src.add(i).cast::<u64>()) };
                out[i..i + 8].copy_from_slice(&word.to_ne_bytes());
                i += 8;
            }
        }
        if (src as usize + i).is_multiple_of(4) && i + 4 <= out.len() {
            // SAFETY: in bounds per `check`; src+i is 4-aligned (just tested).
            let word = unsafe { std::ptr::read_volatile(src.add(i).cast::<u32>()) };
            out[i..i + 4].copy_from_slice(&word.to_ne_bytes());
            i += 4;
        }
        while i < out.len() {
            // SAFETY: in bounds as above; u8 has no alignment requirement.
            out[i] = unsafe { std::ptr::read_volatile(src.add(i)) };
            i += 1;
        }
    }

    /// Copies `data` to `off` with volatile stores (8, then 4 bytes at a time where aligned).
    #[inline]
    pub fn write(&self, off: usize, data: &[u8]) {
        self.check(off, data.len(), 1);
        let mut i = 0;
        let dst = self.base.as_ptr().wrapping_add(off);
        if (dst as usize).is_multiple_of(8) {
            while i + 8 <= data.len() {
                let mut word = [0u8; 8];
                word.copy_from_slice(&data[i..i + 8]);
                // SAFETY: in bounds per `check`; dst+i is 8-aligned.
                unsafe {
                    std::ptr::write_volatile(dst.add(i).cast::<u64>(), u64::from_ne_bytes(word))
                };
                i += 8;
            }
        }
        if (dst as usize + i).is_multiple_of(4) && i + 4 <= data.len() {
            let mut word = [0u8; 4];
            word.copy_from_slice(&data[i..i + 4]);
            // SAFETY: in bounds per `check`; dst+i is 4-aligned (just tested).
            unsafe { std::ptr::write_volatile(dst.add(i).cast::<u32>(), u32::from_ne_bytes(word)) };
            i += 4;
        }
        while i < data.len() {
            // SAFETY: in bounds per `check`.
            unsafe { std::ptr::write_volatile(dst.add(i), data[i]) };
            i += 1;
        }
    }

    /// Sets `len` bytes at `off` to `byte`.
    pub fn fill(&self, off: usize, len: usize, byte: u8) {
        self.check(off, len, 1);
        let dst = self.base.as_ptr().wrapping_add(off);
        for i in 0..len {
            // SAFETY: in bounds per `check`.
            unsafe { std::ptr::write_volatile(dst.add(i), byte) };
        }
    }

    /// Compares the `other.len()` bytes at `off` with `other`.
    #[inline]
    pub fn bytes_equal(&self, off: usize, other: &[u8]) -> bool {
        self.check(off, other.len(), 1);
        let src = self.base.as_ptr().wrapping_add(off);
        let mut i = 0;
        if (src as usize).is_multiple_of(8) {
            while i + 8 <= other.len() {
                // SAFETY: in bounds per `check`; src+i is 8-aligned.
                let word = unsafe { std::ptr::read_volatile(src.add(i).cast::<u64>()) };
                if word.to_ne_bytes() != other[i..i + 8] {
                    return false;
                }
                i += 8;
            }
        }
        if (src as usize + i).is_multiple_of(4) && i + 4 <= other.len() {
            // SAFETY: in bounds per `check`; src+i is 4-aligned (just tested).
            let word = unsafe { std::ptr::read_volatile(src.add(i).cast::<u32>()) };
            if word.to_ne_bytes() != other[i..i + 4] {
                return false;
            }
            i += 4;
        }
        while i < other.len() {
            // SAFETY: in bounds per `check`.
            if unsafe { std::ptr::read_volatile(src.add(i)) } != other[i] {
                return false;
            }
            i += 1;
        }
        true
    }

    /// The 4-byte word at `off` (4-aligned) as an atomic.
    #[inline]
    pub fn atomic_u32(&self, off: usize) -> &AtomicU32 {
        self.check(off, 4, 4);
        // SAFETY: in bounds and 4-aligned per `check`; the memory lives as long as `self` (the
        // returned borrow), and atomics may be shared and mutated concurrently by anyone,
        // including other processes, without undefined behaviour.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off).cast::<u32>()) }
    }

    /// `count` consecutive 4-byte words at `off` (4-aligned) as atomics, bounds-checked once:
    /// indexing the slice then costs one comparison. For hot paths that touch many words of one
    /// array (bucket heads, element headers).
    #[inline]
    pub fn atomic_u32_slice(&self, off: usize, count: usize) -> &[AtomicU32] {
        self.check(off, count.saturating_mul(4), 4);
        // SAFETY: `count` words from `off` are in bounds and 4-aligned per `check`; as in
        // `atomic_u32`, atomics over this memory are sound to share, and the slice borrows `self`
        // so the mapping outlives it.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(off).cast::<AtomicU32>(), count)
        }
    }

    /// The 8-byte word at `off` (8-aligned) as an atomic.
    #[inline]
    pub fn atomic_u64(&self, off: usize) -> &AtomicU64 {
        self.check(off, 8, 8);
        // SAFETY: as in `atomic_u32`, with 8-byte size and alignment.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()) }
    }

    /// The raw address of `len` bytes at `off`, bounds-checked. For code (the lock module, the
    /// interpreter) that must hand an address to the OS or to guest code.
    #[inline]
    pub fn ptr_at(&self, off: usize, len: usize, align: usize) -> *mut u8 {
        self.check(off, len, align.max(1));
        self.base.as_ptr().wrapping_add(off)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what mmap returned; after drop nothing can reach the
        // mapping because every access borrows `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// True when `words` (at least `bytes.len()` bytes of them, in memory order) begin with `bytes`.
/// The word-slice counterpart of [`Region::bytes_equal`], for hot paths that checked a slice once
/// ([`Region::atomic_u32_slice`]).
#[inline(always)]
pub fn words_equal(words: &[AtomicU32], bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(4);
    for (word, chunk) in words.iter().zip(&mut chunks) {
        if word.load(Ordering::Relaxed).to_ne_bytes() != *chunk {
            return false;
        }
    }
    let tail = chunks.remainder();
    tail.is_empty()
        || words[bytes.len() / 4].load(Ordering::Relaxed).to_ne_bytes()[..tail.len()] == *tail
}

/// Writes `bytes` into `words` (in memory order), keeping the bytes of a partial last word that
/// lie beyond `bytes`. The word-slice counterpart of [`Region::write`].
#[inline(always)]
pub fn write_words(words: &[AtomicU32], bytes: &[u8]) {
    let mut chunks = bytes.chunks_exact(4);
    for (word, chunk) in words.iter().zip(&mut chunks) {
        word.store(
            u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
            Ordering::Relaxed,
        );
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        let word = &words[bytes.len() / 4];
        let mut merged = word.load(Ordering::Relaxed).to_ne_bytes();
        merged[..tail.len()].copy_from_slice(tail);
        word.store(u32::from_ne_bytes(merged), Ordering::Relaxed);
    }
}

/// Fills `out` from `words` (in memory order). The word-slice counterpart of [`Region::read`].
#[inline(always)]
pub fn read_words(words: &[AtomicU32], out: &mut [u8]) {
    let len = out.len();
    let mut chunks = out.chunks_exact_mut(4);
    for (word, chunk) in words.iter().zip(&mut chunks) {
        chunk.copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        tail.copy_from_slice(&words[len / 4].load(Ordering::Relaxed).to_ne_bytes()[..n]);
    }
}

/// Creates an unnamed file of `len` zero bytes for a map: `O_TMPFILE` in `dir` (so it can later be
/// linked to a path in that file system), mode 0600.
pub fn create_unnamed_file(dir: &Path, len: u64) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)?;
    file.set_len(len)?;
    Ok(file)
}

/// Creates an anonymous memory file (memfd) of `len` zero bytes: a map that can never be pinned
/// because it has no file system to be linked into.
pub fn create_memfd(len: u64) -> io::Result<File> {
    let name = CString::new("bpfmaps-map").map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a fresh fd that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len)?;
    Ok(file)
}

/// Gives an open file a new name: `linkat(/proc/self/fd/N, path, AT_SYMLINK_FOLLOW)`. Works for
/// `O_TMPFILE` files (which then become ordinary files) and for files that already have names.
/// Fails with `EEXIST` when `path` exists.
pub fn link_file(file: &File, path: &Path) -> io::Result<()> {
    let proc_path =
        CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(io::Error::other)?;
    let target = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The CPU the calling thread is running on (`sched_getcpu`), or `None` when the kernel cannot
/// say. Only a hint: the thread may migrate right after the call.
pub fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions and touches no memory of ours; it returns -1 on
    // failure, which becomes `None`.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// The calling thread's id (`gettid`), for records that name their writer.
pub fn thread_id() -> u32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    u32::try_from(tid).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_atomics_see_the_same_bytes_through_two_mappings() {
        let file = create_memfd(4096).unwrap();
        let again = file.try_clone().unwrap();
        let a = Region::map(file).unwrap();
        let b = Region::map(again).unwrap();
        a.write(3, b"hello, shared world");
        let mut out = [0u8; 19];
        b.read(3, &mut out);
        assert_eq!(&out, b"hello, shared world");
        a.atomic_u64(64)
            .store(0x1122_3344_5566_7788, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            b.atomic_u32(64).load(std::sync::atomic::Ordering::SeqCst),
            0x5566_7788
        );
        assert!(b.bytes_equal(3, b"hello"));
        b.fill(3, 5, 0);
        assert!(a.bytes_equal(3, &[0; 5]));
    }

    #[test]
    fn out_of_bounds_access_panics_instead_of_touching_memory() {
        let region = Region::map(create_memfd(4096).unwrap()).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = [0u8; 8];
            region.read(4090, &mut out);
        }));
        assert!(result.is_err());
    }
}
