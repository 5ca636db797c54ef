//! CPU slots are exclusive across processes: two processes running a program that does a
//! non-atomic read-modify-write of a per-CPU value (`tests/data/percpu_bump.bpf.c`) lose no
//! increment, whether they ask for the same slot or any slot; a process killed while holding a
//! slot does not keep it. Child processes are this test binary re-executed with
//! `BPFMAPS_CPU_SLOTS_CHILD` set; every test uses a private pin root, removed at the end.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bpfmaps_abi::cpus::sum_percpu_u64;
use bpfmaps_abi::MapOps;
use bpfmaps_maps::{Access, Store, UserMap, PIN_ROOT_ENV};
use bpfmaps_runtime::cpu::CpuSlots;
use bpfmaps_runtime::{LoadOptions, UserObject};

const CHILD_ENV: &str = "BPFMAPS_CPU_SLOTS_CHILD";
/// Invocations per process.
const RUNS: u64 = 20_000;

fn object_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/percpu_bump.bpf.o")
}

/// A private pin root, removed on drop.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new(tag: &str) -> PinRoot {
        let root =
            std::env::temp_dir().join(format!("bpfmaps-cpuslots-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("pin root");
        PinRoot(root)
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process of this test binary running one task.
struct ChildTask {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ChildTask {
    fn spawn(root: &Path, task: &str) -> ChildTask {
        let mut child = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "child_process_entry_point",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, task)
            .env(PIN_ROOT_ENV, root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning a child");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        ChildTask {
            child,
            stdin,
            stdout,
        }
    }

    /// What follows `tag` on the next line the child prints with it.
    fn expect_line(&mut self, tag: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("reading the child");
            assert_ne!(n, 0, "the child exited before printing {tag:?}");
            // The test harness may print `test NAME ... ` before the child's first line.
            if let Some(at) = line.find(tag) {
                return line[at + tag.len()..].trim().to_owned();
            }
        }
    }

    fn go(&mut self) {
        writeln!(self.stdin, "go").expect("starting the child");
        self.stdin.flush().expect("flush");
    }

    fn wait_success(mut self) {
        let status = self.child.wait().expect("waiting for the child");
        assert!(status.success(), "child failed: {status}");
    }
}

/// Not a test of its own: the children's entry point (does nothing unless `CHILD_ENV` is set).
///
/// Tasks: `bump:<cpu>` / `bump:any` (load, print READY, wait for a line on stdin, run `bump`
/// [`RUNS`] times on that slot or any slot, print `NS_PER_RUN <n>`), `nothing` (time `nothing`,
/// print `NS_PER_RUN <n>`), `hold:<cpu>` (take slot `cpu` of the pin root, print HELD, sleep),
/// `hold:all` (take every slot, print HELD, sleep).
#[test]
fn child_process_entry_point() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = bpfmaps_maps::pin_root();
    let parts: Vec<&str> = task.split(':').collect();
    match parts.as_slice() {
        ["bump", cpu] => {
            let object = UserObject::load_file(&object_path(), &LoadOptions::default())
                .expect("loading percpu_bump");
            let program = object.program("bump").expect("bump").clone();
            println!("READY");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).expect("stdin");
            let mut ctx = [0u8; 64];
            let started = Instant::now();
            for _ in 0..RUNS {
                let r0 = if *cpu == "any" {
                    program.run(&mut ctx)
                } else {
                    let cpu: u32 = cpu.parse().expect("cpu number");
                    program.run_on_cpu(cpu, &mut ctx).expect("slot exists")
                };
                assert_eq!(r0, Ok(0));
            }
            println!(
                "NS_PER_RUN {}",
                started.elapsed().as_nanos() / u128::from(RUNS)
            );
        }
        ["nothing"] => {
            let object = UserObject::load_file(&object_path(), &LoadOptions::default())
                .expect("loading percpu_bump");
            let program = object.program("nothing").expect("nothing").clone();
            let mut ctx = [0u8; 64];
            let runs = 200_000u32;
            let started = Instant::now();
            for _ in 0..runs {
                assert_eq!(program.run(&mut ctx), Ok(0));
            }
            println!(
                "NS_PER_RUN {}",
                started.elapsed().as_nanos() / u128::from(runs)
            );
        }
        ["hold", "all"] => {
            let slots = CpuSlots::for_root(&root).expect("slots");
            let _held: Vec<_> = (0..slots.count())
                .map(|cpu| slots.acquire_cpu(cpu).expect("slot exists"))
                .collect();
            println!("HELD");
            std::thread::sleep(Duration::from_secs(60));
        }
        ["hold", cpu] => {
            let slots = CpuSlots::for_root(&root).expect("slots");
            let _slot = slots
                .acquire_cpu(cpu.parse().expect("cpu number"))
                .expect("slot exists");
            println!("HELD");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown child task {other:?}"),
    }
}

/// The per-CPU counter's sum over every CPU, read through its pin.
fn pinned_sum(root: &Path) -> u64 {
    let store = Store::open(root).expect("store");
    let map = UserMap::open_pinned_in(&store, &root.join("bump_counts"), Access::ReadOnly)
        .expect("the pinned counter");
    let cpus = bpfmaps_maps::possible_cpus() as usize;
    let mut values = vec![0u8; cpus * 8];
    map.lookup(&0u32.to_ne_bytes(), &mut values, 0)
        .expect("lookup");
    sum_percpu_u64(&values, 8)
}

/// Two processes bump the counter concurrently with `task`; returns their ns per run.
fn two_processes_bump(tag: &str, task: &str) -> (PinRoot, Vec<String>) {
    processes_bump(tag, task, 2)
}

/// `processes` processes bump the counter concurrently with `task`; returns their ns per run.
fn processes_bump(tag: &str, task: &str, processes: usize) -> (PinRoot, Vec<String>) {
    let root = PinRoot::new(tag);
    // One after the other: the first creates and pins the counter, the others reuse the pin.
    let mut children = Vec::new();
    for _ in 0..processes {
        let mut child = ChildTask::spawn(&root.0, task);
        child.expect_line("READY");
        children.push(child);
    }
    for child in &mut children {
        child.go();
    }
    let mut timings = Vec::new();
    for mut child in children {
        timings.push(child.expect_line("NS_PER_RUN"));
        child.wait_success();
    }
    (root, timings)
}

#[test]
fn two_processes_on_the_same_slot_lose_no_increment() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let (root, timings) = two_processes_bump("same", "bump:0");
    eprintln!("ns per run of bump on slot 0, two processes: {timings:?}");
    assert_eq!(pinned_sum(&root.0), 2 * RUNS);
}

#[test]
fn two_processes_on_any_slot_lose_no_increment() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let (root, timings) = two_processes_bump("any", "bump:any");
    eprintln!("ns per run of bump on any slot, two processes: {timings:?}");
    assert_eq!(pinned_sum(&root.0), 2 * RUNS);
}

#[test]
fn more_processes_than_slots_lose_no_increment() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    // Every slot is often busy: runs also take the waiting path (sleep until a release).
    let processes = bpfmaps_maps::possible_cpus() as usize + 1;
    let (root, timings) = processes_bump("more", "bump:any", processes);
    eprintln!("ns per run of bump on any slot, {processes} processes: {timings:?}");
    assert_eq!(pinned_sum(&root.0), processes as u64 * RUNS);
}

#[test]
fn single_process_invocation_overhead() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let root = PinRoot::new("overhead");
    let mut child = ChildTask::spawn(&root.0, "nothing");
    let ns: u64 = child.expect_line("NS_PER_RUN").parse().expect("a number");
    child.wait_success();
    eprintln!("ns per run of an empty program, one process: {ns}");
    assert!(ns < 1_000_000, "one empty run took {ns} ns");
}

#[test]
fn a_slot_held_by_another_process_is_skipped_and_freed_when_it_dies() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let root = PinRoot::new("kill");
    let mut holder = ChildTask::spawn(&root.0, "hold:0");
    holder.expect_line("HELD");
    let slots = CpuSlots::for_root(&root.0).expect("slots");
    if slots.count() > 1 {
        // Any free slot: never the one the other process holds.
        for _ in 0..100 {
            assert_ne!(slots.acquire().cpu(), 0);
        }
    }
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let slot = slots.acquire_cpu(0).expect("slot 0");
        sender.send(slot.cpu()).expect("send");
    });
    assert!(
        receiver.recv_timeout(Duration::from_millis(300)).is_err(),
        "slot 0 was taken while another process held it"
    );
    holder.child.kill().expect("kill");
    holder.child.wait().expect("reap");
    assert_eq!(receiver.recv_timeout(Duration::from_secs(10)), Ok(0));
    assert_eq!(slots.recovered_slots(), 1);
    assert_eq!(slots.lock_failures(), 0);
}

#[test]
fn a_waiter_for_any_slot_gets_one_when_the_process_holding_all_dies() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let root = PinRoot::new("killall");
    let mut holder = ChildTask::spawn(&root.0, "hold:all");
    holder.expect_line("HELD");
    let slots = CpuSlots::for_root(&root.0).expect("slots");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let slot = slots.acquire();
        sender.send(slot.cpu()).expect("send");
    });
    assert!(
        receiver.recv_timeout(Duration::from_millis(300)).is_err(),
        "a slot was taken while another process held them all"
    );
    holder.child.kill().expect("kill");
    holder.child.wait().expect("reap");
    let cpu = receiver
        .recv_timeout(Duration::from_secs(10))
        .expect("a slot after the holder died");
    assert!(cpu < slots.count());
    // The waiter took over one dead owner's slot; the others are taken over when next used.
    assert_eq!(slots.recovered_slots(), 1);
    for cpu in 0..slots.count() {
        assert_eq!(slots.acquire_cpu(cpu).map(|s| s.cpu()), Some(cpu));
    }
    assert_eq!(slots.recovered_slots(), u64::from(slots.count()));
    assert_eq!(slots.lock_failures(), 0);
}
