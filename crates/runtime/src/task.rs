//! [`Task`]: "the current task" of an invocation that runs for a task other than the calling
//! thread, as a tracer's does ([`crate::Program::run_for_task`]). The helpers that report the
//! current task (`get_current_pid_tgid`, `_uid_gid`, `_comm`, `get_smp_processor_id`), read user
//! memory (`probe_read_user(_str)`) or walk the user stack (`get_stackid` with
//! `BPF_F_USER_STACK`) ask the task instead of looking at the calling thread.
//!
//! The runtime only defines the questions; the tracer, which holds the traced task, answers them
//! (the runtime stays free of file descriptors and of ptrace). Without a task, every helper keeps
//! its behaviour of [`crate::Program::run`].
//!
//! The "current task" helpers of the user engine that have no task struct behind them:
//! `get_current_task` (35) and `get_current_task_btf` (158) return an opaque, non-null handle
//! (an address in no VM region, distinct per thread), so `if (!task)` tests pass as in the kernel
//! while any read of it fails: `probe_read_kernel` through it zero-fills and returns `-EFAULT`,
//! a direct load traps. `get_stack` (67) captures the calling thread's user stack like
//! `get_stackid`; a kernel stack does not exist here (`-EFAULT`). `current_task_under_cgroup`
//! (37) compares the calling thread's cgroup2 directory and its ancestors with the cgroup a
//! `cgroup_array` slot holds.

use std::path::{Path, PathBuf};

use bpfmaps_abi::map_type::stackid_flags;
use bpfmaps_abi::Errno;
use bpfmaps_maps::cgroup_array::{cgroup2_mounts, cgroup_id_of_dir, CgroupArray};
use bpfmaps_vm::{HelperError, Memory};

/// `bpf_get_current_task`.
pub(crate) const GET_CURRENT_TASK: u32 = 35;
/// `bpf_get_current_task_btf`.
pub(crate) const GET_CURRENT_TASK_BTF: u32 = 158;
/// `bpf_current_task_under_cgroup`.
pub(crate) const CURRENT_TASK_UNDER_CGROUP: u32 = 37;
/// `BPF_F_USER_BUILD_ID`: `get_stack` returns `struct bpf_stack_build_id` records.
const BPF_F_USER_BUILD_ID: u64 = 1 << 11;
/// `sizeof(struct bpf_stack_build_id)`.
const BUILD_ID_RECORD: u64 = 32;
/// `BPF_STACK_BUILD_ID_IP`: a record holding an address, its build id unknown.
const BUILD_ID_STATUS_IP: i32 = 2;

/// Task handles: `TASK_HANDLE_BASE + tid`. The upper half selects a VM region index no run maps.
pub const TASK_HANDLE_BASE: u64 = 0xffff_fffd_0000_0000;

/// The handle `get_current_task(_btf)` returns for the calling thread.
pub(crate) fn current_task() -> u64 {
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    TASK_HANDLE_BASE + u64::from(tid.unsigned_abs())
}

/// `bpf_get_stack(ctx, buf, size, flags)`, the kernel's checks in the kernel's order: unknown
/// flags, a build id asked of the kernel stack, or a size that is not a multiple of the record
/// size give `-EINVAL`; a kernel stack gives `-EFAULT`; the buffer is zeroed on every error.
/// Otherwise the user stack (after `flags & 0xff` skipped frames) fills `buf` (addresses, or
/// `bpf_stack_build_id` records with status `BPF_STACK_BUILD_ID_IP`), the rest is zeroed, and
/// the number of bytes written is returned.
pub(crate) fn get_stack(
    args: [u64; 5],
    mem: &mut Memory<'_>,
    capture: impl FnOnce(usize) -> Vec<u64>,
) -> Result<u64, HelperError> {
    let [_, buf, size, flags, _] = args;
    let size = size & 0xffff_ffff;
    mem.check_writable(buf, size)?;
    let len = usize::try_from(size).unwrap_or(usize::MAX);
    let fail = |mem: &mut Memory<'_>, errno: Errno| -> Result<u64, HelperError> {
        mem.write(buf, &vec![0u8; len])?;
        Ok(errno.as_helper_return())
    };
    let known = stackid_flags::BPF_F_SKIP_FIELD_MASK
        | stackid_flags::BPF_F_USER_STACK
        | BPF_F_USER_BUILD_ID;
    let user = flags & stackid_flags::BPF_F_USER_STACK != 0;
    let build_id = flags & BPF_F_USER_BUILD_ID != 0;
    if flags & !known != 0 || (!user && build_id) {
        return fail(mem, Errno::EINVAL);
    }
    let record = if build_id { BUILD_ID_RECORD } else { 8 };
    if size % record != 0 {
        return fail(mem, Errno::EINVAL);
    }
    if !user {
        return fail(mem, Errno::EFAULT);
    }
    let skip = usize::try_from(flags & stackid_flags::BPF_F_SKIP_FIELD_MASK).unwrap_or(0);
    let wanted = usize::try_from(size / record).unwrap_or(0);
    let ips = capture(wanted + skip + 1);
    if ips.len() < skip {
        return fail(mem, Errno::EFAULT);
    }
    let ips = &ips[skip..ips.len().min(skip + wanted)];
    let mut out = vec![0u8; len];
    for (i, ip) in ips.iter().enumerate() {
        if build_id {
            let at = i * BUILD_ID_RECORD as usize;
            out[at..at + 4].copy_from_slice(&BUILD_ID_STATUS_IP.to_le_bytes());
            out[at + 24..at + 32].copy_from_slice(&ip.to_le_bytes());
        } else {
            out[i * 8..i * 8 + 8].copy_from_slice(&ip.to_le_bytes());
        }
    }
    mem.write(buf, &out)?;
    Ok(ips.len() as u64 * record)
}

/// The calling thread's cgroup2 directory and its ancestors up to the mount, innermost first.
fn thread_cgroup_dirs() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap_or_default();
    let Some(path) = text.lines().find_map(|l| l.strip_prefix("0::")) else {
        return Vec::new();
    };
    let relative = path.trim_start_matches('/');
    let mut dirs = Vec::new();
    for mount in cgroup2_mounts() {
        let mut dir = mount.join(relative);
        if !dir.is_dir() {
            continue;
        }
        loop {
            dirs.push(dir.clone());
            if dir == mount || !dir.pop() {
                break;
            }
        }
        break;
    }
    dirs
}

/// `bpf_current_task_under_cgroup(map, index)`: `-E2BIG` for an index past the end, `-EAGAIN`
/// for an empty slot, else 1 when the calling thread's cgroup is the slot's cgroup or below it,
/// 0 when not.
pub(crate) fn current_task_under_cgroup(array: &CgroupArray, index: u64) -> u64 {
    let id = match array.cgroup_id(index as u32) {
        Err(e) => return e.as_helper_return(),
        Ok(None) => return Errno::EAGAIN.as_helper_return(),
        Ok(Some(id)) => id,
    };
    let under = thread_cgroup_dirs()
        .iter()
        .any(|d| cgroup_id_of_dir(Path::new(d)) == Ok(id));
    u64::from(under)
}

/// The task an invocation runs for. Every method is called at most when a helper needs it, so an
/// implementation may fetch lazily.
pub trait Task {
    /// `(tgid << 32) | tid`, as `bpf_get_current_pid_tgid` returns it.
    fn pid_tgid(&self) -> u64;

    /// `(gid << 32) | uid` (real ids), as `bpf_get_current_uid_gid` returns it.
    fn uid_gid(&self) -> u64;

    /// The task's `comm`, NUL-padded (at most 15 bytes of name).
    fn comm(&self) -> [u8; 16];

    /// The CPU the task last ran on.
    fn cpu(&self) -> u32;

    /// Copies the task's user memory at `addr` into `buf`; returns how many leading bytes could
    /// be read (fewer than `buf.len()` when the range runs into unmapped memory).
    fn read_user(&self, addr: u64, buf: &mut [u8]) -> usize;

    /// The task's user stack, return addresses innermost first (the instruction pointer first),
    /// at most `max` entries.
    fn user_stack(&self, max: usize) -> Vec<u64>;
}
