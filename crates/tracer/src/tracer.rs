//! [`Tracer`]: starts a command under a seccomp filter and ptrace, and runs the attached
//! user-engine programs at its syscall stops.
//!
//! The child, between fork and exec: waits until the parent has seized it, sets
//! `PR_SET_NO_NEW_PRIVS`, installs the filter of [`crate::filter`], execs. The parent
//! (`PTRACE_SEIZE` with `TRACESECCOMP | TRACECLONE | TRACEFORK | TRACEVFORK | TRACEEXEC |
//! TRACESYSGOOD`, no `EXITKILL`) follows every thread and descendant. At a seccomp stop it reads
//! the registers, runs the enter programs, and restarts with `PTRACE_SYSCALL` when an exit
//! program wants this syscall (the next stop is its syscall-exit-stop, where `ret` is read), else
//! with `PTRACE_CONT`. Signal-delivery-stops re-inject the signal; group-stops are left stopped
//! with `PTRACE_LISTEN`, so job control behaves as untraced.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use bpfmaps_abi::Errno;
use bpfmaps_runtime::Program;
use bpfmaps_vm::Trap;

use crate::layout::{self, BtfLayouts, EventLayout};
use crate::task::{ProcFiles, StartRegs, TracedTask};
use crate::{filter, TraceError, TracePoint};

/// How the traced command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl CommandStatus {
    /// The exit code a shell reports: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            CommandStatus::Exited(code) => code,
            CommandStatus::Signaled(sig) => 128 + sig,
        }
    }
}

/// A program that trapped and was detached.
#[derive(Clone, Debug)]
pub struct TrapReport {
    /// The program's name.
    pub program: String,
    /// Its section.
    pub section: String,
    /// The trap.
    pub trap: Trap,
}

/// Counters of one traced run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Seccomp stops (traced syscall entries).
    pub enter_stops: u64,
    /// Syscall-exit-stops.
    pub exit_stops: u64,
    /// Program invocations.
    pub runs: u64,
}

/// The outcome of [`Tracer::run`].
#[derive(Clone, Debug)]
pub struct TraceOutcome {
    /// How the command (the first process) ended.
    pub status: CommandStatus,
    /// The programs that trapped, in order.
    pub traps: Vec<TrapReport>,
    /// Counters.
    pub stats: TraceStats,
}

/// One attached program.
struct Attached {
    program: Program,
    point: TracePoint,
    layout: EventLayout,
    detached: bool,
}

/// A callback told about each program that traps, when it traps.
pub type TrapCallback = Box<dyn FnMut(&TrapReport) + Send>;
/// A callback given the command's process id once it is traced.
pub type StartCallback = Box<dyn FnOnce(u32) + Send>;

/// Runs a command with user-engine programs attached to its syscall tracepoints.
pub struct Tracer {
    programs: Vec<Attached>,
    events: Option<PathBuf>,
    btf: Option<Option<BtfLayouts>>,
    forward_signals: bool,
    on_trap: Option<TrapCallback>,
    on_start: Option<StartCallback>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("programs", &self.programs.len())
            .field("forward_signals", &self.forward_signals)
            .finish_non_exhaustive()
    }
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer::new()
    }
}

/// The process id signals are forwarded to while a run lasts (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

/// The signals forwarded to the command.
const FORWARDED: [libc::c_int; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { info.as_ref() }.map_or(0, |i| i.si_code);
    // Signals a process sent (kill, sigqueue, tgkill: si_code <= 0) are forwarded; the
    // terminal's (SI_KERNEL) reached the command's process group already.
    let pid = FORWARD_TO.load(Ordering::SeqCst);
    if code <= 0 && pid > 0 {
        // SAFETY: kill is async-signal-safe and has no memory preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

fn last_errno() -> Errno {
    Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn ptrace(
    op: &'static str,
    req: libc::c_uint,
    tid: i32,
    addr: usize,
    data: usize,
) -> Result<libc::c_long, TraceError> {
    // SAFETY: every request this crate makes passes either 0 or the address of a live local
    // buffer of the size the request writes (GETREGSET's iovec, GETEVENTMSG's u64).
    let rc = unsafe { libc::ptrace(req, tid, addr, data) };
    if rc == -1 {
        return Err(TraceError::Ptrace {
            op,
            errno: last_errno(),
        });
    }
    Ok(rc)
}

/// The registers of a stopped thread.
#[cfg(target_arch = "x86_64")]
fn regs(tid: i32) -> Option<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all zeroes is a valid value.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: (&mut regs as *mut libc::user_regs_struct).cast(),
        iov_len: std::mem::size_of::<libc::user_regs_struct>(),
    };
    ptrace(
        "PTRACE_GETREGSET",
        libc::PTRACE_GETREGSET,
        tid,
        1, // NT_PRSTATUS
        &mut iov as *mut libc::iovec as usize,
    )
    .ok()?;
    Some(regs)
}

/// The stop's syscall: number, arguments, return value, start registers of the stack.
#[derive(Clone, Copy, Debug, Default)]
struct Stopped {
    nr: u64,
    args: [u64; 6],
    ret: i64,
    start: StartRegs,
}

#[cfg(target_arch = "x86_64")]
fn stopped(tid: i32) -> Option<Stopped> {
    let r = regs(tid)?;
    Some(Stopped {
        nr: r.orig_rax,
        args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9],
        ret: r.rax as i64,
        start: StartRegs {
            ip: r.rip,
            sp: r.rsp,
            fp: r.rbp,
        },
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn stopped(_tid: i32) -> Option<Stopped> {
    None
}

/// One traced thread.
#[derive(Debug)]
struct Thread {
    tgid: u32,
    /// The syscall whose exit stop was asked for.
    pending_exit: Option<u64>,
    files: ProcFiles,
}

/// Where `name` would be executed from: itself when it has a `/`, else the first match on `PATH`.
fn resolve(name: &OsString) -> Option<PathBuf> {
    let path = Path::new(name);
    if name.as_bytes().contains(&b'/') {
        return Some(path.to_owned());
    }
    let search = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&search)
        .map(|dir| dir.join(path))
        .find(|candidate| {
            let c = CString::new(candidate.as_os_str().as_bytes()).ok();
            // SAFETY: `c` is a NUL-terminated path that lives across the call.
            c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0)
        })
}

/// What the child does between fork and exec; never returns. Only async-signal-safe calls.
fn child(
    go: i32,
    report: i32,
    prog: &libc::sock_fprog,
    path: &CString,
    argv: &[*const libc::c_char],
) -> ! {
    let fail = |step: i32| -> ! {
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let word = [step, errno];
        // SAFETY: writes 8 bytes from a live local array; _exit never returns.
        unsafe {
            libc::write(report, word.as_ptr().cast(), 8);
            libc::_exit(127)
        }
    };
    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into a live local.
        let n = unsafe { libc::read(go, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 {
            break;
        }
        if n == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // The parent gave up (seizing failed): do not run untraced.
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(127) }
        }
    }
    // SAFETY: plain libc calls on local values; the signal mask and SIGPIPE are reset as any
    // spawned process expects (Rust's runtime ignores SIGPIPE in the parent).
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            fail(1);
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            prog as *const libc::sock_fprog,
        ) != 0
        {
            fail(2);
        }
        libc::execv(path.as_ptr(), argv.as_ptr());
    }
    fail(3)
}

fn wait_status_of(status: i32) -> Option<CommandStatus> {
    if libc::WIFEXITED(status) {
        Some(CommandStatus::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(CommandStatus::Signaled(libc::WTERMSIG(status)))
    } else {
        None
    }
}

impl Tracer {
    /// A tracer with no program attached; signals are forwarded by default.
    pub fn new() -> Tracer {
        Tracer {
            programs: Vec::new(),
            events: layout::tracefs_events(),
            btf: None,
            forward_signals: true,
            on_trap: None,
            on_start: None,
        }
    }

    /// Attaches `program` to the syscall tracepoint its section names and returns it. A section
    /// that is no syscall tracepoint, or one naming a tracepoint this kernel lacks, is an error.
    pub fn attach(&mut self, program: Program) -> Result<TracePoint, TraceError> {
        let section = program.section().to_owned();
        let point = TracePoint::from_section(&section)?.ok_or_else(|| {
            TraceError::NotSyscallTracepoint {
                program: program.name().to_owned(),
                section: section.clone(),
            }
        })?;
        let layout = self.layout(&point)?;
        self.programs.push(Attached {
            program,
            point: point.clone(),
            layout,
            detached: false,
        });
        Ok(point)
    }

    /// The layout of `point`'s record: tracefs, else BTF, else built in.
    pub fn layout(&mut self, point: &TracePoint) -> Result<EventLayout, TraceError> {
        if let Some(events) = &self.events {
            let path = layout::format_path(events, point);
            let text = std::fs::read_to_string(&path).map_err(|_| {
                TraceError::NoSuchTracepoint(format!("{}/{}", point.category(), point.event_name()))
            })?;
            return EventLayout::from_format(&text).ok_or(TraceError::BadFormat(path));
        }
        let btf = self.btf.get_or_insert_with(BtfLayouts::from_kernel);
        if let Some(layout) = btf.as_ref().and_then(|b| b.layout(point)) {
            return Ok(layout);
        }
        Ok(EventLayout::built_in(point, 6))
    }

    /// Whether SIGINT, SIGTERM, SIGHUP and SIGQUIT sent to this process (by `kill`, not by the
    /// terminal, which signals the command's process group itself) are forwarded to the command
    /// while [`Tracer::run`] lasts. Default: true. The handlers are process-wide and restored
    /// when the run ends.
    pub fn forward_signals(&mut self, forward: bool) -> &mut Tracer {
        self.forward_signals = forward;
        self
    }

    /// Calls `callback` for each program that traps (once: it is then detached).
    pub fn on_trap(&mut self, callback: TrapCallback) -> &mut Tracer {
        self.on_trap = Some(callback);
        self
    }

    /// Calls `callback` with the command's process id once it is traced, before it execs.
    pub fn on_start(&mut self, callback: StartCallback) -> &mut Tracer {
        self.on_start = Some(callback);
        self
    }

    /// The syscall numbers the filter stops at; `None`: every syscall.
    fn wanted(&self) -> Option<Vec<u32>> {
        let mut numbers = Vec::new();
        for a in &self.programs {
            numbers.push(a.point.nr()?);
        }
        Some(numbers)
    }

    /// Runs `command` (program and arguments, `PATH` searched) traced until it and every
    /// descendant have exited, and returns how the command ended.
    ///
    /// This reaps every child of this process (it waits for any child, which is how ptrace
    /// reports the traced ones): call it only when this process has no other child to wait for.
    /// The calling thread is the tracer; programs run on it.
    pub fn run(&mut self, command: &[OsString]) -> Result<TraceOutcome, TraceError> {
        if !cfg!(target_arch = "x86_64") {
            return Err(TraceError::UnsupportedArch(std::env::consts::ARCH));
        }
        let name = command.first().ok_or(TraceError::EmptyCommand)?;
        let shown = name.to_string_lossy().into_owned();
        let path = resolve(name).ok_or_else(|| TraceError::Spawn {
            command: shown.clone(),
            step: "execve",
            errno: Errno::ENOENT,
        })?;
        let nul = |s: &[u8]| CString::new(s).map_err(|_| TraceError::NulInArgument);
        let path_c = nul(path.as_os_str().as_bytes())?;
        let args: Vec<CString> = command
            .iter()
            .map(|a| nul(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let wanted = self.wanted();
        let mut insns = filter::build(wanted.as_deref());
        let prog = libc::sock_fprog {
            len: u16::try_from(insns.len()).unwrap_or(u16::MAX),
            filter: insns.as_mut_ptr(),
        };
        let pipe = || -> Result<[i32; 2], TraceError> {
            let mut fds = [0i32; 2];
            // SAFETY: pipe2 writes two fds to the live array.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
                return Err(TraceError::Os {
                    op: "pipe2",
                    errno: last_errno(),
                });
            }
            Ok(fds)
        };
        let [go_r, go_w] = pipe()?;
        let [report_r, report_w] = pipe()?;
        // SAFETY: the child runs only async-signal-safe calls on memory prepared before the fork
        // (`child`), then execs or exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(TraceError::Os {
                op: "fork",
                errno: last_errno(),
            });
        }
        if pid == 0 {
            // SAFETY: closing our copies of the parent's pipe ends.
            unsafe {
                libc::close(go_w);
                libc::close(report_r);
            }
            child(go_r, report_w, &prog, &path_c, &argv);
        }
        // SAFETY: closing the child's pipe ends in the parent.
        unsafe {
            libc::close(go_r);
            libc::close(report_w);
        }
        let options = libc::PTRACE_O_TRACESECCOMP
            | libc::PTRACE_O_TRACECLONE
            | libc::PTRACE_O_TRACEFORK
            | libc::PTRACE_O_TRACEVFORK
            | libc::PTRACE_O_TRACEEXEC
            | libc::PTRACE_O_TRACESYSGOOD;
        if let Err(e) = ptrace("PTRACE_SEIZE", libc::PTRACE_SEIZE, pid, 0, options as usize) {
            // SAFETY: closing the go pipe makes the child _exit; then it is reaped.
            unsafe {
                libc::close(go_w);
                libc::close(report_r);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
        // SAFETY: writes one byte from a static to the pipe, then closes it.
        unsafe {
            libc::write(go_w, b"g".as_ptr().cast(), 1);
            libc::close(go_w);
        }
        let saved = if self.forward_signals {
            Some(install_forwarding(pid))
        } else {
            None
        };
        if let Some(start) = self.on_start.take() {
            start(pid as u32);
        }
        let result = self.trace(pid);
        if let Some(saved) = saved {
            restore_forwarding(&saved);
        }
        let mut word = [0i32; 2];
        // SAFETY: reads at most 8 bytes into a live local array; the write end is closed (exec
        // or exit), so this does not block.
        let n = unsafe { libc::read(report_r, word.as_mut_ptr().cast(), 8) };
        // SAFETY: closing our pipe end.
        unsafe { libc::close(report_r) };
        let outcome = result?;
        if n == 8 {
            let step = match word[0] {
                1 => "prctl(PR_SET_NO_NEW_PRIVS)",
                2 => "prctl(PR_SET_SECCOMP)",
                _ => "execve",
            };
            return Err(TraceError::Spawn {
                command: shown,
                step,
                errno: Errno(word[1]),
            });
        }
        Ok(outcome)
    }

    /// The wait loop, until no tracee is left.
    fn trace(&mut self, root: i32) -> Result<TraceOutcome, TraceError> {
        let mut threads: HashMap<i32, Thread> = HashMap::new();
        let mut enter: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut exit: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut raw_enter = Vec::new();
        let mut raw_exit = Vec::new();
        for (i, a) in self.programs.iter().enumerate() {
            match &a.point {
                TracePoint::SysEnter { nr, .. } => enter.entry(u64::from(*nr)).or_default().push(i),
                TracePoint::SysExit { nr, .. } => exit.entry(u64::from(*nr)).or_default().push(i),
                TracePoint::RawSysEnter => raw_enter.push(i),
                TracePoint::RawSysExit => raw_exit.push(i),
            }
        }
        let mut stats = TraceStats::default();
        let mut traps = Vec::new();
        let mut root_status = None;
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status to a live local.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
            if tid < 0 {
                match last_errno() {
                    Errno::EINTR => continue,
                    Errno(libc::ECHILD) => break,
                    errno => {
                        return Err(TraceError::Os {
                            op: "waitpid",
                            errno,
                        })
                    }
                }
            }
            if let Some(ended) = wait_status_of(status) {
                threads.remove(&tid);
                if tid == root {
                    root_status = Some(ended);
                }
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xff;
            let thread = threads.entry(tid).or_insert_with(|| Thread {
                tgid: crate::task::tgid_of(tid as u32).unwrap_or(tid as u32),
                pending_exit: None,
                files: ProcFiles::default(),
            });
            let mut inject = 0;
            match (sig, event) {
                (libc::SIGTRAP, libc::PTRACE_EVENT_SECCOMP) => {
                    stats.enter_stops += 1;
                    if let Some(s) = stopped(tid) {
                        let lists = [
                            enter.get(&s.nr).map(Vec::as_slice).unwrap_or(&[]),
                            &raw_enter,
                        ];
                        for list in lists {
                            self.fire(list, thread, tid, &s, &mut stats, &mut traps);
                        }
                        if exit.contains_key(&s.nr) || !raw_exit.is_empty() {
                            thread.pending_exit = Some(s.nr);
                        }
                    }
                }
                (s, 0) if s == libc::SIGTRAP | 0x80 => {
                    stats.exit_stops += 1;
                    if let Some(nr) = thread.pending_exit.take() {
                        if let Some(mut s) = stopped(tid) {
                            s.nr = nr;
                            let lists =
                                [exit.get(&nr).map(Vec::as_slice).unwrap_or(&[]), &raw_exit];
                            for list in lists {
                                self.fire(list, thread, tid, &s, &mut stats, &mut traps);
                            }
                        }
                    }
                }
                (libc::SIGTRAP, libc::PTRACE_EVENT_EXEC) => {
                    // A non-leader thread that execs takes the leader's id: move its state.
                    let mut former = 0u64;
                    let _ = ptrace(
                        "PTRACE_GETEVENTMSG",
                        libc::PTRACE_GETEVENTMSG,
                        tid,
                        0,
                        &mut former as *mut u64 as usize,
                    );
                    let former = former as i32;
                    let pending = if former != tid && former > 0 {
                        threads.remove(&former).and_then(|t| t.pending_exit)
                    } else {
                        threads.get(&tid).and_then(|t| t.pending_exit)
                    };
                    let thread = threads.entry(tid).or_insert_with(|| Thread {
                        tgid: tid as u32,
                        pending_exit: None,
                        files: ProcFiles::default(),
                    });
                    thread.pending_exit = pending;
                    thread.tgid = tid as u32;
                    thread.files = ProcFiles::default();
                }
                (
                    libc::SIGTRAP,
                    libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE,
                ) => {}
                (
                    libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU,
                    libc::PTRACE_EVENT_STOP,
                ) => {
                    // Group-stop: stay stopped until SIGCONT, as untraced.
                    let _ = ptrace("PTRACE_LISTEN", libc::PTRACE_LISTEN, tid, 0, 0);
                    continue;
                }
                (_, libc::PTRACE_EVENT_STOP) => {}
                (sig, 0) => inject = sig,
                _ => {}
            }
            let pending = threads.get(&tid).is_some_and(|t| t.pending_exit.is_some());
            let (req, op) = if pending {
                (libc::PTRACE_SYSCALL, "PTRACE_SYSCALL")
            } else {
                (libc::PTRACE_CONT, "PTRACE_CONT")
            };
            // ESRCH: the thread was killed meanwhile; its exit is reported next.
            let _ = ptrace(op, req, tid, 0, inject as usize);
        }
        Ok(TraceOutcome {
            status: root_status.unwrap_or(CommandStatus::Exited(0)),
            traps,
            stats,
        })
    }

    /// Runs the programs of `list` on one stop.
    fn fire(
        &mut self,
        list: &[usize],
        thread: &Thread,
        tid: i32,
        s: &Stopped,
        stats: &mut TraceStats,
        traps: &mut Vec<TrapReport>,
    ) {
        for &i in list {
            let a = &mut self.programs[i];
            if a.detached {
                continue;
            }
            let mut ctx = a.layout.record(tid as u32, s.nr, &s.args, s.ret);
            let task = TracedTask {
                tgid: thread.tgid,
                tid: tid as u32,
                regs: s.start,
                files: &thread.files,
            };
            stats.runs += 1;
            if let Err(trap) = a.program.run_for_task(&task, &mut ctx) {
                a.detached = true;
                let report = TrapReport {
                    program: a.program.name().to_owned(),
                    section: a.program.section().to_owned(),
                    trap,
                };
                if let Some(callback) = self.on_trap.as_mut() {
                    callback(&report);
                }
                traps.push(report);
            }
        }
    }
}

/// The previous actions of the forwarded signals.
struct SavedActions(Vec<(libc::c_int, libc::sigaction)>);

fn install_forwarding(pid: i32) -> SavedActions {
    FORWARD_TO.store(pid, Ordering::SeqCst);
    let mut saved = Vec::new();
    for sig in FORWARDED {
        // SAFETY: sigaction reads `action` and writes `old`, both live locals; the handler only
        // calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &action, &mut old) == 0 {
                saved.push((sig, old));
            }
        }
    }
    SavedActions(saved)
}

fn restore_forwarding(saved: &SavedActions) {
    for (sig, old) in &saved.0 {
        // SAFETY: restores an action sigaction returned earlier.
        unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
    }
    FORWARD_TO.store(0, Ordering::SeqCst);
}
