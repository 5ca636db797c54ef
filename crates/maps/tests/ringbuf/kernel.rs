//! Raw access to the real kernel for the ring buffer and perf event array tests: bpf(2) map
//! commands, a hand-assembled socket-filter program run with `BPF_PROG_TEST_RUN`, mmap of a ring
//! buffer map, and `perf_event_open` of `PERF_COUNT_SW_BPF_OUTPUT` events. The kernel is the
//! oracle the user engine is compared with.
//!
//! Kernel tests need root and BPF; when that is unavailable they fail loudly unless
//! `BPFMAPS_SKIP_KERNEL=1` is set, in which case [`available`] prints why and returns false.

#![allow(dead_code)]

use std::os::raw::c_long;

const SYS_BPF: c_long = libc::SYS_bpf;
const ATTR_SIZE: usize = 144;

/// bpf(2) command numbers.
pub mod cmd {
    pub const MAP_CREATE: u32 = 0;
    pub const MAP_LOOKUP_ELEM: u32 = 1;
    pub const MAP_UPDATE_ELEM: u32 = 2;
    pub const MAP_DELETE_ELEM: u32 = 3;
    pub const MAP_GET_NEXT_KEY: u32 = 4;
    pub const PROG_LOAD: u32 = 5;
    pub const PROG_TEST_RUN: u32 = 10;
    pub const MAP_LOOKUP_AND_DELETE_ELEM: u32 = 21;
    pub const MAP_FREEZE: u32 = 22;
    pub const MAP_LOOKUP_BATCH: u32 = 24;
    pub const MAP_LOOKUP_AND_DELETE_BATCH: u32 = 25;
    pub const MAP_UPDATE_BATCH: u32 = 26;
    pub const MAP_DELETE_BATCH: u32 = 27;
}

/// Whether kernel tests run: true with root and a working bpf(2); false (after saying why) when
/// `BPFMAPS_SKIP_KERNEL=1`; a panic otherwise.
pub fn available() -> bool {
    if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
        eprintln!("BPFMAPS_SKIP_KERNEL=1: skipping the comparison with the real kernel");
        return false;
    }
    match map_create(27, 0, 0, 4096, 0, "probe") {
        Ok(_) => true,
        Err(e) => panic!(
            "kernel tests need root and bpf(2) (creating a ring buffer failed with errno {e}); \
             set BPFMAPS_SKIP_KERNEL=1 to skip them"
        ),
    }
}

/// An owned file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(pub i32);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// bpf(cmd, attr); the return value or the errno.
pub fn bpf(command: u32, attr: &mut [u8; ATTR_SIZE]) -> Result<i32, i32> {
    // SAFETY: attr is a valid, writable 144-byte buffer for the whole call; any pointers inside
    // it point at live buffers of the caller.
    let rc = unsafe {
        libc::syscall(
            SYS_BPF,
            command as c_long,
            attr.as_mut_ptr(),
            ATTR_SIZE as c_long,
        )
    };
    if rc < 0 {
        Err(errno())
    } else {
        Ok(rc as i32)
    }
}

fn put32(attr: &mut [u8; ATTR_SIZE], off: usize, v: u32) {
    attr[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(attr: &mut [u8; ATTR_SIZE], off: usize, v: u64) {
    attr[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn ptr_of(buf: Option<&[u8]>) -> u64 {
    buf.map_or(0, |b| b.as_ptr() as u64)
}

/// BPF_MAP_CREATE.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> Result<Fd, i32> {
    let mut attr = [0u8; ATTR_SIZE];
    put32(&mut attr, 0, map_type);
    put32(&mut attr, 4, key_size);
    put32(&mut attr, 8, value_size);
    put32(&mut attr, 12, max_entries);
    put32(&mut attr, 16, map_flags);
    let n = name.len().min(16);
    attr[28..28 + n].copy_from_slice(&name.as_bytes()[..n]);
    bpf(cmd::MAP_CREATE, &mut attr).map(Fd)
}

/// An element command (lookup, update, delete, get_next_key, lookup_and_delete) with raw
/// key/value pointers (`None` is NULL).
pub fn elem(
    command: u32,
    fd: &Fd,
    key: Option<&[u8]>,
    value: Option<&mut [u8]>,
    flags: u64,
) -> Result<(), i32> {
    let mut attr = [0u8; ATTR_SIZE];
    put32(&mut attr, 0, fd.0 as u32);
    put64(&mut attr, 8, ptr_of(key));
    put64(&mut attr, 16, value.map_or(0, |v| v.as_mut_ptr() as u64));
    put64(&mut attr, 24, flags);
    bpf(command, &mut attr).map(|_| ())
}

/// A batch command with `count` elements of scratch buffers; the errno on failure.
pub fn batch(command: u32, fd: &Fd, count: u32) -> Result<u32, i32> {
    let mut keys = vec![0u8; 64 * count.max(1) as usize];
    let mut values = vec![0u8; 64 * count.max(1) as usize];
    let mut out_batch = [0u8; 64];
    let mut attr = [0u8; ATTR_SIZE];
    put64(&mut attr, 0, 0);
    put64(&mut attr, 8, out_batch.as_mut_ptr() as u64);
    put64(&mut attr, 16, keys.as_mut_ptr() as u64);
    put64(&mut attr, 24, values.as_mut_ptr() as u64);
    put32(&mut attr, 32, count);
    put32(&mut attr, 36, fd.0 as u32);
    bpf(command, &mut attr).map(|_| u32::from_le_bytes(attr[32..36].try_into().unwrap()))
}

/// BPF_MAP_FREEZE.
pub fn freeze(fd: &Fd) -> Result<(), i32> {
    let mut attr = [0u8; ATTR_SIZE];
    put32(&mut attr, 0, fd.0 as u32);
    bpf(cmd::MAP_FREEZE, &mut attr).map(|_| ())
}

/// Instruction encoding (`struct bpf_insn` as a little-endian u64).
pub mod insn {
    fn enc(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | u64::from(dst & 0xf) << 8
            | u64::from(src & 0xf) << 12
            | u64::from(off as u16) << 16
            | u64::from(imm as u32) << 32
    }
    /// `dst = map fd` (a two-slot `ld_imm64` with `BPF_PSEUDO_MAP_FD`).
    pub fn ld_map_fd(dst: u8, fd: i32) -> [u64; 2] {
        [enc(0x18, dst, 1, 0, fd), 0]
    }
    /// `dst = imm` (64-bit).
    pub fn mov_imm(dst: u8, imm: i32) -> u64 {
        enc(0xb7, dst, 0, 0, imm)
    }
    /// `dst = src` (64-bit).
    pub fn mov_reg(dst: u8, src: u8) -> u64 {
        enc(0xbf, dst, src, 0, 0)
    }
    /// `dst += imm` (64-bit).
    pub fn add_imm(dst: u8, imm: i32) -> u64 {
        enc(0x07, dst, 0, 0, imm)
    }
    /// `*(u64 *)(dst + off) = imm` (sign-extended).
    pub fn st_dw(dst: u8, off: i16, imm: i32) -> u64 {
        enc(0x7a, dst, 0, off, imm)
    }
    /// `*(u8 *)(dst + off) = imm`.
    pub fn st_b(dst: u8, off: i16, imm: i32) -> u64 {
        enc(0x72, dst, 0, off, imm)
    }
    /// `call helper`.
    pub fn call(helper: i32) -> u64 {
        enc(0x85, 0, 0, 0, helper)
    }
    /// `if dst == imm goto +off`.
    pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> u64 {
        enc(0x15, dst, 0, off, imm)
    }
    /// `exit`.
    pub fn exit() -> u64 {
        enc(0x95, 0, 0, 0, 0)
    }
}

/// Loads a socket filter program (GPL) made of `insns`; the errno and verifier log on failure.
pub fn load_socket_filter(insns: &[u64]) -> Result<Fd, (i32, String)> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 65536];
    let mut attr = [0u8; ATTR_SIZE];
    put32(&mut attr, 0, 1); // BPF_PROG_TYPE_SOCKET_FILTER
    put32(&mut attr, 4, insns.len() as u32);
    put64(&mut attr, 8, insns.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 24, 1);
    put32(&mut attr, 28, log.len() as u32);
    put64(&mut attr, 32, log.as_mut_ptr() as u64);
    bpf(cmd::PROG_LOAD, &mut attr).map(Fd).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        (e, String::from_utf8_lossy(&log[..end]).into_owned())
    })
}

/// Runs `prog` `repeat` times with BPF_PROG_TEST_RUN on a 64-byte packet; the last run's
/// return value.
pub fn test_run(prog: &Fd, repeat: u32) -> Result<u32, i32> {
    let packet = [0u8; 64];
    let mut attr = [0u8; ATTR_SIZE];
    put32(&mut attr, 0, prog.0 as u32);
    put32(&mut attr, 8, packet.len() as u32);
    put64(&mut attr, 16, packet.as_ptr() as u64);
    put32(&mut attr, 32, repeat);
    bpf(cmd::PROG_TEST_RUN, &mut attr).map(|_| u32::from_le_bytes(attr[4..8].try_into().unwrap()))
}

/// Runs `prog` `repeat` times with BPF_PROG_TEST_RUN; the last return value and the average
/// duration of one run in nanoseconds, as the kernel measures it.
pub fn test_run_timed(prog: &Fd, repeat: u32) -> Result<(u32, u32), i32> {
    let packet = [0u8; 64];
    let mut attr = [0u8; ATTR_SIZE];
    put32(&mut attr, 0, prog.0 as u32);
    put32(&mut attr, 8, packet.len() as u32);
    put64(&mut attr, 16, packet.as_ptr() as u64);
    put32(&mut attr, 32, repeat);
    bpf(cmd::PROG_TEST_RUN, &mut attr).map(|_| {
        let word = |off: usize| u32::from_le_bytes(attr[off..off + 4].try_into().unwrap());
        (word(4), word(36))
    })
}

/// A read-only or read-write shared mapping of an fd.
pub struct Mmap {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Mmap {
    /// mmap(fd, offset, len).
    pub fn new(fd: &Fd, offset: usize, len: usize, writable: bool) -> Result<Mmap, i32> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh kernel-chosen mapping cannot alias Rust memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.0,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(errno());
        }
        Ok(Mmap {
            ptr: ptr.cast(),
            len,
        })
    }

    /// A copy of `len` bytes at `off`.
    pub fn bytes(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len);
        let mut out = vec![0u8; len];
        // SAFETY: in bounds of the mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(off), out.as_mut_ptr(), len) };
        out
    }

    /// The u64 at `off`.
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.bytes(off, 8).try_into().unwrap())
    }

    /// Stores a u64 at `off` (volatile).
    pub fn set_u64(&self, off: usize, v: u64) {
        assert!(off + 8 <= self.len);
        // SAFETY: in bounds and 8-aligned (offsets used are 8-aligned) of a writable mapping.
        unsafe { std::ptr::write_volatile(self.ptr.add(off).cast::<u64>(), v) };
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: we own the mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Opens a `PERF_COUNT_SW_BPF_OUTPUT` event on `cpu` (sample_period 1, PERF_SAMPLE_RAW,
/// wakeup_events 1) and enables it.
pub fn perf_output_event(cpu: i32) -> Result<Fd, i32> {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_le_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_le_bytes()); // size
    attr[8..16].copy_from_slice(&10u64.to_le_bytes()); // PERF_COUNT_SW_BPF_OUTPUT
    attr[16..24].copy_from_slice(&1u64.to_le_bytes()); // sample_period
    attr[24..32].copy_from_slice(&(1u64 << 10).to_le_bytes()); // PERF_SAMPLE_RAW
    attr[48..52].copy_from_slice(&1u32.to_le_bytes()); // wakeup_events
                                                       // SAFETY: attr is a valid perf_event_attr buffer of the declared size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            -1 as c_long,
            cpu as c_long,
            -1 as c_long,
            8 as c_long,
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    let fd = Fd(fd as i32);
    // SAFETY: PERF_EVENT_IOC_ENABLE on a perf fd takes no pointer.
    let rc = unsafe { libc::ioctl(fd.0, 0x2400, 0) };
    if rc < 0 {
        return Err(errno());
    }
    Ok(fd)
}

/// Pins the calling thread to `cpu`; returns the previous mask to restore.
pub fn pin_to_cpu(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set.
    let mut old: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to cpu_set_t for the calling thread (pid 0).
    unsafe {
        libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut old);
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
    old
}

/// Restores an affinity mask from [`pin_to_cpu`].
pub fn restore_affinity(old: &libc::cpu_set_t) {
    // SAFETY: a valid cpu_set_t for the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), old) };
}
