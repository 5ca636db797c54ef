//! ARRAY and PERCPU_ARRAY on the user engine: creation errnos, index rules, get_next_key, the
//! generic batch paths, ENOTSUPP operations, per-CPU layout, the program-side API and freeze.

use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::update_flags::*;
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_maps::{possible_cpus, UserMap};

mod common;
use common::TestStore;

fn def(map_type: MapType, value_size: u32, max_entries: u32, map_flags: u32) -> MapDef {
    MapDef {
        map_type,
        key_size: 4,
        value_size,
        max_entries,
        map_flags,
        name: "arr".into(),
    }
}

fn errno<T: std::fmt::Debug>(r: Result<T, MapError>) -> Errno {
    r.unwrap_err().errno().expect("an errno")
}

fn k(n: u32) -> [u8; 4] {
    n.to_le_bytes()
}

#[test]
fn creation_errnos() {
    let s = TestStore::new("array", "create");
    let mut bad_key = def(MapType::Array, 4, 4, 0);
    bad_key.key_size = 8;
    let cases = [
        (bad_key, Some(Errno::EINVAL)),
        (def(MapType::Array, 0, 4, 0), Some(Errno::EINVAL)),
        (def(MapType::Array, 4, 0, 0), Some(Errno::EINVAL)),
        (
            def(MapType::Array, 4, 4, BPF_F_NO_PREALLOC),
            Some(Errno::EINVAL),
        ),
        (
            def(MapType::Array, 4, 4, BPF_F_ZERO_SEED),
            Some(Errno::EINVAL),
        ),
        (
            def(MapType::PercpuArray, 4, 4, BPF_F_MMAPABLE),
            Some(Errno::EINVAL),
        ),
        (
            def(MapType::PercpuArray, 4, 4, BPF_F_INNER_MAP),
            Some(Errno::EINVAL),
        ),
        (
            def(MapType::PercpuArray, 4, 4, BPF_F_NUMA_NODE),
            Some(Errno::EINVAL),
        ),
        (
            def(MapType::Array, 4, 4, BPF_F_PRESERVE_ELEMS),
            Some(Errno::EINVAL),
        ),
        (def(MapType::PercpuArray, 32769, 4, 0), Some(Errno::E2BIG)),
        (def(MapType::Array, 0x8000_0000, 1, 0), Some(Errno::E2BIG)),
        (
            def(MapType::Array, 4, 7, BPF_F_MMAPABLE | BPF_F_NUMA_NODE),
            None,
        ),
        (def(MapType::PercpuArray, 32768, 2, 0), None),
        (
            def(MapType::Array, 1 << 20, 1 << 20, 0),
            Some(Errno::ENOMEM),
        ),
    ];
    for (d, expected) in cases {
        let got = UserMap::create_in(&s.store, &d)
            .err()
            .map(|e| e.errno().expect("an errno"));
        assert_eq!(got, expected, "{d:?}");
    }
}

#[test]
fn index_rules_match_the_kernel() {
    let s = TestStore::new("array", "rules");
    let map = UserMap::create_in(&s.store, &def(MapType::Array, 4, 3, 0)).unwrap();
    // An ARRAY with 4-byte values reads exactly 4 bytes.
    let mut out = [0xffu8; 4];
    map.lookup(&k(2), &mut out, 0).unwrap();
    assert_eq!(out, [0; 4]);
    assert_eq!(errno(map.lookup(&k(3), &mut out, 0)), Errno::ENOENT);
    assert_eq!(errno(map.update(&k(3), &[1; 4], BPF_ANY)), Errno::E2BIG);
    assert_eq!(errno(map.update(&k(3), &[1; 4], BPF_NOEXIST)), Errno::E2BIG);
    assert_eq!(
        errno(map.update(&k(0), &[1; 4], BPF_NOEXIST)),
        Errno::EEXIST
    );
    assert_eq!(errno(map.update(&k(0), &[1; 4], 3)), Errno::EINVAL);
    assert_eq!(errno(map.update(&k(9), &[1; 4], 3)), Errno::EINVAL);
    assert_eq!(errno(map.update(&k(0), &[1; 4], BPF_F_LOCK)), Errno::EINVAL);
    map.update(&k(0), &[1, 2, 3, 4], BPF_EXIST).unwrap();
    map.lookup(&k(0), &mut out, 0).unwrap();
    assert_eq!(out, [1, 2, 3, 4]);
    assert_eq!(errno(map.delete(&k(0))), Errno::EINVAL);
    assert_eq!(errno(map.delete(&k(100))), Errno::EINVAL);
    assert_eq!(errno(map.lookup_and_delete(&k(0), &mut out, 0)), Errno(524));
    assert_eq!(
        errno(map.lookup_and_delete(&k(0), &mut out, BPF_F_LOCK)),
        Errno::EINVAL
    );
    // get_next_key: NULL or out of range gives 0, i gives i+1, the last gives ENOENT.
    let mut next = [0u8; 4];
    map.get_next_key(None, &mut next).unwrap();
    assert_eq!(next, k(0));
    map.get_next_key(Some(&k(77)), &mut next).unwrap();
    assert_eq!(next, k(0));
    map.get_next_key(Some(&k(1)), &mut next).unwrap();
    assert_eq!(next, k(2));
    assert_eq!(
        errno(map.get_next_key(Some(&k(2)), &mut next)),
        Errno::ENOENT
    );
}

#[test]
fn generic_batches_and_enotsupp_batches() {
    let s = TestStore::new("array", "batch");
    let map = UserMap::create_in(&s.store, &def(MapType::Array, 4, 16, 0)).unwrap();
    let mut keys: Vec<u8> = (0..16u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut values: Vec<u8> = (0..16u32).flat_map(|i| (i * 10).to_le_bytes()).collect();
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 16,
    };
    map.update_batch(&mut buffers, 0, 0).unwrap();
    assert_eq!(buffers.count, 16);
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 2,
    };
    assert_eq!(
        errno(map.update_batch(&mut buffers, BPF_EXIST, 0)),
        Errno::EINVAL
    );
    assert_eq!(buffers.count, 2);

    let mut keys = vec![0u8; 4 * 16];
    let mut values = vec![0u8; 4 * 16];
    let mut cursor = [0u8; 4];
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 4,
    };
    map.lookup_batch(None, &mut cursor, &mut buffers, 0, 0)
        .unwrap();
    assert_eq!(buffers.count, 4);
    assert_eq!(cursor, k(3));
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 16,
    };
    let start = cursor;
    assert_eq!(
        errno(map.lookup_batch(Some(&start), &mut cursor, &mut buffers, 0, 0)),
        Errno::ENOENT
    );
    assert_eq!(buffers.count, 12);
    assert_eq!(&keys[..4], &k(4));
    assert_eq!(&values[44..48], &150u32.to_le_bytes());
    assert_eq!(cursor, k(15));
    // At the end: ENOENT with count 0, cursor untouched.
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 4,
    };
    let start = cursor;
    assert_eq!(
        errno(map.lookup_batch(Some(&start), &mut cursor, &mut buffers, 0, 0)),
        Errno::ENOENT
    );
    assert_eq!(buffers.count, 0);

    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 4,
    };
    assert_eq!(
        errno(map.lookup_and_delete_batch(None, &mut cursor, &mut buffers, 0, 0)),
        Errno(524)
    );
    assert_eq!(errno(map.delete_batch(&mut buffers, 0, 0)), Errno(524));
    assert_eq!(buffers.count, 4);
    // Out of range in an update batch: E2BIG after the ones that fit.
    let mut keys: Vec<u8> = [1u32, 16, 2].iter().flat_map(|i| i.to_le_bytes()).collect();
    let mut values = vec![0u8; 12];
    let mut buffers = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 3,
    };
    assert_eq!(errno(map.update_batch(&mut buffers, 0, 0)), Errno::E2BIG);
    assert_eq!(buffers.count, 1);
}

#[test]
fn percpu_array_layout_and_helpers() {
    let s = TestStore::new("array", "percpu");
    let cpus = possible_cpus() as usize;
    let map = UserMap::create_in(&s.store, &def(MapType::PercpuArray, 4, 4, 0)).unwrap();
    let mut out = vec![0xaau8; 8 * cpus];
    map.lookup(&k(1), &mut out, 0).unwrap();
    assert_eq!(out, vec![0; 8 * cpus], "slots never written are zero");
    let value: Vec<u8> = (0..8 * cpus as u8).collect();
    map.update(&k(1), &value, BPF_ANY).unwrap();
    map.lookup(&k(1), &mut out, 0).unwrap();
    assert_eq!(out, value, "padding bytes round-trip");
    assert_eq!(errno(map.update(&k(1), &value, BPF_F_LOCK)), Errno::EINVAL);
    let last = cpus as u32 - 1;
    map.helper_update(&k(1), &[9, 9, 9, 9], BPF_ANY, last)
        .unwrap();
    map.lookup(&k(1), &mut out, 0).unwrap();
    let mut expected = value.clone();
    expected[last as usize * 8..last as usize * 8 + 4].copy_from_slice(&[9; 4]);
    assert_eq!(out, expected);
    let at = map.helper_lookup(&k(1), last).unwrap();
    let mut slot = [0u8; 4];
    map.region().read(at.offset, &mut slot);
    assert_eq!(slot, [9; 4]);
    assert!(map.helper_lookup(&k(4), 0).is_none());
    assert_eq!(map.helper_delete(&k(0)), Err(Errno::EINVAL));
    assert_eq!(
        map.helper_update(&k(4), &[0; 4], BPF_ANY, 0),
        Err(Errno::E2BIG)
    );
    assert_eq!(
        map.helper_update(&k(0), &[0; 4], BPF_NOEXIST, 0),
        Err(Errno::EEXIST)
    );
    let mut seen = Vec::new();
    let calls = map
        .for_each(0, &mut |key, _| {
            seen.push(u32::from_le_bytes(key.try_into().unwrap()));
            seen.len() < 3
        })
        .unwrap();
    assert_eq!((calls, seen), (3, vec![0, 1, 2]));
}

#[test]
fn frozen_arrays_refuse_syscall_writes() {
    let s = TestStore::new("array", "freeze");
    let map = UserMap::create_in(&s.store, &def(MapType::Array, 8, 2, 0)).unwrap();
    map.update(&k(0), &7u64.to_le_bytes(), BPF_ANY).unwrap();
    map.freeze().unwrap();
    assert_eq!(errno(map.update(&k(0), &[0; 8], BPF_ANY)), Errno::EPERM);
    assert_eq!(errno(map.delete(&k(0))), Errno::EPERM);
    assert_eq!(errno(map.freeze()), Errno::EPERM);
    let mut out = [0u8; 8];
    map.lookup(&k(0), &mut out, 0).unwrap();
    assert_eq!(u64::from_le_bytes(out), 7);
}
