//! `bpfmaps trace`: a line `bpf_trace_printk` writes on the user engine (through
//! `bpfmaps test-run --engine user`) is printed by a concurrently running `bpfmaps trace --for 3`,
//! exactly, and consumed; `bpfmaps trace --kernel` reads the kernel's pipe. Kernel tests need root
//! and BPF; set BPFMAPS_SKIP_KERNEL=1 to skip them on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bpfmaps");

/// The runtime's helper test object: its `printk` program prints `bpfmaps <args[0]> hello`.
fn helpers_object() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/data/helpers.bpf.o")
}

/// A private pin root for one test, removed at the end.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new(tag: &str) -> PinRoot {
        let root = std::env::temp_dir().join(format!("bpfmaps-trace-{tag}-{}", std::process::id()));
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

/// Checks `line` is `bpfmaps-<tid> [<cpu, 3 digits>] <s>.<6 digits us>: bpf_trace_printk: <message>`
/// and returns the tid.
fn parse_line(line: &str, message: &str) -> u32 {
    let (head, tail) = line.split_once(" [").expect("comm-tid [cpu]");
    let tid = head.strip_prefix("bpfmaps-").expect("comm is bpfmaps");
    let (cpu, tail) = tail.split_once("] ").expect("[cpu]");
    assert_eq!(cpu.len(), 3, "{line}");
    let cpu: u32 = cpu.parse().expect("cpu number");
    assert!(cpu < 4096, "{line}");
    let (stamp, text) = tail.split_once(": ").expect("timestamp");
    let (seconds, micros) = stamp.split_once('.').expect("s.us");
    assert!(seconds.parse::<u64>().is_ok(), "{line}");
    assert_eq!(micros.len(), 6, "{line}");
    assert!(micros.parse::<u32>().is_ok(), "{line}");
    assert_eq!(text, format!("bpf_trace_printk: {message}"), "{line}");
    tid.parse().expect("tid")
}

#[test]
fn trace_prints_the_user_engines_printk_line_as_it_is_written() {
    let root = PinRoot::new("user");
    let started = Instant::now();
    let trace = Command::new(BIN)
        .args(["trace", "--for", "3"])
        .env("BPFMAPS_PIN_ROOT", &root.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bpfmaps trace");
    // Let the reader start, so the line is written while it reads.
    std::thread::sleep(Duration::from_millis(300));
    let mut ctx = [0u8; 64];
    ctx[16] = 42;
    let ctx_hex: String = ctx.iter().map(|b| format!("{b:02x}")).collect();
    let object = helpers_object();
    let test_run = Command::new(BIN)
        .args([
            "test-run",
            object.to_str().expect("utf-8 path"),
            "--prog",
            "printk",
        ])
        .args(["--ctx", &ctx_hex, "--engine", "user"])
        .env("BPFMAPS_PIN_ROOT", &root.0)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bpfmaps test-run");
    let test_run_pid = test_run.id();
    let out = test_run.wait_with_output().expect("test-run");
    assert!(
        out.status.success(),
        "test-run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let traced = trace.wait_with_output().expect("trace");
    let elapsed = started.elapsed();
    assert!(
        traced.status.success(),
        "trace failed: {}",
        String::from_utf8_lossy(&traced.stderr)
    );
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(20),
        "trace --for 3 ran {elapsed:?}"
    );
    let text = String::from_utf8(traced.stdout).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(parse_line(lines[0], "bpfmaps 42 hello"), test_run_pid);
    // Consumed: the pipe is empty now.
    let pipe = root.0.join("trace_pipe");
    assert_eq!(std::fs::read(&pipe).expect("trace pipe"), b"");
}

/// True when kernel tests should run; panics when they cannot and were not skipped on purpose.
fn kernel() -> bool {
    if std::env::var_os("BPFMAPS_SKIP_KERNEL").is_some_and(|v| v == "1") {
        eprintln!("BPFMAPS_SKIP_KERNEL=1: skipping a kernel test");
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel tests need root and BPF (set BPFMAPS_SKIP_KERNEL=1 to skip them)"
    );
    true
}

#[test]
fn trace_kernel_reads_the_kernels_pipe_for_the_given_time() {
    if !kernel() {
        return;
    }
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["trace", "--kernel", "--for", "0.5"])
        .output()
        .expect("bpfmaps trace --kernel");
    assert!(
        out.status.success(),
        "trace --kernel failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    assert!(Path::new("/sys/kernel/tracing/trace_pipe").exists());
}
