//! Shared memory is untrusted input: a map file whose bytes were changed behind the engine's back
//! makes operations fail (`EFAULT`), never panic and never loop forever. Corruption is written
//! through the map file itself (a second, ordinary file handle on the pinned path) or through
//! the mapping of an anonymous map, at known offsets of the LRU area's metadata.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use bpfmaps_abi::update_flags::BPF_ANY;
use bpfmaps_abi::{map_flags, BatchBuffers, Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_maps::lru::LruHashMap;
use bpfmaps_maps::{possible_cpus, UserMap};

mod common;
use common::TestStore;

const MAX_ENTRIES: u32 = 16;

fn lru_def(name: &str) -> MapDef {
    MapDef {
        map_type: MapType::LruHash,
        key_size: 4,
        value_size: 8,
        max_entries: MAX_ENTRIES,
        map_flags: map_flags::BPF_F_ZERO_SEED,
        name: name.into(),
    }
}

fn errno<T: std::fmt::Debug>(r: Result<T, MapError>) -> Result<T, Errno> {
    r.map_err(|e| e.errno().expect("an errno, not a size error"))
}

fn key(k: u32) -> [u8; 4] {
    k.to_le_bytes()
}

fn filled_lru(keys: u32) -> LruHashMap {
    let map = LruHashMap::create_anonymous(&lru_def("corrupt"), possible_cpus()).unwrap();
    for k in 0..keys {
        map.update(&key(k), &u64::from(k).to_le_bytes(), BPF_ANY)
            .unwrap();
    }
    map
}

fn lookup_batch_errno(map: &dyn MapOps) -> Result<u32, Errno> {
    let (mut keys, mut values) = (vec![0u8; 4 * 64], vec![0u8; 8 * 64]);
    let mut out_batch = [0u8; 4];
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 64,
    };
    errno(map.lookup_batch(None, &mut out_batch, &mut buffers, 0, 0)).map(|()| buffers.count)
}

#[test]
fn bucket_words_naming_missing_nodes_give_efault() {
    let map = filled_lru(8);
    let layout = map.layout().clone();
    let bad_node = layout.shape.nodes + 5;
    for bucket in 0..layout.n_buckets {
        map.region()
            .write(layout.bucket_at(bucket), &bad_node.to_le_bytes());
    }
    let mut value = [0u8; 8];
    assert_eq!(
        errno(map.lookup(&key(1), &mut value, 0)),
        Err(Errno::EFAULT)
    );
    assert_eq!(
        errno(map.update(&key(1), &[7; 8], BPF_ANY)),
        Err(Errno::EFAULT)
    );
    assert_eq!(errno(map.delete(&key(1))), Err(Errno::EFAULT));
    let mut next = [0u8; 4];
    assert_eq!(errno(map.get_next_key(None, &mut next)), Err(Errno::EFAULT));
    assert_eq!(lookup_batch_errno(&map), Err(Errno::EFAULT));
    assert_eq!(map.keys(), Vec::<Vec<u8>>::new());
    assert!(map.census().unwrap_err().contains("out of range"));
}

#[test]
fn list_links_out_of_range_fail_updates_but_not_lookups() {
    let map = filled_lru(8);
    let layout = map.layout().clone();
    let bad_link = layout.n_links + 1;
    for link in 0..layout.n_links {
        map.region()
            .write(layout.next_at(link), &bad_link.to_le_bytes());
        map.region()
            .write(layout.prev_at(link), &bad_link.to_le_bytes());
    }
    // Lookups walk only the hash chains, which are intact.
    let mut value = [0u8; 8];
    map.lookup(&key(3), &mut value, 0).unwrap();
    assert_eq!(u64::from_le_bytes(value), 3);
    // Every update takes a node from the lists first.
    assert_eq!(
        errno(map.update(&key(100), &[1; 8], BPF_ANY)),
        Err(Errno::EFAULT)
    );
    assert_eq!(
        errno(map.update(&key(3), &[1; 8], BPF_ANY)),
        Err(Errno::EFAULT)
    );
    // A delete unlinks from the chain, then gives the node back to a list.
    assert_eq!(errno(map.delete(&key(4))), Err(Errno::EFAULT));
}

#[test]
fn a_hash_chain_cycle_is_detected_instead_of_followed_forever() {
    let map = filled_lru(MAX_ENTRIES);
    let layout = map.layout().clone();
    for node in 0..layout.shape.nodes {
        map.region()
            .write(layout.hnext_at(node), &node.to_le_bytes());
    }
    let mut value = [0u8; 8];
    let outcomes: Vec<Result<(), Errno>> = (1000..1064)
        .map(|k| errno(map.lookup(&key(k), &mut value, 0)))
        .collect();
    assert!(
        outcomes
            .iter()
            .all(|r| matches!(r, Err(Errno::ENOENT) | Err(Errno::EFAULT))),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&Err(Errno::EFAULT)), "{outcomes:?}");
    assert_eq!(lookup_batch_errno(&map), Err(Errno::EFAULT));
    assert_eq!(map.keys(), Vec::<Vec<u8>>::new());
}

/// Runs a mix of every operation on a (possibly corrupt) map; every outcome is acceptable except
/// a panic or a hang. Returns how many operations failed with `EFAULT`.
fn exercise(map: &UserMap) -> usize {
    let mut efaults = 0;
    let mut count = |r: Result<(), MapError>| {
        if matches!(r, Err(MapError::Errno(Errno::EFAULT))) {
            efaults += 1;
        }
    };
    let mut value = [0u8; 8];
    for k in 0..24u32 {
        count(map.update(&key(k), &u64::from(k).to_le_bytes(), BPF_ANY));
    }
    for k in 0..24u32 {
        count(map.lookup(&key(k), &mut value, 0));
        let _ = map.helper_lookup(&key(k), 0);
    }
    for k in (0..24u32).step_by(3) {
        count(map.delete(&key(k)));
        count(map.lookup_and_delete(&key(k + 1), &mut value, 0));
    }
    let mut cursor: Option<[u8; 4]> = None;
    for _ in 0..64 {
        let mut next = [0u8; 4];
        let r = map.get_next_key(cursor.as_ref().map(|c| &c[..]), &mut next);
        let done = r.is_err();
        count(r);
        if done {
            break;
        }
        cursor = Some(next);
    }
    count(lookup_batch_errno(map).map(|_| ()).map_err(MapError::Errno));
    for k in 100..140u32 {
        count(map.update(&key(k), &[9; 8], BPF_ANY));
    }
    efaults
}

#[test]
fn every_corrupted_metadata_word_of_a_pinned_lru_file_gives_errors_not_panics() {
    let s = TestStore::new("corrupt", "lru-words");
    let path = s.dir.join("victim");
    // The metadata words after the lock: counts, cursors, links, node words, buckets.
    let (first, end) = {
        let map = UserMap::create_in(&s.store, &lru_def("probe")).unwrap();
        let lru = map
            .backend()
            .as_any()
            .downcast_ref::<LruHashMap>()
            .expect("an LRU backend");
        let layout = lru.layout();
        (layout.magic_at() + 4, layout.key_at(0))
    };
    let mut efaults = 0;
    let mut corrupted = 0;
    for offset in (first..end).step_by(4) {
        for garbage in [u32::MAX - 1, 0x8000_0000, 17, 3] {
            let map = UserMap::create_in(&s.store, &lru_def("victim")).unwrap();
            for k in 0..12u32 {
                map.update(&key(k), &u64::from(k).to_le_bytes(), BPF_ANY)
                    .unwrap();
            }
            map.pin(&path).unwrap();
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.write_at(&garbage.to_le_bytes(), offset as u64)
                .unwrap();
            corrupted += 1;
            efaults += exercise(&map);
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert!(corrupted > 100, "only {corrupted} corruptions tried");
    assert!(efaults > 0, "no corruption was ever detected");
}

#[test]
fn every_corrupted_link_word_of_a_pinned_hash_file_gives_errors_not_panics() {
    use bpfmaps_maps::header::{AREA_OFFSET, TYPE_STATE_OFFSET};
    let s = TestStore::new("corrupt", "hash-words");
    let path = s.dir.join("victim");
    let def = MapDef {
        map_type: MapType::Hash,
        ..lru_def("victim")
    };
    // The layout `hash.rs` documents, for 16 entries (16 buckets, 16 stripes) with 4-byte keys
    // and 8-byte values: bucket heads, then 16 stripe slots of 64 bytes (skipped: corrupting a
    // lock word is not a question of bounds), then 32 elements of `next`, `hash`, key, value.
    let buckets = AREA_OFFSET;
    let elems = buckets + 64 + 16 * 64;
    let elem_size = 8 + 8 + 8;
    let mut offsets: Vec<usize> = (TYPE_STATE_OFFSET..TYPE_STATE_OFFSET + 24)
        .step_by(4)
        .collect();
    offsets.extend((buckets..buckets + 64).step_by(4));
    offsets.extend((0..32).flat_map(|e| [elems + e * elem_size, elems + e * elem_size + 4]));
    let mut corrupted = 0;
    for &offset in &offsets {
        for garbage in [u32::MAX - 1, 0x8000_0000, 33, 3] {
            let map = UserMap::create_in(&s.store, &def).unwrap();
            for k in 0..12u32 {
                map.update(&key(k), &u64::from(k).to_le_bytes(), BPF_ANY)
                    .unwrap();
            }
            map.pin(&path).unwrap();
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.write_at(&garbage.to_le_bytes(), offset as u64)
                .unwrap();
            corrupted += 1;
            exercise(&map);
            std::fs::remove_file(&path).unwrap();
        }
    }
    assert_eq!(corrupted, offsets.len() * 4);
}
