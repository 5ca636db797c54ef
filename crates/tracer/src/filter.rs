//! The seccomp filter the traced command runs under: `SECCOMP_RET_TRACE` for the syscall numbers
//! some attached program wants (every syscall when a `raw_syscalls` program is attached),
//! `SECCOMP_RET_ALLOW` for every other, so an untraced syscall costs only this filter's few
//! instructions. Syscalls of another ABI than the native one (ia32 `int 0x80`, x32) are allowed
//! untraced: their numbers mean other calls.

/// `SECCOMP_RET_TRACE`: stop for the tracer (`PTRACE_EVENT_SECCOMP`).
const RET_TRACE: u32 = 0x7ff0_0000;
/// `SECCOMP_RET_ALLOW`.
const RET_ALLOW: u32 = 0x7fff_0000;
/// `BPF_LD | BPF_W | BPF_ABS`.
const LD_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K`.
const JGE: u16 = 0x35;
/// `BPF_RET | BPF_K`.
const RET: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;
/// `__X32_SYSCALL_BIT`.
const X32_BIT: u32 = 0x4000_0000;
/// The most numbers tested one by one; more, and every syscall stops (then the tracer skips the
/// unwanted ones).
const MAX_LISTED: usize = 200;

/// The native `AUDIT_ARCH_*` value.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: u32 = 0;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter program: `None` in `wanted` means every syscall.
pub(crate) fn build(wanted: Option<&[u32]>) -> Vec<libc::sock_filter> {
    let mut numbers: Vec<u32> = wanted.map(<[u32]>::to_vec).unwrap_or_default();
    numbers.sort_unstable();
    numbers.dedup();
    let all = wanted.is_none() || numbers.len() > MAX_LISTED;
    let mut prog = vec![
        insn(LD_ABS, 0, 0, ARCH_OFFSET),
        // Not the native ABI: allow (jump to the last instruction).
        insn(JEQ, 0, 0, AUDIT_ARCH),
    ];
    // Placeholder for "ret ALLOW" jump: filled below once the length is known.
    let mut to_allow = vec![prog.len() - 1];
    prog.push(insn(LD_ABS, 0, 0, NR_OFFSET));
    if cfg!(target_arch = "x86_64") {
        to_allow.push(prog.len());
        prog.push(insn(JGE, 0, 0, X32_BIT));
    }
    if all {
        prog.push(insn(RET, 0, 0, RET_TRACE));
    } else {
        let n = numbers.len();
        for (i, nr) in numbers.iter().enumerate() {
            // Jump to "ret TRACE", which follows the list and the "ret ALLOW" after it.
            let to_trace = u8::try_from(n - i).unwrap_or(u8::MAX);
            prog.push(insn(JEQ, to_trace, 0, *nr));
        }
        prog.push(insn(RET, 0, 0, RET_ALLOW));
        prog.push(insn(RET, 0, 0, RET_TRACE));
    }
    prog.push(insn(RET, 0, 0, RET_ALLOW));
    let last = prog.len() - 1;
    for at in to_allow {
        let jump = u8::try_from(last - at - 1).unwrap_or(u8::MAX);
        if prog[at].code == JEQ {
            prog[at].jf = jump;
        } else {
            prog[at].jt = jump;
        }
    }
    prog
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets the filter on one (arch, nr), as the kernel would.
    fn verdict(prog: &[libc::sock_filter], arch: u32, nr: u32) -> u32 {
        let mut pc = 0usize;
        let mut a = 0u32;
        loop {
            let i = prog[pc];
            match i.code {
                LD_ABS => a = if i.k == ARCH_OFFSET { arch } else { nr },
                JEQ => {
                    pc += usize::from(if a == i.k { i.jt } else { i.jf });
                }
                JGE => {
                    pc += usize::from(if a >= i.k { i.jt } else { i.jf });
                }
                RET => return i.k,
                _ => panic!("unexpected code {:#x}", i.code),
            }
            pc += 1;
        }
    }

    #[test]
    fn traces_only_the_wanted_numbers() {
        let prog = build(Some(&[257, 2, 110]));
        for nr in 0..460 {
            let expect = if [2, 257, 110].contains(&nr) {
                RET_TRACE
            } else {
                RET_ALLOW
            };
            assert_eq!(verdict(&prog, AUDIT_ARCH, nr), expect, "nr {nr}");
        }
        assert_eq!(verdict(&prog, 0x4000_0003, 257), RET_ALLOW);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(verdict(&prog, AUDIT_ARCH, X32_BIT | 257), RET_ALLOW);
        }
    }

    #[test]
    fn all_traces_every_native_number() {
        let prog = build(None);
        for nr in 0..460 {
            assert_eq!(verdict(&prog, AUDIT_ARCH, nr), RET_TRACE);
        }
        assert_eq!(verdict(&prog, 0x4000_0003, 1), RET_ALLOW);
        let many: Vec<u32> = (0..300).collect();
        assert_eq!(verdict(&build(Some(&many)), AUDIT_ARCH, 400), RET_TRACE);
    }
}
