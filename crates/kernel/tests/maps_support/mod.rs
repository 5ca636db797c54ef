//! Shared helpers of the kernel map tests: the root/BPF gate, map creation shorthands, unique
//! bpffs pin paths, and hand-assembled producer programs run with `BPF_PROG_TEST_RUN`.
//!
//! Owned by the syscall layer's tests (`maps.rs`, `ringbuf.rs`, `perf.rs`); nothing else uses it.

#![allow(dead_code)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use bpfmaps_abi::{Errno, MapDef, MapError, MapType};
use bpfmaps_kernel::map::KernelMap;
use bpfmaps_kernel::sys::{self, SysError, TestRun};
use bpfmaps_kernel::Error;

/// True when the kernel is usable. Without root/BPF it panics, unless `BPFMAPS_SKIP_KERNEL=1`,
/// in which case it prints why and returns false so the test returns early.
pub fn kernel_available() -> bool {
    let probe = KernelMap::create(&def(MapType::Array, 4, 4, 1, 0, "probe"));
    match probe {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
                eprintln!(
                    "skipping kernel test: cannot create a BPF map ({e}); BPFMAPS_SKIP_KERNEL=1"
                );
                false
            } else {
                panic!(
                    "kernel tests need root with CAP_BPF and bpf(2) ({e}); \
                     set BPFMAPS_SKIP_KERNEL=1 to skip them"
                );
            }
        }
    }
}

/// Returns early from the calling test when the kernel is unavailable and skipping is allowed.
#[macro_export]
macro_rules! require_kernel {
    () => {
        if !maps_support::kernel_available() {
            return;
        }
    };
}

/// A map definition.
pub fn def(
    map_type: MapType,
    key: u32,
    value: u32,
    entries: u32,
    flags: u32,
    name: &str,
) -> MapDef {
    MapDef::new(map_type, key, value, entries, flags, name)
}

/// Creates a map, panicking with the errno on failure.
pub fn create(map_type: MapType, key: u32, value: u32, entries: u32, flags: u32) -> KernelMap {
    KernelMap::create(&def(map_type, key, value, entries, flags, "t")).unwrap_or_else(|e| {
        panic!("creating {map_type} k{key} v{value} n{entries} f{flags:#x}: {e}")
    })
}

/// The errno of a failed map creation (`None` when it succeeded).
pub fn create_errno(
    map_type: MapType,
    key: u32,
    value: u32,
    entries: u32,
    flags: u32,
) -> Option<Errno> {
    match KernelMap::create(&def(map_type, key, value, entries, flags, "t")) {
        Ok(_) => None,
        Err(e) => Some(sys_errno(&e)),
    }
}

/// The errno inside a kernel-engine error, panicking when it is not a syscall error.
pub fn sys_errno(e: &Error) -> Errno {
    match e {
        Error::Sys(SysError { errno, .. }) => *errno,
        other => panic!("expected a syscall error, got {other}"),
    }
}

/// The errno of a map operation's result (`None` on success).
pub fn errno<T>(r: Result<T, MapError>) -> Option<Errno> {
    match r {
        Ok(_) => None,
        Err(MapError::Errno(e)) => Some(e),
        Err(other) => panic!("expected an errno, got {other}"),
    }
}

/// The bytes of a u32 key.
pub fn k(v: u32) -> [u8; 4] {
    v.to_ne_bytes()
}

/// The bytes of a u64 value.
pub fn v64(v: u64) -> [u8; 8] {
    v.to_ne_bytes()
}

/// A unique pin path under /sys/fs/bpf (bpffs mounted on demand), removed on drop.
pub struct PinPath(pub PathBuf);

impl PinPath {
    /// `/sys/fs/bpf/bpfmaps_test_<pid>_<tag>`.
    pub fn new(tag: &str) -> PinPath {
        bpfmaps_kernel::fs::ensure_bpffs().expect("mounting bpffs");
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/bpfmaps_test_{}_{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        PinPath(path)
    }
}

impl Drop for PinPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Pins this thread to `cpu` (so a test's syscalls and test runs use one CPU's per-CPU state).
pub fn pin_thread_to_cpu(cpu: usize) {
    // SAFETY: an all-zero cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` is below CPU_SETSIZE on this machine.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of the size passed.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(ret, 0, "sched_setaffinity");
}

/// Hand-assembled eBPF instructions, one `u64` slot each (little-endian field order).
pub mod asm {
    /// Encodes one instruction.
    pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
        u64::from(code)
            | (u64::from(dst & 0xf) << 8)
            | (u64::from(src & 0xf) << 12)
            | (u64::from(off as u16) << 16)
            | (u64::from(imm as u32) << 32)
    }
    /// `dst = src` (64-bit).
    pub fn mov_reg(dst: u8, src: u8) -> u64 {
        insn(0xbf, dst, src, 0, 0)
    }
    /// `dst = imm` (64-bit, sign-extended).
    pub fn mov_imm(dst: u8, imm: i32) -> u64 {
        insn(0xb7, dst, 0, 0, imm)
    }
    /// `dst += imm` (64-bit).
    pub fn add_imm(dst: u8, imm: i32) -> u64 {
        insn(0x07, dst, 0, 0, imm)
    }
    /// `dst = *(u64 *)(src + off)`.
    pub fn ldx_dw(dst: u8, src: u8, off: i16) -> u64 {
        insn(0x79, dst, src, off, 0)
    }
    /// `*(u64 *)(dst + off) = src`.
    pub fn stx_dw(dst: u8, off: i16, src: u8) -> u64 {
        insn(0x7b, dst, src, off, 0)
    }
    /// `*(u64 *)(dst + off) = imm`.
    pub fn st_dw(dst: u8, off: i16, imm: i32) -> u64 {
        insn(0x7a, dst, 0, off, imm)
    }
    /// `dst = imm64` (two slots).
    pub fn ld_imm64(dst: u8, imm: u64) -> [u64; 2] {
        [
            insn(0x18, dst, 0, 0, imm as u32 as i32),
            insn(0, 0, 0, 0, (imm >> 32) as u32 as i32),
        ]
    }
    /// `dst = map` by fd (`BPF_PSEUDO_MAP_FD`, two slots).
    pub fn ld_map_fd(dst: u8, fd: i32) -> [u64; 2] {
        [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)]
    }
    /// `if dst == imm goto +off`.
    pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> u64 {
        insn(0x15, dst, 0, off, imm)
    }
    /// `call helper`.
    pub fn call(helper: i32) -> u64 {
        insn(0x85, 0, 0, 0, helper)
    }
    /// `exit`.
    pub fn exit() -> u64 {
        insn(0x95, 0, 0, 0, 0)
    }
}

/// Helper ids used by the producer programs.
pub const HELPER_PERF_EVENT_OUTPUT: i32 = 25;
/// `bpf_ringbuf_output`.
pub const HELPER_RINGBUF_OUTPUT: i32 = 130;
/// `bpf_ringbuf_reserve`.
pub const HELPER_RINGBUF_RESERVE: i32 = 131;
/// `bpf_ringbuf_submit`.
pub const HELPER_RINGBUF_SUBMIT: i32 = 132;
/// `bpf_ringbuf_discard`.
pub const HELPER_RINGBUF_DISCARD: i32 = 133;

fn load(insns: &[u64], name: &str) -> OwnedFd {
    sys::prog_load_raw(sys::BPF_PROG_TYPE_RAW_TRACEPOINT, insns, "GPL", name)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// A raw_tp program: `bpf_ringbuf_output(map, buf, size, 0)` where `buf` is `size` bytes (a
/// multiple of 8) whose first u64 is the program's first context argument and the rest zero.
/// Returns the helper's result.
pub fn ringbuf_output_prog(map: BorrowedFd<'_>, size: i16) -> OwnedFd {
    use asm::*;
    assert!(size >= 8 && size % 8 == 0);
    let mut p = vec![mov_reg(6, 1), ldx_dw(7, 6, 0)];
    for slot in (0..size).step_by(8) {
        p.push(st_dw(10, -size + slot, 0));
    }
    p.push(stx_dw(10, -size, 7));
    p.extend(ld_map_fd(1, map.as_raw_fd()));
    p.extend([
        mov_reg(2, 10),
        add_imm(2, -i32::from(size)),
        mov_imm(3, i32::from(size)),
    ]);
    p.extend([mov_imm(4, 0), call(HELPER_RINGBUF_OUTPUT), exit()]);
    load(&p, "rb_output")
}

/// A raw_tp program: reserve `size` bytes, store the first context argument in the first u64,
/// then submit (or discard when `discard`). Returns 0, or 1 when the reservation failed.
pub fn ringbuf_reserve_prog(map: BorrowedFd<'_>, size: i32, discard: bool) -> OwnedFd {
    use asm::*;
    let mut p = vec![mov_reg(6, 1), ldx_dw(7, 6, 0)];
    p.extend(ld_map_fd(1, map.as_raw_fd()));
    p.extend([
        mov_imm(2, size),
        mov_imm(3, 0),
        call(HELPER_RINGBUF_RESERVE),
    ]);
    p.push(jeq_imm(0, 0, 6));
    p.extend([stx_dw(0, 0, 7), mov_reg(1, 0), mov_imm(2, 0)]);
    p.push(call(if discard {
        HELPER_RINGBUF_DISCARD
    } else {
        HELPER_RINGBUF_SUBMIT
    }));
    p.extend([mov_imm(0, 0), exit(), mov_imm(0, 1), exit()]);
    load(&p, "rb_reserve")
}

/// A raw_tp program: `bpf_perf_event_output(ctx, map, BPF_F_CURRENT_CPU, buf, 8)` with the first
/// context argument as the 8-byte payload. Returns the helper's result.
pub fn perf_output_prog(map: BorrowedFd<'_>) -> OwnedFd {
    use asm::*;
    let mut p = vec![
        mov_reg(6, 1),
        ldx_dw(7, 6, 0),
        stx_dw(10, -8, 7),
        mov_reg(1, 6),
    ];
    p.extend(ld_map_fd(2, map.as_raw_fd()));
    p.extend(ld_imm64(3, 0xffff_ffff));
    p.extend([
        mov_reg(4, 10),
        add_imm(4, -8),
        mov_imm(5, 8),
        call(HELPER_PERF_EVENT_OUTPUT),
    ]);
    p.push(exit());
    load(&p, "perf_output")
}

/// Runs a raw_tp program once with `arg` as its first context argument, optionally on `cpu`.
/// Returns the program's return value as a signed 32-bit number (a helper's -errno).
pub fn run(prog: &OwnedFd, arg: u64, cpu: Option<u32>) -> i32 {
    use std::os::fd::AsFd;
    let ctx = arg.to_ne_bytes();
    let result = sys::prog_test_run(
        prog.as_fd(),
        &TestRun {
            ctx_in: &ctx,
            cpu,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("test run: {e}"));
    result.retval as i32
}

/// `bpf_get_stackid`.
pub const HELPER_GET_STACKID: i32 = 27;

/// A raw_tp program returning `bpf_get_stackid(ctx, map, flags)`.
pub fn stackid_prog(map: BorrowedFd<'_>, flags: i32) -> OwnedFd {
    use asm::*;
    let mut p = vec![mov_reg(6, 1), mov_reg(1, 6)];
    p.extend(ld_map_fd(2, map.as_raw_fd()));
    p.extend([mov_imm(3, flags), call(HELPER_GET_STACKID), exit()]);
    load(&p, "stackid")
}
