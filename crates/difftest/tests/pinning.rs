//! Pinning, differentially: the same pin operations on a kernel map (bpffs) and a user-engine map
//! (a private store) must give the same errnos (kernel-map-semantics.md section 7) and the same
//! file mode, and maps re-opened read-only or write-only through their pins must answer a
//! generated op sequence identically (EPERM where the access mode forbids, section 1).

#![cfg(feature = "user-engine")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bpfmaps_abi::map_flags::BPF_F_ZERO_SEED;
use bpfmaps_abi::{Errno, MapDef, MapOps, MapType};
use bpfmaps_difftest::engines::Kernel;
use bpfmaps_difftest::known::KNOWN_DIVERGENCES;
use bpfmaps_difftest::{kernel_usable, ops_strategy, Comparison, DiffRunner, OpSpace, FIXED_SEED};
use bpfmaps_kernel::map::{Access as KernelAccess, KernelMap};
use bpfmaps_maps::{Access as UserAccess, Store, UserMap};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn kernel_errno<T>(r: Result<T, bpfmaps_kernel::Error>) -> Result<(), Errno> {
    match r {
        Ok(_) => Ok(()),
        Err(bpfmaps_kernel::Error::Sys(e)) => Err(e.errno),
        Err(e) => panic!("kernel engine failed without an errno: {e}"),
    }
}

fn user_errno<T>(r: Result<T, bpfmaps_maps::UserMapError>) -> Result<(), Errno> {
    match r {
        Ok(_) => Ok(()),
        Err(e) => Err(e
            .errno()
            .unwrap_or_else(|| panic!("user engine failed without an errno: {e}"))),
    }
}

/// The two pin directories: one on bpffs, one a private user-engine store; both removed on drop.
struct PinDirs {
    kernel: PathBuf,
    user: PathBuf,
    store: Store,
}

impl PinDirs {
    fn new() -> PinDirs {
        bpfmaps_kernel::fs::ensure_bpffs().expect("bpffs mounted");
        let pid = std::process::id();
        let kernel = PathBuf::from(format!("/sys/fs/bpf/bpfmaps_difftest_{pid}"));
        let _ = std::fs::remove_dir_all(&kernel);
        std::fs::create_dir(&kernel).expect("mkdir on bpffs");
        let user = std::env::temp_dir().join(format!("bpfmaps-difftest-pin-{pid}"));
        let _ = std::fs::remove_dir_all(&user);
        let store = Store::open(&user).expect("user store");
        PinDirs {
            kernel,
            user,
            store,
        }
    }
}

impl Drop for PinDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.kernel);
        let _ = std::fs::remove_dir_all(&self.user);
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("stat pin")
        .permissions()
        .mode()
        & 0o7777
}

fn def() -> MapDef {
    MapDef {
        map_type: MapType::Hash,
        key_size: 4,
        value_size: 8,
        max_entries: 16,
        map_flags: BPF_F_ZERO_SEED,
        name: "pinned".into(),
    }
}

#[test]
fn pin_errnos_modes_and_access_modes_match_kernel() {
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let dirs = PinDirs::new();
    let d = def();
    let kmap = KernelMap::create(&d).expect("kernel map");
    let umap = UserMap::create_in(&dirs.store, &d).expect("user map");

    // Pin errnos, section 7.
    let cases: [(&str, Result<(), Errno>); 4] = [
        ("m", Ok(())),
        ("m", Err(Errno::EEXIST)),
        ("missing/m", Err(Errno::ENOENT)),
        ("a.b", Err(Errno::EPERM)),
    ];
    for (name, expected) in cases {
        let k = kernel_errno(kmap.pin(&dirs.kernel.join(name)));
        let u = user_errno(umap.pin(&dirs.user.join(name)));
        assert_eq!(k, expected, "kernel pin {name}");
        assert_eq!(u, k, "user pin {name} vs kernel");
    }
    let (kpin, upin) = (dirs.kernel.join("m"), dirs.user.join("m"));
    assert_eq!(mode(&kpin), 0o600, "bpffs pin mode");
    assert_eq!(mode(&upin), mode(&kpin), "user pin mode vs kernel");

    // Fill both through the read-write handles, identically.
    let possible_cpus = bpfmaps_difftest::sys::possible_cpus().expect("possible CPUs");
    let space = OpSpace {
        def: d.clone(),
        possible_cpus: u32::try_from(possible_cpus).unwrap_or(1),
        comparison: Comparison::Exact,
        with_freeze: false,
    };
    let mut rng = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &FIXED_SEED),
    );
    let mut sequence = || {
        ops_strategy(&space, 200)
            .new_tree(&mut rng)
            .expect("ops")
            .current()
    };
    let mut rw = DiffRunner::new(&d, &kmap, &umap, Comparison::Exact, KNOWN_DIVERGENCES)
        .unwrap_or_else(|e| panic!("{e}"));
    rw.run(&sequence())
        .unwrap_or_else(|e| panic!("read-write handles: {e}"));
    rw.finish()
        .unwrap_or_else(|e| panic!("read-write handles: {e}"));

    // Re-open through the pins with each access mode; the same ops must give the same outcomes.
    for (kaccess, uaccess) in [
        (KernelAccess::ReadOnly, UserAccess::ReadOnly),
        (KernelAccess::WriteOnly, UserAccess::WriteOnly),
        (KernelAccess::ReadWrite, UserAccess::ReadWrite),
    ] {
        let k = KernelMap::from_pinned_with_access(&kpin, kaccess).expect("kernel open pinned");
        let u = UserMap::open_pinned_in(&dirs.store, &upin, uaccess).expect("user open pinned");
        assert_eq!(
            k.info().id,
            kmap.info().id,
            "the pin names the same kernel map"
        );
        assert_eq!(u.id(), umap.id(), "the pin names the same user map");
        let ops = sequence();
        let mut runner = DiffRunner::new(&d, &k, &u, Comparison::Exact, KNOWN_DIVERGENCES)
            .unwrap_or_else(|e| panic!("{e}"));
        runner
            .run(&ops)
            .unwrap_or_else(|e| panic!("{kaccess:?} handles: {e}"));
        runner
            .finish()
            .unwrap_or_else(|e| panic!("{kaccess:?} handles: {e}"));
    }

    // Unpinned: opening the path fails with ENOENT on both.
    std::fs::remove_file(&kpin).expect("unpin kernel");
    std::fs::remove_file(&upin).expect("unpin user");
    let k = kernel_errno(KernelMap::from_pinned(&kpin));
    let u = user_errno(UserMap::open_pinned_in(
        &dirs.store,
        &upin,
        UserAccess::ReadWrite,
    ));
    assert_eq!(k, Err(Errno::ENOENT));
    assert_eq!(u, k);
}
