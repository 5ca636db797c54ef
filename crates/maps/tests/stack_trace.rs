//! STACK_TRACE on the user engine: creation errnos and the syscall side compared with the kernel
//! (raw bpf(2)), and the helper side `get_stackid` (ids, dedup, EEXIST on collision,
//! `BPF_F_REUSE_STACKID`, ENOMEM, skip and depth) checked against the kernel's documented rules.
//!
//! Kernel comparisons fail without root/BPF unless `BPFMAPS_SKIP_KERNEL=1` is set.

use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::map_type::stackid_flags::*;
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_maps::stack_trace::StackTraceMap;

mod kernel {
    use bpfmaps_abi::Errno;

    fn bpf(cmd: u32, attr: &mut [u8; 128]) -> Result<i64, Errno> {
        // SAFETY: `attr` is a valid 128-byte buffer; pointers stored in it point at live buffers
        // of the sizes the command uses.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd as libc::c_long,
                attr.as_mut_ptr(),
                128usize,
            )
        };
        if rc < 0 {
            Err(Errno(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ))
        } else {
            Ok(rc)
        }
    }

    /// A kernel stack map, closed on drop.
    pub struct KMap(i32);

    impl Drop for KMap {
        fn drop(&mut self) {
            // SAFETY: we own the fd.
            unsafe { libc::close(self.0) };
        }
    }

    /// BPF_MAP_CREATE.
    pub fn create(key: u32, value: u32, max: u32, flags: u32) -> Result<KMap, Errno> {
        let mut a = [0u8; 128];
        for (off, v) in [(0, 7u32), (4, key), (8, value), (12, max), (16, flags)] {
            a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        }
        bpf(0, &mut a).map(|fd| KMap(fd as i32))
    }

    /// True when bpf(2) works; otherwise fails unless BPFMAPS_SKIP_KERNEL=1.
    pub fn available(test: &str) -> bool {
        match create(4, 8, 1, 0) {
            Ok(_) => true,
            Err(e) if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") => {
                eprintln!("{test}: skipped, bpf(2) refused: {e} (BPFMAPS_SKIP_KERNEL=1)");
                false
            }
            Err(e) => {
                panic!("{test}: bpf(2) unavailable ({e}); run as root or set BPFMAPS_SKIP_KERNEL=1")
            }
        }
    }

    impl KMap {
        /// An element command (lookup 1, update 2, delete 3, next key 4, lookup-and-delete 21).
        pub fn elem(
            &self,
            cmd: u32,
            key: Option<&[u8]>,
            value: &mut [u8],
            flags: u64,
        ) -> Result<(), Errno> {
            let mut a = [0u8; 128];
            a[0..4].copy_from_slice(&(self.0 as u32).to_ne_bytes());
            let key = key.map_or(0, |k| k.as_ptr() as u64);
            a[8..16].copy_from_slice(&key.to_ne_bytes());
            // Delete must leave the value field zero (CHECK_ATTR).
            let value = if cmd == 3 {
                0
            } else {
                value.as_mut_ptr() as u64
            };
            a[16..24].copy_from_slice(&value.to_ne_bytes());
            a[24..32].copy_from_slice(&flags.to_ne_bytes());
            bpf(cmd, &mut a).map(|_| ())
        }

        /// BPF_MAP_LOOKUP_BATCH with a 1-element buffer.
        pub fn lookup_batch(&self) -> Result<(), Errno> {
            let (mut keys, mut values, mut out) = ([0u8; 4], [0u8; 8], [0u8; 4]);
            let mut a = [0u8; 128];
            a[8..16].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
            a[16..24].copy_from_slice(&(keys.as_mut_ptr() as u64).to_ne_bytes());
            a[24..32].copy_from_slice(&(values.as_mut_ptr() as u64).to_ne_bytes());
            a[32..36].copy_from_slice(&1u32.to_ne_bytes());
            a[36..40].copy_from_slice(&(self.0 as u32).to_ne_bytes());
            bpf(24, &mut a).map(|_| ())
        }
    }
}

fn def(value_size: u32, max_entries: u32, map_flags: u32) -> MapDef {
    MapDef {
        map_type: MapType::StackTrace,
        key_size: 4,
        value_size,
        max_entries,
        map_flags,
        name: "stacks".into(),
    }
}

fn map(value_size: u32, max_entries: u32) -> StackTraceMap {
    StackTraceMap::create_anonymous(&def(value_size, max_entries, 0)).expect("stack map")
}

fn errno<T>(r: Result<T, MapError>) -> Result<T, Errno> {
    r.map_err(|e| e.errno().expect("an errno"))
}

/// The kernel's id for a stack: `jhash2(ips as u32 words, nr * 2, 0) & (n_buckets - 1)`.
fn expected_id(ips: &[u64], n_buckets: u32) -> u32 {
    let bytes: Vec<u8> = ips.iter().flat_map(|ip| ip.to_le_bytes()).collect();
    bpfmaps_maps::jhash::jhash2(&bytes, 0) & (n_buckets - 1)
}

/// Finds a stack of `len` frames whose id differs from (or equals, with `same`) `id`.
fn stack_with_id(n_buckets: u32, id: u32, same: bool, seed: u64) -> Vec<u64> {
    (0..10_000u64)
        .map(|i| vec![0xffff_0000 + seed * 100_000 + i, 0x4000 + i])
        .find(|s| (expected_id(s, n_buckets) == id) == same)
        .expect("a stack with the wanted id")
}

#[test]
fn creation_errnos_follow_the_kernel_rules() {
    let cases: &[(u32, u32, u32, u32, Option<Errno>)] = &[
        (4, 8, 1, 0, None),
        (4, 8 * 127, 16, 0, None),
        (4, 8 * 128, 16, 0, Some(Errno::EINVAL)),
        (4, 12, 16, 0, Some(Errno::EINVAL)),
        (4, 4, 16, 0, Some(Errno::EINVAL)),
        (8, 8, 16, 0, Some(Errno::EINVAL)),
        (4, 8, 0, 0, Some(Errno::EINVAL)),
        (4, 32, 16, BPF_F_STACK_BUILD_ID, None),
        (4, 8, 16, BPF_F_STACK_BUILD_ID, Some(Errno::EINVAL)),
        (4, 8, 16, BPF_F_NO_PREALLOC, Some(Errno::EINVAL)),
        (4, 8, 16, BPF_F_RDONLY_PROG, Some(Errno::EINVAL)),
        (4, 8, 16, BPF_F_RDONLY | BPF_F_WRONLY, Some(Errno::EINVAL)),
        (4, 8, 16, BPF_F_RDONLY, None),
        (4, 8, (1 << 31) + 1, 0, Some(Errno::E2BIG)),
    ];
    let with_kernel = kernel::available("creation_errnos_follow_the_kernel_rules");
    for &(k, v, max, flags, want) in cases {
        let d = MapDef {
            key_size: k,
            ..def(v, max, flags)
        };
        assert_eq!(
            StackTraceMap::create_anonymous(&d).map(|_| ()).err(),
            want,
            "user engine, {d:?}"
        );
        if with_kernel {
            assert_eq!(
                kernel::create(k, v, max, flags).map(|_| ()).err(),
                want,
                "kernel, {d:?}"
            );
        }
    }
}

#[test]
fn syscall_side_of_an_empty_map_matches_the_kernel() {
    let u = map(64, 10);
    assert_eq!(u.layout().n_buckets, 16);
    let mut value = [0u8; 64];
    let mut next = [0u8; 4];
    let user: Vec<Result<(), Errno>> = vec![
        errno(MapOps::lookup(&u, &3u32.to_ne_bytes(), &mut value, 0)),
        errno(MapOps::lookup(&u, &99u32.to_ne_bytes(), &mut value, 0)),
        errno(MapOps::update(&u, &3u32.to_ne_bytes(), &value, 0)),
        errno(MapOps::delete(&u, &3u32.to_ne_bytes())),
        errno(MapOps::delete(&u, &16u32.to_ne_bytes())),
        errno(MapOps::get_next_key(&u, None, &mut next)),
        errno(MapOps::lookup_and_delete(
            &u,
            &3u32.to_ne_bytes(),
            &mut value,
            0,
        )),
    ];
    assert_eq!(
        user,
        vec![
            Err(Errno::ENOENT),
            Err(Errno::ENOENT),
            Err(Errno::EINVAL),
            Err(Errno::ENOENT),
            Err(Errno::E2BIG),
            Err(Errno::ENOENT),
            Err(Errno::ENOENT),
        ]
    );
    let (mut ks, mut vs, mut out) = (vec![0u8; 4], vec![0u8; 64], [0u8; 4]);
    let mut bufs = BatchBuffers {
        keys: &mut ks,
        values: &mut vs,
        count: 1,
    };
    assert_eq!(
        errno(MapOps::lookup_batch(&u, None, &mut out, &mut bufs, 0, 0)),
        Err(Errno::ENOTSUPP)
    );
    assert_eq!(
        errno(MapOps::update_batch(&u, &mut bufs, 0, 0)),
        Err(Errno::ENOTSUPP)
    );
    assert_eq!(
        errno(MapOps::delete_batch(&u, &mut bufs, 0, 0)),
        Err(Errno::ENOTSUPP)
    );
    if !kernel::available("syscall_side_of_an_empty_map_matches_the_kernel") {
        return;
    }
    let k = kernel::create(4, 64, 10, 0).unwrap();
    let kernel: Vec<Result<(), Errno>> = vec![
        k.elem(1, Some(&3u32.to_ne_bytes()), &mut value, 0),
        k.elem(1, Some(&99u32.to_ne_bytes()), &mut value, 0),
        k.elem(2, Some(&3u32.to_ne_bytes()), &mut value, 0),
        k.elem(3, Some(&3u32.to_ne_bytes()), &mut value, 0),
        k.elem(3, Some(&16u32.to_ne_bytes()), &mut value, 0),
        k.elem(4, None, &mut next, 0),
        k.elem(21, Some(&3u32.to_ne_bytes()), &mut value, 0),
    ];
    assert_eq!(user, kernel);
    assert_eq!(k.lookup_batch(), Err(Errno::ENOTSUPP));
}

#[test]
fn ids_are_the_kernels_hash_and_identical_stacks_share_one() {
    let u = map(8 * 8, 100);
    let nb = u.layout().n_buckets;
    assert_eq!(nb, 128);
    let a = [0xffff_ffff_8100_0010u64, 0xffff_ffff_8100_0020, 0x4010];
    let id = u.get_stackid(&a, 0).unwrap();
    assert_eq!(id, expected_id(&a, nb));
    assert_eq!(u.get_stackid(&a, 0), Ok(id), "dedup");
    assert_eq!(u.free_elements(), Ok(99));
    // Lookup copies nr frames and zero-fills the rest.
    let mut value = [0xaau8; 64];
    MapOps::lookup(&u, &id.to_ne_bytes(), &mut value, 0).unwrap();
    for (i, ip) in a.iter().enumerate() {
        assert_eq!(
            u64::from_ne_bytes(value[8 * i..8 * i + 8].try_into().unwrap()),
            *ip
        );
    }
    assert!(value[24..].iter().all(|&b| b == 0));
    // Skip drops leading frames before hashing; skipping everything is EFAULT.
    let skipped = u.get_stackid(&a, 1).unwrap();
    assert_eq!(skipped, expected_id(&a[1..], nb));
    assert_eq!(u.get_stackid(&a, 3), Err(Errno::EFAULT));
    assert_eq!(u.get_stackid(&[], 0), Err(Errno::EFAULT));
    assert_eq!(u.get_stackid(&a, 1 << 11), Err(Errno::EINVAL));
    // get_next_key walks the non-empty ids in ascending order; a missing id restarts.
    let mut ids = [id, skipped];
    ids.sort();
    let mut next = [0u8; 4];
    MapOps::get_next_key(&u, None, &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), ids[0]);
    MapOps::get_next_key(&u, Some(&ids[0].to_ne_bytes()), &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), ids[1]);
    assert_eq!(
        errno(MapOps::get_next_key(
            &u,
            Some(&ids[1].to_ne_bytes()),
            &mut next
        )),
        Err(Errno::ENOENT)
    );
    let empty = (0..nb).find(|i| !ids.contains(i)).unwrap();
    MapOps::get_next_key(&u, Some(&empty.to_ne_bytes()), &mut next).unwrap();
    assert_eq!(u32::from_ne_bytes(next), ids[0]);
    // Delete frees the element; lookup-and-delete copies then frees.
    MapOps::delete(&u, &id.to_ne_bytes()).unwrap();
    assert_eq!(
        errno(MapOps::delete(&u, &id.to_ne_bytes())),
        Err(Errno::ENOENT)
    );
    MapOps::lookup_and_delete(&u, &skipped.to_ne_bytes(), &mut value, 0).unwrap();
    assert_eq!(u64::from_ne_bytes(value[0..8].try_into().unwrap()), a[1]);
    assert_eq!(u.free_elements(), Ok(100));
}

#[test]
fn stacks_are_truncated_to_the_value_size() {
    let u = map(16, 4);
    let long = [1u64, 2, 3, 4, 5];
    let id = u.get_stackid(&long, 0).unwrap();
    assert_eq!(id, expected_id(&long[..2], 4));
    // With skip, the capture is value_size/8 + skip frames deep, then the skip is dropped.
    let id = u.get_stackid(&long, 2).unwrap();
    assert_eq!(id, expected_id(&long[2..4], 4));
}

#[test]
fn collisions_give_eexist_and_reuse_replaces_or_fails_with_enomem() {
    // One element, one bucket: every stack collides.
    let u = map(16, 1);
    let (a, b) = ([10u64, 11], [20u64, 21]);
    assert_eq!(u.get_stackid(&a, 0), Ok(0));
    assert_eq!(u.get_stackid(&a, 0), Ok(0));
    assert_eq!(u.get_stackid(&b, 0), Err(Errno::EEXIST));
    assert_eq!(
        u.get_stackid(&b, BPF_F_REUSE_STACKID),
        Err(Errno::ENOMEM),
        "the only element is in use"
    );
    // FAST_STACK_CMP returns the id when the hash matches, without comparing frames.
    assert_eq!(u.get_stackid(&a, BPF_F_FAST_STACK_CMP), Ok(0));
    assert_eq!(u.get_stackid(&b, BPF_F_FAST_STACK_CMP), Err(Errno::EEXIST));

    // Four elements, four buckets: REUSE replaces a colliding bucket while elements are free.
    let u = map(16, 4);
    let first = stack_with_id(4, 1, true, 1);
    let other = (2..10_000u64)
        .map(|i| vec![0x7000 + i, 0x8000 + i])
        .find(|s| expected_id(s, 4) == 1 && *s != first)
        .unwrap();
    assert_eq!(u.get_stackid(&first, 0), Ok(1));
    assert_eq!(u.get_stackid(&other, 0), Err(Errno::EEXIST));
    assert_eq!(u.get_stackid(&other, BPF_F_REUSE_STACKID), Ok(1));
    assert_eq!(
        u.free_elements(),
        Ok(3),
        "the replaced element went back to the free list"
    );
    let mut value = [0u8; 16];
    MapOps::lookup(&u, &1u32.to_ne_bytes(), &mut value, 0).unwrap();
    assert_eq!(
        u64::from_ne_bytes(value[0..8].try_into().unwrap()),
        other[0]
    );

    // Two elements, both in use: a REUSE on a collision is ENOMEM, a new bucket is ENOMEM too.
    let u = map(16, 2);
    let s0 = stack_with_id(2, 0, true, 2);
    let s1 = stack_with_id(2, 1, true, 3);
    assert_eq!(u.get_stackid(&s0, 0), Ok(0));
    assert_eq!(u.get_stackid(&s1, 0), Ok(1));
    let c0 = stack_with_id(2, 0, true, 4);
    assert_eq!(u.get_stackid(&c0, BPF_F_REUSE_STACKID), Err(Errno::ENOMEM));
    MapOps::delete(&u, &1u32.to_ne_bytes()).unwrap();
    assert_eq!(u.get_stackid(&c0, BPF_F_REUSE_STACKID), Ok(0));
}

#[test]
fn build_id_maps_store_ip_entries() {
    let u = StackTraceMap::create_anonymous(&def(64, 8, BPF_F_STACK_BUILD_ID)).unwrap();
    let ips = [0x1234u64, 0x5678];
    let id = u.get_stackid(&ips, BPF_F_USER_STACK).unwrap();
    let mut value = [0xffu8; 64];
    MapOps::lookup(&u, &id.to_ne_bytes(), &mut value, 0).unwrap();
    for (i, ip) in ips.iter().enumerate() {
        let entry = &value[32 * i..32 * i + 32];
        assert_eq!(
            i32::from_ne_bytes(entry[0..4].try_into().unwrap()),
            2,
            "BPF_STACK_BUILD_ID_IP"
        );
        assert!(entry[4..24].iter().all(|&b| b == 0));
        assert_eq!(u64::from_ne_bytes(entry[24..32].try_into().unwrap()), *ip);
    }
    // Deeper than value_size / 32 entries is truncated.
    let id2 = u.get_stackid(&[1, 2, 3], 0).unwrap();
    assert_eq!(id2, expected_id(&[1, 2], 8));
}

#[test]
fn a_process_that_dies_holding_the_lock_does_not_leak_elements() {
    let u = map(16, 4);
    u.get_stackid(&[1, 2], 0).unwrap();
    // A thread that exits while holding the area's lock: the next locker repairs the free list.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::mem::forget(
                bpfmaps_maps::lock::lock(u_region(&u), bpfmaps_maps::header::AREA_OFFSET).unwrap(),
            )
        });
    });
    assert_eq!(u.free_elements(), Ok(3));
    assert_eq!(u.get_stackid(&[1, 2], 0), Ok(expected_id(&[1, 2], 4)));
}

fn u_region(u: &StackTraceMap) -> &bpfmaps_maps::region::Region {
    u.region()
}
