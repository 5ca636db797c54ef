//! The creation errno matrix: every map type against the flag and size edge cases of
//! kernel-map-semantics.md sections 2.1, 3.1, 4.1, 5.1 and 6.1. The kernel must give the errno
//! the doc predicts (a deviation of the real kernel fails here, naming the row), and the
//! candidate engine must give the kernel's result: the same errno, or a map with the same info
//! (rounded max_entries included).

use bpfmaps_abi::map_flags::*;
use bpfmaps_abi::{Errno, MapDef, MapType};
use bpfmaps_difftest::engines::{Candidate, Kernel};
use bpfmaps_difftest::known::KNOWN_DIVERGENCES;
use bpfmaps_difftest::runner::compare_info_except;
use bpfmaps_difftest::{kernel_usable, CreateError, MapFactory};

/// What creation must give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Success, with this max_entries reported.
    Ok(u32),
    /// Failure with this errno.
    Err(Errno),
}

struct Row {
    what: &'static str,
    def: MapDef,
    expect: Expect,
}

fn row(
    what: &'static str,
    map_type: MapType,
    (key_size, value_size, max_entries): (u32, u32, u32),
    map_flags: u32,
    expect: Expect,
) -> Row {
    Row {
        what,
        def: MapDef {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_flags,
            name: "matrix".into(),
        },
        expect,
    }
}

fn named(mut r: Row, name: &str) -> Row {
    r.def.name = name.into();
    r
}

const EINVAL: Expect = Expect::Err(Errno::EINVAL);
const E2BIG: Expect = Expect::Err(Errno::E2BIG);
const ENOTSUPP: Expect = Expect::Err(Errno::ENOTSUPP);

fn matrix() -> Vec<Row> {
    use MapType::*;
    const MIB4: u32 = 4 * 1024 * 1024;
    let mut rows = Vec::new();
    // 2.1: the hash family.
    for t in [Hash, PercpuHash, LruHash, LruPercpuHash] {
        rows.push(row("key_size 0", t, (0, 8, 4), 0, EINVAL));
        rows.push(row("value_size 0", t, (4, 0, 4), 0, EINVAL));
        rows.push(row("max_entries 0", t, (4, 8, 0), 0, EINVAL));
        rows.push(row(
            "max_entries 2^27+1",
            t,
            (4, 8, (1 << 27) + 1),
            0,
            E2BIG,
        ));
        rows.push(row("max_entries 2^31", t, (4, 8, 1 << 31), 0, E2BIG));
        rows.push(row("MMAPABLE", t, (4, 8, 4), BPF_F_MMAPABLE, EINVAL));
        rows.push(row("unknown flag 1<<20", t, (4, 8, 4), 1 << 20, EINVAL));
        rows.push(row(
            "RDONLY_PROG|WRONLY_PROG",
            t,
            (4, 8, 4),
            BPF_F_RDONLY_PROG | BPF_F_WRONLY_PROG,
            EINVAL,
        ));
        rows.push(row(
            "RDONLY|WRONLY",
            t,
            (4, 8, 4),
            BPF_F_RDONLY | BPF_F_WRONLY,
            EINVAL,
        ));
        rows.push(row(
            "ZERO_SEED",
            t,
            (4, 8, 5),
            BPF_F_ZERO_SEED,
            Expect::Ok(5),
        ));
        rows.push(row("RDONLY", t, (4, 8, 5), BPF_F_RDONLY, Expect::Ok(5)));
        rows.push(row("WRONLY", t, (4, 8, 5), BPF_F_WRONLY, Expect::Ok(5)));
        rows.push(row(
            "RDONLY_PROG",
            t,
            (4, 8, 5),
            BPF_F_RDONLY_PROG,
            Expect::Ok(5),
        ));
        rows.push(row(
            "key_size 4096 (no 512 limit)",
            t,
            (4096, 8, 2),
            0,
            Expect::Ok(2),
        ));
        rows.push(row(
            "PRESERVE_ELEMS",
            t,
            (4, 8, 4),
            BPF_F_PRESERVE_ELEMS,
            EINVAL,
        ));
        rows.push(row("INNER_MAP", t, (4, 8, 4), BPF_F_INNER_MAP, EINVAL));
    }
    for t in [Hash, PercpuHash] {
        rows.push(row(
            "NO_COMMON_LRU on a non-LRU hash",
            t,
            (4, 8, 4),
            BPF_F_NO_COMMON_LRU,
            EINVAL,
        ));
        rows.push(row(
            "NO_PREALLOC",
            t,
            (4, 8, 5),
            BPF_F_NO_PREALLOC,
            Expect::Ok(5),
        ));
    }
    for t in [LruHash, LruPercpuHash] {
        rows.push(row(
            "NO_PREALLOC on LRU",
            t,
            (4, 8, 4),
            BPF_F_NO_PREALLOC,
            ENOTSUPP,
        ));
        rows.push(row(
            "NO_COMMON_LRU rounds 3 up",
            t,
            (4, 8, 3),
            BPF_F_NO_COMMON_LRU,
            Expect::Ok(4),
        ));
        rows.push(row(
            "NO_COMMON_LRU rounds 1 up",
            t,
            (4, 8, 1),
            BPF_F_NO_COMMON_LRU,
            Expect::Ok(2),
        ));
        rows.push(row(
            "NUMA_NODE|NO_COMMON_LRU",
            t,
            (4, 8, 4),
            BPF_F_NUMA_NODE | BPF_F_NO_COMMON_LRU,
            EINVAL,
        ));
    }
    for t in [PercpuHash, LruPercpuHash] {
        rows.push(row(
            "per-CPU value 32768",
            t,
            (4, 32768, 2),
            0,
            Expect::Ok(2),
        ));
        rows.push(row("per-CPU value 32769", t, (4, 32769, 2), 0, E2BIG));
        rows.push(row(
            "NUMA_NODE on per-CPU hash",
            t,
            (4, 8, 4),
            BPF_F_NUMA_NODE,
            EINVAL,
        ));
    }
    rows.push(row(
        "NUMA_NODE on HASH",
        Hash,
        (4, 8, 4),
        BPF_F_NUMA_NODE,
        Expect::Ok(4),
    ));
    rows.push(row(
        "key 4 + value 4MiB-64",
        Hash,
        (4, MIB4 - 64, 1),
        0,
        Expect::Ok(1),
    ));
    rows.push(row(
        "key 4 + value 4MiB-48",
        Hash,
        (4, MIB4 - 48, 1),
        0,
        E2BIG,
    ));
    rows.push(row(
        "max_entries 2^27+1 NO_PREALLOC",
        Hash,
        (4, 8, (1 << 27) + 1),
        BPF_F_NO_PREALLOC,
        E2BIG,
    ));
    rows.push(row(
        "max_entries 2^31 NO_PREALLOC",
        Hash,
        (4, 8, 1 << 31),
        BPF_F_NO_PREALLOC,
        E2BIG,
    ));
    rows.push(named(
        row("name with '-'", Hash, (4, 8, 4), 0, EINVAL),
        "bad-name",
    ));
    rows.push(named(
        row("16-character name", Hash, (4, 8, 4), 0, EINVAL),
        "abcdefghijklmnop",
    ));
    rows.push(named(
        row("15-character name", Hash, (4, 8, 4), 0, Expect::Ok(4)),
        "abcdefghijklmno",
    ));
    rows.push(named(
        row("name with '.' and '_'", Hash, (4, 8, 4), 0, Expect::Ok(4)),
        "a.b_c",
    ));
    rows.push(named(
        row("empty name", Hash, (4, 8, 4), 0, Expect::Ok(4)),
        "",
    ));
    rows.push(row("unknown map type UNSPEC", Unspec, (4, 8, 4), 0, EINVAL));

    // 3.1: arrays.
    for t in [Array, PercpuArray] {
        rows.push(row("key_size 8", t, (8, 8, 4), 0, EINVAL));
        rows.push(row("key_size 0", t, (0, 8, 4), 0, EINVAL));
        rows.push(row("value_size 0", t, (4, 0, 4), 0, EINVAL));
        rows.push(row("max_entries 0", t, (4, 8, 0), 0, EINVAL));
        rows.push(row(
            "non-power-of-2 max_entries",
            t,
            (4, 8, 5),
            0,
            Expect::Ok(5),
        ));
        rows.push(row("NO_PREALLOC", t, (4, 8, 4), BPF_F_NO_PREALLOC, EINVAL));
        rows.push(row("ZERO_SEED", t, (4, 8, 4), BPF_F_ZERO_SEED, EINVAL));
        rows.push(row(
            "PRESERVE_ELEMS",
            t,
            (4, 8, 4),
            BPF_F_PRESERVE_ELEMS,
            EINVAL,
        ));
        rows.push(row(
            "NO_COMMON_LRU",
            t,
            (4, 8, 4),
            BPF_F_NO_COMMON_LRU,
            EINVAL,
        ));
        rows.push(row(
            "RDONLY_PROG",
            t,
            (4, 8, 4),
            BPF_F_RDONLY_PROG,
            Expect::Ok(4),
        ));
        rows.push(row(
            "RDONLY|WRONLY",
            t,
            (4, 8, 4),
            BPF_F_RDONLY | BPF_F_WRONLY,
            EINVAL,
        ));
        rows.push(row("unknown flag 1<<20", t, (4, 8, 4), 1 << 20, EINVAL));
    }
    rows.push(row(
        "value_size > INT_MAX",
        Array,
        (4, 0x8000_0000, 1),
        0,
        E2BIG,
    ));
    rows.push(row(
        "MMAPABLE",
        Array,
        (4, 8, 4),
        BPF_F_MMAPABLE,
        Expect::Ok(4),
    ));
    rows.push(row(
        "INNER_MAP",
        Array,
        (4, 8, 4),
        BPF_F_INNER_MAP,
        Expect::Ok(4),
    ));
    rows.push(row(
        "NUMA_NODE",
        Array,
        (4, 8, 4),
        BPF_F_NUMA_NODE,
        Expect::Ok(4),
    ));
    rows.push(row(
        "MMAPABLE on PERCPU_ARRAY",
        PercpuArray,
        (4, 8, 4),
        BPF_F_MMAPABLE,
        EINVAL,
    ));
    rows.push(row(
        "INNER_MAP on PERCPU_ARRAY",
        PercpuArray,
        (4, 8, 4),
        BPF_F_INNER_MAP,
        EINVAL,
    ));
    rows.push(row(
        "NUMA_NODE on PERCPU_ARRAY",
        PercpuArray,
        (4, 8, 4),
        BPF_F_NUMA_NODE,
        EINVAL,
    ));
    rows.push(row(
        "per-CPU value 32768",
        PercpuArray,
        (4, 32768, 2),
        0,
        Expect::Ok(2),
    ));
    rows.push(row(
        "per-CPU value 32769",
        PercpuArray,
        (4, 32769, 2),
        0,
        E2BIG,
    ));

    // 4.1: ring buffers.
    rows.push(row(
        "4096 bytes",
        Ringbuf,
        (0, 0, 4096),
        0,
        Expect::Ok(4096),
    ));
    rows.push(row(
        "8192 bytes",
        Ringbuf,
        (0, 0, 8192),
        0,
        Expect::Ok(8192),
    ));
    rows.push(row(
        "12288: not a power of 2",
        Ringbuf,
        (0, 0, 12288),
        0,
        EINVAL,
    ));
    rows.push(row("2048: below a page", Ringbuf, (0, 0, 2048), 0, EINVAL));
    rows.push(row("0 bytes", Ringbuf, (0, 0, 0), 0, EINVAL));
    rows.push(row("key_size 4", Ringbuf, (4, 0, 4096), 0, EINVAL));
    rows.push(row("value_size 4", Ringbuf, (0, 4, 4096), 0, EINVAL));
    rows.push(row(
        "NUMA_NODE",
        Ringbuf,
        (0, 0, 4096),
        BPF_F_NUMA_NODE,
        Expect::Ok(4096),
    ));
    rows.push(row(
        "NO_PREALLOC",
        Ringbuf,
        (0, 0, 4096),
        BPF_F_NO_PREALLOC,
        EINVAL,
    ));
    rows.push(row(
        "RDONLY_PROG",
        Ringbuf,
        (0, 0, 4096),
        BPF_F_RDONLY_PROG,
        EINVAL,
    ));
    rows.push(row(
        "MMAPABLE",
        Ringbuf,
        (0, 0, 4096),
        BPF_F_MMAPABLE,
        EINVAL,
    ));
    rows.push(row("flag bit 13", Ringbuf, (0, 0, 4096), 1 << 13, EINVAL));
    rows.push(row("flag bit 23", Ringbuf, (0, 0, 4096), 1 << 23, EINVAL));

    // 5.1: perf event arrays.
    rows.push(row("4/4", PerfEventArray, (4, 4, 2), 0, Expect::Ok(2)));
    rows.push(row("key_size 8", PerfEventArray, (8, 4, 2), 0, EINVAL));
    rows.push(row("value_size 8", PerfEventArray, (4, 8, 2), 0, EINVAL));
    rows.push(row("max_entries 0", PerfEventArray, (4, 4, 0), 0, EINVAL));
    rows.push(row(
        "PRESERVE_ELEMS",
        PerfEventArray,
        (4, 4, 2),
        BPF_F_PRESERVE_ELEMS,
        Expect::Ok(2),
    ));
    rows.push(row(
        "NUMA_NODE",
        PerfEventArray,
        (4, 4, 2),
        BPF_F_NUMA_NODE,
        Expect::Ok(2),
    ));
    rows.push(row(
        "RDONLY_PROG",
        PerfEventArray,
        (4, 4, 2),
        BPF_F_RDONLY_PROG,
        EINVAL,
    ));
    rows.push(row(
        "MMAPABLE",
        PerfEventArray,
        (4, 4, 2),
        BPF_F_MMAPABLE,
        EINVAL,
    ));
    rows.push(row(
        "NO_PREALLOC",
        PerfEventArray,
        (4, 4, 2),
        BPF_F_NO_PREALLOC,
        EINVAL,
    ));

    // 6.1: stack trace maps.
    rows.push(row(
        "value 8x127",
        StackTrace,
        (4, 8 * 127, 4),
        0,
        Expect::Ok(4),
    ));
    rows.push(row("value 8x128", StackTrace, (4, 8 * 128, 4), 0, EINVAL));
    rows.push(row("value 12", StackTrace, (4, 12, 4), 0, EINVAL));
    rows.push(row("value 4", StackTrace, (4, 4, 4), 0, EINVAL));
    rows.push(row("key_size 8", StackTrace, (8, 8, 4), 0, EINVAL));
    rows.push(row("max_entries 0", StackTrace, (4, 8, 0), 0, EINVAL));
    rows.push(row(
        "max_entries 2^31+1",
        StackTrace,
        (4, 8, (1 << 31) + 1),
        0,
        E2BIG,
    ));
    rows.push(row(
        "STACK_BUILD_ID value 32",
        StackTrace,
        (4, 32, 4),
        BPF_F_STACK_BUILD_ID,
        Expect::Ok(4),
    ));
    rows.push(row(
        "STACK_BUILD_ID value 8",
        StackTrace,
        (4, 8, 4),
        BPF_F_STACK_BUILD_ID,
        EINVAL,
    ));
    rows.push(row(
        "NO_PREALLOC",
        StackTrace,
        (4, 8, 4),
        BPF_F_NO_PREALLOC,
        EINVAL,
    ));
    rows.push(row(
        "RDONLY_PROG",
        StackTrace,
        (4, 8, 4),
        BPF_F_RDONLY_PROG,
        EINVAL,
    ));
    rows.push(row(
        "NUMA_NODE",
        StackTrace,
        (4, 8, 4),
        BPF_F_NUMA_NODE,
        Expect::Ok(4),
    ));
    rows
}

fn observe(
    factory: &dyn MapFactory,
    def: &MapDef,
) -> (Result<u32, CreateError>, Option<bpfmaps_abi::MapInfo>) {
    match factory.create(def) {
        Ok(map) => {
            let info = map.info();
            (Ok(info.max_entries), Some(info))
        }
        Err(e) => (Err(e), None),
    }
}

#[test]
fn creation_errnos_match_the_kernel_for_every_type_and_edge_case() {
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let candidate = Candidate::default();
    let rows = matrix();
    let mut doc_deviations = Vec::new();
    let mut engine_divergences = Vec::new();
    let mut not_covered = Vec::new();
    for r in &rows {
        let (kernel, kernel_info) = observe(&Kernel, &r.def);
        let kernel_expect = match &kernel {
            Ok(max) => Some(Expect::Ok(*max)),
            Err(CreateError::Errno(e)) => Some(Expect::Err(*e)),
            Err(CreateError::Other(_) | CreateError::Unsupported(_)) => None,
        };
        if kernel_expect != Some(r.expect) {
            doc_deviations.push(format!(
                "{} {} ({:?}): doc says {:?}, kernel gives {:?}",
                r.def.map_type, r.what, r.def, r.expect, kernel
            ));
        }
        let (user, user_info) = observe(&candidate, &r.def);
        if let Err(CreateError::Unsupported(why)) = &user {
            not_covered.push(format!("{} {}: {why}", r.def.map_type, r.what));
            continue;
        }
        let same = match (&kernel_info, &user_info) {
            (Some(k), Some(u)) => compare_info_except(&r.def, k, u, KNOWN_DIVERGENCES).is_ok(),
            (None, None) => kernel == user,
            _ => false,
        };
        if !same {
            engine_divergences.push(format!(
                "{} {} ({:?}): kernel {:?}, {} {:?}",
                r.def.map_type,
                r.what,
                r.def,
                kernel_info.map(|_| ()).ok_or(kernel.err()),
                candidate.engine_name(),
                user_info.map(|_| ()).ok_or(user.err()),
            ));
        }
    }
    println!(
        "creation matrix: {} rows, {} compared on both engines, {} not covered (type not implemented by {})",
        rows.len(),
        rows.len() - not_covered.len(),
        not_covered.len(),
        candidate.engine_name()
    );
    for line in &not_covered {
        println!("NOT COVERED: {line}");
    }
    assert!(
        doc_deviations.is_empty() && engine_divergences.is_empty(),
        "the kernel deviates from the doc in {} row(s):\n{}\nthe engines differ in {} row(s):\n{}",
        doc_deviations.len(),
        doc_deviations.join("\n"),
        engine_divergences.len(),
        engine_divergences.join("\n")
    );
}
