//! `bpfmaps test-run` and `bpfmaps run --engine user`, driven as a user would: a seed program run
//! on the user engine with a hex context (JSON and plain output), the kernel engine's
//! `BPF_PROG_TEST_RUN` for a raw tracepoint (same maps as the user engine), the plain refusal for
//! tracepoints, and a user-engine `run` whose pinned maps outlive it. Kernel tests need root and
//! BPF; set BPFMAPS_SKIP_KERNEL=1 to skip them on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_bpfmaps");

fn object(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../bpf/obj/{name}.bpf.o"))
        .display()
        .to_string()
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

/// A private pin root for one test, removed at the end.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new(tag: &str) -> PinRoot {
        let root =
            std::env::temp_dir().join(format!("bpfmaps-testrun-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("pin root");
        PinRoot(root)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("BPFMAPS_PIN_ROOT", &self.0)
            .output()
            .expect("running bpfmaps")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bpfmaps {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("one JSON object")
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A sys_enter context (64 bytes) with args[0] = `arg0`, as hex.
fn enter_ctx_hex(arg0: u8) -> String {
    let mut bytes = [0u8; 64];
    bytes[16] = arg0;
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_json(bytes: &[u8]) -> Value {
    Value::Array(bytes.iter().map(|b| json!(format!("{b:#04x}"))).collect())
}

/// The `value` of the element whose key is `key` in a `map dump -j` array.
fn value_of(dump: &Value, key: &[u8]) -> Option<Value> {
    dump.as_array()?
        .iter()
        .find(|e| e["key"] == hex_json(key))
        .map(|e| e["value"].clone())
}

#[test]
fn test_run_on_the_user_engine_prints_r0_duration_and_maps_as_json() {
    let root = PinRoot::new("json");
    let ctx = enter_ctx_hex(13);
    let v = root.json(&[
        "test-run",
        &object("array_counter"),
        "--prog",
        "count_getpgid",
        "--ctx",
        &ctx,
        "--engine",
        "user",
        "--repeat",
        "3",
        "-j",
    ]);
    assert_eq!(v["retval"], json!(0));
    assert!(v["duration_ns"].as_u64().is_some_and(|d| d > 0));
    // 13 % 8 = slot 5, counted three times (--repeat 3); every other slot 0.
    let slots = &v["maps"]["slots"];
    assert_eq!(slots.as_array().map(Vec::len), Some(8));
    assert_eq!(
        value_of(slots, &5u32.to_ne_bytes()),
        Some(hex_json(&3u64.to_ne_bytes()))
    );
    assert_eq!(
        value_of(slots, &0u32.to_ne_bytes()),
        Some(hex_json(&0u64.to_ne_bytes()))
    );
}

#[test]
fn test_run_drains_ring_buffers_and_reads_the_context_from_a_file() {
    let root = PinRoot::new("ring");
    let ctx_file = root.0.join("ctx.bin");
    let mut ctx = vec![0u8; 64];
    ctx[16] = 9;
    std::fs::write(&ctx_file, &ctx).expect("ctx file");
    let at_file = format!("@{}", ctx_file.display());
    let v = root.json(&[
        "test-run",
        &object("ringbuf_events"),
        "--prog",
        "ringbuf_pattern",
        "--ctx",
        &at_file,
        "-j",
    ]);
    let events = v["maps"]["events"]["events"]
        .as_array()
        .expect("records")
        .clone();
    assert_eq!(
        events.len(),
        2,
        "the submitted and the output record; the discarded one is skipped"
    );
    let kinds: Vec<Value> = events.iter().map(|e| e[0].clone()).collect();
    assert_eq!(kinds, vec![json!("0x01"), json!("0x03")]);
    assert_eq!(events[0][8], json!("0x09"), "args[0]");
}

#[test]
fn test_run_plain_output_names_r0_and_the_maps() {
    let root = PinRoot::new("plain");
    let out = root.run(&[
        "test-run",
        &object("legacy_map"),
        "--prog",
        "count_priority_min",
        "--ctx",
        &enter_ctx_hex(2),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("retval: 0\nduration: "), "{text}");
    assert!(
        text.contains(
            "legacy_counts:\nkey: 02 00 00 00  value: 01 00 00 00 00 00 00 00\nFound 1 element"
        ),
        "{text}"
    );
}

#[test]
fn a_trap_is_an_error_naming_the_instruction() {
    let root = PinRoot::new("trap");
    // A 16-byte context: the program's read of args[0] at offset 16 is past its end.
    let out = root.run(&[
        "test-run",
        &object("array_counter"),
        "--prog",
        "count_getpgid",
        "--ctx",
        "00000000000000000000000000000000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trapped: instruction"), "{err}");
    assert!(err.contains("past the end of its region"), "{err}");
}

#[test]
fn kernel_test_run_of_a_raw_tracepoint_matches_the_user_engine() {
    if !kernel() {
        return;
    }
    let root = PinRoot::new("rawtp");
    // struct bpf_raw_tracepoint_args: args[0] = regs, args[1] = syscall number 39.
    let mut ctx = [0u8; 16];
    ctx[8] = 39;
    let hex: String = ctx.iter().map(|b| format!("{b:02x}")).collect();
    let args = |engine: &'static str| {
        vec![
            "test-run".to_owned(),
            object("raw_tp_counter"),
            "--prog".into(),
            "count_syscalls".into(),
            "--ctx".into(),
            hex.clone(),
            "--engine".into(),
            engine.into(),
            "--repeat".into(),
            "2".into(),
            "-j".into(),
        ]
    };
    let kernel_args = args("kernel");
    let user_args = args("user");
    let k = root.json(&kernel_args.iter().map(String::as_str).collect::<Vec<_>>());
    let u = root.json(&user_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(k["retval"], u["retval"]);
    let expected = Some(hex_json(&2u64.to_ne_bytes()));
    assert_eq!(
        value_of(&k["maps"]["syscall_counts"], &39u32.to_ne_bytes()),
        expected
    );
    assert_eq!(
        value_of(&u["maps"]["syscall_counts"], &39u32.to_ne_bytes()),
        expected
    );
}

#[test]
fn kernel_test_run_of_a_tracepoint_says_the_kernel_cannot() {
    if !kernel() {
        return;
    }
    let root = PinRoot::new("tp");
    let out = root.run(&[
        "test-run",
        &object("array_counter"),
        "--prog",
        "count_getpgid",
        "--ctx",
        &enter_ctx_hex(1),
        "--engine",
        "kernel",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "the kernel cannot test-run tracepoint programs (BPF_PROG_TEST_RUN gives ENOTSUPP)"
        ),
        "{err}"
    );
}

#[test]
fn run_on_the_user_engine_keeps_pinned_maps_and_prints_them() {
    let root = PinRoot::new("run");
    let pins = root.0.join("pins");
    let pins_arg = pins.display().to_string();
    let out = root.run(&[
        "run",
        &object("array_counter"),
        "--engine",
        "user",
        "--pin-maps",
        &pins_arg,
        "--for",
        "0.1",
        "-j",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["maps"]["slots"].as_array().map(Vec::len), Some(8));
    // The pin outlives the run: another bpfmaps process opens it.
    let slot = pins.join("slots");
    assert!(slot.exists());
    let dump = root.json(&["map", "dump", "pinned", &slot.display().to_string(), "-j"]);
    assert_eq!(dump.as_array().map(Vec::len), Some(8));
    // A command is run while the maps live, and its status is returned.
    let out = root.run(&[
        "run",
        &object("array_counter"),
        "--engine",
        "user",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("attaching programs to events on the user engine comes in a later issue"));
}

/// `--btf FILE`: CO-RE relocations of a `bpf/core/` object resolved against a BTF file given on
/// the command line (here the kernel's own, as a file); a missing file is an error naming it;
/// the kernel engine refuses the flag.
#[test]
fn test_run_relocates_against_a_btf_file() {
    let root = PinRoot::new("btf");
    let core = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bpf/obj/core/task_fields.bpf.o")
        .display()
        .to_string();
    // trace_event_raw_sys_enter: 8 bytes of trace_entry, id, args[6].
    let mut ctx = vec![0u8; 8];
    ctx.extend_from_slice(&257i64.to_le_bytes());
    for arg in [0u64, 0x1234, 0o644, 0, 0, 0] {
        ctx.extend_from_slice(&arg.to_le_bytes());
    }
    let hex: String = ctx.iter().map(|b| format!("{b:02x}")).collect();
    let args = [
        "test-run",
        &core,
        "--prog",
        "sys_enter_args",
        "--ctx",
        &hex,
        "-j",
    ];
    let with_btf: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--btf", "/sys/kernel/btf/vmlinux"])
        .collect();
    let v = root.json(&with_btf);
    let bss = &v["maps"]["task_fie.bss"];
    let value = bss[0]["value"].as_array().expect("one element");
    let bytes: Vec<u8> = value
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect();
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    assert_eq!(
        [word(72), word(80), word(88), word(96)],
        [257, 0x1234, 0o644, 1]
    );

    let missing: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--btf", "/nonexistent/vmlinux"])
        .collect();
    let out = root.run(&missing);
    assert!(!out.status.success());
    // With -j the error is a JSON object on stdout.
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        err.contains("reading the target BTF") && err.contains("/nonexistent/vmlinux"),
        "{err}"
    );

    let kernel: Vec<&str> = missing
        .iter()
        .copied()
        .chain(["--engine", "kernel"])
        .collect();
    let out = root.run(&kernel);
    assert!(!out.status.success());
    let err = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(err.contains("only the user engine"), "{err}");
}
