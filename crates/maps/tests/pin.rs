//! Pinning, ids, listing and lifetime of user-engine maps across processes: pin errnos and mode,
//! read-only/write-only opens, a map surviving its creator, two processes updating one pinned map,
//! and unpinned maps disappearing when their last holder (also a killed one) goes.
//!
//! Child processes are this test binary re-run on [`helper_process_entry_point`] with
//! `BPFMAPS_PIN_TEST_CHILD` saying what to do.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use bpfmaps_abi::update_flags::*;
use bpfmaps_abi::{Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_maps::hash::HashMap;
use bpfmaps_maps::{find_by_name_in, list_in, Access, UserMap, PIN_ROOT_ENV};

mod common;
use common::TestStore;

const CHILD_ENV: &str = "BPFMAPS_PIN_TEST_CHILD";

fn hash_def(name: &str, max_entries: u32) -> MapDef {
    MapDef {
        map_type: MapType::Hash,
        key_size: 4,
        value_size: 8,
        max_entries,
        map_flags: 0,
        name: name.into(),
    }
}

fn errno<T: std::fmt::Debug>(r: Result<T, MapError>) -> Errno {
    r.unwrap_err().errno().expect("an errno")
}

fn get(map: &UserMap, key: u32) -> Option<u64> {
    let mut out = [0u8; 8];
    map.lookup(&key.to_le_bytes(), &mut out, 0)
        .ok()
        .map(|()| u64::from_le_bytes(out))
}

/// Runs this binary as a child doing `task` with the pin root `root`.
fn child(root: &Path, task: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "helper_process_entry_point",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, task)
    .env(PIN_ROOT_ENV, root)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    cmd
}

fn run_child(root: &Path, task: &str) -> String {
    let out = child(root, task).output().unwrap();
    assert!(
        out.status.success(),
        "child {task} failed: {:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Not a test of its own: the entry point of the child processes (does nothing unless
/// `BPFMAPS_PIN_TEST_CHILD` is set).
#[test]
fn helper_process_entry_point() {
    let Ok(task) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = task.split(':').collect();
    match parts.as_slice() {
        // Create a map, fill it, pin it and exit.
        ["create-and-pin", path] => {
            let map = UserMap::create(&hash_def("survivor", 64)).unwrap();
            for i in 0..10u32 {
                map.update(&i.to_le_bytes(), &(u64::from(i) * 3).to_le_bytes(), BPF_ANY)
                    .unwrap();
            }
            map.pin(Path::new(path)).unwrap();
            println!("ID={}", map.id());
        }
        // Update keys [from, from+n) of a pinned map `rounds` times.
        ["update", path, from, n, rounds] => {
            let map = UserMap::open_pinned(Path::new(path), Access::ReadWrite).unwrap();
            let (from, n, rounds): (u32, u32, u64) = (
                from.parse().unwrap(),
                n.parse().unwrap(),
                rounds.parse().unwrap(),
            );
            for round in 1..=rounds {
                for key in from..from + n {
                    map.update(&key.to_le_bytes(), &round.to_le_bytes(), BPF_ANY)
                        .unwrap();
                }
            }
        }
        // Create an unpinned map, say its id, and wait to be killed.
        ["create-and-wait"] => {
            let map = UserMap::create(&hash_def("doomed", 8)).unwrap();
            println!("ID={}", map.id());
            use std::io::Write;
            std::io::stdout().flush().unwrap();
            std::thread::sleep(std::time::Duration::from_secs(60));
        }
        other => panic!("unknown child task {other:?}"),
    }
}

fn parse_id(out: &str) -> u32 {
    // The test harness may print its own words before ours on the same line.
    let rest = &out[out.find("ID=").expect("an ID= line") + 3..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn pin_errnos_and_mode() {
    let s = TestStore::new("pin", "errnos");
    let map = UserMap::create_in(&s.store, &hash_def("p", 8)).unwrap();
    let path = s.dir.join("pinned_map");
    map.pin(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pin_err = |p: &Path| map.pin(p).unwrap_err().errno();
    assert_eq!(pin_err(&path), Some(Errno::EEXIST));
    assert_eq!(pin_err(&s.dir.join("missing/dir")), Some(Errno::ENOENT));
    assert_eq!(pin_err(&s.dir.join("has.dot")), Some(Errno::EPERM));
    let missing = UserMap::open_pinned_in(&s.store, &s.dir.join("nothing"), Access::ReadWrite);
    assert_eq!(missing.unwrap_err().errno(), Some(Errno::ENOENT));
}

#[test]
fn read_only_and_write_only_opens_are_enforced() {
    let s = TestStore::new("pin", "access");
    let map = UserMap::create_in(&s.store, &hash_def("acc", 8)).unwrap();
    let path = s.dir.join("acc");
    map.pin(&path).unwrap();
    map.update(&1u32.to_le_bytes(), &5u64.to_le_bytes(), BPF_ANY)
        .unwrap();
    let ro = UserMap::open_pinned_in(&s.store, &path, Access::ReadOnly).unwrap();
    assert_eq!(ro.id(), map.id());
    assert_eq!(get(&ro, 1), Some(5));
    assert_eq!(
        errno(ro.update(&1u32.to_le_bytes(), &6u64.to_le_bytes(), BPF_ANY)),
        Errno::EPERM
    );
    assert_eq!(errno(ro.delete(&1u32.to_le_bytes())), Errno::EPERM);
    let wo = UserMap::open_pinned_in(&s.store, &path, Access::WriteOnly).unwrap();
    wo.update(&1u32.to_le_bytes(), &6u64.to_le_bytes(), BPF_ANY)
        .unwrap();
    let mut out = [0u8; 8];
    assert_eq!(
        errno(wo.lookup(&1u32.to_le_bytes(), &mut out, 0)),
        Errno::EPERM
    );
    assert_eq!(get(&map, 1), Some(6));
}

#[test]
fn a_pinned_map_survives_its_creator_and_is_listed_by_id_and_name() {
    let s = TestStore::new("pin", "survive");
    let path = s.dir.join("survivor");
    let id = parse_id(&run_child(
        &s.dir,
        &format!("create-and-pin:{}", path.display()),
    ));
    let listed = list_in(&s.store).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].info.id, id);
    assert_eq!(listed[0].info.name, "survivor");
    assert_eq!(listed[0].engine, "user");
    assert_eq!(find_by_name_in(&s.store, "survivor").unwrap().len(), 1);
    let map = UserMap::open_pinned_in(&s.store, &path, Access::ReadWrite).unwrap();
    assert_eq!(map.id(), id);
    for i in 0..10u32 {
        assert_eq!(get(&map, i), Some(u64::from(i) * 3));
    }
    let by_id = UserMap::from_id_in(&s.store, id).unwrap();
    assert_eq!(get(&by_id, 9), Some(27));
    drop(map);
    drop(by_id);
    // Still pinned: still listed. Unpinned and unused: collected.
    assert_eq!(list_in(&s.store).unwrap().len(), 1);
    std::fs::remove_file(&path).unwrap();
    assert!(list_in(&s.store).unwrap().is_empty());
    assert_eq!(
        UserMap::from_id_in(&s.store, id).unwrap_err().errno(),
        Some(Errno::ENOENT)
    );
}

#[test]
fn two_processes_update_one_pinned_map() {
    let s = TestStore::new("pin", "two");
    let map = UserMap::create_in(&s.store, &hash_def("shared", 1024)).unwrap();
    let path = s.dir.join("shared");
    map.pin(&path).unwrap();
    let mut children: Vec<_> = [(0u32, 200u32), (1000, 200)]
        .iter()
        .map(|(from, n)| {
            child(&s.dir, &format!("update:{}:{from}:{n}:50", path.display()))
                .spawn()
                .unwrap()
        })
        .collect();
    // This process updates a third range meanwhile.
    for round in 1..=50u64 {
        for key in 5000..5100u32 {
            map.update(&key.to_le_bytes(), &round.to_le_bytes(), BPF_ANY)
                .unwrap();
        }
    }
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    for key in (0..200).chain(1000..1200).chain(5000..5100) {
        assert_eq!(get(&map, key), Some(50), "key {key}");
    }
    let hash = map.backend().as_any().downcast_ref::<HashMap>().unwrap();
    assert_eq!(hash.len(), 500);
    hash.check_consistency().unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn unpinned_maps_disappear_with_their_last_holder_even_a_killed_one() {
    let s = TestStore::new("pin", "lifetime");
    let map = UserMap::create_in(&s.store, &hash_def("mine", 8)).unwrap();
    let id = map.id();
    let again = UserMap::from_id_in(&s.store, id).unwrap();
    drop(map);
    assert_eq!(
        list_in(&s.store)
            .unwrap()
            .iter()
            .map(|m| m.info.id)
            .collect::<Vec<_>>(),
        vec![id]
    );
    drop(again);
    assert!(list_in(&s.store).unwrap().is_empty());
    assert_eq!(
        UserMap::from_id_in(&s.store, id).unwrap_err().errno(),
        Some(Errno::ENOENT)
    );

    // A child creates a map and is SIGKILLed: the map is listed while it lives, then collected.
    let mut c = child(&s.dir, "create-and-wait").spawn().unwrap();
    let mut stdout = c.stdout.take().unwrap();
    let mut line = String::new();
    {
        use std::io::Read;
        let mut byte = [0u8; 1];
        while !(line.contains("ID=") && line.ends_with('\n')) {
            assert_eq!(
                stdout.read(&mut byte).unwrap(),
                1,
                "child ended early: {line}"
            );
            line.push(byte[0] as char);
        }
    }
    let child_id = parse_id(&line);
    let listed = list_in(&s.store).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|m| (m.info.id, m.info.name.as_str()))
            .collect::<Vec<_>>(),
        vec![(child_id, "doomed")]
    );
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(list_in(&s.store).unwrap().is_empty());
}

#[test]
fn every_seed_map_type_is_created_pinned_and_listed_through_user_map() {
    let s = TestStore::new("pin", "types");
    let defs = [
        (MapType::Hash, 4, 8, 16),
        (MapType::PercpuHash, 4, 8, 16),
        (MapType::Array, 4, 8, 16),
        (MapType::PercpuArray, 4, 8, 16),
        (MapType::LruHash, 4, 8, 16),
        (MapType::LruPercpuHash, 4, 8, 16),
        (MapType::StackTrace, 4, 8 * 16, 16),
        (MapType::Ringbuf, 0, 0, 4096),
        (MapType::PerfEventArray, 4, 4, 2),
    ];
    let mut maps = Vec::new();
    for (map_type, key_size, value_size, max_entries) in defs {
        let def = MapDef {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags: 0,
            name: format!("t{}", map_type.as_u32()),
        };
        let map = UserMap::create_in(&s.store, &def).unwrap_or_else(|e| panic!("{map_type}: {e}"));
        assert_eq!(map.info().map_type, map_type);
        assert_eq!(map.info().id, map.id());
        let path = s.dir.join(format!("pin_{}", map_type.name()));
        map.pin(&path).unwrap();
        let again = UserMap::open_pinned_in(&s.store, &path, Access::ReadOnly).unwrap();
        assert_eq!(again.info().id, map.id(), "{map_type}");
        assert_eq!(again.info().map_type, map_type);
        maps.push(map);
    }
    let ring = maps[7]
        .backend()
        .as_any()
        .downcast_ref::<bpfmaps_maps::ringbuf::RingBuf>();
    assert!(
        ring.is_some(),
        "the ring buffer is reachable through the backend"
    );
    let listed: Vec<MapType> = list_in(&s.store)
        .unwrap()
        .iter()
        .map(|m| m.info.map_type)
        .collect();
    assert_eq!(listed, defs.iter().map(|d| d.0).collect::<Vec<_>>());
}
