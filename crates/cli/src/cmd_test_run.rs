//! `bpfmaps test-run OBJ --prog NAME --ctx HEX|@FILE [--repeat N] [--engine user|kernel]`: loads
//! the object, runs one program on the given context, prints r0, the mean duration and every map
//! afterwards (`-j`: one JSON object `{"retval", "duration_ns", "maps"}`, maps as in `run -j`).
//!
//! Ring buffers are drained and shown as their records (`{"events": [hex...], "lost": 0}`); perf
//! event arrays have no reader during a test run, so outputs to them fail with ENOENT (as in the
//! kernel) and they are shown as `{"events": 0}`. On the user engine, `bpf_trace_printk` lines are
//! appended to `<pin root>/trace_pipe` (`/run/bpfmaps/trace_pipe` for root; see
//! `bpfmaps_runtime::trace`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bpfmaps::events::{Event, EventStream};
use bpfmaps::program::Object;
use bpfmaps::{Engine, Map, MapType};
use clap::Args;
use serde_json::{json, Map as JsonMap, Value};

use crate::cmd_map::{dump_json, dump_plain};
use crate::output::{hex_json, hex_plain, outln, Format};
use crate::words::EngineArg;

/// Arguments of `bpfmaps test-run`.
#[derive(Args, Debug)]
pub struct TestRunArgs {
    /// The BPF object file.
    object: PathBuf,
    /// The program to run.
    #[arg(long = "prog", value_name = "NAME")]
    program: String,
    /// The context: hex bytes (`0a0b…`, spaces and a `0x` prefix allowed) or `@FILE` for a
    /// file's raw bytes. For tracepoints the layout of `/sys/kernel/tracing/events/…/format`;
    /// for raw tracepoints the u64 arguments.
    #[arg(long, value_name = "HEX|@FILE")]
    ctx: String,
    /// Run the program this many times; the mean duration is reported.
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// The engine to run on.
    #[arg(long, value_enum, default_value_t = EngineArg::User)]
    engine: EngineArg,
    /// Set a global before load: NAME=VALUE, parsed by the variable's BTF type (bool, integers
    /// of any size and sign in decimal or 0x hex, char arrays as strings, hex:BYTES).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::words::parse_global)]
    globals: Vec<(String, String)>,
    /// Resolve CO-RE relocations against this BTF file (raw BTF, or an ELF with .BTF) instead
    /// of /sys/kernel/btf/vmlinux, as libbpf's btf_custom_path (user engine only).
    #[arg(long = "btf", value_name = "FILE")]
    btf: Option<PathBuf>,
}

/// Parses `--ctx`: hex digits (whitespace, `:` and a leading `0x` ignored) or `@FILE`.
fn parse_ctx(text: &str) -> Result<Vec<u8>> {
    if let Some(path) = text.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("cannot read the context file {path}"));
    }
    let trimmed = text.trim();
    let trimmed = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    let digits: Vec<u8> = trimmed
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    crate::words::decode_hex(&digits, "--ctx")
}

/// Drains a ring buffer's available records.
fn drain_ring(map: &Map) -> Result<(Vec<Vec<u8>>, u64)> {
    let mut stream = EventStream::open(map)?;
    let mut records = Vec::new();
    let mut lost = 0;
    while let Some(event) = stream.next_event(Some(Duration::ZERO))? {
        match event {
            Event::Record { data, .. } => records.push(data),
            Event::Lost { count, .. } => lost += count,
        }
    }
    Ok((records, lost))
}

/// Runs `bpfmaps test-run`.
pub fn run(args: TestRunArgs, format: Format) -> Result<ExitCode> {
    let ctx = parse_ctx(&args.ctx)?;
    let mut object = Object::open(&args.object)
        .with_context(|| format!("cannot open {}", args.object.display()))?;
    for (name, value) in &args.globals {
        object.set_global_text(name, value)?;
    }
    let engine = Engine::from(args.engine);
    if let Some(btf) = &args.btf {
        if engine != Engine::User {
            bail!(
                "--btf {}: only the user engine relocates against a given BTF file (the kernel engine relocates against the running kernel)",
                btf.display()
            );
        }
        object = object.with_target_btf(btf);
    }
    let loaded = object.load(engine).with_context(|| {
        format!(
            "cannot load {} on the {engine} engine",
            args.object.display()
        )
    })?;
    let program = loaded.program(&args.program)?;
    let result = program.test_run(&ctx, args.repeat)?;

    let mut json_maps = JsonMap::new();
    if !format.is_json() {
        outln!("retval: {}", result.retval);
        outln!(
            "duration: {} ns (mean of {} run(s))\n",
            result.duration_ns,
            args.repeat.max(1)
        );
    }
    for (name, map) in loaded.maps()? {
        match map.info().map_type {
            MapType::Ringbuf => {
                let (records, lost) =
                    drain_ring(&map).with_context(|| format!("reading ring buffer {name}"))?;
                if format.is_json() {
                    let events: Vec<Value> = records.iter().map(|r| hex_json(r)).collect();
                    json_maps.insert(name, json!({"events": events, "lost": lost}));
                } else {
                    outln!("{name}: {} events, {lost} lost", records.len());
                    for r in &records {
                        outln!("  {}", hex_plain(r));
                    }
                    outln!();
                }
            }
            MapType::PerfEventArray => {
                if format.is_json() {
                    json_maps.insert(name, json!({"events": 0}));
                } else {
                    outln!("{name}: 0 events (no reader during a test run)\n");
                }
            }
            _ if format.is_json() => {
                json_maps.insert(name, dump_json(&map)?);
            }
            MapType::StackTrace => {
                outln!("{name}:");
                crate::cmd_map::dump_stacks_plain(&map)?;
                outln!();
            }
            _ => {
                outln!("{name}:");
                dump_plain(&map)?;
                outln!();
            }
        }
    }
    if format.is_json() {
        format.print_json(&json!({
            "retval": result.retval,
            "duration_ns": result.duration_ns,
            "maps": Value::Object(json_maps),
        }));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_ctx;

    #[test]
    fn contexts_parse_from_hex() {
        assert_eq!(parse_ctx("0x0a0B ff").unwrap(), vec![0x0a, 0x0b, 0xff]);
        assert_eq!(parse_ctx("").unwrap(), Vec::<u8>::new());
        assert!(parse_ctx("abc").is_err());
        assert!(parse_ctx("zz").is_err());
    }
}
