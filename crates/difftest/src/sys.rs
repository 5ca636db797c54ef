//! The few OS calls the harness itself makes: pinning the calling thread to one CPU (the LRU
//! suites need the kernel's per-CPU lists to be those of one CPU) and reading the possible-CPU
//! count.
//!
//! Owns nothing else; map syscalls belong to the engines.

use std::io;

/// Pins the calling thread to `cpu` with `sched_setaffinity(0, …)`. Other threads are not
/// affected.
pub fn pin_current_thread_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cpu id beyond CPU_SETSIZE",
        ));
    }
    // SAFETY: `cpu_set_t` is a plain bit array for which all-zero is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` was checked against CPU_SETSIZE above, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid, initialised cpu_set_t and the size passed is its own size; pid 0
    // means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The CPU the calling thread runs on now, from `sched_getcpu`.
pub fn current_cpu() -> io::Result<usize> {
    // SAFETY: sched_getcpu takes no arguments and only reads the calling thread's state.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).map_err(|_| io::Error::last_os_error())
}

/// `num_possible_cpus()` as libbpf computes it, from `/sys/devices/system/cpu/possible`.
pub fn possible_cpus() -> io::Result<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
    bpfmaps_abi::cpus::count_from_cpu_list(&list)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable possible-CPU list"))
}

/// True when the process runs as root (effective uid 0), which the kernel suites need for
/// `CAP_BPF` and `BPF_F_ZERO_SEED`.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `getppid()`, the cheapest real system call: the benchmark times it as the floor of any
/// bpf(2) call on the same machine at the same moment.
pub fn getppid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}
