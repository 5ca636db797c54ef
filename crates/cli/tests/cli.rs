//! The `bpfmaps` binary driven as a user would: bpftool's map grammar on both engines (the same
//! commands must print the same elements), errors with errno names and non-zero exits, `run`,
//! `map events` and `top`. Kernel tests need root and BPF; set BPFMAPS_SKIP_KERNEL=1 to skip them
//! on purpose.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_bpfmaps");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
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
    bpfmaps::kernel::fs::ensure_bpffs().expect("mounting bpffs");
    true
}

struct Cli {
    pin_root: PathBuf,
}

impl Cli {
    fn new(tag: &str) -> Cli {
        let pin_root =
            std::env::temp_dir().join(format!("bpfmaps-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&pin_root);
        std::fs::create_dir_all(&pin_root).unwrap();
        Cli { pin_root }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("BPFMAPS_PIN_ROOT", &self.pin_root)
            .output()
            .expect("running bpfmaps")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "bpfmaps {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "bpfmaps {args:?} should fail with exit code 1"
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("JSON output")
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_root);
    }
}

/// The same sequence of map commands on a map pinned at `path`; returns everything observable.
fn map_session(cli: &Cli, path: &str) -> Vec<String> {
    let mut seen = Vec::new();
    cli.ok(&[
        "map", "create", path, "type", "hash", "key", "4", "value", "8", "entries", "4", "name",
        "cli_hash", "flags", "64",
    ]);
    let m = ["pinned", path];
    for k in 1..=3u8 {
        let k = k.to_string();
        cli.ok(&[
            "map",
            "update",
            m[0],
            m[1],
            "key",
            &k,
            "0",
            "0",
            "0",
            "value",
            "hex",
            "0a00000000000000",
        ]);
    }
    seen.push(cli.ok(&["map", "lookup", m[0], m[1], "key", "0x02", "0", "0", "0"]));
    seen.push(cli.fails(&[
        "map", "update", m[0], m[1], "key", "1", "0", "0", "0", "value", "1", "0", "0", "0", "0",
        "0", "0", "0", "noexist",
    ]));
    seen.push(cli.fails(&["map", "lookup", m[0], m[1], "key", "9", "0", "0", "0"]));
    seen.push(cli.fails(&["map", "lookup", m[0], m[1], "key", "9", "0"]));
    seen.push(cli.fails(&[
        "map", "update", m[0], m[1], "key", "4", "0", "0", "0", "value", "1", "0", "0", "0", "0",
        "0", "0", "0", "exist",
    ]));
    cli.ok(&[
        "map", "update", m[0], m[1], "key", "4", "0", "0", "0", "value", "1", "0", "0", "0", "0",
        "0", "0", "0",
    ]);
    // Full: a fifth key is E2BIG; replacing an existing key still works.
    seen.push(cli.fails(&[
        "map", "update", m[0], m[1], "key", "5", "0", "0", "0", "value", "1", "0", "0", "0", "0",
        "0", "0", "0",
    ]));
    cli.ok(&[
        "map", "update", m[0], m[1], "key", "4", "0", "0", "0", "value", "2", "0", "0", "0", "0",
        "0", "0", "0", "any",
    ]);
    seen.push(cli.ok(&["map", "getnext", m[0], m[1]]));
    seen.push(cli.ok(&["map", "getnext", m[0], m[1], "key", "3", "0", "0", "0"]));
    seen.push(cli.ok(&["map", "dump", m[0], m[1]]));
    seen.push(cli.ok(&["-j", "map", "dump", m[0], m[1]]));
    cli.ok(&["map", "delete", m[0], m[1], "key", "2", "0", "0", "0"]);
    seen.push(cli.fails(&["map", "delete", m[0], m[1], "key", "2", "0", "0", "0"]));
    cli.ok(&["map", "freeze", m[0], m[1]]);
    seen.push(cli.fails(&[
        "map", "update", m[0], m[1], "key", "1", "0", "0", "0", "value", "1", "0", "0", "0", "0",
        "0", "0", "0",
    ]));
    seen.push(cli.ok(&["map", "dump", m[0], m[1]]));
    seen
}

#[test]
fn map_commands_behave_the_same_on_both_engines() {
    if !kernel() {
        return;
    }
    let cli = Cli::new("both");
    let kpath = format!("/sys/fs/bpf/bpfmaps_cli_{}", std::process::id());
    let _ = std::fs::remove_file(&kpath);
    let kernel = map_session(&cli, &kpath);
    let info = cli.json(&["map", "show", "pinned", &kpath]);
    std::fs::remove_file(&kpath).unwrap();
    let upath = cli.pin_root.join("cli_hash");
    let user = map_session(&cli, upath.to_str().unwrap());
    let uinfo = cli.json(&["map", "show", "pinned", upath.to_str().unwrap()]);

    assert_eq!(kernel, user, "the two engines printed different results");
    assert_eq!(info["engine"], "kernel");
    assert_eq!(uinfo["engine"], "user");
    for i in [&info, &uinfo] {
        assert_eq!(i["type"], "hash");
        assert_eq!(i["bytes_key"], 4);
        assert_eq!(i["bytes_value"], 8);
        assert_eq!(i["max_entries"], 4);
        assert_eq!(i["flags"], 64);
        assert_eq!(i["name"], "cli_hash");
        assert_eq!(i["frozen"], 1);
    }
    // The exact outcomes (the same on both engines, checked above).
    assert_eq!(
        kernel[0],
        "key: 02 00 00 00  value: 0a 00 00 00 00 00 00 00\n"
    );
    assert_eq!(kernel[1], "Error: update failed: EEXIST (File exists)\n");
    assert_eq!(
        kernel[2],
        "Error: lookup failed: ENOENT (No such file or directory)\n"
    );
    assert_eq!(
        kernel[3],
        "Error: lookup failed: wrong key size: the map's keys are 4 bytes, got 2\n"
    );
    assert_eq!(
        kernel[4],
        "Error: update failed: ENOENT (No such file or directory)\n"
    );
    assert_eq!(
        kernel[5],
        "Error: update failed: E2BIG (Argument list too long)\n"
    );
    assert!(
        kernel[6].starts_with("key: None\nnext key:\n"),
        "{}",
        kernel[6]
    );
    let dump: Value = serde_json::from_str(&kernel[9]).unwrap();
    assert_eq!(dump.as_array().unwrap().len(), 4);
    assert!(dump.as_array().unwrap().contains(&json!({
        "key": ["0x04", "0x00", "0x00", "0x00"],
        "value": ["0x02", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00"]
    })));
    assert!(kernel[8].ends_with("Found 4 elements\n"), "{}", kernel[8]);
    assert_eq!(
        kernel[10],
        "Error: delete failed: ENOENT (No such file or directory)\n"
    );
    assert_eq!(
        kernel[11],
        "Error: update failed: EPERM (Operation not permitted)\n"
    );
    assert!(kernel[12].ends_with("Found 3 elements\n"), "{}", kernel[12]);
}

#[test]
fn percpu_update_writes_every_cpu_like_bpftool() {
    if !kernel() {
        return;
    }
    let cli = Cli::new("percpu");
    let kpath = format!("/sys/fs/bpf/bpfmaps_cli_pc_{}", std::process::id());
    let upath = cli.pin_root.join("pc");
    let mut dumps = Vec::new();
    for path in [kpath.as_str(), upath.to_str().unwrap()] {
        let _ = std::fs::remove_file(path);
        cli.ok(&[
            "map",
            "create",
            path,
            "type",
            "percpu_array",
            "key",
            "4",
            "value",
            "4",
            "entries",
            "2",
            "name",
            "pc",
        ]);
        cli.ok(&[
            "map", "update", "pinned", path, "key", "1", "0", "0", "0", "value", "7", "0", "0", "0",
        ]);
        dumps.push(cli.json(&["map", "dump", "pinned", path]));
    }
    std::fs::remove_file(&kpath).unwrap();
    assert_eq!(dumps[0], dumps[1]);
    let cpus = bpfmaps::kernel::map::possible_cpus().unwrap() as usize;
    let elem = &dumps[0][1];
    assert_eq!(elem["key"], json!(["0x01", "0x00", "0x00", "0x00"]));
    let values = elem["values"].as_array().unwrap();
    assert_eq!(values.len(), cpus);
    for (cpu, v) in values.iter().enumerate() {
        assert_eq!(
            v,
            &json!({"cpu": cpu, "value": ["0x07", "0x00", "0x00", "0x00"]})
        );
    }
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let cli = Cli::new("bad");
    let path = cli.pin_root.join("x");
    let p = path.to_str().unwrap();
    let err = cli.fails(&[
        "map", "create", p, "type", "nosuch", "key", "4", "value", "4", "entries", "1",
    ]);
    assert!(err.contains("unknown map type `nosuch`"), "{err}");
    let err = cli.fails(&["map", "create", p, "type", "hash", "key", "4", "value", "4"]);
    assert!(err.contains("missing `entries N`"), "{err}");
    let err = cli.fails(&[
        "map", "create", p, "type", "array", "key", "8", "value", "4", "entries", "1",
    ]);
    assert!(err.contains("EINVAL"), "{err}");
    let err = cli.fails(&["map", "lookup", "pinned", "/nonexistent/map", "key", "1"]);
    assert!(
        err.contains("cannot open map pinned /nonexistent/map"),
        "{err}"
    );
    let err = cli.fails(&["map", "lookup", "fd", "3"]);
    assert!(err.contains("expected `id`, `pinned` or `name`"), "{err}");
    let err = cli.fails(&["run", "/nonexistent.bpf.o"]);
    assert!(err.contains("cannot load /nonexistent.bpf.o"), "{err}");
    let garbage = cli.pin_root.join("garbage.o");
    std::fs::write(&garbage, b"this is not an ELF file").unwrap();
    let err = cli.fails(&["run", garbage.to_str().unwrap(), "--for", "0"]);
    assert!(err.contains("cannot load"), "{err}");
}

#[test]
fn run_prints_every_map_and_exits_with_the_commands_status() {
    if !kernel() {
        return;
    }
    let cli = Cli::new("run");
    let obj = repo().join("bpf/obj/ringbuf_events.bpf.o");
    let obj = obj.to_str().unwrap();
    let script = "import os\nfor _ in range(3): os.sched_getscheduler(0)";
    let v = cli.json(&["run", obj, "--", "python3", "-c", script]);
    // Each call submits one record, discards one and outputs one: 2 delivered per call.
    assert_eq!(v["maps"]["events"], json!({"events": 6, "lost": 0}));
    assert_eq!(v["status"], 0);
    assert_eq!(
        v["maps"]["ringbuf_drops"],
        json!([{"key": ["0x00", "0x00", "0x00", "0x00"], "value": ["0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00", "0x00"],
            "formatted": {"key": 0, "value": 0}}])
    );
    let out = cli.run(&["run", obj, "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
}

/// Starts `bpfmaps map events` on `pinned` and waits until its reader is in place.
fn start_events(cli: &Cli, pinned: &Path, count: &str) -> std::process::Child {
    let mut child = Command::new(BIN)
        .args([
            "-j",
            "map",
            "events",
            "pinned",
            pinned.to_str().unwrap(),
            "--count",
            count,
            "--for",
            "20",
        ])
        .env("BPFMAPS_PIN_ROOT", &cli.pin_root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("reading "), "unexpected: {line}");
    child
}

fn python(script: &str) {
    let st = Command::new("python3")
        .args(["-c", script])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn events_streams_a_ring_buffer_and_a_perf_array() {
    use bpfmaps::kernel::object::{KernelObject, LoadConfig};
    if !kernel() {
        return;
    }
    let cli = Cli::new("events");
    let dir = PathBuf::from(format!("/sys/fs/bpf/bpfmaps_cli_ev_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let mut rb = KernelObject::load_file(
        &repo().join("bpf/obj/ringbuf_events.bpf.o"),
        &LoadConfig::default(),
    )
    .unwrap();
    rb.pin_maps(&dir).unwrap();
    let _links = rb.attach_all().unwrap();
    let reader = start_events(&cli, &dir.join("events"), "4");
    python("import os\nos.sched_getscheduler(0)\nos.sched_getscheduler(0)");
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success());
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 4);
    // Records are {u32 kind, u32 tgid, u64 arg}: kinds 1 (submitted) and 3 (output) alternate.
    let kinds: Vec<&Value> = records.iter().map(|r| &r["data"][0]).collect();
    assert_eq!(kinds, vec!["0x01", "0x03", "0x01", "0x03"]);

    let mut pf = KernelObject::load_file(
        &repo().join("bpf/obj/perf_events.bpf.o"),
        &LoadConfig::default(),
    )
    .unwrap();
    let perf_dir = dir.join("perf");
    std::fs::create_dir_all(&perf_dir).unwrap();
    pf.pin_maps(&perf_dir).unwrap();
    let _plinks = pf.attach_all().unwrap();
    let reader = start_events(&cli, &perf_dir.join("perf_out"), "3");
    python("import os\nfor _ in range(3): os.getpriority(os.PRIO_PROCESS, 0)");
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success());
    let samples: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(samples.len(), 3);
    for s in &samples {
        // 16 bytes of sample, reported with the kernel's padding: raw_size 20.
        assert_eq!(s["data"].as_array().unwrap().len(), 20, "{s}");
        assert!(s["cpu"].is_u64());
    }
    drop(_links);
    drop(_plinks);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn top_once_prints_one_table() {
    if !kernel() {
        return;
    }
    let cli = Cli::new("top");
    // This process opens a file every 5 ms for as long as `top` runs, so its table must have a
    // row for this pid with those opens.
    let done = std::sync::atomic::AtomicBool::new(false);
    let v = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                drop(std::fs::File::open("/proc/self/stat"));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        });
        let v = cli.json(&["top", "--once", "--interval", "0.5", "--limit", "0"]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        v
    });
    assert_eq!(v["interval_s"], 0.5);
    let procs = v["processes"].as_array().unwrap();
    for p in procs {
        assert!(p["pid"].as_u64().unwrap() > 0);
        assert!(p["opens"].as_u64().unwrap() >= p["delta"].as_u64().unwrap());
    }
    let me = u64::from(std::process::id());
    let mine = procs
        .iter()
        .find(|p| p["pid"].as_u64() == Some(me))
        .unwrap_or_else(|| panic!("no row for this test process {me}: {v}"));
    assert!(mine["delta"].as_u64().unwrap() >= 10, "{mine}");
}

fn bpftool_json(args: &[&str]) -> Value {
    let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bpftool is installed by scripts/setup.sh");
    let out = Command::new(bpftool).arg("-j").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn dumps_are_byte_for_byte_what_bpftool_prints() {
    if !kernel() {
        return;
    }
    let cli = Cli::new("bpftool");
    for (ty, value_len) in [
        ("hash", 8),
        ("array", 4),
        ("percpu_hash", 4),
        ("percpu_array", 12),
        ("lru_hash", 8),
    ] {
        let path = format!("/sys/fs/bpf/bpfmaps_cli_bt_{ty}_{}", std::process::id());
        let _ = std::fs::remove_file(&path);
        let vl = value_len.to_string();
        cli.ok(&[
            "map", "create", &path, "type", ty, "key", "4", "value", &vl, "entries", "8", "name",
            "bt",
        ]);
        for k in 0..5u8 {
            let key = k.to_string();
            let mut args = vec![
                "map", "update", "pinned", &path, "key", &key, "0", "0", "0", "value",
            ];
            let bytes: Vec<String> = (0..value_len)
                .map(|i| (i * 3 + k as usize).to_string())
                .collect();
            args.extend(bytes.iter().map(String::as_str));
            cli.ok(&args);
        }
        let ours = cli.json(&["map", "dump", "pinned", &path]);
        let theirs = bpftool_json(&["map", "dump", "pinned", &path]);
        assert_eq!(ours, theirs, "{ty}");
        let ours = cli.json(&["map", "lookup", "pinned", &path, "key", "3", "0", "0", "0"]);
        let theirs = bpftool_json(&["map", "lookup", "pinned", &path, "key", "3", "0", "0", "0"]);
        assert_eq!(ours, theirs, "{ty}");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn pinned_maps_of_a_run_outlive_it() {
    if !kernel() {
        return;
    }
    let cli = Cli::new("pinrun");
    let dir = format!("/sys/fs/bpf/bpfmaps_cli_run_{}", std::process::id());
    let _ = std::fs::remove_dir_all(&dir);
    let obj = repo().join("bpf/obj/ringbuf_events.bpf.o");
    cli.ok(&[
        "run",
        obj.to_str().unwrap(),
        "--pin-maps",
        &dir,
        "--",
        "python3",
        "-c",
        "import os; os.sched_getscheduler(0)",
    ]);
    // The run is over; its pinned ARRAY is still there, and readable by bpftool too.
    let ours = cli.json(&["map", "dump", "pinned", &format!("{dir}/ringbuf_drops")]);
    assert_eq!(ours.as_array().unwrap().len(), 1);
    let theirs = bpftool_json(&["map", "dump", "pinned", &format!("{dir}/ringbuf_drops")]);
    assert_eq!(ours, theirs);
    let info = cli.json(&["map", "show", "pinned", &format!("{dir}/events")]);
    assert_eq!(info["type"], "ringbuf");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// bpftool's plain (`-j` when `json`) output of `args`, exactly as printed, or `None` when it
/// failed.
fn bpftool_text(args: &[&str], json: bool) -> Option<String> {
    let bpftool = ["/usr/sbin/bpftool", "/usr/bin/bpftool"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("bpftool is installed by scripts/setup.sh");
    let mut cmd = Command::new(bpftool);
    if json {
        cmd.arg("-j");
    }
    let out = cmd.args(args).output().unwrap();
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

/// Writes two patterned elements into the map pinned at `path` with bpftool: printable ASCII
/// with NULs (so char arrays read as strings) and a byte ramp (negative numbers, enum values
/// without names, non-string arrays).
fn fill_with_bpftool(path: &str, show: &Value) {
    let key_size = show["bytes_key"].as_u64().unwrap() as usize;
    let value_size = show["bytes_value"].as_u64().unwrap() as usize;
    let max_entries = show["max_entries"].as_u64().unwrap() as u32;
    let is_array = show["type"].as_str().unwrap().contains("array");
    for element in 0..2usize {
        let key: Vec<u8> = if is_array {
            let index = if element == 0 { 0 } else { max_entries - 1 };
            index.to_le_bytes()[..key_size.min(4)].to_vec()
        } else {
            (0..key_size)
                .map(|i| ((i * 7 + 1 + element * 100) & 0xff) as u8)
                .collect()
        };
        let value: Vec<u8> = (0..value_size)
            .map(|i| match element {
                0 if i % 6 == 5 => 0,
                0 => b'A' + (i % 26) as u8,
                _ => ((i * 37 + 11) & 0xff) as u8,
            })
            .collect();
        let mut args = vec![
            "map".to_owned(),
            "update".into(),
            "pinned".into(),
            path.into(),
            "key".into(),
        ];
        args.extend(key.iter().map(u8::to_string));
        args.push("value".into());
        args.extend(value.iter().map(u8::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert!(
            bpftool_text(&args, false).is_some(),
            "bpftool {args:?} failed"
        );
    }
}

/// Compares `map dump` and `map lookup` of the map pinned at `path`, plain and JSON, between
/// bpftool and bpfmaps. Returns true when the map has BTF (bpftool printed `formatted`).
fn compare_map_with_bpftool(cli: &Cli, path: &str) -> bool {
    let show = bpftool_json(&["map", "show", "pinned", path]);
    let map_type = show["type"].as_str().unwrap().to_owned();
    if map_type == "ringbuf" || map_type == "perf_event_array" {
        return false;
    }
    if map_type != "stack_trace" && show["frozen"] != 1 {
        fill_with_bpftool(path, &show);
    }
    // Plain text: bpfmaps prints stack traces symbolized, bpftool as bytes.
    if map_type != "stack_trace" {
        let theirs = bpftool_text(&["map", "dump", "pinned", path], false).unwrap();
        let ours = cli.ok(&["map", "dump", "pinned", path]);
        assert_eq!(ours, theirs, "plain dump of {path}");
    }
    let theirs_text = bpftool_text(&["map", "dump", "pinned", path], true).unwrap();
    let ours = cli.json(&["map", "dump", "pinned", path]);
    let has_btf = theirs_text.contains("\"formatted\":");
    match serde_json::from_str::<Value>(&theirs_text) {
        Ok(theirs) => assert_eq!(ours, theirs, "JSON dump of {path}"),
        // bpftool writes `(unsupported-kind` unquoted for floats: not JSON. bpfmaps writes the
        // same text as a string; everything before it must match.
        Err(_) => assert!(
            theirs_text.contains(":(unsupported-kind}"),
            "bpftool's JSON for {path} does not parse: {theirs_text}"
        ),
    }
    let first_key: Option<Vec<String>> = ours.as_array().unwrap().first().map(|e| {
        e["key"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().to_owned())
            .collect()
    });
    if let Some(key) = first_key {
        let mut args = vec!["map", "lookup", "pinned", path, "key"];
        args.extend(key.iter().map(String::as_str));
        if map_type != "stack_trace" {
            assert_eq!(
                cli.ok(&args),
                bpftool_text(&args, false).unwrap(),
                "plain lookup in {path}"
            );
        }
        if let Ok(theirs) = serde_json::from_str::<Value>(&bpftool_text(&args, true).unwrap()) {
            let mut ours_args = vec!["-j"];
            ours_args.extend_from_slice(&args);
            let ours: Value = serde_json::from_str(&cli.ok(&ours_args)).unwrap();
            assert_eq!(ours, theirs, "JSON lookup in {path}");
        }
    }
    has_btf
}

/// Removes a directory (with its pins) when dropped, also when a test fails.
struct RemoveDirOnDrop(PathBuf);

impl Drop for RemoveDirOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn btf_formatted_dumps_equal_bpftools_for_every_map_of_every_object() {
    use bpfmaps::kernel::object::{KernelObject, LoadConfig};
    if !kernel() {
        return;
    }
    let cli = Cli::new("btf");
    let root = PathBuf::from(format!(
        "/sys/fs/bpf/bpfmaps_cli_btf_{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&root);
    let _cleanup = RemoveDirOnDrop(root.clone());
    let mut objects: Vec<PathBuf> = std::fs::read_dir(repo().join("bpf/obj"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "o"))
        .collect();
    objects.sort();
    assert!(objects.len() >= 12, "{objects:?}");
    // Every kind bpftool formats (bitfields, enums, strings, int128, floats, nested types).
    objects.push(repo().join("crates/cli/tests/data/btf_kinds.bpf.o"));
    let (mut compared, mut with_btf, mut global_data) = (0, 0, 0);
    for object_path in &objects {
        let stem = object_path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches(".bpf.o");
        let dir = root.join(stem);
        std::fs::create_dir_all(&dir).unwrap();
        // Loaded as `bpfmaps run OBJ --pin-maps DIR` loads it, with by-name pins kept in DIR too,
        // and the global-data maps (.rodata, .data, .bss) pinned as well.
        let config = LoadConfig::default().with_pin_dir(&dir);
        let object = KernelObject::load_file(object_path, &config).unwrap();
        object.pin_maps(&dir).unwrap();
        for map in object.maps().filter(|m| m.kind.is_global_data()) {
            // bpffs refuses names with a dot (as bpftool's pinmaps, use `_`).
            let pin = dir.join(map.def.name.replace('.', "_"));
            object.map(&map.def.name).unwrap().pin(&pin).unwrap();
            global_data += 1;
        }
        let mut pins: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        pins.sort();
        for pin in &pins {
            compared += 1;
            if compare_map_with_bpftool(&cli, pin.to_str().unwrap()) {
                with_btf += 1;
            }
        }
        drop(object);
    }
    // The kernel loader (aya) creates global-data maps without BTF; libbpf gives them their
    // DATASEC, which bpftool prints as `{".data": [{"var": value}, ...]}`: load the kinds
    // object with bpftool too (it has no by-name pins, so nothing lands outside `root`).
    let libbpf_dir = root.join("libbpf");
    std::fs::create_dir_all(&libbpf_dir).unwrap();
    let kinds = objects.last().unwrap().to_str().unwrap();
    let progs = libbpf_dir.join("progs");
    let maps = libbpf_dir.join("maps");
    let loaded = bpftool_text(
        &[
            "prog",
            "loadall",
            kinds,
            progs.to_str().unwrap(),
            "pinmaps",
            maps.to_str().unwrap(),
        ],
        false,
    );
    assert!(loaded.is_some(), "bpftool prog loadall {kinds} failed");
    let mut datasecs = 0;
    for pin in std::fs::read_dir(&maps).unwrap().map(|e| e.unwrap().path()) {
        let path = pin.to_str().unwrap();
        assert!(compare_map_with_bpftool(&cli, path), "{path} has no BTF");
        if bpftool_text(&["map", "dump", "pinned", path], true)
            .unwrap()
            .contains("\"formatted\":{\"value\":{\".")
        {
            datasecs += 1;
        }
    }
    assert_eq!(datasecs, 3, ".data, .bss and .rodata print as DATASECs");
    // Every committed object has a .rodata map; all but legacy_map's declared maps and the
    // stack, ring and perf maps carry BTF key and value types.
    assert!(
        global_data >= objects.len(),
        "{global_data} global-data maps"
    );
    assert!(with_btf >= 20, "only {with_btf} of {compared} maps had BTF");
}

#[test]
fn bench_prints_both_engines_side_by_side() {
    if !kernel() {
        return;
    }
    let cli = Cli::new("bench");
    let v = cli.json(&[
        "bench",
        "--type",
        "hash,array",
        "--entries",
        "100",
        "--ops",
        "2000",
        "--samples",
        "1",
    ]);
    let rows = v.as_array().unwrap();
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["map_type"].as_str().unwrap(), r["op"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("hash", "lookup"),
            ("hash", "update"),
            ("array", "lookup"),
            ("array", "update")
        ]
    );
    for r in rows {
        let (k, u, ratio) = (
            r["kernel_ns"].as_f64().unwrap(),
            r["user_ns"].as_f64().unwrap(),
            r["ratio"].as_f64().unwrap(),
        );
        assert!(k > 0.0 && u > 0.0, "{r}");
        assert!((ratio - k / u).abs() < 1e-6 * ratio.max(1.0), "{r}");
    }
    let err = cli.fails(&["bench", "--type", "nosuch"]);
    assert!(err.contains("unknown map type `nosuch`"), "{err}");
}
