//! LRU_HASH and LRU_PERCPU_HASH on the user engine, checked against the kernel: creation errnos,
//! which keys survive the same single-CPU sequences (the thread is pinned to CPU 0 for both
//! engines), iteration and batch order under `BPF_F_ZERO_SEED`, the reference bit set only by
//! program lookups, and the structural invariants under concurrent random operations.
//!
//! Kernel comparisons call bpf(2) directly. Without root/BPF they fail, unless
//! `BPFMAPS_SKIP_KERNEL=1` is set, in which case they print why and return.

use std::collections::BTreeSet;

use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::update_flags::*;
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_maps::backend::Backend;
use bpfmaps_maps::lru::LruHashMap;

/// Raw bpf(2) access to kernel maps: the oracle.
mod kernel {
    use bpfmaps_abi::Errno;

    const SYS_BPF: libc::c_long = libc::SYS_bpf;

    fn bpf(cmd: u32, attr: &mut [u8; 128]) -> Result<i64, Errno> {
        // SAFETY: `attr` is a valid 128-byte buffer that outlives the call; the pointers stored
        // in it by callers point at live buffers of the sizes the command reads or writes.
        let rc =
            unsafe { libc::syscall(SYS_BPF, cmd as libc::c_long, attr.as_mut_ptr(), 128usize) };
        if rc < 0 {
            Err(Errno(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        } else {
            Ok(rc)
        }
    }

    fn put32(attr: &mut [u8; 128], off: usize, v: u32) {
        attr[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put64(attr: &mut [u8; 128], off: usize, v: u64) {
        attr[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    }

    /// A kernel map, closed on drop.
    pub struct KMap {
        fd: i32,
    }

    impl Drop for KMap {
        fn drop(&mut self) {
            // SAFETY: we own the fd.
            unsafe { libc::close(self.fd) };
        }
    }

    /// BPF_MAP_CREATE.
    pub fn create(t: u32, key: u32, value: u32, max: u32, flags: u32) -> Result<KMap, Errno> {
        let mut a = [0u8; 128];
        put32(&mut a, 0, t);
        put32(&mut a, 4, key);
        put32(&mut a, 8, value);
        put32(&mut a, 12, max);
        put32(&mut a, 16, flags);
        a[28..30].copy_from_slice(b"lt");
        bpf(0, &mut a).map(|fd| KMap { fd: fd as i32 })
    }

    /// True when bpf(2) works here; otherwise fails the test unless BPFMAPS_SKIP_KERNEL=1.
    pub fn available(test: &str) -> bool {
        match create(1, 4, 4, 1, 0) {
            Ok(_) => true,
            Err(e) => {
                if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
                    eprintln!(
                        "{test}: skipped, the kernel refuses bpf(2): {e} (BPFMAPS_SKIP_KERNEL=1)"
                    );
                    false
                } else {
                    panic!("{test}: bpf(2) unavailable ({e}); run as root or set BPFMAPS_SKIP_KERNEL=1");
                }
            }
        }
    }

    impl KMap {
        fn elem(&self, cmd: u32, key: *const u8, value: *mut u8, flags: u64) -> Result<(), Errno> {
            let mut a = [0u8; 128];
            put32(&mut a, 0, self.fd as u32);
            put64(&mut a, 8, key as u64);
            put64(&mut a, 16, value as u64);
            put64(&mut a, 24, flags);
            bpf(cmd, &mut a).map(|_| ())
        }

        /// BPF_MAP_UPDATE_ELEM.
        pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), Errno> {
            self.elem(2, key.as_ptr(), value.as_ptr() as *mut u8, flags)
        }

        /// BPF_MAP_LOOKUP_ELEM.
        pub fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<(), Errno> {
            self.elem(1, key.as_ptr(), value.as_mut_ptr(), 0)
        }

        /// BPF_MAP_DELETE_ELEM.
        pub fn delete(&self, key: &[u8]) -> Result<(), Errno> {
            self.elem(3, key.as_ptr(), std::ptr::null_mut(), 0)
        }

        /// BPF_MAP_GET_NEXT_KEY.
        pub fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<(), Errno> {
            self.elem(
                4,
                key.map_or(std::ptr::null(), |k| k.as_ptr()),
                next.as_mut_ptr(),
                0,
            )
        }

        /// BPF_MAP_LOOKUP_BATCH: (result, count).
        pub fn lookup_batch(
            &self,
            in_batch: Option<&[u8; 4]>,
            out_batch: &mut [u8; 4],
            keys: &mut [u8],
            values: &mut [u8],
            count: u32,
        ) -> (Result<(), Errno>, u32) {
            let mut a = [0u8; 128];
            put64(&mut a, 0, in_batch.map_or(0, |b| b.as_ptr() as u64));
            put64(&mut a, 8, out_batch.as_mut_ptr() as u64);
            put64(&mut a, 16, keys.as_mut_ptr() as u64);
            put64(&mut a, 24, values.as_mut_ptr() as u64);
            put32(&mut a, 32, count);
            put32(&mut a, 36, self.fd as u32);
            let r = bpf(24, &mut a).map(|_| ());
            (r, u32::from_ne_bytes(a[32..36].try_into().unwrap()))
        }
    }
}

/// Pins the calling thread to CPU 0, so both engines take nodes from CPU 0's lists.
fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only touch
    // that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

fn cpus() -> u32 {
    bpfmaps_maps::possible_cpus()
}

fn def(
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> MapDef {
    MapDef::new(
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        "lru_test",
    )
}

fn user(d: &MapDef) -> LruHashMap {
    LruHashMap::create_anonymous(d, cpus()).expect("user map")
}

fn kmap(d: &MapDef) -> kernel::KMap {
    kernel::create(
        d.map_type.as_u32(),
        d.key_size,
        d.value_size,
        d.max_entries,
        d.map_flags,
    )
    .expect("kernel map")
}

fn errno<T>(r: Result<T, MapError>) -> Result<T, Errno> {
    r.map_err(|e| e.errno().expect("an errno, not a size error"))
}

fn key(k: u32) -> [u8; 4] {
    k.to_ne_bytes()
}

fn user_keys(m: &LruHashMap) -> BTreeSet<u32> {
    m.keys()
        .iter()
        .map(|k| u32::from_ne_bytes(k[..4].try_into().unwrap()))
        .collect()
}

/// Every key by get_next_key, in order.
fn user_walk(m: &LruHashMap) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur: Option<[u8; 4]> = None;
    let mut next = [0u8; 4];
    while MapOps::get_next_key(m, cur.as_ref().map(|k| &k[..]), &mut next).is_ok() {
        out.push(u32::from_ne_bytes(next));
        cur = Some(next);
    }
    out
}

fn kernel_walk(m: &kernel::KMap) -> Vec<u32> {
    let mut out = Vec::new();
    let mut cur: Option<[u8; 4]> = None;
    let mut next = [0u8; 4];
    while m.next_key(cur.as_ref().map(|k| &k[..]), &mut next).is_ok() {
        out.push(u32::from_ne_bytes(next));
        cur = Some(next);
        assert!(out.len() < 1 << 20, "kernel walk does not end");
    }
    out
}

/// One creation case: type, key size, value size, max_entries, flags, the expected errno.
type CreateCase = (MapType, u32, u32, u32, u32, Option<Errno>);

#[test]
fn creation_errnos_follow_the_kernel_rules() {
    let c = cpus();
    let cases: &[CreateCase] = &[
        (MapType::LruHash, 4, 8, 16, 0, None),
        (MapType::LruHash, 0, 8, 16, 0, Some(Errno::EINVAL)),
        (MapType::LruHash, 4, 0, 16, 0, Some(Errno::EINVAL)),
        (MapType::LruHash, 4, 8, 0, 0, Some(Errno::EINVAL)),
        (
            MapType::LruHash,
            4,
            8,
            16,
            BPF_F_NO_PREALLOC,
            Some(Errno::ENOTSUPP),
        ),
        (
            MapType::LruHash,
            4,
            8,
            16,
            BPF_F_MMAPABLE,
            Some(Errno::EINVAL),
        ),
        (MapType::LruHash, 4, 8, 16, 1 << 20, Some(Errno::EINVAL)),
        (
            MapType::LruHash,
            4,
            8,
            16,
            BPF_F_RDONLY | BPF_F_WRONLY,
            Some(Errno::EINVAL),
        ),
        (
            MapType::LruHash,
            4,
            8,
            16,
            BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG,
            Some(Errno::EINVAL),
        ),
        (
            MapType::LruHash,
            4,
            8,
            16,
            BPF_F_NUMA_NODE | BPF_F_NO_COMMON_LRU,
            Some(Errno::EINVAL),
        ),
        (MapType::LruHash, 4, 8, 16, BPF_F_NUMA_NODE, None),
        (MapType::LruHash, 4, 8, 16, BPF_F_ZERO_SEED, None),
        (
            MapType::LruHash,
            4,
            (4 << 20) - 48,
            16,
            0,
            Some(Errno::E2BIG),
        ),
        (MapType::LruHash, 4, 8, (1 << 27) + 1, 0, Some(Errno::E2BIG)),
        (MapType::LruHash, 4, 8, 1 << 31, 0, Some(Errno::E2BIG)),
        (MapType::LruPercpuHash, 4, 32768, 4, 0, None),
        (MapType::LruPercpuHash, 4, 32769, 4, 0, Some(Errno::E2BIG)),
        (
            MapType::LruPercpuHash,
            4,
            8,
            16,
            BPF_F_NUMA_NODE,
            Some(Errno::EINVAL),
        ),
        (
            MapType::LruPercpuHash,
            4,
            8,
            16,
            BPF_F_NO_PREALLOC,
            Some(Errno::ENOTSUPP),
        ),
        (MapType::LruPercpuHash, 4, 8, 3, BPF_F_NO_COMMON_LRU, None),
    ];
    let with_kernel = kernel::available("creation_errnos_follow_the_kernel_rules");
    for &(t, k, v, max, flags, want) in cases {
        let d = def(t, k, v, max, flags);
        let got = LruHashMap::create_anonymous(&d, c).map(|_| ()).err();
        assert_eq!(got, want, "user engine, {d:?}");
        if with_kernel {
            let kgot = kernel::create(t.as_u32(), k, v, max, flags)
                .map(|_| ())
                .err();
            assert_eq!(kgot, want, "kernel, {d:?}");
        }
    }
    // NO_COMMON_LRU rounds max_entries up to a multiple of the CPU count.
    let m = user(&def(MapType::LruHash, 4, 8, 3, BPF_F_NO_COMMON_LRU));
    assert_eq!(m.info().max_entries, 3u32.next_multiple_of(c));
    let m = user(&def(MapType::LruHash, 4, 8, 1, BPF_F_NO_COMMON_LRU));
    assert_eq!(m.info().max_entries, c);
}

/// Inserts `keys` with `flags` into both engines from CPU 0, asserting equal results.
fn insert_both(
    u: &LruHashMap,
    k: &kernel::KMap,
    keys: impl IntoIterator<Item = u32>,
    value_len: usize,
    flags: u64,
) {
    for i in keys {
        let value = vec![i as u8; value_len];
        let ur = errno(MapOps::update(u, &key(i), &value, flags));
        let kr = k.update(&key(i), &value, flags);
        assert_eq!(ur, kr, "update of key {i} with flags {flags}");
    }
}

fn assert_same_contents(u: &LruHashMap, k: &kernel::KMap, what: &str) {
    let uw = user_walk(u);
    let kw = kernel_walk(k);
    assert_eq!(uw.len(), kw.len(), "{what}: element counts differ");
    assert_eq!(uw, kw, "{what}: keys or iteration order differ");
    u.census().unwrap_or_else(|e| panic!("{what}: {e}"));
}

#[test]
fn common_lru_fill_evicts_like_the_kernel() {
    if !kernel::available("common_lru_fill_evicts_like_the_kernel") {
        return;
    }
    pin_to_cpu0();
    for (n, expected_after_n) in [(64u32, 64usize), (1000, 976), (1024, 1024), (10000, 9888)] {
        let d = def(MapType::LruHash, 4, 8, n, BPF_F_ZERO_SEED);
        let (u, k) = (user(&d), kmap(&d));
        insert_both(&u, &k, 0..n, 8, BPF_ANY);
        assert_same_contents(&u, &k, &format!("N={n} after N inserts"));
        if cpus() == 2 {
            assert_eq!(
                user_walk(&u).len(),
                expected_after_n,
                "N={n}: the documented count"
            );
        }
        insert_both(&u, &k, n..2 * n, 8, BPF_ANY);
        assert_same_contents(&u, &k, &format!("N={n} after 2N inserts"));
        let survivors: BTreeSet<u32> = user_keys(&u);
        assert!(
            survivors.iter().all(|&s| s >= n),
            "N={n}: an old key outlived newer ones"
        );
        if n.is_multiple_of(2 * u.target_free()) {
            assert_eq!(
                survivors,
                (n..2 * n).collect(),
                "N={n}: keys N..2N-1 remain"
            );
        }
    }
}

#[test]
fn failing_noexist_update_still_evicts_like_the_kernel() {
    if !kernel::available("failing_noexist_update_still_evicts_like_the_kernel") {
        return;
    }
    pin_to_cpu0();
    let d = def(MapType::LruHash, 4, 8, 64, BPF_F_ZERO_SEED);
    let (u, k) = (user(&d), kmap(&d));
    insert_both(&u, &k, 0..64, 8, BPF_ANY);
    let before = user_walk(&u).len();
    // NOEXIST on an existing key: EEXIST on both, and a target_free batch gets evicted.
    insert_both(&u, &k, [10], 8, BPF_NOEXIST);
    assert_eq!(
        errno(MapOps::update(&u, &key(10), &[0; 8], BPF_NOEXIST)),
        Err(Errno::EEXIST)
    );
    assert_same_contents(&u, &k, "after failing NOEXIST updates");
    assert!(
        user_walk(&u).len() < before,
        "a failing update evicted nothing"
    );
    // Re-updating an existing key in a full map also allocates and can evict.
    insert_both(&u, &k, [20, 21, 22, 23], 8, BPF_ANY);
    insert_both(&u, &k, 64..80, 8, BPF_EXIST);
    assert_same_contents(&u, &k, "after replacing updates");
}

/// A small deterministic generator for reproducible random sequences.
struct XorShift(u64);

impl XorShift {
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

fn random_ops_match(
    map_type: MapType,
    flags: u32,
    max_entries: u32,
    key_space: u64,
    ops: usize,
    seed: u64,
) {
    pin_to_cpu0();
    let d = def(map_type, 4, 8, max_entries, flags | BPF_F_ZERO_SEED);
    let (u, k) = (user(&d), kmap(&d));
    let value_len = MapOps::info(&u).user_value_size();
    let mut rng = XorShift(seed);
    for step in 0..ops {
        let kk = key(rng.below(key_space) as u32);
        let value: Vec<u8> = (0..value_len).map(|i| (step + i) as u8).collect();
        let what = rng.below(10);
        let (ur, kr) = match what {
            0..=5 => {
                let f = [BPF_ANY, BPF_ANY, BPF_NOEXIST, BPF_EXIST][rng.below(4) as usize];
                (
                    errno(MapOps::update(&u, &kk, &value, f)),
                    k.update(&kk, &value, f),
                )
            }
            6 | 7 => (errno(MapOps::delete(&u, &kk)), k.delete(&kk)),
            _ => {
                let mut uv = vec![0u8; value_len];
                let mut kv = vec![0u8; value_len];
                let ur = errno(MapOps::lookup(&u, &kk, &mut uv, 0));
                let kr = k.lookup(&kk, &mut kv);
                assert_eq!(uv, kv, "step {step}: values differ");
                (ur, kr)
            }
        };
        assert_eq!(ur, kr, "step {step}: op {what} on key {:?}", kk);
    }
    assert_same_contents(
        &u,
        &k,
        &format!("{map_type} flags {flags:#x} after {ops} random ops"),
    );
}

#[test]
fn random_single_cpu_sequences_match_the_kernel() {
    if !kernel::available("random_single_cpu_sequences_match_the_kernel") {
        return;
    }
    let ops: usize = std::env::var("BPFMAPS_LRU_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    random_ops_match(MapType::LruHash, 0, 100, 300, ops, 0x1234_5678);
    random_ops_match(MapType::LruHash, 0, 1000, 1500, ops, 0x9abc_def0);
    random_ops_match(
        MapType::LruHash,
        BPF_F_NO_COMMON_LRU,
        100,
        300,
        ops,
        0x0bad_cafe,
    );
    random_ops_match(MapType::LruPercpuHash, 0, 100, 300, ops, 0x5eed_1234);
    random_ops_match(
        MapType::LruPercpuHash,
        BPF_F_NO_COMMON_LRU,
        64,
        150,
        ops,
        0x7777_1111,
    );
}

#[test]
fn no_common_lru_single_cpu_holds_its_share() {
    if !kernel::available("no_common_lru_single_cpu_holds_its_share") {
        return;
    }
    pin_to_cpu0();
    let d = def(
        MapType::LruHash,
        4,
        8,
        64,
        BPF_F_NO_COMMON_LRU | BPF_F_ZERO_SEED,
    );
    let (u, k) = (user(&d), kmap(&d));
    insert_both(&u, &k, 0..200, 8, BPF_ANY);
    assert_same_contents(&u, &k, "NO_COMMON_LRU after 200 inserts");
    assert_eq!(user_walk(&u).len() as u32, 64 / cpus());
}

#[test]
fn lookup_batches_match_the_kernel() {
    if !kernel::available("lookup_batches_match_the_kernel") {
        return;
    }
    pin_to_cpu0();
    let d = def(MapType::LruHash, 4, 8, 64, BPF_F_ZERO_SEED);
    let (u, k) = (user(&d), kmap(&d));
    insert_both(&u, &k, 0..40, 8, BPF_ANY);
    for chunk in [1u32, 3, 7, 64] {
        let mut in_batch: Option<[u8; 4]> = None;
        loop {
            let (mut uk, mut uv) = (vec![0u8; 4 * chunk as usize], vec![0u8; 8 * chunk as usize]);
            let (mut kk, mut kv) = (uk.clone(), uv.clone());
            let (mut uo, mut ko) = ([0u8; 4], [0u8; 4]);
            let mut bufs = BatchBuffers {
                keys: &mut uk,
                values: &mut uv,
                count: chunk,
            };
            let ur = errno(MapOps::lookup_batch(
                &u,
                in_batch.as_ref().map(|b| &b[..]),
                &mut uo,
                &mut bufs,
                0,
                0,
            ));
            let ucount = bufs.count;
            let (kr, kcount) = k.lookup_batch(in_batch.as_ref(), &mut ko, &mut kk, &mut kv, chunk);
            assert_eq!(
                (ur, ucount),
                (kr, kcount),
                "chunk {chunk} from {in_batch:?}"
            );
            assert_eq!(uk, kk, "chunk {chunk}: keys");
            assert_eq!(uv, kv, "chunk {chunk}: values");
            if ur.is_err() {
                break;
            }
            assert_eq!(uo, ko, "chunk {chunk}: cursor");
            in_batch = Some(uo);
        }
    }
}

#[test]
fn operation_errnos() {
    let d = def(MapType::LruHash, 4, 8, 16, 0);
    let u = user(&d);
    let v = [1u8; 8];
    assert_eq!(
        errno(MapOps::update(&u, &key(1), &v, 3)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        errno(MapOps::update(&u, &key(1), &v, BPF_F_LOCK)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        errno(MapOps::update(&u, &key(1), &v, 8)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        errno(MapOps::update(&u, &key(1), &v, BPF_EXIST)),
        Err(Errno::ENOENT)
    );
    assert_eq!(errno(MapOps::update(&u, &key(1), &v, BPF_NOEXIST)), Ok(()));
    assert_eq!(
        errno(MapOps::update(&u, &key(1), &v, BPF_NOEXIST)),
        Err(Errno::EEXIST)
    );
    let mut out = [0u8; 8];
    assert_eq!(
        errno(MapOps::lookup(&u, &key(1), &mut out, 1)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        errno(MapOps::lookup(&u, &key(1), &mut out, BPF_F_LOCK)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        errno(MapOps::lookup(&u, &key(2), &mut out, 0)),
        Err(Errno::ENOENT)
    );
    assert_eq!(errno(MapOps::delete(&u, &key(2))), Err(Errno::ENOENT));
    assert_eq!(
        errno(MapOps::lookup_and_delete(&u, &key(2), &mut out, 0)),
        Err(Errno::ENOENT)
    );
    assert_eq!(
        errno(MapOps::lookup_and_delete(&u, &key(1), &mut out, 0)),
        Ok(())
    );
    assert_eq!(out, v);
    assert_eq!(
        errno(MapOps::lookup(&u, &key(1), &mut out, 0)),
        Err(Errno::ENOENT)
    );
    // Missing key in get_next_key restarts from the first key.
    MapOps::update(&u, &key(5), &v, 0).unwrap();
    let mut next = [0u8; 4];
    MapOps::get_next_key(&u, Some(&key(99)), &mut next).unwrap();
    assert_eq!(next, key(5));
    assert_eq!(
        errno(MapOps::get_next_key(&u, Some(&key(5)), &mut next)),
        Err(Errno::ENOENT)
    );
    // Batch element flags other than 0 are EINVAL and leave count untouched.
    let (mut ks, mut vs) = (vec![0u8; 4], vec![0u8; 8]);
    let mut bufs = BatchBuffers {
        keys: &mut ks,
        values: &mut vs,
        count: 1,
    };
    assert_eq!(
        errno(MapOps::update_batch(&u, &mut bufs, BPF_NOEXIST, 0)),
        Err(Errno::EINVAL)
    );
    assert_eq!(bufs.count, 1);
    // Freeze: writes EPERM, a second freeze EPERM.
    MapOps::freeze(&u).unwrap();
    assert_eq!(errno(MapOps::update(&u, &key(6), &v, 0)), Err(Errno::EPERM));
    assert_eq!(errno(MapOps::delete(&u, &key(5))), Err(Errno::EPERM));
    assert_eq!(errno(MapOps::freeze(&u)), Err(Errno::EPERM));
    assert!(MapOps::info(&u).frozen);
    // A read-only map refuses writes, a write-only map reads.
    let ro = user(&def(MapType::LruHash, 4, 8, 16, BPF_F_RDONLY));
    assert_eq!(
        errno(MapOps::update(&ro, &key(1), &v, 0)),
        Err(Errno::EPERM)
    );
    let wo = user(&def(MapType::LruHash, 4, 8, 16, BPF_F_WRONLY));
    MapOps::update(&wo, &key(1), &v, 0).unwrap();
    assert_eq!(
        errno(MapOps::lookup(&wo, &key(1), &mut out, 0)),
        Err(Errno::EPERM)
    );
}

#[test]
fn program_lookups_protect_keys_and_syscall_lookups_do_not() {
    pin_to_cpu0();
    // 8 entries, 2 CPUs: target_free 2. Fill, touch keys 0-3, insert 4 new keys.
    for from_program in [true, false] {
        let d = def(MapType::LruHash, 4, 8, 8, 0);
        let u = user(&d);
        for i in 0..8 {
            MapOps::update(&u, &key(i), &[i as u8; 8], 0).unwrap();
        }
        for i in 0..4 {
            if from_program {
                let at = u.helper_lookup(&key(i), 0).expect("present");
                assert_eq!(at.len, 8);
            } else {
                let mut out = [0u8; 8];
                MapOps::lookup(&u, &key(i), &mut out, 0).unwrap();
            }
        }
        for i in 8..12 {
            MapOps::update(&u, &key(i), &[0; 8], 0).unwrap();
        }
        let present = user_keys(&u);
        let protected = (0..4).all(|i| present.contains(&i));
        assert_eq!(
            protected, from_program,
            "program lookups: {from_program}, present: {present:?}"
        );
        u.census().unwrap();
    }
}

#[test]
fn percpu_values_use_the_kernel_layout() {
    let c = cpus() as usize;
    let d = def(MapType::LruPercpuHash, 4, 4, 16, 0);
    let u = user(&d);
    let stride = 8;
    let mut all = vec![0u8; stride * c];
    for cpu in 0..c {
        all[cpu * stride..cpu * stride + 4].copy_from_slice(&(cpu as u32 + 10).to_ne_bytes());
        all[cpu * stride + 4..cpu * stride + 8].copy_from_slice(&0xdead_beefu32.to_ne_bytes());
    }
    MapOps::update(&u, &key(1), &all, 0).unwrap();
    let mut out = vec![0u8; stride * c];
    MapOps::lookup(&u, &key(1), &mut out, 0).unwrap();
    assert_eq!(out, all, "padding round-trips");
    // A program insert of a new key on the last CPU zero-fills the other slots.
    let last = (c - 1) as u32;
    u.helper_update(&key(2), &0x77u32.to_ne_bytes(), 0, last)
        .unwrap();
    MapOps::lookup(&u, &key(2), &mut out, 0).unwrap();
    for cpu in 0..c {
        let want = if cpu as u32 == last { 0x77 } else { 0 };
        assert_eq!(
            u32::from_ne_bytes(out[cpu * stride..cpu * stride + 4].try_into().unwrap()),
            want
        );
    }
    // A program update of an existing key changes only its CPU's slot.
    u.helper_update(&key(1), &0x55u32.to_ne_bytes(), BPF_EXIST, 0)
        .unwrap();
    MapOps::lookup(&u, &key(1), &mut out, 0).unwrap();
    assert_eq!(u32::from_ne_bytes(out[0..4].try_into().unwrap()), 0x55);
    if c > 1 {
        assert_eq!(u32::from_ne_bytes(out[8..12].try_into().unwrap()), 11);
    }
    // The helper lookup points at the CPU's own slot.
    let at = u.helper_lookup(&key(1), 0).unwrap();
    let mut slot = [0u8; 4];
    u.region().read(at.offset, &mut slot);
    assert_eq!(u32::from_ne_bytes(slot), 0x55);
    assert_eq!(
        u.helper_update(&key(9), &[0; 4], BPF_EXIST, 0),
        Err(Errno::ENOENT)
    );
    assert_eq!(u.helper_delete(&key(9)), Err(Errno::ENOENT));
    assert_eq!(u.helper_delete(&key(1)), Ok(()));
    assert_eq!(u.helper_lookup(&key(1), 0), None);
}

#[test]
fn invariants_hold_under_concurrent_random_operations() {
    for (map_type, flags) in [
        (MapType::LruHash, 0),
        (MapType::LruHash, BPF_F_NO_COMMON_LRU),
        (MapType::LruPercpuHash, 0),
    ] {
        let d = def(map_type, 4, 8, 128, flags);
        let u = user(&d);
        let c = cpus();
        let value_len = MapOps::info(&u).user_value_size();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let u = &u;
                s.spawn(move || {
                    let mut rng = XorShift(0x1000 + t);
                    for step in 0..20_000u64 {
                        let kk = key(rng.below(400) as u32);
                        let cpu = rng.below(u64::from(c)) as u32;
                        match rng.below(8) {
                            0 | 1 => {
                                let _ = MapOps::update(
                                    u,
                                    &kk,
                                    &vec![step as u8; value_len],
                                    rng.below(3),
                                );
                            }
                            2 => {
                                let _ = u.helper_update(&kk, &[1; 8], rng.below(3), cpu);
                            }
                            3 => {
                                let _ = u.helper_lookup(&kk, cpu);
                            }
                            4 => {
                                let _ = MapOps::delete(u, &kk);
                            }
                            5 => {
                                let mut out = vec![0u8; value_len];
                                let _ = MapOps::lookup_and_delete(u, &kk, &mut out, 0);
                            }
                            _ => {
                                let mut out = vec![0u8; value_len];
                                let _ = MapOps::lookup(u, &kk, &mut out, 0);
                            }
                        }
                    }
                });
            }
        });
        let census = u
            .census()
            .unwrap_or_else(|e| panic!("{map_type} {flags:#x}: {e}"));
        assert!(census.elements <= MapOps::info(&u).max_entries);
        let nodes =
            census.active + census.inactive + census.free + census.local_free + census.pending;
        assert_eq!(
            nodes,
            MapOps::info(&u).max_entries,
            "every node on exactly one list"
        );
    }
}

#[test]
fn a_second_opening_shares_the_map() {
    let d = def(MapType::LruHash, 4, 8, 32, 0);
    let u = user(&d);
    MapOps::update(&u, &key(3), &[3; 8], 0).unwrap();
    let file = u.region().file().try_clone().unwrap();
    let region = bpfmaps_maps::region::Region::map(file).unwrap();
    let header = bpfmaps_maps::header::MapHeader::read(&region).unwrap();
    let other = LruHashMap::open(std::sync::Arc::new(bpfmaps_maps::MapFile {
        region,
        header,
    }))
    .unwrap();
    let mut out = [0u8; 8];
    Backend::lookup(&other, &key(3), &mut out).unwrap();
    assert_eq!(out, [3; 8]);
    Backend::update(&other, &key(4), &[4; 8], 0).unwrap();
    MapOps::lookup(&u, &key(4), &mut out, 0).unwrap();
    assert_eq!(out, [4; 8]);
}

#[test]
fn a_thread_dying_with_the_lock_held_leaves_a_consistent_map() {
    for flags in [0, BPF_F_NO_COMMON_LRU] {
        let d = def(MapType::LruHash, 4, 8, 64, flags);
        let u = user(&d);
        for i in 0..40 {
            MapOps::update(&u, &key(i), &[i as u8; 8], 0).unwrap();
        }
        let before = user_keys(&u);
        // A thread exits holding the area's lock (first 64 bytes of the area): the next locker
        // must notice the dead owner and rebuild the lists from the hash chains.
        std::thread::scope(|s| {
            s.spawn(|| {
                let guard = bpfmaps_maps::lock::lock(u.region(), bpfmaps_maps::header::AREA_OFFSET);
                std::mem::forget(guard.unwrap());
            });
        });
        let census = u.census().expect("consistent after repair");
        assert_eq!(census.elements as usize, before.len());
        assert_eq!(user_keys(&u), before, "no acknowledged update lost");
        for &i in &before {
            let mut out = [0u8; 8];
            MapOps::lookup(&u, &key(i), &mut out, 0).unwrap();
            assert_eq!(out, [i as u8; 8]);
        }
        for i in 40..200 {
            MapOps::update(&u, &key(i), &[0; 8], 0).unwrap();
        }
        u.census().expect("consistent after more updates");
    }
}

#[test]
fn lock_free_syscall_lookups_never_return_a_torn_or_foreign_value() {
    // Writers keep replacing keys 0..8 (each value is 256 copies of one byte derived from key and
    // round) and inserting other keys to force evictions and node reuse; readers look keys up
    // without the lock and must only ever see a whole value of the key they asked for.
    let vlen = 256usize;
    let m = user(&def(
        MapType::LruHash,
        4,
        vlen as u32,
        16,
        BPF_F_NO_COMMON_LRU,
    ));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let byte = |k: u32, round: u32| (k * 16 + round % 16) as u8;
    std::thread::scope(|scope| {
        let (m, stop) = (&m, &stop);
        scope.spawn(move || {
            let mut round = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for k in 0..8u32 {
                    MapOps::update(m, &key(k), &vec![byte(k, round); vlen], BPF_ANY).unwrap();
                    MapOps::update(
                        m,
                        &key(100 + (round * 8 + k) % 64),
                        &vec![0xEE; vlen],
                        BPF_ANY,
                    )
                    .unwrap();
                }
                round = round.wrapping_add(1);
            }
        });
        // Stops the writer also when an assertion below fails, so the test fails, not hangs.
        struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop_writer = StopOnDrop(stop);
        let mut hits = 0u32;
        let start = std::time::Instant::now();
        let mut out = vec![0u8; vlen];
        while start.elapsed() < std::time::Duration::from_millis(300) {
            for k in 0..8u32 {
                match errno(MapOps::lookup(m, &key(k), &mut out, 0)) {
                    Ok(()) => {
                        hits += 1;
                        assert!(
                            out.iter().all(|&b| b == out[0]) && u32::from(out[0]) / 16 == k,
                            "key {k}: torn or foreign value {out:?}"
                        );
                    }
                    Err(e) => assert_eq!(e, Errno::ENOENT),
                }
            }
        }
        assert!(hits > 100, "only {hits} successful lookups");
    });
}
