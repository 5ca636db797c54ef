//! [`TracedTask`]: a thread of the traced command stopped at a syscall, as the runtime's
//! [`Task`] sees it. Ids come from the tracer; uid/gid, comm and CPU from `/proc` (files kept
//! open per thread and re-read with `pread`, which makes procfs regenerate them, so a changed
//! comm or uid is seen); memory through `process_vm_readv` (allowed: we are its tracer); the user
//! stack by walking the frame pointers from the stopped registers.

use std::cell::OnceCell;
use std::fs::File;
use std::os::unix::fs::FileExt;

use bpfmaps_runtime::Task;

/// The `/proc` files of one traced thread, opened on first use.
#[derive(Debug, Default)]
pub(crate) struct ProcFiles {
    comm: OnceCell<Option<File>>,
    status: OnceCell<Option<File>>,
    stat: OnceCell<Option<File>>,
}

impl ProcFiles {
    fn read(cell: &OnceCell<Option<File>>, path: impl FnOnce() -> String) -> Option<String> {
        let file = cell.get_or_init(|| File::open(path()).ok()).as_ref()?;
        let mut buf = vec![0u8; 4096];
        let n = file.read_at(&mut buf, 0).ok()?;
        buf.truncate(n);
        String::from_utf8(buf).ok()
    }
}

/// The registers a stack walk starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartRegs {
    /// The instruction pointer.
    pub ip: u64,
    /// The stack pointer.
    pub sp: u64,
    /// The frame pointer (`rbp`, `x29`).
    pub fp: u64,
}

/// One stopped thread of the traced command.
#[derive(Debug)]
pub struct TracedTask<'a> {
    pub(crate) tgid: u32,
    pub(crate) tid: u32,
    pub(crate) regs: StartRegs,
    pub(crate) files: &'a ProcFiles,
}

/// Reads `buf.len()` bytes at `addr` of process (thread) `tid`; returns how many were read.
pub(crate) fn read_memory(tid: u32, addr: u64, buf: &mut [u8]) -> usize {
    let mut done = 0usize;
    while done < buf.len() {
        let local = libc::iovec {
            iov_base: buf[done..].as_mut_ptr().cast(),
            iov_len: buf.len() - done,
        };
        let remote = libc::iovec {
            iov_base: addr.wrapping_add(done as u64) as *mut libc::c_void,
            iov_len: buf.len() - done,
        };
        let Ok(pid) = libc::pid_t::try_from(tid) else {
            return done;
        };
        // SAFETY: `local` describes the writable tail of `buf`, which outlives the call; the
        // remote iovec is only an address in the other process, never dereferenced here.
        let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
        if n <= 0 {
            return done;
        }
        done += n as usize;
    }
    done
}

fn status_field(status: &str, name: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The thread group id of thread `tid`, from `/proc/TID/status`.
pub(crate) fn tgid_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status_field(&status, "Tgid:")
}

impl TracedTask<'_> {
    fn word(&self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        (read_memory(self.tid, addr, &mut b) == 8).then(|| u64::from_ne_bytes(b))
    }
}

impl Task for TracedTask<'_> {
    fn pid_tgid(&self) -> u64 {
        (u64::from(self.tgid) << 32) | u64::from(self.tid)
    }

    fn uid_gid(&self) -> u64 {
        let (tgid, tid) = (self.tgid, self.tid);
        let Some(status) = ProcFiles::read(&self.files.status, || {
            format!("/proc/{tgid}/task/{tid}/status")
        }) else {
            return 0;
        };
        let uid = status_field(&status, "Uid:").unwrap_or(0);
        let gid = status_field(&status, "Gid:").unwrap_or(0);
        (u64::from(gid) << 32) | u64::from(uid)
    }

    fn comm(&self) -> [u8; 16] {
        let (tgid, tid) = (self.tgid, self.tid);
        let mut out = [0u8; 16];
        if let Some(comm) =
            ProcFiles::read(&self.files.comm, || format!("/proc/{tgid}/task/{tid}/comm"))
        {
            let name = comm.strip_suffix('\n').unwrap_or(&comm).as_bytes();
            let n = name.len().min(15);
            out[..n].copy_from_slice(&name[..n]);
        }
        out
    }

    fn cpu(&self) -> u32 {
        let (tgid, tid) = (self.tgid, self.tid);
        ProcFiles::read(&self.files.stat, || format!("/proc/{tgid}/task/{tid}/stat"))
            .and_then(|stat| {
                // Field 39 ("processor"); fields after the comm's closing parenthesis start at 3.
                let after = &stat[stat.rfind(')')? + 1..];
                after.split_whitespace().nth(39 - 3)?.parse().ok()
            })
            .unwrap_or(0)
    }

    fn read_user(&self, addr: u64, buf: &mut [u8]) -> usize {
        read_memory(self.tid, addr, buf)
    }

    fn user_stack(&self, max: usize) -> Vec<u64> {
        let mut ips = Vec::new();
        if max == 0 || self.regs.ip == 0 {
            return ips;
        }
        ips.push(self.regs.ip);
        // The kernel's user callchain walk: each frame holds the caller's frame pointer and the
        // return address above it; stop at a null, misaligned or non-increasing frame.
        let mut fp = self.regs.fp;
        while ips.len() < max && fp != 0 && fp.is_multiple_of(8) && fp >= self.regs.sp {
            let (Some(next), Some(ret)) = (self.word(fp), self.word(fp.wrapping_add(8))) else {
                break;
            };
            if ret == 0 {
                break;
            }
            ips.push(ret);
            if next <= fp {
                break;
            }
            fp = next;
        }
        ips
    }
}
