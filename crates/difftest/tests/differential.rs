//! The generated differential suites: for every map type, proptest op sequences run on a kernel
//! map and a user-engine map of the same definition, and every outcome plus the final contents
//! must match (order too under `BPF_F_ZERO_SEED`; LRU victims with the test thread pinned to
//! CPU 0; the LRU invariants when not pinned).
//!
//! A fixed seed and `DEFAULT_CASES` cases per definition run in `cargo test`; a larger run:
//! `BPFMAPS_DIFF_CASES=10000 cargo test -p bpfmaps-difftest --release -- --nocapture`.
//! Without the `user-engine` feature the candidate is the kernel itself (harness validation).

use bpfmaps_abi::map_flags::{
    BPF_F_MMAPABLE, BPF_F_NO_COMMON_LRU, BPF_F_NO_PREALLOC, BPF_F_ZERO_SEED,
};
use bpfmaps_abi::{MapDef, MapType};
use bpfmaps_difftest::engines::{Candidate, Kernel};
use bpfmaps_difftest::known::KNOWN_DIVERGENCES;
use bpfmaps_difftest::lru_invariants::run_lru_invariants;
use bpfmaps_difftest::{
    kernel_usable, op_totals_line, run_differential, sys, Comparison, MapFactory, SuiteConfig,
    SuiteReport,
};

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
        "difftest",
    )
}

/// Runs each definition through the differential suite and fails with the first divergence.
fn check(defs: &[(MapDef, Comparison)]) {
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let candidate = Candidate::default();
    let mut failures = Vec::new();
    for (def, comparison) in defs {
        let config = SuiteConfig::new(def.clone(), *comparison);
        match run_differential(&Kernel, &candidate, &config, KNOWN_DIVERGENCES) {
            Ok(SuiteReport {
                not_covered: Some(why),
                ..
            }) => {
                println!(
                    "NOT COVERED: {} flags {:#x}: {why}",
                    def.map_type, def.map_flags
                )
            }
            Ok(report) => println!(
                "{} {:?} flags {:#x}: {} cases, {} ops, no divergence",
                def.map_type, comparison, def.map_flags, report.cases, report.ops
            ),
            Err(why) => failures.push(format!("kernel vs {}: {why}", candidate.engine_name())),
        }
    }
    println!("{}", op_totals_line("so far in this binary"));
    assert!(
        failures.is_empty(),
        "{} divergence(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn hash_matches_kernel_in_order_under_zero_seed() {
    check(&[
        (
            def(MapType::Hash, 4, 8, 8, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
        (
            def(MapType::Hash, 4, 8, 8, BPF_F_ZERO_SEED | BPF_F_NO_PREALLOC),
            Comparison::Exact,
        ),
        (
            def(MapType::Hash, 3, 5, 5, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
        (
            def(MapType::Hash, 12, 4, 6, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
        (
            def(MapType::Hash, 4, 4, 1, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
    ]);
}

#[test]
fn hash_matches_kernel_as_a_set_with_a_random_seed() {
    check(&[
        (def(MapType::Hash, 4, 8, 8, 0), Comparison::Unordered),
        (def(MapType::PercpuHash, 4, 4, 6, 0), Comparison::Unordered),
    ]);
}

#[test]
fn percpu_hash_matches_kernel() {
    check(&[
        (
            def(MapType::PercpuHash, 4, 4, 6, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
        (
            def(
                MapType::PercpuHash,
                4,
                12,
                4,
                BPF_F_ZERO_SEED | BPF_F_NO_PREALLOC,
            ),
            Comparison::Exact,
        ),
    ]);
}

#[test]
fn array_matches_kernel() {
    check(&[
        (def(MapType::Array, 4, 4, 5, 0), Comparison::Exact),
        (def(MapType::Array, 4, 12, 3, 0), Comparison::Exact),
        (
            def(MapType::Array, 4, 8, 8, BPF_F_MMAPABLE),
            Comparison::Exact,
        ),
    ]);
}

#[test]
fn percpu_array_matches_kernel() {
    check(&[
        (def(MapType::PercpuArray, 4, 4, 4, 0), Comparison::Exact),
        (def(MapType::PercpuArray, 4, 16, 3, 0), Comparison::Exact),
    ]);
}

/// LRU maps driven from CPU 0 only: the kernel's per-CPU lists are then those of one CPU and the
/// victims are deterministic, so they must match exactly.
#[test]
fn lru_victims_match_kernel_from_one_cpu() {
    if let Err(e) = sys::pin_current_thread_to_cpu(0) {
        panic!("pinning the test thread to CPU 0: {e}");
    }
    check(&[
        (
            def(MapType::LruHash, 4, 8, 8, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
        (
            def(MapType::LruHash, 4, 8, 16, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
        (
            def(
                MapType::LruHash,
                4,
                8,
                8,
                BPF_F_ZERO_SEED | BPF_F_NO_COMMON_LRU,
            ),
            Comparison::Exact,
        ),
        (
            def(MapType::LruPercpuHash, 4, 4, 8, BPF_F_ZERO_SEED),
            Comparison::Exact,
        ),
        (
            def(
                MapType::LruPercpuHash,
                4,
                8,
                6,
                BPF_F_ZERO_SEED | BPF_F_NO_COMMON_LRU,
            ),
            Comparison::Exact,
        ),
    ]);
}

/// LRU maps used from whichever CPU the scheduler picks: eviction is not deterministic, so each
/// engine is checked alone against the lossy-map invariants.
#[test]
fn lru_invariants_hold_on_both_engines_from_any_cpu() {
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let candidate = Candidate::default();
    let defs = [
        def(MapType::LruHash, 4, 8, 8, 0),
        def(MapType::LruHash, 4, 8, 8, BPF_F_NO_COMMON_LRU),
        def(MapType::LruPercpuHash, 4, 4, 8, 0),
    ];
    let factories: [&dyn MapFactory; 2] = [&Kernel, &candidate];
    for d in &defs {
        for factory in factories {
            let config = SuiteConfig::new(d.clone(), Comparison::Unordered);
            match run_lru_invariants(factory, &config) {
                Ok(SuiteReport {
                    not_covered: Some(why),
                    ..
                }) => {
                    println!(
                        "NOT COVERED: {} on {}: {why}",
                        d.map_type,
                        factory.engine_name()
                    )
                }
                Ok(report) => println!(
                    "{} on {} flags {:#x}: LRU invariants hold over {} ops",
                    d.map_type,
                    factory.engine_name(),
                    d.map_flags,
                    report.ops
                ),
                Err(why) => panic!("{why}"),
            }
        }
    }
}

/// Stack trace, ring buffer and perf event array maps from the syscall side only: the errnos of
/// every operation on maps user space cannot fill.
#[test]
fn syscall_side_errnos_of_stack_ringbuf_and_perf_maps_match_kernel() {
    check(&[
        (def(MapType::StackTrace, 4, 32, 4, 0), Comparison::Exact),
        (def(MapType::Ringbuf, 0, 0, 4096, 0), Comparison::Exact),
        (def(MapType::PerfEventArray, 4, 4, 2, 0), Comparison::Exact),
    ]);
}

/// Every divergence the suites found (reported `map_flags` keeping RDONLY/WRONLY; the PERCPU_ARRAY
/// helper update's check order) is fixed, so the exception list is empty. A divergence found
/// later goes into the list with the rule it breaks, and this test then names every open one.
#[test]
fn no_divergence_is_open() {
    let open: Vec<(Option<MapType>, &str)> = KNOWN_DIVERGENCES
        .iter()
        .map(|d| (d.map_type, d.rule))
        .collect();
    assert_eq!(
        open,
        vec![],
        "open divergences of the user engine from the kernel"
    );
}

/// Bigger maps and longer sequences (a quarter of the cases, at least 10): LRU lists with
/// target_free batches of 16 and 32, rotation of referenced (replaced) nodes, hash tables with
/// many buckets for the batch cursors. Pinned to CPU 0 for the LRU victims.
#[test]
fn long_sequences_on_larger_maps_match_kernel() {
    if let Err(e) = sys::pin_current_thread_to_cpu(0) {
        panic!("pinning the test thread to CPU 0: {e}");
    }
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let candidate = Candidate::default();
    let defs = [
        def(MapType::LruHash, 4, 8, 128, BPF_F_ZERO_SEED),
        def(
            MapType::LruHash,
            4,
            8,
            64,
            BPF_F_ZERO_SEED | BPF_F_NO_COMMON_LRU,
        ),
        def(MapType::LruPercpuHash, 4, 8, 64, BPF_F_ZERO_SEED),
        def(MapType::Hash, 4, 8, 64, BPF_F_ZERO_SEED),
        def(MapType::PercpuHash, 8, 4, 48, BPF_F_ZERO_SEED),
    ];
    let mut failures = Vec::new();
    for d in defs {
        let mut config = SuiteConfig::new(d.clone(), Comparison::Exact);
        config.cases = (config.cases / 4).max(10);
        config.max_ops = 400;
        match run_differential(&Kernel, &candidate, &config, KNOWN_DIVERGENCES) {
            Ok(report) => println!(
                "{} max {} flags {:#x}: {} cases, {} ops, no divergence",
                d.map_type, d.max_entries, d.map_flags, report.cases, report.ops
            ),
            Err(why) => failures.push(why),
        }
    }
    assert!(
        failures.is_empty(),
        "{} divergence(s):\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Access flags given at creation: a `BPF_F_RDONLY` map refuses syscall writes and a
/// `BPF_F_WRONLY` one syscall reads (EPERM), `BPF_F_RDONLY_PROG` / `BPF_F_WRONLY_PROG` restrict
/// programs only.
#[test]
fn access_flags_match_kernel() {
    use bpfmaps_abi::map_flags::{
        BPF_F_RDONLY, BPF_F_RDONLY_PROG, BPF_F_WRONLY, BPF_F_WRONLY_PROG,
    };
    check(&[
        (
            def(MapType::Hash, 4, 8, 4, BPF_F_ZERO_SEED | BPF_F_RDONLY),
            Comparison::Exact,
        ),
        (
            def(MapType::Hash, 4, 8, 4, BPF_F_ZERO_SEED | BPF_F_WRONLY),
            Comparison::Exact,
        ),
        (
            def(MapType::Array, 4, 8, 4, BPF_F_RDONLY),
            Comparison::Exact,
        ),
        (
            def(MapType::PercpuArray, 4, 8, 4, BPF_F_WRONLY),
            Comparison::Exact,
        ),
        (
            def(MapType::Hash, 4, 8, 4, BPF_F_ZERO_SEED | BPF_F_RDONLY_PROG),
            Comparison::Exact,
        ),
        (
            def(MapType::Array, 4, 8, 4, BPF_F_WRONLY_PROG),
            Comparison::Exact,
        ),
    ]);
}
