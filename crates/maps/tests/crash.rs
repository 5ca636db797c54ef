//! Crash safety: writer processes SIGKILLed at random moments, in a loop, must never leave a map
//! locked or corrupt, and never lose an update that had returned success.
//!
//! The writer is this test binary re-run on [`writer_process_entry_point`]. It performs random
//! updates and deletes on a pinned HASH or LRU_HASH map and reports each operation before it starts (`B`) and
//! its result after it returns (`A`). The parent kills it after a random delay, replays the
//! acknowledged operations on a model (checking every returned errno against the model), resolves
//! the one operation that may have been in flight by looking at the map, and then requires the
//! map's full contents to equal the model and its structure to be consistent.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bpfmaps_abi::update_flags::*;
use bpfmaps_abi::{Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_maps::hash::HashMap;
use bpfmaps_maps::lru::LruHashMap;
use bpfmaps_maps::{Access, UserMap, PIN_ROOT_ENV};

mod common;
use common::TestStore;

const CHILD_ENV: &str = "BPFMAPS_CRASH_TEST_CHILD";
/// HASH: small enough that the writers hit a full map (`E2BIG`) often.
const MAX_ENTRIES: u32 = 24;
/// LRU_HASH: large enough that [`KEY_SPACE`] keys never make it evict (the free list never
/// runs dry), so every acknowledged update stays checkable.
const LRU_MAX_ENTRIES: u32 = 4096;
const KEY_SPACE: u32 = 40;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One writer operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Update { key: u32, value: u64, flags: u64 },
    Delete { key: u32 },
}

impl Op {
    fn encode(self) -> String {
        match self {
            Op::Update { key, value, flags } => format!("B U {key} {value} {flags}"),
            Op::Delete { key } => format!("B D {key}"),
        }
    }

    fn decode(line: &str) -> Option<Op> {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["B", "U", k, v, fl] => Some(Op::Update {
                key: k.parse().ok()?,
                value: v.parse().ok()?,
                flags: fl.parse().ok()?,
            }),
            ["B", "D", k] => Some(Op::Delete {
                key: k.parse().ok()?,
            }),
            _ => None,
        }
    }

    fn key(self) -> u32 {
        match self {
            Op::Update { key, .. } | Op::Delete { key } => key,
        }
    }

    /// The result the kernel's rules give on `model` of a map holding at most `capacity` keys,
    /// applying the op when it succeeds.
    fn apply(self, model: &mut BTreeMap<u32, u64>, capacity: usize) -> i32 {
        match self {
            Op::Update { key, value, flags } => {
                let exists = model.contains_key(&key);
                if exists && flags == BPF_NOEXIST {
                    return Errno::EEXIST.0;
                }
                if !exists && flags == BPF_EXIST {
                    return Errno::ENOENT.0;
                }
                if !exists && model.len() >= capacity {
                    return Errno::E2BIG.0;
                }
                model.insert(key, value);
                0
            }
            Op::Delete { key } => {
                if model.remove(&key).is_some() {
                    0
                } else {
                    Errno::ENOENT.0
                }
            }
        }
    }
}

/// Not a test of its own: the writer child (does nothing unless `BPFMAPS_CRASH_TEST_CHILD` is set).
#[test]
fn writer_process_entry_point() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = task.split(':').collect();
    match parts.as_slice() {
        ["write", path, seed] => {
            let map = UserMap::open_pinned(Path::new(path), Access::ReadWrite).unwrap();
            let mut rng = Rng(seed.parse::<u64>().unwrap() | 1);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            writeln!(out, "READY").unwrap();
            for seq in 0u64.. {
                let key = rng.below(u64::from(KEY_SPACE)) as u32;
                let op = match rng.below(10) {
                    0..=2 => Op::Delete { key },
                    3 => Op::Update {
                        key,
                        value: seq,
                        flags: BPF_NOEXIST,
                    },
                    4 => Op::Update {
                        key,
                        value: seq,
                        flags: BPF_EXIST,
                    },
                    _ => Op::Update {
                        key,
                        value: seq,
                        flags: BPF_ANY,
                    },
                };
                writeln!(out, "{}", op.encode()).unwrap();
                let result = match op {
                    Op::Update { key, value, flags } => {
                        map.update(&key.to_le_bytes(), &value.to_le_bytes(), flags)
                    }
                    Op::Delete { key } => map.delete(&key.to_le_bytes()),
                };
                let code = match result {
                    Ok(()) => 0,
                    Err(MapError::Errno(e)) => e.0,
                    Err(other) => panic!("unexpected {other}"),
                };
                writeln!(out, "A {code}").unwrap();
            }
        }
        ["hold-lock", path] => {
            let map = UserMap::open_pinned(Path::new(path), Access::ReadWrite).unwrap();
            let hash = map.backend().as_any().downcast_ref::<HashMap>().unwrap();
            let stripe = hash.stripe_lock_offset(&1u32.to_le_bytes());
            std::mem::forget(bpfmaps_maps::lock::lock(map.region(), stripe).unwrap());
            println!("LOCKED");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown child task {other:?}"),
    }
}

fn spawn(root: &Path, task: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "writer_process_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, task)
        .env(PIN_ROOT_ENV, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn contents(map: &UserMap, capacity: usize) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    let mut next = [0u8; 4];
    let mut prev: Option<[u8; 4]> = None;
    while map
        .get_next_key(prev.as_ref().map(|p| &p[..]), &mut next)
        .is_ok()
    {
        let mut value = [0u8; 8];
        map.lookup(&next, &mut value, 0).unwrap();
        assert!(
            out.insert(u32::from_le_bytes(next), u64::from_le_bytes(value))
                .is_none(),
            "a key twice"
        );
        prev = Some(next);
        assert!(out.len() <= capacity, "more keys than max_entries");
    }
    out
}

fn wait_for(reader: &mut impl BufRead, word: &str) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "child ended before {word}"
        );
        if line.contains(word) {
            return;
        }
    }
}

/// The structure check of a map type after each killed writer: consistency and key count.
fn check_structure(map: &UserMap, keys: usize) -> Result<(), String> {
    let backend = map.backend().as_any();
    if let Some(hash) = backend.downcast_ref::<HashMap>() {
        hash.check_consistency()?;
        if hash.len() as usize != keys {
            return Err(format!("count {} for {keys} keys", hash.len()));
        }
    } else if let Some(lru) = backend.downcast_ref::<LruHashMap>() {
        let census = lru.census()?;
        if census.elements as usize != keys {
            return Err(format!("{} elements for {keys} keys", census.elements));
        }
    } else {
        return Err("not a hash or LRU map".into());
    }
    Ok(())
}

#[test]
fn killed_writers_never_corrupt_a_hash_map_or_lose_acknowledged_updates() {
    crash_loop(MapType::Hash, MAX_ENTRIES);
}

#[test]
fn killed_writers_never_corrupt_an_lru_map_or_lose_acknowledged_updates() {
    crash_loop(MapType::LruHash, LRU_MAX_ENTRIES);
}

fn crash_loop(map_type: MapType, max_entries: u32) {
    let s = TestStore::new("crash", &format!("loop-{}", map_type.name()));
    let capacity = max_entries as usize;
    let def = MapDef {
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries,
        map_flags: 0,
        name: "crash".into(),
    };
    let map = UserMap::create_in(&s.store, &def).unwrap();
    let path = s.dir.join("crash");
    map.pin(&path).unwrap();
    let mut model: BTreeMap<u32, u64> = BTreeMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let iterations = 40;
    let mut acked_total = 0usize;
    let mut in_flight_applied = 0usize;
    for iteration in 0..iterations {
        let mut c = spawn(&s.dir, &format!("write:{}:{}", path.display(), rng.next()));
        let mut reader = BufReader::new(c.stdout.take().unwrap());
        wait_for(&mut reader, "READY");
        std::thread::sleep(Duration::from_micros(200 + rng.below(20_000)));
        c.kill().unwrap();
        c.wait().unwrap();
        let mut pending: Option<Op> = None;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                break;
            }
            if !line.ends_with('\n') {
                break; // a torn last line: its op may or may not have happened
            }
            if let Some(op) = Op::decode(&line) {
                pending = Some(op);
            } else if let Some(code) = line.trim().strip_prefix("A ") {
                let op = pending.take().expect("an ack without an op");
                let code: i32 = code.parse().unwrap();
                assert_eq!(
                    code,
                    op.apply(&mut model, capacity),
                    "iteration {iteration}: {op:?} disagrees with the model"
                );
                acked_total += 1;
            }
        }
        // The op in flight when the child died happened entirely or not at all.
        if let Some(op) = pending {
            let mut after = model.clone();
            op.apply(&mut after, capacity);
            let mut value = [0u8; 8];
            let actual = map
                .lookup(&op.key().to_le_bytes(), &mut value, 0)
                .ok()
                .map(|()| u64::from_le_bytes(value));
            if actual == after.get(&op.key()).copied() && actual != model.get(&op.key()).copied() {
                model = after;
                in_flight_applied += 1;
            }
        }
        assert_eq!(
            contents(&map, capacity),
            model,
            "iteration {iteration}: map contents differ from the acknowledged updates"
        );
        check_structure(&map, model.len()).unwrap_or_else(|e| panic!("iteration {iteration}: {e}"));
        // And the map is usable: a fresh key can be inserted if there is room, then removed.
        if model.len() < capacity {
            map.update(&1000u32.to_le_bytes(), &1u64.to_le_bytes(), BPF_NOEXIST)
                .unwrap();
            map.delete(&1000u32.to_le_bytes()).unwrap();
        }
        check_structure(&map, model.len())
            .unwrap_or_else(|e| panic!("iteration {iteration}, after a fresh key: {e}"));
    }
    let backend = map.backend().as_any();
    let recoveries = match (
        backend.downcast_ref::<HashMap>(),
        backend.downcast_ref::<LruHashMap>(),
    ) {
        (Some(hash), _) => hash.recoveries(),
        (_, Some(lru)) => lru.repairs(),
        _ => 0,
    };
    eprintln!(
        "{map_type:?}: {iterations} writers killed, {acked_total} acknowledged ops checked, \
         {in_flight_applied} in-flight ops had landed, {recoveries} repairs after a lock owner \
         died"
    );
    assert!(
        acked_total > iterations,
        "the writers did too little to test anything"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_lock_held_by_a_killed_process_is_recovered() {
    let s = TestStore::new("crash", "held");
    let def = MapDef {
        map_type: MapType::Hash,
        key_size: 4,
        value_size: 8,
        max_entries: 8,
        map_flags: 0,
        name: "held".into(),
    };
    let map = UserMap::create_in(&s.store, &def).unwrap();
    let path = s.dir.join("held");
    map.pin(&path).unwrap();
    map.update(&1u32.to_le_bytes(), &1u64.to_le_bytes(), BPF_ANY)
        .unwrap();
    let mut c = spawn(&s.dir, &format!("hold-lock:{}", path.display()));
    let mut reader = BufReader::new(c.stdout.take().unwrap());
    wait_for(&mut reader, "LOCKED");
    c.kill().unwrap();
    c.wait().unwrap();
    // The owner of key 1's stripe lock is dead: the next operations take it over and the map
    // stays exact.
    let mut out = [0u8; 8];
    map.lookup(&1u32.to_le_bytes(), &mut out, 0).unwrap();
    assert_eq!(u64::from_le_bytes(out), 1);
    map.update(&1u32.to_le_bytes(), &11u64.to_le_bytes(), BPF_EXIST)
        .unwrap();
    for key in 2..=8u32 {
        map.update(
            &key.to_le_bytes(),
            &u64::from(key).to_le_bytes(),
            BPF_NOEXIST,
        )
        .unwrap();
    }
    let err = map
        .update(&9u32.to_le_bytes(), &0u64.to_le_bytes(), BPF_ANY)
        .unwrap_err();
    assert_eq!(err.errno(), Some(Errno::E2BIG));
    let hash = map.backend().as_any().downcast_ref::<HashMap>().unwrap();
    hash.check_consistency().unwrap();
    assert_eq!(hash.len(), 8);
    assert_eq!(hash.recoveries(), 1);
    std::fs::remove_file(&path).unwrap();
}
