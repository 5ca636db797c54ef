//! The tracer on real commands: the seed's process counter, opensnoop and the raw syscall counter
//! on the user engine, driven by the syscalls of `bpfmaps-trace-child`, with the kernel engine
//! (the same objects on the real tracepoints, the same child) as the oracle.
//!
//! Tests run one at a time (a tracer reaps every child of this process). The kernel parts need
//! root with BPF; without it they fail unless `BPFMAPS_SKIP_KERNEL=1` (then they are skipped).

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bpfmaps_abi::consumer::RingBufConsumer;
use bpfmaps_abi::{Errno, MapError, MapOps};
use bpfmaps_kernel::object::{KernelObject, LoadConfig};
use bpfmaps_kernel::ringbuf::KernelRingBuf;
use bpfmaps_maps::ringbuf::RingBuf;
use bpfmaps_obj::ObjectSpec;
use bpfmaps_runtime::{LoadOptions, UserObject};
use bpfmaps_tracer::layout::{self, BtfLayouts, EventLayout, LayoutSource};
use bpfmaps_tracer::{CommandStatus, TracePoint, Tracer};

static SERIAL: Mutex<()> = Mutex::new(());

const CHILD: &str = env!("CARGO_BIN_EXE_bpfmaps-trace-child");

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// True when the kernel side can run; panics when it cannot and skipping was not asked for.
fn kernel_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
        eprintln!("skipping the kernel side of {test}: needs root (BPFMAPS_SKIP_KERNEL=1)");
        return false;
    }
    panic!("{test}: the kernel side needs root with CAP_BPF (euid {euid}); set BPFMAPS_SKIP_KERNEL=1 to skip it");
}

fn object_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../bpf/obj/{name}.bpf.o"))
}

fn user_load(name: &str) -> UserObject {
    let spec = ObjectSpec::from_file(&object_path(name)).expect("object");
    UserObject::load(spec, &LoadOptions::default()).expect("user load")
}

fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bpfmaps-tracer-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn command(args: &[&str]) -> Vec<OsString> {
    std::iter::once(CHILD)
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect()
}

/// Runs the child traced by every program of `object`, with `TRACE_CHILD_PIDS=pids`.
fn trace(object: &UserObject, args: &[&str], pids: &Path) -> CommandStatus {
    std::env::set_var("TRACE_CHILD_PIDS", pids);
    let mut tracer = Tracer::new();
    for program in object.programs() {
        tracer.attach(program.clone()).expect("attach");
    }
    let outcome = tracer.run(&command(args)).expect("trace");
    assert!(outcome.traps.is_empty(), "traps: {:?}", outcome.traps);
    outcome.status
}

/// Runs the child untraced (for the kernel engine's runs).
fn untraced(args: &[&str], pids: &Path) -> CommandStatus {
    let status = std::process::Command::new(CHILD)
        .args(args)
        .env("TRACE_CHILD_PIDS", pids)
        .status()
        .expect("spawn");
    CommandStatus::Exited(status.code().expect("an exit code"))
}

fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().expect("a pid"))
        .collect()
}

fn u64_map(map: &dyn MapOps) -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let mut key: Option<[u8; 4]> = None;
    let mut next = [0u8; 4];
    loop {
        match map.get_next_key(key.as_ref().map(|k| &k[..]), &mut next) {
            Ok(()) => {}
            Err(MapError::Errno(Errno::ENOENT)) => break,
            Err(e) => panic!("get_next_key: {e}"),
        }
        let mut value = [0u8; 8];
        map.lookup(&next, &mut value, 0).expect("lookup");
        out.insert(u32::from_ne_bytes(next), u64::from_ne_bytes(value));
        key = Some(next);
    }
    out
}

/// The openat counts of `pids` in order (0 for a pid without an entry).
fn counts_of(map: &dyn MapOps, pids: &[u32]) -> Vec<u64> {
    let all = u64_map(map);
    pids.iter()
        .map(|p| all.get(p).copied().unwrap_or(0))
        .collect()
}

/// `spawn tree FILE N`: the root (spawn, no opens), its child (tree: N opens) and grandchild
/// (threads: N in main and 8 threads of N). Returns the counts of the three on the user engine.
fn user_tree_counts(dir: &Path, file: &Path, n: u32) -> Vec<u64> {
    let object = user_load("openat_counter");
    let pids = dir.join(format!("pids-user-{n}"));
    let n = n.to_string();
    let status = trace(
        &object,
        &["spawn", "tree", file.to_str().expect("utf-8"), &n],
        &pids,
    );
    assert_eq!(status, CommandStatus::Exited(0));
    let pids = read_pids(&pids);
    assert_eq!(pids.len(), 3, "three processes: {pids:?}");
    counts_of(&*object.map("counts").expect("counts").map, &pids)
}

#[test]
fn process_counter_counts_every_open_of_threads_and_grandchildren_like_the_kernel() {
    let _serial = serial();
    let dir = scratch("counter");
    let file = dir.join("known");
    std::fs::write(&file, b"x").expect("file");
    let n = 25u32;
    let base = user_tree_counts(&dir, &file, 0);
    let with = user_tree_counts(&dir, &file, n);
    let n64 = u64::from(n);
    let made: Vec<u64> = with.iter().zip(&base).map(|(w, b)| w - b).collect();
    assert_eq!(
        made,
        vec![0, n64, 9 * n64],
        "with {with:?}, baseline {base:?}"
    );
    if !kernel_available("process_counter_counts_every_open") {
        return;
    }
    let mut kernel =
        KernelObject::load_file(&object_path("openat_counter"), &LoadConfig::default())
            .expect("kernel load");
    let counts = kernel.map("counts").expect("counts");
    let links = kernel.attach_all().expect("attach");
    let pids = dir.join("pids-kernel");
    let status = untraced(
        &[
            "spawn",
            "tree",
            file.to_str().expect("utf-8"),
            &n.to_string(),
        ],
        &pids,
    );
    drop(links);
    assert_eq!(status, CommandStatus::Exited(0));
    let pids = read_pids(&pids);
    assert_eq!(
        counts_of(&counts, &pids),
        with,
        "the kernel counts the same, process for process"
    );
}

/// One opensnoop record.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OpenEvent {
    tgid: u32,
    tid: u32,
    uid: u32,
    ret: i64,
    comm: String,
    path: String,
}

fn parse_event(data: &[u8]) -> OpenEvent {
    let u32_at = |at: usize| u32::from_ne_bytes(data[at..at + 4].try_into().expect("4"));
    let i64_at = |at: usize| i64::from_ne_bytes(data[at..at + 8].try_into().expect("8"));
    let text = |bytes: &[u8]| {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    };
    OpenEvent {
        tgid: u32_at(0),
        tid: u32_at(4),
        uid: u32_at(8),
        ret: i64_at(16),
        comm: text(&data[32..48]),
        path: text(&data[48..48 + 256]),
    }
}

fn drain<M: bpfmaps_abi::RingBufMemory>(consumer: &mut RingBufConsumer<M>) -> Vec<OpenEvent> {
    let mut out = Vec::new();
    consumer
        .consume(|data: &[u8]| -> Result<(), ()> {
            out.push(parse_event(data));
            Ok(())
        })
        .expect("consume");
    out
}

/// The events of the child's own opens of `file` and `missing` (not the loader's).
fn of_interest(events: Vec<OpenEvent>, pid: u32, paths: &[&str]) -> Vec<(String, i64)> {
    events
        .into_iter()
        .filter(|e| e.tgid == pid && paths.contains(&e.path.as_str()))
        .map(|e| (e.path, if e.ret >= 0 { 0 } else { e.ret }))
        .collect()
}

#[test]
fn exit_programs_see_real_return_values_and_enter_programs_read_the_paths() {
    let _serial = serial();
    let dir = scratch("opensnoop");
    let file = dir.join("present");
    std::fs::write(&file, b"x").expect("file");
    let missing = dir.join("absent");
    let (file_s, missing_s) = (
        file.to_str().expect("utf-8"),
        missing.to_str().expect("utf-8"),
    );
    let run_user = |args: &[&str], pids: &Path| {
        let object = user_load("opensnoop");
        let status = trace(&object, args, pids);
        let ring = object.map("events").expect("events").map.clone();
        let view = ring
            .backend()
            .as_any()
            .downcast_ref::<RingBuf>()
            .expect("ring")
            .consumer()
            .expect("consumer");
        (status, drain(&mut RingBufConsumer::new(view)))
    };
    let pids_user = dir.join("pids-user");
    let (status, mut events) = run_user(&["opens", file_s, "3"], &pids_user);
    assert_eq!(status, CommandStatus::Exited(0));
    let (status, more) = run_user(&["missing", missing_s, "2"], &pids_user);
    assert_eq!(status, CommandStatus::Exited(0));
    events.extend(more);
    let pids = read_pids(&pids_user);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let mine: Vec<_> = events.iter().filter(|e| pids.contains(&e.tgid)).collect();
    assert!(mine
        .iter()
        .all(|e| e.uid == uid && e.tid == e.tgid && e.comm == "bpfmaps-trace-c"));
    let mut user = of_interest(events.clone(), pids[0], &[file_s]);
    user.extend(of_interest(events, pids[1], &[missing_s]));
    let enoent = -i64::from(libc::ENOENT);
    let expected = vec![
        (file_s.to_owned(), 0),
        (file_s.to_owned(), 0),
        (file_s.to_owned(), 0),
        (missing_s.to_owned(), enoent),
        (missing_s.to_owned(), enoent),
    ];
    assert_eq!(user, expected);
    if !kernel_available("exit_programs_see_real_return_values") {
        return;
    }
    let mut kernel = KernelObject::load_file(&object_path("opensnoop"), &LoadConfig::default())
        .expect("kernel load");
    let ring = kernel.map("events").expect("events");
    let mut consumer = KernelRingBuf::new(&ring).expect("ring").into_consumer();
    let links = kernel.attach_all().expect("attach");
    let pids_kernel = dir.join("pids-kernel");
    let mut events = Vec::new();
    for args in [["opens", file_s, "3"], ["missing", missing_s, "2"]] {
        assert_eq!(untraced(&args, &pids_kernel), CommandStatus::Exited(0));
        events.extend(drain(&mut consumer));
    }
    drop(links);
    let pids = read_pids(&pids_kernel);
    let mut kernel_seen = of_interest(events.clone(), pids[0], &[file_s]);
    kernel_seen.extend(of_interest(events, pids[1], &[missing_s]));
    assert_eq!(
        kernel_seen, expected,
        "the kernel sees the same paths and return values"
    );
}

#[test]
fn eight_threads_lose_no_syscall_and_every_entry_has_its_exit() {
    let _serial = serial();
    let dir = scratch("threads");
    let file = dir.join("known");
    std::fs::write(&file, b"x").expect("file");
    let openat = u32::try_from(libc::SYS_openat).expect("nr");
    let counts = |n: &str| {
        let object = user_load("syscall_counts");
        let pids = dir.join(format!("pids-{n}"));
        let status = trace(
            &object,
            &["threads", file.to_str().expect("utf-8"), n, "8"],
            &pids,
        );
        assert_eq!(status, CommandStatus::Exited(0));
        let get = |name: &str| u64_map(&*object.map(name).expect("map").map);
        (get("enters"), get("exits"), get("errors"))
    };
    let (enters0, _, errors0) = counts("0");
    let (enters, exits, errors) = counts("200");
    assert_eq!(enters[&openat] - enters0[&openat], 9 * 200);
    // Every syscall that returns has its exit; exit, exit_group and a successful execve are the
    // ones that return never or (execve) as another program.
    for (nr, n) in &enters {
        let nr_i = i64::from(*nr);
        if [libc::SYS_exit, libc::SYS_exit_group].contains(&nr_i) {
            assert_eq!(exits.get(nr), None);
            continue;
        }
        assert_eq!(exits.get(nr), Some(n), "syscall {nr}: entries and exits");
    }
    // The loader's failed probes of library paths are the same in both runs: no open of the file
    // failed.
    assert_eq!(errors.get(&openat), errors0.get(&openat));
}

#[test]
fn exit_codes_and_signal_deaths_pass_through() {
    let _serial = serial();
    let object = user_load("syscall_counts");
    let dir = scratch("status");
    let pids = dir.join("pids");
    assert_eq!(
        trace(&object, &["exit", "7"], &pids),
        CommandStatus::Exited(7)
    );
    let killed = trace(&object, &["kill-self", "9"], &pids);
    assert_eq!(killed, CommandStatus::Signaled(libc::SIGKILL));
    assert_eq!(killed.shell_code(), 137);
    let segv = trace(&object, &["kill-self", &libc::SIGUSR1.to_string()], &pids);
    assert_eq!(segv, CommandStatus::Signaled(libc::SIGUSR1));
}

fn run_with_start(args: &[&str], on_start: impl FnOnce(u32) + Send + 'static) -> CommandStatus {
    let object = user_load("opensnoop");
    let mut tracer = Tracer::new();
    for program in object.programs() {
        tracer.attach(program.clone()).expect("attach");
    }
    tracer.on_start(Box::new(on_start));
    tracer.run(&command(args)).expect("trace").status
}

#[test]
fn sigterm_to_the_tracer_is_forwarded_and_sigkill_of_the_child_is_its_death() {
    let _serial = serial();
    let status = run_with_start(&["wait-term"], |_| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: signals this process; the tracer's handler forwards it to the command.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
        });
    });
    assert_eq!(status, CommandStatus::Signaled(libc::SIGTERM));
    let status = run_with_start(&["wait-term"], |pid| {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            // SAFETY: kills the traced command.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        });
    });
    assert_eq!(status, CommandStatus::Signaled(libc::SIGKILL));
}

#[test]
fn restartable_syscalls_restart() {
    let _serial = serial();
    let object = user_load("syscall_counts");
    let dir = scratch("restart");
    let pids = dir.join("pids");
    // Every syscall traced (raw_syscalls), a read interrupted by SA_RESTART signals: it restarts
    // and gets its data.
    assert_eq!(
        trace(&object, &["restart", "150"], &pids),
        CommandStatus::Exited(0)
    );
}

#[test]
fn a_static_binary_is_traced() {
    let _serial = serial();
    let dir = scratch("static");
    let source = dir.join("opens.c");
    std::fs::write(
        &source,
        "#include <fcntl.h>\n#include <unistd.h>\nint main(int c, char **v) {\n\
         for (int i = 0; i < 10; i++) close(open(v[1], O_RDONLY));\nreturn 0; }\n",
    )
    .expect("source");
    let binary = dir.join("opens");
    let built = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("gcc (needed for this test)");
    assert!(
        built.success(),
        "gcc -static failed (glibc's static libraries are needed)"
    );
    let object = user_load("openat_counter");
    let mut tracer = Tracer::new();
    tracer
        .attach(object.program("count_openat").expect("program").clone())
        .expect("attach");
    let pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = pid.clone();
    tracer.on_start(Box::new(move |p| {
        seen.store(p, std::sync::atomic::Ordering::SeqCst)
    }));
    let outcome = tracer
        .run(&[binary.into_os_string(), source.into_os_string()])
        .expect("trace");
    assert_eq!(outcome.status, CommandStatus::Exited(0));
    let counts = u64_map(&*object.map("counts").expect("counts").map);
    // A static binary opens nothing at startup: exactly its 10 opens.
    assert_eq!(
        counts.get(&pid.load(std::sync::atomic::Ordering::SeqCst)),
        Some(&10)
    );
}

#[test]
fn a_missing_tracepoint_and_a_missing_command_are_clear_errors() {
    let _serial = serial();
    let err = TracePoint::from_section("tracepoint/syscalls/sys_enter_no_such_call").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no such syscall tracepoint: syscalls/sys_enter_no_such_call"
    );
    assert_eq!(
        TracePoint::from_section("tracepoint/sched/sched_switch").expect("ok"),
        None
    );
    assert_eq!(
        TracePoint::from_section("tp/syscalls/sys_exit_openat").expect("ok"),
        Some(TracePoint::SysExit {
            name: "openat".into(),
            nr: libc::SYS_openat as u32
        })
    );
    let object = user_load("openat_counter");
    let mut tracer = Tracer::new();
    tracer
        .attach(object.program("count_openat").expect("program").clone())
        .expect("attach");
    let err = tracer.run(&["/no/such/program".into()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot run `/no/such/program`: execve failed: ENOENT (No such file or directory)"
    );
}

#[test]
fn layouts_from_btf_and_the_built_in_table_match_tracefs() {
    let _serial = serial();
    let points = [
        TracePoint::from_section("tracepoint/syscalls/sys_enter_openat")
            .expect("ok")
            .expect("tp"),
        TracePoint::from_section("tracepoint/syscalls/sys_exit_openat")
            .expect("ok")
            .expect("tp"),
        TracePoint::RawSysEnter,
        TracePoint::RawSysExit,
    ];
    let btf = BtfLayouts::from_kernel().expect("kernel BTF");
    let Some(events) = layout::tracefs_events() else {
        if kernel_available("layouts_match_tracefs") {
            panic!("tracefs is not readable as root");
        }
        return;
    };
    for point in &points {
        let text = std::fs::read_to_string(layout::format_path(&events, point)).expect("format");
        let tracefs = EventLayout::from_format(&text).expect("parse");
        assert_eq!(tracefs.source, LayoutSource::Tracefs);
        let args = tracefs.args.map_or(6, |(_, n)| n);
        let built_in = EventLayout::built_in(point, args);
        let same = |l: &EventLayout| (l.nr, l.args.map(|(a, _)| a), l.ret);
        assert_eq!(same(&built_in), same(&tracefs), "{point:?} built in");
        assert_eq!(built_in.size, tracefs.size, "{point:?} size");
        let from_btf = btf.layout(point).expect("btf layout");
        assert_eq!(same(&from_btf), same(&tracefs), "{point:?} BTF");
    }
}
