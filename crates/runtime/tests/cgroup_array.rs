//! `BPF_MAP_TYPE_CGROUP_ARRAY` and `bpf_current_task_under_cgroup` on the user engine against the
//! kernel: the same definitions refused with the same errnos, the same operations from user space
//! giving the same results (a cgroup directory fd stored, `ENOTSUPP` for lookups, `E2BIG`,
//! `EBADF`, `ENOENT`), and `bpf/core/cgroup_filter`'s helper call returning the same values on
//! both engines for a cgroup this thread is in, one it is not in, an empty slot and an index past
//! the end. Needs root with BPF and a cgroup2 mount; without them the tests fail unless
//! `BPFMAPS_SKIP_KERNEL=1` is set.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use bpfmaps_abi::{map_flags, Errno, MapDef, MapError, MapOps, MapType};
use bpfmaps_kernel::map::KernelMap;
use bpfmaps_kernel::sys::{prog_load_raw, prog_test_run, TestRun};
use bpfmaps_maps::cgroup_array::cgroup2_mounts;
use bpfmaps_maps::UserMap;
use bpfmaps_obj::ObjectSpec;
use bpfmaps_runtime::{LoadOptions, UserObject};

fn available(test: &str) -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mount = cgroup2_mounts().into_iter().next();
    if euid == 0 && mount.is_some() {
        return mount;
    }
    if std::env::var("BPFMAPS_SKIP_KERNEL").as_deref() == Ok("1") {
        eprintln!("skipping {test}: needs root and a cgroup2 mount (BPFMAPS_SKIP_KERNEL=1)");
        return None;
    }
    panic!("{test}: needs root with BPF and a cgroup2 mount; set BPFMAPS_SKIP_KERNEL=1 to skip");
}

fn def(max_entries: u32, value_size: u32, flags: u32) -> MapDef {
    MapDef {
        map_type: MapType::CgroupArray,
        key_size: 4,
        value_size,
        max_entries,
        map_flags: flags,
        name: "cg_test".to_owned(),
    }
}

fn errno_of(r: Result<(), MapError>) -> Option<Errno> {
    r.err().map(|e| e.errno().unwrap_or(Errno::EINVAL))
}

/// A cgroup this thread is not in, removed on drop.
struct ChildCgroup(PathBuf);

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The cgroup2 directory this thread is in.
fn my_cgroup(mount: &Path) -> PathBuf {
    let text = std::fs::read_to_string("/proc/thread-self/cgroup").unwrap();
    let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    mount.join(path.trim_start_matches('/'))
}

#[test]
fn cgroup_array_maps_behave_as_the_kernels() {
    let Some(mount) = available("cgroup_array_maps") else {
        return;
    };
    // Creation: the same definitions refused with the same errno.
    for (value_size, flags, max) in [
        (8, 0, 4),
        (4, map_flags::BPF_F_RDONLY_PROG, 4),
        (4, map_flags::BPF_F_WRONLY_PROG, 4),
        (4, map_flags::BPF_F_MMAPABLE, 4),
        (4, map_flags::BPF_F_PRESERVE_ELEMS, 4),
        (4, map_flags::BPF_F_RDONLY | map_flags::BPF_F_WRONLY, 4),
        (4, 0, 0),
    ] {
        let d = def(max, value_size, flags);
        let kernel = KernelMap::create(&d).err().map(|e| e.to_string());
        let user = UserMap::create(&d).err().map(|e| e.to_string());
        assert!(
            kernel.is_some() && user.is_some(),
            "{d:?}: kernel {kernel:?}, user {user:?}"
        );
        assert!(
            kernel.as_ref().unwrap().contains("EINVAL")
                && user.as_ref().unwrap().contains("EINVAL"),
            "{d:?}: kernel {kernel:?}, user {user:?}"
        );
    }
    let d = def(4, 4, map_flags::BPF_F_RDONLY);
    let kernel = KernelMap::create(&d).expect("kernel map");
    let user = UserMap::create(&d).expect("user map");
    drop((kernel, user));

    let kernel = KernelMap::create(&def(4, 4, 0)).unwrap();
    let user = UserMap::create(&def(4, 4, 0)).unwrap();
    let cgroup = File::open(my_cgroup(&mount)).unwrap();
    let not_cgroup = File::open("/proc/self/status").unwrap();
    let cg_fd = (cgroup.as_raw_fd() as u32).to_ne_bytes();
    let file_fd = (not_cgroup.as_raw_fd() as u32).to_ne_bytes();
    let closed_fd = 999_999u32.to_ne_bytes();
    let key = |i: u32| i.to_ne_bytes();
    let maps: [&dyn MapOps; 2] = [&kernel, &user];
    let mut outcomes = Vec::new();
    for map in maps {
        let mut value = [0u8; 4];
        let mut next = [0u8; 4];
        let mut o = vec![
            errno_of(map.update(&key(0), &cg_fd, 0)),
            errno_of(map.update(&key(1), &cg_fd, 1)),
            errno_of(map.update(&key(4), &cg_fd, 0)),
            errno_of(map.update(&key(1), &file_fd, 0)),
            errno_of(map.update(&key(1), &closed_fd, 0)),
            errno_of(map.lookup(&key(0), &mut value, 0)),
            errno_of(map.delete(&key(1))),
            errno_of(map.delete(&key(9))),
            errno_of(map.delete(&key(0))),
            errno_of(map.delete(&key(0))),
        ];
        o.push(errno_of(map.get_next_key(None, &mut next)));
        o.push(Some(Errno(i32::from_ne_bytes(next))).filter(|e| e.0 != 0));
        o.push(errno_of(map.get_next_key(Some(&key(3)), &mut next)));
        o.push(errno_of(map.get_next_key(Some(&key(7)), &mut next)));
        outcomes.push(o);
    }
    assert_eq!(outcomes[0], outcomes[1], "kernel, then user engine");
    assert_eq!(
        outcomes[0],
        [
            None,
            Some(Errno::EINVAL),
            Some(Errno::E2BIG),
            Some(Errno::EBADF),
            Some(Errno::EBADF),
            Some(Errno::ENOTSUPP),
            Some(Errno::ENOENT),
            Some(Errno::E2BIG),
            None,
            Some(Errno::ENOENT),
            None,
            None,
            Some(Errno::ENOENT),
            None,
        ]
    );
}

#[test]
fn current_task_under_cgroup_gives_the_kernels_answers() {
    let Some(mount) = available("current_task_under_cgroup") else {
        return;
    };
    let child = ChildCgroup(mount.join(format!("bpfmaps-test-{}", std::process::id())));
    std::fs::create_dir(&child.0).expect("create a child cgroup");
    let mine = File::open(my_cgroup(&mount)).unwrap();
    let other = File::open(&child.0).unwrap();
    let object =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/obj/core/cgroup_filter.bpf.o");

    // The user engine.
    let spec = ObjectSpec::from_file(&object).unwrap();
    let user = UserObject::load(spec.clone(), &LoadOptions::default()).unwrap();
    let user_map = user.map("cgroup_map").unwrap();
    // The kernel: the same program, its map reference pointed at a kernel map.
    let prog = spec.program("under_cgroup").unwrap();
    let kernel_map = KernelMap::create(&spec.map("cgroup_map").unwrap().def).unwrap();
    let mut insns = prog.instructions.clone();
    for r in &prog.map_references {
        insns[r.insn_index].src = 1; // BPF_PSEUDO_MAP_FD
        insns[r.insn_index].imm = kernel_map.fd().as_raw_fd();
    }
    let words: Vec<u64> = insns
        .iter()
        .map(|i| u64::from_le_bytes(i.to_bytes()))
        .collect();
    let fd = prog_load_raw(17, &words, "GPL", "under_cgroup").expect("kernel loads it");

    let mut results = Vec::new();
    for (slot0, slot2) in [(&mine, &other), (&other, &mine)] {
        for map in [&kernel_map as &dyn MapOps, &*user_map.map as &dyn MapOps] {
            map.update(
                &0u32.to_ne_bytes(),
                &(slot0.as_raw_fd() as u32).to_ne_bytes(),
                0,
            )
            .unwrap();
            map.update(
                &2u32.to_ne_bytes(),
                &(slot2.as_raw_fd() as u32).to_ne_bytes(),
                0,
            )
            .unwrap();
        }
        for index in [0u64, 1, 2, 9] {
            let ctx = index.to_ne_bytes();
            let k = prog_test_run(
                fd.as_fd(),
                &TestRun {
                    ctx_in: &ctx,
                    ..TestRun::default()
                },
            )
            .unwrap()
            .retval;
            let u = user
                .program("under_cgroup")
                .unwrap()
                .test_run(&ctx, 1)
                .unwrap()
                .retval;
            results.push((index, k as i32, u as i32));
        }
    }
    let eagain = -Errno::EAGAIN.0;
    let e2big = -Errno::E2BIG.0;
    assert_eq!(
        results,
        [
            (0, 1, 1),
            (1, eagain, eagain),
            (2, 0, 0),
            (9, e2big, e2big),
            (0, 0, 0),
            (1, eagain, eagain),
            (2, 1, 1),
            (9, e2big, e2big),
        ],
        "(index, kernel, user engine)"
    );
}

#[test]
fn a_cgroup_filter_switched_off_by_rodata_counts_every_run() {
    if available("cgroup_filter").is_none() {
        return;
    }
    let object =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bpf/obj/core/cgroup_filter.bpf.o");
    let mut spec = ObjectSpec::from_file(&object).unwrap();
    spec.set_global("filter_cg", &[1]).unwrap();
    // filter_cg on, slot 0 empty: the helper gives -EAGAIN, which the C treats as true.
    let on = UserObject::load(spec, &LoadOptions::default()).unwrap();
    on.program("filtered")
        .unwrap()
        .test_run(&[0u8; 8], 3)
        .unwrap();
    let off = UserObject::load(
        ObjectSpec::from_file(&object).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    off.program("filtered")
        .unwrap()
        .test_run(&[0u8; 8], 2)
        .unwrap();
    let count = |o: &UserObject| {
        let m = o.map("cgroup_f.bss").unwrap();
        let mut v = [0u8; 8];
        m.map.lookup(&0u32.to_ne_bytes(), &mut v, 0).unwrap();
        u64::from_ne_bytes(v)
    };
    assert_eq!((count(&on), count(&off)), (3, 2));
}
