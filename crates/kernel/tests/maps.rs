//! Every map type driven from Rust against the real kernel through `KernelMap`: creation rules,
//! element operations, iteration order rules, per-CPU layout, batch operations, freeze, fd access
//! modes, pinning and lifetime, listing, and interop with bpftool. Each assertion is an exact
//! errno or value from `kernel-map-semantics.md` sections 2–8 as observed on this kernel.

mod maps_support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::update_flags::*;
use bpfmaps_abi::{BatchBuffers, Errno, MapError, MapOps, MapType};
use bpfmaps_kernel::map::{self, possible_cpus, Access, KernelMap};
use bpfmaps_kernel::sys;
use maps_support::*;

const ENOTSUPP: Errno = Errno::ENOTSUPP;

fn ncpus() -> usize {
    possible_cpus().expect("possible cpus") as usize
}

fn lookup_u64(m: &KernelMap, key: u32) -> Result<u64, Errno> {
    let mut v = [0u8; 8];
    m.lookup(&k(key), &mut v, 0)
        .map_err(|e| e.errno().expect("errno"))?;
    Ok(u64::from_ne_bytes(v))
}

fn keys_of(m: &KernelMap) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur: Option<[u8; 4]> = None;
    loop {
        let mut next = [0u8; 4];
        match m.get_next_key(cur.as_ref().map(|c| &c[..]), &mut next) {
            Ok(()) => {
                out.push(u32::from_ne_bytes(next));
                cur = Some(next);
            }
            Err(e) => {
                assert_eq!(e, MapError::Errno(Errno::ENOENT));
                return out;
            }
        }
        assert!(out.len() <= 100_000, "runaway iteration");
    }
}

#[test]
fn hash_element_operations_and_errnos() {
    require_kernel!();
    let m = create(MapType::Hash, 4, 8, 4, 0);
    assert_eq!(lookup_u64(&m, 1), Err(Errno::ENOENT));
    assert_eq!(errno(m.delete(&k(1))), Some(Errno::ENOENT));
    assert_eq!(
        errno(m.update(&k(1), &v64(10), BPF_EXIST)),
        Some(Errno::ENOENT)
    );
    assert_eq!(errno(m.update(&k(1), &v64(10), BPF_ANY)), None);
    assert_eq!(lookup_u64(&m, 1), Ok(10));
    assert_eq!(
        errno(m.update(&k(1), &v64(11), BPF_NOEXIST)),
        Some(Errno::EEXIST)
    );
    assert_eq!(errno(m.update(&k(1), &v64(12), BPF_EXIST)), None);
    assert_eq!(lookup_u64(&m, 1), Ok(12));
    for bad in [3u64, 8, 16] {
        assert_eq!(
            errno(m.update(&k(1), &v64(0), bad)),
            Some(Errno::EINVAL),
            "flags {bad}"
        );
    }
    // BPF_F_LOCK on a value without a spin lock.
    assert_eq!(
        errno(m.update(&k(1), &v64(0), BPF_F_LOCK)),
        Some(Errno::EINVAL)
    );
    let mut v = [0u8; 8];
    assert_eq!(
        errno(m.lookup(&k(1), &mut v, BPF_F_LOCK)),
        Some(Errno::EINVAL)
    );
    assert_eq!(errno(m.lookup(&k(1), &mut v, 1)), Some(Errno::EINVAL));
    // lookup_and_delete returns the value and removes the key.
    assert_eq!(errno(m.lookup_and_delete(&k(1), &mut v, 0)), None);
    assert_eq!(u64::from_ne_bytes(v), 12);
    assert_eq!(
        errno(m.lookup_and_delete(&k(1), &mut v, 0)),
        Some(Errno::ENOENT)
    );
    // Full map: a new key is E2BIG, NOEXIST on an existing key EEXIST, ANY on one succeeds.
    for key in 0..4 {
        m.update(&k(key), &v64(u64::from(key)), BPF_NOEXIST)
            .unwrap();
    }
    assert_eq!(errno(m.update(&k(9), &v64(9), BPF_ANY)), Some(Errno::E2BIG));
    assert_eq!(
        errno(m.update(&k(9), &v64(9), BPF_NOEXIST)),
        Some(Errno::E2BIG)
    );
    assert_eq!(
        errno(m.update(&k(2), &v64(9), BPF_NOEXIST)),
        Some(Errno::EEXIST)
    );
    assert_eq!(errno(m.update(&k(2), &v64(22), BPF_ANY)), None);
    assert_eq!(lookup_u64(&m, 2), Ok(22));
    assert_eq!(errno(m.delete(&k(2))), None);
    assert_eq!(errno(m.update(&k(9), &v64(9), BPF_ANY)), None);
    // Wrong buffer lengths never reach the kernel.
    assert_eq!(
        m.lookup(&[0; 3], &mut v, 0),
        Err(MapError::KeySize {
            expected: 4,
            got: 3
        })
    );
    assert_eq!(
        m.update(&k(1), &[0; 4], 0),
        Err(MapError::ValueSize {
            expected: 8,
            got: 4
        })
    );
}

#[test]
fn no_prealloc_hash_is_full_at_max_entries() {
    require_kernel!();
    let m = create(MapType::Hash, 4, 8, 3, BPF_F_NO_PREALLOC);
    for key in 0..3 {
        m.update(&k(key), &v64(1), BPF_ANY).unwrap();
    }
    assert_eq!(errno(m.update(&k(7), &v64(1), BPF_ANY)), Some(Errno::E2BIG));
    assert_eq!(errno(m.update(&k(0), &v64(2), BPF_ANY)), None);
}

#[test]
fn hash_creation_rules() {
    require_kernel!();
    use MapType::*;
    assert_eq!(create_errno(Hash, 0, 8, 4, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Hash, 4, 0, 4, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Hash, 4, 8, 0, 0), Some(Errno::EINVAL));
    assert_eq!(
        create_errno(Hash, 4096, 8, 4, 0),
        None,
        "big keys are accepted"
    );
    assert_eq!(
        create_errno(Hash, 4, 8, (1 << 27) + 1, BPF_F_NO_PREALLOC),
        Some(Errno::E2BIG)
    );
    assert_eq!(create_errno(Hash, 4, 8, 1 << 31, 0), Some(Errno::E2BIG));
    assert_eq!(create_errno(Hash, 4, (4 << 20) - 64, 1, 0), None);
    assert_eq!(
        create_errno(Hash, 4, (4 << 20) - 48, 1, 0),
        Some(Errno::E2BIG)
    );
    assert_eq!(create_errno(PercpuHash, 4, 32768, 1, 0), None);
    assert_eq!(create_errno(PercpuHash, 4, 32769, 1, 0), Some(Errno::E2BIG));
    assert_eq!(
        create_errno(Hash, 4, 8, 4, BPF_F_MMAPABLE),
        Some(Errno::EINVAL)
    );
    assert_eq!(create_errno(Hash, 4, 8, 4, 1 << 20), Some(Errno::EINVAL));
    assert_eq!(
        create_errno(Hash, 4, 8, 4, BPF_F_NO_COMMON_LRU),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(Hash, 4, 8, 4, BPF_F_RDONLY | BPF_F_WRONLY),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(Hash, 4, 8, 4, BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(LruHash, 4, 8, 4, BPF_F_NO_PREALLOC),
        Some(ENOTSUPP)
    );
    assert_eq!(
        create_errno(LruPercpuHash, 4, 8, 4, BPF_F_NO_PREALLOC),
        Some(ENOTSUPP)
    );
    assert_eq!(
        create_errno(PercpuHash, 4, 8, 4, BPF_F_NUMA_NODE),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(LruPercpuHash, 4, 8, 4, BPF_F_NUMA_NODE),
        Some(Errno::EINVAL)
    );
    // NO_COMMON_LRU rounds max_entries up to a multiple of the possible CPUs.
    let m = create(LruHash, 4, 8, 3, BPF_F_NO_COMMON_LRU);
    let n = ncpus() as u32;
    assert_eq!(m.info().max_entries, 3u32.div_ceil(n) * n);
    // Names: alphanumerics, '_' and '.', NUL-terminated within 16 bytes.
    let named = |name: &str| {
        KernelMap::create(&def(Hash, 4, 8, 4, 0, name))
            .err()
            .map(|e| sys_errno(&e))
    };
    assert_eq!(named("bad-name"), Some(Errno::EINVAL));
    assert_eq!(named("sixteen_chars_xx"), Some(Errno::EINVAL));
    assert_eq!(named("ok.name_15chars"), None);
    // An unknown map type.
    let unknown = sys::map_create(&sys::MapCreate {
        map_type: 999,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        ..Default::default()
    });
    assert_eq!(unknown.err().map(|e| e.errno), Some(Errno::EINVAL));
    // map_extra must be 0 for a hash.
    let extra = sys::map_create(&sys::MapCreate {
        map_type: 1,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_extra: 1,
        ..Default::default()
    });
    assert_eq!(extra.err().map(|e| e.errno), Some(Errno::EINVAL));
}

#[test]
fn lru_never_returns_e2big_and_evicts_fifo_on_one_cpu() {
    require_kernel!();
    pin_thread_to_cpu(0);
    for map_type in [MapType::LruHash, MapType::LruPercpuHash] {
        let m = create(map_type, 4, 8, 64, 0);
        let value = vec![0u8; m.info().user_value_size()];
        for key in 0..128 {
            assert_eq!(
                errno(m.update(&k(key), &value, BPF_NOEXIST)),
                None,
                "{map_type} {key}"
            );
        }
        let mut present = keys_of(&m);
        present.sort_unstable();
        assert_eq!(present, (64..128).collect::<Vec<_>>(), "{map_type}");
        assert_eq!(
            errno(m.update(&k(500), &value, BPF_EXIST)),
            Some(Errno::ENOENT)
        );
        assert_eq!(
            errno(m.update(&k(127), &value, BPF_NOEXIST)),
            Some(Errno::EEXIST)
        );
    }
}

#[test]
fn array_rules() {
    require_kernel!();
    use MapType::*;
    assert_eq!(create_errno(Array, 8, 4, 4, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Array, 4, 0, 4, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Array, 4, 4, 0, 0), Some(Errno::EINVAL));
    assert_eq!(
        create_errno(Array, 4, 4, 4, BPF_F_NO_PREALLOC),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(Array, 4, 4, 4, BPF_F_ZERO_SEED),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(Array, 4, 4, 4, BPF_F_PRESERVE_ELEMS),
        Some(Errno::EINVAL)
    );
    assert_eq!(create_errno(Array, 4, 4, 4, BPF_F_MMAPABLE), None);
    assert_eq!(
        create_errno(PercpuArray, 4, 4, 4, BPF_F_MMAPABLE),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PercpuArray, 4, 4, 4, BPF_F_INNER_MAP),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PercpuArray, 4, 4, 4, BPF_F_NUMA_NODE),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PercpuArray, 4, 32769, 4, 0),
        Some(Errno::E2BIG)
    );
    assert_eq!(
        create_errno(Array, 4, 4, 5, 0),
        None,
        "non-power-of-two sizes are fine"
    );

    let m = create(Array, 4, 4, 5, 0);
    let mut v = [0xffu8; 4];
    assert_eq!(errno(m.lookup(&k(4), &mut v, 0)), None);
    assert_eq!(v, [0; 4], "never-written elements read as zero");
    assert_eq!(errno(m.lookup(&k(5), &mut v, 0)), Some(Errno::ENOENT));
    assert_eq!(errno(m.update(&k(5), &[1; 4], BPF_ANY)), Some(Errno::E2BIG));
    assert_eq!(
        errno(m.update(&k(1), &[1; 4], BPF_NOEXIST)),
        Some(Errno::EEXIST)
    );
    assert_eq!(errno(m.update(&k(1), &[2; 4], BPF_EXIST)), None);
    assert_eq!(errno(m.update(&k(1), &[2; 4], 3)), Some(Errno::EINVAL));
    assert_eq!(
        errno(m.update(&k(1), &[2; 4], BPF_F_LOCK)),
        Some(Errno::EINVAL)
    );
    m.lookup(&k(1), &mut v, 0).unwrap();
    assert_eq!(v, [2; 4]);
    assert_eq!(errno(m.delete(&k(1))), Some(Errno::EINVAL));
    assert_eq!(errno(m.delete(&k(99))), Some(Errno::EINVAL));
    assert_eq!(errno(m.lookup_and_delete(&k(1), &mut v, 0)), Some(ENOTSUPP));
    // get_next_key: NULL or out of range → 0, i → i+1, last → ENOENT.
    let mut next = [0u8; 4];
    m.get_next_key(None, &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), 0);
    m.get_next_key(Some(&k(77)), &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), 0);
    m.get_next_key(Some(&k(2)), &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), 3);
    assert_eq!(
        errno(m.get_next_key(Some(&k(4)), &mut next)),
        Some(Errno::ENOENT)
    );
    assert_eq!(keys_of(&m), vec![0, 1, 2, 3, 4]);
}

#[test]
fn hash_get_next_key_order_rules() {
    require_kernel!();
    let m = create(MapType::Hash, 4, 8, 32, 0);
    let mut next = [0u8; 4];
    assert_eq!(errno(m.get_next_key(None, &mut next)), Some(Errno::ENOENT));
    for key in 0..20 {
        m.update(&k(key), &v64(0), BPF_ANY).unwrap();
    }
    let order = keys_of(&m);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..20).collect::<Vec<_>>(),
        "every key exactly once"
    );
    // A missing key restarts at the first key.
    m.get_next_key(Some(&k(1000)), &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), order[0]);
    // Delete-then-next visits every key once, each time at the head.
    let mut visited = Vec::new();
    let mut cur: Option<[u8; 4]> = None;
    loop {
        let mut n = [0u8; 4];
        if m.get_next_key(cur.as_ref().map(|c| &c[..]), &mut n)
            .is_err()
        {
            break;
        }
        visited.push(u32::from_ne_bytes(n));
        m.delete(&n).unwrap();
        cur = Some(n);
    }
    assert_eq!(visited, order);
    assert_eq!(keys_of(&m), Vec::<u32>::new());
}

#[test]
fn percpu_layout_and_padding_round_trip() {
    require_kernel!();
    let n = ncpus();
    for map_type in [
        MapType::PercpuHash,
        MapType::PercpuArray,
        MapType::LruPercpuHash,
    ] {
        let m = create(map_type, 4, 4, 4, 0);
        assert_eq!(m.info().user_value_size(), 8 * n, "{map_type}");
        let mut value = vec![0u8; 8 * n];
        for cpu in 0..n {
            value[cpu * 8..cpu * 8 + 4].copy_from_slice(&(cpu as u32 + 1).to_ne_bytes());
            value[cpu * 8 + 4..cpu * 8 + 8].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
        }
        m.update(&k(1), &value, BPF_ANY).unwrap();
        let mut back = vec![0u8; 8 * n];
        m.lookup(&k(1), &mut back, 0).unwrap();
        assert_eq!(
            back, value,
            "{map_type}: padding is stored and returned as given"
        );
        assert_eq!(
            bpfmaps_abi::cpus::sum_percpu_u64(&back, 4),
            (1..=n as u64).sum::<u64>()
        );
        assert_eq!(
            errno(m.update(&k(1), &value, 8)),
            Some(Errno::EINVAL),
            "no BPF_F_CPU"
        );
        assert_eq!(
            errno(m.update(&k(1), &value, 16)),
            Some(Errno::EINVAL),
            "no BPF_F_ALL_CPUS"
        );
        assert_eq!(
            m.lookup(&k(1), &mut [0u8; 4], 0),
            Err(MapError::ValueSize {
                expected: 8 * n,
                got: 4
            })
        );
    }
    let a = create(MapType::PercpuArray, 4, 12, 2, 0);
    let mut back = vec![0xffu8; 16 * n];
    a.lookup(&k(0), &mut back, 0).unwrap();
    assert_eq!(back, vec![0u8; 16 * n], "slots never written are zero");
}

fn batch_lookup_all(m: &KernelMap, chunk: u32) -> (Vec<u32>, Vec<u64>, usize) {
    let vsize = m.info().user_value_size();
    let cursor_len = m.batch_cursor_size();
    let mut in_batch: Option<Vec<u8>> = None;
    let mut keys_out = Vec::new();
    let mut values_out = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        let mut out_batch = vec![0u8; cursor_len];
        let mut keys = vec![0u8; chunk as usize * 4];
        let mut values = vec![0u8; chunk as usize * vsize];
        let mut buffers = BatchBuffers {
            keys: &mut keys,
            values: &mut values,
            count: chunk,
        };
        let r = m.lookup_batch(in_batch.as_deref(), &mut out_batch, &mut buffers, 0, 0);
        let got = buffers.count as usize;
        for i in 0..got {
            keys_out.push(u32::from_ne_bytes(
                keys[i * 4..i * 4 + 4].try_into().unwrap(),
            ));
            values_out.push(u64::from_ne_bytes(
                values[i * vsize..i * vsize + 8].try_into().unwrap(),
            ));
        }
        match r {
            Ok(()) => in_batch = Some(out_batch),
            Err(MapError::Errno(Errno::ENOENT)) => return (keys_out, values_out, calls),
            Err(e) => panic!("lookup batch: {e}"),
        }
        assert!(calls < 1000);
    }
}

#[test]
fn hash_batch_operations() {
    require_kernel!();
    let m = create(MapType::Hash, 4, 8, 64, 0);
    // UPDATE_BATCH of 10 elements.
    let mut keys: Vec<u8> = (0..10u32).flat_map(|i| i.to_ne_bytes()).collect();
    let mut values: Vec<u8> = (0..10u64).flat_map(|i| (i * 100).to_ne_bytes()).collect();
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 10,
    };
    m.update_batch(&mut b, 0, 0).unwrap();
    assert_eq!(b.count, 10);
    // NOEXIST/EXIST elem_flags are rejected early, count untouched.
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 10,
    };
    assert_eq!(
        errno(m.update_batch(&mut b, BPF_NOEXIST, 0)),
        Some(Errno::EINVAL)
    );
    assert_eq!(b.count, 10);
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 10,
    };
    assert_eq!(
        errno(m.update_batch(&mut b, BPF_EXIST, 0)),
        Some(Errno::EINVAL)
    );
    // count == 0 returns 0 immediately.
    let mut out = [0u8; 4];
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 0,
    };
    assert_eq!(errno(m.lookup_batch(None, &mut out, &mut b, 0, 0)), None);
    assert_eq!(b.count, 0);
    // Hash lookup batch needs flags == 0.
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 10,
    };
    assert_eq!(
        errno(m.lookup_batch(None, &mut out, &mut b, 0, 1)),
        Some(Errno::EINVAL)
    );
    // Walking in chunks returns every element once, ending with ENOENT.
    let (mut got, vals, _) = batch_lookup_all(&m, 4);
    let mut pairs: Vec<(u32, u64)> = got.iter().copied().zip(vals).collect();
    pairs.sort_unstable();
    assert_eq!(
        pairs,
        (0..10u32)
            .map(|i| (i, u64::from(i) * 100))
            .collect::<Vec<_>>()
    );
    // One call with room for everything: ENOENT and the full count.
    let mut out = [0u8; 4];
    let mut kb = vec![0u8; 64 * 4];
    let mut vb = vec![0u8; 64 * 8];
    let mut b = BatchBuffers {
        keys: &mut kb,
        values: &mut vb,
        count: 64,
    };
    assert_eq!(
        errno(m.lookup_batch(None, &mut out, &mut b, 0, 0)),
        Some(Errno::ENOENT)
    );
    assert_eq!(b.count, 10);
    // A cursor past the last bucket: ENOENT with count 0.
    let mut b = BatchBuffers {
        keys: &mut kb,
        values: &mut vb,
        count: 64,
    };
    assert_eq!(
        errno(m.lookup_batch(Some(&u32::MAX.to_ne_bytes()), &mut out, &mut b, 0, 0)),
        Some(Errno::ENOENT)
    );
    assert_eq!(b.count, 0);
    // DELETE_BATCH of [1, 99 (missing), 2] stops at the missing key with count 1.
    let mut dk: Vec<u8> = [1u32, 99, 2].iter().flat_map(|i| i.to_ne_bytes()).collect();
    let mut b = BatchBuffers {
        keys: &mut dk,
        values: &mut [],
        count: 3,
    };
    assert_eq!(errno(m.delete_batch(&mut b, 0, 0)), Some(Errno::ENOENT));
    assert_eq!(b.count, 1);
    assert_eq!(lookup_u64(&m, 1), Err(Errno::ENOENT));
    assert_eq!(lookup_u64(&m, 2), Ok(200));
    // LOOKUP_AND_DELETE_BATCH empties the map.
    let mut b = BatchBuffers {
        keys: &mut kb,
        values: &mut vb,
        count: 64,
    };
    assert_eq!(
        errno(m.lookup_and_delete_batch(None, &mut out, &mut b, 0, 0)),
        Some(Errno::ENOENT)
    );
    assert_eq!(b.count, 9);
    got = keys_of(&m);
    assert_eq!(got, Vec::<u32>::new());
}

#[test]
fn hash_batch_returns_enospc_when_the_first_bucket_does_not_fit() {
    require_kernel!();
    // Two buckets and a fixed seed: find a second key sharing key 1's bucket.
    let m = create(MapType::Hash, 4, 8, 2, BPF_F_ZERO_SEED | BPF_F_NO_PREALLOC);
    m.update(&k(1), &v64(1), BPF_ANY).unwrap();
    let mut found = false;
    for candidate in 2..64u32 {
        m.update(&k(candidate), &v64(2), BPF_ANY).unwrap();
        let mut out = [0u8; 4];
        let mut kb = [0u8; 4];
        let mut vb = [0u8; 8];
        let mut b = BatchBuffers {
            keys: &mut kb,
            values: &mut vb,
            count: 1,
        };
        match m.lookup_batch(None, &mut out, &mut b, 0, 0) {
            Err(MapError::Errno(Errno::ENOSPC)) => {
                assert_eq!(b.count, 0);
                found = true;
                break;
            }
            _ => m.delete(&k(candidate)).unwrap(),
        }
    }
    assert!(found, "no pair of keys shared a bucket out of 62 tries");
    let (keys, _, calls) = batch_lookup_all(&m, 2);
    assert_eq!(keys.len(), 2);
    assert_eq!(
        calls, 1,
        "the whole bucket fits in one call, which then hits the end"
    );
}

#[test]
fn array_batch_operations() {
    require_kernel!();
    let m = create(MapType::Array, 4, 8, 16, 0);
    let mut keys: Vec<u8> = (0..16u32).flat_map(|i| i.to_ne_bytes()).collect();
    let mut values: Vec<u8> = (0..16u64).flat_map(|i| (i + 1).to_ne_bytes()).collect();
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 16,
    };
    m.update_batch(&mut b, 0, 1).unwrap();
    assert_eq!(b.count, 16, "generic update ignores `flags`");
    assert_eq!(m.batch_cursor_size(), 4);
    // Generic lookup batch: chunks of 5 give 5, 5, 5 and then 1 with ENOENT.
    let mut counts = Vec::new();
    let mut in_batch: Option<[u8; 4]> = None;
    let mut all = Vec::new();
    loop {
        let mut out = [0u8; 4];
        let mut kb = [0u8; 20];
        let mut vb = [0u8; 40];
        let mut b = BatchBuffers {
            keys: &mut kb,
            values: &mut vb,
            count: 5,
        };
        let r = m.lookup_batch(in_batch.as_ref().map(|c| &c[..]), &mut out, &mut b, 0, 0);
        counts.push(b.count);
        for i in 0..b.count as usize {
            all.push(u64::from_ne_bytes(vb[i * 8..i * 8 + 8].try_into().unwrap()));
        }
        match r {
            Ok(()) => in_batch = Some(out),
            Err(e) => {
                assert_eq!(e, MapError::Errno(Errno::ENOENT));
                break;
            }
        }
    }
    assert_eq!(counts, vec![5, 5, 5, 1]);
    assert_eq!(all, (1..=16).collect::<Vec<u64>>());
    let mut out = [0u8; 4];
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 4,
    };
    assert_eq!(
        errno(m.lookup_and_delete_batch(None, &mut out, &mut b, 0, 0)),
        Some(ENOTSUPP)
    );
    assert_eq!(b.count, 4, "early ENOTSUPP leaves count untouched");
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values,
        count: 4,
    };
    assert_eq!(errno(m.delete_batch(&mut b, 0, 0)), Some(ENOTSUPP));
}

#[test]
fn percpu_hash_batch_uses_the_percpu_layout() {
    require_kernel!();
    let n = ncpus();
    let m = create(MapType::PercpuHash, 4, 4, 8, 0);
    let mut keys: Vec<u8> = (0..3u32).flat_map(|i| i.to_ne_bytes()).collect();
    let mut values = vec![0u8; 3 * 8 * n];
    for (i, b) in values.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut b = BatchBuffers {
        keys: &mut keys,
        values: &mut values.clone(),
        count: 3,
    };
    m.update_batch(&mut b, 0, 0).unwrap();
    for key in 0..3usize {
        let mut v = vec![0u8; 8 * n];
        m.lookup(&k(key as u32), &mut v, 0).unwrap();
        assert_eq!(v, values[key * 8 * n..(key + 1) * 8 * n]);
    }
}

#[test]
fn freeze_blocks_syscall_writes() {
    require_kernel!();
    let m = create(MapType::Hash, 4, 8, 4, 0);
    m.update(&k(1), &v64(1), BPF_ANY).unwrap();
    assert!(!m.info().frozen);
    m.freeze().unwrap();
    assert!(m.info().frozen);
    assert_eq!(errno(m.update(&k(2), &v64(2), BPF_ANY)), Some(Errno::EPERM));
    assert_eq!(errno(m.delete(&k(1))), Some(Errno::EPERM));
    assert_eq!(lookup_u64(&m, 1), Ok(1));
    assert_eq!(errno(m.freeze()), Some(Errno::EPERM), "a second freeze");
    let mut kb = k(5).to_vec();
    let mut vb = v64(5).to_vec();
    let mut b = BatchBuffers {
        keys: &mut kb,
        values: &mut vb,
        count: 1,
    };
    assert_eq!(errno(m.update_batch(&mut b, 0, 0)), Some(Errno::EPERM));
}

#[test]
fn readonly_and_writeonly_fds_get_eperm() {
    require_kernel!();
    let pin = PinPath::new("access");
    let m = create(MapType::Hash, 4, 8, 4, 0);
    m.update(&k(1), &v64(7), BPF_ANY).unwrap();
    m.pin(&pin.0).unwrap();
    let ro = KernelMap::from_pinned_with_access(&pin.0, Access::ReadOnly).unwrap();
    assert_eq!(ro.id(), m.id());
    assert_eq!(ro.access(), Access::ReadOnly);
    assert_eq!(lookup_u64(&ro, 1), Ok(7));
    assert_eq!(
        errno(ro.update(&k(1), &v64(8), BPF_ANY)),
        Some(Errno::EPERM)
    );
    assert_eq!(errno(ro.delete(&k(1))), Some(Errno::EPERM));
    let wo = KernelMap::from_pinned_with_access(&pin.0, Access::WriteOnly).unwrap();
    assert_eq!(lookup_u64(&wo, 1), Err(Errno::EPERM));
    let mut next = [0u8; 4];
    assert_eq!(errno(wo.get_next_key(None, &mut next)), Some(Errno::EPERM));
    assert_eq!(errno(wo.update(&k(1), &v64(8), BPF_ANY)), None);
    assert_eq!(lookup_u64(&m, 1), Ok(8));
    let by_id = KernelMap::from_id_with_access(m.id(), Access::ReadOnly).unwrap();
    assert_eq!(
        errno(by_id.update(&k(1), &v64(9), BPF_ANY)),
        Some(Errno::EPERM)
    );
    // RDONLY|WRONLY together is EINVAL at BPF_OBJ_GET.
    let both = sys::obj_get(&pin.0, sys::BPF_F_RDONLY | sys::BPF_F_WRONLY);
    assert_eq!(both.err().map(|e| e.errno), Some(Errno::EINVAL));
    let missing = KernelMap::from_pinned(&pin.0.with_file_name("bpfmaps_missing_pin"));
    assert_eq!(missing.err().map(|e| sys_errno(&e)), Some(Errno::ENOENT));
}

#[test]
fn pin_rules() {
    require_kernel!();
    let pin = PinPath::new("rules");
    let m = create(MapType::Array, 4, 4, 2, 0);
    m.pin(&pin.0).unwrap();
    let meta = std::fs::metadata(&pin.0).unwrap();
    assert_eq!(
        meta.permissions().mode(),
        0o100600,
        "pins are regular files with mode 0600"
    );
    assert!(bpfmaps_kernel::fs::is_on_bpffs(&pin.0));
    assert!(bpfmaps_kernel::fs::is_on_bpffs(
        &pin.0.with_file_name("not_yet_pinned")
    ));
    assert_eq!(
        m.pin(&pin.0).err().map(|e| sys_errno(&e)),
        Some(Errno::EEXIST)
    );
    let outside = std::env::temp_dir().join(format!("bpfmaps_pin_{}", std::process::id()));
    assert!(!bpfmaps_kernel::fs::is_on_bpffs(&outside));
    assert_eq!(
        m.pin(&outside).err().map(|e| sys_errno(&e)),
        Some(Errno::EPERM)
    );
    let dotted = PinPath::new("has.dot");
    assert_eq!(
        m.pin(&dotted.0).err().map(|e| sys_errno(&e)),
        Some(Errno::EPERM)
    );
    let no_dir = pin.0.join("child");
    assert_eq!(
        m.pin(&no_dir).err().map(|e| sys_errno(&e)),
        Some(Errno::ENOTDIR),
        "a pin path below a pinned map (a file, not a directory)"
    );
    let missing_dir = PinPath::new("missing_dir");
    assert_eq!(
        m.pin(&missing_dir.0.join("x")).err().map(|e| sys_errno(&e)),
        Some(Errno::ENOENT)
    );
}

fn wait_until_gone(id: u32) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        match KernelMap::from_id(id) {
            Err(e) if sys_errno(&e) == Errno::ENOENT => return true,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

#[test]
fn unpin_while_open_keeps_the_map_until_the_last_fd_closes() {
    require_kernel!();
    let pin = PinPath::new("unpin");
    let m = create(MapType::Hash, 4, 8, 4, 0);
    let id = m.id();
    m.update(&k(3), &v64(33), BPF_ANY).unwrap();
    m.pin(&pin.0).unwrap();
    drop(m);
    // Pinned with every fd closed: alive.
    let reopened = KernelMap::from_pinned(&pin.0).unwrap();
    assert_eq!(reopened.id(), id);
    std::fs::remove_file(&pin.0).unwrap();
    // Unpinned but open: alive, still reachable by id.
    assert_eq!(lookup_u64(&reopened, 3), Ok(33));
    assert_eq!(KernelMap::from_id(id).unwrap().id(), id);
    drop(reopened);
    assert!(
        wait_until_gone(id),
        "map {id} still exists after its last fd closed"
    );
}

/// Runs in a child process (this test binary re-executed with `BPFMAPS_CHILD_PIN` set): create a
/// map, store 42 at key 7, pin it at the given path, and exit.
#[test]
fn maps_child_creates_and_pins() {
    let Ok(path) = std::env::var("BPFMAPS_CHILD_PIN") else {
        return;
    };
    let m = create(MapType::Hash, 4, 8, 4, 0);
    m.update(&k(7), &v64(42), BPF_ANY).unwrap();
    m.pin(std::path::Path::new(&path)).unwrap();
}

#[test]
fn pin_outlives_the_process_that_made_it() {
    require_kernel!();
    let pin = PinPath::new("child");
    let exe = std::env::current_exe().unwrap();
    let child = Command::new(exe)
        .args(["--exact", "maps_child_creates_and_pins", "--test-threads=1"])
        .env("BPFMAPS_CHILD_PIN", &pin.0)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "child: {}",
        String::from_utf8_lossy(&child.stdout)
    );
    let m = KernelMap::from_pinned(&pin.0).unwrap();
    assert_eq!(lookup_u64(&m, 7), Ok(42));
    assert_eq!(m.map_type(), MapType::Hash);
}

#[test]
fn ringbuf_syscall_side() {
    require_kernel!();
    use MapType::Ringbuf;
    assert_eq!(create_errno(Ringbuf, 0, 0, 4096, 0), None);
    assert_eq!(create_errno(Ringbuf, 0, 0, 8192, 0), None);
    assert_eq!(create_errno(Ringbuf, 4, 0, 4096, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Ringbuf, 0, 4, 4096, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Ringbuf, 0, 0, 12288, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Ringbuf, 0, 0, 2048, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(Ringbuf, 0, 0, 0, 0), Some(Errno::EINVAL));
    assert_eq!(
        create_errno(Ringbuf, 0, 0, 4096, BPF_F_NO_PREALLOC),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(Ringbuf, 0, 0, 4096, BPF_F_MMAPABLE),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(Ringbuf, 0, 0, 4096, BPF_F_RDONLY_PROG),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(Ringbuf, 0, 0, 4096, 1 << 13),
        Some(Errno::EINVAL)
    );
    let m = create(Ringbuf, 0, 0, 4096, 0);
    assert_eq!(m.info().user_value_size(), 0);
    assert_eq!(errno(m.lookup(&[], &mut [], 0)), Some(ENOTSUPP));
    assert_eq!(errno(m.update(&[], &[], 0)), Some(ENOTSUPP));
    assert_eq!(errno(m.delete(&[])), Some(ENOTSUPP));
    assert_eq!(errno(m.get_next_key(None, &mut [])), Some(ENOTSUPP));
    assert_eq!(errno(m.lookup_and_delete(&[], &mut [], 0)), Some(ENOTSUPP));
    // A non-NULL key for a key_size 0 map is EINVAL (raw call: KernelMap passes NULL).
    let key = [0u8; 4];
    let raw = sys::map_lookup_elem(m.fd(), &key, &mut [], 0);
    assert_eq!(raw.err().map(|e| e.errno), Some(Errno::EINVAL));
    let mut b = BatchBuffers {
        keys: &mut [],
        values: &mut [],
        count: 1,
    };
    assert_eq!(
        errno(m.lookup_batch(None, &mut [], &mut b, 0, 0)),
        Some(ENOTSUPP)
    );
    assert_eq!(errno(m.update_batch(&mut b, 0, 0)), Some(ENOTSUPP));
    assert_eq!(errno(m.delete_batch(&mut b, 0, 0)), Some(ENOTSUPP));
    assert_eq!(
        errno(m.lookup_and_delete_batch(None, &mut [], &mut b, 0, 0)),
        Some(ENOTSUPP)
    );
}

#[test]
fn perf_event_array_syscall_side() {
    require_kernel!();
    use MapType::PerfEventArray;
    assert_eq!(
        create_errno(PerfEventArray, 4, 8, 2, 0),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PerfEventArray, 8, 4, 2, 0),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PerfEventArray, 4, 4, 0, 0),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PerfEventArray, 4, 4, 2, BPF_F_MMAPABLE),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PerfEventArray, 4, 4, 2, BPF_F_NO_PREALLOC),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PerfEventArray, 4, 4, 2, BPF_F_RDONLY_PROG),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(PerfEventArray, 4, 4, 2, BPF_F_PRESERVE_ELEMS),
        None
    );
    let m = create(PerfEventArray, 4, 4, 2, 0);
    let mut v = [0u8; 4];
    assert_eq!(errno(m.lookup(&k(0), &mut v, 0)), Some(ENOTSUPP));
    // A map fd is not a perf event.
    let other = create(MapType::Array, 4, 4, 1, 0);
    let other_fd = std::os::fd::AsRawFd::as_raw_fd(&other.fd()) as u32;
    assert_eq!(
        errno(m.update(&k(0), &other_fd.to_ne_bytes(), BPF_ANY)),
        Some(Errno::EBADF)
    );
    let event = sys::perf_event_open_bpf_output(0, 1).unwrap();
    let event_fd = std::os::fd::AsRawFd::as_raw_fd(&event) as u32;
    assert_eq!(
        errno(m.update(&k(0), &event_fd.to_ne_bytes(), BPF_NOEXIST)),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        errno(m.update(&k(2), &event_fd.to_ne_bytes(), BPF_ANY)),
        Some(Errno::E2BIG)
    );
    assert_eq!(errno(m.delete(&k(1))), Some(Errno::ENOENT));
    assert_eq!(
        errno(m.update(&k(1), &event_fd.to_ne_bytes(), BPF_ANY)),
        None
    );
    assert_eq!(errno(m.delete(&k(1))), None);
    assert_eq!(errno(m.delete(&k(2))), Some(Errno::E2BIG));
    let mut next = [0u8; 4];
    m.get_next_key(None, &mut next).unwrap();
    assert_eq!(next, k(0));
    let mut b = BatchBuffers {
        keys: &mut [0u8; 4],
        values: &mut [0u8; 4],
        count: 1,
    };
    assert_eq!(
        errno(m.lookup_batch(None, &mut [0u8; 4], &mut b, 0, 0)),
        Some(ENOTSUPP)
    );
    assert_eq!(errno(m.update_batch(&mut b, 0, 0)), Some(ENOTSUPP));
}

#[test]
fn stack_trace_syscall_side() {
    require_kernel!();
    use MapType::StackTrace;
    assert_eq!(create_errno(StackTrace, 4, 8 * 127, 4, 0), None);
    assert_eq!(
        create_errno(StackTrace, 4, 8 * 128, 4, 0),
        Some(Errno::EINVAL)
    );
    assert_eq!(create_errno(StackTrace, 4, 12, 4, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(StackTrace, 4, 4, 4, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(StackTrace, 8, 8, 4, 0), Some(Errno::EINVAL));
    assert_eq!(create_errno(StackTrace, 4, 8, 0, 0), Some(Errno::EINVAL));
    assert_eq!(
        create_errno(StackTrace, 4, 8, 4, BPF_F_NO_PREALLOC),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(StackTrace, 4, 8, 4, BPF_F_RDONLY_PROG),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        create_errno(StackTrace, 4, 32, 4, BPF_F_STACK_BUILD_ID),
        None
    );
    assert_eq!(
        create_errno(StackTrace, 4, 8, 4, BPF_F_STACK_BUILD_ID),
        Some(Errno::EINVAL)
    );
    let m = create(StackTrace, 4, 8 * 16, 5, 0);
    let mut v = vec![0u8; 8 * 16];
    assert_eq!(errno(m.lookup(&k(0), &mut v, 0)), Some(Errno::ENOENT));
    assert_eq!(errno(m.lookup(&k(100), &mut v, 0)), Some(Errno::ENOENT));
    assert_eq!(errno(m.update(&k(0), &v, BPF_ANY)), Some(Errno::EINVAL));
    assert_eq!(errno(m.delete(&k(0))), Some(Errno::ENOENT));
    // n_buckets = roundup_pow_of_two(5) = 8.
    assert_eq!(errno(m.delete(&k(7))), Some(Errno::ENOENT));
    assert_eq!(errno(m.delete(&k(8))), Some(Errno::E2BIG));
    let mut next = [0u8; 4];
    assert_eq!(errno(m.get_next_key(None, &mut next)), Some(Errno::ENOENT));
    let mut b = BatchBuffers {
        keys: &mut [0u8; 4],
        values: &mut v,
        count: 1,
    };
    assert_eq!(
        errno(m.lookup_batch(None, &mut [0u8; 4], &mut b, 0, 0)),
        Some(ENOTSUPP)
    );
    assert_eq!(errno(m.delete_batch(&mut b, 0, 0)), Some(ENOTSUPP));
}

#[test]
fn info_listing_and_lookup_by_name() {
    require_kernel!();
    let name = format!("bm{}", std::process::id() % 1_000_000);
    let m = KernelMap::create(&def(MapType::LruHash, 8, 16, 32, 0, &name)).unwrap();
    let info = m.info();
    assert_eq!(info.map_type, MapType::LruHash);
    assert_eq!(
        (info.key_size, info.value_size, info.max_entries),
        (8, 16, 32)
    );
    assert_eq!(info.name, name);
    assert_eq!(info.possible_cpus as usize, ncpus());
    assert_eq!(info.btf_id, 0);
    assert!(!info.frozen);
    assert!(map::list_map_ids().unwrap().contains(&m.id()));
    let listed = map::list_maps().unwrap();
    assert_eq!(listed.iter().find(|i| i.id == m.id()), Some(&info));
    assert_eq!(KernelMap::from_name(&name).unwrap().id(), m.id());
    assert_eq!(KernelMap::from_id(m.id()).unwrap().info(), info);
    assert!(matches!(
        KernelMap::from_name("no_such_map_x"),
        Err(bpfmaps_kernel::Error::NoSuchName(_))
    ));
    let dup = KernelMap::from_fd(m.try_clone().unwrap().fd().try_clone_to_owned().unwrap());
    assert_eq!(dup.unwrap().id(), m.id());
    assert_eq!(m.btf_ids().unwrap(), (0, 0, 0));
}

fn bpftool(args: &[&str]) -> std::process::Output {
    Command::new("bpftool")
        .args(args)
        .output()
        .expect("running bpftool")
}

fn hex_bytes(value: &serde_json::Value) -> Vec<u8> {
    value
        .as_array()
        .expect("byte array")
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}

#[test]
fn bpftool_dumps_a_map_pinned_by_bpfmaps() {
    require_kernel!();
    let pin = PinPath::new("interop_out");
    let m = create(MapType::Hash, 4, 8, 8, 0);
    let mut expected = Vec::new();
    for key in [1u32, 20, 300] {
        let value = u64::from(key) * 0x0101_0101;
        m.update(&k(key), &v64(value), BPF_ANY).unwrap();
        expected.push((k(key).to_vec(), v64(value).to_vec()));
    }
    m.pin(&pin.0).unwrap();
    let out = bpftool(&["-j", "map", "dump", "pinned", pin.0.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut dumped: Vec<(Vec<u8>, Vec<u8>)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (hex_bytes(&e["key"]), hex_bytes(&e["value"])))
        .collect();
    dumped.sort();
    expected.sort();
    assert_eq!(dumped, expected);
}

#[test]
fn bpfmaps_reads_a_map_pinned_by_bpftool() {
    require_kernel!();
    let pin = PinPath::new("interop_in");
    let p = pin.0.to_str().unwrap();
    let out = bpftool(&[
        "map",
        "create",
        p,
        "type",
        "hash",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "8",
        "name",
        "bpftool_made",
    ]);
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = bpftool(&[
        "map", "update", "pinned", p, "key", "5", "0", "0", "0", "value", "0x11", "0x22", "0", "0",
        "0", "0", "0", "0",
    ]);
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = KernelMap::from_pinned(&pin.0).unwrap();
    let info = m.info();
    assert_eq!(info.name, "bpftool_made");
    assert_eq!(
        (info.map_type, info.key_size, info.value_size),
        (MapType::Hash, 4, 8)
    );
    assert_eq!(lookup_u64(&m, 5), Ok(0x2211));
    assert_eq!(keys_of(&m), vec![5]);
}

#[test]
fn syscall_layer_edge_cases() {
    require_kernel!();
    let m = create(MapType::Hash, 4, 8, 4, 0);
    // A NULL key (bypassing KernelMap's length check) is EFAULT.
    let mut v = [0u8; 8];
    let null_key = sys::map_lookup_elem(m.fd(), &[], &mut v, 0);
    assert_eq!(
        null_key.err().map(|e| (e.call, e.errno)),
        Some(("BPF_MAP_LOOKUP_ELEM", Errno::EFAULT))
    );
    // Unknown BPF_OBJ_GET flag bits are EINVAL; open()/read() of a pin without BTF is EIO.
    let pin = PinPath::new("edge");
    m.pin(&pin.0).unwrap();
    assert_eq!(
        sys::obj_get(&pin.0, 1 << 20).err().map(|e| e.errno),
        Some(Errno::EINVAL)
    );
    let opened = std::fs::File::open(&pin.0);
    assert_eq!(
        opened.err().and_then(|e| e.raw_os_error()),
        Some(Errno::EIO.0)
    );
    // A file descriptor that is not a bpf object.
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    let not_a_map = KernelMap::from_fd(file.into());
    assert_eq!(not_a_map.err().map(|e| sys_errno(&e)), Some(Errno::EINVAL));
}

#[test]
fn stack_trace_lookup_after_get_stackid() {
    require_kernel!();
    // Running on the current CPU keeps the call path (and so the stack) identical between runs;
    // a run sent to another CPU goes through an IPI and records a different stack.
    pin_thread_to_cpu(0);
    let depth = 32usize;
    let m = create(MapType::StackTrace, 4, 8 * depth as u32, 16, 0);
    let prog = stackid_prog(m.fd(), 0);
    let id = run(&prog, 0, Some(0));
    assert!(id >= 0, "get_stackid: {id}");
    let id = id as u32;
    assert!(id < 16, "ids are bucket indexes below n_buckets");
    assert_eq!(
        run(&prog, 0, Some(0)),
        id as i32,
        "the same stack gets the same id"
    );
    let mut v = vec![0u8; 8 * depth];
    m.lookup(&k(id), &mut v, 0).unwrap();
    let frames: Vec<u64> = v
        .chunks(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    let nr = frames.iter().position(|&ip| ip == 0).unwrap_or(depth);
    assert!(nr > 0, "at least one kernel frame");
    assert!(
        frames[..nr].iter().all(|&ip| ip >= 0xffff_0000_0000_0000),
        "kernel addresses"
    );
    assert!(
        frames[nr..].iter().all(|&ip| ip == 0),
        "the rest is zero-filled"
    );
    let mut next = [0u8; 4];
    m.get_next_key(None, &mut next).unwrap();
    assert_eq!(next, k(id));
    assert_eq!(
        errno(m.get_next_key(Some(&k(id)), &mut next)),
        Some(Errno::ENOENT)
    );
    // Flags outside skip/USER_STACK/FAST_CMP/REUSE give EINVAL; skipping every frame EFAULT.
    assert_eq!(
        run(&stackid_prog(m.fd(), 1 << 11), 0, None),
        -Errno::EINVAL.0
    );
    assert_eq!(run(&stackid_prog(m.fd(), 255), 0, None), -Errno::EFAULT.0);
    assert_eq!(errno(m.delete(&k(id))), None);
    assert_eq!(errno(m.lookup(&k(id), &mut v, 0)), Some(Errno::ENOENT));
}
