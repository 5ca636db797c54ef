//! Multi-process tests of the user engine, with `difftest-worker` as the child process:
//! two processes adding to shared counters (the sums must be exact), a writer SIGKILLed in the
//! middle of its updates again and again (the map stays usable, no lock stays held, every
//! acknowledged update and delete is there), and a map surviving a creator killed right after
//! pinning it.
//!
//! Two processes updating distinct keys of one pinned map and a map surviving a creator that
//! exits normally are covered by `crates/maps/tests/pin.rs`; they are not repeated here.

#![cfg(feature = "user-engine")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bpfmaps_abi::{Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_difftest::worker::value_of;
use bpfmaps_difftest::{contents, sys};
use bpfmaps_maps::{Access, Store, UserMap};

const WORKER: &str = env!("CARGO_BIN_EXE_difftest-worker");

/// A private store (pin root) under the temp dir, named after the test and the pid, removed on
/// drop.
struct TestStore {
    store: Store,
    dir: PathBuf,
}

impl TestStore {
    fn new(tag: &str) -> TestStore {
        let dir =
            std::env::temp_dir().join(format!("bpfmaps-difftest-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir).unwrap_or_else(|e| panic!("store {}: {e}", dir.display()));
        TestStore { store, dir }
    }

    fn root(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn def(map_type: MapType, max_entries: u32) -> MapDef {
    MapDef {
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries,
        map_flags: 0,
        name: "multiproc".into(),
    }
}

fn worker(args: &[&str]) -> Child {
    Command::new(WORKER)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {WORKER}: {e}"))
}

fn wait_ok(mut child: Child, what: &str) {
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"));
    assert!(status.success(), "{what} failed: {status}");
}

/// Runs `f` on another thread and fails when it takes longer than `limit`: a lock left held by
/// a killed process would hang it.
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}: a lock is held?"))
}

#[test]
fn two_processes_add_to_shared_counters_exactly() {
    let s = TestStore::new("counters");
    const N: u64 = 100_000;

    // A HASH counter updated atomically through the program-side lookup by both processes,
    // while each also inserts and deletes its own churn key.
    let map = UserMap::create_in(&s.store, &def(MapType::Hash, 16)).expect("create hash");
    map.update(&1u32.to_le_bytes(), &0u64.to_le_bytes(), 0)
        .expect("counter key");
    let path = s.dir.join("counter");
    map.pin(&path).expect("pin");
    let p = path.display().to_string();
    let root = s.root();
    let n = N.to_string();
    let a = worker(&["atomic-add", &root, &p, "1", &n, "100"]);
    let b = worker(&["atomic-add", &root, &p, "1", &n, "101"]);
    wait_ok(a, "atomic-add A");
    wait_ok(b, "atomic-add B");
    let mut value = [0u8; 8];
    map.lookup(&1u32.to_le_bytes(), &mut value, 0)
        .expect("lookup counter");
    assert_eq!(
        u64::from_le_bytes(value),
        2 * N,
        "the shared counter lost increments"
    );
    let walked = contents(&map).expect("walk");
    assert_eq!(walked.len(), 1, "churn keys left behind: {walked:02x?}");
    std::fs::remove_file(&path).expect("unpin");

    // A PERCPU_HASH counter: each process owns one CPU slot and adds without atomics.
    let cpus = sys::possible_cpus().expect("possible CPUs");
    let map = UserMap::create_in(&s.store, &def(MapType::PercpuHash, 4)).expect("create percpu");
    map.update(&7u32.to_le_bytes(), &vec![0u8; 8 * cpus], 0)
        .expect("counter key");
    let path = s.dir.join("percpu");
    map.pin(&path).expect("pin");
    let p = path.display().to_string();
    let writers = cpus.min(2);
    let children: Vec<Child> = (0..writers)
        .map(|cpu| worker(&["percpu-add", &root, &p, "7", &n, &cpu.to_string()]))
        .collect();
    for c in children {
        wait_ok(c, "percpu-add");
    }
    let mut slots = vec![0u8; 8 * cpus];
    map.lookup(&7u32.to_le_bytes(), &mut slots, 0)
        .expect("lookup per-CPU counter");
    let per_cpu: Vec<u64> = slots
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    for (cpu, count) in per_cpu.iter().enumerate() {
        let expected = if cpu < writers { N } else { 0 };
        assert_eq!(*count, expected, "CPU {cpu}'s slot");
    }
    assert_eq!(per_cpu.iter().sum::<u64>(), N * writers as u64);
    std::fs::remove_file(&path).expect("unpin");
}

/// What the parent knows of the map from a killed writer's acknowledgements.
#[derive(Default)]
struct Acked {
    /// key → present after the last acknowledged operation on it.
    present: BTreeMap<u32, bool>,
    /// The last acknowledged update.
    last_update: Option<u32>,
}

#[test]
fn writer_killed_mid_update_leaves_the_map_usable_and_loses_no_acknowledged_update() {
    let s = TestStore::new("sigkill");
    const WINDOW: u32 = 64;
    const ROUNDS: u32 = 25;
    let map = UserMap::create_in(&s.store, &def(MapType::Hash, 4096)).expect("create");
    let path = s.dir.join("victim");
    map.pin(&path).expect("pin");
    let p = path.display().to_string();
    let root = s.root();
    let mut acked = Acked::default();
    let mut rng: u64 = 0x1234_5678;
    let mut total_acks = 0usize;
    for round in 0..ROUNDS {
        let start = acked.last_update.map_or(0, |u| u + 1);
        let mut child = worker(&[
            "write-loop",
            &root,
            &p,
            &start.to_string(),
            &WINDOW.to_string(),
        ]);
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until it runs, then kill it after a pseudo-random 1..40 ms.
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the writer acknowledged nothing");
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(1 + (rng >> 33) % 40));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        reader.join().expect("reader thread");
        let lines: Vec<String> = std::iter::once(first).chain(rx.try_iter()).collect();
        total_acks += lines.len();
        for line in &lines {
            match line.split_once(' ') {
                Some(("u", k)) => {
                    let k: u32 = k.parse().expect("ack key");
                    acked.present.insert(k, true);
                    acked.last_update = Some(k);
                }
                Some(("d", k)) => {
                    acked.present.insert(k.parse().expect("ack key"), false);
                }
                _ => panic!("bad ack line {line:?}"),
            }
        }
        // The operation in flight when the kill came is the only one whose effect is unknown.
        let last = acked.last_update.expect("at least one update acknowledged");
        // After "u i" it is the delete of i - WINDOW (or the update of i + 1 while i < WINDOW),
        // after "d" the update of i + 1.
        let in_flight: Vec<u32> = last
            .checked_sub(WINDOW)
            .into_iter()
            .chain([last + 1])
            .collect();
        // The map must still be usable by this process: no lock left held, a consistent walk.
        let reopened = UserMap::open_pinned_in(&s.store, &path, Access::ReadWrite).expect("reopen");
        let walked = within(Duration::from_secs(10), "probe after kill", move || {
            let probe = u32::MAX.to_le_bytes();
            reopened
                .update(&probe, &[1; 8], 0)
                .expect("update after kill");
            let mut v = [0u8; 8];
            reopened
                .lookup(&probe, &mut v, 0)
                .expect("lookup after kill");
            reopened.delete(&probe).expect("delete after kill");
            contents(&reopened).expect("walk after kill")
        });
        let actual: BTreeMap<u32, [u8; 8]> = walked
            .iter()
            .map(|(k, v)| {
                let key = u32::from_le_bytes(k[..4].try_into().expect("4-byte key"));
                let value: [u8; 8] = v[..8].try_into().expect("8-byte value");
                (key, value)
            })
            .collect();
        assert_eq!(
            actual.len(),
            walked.len(),
            "round {round}: a key was walked twice"
        );
        for (&k, &present) in &acked.present {
            if in_flight.contains(&k) {
                continue;
            }
            match (present, actual.get(&k)) {
                (true, Some(v)) => {
                    assert_eq!(*v, value_of(k), "round {round}: key {k} holds a torn value")
                }
                (true, None) => panic!("round {round}: acknowledged update of key {k} lost"),
                (false, Some(_)) => panic!("round {round}: acknowledged delete of key {k} undone"),
                (false, None) => {}
            }
        }
        for (k, v) in &actual {
            assert!(
                acked.present.get(k) == Some(&true) || in_flight.contains(k),
                "round {round}: key {k} = {v:02x?} was never acknowledged"
            );
            assert_eq!(
                *v,
                value_of(*k),
                "round {round}: key {k} holds a torn value"
            );
        }
        // From here on, the map's actual state is the reference.
        acked.present = actual.keys().map(|&k| (k, true)).collect();
        let mut probe = [0u8; 8];
        assert_eq!(
            map.lookup(&u32::MAX.to_le_bytes(), &mut probe, 0),
            Err(MapError::Errno(Errno::ENOENT))
        );
    }
    println!(
        "{ROUNDS} writers SIGKILLed after {total_acks} acknowledged operations; map consistent"
    );
    std::fs::remove_file(&path).expect("unpin");
}

#[test]
fn a_map_survives_a_creator_killed_after_pinning_it() {
    let s = TestStore::new("orphan");
    let path = s.dir.join("orphan");
    let p = path.display().to_string();
    let mut child = worker(&["create-pin-hang", &s.root(), &p, "100"]);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read ready line");
    assert!(line.starts_with("ready "), "worker said {line:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let map = within(Duration::from_secs(10), "open after the creator died", {
        let store = s.store.clone();
        let path = path.clone();
        move || UserMap::open_pinned_in(&store, Path::new(&path), Access::ReadWrite)
    })
    .expect("open the orphaned map");
    let walked = contents(&map).expect("walk");
    assert_eq!(walked.len(), 100);
    for i in 0..100u32 {
        let mut v = [0u8; 8];
        map.lookup(&i.to_le_bytes(), &mut v, 0).expect("lookup");
        assert_eq!(v, value_of(i), "key {i}");
    }
    // Full (100 of 100): a new key is E2BIG, an existing one can be replaced, as in the kernel.
    assert_eq!(
        map.update(&200u32.to_le_bytes(), &[9; 8], 0),
        Err(MapError::Errno(Errno::E2BIG))
    );
    map.update(&5u32.to_le_bytes(), &[9; 8], 0)
        .expect("the orphan is still writable");
    std::fs::remove_file(&path).expect("unpin");
}
