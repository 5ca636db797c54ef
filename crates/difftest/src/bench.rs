//! The map benchmark shared by `cargo bench -p bpfmaps-difftest` and `bpfmaps bench`: user-space
//! lookup and update of existing keys on the user engine against the kernel engine's bpf(2)
//! path, on the same map definitions, reported as ns/op and the ratio kernel/user.
//!
//! Owns [`BenchConfig`], [`BenchRow`], [`run_map_bench`] and the building blocks the criterion
//! bench reuses ([`bench_def`], [`populate`], [`existing_keys`], [`time_op`]).
//!
//! Method: each map is created from the same [`MapDef`] on both engines and populated with keys
//! `0..entries`. The keys that are present afterwards (an LRU map may have evicted some) are
//! shuffled with a fixed xorshift sequence. One sample times `ops_per_sample` calls walking that
//! sequence with [`std::time::Instant`]; the figure is the median of `samples` samples. The
//! calling thread is pinned to one CPU first when [`BenchConfig::pin_cpu`] says so.

use std::fmt;
use std::time::Instant;

use bpfmaps_abi::{Errno, MapDef, MapError, MapOps, MapType};

use crate::engine::{CreateError, MapFactory};

/// What is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BenchOp {
    /// `BPF_MAP_LOOKUP_ELEM` of an existing key.
    Lookup,
    /// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY` of an existing key.
    Update,
}

impl fmt::Display for BenchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BenchOp::Lookup => "lookup",
            BenchOp::Update => "update",
        })
    }
}

/// How the benchmark runs.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Entries each map is created with and populated to.
    pub entries: u32,
    /// The map types measured (each with a 4-byte key and an 8-byte value).
    pub map_types: Vec<MapType>,
    /// Calls per timed sample.
    pub ops_per_sample: u32,
    /// Samples per (engine, map type, op); the median is reported.
    pub samples: u32,
    /// Pin the calling thread to this CPU first (both engines then use one CPU's per-CPU state).
    pub pin_cpu: Option<usize>,
}

impl Default for BenchConfig {
    /// HASH, ARRAY, PERCPU_HASH and LRU_HASH with 10 000 entries, 7 samples of 200 000 calls,
    /// pinned to CPU 0.
    fn default() -> BenchConfig {
        BenchConfig {
            entries: 10_000,
            map_types: vec![
                MapType::Hash,
                MapType::Array,
                MapType::PercpuHash,
                MapType::LruHash,
            ],
            ops_per_sample: 200_000,
            samples: 7,
            pin_cpu: Some(0),
        }
    }
}

/// One measured (map type, op): median ns per call on each engine and kernel/user.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchRow {
    /// The map type.
    pub map_type: MapType,
    /// The operation.
    pub op: BenchOp,
    /// Kernel engine, median ns per call.
    pub kernel_ns: f64,
    /// User engine, median ns per call.
    pub user_ns: f64,
    /// `kernel_ns / user_ns`: how many times faster the user engine is.
    pub ratio: f64,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An engine could not create a benchmark map.
    #[error("{engine} engine: creating the {map_type} map: {source}")]
    Create {
        /// The engine.
        engine: &'static str,
        /// The map type.
        map_type: MapType,
        /// Why.
        source: CreateError,
    },
    /// A map operation failed while populating or timing.
    #[error("{engine} engine: {what} on the {map_type} map: {source}")]
    Op {
        /// The engine.
        engine: &'static str,
        /// The map type.
        map_type: MapType,
        /// Which step.
        what: &'static str,
        /// Why.
        source: MapError,
    },
    /// Pinning the thread failed.
    #[error("pinning the benchmark thread to CPU {cpu}: {source}")]
    Pin {
        /// The CPU.
        cpu: usize,
        /// Why.
        source: std::io::Error,
    },
    /// A configuration value is unusable (no entries, no samples, …).
    #[error("invalid benchmark configuration: {0}")]
    Config(&'static str),
}

/// The benchmark's definition of a map of `map_type`: 4-byte key, 8-byte value, `entries`
/// entries, no flags.
pub fn bench_def(map_type: MapType, entries: u32) -> MapDef {
    MapDef {
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries: entries,
        map_flags: 0,
        name: "bench".into(),
    }
}

/// Updates keys `0..entries` (4-byte little-endian) with a value derived from the key.
pub fn populate(map: &dyn MapOps, entries: u32) -> Result<(), MapError> {
    let value_len = map.info().user_value_size();
    let mut value = vec![0u8; value_len];
    for k in 0..entries {
        for (i, chunk) in value.chunks_mut(8).enumerate() {
            let v = u64::from(k).wrapping_add(i as u64).to_le_bytes();
            let n = chunk.len().min(8);
            chunk[..n].copy_from_slice(&v[..n]);
        }
        map.update(&k.to_le_bytes(), &value, 0)?;
    }
    Ok(())
}

/// The keys present in `map` (from a get_next_key walk), shuffled with a fixed xorshift
/// sequence so every engine sees the same access pattern for the same contents.
pub fn existing_keys(map: &dyn MapOps) -> Result<Vec<[u8; 4]>, MapError> {
    let mut keys = Vec::new();
    let mut current: Option<[u8; 4]> = None;
    loop {
        let mut next = [0u8; 4];
        match map.get_next_key(current.as_ref().map(|k| &k[..]), &mut next) {
            Ok(()) => {}
            Err(MapError::Errno(Errno::ENOENT)) => break,
            Err(e) => return Err(e),
        }
        keys.push(next);
        current = Some(next);
    }
    keys.sort_unstable();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..keys.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
        keys.swap(i, j);
    }
    Ok(keys)
}

/// Times `calls` calls of `op` over `keys` (cycled) on `map` and returns ns per call.
pub fn time_op(
    map: &dyn MapOps,
    op: BenchOp,
    keys: &[[u8; 4]],
    calls: u32,
) -> Result<f64, MapError> {
    if keys.is_empty() || calls == 0 {
        return Ok(0.0);
    }
    let mut value = vec![0x11u8; map.info().user_value_size()];
    let start = Instant::now();
    for (i, key) in keys.iter().cycle().take(calls as usize).enumerate() {
        match op {
            BenchOp::Lookup => map.lookup(key, &mut value, 0)?,
            BenchOp::Update => {
                value[0] = i as u8;
                map.update(key, &value, 0)?
            }
        }
    }
    let elapsed = start.elapsed();
    Ok(elapsed.as_nanos() as f64 / f64::from(calls))
}

/// The median ns per `getppid()` call over `samples` samples of `calls` calls: the cost of the
/// bare system call path, which bounds from below what any bpf(2) call can cost.
pub fn syscall_floor_ns(calls: u32, samples: u32) -> f64 {
    let mut timings = Vec::new();
    for _ in 0..samples.max(1) {
        let start = Instant::now();
        for _ in 0..calls {
            std::hint::black_box(crate::sys::getppid());
        }
        timings.push(start.elapsed().as_nanos() as f64 / f64::from(calls.max(1)));
    }
    median(timings)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A populated benchmark map and its shuffled key sequence.
struct Prepared {
    map: Box<dyn MapOps>,
    keys: Vec<[u8; 4]>,
}

fn prepare(
    factory: &dyn MapFactory,
    map_type: MapType,
    entries: u32,
) -> Result<Prepared, BenchError> {
    let engine = factory.engine_name();
    let map = factory
        .create(&bench_def(map_type, entries))
        .map_err(|source| BenchError::Create {
            engine,
            map_type,
            source,
        })?;
    populate(&*map, entries).map_err(|source| BenchError::Op {
        engine,
        map_type,
        what: "populate",
        source,
    })?;
    let keys = existing_keys(&*map).map_err(|source| BenchError::Op {
        engine,
        map_type,
        what: "key walk",
        source,
    })?;
    Ok(Prepared { map, keys })
}

/// One sample: an untimed pass over every key first (the other engine's sample, run just
/// before, has evicted this map from the caches; a warm-up pass measures both engines in the
/// steady state), then [`time_op`].
fn warm_then_time(
    map: &dyn MapOps,
    op: BenchOp,
    keys: &[[u8; 4]],
    calls: u32,
) -> Result<f64, MapError> {
    time_op(map, op, keys, u32::try_from(keys.len()).unwrap_or(u32::MAX))?;
    time_op(map, op, keys, calls)
}

/// Runs the benchmark on the kernel engine and the candidate engine ([`crate::engines::User`]
/// when the `user-engine` feature is on, as it is by default).
pub fn run_map_bench(config: &BenchConfig) -> Result<Vec<BenchRow>, BenchError> {
    run_map_bench_with(
        &crate::engines::Kernel,
        &crate::engines::Candidate::default(),
        config,
    )
}

/// Runs the benchmark on any two engines: `kernel` is the baseline, `user` the candidate.
/// Samples of the two engines alternate, so drifts of the machine affect both alike. Map types
/// the candidate does not implement ([`CreateError::Unsupported`]) are left out of the rows.
pub fn run_map_bench_with(
    kernel: &dyn MapFactory,
    user: &dyn MapFactory,
    config: &BenchConfig,
) -> Result<Vec<BenchRow>, BenchError> {
    if config.entries == 0 {
        return Err(BenchError::Config("entries must be at least 1"));
    }
    if config.samples == 0 || config.ops_per_sample == 0 {
        return Err(BenchError::Config(
            "samples and ops_per_sample must be at least 1",
        ));
    }
    if let Some(cpu) = config.pin_cpu {
        crate::sys::pin_current_thread_to_cpu(cpu)
            .map_err(|source| BenchError::Pin { cpu, source })?;
    }
    let mut rows = Vec::new();
    for &map_type in &config.map_types {
        let u = match prepare(user, map_type, config.entries) {
            Ok(u) => u,
            // A type the candidate does not implement has no row.
            Err(BenchError::Create {
                source: CreateError::Unsupported(_),
                ..
            }) => continue,
            Err(e) => return Err(e),
        };
        let k = prepare(kernel, map_type, config.entries)?;
        for op in [BenchOp::Lookup, BenchOp::Update] {
            let mut kernel_samples = Vec::new();
            let mut user_samples = Vec::new();
            for _ in 0..config.samples {
                kernel_samples.push(
                    warm_then_time(&*k.map, op, &k.keys, config.ops_per_sample).map_err(
                        |source| BenchError::Op {
                            engine: kernel.engine_name(),
                            map_type,
                            what: "timed op",
                            source,
                        },
                    )?,
                );
                user_samples.push(
                    warm_then_time(&*u.map, op, &u.keys, config.ops_per_sample).map_err(
                        |source| BenchError::Op {
                            engine: user.engine_name(),
                            map_type,
                            what: "timed op",
                            source,
                        },
                    )?,
                );
            }
            let kernel_ns = median(kernel_samples);
            let user_ns = median(user_samples);
            let ratio = if user_ns > 0.0 {
                kernel_ns / user_ns
            } else {
                f64::INFINITY
            };
            rows.push(BenchRow {
                map_type,
                op,
                kernel_ns,
                user_ns,
                ratio,
            });
        }
    }
    Ok(rows)
}

/// Formats rows as the table `cargo bench` and `bpfmaps bench` print.
pub fn format_rows(rows: &[BenchRow]) -> String {
    let mut out = format!(
        "{:<16} {:<8} {:>12} {:>12} {:>14}\n",
        "map", "op", "kernel ns/op", "user ns/op", "kernel/user"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<16} {:<8} {:>12.1} {:>12.1} {:>13.1}x\n",
            r.map_type.name(),
            r.op.to_string(),
            r.kernel_ns,
            r.user_ns,
            r.ratio
        ));
    }
    out
}
