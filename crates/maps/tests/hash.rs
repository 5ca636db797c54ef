//! HASH and PERCPU_HASH on the user engine: creation rules, update flags, full maps,
//! get_next_key order, lookup-and-delete, per-CPU layout, batch operations, freeze and access
//! modes, the program-side API, threads, and the iteration order compared with the real kernel.

use std::process::Command;

use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::update_flags::*;
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_maps::hash::HashMap;
use bpfmaps_maps::jhash::htab_hash;
use bpfmaps_maps::{possible_cpus, Access, UserMap, UserMapError};

mod common;
use common::TestStore;

fn def(
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> MapDef {
    MapDef::new(map_type, key_size, value_size, max_entries, map_flags, "t")
}

fn create(s: &TestStore, d: &MapDef) -> UserMap {
    UserMap::create_in(&s.store, d).unwrap()
}

fn errno<T: std::fmt::Debug>(r: Result<T, MapError>) -> Errno {
    r.unwrap_err().errno().expect("an errno")
}

fn k(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

fn v(n: u64) -> [u8; 8] {
    n.to_le_bytes()
}

fn keys_in_order(map: &UserMap) -> Vec<u32> {
    let mut out = Vec::new();
    let mut next = [0u8; 4];
    let mut prev: Option<[u8; 4]> = None;
    while map
        .get_next_key(prev.as_ref().map(|p| &p[..]), &mut next)
        .is_ok()
    {
        out.push(u32::from_le_bytes(next));
        prev = Some(next);
        assert!(out.len() < 100_000, "get_next_key loops");
    }
    out
}

/// The order the kernel iterates a ZERO_SEED map of `n_buckets` in, given keys inserted in
/// `inserted` order: buckets ascending, newest first within a bucket.
fn model_order(inserted: &[u32], n_buckets: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for bucket in 0..n_buckets {
        for key in inserted.iter().rev() {
            if htab_hash(&k(*key), 0) & (n_buckets - 1) == bucket {
                out.push(*key);
            }
        }
    }
    out
}

fn consistent(map: &UserMap) {
    let hash = map
        .backend()
        .as_any()
        .downcast_ref::<HashMap>()
        .expect("a hash map");
    hash.check_consistency().unwrap();
}

#[test]
fn creation_rules_and_errnos_match_the_kernel() {
    let s = TestStore::new("hash", "create");
    let h = MapType::Hash;
    let p = MapType::PercpuHash;
    let cases: Vec<(MapDef, Option<Errno>)> = vec![
        (def(h, 0, 4, 4, 0), Some(Errno::EINVAL)),
        (def(h, 4, 0, 4, 0), Some(Errno::EINVAL)),
        (def(h, 4, 4, 0, 0), Some(Errno::EINVAL)),
        (def(h, 4, 4, 4, BPF_F_MMAPABLE), Some(Errno::EINVAL)),
        (def(h, 4, 4, 4, 1 << 20), Some(Errno::EINVAL)),
        (def(h, 4, 4, 4, BPF_F_NO_COMMON_LRU), Some(Errno::EINVAL)),
        (
            def(h, 4, 4, 4, BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG),
            Some(Errno::EINVAL),
        ),
        (
            def(h, 4, 4, 4, BPF_F_RDONLY | BPF_F_WRONLY),
            Some(Errno::EINVAL),
        ),
        (def(p, 4, 4, 4, BPF_F_NUMA_NODE), Some(Errno::EINVAL)),
        (def(h, 4, 4, 4, BPF_F_NUMA_NODE), None),
        (def(h, 4, (4 << 20) - 48, 1, 0), Some(Errno::E2BIG)),
        (def(h, 4, (4 << 20) - 64, 1, 0), None),
        (def(p, 4, 32769, 1, 0), Some(Errno::E2BIG)),
        (def(p, 4, 32768, 1, 0), None),
        (def(h, 4, 4, (1 << 27) + 1, 0), Some(Errno::E2BIG)),
        (def(h, 4, 4, 1 << 31, BPF_F_NO_PREALLOC), Some(Errno::E2BIG)),
        (def(h, 4096, 4, 4, 0), None),
        (def(h, 4, 4, 4, BPF_F_NO_PREALLOC | BPF_F_ZERO_SEED), None),
    ];
    for (d, expected) in cases {
        let got = UserMap::create_in(&s.store, &d)
            .err()
            .map(|e| e.errno().expect("an errno"));
        assert_eq!(got, expected, "{d:?}");
    }
    for name in ["bad-name", "sixteen_chars_xx"] {
        let mut d = def(h, 4, 4, 4, 0);
        d.name = name.into();
        let err = UserMap::create_in(&s.store, &d).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::EINVAL), "{name}");
    }
    let lru = UserMap::create_in(&s.store, &def(MapType::LpmTrie, 8, 4, 4, 1));
    assert!(matches!(
        lru,
        Err(UserMapError::Create {
            errno: Errno::EINVAL,
            ..
        }) | Err(UserMapError::Unsupported(_))
    ));
}

#[test]
fn update_flags_lookup_and_delete_errnos() {
    let s = TestStore::new("hash", "flags");
    let map = create(&s, &def(MapType::Hash, 4, 8, 16, 0));
    let mut out = [0u8; 8];
    assert_eq!(errno(map.lookup(&k(1), &mut out, 0)), Errno::ENOENT);
    assert_eq!(errno(map.delete(&k(1))), Errno::ENOENT);
    assert_eq!(errno(map.update(&k(1), &v(1), BPF_EXIST)), Errno::ENOENT);
    map.update(&k(1), &v(10), BPF_NOEXIST).unwrap();
    assert_eq!(errno(map.update(&k(1), &v(11), BPF_NOEXIST)), Errno::EEXIST);
    map.update(&k(1), &v(12), BPF_EXIST).unwrap();
    map.lookup(&k(1), &mut out, 0).unwrap();
    assert_eq!(u64::from_le_bytes(out), 12);
    for flags in [3, 4, 8, 16, 5] {
        assert_eq!(
            errno(map.update(&k(1), &v(1), flags)),
            Errno::EINVAL,
            "flags {flags}"
        );
    }
    assert_eq!(errno(map.lookup(&k(1), &mut out, 1)), Errno::EINVAL);
    assert_eq!(
        errno(map.lookup(&k(1), &mut out, BPF_F_LOCK)),
        Errno::EINVAL
    );
    assert_eq!(errno(map.lookup(&[], &mut out, 0)), Errno::EFAULT);
    assert_eq!(
        map.lookup(&[0; 3], &mut out, 0),
        Err(MapError::KeySize {
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        map.lookup(&k(1), &mut [0; 4], 0),
        Err(MapError::ValueSize {
            expected: 8,
            got: 4
        })
    );
    map.delete(&k(1)).unwrap();
    assert_eq!(errno(map.delete(&k(1))), Errno::ENOENT);
    consistent(&map);
}

#[test]
fn a_full_map_refuses_new_keys_with_e2big_but_replaces_existing_ones() {
    let s = TestStore::new("hash", "full");
    for flags in [0, BPF_F_NO_PREALLOC] {
        for map_type in [MapType::Hash, MapType::PercpuHash] {
            let map = create(&s, &def(map_type, 4, 8, 4, flags));
            let vlen = map.info().user_value_size();
            for i in 0..4 {
                map.update(&k(i), &vec![i as u8; vlen], BPF_ANY).unwrap();
            }
            assert_eq!(
                errno(map.update(&k(9), &vec![0; vlen], BPF_ANY)),
                Errno::E2BIG
            );
            assert_eq!(
                errno(map.update(&k(9), &vec![0; vlen], BPF_NOEXIST)),
                Errno::E2BIG
            );
            assert_eq!(
                errno(map.update(&k(1), &vec![0; vlen], BPF_NOEXIST)),
                Errno::EEXIST
            );
            for round in 0..100u8 {
                map.update(&k(2), &vec![round; vlen], BPF_ANY).unwrap();
                map.update(&k(3), &vec![round; vlen], BPF_EXIST).unwrap();
            }
            let mut out = vec![0u8; vlen];
            map.lookup(&k(2), &mut out, 0).unwrap();
            assert_eq!(out, vec![99; vlen]);
            map.delete(&k(0)).unwrap();
            map.update(&k(9), &vec![9; vlen], BPF_NOEXIST).unwrap();
            assert_eq!(
                errno(map.update(&k(10), &vec![0; vlen], BPF_ANY)),
                Errno::E2BIG
            );
            consistent(&map);
        }
    }
}

#[test]
fn iteration_is_bucket_order_newest_first_and_replacement_moves_a_hash_key() {
    let s = TestStore::new("hash", "order");
    let map = create(&s, &def(MapType::Hash, 4, 8, 8, BPF_F_ZERO_SEED));
    let mut next = [0u8; 4];
    assert_eq!(errno(map.get_next_key(None, &mut next)), Errno::ENOENT);
    let inserted: Vec<u32> = (0..8).collect();
    for &i in &inserted {
        map.update(&k(i), &v(u64::from(i)), BPF_ANY).unwrap();
    }
    // The kernel's order for these keys, observed with bpftool (see the kernel test below).
    assert_eq!(keys_in_order(&map), vec![0, 4, 7, 2, 1, 6, 5, 3]);
    assert_eq!(keys_in_order(&map), model_order(&inserted, 8));
    // A missing key restarts at the first key.
    map.get_next_key(Some(&k(1000)), &mut next).unwrap();
    assert_eq!(u32::from_le_bytes(next), 0);
    // Find two keys sharing a bucket; replacing the older one moves it in front of the newer.
    let big = create(&s, &def(MapType::Hash, 4, 8, 4, BPF_F_ZERO_SEED));
    let bucket = |key: u32| htab_hash(&k(key), 0) & 3;
    let a = 0;
    let b = (1..).find(|&x| bucket(x) == bucket(a)).unwrap();
    big.update(&k(a), &v(1), BPF_ANY).unwrap();
    big.update(&k(b), &v(2), BPF_ANY).unwrap();
    assert_eq!(keys_in_order(&big), vec![b, a]);
    big.update(&k(a), &v(3), BPF_ANY).unwrap();
    assert_eq!(keys_in_order(&big), vec![a, b]);
    // PERCPU_HASH updates in place: the key keeps its position.
    let pc = create(&s, &def(MapType::PercpuHash, 4, 8, 4, BPF_F_ZERO_SEED));
    let vlen = pc.info().user_value_size();
    pc.update(&k(a), &vec![1; vlen], BPF_ANY).unwrap();
    pc.update(&k(b), &vec![2; vlen], BPF_ANY).unwrap();
    pc.update(&k(a), &vec![3; vlen], BPF_ANY).unwrap();
    assert_eq!(keys_in_order(&pc), vec![b, a]);
    consistent(&big);
}

#[test]
fn delete_then_next_visits_every_key_once() {
    let s = TestStore::new("hash", "delnext");
    let map = create(&s, &def(MapType::Hash, 4, 4, 32, 0));
    for i in 0..20 {
        map.update(&k(i), &k(i), BPF_ANY).unwrap();
    }
    let mut seen = Vec::new();
    let mut next = [0u8; 4];
    let mut current: Option<[u8; 4]> = None;
    loop {
        let r = map.get_next_key(current.as_ref().map(|c| &c[..]), &mut next);
        if let Some(c) = current {
            map.delete(&c).unwrap();
        }
        if r.is_err() {
            assert_eq!(errno(r), Errno::ENOENT);
            break;
        }
        seen.push(u32::from_le_bytes(next));
        current = Some(next);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    assert_eq!(errno(map.get_next_key(None, &mut next)), Errno::ENOENT);
    consistent(&map);
}

#[test]
fn lookup_and_delete_returns_the_value_and_removes_the_key() {
    let s = TestStore::new("hash", "lad");
    for map_type in [MapType::Hash, MapType::PercpuHash] {
        let map = create(&s, &def(map_type, 4, 4, 8, 0));
        let vlen = map.info().user_value_size();
        let value: Vec<u8> = (0..vlen as u8).collect();
        map.update(&k(5), &value, BPF_ANY).unwrap();
        let mut out = vec![0u8; vlen];
        assert_eq!(
            errno(map.lookup_and_delete(&k(5), &mut out, 1)),
            Errno::EINVAL
        );
        assert_eq!(
            errno(map.lookup_and_delete(&k(5), &mut out, BPF_F_LOCK)),
            Errno::EINVAL
        );
        map.lookup_and_delete(&k(5), &mut out, 0).unwrap();
        assert_eq!(out, value);
        assert_eq!(errno(map.lookup(&k(5), &mut out, 0)), Errno::ENOENT);
        assert_eq!(
            errno(map.lookup_and_delete(&k(5), &mut out, 0)),
            Errno::ENOENT
        );
        consistent(&map);
    }
}

#[test]
fn percpu_values_use_the_kernel_layout_and_helpers_own_one_slot() {
    let s = TestStore::new("hash", "percpu");
    let cpus = possible_cpus() as usize;
    let map = create(&s, &def(MapType::PercpuHash, 4, 4, 8, 0));
    assert_eq!(map.info().user_value_size(), 8 * cpus);
    // Padding bytes round-trip.
    let mut value = vec![0u8; 8 * cpus];
    for cpu in 0..cpus {
        value[cpu * 8..cpu * 8 + 4].copy_from_slice(&(cpu as u32 + 1).to_le_bytes());
        value[cpu * 8 + 4..cpu * 8 + 8].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    }
    map.update(&k(1), &value, BPF_ANY).unwrap();
    let mut out = vec![0u8; 8 * cpus];
    map.lookup(&k(1), &mut out, 0).unwrap();
    assert_eq!(out, value);
    // A helper insert of a new key from the last CPU zero-fills the other CPUs' slots.
    let last = cpus as u32 - 1;
    map.helper_update(&k(2), &0x77u32.to_le_bytes(), BPF_ANY, last)
        .unwrap();
    map.lookup(&k(2), &mut out, 0).unwrap();
    let mut expected = vec![0u8; 8 * cpus];
    expected[last as usize * 8] = 0x77;
    assert_eq!(out, expected);
    // A helper update of an existing key writes only its CPU's slot.
    map.helper_update(&k(1), &0x55u32.to_le_bytes(), BPF_ANY, 0)
        .unwrap();
    map.lookup(&k(1), &mut out, 0).unwrap();
    let mut expected = value.clone();
    expected[0..4].copy_from_slice(&0x55u32.to_le_bytes());
    assert_eq!(out, expected);
    // helper_lookup points at this CPU's slot.
    let at = map.helper_lookup(&k(2), last).unwrap();
    let mut slot = [0u8; 4];
    map.region().read(at.offset, &mut slot);
    assert_eq!(u32::from_le_bytes(slot), 0x77);
    assert_eq!(at.len, 4);
    assert!(map.helper_lookup(&k(3), 0).is_none());
    assert_eq!(
        map.helper_update(&k(2), &[0; 4], BPF_NOEXIST, 0),
        Err(Errno::EEXIST)
    );
    assert_eq!(map.helper_delete(&k(2)), Ok(()));
    assert_eq!(map.helper_delete(&k(2)), Err(Errno::ENOENT));
}

#[test]
fn helper_side_values_stay_where_lookup_said_and_for_each_walks_in_order() {
    let s = TestStore::new("hash", "helper");
    let map = create(&s, &def(MapType::Hash, 4, 8, 8, BPF_F_ZERO_SEED));
    for i in 0..8 {
        map.helper_update(&k(i), &v(u64::from(i) * 10), BPF_ANY, 0)
            .unwrap();
    }
    let at = map.helper_lookup(&k(3), 0).unwrap();
    // The program writes through its pointer; the syscall side sees it.
    map.region().write(at.offset, &v(333));
    let mut out = [0u8; 8];
    map.lookup(&k(3), &mut out, 0).unwrap();
    assert_eq!(u64::from_le_bytes(out), 333);
    let mut walked = Vec::new();
    let calls = map
        .for_each(0, &mut |key, value| {
            let mut b = [0u8; 8];
            map.region().read(value.offset, &mut b);
            walked.push((
                u32::from_le_bytes(key.try_into().unwrap()),
                u64::from_le_bytes(b),
            ));
            true
        })
        .unwrap();
    assert_eq!(calls, 8);
    let order: Vec<u32> = walked.iter().map(|(key, _)| *key).collect();
    assert_eq!(order, keys_in_order(&map));
    assert!(walked.contains(&(3, 333)) && walked.contains(&(7, 70)));
    // The callback may delete: stop after two.
    let mut n = 0;
    let calls = map
        .for_each(0, &mut |key, _| {
            map.helper_delete(key).unwrap();
            n += 1;
            n < 2
        })
        .unwrap();
    assert_eq!(calls, 2);
    assert_eq!(keys_in_order(&map).len(), 6);
    assert_eq!(map.helper_update(&k(100), &v(0), BPF_ANY, 0), Ok(()));
    assert_eq!(map.helper_update(&k(101), &v(0), BPF_ANY, 0), Ok(()));
    assert_eq!(
        map.helper_update(&k(102), &v(0), BPF_ANY, 0),
        Err(Errno::E2BIG)
    );
    consistent(&map);
}

fn batch_lookup(
    map: &UserMap,
    in_batch: Option<u32>,
    count: u32,
    delete: bool,
) -> (Result<(), MapError>, u32, u32, Vec<u32>) {
    let vlen = map.info().user_value_size();
    let mut keys = vec![0u8; count as usize * 4];
    let mut values = vec![0u8; count as usize * vlen];
    let mut out = [0u8; 4];
    let inb = in_batch.map(|b| b.to_le_bytes());
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count,
    };
    let r = if delete {
        map.lookup_and_delete_batch(inb.as_ref().map(|b| &b[..]), &mut out, &mut buffers, 0, 0)
    } else {
        map.lookup_batch(inb.as_ref().map(|b| &b[..]), &mut out, &mut buffers, 0, 0)
    };
    let n = buffers.count;
    let got = keys
        .chunks(4)
        .take(n as usize)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (r, n, u32::from_le_bytes(out), got)
}

#[test]
fn batch_operations_follow_bucket_and_count_rules() {
    let s = TestStore::new("hash", "batch");
    let map = create(&s, &def(MapType::Hash, 4, 8, 4, BPF_F_ZERO_SEED));
    let bucket = |key: u32| htab_hash(&k(key), 0) & 3;
    // Two keys in the first non-empty bucket.
    let a = (0..).find(|&x| bucket(x) == 0).unwrap();
    let b = (a + 1..).find(|&x| bucket(x) == 0).unwrap();
    let c = (0..).find(|&x| bucket(x) == 2).unwrap();
    for key in [a, b, c] {
        map.update(&k(key), &v(u64::from(key)), BPF_ANY).unwrap();
    }
    // count 0: nothing happens.
    let (r, n, _, _) = batch_lookup(&map, None, 0, false);
    assert_eq!((r, n), (Ok(()), 0));
    // The first bucket (2 elements) does not fit in 1: ENOSPC, count 0.
    let (r, n, _, _) = batch_lookup(&map, None, 1, false);
    assert_eq!((errno(r), n), (Errno::ENOSPC, 0));
    // Two fit: the whole bucket; empty buckets are skipped, so the cursor points at the next
    // non-empty bucket (2), as in the kernel's loop.
    let (r, n, cursor, got) = batch_lookup(&map, None, 2, false);
    assert_eq!((r, n, got.clone()), (Ok(()), 2, vec![b, a]));
    assert_eq!(cursor, 2);
    let (r, n, cursor, got) = batch_lookup(&map, Some(cursor), 2, false);
    assert_eq!((errno(r), n, cursor, got), (Errno::ENOENT, 1, 4, vec![c]));
    // Everything at once ends with ENOENT and the full count.
    let (r, n, _, got) = batch_lookup(&map, None, 10, false);
    assert_eq!((errno(r), n, got), (Errno::ENOENT, 3, keys_in_order(&map)));
    // A cursor past the buckets: ENOENT, count 0.
    let (r, n, _, _) = batch_lookup(&map, Some(4), 10, false);
    assert_eq!((errno(r), n), (Errno::ENOENT, 0));
    // Bad flags leave count untouched.
    let mut keys = vec![0u8; 8];
    let mut values = vec![0u8; 16];
    let mut out = [0u8; 4];
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 2,
    };
    assert_eq!(
        errno(map.lookup_batch(None, &mut out, &mut buffers, 0, 1)),
        Errno::EINVAL
    );
    assert_eq!(
        errno(map.lookup_batch(None, &mut out, &mut buffers, BPF_NOEXIST, 0)),
        Errno::EINVAL
    );
    assert_eq!(buffers.count, 2);
    // Lookup-and-delete returns and removes.
    let (r, n, _, got) = batch_lookup(&map, None, 10, true);
    assert_eq!((errno(r), n, got.len()), (Errno::ENOENT, 3, 3));
    assert_eq!(keys_in_order(&map), Vec::<u32>::new());
    consistent(&map);
    // Update batch is BPF_ANY-like and rejects NOEXIST/EXIST in elem_flags.
    let mut keys: Vec<u8> = [1u32, 2, 3].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut values: Vec<u8> = [10u64, 20, 30]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 3,
    };
    assert_eq!(
        errno(map.update_batch(&mut buffers, BPF_NOEXIST, 0)),
        Errno::EINVAL
    );
    assert_eq!(buffers.count, 3);
    map.update_batch(&mut buffers, 0, 1).unwrap();
    assert_eq!(buffers.count, 3);
    map.update_batch(&mut buffers, 0, 0).unwrap();
    // Delete batch stops at the first missing key: [1, 99, 2] deletes 1 and reports ENOENT, 1.
    let mut keys: Vec<u8> = [1u32, 99, 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut [],
        count: 3,
    };
    assert_eq!(errno(map.delete_batch(&mut buffers, 0, 0)), Errno::ENOENT);
    assert_eq!(buffers.count, 1);
    assert_eq!(keys_in_order(&map).len(), 2);
    // Update batch into a full map stops with E2BIG and counts what succeeded.
    let mut keys: Vec<u8> = [4u32, 5, 6].iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut values = vec![0u8; 24];
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 3,
    };
    assert_eq!(errno(map.update_batch(&mut buffers, 0, 0)), Errno::E2BIG);
    assert_eq!(buffers.count, 2);
    consistent(&map);
}

#[test]
fn freeze_and_access_modes_give_eperm() {
    let s = TestStore::new("hash", "perm");
    let map = create(&s, &def(MapType::Hash, 4, 8, 8, 0));
    map.update(&k(1), &v(1), BPF_ANY).unwrap();
    map.freeze().unwrap();
    assert!(map.info().frozen);
    assert_eq!(errno(map.update(&k(1), &v(2), BPF_ANY)), Errno::EPERM);
    assert_eq!(errno(map.delete(&k(1))), Errno::EPERM);
    let mut out = [0u8; 8];
    assert_eq!(
        errno(map.lookup_and_delete(&k(1), &mut out, 0)),
        Errno::EPERM
    );
    assert_eq!(errno(map.freeze()), Errno::EPERM);
    map.lookup(&k(1), &mut out, 0).unwrap();
    assert_eq!(u64::from_le_bytes(out), 1);
    // Programs still write a frozen map.
    map.helper_update(&k(1), &v(5), BPF_ANY, 0).unwrap();

    let ro = create(&s, &def(MapType::Hash, 4, 8, 8, BPF_F_RDONLY));
    assert_eq!(ro.access(), Access::ReadOnly);
    assert_eq!(errno(ro.update(&k(1), &v(1), BPF_ANY)), Errno::EPERM);
    assert_eq!(errno(ro.freeze()), Errno::EPERM);
    let wo = create(&s, &def(MapType::Hash, 4, 8, 8, BPF_F_WRONLY));
    wo.update(&k(1), &v(1), BPF_ANY).unwrap();
    assert_eq!(errno(wo.lookup(&k(1), &mut out, 0)), Errno::EPERM);
    let mut next = [0u8; 4];
    assert_eq!(errno(wo.get_next_key(None, &mut next)), Errno::EPERM);
    assert_eq!(
        errno(wo.lookup_and_delete(&k(1), &mut out, 0)),
        Errno::EPERM
    );
}

#[test]
fn threads_updating_one_map_keep_it_consistent() {
    let s = TestStore::new("hash", "threads");
    let map = create(&s, &def(MapType::Hash, 4, 8, 1024, 0));
    std::thread::scope(|scope| {
        for t in 0..4u32 {
            let map = &map;
            scope.spawn(move || {
                for round in 0..50u64 {
                    for i in 0..64u32 {
                        let key = k(t * 1000 + i);
                        map.update(&key, &v(round), BPF_ANY).unwrap();
                        if i.is_multiple_of(3) {
                            map.delete(&key).unwrap();
                        }
                    }
                }
            });
        }
    });
    consistent(&map);
    assert_eq!(keys_in_order(&map).len(), 4 * (64 - 22));
    let mut out = [0u8; 8];
    map.lookup(&k(3001), &mut out, 0).unwrap();
    assert_eq!(u64::from_le_bytes(out), 49);
}

fn kernel_available() -> bool {
    if std::env::var_os("BPFMAPS_SKIP_KERNEL").is_some_and(|v| v == "1") {
        eprintln!("BPFMAPS_SKIP_KERNEL=1: skipping the comparison with the real kernel");
        return false;
    }
    true
}

fn bpftool(args: &[&str]) -> String {
    let out = Command::new("bpftool").args(args).output().expect(
        "bpftool must be installed to compare with the kernel (set BPFMAPS_SKIP_KERNEL=1 to skip)",
    );
    assert!(
        out.status.success(),
        "bpftool {args:?} failed (root and BPF needed; BPFMAPS_SKIP_KERNEL=1 skips): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Keys of a `bpftool -j map dump` in dump (get_next_key) order, as little-endian u32s of the
/// first four key bytes... for keys of any size: the key bytes.
fn dumped_keys(json: &str) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    for part in json.split("\"key\":[").skip(1) {
        let list = &part[..part.find(']').unwrap()];
        let bytes = list
            .split(',')
            .map(|b| {
                u8::from_str_radix(b.trim().trim_matches('"').trim_start_matches("0x"), 16).unwrap()
            })
            .collect();
        keys.push(bytes);
    }
    keys
}

#[test]
fn zero_seed_iteration_order_matches_the_kernel_key_for_key() {
    if !kernel_available() {
        return;
    }
    let s = TestStore::new("hash", "kernel");
    // key sizes 4 (jhash2) and 6 (jhash), with a replacement in the middle.
    for (key_size, entries) in [(4u32, 8u32), (4, 64), (6, 16), (12, 32)] {
        let pin = format!(
            "/sys/fs/bpf/bpfmaps_hash_order_{}_{key_size}_{entries}",
            std::process::id()
        );
        let _ = std::fs::remove_file(&pin);
        bpftool(&[
            "map",
            "create",
            &pin,
            "type",
            "hash",
            "key",
            &key_size.to_string(),
            "value",
            "4",
            "entries",
            &entries.to_string(),
            "name",
            "order",
            "flags",
            "64",
        ]);
        let map = create(
            &s,
            &def(MapType::Hash, key_size, 4, entries, BPF_F_ZERO_SEED),
        );
        let key_of = |i: u32| {
            let mut key = vec![0u8; key_size as usize];
            let n = key.len().min(4);
            key[..n].copy_from_slice(&(i.wrapping_mul(2_654_435_761) >> 3).to_le_bytes()[..n]);
            key[key_size as usize - 1] ^= i as u8;
            key
        };
        let mut ops: Vec<u32> = (0..entries).collect();
        ops.push(1); // replace key 1: it moves to its bucket's head
        for i in ops {
            let key = key_of(i);
            let mut args: Vec<String> = ["map", "update", "pinned", &pin, "key"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.extend(key.iter().map(|b| b.to_string()));
            args.extend(["value", "1", "0", "0", "0"].iter().map(|s| s.to_string()));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            bpftool(&refs);
            map.update(&key, &[1, 0, 0, 0], BPF_ANY).unwrap();
        }
        let kernel = dumped_keys(&bpftool(&["-j", "map", "dump", "pinned", &pin]));
        std::fs::remove_file(&pin).unwrap();
        let mut user = Vec::new();
        let mut next = vec![0u8; key_size as usize];
        let mut prev: Option<Vec<u8>> = None;
        while map.get_next_key(prev.as_deref(), &mut next).is_ok() {
            user.push(next.clone());
            prev = Some(next.clone());
        }
        assert_eq!(kernel.len(), entries as usize);
        assert_eq!(user, kernel, "key_size {key_size}, {entries} entries");
    }
}

/// A lookup-batch trace observed on Linux 6.18 with libbpf (`bpf_map_lookup_batch` on a
/// ZERO_SEED HASH, key 4, value 8, 8 entries, keys 0..6): (capacity, errno or 0, count, cursor,
/// keys) per call, each call resuming from the previous cursor.
#[test]
fn lookup_batch_trace_matches_the_one_observed_on_the_kernel() {
    let s = TestStore::new("hash", "trace");
    let map = create(&s, &def(MapType::Hash, 4, 8, 8, BPF_F_ZERO_SEED));
    for i in 0..6 {
        map.update(&k(i), &v(u64::from(i)), BPF_ANY).unwrap();
    }
    let kernel: [(u32, i32, u32, u32, &[u32]); 8] = [
        (1, 0, 1, 1, &[0]),
        (1, 0, 1, 2, &[4]),
        (1, 0, 1, 3, &[2]),
        (1, 0, 1, 6, &[1]),
        (1, 0, 1, 7, &[5]),
        (1, 2, 1, 8, &[3]),
        (3, 0, 3, 3, &[0, 4, 2]),
        (3, 2, 3, 8, &[1, 5, 3]),
    ];
    let mut cursor: Option<u32> = None;
    for (cap, err, count, out, keys) in kernel {
        if cap == 3 && cursor == Some(8) {
            cursor = None;
        }
        let (r, n, next, got) = batch_lookup(&map, cursor, cap, false);
        let got_err = r.err().and_then(|e| e.errno()).map_or(0, |e| e.0);
        assert_eq!((got_err, n, next, got), (err, count, out, keys.to_vec()));
        cursor = Some(next);
    }
}

#[test]
fn lockless_lookups_never_return_a_torn_value() {
    let s = TestStore::new("hash", "seqlock");
    for map_type in [MapType::Hash, MapType::PercpuHash] {
        let map = create(&s, &def(map_type, 4, 64, 16, 0));
        let vlen = map.info().user_value_size();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (map, stop) = (&map, &stop);
            // Writers: key k always holds a value whose every byte is (k + round) % 256, so a
            // torn value shows up as mixed bytes.
            scope.spawn(move || {
                let mut round = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for key in 0..16u32 {
                        let byte = ((key + round) % 256) as u8;
                        map.update(&k(key), &vec![byte; vlen], BPF_ANY).unwrap();
                        if round.is_multiple_of(7) && key.is_multiple_of(5) {
                            let _ = map.delete(&k(key));
                        }
                    }
                    round += 1;
                }
            });
            let mut out = vec![0u8; vlen];
            for i in 0..200_000u32 {
                let key = i % 16;
                if map.lookup(&k(key), &mut out, 0).is_ok() {
                    assert!(out.iter().all(|&b| b == out[0]), "torn value {out:?}");
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        consistent(&map);
    }
}

/// Creates a kernel map with bpftool and returns the errno it failed with (`None` on success),
/// removing the map again.
fn kernel_create_errno(d: &MapDef) -> Option<Errno> {
    let pin = format!("/sys/fs/bpf/bpfmaps_hash_create_{}", std::process::id());
    let _ = std::fs::remove_file(&pin);
    let args = [
        "map".to_string(),
        "create".into(),
        pin.clone(),
        "type".into(),
        d.map_type.name().into(),
        "key".into(),
        d.key_size.to_string(),
        "value".into(),
        d.value_size.to_string(),
        "entries".into(),
        d.max_entries.to_string(),
        "name".into(),
        "x".into(),
        "flags".into(),
        d.map_flags.to_string(),
    ];
    let out = Command::new("bpftool")
        .args(&args)
        .output()
        .expect("bpftool");
    if out.status.success() {
        std::fs::remove_file(&pin).unwrap();
        return None;
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let known = [
        ("Invalid argument", Errno::EINVAL),
        ("Argument list too long", Errno::E2BIG),
        ("Operation not permitted", Errno::EPERM),
        ("Unknown error 524", Errno::ENOTSUPP),
        ("Cannot allocate memory", Errno::ENOMEM),
    ];
    let found = known.iter().find(|(words, _)| text.contains(words));
    Some(
        found
            .unwrap_or_else(|| panic!("bpftool failed unexpectedly for {d:?}: {text}"))
            .1,
    )
}

#[test]
fn creation_errnos_match_the_kernel_case_for_case() {
    if !kernel_available() {
        return;
    }
    let s = TestStore::new("hash", "kcreate");
    let h = MapType::Hash;
    let p = MapType::PercpuHash;
    let cases = [
        def(h, 0, 4, 4, 0),
        def(h, 4, 0, 4, 0),
        def(h, 4, 4, 0, 0),
        def(h, 4, 4, 4, BPF_F_MMAPABLE),
        def(h, 4, 4, 4, 1 << 20),
        def(h, 4, 4, 4, BPF_F_NO_COMMON_LRU),
        def(h, 4, 4, 4, BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG),
        def(h, 4, 4, 4, BPF_F_NUMA_NODE),
        def(p, 4, 4, 4, BPF_F_NUMA_NODE),
        def(h, 4, (4 << 20) - 48, 1, 0),
        def(h, 4, (4 << 20) - 64, 1, 0),
        def(p, 4, 32769, 1, 0),
        def(p, 4, 32768, 1, 0),
        def(h, 4, 4, (1 << 27) + 1, 0),
        def(h, 4, 4, 1 << 31, BPF_F_NO_PREALLOC),
        def(h, 4096, 4, 4, 0),
        def(h, 3, 4, 4, BPF_F_ZERO_SEED | BPF_F_NO_PREALLOC),
        def(MapType::Array, 8, 4, 4, 0),
        def(MapType::Array, 4, 0, 4, 0),
        def(MapType::Array, 4, 4, 4, BPF_F_NO_PREALLOC),
        def(MapType::Array, 4, 4, 4, BPF_F_ZERO_SEED),
        def(MapType::Array, 4, 4, 4, BPF_F_PRESERVE_ELEMS),
        def(MapType::Array, 4, 4, 7, BPF_F_MMAPABLE),
        def(MapType::PercpuArray, 4, 4, 4, BPF_F_MMAPABLE),
        def(MapType::PercpuArray, 4, 4, 4, BPF_F_NUMA_NODE),
        def(MapType::PercpuArray, 4, 32769, 4, 0),
        def(MapType::PercpuArray, 4, 32768, 2, 0),
    ];
    for d in cases {
        let user = UserMap::create_in(&s.store, &d)
            .err()
            .map(|e| e.errno().expect("an errno"));
        assert_eq!(user, kernel_create_errno(&d), "{d:?}");
    }
}

#[test]
fn replaced_elements_parked_as_stripe_spares_never_shrink_the_map() {
    let s = TestStore::new("hash", "spares");
    let map = create(&s, &def(MapType::Hash, 4, 8, 64, 0));
    for round in 0..3u64 {
        for i in 0..64 {
            map.update(&k(i), &v(round), BPF_ANY).unwrap();
        }
        consistent(&map);
    }
    for i in 0..64 {
        let mut out = [0u8; 8];
        map.lookup(&k(i), &mut out, 0).unwrap();
        assert_eq!(out, v(2));
        map.delete(&k(i)).unwrap();
    }
    consistent(&map);
    for i in 100..164 {
        map.update(&k(i), &v(u64::from(i)), BPF_NOEXIST).unwrap();
    }
    assert_eq!(errno(map.update(&k(7), &v(0), BPF_ANY)), Errno::E2BIG);
    for i in 100..164 {
        map.update(&k(i), &v(0), BPF_EXIST).unwrap();
    }
    consistent(&map);
}
