//! `bpfmaps bench`: user-space lookup and update on the user engine against the kernel's bpf(2)
//! path, same map definitions, side by side in one run, with the ratio. The measurement itself is
//! `bpfmaps_difftest::bench::run_map_bench`, which the criterion bench shares.

use std::process::ExitCode;

use anyhow::{Context, Result};
use bpfmaps::MapType;
use bpfmaps_difftest::bench::{format_rows, run_map_bench, BenchConfig};
use clap::Args;
use serde_json::json;

use crate::output::{out, Format};

/// Arguments of `bpfmaps bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Map types to measure (bpftool names), comma-separated.
    #[arg(long = "type", value_delimiter = ',', default_values_t = ["hash".to_owned(), "array".to_owned(), "percpu_hash".to_owned(), "lru_hash".to_owned()])]
    types: Vec<String>,
    /// Entries each map is created with and populated to.
    #[arg(long, default_value_t = 10_000)]
    entries: u32,
    /// Calls per timed sample.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u32).range(1..))]
    ops: u32,
    /// Samples per (engine, map type, operation); the median is reported.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    samples: u32,
    /// Pin the benchmark thread to this CPU (`none`: leave it where the scheduler puts it).
    #[arg(long, default_value = "0")]
    cpu: String,
}

/// Runs `bpfmaps bench`.
pub fn run(args: BenchArgs, format: Format) -> Result<ExitCode> {
    let map_types = args
        .types
        .iter()
        .map(|t| t.parse::<MapType>())
        .collect::<Result<Vec<_>, _>>()?;
    let pin_cpu = match args.cpu.as_str() {
        "none" => None,
        n => Some(
            n.parse::<usize>()
                .with_context(|| format!("--cpu `{n}`: a CPU number or none"))?,
        ),
    };
    let config = BenchConfig {
        entries: args.entries,
        map_types,
        ops_per_sample: args.ops,
        samples: args.samples,
        pin_cpu,
    };
    let rows = run_map_bench(&config).context("the benchmark failed")?;
    if format.is_json() {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"map_type": r.map_type.name(), "op": r.op.to_string(),
                       "kernel_ns": r.kernel_ns, "user_ns": r.user_ns, "ratio": r.ratio})
            })
            .collect();
        format.print_json(&json!(v));
    } else {
        out!("{}", format_rows(&rows));
    }
    Ok(ExitCode::SUCCESS)
}
