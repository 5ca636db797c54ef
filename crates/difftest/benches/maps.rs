//! `cargo bench -p bpfmaps-difftest --bench maps`: user-space lookup and update of existing keys
//! on the user engine against the kernel engine's bpf(2) path, same map definitions (4-byte key,
//! 8-byte value, 10 000 entries populated) for HASH, ARRAY, PERCPU_HASH and LRU_HASH, in one run.
//! Criterion measures each (map, op, engine); at the end the shared `run_map_bench` prints the
//! ratio kernel/user per op. The thread is pinned to CPU 0 first.
//!
//! With `BPFMAPS_SKIP_KERNEL=1` and no usable kernel, the bench prints why and exits.

use std::hint::black_box;

use bpfmaps_abi::MapType;
use bpfmaps_difftest::bench::{
    bench_def, existing_keys, format_rows, populate, run_map_bench_with, syscall_floor_ns,
    BenchConfig, BenchOp,
};
use bpfmaps_difftest::engines::{Candidate, Kernel};
use bpfmaps_difftest::{kernel_usable, sys, CreateError, MapFactory};
use criterion::Criterion;

const ENTRIES: u32 = 10_000;
const TYPES: [MapType; 4] = [
    MapType::Hash,
    MapType::Array,
    MapType::PercpuHash,
    MapType::LruHash,
];

fn bench_engines(c: &mut Criterion, engines: &[&dyn MapFactory]) {
    for map_type in TYPES {
        let mut group = c.benchmark_group(map_type.name());
        for &engine in engines {
            let map = match engine.create(&bench_def(map_type, ENTRIES)) {
                Ok(map) => map,
                Err(CreateError::Unsupported(why)) => {
                    println!("skipping {map_type} on {}: {why}", engine.engine_name());
                    continue;
                }
                Err(e) => panic!("{} {map_type}: {e}", engine.engine_name()),
            };
            populate(&*map, ENTRIES).unwrap_or_else(|e| panic!("populate: {e}"));
            let keys = existing_keys(&*map).unwrap_or_else(|e| panic!("keys: {e}"));
            let mut value = vec![0u8; map.info().user_value_size()];
            for op in [BenchOp::Lookup, BenchOp::Update] {
                let mut i = 0usize;
                group.bench_function(format!("{}/{op}", engine.engine_name()), |b| {
                    b.iter(|| {
                        let key = &keys[i % keys.len()];
                        i = i.wrapping_add(1);
                        let r = match op {
                            BenchOp::Lookup => map.lookup(black_box(key), &mut value, 0),
                            BenchOp::Update => map.update(black_box(key), &value, 0),
                        };
                        black_box(r)
                    })
                });
            }
        }
        group.finish();
    }
}

fn main() {
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    if let Err(e) = sys::pin_current_thread_to_cpu(0) {
        panic!("pinning the bench to CPU 0: {e}");
    }
    let candidate = Candidate::default();
    let mut criterion = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    bench_engines(&mut criterion, &[&Kernel, &candidate]);
    criterion.final_summary();

    let config = BenchConfig {
        ops_per_sample: 100_000,
        samples: 5,
        ..BenchConfig::default()
    };
    match run_map_bench_with(&Kernel, &candidate, &config) {
        Ok(rows) => {
            println!(
                "\nkernel/user ratio ({} entries, median of {} x {} calls):",
                config.entries, config.samples, config.ops_per_sample
            );
            print!("{}", format_rows(&rows));
            println!(
                "syscall floor (getppid): {:.1} ns/call",
                syscall_floor_ns(config.ops_per_sample, config.samples)
            );
        }
        Err(e) => panic!("run_map_bench: {e}"),
    }
}
