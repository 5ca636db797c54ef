//! Programs loaded in the kernel, as `bpftool prog list|show` reports them: every id
//! ([`list_prog_ids`]) and one program's info ([`ProgInfo`]: type, name, tag, load time, uid,
//! translated and JITed sizes, memlock, map ids, BTF id) with its translated instructions.
//!
//! It does not load or attach programs (that is [`crate::object`] and [`crate::attach`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use crate::sys;
use crate::Error;

/// bpftool's names of `enum bpf_prog_type`, by number.
const PROG_TYPE_NAMES: [&str; 33] = [
    "unspec",
    "socket_filter",
    "kprobe",
    "sched_cls",
    "sched_act",
    "tracepoint",
    "xdp",
    "perf_event",
    "cgroup_skb",
    "cgroup_sock",
    "lwt_in",
    "lwt_out",
    "lwt_xmit",
    "sock_ops",
    "sk_skb",
    "cgroup_device",
    "sk_msg",
    "raw_tracepoint",
    "cgroup_sock_addr",
    "lwt_seg6local",
    "lirc_mode2",
    "sk_reuseport",
    "flow_dissector",
    "cgroup_sysctl",
    "raw_tracepoint_writable",
    "cgroup_sockopt",
    "tracing",
    "struct_ops",
    "ext",
    "lsm",
    "sk_lookup",
    "syscall",
    "netfilter",
];

/// bpftool's name of program type `prog_type` (its number when bpftool has no name for it).
pub fn prog_type_name(prog_type: u32) -> String {
    usize::try_from(prog_type)
        .ok()
        .and_then(|i| PROG_TYPE_NAMES.get(i))
        .map_or_else(|| prog_type.to_string(), |s| (*s).to_owned())
}

/// One loaded program, as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgInfo {
    /// The program id.
    pub id: u32,
    /// `enum bpf_prog_type`.
    pub prog_type: u32,
    /// The name (up to 15 bytes).
    pub name: String,
    /// The tag, 16 hex digits.
    pub tag: String,
    /// True when the license is GPL-compatible.
    pub gpl_compatible: bool,
    /// Load time in seconds since the Unix epoch (the kernel's boot-time stamp moved to the
    /// wall clock, as bpftool does).
    pub loaded_at: u64,
    /// The uid that loaded it.
    pub uid: u32,
    /// Bytes of translated instructions.
    pub bytes_xlated: u32,
    /// True when JITed.
    pub jited: bool,
    /// Bytes of JITed code.
    pub bytes_jited: u32,
    /// Locked memory charged for it (`memlock` of the fd's fdinfo).
    pub bytes_memlock: u64,
    /// The maps it uses, in the kernel's order.
    pub map_ids: Vec<u32>,
    /// The id of its BTF object, 0 without BTF.
    pub btf_id: u32,
    /// The translated instructions, as the kernel dumps them (map references as map ids).
    pub xlated: Vec<u8>,
}

/// Every program id on the system, ascending.
pub fn list_prog_ids() -> Result<Vec<u32>, Error> {
    let mut ids = Vec::new();
    let mut next = 0;
    while let Some(id) = sys::prog_get_next_id(next)? {
        ids.push(id);
        next = id;
    }
    Ok(ids)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime writes only it.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The `memlock:` line of `/proc/self/fdinfo/FD`, 0 when absent.
fn fdinfo_memlock(fd: BorrowedFd<'_>) -> u64 {
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl ProgInfo {
    /// The info of the program behind `fd`.
    pub fn from_fd(fd: BorrowedFd<'_>) -> Result<ProgInfo, Error> {
        let (raw, xlated, map_ids) = sys::prog_info(fd)?;
        let end = raw.name.iter().position(|&b| b == 0).unwrap_or(16);
        let boot_to_real =
            clock_ns(libc::CLOCK_REALTIME).saturating_sub(clock_ns(libc::CLOCK_BOOTTIME));
        Ok(ProgInfo {
            id: raw.id,
            prog_type: raw.prog_type,
            name: String::from_utf8_lossy(&raw.name[..end]).into_owned(),
            tag: raw.tag.iter().map(|b| format!("{b:02x}")).collect(),
            gpl_compatible: raw.gpl_compatible & 1 != 0,
            loaded_at: (boot_to_real + raw.load_time) / 1_000_000_000,
            uid: raw.created_by_uid,
            bytes_xlated: raw.xlated_prog_len,
            jited: raw.jited_prog_len > 0,
            bytes_jited: raw.jited_prog_len,
            bytes_memlock: fdinfo_memlock(fd),
            map_ids,
            btf_id: raw.btf_id,
            xlated,
        })
    }

    /// The info of program `id`.
    pub fn from_id(id: u32) -> Result<ProgInfo, Error> {
        let fd = sys::prog_get_fd_by_id(id)?;
        ProgInfo::from_fd(fd.as_fd())
    }

    /// bpftool's name of the program's type.
    pub fn type_name(&self) -> String {
        prog_type_name(self.prog_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_match_bpftool() {
        assert_eq!(prog_type_name(5), "tracepoint");
        assert_eq!(prog_type_name(17), "raw_tracepoint");
        assert_eq!(prog_type_name(26), "tracing");
        assert_eq!(prog_type_name(999), "999");
    }
}
