//! `bpfmaps run OBJ`: load an object on the kernel engine, attach every program, run a command or
//! wait (Ctrl-C / `--for`), then print every map, as bpftrace does on exit. Ring buffers and perf
//! event arrays are drained while the run lasts and reported as event counts.
//!
//! With `--engine user` the object is loaded on the user engine instead: its maps live (and are
//! pinned with `--pin-maps`) while the run lasts; its programs are not attached to events (that
//! comes in a later issue) and run only when invoked.

use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bpfmaps::events::{Event, EventStream};
use bpfmaps::kernel::attach::{AttachOptions, PerfSampling, UprobeTarget};
use bpfmaps::program::Object;
use bpfmaps::{Engine, Map, MapType};
use clap::Args;
use serde_json::{json, Map as JsonMap, Value};

use crate::cmd_map::{dump_json, dump_plain};
use crate::output::{outln, Format};
use crate::signal;
use crate::words::EngineArg;

/// Arguments of `bpfmaps run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The BPF object file (ELF, as clang -target bpf writes it).
    object: PathBuf,
    /// Pin every declared map at DIR/NAME (DIR on bpffs for the kernel engine, on the pin root's
    /// file system for the user engine; created if missing).
    #[arg(long, value_name = "DIR")]
    pin_maps: Option<PathBuf>,
    /// Stop after this many seconds (without CMD: the default is to wait for Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS", value_parser = crate::words::parse_seconds)]
    duration: Option<Duration>,
    /// The engine to run on.
    #[arg(long, value_enum, default_value_t = EngineArg::Kernel)]
    engine: EngineArg,
    /// Set a global before load: NAME=VALUE, parsed by the variable's BTF type (bool as
    /// true/false/1/0, integers of any size and sign in decimal or 0x hex, char arrays as
    /// strings, any type as hex:BYTES).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::words::parse_global)]
    globals: Vec<(String, String)>,
    /// Resolve CO-RE relocations against this BTF file (raw BTF, or an ELF with .BTF) instead
    /// of /sys/kernel/btf/vmlinux, as libbpf's btf_custom_path (user engine only).
    #[arg(long = "btf", value_name = "FILE")]
    btf: Option<PathBuf>,
    /// Set a map's max_entries before load (libbpf's bpf_map__set_max_entries): MAP=N.
    #[arg(long = "max-entries", value_name = "MAP=N", value_parser = crate::words::parse_map_size)]
    max_entries: Vec<(String, u32)>,
    /// Set a map's value size before load (libbpf's bpf_map__set_value_size): MAP=N.
    #[arg(long = "value-size", value_name = "MAP=N", value_parser = crate::words::parse_map_size)]
    value_sizes: Vec<(String, u32)>,
    /// Load and attach only this program (repeatable); the others are switched off.
    #[arg(long, value_name = "PROG", conflicts_with = "skip")]
    only: Vec<String>,
    /// Do not load this program (repeatable; libbpf's autoload off).
    #[arg(long, value_name = "PROG")]
    skip: Vec<String>,
    /// Attach uprobe/uretprobe program PROG at PATH:SYMBOL[+OFFSET] (or PATH:OFFSET), for a
    /// section that names no target (kernel engine).
    #[arg(long = "uprobe", value_name = "PROG=PATH:SYMBOL", value_parser = crate::words::parse_uprobe)]
    uprobes: Vec<(String, UprobeTarget)>,
    /// How perf_event programs sample the CPU clock on every CPU: freq=N (per second) or
    /// period=N (ns); default freq=49 (kernel engine).
    #[arg(long = "perf-event", value_name = "freq=N|period=N", value_parser = PerfSampling::parse)]
    perf_event: Option<PerfSampling>,
    /// Report each program that cannot be attached here (a kprobe without CONFIG_KPROBES, a
    /// tracepoint this machine lacks) on stderr and run the others (kernel engine).
    #[arg(long)]
    skip_unattachable: bool,
    /// The command to run while the programs are attached; `run` exits with its status.
    #[arg(last = true)]
    command: Vec<String>,
}

struct StreamCounter {
    name: String,
    events: Arc<std::sync::atomic::AtomicU64>,
    lost: Arc<std::sync::atomic::AtomicU64>,
    thread: JoinHandle<Result<(), String>>,
}

/// Runs `bpfmaps run`.
pub fn run(args: RunArgs, format: Format) -> Result<ExitCode> {
    if args.engine == EngineArg::User {
        return run_user(args, format);
    }
    if let Some(btf) = &args.btf {
        bail!(
            "--btf {}: only the user engine relocates against a given BTF file (the kernel engine relocates against the running kernel)",
            btf.display()
        );
    }
    let opened = open_tuned(&args)?;
    let interrupted = signal::on_interrupt()?;
    let loaded = opened
        .load(Engine::Kernel)
        .with_context(|| format!("cannot load {}", args.object.display()))?;
    let object = loaded
        .as_kernel()
        .context("the object was not loaded on the kernel engine")?;
    if let Some(dir) = &args.pin_maps {
        bpfmaps::kernel::fs::ensure_bpffs()?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        object
            .pin_maps(dir)
            .with_context(|| format!("cannot pin maps in {}", dir.display()))?;
    }
    let options = AttachOptions {
        uprobes: args.uprobes.iter().cloned().collect(),
        perf_event: args.perf_event.unwrap_or_default(),
        skip_unattachable: args.skip_unattachable,
    };
    let report = object.attach_all_with(&options).context("cannot attach")?;
    for skipped in &report.skipped {
        eprintln!("skipped: {skipped}");
    }
    let links = report.attached;
    if !format.is_json() {
        eprintln!(
            "attached {} program(s) of {}",
            links.len(),
            args.object.display()
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut names: Vec<String> = object.maps().map(|m| m.def.name.clone()).collect();
    names.sort();
    let mut streams = Vec::new();
    for name in &names {
        let map = Map::kernel(object.map(name)?);
        if matches!(
            map.info().map_type,
            MapType::Ringbuf | MapType::PerfEventArray
        ) {
            streams.push(spawn_counter(name.clone(), &map, stop.clone())?);
        }
    }

    let status = wait_for_end(&args, &interrupted)?;
    // Let the last records of the streams arrive, then stop the readers and detach.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    drop(links);

    let mut json_maps = JsonMap::new();
    let counters: Vec<_> = streams
        .into_iter()
        .map(|s| {
            let r = s
                .thread
                .join()
                .unwrap_or_else(|_| Err("reader thread panicked".into()));
            (
                s.name,
                s.events.load(Ordering::SeqCst),
                s.lost.load(Ordering::SeqCst),
                r,
            )
        })
        .collect();
    for name in &names {
        let map = Map::kernel(object.map(name)?);
        if let Some((_, events, lost, result)) = counters.iter().find(|c| &c.0 == name) {
            if let Err(e) = result {
                bail!("reading events of {name}: {e}");
            }
            if format.is_json() {
                json_maps.insert(name.clone(), json!({"events": events, "lost": lost}));
            } else {
                outln!("{name}: {events} events, {lost} lost\n");
            }
            continue;
        }
        if map.info().map_type == MapType::StackTrace && !format.is_json() {
            outln!("{name}:");
            crate::cmd_map::dump_stacks_plain(&map)?;
            outln!();
            continue;
        }
        if format.is_json() {
            json_maps.insert(name.clone(), dump_json(&map)?);
        } else {
            outln!("{name}:");
            dump_plain(&map)?;
            outln!();
        }
    }
    finish(json_maps, status, format)
}

/// Opens the object and applies what a tool's user-space half would before load: globals,
/// map sizes, programs switched off.
fn open_tuned(args: &RunArgs) -> Result<Object> {
    let mut object = Object::open(&args.object)
        .with_context(|| format!("cannot load {}", args.object.display()))?;
    for (name, value) in &args.globals {
        object
            .set_global_text(name, value)
            .with_context(|| format!("--set {name}={value}"))?;
    }
    for (name, n) in &args.max_entries {
        object
            .set_max_entries(name, *n)
            .with_context(|| format!("--max-entries {name}={n}"))?;
    }
    for (name, n) in &args.value_sizes {
        object
            .set_value_size(name, *n)
            .with_context(|| format!("--value-size {name}={n}"))?;
    }
    for name in args.only.iter().chain(&args.skip) {
        if object.spec().program(name).is_none() {
            bail!(
                "{} has no program named {name:?} (it has: {})",
                args.object.display(),
                object
                    .spec()
                    .programs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let names: Vec<String> = object
        .spec()
        .programs
        .iter()
        .map(|p| p.name.clone())
        .collect();
    for name in names {
        let off =
            args.skip.contains(&name) || (!args.only.is_empty() && !args.only.contains(&name));
        if off {
            object.set_autoload(&name, false)?;
        }
    }
    Ok(object)
}

/// Prints the JSON result (maps and the command's status) and turns the status into the exit
/// code.
fn finish(
    json_maps: JsonMap<String, Value>,
    status: Option<ExitStatus>,
    format: Format,
) -> Result<ExitCode> {
    let code = status.as_ref().and_then(|s| s.code());
    if format.is_json() {
        let mut v = json!({"maps": Value::Object(json_maps)});
        if let Some(st) = &status {
            v["status"] = json!(st.code());
        }
        format.print_json(&v);
    }
    Ok(match (status, code) {
        (None, _) => ExitCode::SUCCESS,
        (Some(_), Some(c)) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        (Some(_), None) => ExitCode::FAILURE,
    })
}

/// Waits for the end of the run: CMD's exit (killed at the deadline or on Ctrl-C), or without
/// CMD the deadline (`--for`) or Ctrl-C. Returns CMD's status.
fn wait_for_end(args: &RunArgs, interrupted: &AtomicBool) -> Result<Option<ExitStatus>> {
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    if args.command.is_empty() {
        let until = deadline.unwrap_or(started + Duration::from_secs(u64::from(u32::MAX)));
        signal::sleep_until(until, interrupted);
        return Ok(None);
    }
    let mut child = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .spawn()
        .with_context(|| format!("cannot run `{}`", args.command[0]))?;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if interrupted.load(Ordering::SeqCst) || deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            return Ok(Some(child.wait()?));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `run --engine user`: loads the object on the user engine, keeps its maps alive (pinned in
/// `--pin-maps DIR`, any directory on the user engine's pin root file system) for other
/// processes while the run lasts, then prints every map like the kernel branch. Attaching the
/// programs to events is not part of the user engine yet: they run only when invoked.
fn run_user(args: RunArgs, format: Format) -> Result<ExitCode> {
    let mut object = open_tuned(&args)?;
    if let Some(btf) = &args.btf {
        object = object.with_target_btf(btf);
    }
    let interrupted = signal::on_interrupt()?;
    let loaded = object
        .load(Engine::User)
        .with_context(|| format!("cannot load {} on the user engine", args.object.display()))?;
    if let Some(dir) = &args.pin_maps {
        if bpfmaps::kernel::fs::is_on_bpffs(dir) {
            bail!("--pin-maps {}: user-engine maps cannot be pinned on bpffs; use a directory on the user engine's pin root file system", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        loaded
            .pin_maps(dir)
            .with_context(|| format!("cannot pin maps in {}", dir.display()))?;
    }
    // On stderr also with -j: stdout stays one JSON object.
    eprintln!(
        "loaded {} program(s) of {} on the user engine; attaching programs to events on the user engine comes in a later issue, so they run only when invoked (bpfmaps test-run, the library); the maps stay alive until the run ends",
        loaded.program_names().len(),
        args.object.display()
    );
    let status = wait_for_end(&args, &interrupted)?;
    let mut json_maps = JsonMap::new();
    for (name, map) in loaded.maps()? {
        let streamed = matches!(
            map.info().map_type,
            MapType::Ringbuf | MapType::PerfEventArray
        );
        if streamed {
            let events = if map.info().map_type == MapType::Ringbuf {
                count_ring_records(&map)?
            } else {
                0
            };
            if format.is_json() {
                json_maps.insert(name.clone(), json!({"events": events, "lost": 0}));
            } else {
                outln!("{name}: {events} events, 0 lost\n");
            }
            continue;
        }
        if map.info().map_type == MapType::StackTrace && !format.is_json() {
            outln!("{name}:");
            crate::cmd_map::dump_stacks_plain(&map)?;
            outln!();
            continue;
        }
        if format.is_json() {
            json_maps.insert(name.clone(), dump_json(&map)?);
        } else {
            outln!("{name}:");
            dump_plain(&map)?;
            outln!();
        }
    }
    finish(json_maps, status, format)
}

/// The number of records waiting in a ring buffer (drained).
fn count_ring_records(map: &Map) -> Result<u64> {
    let mut stream = EventStream::open(map)?;
    let mut count = 0;
    while let Some(event) = stream.next_event(Some(Duration::ZERO))? {
        if matches!(event, Event::Record { .. }) {
            count += 1;
        }
    }
    Ok(count)
}

fn spawn_counter(name: String, map: &Map, stop: Arc<AtomicBool>) -> Result<StreamCounter> {
    let mut stream =
        EventStream::open(map).with_context(|| format!("cannot read events of {name}"))?;
    let events = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let lost = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (e, l) = (events.clone(), lost.clone());
    let thread = std::thread::spawn(move || -> Result<(), String> {
        loop {
            let next = stream
                .next_event(Some(Duration::from_millis(50)))
                .map_err(|e| e.to_string())?;
            match next {
                Some(Event::Record { .. }) => {
                    e.fetch_add(1, Ordering::SeqCst);
                }
                Some(Event::Lost { count, .. }) => {
                    l.fetch_add(count, Ordering::SeqCst);
                }
                None if stop.load(Ordering::SeqCst) => return Ok(()),
                None => {}
            }
        }
    });
    Ok(StreamCounter {
        name,
        events,
        lost,
        thread,
    })
}
