//! The child process of the multi-process tests (`tests/multiprocess.rs`): opens a pinned
//! user-engine map and does one job on it, printing one line per acknowledged operation so the
//! parent knows exactly what succeeded before it killed the child.
//!
//! Jobs (arguments after the binary name):
//! * `atomic-add ROOT PATH KEY N CHURN` — N times: look the key up as a program would
//!   (`helper_lookup`) and add 1 to the 8-byte counter atomically; every 8th round also insert
//!   and delete key CHURN from the syscall side, so bucket locks are contended.
//! * `percpu-add ROOT PATH KEY N CPU` — N times: add 1 to this CPU's slot of a per-CPU counter
//!   with a plain read and write (a program invocation owns its CPU slot).
//! * `write-loop ROOT PATH START WINDOW` — for i = START, START+1, …: update key i with
//!   `value_of(i)` and print `u i`; then delete key i − WINDOW (when i ≥ WINDOW) and print
//!   `d i-WINDOW`. Runs until killed.
//! * `create-pin-hang ROOT PATH N` — create a HASH map, write keys 0..N with `value_of`, pin it at
//!   PATH, print `ready`, and sleep until killed.
//!
//! Exits with status 2 and a message on stderr on bad arguments or a failed operation.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use bpfmaps_abi::{MapDef, MapOps, MapType};
use bpfmaps_difftest::worker::value_of;
use bpfmaps_maps::{Access, Store, UserMap};

fn open(root: &str, path: &str) -> Result<UserMap, String> {
    let store = Store::open(root).map_err(|e| format!("store {root}: {e}"))?;
    UserMap::open_pinned_in(&store, Path::new(path), Access::ReadWrite)
        .map_err(|e| format!("open {path}: {e}"))
}

fn num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{what}: not a number: {s:?}"))
}

fn ack(out: &mut std::io::StdoutLock<'_>, line: std::fmt::Arguments<'_>) -> Result<(), String> {
    out.write_fmt(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| format!("stdout: {e}"))
}

fn run(args: &[String]) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["atomic-add", root, path, key, n, churn] => {
            let map = open(root, path)?;
            let key: u32 = num(key, "KEY")?;
            let n: u64 = num(n, "N")?;
            let churn: u32 = num(churn, "CHURN")?;
            for round in 0..n {
                let at = map
                    .helper_lookup(&key.to_le_bytes(), 0)
                    .ok_or_else(|| format!("counter key {key} missing"))?;
                map.region()
                    .atomic_u64(at.offset)
                    .fetch_add(1, Ordering::SeqCst);
                if round % 8 == 0 {
                    map.update(&churn.to_le_bytes(), &round.to_le_bytes(), 0)
                        .map_err(|e| format!("churn insert: {e}"))?;
                    map.delete(&churn.to_le_bytes())
                        .map_err(|e| format!("churn delete: {e}"))?;
                }
            }
            Ok(())
        }
        ["percpu-add", root, path, key, n, cpu] => {
            let map = open(root, path)?;
            let key: u32 = num(key, "KEY")?;
            let n: u64 = num(n, "N")?;
            let cpu: u32 = num(cpu, "CPU")?;
            for _ in 0..n {
                let at = map
                    .helper_lookup(&key.to_le_bytes(), cpu)
                    .ok_or_else(|| format!("counter key {key} missing"))?;
                let mut slot = [0u8; 8];
                map.region().read(at.offset, &mut slot);
                let next = u64::from_le_bytes(slot).wrapping_add(1);
                map.region().write(at.offset, &next.to_le_bytes());
            }
            Ok(())
        }
        ["write-loop", root, path, start, window] => {
            let map = open(root, path)?;
            let start: u32 = num(start, "START")?;
            let window: u32 = num(window, "WINDOW")?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            let mut i = start;
            loop {
                map.update(&i.to_le_bytes(), &value_of(i), 0)
                    .map_err(|e| format!("update {i}: {e}"))?;
                ack(&mut out, format_args!("u {i}"))?;
                if let Some(old) = i.checked_sub(window) {
                    map.delete(&old.to_le_bytes())
                        .map_err(|e| format!("delete {old}: {e}"))?;
                    ack(&mut out, format_args!("d {old}"))?;
                }
                i = i.checked_add(1).ok_or("key space exhausted")?;
            }
        }
        ["create-pin-hang", root, path, n] => {
            let n: u32 = num(n, "N")?;
            let store = Store::open(*root).map_err(|e| format!("store {root}: {e}"))?;
            let def = MapDef {
                map_type: MapType::Hash,
                key_size: 4,
                value_size: 8,
                max_entries: n.max(1),
                map_flags: 0,
                name: "orphan".into(),
            };
            let map = UserMap::create_in(&store, &def).map_err(|e| format!("create: {e}"))?;
            for i in 0..n {
                map.update(&i.to_le_bytes(), &value_of(i), 0)
                    .map_err(|e| format!("update {i}: {e}"))?;
            }
            map.pin(Path::new(path))
                .map_err(|e| format!("pin {path}: {e}"))?;
            let stdout = std::io::stdout();
            ack(&mut stdout.lock(), format_args!("ready {}", map.id()))?;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        _ => Err(format!("unknown job {args:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("difftest-worker: {why}");
            ExitCode::from(2)
        }
    }
}
