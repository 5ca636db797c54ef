//! [`Task`]: "the current task" of an invocation that runs for a task other than the calling
//! thread, as a tracer's does ([`crate::Program::run_for_task`]). The helpers that report the
//! current task (`get_current_pid_tgid`, `_uid_gid`, `_comm`, `get_smp_processor_id`), read user
//! memory (`probe_read_user(_str)`) or walk the user stack (`get_stackid` with
//! `BPF_F_USER_STACK`) ask the task instead of looking at the calling thread.
//!
//! The runtime only defines the questions; the tracer, which holds the traced task, answers them
//! (the runtime stays free of file descriptors and of ptrace). Without a task, every helper keeps
//! its behaviour of [`crate::Program::run`].

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
